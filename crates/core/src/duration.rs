//! Durations as people and providers write them: `"30s"`, `"500ms"`, `"6m0s"`, `"1h"`.

use std::fmt;
use std::time::Duration;

/// Why a duration string could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDurationError {
    input: String,
    reason: &'static str,
}

impl fmt::Display for ParseDurationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid duration {:?}: {}", self.input, self.reason)
    }
}

impl std::error::Error for ParseDurationError {}

/// The longest duration this parser accepts: about 31 years. Longer values are
/// refused rather than overflowing.
const MAX_SECS: f64 = 1.0e9;

/// Parses a duration in the Go style that OpenAI's rate-limit headers use and that
/// configuration files find natural: a sequence of decimal numbers, each with a unit
/// (`ns`, `us`, `µs`, `ms`, `s`, `m`, `h`, `d`), such as `"1s"`, `"6m0s"`, `"20ms"`,
/// `"1.5h"` or `"1h2m3.5s"`. A bare number is read as seconds.
///
/// Negative values, missing numbers, unknown units and values beyond about 31 years
/// are refused with an error; nothing panics.
///
/// ```
/// use std::time::Duration;
/// use tower_failover_core::parse_duration;
///
/// assert_eq!(parse_duration("6m0s").unwrap(), Duration::from_secs(360));
/// assert_eq!(parse_duration("20ms").unwrap(), Duration::from_millis(20));
/// assert_eq!(parse_duration("1.5").unwrap(), Duration::from_millis(1500));
/// assert!(parse_duration("-1s").is_err());
/// assert!(parse_duration("soon").is_err());
/// ```
pub fn parse_duration(input: &str) -> Result<Duration, ParseDurationError> {
    let err = |reason| ParseDurationError {
        input: input.chars().take(64).collect(),
        reason,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("empty"));
    }
    if s.starts_with('-') {
        return Err(err("negative"));
    }
    let s = s.strip_prefix('+').unwrap_or(s);
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(|| err("out of range"));
    }
    let mut total = 0.0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err("expected a number"));
        }
        let value: f64 = rest[..num_len].parse().map_err(|_| err("bad number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match rest[..unit_len].trim() {
            "ns" => 1e-9,
            "us" | "µs" | "μs" => 1e-6,
            "ms" => 1e-3,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            "" => return Err(err("missing unit")),
            _ => return Err(err("unknown unit")),
        };
        rest = &rest[unit_len..];
        total += value * scale;
    }
    secs_to_duration(total).ok_or_else(|| err("out of range"))
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    if secs.is_finite() && (0.0..=MAX_SECS).contains(&secs) {
        Some(Duration::from_secs_f64(secs))
    } else {
        None
    }
}

/// Formats a duration the way [`parse_duration`] reads it back: `"250ms"`, `"30s"`,
/// `"1.5s"`, `"5m"`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1000.0;
    if d.is_zero() {
        "0s".to_owned()
    } else if ms < 1.0 {
        format!("{}us", d.as_micros())
    } else if ms < 1000.0 {
        format!("{}ms", trim_float(ms))
    } else if d.as_secs().is_multiple_of(60) && d.subsec_nanos() == 0 && d.as_secs() >= 60 {
        format!("{}m", d.as_secs() / 60)
    } else {
        format!("{}s", trim_float(d.as_secs_f64()))
    }
}

fn trim_float(v: f64) -> String {
    let s = format!("{v:.3}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_owned()
}

/// Serde helpers for `Duration` fields in configuration: accept a number of seconds
/// (`30`, `0.25`) or a string (`"30s"`, `"250ms"`, `"5m"`), and write strings.
///
/// ```
/// use std::time::Duration;
/// #[derive(serde::Deserialize)]
/// struct Config {
///     #[serde(with = "tower_failover_core::duration_serde")]
///     cooldown: Duration,
/// }
/// let c: Config = serde_json::from_str(r#"{ "cooldown": "1m30s" }"#).unwrap();
/// assert_eq!(c.cooldown, Duration::from_secs(90));
/// let c: Config = serde_json::from_str(r#"{ "cooldown": 2.5 }"#).unwrap();
/// assert_eq!(c.cooldown, Duration::from_millis(2500));
/// ```
pub mod duration_serde {
    use super::{format_duration, parse_duration};
    use serde::de::{self, Visitor};
    use serde::{Deserializer, Serializer};
    use std::fmt;
    use std::time::Duration;

    /// Writes a duration as a string such as `"30s"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_duration(*d))
    }

    /// Reads a duration from a number of seconds or a string such as `"30s"`.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        d.deserialize_any(DurationVisitor)
    }

    struct DurationVisitor;

    impl Visitor<'_> for DurationVisitor {
        type Value = Duration;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"30s\", \"250ms\" or a number of seconds")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Duration, E> {
            parse_duration(&v.to_string()).map_err(E::custom)
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Duration, E> {
            parse_duration(&v.to_string()).map_err(E::custom)
        }

        fn visit_f64<E: de::Error>(self, v: f64) -> Result<Duration, E> {
            parse_duration(&v.to_string()).map_err(E::custom)
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
            parse_duration(v).map_err(E::custom)
        }
    }

    /// The same for `Option<Duration>` (absent or `null` is `None`).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        /// Writes `Some(d)` as a string such as `"30s"` and `None` as null.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            #[derive(Deserialize)]
            struct Wrap(#[serde(with = "super")] Duration);
            Ok(Option::<Wrap>::deserialize(d)?.map(|Wrap(d)| d))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_table() {
        let ok: &[(&str, Duration)] = &[
            ("1s", Duration::from_secs(1)),
            ("6m0s", Duration::from_secs(360)),
            ("20ms", Duration::from_millis(20)),
            ("1h2m3.5s", Duration::from_millis(3_723_500)),
            ("0.5s", Duration::from_millis(500)),
            ("250us", Duration::from_micros(250)),
            ("7µs", Duration::from_micros(7)),
            ("100ns", Duration::from_nanos(100)),
            ("2d", Duration::from_secs(172_800)),
            ("30", Duration::from_secs(30)),
            (" 12 ", Duration::from_secs(12)),
            ("0", Duration::ZERO),
            ("1m 30s", Duration::from_secs(90)),
        ];
        for (input, want) in ok {
            assert_eq!(parse_duration(input).unwrap(), *want, "input {input:?}");
        }
    }

    #[test]
    fn refuses_garbage() {
        for bad in [
            "",
            "-1",
            "-1s",
            "s",
            "1x",
            "1.2.3s",
            "abc",
            "1e400",
            "NaN",
            "inf",
            "99999999999s",
            "5 fortnights",
        ] {
            assert!(parse_duration(bad).is_err(), "accepted {bad:?}");
        }
    }

    #[test]
    fn format_round_trips() {
        for d in [
            Duration::from_millis(250),
            Duration::from_secs(30),
            Duration::from_millis(1500),
            Duration::from_secs(300),
            Duration::from_micros(40),
            Duration::ZERO,
        ] {
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }
}
