//! Reading every rate-limit signal providers send.
//!
//! Providers announce limits in several dialects:
//!
//! | header | example | meaning |
//! | --- | --- | --- |
//! | `retry-after` | `30` or `Wed, 21 Oct 2026 07:28:00 GMT` | RFC 9110: seconds or an HTTP-date |
//! | `retry-after-ms` | `1500` | milliseconds (OpenAI, Azure) |
//! | `x-ratelimit-remaining-requests` / `-tokens` | `59` | OpenAI-style quota left |
//! | `x-ratelimit-reset-requests` / `-tokens` | `1s`, `6m0s`, `20ms` | Go-style duration until the quota refills |
//! | `x-ratelimit-limit-requests` / `-tokens` | `60` | the quota itself |
//! | `x-ratelimit-reset` | `12`, `1767225600`, `1767225600000` | seconds, or a Unix time in s or ms |
//! | `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-remaining` | `0` | Anthropic quota left |
//! | `anthropic-ratelimit-…-reset` | `2026-11-21T10:00:30Z` | RFC 3339 instant of the refill |
//!
//! [`RateLimitInfo::from_headers`] reads all of them at once. Values are never trusted
//! blindly: garbage, negative numbers, `NaN` and infinities are ignored, instants in
//! the past mean "now", numbers too large for a [`Duration`] (`1e23`, 2^128) saturate,
//! and anything further ahead than [`HeaderLimits::max_wait`] is clamped to it (a
//! provider bug must not black out a route for days). Nothing here panics: the
//! property tests in `tests/header_props.rs` feed every parser the number forms that
//! break float and time arithmetic.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::HeaderMap;
use serde::{Deserialize, Serialize};

use crate::duration::parse_duration;

/// Bounds applied to the waits that providers ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HeaderLimits {
    /// The longest wait any header may impose; longer values are clamped to this.
    /// Default: 5 minutes.
    #[serde(with = "crate::duration_serde")]
    pub max_wait: Duration,
    /// The wait assumed for a 429 that names none. Default: 1 second.
    #[serde(with = "crate::duration_serde")]
    pub default_retry_after: Duration,
}

impl Default for HeaderLimits {
    fn default() -> Self {
        HeaderLimits::DEFAULT
    }
}

impl HeaderLimits {
    /// The defaults: waits capped at 5 minutes, 1 second for a 429 that names none.
    pub const DEFAULT: HeaderLimits = HeaderLimits {
        max_wait: Duration::from_secs(300),
        default_retry_after: Duration::from_secs(1),
    };

    /// Clamps a wait to [`max_wait`](Self::max_wait), logging when it had to.
    pub fn clamp(&self, wait: Duration) -> Duration {
        if wait > self.max_wait {
            tracing::debug!(
                asked_ms = wait.as_millis() as u64,
                cap_ms = self.max_wait.as_millis() as u64,
                "rate-limit wait clamped to the configured cap"
            );
            self.max_wait
        } else {
            wait
        }
    }
}

/// Everything the rate-limit headers of one response said.
///
/// Fields are `None` when the provider did not say (or said something unreadable).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RateLimitInfo {
    /// How long to stay away, from `retry-after-ms` (preferred, more precise) or
    /// `retry-after`.
    pub retry_after: Option<Duration>,
    /// Requests left in the current window.
    pub remaining_requests: Option<u64>,
    /// Tokens left in the current window (the smallest of the token dimensions the
    /// provider reports).
    pub remaining_tokens: Option<u64>,
    /// Time until the request quota refills.
    pub reset_requests: Option<Duration>,
    /// Time until the token quota refills (of the dimension with the fewest left).
    pub reset_tokens: Option<Duration>,
    /// The request quota per window.
    pub limit_requests: Option<u64>,
    /// The token quota per window.
    pub limit_tokens: Option<u64>,
}

