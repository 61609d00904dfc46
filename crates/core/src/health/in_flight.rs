use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::outcome::{FailureKind, Outcome};

use super::Health;
use super::handle::WAITING;

/// until [`answered`](InFlight::answered). See [`Health::start_request`].
#[derive(Debug)]
pub struct InFlight {
    pub(super) health: Health,
    pub(super) waiting: bool,
}

impl InFlight {
    /// The provider this request is in flight to.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The request got its answer (response headers, or an error) with this
    /// outcome: it stops waiting and, unless the outcome is a timeout, the provider
    /// showed a sign of life ([`Health::note_progress`]). Later calls do nothing.
    #[inline]
    pub fn answered(&mut self, outcome: &Outcome) {
        if !std::mem::take(&mut self.waiting) {
            return;
        }
        let alive = !matches!(
            outcome,
            Outcome::Failure {
                kind: FailureKind::Timeout
            }
        );
        let was = self.health.inner.load.fetch_sub(WAITING, Ordering::AcqRel) / WAITING;
        if !alive {
            return;
        }
        if was > 1 {
            // Others still wait: their silence counts from this sign of life.
            self.health.note_progress();
        } else if self.health.inner.suspect.load(Ordering::Relaxed) {
            // Nothing waits any more: no silence to time (the next request starts
            // the clock again), so no clock read; only suspicion to clear.
            self.health.set_suspect(false, Duration::ZERO);
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.waiting {
            // Given up unanswered (a timer above, or the caller): no sign of life.
            // It stops waiting and leaves the flight in one step.
            let was = self
                .health
                .inner
                .load
                .fetch_sub(1 + WAITING, Ordering::AcqRel);
            if was / WAITING == 1 && self.health.inner.suspect.load(Ordering::Relaxed) {
                // Nothing waits any more: nothing to suspect.
                self.health.set_suspect(false, Duration::ZERO);
            }
        } else {
            self.health.inner.load.fetch_sub(1, Ordering::Release);
        }
    }
}
