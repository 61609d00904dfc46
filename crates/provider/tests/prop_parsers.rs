//! Property tests of every parser in this crate that reads a provider's or a
//! caller's bytes, the CI-sized twins of the cargo-fuzz targets in `fuzz/` (see
//! `docs/fuzzing.md`): both directions of the Anthropic translation, the inbound
//! Messages API and the OpenAI request preparation. (The SSE parser they read
//! streams with is core's; its twin is `crates/core/tests/sse_props.rs`.)
//!
//! Inputs are built from the vocabulary these parsers look for (field names,
//! event types, roles) so that random cases reach deep into them, not only their
//! first `serde` error. Beyond "no panic": the stream translator gives the same
//! output however the bytes are split (empty chunks included), and text survives
//! translation.

use proptest::prelude::*;
use proptest::sample::Index;
use serde_json::{Map, Value, json};
use tower_failover_core::replay::ReplayBody;
use tower_failover_provider::ModelMap;
use tower_failover_provider::translate::anthropic::{
    RequestOptions, StreamTranslator, request_to_anthropic, response_to_openai,
};
use tower_failover_provider::translate::messages::{
    MessagesStream, request_from_anthropic, response_to_anthropic,
};
use tower_failover_provider::translate::openai::prepare_request;

/// Field names, types and roles of both wire formats.
const WORDS: &[&str] = &[
    "model",
    "messages",
    "role",
    "content",
    "type",
    "text",
    "tools",
    "tool_calls",
    "function",
    "name",
    "arguments",
    "id",
    "system",
    "stream",
    "stream_options",
    "include_usage",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stop",
    "tool_choice",
    "image_url",
    "url",
    "usage",
    "input_tokens",
    "output_tokens",
    "prompt_tokens",
    "completion_tokens",
    "cache_read_input_tokens",
    "choices",
    "message",
    "delta",
    "index",
    "stop_reason",
    "finish_reason",
    "input",
    "partial_json",
    "content_block",
    "error",
    "tool_use_id",
    "tool_call_id",
    "source",
    "data",
    "media_type",
    "user",
    "assistant",
    "tool",
    "developer",
    "function",
    "text_delta",
    "input_json_delta",
    "message_start",
    "content_block_start",
    "content_block_delta",
    "content_block_stop",
    "message_delta",
    "message_stop",
    "ping",
    "tool_use",
    "tool_result",
    "image",
    "base64",
    "parallel_tool_calls",
    "temperature",
    "response_format",
    "metadata",
    "auto",
    "any",
    "none",
    "required",
    "stop_sequences",
    "end_turn",
    "refusal",
    "overloaded_error",
    "thinking",
    "is_error",
    "data:image/png;base64,AAAA",
    "top_k",
    "top_p",
];

fn word() -> impl Strategy<Value = String> {
    prop::sample::select(WORDS).prop_map(str::to_owned)
}

/// Hostile scalars: huge, negative and fractional numbers, odd strings.
fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        prop_oneof![
            Just(1e23),
            Just(-1.5),
            Just(f64::MAX),
            Just(0.5),
            any::<f64>()
        ]
        .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        word().prop_map(Value::from),
        "[a-zA-Z0-9 \"\\\\\n\u{e9}\u{1f600}]{0,12}".prop_map(Value::from),
    ]
}

/// JSON made of the parsers' own vocabulary, up to a few levels deep.
fn json_value() -> impl Strategy<Value = Value> {
    scalar().prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::vec((word(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// A JSON object (what every request and answer is).
fn json_object() -> impl Strategy<Value = Value> {
    prop::collection::vec((word(), json_value()), 0..8)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()))
}

/// Text with quotes, escapes, newlines and multi-byte characters.
fn text() -> impl Strategy<Value = String> {
    "[a-zA-Z0-9 \"\\\\\n\r:\u{e9}\u{4e2d}\u{1f600}]{1,24}"
}

/// Split points (possibly repeated: empty chunks) over `len` bytes.
fn split_at(len: usize, cuts: &[Index]) -> Vec<(usize, usize)> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(len + 1)).collect();
    points.extend([0, len]);
    points.sort_unstable();
    points.windows(2).map(|w| (w[0], w[1])).collect()
}

