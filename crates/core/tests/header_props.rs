//! Hostile rate-limit headers: every parser in `ratelimit` and `duration`, fed the
//! number forms that break float and time arithmetic (exponents, huge integers, NaN,
//! infinities, negative zero, signs, whitespace, non-ASCII, very long strings).
//!
//! Nothing may panic, and whatever reaches a layer (through
//! [`RateLimitInfo::from_headers`] or the classifier) is at most
//! [`HeaderLimits::max_wait`].

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Response};
use proptest::prelude::*;
use tower_failover_core::{
    Classify, HeaderLimits, LlmClassifier, Outcome, RateLimitInfo, parse_duration, parse_reset,
    parse_retry_after, parse_retry_after_ms, parse_rfc3339, parse_rfc3339_wait,
};

/// Every header `RateLimitInfo::from_headers` reads (the list it reads them by).
const HEADERS: &[&str] = &tower_failover_core::RATE_LIMIT_HEADERS;

/// Values known to have broken (or to be likely to break) float and time arithmetic.
const HOSTILE: &[&str] = &[
    "1e23",
    "9e999",
    "-9e999",
    "1e308",
    "1.7976931348623157e308",
    "4.9e-324",
    "-1e-40",
    "18446744073709551616",                    // 2^64
    "18446744073709551615",                    // u64::MAX
    "340282366920938463463374607431768211456", // 2^128
    "123456789012345678901234567890",          // 30 digits
    "9223372036854775807",                     // i64::MAX
    "9223372036854775808",
    "NaN",
    "nan",
    "-NaN",
    "inf",
    "+inf",
    "-inf",
    "infinity",
    "-0",
    "-0.0",
    "+0",
    "-5",
    "+5",
    "++5",
    " 5 ",
    "\t7",
    "0x10",
    "1_000",
    "١٢٣", // Arabic-Indic digits
    "５",  // full-width digit
    "5 秒",
    "µs",
    "1µs",
    "99999999999h",
    "99999999999999999999d",
    "1e23s",
    "1e9h",
    "18446744073709551616ns",
    "1.5.5s",
    "6m0s",
    "1.5s",
    "20ms",
    ".5",
    ".",
    "",
    "e",
    "1e",
    "Fri, 31 Dec 9999 23:59:59 GMT",
    "Thu, 01 Jan 1970 00:00:00 GMT",
    "Sun, 06 Nov 1994 08:49:37 GMT",
    "Sunday, 06-Nov-94 08:49:37 GMT",
    "Sun Nov  6 08:49:37 1994",
    "9999-12-31T23:59:60.999999999999Z",
    "0000-01-01T00:00:00Z",
    "1970-01-01T00:00:00-23:59",
    "9999-12-31T23:59:59+00:00",
    "2026-11-21T10:00:30.Z",
    "2026-11-21T10:00:30ZZ",
];

