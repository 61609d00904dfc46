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

#[cfg(test)]
mod tests {
    use super::*;

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
