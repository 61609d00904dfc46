//! Property tests of the duration form the rate-limit headers (`6m0s`) and the
//! configuration share, the CI-sized twin of the `ratelimit_headers` cargo-fuzz
//! target (see `docs/fuzzing.md`; every header form is in `header_props.rs`).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;
use tower_failover_core::{HeaderLimits, RateLimitInfo, format_duration, parse_duration};

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1000))]

    /// What `format_duration` writes, `parse_duration` reads back, to the three
    /// decimals the format keeps.
    #[test]
    fn format_then_parse_is_within_a_thousandth(nanos in 0u64..(31 * 365 * 86_400 * 1_000_000_000)) {
        let d = Duration::from_nanos(nanos);
        let back = parse_duration(&format_duration(d)).unwrap();
        prop_assert!(back.abs_diff(d) <= (d / 1000).max(Duration::from_micros(1)), "{:?} -> {:?}", d, back);
    }

    /// Any string: a bounded duration or an error.
    #[test]
    fn any_string_is_a_bounded_duration_or_an_error(s in "[0-9.eE+\\-nsuµmhd ]{0,16}|\\PC{0,16}") {
        if let Ok(d) = parse_duration(&s) {
            prop_assert!(d <= Duration::from_secs(1_000_000_000));
        }
    }

    /// Header values of any bytes (not only visible ASCII) on every rate-limit
    /// header: a bounded result, never a panic.
    #[test]
    fn any_header_bytes_are_bounded(
        values in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..24), 0..12),
        secs in any::<u32>(),
    ) {
        const NAMES: &[&str] = &[
            "retry-after", "retry-after-ms", "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens", "x-ratelimit-reset", "x-ratelimit-remaining-tokens",
            "anthropic-ratelimit-tokens-reset", "anthropic-ratelimit-requests-remaining",
        ];
        let mut headers = HeaderMap::new();
        for (i, v) in values.iter().enumerate() {
            if let Ok(v) = HeaderValue::from_bytes(v) {
                headers.append(HeaderName::from_static(NAMES[i % NAMES.len()]), v);
            }
        }
        let now: SystemTime = UNIX_EPOCH + Duration::from_secs(u64::from(secs));
        let limits = HeaderLimits::default();
        let info = RateLimitInfo::from_headers(&headers, now, &limits);
        for d in [info.retry_after, info.reset_requests, info.reset_tokens, info.wait_hint()].into_iter().flatten() {
            prop_assert!(d <= limits.max_wait);
        }
    }
}
