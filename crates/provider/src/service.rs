//! The adapter services and what one request goes through.

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use http_body::Body;
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use tokio::time::Instant;
use tower_failover_core::Price;
use tower_failover_core::error::{BodyTooLarge, find};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::sse::{SseLimits, SseParser};
use tower_failover_core::{BoxError, Deadline, ErrorHint, Health, ProviderId};
use tower_service::Service;
use tracing::Instrument;

use crate::body::{Collected, Deadlines, Mode, ResponseBody, StreamBody, collect};
use crate::client::HttpClient;
use crate::config::{MaxTokensField, ModelMap, ProviderKind, Timeouts};
use crate::error::{TranslateError, client_error};
use crate::future::ResponseFuture;
use crate::headers::{clean_response_headers, forward_request_headers};
use crate::hint::{MAX_ERROR_BODY, error_hint};
use crate::translate::anthropic::{
    RequestOptions, StreamTranslator, error_to_openai, openai_error, request_to_anthropic,
    response_to_openai,
};
use crate::translate::openai::{StreamScan, prepare_request, read_answer};
use crate::usage::{PriceTable, UsageHandle, UsageSink};

/// Where requests go: scheme, host and the path prefix of the base URL.
#[derive(Debug, Clone)]
pub(crate) struct Base {
    pub(crate) scheme: Scheme,
    pub(crate) authority: Authority,
    /// Without a trailing `/`.
    pub(crate) path: String,
    pub(crate) query: Option<String>,
}

/// Everything a service needs per request, built once.
pub(crate) struct Shared {
    pub(crate) kind: ProviderKind,
    pub(crate) name: String,
    pub(crate) base: Base,
    /// The credential header, marked sensitive.
    pub(crate) auth: Option<(HeaderName, HeaderValue)>,
    /// Configured extra headers and protocol headers (`anthropic-version`).
    pub(crate) fixed_headers: HeaderMap,
    pub(crate) models: ModelMap,
    pub(crate) prices: PriceTable,
    pub(crate) timeouts: Timeouts,
    pub(crate) max_request_bytes: usize,
    pub(crate) max_response_bytes: usize,
    pub(crate) max_event_bytes: usize,
    pub(crate) stream_usage: bool,
    /// OpenAI-compatible: the token-limit field the provider takes, when the other
    /// one must be renamed to it ([`MaxTokensField`] resolved for the base URL).
    pub(crate) token_limit_field: Option<&'static str>,
    pub(crate) default_max_tokens: Option<u64>,
    pub(crate) health: Option<Health>,
}

/// The token-limit field to send to an OpenAI-compatible provider at `authority`:
/// `None` to send the caller's own.
pub(crate) fn token_limit_field(
    setting: MaxTokensField,
    authority: &Authority,
) -> Option<&'static str> {
    match setting {
        MaxTokensField::MaxTokens => Some("max_tokens"),
        MaxTokensField::MaxCompletionTokens => Some("max_completion_tokens"),
        MaxTokensField::Auto if authority.host().eq_ignore_ascii_case("api.openai.com") => {
            Some("max_completion_tokens")
        }
        MaxTokensField::Auto => None,
    }
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Provider")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field(
                "base_url",
                &format_args!(
                    "{}://{}{}",
                    self.base.scheme, self.base.authority, self.base.path
                ),
            )
            .field("api_key", &self.auth.as_ref().map(|_| "[redacted]"))
            .field("headers", &self.fixed_headers.keys().collect::<Vec<_>>())
            .field("models", &self.models)
            .field("timeouts", &self.timeouts)
            .field("health", &self.health.as_ref().map(Health::id))
            .finish_non_exhaustive()
    }
}

/// The machinery behind every adapter type.
#[derive(Clone)]
pub(crate) struct Engine {
    pub(crate) shared: Arc<Shared>,
    pub(crate) client: HttpClient,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.shared.fmt(f)
    }
}

impl Engine {
    fn call<B>(&self, req: Request<B>) -> ResponseFuture
    where
        B: Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<BoxError>,
    {
        let shared = self.shared.clone();
        let client = self.client.clone();
        // The attempt's span (the router's, kept by the observe layer): the usage
        // goes there.
        let attempt = tracing::Span::current();
        let span = tracing::debug_span!(
            "provider",
            provider = %shared.name,
            path = %req.uri().path(),
            model = tracing::field::Empty,
            status = tracing::field::Empty,
        );
        ResponseFuture::new(run(shared, client, req, attempt).instrument(span))
    }
}

