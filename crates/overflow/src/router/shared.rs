//! What every clone of one router shares: the targets' health and take-back holds,
//! service templates for later hops, the jitter generator, the retry budget and the
//! pacing queue's count.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tower_failover_core::rng::SharedRng;
use tower_failover_core::time::AtomicInstant;
use tower_failover_core::{CircuitState, Health};

use crate::config::OverflowConfig;

pub use tower_failover_core::SharedBudget;

pub(crate) struct Target {
    pub(crate) health: Health,
    /// This router takes the target back only after this instant (the end of its
    /// last seen rate-limit window plus jitter).
    hold: AtomicInstant,
    /// The end of the last rate-limit window this router saw (jitter is drawn once
    /// per window).
    seen: AtomicInstant,
}

pub(crate) struct Shared<S, C> {
    pub(crate) targets: Box<[Target]>,
    /// Services to clone for attempts made from a response future.
    templates: Box<[Mutex<S>]>,
    pub(crate) classifier: C,
    pub(crate) config: OverflowConfig,
    rng: SharedRng,
    pub(crate) budget: Option<SharedBudget>,
    pub(crate) deposit: bool,
    /// Requests waiting in the pacing queue.
    pub(crate) waiting: AtomicUsize,
}

#[inline]
pub(crate) fn bit(i: usize) -> u64 {
    1u64 << i
}

impl<S, C> Shared<S, C> {
    pub(crate) fn new(
        targets: Vec<(Health, S)>,
        classifier: C,
        config: OverflowConfig,
        budget: Option<SharedBudget>,
        deposit: bool,
    ) -> Self {
        let rng = match config.seed {
            Some(seed) => SharedRng::seeded(seed),
            None => SharedRng::from_entropy(),
        };
        let (targets, templates): (Vec<_>, Vec<_>) = targets
            .into_iter()
            .map(|(health, svc)| {
                let target = Target {
                    health,
                    hold: AtomicInstant::new(),
                    seen: AtomicInstant::new(),
                };
                (target, Mutex::new(svc))
            })
            .unzip();
        Shared {
            targets: targets.into(),
            templates: templates.into(),
            classifier,
            config,
            rng,
            budget,
            deposit,
            waiting: AtomicUsize::new(0),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.targets.len()
    }

    /// A fresh service for target `i` (from its template).
    pub(crate) fn service(&self, i: usize) -> S
    where
        S: Clone,
    {
        self.templates[i]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Whether this router may send to target `i` at `now`: its health says it is
    /// available (circuit, quota group, ramp) and the take-back hold has passed.
    #[inline]
    pub(crate) fn available(&self, i: usize, now: Instant) -> bool {
        let t = &self.targets[i];
        if t.health.is_available(now) {
            return !t.hold.is_after(now);
        }
        self.note_window(t, now);
        false
    }

    /// Whether target `i` looks hung at `now` (see
    /// [`Health::is_suspect`]): new requests prefer the others.
    #[inline]
    pub(crate) fn suspect(&self, i: usize, now: Instant) -> bool {
        let h = &self.targets[i].health;
        h.waiting() > 0 && h.is_suspect(now)
    }

    /// The first target in order, not in `exclude`, available at `now`; one that is
    /// not suspect if there is one.
    pub(crate) fn first_available(&self, now: Instant, exclude: u64) -> Option<usize> {
        let mut fallback = None;
        for i in (0..self.len()).filter(|&i| exclude & bit(i) == 0) {
            if !self.available(i, now) {
                continue;
            }
            if !self.suspect(i, now) {
                return Some(i);
            }
            fallback.get_or_insert(i);
        }
        fallback
    }

    /// Draws the take-back jitter once per rate-limit window seen.
    fn note_window(&self, t: &Target, now: Instant) {
        let Some(until) = t.health.quota().limited_until() else {
            return;
        };
        if until <= now || t.seen.get() == Some(until) {
            return;
        }
        t.seen.set(Some(until));
        let window = until.saturating_duration_since(now);
        let jitter = window
            .mul_f64(self.config.jitter * self.rng.f64())
            .min(self.config.max_jitter);
        t.hold.extend(until + jitter);
    }

    /// When target `i` is expected to be usable again, if it is held back only by
    /// its rate limit (not by an open circuit or a closed ramp: pacing is for known
    /// limits).
    pub(crate) fn release_at(&self, i: usize, now: Instant) -> Option<Instant> {
        let t = &self.targets[i];
        let h = &t.health;
        let circuit_blocked = h.circuit() == CircuitState::Open
            && (h.forced().is_some() || h.open_until().is_some_and(|u| u > now));
        if circuit_blocked || h.ramp_share_ppm() == 0 {
            return None;
        }
        self.note_window(t, now);
        let limited = h.quota().limited_until().unwrap_or(now);
        let hold = t.hold.get().unwrap_or(now);
        Some(limited.max(hold).max(now))
    }

    /// The earliest time from `now` at which some target may take traffic again:
    /// the `Retry-After` hint when giving up.
    pub(crate) fn earliest_recovery(&self, now: Instant) -> Option<Duration> {
        self.targets
            .iter()
            .map(|t| {
                let hold = t.hold.remaining(now).unwrap_or(Duration::ZERO);
                t.health.recovers_in(now).max(hold)
            })
            .min()
    }

    /// Takes a place in the pacing queue, if one is free.
    pub(crate) fn enter_queue(&self) -> bool {
        let capacity = self.config.pacing.capacity;
        self.waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < capacity).then_some(n + 1)
            })
            .is_ok()
    }

    pub(crate) fn leave_queue(&self) {
        self.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}
