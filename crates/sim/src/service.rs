//! Answering one request: routing, faults, quota, latency and rendering.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderName, HeaderValue, RETRY_AFTER};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::Incoming;

use crate::admin;
use crate::body::SimBody;
use crate::counters::CounterSet;
use crate::duration::format_go_duration;
use crate::fault::{
    ABSURD_HEADER_NAMES, ABSURD_HEADER_VALUES, AbsurdHeaders, Billing, CutPoint, Fault, FaultKind,
    RetryAfter,
};
use crate::quota::{BucketView, QuotaView};
use crate::received::Received;
use crate::server::ConnCtl;
use crate::sim::{Flavor, Shared, jittered};
use crate::wire::openai::StreamFault;
use crate::wire::{self, Ask, GenSettings, alnum, anthropic, openai};
use tower_failover_core::rng::Rng;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Route {
    Completion,
    Embeddings,
    Models,
    WrongMethod,
    NotFound,
}

fn route(flavor: Flavor, method: &Method, path: &str) -> Route {
    let path = path.strip_suffix('/').unwrap_or(path);
    if path == flavor.completion_path() {
        if method == Method::POST {
            Route::Completion
        } else {
            Route::WrongMethod
        }
    } else if flavor == Flavor::OpenAi && path == "/v1/embeddings" {
        if method == Method::POST {
            Route::Embeddings
        } else {
            Route::WrongMethod
        }
    } else if path == "/v1/models" {
        if method == Method::GET {
            Route::Models
        } else {
            Route::WrongMethod
        }
    } else {
        Route::NotFound
    }
}

/// What every response of one request shares.
struct Ctx<'a> {
    shared: &'a Arc<Shared>,
    request_id: String,
    fault: Option<FaultKind>,
    /// Set by [`Fault::AbsurdHeaders`]: what every response of this request adds.
    absurd: Option<AbsurdHeaders>,
}

const JSON: HeaderValue = HeaderValue::from_static("application/json");
const SSE: HeaderValue = HeaderValue::from_static("text/event-stream; charset=utf-8");
const HTML: HeaderValue = HeaderValue::from_static("text/html; charset=utf-8");

impl Ctx<'_> {
    fn flavor(&self) -> Flavor {
        self.shared.cfg.flavor
    }

    fn error_body(&self, status: u16, message: Option<&str>) -> Vec<u8> {
        match self.flavor() {
            Flavor::OpenAi => openai::error_body(status, message),
            Flavor::Anthropic => anthropic::error_body(status, message),
        }
    }

    /// The provider's error response, with the current quota headers.
    fn error(&self, status: u16, message: Option<&str>) -> Response<SimBody> {
        let body = self.error_body(status, message);
        let view = self.shared.quota_peek();
        self.respond(status, JSON, SimBody::full(body), Some(view))
    }

    fn respond(
        &self,
        status: u16,
        content_type: HeaderValue,
        body: SimBody,
        view: Option<QuotaView>,
    ) -> Response<SimBody> {
        let mut res = Response::new(body);
        *res.status_mut() =
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let h = res.headers_mut();
        h.insert(CONTENT_TYPE, content_type);
        let rid = HeaderValue::try_from(self.request_id.as_str())
            .unwrap_or(HeaderValue::from_static("req_sim"));
        match self.flavor() {
            Flavor::OpenAi => {
                h.insert(HeaderName::from_static("x-request-id"), rid);
                h.insert(
                    HeaderName::from_static("openai-version"),
                    HeaderValue::from_static("2020-10-01"),
                );
            }
            Flavor::Anthropic => {
                h.insert(HeaderName::from_static("request-id"), rid);
            }
        }
        if let Some(v) = view {
            rate_limit_headers(self.flavor(), &v, h);
        }
        if let Ok(v) = HeaderValue::try_from(self.shared.cfg.name.as_str()) {
            h.insert(HeaderName::from_static("x-sim-name"), v);
        }
        if let Some(k) = self.fault {
            h.insert(
                HeaderName::from_static("x-sim-fault"),
                HeaderValue::from_static(k.as_str()),
            );
        }
        if let Some(a) = &self.absurd {
            absurd_headers(a, h);
        }
        self.shared.counters.answer(status);
        res
    }
}