/// How one request is handled.
enum Plan {
    /// OpenAI-compatible: forward, watch streams for usage (and `[DONE]` on the
    /// completion routes).
    OpenAi { expect_done: bool },
    /// Anthropic chat completion: translate both ways.
    Translate { include_usage: bool },
    /// Anthropic, any other route: forward untouched.
    Raw,
}

struct Prepared {
    plan: Plan,
    /// Whether the caller asked for a stream (picks the first-byte deadline).
    stream: bool,
    path: String,
    body: Bytes,
    requested_model: Option<String>,
    model: Option<String>,
}

fn is_chat_path(path: &str) -> bool {
    matches!(
        path.trim_end_matches('/'),
        "/v1/chat/completions" | "/chat/completions"
    )
}

fn prepare(
    shared: &Shared,
    method: &Method,
    path: &str,
    body: ReplayBody,
) -> Result<Prepared, TranslateError> {
    match shared.kind {
        ProviderKind::OpenAi => {
            // The base URL carries the version path, as in OpenAI's SDKs.
            let rest = match path.strip_prefix("/v1") {
                Some(r) if r.is_empty() || r.starts_with('/') => r,
                _ => path,
            };
            let mut p = prepare_request(&body, &shared.models, shared.stream_usage)?;
            let chat = rest.trim_end_matches('/').ends_with("/chat/completions");
            // Chat completions only: the legacy `/completions` takes `max_tokens`
            // and nothing else, everywhere. A request that sets no limit (the
            // body's one parse says so) is not searched.
            let limit = chat && body.info().sets_max_tokens();
            if let Some(field) = shared.token_limit_field.filter(|_| limit) {
                p.body = crate::translate::openai::rename_token_limit(p.body, field)?;
            }
            let expect_done = p.stream && (chat || rest.trim_end_matches('/') == "/completions");
            Ok(Prepared {
                plan: Plan::OpenAi { expect_done },
                stream: p.stream,
                path: format!("{}{rest}", shared.base.path),
                body: p.body,
                requested_model: p.requested_model,
                model: p.model,
            })
        }
        ProviderKind::Anthropic if method == Method::POST && is_chat_path(path) => {
            let t = request_to_anthropic(
                body.bytes(),
                &RequestOptions {
                    models: &shared.models,
                    default_max_tokens: shared.default_max_tokens,
                },
            )?;
            Ok(Prepared {
                plan: Plan::Translate {
                    include_usage: t.include_usage || shared.stream_usage,
                },
                stream: t.stream,
                path: format!("{}/v1/messages", shared.base.path),
                body: t.body.into(),
                requested_model: Some(t.requested_model),
                model: Some(t.model),
            })
        }
        ProviderKind::Anthropic => {
            let rest = if path.starts_with("/v1/") || path == "/v1" {
                path.to_string()
            } else {
                format!("/v1{path}")
            };
            Ok(Prepared {
                plan: Plan::Raw,
                // Not parsed: the longer, non-streamed deadline.
                stream: false,
                path: format!("{}{rest}", shared.base.path),
                body: body.into_bytes(),
                requested_model: None,
                model: None,
            })
        }
    }
}

/// How OpenAI discounts a prompt token read from its cache (its GPT-4o models';
/// GPT-4.1 and the o-series bill a quarter, GPT-5 a tenth: set
/// `cache_read_per_million` for those).
const OPENAI_CACHE_READ_FACTOR: f64 = 0.5;

/// `price` with the cache-read price of this kind of provider when the entry sets
/// none: [`Price`]'s own default is Anthropic's (a tenth of the input price);
/// an OpenAI-compatible provider's cached tokens are priced at
/// [`OPENAI_CACHE_READ_FACTOR`], the smallest discount OpenAI gives (a budget is
/// better overestimated).
fn cached_price(price: Price, kind: ProviderKind) -> Price {
    match kind {
        ProviderKind::OpenAi => Price {
            cache_read_per_million: price
                .cache_read_per_million
                .or(Some(price.input_per_million * OPENAI_CACHE_READ_FACTOR)),
            ..price
        },
        ProviderKind::Anthropic => price,
    }
}

