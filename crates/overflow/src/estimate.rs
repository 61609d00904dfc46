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
/// `max_output_tokens`), or `default_completion` when it names none.
///
/// The body is inspected when it is a [`ReplayBody`] (buffered); other bodies are
/// sized by their exact [`size_hint`](http_body::Body::size_hint), if they have one.
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
                let bytes = replay.bytes();
                let prompt = estimate_tokens(bytes.len() as u64, self.bytes_per_token);
                prompt.saturating_add(completion_limit(bytes).unwrap_or(self.default_completion))
            }
            None => {
                let len = req.body().size_hint().exact().unwrap_or(0);
                estimate_tokens(len, self.bytes_per_token).saturating_add(self.default_completion)
            }
        }
    }
}

/// The first completion limit a JSON body names, found by a byte scan (no parse).
pub(crate) fn completion_limit(json: &[u8]) -> Option<u64> {
    const KEYS: [&[u8]; 3] = [
        b"\"max_tokens\"",
        b"\"max_completion_tokens\"",
        b"\"max_output_tokens\"",
    ];
    KEYS.iter().find_map(|key| number_after(json, key))
}

fn number_after(json: &[u8], key: &[u8]) -> Option<u64> {
    let at = json.windows(key.len()).position(|w| w == key)? + key.len();
    let rest = &json[at..];
    let rest = skip_ws(rest).strip_prefix(b":")?;
    let rest = skip_ws(rest);
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 12 {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

fn skip_ws(s: &[u8]) -> &[u8] {
    let n = s
        .iter()
        .take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .count();
    &s[n..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::Full;

    #[test]
    fn finds_completion_limits() {
        let cases: &[(&str, Option<u64>)] = &[
            (r#"{"max_tokens":256}"#, Some(256)),
            (r#"{"max_tokens" :  12 , "x":1}"#, Some(12)),
            ("{\"max_tokens\":\n7}", Some(7)),
            (r#"{"max_completion_tokens":99}"#, Some(99)),
            (r#"{"generationConfig":{"max_output_tokens":5}}"#, Some(5)),
            (r#"{"max_tokens":null}"#, None),
            (r#"{"max_tokens":-3}"#, None),
            (r#"{"max_tokens":"12"}"#, None),
            (r#"{"max_tokens":99999999999999999}"#, None),
            (r#"{"messages":[]}"#, None),
            ("", None),
            (r#""max_tokens""#, None),
        ];
        for (json, want) in cases {
            assert_eq!(completion_limit(json.as_bytes()), *want, "{json}");
        }
    }

    #[test]
    fn estimates_replay_and_other_bodies() {
        let e = BodyEstimator::default().default_completion(10);
        let req = Request::new(ReplayBody::from("12345678"));
        assert_eq!(e.estimate(&req), 2 + 10);
        let req = Request::new(Full::new(Bytes::from_static(b"123456789")));
        assert_eq!(e.estimate(&req), 3 + 10);
        let e = e.bytes_per_token(0);
        assert_eq!(e.estimate(&Request::new(ReplayBody::from("abc"))), 3 + 10);
    }
}
