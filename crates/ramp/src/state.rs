//! The state one ramp shares between its services, its driver and its probe task.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::Handle;
use tokio::sync::Notify;
use tokio::task::AbortHandle;
use tower_failover_core::health::FULL_SHARE_PPM;
use tower_failover_core::rng::entropy_seed;
use tower_failover_core::time::AtomicInstant;
use tower_failover_core::{CircuitState, Health, Outcome};

use crate::config::RampConfig;
use crate::probe::Prober;
use crate::schedule::{PpmStep, ppm_steps};

/// 2^64 divided by the golden ratio: the step of the admission sequence.
const WEYL: u64 = 0x9e37_79b9_7f4a_7c15;
/// The low bit of the epoch says whether a ramp step is running.
pub(crate) const RAMPING: u64 = 1;
const NO_BASELINE: u64 = u64::MAX;

/// What the services, the driver and the probe task share. The tasks hold it
/// through an `Arc` of their own; the services reach it through [`Shared`], whose
/// drop aborts the tasks.
pub(crate) struct Core {
    pub(crate) health: Health,
    pub(crate) config: RampConfig,
    pub(crate) steps: Vec<PpmStep>,
    /// The admission sequence (a Weyl sequence: low discrepancy, so the admitted
    /// count after `n` requests stays within a few requests of `n × share`).
    seq: AtomicU64,
    /// Which window outcomes are counted into; bumped at every step and baseline
    /// window, so a request that started in an earlier window is not counted.
    epoch: AtomicU64,
    /// Admitted requests with a counted outcome (monotonic).
    counted: AtomicU64,
    /// Failures among them (monotonic).
    failures: AtomicU64,
    /// Woken on a failure during a step, so a rollback does not wait for a tick.
    pub(crate) notify: Notify,
    /// A rolled-back provider is not re-admitted (even by a passing probe) before.
    pub(crate) readmit_at: AtomicInstant,
    /// Rollbacks since the last completed ramp.
    pub(crate) flaps: AtomicU32,
    /// f64 bits of the baseline error rate, or `NO_BASELINE`.
    baseline: AtomicU64,
}

impl fmt::Debug for Core {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Core")
            .field("provider", self.health.id())
            .finish_non_exhaustive()
    }
}

impl Core {
    pub(crate) fn new(health: Health, config: RampConfig) -> Core {
        let seed = config.seed.unwrap_or_else(entropy_seed);
        Core {
            steps: ppm_steps(&config.schedule),
            health,
            config,
            seq: AtomicU64::new(seed),
            epoch: AtomicU64::new(0),
            counted: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            notify: Notify::new(),
            readmit_at: AtomicInstant::new(),
            flaps: AtomicU32::new(0),
            baseline: AtomicU64::new(NO_BASELINE),
        }
    }

    /// Whether the next request is admitted. One atomic load when no ramp runs;
    /// during a ramp, two more loads and one atomic add.
    #[inline]
    pub(crate) fn admit(&self) -> bool {
        let ppm = self.health.ramp_share_ppm();
        if ppm >= FULL_SHARE_PPM || !self.config.shed {
            return true;
        }
        // While the circuit is not closed the breaker below decides: its half-open
        // trial requests must not be shed.
        if self.health.circuit() != CircuitState::Closed {
            return true;
        }
        let x = self
            .seq
            .fetch_add(WEYL, Ordering::Relaxed)
            .wrapping_add(WEYL);
        // x / 2^64 < share, in parts per million.
        ((u128::from(x) * u128::from(FULL_SHARE_PPM)) >> 64) < u128::from(ppm)
    }

