//! One request through the server: the in-flight limit, the body read (bounded in
//! size and time), then the router.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tower::ServiceExt;

use super::ServerConfig;
use super::conn::{Activity, Busy};
use crate::Gateway;

/// What every request of one server shares.
pub(super) struct Ctx {
    router: Router,
    probes: Router,
    in_flight: Arc<Semaphore>,
    max_in_flight: usize,
    max_body: usize,
    drain_bytes: usize,
    body_timeout: Duration,
    header_timeout: Duration,
    retry_after: HeaderValue,
}

impl Ctx {
    pub(super) fn new(gateway: &Gateway, config: &ServerConfig) -> Ctx {
        let secs = config.retry_after.as_secs().max(1);
        Ctx {
            router: gateway.router.clone(),
            probes: gateway.probes(),
            in_flight: Arc::new(Semaphore::new(config.max_in_flight)),
            max_in_flight: config.max_in_flight,
            max_body: gateway.max_request_bytes,
            drain_bytes: config.oversize_drain_bytes,
            body_timeout: config.body_read_timeout,
            header_timeout: config.header_read_timeout,
            retry_after: HeaderValue::from(secs),
        }
    }
}

/// The probes' routes: answered by [`Gateway::probes`], never shed.
fn is_probe(path: &str) -> bool {
    path == crate::LIVEZ || path == crate::READYZ
}

