//! Durations in scripts and rate-limit headers.
//!
//! Scripts accept `"300ms"`, `"1.5s"`, `"2m"`, `"1h"`, `"250us"`, or a bare number
//! of seconds (`30`, `0.25`). Go-style formatting (`"6m0s"`, `"1s"`, `"20ms"`) is what
//! OpenAI puts in `x-ratelimit-reset-*` headers.

use std::fmt::Write as _;
use std::time::Duration;

/// Parsing is the project's one duration parser (tower-failover-core); scripts use
/// its serde helpers too.
pub use tower_failover_core::parse_duration;

/// Format like Go's `time.Duration.String`, rounded to milliseconds: `"6m0s"`,
/// `"1.5s"`, `"20ms"`, `"0s"`. This is the format of OpenAI's `x-ratelimit-reset-*`.
pub fn format_go_duration(d: Duration) -> String {
    let ms_total = d.as_millis();
    // A non-zero wait shorter than a millisecond is reported as 1ms, never "0s".
    let ms_total = if ms_total == 0 && !d.is_zero() {
        1
    } else {
        ms_total
    };
    let mut out = String::new();
    if ms_total == 0 {
        return "0s".into();
    }
    if ms_total < 1000 {
        let _ = write!(out, "{ms_total}ms");
        return out;
    }
    let h = ms_total / 3_600_000;
    let m = (ms_total / 60_000) % 60;
    let s = (ms_total / 1000) % 60;
    let frac = ms_total % 1000;
    if h > 0 {
        let _ = write!(out, "{h}h{m}m");
    } else if m > 0 {
        let _ = write!(out, "{m}m");
    }
    if frac == 0 {
        let _ = write!(out, "{s}s");
    } else {
        let f = format!("{frac:03}");
        let _ = write!(out, "{s}.{}s", f.trim_end_matches('0'));
    }
    out
}

/// Format a duration for scripts and the admin API: `"1.5s"`, `"300ms"`.
pub(crate) fn format_short(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else if ms.fract() == 0.0 {
        format!("{ms}ms")
    } else {
        format!("{}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_like_go() {
        assert_eq!(format_go_duration(Duration::from_secs(360)), "6m0s");
        assert_eq!(format_go_duration(Duration::from_secs(1)), "1s");
        assert_eq!(format_go_duration(Duration::from_millis(20)), "20ms");
        assert_eq!(format_go_duration(Duration::from_millis(1500)), "1.5s");
        assert_eq!(
            format_go_duration(Duration::from_millis(3_723_250)),
            "1h2m3.25s"
        );
        assert_eq!(format_go_duration(Duration::ZERO), "0s");
        assert_eq!(format_go_duration(Duration::from_micros(10)), "1ms");
        for d in ["6m0s", "1s", "20ms", "1.5s", "1h2m3.25s"] {
            assert_eq!(format_go_duration(parse_duration(d).unwrap()), d);
        }
    }

    #[test]
    fn short_format_round_trips() {
        for ms in [0u64, 5, 300, 1000, 1500, 60_000] {
            let d = Duration::from_millis(ms);
            assert_eq!(parse_duration(&format_short(d)).unwrap(), d);
        }
    }
}