    #[inline]
    pub(crate) fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Relaxed)
    }

    /// Counts an admitted request's outcome into the window it started in.
    /// A malformed answer ([`RejectKind::is_malformed`]) is a failure, as the
    /// circuit breaker counts it by default; rate limits and other rejections are
    /// not counted.
    ///
    /// [`RejectKind::is_malformed`]: tower_failover_core::RejectKind::is_malformed
    #[inline]
    pub(crate) fn record(&self, epoch: u64, outcome: &Outcome) {
        let failed = match outcome {
            Outcome::Success | Outcome::ClientError { .. } => false,
            Outcome::Failure { .. } => true,
            Outcome::Rejected { kind } if kind.is_malformed() => true,
            Outcome::RateLimited { .. } | Outcome::Rejected { .. } => return,
        };
        if self.epoch.load(Ordering::Relaxed) != epoch {
            return;
        }
        self.counted.fetch_add(1, Ordering::Relaxed);
        if failed {
            self.failures.fetch_add(1, Ordering::Relaxed);
            if epoch & RAMPING != 0 {
                self.notify.notify_one();
            }
        }
    }

    /// Starts a new counting window (a ramp step when `ramping`) and returns the
    /// counters at its start.
    pub(crate) fn begin_window(&self, ramping: bool) -> Counts {
        let cur = self.epoch.load(Ordering::Relaxed);
        let next = ((cur | RAMPING) + 1) | u64::from(ramping);
        self.epoch.store(next, Ordering::Relaxed);
        self.counts()
    }

    /// The monotonic counters now.
    pub(crate) fn counts(&self) -> Counts {
        // Failures first: a failure is counted after its request, so this order
        // never reads more failures than requests.
        let failures = self.failures.load(Ordering::Relaxed);
        let counted = self.counted.load(Ordering::Relaxed);
        Counts {
            counted: counted.max(failures),
            failures,
        }
    }

    pub(crate) fn set_baseline(&self, rate: Option<f64>) {
        let raw = rate.map_or(NO_BASELINE, f64::to_bits);
        self.baseline.store(raw, Ordering::Relaxed);
    }

    pub(crate) fn baseline(&self) -> Option<f64> {
        match self.baseline.load(Ordering::Relaxed) {
            NO_BASELINE => None,
            raw => Some(f64::from_bits(raw)),
        }
    }
}

/// Counted outcomes and failures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    pub(crate) counted: u64,
    pub(crate) failures: u64,
}

impl Counts {
    pub(crate) fn since(self, start: Counts) -> Counts {
        Counts {
            counted: self.counted.saturating_sub(start.counted),
            failures: self.failures.saturating_sub(start.failures),
        }
    }
}

#[derive(Default)]
struct Tasks {
    driver: Option<AbortHandle>,
    probe: Option<AbortHandle>,
    prober: Option<Prober>,
}

/// Owned by the layer and its services: starts the tasks once, aborts them on drop.
pub(crate) struct Shared {
    pub(crate) core: Arc<Core>,
    started: AtomicBool,
    tasks: Mutex<Tasks>,
}

impl Shared {
    pub(crate) fn new(core: Core) -> Shared {
        Shared {
            core: Arc::new(core),
            started: AtomicBool::new(false),
            tasks: Mutex::new(Tasks::default()),
        }
    }

    /// Starts the driver (and the probe task, if any) unless running. Needs a tokio
    /// runtime; without one, this is tried again on the next request.
    #[inline]
    pub(crate) fn ensure_started(&self) {
        if !self.started.load(Ordering::Acquire) {
            self.start();
        }
    }

    #[cold]
    fn start(&self) {
        let Ok(rt) = Handle::try_current() else {
            return;
        };
        let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        if tasks.driver.is_none() {
            let core = self.core.clone();
            tasks.driver = Some(rt.spawn(crate::driver::drive(core)).abort_handle());
        }
        if let Some(prober) = tasks.prober.take() {
            let core = self.core.clone();
            tasks.probe = Some(rt.spawn(crate::probe::run(core, prober)).abort_handle());
        }
        self.started.store(true, Ordering::Release);
    }