/// An error answer of the gateway itself in the shape of the route's API:
/// Anthropic's on `/v1/messages` (and `/v1/messages/count_tokens`), OpenAI's (`{"error": {"message", "type",
/// "code"}}`) elsewhere.
pub(crate) fn error_answer(
    path: &str,
    status: StatusCode,
    code: &str,
    message: &str,
) -> Response<Body> {
    let body = if path == "/v1/messages" || path.starts_with("/v1/messages/") {
        let kind = match status {
            StatusCode::UNAUTHORIZED => "authentication_error",
            StatusCode::FORBIDDEN => "permission_error",
            StatusCode::PAYLOAD_TOO_LARGE => "request_too_large",
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded_error",
            _ => "invalid_request_error",
        };
        tower_failover::provider::translate::messages::error_body(kind, message)
    } else {
        let kind = match status {
            StatusCode::TOO_MANY_REQUESTS => "rate_limit_error",
            StatusCode::SERVICE_UNAVAILABLE => "overloaded",
            _ => "invalid_request_error",
        };
        serde_json::to_vec(&serde_json::json!({"error": {
            "message": message,
            "type": kind,
            "code": code,
        }}))
        .unwrap_or_default()
    };
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// An error answer in the shape of the route's API, closing the connection when
/// `close` (its request body was not read to the end).
fn error(path: &str, status: StatusCode, code: &str, message: &str, close: bool) -> Response<Body> {
    // As the router's access log does for the answers it gives (never headers or
    // bodies).
    tracing::info!(
        path,
        status = status.as_u16(),
        code,
        provider = "-",
        "request answered by the server"
    );
    let mut res = error_answer(path, status, code, message);
    if close {
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    res
}

/// Why a request body could not be read.
enum BodyError {
    TooLarge,
    TimedOut,
    Broken,
}

/// Reads `body` whole, up to `ctx.max_body` bytes, before `deadline`. A body over
/// the limit is read on and discarded, up to `ctx.drain_bytes` more, so that a
/// client still uploading is not cut off before it can read its `413`.
async fn read_body(ctx: &Ctx, mut body: Incoming, deadline: Instant) -> Result<Bytes, BodyError> {
    let declared = body.size_hint().exact();
    if declared.is_some_and(|n| n > (ctx.max_body as u64).saturating_add(ctx.drain_bytes as u64)) {
        // It could not be drained anyway; a client that sent `Expect:
        // 100-continue` has not started sending it.
        return Err(BodyError::TooLarge);
    }
    let mut buf = Vec::new();
    let mut over = declared.is_some_and(|n| n > ctx.max_body as u64);
    let mut drained = 0usize;
    loop {
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(BodyError::TimedOut),
            Ok(None) => break,
            Ok(Some(Err(_))) => return Err(BodyError::Broken),
            Ok(Some(Ok(f))) => f,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if !over && buf.len() + data.len() <= ctx.max_body {
            buf.extend_from_slice(&data);
            continue;
        }
        over = true;
        drained = drained.saturating_add(data.len());
        if drained > ctx.drain_bytes {
            break;
        }
    }
    if over {
        Err(BodyError::TooLarge)
    } else {
        Ok(Bytes::from(buf))
    }
}

/// Serves one request of a connection within the limits.
pub(super) async fn handle(
    ctx: Arc<Ctx>,
    activity: Arc<Activity>,
    req: Request<Incoming>,
) -> Result<Response<Guarded>, Infallible> {
    let busy = activity.begin();
    let path = req.uri().path().to_owned();
    // `connection: close` is HTTP/1's; an HTTP/2 stream just ends.
    let close = req.version() <= http::Version::HTTP_11;
    let probe = is_probe(&path);
    let permit = if probe {
        None
    } else {
        match ctx.in_flight.clone().try_acquire_owned() {
            Ok(p) => Some(p),
            Err(_) => {
                let message = format!(
                    "the gateway is serving its limit of {} requests; retry shortly",
                    ctx.max_in_flight
                );
                let mut res = error(
                    &path,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    &message,
                    close,
                );
                res.headers_mut()
                    .insert(header::RETRY_AFTER, ctx.retry_after.clone());
                crate::telemetry::local_answer(req.headers(), &path, &mut res);
                return Ok(res.map(|b| Guarded::new(b, busy, None)));
            }
        }
    };
    let (parts, body) = req.into_parts();
    let deadline = Instant::now() + ctx.body_timeout;
    let res = match read_body(&ctx, body, deadline).await {
        Ok(bytes) => {
            let req = Request::from_parts(parts, Body::from(bytes));
            let router = if probe { &ctx.probes } else { &ctx.router };
            match router.clone().oneshot(req).await {
                Ok(res) => res,
                Err(never) => match never {},
            }
        }
        Err(e) => {
            let mut res = match e {
                BodyError::TooLarge => error(
                    &path,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "request_too_large",
                    &format!("the request body is larger than {} bytes", ctx.max_body),
                    close,
                ),
                BodyError::TimedOut => error(
                    &path,
                    StatusCode::REQUEST_TIMEOUT,
                    "request_timeout",
                    &format!(
                        "the request body did not arrive within {} s",
                        ctx.body_timeout.as_secs_f64()
                    ),
                    close,
                ),
                BodyError::Broken => error(
                    &path,
                    StatusCode::BAD_REQUEST,
                    "invalid_request_error",
                    "the request body could not be read",
                    close,
                ),
            };
            crate::telemetry::local_answer(&parts.headers, &path, &mut res);
            res
        }
    };
    Ok(res.map(|b| Guarded::new(b, busy, permit)))
}

/// Answers one request of a connection over the connection limit with `503` and
/// `Retry-After`, then closes it.
pub(super) async fn refuse(tcp: TcpStream, ctx: &Ctx) {
    let retry_after = ctx.retry_after.clone();
    let drain = ctx.header_timeout;
    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
        let retry_after = retry_after.clone();
        async move {
            // Read a little of the body so the client sees the answer.
            let deadline = Instant::now() + drain;
            let (parts, mut body) = req.into_parts();
            let mut read = 0usize;
            while read < 64 << 10 {
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Ok(Some(Ok(f))) => read += f.data_ref().map_or(0, |d| d.len()),
                    _ => break,
                }
            }
            let mut res = error(
                "",
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the gateway has too many connections open; retry shortly",
                true,
            );
            res.headers_mut().insert(header::RETRY_AFTER, retry_after);
            crate::telemetry::local_answer(&parts.headers, parts.uri.path(), &mut res);
            Ok::<_, Infallible>(res)
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(ctx.header_timeout)
        .keep_alive(false)
        .serve_connection(TokioIo::new(tcp), service);
    let _ = tokio::time::timeout(ctx.header_timeout + ctx.header_timeout, conn).await;
}

/// An answer body that keeps its request counted (on its connection, and against
/// the in-flight limit) until it ends or is dropped.
pub(crate) struct Guarded {
    body: Body,
    _busy: Busy,
    _permit: Option<OwnedSemaphorePermit>,
}

impl Guarded {
    fn new(body: Body, busy: Busy, permit: Option<OwnedSemaphorePermit>) -> Self {
        Guarded {
            body,
            _busy: busy,
            _permit: permit,
        }
    }
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
