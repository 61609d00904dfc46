//! Deciding the [`Outcome`] of an attempt.
//!
//! # Why not tower-http's `classify`
//!
//! tower-http's `ClassifyResponse` sorts responses into two classes (success or a
//! failure class), with an end-of-stream hook for gRPC. Our layers need five
//! ([`Outcome`]): a 429 is neither a success nor a failure of the provider's health,
//! it carries a wait; a failed validation is a third thing again; a client error must
//! not be retried elsewhere. Forcing those into a binary failure class would lose
//! exactly the distinctions failover depends on, so the layers use [`Classify`]. What
//! we do share with tower-http is the shape: a cheap, cloneable value consulted once
//! per response, with a default that encodes the common case and a trait for the
//! rest.

use std::error::Error;
use std::io;
use std::time::SystemTime;

use http::Response;

use crate::error::{
    CircuitOpen, Elapsed, Invalid, RateLimited, Shed, TransportError, TruncatedStream, find,
};
use crate::outcome::{ClientErrorKind, ErrorHint, FailureKind, Outcome, RejectKind};
use crate::ratelimit::{HeaderLimits, RateLimitInfo};

/// Decides the [`Outcome`] of one attempt from its response or its error.
///
/// Implement it to teach the layers about a provider with unusual conventions; every
/// layer takes a classifier and defaults to [`LlmClassifier`].
pub trait Classify: Clone + Send + Sync + 'static {
    /// The outcome of an attempt that produced a response (any status).
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome;

    /// The outcome of an attempt that failed with an error.
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome;

    /// Whether the layer that decides an attempt's outcome with this classifier
    /// should leave it on the response as a [`Verdict`](crate::verdict::Verdict) for
    /// the layers above (which then do not classify the response again). Default:
    /// always, so a classifier of yours runs once per attempt. Say `false` for
    /// outcomes that are cheaper to decide again than to carry (carrying one costs an
    /// allocation).
    fn carries(&self, outcome: &Outcome) -> bool {
        let _ = outcome;
        true
    }
}

/// The default classifier for LLM provider APIs.
///
/// | response or error | outcome |
/// | --- | --- |
/// | 2xx | `Success` |
/// | 429 | `RateLimited`, with the wait from the rate-limit headers (clamped) |
/// | 408, 500, 502, 503, 504 (and any other 5xx) | `Failure(Status)` |
/// | 529 (Anthropic's "overloaded") | `Failure(Overloaded)` |
/// | 401, 403 | `Failure(Credentials)`: the operator's key, not the caller's |
/// | 402 | `Failure(Billing)` |
/// | other 4xx | `ClientError(Status)` |
/// | 1xx, 3xx (unexpected from an API) | `Failure(Status)` |
/// | a response carrying an [`ErrorHint`] extension (any status, 429 included) | what the hint says: `Credentials` → `Failure(Credentials)`, `Billing` → `Failure(Billing)` (so OpenAI's 429 `insufficient_quota` is not a rate limit), `Overloaded` → `Failure(Overloaded)`, `ContextWindowExceeded`, `ContentPolicy`, `Unsupported` → `ClientError` of that kind |
/// | [`TransportError`] | `Failure` of its kind |
/// | [`Elapsed`], `io::ErrorKind::TimedOut` | `Failure(Timeout)` |
/// | `io::ErrorKind::ConnectionRefused` | `Failure(Connect)` |
/// | reset, aborted, broken pipe, unexpected EOF | `Failure(Reset)` |
/// | [`RateLimited`] | `RateLimited` |
/// | [`CircuitOpen`], [`Shed`] | `Rejected(Shed)`: not sent, so not the provider's fault again |
/// | [`Invalid`] | `Rejected` of its kind |
/// | [`TruncatedStream`] | `Failure(Reset)`, or `Failure(Timeout)` when a timer cut it (it carries an [`Elapsed`], found first: an idle stream) |
/// | anything else | `Failure(Other)` |
///
/// ```
/// use http::Response;
/// use tower_failover_core::{Classify, LlmClassifier, Outcome, FailureKind};
///
/// let c = LlmClassifier::default();
/// let res = Response::builder().status(529).body(()).unwrap();
/// assert_eq!(c.classify_response(&res), Outcome::failure(FailureKind::Overloaded));
/// let res = Response::builder().status(429).header("retry-after", "2").body(()).unwrap();
/// assert!(matches!(c.classify_response(&res), Outcome::RateLimited { retry_after: Some(_) }));
/// let res = Response::builder().status(401).body(()).unwrap();
/// assert_eq!(c.classify_response(&res), Outcome::failure(FailureKind::Credentials));
/// ```
///
/// A stack that forwards each caller's *own* API key wants a 401 to be the
/// caller's error again; wrap the default and override that one row:
///
/// ```
/// use http::Response;
/// use tower_failover_core::{Classify, ClientErrorKind, FailureKind, LlmClassifier, Outcome};
///
/// #[derive(Clone, Default)]
/// struct CallerKeys(LlmClassifier);
///
/// impl Classify for CallerKeys {
///     fn classify_response<B>(&self, res: &Response<B>) -> Outcome {
///         match self.0.classify_response(res) {
///             Outcome::Failure { kind: FailureKind::Credentials } => Outcome::ClientError {
///                 kind: ClientErrorKind::Auth,
///             },
///             other => other,
///         }
///     }
///     fn classify_error(&self, e: &(dyn std::error::Error + 'static)) -> Outcome {
///         self.0.classify_error(e)
///     }
/// }
///
/// let res = Response::builder().status(401).body(()).unwrap();
/// assert!(matches!(CallerKeys::default().classify_response(&res), Outcome::ClientError { .. }));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LlmClassifier {
    /// The limits, held once for the whole process (see [`interned`]): one word
    /// instead of two `Duration`s. Every layer's future and body keeps a copy of its
    /// classifier and is moved several times a request, so its size is paid in
    /// copies on every request; the limits are read only on a 429.
    limits: &'static HeaderLimits,
}

