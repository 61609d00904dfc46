//! STAND-INS: the smallest honest versions of layers whose crates have not landed
//! yet, so that the drill runs end to end meanwhile. Each one says which crate
//! replaces it; `stack.rs` lists, at run time, which real layers and which stand-ins
//! the drill uses. None of this is the project's API.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri, header};
use http_body_util::BodyExt;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt};
use tower_failover_core::error::{
    AllProvidersFailed, Attempt, Elapsed, TimeoutKind, TransportError,
};
use tower_failover_core::replay::{ReplayBody, clone_request};
use tower_failover_core::{
    Classify, FailureKind, Health, LlmClassifier, Outcome, classify_error_chain, deadline::Deadline,
};
use tower_failover_sim::Flavor;

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

// ---- provider client (replaced by tower-failover-provider) ----------------------

/// STAND-IN for `tower-failover-provider`: a pooled hyper-util client for one
/// simulated provider that buffers the (non-streaming) answer. For the Anthropic
/// flavor it translates the OpenAI-shaped request to the messages API and the answer
/// back, just enough for the drill.
#[derive(Clone)]
pub(crate) struct StandinClient {
    client: Client<HttpConnector, ReplayBody>,
    base: Arc<str>,
    flavor: Flavor,
    model: Arc<str>,
}

impl StandinClient {
    pub(crate) fn new(base_url: &str, flavor: Flavor, model: &str) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(1)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector);
        StandinClient {
            client,
            base: base_url.into(),
            flavor,
            model: model.into(),
        }
    }
}

fn to_anthropic(body: &[u8], model: &str) -> Result<Bytes, BoxError> {
    let v: Value = serde_json::from_slice(body)?;
    let mut system = String::new();
    let mut messages = Vec::new();
    for m in v["messages"].as_array().into_iter().flatten() {
        match m["role"].as_str() {
            Some("system") => system.push_str(m["content"].as_str().unwrap_or_default()),
            Some(role) => messages.push(json!({"role": role, "content": m["content"]})),
            None => {}
        }
    }
    let mut out = json!({
        "model": model,
        "max_tokens": v["max_tokens"].as_u64().unwrap_or(256),
        "messages": messages,
    });
    if !system.is_empty() {
        out["system"] = Value::String(system);
    }
    Ok(serde_json::to_vec(&out)?.into())
}

fn from_anthropic(body: &[u8]) -> Option<Bytes> {
    let v: Value = serde_json::from_slice(body).ok()?;
    let text: String = v["content"]
        .as_array()?
        .iter()
        .filter_map(|b| b["text"].as_str())
        .collect();
    let finish = match v["stop_reason"].as_str() {
        Some("max_tokens") => "length",
        _ => "stop",
    };
    let out = json!({
        "id": v["id"],
        "object": "chat.completion",
        "model": v["model"],
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {
            "prompt_tokens": v["usage"]["input_tokens"],
            "completion_tokens": v["usage"]["output_tokens"],
        },
    });
    serde_json::to_vec(&out).ok().map(Bytes::from)
}

impl Service<Request<ReplayBody>> for StandinClient {
    type Response = Response<ReplayBody>;
    type Error = BoxError;
    type Future = BoxFuture<Response<ReplayBody>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            parts.uri = format!("{}{}", this.base, this.flavor.completion_path()).parse::<Uri>()?;
            parts.headers.remove(header::CONTENT_LENGTH);
            let body = match this.flavor {
                Flavor::OpenAi => body,
                Flavor::Anthropic => {
                    parts.headers.insert(
                        "anthropic-version",
                        http::HeaderValue::from_static("2023-06-01"),
                    );
                    ReplayBody::new(to_anthropic(body.bytes(), &this.model)?)
                }
            };
            let res = this
                .client
                .request(Request::from_parts(parts, body))
                .await
                .map_err(|e| {
                    let kind = if e.is_connect() {
                        FailureKind::Connect
                    } else {
                        FailureKind::Reset
                    };
                    TransportError::new(kind, e)
                })?;
            let (mut parts, body) = res.into_parts();
            let bytes = body
                .collect()
                .await
                .map_err(|e| TransportError::new(FailureKind::Reset, e))?
                .to_bytes();
            let bytes = match this.flavor {
                Flavor::Anthropic if parts.status.is_success() => {
                    parts.headers.remove(header::CONTENT_LENGTH);
                    from_anthropic(&bytes).unwrap_or(bytes)
                }
                _ => bytes,
            };
            Ok(Response::from_parts(parts, ReplayBody::new(bytes)))
        })
    }
}

// ---- attempt timeout (replaced by the provider crate's timeouts) ---------------

/// STAND-IN for the provider crate's timeouts: one deadline per attempt, capped by
/// the caller's [`Deadline`], failing with core's [`Elapsed`].
#[derive(Clone)]
pub(crate) struct AttemptTimeout<S> {
    inner: S,
    timeout: Duration,
}

impl<S> AttemptTimeout<S> {
    pub(crate) fn new(inner: S, timeout: Duration) -> Self {
        AttemptTimeout { inner, timeout }
    }
}

impl<S> Service<Request<ReplayBody>> for AttemptTimeout<S>
where
    S: Service<Request<ReplayBody>, Error = BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        let budget = Deadline::attempt_budget(&req, Some(self.timeout)).unwrap_or(self.timeout);
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout(budget, fut).await {
                Ok(r) => r,
                Err(_) => Err(Elapsed::new(TimeoutKind::Attempt, budget).into()),
            }
        })
    }
}

// ---- ordered fallback with overflow (replaced by tower-failover-balance/-overflow)

/// STAND-IN for `tower-failover-balance`'s `Fallback` and `tower-failover-overflow`:
/// tries the providers in order, skipping any whose [`Health::is_available`] is false
/// (circuit open, rate limited, ramp at zero), and moves on after a failure, a 429
/// or a shed, never retrying one provider twice for one request.
#[derive(Clone)]
pub(crate) struct OrderedFallback<S> {
    providers: Arc<Vec<(Health, S)>>,
}

impl<S> OrderedFallback<S> {
    pub(crate) fn new(providers: Vec<(Health, S)>) -> Self {
        OrderedFallback {
            providers: Arc::new(providers),
        }
    }
}

impl<S, B> Service<Request<ReplayBody>> for OrderedFallback<S>
where
    S: Service<Request<ReplayBody>, Response = Response<B>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<Response<B>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        let providers = Arc::clone(&self.providers);
        Box::pin(async move {
            let classifier = LlmClassifier::default();
            let mut attempts = Vec::new();
            for (health, svc) in providers.iter() {
                if Deadline::of(&req).is_some_and(|d| d.remaining().is_zero()) {
                    break;
                }
                if !health.is_available(Instant::now()) {
                    continue;
                }
                let started = Instant::now();
                let outcome = match svc.clone().oneshot(clone_request(&req)).await {
                    Ok(res) => {
                        let outcome = classifier.classify_response(&res);
                        if matches!(outcome, Outcome::Success | Outcome::ClientError { .. }) {
                            return Ok(res);
                        }
                        outcome
                    }
                    Err(e) => classify_error_chain(&*e),
                };
                attempts.push(Attempt::new(
                    health.id().clone(),
                    outcome,
                    started.elapsed(),
                ));
            }
            let now = Instant::now();
            let retry_after = providers.iter().map(|(h, _)| h.recovers_in(now)).min();
            Err(AllProvidersFailed::new(attempts)
                .with_retry_after(retry_after)
                .into())
        })
    }
}
