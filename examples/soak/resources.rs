//! What the process holds: heap bytes in use (a counting global allocator), tokio
//! tasks alive, open file descriptors. Sampled every second; judged flat when the
//! last third of the run after warm-up is not well above the first third, and the
//! level once the load has drained is not either.

use std::alloc::System;
use std::time::Duration;

use serde::Serialize;
use stats_alloc::{INSTRUMENTED_SYSTEM, StatsAlloc};

/// The global allocator: the system's, counting what it hands out and takes back.
#[global_allocator]
static ALLOC: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Heap bytes allocated and not yet freed. (`stats_alloc` already moves the size
/// change of a `realloc` into these two sums; its `bytes_reallocated` is the same
/// change again, not to be added.)
fn heap_in_use() -> u64 {
    let s = ALLOC.stats();
    s.bytes_allocated.saturating_sub(s.bytes_deallocated) as u64
}

/// One sample.
#[derive(Debug, Clone, Copy, Serialize)]
pub(crate) struct Sample {
    /// Seconds since the load started.
    pub(crate) t: f64,
    pub(crate) heap_bytes: u64,
    pub(crate) tasks: u64,
    pub(crate) fds: u64,
}

/// Now.
pub(crate) fn sample(t: Duration) -> Sample {
    let fds = std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count() as u64)
        .unwrap_or(0);
    Sample {
        t: t.as_secs_f64(),
        heap_bytes: heap_in_use(),
        tasks: tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as u64,
        fds,
    }
}

/// One resource's figures.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Figures {
    /// The first sample after warm-up.
    pub(crate) start: u64,
    pub(crate) peak: u64,
    /// Once the load stopped and every request ended.
    pub(crate) end: u64,
    /// Median of the first and of the last third after warm-up.
    pub(crate) first_third_median: u64,
    pub(crate) last_third_median: u64,
    /// Least-squares slope over the samples after warm-up, per minute.
    pub(crate) slope_per_minute: f64,
    /// The allowance: `1.5 × first third + slack`.
    pub(crate) limit: u64,
    pub(crate) flat: bool,
}

fn median(mut v: Vec<u64>) -> u64 {
    if v.is_empty() {
        return 0;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

/// Judges one series (after warm-up) and the drained end value.
pub(crate) fn judge(series: &[(f64, u64)], end: u64, slack: u64) -> Figures {
    let n = series.len();
    let third = (n / 3).max(1).min(n);
    let first = median(series[..third].iter().map(|s| s.1).collect());
    let last = median(series[n - third..].iter().map(|s| s.1).collect());
    let slope = {
        let nf = n as f64;
        let (sx, sy) = series
            .iter()
            .fold((0.0, 0.0), |(a, b), &(x, y)| (a + x, b + y as f64));
        let (mx, my) = (sx / nf, sy / nf);
        let (num, den) = series.iter().fold((0.0, 0.0), |(a, b), &(x, y)| {
            (a + (x - mx) * (y as f64 - my), b + (x - mx) * (x - mx))
        });
        if den > 0.0 { num / den * 60.0 } else { 0.0 }
    };
    let limit = first + first / 2 + slack;
    Figures {
        start: series.first().map_or(0, |s| s.1),
        peak: series.iter().map(|s| s.1).max().unwrap_or(0).max(end),
        end,
        first_third_median: first,
        last_third_median: last,
        slope_per_minute: (slope * 10.0).round() / 10.0,
        limit,
        flat: n < 3 || (last <= limit && end <= limit),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_steady_series_is_flat_and_a_leak_is_not() {
        let steady: Vec<(f64, u64)> = (0..60).map(|i| (i as f64, 100 + (i % 7))).collect();
        let f = judge(&steady, 101, 10);
        assert!(f.flat, "{f:?}");
        let leak: Vec<(f64, u64)> = (0..60).map(|i| (i as f64, 100 + 10 * i)).collect();
        let f = judge(&leak, 700, 10);
        assert!(!f.flat, "{f:?}");
        assert!(f.slope_per_minute > 500.0, "{f:?}");
        // Back to the start once drained, but a climb during the run: not flat.
        let f = judge(&leak, 100, 10);
        assert!(!f.flat);
    }
}
