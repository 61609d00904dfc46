//! What the gateway tells its operators: `GET /metrics` in Prometheus' text format,
//! a request id on every request, and one span and one log line per request.
//!
//! - **Metrics** (feature `metrics`, on by default): the first gateway built in a
//!   process installs a Prometheus
//!   recorder (metrics-exporter-prometheus, without its own HTTP listener) as the
//!   global [`metrics`] recorder, before its stacks register their handles; `GET
//!   /metrics` renders it. The names are those of
//!   [`tower_failover::metrics`]; the `_seconds` histograms have buckets from 5 ms
//!   to 2 minutes.
//! - **Request id**: tower-http's `SetRequestIdLayer` keeps the caller's
//!   `x-request-id` or sets a new UUID, `PropagateRequestIdLayer` puts it on the
//!   answer (a provider's own request id, when it sent one, is passed on as
//!   `x-provider-request-id`), and it is a field of the `http` span (and of the stack's `request` and
//!   `attempt` spans inside it), so every log line of the request carries it.
//! - **Access log**: tower-http's `TraceLayer`, with an `http` span per request
//!   (method, path, request id) and one `INFO` line when the answer's headers are
//!   sent (status, latency, the provider that answered, the caller's key name).
//!   Never the headers or the body: they may carry credentials and personal data.

#[cfg(feature = "metrics")]
use std::collections::HashMap;
#[cfg(feature = "metrics")]
use std::future::Future;
#[cfg(feature = "metrics")]
use std::pin::Pin;
#[cfg(feature = "metrics")]
use std::sync::{Arc, OnceLock, RwLock};
#[cfg(feature = "metrics")]
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::HeaderName;
#[cfg(feature = "metrics")]
use axum::http::{HeaderValue, StatusCode, header};
#[cfg(feature = "metrics")]
use axum::response::IntoResponse;
use axum::response::Response;
#[cfg(feature = "metrics")]
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tower_http::request_id::{
    MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer,
};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::{Level, Span};

use crate::SERVED_BY;

/// The header carrying the request id.
pub const REQUEST_ID: &str = "x-request-id";

/// [`REQUEST_ID`] and [`SERVED_BY`] as header names, made once (a lookup by `&str`
/// parses the name each time).
static REQUEST_ID_NAME: HeaderName = HeaderName::from_static(REQUEST_ID);
static SERVED_BY_NAME: HeaderName = HeaderName::from_static(SERVED_BY);

/// The path metrics are served at.
pub const METRICS: &str = "/metrics";

/// Bucket bounds of the `_seconds` histograms: time to first byte and attempt
/// duration of LLM calls (tens of milliseconds to minutes).
#[cfg(feature = "metrics")]
const SECONDS_BUCKETS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

/// The process's Prometheus recorder, installed as the global recorder the first
/// time a gateway is built. `None` if another global recorder was installed first
/// (the embedding program's own): then `/metrics` answers 404 and the metrics go to
/// that recorder.
#[cfg(feature = "metrics")]
pub fn prometheus() -> Option<&'static PrometheusHandle> {
    static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let recorder = match PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS_BUCKETS)
            {
                Ok(b) => b.build_recorder(),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics: invalid histogram buckets; /metrics is off");
                    return None;
                }
            };
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("metrics: another recorder is installed; /metrics is off");
                return None;
            }
            spawn_upkeep(handle.clone());
            Some(handle)
        })
        .as_ref()
}

/// How often the histograms' samples are folded in when nobody scrapes.
#[cfg(feature = "metrics")]
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// How many times the upkeep has run in this process (for the test that guards it).
#[cfg(feature = "metrics")]
static UPKEEPS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Folds histogram samples in every [`UPKEEP_EVERY`] (a scrape does it too), so
/// that they stay bounded when nobody scrapes. The recorder is the process's and
/// lives as long as the process, so the upkeep does too: one thread, started with
/// the recorder, on no runtime. (It used to be a task per gateway that ended when
/// the gateway's shutdown sender was dropped, which [`crate::router`] does at once:
/// every request then left its samples behind, about 33 bytes each.)
#[cfg(feature = "metrics")]
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("tower-failover-metrics-upkeep".into())
        .spawn(move || {
            loop {
                // A thread of its own, on no runtime: the recorder outlives them all.
                #[allow(clippy::disallowed_methods)]
                std::thread::sleep(UPKEEP_EVERY);
                handle.run_upkeep();
                UPKEEPS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "metrics: no upkeep thread; histograms grow until scraped");
    }
}

