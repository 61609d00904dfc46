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

// ---- circuit breaker (replaced by tower-failover-circuit) -----------------------

/// STAND-IN for `tower-failover-circuit`: opens after `threshold` consecutive
/// failures for `cooldown`, then lets one probe through (half-open); the probe's
/// success closes it, its failure opens it again. Refuses with core's
/// [`CircuitOpen`](tower_failover_core::error::CircuitOpen) while open. All state
/// lives in the provider's [`Health`].
#[derive(Clone)]
pub(crate) struct StandinCircuit<S> {
    inner: S,
    health: Health,
    consecutive: Arc<std::sync::atomic::AtomicU32>,
    threshold: u32,
    cooldown: Duration,
}

impl<S> StandinCircuit<S> {
    pub(crate) fn new(inner: S, health: Health, threshold: u32, cooldown: Duration) -> Self {
        StandinCircuit {
            inner,
            health,
            consecutive: Arc::default(),
            threshold,
            cooldown,
        }
    }
}

/// Releases a half-open probe slot that ended without a verdict (dropped, shed).
struct ProbeGuard {
    health: Health,
    armed: bool,
}

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        if self.armed {
            self.health.transition(
                tower_failover_core::CircuitState::HalfOpen,
                tower_failover_core::CircuitState::Open,
                Some(Instant::now()),
            );
        }
    }
}

impl<S, B> Service<Request<ReplayBody>> for StandinCircuit<S>
where
    S: Service<Request<ReplayBody>, Response = Response<B>, Error = BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<Response<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        use std::sync::atomic::Ordering;
        use tower_failover_core::CircuitState::{Closed, HalfOpen, Open};
        use tower_failover_core::error::CircuitOpen;
        let now = Instant::now();
        let health = self.health.clone();
        let refuse = |left: Duration| -> Self::Future {
            let err = CircuitOpen::new(left).with_provider(health.id().clone());
            Box::pin(async move { Err(err.into()) })
        };
        let probe = match health.circuit() {
            Closed => false,
            HalfOpen => return refuse(Duration::ZERO),
            Open => match health.open_until() {
                Some(u) if u > now => return refuse(u - now),
                _ if health.transition(Open, HalfOpen, None) => true,
                _ => return refuse(Duration::ZERO),
            },
        };
        let guard = ProbeGuard {
            health: health.clone(),
            armed: probe,
        };
        let fut = self.inner.call(req);
        let (consecutive, threshold, cooldown) =
            (Arc::clone(&self.consecutive), self.threshold, self.cooldown);
        Box::pin(async move {
            // Move the whole guard in: it must live (and drop) with this future.
            let mut guard = guard;
            let result = fut.await;
            let outcome = match &result {
                Ok(res) => LlmClassifier::default().classify_response(res),
                Err(e) => classify_error_chain(&**e),
            };
            if outcome.is_failure() {
                let n = consecutive.fetch_add(1, Ordering::AcqRel) + 1;
                let until = Some(Instant::now() + cooldown);
                if probe {
                    guard.armed = false;
                    health.transition(HalfOpen, Open, until);
                } else if n >= threshold {
                    health.transition(Closed, Open, until);
                }
            } else if outcome.is_success() {
                consecutive.store(0, Ordering::Release);
                if probe {
                    guard.armed = false;
                    health.transition(HalfOpen, Closed, None);
                }
            }
            result
        })
    }
}

// ---- recovery ramp (replaced by tower-failover-ramp) ---------------------------

/// Aborts a spawned task when the last owner drops.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// STAND-IN for `tower-failover-ramp`: when the circuit closes after a half-open
/// probe, admits only `shares[0]`, then each next share for `step` each, of the
/// requests offered (the rest get core's `Shed`); rolls back (opens the circuit
/// again) when the circuit reopens or at least 3 admitted attempts in a step fail and
/// they are over 20 % of the step's attempts.
#[derive(Clone)]
pub(crate) struct StandinRamp<S> {
    inner: S,
    health: Health,
    rng: Arc<tower_failover_core::rng::SharedRng>,
    _driver: Arc<AbortOnDrop>,
}

impl<S> StandinRamp<S> {
    pub(crate) fn new(
        inner: S,
        health: Health,
        shares: Vec<f64>,
        step: Duration,
        cooldown: Duration,
        seed: u64,
    ) -> Self {
        let driver = tokio::spawn(drive_ramp(health.clone(), shares, step, cooldown));
        StandinRamp {
            inner,
            health,
            rng: Arc::new(tower_failover_core::rng::SharedRng::seeded(seed)),
            _driver: Arc::new(AbortOnDrop(driver)),
        }
    }
}

async fn drive_ramp(health: Health, shares: Vec<f64>, step: Duration, cooldown: Duration) {
    use tower_failover_core::CircuitState::{Closed, HalfOpen, Open};
    use tower_failover_core::HealthEventKind;
    use tower_failover_core::health::FULL_SHARE_PPM;
    let mut watch = health.watch_circuit();
    let mut prev = *watch.borrow_and_update();
    'recoveries: loop {
        // Wait for a recovery: a probe closed the circuit.
        loop {
            if watch.changed().await.is_err() {
                return;
            }
            let now = *watch.borrow_and_update();
            let recovered = prev == HalfOpen && now == Closed;
            prev = now;
            if recovered {
                break;
            }
        }
        for (i, &share) in shares.iter().enumerate() {
            if share >= 1.0 {
                break;
            }
            health.set_ramp(Some(i as u32), (share * f64::from(FULL_SHARE_PPM)) as u32);
            health.emit(HealthEventKind::RampStep {
                step: i as u32,
                share,
            });
            let base = health.counters();
            let end = Instant::now() + step;
            loop {
                let rollback = tokio::select! {
                    _ = tokio::time::sleep_until(end) => break,
                    r = watch.changed() => {
                        if r.is_err() { return; }
                        prev = *watch.borrow_and_update();
                        prev == Open
                    }
                    _ = tokio::time::sleep(Duration::from_millis(20)) => {
                        let c = health.counters();
                        let fails = c.failures - base.failures;
                        let total = c.requests - base.requests;
                        fails >= 3 && fails * 5 > total
                    }
                };
                if rollback {
                    health.transition(Closed, Open, Some(Instant::now() + cooldown));
                    prev = health.circuit();
                    health.set_ramp(None, FULL_SHARE_PPM);
                    health.emit(HealthEventKind::RampRolledBack { from_share: share });
                    continue 'recoveries;
                }
            }
        }
        health.set_ramp(None, FULL_SHARE_PPM);
        health.emit(HealthEventKind::RampCompleted);
    }
}

impl<S, B> Service<Request<ReplayBody>> for StandinRamp<S>
where
    S: Service<Request<ReplayBody>, Response = Response<B>, Error = BoxError>,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<Response<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        if self.health.ramp_step().is_some() && self.rng.f64() >= self.health.ramp_share() {
            let err = tower_failover_core::error::Shed::new("recovery ramp")
                .with_provider(self.health.id().clone());
            return Box::pin(async move { Err(err.into()) });
        }
        Box::pin(self.inner.call(req))
    }
}
