//! Deferred mode: `202 Accepted` when every provider is down, the answer later at
//! `GET /v1/jobs/{id}`.
//!
//! A caller that can wait longer than one HTTP request (a batch, an offline
//! enrichment) asks for it per request, on `POST /v1/chat/completions` or
//! `POST /v1/messages`, with either header:
//!
//! | header | meaning |
//! | --- | --- |
//! | `Prefer: respond-async` | [RFC 7240]: a preference the gateway may decline; when it is applied the `202` says `Preference-Applied: respond-async` |
//! | `x-tower-failover-defer: true` | the gateway's own header: a demand (`false` turns deferral off for the request, whatever `Prefer` says; another value is a `400`) |
//!
//! The request runs as usual first. Only when every provider is unavailable
//! (the stack fails with
//! [`AllProvidersFailed`], or its wait
//! queue gives up) does the gateway keep the request (it is already buffered)
//! and answer:
//!
//! ```text
//! HTTP/1.1 202 Accepted
//! location: /v1/jobs/9f2c4e0d7a1b4c3e8d5f6a7b8c9d0e1f
//! retry-after: 5
//! x-tower-failover-job-status: pending
//!
//! {"id":"9f2c4e0d7a1b4c3e8d5f6a7b8c9d0e1f","object":"job","status":"pending"}
//! ```
//!
//! `DELETE /v1/jobs/{id}` cancels a job still waiting (`200`
//! `{"id","object":"job","deleted":true}`; its request is dropped, even mid-flight
//! to a provider) or forgets a kept answer; the id then reads `404`.
//!
//! Nested in a larger app (`Router::new().nest("/llm", gateway.router)`), the
//! `Location` carries the prefix: `/llm/v1/jobs/{id}`.
//!
//! The job is sent again as soon as the health registry reports a recovery (a
//! circuit half-open or closed, a probe passing, a rate limit ending, a manual
//! override), or at the earliest known recovery time, until it is answered or
//! `max_wait` has passed. A request the stack answers (even with an error that is
//! not "every provider is down", such as `404 model_not_found`) is answered at
//! once, as without the header.
//!
//! `GET /v1/jobs/{id}` then answers:
//!
//! | job | status | body | `x-tower-failover-job-status` |
//! | --- | --- | --- | --- |
//! | waiting | `200` with `Retry-After` | `{"id","object":"job","status":"pending"}` | `pending` |
//! | answered | the answer's own status (usually `200`) | the answer, exactly what the request would have got (a chat completion, or an Anthropic Message on `/v1/messages`) | `done` |
//! | failed (no provider recovered within `max_wait`: `504`; another error of the stack: its status) | the error's | `{"error":{"message","type","code"}}`, OpenAI's shape | `failed` |
//! | answer older than `keep_results` | `410` | `{"error":{…,"code":"job_expired"}}` | |
//! | never seen here | `404` | `{"error":{…,"code":"job_not_found"}}` | |
//!
//! An answer is kept for `keep_results` and may be read any number of times; its
//! id then answers `410` for as long again, then `404`.
//!
//! # Limits
//!
//! The `[deferred]` section of the file
//! ([`DeferredConfig`]) bounds the store;
//! `deferred = false` turns deferral off (both headers are then ignored).
//!
//! | key | default | what |
//! | --- | --- | --- |
//! | `capacity` | `1024` | jobs held, waiting or answered |
//! | `max_wait` | `"30m"` | a job's maximum age (at most `"1h"`): then it fails with `504` |
//! | `keep_results` | `"15m"` | how long an answer is kept |
//! | `max_body_bytes` | `8388608` | the largest answer kept (a larger one fails the job with `502`) |
//! | `max_total_bytes` | `67108864` | bytes held across jobs (requests waiting and answers kept) |
//!
//! With the store at `capacity` or `max_total_bytes`, the caller gets the
//! all-providers-down error it would have got without the header (`503`,
//! `Retry-After`), its message saying the deferred job store is full: the store
//! never grows past its bounds. Under byte pressure the oldest answers expire
//! first.
//!
//! # Streams, ids, replicas
//!
//! A stream cannot wait for later: a request with `"stream": true` and
//! `x-tower-failover-defer: true` is refused with `400`; with only
//! `Prefer: respond-async` it is served as a normal stream (the preference is
//! declined).
//!
//! Ids are 128 bits from the operating system's random source (32 hex digits):
//! the id is the only key to the answer, so hand it only to the caller. Jobs live
//! in the memory of the replica that accepted them: another replica answers
//! `404` for that id, and a restart loses them. Behind a load balancer, send
//! `/v1/jobs/*` to the replica that answered the `202` (sticky sessions), or let
//! the balancer ask each replica in turn until one does not answer `404`, as the
//! repository's `deploy/nginx.conf` does (`proxy_next_upstream http_404`).
//!
//! With caller keys (`[auth]`), a deferrable request passes the same checks
//! (key, allowed models, budget) when it arrives, and `GET /v1/jobs/{id}` needs a
//! valid key too; the id, not the key, decides which answer is read. What a job
//! spends when it runs is charged to the budget of the key that sent it.
//!
//! [RFC 7240]: https://www.rfc-editor.org/rfc/rfc7240

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_failover::error::{AllProvidersFailed, Elapsed, TimeoutKind, find};
use tower_failover::provider::{Usage, UsageHandle};
use tower_failover::replay::{ReplayBody, clone_request};
use tower_failover::retry::{
    Deferred, DeferredConfig, JobId, JobStatus, QueueConfig, WaitQueue, WaitQueueLayer,
};
use tower_failover::{BoxBody, ConfigError, Failover, Registry};

