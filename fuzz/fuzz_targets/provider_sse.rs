//! The provider's SSE parser (the one the Anthropic stream translator reads with)
//! on arbitrary bytes: it never panics, never hands out an event larger than its
//! limit, and gives the same events and the same verdict however the input is
//! split, empty chunks included.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tower_failover_core::error::Invalid;
use tower_failover_provider::{SseEvent, SseParser};

type Events = Vec<(String, Vec<u8>)>;

fn run(input: &[u8], cuts: &[usize], max_event: usize) -> (Events, bool) {
    let mut p = SseParser::new(max_event);
    let mut out: Events = Vec::new();
    let mut f = |e: SseEvent<'_>| -> Result<(), Invalid> {
        out.push((e.event.to_owned(), e.data.to_vec()));
        Ok(())
    };
    let mut from = 0;
    for &c in cuts.iter().chain(std::iter::once(&input.len())) {
        let c = c.clamp(from, input.len());
        if p.feed(&input[from..c], &mut f).is_err() {
            return (out, false);
        }
        from = c;
    }
    let ok = p.finish(&mut f).is_ok();
    (out, ok)
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let max_event = 8 + usize::from(ctl) * 2;
    let whole = run(input, &[], max_event);
    // Cuts every `step` bytes, each one doubled (an empty chunk between).
    let step = usize::from(ctl % 11) + 1;
    let cuts: Vec<usize> = (0..input.len())
        .step_by(step)
        .flat_map(|i| [i, i])
        .collect();
    let split = run(input, &cuts, max_event);
    let bytewise: Vec<usize> = (0..input.len()).collect();
    let bytewise = run(input, &bytewise, max_event);
    assert_eq!(whole, split);
    assert_eq!(whole, bytewise);
    for (_, data) in &whole.0 {
        assert!(data.len() <= max_event);
    }
});