impl RateLimitInfo {
    /// Reads every rate-limit header in `headers`; `now` is the wall clock used to turn
    /// dates into waits.
    ///
    /// ```
    /// use std::time::{Duration, SystemTime};
    /// use http::HeaderMap;
    /// use tower_failover_core::{HeaderLimits, RateLimitInfo};
    ///
    /// let mut headers = HeaderMap::new();
    /// headers.insert("retry-after", "20".parse().unwrap());
    /// headers.insert("x-ratelimit-remaining-requests", "0".parse().unwrap());
    /// headers.insert("x-ratelimit-reset-requests", "6m0s".parse().unwrap());
    /// let info = RateLimitInfo::from_headers(&headers, SystemTime::now(), &HeaderLimits::default());
    /// assert_eq!(info.retry_after, Some(Duration::from_secs(20)));
    /// assert!(info.is_exhausted());
    /// assert_eq!(info.reset_requests, Some(Duration::from_secs(300))); // clamped to the 5 min cap
    /// ```
    pub fn from_headers(headers: &HeaderMap, now: SystemTime, limits: &HeaderLimits) -> Self {
        let seen = Seen::read(headers);
        let text = |name: Name| seen.text(name);
        let mut info = RateLimitInfo {
            retry_after: text(Name::RetryAfterMs)
                .and_then(parse_retry_after_ms)
                .or_else(|| text(Name::RetryAfter).and_then(|v| parse_retry_after(v, now)))
                .map(|d| limits.clamp(d)),
            remaining_requests: text(Name::RemainingRequests).and_then(parse_count),
            remaining_tokens: text(Name::RemainingTokens).and_then(parse_count),
            reset_requests: text(Name::ResetRequests)
                .and_then(|v| parse_reset(v, now))
                .map(|d| limits.clamp(d)),
            reset_tokens: text(Name::ResetTokens)
                .and_then(|v| parse_reset(v, now))
                .map(|d| limits.clamp(d)),
            limit_requests: text(Name::LimitRequests).and_then(parse_count),
            limit_tokens: text(Name::LimitTokens).and_then(parse_count),
        };
        if info.reset_requests.is_none() {
            info.reset_requests = text(Name::Reset)
                .and_then(|v| parse_reset(v, now))
                .map(|d| limits.clamp(d));
        }

        // Anthropic: requests, then each token dimension; keep the scarcest tokens.
        if let Some(rem) = text(Name::AnthropicRequestsRemaining).and_then(parse_count) {
            info.remaining_requests = Some(rem);
        }
        if let Some(reset) =
            text(Name::AnthropicRequestsReset).and_then(|v| parse_rfc3339_wait(v, now))
        {
            info.reset_requests = Some(limits.clamp(reset));
        }
        if let Some(limit) = text(Name::AnthropicRequestsLimit).and_then(parse_count) {
            info.limit_requests = Some(limit);
        }
        // (remaining, reset, limit) per token dimension.
        const TOKEN_DIMS: [[Name; 3]; 3] = [
            [
                Name::AnthropicTokensRemaining,
                Name::AnthropicTokensReset,
                Name::AnthropicTokensLimit,
            ],
            [
                Name::AnthropicInputRemaining,
                Name::AnthropicInputReset,
                Name::AnthropicInputLimit,
            ],
            [
                Name::AnthropicOutputRemaining,
                Name::AnthropicOutputReset,
                Name::AnthropicOutputLimit,
            ],
        ];
        for [remaining, reset, limit] in TOKEN_DIMS {
            let Some(remaining) = text(remaining).and_then(parse_count) else {
                continue;
            };
            let scarcer = info.remaining_tokens.is_none_or(|cur| remaining < cur);
            if scarcer {
                info.remaining_tokens = Some(remaining);
                info.reset_tokens = text(reset)
                    .and_then(|v| parse_rfc3339_wait(v, now))
                    .map(|d| limits.clamp(d));
                info.limit_tokens = text(limit).and_then(parse_count);
            }
        }
        info
    }

