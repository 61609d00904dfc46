//! The per-(provider, model) health handle.
//!
//! A [`Health`] is a cheap, cloneable handle (an `Arc`) to everything the layers know
//! about one provider and model: circuit state, time to first byte, in-flight
//! requests, rate-limit deadline (through its [`QuotaGroup`]), recovery-ramp share,
//! outcome counters, and usage. Layers write it; balancers, ramps and snapshots read
//! it. Every read on the hot path is an atomic load of local memory. Changes are
//! published as [`HealthEvent`]s and, for the shared part, to the
//! [`StateStore`](crate::store::StateStore).
//!
//! Create handles from a [`Registry`](crate::Registry) so that they share an event
//! channel, quota groups and a store; [`Health::standalone`] makes a lone one.
//!
//! # Hangs: suspicion before any timeout
//!
//! A provider that accepts connections and then says nothing is the costliest
//! failure: every request sent to it waits for a whole timeout, and a first-byte
//! timeout of 10 s at 100 requests per second still sends it 1,000 requests before
//! the first one fails. So the handle also watches *silence*: it counts the
//! requests waiting for their answer (from [`Health::start_request`] until
//! [`InFlight::answered`]) and remembers the instant of the provider's last sign of
//! life (an answer, an error that is not a timeout, or the moment a request started
//! waiting while none was). A provider is **suspect** ([`Health::is_suspect`]) when
//! requests are waiting and it has been silent for longer than
//!
//! ```text
//! max(suspect_factor × time-to-first-byte EWMA, suspect_floor)    (defaults: 4 ×, 500 ms)
//! ```
//!
//! (an unmeasured provider counts as 500 ms, so 2 s). Routers send new requests to a
//! provider that is not suspect when they have one, and to a suspect one only as a
//! last resort: suspicion never fails a request. Requests already waiting keep
//! their own timeouts, which end them and count against the provider's circuit.
//! The first answer (or the last waiting request ending) clears it. Entering and
//! leaving emit [`HealthEventKind::Suspect`], and snapshots show `suspect`.
//! Checking costs a few atomic loads; nothing is allocated. Tune or turn it off
//! with [`HealthConfig`].

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use tokio::sync::{broadcast, watch};
use tokio::time::Instant;

use crate::event::{HealthEvent, HealthEventKind};
use crate::metrics::ProviderMetrics;
use crate::outcome::{FailureKind, Outcome, RejectKind};
use crate::snapshot::{Counters, ProviderSnapshot, Usage};
use crate::store::{LocalStore, SharedStore, SharedUpdate};
use crate::time::{AtomicInstant, instant_from_system, system_from_instant};

/// Which provider and model: the key of all health state.
///
/// Written and serialized as `provider/model` (the model may itself contain `/`).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ProviderId {
    provider: Arc<str>,
    model: Arc<str>,
}

impl ProviderId {
    /// The id of `model` at `provider`.
    pub fn new(provider: impl AsRef<str>, model: impl AsRef<str>) -> Self {
        ProviderId {
            provider: Arc::from(provider.as_ref()),
            model: Arc::from(model.as_ref()),
        }
    }

    /// The provider's name.
    pub fn provider(&self) -> &str {
        &self.provider
    }

    /// The model's name.
    pub fn model(&self) -> &str {
        &self.model
    }
}

impl fmt::Display for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.provider, self.model)
    }
}

impl fmt::Debug for ProviderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProviderId({self})")
    }
}

impl FromStr for ProviderId {
    type Err = &'static str;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.split_once('/') {
            Some((p, m)) if !p.is_empty() && !m.is_empty() => Ok(ProviderId::new(p, m)),
            _ => Err("expected \"provider/model\""),
        }
    }
}

impl Serialize for ProviderId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ProviderId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The state of a provider's circuit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum CircuitState {
    /// Requests flow.
    Closed = 0,
    /// Requests are refused until the cooldown ends.
    Open = 1,
    /// A few probe requests are let through to test recovery.
    HalfOpen = 2,
}

impl CircuitState {
    fn from_u8(v: u8) -> CircuitState {
        match v {
            1 => CircuitState::Open,
            2 => CircuitState::HalfOpen,
            _ => CircuitState::Closed,
        }
    }

    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            CircuitState::Closed => "closed",
            CircuitState::Open => "open",
            CircuitState::HalfOpen => "half_open",
        }
    }
}

