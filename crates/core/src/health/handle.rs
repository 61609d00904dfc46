use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::event::{HealthEvent, HealthEventKind};
use crate::metrics::ProviderMetrics;
use crate::outcome::{FailureKind, Outcome, RejectKind};
use crate::snapshot::{Counters, ProviderSnapshot, UsageTotals};
use crate::store::{LocalStore, SharedStore, SharedUpdate};
use crate::time::{AtomicInstant, instant_from_system, system_from_instant};

use super::{CircuitState, HealthConfig, InFlight, PeakEwma, ProviderId, QuotaGroup};

/// The time to first byte assumed for a provider not measured yet, when deciding
/// whether it is suspect.
const UNMEASURED_TTFB_NS: f64 = 500e6;

/// Hang detection settings, as the handle keeps them.
#[derive(Debug, Clone, Copy)]
struct Suspicion {
    enabled: bool,
    factor: f64,
    floor_ns: f64,
}

const FORCED_NONE: u8 = u8::MAX;
const NO_RAMP: u32 = u32::MAX;
/// A ramp share of 100 %, in parts per million.
pub const FULL_SHARE_PPM: u32 = 1_000_000;

#[derive(Debug, Default)]
struct AtomicCounters {
    successes: AtomicU64,
    failures: AtomicU64,
    rate_limited: AtomicU64,
    rejected: AtomicU64,
    client_errors: AtomicU64,
    shed: AtomicU64,
    prompt_tokens: AtomicU64,
    completion_tokens: AtomicU64,
    cost_micros: AtomicU64,
}

/// One request waiting for its answer, in [`Inner::load`] (its high 32 bits).
pub(super) const WAITING: u64 = 1 << 32;
/// The requests in flight, in [`Inner::load`] (its low 32 bits).
pub(super) const IN_FLIGHT_MASK: u64 = WAITING - 1;

pub(super) struct Inner {
    id: ProviderId,
    quota: QuotaGroup,
    circuit: AtomicU8,
    forced: AtomicU8,
    open_until: AtomicInstant,
    trips: AtomicU32,
    circuit_tx: watch::Sender<CircuitState>,
    /// The instant `ttfb`, `latency` and `last_progress` count from.
    base: Instant,
    ttfb: PeakEwma,
    latency: PeakEwma,
    /// Requests in flight (the low 32 bits) and, of those, the requests sent and
    /// not answered yet (the high 32 bits, [`WAITING`] each): one atomic, so that
    /// starting a request is one read-modify-write.
    pub(super) load: AtomicU64,
    /// The provider's last sign of life, or when a request started waiting while
    /// none was.
    last_progress: AtomicInstant,
    /// Whether the provider was last seen suspect (for the events).
    pub(super) suspect: AtomicBool,
    suspicion: Suspicion,
    ramp_step: AtomicU32,
    ramp_ppm: AtomicU32,
    counters: AtomicCounters,
    events: broadcast::Sender<HealthEvent>,
    store: SharedStore,
    /// Why the breaker last opened, when it was an account failure (see
    /// [`Health::account_failure`]): 0 none, 1 credentials, 2 billing.
    account_failure: AtomicU8,
    metrics: ProviderMetrics,
}

/// The health handle of one (provider, model). Cloning shares the state.
#[derive(Clone)]
pub struct Health {
    pub(super) inner: Arc<Inner>,
}

/// A weak reference to a [`Health`], for stores and background tasks that must not
/// keep a provider alive.
#[derive(Clone)]
pub struct WeakHealth {
    inner: Weak<Inner>,
}

impl WeakHealth {
    /// The handle, if it still exists.
    pub fn upgrade(&self) -> Option<Health> {
        self.inner.upgrade().map(|inner| Health { inner })
    }
}

impl fmt::Debug for WeakHealth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WeakHealth")
    }
}

