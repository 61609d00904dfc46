//! `POST /v1/chat/completions`, and the forwarding every front door shares.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use tower::ServiceExt;
use tower_failover::{Failover, error_response};

use super::{AppState, SERVED_BY};

/// The upstream headers passed to the caller. The rest (a provider's own
/// rate-limit headers, its name, its cookies) describe one provider's state, not
/// the gateway's, and could mislead a client's own retry logic.
const PASSED: [&str; 6] = [
    "content-type",
    "content-length",
    "cache-control",
    "x-request-id",
    "request-id",
    SERVED_BY,
];

pub(super) async fn chat(State(state): State<AppState>, req: Request) -> Response {
    let req = upstream(&state, req, "/v1/chat/completions");
    forward(state.failover, req).await
}

/// The request for the stack: the route's own `path`, and only what
/// `[upstream]` lets through of the caller's (see [`crate::upstream`]).
pub(super) fn upstream(state: &AppState, req: Request, path: &'static str) -> Request {
    let (parts, body) = req.into_parts();
    state.forwarding.request(&parts, path, body)
}

/// Sends `req` through `failover`; the answer keeps only the [`PASSED`] headers,
/// an error becomes OpenAI's error shape.
pub(super) async fn forward(failover: Failover, req: Request) -> Response {
    match failover.oneshot(req).await {
        Ok(res) => {
            let (mut parts, body) = res.into_parts();
            let upstream = std::mem::take(&mut parts.headers);
            for name in PASSED {
                for value in upstream.get_all(name) {
                    parts.headers.append(name, value.clone());
                }
            }
            Response::from_parts(parts, Body::new(body))
        }
        Err(err) => {
            tracing::warn!(error = %err, "no provider could answer");
            error_response(&*err).into_response()
        }
    }
}
