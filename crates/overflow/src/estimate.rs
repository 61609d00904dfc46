//! Estimating how many tokens a request will count against a token quota.
//!
//! Token limits (TPM) are charged by the provider with numbers we only learn
//! afterwards. To move overflow *before* a token quota runs out, the
//! [`QuotaLayer`](crate::QuotaLayer) needs an estimate at send time. OpenAI, for one,
//! charges the prompt plus `max_tokens` up front, so the default,
//! [`BodyEstimator`], counts about one token per four bytes of request body plus the
//! `max_tokens` (or `max_completion_tokens` / `max_output_tokens`) the body asks for.
//! The estimate only needs to be roughly right: the provider's headers correct the
//! tracker after every response.
//!
//! Anything implementing [`EstimateTokens`] can replace it, including a closure:
//!
//! ```
//! use http::Request;
//! use tower_failover_core::replay::ReplayBody;
//! use tower_failover_overflow::{BodyEstimator, EstimateTokens};
//!
//! let req = Request::new(ReplayBody::from(r#"{"messages":[{"role":"user","content":"hello"}],"max_tokens":100}"#));
//! let tokens = BodyEstimator::default().estimate(&req);
//! assert_eq!(tokens, 17 + 100); // 66 bytes / 4, rounded up, plus max_tokens
//!
//! // A flat guess for every request:
//! let flat = |_: &Request<ReplayBody>| 500u64;
//! assert_eq!(flat.estimate(&req), 500);
//! ```

use std::any::Any;

use http::Request;
use http_body::Body;
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::tokens::{BYTES_PER_TOKEN, estimate_tokens};

/// Estimates the tokens a request will be charged against a token quota.
///
/// Called once per request, and only while the tracker follows a token quota (a
/// configured `tokens_per_minute` or token headers seen from the provider): keep it
/// cheap.
pub trait EstimateTokens<B>: Clone + Send + Sync + 'static {
    /// The estimated prompt plus completion tokens of `req`.
    fn estimate(&self, req: &Request<B>) -> u64;
}

impl<B, F> EstimateTokens<B> for F
where
    F: Fn(&Request<B>) -> u64 + Clone + Send + Sync + 'static,
{
    fn estimate(&self, req: &Request<B>) -> u64 {
        self(req)
    }
}

/// The default estimator: request body bytes divided by `bytes_per_token`, plus the
/// completion limit the JSON body asks for (`max_tokens`, `max_completion_tokens` or
/// `max_output_tokens` at its top level), or `default_completion` when it names none.
///
/// The body is inspected when it is a [`ReplayBody`] (buffered), through its
/// [`RequestInfo`](tower_failover_core::request::RequestInfo) (parsed once for every
/// layer); other bodies are sized by their exact
/// [`size_hint`](http_body::Body::size_hint), if they have one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyEstimator {
    bytes_per_token: u64,
    default_completion: u64,
}

impl Default for BodyEstimator {
    fn default() -> Self {
        BodyEstimator {
            bytes_per_token: BYTES_PER_TOKEN,
            default_completion: 0,
        }
    }
}

impl BodyEstimator {
    /// Sets the bytes counted as one prompt token (default 4; at least 1).
    pub fn bytes_per_token(mut self, bytes: u64) -> Self {
        self.bytes_per_token = bytes.max(1);
        self
    }

    /// Sets the completion tokens assumed when the body names no limit (default 0).
    pub fn default_completion(mut self, tokens: u64) -> Self {
        self.default_completion = tokens;
        self
    }
}

impl<B: Body + 'static> EstimateTokens<B> for BodyEstimator {
    fn estimate(&self, req: &Request<B>) -> u64 {
        let body: &dyn Any = req.body();
        match body.downcast_ref::<ReplayBody>() {
            Some(replay) => {
                // The body's request information: parsed once for every layer.
                let info = replay.info();
                let prompt = estimate_tokens(info.len() as u64, self.bytes_per_token);
                prompt.saturating_add(info.max_tokens().unwrap_or(self.default_completion))
            }
            None => {
                let len = req.body().size_hint().exact().unwrap_or(0);
                estimate_tokens(len, self.bytes_per_token).saturating_add(self.default_completion)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    #[test]
    fn estimates_replay_and_other_bodies() {
        let e = BodyEstimator::default().default_completion(10);
        let req = Request::new(ReplayBody::from("12345678"));
        assert_eq!(e.estimate(&req), 2 + 10);
        let req = Request::new(Full::new(Bytes::from_static(b"123456789")));
        assert_eq!(e.estimate(&req), 3 + 10);
        let e = e.bytes_per_token(0);
        assert_eq!(e.estimate(&Request::new(ReplayBody::from("abc"))), 3 + 10);
        // The completion limit comes from the body's request information.
        let body = r#"{"max_completion_tokens":90}"#;
        let req = Request::new(ReplayBody::from(body));
        let e = BodyEstimator::default();
        assert_eq!(e.estimate(&req), 7 + 90);
        assert_eq!(
            req.body().info_if_read().and_then(|i| i.max_tokens()),
            Some(90)
        );
    }
}
