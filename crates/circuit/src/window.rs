//! Sliding windows of call outcomes for the windowed trip policies.
//!
//! Failures are counted in thousandths ("milli-failures") so that per-kind weights
//! stay exact integers.

use std::time::Duration;

use tokio::time::Instant;

use crate::config::{CircuitConfig, Window};

/// One failure of weight 1.0, in milli-failures.
pub(crate) const ONE: u64 = 1000;

/// What a window holds now.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) calls: u64,
    pub(crate) failures: u64,
    pub(crate) slow: u64,
}

/// The outcomes of the last `n` calls.
#[derive(Debug)]
pub(crate) struct CallWindow {
    /// Per call: milli-failures in the low 31 bits, "slow" in the top bit.
    ring: Box<[u32]>,
    next: usize,
    filled: usize,
    failures: u64,
    slow: u64,
}

const SLOW_BIT: u32 = 1 << 31;

impl CallWindow {
    pub(crate) fn new(n: u32) -> Self {
        CallWindow {
            ring: vec![0; n.max(1) as usize].into_boxed_slice(),
            next: 0,
            filled: 0,
            failures: 0,
            slow: 0,
        }
    }

    fn record(&mut self, failure: u32, slow: bool) {
        let old = self.ring[self.next];
        if self.filled == self.ring.len() {
            self.failures -= u64::from(old & !SLOW_BIT);
            self.slow -= u64::from(old >> 31);
        } else {
            self.filled += 1;
        }
        let failure = failure.min(!SLOW_BIT);
        self.ring[self.next] = failure | if slow { SLOW_BIT } else { 0 };
        self.failures += u64::from(failure);
        self.slow += u64::from(slow);
        self.next = (self.next + 1) % self.ring.len();
    }

    fn totals(&self) -> Totals {
        Totals {
            calls: self.filled as u64,
            failures: self.failures,
            slow: self.slow,
        }
    }

    fn clear(&mut self) {
        self.ring.fill(0);
        self.next = 0;
        self.filled = 0;
        self.failures = 0;
        self.slow = 0;
    }
}

const BUCKETS: u64 = 10;
const EMPTY: u64 = u64::MAX;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tick: u64,
    calls: u64,
    failures: u64,
    slow: u64,
}

const EMPTY_BUCKET: Bucket = Bucket {
    tick: EMPTY,
    calls: 0,
    failures: 0,
    slow: 0,
};

/// The outcomes of the last period, in ten buckets.
#[derive(Debug)]
pub(crate) struct TimeWindow {
    base: Instant,
    width_ns: u64,
    buckets: [Bucket; BUCKETS as usize],
}

impl TimeWindow {
    pub(crate) fn new(window: Duration, base: Instant) -> Self {
        let width_ns = (window.as_nanos() / u128::from(BUCKETS)).max(1);
        TimeWindow {
            base,
            width_ns: u64::try_from(width_ns).unwrap_or(u64::MAX),
            buckets: [EMPTY_BUCKET; BUCKETS as usize],
        }
    }

    fn tick(&self, now: Instant) -> u64 {
        let ns = now.saturating_duration_since(self.base).as_nanos();
        u64::try_from(ns / u128::from(self.width_ns)).unwrap_or(EMPTY - 1)
    }

    fn record(&mut self, now: Instant, failure: u32, slow: bool) {
        let tick = self.tick(now);
        let b = &mut self.buckets[(tick % BUCKETS) as usize];
        if b.tick != tick {
            *b = Bucket {
                tick,
                ..EMPTY_BUCKET
            };
        }
        b.calls += 1;
        b.failures += u64::from(failure);
        b.slow += u64::from(slow);
    }

    fn totals(&self, now: Instant) -> Totals {
        let tick = self.tick(now);
        let mut t = Totals::default();
        for b in &self.buckets {
            if b.tick != EMPTY && b.tick <= tick && tick - b.tick < BUCKETS {
                t.calls += b.calls;
                t.failures += b.failures;
                t.slow += b.slow;
            }
        }
        t
    }

    fn clear(&mut self) {
        self.buckets = [EMPTY_BUCKET; BUCKETS as usize];
    }
}

#[derive(Debug)]
enum AnyWindow {
    Calls(CallWindow),
    Time(Box<TimeWindow>),
}

impl AnyWindow {
    fn new(window: Window, base: Instant) -> Self {
        match window {
            Window::Calls(n) => AnyWindow::Calls(CallWindow::new(n)),
            Window::Time(d) => AnyWindow::Time(Box::new(TimeWindow::new(d, base))),
        }
    }

    fn record(&mut self, now: Instant, failure: u32, slow: bool) {
        match self {
            AnyWindow::Calls(w) => w.record(failure, slow),
            AnyWindow::Time(w) => w.record(now, failure, slow),
        }
    }

    fn totals(&self, now: Instant) -> Totals {
        match self {
            AnyWindow::Calls(w) => w.totals(),
            AnyWindow::Time(w) => w.totals(now),
        }
    }

    fn clear(&mut self) {
        match self {
            AnyWindow::Calls(w) => w.clear(),
            AnyWindow::Time(w) => w.clear(),
        }
    }
}