/// `GET /metrics`: every metric in Prometheus' text format (version 0.0.4).
#[cfg(feature = "metrics")]
pub(crate) async fn metrics() -> Response {
    match prometheus() {
        Some(handle) => (
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            )],
            handle.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are recorded elsewhere\n").into_response(),
    }
}

/// A span's request id (its `request_id` field), kept in the span's extensions
/// by [`RequestIds`] so that a log format can print it on every line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpanRequestId(pub String);

/// A layer that keeps the `request_id` of each span that has one
/// ([`SpanRequestId`]); the JSON log format prints the innermost one.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestIds;

struct FindRequestId(Option<String>);

impl tracing::field::Visit for FindRequestId {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "request_id" && !value.is_empty() {
            self.0 = Some(value.to_owned());
        }
    }
    fn record_debug(&mut self, _: &tracing::field::Field, _: &dyn std::fmt::Debug) {}
}

impl<S> tracing_subscriber::Layer<S> for RequestIds
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut found = FindRequestId(None);
        attrs.record(&mut found);
        if let (Some(rid), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().insert(SpanRequestId(rid));
        }
    }

    fn on_record(
        &self,
        id: &tracing::span::Id,
        values: &tracing::span::Record<'_>,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut found = FindRequestId(None);
        values.record(&mut found);
        if let (Some(rid), Some(span)) = (found.0, ctx.span(id)) {
            span.extensions_mut().replace(SpanRequestId(rid));
        }
    }
}

/// The header a provider's own request id is passed on in.
pub const PROVIDER_REQUEST_ID: &str = "x-provider-request-id";

/// Renames a provider's `x-request-id` on the answer, so that the caller gets the
/// gateway's (the one in its logs) and still sees the provider's. Anthropic names
/// its id `request-id`: that one is copied (its SDKs read it under that name at
/// `/v1/messages`), so every answer of a provider carries `x-provider-request-id`.
async fn provider_request_id(mut res: Response) -> Response {
    // Names, not strings: a non-standard name inserted by `&str` is copied.
    static ANTHROPIC_REQUEST_ID: HeaderName = HeaderName::from_static("request-id");
    static PROVIDER_REQUEST_ID_NAME: HeaderName = HeaderName::from_static(PROVIDER_REQUEST_ID);
    let headers = res.headers_mut();
    if let Some(upstream) = headers.remove(&REQUEST_ID_NAME) {
        headers.insert(&PROVIDER_REQUEST_ID_NAME, upstream);
    } else if let Some(upstream) = headers.get(&ANTHROPIC_REQUEST_ID).cloned() {
        headers.insert(&PROVIDER_REQUEST_ID_NAME, upstream);
    }
    res
}

/// The routes counted by name; any other path counts as `other` (so a scanner's
/// paths cannot grow the label set).
#[cfg(feature = "metrics")]
const ROUTES: [&str; 9] = [
    "/v1/chat/completions",
    "/v1/messages",
    "/v1/messages/count_tokens",
    "/v1/embeddings",
    "/v1/models",
    "/health",
    "/health/events",
    "/health/force",
    METRICS,
];

/// The name of the key the answer's request was authenticated with
/// ([`crate::auth::Caller`]), or [`crate::auth::ANONYMOUS`].
fn caller(res: &Response) -> &str {
    res.extensions()
        .get::<crate::auth::Caller>()
        .map_or(crate::auth::ANONYMOUS, |c| c.name())
}

/// Gives an answer the server makes itself, before the router (a request over the
/// in-flight or connection limit, a body too large, too slow or broken), what the
/// router's layers give theirs: the caller's `x-request-id` or a new one, and a
/// count in `tower_failover_gateway_requests_total` (as `anonymous`: no key was
/// read yet). Its log line is the server's own.
pub(crate) fn local_answer(headers: &http::HeaderMap, path: &str, res: &mut Response) {
    let id = match headers.get(&REQUEST_ID_NAME) {
        Some(id) => Some(id.clone()),
        None => RandomId
            .make_request_id(&http::Request::new(()))
            .map(|id| id.into_header_value()),
    };
    if let Some(id) = id {
        res.headers_mut().insert(&REQUEST_ID_NAME, id);
    }
    #[cfg(feature = "metrics")]
    metrics::with_recorder(|recorder| {
        answer_counter(recorder, route_label(path), res).increment(1);
    });
    #[cfg(not(feature = "metrics"))]
    let _ = path;
}