// --- OpenAI request → Anthropic request -------------------------------------------

fn opts(models: &ModelMap) -> RequestOptions<'_> {
    RequestOptions {
        models,
        default_max_tokens: Some(1024),
    }
}

/// An OpenAI chat request with vocabulary-built messages and extras.
fn chat_request() -> impl Strategy<Value = Value> {
    let message = prop::collection::vec((word(), json_value()), 0..5)
        .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>()));
    let role = prop::sample::select(&["system", "developer", "user", "assistant", "tool", "x"][..]);
    let message = (role, message, json_value()).prop_map(|(role, mut m, content)| {
        m["role"] = json!(role);
        m["content"] = content;
        m
    });
    (prop::collection::vec(message, 0..6), json_object()).prop_map(|(messages, mut extra)| {
        extra["model"] = json!("gpt-4o");
        extra["messages"] = Value::Array(messages);
        extra
    })
}

fn check_anthropic_request(v: &Value) -> Result<(), TestCaseError> {
    prop_assert!(v["model"].is_string());
    prop_assert!(v["max_tokens"].is_u64(), "{}", v);
    let id_ok = |id: &str| {
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    let messages = v["messages"].as_array().expect("messages");
    if let Some(last) = messages.last().filter(|m| m["role"] == "assistant") {
        // A final assistant turn must not end in whitespace.
        let text = last["content"]
            .as_array()
            .and_then(|b| b.last())
            .and_then(|b| b.get("text"));
        if let Some(t) = text.and_then(Value::as_str) {
            prop_assert_eq!(t, t.trim_end(), "{}", v);
        }
    }
    for m in messages {
        let role = m["role"].as_str().unwrap_or("");
        prop_assert!(role == "user" || role == "assistant", "{}", role);
        // What Anthropic refuses with a 400: blank text blocks, tool ids outside
        // `^[a-zA-Z0-9_-]+$`.
        for b in m["content"].as_array().into_iter().flatten() {
            if let Some(t) = b.get("text").and_then(Value::as_str) {
                prop_assert!(!t.trim().is_empty(), "{}", v);
            }
            for key in ["id", "tool_use_id"] {
                if let Some(id) = b.get(key).and_then(Value::as_str) {
                    prop_assert!(id_ok(id), "{}", v);
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any request body: a typed error or a well-formed Anthropic request.
    #[test]
    fn request_to_anthropic_never_panics(req in prop_oneof![chat_request(), json_value()]) {
        let models = ModelMap::from_iter([("gpt-4o", "claude-x")]);
        if let Ok(r) = request_to_anthropic(req.to_string().as_bytes(), &opts(&models)) {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            check_anthropic_request(&v)?;
        }
    }

    /// User and assistant texts reach Anthropic in order; the system text too.
    #[test]
    fn request_to_anthropic_keeps_the_text(system in text(), turns in prop::collection::vec(text(), 1..6)) {
        let mut messages = vec![json!({"role": "system", "content": system})];
        for (i, t) in turns.iter().enumerate() {
            let role = if i % 2 == 0 { "user" } else { "assistant" };
            messages.push(json!({"role": role, "content": t}));
        }
        let req = json!({"model": "m", "messages": messages});
        let models = ModelMap::default();
        let r = request_to_anthropic(req.to_string().as_bytes(), &opts(&models)).unwrap();
        let v: Value = serde_json::from_slice(&r.body).unwrap();
        prop_assert_eq!(&v["system"], &json!(system));
        let got: Vec<&str> = v["messages"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|m| m["content"].as_array().unwrap())
            .map(|b| b["text"].as_str().unwrap())
            .collect();
        // Blank texts are left out: Anthropic refuses a text block of whitespace.
        // A conversation ending with the assistant (a prefill) ends without
        // trailing whitespace, which Anthropic refuses too.
        let sent: Vec<(usize, &str)> = turns
            .iter()
            .map(String::as_str)
            .enumerate()
            .filter(|(_, t)| !t.trim().is_empty())
            .collect();
        let mut kept: Vec<&str> = sent.iter().map(|&(_, t)| t).collect();
        if let (Some(&(i, _)), Some(last)) = (sent.last(), kept.last_mut())
            && i % 2 == 1
        {
            *last = last.trim_end();
        }
        prop_assert_eq!(got, kept);
    }
}

// --- Anthropic answers → OpenAI answers ------------------------------------------

/// An Anthropic stream event of a known type, its other fields built from the
/// vocabulary.
fn anthropic_event() -> impl Strategy<Value = Value> {
    let kind = prop::sample::select(
        &[
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop",
            "ping",
            "error",
        ][..],
    );
    (kind, json_object(), json_object(), 0u64..3).prop_map(|(kind, mut ev, inner, index)| {
        ev["type"] = json!(kind);
        ev["index"] = json!(index);
        match kind {
            "message_start" => ev["message"] = inner,
            "content_block_start" => ev["content_block"] = inner,
            "content_block_delta" | "message_delta" => ev["delta"] = inner,
            _ => {}
        }
        ev
    })
}

/// The events as SSE bytes, some with an `event:` line, with `\n` or `\r\n`.
fn anthropic_sse(events: &[Value], crlf: bool) -> Vec<u8> {
    let mut out = String::new();
    for (i, ev) in events.iter().enumerate() {
        if i % 2 == 0 {
            out.push_str(&format!("event: {}\n", ev["type"].as_str().unwrap_or("x")));
        }
        out.push_str(&format!("data: {ev}\n\n"));
    }
    if crlf {
        out = out.replace('\n', "\r\n");
    }
    out.into_bytes()
}

/// The translator's output over `input` cut at `cuts`, `created` removed (it is
/// the translator's clock), and whether it ended without an error.
fn translate_stream(input: &[u8], cuts: &[Index]) -> (Vec<Value>, bool) {
    let mut t = StreamTranslator::new(true, 1 << 16);
    let mut out = Vec::new();
    let mut ok = true;
    for (a, b) in split_at(input.len(), cuts) {
        if t.push(&input[a..b], &mut out).is_err() {
            ok = false;
            break;
        }
    }
    ok = ok && t.finish(&mut out).is_ok();
    let text = String::from_utf8(out).expect("UTF-8");
    let events = text
        .split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|e| {
            let data = e.strip_prefix("data: ").expect("a data line");
            if data == "[DONE]" {
                return Value::Null;
            }
            let mut v: Value = serde_json::from_str(data).expect("JSON");
            v.as_object_mut().expect("object").remove("created");
            v
        })
        .collect();
    (events, ok)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any answer body: a typed error or an OpenAI completion with its counts.
    #[test]
    fn response_to_openai_never_panics(body in prop_oneof![json_object(), json_value()]) {
        if let Ok((out, counts)) = response_to_openai(body.to_string().as_bytes()) {
            let v: Value = serde_json::from_slice(&out).unwrap();
            prop_assert!(v["choices"].is_array());
            prop_assert_eq!(v["usage"]["prompt_tokens"].as_u64(), Some(counts.prompt_tokens));
        }
    }

    /// The text blocks of an answer, concatenated, are the OpenAI content.
    #[test]
    fn response_to_openai_keeps_the_text(blocks in prop::collection::vec(text(), 1..5)) {
        let content: Vec<Value> = blocks.iter().map(|t| json!({"type": "text", "text": t})).collect();
        let body = json!({"id": "msg_1", "type": "message", "role": "assistant", "model": "c",
            "content": content, "stop_reason": "end_turn",
            "usage": {"input_tokens": 1, "output_tokens": 2}});
        let (out, _) = response_to_openai(body.to_string().as_bytes()).unwrap();
        let v: Value = serde_json::from_slice(&out).unwrap();
        let want = blocks.concat();
        prop_assert_eq!(v["choices"][0]["message"]["content"].as_str(), Some(want.as_str()));
    }

    /// Any stream of vocabulary events: well-formed OpenAI SSE, identical however
    /// the provider's bytes are split; success only with `[DONE]` last.
    #[test]
    fn stream_translation_is_independent_of_chunking(
        events in prop::collection::vec(anthropic_event(), 0..10),
        crlf in any::<bool>(),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let input = anthropic_sse(&events, crlf);
        let whole = translate_stream(&input, &[]);
        let split = translate_stream(&input, &cuts);
        prop_assert_eq!(&whole, &split);
        if whole.1 {
            prop_assert_eq!(whole.0.last(), Some(&Value::Null));
        }
    }

    /// A well-formed stream's text deltas, concatenated, are the OpenAI content.
    #[test]
    fn stream_translation_keeps_the_text(
        deltas in prop::collection::vec(text(), 1..8),
        cuts in prop::collection::vec(any::<Index>(), 0..16),
    ) {
        let mut events = vec![
            json!({"type": "message_start", "message": {"id": "m", "model": "c", "usage": {"input_tokens": 3}}}),
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ];
        for d in &deltas {
            events.push(json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": d}}));
        }
        events.push(json!({"type": "content_block_stop", "index": 0}));
        events.push(json!({"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 5}}));
        events.push(json!({"type": "message_stop"}));
        let (out, ok) = translate_stream(&anthropic_sse(&events, false), &cuts);
        prop_assert!(ok);
        let text: String = out
            .iter()
            .filter_map(|v| v["choices"][0]["delta"]["content"].as_str())
            .collect();
        prop_assert_eq!(text, deltas.concat());
    }
}

// --- The inbound Messages API (callers speaking Anthropic to the gateway) --------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any caller body, answer body or stream chunk: typed errors, never a panic;
    /// the stream always ends with `message_stop` or `error`.
    #[test]
    fn messages_in_never_panics(
        req in prop_oneof![json_object(), json_value()],
        chunks in prop::collection::vec(json_value(), 0..8),
    ) {
        if let Ok(r) = request_from_anthropic(req.to_string().as_bytes()) {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            prop_assert!(v["messages"].is_array());
        }
        let _ = response_to_anthropic(req.to_string().as_bytes(), "m");
        let mut t = MessagesStream::new("m");
        let mut out = Vec::new();
        for c in &chunks {
            if t.push(c.to_string().as_bytes(), &mut out).is_err() {
                t.fail("api_error", "bad chunk", &mut out);
                break;
            }
        }
        t.finish(&mut out);
        let text = String::from_utf8(out).unwrap();
        let last = text.split("\n\n").filter(|e| !e.is_empty()).last().unwrap_or("");
        prop_assert!(
            last.starts_with("event: message_stop") || last.starts_with("event: error"),
            "{}", last
        );
    }
}

// --- The OpenAI request preparation -----------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any caller body: a typed error, or the caller's JSON with only the model
    /// mapped and, for a stream, usage asked for (`stream_options` added, or its
    /// `include_usage` set, its other options kept).
    #[test]
    fn prepare_request_changes_only_the_model(
        mut req in json_object(),
        model in prop_oneof![Just(json!("a")), Just(json!("b")), scalar()],
        stream in any::<bool>(),
        stream_usage in any::<bool>(),
        options in prop_oneof![
            Just(None),
            Just(Some(json!(null))),
            Just(Some(json!({}))),
            Just(Some(json!({"include_usage": false}))),
            Just(Some(json!({"include_usage": true}))),
            json_object().prop_map(Some),
            (json_object(), any::<bool>()).prop_map(|(mut o, u)| {
                o["include_usage"] = json!(u);
                Some(o)
            }),
        ],
    ) {
        req["model"] = model;
        req["stream"] = json!(stream);
        if let Some(o) = options {
            req["stream_options"] = o;
        }
        let models = ModelMap::from_iter([("a", "gpt-4o"), ("b", "we\"ird\\名")]);
        let Ok(out) = prepare_request(&ReplayBody::from(req.to_string()), &models, stream_usage) else {
            prop_assert!(!req["model"].is_string());
            return Ok(());
        };
        let after: Value = serde_json::from_slice(&out.body).unwrap();
        // Read back by the same parser (serde_json's float reading is not exact).
        let before: Value = serde_json::from_str(&req.to_string()).unwrap();
        let before = before.as_object().unwrap();
        let after = after.as_object().unwrap();
        prop_assert_eq!(after["model"].as_str(), out.model.as_deref());
        for (k, v) in before {
            if k != "model" && k != "stream_options" {
                prop_assert_eq!(after.get(k), Some(v), "{}", k);
            }
        }
        match (stream && stream_usage, before.get("stream_options")) {
            (true, Some(Value::Object(o))) => {
                let a = after["stream_options"].as_object().unwrap();
                prop_assert_eq!(&a["include_usage"], &json!(true));
                for (k, v) in o.iter().filter(|(k, _)| *k != "include_usage") {
                    prop_assert_eq!(a.get(k), Some(v), "stream_options.{}", k);
                }
                prop_assert_eq!(a.len(), o.len() + usize::from(!o.contains_key("include_usage")));
            }
            (true, _) => {
                prop_assert_eq!(&after["stream_options"], &json!({"include_usage": true}));
            }
            (false, o) => prop_assert_eq!(after.get("stream_options"), o),
        }
    }

    /// Arbitrary bytes: no panic.
    #[test]
    fn prepare_request_never_panics(body in prop::collection::vec(any::<u8>(), 0..64)) {
        let models = ModelMap::from_iter([("a", "gpt-4o")]);
        if let Ok(out) = prepare_request(&ReplayBody::from(body), &models, true) {
            prop_assert!(std::str::from_utf8(&out.body).is_ok());
        }
    }
}

/// Found by `stream_translation_is_independent_of_chunking`: events after
/// `message_stop` (a second `message_start`, text) were translated after
/// `data: [DONE]`, so the caller saw chunks past the end of the stream.
#[test]
fn stream_events_after_message_stop_are_ignored() {
    let events = [
        json!({"type": "message_stop"}),
        json!({"type": "message_start", "message": {}}),
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": "late"}}),
        json!({"type": "error", "error": {"type": "api_error"}}),
    ];
    let (out, ok) = translate_stream(&anthropic_sse(&events, false), &[]);
    assert!(ok);
    assert_eq!(out.last(), Some(&Value::Null), "{out:?}");
    assert!(
        out.iter()
            .all(|v| v["choices"][0]["delta"]["content"] != "late")
    );
}

/// Found by the `openai_prepare` fuzz target: bytes that are not UTF-8 inside a
/// field the preparation ignores (serde skips such fields unchecked) passed as a
/// JSON object and were forwarded, spliced, to the provider.
#[test]
fn prepare_request_refuses_a_body_that_is_not_utf8() {
    let models = ModelMap::from_iter([("a", "gpt-4o")]);
    for body in [
        &b"{\"x\":\"\xa1\",\"model\":\"a\",\"stream\":true,\"messages\":[]}"[..],
        b"{\"\\ud7A00model\":\"\xa1\",\"stream\":true,\"messa}ges\":[]}",
        b"{\"model\":\"gpt-4o\",\"x\":\"\xff\xfe\"}",
    ] {
        let err = prepare_request(&ReplayBody::from(body.to_vec()), &models, true).unwrap_err();
        assert!(err.to_string().contains("UTF-8"), "{err}");
    }
}

/// Found while writing the `openai_prepare` target: a stream request with
/// `"stream_options": null` got a second `stream_options` key, a body whose
/// meaning depends on the provider's JSON parser (last key wins, first key wins,
/// or a duplicate-field error).
#[test]
fn prepare_request_never_duplicates_stream_options() {
    let models = ModelMap::default();
    let body = r#"{"model":"m","stream":true,"stream_options":null,"messages":[]}"#;
    let out = prepare_request(&ReplayBody::from(body), &models, true).unwrap();
    let text = std::str::from_utf8(&out.body).unwrap();
    assert_eq!(text.matches("stream_options").count(), 1, "{text}");
}
