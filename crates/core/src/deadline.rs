//! The deadline of a whole request, carried in its extensions.
//!
//! The outermost layer that knows the caller's total budget inserts a [`Deadline`];
//! every router and per-attempt timeout below reads it, so each attempt gets only the
//! time left rather than a fresh timeout of its own (no stacked timeouts).

use std::time::Duration;

use http::Request;
use tokio::time::Instant;

/// The instant by which the whole request must be answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(pub Instant);

impl Deadline {
    /// The deadline of `req`, if one was set.
    pub fn of<B>(req: &Request<B>) -> Option<Deadline> {
        req.extensions().get::<Deadline>().copied()
    }

    /// Sets `deadline` on `req`, keeping an earlier one if already set. Returns the
    /// deadline in force.
    pub fn set_on<B>(req: &mut Request<B>, deadline: Instant) -> Deadline {
        let effective = match Deadline::of(req) {
            Some(Deadline(existing)) if existing <= deadline => Deadline(existing),
            _ => Deadline(deadline),
        };
        req.extensions_mut().insert(effective);
        effective
    }

    /// Time left from now (zero if passed).
    pub fn remaining(&self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }

    /// The time an attempt may take: `per_attempt`, capped by the deadline of `req`.
    pub fn attempt_budget<B>(req: &Request<B>, per_attempt: Option<Duration>) -> Option<Duration> {
        match (Deadline::of(req).map(|d| d.remaining()), per_attempt) {
            (Some(left), Some(each)) => Some(left.min(each)),
            (left, each) => left.or(each),
        }
    }
}

/// The instant at which a timer above will give up on this attempt (a router's
/// per-attempt timeout, capped by the request's [`Deadline`]), carried in the
/// attempt's request extensions.
///
/// A timer that fires drops the attempt's future, and a dropped future cannot tell
/// a timeout from a caller who went away. Layers that keep a provider's health
/// (the observer, the circuit breaker) read this when their future or body is
/// dropped unfinished: dropped at or after it, the attempt timed out and counts as
/// that provider's [`Timeout`](crate::FailureKind::Timeout) failure; dropped before
/// it (and before the [`Deadline`]), the caller cancelled, which stays neutral.
/// Routers set it per attempt with [`AttemptDeadline::set_on`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AttemptDeadline(pub Instant);

impl AttemptDeadline {
    /// Sets the attempt deadline of `req` to `at`, capped by its [`Deadline`].
    pub fn set_on<B>(req: &mut Request<B>, at: Instant) -> AttemptDeadline {
        let at = match Deadline::of(req) {
            Some(Deadline(whole)) if whole < at => whole,
            _ => at,
        };
        let d = AttemptDeadline(at);
        req.extensions_mut().insert(d);
        d
    }

    /// The instant at which a timer above gives up on `req`: its attempt deadline
    /// or, failing that, its [`Deadline`].
    pub fn of<B>(req: &Request<B>) -> Option<Instant> {
        let attempt = req.extensions().get::<AttemptDeadline>().map(|d| d.0);
        let whole = Deadline::of(req).map(|d| d.0);
        match (attempt, whole) {
            (Some(a), Some(w)) => Some(a.min(w)),
            (a, w) => a.or(w),
        }
    }

    /// Whether an attempt that gives up at `at` and is dropped now was ended by
    /// that timer (rather than cancelled by its caller).
    pub fn timed_out(at: Option<Instant>) -> bool {
        at.is_some_and(|at| Instant::now() >= at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn attempt_deadline_is_capped_by_the_request_deadline() {
        let now = Instant::now();
        let mut req = Request::new(());
        assert_eq!(AttemptDeadline::of(&req), None);
        AttemptDeadline::set_on(&mut req, now + Duration::from_secs(5));
        assert_eq!(
            AttemptDeadline::of(&req),
            Some(now + Duration::from_secs(5))
        );
        Deadline::set_on(&mut req, now + Duration::from_secs(2));
        assert_eq!(
            AttemptDeadline::of(&req),
            Some(now + Duration::from_secs(2))
        );
        let mut other = Request::new(());
        Deadline::set_on(&mut other, now + Duration::from_secs(1));
        AttemptDeadline::set_on(&mut other, now + Duration::from_secs(9));
        let at = AttemptDeadline::of(&other);
        assert_eq!(at, Some(now + Duration::from_secs(1)));
        assert!(!AttemptDeadline::timed_out(at));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(AttemptDeadline::timed_out(at));
        assert!(!AttemptDeadline::timed_out(None));
    }

    #[tokio::test(start_paused = true)]
    async fn earlier_deadline_wins_and_caps_attempts() {
        let now = Instant::now();
        let mut req = Request::new(());
        assert_eq!(
            Deadline::attempt_budget(&req, Some(Duration::from_secs(5))),
            Some(Duration::from_secs(5))
        );
        Deadline::set_on(&mut req, now + Duration::from_secs(3));
        Deadline::set_on(&mut req, now + Duration::from_secs(10));
        assert_eq!(
            Deadline::of(&req),
            Some(Deadline(now + Duration::from_secs(3)))
        );
        assert_eq!(
            Deadline::attempt_budget(&req, Some(Duration::from_secs(5))),
            Some(Duration::from_secs(3))
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert_eq!(
            Deadline::attempt_budget(&req, None),
            Some(Duration::from_secs(1))
        );
    }
}