#[derive(Debug)]
struct RatePolicy {
    window: AnyWindow,
    /// The tripping rate in parts per million.
    rate_ppm: u64,
    min_calls: u64,
}

impl RatePolicy {
    /// Whether `part / whole` has reached the rate, with at least `min_calls` calls.
    fn reached(&self, part: u64, whole: u64, calls: u64) -> bool {
        // In integers: part * 1e6 >= rate_ppm * whole.
        calls >= self.min_calls
            && whole > 0
            && u128::from(part) * 1_000_000 >= u128::from(self.rate_ppm) * u128::from(whole)
    }
}

/// Every windowed policy of one breaker.
#[derive(Debug)]
pub(crate) struct Windows {
    count: Option<(TimeWindow, u64)>,
    failure_rate: Option<RatePolicy>,
    slow_calls: Option<RatePolicy>,
}

fn ppm(rate: f64) -> u64 {
    (rate * 1e6).round() as u64
}

impl Windows {
    /// The windows the config asks for, or `None` if it uses none.
    pub(crate) fn from_config(config: &CircuitConfig, base: Instant) -> Option<Windows> {
        let w = Windows {
            count: config
                .failures_in_window
                .map(|p| (TimeWindow::new(p.window, base), u64::from(p.failures) * ONE)),
            failure_rate: config.failure_rate.map(|p| RatePolicy {
                window: AnyWindow::new(p.window, base),
                rate_ppm: ppm(p.rate),
                min_calls: u64::from(p.min_calls),
            }),
            slow_calls: config.slow_calls.map(|p| RatePolicy {
                window: AnyWindow::new(p.window, base),
                rate_ppm: ppm(p.rate),
                min_calls: u64::from(p.min_calls),
            }),
        };
        (w.count.is_some() || w.failure_rate.is_some() || w.slow_calls.is_some()).then_some(w)
    }

    /// Records one call (`failure` in milli-failures, 0 for a success) and returns the
    /// name of the first policy that now says "open".
    pub(crate) fn record(
        &mut self,
        now: Instant,
        failure: u32,
        slow: bool,
    ) -> Option<&'static str> {
        let mut tripped = None;
        if let Some((w, limit)) = &mut self.count {
            w.record(now, failure, slow);
            if failure > 0 && w.totals(now).failures >= *limit {
                tripped = Some("failures_in_window");
            }
        }
        if let Some(p) = &mut self.failure_rate {
            p.window.record(now, failure, slow);
            let t = p.window.totals(now);
            if tripped.is_none() && p.reached(t.failures, t.calls * ONE, t.calls) {
                tripped = Some("failure_rate");
            }
        }
        if let Some(p) = &mut self.slow_calls {
            p.window.record(now, failure, slow);
            let t = p.window.totals(now);
            if tripped.is_none() && p.reached(t.slow, t.calls, t.calls) {
                tripped = Some("slow_calls");
            }
        }
        tripped
    }

    pub(crate) fn clear(&mut self) {
        if let Some((w, _)) = &mut self.count {
            w.clear();
        }
        if let Some(p) = &mut self.failure_rate {
            p.window.clear();
        }
        if let Some(p) = &mut self.slow_calls {
            p.window.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_window_evicts_the_oldest() {
        let mut w = CallWindow::new(3);
        w.record(1000, false);
        w.record(0, true);
        w.record(500, false);
        assert_eq!(
            w.totals(),
            Totals {
                calls: 3,
                failures: 1500,
                slow: 1
            }
        );
        w.record(0, false); // evicts the first failure
        assert_eq!(
            w.totals(),
            Totals {
                calls: 3,
                failures: 500,
                slow: 1
            }
        );
        w.record(0, false); // evicts the slow success
        assert_eq!(w.totals().slow, 0);
        w.clear();
        assert_eq!(w.totals(), Totals::default());
    }

    #[tokio::test(start_paused = true)]
    async fn time_window_forgets_old_buckets() {
        let base = Instant::now();
        let mut w = TimeWindow::new(Duration::from_secs(10), base);
        w.record(base, 1000, false);
        w.record(base + Duration::from_secs(5), 1000, true);
        assert_eq!(w.totals(base + Duration::from_secs(9)).failures, 2000);
        // At 10 s the first bucket (0..1 s) has left the window.
        let t = w.totals(base + Duration::from_secs(10));
        assert_eq!((t.calls, t.failures, t.slow), (1, 1000, 1));
        assert_eq!(w.totals(base + Duration::from_secs(16)).calls, 0);
        // A bucket slot reused by a later tick starts from zero.
        w.record(base + Duration::from_secs(20), 0, false);
        assert_eq!(w.totals(base + Duration::from_secs(20)).calls, 1);
    }

    #[test]
    fn rate_needs_min_calls() {
        let p = RatePolicy {
            window: AnyWindow::Calls(CallWindow::new(10)),
            rate_ppm: 500_000,
            min_calls: 4,
        };
        assert!(
            !p.reached(3, 3, 3),
            "3 of 3 failed, but fewer than min calls"
        );
        assert!(p.reached(2, 4, 4));
        assert!(!p.reached(1, 4, 4));
        assert!(p.reached(2000, 4000, 4), "milli-failures");
    }
}
