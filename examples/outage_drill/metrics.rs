//! What the drill measures: one record per caller request, open-circuit traffic from
//! the simulators' own counters, and the recovery ramp's steps.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::time::Instant;
use tower_failover_core::{CircuitState, Health, HealthEventKind};
use tower_failover_sim::SimHandle;

/// One caller request, as the caller saw it.
#[derive(Debug, Clone)]
pub(crate) struct Record {
    /// When it was sent, since the drill started.
    pub(crate) at: Duration,
    /// When the caller had its answer (or error), since the drill started.
    pub(crate) done: Duration,
    pub(crate) phase: usize,
    pub(crate) latency: Duration,
    /// Which provider answered (index into `PROVIDERS`), when one did.
    pub(crate) served: Option<usize>,
    /// Why the caller got no good answer, when it did not.
    pub(crate) error: Option<String>,
    /// Whether the request asked for a streamed answer.
    pub(crate) stream: bool,
    /// Whether anything the caller saw (headers, body, error text) held the
    /// provider's rejection text or key material (see `leak::Needles`).
    pub(crate) leaked: bool,
}

/// A step of a recovery ramp, as the drill observed it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StepRecord {
    pub(crate) provider: usize,
    /// The share the ramp announced for this step.
    pub(crate) target: f64,
    /// Caller requests sent during the step.
    pub(crate) requests: u64,
    /// Attempts that reached the provider's stack and were not shed by its ramp.
    pub(crate) admitted: u64,
}

#[derive(Debug, Default)]
struct RampLog {
    steps: Vec<StepRecord>,
    /// Per provider, the index in `steps` of the step in force.
    current: [Option<usize>; 3],
    rollbacks: u64,
    completed: u64,
}

