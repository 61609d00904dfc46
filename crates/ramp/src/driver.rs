//! The ramp's driver: one task per ramp that watches the circuit, measures the
//! baseline, moves through the steps and rolls back.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use std::time::Duration;
use tokio::sync::watch;

use tokio::time::{Instant, sleep, sleep_until};
use tower_failover_core::health::FULL_SHARE_PPM;
use tower_failover_core::{CircuitState, HealthEventKind};

use crate::state::{Core, Counts};

/// How a ramp ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    /// It reached the end of its schedule.
    Completed,
    /// Its error rate was too high: it re-opened the circuit.
    RolledBack,
    /// The circuit opened under it (the breaker tripped).
    Tripped,
    /// An operator forced the circuit closed: the ramp stopped at full share.
    Overridden,
    /// Another replica holds the fleet's ramp lease: this one follows its share.
    Following,
}

/// Whether this replica drives the ramp. With a shared store (Redis), one replica of
/// the fleet holds the `"ramp"` lease and the others follow the share it publishes;
/// the in-process store always grants it.
fn leads(core: &Core) -> bool {
    let total: Duration = core.steps.iter().map(|s| s.hold).sum();
    let ttl = total + core.config.check_interval * 4 + Duration::from_secs(5);
    core.health.store().try_lease(core.health.id(), "ramp", ttl)
}

/// Follows the fleet's ramp, driven by another replica, until it ends (no ramp step
/// published any more) or the circuit leaves closed.
async fn follow(core: &Core, watch: &mut watch::Receiver<CircuitState>) -> End {
    tracing::info!(provider = %core.health.id(), "recovery ramp driven by another replica: following its share");
    loop {
        if core.health.ramp_step().is_none() {
            return End::Completed;
        }
        tokio::select! {
            () = sleep(core.config.check_interval) => {}
            changed = watch.changed() => {
                if changed.is_err() || *watch.borrow_and_update() != CircuitState::Closed {
                    return End::Tripped;
                }
            }
        }
    }
}

/// The baseline error rate: an average over windows in which the circuit stayed
/// closed and no ramp ran. A window is believed only once the next one has also
/// ended closed, so the failures that led up to a trip never enter it.
#[derive(Debug, Default)]
struct Baseline {
    rate: Option<f64>,
    held: Option<Counts>,
}

impl Baseline {
    fn window_closed(&mut self, window: Counts, min_sample: u64) {
        if let Some(prev) = self.held.take()
            && prev.counted >= min_sample
        {
            let r = prev.failures as f64 / prev.counted as f64;
            self.rate = Some(match self.rate {
                None => r,
                Some(old) => 0.7 * old + 0.3 * r,
            });
        }
        self.held = Some(window);
    }

    fn discard(&mut self) {
        self.held = None;
    }
}

pub(crate) async fn drive(core: Arc<Core>) {
    let health = core.health.clone();
    let mut watch = health.watch_circuit();
    let mut seen = *watch.borrow_and_update();
    let mut seen_trips = health.trips();
    // Started while the circuit is open: ramp when it closes.
    let mut pending = seen != CircuitState::Closed;
    let mut baseline = Baseline::default();

    loop {
        if pending && seen == CircuitState::Closed {
            pending = false;
            baseline.discard();
            if health.forced() == Some(CircuitState::Closed) {
                continue;
            }
            let end = match ramp(&core, &mut watch).await {
                End::Following => follow(&core, &mut watch).await,
                end => end,
            };
            seen = *watch.borrow_and_update();
            seen_trips = health.trips();
            pending = matches!(end, End::RolledBack | End::Tripped);
            continue;
        }

        // Idle: measure the baseline while the circuit is closed.
        let start = core.begin_window(false);
        let window_end = Instant::now() + core.config.baseline_window;
        tokio::select! {
            changed = watch.changed() => {
                if changed.is_err() {
                    return;
                }
                let state = *watch.borrow_and_update();
                let trips = health.trips();
                // A round trip through open may be seen only as a new trip count.
                if state != CircuitState::Closed
                    || seen != CircuitState::Closed
                    || trips != seen_trips
                {
                    pending = true;
                    baseline.discard();
                }
                seen = state;
                seen_trips = trips;
            }
            () = sleep_until(window_end) => {
                if seen == CircuitState::Closed {
                    baseline.window_closed(core.counts().since(start), core.config.min_sample);
                    core.set_baseline(baseline.rate);
                }
            }
        }
    }
}

