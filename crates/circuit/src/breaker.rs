//! The breaker's own bookkeeping, shared by every service a layer makes.
//!
//! The circuit *state* lives in the provider's [`Health`] handle, so that another
//! replica (through the store) or an operator (through [`Health::force`]) can change
//! it and every reader agrees. What stays here is private to this process: the
//! counting windows that decide when to trip, the half-open probe permits, and the
//! cooldown schedule.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::Notify;
use tokio::time::Instant;
use tower_failover_core::rng::SharedRng;
use tower_failover_core::time::AtomicInstant;
use tower_failover_core::{
    CircuitState, FailureKind, Health, HealthEventKind, Outcome, RejectKind,
};

use crate::config::CircuitConfig;
use crate::window::{ONE, Windows};

// The half-open word: [epoch: 32 bits][successes: 16 bits][probes in flight: 16 bits].
// One atomic, so reserving a permit and counting a success never race each other.
const IN_FLIGHT: u64 = 0xFFFF;
const SUCCESS_SHIFT: u32 = 16;
const EPOCH_SHIFT: u32 = 32;

fn in_flight(w: u64) -> u32 {
    (w & IN_FLIGHT) as u32
}

fn successes(w: u64) -> u32 {
    ((w >> SUCCESS_SHIFT) & 0xFFFF) as u32
}

fn epoch(w: u64) -> u32 {
    (w >> EPOCH_SHIFT) as u32
}

fn pack(epoch: u32, successes: u32, in_flight: u32) -> u64 {
    (u64::from(epoch) << EPOCH_SHIFT)
        | (u64::from(successes & 0xFFFF) << SUCCESS_SHIFT)
        | u64::from(in_flight & 0xFFFF)
}

/// What the breaker says about one request now.
pub(crate) enum Decision<C> {
    /// The circuit is closed: go.
    Closed,
    /// The circuit is half-open and this request holds a probe permit.
    Probe(Permit<C>),
    /// Not now. `wake_at` is when a probe becomes due, if that is known.
    Blocked {
        retry_in: Duration,
        wake_at: Option<Instant>,
    },
}

/// A half-open probe permit. Dropping it (with the service, the future, or after the
/// probe's outcome is counted) gives it back.
pub(crate) struct Permit<C> {
    shared: Arc<Shared<C>>,
    epoch: u32,
}

impl<C> Drop for Permit<C> {
    fn drop(&mut self) {
        self.shared.release_probe();
    }
}

impl<C> fmt::Debug for Permit<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("epoch", &self.epoch)
            .finish()
    }
}

/// What one finished request counts as.
#[derive(Clone, Copy)]
struct Verdict {
    /// Milli-failures; 0 for a success.
    weight: u32,
    /// The kind, when the failure is an account failure (credentials, billing).
    account: Option<FailureKind>,
}

/// How the request that is now finishing was admitted.
pub(crate) enum Ticket<C> {
    Closed,
    Probe(Permit<C>),
}

pub(crate) struct Shared<C> {
    pub(crate) health: Health,
    pub(crate) classifier: C,
    pub(crate) config: CircuitConfig,
    /// Whether calls must be timed (slow-call policy, time windows).
    pub(crate) needs_clock: bool,
    /// Wakes gated callers when a probe permit comes back.
    pub(crate) notify: Notify,
    /// Trip threshold of the consecutive policy in milli-failures; 0 is off.
    consecutive_limit: u64,
    /// Weights in milli-failures: connect, reset, timeout, status, overloaded,
    /// credentials, billing, other.
    weights: [u32; 8],
    slow_threshold: Option<Duration>,
    /// Milli-failures in a row.
    consecutive: AtomicU64,
    windows: Option<Mutex<Windows>>,
    /// The half-open word (see `pack`).
    probes: AtomicU64,
    rng: SharedRng,
    /// Serializes trips, closes and trip forgiveness (cold paths only).
    transitions: Mutex<()>,
    /// Since when the circuit has been closed without tripping (for forgiveness).
    healthy_since: AtomicInstant,
}