use super::auth::Charge;
use super::{AppState, chat, messages};

/// The gateway's own opt-in header (`true` or `false`).
pub const DEFER_HEADER: &str = "x-tower-failover-defer";
/// On every answer about a job: `pending`, `done` or `failed`.
pub const JOB_STATUS_HEADER: &str = "x-tower-failover-job-status";
/// Where jobs are read: `GET {JOBS_PATH}/{id}`.
pub const JOBS_PATH: &str = "/v1/jobs";

/// `Retry-After` when no provider says when it recovers.
const DEFAULT_RETRY_AFTER: Duration = Duration::from_secs(5);
/// The longest pause between a job's attempts while every attempt fails with no
/// recovery in sight (a recovery event still wakes it at once).
const MAX_PAUSE: Duration = Duration::from_secs(30);
/// The longest `Retry-After` given for a pending job.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(60);

/// How a request asked to be deferred.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ask {
    /// `Prefer: respond-async`: may be declined.
    Prefer,
    /// `x-tower-failover-defer: true`.
    Demand,
}

/// Reads the opt-in of a caller's headers; `Err` names a bad value of
/// [`DEFER_HEADER`].
pub(crate) fn asked(headers: &HeaderMap) -> Result<Option<Ask>, String> {
    // Names made once: a lookup by `&str` parses the name on every request.
    static DEFER: http::HeaderName = http::HeaderName::from_static(DEFER_HEADER);
    static PREFER: http::HeaderName = http::HeaderName::from_static("prefer");
    if let Some(v) = headers.get(&DEFER) {
        let v = v.to_str().unwrap_or("").trim();
        if v.eq_ignore_ascii_case("true") {
            return Ok(Some(Ask::Demand));
        }
        if v.eq_ignore_ascii_case("false") {
            return Ok(None);
        }
        return Err(format!("{DEFER_HEADER} must be true or false"));
    }
    let prefer = headers
        .get_all(&PREFER)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|p| {
            // `respond-async`, perhaps with parameters (`; x=y`).
            let token = p.split([';', '=']).next().unwrap_or("").trim();
            token.eq_ignore_ascii_case("respond-async")
        });
    Ok(prefer.then_some(Ask::Prefer))
}

/// The front door a job came through, which shapes its answer.
#[derive(Debug, Clone)]
pub(crate) enum Door {
    /// `/v1/chat/completions`: the stack's answer as is.
    Chat,
    /// `/v1/messages`: translated back to an Anthropic Message.
    Messages {
        /// The model the caller asked for.
        model: String,
    },
}

