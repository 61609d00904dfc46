//! Real requests-per-minute and tokens-per-minute enforcement (token buckets).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::error::SimError;

/// Per-minute limits a sim enforces, like a provider's organisation quota.
///
/// Each limit is a token bucket holding at most one minute's allowance and refilling
/// continuously (`limit / 60` per second). A request takes one request and its
/// prompt + completion tokens; when either bucket is short the request is answered
/// `429` with `Retry-After` (whole seconds, rounded up) and the provider's
/// rate-limit error. The rate-limit headers on every response report the buckets
/// truthfully: limit, what remains, and when the bucket is full again.
///
/// The default is generous (1,000,000 requests and 1,000,000,000 tokens per minute)
/// so that it never triggers unless you ask for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Quota {
    /// Requests per minute (RPM).
    pub requests_per_minute: u64,
    /// Tokens per minute (TPM), prompt and completion together.
    pub tokens_per_minute: u64,
}

impl Default for Quota {
    fn default() -> Self {
        Quota {
            requests_per_minute: 1_000_000,
            tokens_per_minute: 1_000_000_000,
        }
    }
}

impl Quota {
    /// A quota of `rpm` requests and `tpm` tokens per minute.
    pub fn new(requests_per_minute: u64, tokens_per_minute: u64) -> Self {
        Quota {
            requests_per_minute,
            tokens_per_minute,
        }
    }

    pub(crate) fn validate(&self) -> Result<(), SimError> {
        if self.requests_per_minute == 0 {
            return Err(SimError::config("quota.requests_per_minute", "must be > 0"));
        }
        if self.tokens_per_minute == 0 {
            return Err(SimError::config("quota.tokens_per_minute", "must be > 0"));
        }
        Ok(())
    }
}

#[derive(Debug)]
struct Bucket {
    capacity: f64,
    level: f64,
    per_sec: f64,
    last: Instant,
}

impl Bucket {
    fn new(per_minute: u64, now: Instant) -> Self {
        Bucket {
            capacity: per_minute as f64,
            level: per_minute as f64,
            per_sec: per_minute as f64 / 60.0,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.level = (self.level + dt * self.per_sec).min(self.capacity);
        self.last = now;
    }

    /// Time until `n` units are available (zero if they are).
    fn wait_for(&self, n: f64) -> Duration {
        if self.level >= n {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(((n - self.level) / self.per_sec).min(1e9))
        }
    }

    fn view(&self) -> BucketView {
        BucketView {
            limit: self.capacity as u64,
            remaining: self.level.max(0.0).floor() as u64,
            reset: self.wait_for(self.capacity),
        }
    }
}

/// What the headers say about one bucket.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct BucketView {
    pub(crate) limit: u64,
    pub(crate) remaining: u64,
    /// Time until the bucket is full again.
    pub(crate) reset: Duration,
}

/// Both buckets, as the headers report them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct QuotaView {
    pub(crate) requests: BucketView,
    pub(crate) tokens: BucketView,
}

#[derive(Debug)]
pub(crate) struct QuotaState {
    requests: Bucket,
    tokens: Bucket,
}

impl QuotaState {
    pub(crate) fn new(q: Quota, now: Instant) -> Self {
        QuotaState {
            requests: Bucket::new(q.requests_per_minute, now),
            tokens: Bucket::new(q.tokens_per_minute, now),
        }
    }

    /// The buckets now, without taking anything.
    pub(crate) fn peek(&mut self, now: Instant) -> QuotaView {
        self.requests.refill(now);
        self.tokens.refill(now);
        QuotaView {
            requests: self.requests.view(),
            tokens: self.tokens.view(),
        }
    }

    /// Take one request and `tokens` tokens, or say how long to wait.
    pub(crate) fn take(&mut self, tokens: u64, now: Instant) -> (Result<(), Duration>, QuotaView) {
        self.requests.refill(now);
        self.tokens.refill(now);
        // A request larger than the whole bucket is sized down to the bucket, so
        // that it waits for a full bucket rather than forever.
        let t = (tokens as f64).min(self.tokens.capacity);
        let wait = self.requests.wait_for(1.0).max(self.tokens.wait_for(t));
        let res = if wait.is_zero() {
            self.requests.level -= 1.0;
            self.tokens.level -= t;
            Ok(())
        } else {
            Err(wait)
        };
        let view = QuotaView {
            requests: self.requests.view(),
            tokens: self.tokens.view(),
        };
        (res, view)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn buckets_limit_and_refill() {
        let now = Instant::now();
        let mut q = QuotaState::new(Quota::new(60, 1000), now);
        for i in 0..60 {
            let (r, v) = q.take(10, now);
            assert!(r.is_ok(), "request {i}");
            assert_eq!(v.requests.remaining, 59 - i);
        }
        let (r, v) = q.take(10, now);
        assert_eq!(r, Err(Duration::from_secs(1)));
        assert_eq!(v.requests.remaining, 0);
        assert_eq!(v.requests.reset, Duration::from_secs(60));
        assert_eq!(v.tokens.remaining, 400);
        let later = now + Duration::from_secs(1);
        let (r, v) = q.take(10, later);
        assert!(r.is_ok());
        assert_eq!(v.requests.remaining, 0);
        // Tokens: 1000 per minute; 390 remain (+16.67 refilled, -10).
        assert_eq!(v.tokens.remaining, 406);
        // A token-heavy request waits for tokens.
        let (r, _) = q.take(900, later);
        assert!(r.is_err());
        assert!(Quota::new(0, 1).validate().is_err());
    }
}