/// Strings built from the forms that break arithmetic.
fn hostile_number() -> impl Strategy<Value = String> {
    let mantissa = prop_oneof![
        "[0-9]{1,3}".boxed(),
        "[0-9]{1,3}\\.[0-9]{0,4}".boxed(),
        "[0-9]{15,60}".boxed(),
    ];
    let sign = prop_oneof![Just(""), Just("+"), Just("-"), Just(" "), Just("\t")];
    let suffix = prop_oneof![
        Just(String::new()),
        (-400i32..400).prop_map(|e| format!("e{e}")),
        (-400i32..400).prop_map(|e| format!("E+{e}")),
        prop::sample::select(vec![
            "s", "ms", "m", "h", "d", "ns", "us", "µs", "m0s", "h0m0s", " ", "x",
        ])
        .prop_map(str::to_owned),
    ];
    prop_oneof![
        prop::sample::select(HOSTILE).prop_map(str::to_owned),
        (sign, mantissa, suffix).prop_map(|(s, m, x)| format!("{s}{m}{x}")),
        any::<f64>().prop_map(|f| f.to_string()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        any::<u128>().prop_map(|n| n.to_string()),
        any::<i64>().prop_map(|n| n.to_string()),
        // Go durations with many, and huge, parts.
        prop::collection::vec(
            (
                "[0-9]{1,25}",
                prop::sample::select(vec!["h", "m", "s", "ms", "us", "ns", "d"])
            ),
            1..8,
        )
        .prop_map(|parts| parts.into_iter().map(|(n, u)| format!("{n}{u}")).collect()),
        // RFC 3339 instants with fields out of range.
        (
            0u32..10_000,
            0u32..100,
            0u32..100,
            0u32..100,
            0u32..100,
            0u32..100,
            "(\\.[0-9]{1,30})?",
            prop::sample::select(vec!["Z", "z", "+23:59", "-23:59", "+99:99", "", "Zx"]),
        )
            .prop_map(|(y, mo, d, h, mi, s, frac, off)| {
                format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}")
            }),
        // HTTP dates, plausible and not.
        (
            0u32..40,
            prop::sample::select(vec!["Jan", "Feb", "Dec", "Foo"]),
            0u32..100_000,
            0u32..100,
        )
            .prop_map(|(d, m, y, h)| format!("Sun, {d:02} {m} {y} {h:02}:00:00 GMT")),
        // Very long strings, and anything at all.
        "[0-9]{200,2000}".boxed(),
        ".{0,64}".boxed(),
    ]
}

fn limits() -> impl Strategy<Value = HeaderLimits> {
    (0u64..=86_400_000, 0u64..=60_000).prop_map(|(max_ms, default_ms)| HeaderLimits {
        max_wait: Duration::from_millis(max_ms),
        default_retry_after: Duration::from_millis(default_ms),
    })
}

/// A wall clock anywhere from the epoch to year ~2500.
fn wall_clock() -> impl Strategy<Value = SystemTime> {
    (0u64..16_725_225_600).prop_map(|s| UNIX_EPOCH + Duration::from_secs(s))
}

