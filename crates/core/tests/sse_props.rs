//! Property tests of the SSE parser (`tower_failover_core::sse`), the CI-sized twin
//! of the `sse_parser` cargo-fuzz target (see `docs/fuzzing.md`): the same events
//! and the same error however the stream is split (empty chunks included) and byte
//! by byte, agreement with a naive whole-stream reading of the standard, no event
//! past its limit; and the regressions the fuzzing found, each as its own test.

use proptest::prelude::*;
use proptest::sample::Index;
use tower_failover_core::sse::{SseError, SseEvent, SseLimits, SseParser};

/// An event with its fields copied out: (`event:` field, data, id, retry).
type Owned = (String, Vec<u8>, Option<String>, Option<u64>);

fn own(ev: SseEvent<'_>) -> Owned {
    (
        ev.event.to_owned(),
        ev.data.to_vec(),
        ev.id.map(str::to_owned),
        ev.retry,
    )
}

/// What one run produced: the events, and the error that ended it if any.
type Run = (Vec<Owned>, Option<SseError>);

/// Split points (possibly repeated: empty chunks) over `len` bytes.
fn split_at(len: usize, cuts: &[Index]) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    points.extend([0, len]);
    points.sort_unstable();
    points.windows(2).map(|w| (w[0], w[1])).collect()
}

/// Feeds `input` cut at `cuts`, then calls `finish` if `finish` is set.
fn parse_split(input: &[u8], cuts: &[Index], limits: SseLimits, finish: bool) -> Run {
    let mut p = SseParser::with_limits(limits);
    let mut out = Vec::new();
    let mut f = |ev: SseEvent<'_>| {
        out.push(own(ev));
        Ok::<_, SseError>(())
    };
    for (a, b) in split_at(input.len(), cuts) {
        if let Err(e) = p.feed(&input[a..b], &mut f) {
            return (out, Some(e));
        }
    }
    let end = if finish { p.finish(&mut f).err() } else { None };
    (out, end)
}

/// A deliberately naive reading of the standard, on the whole stream at once.
fn reference(input: &[u8]) -> Vec<Owned> {
    let input = input.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(input);
    let mut lines: Vec<&[u8]> = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'\r' => {
                lines.push(&input[start..i]);
                if input.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                start = i + 1;
            }
            b'\n' => {
                lines.push(&input[start..i]);
                start = i + 1;
            }
            _ => {}
        }
        i += 1;
    }
    // A final line without a terminator never completes an event.
    let mut out = Vec::new();
    let (mut data, mut has_data, mut event, mut id, mut retry) =
        (Vec::<u8>::new(), false, String::new(), None::<String>, None);
    for line in lines {
        if line.is_empty() {
            if has_data {
                out.push((event.clone(), data.clone(), id.clone(), retry));
            }
            data.clear();
            has_data = false;
            event.clear();
            retry = None;
            continue;
        }
        if line[0] == b':' {
            continue;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(c) => {
                let v = &line[c + 1..];
                (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if has_data {
                    data.push(b'\n');
                }
                data.extend_from_slice(value);
                has_data = true;
            }
            b"event" => event = String::from_utf8_lossy(value).into_owned(),
            b"id" if !value.contains(&0) => id = Some(String::from_utf8_lossy(value).into_owned()),
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                retry = std::str::from_utf8(value)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .or(Some(u64::MAX))
            }
            _ => {}
        }
    }
    out
}

/// Streams made of the pieces that matter: fields, comments, every line ending,
/// BOM bytes, multi-byte characters, LLM payloads.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"data".to_vec()),
        Just(b"event: delta".to_vec()),
        Just(b"event: ".to_vec()),
        Just(b"id: 42".to_vec()),
        Just(b"id: a\0b".to_vec()),
        Just(b"retry: 250".to_vec()),
        Just(b": comment".to_vec()),
        Just(b":".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\n\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just("é—😀".as_bytes().to_vec()),
        Just(b"[DONE]".to_vec()),
        Just(b"{\"choices\":[{\"delta\":{\"content\":\"hi\"}}]}".to_vec()),
        "[a-z{}\" :]{0,12}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Cut anywhere (empty chunks included), the same events as whole, and those
    /// of the naive reading of the standard.
    #[test]
    fn splitting_never_changes_the_events(
        input in sse_bytes(),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let whole = parse_split(&input, &[], SseLimits::default(), false);
        let split = parse_split(&input, &cuts, SseLimits::default(), false);
        prop_assert_eq!(&whole, &split);
        prop_assert!(whole.1.is_none());
        prop_assert_eq!(whole.0, reference(&input));
    }

    /// One byte at a time, `finish` included: the same as whole.
    #[test]
    fn byte_by_byte_is_the_same_too(input in sse_bytes()) {
        let whole = parse_split(&input, &[], SseLimits::default(), true);
        let mut p = SseParser::new();
        let mut out = Vec::new();
        let mut f = |ev: SseEvent<'_>| {
            out.push(own(ev));
            Ok::<_, SseError>(())
        };
        for b in &input {
            p.feed(std::slice::from_ref(b), &mut f).unwrap();
        }
        p.finish(&mut f).unwrap();
        prop_assert_eq!(whole.0, out);
    }

    /// With small limits: the same events and the same error at any split, and no
    /// event's data past its limit.
    #[test]
    fn limits_fail_the_same_way_at_any_split(
        input in sse_bytes(),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
        max_line in 1usize..40,
        max_event in prop_oneof![1usize..64, Just(1 << 20)],
        finish in any::<bool>(),
    ) {
        let limits = SseLimits { max_line, max_event };
        let whole = parse_split(&input, &[], limits, finish);
        let split = parse_split(&input, &cuts, limits, finish);
        prop_assert_eq!(&whole, &split);
        for (_, data, _, _) in &whole.0 {
            prop_assert!(data.len() <= max_event);
        }
    }
}

/// Found by the fuzzing of the provider's former parser: a CR ending one chunk,
/// then an empty chunk, then a chunk starting with LF read the LF as a blank line
/// (an extra event) where the whole stream had one CRLF.
#[test]
fn empty_chunk_between_cr_and_lf() {
    let input = b"data: a\r\ndata: b\n\n";
    let whole = parse_split(input, &[], SseLimits::default(), true);
    assert_eq!(whole.0.len(), 1);
    assert_eq!(whole.0[0].1, b"a\nb");
    let mut p = SseParser::new();
    let mut out = Vec::new();
    let mut f = |ev: SseEvent<'_>| {
        out.push(own(ev));
        Ok::<_, SseError>(())
    };
    for chunk in [&b"data: a\r"[..], b"", b"\ndata: b\n\n"] {
        p.feed(chunk, &mut f).unwrap();
    }
    p.finish(&mut f).unwrap();
    assert_eq!((out, None), whole);
}

/// Found by the fuzzing of the provider's former parser: a line longer than the
/// limit was refused when it arrived in pieces but accepted when it arrived whole
/// (a comment or an `event:` line of any length, held in memory).
#[test]
fn long_line_refused_whole_or_split() {
    let line = format!(": {}\n\ndata: x\n\n", "c".repeat(100));
    let limits = SseLimits::both(32);
    let whole = parse_split(line.as_bytes(), &[], limits, true);
    assert_eq!(whole, (vec![], Some(SseError::LineTooLong { limit: 32 })));
    let mut p = SseParser::with_limits(limits);
    let mut f = |_: SseEvent<'_>| Ok::<_, SseError>(());
    let event = format!("event: {}\n", "e".repeat(64));
    assert!(p.feed(event.as_bytes(), &mut f).is_err());
}