impl Default for LlmClassifier {
    fn default() -> Self {
        LlmClassifier {
            limits: &HeaderLimits::DEFAULT,
        }
    }
}

impl LlmClassifier {
    /// A classifier that clamps rate-limit waits with `limits`.
    ///
    /// Each distinct value of `limits` is kept for the life of the process (32
    /// bytes, shared by every classifier made with it): make classifiers from your
    /// configuration, not from per-request data.
    pub fn new(limits: HeaderLimits) -> Self {
        LlmClassifier {
            limits: interned(limits),
        }
    }

    /// The bounds applied to rate-limit waits.
    pub fn limits(&self) -> &HeaderLimits {
        self.limits
    }
}

/// The process's one copy of `limits`: the defaults without a lock, any other
/// value from a list of those made so far (searched, and added to, under a lock:
/// classifiers are made when stacks are built, not per request).
fn interned(limits: HeaderLimits) -> &'static HeaderLimits {
    use std::sync::{Mutex, PoisonError};
    static MADE: Mutex<Vec<&'static HeaderLimits>> = Mutex::new(Vec::new());
    if limits == HeaderLimits::DEFAULT {
        return &HeaderLimits::DEFAULT;
    }
    let mut made = MADE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(found) = made.iter().find(|made| ***made == limits) {
        return found;
    }
    let kept: &'static HeaderLimits = Box::leak(Box::new(limits));
    made.push(kept);
    kept
}

impl Classify for LlmClassifier {
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        if let Some(hint) = response.extensions().get::<ErrorHint>() {
            return match hint {
                ErrorHint::ContextWindowExceeded => Outcome::ClientError {
                    kind: ClientErrorKind::ContextWindowExceeded,
                },
                ErrorHint::ContentPolicy => Outcome::ClientError {
                    kind: ClientErrorKind::ContentPolicy,
                },
                ErrorHint::Overloaded => Outcome::failure(FailureKind::Overloaded),
                ErrorHint::Credentials => Outcome::failure(FailureKind::Credentials),
                ErrorHint::Billing => Outcome::failure(FailureKind::Billing),
                ErrorHint::Unsupported => Outcome::ClientError {
                    kind: ClientErrorKind::Unsupported,
                },
            };
        }
        let status = response.status();
        match status.as_u16() {
            200..=299 => Outcome::Success,
            429 => {
                let info =
                    RateLimitInfo::from_headers(response.headers(), SystemTime::now(), self.limits);
                Outcome::RateLimited {
                    retry_after: info.wait_hint(),
                }
            }
            529 => Outcome::failure(FailureKind::Overloaded),
            401 | 403 => Outcome::failure(FailureKind::Credentials),
            402 => Outcome::failure(FailureKind::Billing),
            408 => Outcome::failure(FailureKind::Status(408)),
            400..=499 => Outcome::ClientError {
                kind: ClientErrorKind::Status(status.as_u16()),
            },
            code => Outcome::failure(FailureKind::Status(code)),
        }
    }

    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        classify_error_chain(error)
    }

    /// Everything but a plain success: a 2xx without an [`ErrorHint`] is decided
    /// again from its status faster than a verdict is carried.
    #[inline]
    fn carries(&self, outcome: &Outcome) -> bool {
        !outcome.is_success()
    }
}