async fn ramp(core: &Core, watch: &mut watch::Receiver<CircuitState>) -> End {
    let health = &core.health;
    let config = &core.config;
    let baseline = core.baseline();
    let threshold = config.threshold(baseline);
    tracing::info!(
        provider = %health.id(),
        steps = core.steps.len(),
        baseline_error_rate = baseline,
        threshold,
        "recovery ramp started"
    );
    for (i, step) in core.steps.iter().enumerate() {
        if !leads(core) {
            return End::Following;
        }
        let index = i as u32;
        let start = core.begin_window(true);
        health.set_ramp(Some(index), step.ppm);
        health.emit(HealthEventKind::RampStep {
            step: index,
            share: step.share,
        });
        tracing::info!(provider = %health.id(), step = index, share = step.share, "ramp step");
        let hold_until = Instant::now() + step.hold;
        // Past this, too little traffic came to verify the step: it advances on
        // what it saw, if nothing failed.
        let quiet_until = hold_until + config.quiet_wait;
        loop {
            let c = core.counts().since(start);
            if c.counted >= config.min_sample && c.failures as f64 > threshold * c.counted as f64 {
                roll_back(core, step.share, c, threshold);
                return End::RolledBack;
            }
            let now = Instant::now();
            if now >= hold_until
                && (c.counted >= config.min_requests || (now >= quiet_until && c.failures == 0))
            {
                if c.counted < config.min_requests {
                    tracing::info!(
                        provider = %health.id(),
                        step = index,
                        requests = c.counted,
                        "ramp step advances on low traffic: no failure among its requests"
                    );
                }
                break;
            }
            if !leads(core) {
                return End::Following;
            }
            let wake = if now < hold_until {
                hold_until
            } else {
                now + config.check_interval
            };
            tokio::select! {
                () = sleep_until(wake) => {}
                () = core.notify.notified() => {}
                changed = watch.changed() => {
                    if changed.is_err() {
                        finish(core);
                        return End::Overridden;
                    }
                    let state = *watch.borrow_and_update();
                    if state != CircuitState::Closed {
                        tripped(core, step.share);
                        return End::Tripped;
                    }
                    if health.forced() == Some(CircuitState::Closed) {
                        tracing::info!(provider = %health.id(), "circuit forced closed: ramp stopped at full share");
                        finish(core);
                        return End::Overridden;
                    }
                }
            }
        }
    }
    finish(core);
    core.flaps.store(0, Ordering::Relaxed);
    health.emit(HealthEventKind::RampCompleted);
    tracing::info!(provider = %health.id(), "recovery ramp completed");
    End::Completed
}

/// Back to no ramp (full share) and baseline counting.
fn finish(core: &Core) {
    core.health.set_ramp(None, FULL_SHARE_PPM);
    core.begin_window(false);
}

/// The step failed its check: re-open the circuit with a longer cooldown.
fn roll_back(core: &Core, from_share: f64, c: Counts, threshold: f64) {
    let health = &core.health;
    let flaps = core.flaps.fetch_add(1, Ordering::Relaxed) + 1;
    // One more trip than the breaker counted, and never fewer than the rollbacks
    // in a row plus the outage that started them: the cooldown grows with flapping
    // even if the breaker forgets its trips when it closes.
    let trips = (health.trips() + 1).max(flaps + 1);
    health.set_trips(trips);
    let cooldown = core.config.cooldown_for(trips);
    let until = Instant::now() + cooldown;
    core.readmit_at.set(Some(until));
    health.emit(HealthEventKind::RampRolledBack { from_share });
    tracing::warn!(
        provider = %health.id(),
        share = from_share,
        requests = c.counted,
        failures = c.failures,
        threshold,
        cooldown_ms = cooldown.as_millis() as u64,
        "ramp rolled back: circuit re-opened"
    );
    let state = health.breaker_state();
    if !health.transition(state, CircuitState::Open, Some(until)) {
        // The breaker moved at the same moment; whatever it did, open it.
        let state = health.breaker_state();
        health.transition(state, CircuitState::Open, Some(until));
    }
    finish(core);
}

/// The breaker tripped during a ramp: that is a flap too. Make sure the cooldown
/// is at least the flapping one.
fn tripped(core: &Core, from_share: f64) {
    let health = &core.health;
    let flaps = core.flaps.fetch_add(1, Ordering::Relaxed) + 1;
    let trips = health.trips().max(flaps + 1);
    if trips > health.trips() {
        health.set_trips(trips);
    }
    let until = Instant::now() + core.config.cooldown_for(trips);
    let until = health.open_until().map_or(until, |u| u.max(until));
    core.readmit_at.set(Some(until));
    if health.breaker_state() == CircuitState::Open && health.open_until() < Some(until) {
        // Open to open: only extends the deadline.
        health.transition(CircuitState::Open, CircuitState::Open, Some(until));
    }
    health.emit(HealthEventKind::RampRolledBack { from_share });
    tracing::warn!(provider = %health.id(), share = from_share, "circuit opened during the ramp: rolled back");
    finish(core);
}
