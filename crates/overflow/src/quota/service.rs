//! [`Quota`]: the per-provider service made by [`QuotaLayer`](crate::QuotaLayer).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::{Duration, SystemTime};

use http::{HeaderMap, Request, Response, StatusCode};
use tokio::time::{Instant, Sleep, sleep_until};
use tower::BoxError;
use tower_failover_core::error::RateLimited;
use tower_failover_core::{Health, RateLimitInfo, time};
use tower_service::Service;

use crate::config::LimitedMode;
use crate::estimate::{BodyEstimator, EstimateTokens};
use crate::quota::future::ResponseFuture;
use crate::tracker::{QuotaTracker, Ticket};

/// What every clone of one provider's quota service shares.
pub(crate) struct Core {
    pub(crate) health: Health,
    pub(crate) tracker: QuotaTracker,
    pub(crate) mode: LimitedMode,
}

impl Core {
    /// Reads a response's rate-limit headers into the tracker; on a 429, closes the
    /// group for the wait the provider asked for (or the model's estimate, or the
    /// default).
    pub(crate) fn observe(&self, status: StatusCode, headers: &HeaderMap, ticket: &Ticket) {
        let limited = status == StatusCode::TOO_MANY_REQUESTS;
        if !limited && !has_rate_limit_headers(headers) {
            return;
        }
        let limits = &self.tracker.config().limits;
        let now = Instant::now();
        let info = RateLimitInfo::from_headers(headers, SystemTime::now(), limits);
        self.tracker.observe(ticket, &info, now, &self.health);
        if limited {
            // `Retry-After` first; without it the model's own estimate (the reset
            // headers give the time until the bucket is *full*, far longer than the
            // time until one more request fits); else the default.
            let wait = match info.retry_after {
                Some(wait) => wait,
                None => match self.tracker.next_fit(now) {
                    Duration::ZERO => limits.default_retry_after,
                    wait => wait,
                },
            };
            if wait >= limits.max_wait {
                tracing::warn!(
                    provider = %self.health.id(),
                    cap_ms = limits.max_wait.as_millis() as u64,
                    "provider asked for a rate-limit wait at or past the cap: clamped"
                );
            }
            self.health
                .quota()
                .limit_until(now + wait.min(limits.max_wait));
        }
    }

    fn refusal(&self, wait: Duration) -> RateLimited {
        RateLimited::new(Some(wait)).with_provider(self.health.id().clone())
    }
}

/// Whether any rate-limit header is present (a pass over the names, to skip the
/// full parse on responses that carry none).
fn has_rate_limit_headers(headers: &HeaderMap) -> bool {
    headers.keys().any(|name| {
        let name = name.as_str();
        name.starts_with("x-ratelimit-")
            || name.starts_with("anthropic-ratelimit-")
            || name.starts_with("retry-after")
    })
}

/// Tracks and enforces one provider's quota. Made by
/// [`QuotaLayer`](crate::QuotaLayer).
pub struct Quota<S, E = BodyEstimator> {
    inner: S,
    core: Arc<Core>,
    estimator: E,
    /// The readiness gate's timer ([`LimitedMode::GatePollReady`]), made on first use.
    gate: Option<Pin<Box<Sleep>>>,
}

impl<S, E> Quota<S, E> {
    pub(crate) fn from_parts(inner: S, core: Arc<Core>, estimator: E) -> Self {
        Quota {
            inner,
            core,
            estimator,
            gate: None,
        }
    }

    /// The provider's health handle.
    pub fn health(&self) -> &Health {
        &self.core.health
    }

    /// The quota tracker.
    pub fn tracker(&self) -> &QuotaTracker {
        &self.core.tracker
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: Clone, E: Clone> Clone for Quota<S, E> {
    fn clone(&self) -> Self {
        // Shares the tracker, not the readiness gate.
        Quota::from_parts(
            self.inner.clone(),
            Arc::clone(&self.core),
            self.estimator.clone(),
        )
    }
}

impl<S: fmt::Debug, E> fmt::Debug for Quota<S, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Quota")
            .field("inner", &self.inner)
            .field("provider", self.core.health.id())
            .field("mode", &self.core.mode)
            .finish_non_exhaustive()
    }
}

impl<S, E, B, RB> Service<Request<B>> for Quota<S, E>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    E: EstimateTokens<B>,
{
    type Response = Response<RB>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.core.mode == LimitedMode::GatePollReady {
            loop {
                let now = Instant::now();
                let until = match self.core.health.quota().limited_until() {
                    Some(until) if until > now => until,
                    _ => break,
                };
                let gate = self
                    .gate
                    .get_or_insert_with(|| Box::pin(sleep_until(until)));
                if gate.deadline() != until {
                    gate.as_mut().reset(until);
                }
                ready!(gate.as_mut().poll(cx));
            }
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // One reading for this call and the layers below it (the observer's start).
        let now = time::call_now();
        let core = &self.core;
        if core.health.is_rate_limited(now) {
            let left = core.health.quota().remaining(now).unwrap_or(Duration::ZERO);
            return ResponseFuture::refused(core.refusal(left));
        }
        let tokens = if core.tracker.tracks_tokens() {
            self.estimator.estimate(&req)
        } else {
            0
        };
        match core.tracker.admit(tokens, now, &core.health) {
            Ok(ticket) => ResponseFuture::sent(
                time::calling_at(now, || self.inner.call(req)),
                Arc::clone(core),
                ticket,
            ),
            Err(wait) => ResponseFuture::refused(core.refusal(wait)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spots_rate_limit_headers() {
        let mut h = HeaderMap::new();
        h.insert("content-type", "application/json".parse().unwrap());
        assert!(!has_rate_limit_headers(&h));
        for name in [
            "x-ratelimit-remaining-requests",
            "anthropic-ratelimit-tokens-reset",
            "retry-after",
            "retry-after-ms",
        ] {
            let mut h = h.clone();
            h.insert(http::HeaderName::from_static(name), "1".parse().unwrap());
            assert!(has_rate_limit_headers(&h), "{name}");
        }
    }
}