    /// Whether the provider said a quota is used up (no requests or no tokens left).
    pub fn is_exhausted(&self) -> bool {
        self.remaining_requests == Some(0) || self.remaining_tokens == Some(0)
    }

    /// The best estimate of how long the provider will refuse requests: the explicit
    /// `retry-after` if present; else, if a quota is used up, the time until it has
    /// room again; else `None`.
    ///
    /// Providers' reset headers give the time until a bucket is *full* again. For
    /// requests, with the limit known, one request's worth refills in about
    /// `reset ÷ limit` (buckets refill continuously), and that is the wait used: the
    /// full reset would keep a provider out for up to a minute after one 429. For
    /// tokens the next request needs an unknown number of them, so the full reset is
    /// kept (conservative).
    pub fn wait_hint(&self) -> Option<Duration> {
        if let Some(d) = self.retry_after {
            return Some(d);
        }
        let requests = (self.remaining_requests == Some(0))
            .then_some(self.reset_requests)
            .flatten()
            .map(|reset| match self.limit_requests {
                Some(limit) if limit > 0 => reset / u32::try_from(limit).unwrap_or(u32::MAX),
                _ => reset,
            });
        let tokens = (self.remaining_tokens == Some(0))
            .then_some(self.reset_tokens)
            .flatten();
        match (requests, tokens) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether any rate-limit header was present and readable.
    pub fn is_empty(&self) -> bool {
        *self == RateLimitInfo::default()
    }
}

/// The rate-limit headers [`RateLimitInfo::from_headers`] reads, in
/// [`RATE_LIMIT_HEADERS`]' order.
#[derive(Debug, Clone, Copy)]
enum Name {
    RetryAfterMs,
    RetryAfter,
    RemainingRequests,
    RemainingTokens,
    ResetRequests,
    ResetTokens,
    LimitRequests,
    LimitTokens,
    Reset,
    AnthropicRequestsRemaining,
    AnthropicRequestsReset,
    AnthropicRequestsLimit,
    AnthropicTokensRemaining,
    AnthropicTokensReset,
    AnthropicTokensLimit,
    AnthropicInputRemaining,
    AnthropicInputReset,
    AnthropicInputLimit,
    AnthropicOutputRemaining,
    AnthropicOutputReset,
    AnthropicOutputLimit,
}

/// Every header [`RateLimitInfo::from_headers`] reads (lowercase, as `http` stores
/// them): the ones a proxy in front of a provider should pass through unchanged.
pub const RATE_LIMIT_HEADERS: [&str; 21] = [
    "retry-after-ms",
    "retry-after",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "x-ratelimit-reset",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-tokens-limit",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-input-tokens-limit",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-output-tokens-reset",
    "anthropic-ratelimit-output-tokens-limit",
];

/// The first value of every rate-limit header of one response, found in one walk
/// over the headers. Looking each of the 21 names up instead parsed and hashed a
/// name per lookup: about 7,000 instructions a response, against a few hundred for
/// the walk (a response carries a dozen headers or so).
struct Seen<'a> {
    /// `None`: absent; `Some(None)`: present but not visible ASCII (as
    /// [`http::HeaderValue::to_str`] refuses); `Some(Some(text))`: its first value.
    first: [Option<Option<&'a str>>; RATE_LIMIT_HEADERS.len()],
}

impl<'a> Seen<'a> {
    fn read(headers: &'a HeaderMap) -> Self {
        let mut first = [None; RATE_LIMIT_HEADERS.len()];
        for (name, value) in headers {
            let name = name.as_str();
            // Most headers are none of ours: one or two byte compares say so.
            if !(name.starts_with("x-ratelimit-")
                || name.starts_with("anthropic-ratelimit-")
                || name.starts_with("retry-after"))
            {
                continue;
            }
            if let Some(i) = RATE_LIMIT_HEADERS.iter().position(|n| *n == name) {
                // Like `HeaderMap::get`, the first value of a repeated header counts.
                first[i].get_or_insert(value.to_str().ok());
            }
        }
        Seen { first }
    }

