//! The SSE parser on arbitrary bytes: it never panics, stays within its limits, and
//! gives the same events and the same error however the input is split.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_failover_validate::sse::{SseError, SseEvent, SseLimits, SseParser};

fn run(input: &[u8], step: usize, limits: SseLimits) -> (Vec<SseEvent>, Option<SseError>) {
    let mut p = SseParser::with_limits(limits);
    let mut out = Vec::new();
    for chunk in input.chunks(step.max(1)) {
        if let Err(e) = p.feed(chunk, &mut out) {
            return (out, Some(e));
        }
    }
    (out, None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let limits = SseLimits {
        max_line: 16 + usize::from(ctl) * 4,
        max_event: 32 + usize::from(ctl) * 8,
    };
    let whole = run(input, input.len(), limits);
    let split = run(input, usize::from(ctl % 13) + 1, limits);
    let bytewise = run(input, 1, limits);
    assert_eq!(whole, split);
    assert_eq!(whole, bytewise);
    for ev in &whole.0 {
        // Invalid UTF-8 may grow up to 3x when replaced by U+FFFD.
        assert!(ev.data.len() <= limits.max_event * 3);
    }
});