impl Door {
    async fn reply(self, res: http::Response<BoxBody>) -> Response {
        match self {
            Door::Chat => chat::reply(res),
            // A deferred answer is never a stream: no `message_start` to size.
            Door::Messages { model } => messages::reply(res.map(Body::new), model, 0).await,
        }
    }
}

/// What the first attempt left to report.
#[derive(Clone)]
struct Last(AllProvidersFailed);

/// The stack as jobs call it: a stack whose own wait queue gave up is one more
/// "every provider is down", to wait through.
type JobStack = tower::util::MapErr<Failover, fn(BoxError) -> BoxError>;

fn queue_gave_up_is_all_down(err: BoxError) -> BoxError {
    if queue_gave_up(&err) {
        return AllProvidersFailed::new(vec![])
            .with_reason("wait queue expired")
            .into();
    }
    err
}

/// Runs one job: waits for a recovery, sends the request, shapes the answer for
/// its door.
#[derive(Clone)]
pub(crate) struct Runner {
    queue: WaitQueue<JobStack>,
    /// The store's `max_body_bytes`.
    max_body_bytes: usize,
}

impl Service<http::Request<ReplayBody>> for Runner {
    type Response = Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut req: http::Request<ReplayBody>) -> Self::Future {
        let door = req.extensions_mut().remove::<Door>().unwrap_or(Door::Chat);
        let charge = req.extensions_mut().remove::<Charge>();
        let limit = self.max_body_bytes;
        let last = req
            .extensions_mut()
            .remove::<Last>()
            .map_or_else(|| AllProvidersFailed::new(vec![]), |l| l.0);
        let wait = self.queue.wait_for_recovery(req, last, MAX_PAUSE);
        Box::pin(async move {
            let res = door.reply(wait.await?).await;
            let Some(charge) = charge else {
                return Ok(res);
            };
            // The whole answer, so that its usage is known, for the caller's budget.
            let (parts, body) = res.into_parts();
            let body = axum::body::to_bytes(body, limit).await?;
            let usage = parts
                .extensions
                .get::<UsageHandle>()
                .and_then(UsageHandle::get)
                .or_else(|| parts.extensions.get::<Usage>().copied());
            if let Some(usage) = usage {
                charge.usage(usage);
            }
            Ok(Response::from_parts(parts, Body::from(body)))
        })
    }
}

/// The job store of a gateway, and where it learns of recoveries.
#[derive(Clone)]
pub(crate) struct Jobs {
    store: Deferred<Runner>,
    registry: Registry,
}

impl Jobs {
    /// Jobs run through `failover`, waiting on its registry's recoveries.
    pub(crate) fn new(failover: &Failover, config: DeferredConfig) -> Result<Jobs, ConfigError> {
        config.validate().map_err(|e| e.within("deferred"))?;
        let registry = failover.handle().registry().clone();
        let queue = WaitQueueLayer::with_config(
            registry.clone(),
            QueueConfig {
                capacity: config.capacity,
                max_wait: config.max_wait,
            },
        )
        .map_err(|e| e.within("deferred"))?
        .layer(tower::util::MapErr::new(
            failover.clone(),
            queue_gave_up_is_all_down as fn(BoxError) -> BoxError,
        ));
        Ok(Jobs {
            store: Deferred::new(
                Runner {
                    queue,
                    max_body_bytes: config.max_body_bytes,
                },
                config,
            ),
            registry,
        })
    }

    /// When to ask again: the earliest known recovery, within 1 s to a minute.
    fn retry_after(&self) -> Duration {
        self.registry
            .earliest_recovery()
            .unwrap_or(DEFAULT_RETRY_AFTER)
            .clamp(Duration::from_secs(1), MAX_RETRY_AFTER)
    }
}

/// The outcome of a request that asked to be deferred.
pub(crate) enum Attempt {
    /// The stack answered at once.
    Answer(http::Response<BoxBody>),
    /// The stack failed, and the failure is the answer (perhaps the
    /// all-providers-down error, when the store is full).
    Failed(BoxError),
    /// `202 Accepted`: the job is kept.
    Accepted(Response),
}