/// An answer made here, without asking the provider, in OpenAI's error shape.
fn local_error(status: StatusCode, kind: &str, message: &str) -> Response<ResponseBody> {
    let body = Bytes::from(openai_error(message, kind, None));
    let mut res = Response::new(ResponseBody::full(body.clone()));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    res
}

/// Whether an error answer refuses the operator's account (a rejected key: 401, 403
/// or a credentials hint; billing: 402 or a billing hint), with the error type and
/// message that replace the provider's own.
fn account_refusal(
    status: StatusCode,
    hint: Option<ErrorHint>,
) -> Option<(&'static str, &'static str)> {
    const CREDENTIALS: (&str, &str) = (
        "upstream_credentials_error",
        "the provider rejected this service's credentials for it",
    );
    const BILLING: (&str, &str) = (
        "upstream_billing_error",
        "the provider refused this service's account for billing reasons",
    );
    match hint {
        Some(ErrorHint::Credentials) => Some(CREDENTIALS),
        Some(ErrorHint::Billing) => Some(BILLING),
        Some(_) => None,
        None => match status.as_u16() {
            401 | 403 => Some(CREDENTIALS),
            402 => Some(BILLING),
            _ => None,
        },
    }
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"))
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim_start().starts_with("text/event-stream"))
}

fn set_full_body(parts: &mut http::response::Parts, body: &Bytes, json: bool) {
    parts.headers.remove(header::CONTENT_ENCODING);
    // Usually the provider's own length, untouched: kept (a new value allocates).
    let same = parts
        .headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        == Some(body.len());
    if !same {
        parts
            .headers
            .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    }
    if json {
        parts.headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
}

async fn run<B>(
    shared: Arc<Shared>,
    client: HttpClient,
    req: Request<B>,
    attempt: tracing::Span,
) -> Result<Response<ResponseBody>, BoxError>
where
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let request_deadline = Deadline::of(&req).map(|d| d.0);
    let (parts, body) = req.into_parts();
    let too_large = || {
        local_error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
            &BodyTooLarge::new(shared.max_request_bytes as u64).to_string(),
        )
    };
    // A replayable body is already buffered, and may already be parsed: its bytes
    // (and request information) are taken as they are. Other bodies are read here.
    let body = match take_replay(body) {
        Ok(replay) if replay.bytes().len() > shared.max_request_bytes => {
            return Ok(too_large());
        }
        Ok(replay) => replay,
        Err(body) => match Limited::new(body, shared.max_request_bytes).collect().await {
            Ok(c) => ReplayBody::new(c.to_bytes()),
            Err(e) if find::<LengthLimitError>(&*e).is_some() => return Ok(too_large()),
            Err(e) => return Err(e),
        },
    };

    let prepared = match prepare(&shared, &parts.method, parts.uri.path(), body) {
        Ok(p) => p,
        Err(e) => {
            tracing::debug!(error = %e, "request refused before sending");
            let mut res = local_error(
                StatusCode::BAD_REQUEST,
                "invalid_request_error",
                e.message(),
            );
            if e.is_unsupported() {
                // Well formed, but not for this provider: the routers try another.
                res.extensions_mut().insert(ErrorHint::Unsupported);
            }
            return Ok(res);
        }
    };
    let model = prepared.model.as_deref().unwrap_or("");
    tracing::Span::current().record("model", model);

    // The URI: base scheme and host, mapped path, base query then the caller's.
    let mut path_and_query = prepared.path;
    let query = [shared.base.query.as_deref(), parts.uri.query()];
    for (i, q) in query.iter().flatten().enumerate() {
        path_and_query.push(if i == 0 { '?' } else { '&' });
        path_and_query.push_str(q);
    }
    let uri = Uri::builder()
        .scheme(shared.base.scheme.clone())
        .authority(shared.base.authority.clone())
        .path_and_query(path_and_query)
        .build();
    let Ok(uri) = uri else {
        return Ok(local_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            "request path cannot be mapped onto the base URL",
        ));
    };

    let mut headers = forward_request_headers(&parts.headers);
    headers.extend(shared.fixed_headers.clone());
    if !prepared.body.is_empty() {
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    if let Some((name, value)) = &shared.auth {
        headers.insert(name.clone(), value.clone());
    }
    let mut upstream = Request::new(Full::new(prepared.body));
    *upstream.method_mut() = parts.method;
    *upstream.uri_mut() = uri;
    *upstream.headers_mut() = headers;

    let deadlines = Deadlines {
        start: Instant::now(),
        first_byte: shared.timeouts.first_byte_for(prepared.stream),
        total: shared.timeouts.total,
        idle: shared.timeouts.idle,
        request: request_deadline,
        streamed: prepared.stream,
    };
    let (deadline, elapsed) = deadlines.before_first_byte();
    let response = match tokio::time::timeout_at(deadline, client.request(upstream)).await {
        Err(_) => {
            tracing::debug!(error = %elapsed, "no response in time");
            return Err(elapsed.into());
        }
        Ok(Err(e)) => {
            let err = client_error(e);
            tracing::debug!(error = %err, "request failed");
            return Err(err);
        }
        Ok(Ok(res)) => res,
    };
    let (mut rparts, incoming) = response.into_parts();
    tracing::Span::current().record("status", rparts.status.as_u16());
    clean_response_headers(&mut rparts.headers);
    // A reason phrase is the provider's free text (a server writes whatever it
    // likes after the status code): never pass it on.
    rparts.extensions.remove::<hyper::ext::ReasonPhrase>();

    let provider = match &shared.health {
        Some(h) => h.id().clone(),
        None => ProviderId::new(&shared.name, model),
    };
    let translate = matches!(prepared.plan, Plan::Translate { .. });

    if !rparts.status.is_success() {
        // Read the (bounded) error body for hints; a broken error body still keeps
        // its status, which is what the classifiers need most.
        let body = match collect(incoming, MAX_ERROR_BODY, deadlines).await {
            Ok(Collected::Complete(b)) => b,
            Ok(Collected::TooLarge(prefix)) => prefix,
            Err(e) => {
                tracing::debug!(error = %e, "error body unreadable");
                Bytes::new()
            }
        };
        let hint = error_hint(rparts.status.as_u16(), &body);
        if let Some(hint) = hint {
            tracing::debug!(?hint, "error body hint");
            rparts.extensions.insert(hint);
        }
        let (body, json) = match account_refusal(rparts.status, hint) {
            // The operator's key or bill: the provider's text may quote a fragment
            // of the key and is none of the caller's business. Ours replaces it.
            Some((kind, message)) => (Bytes::from(openai_error(message, kind, None)), true),
            None if translate => (Bytes::from(error_to_openai(&body)), true),
            None => (body, false),
        };
        set_full_body(&mut rparts, &body, json);
        return Ok(Response::from_parts(rparts, ResponseBody::full(body)));
    }

    let handle = UsageHandle::default();
    let sink = UsageSink {
        handle: handle.clone(),
        price: shared
            .prices
            .lookup(&[model, prepared.requested_model.as_deref().unwrap_or("")])
            .map(|p| cached_price(p, shared.kind)),
        health: shared.health.clone(),
        span: attempt,
    };
    rparts.extensions.insert(handle);

    if is_event_stream(&rparts.headers) {
        let mode = match prepared.plan {
            Plan::OpenAi { expect_done } => Mode::Watch {
                parser: SseParser::with_limits(SseLimits::both(shared.max_event_bytes)),
                scan: StreamScan::default(),
                expect_done,
            },
            Plan::Translate { include_usage } => {
                Mode::Translate(StreamTranslator::new(include_usage, shared.max_event_bytes))
            }
            Plan::Raw => Mode::Raw,
        };
        if translate {
            rparts.headers.remove(header::CONTENT_LENGTH);
        }
        let body = StreamBody::new(incoming, mode, deadlines, sink, provider);
        return Ok(Response::from_parts(rparts, ResponseBody::stream(body)));
    }

    let body = match collect(incoming, shared.max_response_bytes, deadlines).await? {
        Collected::Complete(b) => b,
        Collected::TooLarge(_) => {
            return Err(BodyTooLarge::response(shared.max_response_bytes as u64).into());
        }
    };
    let (body, counts) = match prepared.plan {
        Plan::Translate { .. } => match response_to_openai(&body) {
            Ok((out, c)) => (
                Bytes::from(out),
                Some((
                    c.prompt_tokens,
                    c.completion_tokens,
                    c.cache_read_tokens,
                    c.cache_write_tokens,
                )),
            ),
            Err(e) => return Err(e.with_provider(provider).into()),
        },
        Plan::OpenAi { .. } if is_json(&rparts.headers) => match read_answer(&body) {
            Ok((u, outline)) => {
                // For output validation above: the members it reads, found.
                if let Some(outline) = outline {
                    rparts.extensions.insert(outline);
                }
                (
                    body,
                    u.map(|u| (u.prompt_tokens, u.completion_tokens, u.cached_tokens, 0)),
                )
            }
            Err(e) => return Err(e.with_provider(provider).into()),
        },
        _ => (body, None),
    };
    if let Some((prompt, completion, read, write)) = counts {
        let usage = sink.record(prompt, completion, read, write);
        rparts.extensions.insert(usage);
    }
    set_full_body(&mut rparts, &body, translate);
    Ok(Response::from_parts(rparts, ResponseBody::full(body)))
}

