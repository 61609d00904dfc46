//! `POST /v1/chat/completions`, and the forwarding every front door shares.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::HeaderValue;
use axum::http::StatusCode;
use axum::http::header::{self, HeaderName};
use axum::response::{IntoResponse, Response};
use http_body_util::LengthLimitError;
use tower::{BoxError, ServiceExt};
use tower_failover::error::{BodyTooLarge, find};
use tower_failover::replay::ReplayBody;
use tower_failover::{BoxBody, Failover, error_response};

use super::{AppState, SERVED_BY, auth, jobs};

/// The upstream headers passed to the caller. The rest (a provider's own
/// rate-limit headers, its name, its cookies) describe one provider's state, not
/// the gateway's, and could mislead a client's own retry logic.
/// (Header names, not strings: inserting a header by a `&str` name that is not a
/// standard one copies the name, an allocation per header per answer.)
static PASSED: [HeaderName; 7] = [
    header::CONTENT_TYPE,
    header::CONTENT_LENGTH,
    header::CACHE_CONTROL,
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("request-id"),
    HeaderName::from_static(SERVED_BY),
    // A rejected answer given for want of a better one says so.
    HeaderName::from_static(tower_failover::REJECTED_HEADER),
];

pub(super) async fn chat(State(state): State<AppState>, req: Request) -> Response {
    if let Some(jobs) = &state.jobs {
        match jobs::asked(req.headers()) {
            Ok(Some(ask)) => {
                let charge = req.extensions().get::<auth::Charge>().cloned();
                let (parts, body) = req.into_parts();
                let mount = jobs::mount(&parts);
                let req = upstream(
                    &state,
                    Request::from_parts(parts, body),
                    "/v1/chat/completions",
                );
                return deferrable(&state, jobs, ask, req, charge, &mount).await;
            }
            Ok(None) => {}
            Err(message) => return bad_request(&message),
        }
    }
    let req = upstream(&state, req, "/v1/chat/completions");
    forward(state.failover.clone(), req).await
}

/// A request that asked for deferral ([`jobs`]): buffered here, so that it can
/// be kept as a job if every provider is down.
async fn deferrable(
    state: &AppState,
    jobs: &jobs::Jobs,
    ask: jobs::Ask,
    req: Request,
    charge: Option<auth::Charge>,
    mount: &str,
) -> Response {
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, state.max_request_bytes).await {
        Ok(bytes) => bytes,
        Err(e) if find::<LengthLimitError>(&e).is_some() => {
            let too_large = BodyTooLarge::new(state.max_request_bytes as u64);
            return error_response(&too_large).into_response();
        }
        Err(_) => return bad_request("the request body could not be read"),
    };
    if jobs::streamed(&bytes) {
        if ask == jobs::Ask::Demand {
            return bad_request(jobs::STREAM_REFUSED);
        }
        // A preference declined: a stream is served now.
        return forward(
            state.failover.clone(),
            Request::from_parts(parts, Body::from(bytes)),
        )
        .await;
    }
    let req = http::Request::from_parts(parts, ReplayBody::from(bytes));
    match jobs::attempt(
        state.failover.clone(),
        jobs,
        req,
        jobs::Door::Chat,
        ask,
        charge,
        mount,
    )
    .await
    {
        jobs::Attempt::Answer(res) => reply(res),
        jobs::Attempt::Failed(err) => error(&err),
        jobs::Attempt::Accepted(res) => res,
    }
}

/// A `400` in OpenAI's shape.
fn bad_request(message: &str) -> Response {
    let body = serde_json::json!({"error": {"message": message, "type": "invalid_request_error", "code": 400}});
    (StatusCode::BAD_REQUEST, axum::Json(body)).into_response()
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
        Ok(res) => reply(res),
        Err(err) => error(&err),
    }
}

/// The stack's answer with only the [`PASSED`] headers.
pub(super) fn reply(res: http::Response<BoxBody>) -> Response {
    let (mut parts, body) = res.into_parts();
    // One walk over the provider's headers, each value moved (a lookup per passed
    // name cost a hash and a probe each, found or not). The map is drained, not
    // replaced, so the passed values go back into the memory it already has: a new
    // map cost two allocations. `drain` names a header at its first value only; the
    // values after it repeat the last name.
    let mut kept: [Option<(HeaderName, HeaderValue)>; 8] = [const { None }; 8];
    let mut more: Vec<(HeaderName, HeaderValue)> = Vec::new();
    let mut n = 0;
    let mut last: Option<(HeaderName, bool)> = None;
    for (name, value) in parts.headers.drain() {
        if let Some(name) = name {
            let passed = PASSED.contains(&name);
            last = Some((name, passed));
        }
        if let Some((name, true)) = &last {
            match kept.get_mut(n) {
                Some(slot) => *slot = Some((name.clone(), value)),
                None => more.push((name.clone(), value)),
            }
            n += 1;
        }
    }
    for (name, value) in kept.into_iter().flatten().chain(more) {
        parts.headers.append(name, value);
    }
    Response::from_parts(parts, Body::new(body))
}

/// The stack's error in OpenAI's shape.
fn error(err: &BoxError) -> Response {
    tracing::warn!(error = %err, "no provider could answer");
    error_response(&**err).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_keeps_only_the_passed_headers_every_value_of_them() {
        let mut res = http::Response::new(tower_failover::BoxBody::default());
        let h = res.headers_mut();
        h.append("x-ratelimit-remaining-requests", "9".parse().unwrap());
        h.append(header::CONTENT_TYPE, "application/json".parse().unwrap());
        h.append("set-cookie", "a=1".parse().unwrap());
        h.append(SERVED_BY, "openai".parse().unwrap());
        h.append(header::CACHE_CONTROL, "no-store".parse().unwrap());
        h.append(header::CACHE_CONTROL, "private".parse().unwrap());
        h.append("openai-organization", "org-1".parse().unwrap());
        let out = reply(res);
        let names: Vec<_> = out.headers().keys().map(|n| n.as_str()).collect();
        assert_eq!(names.len(), 3, "{names:?}");
        assert_eq!(out.headers()[header::CONTENT_TYPE], "application/json");
        assert_eq!(out.headers()[SERVED_BY], "openai");
        let cache: Vec<_> = out
            .headers()
            .get_all(header::CACHE_CONTROL)
            .iter()
            .collect();
        assert_eq!(cache, ["no-store", "private"]);
    }

    #[test]
    fn more_passed_values_than_the_stack_holds_all_pass_in_order() {
        let mut res = http::Response::new(tower_failover::BoxBody::default());
        for i in 0..12 {
            res.headers_mut()
                .append(header::CACHE_CONTROL, format!("v{i}").parse().unwrap());
            res.headers_mut()
                .append("x-other", format!("o{i}").parse().unwrap());
        }
        let out = reply(res);
        let values: Vec<_> = out
            .headers()
            .get_all(header::CACHE_CONTROL)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        let want: Vec<_> = (0..12).map(|i| format!("v{i}")).collect();
        assert_eq!(values, want);
        assert_eq!(out.headers().len(), 12);
    }
}