/// Sends `req` through the stack; when every provider is down, keeps it as a job.
/// `mount` is the prefix the gateway's router is nested under (see [`mount`]), for
/// the job's `Location`.
pub(crate) async fn attempt(
    failover: Failover,
    jobs: &Jobs,
    req: http::Request<ReplayBody>,
    door: Door,
    ask: Ask,
    charge: Option<Charge>,
    mount: &str,
) -> Attempt {
    let mut job = clone_request(&req);
    let err = match failover.oneshot(req).await {
        Ok(res) => return Attempt::Answer(res),
        Err(err) => err,
    };
    let last = match find::<AllProvidersFailed>(&*err) {
        Some(last) => last.clone(),
        None if queue_gave_up(&err) => AllProvidersFailed::new(vec![]),
        None => return Attempt::Failed(err),
    };
    job.extensions_mut().insert(door);
    if let Some(charge) = charge {
        job.extensions_mut().insert(charge);
    }
    job.extensions_mut().insert(Last(last.clone()));
    match jobs.store.submit(job) {
        Ok(id) => Attempt::Accepted(accepted(&id, ask, jobs.retry_after(), mount)),
        Err(full) => {
            tracing::warn!(error = %full, "every provider is down and the deferred job store is full");
            let hint = last.retry_after().unwrap_or(DEFAULT_RETRY_AFTER);
            Attempt::Failed(
                last.with_reason("deferred job store full")
                    .with_retry_after(Some(hint))
                    .into(),
            )
        }
    }
}

fn queue_gave_up(err: &BoxError) -> bool {
    find::<Elapsed>(&**err).is_some_and(|e| e.kind() == TimeoutKind::Queue)
}

/// Whether an OpenAI-shaped chat body asks for a stream (`"stream": true`).
pub(crate) fn streamed(body: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Flag {
        #[serde(default)]
        stream: Option<bool>,
    }
    serde_json::from_slice::<Flag>(body).is_ok_and(|f| f.stream == Some(true))
}

/// The message of the `400` for a streamed request that demands deferral.
pub(crate) const STREAM_REFUSED: &str = "a streamed request cannot be deferred: send \"stream\": false, or drop x-tower-failover-defer (Prefer: respond-async is declined for streams instead)";

fn job_status(value: &'static str) -> (header::HeaderName, HeaderValue) {
    (
        header::HeaderName::from_static(JOB_STATUS_HEADER),
        HeaderValue::from_static(value),
    )
}

fn retry_after_value(wait: Duration) -> HeaderValue {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from(secs.max(1))
}

fn pending_body(id: &str) -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"id": id, "object": "job", "status": "pending"}))
}

/// The prefix the gateway's router is nested under in a larger app (`/llm` for
/// `Router::new().nest("/llm", gateway.router)`, from axum's [`NestedPath`]);
/// empty when served as it is.
///
/// [`NestedPath`]: axum::extract::NestedPath
pub(crate) fn mount(parts: &http::request::Parts) -> String {
    parts
        .extensions
        .get::<axum::extract::NestedPath>()
        .map(|n| n.as_str().trim_end_matches('/').to_owned())
        .unwrap_or_default()
}

/// `202 Accepted` with the job's `Location` (under the router's `mount`).
fn accepted(id: &JobId, ask: Ask, wait: Duration, mount: &str) -> Response {
    let mut res = (StatusCode::ACCEPTED, pending_body(id.as_str())).into_response();
    let h = res.headers_mut();
    if let Ok(location) = HeaderValue::from_str(&format!("{mount}{JOBS_PATH}/{id}")) {
        h.insert(header::LOCATION, location);
    }
    h.insert(header::RETRY_AFTER, retry_after_value(wait));
    let (name, value) = job_status("pending");
    h.insert(name, value);
    if ask == Ask::Prefer {
        h.insert(
            header::HeaderName::from_static("preference-applied"),
            HeaderValue::from_static("respond-async"),
        );
    }
    res
}

/// An OpenAI-shaped error of the job resource (`404`, `410`).
fn job_error(status: StatusCode, code: &str, message: &str) -> Response {
    let body = serde_json::json!({
        "error": {
            "message": message,
            "type": "invalid_request_error",
            "param": serde_json::Value::Null,
            "code": code,
        }
    });
    (status, axum::Json(body)).into_response()
}