impl<C> fmt::Debug for Shared<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("provider", self.health.id())
            .field("circuit", &self.health.circuit())
            .field("mode", &self.config.mode)
            .field("probes_in_flight", &self.probes_in_flight())
            .finish_non_exhaustive()
    }
}

fn milli(weight: f64) -> u32 {
    (weight * ONE as f64).round() as u32
}

impl<C> Shared<C> {
    /// Builds the state for a config that has been validated.
    pub(crate) fn new(health: Health, config: CircuitConfig, classifier: C) -> Self {
        let w = &config.weights;
        let now = Instant::now();
        Shared {
            needs_clock: config.slow_calls.is_some(),
            notify: Notify::new(),
            consecutive_limit: u64::from(config.consecutive_failures) * ONE,
            weights: [
                milli(w.connect),
                milli(w.reset),
                milli(w.timeout),
                milli(w.status),
                milli(w.overloaded),
                milli(w.credentials),
                milli(w.billing),
                milli(w.other),
            ],
            slow_threshold: config.slow_calls.map(|s| s.threshold),
            consecutive: AtomicU64::new(0),
            windows: Windows::from_config(&config, now).map(Mutex::new),
            probes: AtomicU64::new(0),
            rng: config
                .seed
                .map_or_else(SharedRng::from_entropy, SharedRng::seeded),
            transitions: Mutex::new(()),
            healthy_since: AtomicInstant::new(),
            health,
            classifier,
            config,
        }
    }

    /// Probe permits currently held.
    pub(crate) fn probes_in_flight(&self) -> u32 {
        in_flight(self.probes.load(Ordering::Acquire))
    }

    /// Failures in a row, weighted.
    pub(crate) fn consecutive_failures(&self) -> f64 {
        self.consecutive.load(Ordering::Relaxed) as f64 / ONE as f64
    }

    fn release_probe(&self) {
        self.probes.fetch_sub(1, Ordering::AcqRel);
        self.notify.notify_waiters();
    }

    /// Counts a refused call in the provider's counters, if configured to.
    pub(crate) fn record_rejection(&self) {
        self.health.metrics().circuit_refused();
        if self.config.record_rejections {
            self.health.record(&Outcome::rejected(RejectKind::Shed));
        }
    }

    fn lock_transitions(&self) -> std::sync::MutexGuard<'_, ()> {
        self.transitions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    #[inline]
    fn weight(&self, kind: FailureKind) -> u32 {
        self.weights[match kind {
            FailureKind::Connect => 0,
            FailureKind::Reset => 1,
            FailureKind::Timeout => 2,
            FailureKind::Status(_) => 3,
            FailureKind::Overloaded => 4,
            FailureKind::Credentials => 5,
            FailureKind::Billing => 6,
            _ => 7,
        }]
    }

    /// What an outcome counts as: `None` to ignore it, a weight of 0 for a success,
    /// `w` milli-failures for a failure (with its kind when it is an account
    /// failure).
    #[inline]
    fn verdict(&self, outcome: &Outcome) -> Option<Verdict> {
        let failure = |weight| Verdict {
            weight,
            account: None,
        };
        match outcome {
            // A client error means the provider answered: it is up.
            Outcome::Success | Outcome::ClientError { .. } => Some(failure(0)),
            Outcome::Failure { kind } => {
                let weight = self.weight(*kind);
                (weight > 0).then(|| Verdict {
                    weight,
                    account: kind.is_account().then_some(*kind),
                })
            }
            Outcome::RateLimited { .. } => self
                .config
                .rate_limited_is_failure
                .then_some(failure(ONE as u32)),
            Outcome::Rejected {
                kind: RejectKind::Shed,
            } => None,
            Outcome::Rejected { kind } => {
                let counts = if kind.is_malformed() && self.config.malformed_is_failure {
                    true
                } else {
                    self.config.rejected_is_failure
                };
                counts.then_some(failure(ONE as u32))
            }
        }
    }

    /// Decides whether a request may go now. Reserves a probe permit when half-open.
    #[inline]
    pub(crate) fn admit(self: &Arc<Self>) -> Decision<C> {
        if self.health.circuit() == CircuitState::Closed {
            return Decision::Closed;
        }
        self.admit_slow()
    }

