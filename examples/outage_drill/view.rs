//! The live view: redrawn once a second on a terminal, one plain line a second
//! otherwise.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::time::Instant;
use tower_failover_core::{CircuitState, Health};

use crate::metrics::{Recorder, percentile, sorted_ms};
use crate::script::PROVIDERS;

pub(crate) struct View {
    pub(crate) recorder: Arc<Recorder>,
    pub(crate) healths: Vec<Health>,
    /// Phase names and their start times (drill time).
    pub(crate) phases: Vec<(String, Duration)>,
    pub(crate) total: Duration,
    pub(crate) terminal: bool,
}

fn circuit(h: &Health) -> &'static str {
    match h.circuit() {
        CircuitState::Closed => "closed",
        CircuitState::Open => "OPEN",
        CircuitState::HalfOpen => "half-open",
    }
}

fn ramp(h: &Health) -> String {
    match h.ramp_step() {
        Some(step) => format!("step {step} ({:.0}%)", h.ramp_share() * 100.0),
        None => "-".to_owned(),
    }
}

fn rate_limit(h: &Health, now: Instant) -> String {
    match h.quota().remaining(now) {
        Some(left) => format!("429 {:.1}s", left.as_secs_f64()),
        None => "-".to_owned(),
    }
}

impl View {
    /// One frame: the last second of answers and the providers' state now.
    pub(crate) fn frame(&self) -> String {
        let now = self.recorder.now();
        let inst = Instant::now();
        let last = self
            .recorder
            .answered_in(now.saturating_sub(Duration::from_secs(1)), now);
        let phase = self
            .phases
            .iter()
            .rev()
            .find(|(_, start)| *start <= now)
            .map_or("", |(name, _)| name.as_str());
        let errors_now = last.iter().filter(|r| r.error.is_some()).count();
        let errors_total = self.recorder.total_errors();
        let sent = self.recorder.sent.load(Ordering::Relaxed);
        let in_flight = self.recorder.in_flight.load(Ordering::Relaxed);
        let mut out = String::new();
        if self.terminal {
            let _ = writeln!(
                out,
                "tower-failover outage drill   t = {:>5.1}s / {:.0}s   phase: {phase}",
                now.as_secs_f64(),
                self.total.as_secs_f64()
            );
            let _ = writeln!(
                out,
                "requests {sent}   answered/s {}   in flight {in_flight}   caller errors {errors_total} (last second {errors_now})\n",
                last.len()
            );
            let _ = writeln!(
                out,
                "{:<10} {:>6}  {:<9}  {:<14}  {:>7}  {:>7}  rate limit",
                "provider", "share", "circuit", "ramp", "p50", "p99"
            );
            for (i, (name, h)) in PROVIDERS.iter().zip(&self.healths).enumerate() {
                let mine = sorted_ms(last.iter().filter(|r| r.served == Some(i)));
                let share = if last.is_empty() {
                    0.0
                } else {
                    mine.len() as f64 / last.len() as f64
                };
                let _ = writeln!(
                    out,
                    "{:<10} {:>5.1}%  {:<9}  {:<14}  {:>5.0}ms  {:>5.0}ms  {}",
                    name,
                    share * 100.0,
                    circuit(h),
                    ramp(h),
                    percentile(&mine, 0.5),
                    percentile(&mine, 0.99),
                    rate_limit(h, inst)
                );
            }
        } else {
            let _ = write!(
                out,
                "t={:>5.1}s phase={phase:?} answered/s={} in_flight={in_flight} errors={errors_total}",
                now.as_secs_f64(),
                last.len()
            );
            for (i, (name, h)) in PROVIDERS.iter().zip(&self.healths).enumerate() {
                let n = last.iter().filter(|r| r.served == Some(i)).count();
                let share = if last.is_empty() {
                    0.0
                } else {
                    n as f64 / last.len() as f64
                };
                let _ = write!(
                    out,
                    " | {name} {:.0}% {} ramp={} rl={}",
                    share * 100.0,
                    circuit(h),
                    ramp(h),
                    rate_limit(h, inst)
                );
            }
            out.push('\n');
        }
        out
    }

    pub(crate) async fn run(self) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let frame = self.frame();
            let mut stdout = std::io::stdout().lock();
            if self.terminal {
                // Clear the screen and draw from the top.
                let _ = write!(stdout, "\x1b[2J\x1b[H{frame}");
            } else {
                let _ = write!(stdout, "{frame}");
            }
            let _ = stdout.flush();
        }
    }
}
