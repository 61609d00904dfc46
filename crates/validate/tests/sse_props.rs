//! Property tests: the SSE parser gives the same events however the stream is split,
//! agrees with a naive whole-stream reference, and the layer hands the caller exactly
//! the bytes the provider sent.

mod common;

use common::*;
use http::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::sample::Index;
use tower::{Layer, ServiceExt};
use tower_failover_validate::ValidateLayer;
use tower_failover_validate::sse::{SseError, SseEvent, SseLimits, SseParser};

/// Feeds `input` cut at `cuts`, returning the events and whether it failed.
fn parse_split(
    input: &[u8],
    cuts: &[Index],
    limits: SseLimits,
) -> (Vec<SseEvent>, Option<SseError>) {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(input.len() + 1)).collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    let mut p = SseParser::with_limits(limits);
    let mut out = Vec::new();
    for w in points.windows(2) {
        if let Err(e) = p.feed(&input[w[0]..w[1]], &mut out) {
            return (out, Some(e));
        }
    }
    (out, None)
}

/// A deliberately naive reading of the standard, on the whole stream at once.
fn reference(input: &[u8]) -> Vec<SseEvent> {
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
    let (mut data, mut has_data, mut event, mut id, mut retry) = (
        Vec::<u8>::new(),
        false,
        None::<Vec<u8>>,
        None::<String>,
        None,
    );
    for line in lines {
        if line.is_empty() {
            if has_data {
                out.push(SseEvent {
                    event_type: event
                        .take()
                        .map(|e| String::from_utf8_lossy(&e).into_owned()),
                    data: String::from_utf8_lossy(&data).into_owned(),
                    id: id.clone(),
                    retry: retry.take(),
                });
            }
            data.clear();
            has_data = false;
            event = None;
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
            b"event" => event = Some(value.to_vec()),
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
/// BOM bytes, multi-byte characters.
fn sse_bytes() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: ".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"data".to_vec()),
        Just(b"event: delta".to_vec()),
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
        "[a-z :]{0,12}".prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 0..6),
    ];
    prop::collection::vec(piece, 0..40).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn splitting_never_changes_the_events(input in sse_bytes(), cuts in prop::collection::vec(any::<Index>(), 0..12)) {
        let whole = parse_split(&input, &[], SseLimits::default());
        let split = parse_split(&input, &cuts, SseLimits::default());
        prop_assert_eq!(&whole, &split);
        prop_assert!(whole.1.is_none());
        prop_assert_eq!(whole.0, reference(&input));
    }

    #[test]
    fn byte_by_byte_is_the_same_too(input in sse_bytes()) {
        let whole = parse_split(&input, &[], SseLimits::default());
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for b in &input {
            p.feed(std::slice::from_ref(b), &mut out).unwrap();
        }
        prop_assert_eq!(whole.0, out);
    }

    #[test]
    fn limits_fail_the_same_way_at_any_split(
        input in sse_bytes(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
        max_line in 1usize..40,
        max_event in 1usize..60,
    ) {
        let limits = SseLimits { max_line, max_event };
        let whole = parse_split(&input, &[], limits);
        let split = parse_split(&input, &cuts, limits);
        prop_assert_eq!(whole, split);
    }
}

fn words() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[A-Za-z ,.é😀]{1,8}", 1..20)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_caller_gets_exactly_the_bytes_sent(words in words(), cuts in prop::collection::vec(any::<Index>(), 0..16)) {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        // Words that happen to start a refusal phrase are fine: the stream is complete.
        let stream = oa_stream(&refs, "stop").concat().into_bytes();
        let parts = cut_at(&stream, &cuts);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = rt.block_on(async {
            let layer = ValidateLayer::llm();
            let res = layer.layer(once(sse(chunks(parts)))).oneshot(Request::new(())).await?;
            let bytes = res.into_body().collect().await?.to_bytes();
            Ok::<_, tower::BoxError>(bytes)
        });
        match got {
            Ok(bytes) => prop_assert_eq!(&bytes[..], &stream[..]),
            Err(e) => {
                // The only legitimate rejection of these streams: content that opens
                // with a refusal phrase, which random words cannot produce.
                prop_assert!(false, "rejected: {}", e);
            }
        }
    }
}