/// `GET /v1/jobs/{id}`: see the [module documentation](self).
pub(crate) async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let Some(jobs) = &state.jobs else {
        return job_error(
            StatusCode::NOT_FOUND,
            "job_not_found",
            "no such job: deferred jobs are off on this gateway",
        );
    };
    let config = jobs.store.config();
    match jobs.store.status(&JobId::from(id.as_str())) {
        JobStatus::Pending { .. } => {
            let mut res = (StatusCode::OK, pending_body(&id)).into_response();
            let h = res.headers_mut();
            h.insert(header::RETRY_AFTER, retry_after_value(jobs.retry_after()));
            let (name, value) = job_status("pending");
            h.insert(name, value);
            res
        }
        JobStatus::Done {
            status,
            headers,
            body,
        } => {
            let mut res = Response::new(Body::from(body));
            *res.status_mut() = status;
            *res.headers_mut() = headers;
            res.headers_mut().remove(header::CONTENT_LENGTH);
            let (name, value) = job_status("done");
            res.headers_mut().insert(name, value);
            res
        }
        JobStatus::Failed { error, class } => {
            let body = serde_json::json!({
                "error": {
                    "message": error,
                    "type": class.kind,
                    "code": class.status.as_u16(),
                }
            });
            let mut res = (class.status, axum::Json(body)).into_response();
            let (name, value) = job_status("failed");
            res.headers_mut().insert(name, value);
            res
        }
        JobStatus::Expired => job_error(
            StatusCode::GONE,
            "job_expired",
            &format!(
                "this job's answer has expired: answers are kept {}",
                tower_failover::format_duration(config.keep_results)
            ),
        ),
        _ => job_error(
            StatusCode::NOT_FOUND,
            "job_not_found",
            "no such job (jobs are kept by the gateway replica that accepted them)",
        ),
    }
}

/// `DELETE /v1/jobs/{id}`: cancels a job still waiting (its request is dropped,
/// wherever it is) or forgets a kept answer. `200` with
/// `{"id","object":"job","deleted":true}`; `404 job_not_found` for an id this
/// replica does not hold.
pub(crate) async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    let removed = state
        .jobs
        .as_ref()
        .is_some_and(|jobs| jobs.store.remove(&JobId::from(id.as_str())));
    if !removed {
        return job_error(
            StatusCode::NOT_FOUND,
            "job_not_found",
            "no such job (jobs are kept by the gateway replica that accepted them)",
        );
    }
    let body = serde_json::json!({"id": id, "object": "job", "deleted": true});
    (StatusCode::OK, axum::Json(body)).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn the_opt_in_headers() {
        assert_eq!(asked(&headers(&[])), Ok(None));
        assert_eq!(
            asked(&headers(&[("prefer", "respond-async")])),
            Ok(Some(Ask::Prefer))
        );
        assert_eq!(
            asked(&headers(&[(
                "prefer",
                "return=minimal, Respond-Async; x=1"
            )])),
            Ok(Some(Ask::Prefer))
        );
        assert_eq!(
            asked(&headers(&[
                ("prefer", "wait=10"),
                ("prefer", "respond-async")
            ])),
            Ok(Some(Ask::Prefer))
        );
        assert_eq!(
            asked(&headers(&[("prefer", "respond-asynchronously")])),
            Ok(None)
        );
        assert_eq!(
            asked(&headers(&[(DEFER_HEADER, "TRUE")])),
            Ok(Some(Ask::Demand))
        );
        assert_eq!(
            asked(&headers(&[
                (DEFER_HEADER, "false"),
                ("prefer", "respond-async")
            ])),
            Ok(None),
            "the gateway's header wins"
        );
        assert!(asked(&headers(&[(DEFER_HEADER, "yes")])).is_err());
    }

    #[test]
    fn stream_flags() {
        assert!(streamed(br#"{"model":"m","stream":true}"#));
        assert!(!streamed(br#"{"model":"m","stream":false}"#));
        assert!(!streamed(br#"{"model":"m","stream":null}"#));
        assert!(!streamed(br#"{"model":"m"}"#));
        assert!(!streamed(b"not json"));
    }
}
