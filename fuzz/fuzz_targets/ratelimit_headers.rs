//! Every rate-limit header form on arbitrary values: no panic, no overflow, and
//! every wait that reaches a layer is at most `max_wait`. Durations that parse
//! survive a format/parse round trip (to the three decimals the format keeps).
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;
use tower_failover_core::{
    HeaderLimits, RateLimitInfo, format_duration, parse_duration, parse_reset, parse_retry_after,
    parse_retry_after_ms, parse_rfc3339, parse_rfc3339_wait,
};

const HEADERS: &[&str] = &tower_failover_core::RATE_LIMIT_HEADERS;

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let (clock, rest) = data.split_at(8);
    let secs = u64::from_le_bytes(clock.try_into().unwrap());
    // Any wall clock up to the year ~2^40 s; beyond that SystemTime itself overflows.
    let now = UNIX_EPOCH + Duration::from_secs(secs % (1 << 40));
    let limits = HeaderLimits {
        max_wait: Duration::from_millis(u64::from(rest[0]) * 1000 + 1),
        default_retry_after: Duration::from_secs(1),
    };
    let mut headers = HeaderMap::new();
    for (i, line) in rest[1..].split(|b| *b == b'\n').enumerate() {
        if let Ok(s) = std::str::from_utf8(line) {
            let _ = parse_duration(s);
            let _ = parse_retry_after(s, now);
            let _ = parse_retry_after_ms(s);
            let _ = parse_reset(s, now);
            let _ = parse_rfc3339(s);
            let _ = parse_rfc3339_wait(s, now);
            if let Ok(d) = parse_duration(s) {
                // `format_duration` keeps three decimals: back within 1/1000 (or 1 µs).
                let back = parse_duration(&format_duration(d)).expect("reads its own format");
                let err = back.abs_diff(d);
                assert!(
                    err <= (d / 1000).max(Duration::from_micros(1)),
                    "{s:?}: {d:?} -> {back:?}"
                );
            }
        }
        let name = HeaderName::from_static(HEADERS[i % HEADERS.len()]);
        if let Ok(v) = HeaderValue::from_bytes(line) {
            headers.append(name, v);
        }
    }
    let info = RateLimitInfo::from_headers(&headers, now, &limits);
    for d in [
        info.retry_after,
        info.reset_requests,
        info.reset_tokens,
        info.wait_hint(),
    ]
    .into_iter()
    .flatten()
    {
        assert!(d <= limits.max_wait, "{d:?} > {:?}", limits.max_wait);
    }
    let _ = info.is_exhausted();
});
