//! Turning any of our errors into an HTTP response, for gateway authors.

use std::error::Error;
use std::time::Duration;

use http::{HeaderValue, Response, StatusCode, header};

use crate::error::{
    AllProvidersFailed, BodyTooLarge, CircuitOpen, Elapsed, Invalid, RateLimited, Shed,
    TransportError, TruncatedStream, find,
};

/// The HTTP status, error type and `Retry-After` hint that suit an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ErrorClass {
    /// The status to answer with.
    pub status: StatusCode,
    /// A short machine-readable type, OpenAI-style (`"rate_limit_error"`, …).
    pub kind: &'static str,
    /// How long the caller should wait before retrying, if known.
    pub retry_after: Option<Duration>,
}

/// The `Retry-After` of an [`AllProvidersFailed`] that knows of no recovery.
pub const UNKNOWN_RECOVERY: Duration = Duration::from_secs(1);

/// Classifies an error for a gateway's answer:
///
/// | error (anywhere in the chain) | status | `Retry-After` |
/// | --- | --- | --- |
/// | [`BodyTooLarge`] of a request | 413 | |
/// | [`BodyTooLarge`] of a response | 502 | |
/// | [`AllProvidersFailed`] | 503 | earliest known recovery, else [`UNKNOWN_RECOVERY`] (1 s) |
/// | [`CircuitOpen`] | 503 | time until a probe |
/// | [`Shed`] | 503 | |
/// | [`RateLimited`] | 429 | the provider's |
/// | [`Elapsed`] | 504 | |
/// | [`Invalid`], [`TruncatedStream`], [`TransportError`] | 502 | |
/// | anything else | 502 | |
pub fn error_class(err: &(dyn Error + 'static)) -> ErrorClass {
    let class = |status, kind, retry_after| ErrorClass {
        status,
        kind,
        retry_after,
    };
    // Order matters: an AllProvidersFailed may wrap attempts, but it is the answer.
    if let Some(e) = find::<BodyTooLarge>(err) {
        return if e.is_response() {
            class(StatusCode::BAD_GATEWAY, "upstream_response_too_large", None)
        } else {
            class(StatusCode::PAYLOAD_TOO_LARGE, "request_too_large", None)
        };
    }
    if let Some(e) = find::<AllProvidersFailed>(err) {
        // Without a known recovery (every circuit still closed: the first moments
        // of an outage), a short wait all the same: a 503 without `Retry-After`
        // leaves each SDK to its own backoff, often none.
        return class(
            StatusCode::SERVICE_UNAVAILABLE,
            "all_providers_failed",
            Some(e.retry_after().unwrap_or(UNKNOWN_RECOVERY)),
        );
    }
    if let Some(e) = find::<CircuitOpen>(err) {
        return class(
            StatusCode::SERVICE_UNAVAILABLE,
            "provider_unavailable",
            Some(e.retry_in()),
        );
    }
    if find::<Shed>(err).is_some() {
        return class(StatusCode::SERVICE_UNAVAILABLE, "overloaded", None);
    }
    if let Some(e) = find::<RateLimited>(err) {
        return class(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limit_error",
            e.retry_after(),
        );
    }
    if find::<Elapsed>(err).is_some() {
        return class(StatusCode::GATEWAY_TIMEOUT, "timeout", None);
    }
    if find::<Invalid>(err).is_some() || find::<TruncatedStream>(err).is_some() {
        return class(StatusCode::BAD_GATEWAY, "invalid_upstream_response", None);
    }
    if find::<TransportError>(err).is_some() {
        return class(StatusCode::BAD_GATEWAY, "upstream_error", None);
    }
    class(StatusCode::BAD_GATEWAY, "upstream_error", None)
}

/// The old name of [`error_class`] (it read like [`Classify::classify_error`], which
/// decides an [`Outcome`](crate::Outcome), not an HTTP error class).
///
/// [`Classify::classify_error`]: crate::Classify::classify_error
#[deprecated(note = "renamed error_class")]
pub fn classify_error(err: &(dyn Error + 'static)) -> ErrorClass {
    error_class(err)
}

/// Builds an OpenAI-style JSON error response for any error of ours:
/// `{"error": {"message": …, "type": …, "code": status}}`, with `Retry-After` (whole
/// seconds, rounded up) where a hint is known. The message is the error's `Display`,
/// which never contains secrets.
///
/// ```
/// use std::time::Duration;
/// use tower::BoxError;
/// use tower_failover_core::{error_response, error::AllProvidersFailed};
///
/// let err: BoxError = AllProvidersFailed::new(vec![])
///     .with_retry_after(Some(Duration::from_millis(2500)))
///     .into();
/// let res = error_response(&*err);
/// assert_eq!(res.status(), 503);
/// assert_eq!(res.headers()["retry-after"], "3");
/// assert!(res.body().contains("all_providers_failed"));
/// ```
pub fn error_response(err: &(dyn Error + 'static)) -> Response<String> {
    let class = error_class(err);
    let body = serde_json::json!({
        "error": {
            "message": err.to_string(),
            "type": class.kind,
            "code": class.status.as_u16(),
        }
    })
    .to_string();
    let mut res = Response::new(body);
    *res.status_mut() = class.status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(wait) = class.retry_after {
        let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
    }
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TimeoutKind;
    use crate::outcome::{FailureKind, RejectKind};
    use tower::BoxError;

    #[test]
    fn maps_every_error() {
        let cases: Vec<(BoxError, u16, Option<&str>)> = vec![
            (BodyTooLarge::new(10).into(), 413, None),
            (BodyTooLarge::response(10).into(), 502, None),
            (
                AllProvidersFailed::new(vec![])
                    .with_retry_after(Some(Duration::from_secs(7)))
                    .into(),
                503,
                Some("7"),
            ),
            // No known recovery: a short wait all the same.
            (AllProvidersFailed::new(vec![]).into(), 503, Some("1")),
            (
                CircuitOpen::new(Duration::from_millis(100)).into(),
                503,
                Some("1"),
            ),
            (Shed::new("ramp").into(), 503, None),
            (
                RateLimited::new(Some(Duration::from_secs(20))).into(),
                429,
                Some("20"),
            ),
            (RateLimited::new(None).into(), 429, None),
            (
                Elapsed::new(TimeoutKind::Total, Duration::from_secs(1)).into(),
                504,
                None,
            ),
            (Invalid::new(RejectKind::Schema, "x").into(), 502, None),
            (TruncatedStream::new("x").into(), 502, None),
            (
                TransportError::new(FailureKind::Connect, "refused").into(),
                502,
                None,
            ),
            ("something else".into(), 502, None),
        ];
        for (err, status, retry_after) in cases {
            let res = error_response(&*err);
            assert_eq!(res.status().as_u16(), status, "{err}");
            assert_eq!(
                res.headers()
                    .get("retry-after")
                    .map(|v| v.to_str().unwrap()),
                retry_after,
                "{err}"
            );
            let body: serde_json::Value = serde_json::from_str(res.body()).unwrap();
            assert_eq!(body["error"]["message"], err.to_string());
            assert_eq!(body["error"]["code"], status);
        }
    }
}