/// Overwrite both providers' rate-limit headers with absurd values and add fillers.
fn absurd_headers(a: &AbsurdHeaders, h: &mut http::HeaderMap) {
    let given = a
        .value
        .as_deref()
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok());
    let value = |i: usize| match &given {
        Some(v) => v.clone(),
        None => HeaderValue::from_bytes(ABSURD_HEADER_VALUES[i % ABSURD_HEADER_VALUES.len()])
            .unwrap_or(HeaderValue::from_static("1e23")),
    };
    for (i, name) in ABSURD_HEADER_NAMES.iter().enumerate() {
        h.insert(HeaderName::from_static(name), value(i));
    }
    h.reserve(a.count);
    for i in 0..a.count {
        if let Ok(name) = HeaderName::try_from(format!("x-sim-filler-{i}")) {
            h.insert(name, value(i));
        }
    }
}

/// The API key a request carries (`Authorization: Bearer`, or Anthropic's `x-api-key`).
fn given_key(flavor: Flavor, headers: &http::HeaderMap) -> Option<&str> {
    let bearer = || {
        headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
    };
    match flavor {
        Flavor::OpenAi => bearer(),
        Flavor::Anthropic => headers
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(bearer),
    }
}

/// The provider's answer to credentials it rejects: 401 (bad key) or 403.
fn credential(ctx: &Ctx<'_>, status: u16, key: Option<&str>) -> Response<SimBody> {
    let body = match (ctx.flavor(), status) {
        (Flavor::OpenAi, 403) => openai::forbidden_body(),
        (Flavor::OpenAi, _) => openai::invalid_key_body(key),
        (Flavor::Anthropic, s) => anthropic::error_body(s, None),
    };
    ctx.respond(status, JSON, SimBody::full(body), None)
}

/// A billing failure, without any rate-limit header (even as a 429).
fn billing(ctx: &Ctx<'_>, shape: Billing) -> Response<SimBody> {
    let (status, body) = match ctx.flavor() {
        Flavor::OpenAi => openai::billing_body(shape),
        Flavor::Anthropic => anthropic::billing_body(shape),
    };
    ctx.respond(status, JSON, SimBody::full(body), None)
}

/// A whole (not streamed) body, as a delivery fault shapes it.
fn deliver(body: Vec<u8>, fault: Option<&Fault>, ctl: Arc<ConnCtl>) -> SimBody {
    let len = body.len();
    let cut = |c: &CutPoint| {
        let mut b = Bytes::from(body.clone());
        b.truncate(c.after_bytes.min(len));
        SimBody::paced(vec![b], Duration::ZERO, 0.0, Rng::seeded(0))
    };
    match fault {
        Some(Fault::Reset) => half(body).then_reset(ctl),
        Some(Fault::ResetAfter(c)) => cut(c).then_reset(ctl).declared_len(len),
        Some(Fault::Stall(c)) => cut(c).then_stall().declared_len(len),
        Some(Fault::Drip(interval)) => {
            SimBody::drip(Bytes::from(body), *interval).declared_len(len)
        }
        _ => SimBody::full(body),
    }
}