/// The route label of a path: one of [`ROUTES`], `/v1/jobs/{id}`, or `other`.
#[cfg(feature = "metrics")]
fn route_label(path: &str) -> &'static str {
    ROUTES
        .iter()
        .find(|r| **r == path)
        .copied()
        .or_else(|| path.starts_with(JOBS_PREFIX).then_some("/v1/jobs/{id}"))
        .unwrap_or("other")
}

/// Counts every answer the router gives by route, status and caller (the key's
/// name): what callers saw (`tower_failover_gateway_requests_total`).
///
/// A tower layer of its own rather than `axum::middleware::from_fn`, which boxes a
/// future per request and boxes the inner service again for its `Next`; and the
/// counters' handles are kept ([`AnswerCounters`]) rather than looked up in the
/// recorder per answer (a `Key` built with three labels, hashed and compared).
#[cfg(feature = "metrics")]
#[derive(Clone)]
struct CountAnswers {
    counters: Arc<AnswerCounters>,
}

#[cfg(feature = "metrics")]
impl CountAnswers {
    fn new() -> Self {
        CountAnswers {
            counters: Arc::new(AnswerCounters {
                global: global_recorder(),
                handles: RwLock::new(HashMap::new()),
            }),
        }
    }
}

#[cfg(feature = "metrics")]
impl<S> tower::Layer<S> for CountAnswers {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            counters: self.counters.clone(),
        }
    }
}

/// The service of [`CountAnswers`].
#[cfg(feature = "metrics")]
#[derive(Clone)]
struct Counted<S> {
    inner: S,
    counters: Arc<AnswerCounters>,
}

#[cfg(feature = "metrics")]
impl<S> tower::Service<Request> for Counted<S>
where
    S: tower::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CountedFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // The route is read before the request is handed on (and consumed).
        let route = route_label(req.uri().path());
        CountedFuture {
            inner: self.inner.call(req),
            route,
            counters: self.counters.clone(),
        }
    }
}

#[cfg(feature = "metrics")]
pin_project_lite::pin_project! {
    /// The future of [`Counted`]: counts the answer when it is ready.
    struct CountedFuture<F> {
        #[pin]
        inner: F,
        route: &'static str,
        counters: Arc<AnswerCounters>,
    }
}

#[cfg(feature = "metrics")]
impl<F, E> Future for CountedFuture<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let res = std::task::ready!(this.inner.poll(cx));
        if let Ok(res) = &res {
            this.counters.count(this.route, res);
        }
        Poll::Ready(res)
    }
}

/// Who a recorder is: its address and its size. Only for a recorder that is never
/// freed (the global one, leaked when installed) and not zero-sized does it name
/// one recorder: no other can then start at that address with that size.
#[cfg(feature = "metrics")]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct RecorderId(usize, usize);

#[cfg(feature = "metrics")]
impl RecorderId {
    fn of(recorder: &dyn metrics::Recorder) -> Self {
        RecorderId(
            std::ptr::from_ref(recorder).cast::<()>().addr(),
            std::mem::size_of_val(recorder),
        )
    }
}

/// The process's global recorder, once one is installed (and is not zero-sized).
///
/// The `metrics` crate gives the current recorder only, which is a thread's local
/// one while a `with_local_recorder` runs there, and has no way to ask for the
/// global one; a thread of our own has no local recorder, so one is started to look
/// (once per process, when a gateway is built, not per request).
#[cfg(feature = "metrics")]
fn global_recorder() -> Option<RecorderId> {
    static GLOBAL: OnceLock<RecorderId> = OnceLock::new();
    if let Some(id) = GLOBAL.get() {
        return Some(*id);
    }
    let id = std::thread::scope(|s| {
        std::thread::Builder::new()
            .name("tower-failover-metrics-probe".into())
            .spawn_scoped(s, || metrics::with_recorder(RecorderId::of))
            .ok()?
            .join()
            .ok()
    })?;
    // Zero-sized: the no-op recorder (none installed yet), or one whose address
    // names nothing; counted without handles kept.
    (id.1 > 0).then(|| *GLOBAL.get_or_init(|| id))
}

