//! Durations in scripts and rate-limit headers.
//!
//! Scripts accept `"300ms"`, `"1.5s"`, `"2m"`, `"1h"`, `"250us"`, or a bare number
//! of seconds (`30`, `0.25`). Go-style formatting (`"6m0s"`, `"1s"`, `"20ms"`) is what
//! OpenAI puts in `x-ratelimit-reset-*` headers.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serializer};

/// Parse `"300ms"`, `"1.5s"`, `"2m"`, `"1h"`, `"250us"`, `"6m0s"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(|| format!("invalid duration {s:?}"));
    }
    // A sequence of <number><unit> groups, like Go's time.ParseDuration.
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("duration {s:?} lacks a unit (ms, s, m, h)"))?;
        if num_end == 0 {
            return Err(format!("invalid duration {s:?}"));
        }
        let value: f64 = rest[..num_end]
            .parse()
            .map_err(|_| format!("invalid number in duration {s:?}"))?;
        rest = &rest[num_end..];
        let unit_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match rest[..unit_end].trim() {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            other => return Err(format!("unknown unit {other:?} in duration {s:?}")),
        };
        total += value * scale;
        rest = &rest[unit_end..];
    }
    secs_to_duration(total).ok_or_else(|| format!("invalid duration {s:?}"))
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    if secs.is_finite() && (0.0..1e12).contains(&secs) {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

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

#[derive(Deserialize)]
#[serde(untagged)]
enum Repr {
    Num(f64),
    Str(String),
}

/// `#[serde(with = "...")]` for `Duration` fields.
pub(crate) mod serde_duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_short(*d))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        match Repr::deserialize(d)? {
            Repr::Num(n) => secs_to_duration(n)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid duration {n}"))),
            Repr::Str(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        }
    }
}

/// `#[serde(with = "...")]` for `Option<Duration>` fields.
pub(crate) mod serde_opt_duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&format_short(*d)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        match Option::<Repr>::deserialize(d)? {
            None => Ok(None),
            Some(Repr::Num(n)) => secs_to_duration(n)
                .map(Some)
                .ok_or_else(|| serde::de::Error::custom(format!("invalid duration {n}"))),
            Some(Repr::Str(s)) => parse_duration(&s)
                .map(Some)
                .map_err(serde::de::Error::custom),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert_eq!(parse_duration("300ms").unwrap(), Duration::from_millis(300));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("6m0s").unwrap(), Duration::from_secs(360));
        assert_eq!(parse_duration("1h2m").unwrap(), Duration::from_secs(3720));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("250us").unwrap(), Duration::from_micros(250));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1").is_err());
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("ms").is_err());
    }

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