/// The body itself when it is a [`ReplayBody`] (no copy), else the body back.
fn take_replay<B: 'static>(mut body: B) -> Result<ReplayBody, B> {
    let any: &mut dyn Any = &mut body;
    match any.downcast_mut::<ReplayBody>() {
        Some(replay) => Ok(std::mem::take(replay)),
        None => Err(body),
    }
}

macro_rules! adapter {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone)]
        pub struct $name {
            pub(crate) engine: Engine,
        }

        impl $name {
            /// The provider name (for logs, errors and prices).
            pub fn name(&self) -> &str {
                &self.engine.shared.name
            }

            /// The wire protocol.
            pub fn kind(&self) -> ProviderKind {
                self.engine.shared.kind
            }

            /// The health record usage is written to, if any.
            pub fn health(&self) -> Option<&Health> {
                self.engine.shared.health.as_ref()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.engine.fmt(f)
            }
        }

        impl<B> Service<Request<B>> for $name
        where
            B: Body + Send + 'static,
            B::Data: Send,
            B::Error: Into<BoxError>,
        {
            type Response = Response<ResponseBody>;
            type Error = BoxError;
            type Future = ResponseFuture;

            /// Always ready: the pooled client queues requests itself.
            fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
                Poll::Ready(Ok(()))
            }

            fn call(&mut self, req: Request<B>) -> ResponseFuture {
                self.engine.call(req)
            }
        }
    };
}