/// The `tower_failover_gateway_requests_total` handles of one gateway, by caller,
/// then route and status.
///
/// A handle belongs to the recorder it was registered with. Handles are only kept
/// for, and used with, the process's global recorder, which is installed once and
/// never replaced: when another recorder is current (a test's
/// `metrics::with_local_recorder`, say), the answer is counted in it with a lookup,
/// as before. The map stays small: callers are the configured keys' names (and
/// `anonymous`), routes are [`ROUTES`] and two more, statuses are three digits.
#[cfg(feature = "metrics")]
struct AnswerCounters {
    global: Option<RecorderId>,
    handles: RwLock<HashMap<Arc<str>, ByRoute>>,
}

/// One caller's handles of [`AnswerCounters`], by route and status code.
#[cfg(feature = "metrics")]
type ByRoute = HashMap<(&'static str, u16), metrics::Counter>;

#[cfg(feature = "metrics")]
impl AnswerCounters {
    fn count(&self, route: &'static str, res: &Response) {
        let status = res.status();
        let caller = caller(res);
        metrics::with_recorder(|recorder| {
            if self.global != Some(RecorderId::of(recorder)) {
                return answer_counter(recorder, route, res).increment(1);
            }
            // Counted under the read lock: no clone (and drop) of the handle.
            if let Ok(handles) = self.handles.read()
                && let Some(counter) = handles
                    .get(caller)
                    .and_then(|by_route| by_route.get(&(route, status.as_u16())))
            {
                return counter.increment(1);
            }
            let counter = answer_counter(recorder, route, res);
            counter.increment(1);
            if let Ok(mut handles) = self.handles.write() {
                handles
                    .entry(Arc::from(caller))
                    .or_default()
                    .insert((route, status.as_u16()), counter);
            }
        });
    }
}

/// The answer's `tower_failover_gateway_requests_total` counter, looked up in
/// `recorder` (what `metrics::counter!` does).
#[cfg(feature = "metrics")]
fn answer_counter(
    recorder: &dyn metrics::Recorder,
    route: &'static str,
    res: &Response,
) -> metrics::Counter {
    static METADATA: metrics::Metadata<'static> =
        metrics::Metadata::new(module_path!(), metrics::Level::INFO, Some(module_path!()));
    let key = metrics::Key::from_parts(
        tower_failover::metrics::names::GATEWAY_REQUESTS,
        vec![
            metrics::Label::new("route", route),
            metrics::Label::new("status", status_label(res.status())),
            metrics::Label::new("caller", caller_label(res)),
        ],
    );
    recorder.register_counter(&key, &METADATA)
}

/// The usual statuses, whose labels are then static strings.
#[cfg(feature = "metrics")]
static STATUSES: [StatusCode; 20] = [
    StatusCode::OK,
    StatusCode::CREATED,
    StatusCode::ACCEPTED,
    StatusCode::NO_CONTENT,
    StatusCode::BAD_REQUEST,
    StatusCode::UNAUTHORIZED,
    StatusCode::FORBIDDEN,
    StatusCode::NOT_FOUND,
    StatusCode::METHOD_NOT_ALLOWED,
    StatusCode::REQUEST_TIMEOUT,
    StatusCode::PAYLOAD_TOO_LARGE,
    StatusCode::UNSUPPORTED_MEDIA_TYPE,
    StatusCode::UNPROCESSABLE_ENTITY,
    StatusCode::TOO_MANY_REQUESTS,
    StatusCode::INTERNAL_SERVER_ERROR,
    StatusCode::NOT_IMPLEMENTED,
    StatusCode::BAD_GATEWAY,
    StatusCode::SERVICE_UNAVAILABLE,
    StatusCode::GATEWAY_TIMEOUT,
    StatusCode::PAYMENT_REQUIRED,
];

/// The `status` label: a static string for the usual statuses, no allocation
/// per answer.
#[cfg(feature = "metrics")]
fn status_label(status: StatusCode) -> metrics::SharedString {
    match STATUSES.iter().find(|s| **s == status) {
        Some(s) => metrics::SharedString::from(s.as_str()),
        None => metrics::SharedString::from(status.as_str().to_owned()),
    }
}

/// The `caller` label: the key's name shared, or [`crate::auth::ANONYMOUS`],
/// no allocation per answer.
#[cfg(feature = "metrics")]
fn caller_label(res: &Response) -> metrics::SharedString {
    match res.extensions().get::<crate::auth::Caller>() {
        Some(c) => metrics::SharedString::from(c.shared()),
        None => metrics::SharedString::from(crate::auth::ANONYMOUS),
    }
}

/// Where deferred jobs are read (`/v1/jobs/{id}`).
const JOBS_PREFIX: &str = "/v1/jobs/";

/// The path as logged: a job's id is the only key to its answer, so only its
/// first 8 digits reach the logs.
fn logged_path(path: &str) -> std::borrow::Cow<'_, str> {
    match path.strip_prefix(JOBS_PREFIX) {
        Some(id) if id.len() > 8 => {
            let short = id.get(..8).unwrap_or("");
            format!("{JOBS_PREFIX}{short}…").into()
        }
        _ => path.into(),
    }
}