fn header_map(pairs: &[(usize, String)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (i, v) in pairs {
        let name = HeaderName::from_static(HEADERS[i % HEADERS.len()]);
        // Non-ASCII goes in as raw bytes (obs-text), as a hostile server could send.
        let value = HeaderValue::from_str(v)
            .or_else(|_| HeaderValue::from_bytes(v.as_bytes()))
            .unwrap_or_else(|_| HeaderValue::from_static("garbage"));
        h.append(name, value);
    }
    h
}

fn assert_bounded(info: &RateLimitInfo, limits: &HeaderLimits) {
    let max = limits.max_wait;
    for (what, d) in [
        ("retry_after", info.retry_after),
        ("reset_requests", info.reset_requests),
        ("reset_tokens", info.reset_tokens),
        ("wait_hint", info.wait_hint()),
    ] {
        if let Some(d) = d {
            assert!(d <= max, "{what} {d:?} exceeds max_wait {max:?}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Each parser alone: no panic, and what it returns can be clamped and added to
    /// an instant without overflow.
    #[test]
    fn every_parser_survives_hostile_numbers(v in hostile_number(), now in wall_clock(), limits in limits()) {
        let results = [
            parse_retry_after(&v, now),
            parse_retry_after_ms(&v),
            parse_reset(&v, now),
            parse_rfc3339_wait(&v, now),
        ];
        for d in results.into_iter().flatten() {
            let clamped = limits.clamp(d);
            prop_assert!(clamped <= limits.max_wait);
            prop_assert!(clamped <= d);
            // The clamped wait is safe to add to a clock.
            let _ = tokio::time::Instant::now() + clamped;
        }
        if let Some(at) = parse_rfc3339(&v) {
            prop_assert!(at >= UNIX_EPOCH);
        }
        if let Ok(d) = parse_duration(&v) {
            prop_assert!(d <= Duration::from_secs(1_000_000_000), "{v:?} gave {d:?}");
        }
    }

    /// A whole response's worth of hostile headers through `from_headers`.
    #[test]
    fn from_headers_is_bounded_by_max_wait(
        pairs in prop::collection::vec((0usize..HEADERS.len(), hostile_number()), 0..40),
        now in wall_clock(),
        limits in limits(),
    ) {
        let info = RateLimitInfo::from_headers(&header_map(&pairs), now, &limits);
        assert_bounded(&info, &limits);
    }

    /// The classifier reads 429s' headers: its wait is bounded too, whatever the
    /// headers say.
    #[test]
    fn classifier_wait_is_bounded(
        pairs in prop::collection::vec((0usize..HEADERS.len(), hostile_number()), 0..40),
        status in prop::sample::select(vec![200u16, 429, 503, 529]),
        limits in limits(),
    ) {
        let mut res = Response::new(());
        *res.status_mut() = http::StatusCode::from_u16(status).unwrap();
        *res.headers_mut() = header_map(&pairs);
        let outcome = LlmClassifier::new(limits).classify_response(&res);
        if let Outcome::RateLimited { retry_after: Some(d) } = outcome {
            prop_assert!(d <= limits.max_wait, "{d:?} exceeds {:?}", limits.max_wait);
        }
    }
}

/// The header that used to panic the process (`Duration::from_secs_f64` overflow),
/// on every header that takes a number, through both entry points.
#[test]
fn parse_reset_1e23_is_clamped_not_a_panic() {
    let limits = HeaderLimits::default();
    let now = SystemTime::now();
    assert_eq!(parse_reset("1e23", now), Some(Duration::MAX));
    let mut h = HeaderMap::new();
    for name in HEADERS {
        h.insert(*name, HeaderValue::from_static("1e23"));
    }
    h.insert(
        "x-ratelimit-remaining-requests",
        HeaderValue::from_static("0"),
    );
    let info = RateLimitInfo::from_headers(&h, now, &limits);
    assert_eq!(info.reset_requests, Some(limits.max_wait));
    assert_eq!(info.retry_after, Some(limits.max_wait));
    assert_eq!(info.wait_hint(), Some(limits.max_wait));

    let mut res = Response::new(());
    *res.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
    *res.headers_mut() = h.clone();
    assert_eq!(
        LlmClassifier::default().classify_response(&res),
        Outcome::RateLimited {
            retry_after: Some(limits.max_wait)
        }
    );
    *res.status_mut() = http::StatusCode::OK;
    assert_eq!(
        LlmClassifier::default().classify_response(&res),
        Outcome::Success
    );
}

/// Every hostile value on every header at once, through the classifier.
#[test]
fn header_map_full_of_hostile_values() {
    let limits = HeaderLimits {
        max_wait: Duration::from_secs(30),
        ..HeaderLimits::default()
    };
    for v in HOSTILE {
        let pairs: Vec<(usize, String)> = (0..HEADERS.len()).map(|i| (i, v.to_string())).collect();
        let h = header_map(&pairs);
        let info = RateLimitInfo::from_headers(&h, SystemTime::now(), &limits);
        assert_bounded(&info, &limits);
        let mut res = Response::new(());
        *res.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
        *res.headers_mut() = h;
        match LlmClassifier::new(limits).classify_response(&res) {
            Outcome::RateLimited { retry_after } => {
                assert!(retry_after.is_none_or(|d| d <= limits.max_wait), "{v:?}");
            }
            other => panic!("a 429 must stay rate-limited, got {other:?} for {v:?}"),
        }
    }
}

/// Thousands of headers, each absurd, in one map.
#[test]
fn thousands_of_hostile_headers() {
    let pairs: Vec<(usize, String)> = (0..5_000)
        .map(|i| (i, HOSTILE[i % HOSTILE.len()].to_string()))
        .collect();
    let limits = HeaderLimits::default();
    let info = RateLimitInfo::from_headers(&header_map(&pairs), SystemTime::now(), &limits);
    assert_bounded(&info, &limits);
}