impl fmt::Display for CircuitState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A peak-sensitive exponentially weighted moving average of a duration, lock-free.
///
/// A sample above the current estimate replaces it at once (a slowdown shows up on
/// the first slow response); a sample below pulls it down with a weight that depends
/// on the time since the last sample and the decay constant (recovery is believed
/// gradually). Concurrent updates may overwrite each other, which only costs one
/// sample of precision.
#[derive(Debug)]
pub struct PeakEwma {
    base: Instant,
    decay_ns: f64,
    /// f64 bits of the estimate in nanoseconds.
    value: AtomicU64,
    /// Nanoseconds after `base` of the last sample.
    stamp: AtomicU64,
}

impl PeakEwma {
    /// An estimate with no samples (reads as zero) and the given decay constant.
    pub fn new(decay: Duration) -> Self {
        PeakEwma {
            base: Instant::now(),
            decay_ns: (decay.as_nanos() as f64).max(1.0),
            value: AtomicU64::new(0f64.to_bits()),
            stamp: AtomicU64::new(0),
        }
    }

    /// Adds a sample observed at `now`.
    pub fn observe(&self, sample: Duration, now: Instant) {
        let sample_ns = sample.as_nanos() as f64;
        let now_ns = now.saturating_duration_since(self.base).as_nanos() as u64;
        let prev = f64::from_bits(self.value.load(Ordering::Relaxed));
        let last = self.stamp.swap(now_ns, Ordering::Relaxed);
        let next = if sample_ns >= prev || prev == 0.0 {
            sample_ns
        } else {
            let elapsed = now_ns.saturating_sub(last) as f64;
            let keep = (-elapsed / self.decay_ns).exp();
            prev * keep + sample_ns * (1.0 - keep)
        };
        self.value.store(next.to_bits(), Ordering::Relaxed);
    }

    /// The current estimate (zero before any sample).
    #[inline]
    pub fn get(&self) -> Duration {
        Duration::from_nanos(f64::from_bits(self.value.load(Ordering::Relaxed)) as u64)
    }

    /// The current estimate in nanoseconds, as a float (for load arithmetic).
    #[inline]
    pub fn get_ns(&self) -> f64 {
        f64::from_bits(self.value.load(Ordering::Relaxed))
    }

    /// When the last sample was taken, if any.
    pub fn last_sample(&self) -> Option<Instant> {
        let s = self.stamp.load(Ordering::Relaxed);
        (s != 0).then(|| self.base + Duration::from_nanos(s))
    }
}

/// A rate limit shared by every provider handle in the group (deployments that share
/// one API key or organisation). A provider not in a named group has a group of its
/// own.
#[derive(Debug, Clone)]
pub struct QuotaGroup {
    inner: Arc<QuotaInner>,
}

#[derive(Debug)]
struct QuotaInner {
    name: Option<Arc<str>>,
    until: AtomicInstant,
}

impl QuotaGroup {
    /// A quota group; `None` for an anonymous one-provider group.
    pub fn new(name: Option<&str>) -> Self {
        QuotaGroup {
            inner: Arc::new(QuotaInner {
                name: name.map(Arc::from),
                until: AtomicInstant::new(),
            }),
        }
    }

    /// The group's name, if it is a named group.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// Until when the group is rate limited, if it is.
    pub fn limited_until(&self) -> Option<Instant> {
        self.inner.until.get()
    }

    /// Whether the group is rate limited at `now`.
    #[inline]
    pub fn is_limited(&self, now: Instant) -> bool {
        self.inner.until.is_after(now)
    }

    /// Time left in the rate-limit window at `now`.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.inner.until.remaining(now)
    }

    /// Marks the group rate limited until `until`. A later deadline wins: a new 429
    /// never shortens a known window. Returns whether the deadline moved.
    pub fn limit_until(&self, until: Instant) -> bool {
        self.inner.until.extend(until)
    }

    /// Ends the rate-limit window now.
    pub fn clear(&self) {
        self.inner.until.set(None);
    }

    /// Whether two handles are the same group.
    pub fn same_as(&self, other: &QuotaGroup) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