    #[cold]
    #[inline(never)]
    fn admit_slow(self: &Arc<Self>) -> Decision<C> {
        // The loop only repeats after this caller moved the circuit from open to
        // half-open (or lost that race); the bound is a guard against a state that
        // keeps changing under us, in which case the watch channel wakes us later.
        for _ in 0..4 {
            match self.health.circuit() {
                CircuitState::Closed => return Decision::Closed,
                CircuitState::HalfOpen => {
                    return match self.try_reserve() {
                        Some(epoch) => Decision::Probe(Permit {
                            shared: Arc::clone(self),
                            epoch,
                        }),
                        None => Decision::Blocked {
                            retry_in: Duration::ZERO,
                            wake_at: None,
                        },
                    };
                }
                CircuitState::Open => {
                    let now = Instant::now();
                    let until = self.health.open_until();
                    if self.health.forced() == Some(CircuitState::Open) {
                        // Open by an operator: until they release it.
                        return Decision::Blocked {
                            retry_in: until
                                .map_or(Duration::ZERO, |u| u.saturating_duration_since(now)),
                            wake_at: None,
                        };
                    }
                    match until {
                        Some(until) if until > now => {
                            return Decision::Blocked {
                                retry_in: until - now,
                                wake_at: Some(until),
                            };
                        }
                        _ => {
                            if self.health.transition(
                                CircuitState::Open,
                                CircuitState::HalfOpen,
                                None,
                            ) {
                                tracing::debug!(provider = %self.health.id(), "circuit breaker cooldown over: probing");
                            }
                        }
                    }
                }
            }
        }
        Decision::Blocked {
            retry_in: Duration::ZERO,
            wake_at: None,
        }
    }

    /// Whether a probe permit still belongs to the current half-open period.
    #[inline]
    pub(crate) fn is_current(&self, permit: &Permit<C>) -> bool {
        self.health.circuit() == CircuitState::HalfOpen
            && epoch(self.probes.load(Ordering::Acquire)) == permit.epoch
    }