/// The error half of [`LlmClassifier`], usable by custom classifiers that only
/// change how responses are read.
pub fn classify_error_chain(error: &(dyn Error + 'static)) -> Outcome {
    if let Some(e) = find::<TransportError>(error) {
        return Outcome::failure(e.kind());
    }
    if find::<Elapsed>(error).is_some() {
        return Outcome::failure(FailureKind::Timeout);
    }
    if let Some(e) = find::<RateLimited>(error) {
        return Outcome::RateLimited {
            retry_after: e.retry_after(),
        };
    }
    if find::<CircuitOpen>(error).is_some() || find::<Shed>(error).is_some() {
        return Outcome::rejected(RejectKind::Shed);
    }
    if let Some(e) = find::<Invalid>(error) {
        return Outcome::rejected(e.kind());
    }
    if find::<TruncatedStream>(error).is_some() {
        return Outcome::failure(FailureKind::Reset);
    }
    if find::<tower::timeout::error::Elapsed>(error).is_some()
        || find::<tokio::time::error::Elapsed>(error).is_some()
    {
        return Outcome::failure(FailureKind::Timeout);
    }
    if let Some(e) = find::<io::Error>(error) {
        return Outcome::failure(match e.kind() {
            io::ErrorKind::ConnectionRefused
            | io::ErrorKind::AddrNotAvailable
            | io::ErrorKind::NotConnected
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable => FailureKind::Connect,
            io::ErrorKind::TimedOut => FailureKind::Timeout,
            io::ErrorKind::ConnectionReset
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::BrokenPipe
            | io::ErrorKind::UnexpectedEof => FailureKind::Reset,
            _ => FailureKind::Other,
        });
    }
    Outcome::failure(FailureKind::Other)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tower::BoxError;

    fn status(code: u16) -> Outcome {
        let res = Response::builder().status(code).body(()).unwrap();
        LlmClassifier::default().classify_response(&res)
    }

    #[test]
    fn every_status_row() {
        let f = |k| Outcome::failure(k);
        let ce = |kind| Outcome::ClientError { kind };
        let cases: &[(u16, Outcome)] = &[
            (200, Outcome::Success),
            (201, Outcome::Success),
            (204, Outcome::Success),
            (429, Outcome::RateLimited { retry_after: None }),
            (408, f(FailureKind::Status(408))),
            (500, f(FailureKind::Status(500))),
            (502, f(FailureKind::Status(502))),
            (503, f(FailureKind::Status(503))),
            (504, f(FailureKind::Status(504))),
            (501, f(FailureKind::Status(501))),
            (529, f(FailureKind::Overloaded)),
            (400, ce(ClientErrorKind::Status(400))),
            (401, f(FailureKind::Credentials)),
            (402, f(FailureKind::Billing)),
            (403, f(FailureKind::Credentials)),
            (404, ce(ClientErrorKind::Status(404))),
            (413, ce(ClientErrorKind::Status(413))),
            (422, ce(ClientErrorKind::Status(422))),
            (301, f(FailureKind::Status(301))),
            (101, f(FailureKind::Status(101))),
        ];
        for (code, want) in cases {
            assert_eq!(status(*code), *want, "status {code}");
        }
    }

    #[test]
    fn limits_are_kept_once_per_value_and_read_back_exactly() {
        let odd = HeaderLimits {
            max_wait: Duration::new(7, 123),
            default_retry_after: Duration::from_millis(1500),
        };
        let (a, b) = (LlmClassifier::new(odd), LlmClassifier::new(odd));
        assert_eq!(*a.limits(), odd);
        assert!(std::ptr::eq(a.limits(), b.limits()), "one copy a value");
        assert_eq!(a, b);
        assert_eq!(
            LlmClassifier::new(HeaderLimits::default()),
            LlmClassifier::default()
        );
        assert_eq!(*LlmClassifier::default().limits(), HeaderLimits::default());
        assert_ne!(a, LlmClassifier::default());
        assert_eq!(
            std::mem::size_of::<LlmClassifier>(),
            std::mem::size_of::<usize>()
        );
    }

    #[test]
    fn rate_limited_reads_headers_and_clamps() {
        let c = LlmClassifier::new(HeaderLimits {
            max_wait: Duration::from_secs(60),
            ..HeaderLimits::default()
        });
        let res = |k: &str, v: &str| {
            Response::builder()
                .status(429)
                .header(k, v)
                .body(())
                .unwrap()
        };
        let got = c.classify_response(&res("retry-after", "5"));
        assert_eq!(
            got,
            Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(5))
            }
        );
        let got = c.classify_response(&res("retry-after", "999999"));
        assert_eq!(
            got,
            Outcome::RateLimited {
                retry_after: Some(Duration::from_secs(60))
            }
        );
        let got = c.classify_response(&res("retry-after", "garbage"));
        assert_eq!(got, Outcome::RateLimited { retry_after: None });
        let got = c.classify_response(&res("retry-after-ms", "250"));
        assert_eq!(
            got,
            Outcome::RateLimited {
                retry_after: Some(Duration::from_millis(250))
            }
        );
    }

    #[test]
    fn hints_take_precedence() {
        let c = LlmClassifier::default();
        for (hint, want) in [
            (
                ErrorHint::ContextWindowExceeded,
                Outcome::ClientError {
                    kind: ClientErrorKind::ContextWindowExceeded,
                },
            ),
            (
                ErrorHint::ContentPolicy,
                Outcome::ClientError {
                    kind: ClientErrorKind::ContentPolicy,
                },
            ),
            (
                ErrorHint::Overloaded,
                Outcome::failure(FailureKind::Overloaded),
            ),
            (
                ErrorHint::Credentials,
                Outcome::failure(FailureKind::Credentials),
            ),
            (ErrorHint::Billing, Outcome::failure(FailureKind::Billing)),
        ] {
            let mut res = Response::builder().status(400).body(()).unwrap();
            res.extensions_mut().insert(hint);
            assert_eq!(c.classify_response(&res), want);
        }
    }

    #[test]
    fn a_429_that_says_insufficient_quota_is_billing_not_a_rate_limit() {
        let c = LlmClassifier::default();
        // OpenAI's quota answer carries no retry headers; with them it is billing too.
        for retry_after in [None, Some("20")] {
            let mut res = Response::builder().status(429);
            if let Some(v) = retry_after {
                res = res.header("retry-after", v);
            }
            let mut res = res.body(()).unwrap();
            res.extensions_mut().insert(ErrorHint::Billing);
            assert_eq!(
                c.classify_response(&res),
                Outcome::failure(FailureKind::Billing)
            );
        }
        // A plain 429 stays a rate limit.
        assert_eq!(status(429), Outcome::RateLimited { retry_after: None });
    }

    #[test]
    fn every_error_row() {
        let io = |k| -> BoxError { Box::new(io::Error::new(k, "x")) };
        let cases: Vec<(BoxError, Outcome)> = vec![
            (
                TransportError::new(FailureKind::Connect, "refused").into(),
                Outcome::failure(FailureKind::Connect),
            ),
            (
                Elapsed::new(crate::error::TimeoutKind::FirstByte, Duration::from_secs(1)).into(),
                Outcome::failure(FailureKind::Timeout),
            ),
            (
                RateLimited::new(Some(Duration::from_secs(3))).into(),
                Outcome::RateLimited {
                    retry_after: Some(Duration::from_secs(3)),
                },
            ),
            (
                CircuitOpen::new(Duration::from_secs(1)).into(),
                Outcome::rejected(RejectKind::Shed),
            ),
            (
                Shed::new("ramp").into(),
                Outcome::rejected(RejectKind::Shed),
            ),
            (
                Invalid::new(RejectKind::Refusal, "").into(),
                Outcome::rejected(RejectKind::Refusal),
            ),
            (
                TruncatedStream::new("x").into(),
                Outcome::failure(FailureKind::Reset),
            ),
            (
                Box::new(tower::timeout::error::Elapsed::new()),
                Outcome::failure(FailureKind::Timeout),
            ),
            (
                io(io::ErrorKind::ConnectionRefused),
                Outcome::failure(FailureKind::Connect),
            ),
            (
                io(io::ErrorKind::TimedOut),
                Outcome::failure(FailureKind::Timeout),
            ),
            (
                io(io::ErrorKind::ConnectionReset),
                Outcome::failure(FailureKind::Reset),
            ),
            (
                io(io::ErrorKind::BrokenPipe),
                Outcome::failure(FailureKind::Reset),
            ),
            (
                io(io::ErrorKind::UnexpectedEof),
                Outcome::failure(FailureKind::Reset),
            ),
            (
                io(io::ErrorKind::Other),
                Outcome::failure(FailureKind::Other),
            ),
            ("mystery".into(), Outcome::failure(FailureKind::Other)),
        ];
        let c = LlmClassifier::default();
        for (err, want) in cases {
            assert_eq!(c.classify_error(&*err), want, "{err}");
        }
    }

    #[tokio::test]
    async fn tokio_elapsed_is_a_timeout() {
        let err = tokio::time::timeout(Duration::ZERO, std::future::pending::<()>())
            .await
            .unwrap_err();
        let err: BoxError = Box::new(err);
        assert_eq!(
            LlmClassifier::default().classify_error(&*err),
            Outcome::failure(FailureKind::Timeout)
        );
    }
}