fn rate_limit_headers(flavor: Flavor, v: &QuotaView, h: &mut http::HeaderMap) {
    fn put(h: &mut http::HeaderMap, name: &'static str, value: String) {
        if let Ok(v) = HeaderValue::try_from(value) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    match flavor {
        Flavor::OpenAi => {
            h.insert(
                HeaderName::from_static("x-ratelimit-limit-requests"),
                v.requests.limit.into(),
            );
            h.insert(
                HeaderName::from_static("x-ratelimit-limit-tokens"),
                v.tokens.limit.into(),
            );
            h.insert(
                HeaderName::from_static("x-ratelimit-remaining-requests"),
                v.requests.remaining.into(),
            );
            h.insert(
                HeaderName::from_static("x-ratelimit-remaining-tokens"),
                v.tokens.remaining.into(),
            );
            put(
                h,
                "x-ratelimit-reset-requests",
                format_go_duration(v.requests.reset),
            );
            put(
                h,
                "x-ratelimit-reset-tokens",
                format_go_duration(v.tokens.reset),
            );
        }
        Flavor::Anthropic => {
            let now = SystemTime::now();
            let at = |b: &BucketView| wire::rfc3339(now + round_up_secs(b.reset));
            h.insert(
                HeaderName::from_static("anthropic-ratelimit-requests-limit"),
                v.requests.limit.into(),
            );
            h.insert(
                HeaderName::from_static("anthropic-ratelimit-requests-remaining"),
                v.requests.remaining.into(),
            );
            put(h, "anthropic-ratelimit-requests-reset", at(&v.requests));
            h.insert(
                HeaderName::from_static("anthropic-ratelimit-tokens-limit"),
                v.tokens.limit.into(),
            );
            h.insert(
                HeaderName::from_static("anthropic-ratelimit-tokens-remaining"),
                v.tokens.remaining.into(),
            );
            put(h, "anthropic-ratelimit-tokens-reset", at(&v.tokens));
        }
    }
}

/// Whole seconds, rounded up (RFC 3339 resets and `Retry-After` have 1 s resolution).
fn round_up_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
}

/// Answer one request.
pub(crate) async fn handle(
    shared: Arc<Shared>,
    ctl: Arc<ConnCtl>,
    req: Request<Incoming>,
) -> Response<SimBody> {
    if req.uri().path().starts_with("/_sim") {
        return admin::handle(&shared, req).await;
    }
    let counters = &shared.counters;
    CounterSet::inc(&counters.received);
    let received_body = Arc::new(std::sync::OnceLock::new());
    shared.received.push(Received {
        method: req.method().clone(),
        uri: req.uri().clone(),
        headers: req.headers().clone(),
        body: received_body.clone(),
    });
    let flavor = shared.cfg.flavor;
    let route = route(flavor, req.method(), req.uri().path());
    match route {
        Route::Completion if flavor == Flavor::OpenAi => {
            CounterSet::inc(&counters.chat_completions)
        }
        Route::Completion => CounterSet::inc(&counters.messages),
        Route::Models => CounterSet::inc(&counters.models),
        _ => {}
    }
    let seq = shared.next_seq();
    let mut rng = Rng::derive(shared.cfg.seed, seq);
    let mut request_id = String::with_capacity(32);
    match flavor {
        Flavor::OpenAi => request_id.push_str("req_"),
        Flavor::Anthropic => request_id.push_str("req_011C"),
    }
    alnum(&mut rng, 24, &mut request_id);
    let decision = shared.decide(seq, shared.elapsed(), route == Route::Completion);
    let ctx = Ctx {
        shared: &shared,
        request_id,
        fault: decision.fault.as_ref().map(Fault::kind),
        absurd: match &decision.fault {
            Some(Fault::AbsurdHeaders(a)) => Some(a.clone()),
            _ => None,
        },
    };

    // Outages that answer before reading the request.
    match decision.fault {
        Some(Fault::Refuse) => {
            ctl.kill();
            // The connection task drops this future with the connection.
            return std::future::pending().await;
        }
        Some(Fault::Hang) => {
            // Never answers. The future is dropped with its connection (HTTP/1.1)
            // or when its stream is reset (HTTP/2), at the latest when the sim stops.
            return std::future::pending().await;
        }
        Some(Fault::Status(s)) => return ctx.error(s, None),
        Some(Fault::RateLimit(ra)) => return rate_limited_fault(&ctx, ra),
        Some(Fault::Credential(s)) => return credential(&ctx, s, given_key(flavor, req.headers())),
        Some(Fault::Billing(shape)) => return billing(&ctx, shape),
        Some(Fault::HtmlPage) => {
            return ctx.respond(200, HTML, SimBody::full(wire::HTML_PAGE.as_bytes()), None);
        }
        Some(Fault::EmptyBody) => return ctx.respond(200, JSON, SimBody::full(Bytes::new()), None),
        _ => {}
    }

    let (parts, body) = req.into_parts();
    let bytes = match Limited::new(body, shared.cfg.max_body).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return ctx.error(413, None);
        }
        Err(_) => return ctx.error(400, Some("could not read the request body")),
    };
    let _ = received_body.set(bytes.clone());

    if let Some(key) = &shared.cfg.api_key {
        let given = given_key(flavor, &parts.headers);
        if given != Some(key.as_str()) {
            return credential(&ctx, 401, given);
        }
    }

    match route {
        Route::NotFound => ctx.error(404, Some("Unknown request URL.")),
        Route::WrongMethod => ctx.error(405, Some("Method not allowed.")),
        Route::Models => {
            let default_models;
            let models = match &shared.cfg.models {
                Some(m) => m,
                None => {
                    default_models = crate::sim::default_models(flavor);
                    &default_models
                }
            };
            let body = match flavor {
                Flavor::OpenAi => openai::models(models),
                Flavor::Anthropic => anthropic::models(models),
            };
            let view = shared.quota_peek();
            let body = deliver(body, decision.fault.as_ref(), ctl);
            ctx.respond(200, JSON, body, Some(view))
        }
        Route::Completion => {
            completion(&ctx, ctl, &bytes, decision.fault, decision.slowdown, rng).await
        }
        Route::Embeddings => embeddings(&ctx, ctl, &bytes, decision.fault.as_ref()),
    }
}