impl fmt::Debug for Health {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Health")
            .field("id", &self.inner.id)
            .field("circuit", &self.circuit())
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl Health {
    /// A handle that belongs to no registry: its own event channel, its own quota
    /// group, the local store.
    pub fn standalone(provider: impl AsRef<str>, model: impl AsRef<str>) -> Health {
        let (events, _) = broadcast::channel(64);
        Health::with_parts(
            ProviderId::new(provider, model),
            QuotaGroup::new(None),
            events,
            Arc::new(LocalStore),
            HealthConfig::default(),
        )
    }

    pub(crate) fn with_parts(
        id: ProviderId,
        quota: QuotaGroup,
        events: broadcast::Sender<HealthEvent>,
        store: SharedStore,
        config: HealthConfig,
    ) -> Health {
        let (circuit_tx, _) = watch::channel(CircuitState::Closed);
        let base = Instant::now();
        Health {
            inner: Arc::new(Inner {
                metrics: ProviderMetrics::new(&id),
                id,
                quota,
                circuit: AtomicU8::new(CircuitState::Closed as u8),
                forced: AtomicU8::new(FORCED_NONE),
                open_until: AtomicInstant::new(),
                trips: AtomicU32::new(0),
                circuit_tx,
                base,
                ttfb: PeakEwma::with_base(config.ewma_decay, base),
                latency: PeakEwma::with_base(config.ewma_decay, base),
                load: AtomicU64::new(0),
                last_progress: AtomicInstant::with_base(base),
                suspect: AtomicBool::new(false),
                suspicion: Suspicion {
                    enabled: config.detect_hangs,
                    factor: if config.suspect_factor.is_finite() {
                        config.suspect_factor.max(1.0)
                    } else {
                        4.0
                    },
                    floor_ns: config.suspect_floor.as_nanos() as f64,
                },
                ramp_step: AtomicU32::new(NO_RAMP),
                ramp_ppm: AtomicU32::new(FULL_SHARE_PPM),
                counters: AtomicCounters::default(),
                events,
                store,
                account_failure: AtomicU8::new(0),
            }),
        }
    }

    /// Which provider and model.
    pub fn id(&self) -> &ProviderId {
        &self.inner.id
    }

    /// This provider's metric handles (empty without the `metrics` feature).
    #[inline]
    pub fn metrics(&self) -> &ProviderMetrics {
        &self.inner.metrics
    }

    /// A weak reference.
    pub fn downgrade(&self) -> WeakHealth {
        WeakHealth {
            inner: Arc::downgrade(&self.inner),
        }
    }

    /// Whether two handles share state.
    pub fn same_as(&self, other: &Health) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    // ---- circuit -------------------------------------------------------------

    /// The effective circuit state: the operator's forced state if set, else the
    /// breaker's.
    #[inline]
    pub fn circuit(&self) -> CircuitState {
        match self.inner.forced.load(Ordering::Acquire) {
            FORCED_NONE => self.breaker_state(),
            forced => CircuitState::from_u8(forced),
        }
    }

    /// The breaker's own state, ignoring any operator override.
    #[inline]
    pub fn breaker_state(&self) -> CircuitState {
        CircuitState::from_u8(self.inner.circuit.load(Ordering::Acquire))
    }

    /// The operator's override, if any.
    pub fn forced(&self) -> Option<CircuitState> {
        match self.inner.forced.load(Ordering::Acquire) {
            FORCED_NONE => None,
            v => Some(CircuitState::from_u8(v)),
        }
    }

    /// Forces the circuit open or closed (`None` releases the override). The breaker
    /// keeps counting underneath and resumes from its own state when released.
    pub fn force(&self, state: Option<CircuitState>) {
        let raw = state.map_or(FORCED_NONE, |s| s as u8);
        if self.inner.forced.swap(raw, Ordering::AcqRel) != raw {
            tracing::info!(provider = %self.inner.id, forced = ?state, "circuit override");
            self.inner.metrics.circuit(self.circuit(), None);
            self.inner.circuit_tx.send_replace(self.circuit());
            self.emit(HealthEventKind::Forced { state });
        }
    }

    /// Until when the circuit stays open (set while open).
    pub fn open_until(&self) -> Option<Instant> {
        self.inner.open_until.get()
    }

    /// How many times in a row the circuit has tripped (reset by the breaker after a
    /// healthy period). Cooldowns grow with it.
    pub fn trips(&self) -> u32 {
        self.inner.trips.load(Ordering::Acquire)
    }

    /// Sets the consecutive-trip count.
    pub fn set_trips(&self, trips: u32) {
        self.inner.trips.store(trips, Ordering::Release);
    }

    /// Moves the breaker from `from` to `to` if it is in `from` (compare-and-swap).
    /// `open_until` is recorded when opening. On success, publishes an event, wakes
    /// watchers and tells the store. Returns whether the transition happened.
    pub fn transition(
        &self,
        from: CircuitState,
        to: CircuitState,
        open_until: Option<Instant>,
    ) -> bool {
        if to == CircuitState::Open {
            self.inner.open_until.set(open_until);
        }
        let ok = self
            .inner
            .circuit
            .compare_exchange(from as u8, to as u8, Ordering::AcqRel, Ordering::Acquire)
            .is_ok();
        if !ok || from == to {
            return ok;
        }
        if to != CircuitState::Open {
            self.inner.open_until.set(None);
        }
        let now = Instant::now();
        let open_for = open_until
            .filter(|_| to == CircuitState::Open)
            .map(|u| u.saturating_duration_since(now));
        match to {
            CircuitState::Open => {
                tracing::warn!(provider = %self.inner.id, %from, open_for_ms = open_for.map(|d| d.as_millis() as u64), "circuit opened")
            }
            _ => tracing::info!(provider = %self.inner.id, %from, %to, "circuit changed"),
        }
        self.inner.metrics.circuit(self.circuit(), Some(to));
        self.inner.circuit_tx.send_replace(self.circuit());
        self.emit(HealthEventKind::CircuitChanged { from, to, open_for });
        self.inner.store.publish(
            &self.inner.id,
            &SharedUpdate::Circuit {
                state: to,
                open_until: open_until
                    .filter(|_| to == CircuitState::Open)
                    .map(|u| system_from_instant(u, now)),
                trips: self.trips(),
            },
        );
        true
    }

    /// The account failure ([`FailureKind::Credentials`] or [`FailureKind::Billing`])
    /// that opened the circuit, while it is not closed; `None` when it opened for
    /// anything else (or is closed). Set by the circuit breaker when it trips.
    pub fn account_failure(&self) -> Option<FailureKind> {
        if self.breaker_state() == CircuitState::Closed {
            return None;
        }
        match self.inner.account_failure.load(Ordering::Acquire) {
            1 => Some(FailureKind::Credentials),
            2 => Some(FailureKind::Billing),
            _ => None,
        }
    }

    /// Records why the breaker is opening: the account failure that tripped it, or
    /// `None` for any other cause. Call it before [`transition`](Health::transition).
    pub fn set_account_failure(&self, kind: Option<FailureKind>) {
        let raw = match kind {
            Some(FailureKind::Credentials) => 1,
            Some(FailureKind::Billing) => 2,
            _ => 0,
        };
        self.inner.account_failure.store(raw, Ordering::Release);
    }

    /// A receiver that sees every change of the effective circuit state.
    pub fn watch_circuit(&self) -> watch::Receiver<CircuitState> {
        self.inner.circuit_tx.subscribe()
    }

    /// A quick availability hint at `now`: the circuit is not open (or its cooldown
    /// is over), the quota group is not rate limited, and the ramp admits something.
    /// The authoritative answer is the per-provider stack's `poll_ready`.
    ///
    /// It does not include suspicion ([`Health::is_suspect`]): a suspect provider
    /// is available, only not preferred. A router should pick among the available
    /// providers that are not suspect, and fall back to suspect ones when that
    /// leaves none.
    #[inline]
    pub fn is_available(&self, now: Instant) -> bool {
        let circuit_ok = match self.circuit() {
            CircuitState::Open => self.forced().is_none() && !self.inner.open_until.is_after(now),
            _ => true,
        };
        circuit_ok && !self.inner.quota.is_limited(now) && self.ramp_share_ppm() > 0
    }

    /// The earliest time at which this provider may be available again, from `now`
    /// (zero if it is available).
    pub fn recovers_in(&self, now: Instant) -> Duration {
        let open = match self.circuit() {
            CircuitState::Open => self
                .inner
                .open_until
                .remaining(now)
                .unwrap_or(Duration::ZERO),
            _ => Duration::ZERO,
        };
        let limited = self.inner.quota.remaining(now).unwrap_or(Duration::ZERO);
        open.max(limited)
    }

    // ---- rate limits ---------------------------------------------------------

    /// The provider's quota group.
    pub fn quota(&self) -> &QuotaGroup {
        &self.inner.quota
    }

    /// Whether the provider's quota group is rate limited at `now`.
    #[inline]
    pub fn is_rate_limited(&self, now: Instant) -> bool {
        self.inner.quota.is_limited(now)
    }

    /// Marks the quota group rate limited for `wait` from now (never shortening a
    /// known window), publishing an event and telling the store when it moved.
    pub fn mark_rate_limited(&self, wait: Duration) -> bool {
        let now = Instant::now();
        let until = now + wait;
        if !self.inner.quota.limit_until(until) {
            return false;
        }
        let group = self.inner.quota.name().map(str::to_owned);
        tracing::info!(provider = %self.inner.id, ?group, retry_after_ms = wait.as_millis() as u64, "rate limited");
        self.inner.metrics.rate_limit_window();
        self.emit(HealthEventKind::RateLimited {
            group: group.clone(),
            retry_after: wait,
        });
        self.inner.store.publish(
            &self.inner.id,
            &SharedUpdate::RateLimitedUntil {
                group: group.unwrap_or_else(|| self.inner.id.to_string()),
                until: system_from_instant(until, now),
            },
        );
        true
    }

    /// Ends the quota group's rate-limit window.
    pub fn clear_rate_limit(&self) {
        if self.inner.quota.limited_until().is_some() {
            self.inner.quota.clear();
            self.emit(HealthEventKind::RateLimitCleared);
        }
    }

    // ---- ramp ----------------------------------------------------------------

    /// The share of requests the recovery ramp admits, in parts per million
    /// ([`FULL_SHARE_PPM`] when no ramp runs).
    #[inline]
    pub fn ramp_share_ppm(&self) -> u32 {
        self.inner.ramp_ppm.load(Ordering::Acquire)
    }

    /// The ramp share as a fraction in `0..=1`.
    pub fn ramp_share(&self) -> f64 {
        f64::from(self.ramp_share_ppm()) / f64::from(FULL_SHARE_PPM)
    }

    /// The ramp's current step, if a ramp is running.
    pub fn ramp_step(&self) -> Option<u32> {
        match self.inner.ramp_step.load(Ordering::Acquire) {
            NO_RAMP => None,
            s => Some(s),
        }
    }

    /// Sets the ramp position (`step: None` when no ramp runs) and tells the store.
    /// Events are the ramp's to emit (it knows whether this is a step or a rollback).
    pub fn set_ramp(&self, step: Option<u32>, share_ppm: u32) {
        let share_ppm = share_ppm.min(FULL_SHARE_PPM);
        self.inner
            .ramp_step
            .store(step.unwrap_or(NO_RAMP), Ordering::Release);
        self.inner.ramp_ppm.store(share_ppm, Ordering::Release);
        self.inner.metrics.ramp_share(self.ramp_share());
        self.inner
            .store
            .publish(&self.inner.id, &SharedUpdate::Ramp { step, share_ppm });
    }

    // ---- latency and load ----------------------------------------------------

    /// Records a time to first body byte.
    #[inline]
    pub fn observe_ttfb(&self, sample: Duration) {
        self.inner.ttfb.observe(sample, Instant::now());
    }

    /// Records a whole-request latency.
    #[inline]
    pub fn observe_latency(&self, sample: Duration) {
        self.inner.latency.observe(sample, Instant::now());
    }

    /// Nanoseconds of `at` after the instant this record's estimates count from:
    /// one clock reading, converted once, serves the time to first byte, the
    /// latency and the progress stamp ([`PeakEwma::observe`] and the rest convert
    /// each on their own).
    #[inline]
    pub(crate) fn clock_nanos(&self, at: Instant) -> u64 {
        super::ewma::nanos(at.saturating_duration_since(self.inner.base))
    }

    /// The peak-EWMA of time to first body byte.
    pub fn ttfb(&self) -> &PeakEwma {
        &self.inner.ttfb
    }

    /// The peak-EWMA of whole-request latency.
    pub fn latency(&self) -> &PeakEwma {
        &self.inner.latency
    }

    /// Requests in flight to this provider (as counted by [`InFlight`] guards).
    #[inline]
    pub fn in_flight(&self) -> u64 {
        self.inner.load.load(Ordering::Relaxed) & IN_FLIGHT_MASK
    }

    /// Counts a request in flight until the guard drops, and as waiting for its
    /// answer until [`InFlight::answered`] (or the drop).
    #[inline]
    pub fn start_request(&self) -> InFlight {
        self.start_request_at(Instant::now())
    }

    /// [`start_request`](Self::start_request) with the clock already read (`now`):
    /// a layer that times the request anyway saves a clock read.
    #[inline]
    pub fn start_request_at(&self, now: Instant) -> InFlight {
        self.start_request_at_nanos(self.clock_nanos(now))
    }

    /// [`start_request_at`](Self::start_request_at), with `now` from
    /// [`clock_nanos`](Self::clock_nanos).
    #[inline]
    pub(crate) fn start_request_at_nanos(&self, now_ns: u64) -> InFlight {
        let was = self.inner.load.fetch_add(1 + WAITING, Ordering::AcqRel);
        if was < WAITING {
            // Nothing was waiting: silence is counted from now, not from the last
            // answer of an idle provider.
            self.inner.last_progress.set_nanos(now_ns);
        }
        InFlight {
            health: self.clone(),
            waiting: true,
        }
    }

    /// Requests sent to this provider and not answered yet.
    #[inline]
    pub fn waiting(&self) -> u64 {
        self.inner.load.load(Ordering::Relaxed) / WAITING
    }

    /// The provider gave a sign of life now: an answer, or an error that is not a
    /// timeout. Clears suspicion. Called by [`InFlight::answered`]; call it from a
    /// layer of your own that sees answers the observer does not.
    pub fn note_progress(&self) {
        let now = Instant::now();
        self.inner.last_progress.set(Some(now));
        if self.inner.suspect.load(Ordering::Relaxed) {
            self.set_suspect(false, Duration::ZERO);
        }
    }

    /// How long this provider may stay silent, with requests waiting, before it is
    /// suspect: `max(suspect_factor × time-to-first-byte EWMA, suspect_floor)`.
    pub fn suspect_threshold(&self) -> Duration {
        Duration::from_nanos(self.threshold_ns() as u64)
    }

    #[inline]
    fn threshold_ns(&self) -> f64 {
        let s = &self.inner.suspicion;
        let ttfb = self.inner.ttfb.get_ns();
        let ttfb = if ttfb > 0.0 { ttfb } else { UNMEASURED_TTFB_NS };
        (s.factor * ttfb).max(s.floor_ns)
    }

    /// Whether the provider looks hung at `now`: requests are waiting for it and it
    /// has said nothing for longer than [`suspect_threshold`](Self::suspect_threshold).
    /// See the [module documentation](super). A few atomic loads when requests are
    /// waiting, one when none is; emits [`HealthEventKind::Suspect`] when the
    /// answer changes.
    #[inline]
    pub fn is_suspect(&self, now: Instant) -> bool {
        let inner = &*self.inner;
        let suspect = inner.suspicion.enabled
            && inner.load.load(Ordering::Acquire) >= WAITING
            && inner.last_progress.get().is_some_and(|last| {
                now.saturating_duration_since(last).as_nanos() as f64 > self.threshold_ns()
            });
        if suspect != inner.suspect.load(Ordering::Relaxed) {
            let silent = match inner.last_progress.get() {
                Some(last) if suspect => now.saturating_duration_since(last),
                _ => Duration::ZERO,
            };
            self.set_suspect(suspect, silent);
        }
        suspect
    }

    #[cold]
    pub(super) fn set_suspect(&self, suspect: bool, silent_for: Duration) {
        if self.inner.suspect.swap(suspect, Ordering::AcqRel) == suspect {
            return;
        }
        if suspect {
            tracing::warn!(provider = %self.inner.id, silent_ms = silent_for.as_millis() as u64, waiting = self.waiting(), "provider suspect: silent with requests waiting; new requests go elsewhere");
        } else {
            tracing::info!(provider = %self.inner.id, "provider no longer suspect");
        }
        self.emit(HealthEventKind::Suspect {
            suspect,
            silent_for,
        });
    }

    // ---- counters ------------------------------------------------------------

    /// Counts one attempt's outcome.
    #[inline]
    pub fn record(&self, outcome: &Outcome) {
        let c = &self.inner.counters;
        // One atomic add: `requests` is the sum of the outcomes' counters.
        let slot = match outcome {
            Outcome::Success => &c.successes,
            Outcome::Failure { .. } => &c.failures,
            Outcome::RateLimited { .. } => &c.rate_limited,
            Outcome::Rejected {
                kind: RejectKind::Shed,
            } => &c.shed,
            Outcome::Rejected { .. } => &c.rejected,
            Outcome::ClientError { .. } => &c.client_errors,
        };
        slot.fetch_add(1, Ordering::Relaxed);
        self.inner.metrics.outcome(outcome);
    }

    /// Adds token usage and cost (in millionths of a currency unit) and tells the
    /// store.
    pub fn record_usage(&self, prompt_tokens: u64, completion_tokens: u64, cost_micros: u64) {
        let c = &self.inner.counters;
        // Saturating: a provider reporting `u64::MAX` tokens must not wrap the totals.
        let add = |a: &AtomicU64, n: u64| {
            a.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                Some(v.saturating_add(n))
            })
        };
        let _ = (
            add(&c.prompt_tokens, prompt_tokens),
            add(&c.completion_tokens, completion_tokens),
            add(&c.cost_micros, cost_micros),
        );
        self.inner
            .metrics
            .usage(prompt_tokens, completion_tokens, cost_micros);
        self.inner.store.publish(
            &self.inner.id,
            &SharedUpdate::Usage {
                prompt_tokens,
                completion_tokens,
                cost_micros,
            },
        );
    }

    /// Answers counted as successes, and as failures or rejections: the two figures
    /// an error rate is made of, read with two loads (`counters()` reads seven).
    ///
    /// ```
    /// use tower_failover_core::{FailureKind, Health, Outcome};
    ///
    /// let health = Health::standalone("openai", "gpt-4o-mini");
    /// health.record(&Outcome::Success);
    /// health.record(&Outcome::failure(FailureKind::Other));
    /// assert_eq!(health.good_and_bad(), (1, 1));
    /// ```
    #[inline]
    pub fn good_and_bad(&self) -> (u64, u64) {
        let c = &self.inner.counters;
        let good = c.successes.load(Ordering::Relaxed);
        let bad = c
            .failures
            .load(Ordering::Relaxed)
            .saturating_add(c.rejected.load(Ordering::Relaxed));
        (good, bad)
    }

    /// The outcome counters.
    pub fn counters(&self) -> Counters {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let mut counters = Counters {
            requests: 0,
            successes: l(&c.successes),
            failures: l(&c.failures),
            rate_limited: l(&c.rate_limited),
            rejected: l(&c.rejected),
            client_errors: l(&c.client_errors),
            shed: l(&c.shed),
        };
        counters.requests = [
            counters.failures,
            counters.rate_limited,
            counters.rejected,
            counters.client_errors,
            counters.shed,
        ]
        .into_iter()
        .fold(counters.successes, u64::saturating_add);
        counters
    }

    /// The usage totals.
    pub fn usage(&self) -> UsageTotals {
        let c = &self.inner.counters;
        UsageTotals {
            prompt_tokens: c.prompt_tokens.load(Ordering::Relaxed),
            completion_tokens: c.completion_tokens.load(Ordering::Relaxed),
            cost: c.cost_micros.load(Ordering::Relaxed) as f64 / 1e6,
        }
    }

    // ---- events, store, snapshot ---------------------------------------------

    /// Publishes an event about this provider (dropped if nobody listens).
    pub fn emit(&self, kind: HealthEventKind) {
        let _ = self.inner.events.send(HealthEvent {
            provider: self.inner.id.clone(),
            kind,
        });
    }

    /// Subscribes to the events of this handle's channel (the whole registry's, when
    /// the handle came from one).
    pub fn subscribe(&self) -> broadcast::Receiver<HealthEvent> {
        self.inner.events.subscribe()
    }

    /// The shared-state store this handle reports to.
    pub fn store(&self) -> &SharedStore {
        &self.inner.store
    }

    /// Applies a change made by another replica (from the store). Updates local state
    /// and emits events, but does not publish back to the store.
    pub fn apply_remote(&self, update: &SharedUpdate) {
        let now = Instant::now();
        match update {
            SharedUpdate::Circuit {
                state,
                open_until,
                trips,
            } => {
                self.inner.trips.fetch_max(*trips, Ordering::AcqRel);
                let until = open_until.map(|t| instant_from_system(t, now));
                if *state == CircuitState::Open {
                    self.inner.open_until.set(until);
                } else {
                    self.inner.open_until.set(None);
                }
                let from =
                    CircuitState::from_u8(self.inner.circuit.swap(*state as u8, Ordering::AcqRel));
                if from != *state {
                    tracing::info!(provider = %self.inner.id, %from, to = %state, "circuit changed by another replica");
                    self.inner.metrics.circuit(self.circuit(), Some(*state));
                    self.inner.circuit_tx.send_replace(self.circuit());
                    self.emit(HealthEventKind::CircuitChanged {
                        from,
                        to: *state,
                        open_for: until.map(|u| u.saturating_duration_since(now)),
                    });
                }
            }
            SharedUpdate::RateLimitedUntil { until, .. } => {
                let until = instant_from_system(*until, now);
                if self.inner.quota.limit_until(until) {
                    self.emit(HealthEventKind::RateLimited {
                        group: self.inner.quota.name().map(str::to_owned),
                        retry_after: until.saturating_duration_since(now),
                    });
                }
            }
            SharedUpdate::Ramp { step, share_ppm } => {
                self.inner
                    .ramp_step
                    .store(step.unwrap_or(NO_RAMP), Ordering::Release);
                self.inner
                    .ramp_ppm
                    .store((*share_ppm).min(FULL_SHARE_PPM), Ordering::Release);
                self.inner.metrics.ramp_share(self.ramp_share());
            }
            // Fleet usage totals are the store's to report; local counters count
            // this replica's own traffic.
            SharedUpdate::Usage { .. } => {}
        }
    }

    /// A serializable picture of this provider now.
    pub fn snapshot(&self) -> ProviderSnapshot {
        let now = Instant::now();
        let ms = |d: Duration| d.as_millis() as u64;
        ProviderSnapshot {
            provider: self.inner.id.provider().to_owned(),
            model: self.inner.id.model().to_owned(),
            quota_group: self.inner.quota.name().map(str::to_owned),
            circuit: self.circuit(),
            forced: self.forced(),
            open_for_ms: match self.circuit() {
                CircuitState::Open => self.inner.open_until.remaining(now).map(ms),
                _ => None,
            },
            trips: self.trips(),
            account_failure: self.account_failure(),
            rate_limited_for_ms: self.inner.quota.remaining(now).map(ms),
            ramp_step: self.ramp_step(),
            ramp_share: self.ramp_share(),
            ttfb_ms: self.inner.ttfb.get_ns() / 1e6,
            latency_ms: self.inner.latency.get_ns() / 1e6,
            in_flight: self.in_flight(),
            waiting: self.waiting(),
            suspect: self.is_suspect(now),
            counters: self.counters(),
            usage: self.usage(),
        }
    }
}
