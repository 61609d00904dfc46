//! Property tests of the validation checks over whole and streamed bodies, the
//! CI-sized twins of the `validate_body` and `validate_stream` cargo-fuzz targets
//! (see `docs/fuzzing.md`).
//!
//! - Every built-in check, on any body: a verdict, never a panic.
//! - A streamed answer is accepted or refused alike however the provider's bytes
//!   are split (when a failed check after the commit point ends the stream with
//!   an error; when it is only reported, an answer accepted whole is accepted
//!   split), and an accepted stream reaches the caller byte for byte.
//! - A well-formed stream cut anywhere before its terminal event never reaches
//!   the caller as a complete success (truncation is always an error).

mod common;

use bytes::Bytes;
use common::*;
use http::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use tower::{Layer, ServiceExt};
use tower_failover_validate::checks::{FinishReason, JsonSchema};
use tower_failover_validate::{AfterCommit, ValidateLayer, Validators, Verdict, check_body};

const WORDS: &[&str] = &[
    "choices",
    "message",
    "delta",
    "content",
    "role",
    "assistant",
    "refusal",
    "tool_calls",
    "function_call",
    "audio",
    "reasoning_content",
    "reasoning",
    "finish_reason",
    "stop",
    "length",
    "index",
    "error",
    "type",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "text_delta",
    "text",
    "tool_use",
    "stop_reason",
    "max_tokens",
    "end_turn",
    "message_stop",
    "message_delta",
    "content_block",
    "usage",
    "id",
    "object",
    "I'm sorry",
    "I cannot",
    "parts",
    "answer",
    "name",
];

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(WORDS).prop_map(str::to_owned)
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(1e300)),
        word().prop_map(Value::from),
        "[a-z \"\\\\é😀]{0,10}".prop_map(Value::from),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..5)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((word(), json_value()), 0..6)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

/// Every built-in check, the opt-in ones included.
fn all_checks() -> Validators {
    let schema = json!({"type": "object", "required": ["answer"],
        "properties": {"answer": {"type": "string", "maxLength": 8}}});
    Validators::llm()
        .with(FinishReason::default())
        .with(JsonSchema::new(&schema).unwrap())
        .with(JsonSchema::new(&schema).unwrap().on_body())
}

/// Runs the default layer over a streamed answer cut at `cuts`: the bytes the
/// caller read, or the error it got.
fn stream_through_layer(stream: &[u8], cuts: &[Index]) -> Result<Bytes, String> {
    stream_with(stream, cuts, AfterCommit::Report)
}

/// Like [`stream_through_layer`], with this handling of failed checks after the
/// commit point.
fn stream_with(stream: &[u8], cuts: &[Index], after: AfterCommit) -> Result<Bytes, String> {
    let parts = cut_at(stream, cuts);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let res = ValidateLayer::llm()
            .after_commit(after)
            .layer(once(sse(chunks(parts))))
            .oneshot(Request::new(()))
            .await
            .map_err(|e| format!("call: {e}"))?;
        res.into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("body: {e}"))
    })
}

/// Events as SSE, `[DONE]` last when `done`.
fn sse_of(events: &[Value], done: bool) -> Vec<u8> {
    let mut out = String::new();
    for ev in events {
        out.push_str(&format!("data: {ev}\n\n"));
    }
    if done {
        out.push_str(DONE);
    }
    out.into_bytes()
}

/// A complete Anthropic stream saying `words`.
fn anthropic_stream(words: &[String]) -> Vec<u8> {
    let mut events = vec![
        (
            "message_start",
            json!({"type": "message_start", "message": {"id": "m", "content": []}}),
        ),
        (
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
    ];
    for w in words {
        events.push(("content_block_delta", json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": w}})));
    }
    events.push((
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}}),
    ));
    events.push(("message_stop", json!({"type": "message_stop"})));
    events
        .iter()
        .map(|(name, data)| format!("event: {name}\ndata: {data}\n\n"))
        .collect::<String>()
        .into_bytes()
}

/// Words that cannot open with a refusal phrase.
fn words() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[0-9#%é😀 ,.]{1,8}", 1..12)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Every check on any JSON (and any bytes): a verdict, never a panic.
    #[test]
    fn every_check_gives_a_verdict_on_any_body(
        body in prop_oneof![json_object(), json_value()],
        bytes in prop::collection::vec(any::<u8>(), 0..48),
    ) {
        let checks = all_checks();
        let _ = check_body(&checks, body.to_string().as_bytes());
        let _ = check_body(&checks, &bytes);
    }

    /// A well-formed answer with text passes the default checks, in both formats.
    #[test]
    fn a_plain_answer_passes(text in "[0-9#%é😀 ,.]{1,40}") {
        prop_assume!(!text.trim().is_empty());
        let openai = json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}]});
        prop_assert_eq!(check_body(&Validators::llm(), openai.to_string().as_bytes()), Verdict::Pass);
        let anthropic = json!({"type": "message", "content": [{"type": "text", "text": text}], "stop_reason": "end_turn"});
        prop_assert_eq!(check_body(&Validators::llm(), anthropic.to_string().as_bytes()), Verdict::Pass);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any stream of vocabulary events, with a failed check after the commit point
    /// ending the stream with an error: accepted or refused alike whole and split.
    /// When it is only reported (the default), a split stream may commit before the
    /// event the whole stream is refused for and is then delivered, but one
    /// accepted whole is accepted split. An accepted stream is delivered byte for
    /// byte.
    #[test]
    fn a_streams_verdict_is_independent_of_chunking(
        events in prop::collection::vec(json_object(), 0..6),
        done in any::<bool>(),
        cuts in prop::collection::vec(any::<Index>(), 0..12),
    ) {
        let stream = sse_of(&events, done);
        let whole = stream_with(&stream, &[], AfterCommit::Error);
        let split = stream_with(&stream, &cuts, AfterCommit::Error);
        prop_assert_eq!(whole.is_ok(), split.is_ok(), "{:?} / {:?}", whole, split);
        let whole_report = stream_with(&stream, &[], AfterCommit::Report);
        let split_report = stream_with(&stream, &cuts, AfterCommit::Report);
        if whole_report.is_ok() {
            prop_assert!(split_report.is_ok(), "{:?}", split_report);
        }
        for bytes in [&whole, &split, &whole_report, &split_report].into_iter().flatten() {
            prop_assert_eq!(&bytes[..], &stream[..]);
        }
    }

    /// A good stream (OpenAI or Anthropic) cut anywhere before its terminal event
    /// is an error for the caller, never a short answer; whole, it is delivered
    /// byte for byte.
    #[test]
    fn a_truncated_stream_is_never_a_success(
        words in words(),
        anthropic in any::<bool>(),
        cut in any::<Index>(),
        cuts in prop::collection::vec(any::<Index>(), 0..8),
    ) {
        let stream = if anthropic {
            anthropic_stream(&words)
        } else {
            let refs: Vec<&str> = words.iter().map(String::as_str).collect();
            oa_stream(&refs, "stop").concat().into_bytes()
        };
        let whole = stream_through_layer(&stream, &cuts);
        prop_assert_eq!(whole.as_deref().ok(), Some(&stream[..]));
        let short = &stream[..cut.index(stream.len())];
        let got = stream_through_layer(short, &cuts);
        prop_assert!(got.is_err(), "a stream cut at {} of {} bytes passed", short.len(), stream.len());
    }
}