/// Settings shared by the handles of a registry.
///
/// Deserializable (every key optional; durations as `"500ms"`, `"5s"` or seconds):
///
/// ```
/// use std::time::Duration;
/// use tower_failover_core::HealthConfig;
///
/// let c: HealthConfig = serde_json::from_str(r#"{"suspect_floor": "1s"}"#).unwrap();
/// assert_eq!(c.suspect_floor, Duration::from_secs(1));
/// assert_eq!(c.suspect_factor, 4.0);
/// assert!(c.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealthConfig {
    /// Decay constant of the latency and time-to-first-byte averages. Default: 5 s.
    #[serde(with = "crate::duration_serde")]
    pub ewma_decay: Duration,
    /// Whether silent providers become suspect (see the [module
    /// documentation](self)). Default: on.
    pub detect_hangs: bool,
    /// A provider whose waiting requests have heard nothing for this many times its
    /// time-to-first-byte EWMA is suspect. Default: 4. At least 1.
    pub suspect_factor: f64,
    /// ... and for at least this long, whatever its EWMA. Default: 500 ms: at
    /// 100 requests per second, about 50 requests reach a provider that has just
    /// gone silent before the others go elsewhere; an LLM's time to first token is
    /// rarely below it, and a fast local model should not be suspected for the
    /// length of one garbage-collection pause.
    #[serde(with = "crate::duration_serde")]
    pub suspect_floor: Duration,
}

impl Default for HealthConfig {
    fn default() -> Self {
        HealthConfig {
            ewma_decay: Duration::from_secs(5),
            detect_hangs: true,
            suspect_factor: 4.0,
            suspect_floor: Duration::from_millis(500),
        }
    }
}

impl HealthConfig {
    /// Refuses a zero decay, a factor below 1 (or not finite) and a floor of zero or
    /// above an hour, naming the field.
    pub fn validate(&self) -> Result<(), crate::ConfigError> {
        use crate::ConfigError;
        if self.ewma_decay.is_zero() {
            return Err(ConfigError::new("ewma_decay", "must be above zero"));
        }
        if !(self.suspect_factor.is_finite() && (1.0..=1000.0).contains(&self.suspect_factor)) {
            return Err(ConfigError::new(
                "suspect_factor",
                "must be a number from 1 to 1000",
            ));
        }
        if self.suspect_floor.is_zero() || self.suspect_floor > Duration::from_secs(3600) {
            return Err(ConfigError::new(
                "suspect_floor",
                "must be above zero and at most 1h",
            ));
        }
        Ok(())
    }
}

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
    requests: AtomicU64,
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

struct Inner {
    id: ProviderId,
    quota: QuotaGroup,
    circuit: AtomicU8,
    forced: AtomicU8,
    open_until: AtomicInstant,
    trips: AtomicU32,
    circuit_tx: watch::Sender<CircuitState>,
    ttfb: PeakEwma,
    latency: PeakEwma,
    in_flight: AtomicU64,
    /// Requests sent and not answered yet (a subset of `in_flight`).
    waiting: AtomicU64,
    /// The provider's last sign of life, or when a request started waiting while
    /// none was.
    last_progress: AtomicInstant,
    /// Whether the provider was last seen suspect (for the events).
    suspect: AtomicBool,
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
    inner: Arc<Inner>,
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
                ttfb: PeakEwma::new(config.ewma_decay),
                latency: PeakEwma::new(config.ewma_decay),
                in_flight: AtomicU64::new(0),
                waiting: AtomicU64::new(0),
                last_progress: AtomicInstant::new(),
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
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops, and as waiting for its
    /// answer until [`InFlight::answered`] (or the drop).
    #[inline]
    pub fn start_request(&self) -> InFlight {
        self.inner.in_flight.fetch_add(1, Ordering::Relaxed);
        if self.inner.waiting.fetch_add(1, Ordering::AcqRel) == 0 {
            // Nothing was waiting: silence is counted from now, not from the last
            // answer of an idle provider.
            self.inner.last_progress.set(Some(Instant::now()));
        }
        InFlight {
            health: self.clone(),
            waiting: true,
        }
    }