/// Makes a random version-4 UUID for each request that came without an
/// `x-request-id`, from a generator per thread seeded once from the process's
/// entropy. tower-http's `MakeRequestUuid` asks the operating system for 16 bytes
/// each time: a `getrandom` system call on every request. Request ids need to be
/// unique, not unguessable: 122 bits from a seeded generator are.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct RandomId;

impl MakeRequestId for RandomId {
    fn make_request_id<B>(&mut self, _: &http::Request<B>) -> Option<RequestId> {
        thread_local! {
            static IDS: std::cell::RefCell<tower_failover::rng::Rng> =
                std::cell::RefCell::new(tower_failover::rng::Rng::from_entropy());
        }
        let bits = IDS
            .with_borrow_mut(|rng| (u128::from(rng.next_u64()) << 64) | u128::from(rng.next_u64()));
        http::HeaderValue::from_bytes(&uuid_v4(bits))
            .ok()
            .map(RequestId::new)
    }
}

/// `bits` as a version-4 UUID in its hyphenated lowercase form (the version and
/// variant bits overwrite six of them).
fn uuid_v4(bits: u128) -> [u8; 36] {
    let bits = (bits & !(0xF000 << 64) & !(0xC000 << 48)) | (0x4000 << 64) | (0x8000 << 48);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [b'-'; 36];
    let mut nibble = 32;
    for (i, slot) in out.iter_mut().enumerate() {
        if matches!(i, 8 | 13 | 18 | 23) {
            continue;
        }
        nibble -= 1;
        *slot = HEX[((bits >> (nibble * 4)) & 0xF) as usize];
    }
    out
}