    fn text(&self, name: Name) -> Option<&'a str> {
        self.first[name as usize].flatten()
    }
}

/// Parses a `Retry-After` value: delta-seconds (`"120"`, also `"1.5"` as sent by some
/// providers) or an HTTP-date. Dates in the past give zero; garbage, negative numbers,
/// `NaN` and infinities give `None`; a number too large for a [`Duration`] saturates
/// at [`Duration::MAX`]. Not clamped: see [`HeaderLimits::clamp`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_failover_core::parse_retry_after;
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
/// assert_eq!(parse_retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now), Some(Duration::from_secs(60)));
/// assert_eq!(parse_retry_after("1e23", now), Some(Duration::MAX));
/// assert_eq!(parse_retry_after("-3", now), None);
/// assert_eq!(parse_retry_after("soon", now), None);
/// ```
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if value.starts_with(|c: char| c.is_ascii_digit() || c == '.') {
        return parse_seconds(value);
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(until(at, now))
}

/// Parses `retry-after-ms`: a non-negative number of milliseconds (saturating at
/// [`Duration::MAX`], like [`parse_retry_after`]).
pub fn parse_retry_after_ms(value: &str) -> Option<Duration> {
    let ms: f64 = value.trim().parse().ok()?;
    secs_saturating(ms / 1000.0)
}

/// Parses an OpenAI-style reset value: a Go-style duration (`"1s"`, `"6m0s"`,
/// `"20ms"`), a number of seconds, or a Unix time in seconds or milliseconds (as some
/// OpenAI-compatible providers send in `x-ratelimit-reset`).
///
/// Negative numbers, `NaN` and infinities give `None`; numbers and instants too far
/// ahead to represent saturate at [`Duration::MAX`]. Not clamped: see
/// [`HeaderLimits::clamp`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_failover_core::parse_reset;
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
/// assert_eq!(parse_reset("6m0s", now), Some(Duration::from_secs(360)));
/// assert_eq!(parse_reset("1700000030", now), Some(Duration::from_secs(30)));
/// assert_eq!(parse_reset("1e23", now), Some(Duration::MAX));
/// assert_eq!(parse_reset("NaN", now), None);
/// ```
pub fn parse_reset(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(n) = value.parse::<f64>() {
        // Anything past 2001 in seconds (or later in ms) is a timestamp, not a delay.
        if n >= 1.0e12 {
            return Some(until_unix(secs_saturating(n / 1000.0)?, now));
        }
        if n >= 1.0e9 {
            return Some(until_unix(secs_saturating(n)?, now));
        }
        return secs_saturating(n);
    }
    parse_duration(value).ok()
}

/// Seconds as a [`Duration`]: `None` for negative numbers (`-0` is zero), `NaN` and
/// infinities; finite values too large for a `Duration` saturate at
/// [`Duration::MAX`]. The one place provider-sent floats become durations, so that
/// none of them can reach the panicking `Duration::from_secs_f64`.
fn secs_saturating(secs: f64) -> Option<Duration> {
    if !secs.is_finite() || secs < 0.0 {
        return None;
    }
    Some(Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX))
}

/// The wait until `since_epoch` after the Unix epoch; [`Duration::MAX`] for an
/// instant beyond what [`SystemTime`] can hold.
fn until_unix(since_epoch: Duration, now: SystemTime) -> Duration {
    match UNIX_EPOCH.checked_add(since_epoch) {
        Some(at) => until(at, now),
        None => Duration::MAX,
    }
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or(Duration::ZERO)
}

fn parse_seconds(value: &str) -> Option<Duration> {
    secs_saturating(value.parse().ok()?)
}

fn parse_count(value: &str) -> Option<u64> {
    value.trim().parse().ok()
}