/// Everything recorded during a run. Shared by the load generator, the sampler, the
/// live view and the report.
#[derive(Debug)]
pub(crate) struct Recorder {
    pub(crate) start: Instant,
    records: Mutex<Vec<Record>>,
    phase: AtomicUsize,
    pub(crate) in_flight: AtomicU64,
    pub(crate) sent: AtomicU64,
    /// Per phase: ticks skipped because the load generator was at its in-flight limit.
    skipped: Mutex<Vec<u64>>,
    /// Per phase and provider: requests a sim received while its circuit was open.
    open_hits: Mutex<Vec<[u64; 3]>>,
    ramp: Mutex<RampLog>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Recorder {
    pub(crate) fn new(phases: usize) -> Arc<Recorder> {
        Arc::new(Recorder {
            start: Instant::now(),
            records: Mutex::new(Vec::with_capacity(32 * 1024)),
            phase: AtomicUsize::new(0),
            in_flight: AtomicU64::new(0),
            sent: AtomicU64::new(0),
            skipped: Mutex::new(vec![0; phases]),
            open_hits: Mutex::new(vec![[0; 3]; phases]),
            ramp: Mutex::new(RampLog::default()),
        })
    }

    pub(crate) fn now(&self) -> Duration {
        self.start.elapsed()
    }

    pub(crate) fn phase(&self) -> usize {
        self.phase.load(Ordering::Relaxed)
    }

    pub(crate) fn set_phase(&self, phase: usize) {
        self.phase.store(phase, Ordering::Relaxed);
    }

    pub(crate) fn push(&self, record: Record) {
        lock(&self.records).push(record);
    }

    pub(crate) fn skip(&self) {
        let p = self.phase();
        if let Some(n) = lock(&self.skipped).get_mut(p) {
            *n += 1;
        }
    }

    pub(crate) fn skipped(&self) -> Vec<u64> {
        lock(&self.skipped).clone()
    }

    /// Records answered in `[from, to)` (drill time).
    pub(crate) fn answered_in(&self, from: Duration, to: Duration) -> Vec<Record> {
        lock(&self.records)
            .iter()
            .filter(|r| r.done >= from && r.done < to)
            .cloned()
            .collect()
    }

    pub(crate) fn records(&self) -> Vec<Record> {
        lock(&self.records).clone()
    }

    pub(crate) fn total_errors(&self) -> u64 {
        lock(&self.records)
            .iter()
            .filter(|r| r.error.is_some())
            .count() as u64
            + lock(&self.skipped).iter().sum::<u64>()
    }

    pub(crate) fn open_hits(&self) -> Vec<[u64; 3]> {
        lock(&self.open_hits).clone()
    }

    fn add_open_hits(&self, provider: usize, n: u64) {
        let p = self.phase();
        if let Some(row) = lock(&self.open_hits).get_mut(p) {
            row[provider] += n;
        }
    }

    // ---- ramp ------------------------------------------------------------------

    pub(crate) fn ramp_event(&self, provider: usize, kind: &HealthEventKind) {
        let mut log = lock(&self.ramp);
        match kind {
            HealthEventKind::RampStep { share, .. } => {
                log.steps.push(StepRecord {
                    provider,
                    target: *share,
                    ..StepRecord::default()
                });
                log.current[provider] = Some(log.steps.len() - 1);
            }
            HealthEventKind::RampRolledBack { .. } => {
                log.rollbacks += 1;
                log.current[provider] = None;
            }
            HealthEventKind::RampCompleted => {
                log.completed += 1;
                log.current[provider] = None;
            }
            _ => {}
        }
    }

    /// The ramp step an attempt at `provider` now counts towards, if any.
    pub(crate) fn ramp_step_of(&self, provider: usize) -> Option<usize> {
        lock(&self.ramp).current[provider]
    }

    /// Counts a caller request towards every ramp step in force.
    pub(crate) fn ramp_request(&self) {
        let mut log = lock(&self.ramp);
        for i in 0..log.current.len() {
            if let Some(step) = log.current[i] {
                log.steps[step].requests += 1;
            }
        }
    }

    pub(crate) fn ramp_admitted(&self, step: usize) {
        if let Some(s) = lock(&self.ramp).steps.get_mut(step) {
            s.admitted += 1;
        }
    }

    pub(crate) fn ramp_steps(&self) -> (Vec<StepRecord>, u64, u64) {
        let log = lock(&self.ramp);
        (log.steps.clone(), log.rollbacks, log.completed)
    }
}

/// Completion requests a simulator received (chat completions and Anthropic
/// messages): the callers' traffic. Active probes (`GET /v1/models`) may reach an
/// open provider by design and are not counted.
fn completions(sim: &SimHandle) -> u64 {
    let c = sim.counters();
    c.chat_completions + c.messages
}

/// Requests that reach a provider whose circuit is open, counted from the outside:
/// every 5 ms, the simulator's own count of completion requests is compared with the circuit
/// state the stack published in the provider's [`Health`]. A request counts when the
/// sim received it between two samples that both saw the circuit open, with no
/// change of state in between, the circuit having been open for at least `GRACE`
/// (requests already on the wire when it opened are not its fault) and its cooldown
/// not yet over (after the cooldown, a half-open probe may legitimately go).
pub(crate) async fn sample_open_circuits(
    recorder: Arc<Recorder>,
    sims: Vec<SimHandle>,
    healths: Vec<Health>,
) {
    const GRACE: Duration = Duration::from_millis(100);
    struct Track {
        received: u64,
        open_since: Option<Instant>,
        watch: tokio::sync::watch::Receiver<CircuitState>,
    }
    let mut tracks: Vec<Track> = sims
        .iter()
        .zip(&healths)
        .map(|(s, h)| Track {
            received: completions(s),
            open_since: None,
            watch: h.watch_circuit(),
        })
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(5));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for (i, ((sim, health), t)) in sims.iter().zip(&healths).zip(&mut tracks).enumerate() {
            let received = completions(sim);
            let delta = received.saturating_sub(t.received);
            t.received = received;
            let changed = t.watch.has_changed().unwrap_or(false);
            if changed {
                t.watch.borrow_and_update();
            }
            let open = health.circuit() == CircuitState::Open;
            let cooling = health.open_until().is_some_and(|u| u > now);
            let counted = open
                && cooling
                && !changed
                && t.open_since.is_some_and(|s| now.duration_since(s) >= GRACE);
            if counted && delta > 0 {
                recorder.add_open_hits(i, delta);
            }
            t.open_since = match (open, changed, t.open_since) {
                (true, false, Some(s)) => Some(s),
                (true, _, _) => Some(now),
                (false, _, _) => None,
            };
        }
    }
}

/// Nearest-rank percentile of `sorted` (milliseconds), 0 when empty.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = (q * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Latencies in milliseconds, sorted.
pub(crate) fn sorted_ms<'a>(records: impl IntoIterator<Item = &'a Record>) -> Vec<f64> {
    let mut v: Vec<f64> = records
        .into_iter()
        .map(|r| r.latency.as_secs_f64() * 1e3)
        .collect();
    v.sort_by(f64::total_cmp);
    v
}