/// The request id, trace and access-log layers around `router`, outside `inner`
/// (authentication).
///
/// All of them are one layer for [`Router::layer`]: axum wraps every route in each
/// layer given to it separately and boxes each level, and every boxed level clones
/// the whole chain below it for each request (`Route::call` clones its box), so six
/// separate layers cost about 34 allocations a request where one composed layer
/// costs a handful (issue 19). The order is the same as six `.layer` calls, the
/// first one outermost.
pub(crate) fn layers<L>(router: Router, inner: L) -> Router
where
    L: tower::Layer<axum::routing::Route> + Clone + Send + Sync + 'static,
    L::Service: tower::Service<Request, Response = Response, Error = std::convert::Infallible>
        + Clone
        + Send
        + Sync
        + 'static,
    <L::Service as tower::Service<Request>>::Future: Send + 'static,
{
    let trace = TraceLayer::new_for_http()
        .make_span_with(|req: &Request| {
            let id = req
                .headers()
                .get(&REQUEST_ID_NAME)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            tracing::info_span!(
                target: "tower_failover_gateway",
                "http",
                method = %req.method(),
                path = %logged_path(req.uri().path()),
                request_id = id,
                caller = tracing::field::Empty,
            )
        })
        .on_request(())
        .on_response(|res: &Response, latency: Duration, _span: &Span| {
            let provider = res
                .headers()
                .get(&SERVED_BY_NAME)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            tracing::info!(
                target: "tower_failover_gateway",
                status = res.status().as_u16(),
                ms = latency.as_millis() as u64,
                provider,
                caller = caller(res),
                "request"
            );
        })
        .on_failure(DefaultOnFailure::new().level(Level::WARN));
    #[cfg(feature = "metrics")]
    let counted = CountAnswers::new();
    #[cfg(not(feature = "metrics"))]
    let counted = tower::layer::util::Identity::new();
    // Outermost first: the id is set before the span reads it, and copied to the
    // answer after.
    router.layer(
        tower::ServiceBuilder::new()
            .layer(SetRequestIdLayer::x_request_id(RandomId))
            .layer(trace)
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(axum::middleware::map_response(provider_request_id))
            .layer(counted)
            .layer(inner),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids_are_version_4_uuids_and_differ() {
        assert_eq!(
            &uuid_v4(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            b"01234567-89ab-4def-8123-456789abcdef"
        );
        assert_eq!(&uuid_v4(u128::MAX), b"ffffffff-ffff-4fff-bfff-ffffffffffff");
        assert_eq!(&uuid_v4(0), b"00000000-0000-4000-8000-000000000000");
        let req = http::Request::new(());
        let mut ids: Vec<_> = (0..1000)
            .map(|_| RandomId.make_request_id(&req).expect("an id"))
            .map(|id| id.header_value().to_str().expect("ascii").to_owned())
            .collect();
        for id in &ids {
            assert_eq!(id.len(), 36);
            assert_eq!(&id[14..15], "4", "{id}");
            assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        }
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 1000);
    }

    #[test]
    fn a_job_id_is_cut_to_8_digits_in_the_access_log() {
        assert_eq!(
            logged_path("/v1/jobs/0123456789abcdef0123456789abcdef"),
            "/v1/jobs/01234567…"
        );
        assert_eq!(logged_path("/v1/jobs/short"), "/v1/jobs/short");
        assert_eq!(
            logged_path("/v1/jobs/é€é€é€é€é€"),
            "/v1/jobs/…",
            "no panic off a char boundary"
        );
        assert_eq!(logged_path("/v1/chat/completions"), "/v1/chat/completions");
    }

    #[cfg(feature = "metrics")]
    #[test]
    fn status_labels_are_the_status_digits() {
        for code in [200, 201, 204, 404, 418, 429, 503, 599] {
            let status = StatusCode::from_u16(code).unwrap();
            assert_eq!(&*status_label(status), status.as_str());
        }
    }

    /// The value of the answer counter with these labels in a Prometheus rendering.
    #[cfg(feature = "metrics")]
    fn answers(rendered: &str, labels: &str) -> u64 {
        let prefix = format!("tower_failover_gateway_requests_total{{{labels}}} ");
        rendered
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    }

    /// Answers are counted in the recorder current when they are given: the
    /// handles kept for the global recorder are not used while a local one is set
    /// (a test's `with_local_recorder`), and are used again after.
    #[cfg(feature = "metrics")]
    #[test]
    fn answers_are_counted_in_the_current_recorder() {
        use futures_util::FutureExt;
        use tower::{Layer, ServiceExt};

        let global = prometheus().expect("the gateway's recorder is the global one");
        assert!(CountAnswers::new().counters.global.is_some());
        let svc = CountAnswers::new().layer(tower::service_fn(|_: Request| async {
            let mut res = Response::new(axum::body::Body::empty());
            *res.status_mut() = StatusCode::from_u16(299).unwrap();
            Ok::<_, std::convert::Infallible>(res)
        }));
        let one = |svc: &Counted<_>| {
            let req = Request::get("/health/force")
                .body(axum::body::Body::empty())
                .unwrap();
            let res = svc.clone().oneshot(req).now_or_never().expect("ready");
            assert_eq!(res.unwrap().status().as_u16(), 299);
        };
        let labels = r#"route="/health/force",status="299",caller="anonymous""#;
        let before = answers(&global.render(), labels);
        one(&svc);
        one(&svc);
        assert_eq!(answers(&global.render(), labels), before + 2);

        let local = PrometheusBuilder::new().build_recorder();
        let local_handle = local.handle();
        metrics::with_local_recorder(&local, || {
            one(&svc);
            one(&svc);
        });
        assert_eq!(answers(&local_handle.render(), labels), 2);
        assert_eq!(answers(&global.render(), labels), before + 2);

        one(&svc);
        assert_eq!(answers(&global.render(), labels), before + 3);
        assert_eq!(answers(&local_handle.render(), labels), 2);
    }

    /// The histograms are folded in with no gateway alive and nobody scraping: the
    /// upkeep belongs to the process's recorder, not to a gateway (a router built
    /// with `router()` drops its gateway at once).
    #[cfg(feature = "metrics")]
    #[tokio::test]
    async fn the_upkeep_runs_with_no_gateway_alive() {
        assert!(prometheus().is_some());
        let before = UPKEEPS.load(std::sync::atomic::Ordering::Relaxed);
        // A guard, not a bound: the upkeep runs every 5 s.
        let guard = tokio::time::Instant::now() + Duration::from_secs(120);
        while UPKEEPS.load(std::sync::atomic::Ordering::Relaxed) == before {
            assert!(
                tokio::time::Instant::now() < guard,
                "no upkeep in 120 s (it runs every {UPKEEP_EVERY:?})"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