    /// Requests sent to this provider and not answered yet.
    #[inline]
    pub fn waiting(&self) -> u64 {
        self.inner.waiting.load(Ordering::Relaxed)
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
    /// See the [module documentation](self). A few atomic loads when requests are
    /// waiting, one when none is; emits [`HealthEventKind::Suspect`] when the
    /// answer changes.
    #[inline]
    pub fn is_suspect(&self, now: Instant) -> bool {
        let inner = &*self.inner;
        let suspect = inner.suspicion.enabled
            && inner.waiting.load(Ordering::Acquire) > 0
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
    fn set_suspect(&self, suspect: bool, silent_for: Duration) {
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
        c.requests.fetch_add(1, Ordering::Relaxed);
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

    /// The outcome counters.
    pub fn counters(&self) -> Counters {
        let c = &self.inner.counters;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Counters {
            requests: l(&c.requests),
            successes: l(&c.successes),
            failures: l(&c.failures),
            rate_limited: l(&c.rate_limited),
            rejected: l(&c.rejected),
            client_errors: l(&c.client_errors),
            shed: l(&c.shed),
        }
    }

    /// The usage totals.
    pub fn usage(&self) -> Usage {
        let c = &self.inner.counters;
        Usage {
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

/// Counts a request as in flight until dropped, and as waiting for its answer
/// until [`answered`](InFlight::answered). See [`Health::start_request`].
#[derive(Debug)]
pub struct InFlight {
    health: Health,
    waiting: bool,
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
        if !matches!(
            outcome,
            Outcome::Failure {
                kind: FailureKind::Timeout
            }
        ) {
            self.health.note_progress();
        }
        self.health.inner.waiting.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if self.waiting {
            // Given up unanswered (a timer above, or the caller): no sign of life.
            let was = self.health.inner.waiting.fetch_sub(1, Ordering::AcqRel);
            if was == 1 && self.health.inner.suspect.load(Ordering::Relaxed) {
                // Nothing waits any more: nothing to suspect.
                self.health.set_suspect(false, Duration::ZERO);
            }
        }
        self.health.inner.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_id_round_trips() {
        let id = ProviderId::new("openrouter", "meta-llama/llama-3-70b");
        assert_eq!(id.to_string(), "openrouter/meta-llama/llama-3-70b");
        let back: ProviderId = id.to_string().parse().unwrap();
        assert_eq!(back, id);
        assert_eq!(back.model(), "meta-llama/llama-3-70b");
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(serde_json::from_str::<ProviderId>(&json).unwrap(), id);
        assert!("nomodel".parse::<ProviderId>().is_err());
        assert!("/m".parse::<ProviderId>().is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn transitions_publish_events_and_watch() {
        let h = Health::standalone("p", "m");
        let mut events = h.subscribe();
        let mut watch = h.watch_circuit();
        let until = Instant::now() + Duration::from_secs(30);
        assert!(h.transition(CircuitState::Closed, CircuitState::Open, Some(until)));
        assert!(
            !h.transition(CircuitState::Closed, CircuitState::Open, Some(until)),
            "CAS from the wrong state fails"
        );
        assert_eq!(h.circuit(), CircuitState::Open);
        assert_eq!(h.open_until(), Some(until));
        assert!(!h.is_available(Instant::now()));
        assert_eq!(h.recovers_in(Instant::now()), Duration::from_secs(30));
        watch.changed().await.unwrap();
        assert_eq!(*watch.borrow(), CircuitState::Open);
        let ev = events.recv().await.unwrap();
        assert_eq!(
            ev.kind,
            HealthEventKind::CircuitChanged {
                from: CircuitState::Closed,
                to: CircuitState::Open,
                open_for: Some(Duration::from_secs(30))
            }
        );
        tokio::time::advance(Duration::from_secs(31)).await;
        assert!(
            h.is_available(Instant::now()),
            "cooldown over: a probe may go"
        );
        assert!(h.transition(CircuitState::Open, CircuitState::HalfOpen, None));
        assert_eq!(h.open_until(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn forcing_overrides_and_releases() {
        let h = Health::standalone("p", "m");
        h.force(Some(CircuitState::Open));
        assert_eq!(h.circuit(), CircuitState::Open);
        assert_eq!(h.breaker_state(), CircuitState::Closed);
        assert!(!h.is_available(Instant::now()));
        h.force(None);
        assert_eq!(h.circuit(), CircuitState::Closed);
        assert!(h.is_available(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_windows_never_shrink() {
        let h = Health::standalone("p", "m");
        assert!(h.mark_rate_limited(Duration::from_secs(10)));
        assert!(!h.mark_rate_limited(Duration::from_secs(2)));
        assert!(h.is_rate_limited(Instant::now()));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(
            h.quota().remaining(Instant::now()),
            Some(Duration::from_secs(5))
        );
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(!h.is_rate_limited(Instant::now()));
        assert!(h.is_available(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn peak_ewma_jumps_up_and_decays_down() {
        let e = PeakEwma::new(Duration::from_secs(1));
        assert_eq!(e.get(), Duration::ZERO);
        e.observe(Duration::from_millis(300), Instant::now());
        assert_eq!(e.get(), Duration::from_millis(300));
        tokio::time::advance(Duration::from_millis(10)).await;
        e.observe(Duration::from_secs(4), Instant::now());
        assert_eq!(
            e.get(),
            Duration::from_secs(4),
            "a peak replaces the estimate at once"
        );
        tokio::time::advance(Duration::from_secs(1)).await;
        e.observe(Duration::from_millis(300), Instant::now());
        let v = e.get().as_secs_f64();
        // keep = e^-1 ≈ 0.368: 4 * 0.368 + 0.3 * 0.632 ≈ 1.66 s
        assert!((1.6..1.7).contains(&v), "{v}");
    }

    #[test]
    fn counters_and_in_flight() {
        let h = Health::standalone("p", "m");
        h.record(&Outcome::Success);
        h.record(&Outcome::failure(FailureKind::Timeout));
        h.record(&Outcome::rejected(RejectKind::Shed));
        h.record(&Outcome::rejected(RejectKind::Schema));
        h.record(&Outcome::RateLimited { retry_after: None });
        let g1 = h.start_request();
        let g2 = h.start_request();
        assert_eq!(h.in_flight(), 2);
        drop(g1);
        drop(g2);
        assert_eq!(h.in_flight(), 0);
        let c = h.counters();
        assert_eq!(
            (
                c.requests,
                c.successes,
                c.failures,
                c.shed,
                c.rejected,
                c.rate_limited
            ),
            (5, 1, 1, 1, 1, 1)
        );
        h.record_usage(100, 20, 1500);
        let s = h.snapshot();
        assert_eq!(s.usage.prompt_tokens, 100);
        assert!((s.usage.cost - 0.0015).abs() < 1e-12);
    }

    #[tokio::test(start_paused = true)]
    async fn remote_updates_apply_without_echo() {
        let h = Health::standalone("p", "m");
        let mut events = h.subscribe();
        let until = std::time::SystemTime::now() + Duration::from_secs(20);
        h.apply_remote(&SharedUpdate::Circuit {
            state: CircuitState::Open,
            open_until: Some(until),
            trips: 2,
        });
        assert_eq!(h.circuit(), CircuitState::Open);
        assert_eq!(h.trips(), 2);
        assert!(matches!(
            events.recv().await.unwrap().kind,
            HealthEventKind::CircuitChanged {
                to: CircuitState::Open,
                ..
            }
        ));
        h.apply_remote(&SharedUpdate::Ramp {
            step: Some(1),
            share_ppm: 250_000,
        });
        assert_eq!(h.ramp_step(), Some(1));
        assert!((h.ramp_share() - 0.25).abs() < 1e-9);
        h.apply_remote(&SharedUpdate::RateLimitedUntil {
            group: "g".into(),
            until: std::time::SystemTime::now() + Duration::from_secs(9),
        });
        assert!(h.is_rate_limited(Instant::now()));
    }

    fn suspect_events(rx: &mut broadcast::Receiver<HealthEvent>) -> Vec<bool> {
        let mut out = Vec::new();
        while let Ok(ev) = rx.try_recv() {
            if let HealthEventKind::Suspect { suspect, .. } = ev.kind {
                out.push(suspect);
            }
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_provider_becomes_suspect_and_an_answer_clears_it() {
        let h = Health::standalone("p", "m");
        let mut events = h.subscribe();
        h.observe_ttfb(Duration::from_millis(50));
        // Threshold: max(4 × 50 ms, 500 ms floor).
        assert_eq!(h.suspect_threshold(), Duration::from_millis(500));
        let mut waiting = h.start_request();
        assert_eq!(h.waiting(), 1);
        tokio::time::advance(Duration::from_millis(500)).await;
        assert!(!h.is_suspect(Instant::now()), "at the threshold, not yet");
        tokio::time::advance(Duration::from_millis(1)).await;
        assert!(h.is_suspect(Instant::now()));
        assert!(h.is_available(Instant::now()), "suspect is not unavailable");
        assert!(h.snapshot().suspect);
        // More requests while it is silent do not reset the silence.
        let second = h.start_request();
        assert!(h.is_suspect(Instant::now()));
        assert_eq!(suspect_events(&mut events), vec![true]);
        waiting.answered(&Outcome::Success);
        assert_eq!(h.waiting(), 1);
        assert!(!h.is_suspect(Instant::now()), "an answer is a sign of life");
        assert!(!h.snapshot().suspect);
        assert_eq!(suspect_events(&mut events), vec![false]);
        drop(second);
        drop(waiting);
        assert_eq!((h.waiting(), h.in_flight()), (0, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn timeouts_are_no_sign_of_life_and_idle_time_is_not_silence() {
        let h = Health::standalone("p", "m");
        // Idle for a long time: the first request starts the silence clock.
        tokio::time::advance(Duration::from_secs(60)).await;
        let mut a = h.start_request();
        let b = h.start_request();
        assert!(!h.is_suspect(Instant::now()));
        // Unmeasured: the threshold is 4 × 500 ms.
        assert_eq!(h.suspect_threshold(), Duration::from_secs(2));
        tokio::time::advance(Duration::from_millis(1500)).await;
        a.answered(&Outcome::failure(FailureKind::Timeout));
        tokio::time::advance(Duration::from_millis(501)).await;
        assert!(h.is_suspect(Instant::now()), "a timeout did not reset it");
        // The last waiting request given up: nothing waits, nothing to suspect.
        let mut events = h.subscribe();
        drop(b);
        assert_eq!(suspect_events(&mut events), vec![false]);
        assert!(!h.is_suspect(Instant::now()));
        // A fast error is a sign of life.
        let mut c = h.start_request();
        tokio::time::advance(Duration::from_millis(1999)).await;
        let d = h.start_request();
        c.answered(&Outcome::failure(FailureKind::Status(503)));
        tokio::time::advance(Duration::from_millis(1999)).await;
        assert!(!h.is_suspect(Instant::now()));
        tokio::time::advance(Duration::from_millis(2)).await;
        assert!(h.is_suspect(Instant::now()));
        drop(d);
    }

    #[tokio::test(start_paused = true)]
    async fn the_threshold_follows_the_ttfb_average_and_the_config() {
        let h = Health::standalone("p", "m");
        h.observe_ttfb(Duration::from_secs(3));
        assert_eq!(h.suspect_threshold(), Duration::from_secs(12));
        let _g = h.start_request();
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(
            !h.is_suspect(Instant::now()),
            "a slow provider is given its time"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        assert!(h.is_suspect(Instant::now()));

        let (events, _) = broadcast::channel(8);
        let off = Health::with_parts(
            ProviderId::new("q", "m"),
            QuotaGroup::new(None),
            events,
            Arc::new(LocalStore),
            HealthConfig {
                detect_hangs: false,
                ..HealthConfig::default()
            },
        );
        let _g = off.start_request();
        tokio::time::advance(Duration::from_secs(3600)).await;
        assert!(!off.is_suspect(Instant::now()), "detection off");
    }

    #[test]
    fn health_config_defaults_parse_and_validate() {
        let d = HealthConfig::default();
        assert_eq!(
            (
                d.ewma_decay,
                d.detect_hangs,
                d.suspect_factor,
                d.suspect_floor
            ),
            (
                Duration::from_secs(5),
                true,
                4.0,
                Duration::from_millis(500)
            )
        );
        assert!(d.validate().is_ok());
        let c: HealthConfig =
            serde_json::from_str(r#"{"suspect_factor": 6, "suspect_floor": "2s"}"#).unwrap();
        assert_eq!(
            (c.suspect_factor, c.suspect_floor),
            (6.0, Duration::from_secs(2))
        );
        assert!(serde_json::from_str::<HealthConfig>(r#"{"suspect": 1}"#).is_err());
        for (bad, field) in [
            (
                HealthConfig {
                    suspect_factor: 0.5,
                    ..d
                },
                "suspect_factor",
            ),
            (
                HealthConfig {
                    suspect_factor: f64::NAN,
                    ..d
                },
                "suspect_factor",
            ),
            (
                HealthConfig {
                    suspect_floor: Duration::ZERO,
                    ..d
                },
                "suspect_floor",
            ),
            (
                HealthConfig {
                    ewma_decay: Duration::ZERO,
                    ..d
                },
                "ewma_decay",
            ),
        ] {
            assert_eq!(bad.validate().unwrap_err().field(), field);
        }
    }
}