/// `POST /v1/embeddings`: deterministic unit vectors ([`wire::embeddings`]),
/// counted against the token quota like a completion's prompt.
fn embeddings(
    ctx: &Ctx<'_>,
    ctl: Arc<ConnCtl>,
    body: &[u8],
    fault: Option<&Fault>,
) -> Response<SimBody> {
    let shared = ctx.shared;
    let ask = match wire::embeddings::parse(body) {
        Ok(a) => a,
        Err(msg) => return ctx.error(400, Some(&msg)),
    };
    if let Some(models) = &shared.cfg.models
        && !models.contains(&ask.model)
    {
        let msg = format!(
            "The model `{}` does not exist or you do not have access to it.",
            ask.model
        );
        return ctx.error(404, Some(&msg));
    }
    let (admitted, view) = shared.quota_take(ask.prompt_tokens());
    if admitted.is_err() {
        CounterSet::inc(&shared.counters.quota_limited);
        return rate_limited_fault(ctx, RetryAfter::Seconds(1));
    }
    let body = deliver(wire::embeddings::render(&ask), fault, ctl);
    ctx.respond(200, JSON, body, Some(view))
}

/// First half of a body, ending the body there.
fn half(body: Vec<u8>) -> SimBody {
    let mut b = Bytes::from(body);
    b.truncate(b.len() / 2);
    SimBody::paced(vec![b], Duration::ZERO, 0.0, Rng::seeded(0))
}

fn rate_limited_fault(ctx: &Ctx<'_>, ra: RetryAfter) -> Response<SimBody> {
    let body = ctx.error_body(429, None);
    let (secs, view) = match ra {
        RetryAfter::Seconds(s) | RetryAfter::HttpDate(s) => {
            let mut v = ctx.shared.quota_peek();
            v.requests.remaining = 0;
            v.requests.reset = v.requests.reset.max(Duration::from_secs(s));
            (Some(s), Some(v))
        }
        RetryAfter::Absent => (None, None),
    };
    let mut res = ctx.respond(429, JSON, SimBody::full(body), view);
    let value = match (ra, secs) {
        (RetryAfter::HttpDate(_), Some(s)) => Some(httpdate::fmt_http_date(
            SystemTime::now() + Duration::from_secs(s),
        )),
        (_, Some(s)) => Some(s.to_string()),
        _ => None,
    };
    if let Some(v) = value.and_then(|v| HeaderValue::try_from(v).ok()) {
        res.headers_mut().insert(RETRY_AFTER, v);
    }
    res
}