/// Parses an RFC 3339 instant (`2026-11-21T10:00:30Z`, `…30.250+01:00`) and returns
/// the wait from `now` until it (zero if it is past).
pub fn parse_rfc3339_wait(value: &str, now: SystemTime) -> Option<Duration> {
    Some(until(parse_rfc3339(value)?, now))
}

/// Parses an RFC 3339 date-time into a `SystemTime`. Returns `None` on anything
/// malformed or before 1970.
pub fn parse_rfc3339(value: &str) -> Option<SystemTime> {
    let s = value.trim().as_bytes();
    let num = |range: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(range)?;
        if part.iter().all(u8::is_ascii_digit) {
            std::str::from_utf8(part).ok()?.parse().ok()
        } else {
            None
        }
    };
    if s.len() < 20 || s[4] != b'-' || s[7] != b'-' || !matches!(s[10], b'T' | b't' | b' ') {
        return None;
    }
    if s[13] != b':' || s[16] != b':' {
        return None;
    }
    let (year, month, day) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hour, minute, second) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut i = 19;
    let mut nanos: u64 = 0;
    if s.get(i) == Some(&b'.') {
        i += 1;
        let start = i;
        while s.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        let digits = &s[start..i];
        if digits.is_empty() {
            return None;
        }
        for (k, d) in digits.iter().take(9).enumerate() {
            nanos += u64::from(d - b'0') * 10u64.pow(8 - k as u32);
        }
    }
    let offset_secs: i64 = match s.get(i)? {
        b'Z' | b'z' if i + 1 == s.len() => 0,
        sign @ (b'+' | b'-') if i + 6 == s.len() && s[i + 3] == b':' => {
            let h = num(i + 1..i + 3)?;
            let m = num(i + 4..i + 6)?;
            if h > 23 || m > 59 {
                return None;
            }
            let off = h * 3600 + m * 60;
            if *sign == b'+' { off } else { -off }
        }
        _ => return None,
    };
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3600 + minute * 60 + second - offset_secs;
    let secs = u64::try_from(secs).ok()?;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs).saturating_add(Duration::from_nanos(nanos)))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2023-11-14T22:13:20Z
    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_700_000_000)
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn retry_after_table() {
        let secs = |s| Some(Duration::from_secs(s));
        let cases: &[(&str, Option<Duration>)] = &[
            ("0", secs(0)),
            ("30", secs(30)),
            ("  7 ", secs(7)),
            ("1.5", Some(Duration::from_millis(1500))),
            ("Tue, 14 Nov 2023 22:13:50 GMT", secs(30)),
            ("Tue, 14 Nov 2023 22:00:00 GMT", secs(0)), // in the past
            ("Thu, 01 Jan 1970 00:00:00 GMT", secs(0)),
            ("Fri, 24 Nov 2023 22:13:20 GMT", secs(864_000)), // ten days ahead, unclamped here
            ("-5", None),
            ("", None),
            ("soon", None),
            ("30s", None),
            ("1e999", None),
            ("NaN", None),
            ("99999999999999", secs(99_999_999_999_999)), // unclamped here
            ("1e23", Some(Duration::MAX)),                // saturates, then clamps
            ("-0", None),                                 // not delta-seconds, not a date
            ("+5", None),
            ("Tue, 32 Nov 2023 25:00:00 GMT", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_retry_after(input, now()), *want, "input {input:?}");
        }
    }

    #[test]
    fn retry_after_ms_table() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("1500", Some(Duration::from_millis(1500))),
            ("0", Some(Duration::ZERO)),
            ("2.5", Some(Duration::from_micros(2500))),
            ("-1", None),
            ("abc", None),
            ("inf", None),
            ("NaN", None),
            ("-0", Some(Duration::ZERO)),
            ("1e20", Some(Duration::from_secs(100_000_000_000_000_000))),
            ("1e23", Some(Duration::MAX)),
        ];
        for (input, want) in cases {
            assert_eq!(parse_retry_after_ms(input), *want, "input {input:?}");
        }
    }

    #[test]
    fn reset_table() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("1s", Some(Duration::from_secs(1))),
            ("6m0s", Some(Duration::from_secs(360))),
            ("20ms", Some(Duration::from_millis(20))),
            ("2m59.56s", Some(Duration::from_millis(179_560))),
            ("12", Some(Duration::from_secs(12))),
            ("0.25", Some(Duration::from_millis(250))),
            ("1700000060", Some(Duration::from_secs(60))), // unix seconds
            ("1700000000500", Some(Duration::from_millis(500))), // unix ms
            ("1600000000", Some(Duration::ZERO)),          // unix seconds, past
            ("-3", None),
            ("1e23", Some(Duration::MAX)), // a Unix time in ms past SystemTime's range
            ("9e999", None),               // infinite
            (
                "1e15",
                Some(Duration::from_secs(1_000_000_000_000) - Duration::from_secs(1_700_000_000)),
            ),
            ("-0", Some(Duration::ZERO)),
            ("NaN", None),
            ("99999999999h", None), // beyond the duration parser's range
            ("later", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_reset(input, now()), *want, "input {input:?}");
        }
    }

    #[test]
    fn rfc3339_table() {
        let cases: &[(&str, Option<Duration>)] = &[
            ("2023-11-14T22:13:50Z", Some(Duration::from_secs(30))),
            ("2023-11-14T22:13:20.250Z", Some(Duration::from_millis(250))),
            ("2023-11-14T23:13:50+01:00", Some(Duration::from_secs(30))),
            ("2023-11-14T21:13:50-01:00", Some(Duration::from_secs(30))),
            ("2023-11-14t22:13:21z", Some(Duration::from_secs(1))),
            ("2020-01-01T00:00:00Z", Some(Duration::ZERO)), // past
            ("2023-11-14T22:13:50", None),                  // no offset
            ("2023-13-14T22:13:50Z", None),
            ("2023-11-14T24:13:50Z", None),
            ("2023-11-14T22:13:50.Z", None),
            ("2023-11-14T22:13:50+1:00", None),
            ("1969-12-31T23:59:59Z", None),
            ("garbage", None),
            ("", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse_rfc3339_wait(input, now()), *want, "input {input:?}");
        }
    }

    #[test]
    fn openai_headers() {
        let h = headers(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-limit-tokens", "150000"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-remaining-tokens", "149984"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let info = RateLimitInfo::from_headers(&h, now(), &HeaderLimits::default());
        assert_eq!(info.limit_requests, Some(60));
        assert_eq!(info.limit_tokens, Some(150_000));
        assert_eq!(info.remaining_requests, Some(0));
        assert_eq!(info.remaining_tokens, Some(149_984));
        assert_eq!(info.reset_requests, Some(Duration::from_secs(1)));
        assert_eq!(
            info.reset_tokens,
            Some(Duration::from_secs(300)),
            "clamped to the cap"
        );
        assert!(info.is_exhausted());
        // One request of 60 per second refills in 1/60 s, not the full second.
        assert_eq!(info.wait_hint(), Some(Duration::from_secs(1) / 60));
        assert_eq!(info.retry_after, None);
    }

    #[test]
    fn retry_after_ms_wins_over_retry_after() {
        let h = headers(&[("retry-after", "20"), ("retry-after-ms", "1500")]);
        let info = RateLimitInfo::from_headers(&h, now(), &HeaderLimits::default());
        assert_eq!(info.retry_after, Some(Duration::from_millis(1500)));
        let h = headers(&[("retry-after", "20"), ("retry-after-ms", "garbage")]);
        let info = RateLimitInfo::from_headers(&h, now(), &HeaderLimits::default());
        assert_eq!(info.retry_after, Some(Duration::from_secs(20)));
    }

    #[test]
    fn absurd_retry_after_is_clamped() {
        let limits = HeaderLimits {
            max_wait: Duration::from_secs(60),
            ..HeaderLimits::default()
        };
        for v in ["86400", "Fri, 24 Nov 2023 22:13:20 GMT", "9999999999"] {
            let info = RateLimitInfo::from_headers(&headers(&[("retry-after", v)]), now(), &limits);
            assert_eq!(
                info.retry_after,
                Some(Duration::from_secs(60)),
                "value {v:?}"
            );
        }
        let info = RateLimitInfo::from_headers(&headers(&[("retry-after", "-1")]), now(), &limits);
        assert_eq!(info.retry_after, None);
    }

    #[test]
    fn anthropic_headers_keep_scarcest_token_dimension() {
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2023-11-14T22:13:21Z"),
            ("anthropic-ratelimit-tokens-remaining", "9000"),
            ("anthropic-ratelimit-tokens-reset", "2023-11-14T22:13:30Z"),
            ("anthropic-ratelimit-input-tokens-limit", "40000"),
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2023-11-14T22:13:40Z",
            ),
            ("anthropic-ratelimit-output-tokens-remaining", "8000"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2023-11-14T22:13:25Z",
            ),
        ]);
        let info = RateLimitInfo::from_headers(&h, now(), &HeaderLimits::default());
        assert_eq!(info.remaining_requests, Some(49));
        assert_eq!(info.limit_requests, Some(50));
        assert_eq!(info.reset_requests, Some(Duration::from_secs(1)));
        assert_eq!(info.remaining_tokens, Some(0));
        assert_eq!(info.limit_tokens, Some(40_000));
        assert_eq!(info.reset_tokens, Some(Duration::from_secs(20)));
        assert_eq!(info.wait_hint(), Some(Duration::from_secs(20)));
    }

    #[test]
    fn anthropic_garbage_is_ignored() {
        let h = headers(&[
            ("anthropic-ratelimit-requests-remaining", "lots"),
            ("anthropic-ratelimit-requests-reset", "tomorrow"),
            ("anthropic-ratelimit-tokens-remaining", "-5"),
        ]);
        let info = RateLimitInfo::from_headers(&h, now(), &HeaderLimits::default());
        assert!(info.is_empty(), "{info:?}");
        assert_eq!(info.wait_hint(), None);
    }

    #[test]
    fn generic_reset_header_is_a_fallback() {
        let h = headers(&[
            ("x-ratelimit-reset", "1700000030"),
            ("x-ratelimit-remaining-requests", "0"),
        ]);
        let info = RateLimitInfo::from_headers(&h, now(), &HeaderLimits::default());
        assert_eq!(info.reset_requests, Some(Duration::from_secs(30)));
        assert_eq!(info.wait_hint(), Some(Duration::from_secs(30)));
    }

    #[test]
    fn empty_headers() {
        let info = RateLimitInfo::from_headers(&HeaderMap::new(), now(), &HeaderLimits::default());
        assert!(info.is_empty());
        assert!(!info.is_exhausted());
        assert_eq!(info.wait_hint(), None);
    }

    #[test]
    fn every_name_sits_at_its_place_in_the_table() {
        let all = [
            (Name::RetryAfterMs, "retry-after-ms"),
            (Name::RetryAfter, "retry-after"),
            (Name::RemainingRequests, "x-ratelimit-remaining-requests"),
            (Name::RemainingTokens, "x-ratelimit-remaining-tokens"),
            (Name::ResetRequests, "x-ratelimit-reset-requests"),
            (Name::ResetTokens, "x-ratelimit-reset-tokens"),
            (Name::LimitRequests, "x-ratelimit-limit-requests"),
            (Name::LimitTokens, "x-ratelimit-limit-tokens"),
            (Name::Reset, "x-ratelimit-reset"),
            (
                Name::AnthropicRequestsRemaining,
                "anthropic-ratelimit-requests-remaining",
            ),
            (
                Name::AnthropicRequestsReset,
                "anthropic-ratelimit-requests-reset",
            ),
            (
                Name::AnthropicRequestsLimit,
                "anthropic-ratelimit-requests-limit",
            ),
            (
                Name::AnthropicTokensRemaining,
                "anthropic-ratelimit-tokens-remaining",
            ),
            (
                Name::AnthropicTokensReset,
                "anthropic-ratelimit-tokens-reset",
            ),
            (
                Name::AnthropicTokensLimit,
                "anthropic-ratelimit-tokens-limit",
            ),
            (
                Name::AnthropicInputRemaining,
                "anthropic-ratelimit-input-tokens-remaining",
            ),
            (
                Name::AnthropicInputReset,
                "anthropic-ratelimit-input-tokens-reset",
            ),
            (
                Name::AnthropicInputLimit,
                "anthropic-ratelimit-input-tokens-limit",
            ),
            (
                Name::AnthropicOutputRemaining,
                "anthropic-ratelimit-output-tokens-remaining",
            ),
            (
                Name::AnthropicOutputReset,
                "anthropic-ratelimit-output-tokens-reset",
            ),
            (
                Name::AnthropicOutputLimit,
                "anthropic-ratelimit-output-tokens-limit",
            ),
        ];
        assert_eq!(all.len(), RATE_LIMIT_HEADERS.len());
        for (name, text) in all {
            assert_eq!(RATE_LIMIT_HEADERS[name as usize], text);
        }
    }

    #[test]
    fn the_first_of_repeated_values_counts_even_when_unreadable() {
        let mut h = HeaderMap::new();
        h.append("retry-after", http::HeaderValue::from_static("7"));
        h.append("retry-after", http::HeaderValue::from_static("9"));
        h.append(
            "x-ratelimit-remaining-requests",
            http::HeaderValue::from_bytes(b"\xff").unwrap(),
        );
        h.append(
            "x-ratelimit-remaining-requests",
            http::HeaderValue::from_static("0"),
        );
        let info = RateLimitInfo::from_headers(&h, now(), &HeaderLimits::default());
        assert_eq!(info.retry_after, Some(Duration::from_secs(7)));
        // `HeaderMap::get` gives the unreadable first value, so the header says nothing.
        assert_eq!(info.remaining_requests, None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_any_value(v in ".*") {
            let _ = parse_retry_after(&v, now());
            let _ = parse_retry_after_ms(&v);
            let _ = parse_reset(&v, now());
            let _ = parse_rfc3339(&v);
            let _ = crate::parse_duration(&v);
        }

        /// The one walk finds what one `HeaderMap::get` per name finds, whatever the
        /// mix of our names, near misses and repeats.
        #[test]
        fn the_walk_finds_what_lookups_find(
            picks in proptest::collection::vec((0..RATE_LIMIT_HEADERS.len() + 6, 0u8..4), 0..24)
        ) {
            const OTHERS: [&str; 6] = [
                "content-type", "x-ratelimit-", "retry-after-s", "anthropic-ratelimit-tokens",
                "x-request-id", "x-ratelimit-reset-requests-x",
            ];
            let mut h = HeaderMap::new();
            for (name, value) in &picks {
                let name = RATE_LIMIT_HEADERS.get(*name).copied().unwrap_or_else(|| OTHERS[*name - RATE_LIMIT_HEADERS.len()]);
                let value = match value {
                    0 => http::HeaderValue::from_static("12"),
                    1 => http::HeaderValue::from_static("0"),
                    2 => http::HeaderValue::from_static("1s"),
                    _ => http::HeaderValue::from_bytes(b"\xfe").unwrap(),
                };
                h.append(http::HeaderName::from_static(name), value);
            }
            let seen = Seen::read(&h);
            for (i, name) in RATE_LIMIT_HEADERS.iter().enumerate() {
                let looked_up = h.get(*name).map(|v| v.to_str().ok());
                proptest::prop_assert_eq!(seen.first[i], looked_up, "{}", name);
            }
        }
    }
}