adapter! {
    /// A client for an OpenAI-compatible API: OpenAI, Groq, DeepSeek, Mistral,
    /// Together, OpenRouter, vLLM, Ollama and the rest, told apart by base URL alone.
    ///
    /// Forwards the caller's OpenAI chat completion (or any other route under the
    /// base URL) with `Authorization: Bearer <key>`, the model name mapped, and usage
    /// requested at the end of streams; reads usage and cost from every answer. Build
    /// it with [`OpenAiCompatible::builder`].
    OpenAiCompatible
}

adapter! {
    /// A client for Anthropic's messages API that speaks OpenAI chat completions to
    /// its caller.
    ///
    /// `POST /v1/chat/completions` is translated to `POST /v1/messages` and the
    /// answer back, JSON and SSE (see [`translate::anthropic`](crate::translate::anthropic));
    /// other routes are forwarded untouched. Sends `x-api-key` and
    /// `anthropic-version`. Build it with [`Anthropic::builder`].
    Anthropic
}

adapter! {
    /// Either adapter, chosen by configuration ([`ProviderConfig::kind`](crate::ProviderConfig::kind)):
    /// one type for a gateway that loads its providers from a file. Build it with
    /// [`Provider::from_config`].
    Provider
}

impl From<OpenAiCompatible> for Provider {
    fn from(p: OpenAiCompatible) -> Self {
        Provider { engine: p.engine }
    }
}

impl From<Anthropic> for Provider {
    fn from(p: Anthropic) -> Self {
        Provider { engine: p.engine }
    }
}