async fn completion(
    ctx: &Ctx<'_>,
    ctl: Arc<ConnCtl>,
    body: &[u8],
    fault: Option<Fault>,
    slowdown: f64,
    mut rng: Rng,
) -> Response<SimBody> {
    let shared = ctx.shared;
    let flavor = shared.cfg.flavor;
    let parsed = match flavor {
        Flavor::OpenAi => openai::parse(body),
        Flavor::Anthropic => anthropic::parse(body),
    };
    let mut ask: Ask = match parsed {
        Ok(a) => a,
        Err(msg) => return ctx.error(400, Some(&msg)),
    };
    if flavor == Flavor::OpenAi
        && !shared.cfg.refuses_fields.is_empty()
        && let Some(field) = openai::forbidden_field(body, &shared.cfg.refuses_fields)
    {
        let view = shared.quota_peek();
        let body = SimBody::full(openai::extra_forbidden_body(&field));
        return ctx.respond(422, JSON, body, Some(view));
    }
    if shared.cfg.refuses_max_tokens && flavor == Flavor::OpenAi && ask.legacy_max_tokens {
        let view = shared.quota_peek();
        let body = SimBody::full(openai::max_tokens_refused_body());
        return ctx.respond(400, JSON, body, Some(view));
    }
    if let Some(models) = &shared.cfg.models
        && !ask.model.is_empty()
        && !models.contains(&ask.model)
    {
        let msg = format!(
            "The model `{}` does not exist or you do not have access to it.",
            ask.model
        );
        return ctx.error(404, Some(&msg));
    }
    if ask.model.is_empty() {
        ask.model = match &shared.cfg.models {
            Some(m) => m[0].clone(),
            None => crate::sim::default_models(flavor).swap_remove(0),
        };
    }
    if let Some((prefix, tokens)) = ask.cache_prefix {
        let fresh = shared
            .prompt_cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(prefix);
        if fresh {
            ask.cache_write = tokens;
        } else {
            ask.cache_read = tokens;
        }
    }
    let g = GenSettings {
        min_words: shared.cfg.min_words,
        max_words: shared.cfg.max_words,
        echo: shared.cfg.echo,
        reasoning_tokens: u64::from(shared.cfg.reasoning_tokens),
        tag: shared.cfg.tag.as_deref(),
    };
    let output_fault = fault.as_ref().filter(|f| f.kind().is_output());
    let reply = wire::generate(&ask, g, &mut rng, output_fault);

    let (admitted, view) = shared.quota_take(ask.prompt_tokens + reply.completion_tokens);
    if let Err(wait) = admitted {
        CounterSet::inc(&shared.counters.quota_limited);
        let secs = round_up_secs(wait).as_secs().max(1);
        let short_of_requests = view.requests.remaining == 0;
        let body = match (flavor, short_of_requests) {
            (Flavor::OpenAi, false) => openai::tokens_limit_body(&format!(
                "Rate limit reached for tokens per min (TPM): Limit {}, Used {}, Requested {}. Please try again in {}.",
                view.tokens.limit,
                view.tokens.limit - view.tokens.remaining,
                ask.prompt_tokens + reply.completion_tokens,
                format_go_duration(wait)
            )),
            (Flavor::OpenAi, true) => openai::error_body(
                429,
                Some(&format!(
                    "Rate limit reached for requests per min (RPM): Limit {}, Used {}, Requested 1. Please try again in {}.",
                    view.requests.limit,
                    view.requests.limit - view.requests.remaining,
                    format_go_duration(wait)
                )),
            ),
            (Flavor::Anthropic, _) => anthropic::error_body(429, None),
        };
        let mut res = ctx.respond(429, JSON, SimBody::full(body), Some(view));
        res.headers_mut().insert(RETRY_AFTER, secs.into());
        return res;
    }
    CounterSet::add(&shared.counters.prompt_tokens, ask.prompt_tokens);
    CounterSet::add(&shared.counters.completion_tokens, reply.completion_tokens);

    let interval = shared.cfg.token_interval.mul_f64(slowdown);
    // A reasoning model's thinking comes before its first token.
    let thinking =
        interval.saturating_mul(u32::try_from(reply.reasoning_tokens).unwrap_or(u32::MAX));
    let ttft = jittered(shared.cfg.ttft, shared.cfg.jitter, &mut rng).mul_f64(slowdown) + thinking;
    let created = wire::unix_now();
    let mut id = String::with_capacity(40);
    match flavor {
        Flavor::OpenAi => id.push_str("chatcmpl-"),
        Flavor::Anthropic => id.push_str("msg_01"),
    }
    alnum(
        &mut rng,
        if flavor == Flavor::OpenAi { 29 } else { 22 },
        &mut id,
    );
    let stream_fault = match fault {
        Some(Fault::MalformedJson) => StreamFault::Malformed,
        Some(Fault::ErrorObject) => StreamFault::Error,
        _ => StreamFault::None,
    };
    let clean = fault.is_none();

    if ask.stream {
        let mut events = match flavor {
            Flavor::OpenAi => {
                let meta = openai::Meta {
                    id: &id,
                    created,
                    model: &ask.model,
                    parts: shared.cfg.content_parts,
                };
                openai::stream(&meta, &ask, &reply, stream_fault)
            }
            Flavor::Anthropic => {
                let meta = anthropic::Meta {
                    id: &id,
                    model: &ask.model,
                };
                anthropic::stream(&meta, &ask, &reply, stream_fault)
            }
        };
        enum End {
            Clean,
            Reset,
            Stall,
        }
        let end = match fault {
            Some(Fault::Truncate(n)) => {
                events.truncate(n);
                End::Clean
            }
            Some(Fault::Reset) => {
                events.truncate(events.len() / 2);
                End::Reset
            }
            Some(Fault::ResetAfter(c)) => {
                events.truncate(c.after_events);
                End::Reset
            }
            Some(Fault::Stall(c)) => {
                events.truncate(c.after_events);
                End::Stall
            }
            _ => End::Clean,
        };
        sleep(ttft).await;
        let body_rng = Rng::derive(rng.next_u64(), 1);
        let mut body = match fault {
            Some(Fault::Drip(every)) => SimBody::drip(Bytes::from(events.concat()), every),
            _ => SimBody::paced(events, interval, shared.cfg.jitter, body_rng),
        };
        match end {
            End::Clean => {}
            End::Reset => body = body.then_reset(ctl),
            End::Stall => body = body.then_stall(),
        }
        CounterSet::inc(&shared.counters.streamed);
        if clean {
            CounterSet::inc(&shared.counters.completed);
        }
        let body = body.count_abandoned(Arc::clone(shared));
        let mut res = ctx.respond(200, SSE, body, Some(view));
        res.headers_mut()
            .insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        return res;
    }

    let json = match (flavor, &fault) {
        (_, Some(Fault::ErrorObject)) => {
            ctx.error_body(if flavor == Flavor::OpenAi { 500 } else { 529 }, None)
        }
        (Flavor::OpenAi, _) => {
            let meta = openai::Meta {
                id: &id,
                created,
                model: &ask.model,
                parts: shared.cfg.content_parts,
            };
            openai::completion(&meta, &ask, &reply)
        }
        (Flavor::Anthropic, _) => {
            let meta = anthropic::Meta {
                id: &id,
                model: &ask.model,
            };
            anthropic::message(&meta, &ask, &reply)
        }
    };
    let generation = jittered(
        interval.saturating_mul(reply.pieces.len() as u32),
        shared.cfg.jitter,
        &mut rng,
    );
    sleep(ttft + generation).await;
    let body = match fault {
        Some(Fault::MalformedJson) => {
            let mut b = json;
            b.truncate(b.len() * 2 / 3);
            SimBody::full(b)
        }
        Some(Fault::Truncate(_)) => half(json),
        other => deliver(json, other.as_ref(), ctl),
    };
    if clean {
        CounterSet::inc(&shared.counters.completed);
    }
    ctx.respond(200, JSON, body, Some(view))
}

async fn sleep(d: Duration) {
    if !d.is_zero() {
        tokio::time::sleep(d).await;
    }
}