    fn try_reserve(&self) -> Option<u32> {
        let permits = self.config.half_open_permits;
        self.probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (in_flight(w) < permits).then_some(w + 1)
            })
            .ok()
            .map(epoch)
    }

    /// Counts the outcome of a finished request. `latency` is set when the call was
    /// timed.
    #[inline]
    pub(crate) fn complete(
        &self,
        ticket: &Ticket<C>,
        outcome: &Outcome,
        latency: Option<Duration>,
    ) {
        let Some(Verdict {
            weight: failure,
            account,
        }) = self.verdict(outcome)
        else {
            return;
        };
        let slow = match (self.slow_threshold, latency) {
            (Some(threshold), Some(latency)) => latency >= threshold,
            _ => false,
        };
        match self.health.breaker_state() {
            // Every request that finishes while closed is recent evidence, including
            // a probe that finishes after others closed the circuit.
            CircuitState::Closed => self.on_closed(failure, slow, account),
            // While half-open only probes count: a request admitted before the trip
            // says nothing about recovery.
            CircuitState::HalfOpen => {
                if let Ticket::Probe(permit) = ticket {
                    self.on_probe(permit.epoch, failure > 0 || slow, account);
                }
            }
            CircuitState::Open => {}
        }
    }

    #[inline]
    fn on_closed(&self, failure: u32, slow: bool, account: Option<FailureKind>) {
        if account.is_some() && self.config.account.trip_at_once {
            // One refused key or bill is enough evidence: no policy need agree.
            self.trip(CircuitState::Closed, "account_failure", account);
            return;
        }
        let mut tripped = None;
        if failure == 0 {
            if self.consecutive.load(Ordering::Relaxed) != 0 {
                self.consecutive.store(0, Ordering::Relaxed);
            }
            if self.health.trips() > 0 {
                self.forgive(Instant::now());
            }
        } else if self.consecutive_limit > 0 {
            let run = self
                .consecutive
                .fetch_add(u64::from(failure), Ordering::AcqRel)
                + u64::from(failure);
            if run >= self.consecutive_limit {
                tripped = Some("consecutive_failures");
            }
        }
        if let Some(windows) = &self.windows {
            let now = Instant::now();
            let by_window = windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .record(now, failure, slow);
            tripped = tripped.or(by_window);
        }
        if let Some(policy) = tripped {
            self.trip(CircuitState::Closed, policy, account);
        }
    }

    #[cold]
    #[inline(never)]
    fn on_probe(&self, probe_epoch: u32, failed: bool, account: Option<FailureKind>) {
        if failed {
            if epoch(self.probes.load(Ordering::Acquire)) == probe_epoch {
                self.trip(CircuitState::HalfOpen, "probe_failed", account);
            }
            return;
        }
        let counted = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                (epoch(w) == probe_epoch && successes(w) < 0xFFFF)
                    .then_some(w + (1 << SUCCESS_SHIFT))
            });
        if let Ok(before) = counted
            && successes(before) + 1 >= self.config.success_threshold
        {
            self.close();
        }
    }

    /// Starts a new half-open epoch: successes from earlier probes no longer count.
    /// Permits in flight stay counted until they come back.
    fn bump_epoch(&self) {
        let _ = self
            .probes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |w| {
                Some(pack(epoch(w).wrapping_add(1), 0, in_flight(w)))
            });
    }

    fn reset_counts(&self) {
        self.consecutive.store(0, Ordering::Relaxed);
        if let Some(windows) = &self.windows {
            windows
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clear();
        }
    }

    /// Consecutive trips after forgiving one per healthy period spent closed.
    fn forgiven(&self, trips: u32, now: Instant) -> u32 {
        match self.healthy_since.get() {
            Some(since) => {
                let periods = now.saturating_duration_since(since).as_nanos()
                    / self.config.healthy_period.as_nanos().max(1);
                trips.saturating_sub(u32::try_from(periods).unwrap_or(u32::MAX))
            }
            None => trips,
        }
    }

    /// After a success with trips on record: forgive the healthy periods that passed.
    #[cold]
    #[inline(never)]
    fn forgive(&self, now: Instant) {
        let Some(since) = self.healthy_since.get() else {
            // Closed by someone else (another replica): start counting now.
            self.healthy_since.set(Some(now));
            return;
        };
        let period = self.config.healthy_period;
        if now.saturating_duration_since(since) < period {
            return;
        }
        let Ok(_guard) = self.transitions.try_lock() else {
            return;
        };
        if self.health.breaker_state() != CircuitState::Closed
            || self.healthy_since.get() != Some(since)
        {
            return;
        }
        let trips = self.health.trips();
        let left = self.forgiven(trips, now);
        let periods = trips - left;
        self.health.set_trips(left);
        self.healthy_since
            .set(Some(since + period * periods.max(1)));
        tracing::debug!(provider = %self.health.id(), trips = left, "circuit breaker forgave a trip after a healthy period");
    }

    /// The cooldown after the `trips`-th trip in a row: base × 2^(trips−1), capped,
    /// then shortened by up to the jitter fraction.
    pub(crate) fn cooldown_for(&self, trips: u32) -> Duration {
        self.grown_cooldown(trips, self.config.cooldown, self.config.max_cooldown)
    }

    /// The cooldown after the `trips`-th trip in a row when an account failure
    /// (rejected credentials, billing) tripped it: the same growth from the
    /// account's own base and cap.
    pub(crate) fn account_cooldown_for(&self, trips: u32) -> Duration {
        let a = &self.config.account;
        self.grown_cooldown(trips, a.cooldown, a.max_cooldown)
    }

    fn grown_cooldown(&self, trips: u32, base: Duration, max: Duration) -> Duration {
        let doublings = trips.saturating_sub(1).min(31);
        let full = base.saturating_mul(1u32 << doublings).min(max);
        if self.config.jitter > 0.0 {
            full.mul_f64(1.0 - self.config.jitter * self.rng.f64())
        } else {
            full
        }
    }

    #[cold]
    #[inline(never)]
    fn trip(&self, from: CircuitState, policy: &'static str, account: Option<FailureKind>) {
        let now = Instant::now();
        let _guard = self.lock_transitions();
        if self.health.breaker_state() != from {
            return; // someone else moved it first
        }
        let before = self.health.trips();
        // Only time spent closed is healthy: a trip from half-open (after a
        // cooldown, or after a ramp rolled the circuit back) forgives nothing.
        let trips = if from == CircuitState::Closed {
            self.forgiven(before, now)
        } else {
            before
        }
        .saturating_add(1);
        let cooldown = match account {
            Some(_) => self.account_cooldown_for(trips),
            None => self.cooldown_for(trips),
        };
        // Trips and cause first: the transition publishes them.
        self.health.set_trips(trips);
        self.health.set_account_failure(account);
        if self
            .health
            .transition(from, CircuitState::Open, Some(now + cooldown))
        {
            self.bump_epoch();
            self.reset_counts();
            self.healthy_since.set(None);
            tracing::info!(
                provider = %self.health.id(),
                policy,
                trips,
                cooldown_ms = cooldown.as_millis() as u64,
                "circuit breaker tripped"
            );
            // Once per trip, never per answer: the answers that arrive while the
            // circuit is open are not counted at all.
            match account {
                Some(FailureKind::Credentials) => {
                    tracing::warn!(provider = %self.health.id(), kind = "credentials", cooldown_ms = cooldown.as_millis() as u64, "provider rejected the configured credentials: circuit opened; rotate the key");
                    self.health
                        .emit(HealthEventKind::CredentialsRejected { open_for: cooldown });
                }
                Some(FailureKind::Billing) => {
                    tracing::warn!(provider = %self.health.id(), kind = "billing", cooldown_ms = cooldown.as_millis() as u64, "provider refused the account for billing: circuit opened");
                    self.health
                        .emit(HealthEventKind::BillingFailed { open_for: cooldown });
                }
                _ => {}
            }
        } else {
            self.health.set_trips(before);
        }
    }

    #[cold]
    #[inline(never)]
    fn close(&self) {
        let now = Instant::now();
        let _guard = self.lock_transitions();
        if self.health.breaker_state() != CircuitState::HalfOpen {
            return;
        }
        self.reset_counts();
        if self
            .health
            .transition(CircuitState::HalfOpen, CircuitState::Closed, None)
        {
            self.bump_epoch();
            self.healthy_since.set(Some(now));
            tracing::info!(
                provider = %self.health.id(),
                probes = self.config.success_threshold,
                "circuit breaker closed after successful probes"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Window;

    #[test]
    fn word_packing_round_trips() {
        let w = pack(7, 3, 2);
        assert_eq!((epoch(w), successes(w), in_flight(w)), (7, 3, 2));
        let w = pack(u32::MAX, 0xFFFF, 0xFFFF);
        assert_eq!(
            (epoch(w), successes(w), in_flight(w)),
            (u32::MAX, 0xFFFF, 0xFFFF)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_doubles_caps_and_jitters_down() {
        let health = Health::standalone("p", "m");
        let no_jitter = Shared::new(health.clone(), CircuitConfig::default().jitter(0.0), ());
        let secs = |n| no_jitter.cooldown_for(n).as_secs();
        assert_eq!(
            [
                secs(1),
                secs(2),
                secs(3),
                secs(4),
                secs(5),
                secs(6),
                secs(40)
            ],
            [30, 60, 120, 240, 300, 300, 300]
        );
        let jittered = Shared::new(health, CircuitConfig::default().seed(1), ());
        for trips in 1..8 {
            let full = no_jitter.cooldown_for(trips);
            let d = jittered.cooldown_for(trips);
            assert!(d <= full && d > full.mul_f64(0.79), "{trips}: {d:?}");
        }
    }

    fn trips_after(config: CircuitConfig, kind: RejectKind, calls: u32) -> (bool, f64) {
        let health = Health::standalone("p", "m");
        let shared = Shared::new(health.clone(), config, ());
        for _ in 0..calls {
            shared.complete(&Ticket::Closed, &Outcome::rejected(kind), None);
        }
        (
            health.circuit() == CircuitState::Open,
            shared.consecutive_failures(),
        )
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_answers_count_by_default_content_rejections_do_not() {
        let malformed = [
            RejectKind::InvalidJson,
            RejectKind::Shape,
            RejectKind::ErrorObject,
        ];
        for kind in malformed {
            assert_eq!(
                trips_after(CircuitConfig::default(), kind, 4),
                (false, 4.0),
                "{kind}"
            );
            assert!(trips_after(CircuitConfig::default(), kind, 5).0, "{kind}");
            // Off: they follow `rejected_is_failure`.
            let off = CircuitConfig::default().malformed_is_failure(false);
            assert_eq!(trips_after(off.clone(), kind, 20), (false, 0.0), "{kind}");
            let all = off.rejected_is_failure(true);
            assert!(trips_after(all, kind, 5).0, "{kind}");
        }
        let content = [
            RejectKind::Empty,
            RejectKind::Truncated,
            RejectKind::Refusal,
            RejectKind::Schema,
            RejectKind::Custom,
        ];
        for kind in content {
            assert_eq!(
                trips_after(CircuitConfig::default(), kind, 20),
                (false, 0.0),
                "{kind}"
            );
            let all = CircuitConfig::default().rejected_is_failure(true);
            assert!(trips_after(all, kind, 5).0, "{kind}");
        }
        // Shed never counts, whatever the settings.
        let everything = CircuitConfig::default().rejected_is_failure(true);
        assert_eq!(trips_after(everything, RejectKind::Shed, 20), (false, 0.0));
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_answers_count_under_every_trip_policy() {
        // Failures in a time window.
        let windowed = CircuitConfig::default()
            .consecutive_failures(0)
            .failures_in_window(3, Duration::from_secs(60));
        assert!(!trips_after(windowed.clone(), RejectKind::InvalidJson, 2).0);
        assert!(trips_after(windowed, RejectKind::InvalidJson, 3).0);
        // A failure rate over the last calls: malformed answers mixed with successes.
        let health = Health::standalone("p", "m");
        let rate = CircuitConfig::default()
            .consecutive_failures(0)
            .failure_rate(0.5, Window::Calls(10), 10);
        let shared = Shared::new(health.clone(), rate, ());
        for i in 0..10 {
            let outcome = if i % 2 == 0 {
                Outcome::Success
            } else {
                Outcome::rejected(RejectKind::ErrorObject)
            };
            shared.complete(&Ticket::Closed, &outcome, None);
            tokio::time::advance(Duration::from_millis(10)).await;
        }
        assert_eq!(health.circuit(), CircuitState::Open);
        // A success between malformed answers breaks the run, like any failure.
        let health = Health::standalone("p", "m");
        let shared = Shared::new(health.clone(), CircuitConfig::default(), ());
        for _ in 0..3 {
            for _ in 0..4 {
                shared.complete(&Ticket::Closed, &Outcome::rejected(RejectKind::Shape), None);
            }
            shared.complete(&Ticket::Closed, &Outcome::Success, None);
        }
        assert_eq!(health.circuit(), CircuitState::Closed);
        // A malformed probe answer re-opens a half-open circuit.
        let health = Health::standalone("p", "m");
        let shared = Arc::new(Shared::new(
            health.clone(),
            CircuitConfig::default().jitter(0.0),
            (),
        ));
        for _ in 0..5 {
            shared.complete(
                &Ticket::Closed,
                &Outcome::rejected(RejectKind::InvalidJson),
                None,
            );
        }
        assert_eq!(health.circuit(), CircuitState::Open);
        tokio::time::advance(Duration::from_secs(31)).await;
        let Decision::Probe(permit) = shared.admit() else {
            panic!("a probe is due");
        };
        assert_eq!(health.circuit(), CircuitState::HalfOpen);
        shared.complete(
            &Ticket::Probe(permit),
            &Outcome::rejected(RejectKind::InvalidJson),
            None,
        );
        assert_eq!(health.circuit(), CircuitState::Open);
    }
}
