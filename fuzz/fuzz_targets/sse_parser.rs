//! The SSE parser (`tower_failover_core::sse`, the one the provider, the stream
//! translators, validation and the gateway read streams with) on arbitrary bytes
//! and limits: it never panics, never hands out an event past its limit, and gives
//! the same events and the same error (`finish` included) whole, split every *n*
//! bytes with an empty chunk at each split, and byte by byte.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_failover_core::sse::{SseError, SseEvent, SseLimits, SseParser};

type Events = Vec<(String, Vec<u8>, Option<String>, Option<u64>)>;

fn run(input: &[u8], cuts: &[usize], limits: SseLimits) -> (Events, Option<SseError>) {
    let mut p = SseParser::with_limits(limits);
    let mut out: Events = Vec::new();
    let mut f = |e: SseEvent<'_>| -> Result<(), SseError> {
        out.push((
            e.event.to_owned(),
            e.data.to_vec(),
            e.id.map(str::to_owned),
            e.retry,
        ));
        Ok(())
    };
    let mut from = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        let c = c.clamp(from, input.len());
        if let Err(e) = p.feed(&input[from..c], &mut f) {
            return (out, Some(e));
        }
        from = c;
    }
    let end = p.finish(&mut f).err();
    (out, end)
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let limits = SseLimits {
        max_line: 8 + usize::from(ctl) * 2,
        max_event: 16 + usize::from(ctl) * 4,
    };
    let whole = run(input, &[], limits);
    // Cuts every `step` bytes, each one doubled (an empty chunk between).
    let step = usize::from(ctl % 13) + 1;
    let cuts: Vec<usize> = (0..input.len())
        .step_by(step)
        .flat_map(|i| [i, i])
        .collect();
    let split = run(input, &cuts, limits);
    let bytewise: Vec<usize> = (0..input.len()).collect();
    let bytewise = run(input, &bytewise, limits);
    assert_eq!(whole, split);
    assert_eq!(whole, bytewise);
    for (_, data, _, _) in &whole.0 {
        assert!(data.len() <= limits.max_event);
    }
});