    /// Installs a prober (replacing any running probe task).
    pub(crate) fn set_prober(&self, prober: Prober) {
        {
            let mut tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(old) = tasks.probe.take() {
                old.abort();
            }
            tasks.prober = Some(prober);
        }
        if self.started.load(Ordering::Acquire) {
            self.start();
        }
    }

    pub(crate) fn has_prober(&self) -> bool {
        let tasks = self.tasks.lock().unwrap_or_else(PoisonError::into_inner);
        tasks.prober.is_some() || tasks.probe.is_some()
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let tasks = self.tasks.get_mut().unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = tasks.driver.take() {
            t.abort();
        }
        if let Some(t) = tasks.probe.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_failover_core::FailureKind;

    fn core_at(ppm: u32, seed: u64) -> Core {
        let health = Health::standalone("p", "m");
        health.set_ramp(Some(0), ppm);
        Core::new(health, RampConfig::default().seed(seed))
    }

    #[test]
    fn admission_is_exact_within_a_few_requests() {
        for ppm in [1_000, 50_000, 250_000, 333_333, 500_000, 750_000, 999_999] {
            for seed in [0, 1, 42, u64::MAX] {
                let core = core_at(ppm, seed);
                for n in [100u64, 1_000, 10_000] {
                    let admitted = (0..n).filter(|_| core.admit()).count() as f64;
                    // Counted from the start of a fresh core each round would be
                    // cleaner, but the sequence continues: compare per block.
                    let want = n as f64 * f64::from(ppm) / 1e6;
                    assert!(
                        (admitted - want).abs() <= 4.0,
                        "ppm {ppm} seed {seed} n {n}: {admitted} vs {want}"
                    );
                }
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_share_is_admitted_within_a_few_requests(
            ppm in 0u32..=FULL_SHARE_PPM,
            seed: u64,
            n in 1u64..5_000,
        ) {
            let core = core_at(ppm, seed);
            let admitted = (0..n).filter(|_| core.admit()).count() as f64;
            let want = n as f64 * f64::from(ppm) / 1e6;
            proptest::prop_assert!((admitted - want).abs() <= 4.0, "{} vs {}", admitted, want);
        }
    }

    #[test]
    fn full_share_and_open_circuits_admit_everything() {
        let core = core_at(FULL_SHARE_PPM, 1);
        assert!((0..1000).all(|_| core.admit()));
        let core = core_at(0, 1);
        assert!((0..1000).all(|_| !core.admit()));
        core.health
            .transition(CircuitState::Closed, CircuitState::Open, None);
        assert!(core.admit(), "the breaker decides while not closed");
        let health = Health::standalone("p", "m");
        health.set_ramp(Some(0), 0);
        let core = Core::new(health, RampConfig::default().shed(false));
        assert!(core.admit(), "shedding turned off");
    }

    #[test]
    fn outcomes_count_only_in_their_window() {
        let core = core_at(FULL_SHARE_PPM, 1);
        let start = core.begin_window(true);
        let e = core.epoch();
        assert_eq!(e & RAMPING, 1);
        core.record(e, &Outcome::Success);
        core.record(e, &Outcome::failure(FailureKind::Timeout));
        core.record(e, &Outcome::RateLimited { retry_after: None });
        core.record(e, &Outcome::rejected(tower_failover_core::RejectKind::Shed));
        // A content rejection is neutral; a malformed answer is the provider's fault.
        core.record(
            e,
            &Outcome::rejected(tower_failover_core::RejectKind::Truncated),
        );
        core.record(
            e,
            &Outcome::rejected(tower_failover_core::RejectKind::InvalidJson),
        );
        assert_eq!(
            core.counts().since(start),
            Counts {
                counted: 3,
                failures: 2
            }
        );
        let next = core.begin_window(false);
        assert_eq!(core.epoch() & RAMPING, 0);
        core.record(e, &Outcome::Success);
        assert_eq!(core.counts().since(next), Counts::default());
    }
}
