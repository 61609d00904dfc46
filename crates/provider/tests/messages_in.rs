//! Anthropic's Messages API in front of the stack (`translate::messages`):
//! request translation, answers and streams event by event, and round trips
//! through the other direction (`translate::anthropic`) that keep the text,
//! the tool calls and the usage.

use proptest::prelude::*;
use serde_json::{Value, json};
use tower_failover_provider::ModelMap;
use tower_failover_provider::translate::anthropic::{
    RequestOptions, StreamTranslator, request_to_anthropic, response_to_openai,
};
use tower_failover_provider::translate::messages::{
    MessagesStream, error_for_status, request_from_anthropic, response_to_anthropic,
};

fn openai_request(anthropic: &Value) -> Value {
    let t = request_from_anthropic(anthropic.to_string().as_bytes()).expect("translates");
    serde_json::from_slice(&t.body).unwrap()
}

#[test]
fn request_maps_system_tools_results_and_images() {
    let r = openai_request(&json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "stream": true,
        "system": [{"type": "text", "text": "Be"}, {"type": "text", "text": "brief."}],
        "stop_sequences": ["END"],
        "temperature": 0.5,
        "top_k": 5,
        "metadata": {"user_id": "u1"},
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}}
            ]},
            {"role": "assistant", "content": [
                {"type": "thinking", "thinking": "hmm", "signature": "s"},
                {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": 1}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "42"}]},
                {"type": "tool_result", "tool_use_id": "toolu_2", "content": "no", "is_error": true},
                {"type": "text", "text": "and?"}
            ]}
        ],
        "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}],
        "tool_choice": {"type": "any", "disable_parallel_tool_use": true}
    }));
    assert_eq!(
        r,
        json!({
            "model": "claude-haiku-4-5",
            "max_tokens": 100,
            "temperature": 0.5,
            "stop": ["END"],
            "user": "u1",
            "stream": true,
            "messages": [
                {"role": "system", "content": "Be\nbrief."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Look:"},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}}
                ]},
                {"role": "assistant", "content": null, "tool_calls": [
                    {"id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}}
                ]},
                {"role": "tool", "tool_call_id": "toolu_1", "content": "42"},
                {"role": "tool", "tool_call_id": "toolu_2", "content": "Error: no"},
                {"role": "user", "content": "and?"}
            ],
            "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}],
            "tool_choice": "required",
            "parallel_tool_calls": false
        })
    );
}

#[test]
fn requests_without_what_anthropic_requires_are_refused() {
    for bad in [
        json!([]),
        json!({"messages": []}),
        json!({"model": "m"}),
        json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
        json!({"model": "m", "messages": [{"role": "user", "content": 5}]}),
        json!({"model": "m", "messages": [], "stream": "yes"}),
        json!({"model": "m", "messages": [], "tools": [{"type": "web_search_20250305", "name": "w"}]}),
        json!({"model": "m", "messages": [], "tool_choice": {"type": "tool"}}),
    ] {
        assert!(
            request_from_anthropic(bad.to_string().as_bytes()).is_err(),
            "{bad}"
        );
    }
}

#[test]
fn answer_with_tool_calls_and_cached_usage() {
    let body = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "tool_calls", "message": {
            "role": "assistant", "content": "Checking.",
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{\"a\":1}"}},
                {"id": "call_2", "type": "function", "function": {"name": "g", "arguments": "not json"}}
            ]}}],
        "usage": {"prompt_tokens": 30, "completion_tokens": 7, "total_tokens": 37,
                  "prompt_tokens_details": {"cached_tokens": 10}}
    });
    let m: Value = serde_json::from_slice(
        &response_to_anthropic(body.to_string().as_bytes(), "asked").unwrap(),
    )
    .unwrap();
    assert_eq!(
        m,
        json!({
            "id": "msg_chatcmpl-1", "type": "message", "role": "assistant", "model": "gpt-4o-mini",
            "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "call_1", "name": "f", "input": {"a": 1}},
                {"type": "tool_use", "id": "call_2", "name": "g", "input": {"arguments": "not json"}}
            ],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 20, "output_tokens": 7,
                      "cache_read_input_tokens": 10, "cache_creation_input_tokens": 0}
        })
    );
    assert!(response_to_anthropic(b"{}", "m").is_err());
    assert!(response_to_anthropic(b"not json", "m").is_err());
}

#[test]
fn error_statuses_are_anthropics() {
    assert_eq!(error_for_status(503), (529, "overloaded_error"));
    assert_eq!(error_for_status(429), (429, "rate_limit_error"));
    assert_eq!(error_for_status(413), (413, "request_too_large"));
    assert_eq!(error_for_status(400), (400, "invalid_request_error"));
    assert_eq!(error_for_status(502), (500, "api_error"));
    assert_eq!(error_for_status(504), (504, "timeout_error"));
}

/// The events of an Anthropic SSE body: `(name, data)`, checking that every
/// event's name is its data's `type`.
fn events(sse: &[u8]) -> Vec<(String, Value)> {
    let text = std::str::from_utf8(sse).unwrap();
    assert!(text.ends_with("\n\n"), "{text}");
    tower_failover_core::sse::events(sse)
        .unwrap()
        .into_iter()
        .map(|(name, data)| {
            let data: Value = serde_json::from_str(&data).unwrap();
            assert_eq!(data["type"], name.as_str());
            (name, data)
        })
        .collect()
}

fn chunk(delta: Value, finish: Option<&str>) -> Vec<u8> {
    json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
           "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})
    .to_string()
    .into_bytes()
}

fn usage_chunk(prompt: u64, completion: u64) -> Vec<u8> {
    json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "model": "gpt-4o-mini",
           "choices": [], "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                                    "total_tokens": prompt + completion}})
    .to_string()
    .into_bytes()
}

#[test]
fn a_text_stream_event_by_event() {
    let mut t = MessagesStream::new("asked");
    let mut out = Vec::new();
    t.push(
        &chunk(json!({"role": "assistant", "content": ""}), None),
        &mut out,
    )
    .unwrap();
    assert_eq!(
        events(&out),
        [(
            "message_start".to_owned(),
            json!({"type": "message_start", "message": {
                "id": "msg_chatcmpl-9", "type": "message", "role": "assistant",
                "model": "gpt-4o-mini", "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 0, "output_tokens": 0,
                          "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}}})
        )]
    );
    out.clear();
    t.push(&chunk(json!({"content": "Hel"}), None), &mut out)
        .unwrap();
    assert_eq!(
        events(&out),
        [
            (
                "content_block_start".to_owned(),
                json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
            ),
            (
                "content_block_delta".to_owned(),
                json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}})
            ),
        ]
    );
    out.clear();
    t.push(&chunk(json!({"content": "lo"}), None), &mut out)
        .unwrap();
    assert_eq!(events(&out).len(), 1);
    out.clear();
    t.push(&chunk(json!({}), Some("length")), &mut out).unwrap();
    t.push(&usage_chunk(12, 2), &mut out).unwrap();
    assert!(out.is_empty(), "nothing to say until the end");
    assert!(t.stopped());
    t.finish(&mut out);
    assert_eq!(
        events(&out),
        [
            (
                "content_block_stop".to_owned(),
                json!({"type": "content_block_stop", "index": 0})
            ),
            (
                "message_delta".to_owned(),
                json!({"type": "message_delta", "delta": {"stop_reason": "max_tokens", "stop_sequence": null},
                       "usage": {"input_tokens": 12, "output_tokens": 2,
                                 "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0}})
            ),
            ("message_stop".to_owned(), json!({"type": "message_stop"})),
        ]
    );
    out.clear();
    t.finish(&mut out);
    t.push(&chunk(json!({"content": "late"}), None), &mut out)
        .unwrap();
    assert!(out.is_empty(), "nothing after message_stop");
}

#[test]
fn a_tool_call_stream_event_by_event() {
    let mut t = MessagesStream::new("m");
    let mut out = Vec::new();
    for c in [
        chunk(json!({"content": "Let me check."}), None),
        chunk(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                   "function": {"name": "f", "arguments": ""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"a\""}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": ":1}"}}]}),
            None,
        ),
        chunk(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function",
                                   "function": {"name": "g", "arguments": "{}"}}]}),
            None,
        ),
        chunk(json!({}), Some("tool_calls")),
    ] {
        t.push(&c, &mut out).unwrap();
    }
    t.finish(&mut out);
    let evs = events(&out);
    let shape: Vec<(String, Value)> = evs
        .iter()
        .map(|(n, d)| {
            let detail = match n.as_str() {
                "content_block_start" => d["content_block"].clone(),
                "content_block_delta" => d["delta"].clone(),
                "message_delta" => d["delta"]["stop_reason"].clone(),
                _ => Value::Null,
            };
            (format!("{n}@{}", d["index"]), detail)
        })
        .collect();
    assert_eq!(
        shape,
        [
            ("message_start@null".into(), Value::Null),
            (
                "content_block_start@0".into(),
                json!({"type": "text", "text": ""})
            ),
            (
                "content_block_delta@0".into(),
                json!({"type": "text_delta", "text": "Let me check."})
            ),
            ("content_block_stop@0".into(), Value::Null),
            (
                "content_block_start@1".into(),
                json!({"type": "tool_use", "id": "call_a", "name": "f", "input": {}})
            ),
            (
                "content_block_delta@1".into(),
                json!({"type": "input_json_delta", "partial_json": "{\"a\""})
            ),
            (
                "content_block_delta@1".into(),
                json!({"type": "input_json_delta", "partial_json": ":1}"})
            ),
            ("content_block_stop@1".into(), Value::Null),
            (
                "content_block_start@2".into(),
                json!({"type": "tool_use", "id": "call_b", "name": "g", "input": {}})
            ),
            (
                "content_block_delta@2".into(),
                json!({"type": "input_json_delta", "partial_json": "{}"})
            ),
            ("content_block_stop@2".into(), Value::Null),
            ("message_delta@null".into(), json!("tool_use")),
            ("message_stop@null".into(), Value::Null),
        ]
    );
}

/// Some OpenAI-compatible providers (Fireworks) repeat a tool call's `id` on every
/// delta of its arguments: the same id at the same index continues one
/// `tool_use` block (it became a block per fragment, each with a piece of the
/// JSON); a new id at the same index is a new call.
#[test]
fn a_tool_call_whose_id_repeats_on_every_delta_is_one_block() {
    let mut t = MessagesStream::new("m");
    let mut out = Vec::new();
    let call = |id: &str, name: Option<&str>, args: &str| {
        let mut function = json!({"arguments": args});
        if let Some(n) = name {
            function["name"] = json!(n);
        }
        chunk(
            json!({"tool_calls": [{"index": 0, "id": id, "type": "function", "function": function}]}),
            None,
        )
    };
    for c in [
        call("call_a", Some("f"), ""),
        call("call_a", None, "{\"a\""),
        call("call_a", None, ":1}"),
        call("call_b", Some("g"), "{}"),
        chunk(json!({}), Some("tool_calls")),
    ] {
        t.push(&c, &mut out).unwrap();
    }
    t.finish(&mut out);
    let evs = events(&out);
    let starts: Vec<&Value> = evs
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .map(|(_, d)| &d["content_block"])
        .collect();
    assert_eq!(
        starts,
        [
            &json!({"type": "tool_use", "id": "call_a", "name": "f", "input": {}}),
            &json!({"type": "tool_use", "id": "call_b", "name": "g", "input": {}}),
        ]
    );
    let first: String = evs
        .iter()
        .filter(|(n, d)| n == "content_block_delta" && d["index"] == 0)
        .map(|(_, d)| d["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(first, "{\"a\":1}");
}

#[test]
fn a_broken_stream_ends_with_an_error_event() {
    let mut t = MessagesStream::new("m");
    let mut out = Vec::new();
    t.push(&chunk(json!({"content": "Hi"}), None), &mut out)
        .unwrap();
    assert!(!t.stopped());
    assert!(t.push(b"{not json", &mut out).is_err());
    out.clear();
    t.fail("api_error", "cut", &mut out);
    assert_eq!(
        events(&out),
        [(
            "error".to_owned(),
            json!({"type": "error", "error": {"type": "api_error", "message": "cut"}})
        )]
    );
    assert!(t.is_done());
}

// --- round trips ---------------------------------------------------------------

/// What a round trip must keep.
#[derive(Debug, Clone, PartialEq)]
struct Kept {
    text: String,
    /// (id, name, arguments as JSON)
    calls: Vec<(String, String, Value)>,
    usage: (u64, u64),
}

fn text_strategy() -> impl Strategy<Value = String> {
    // Any text, including quotes, escapes and multi-byte characters.
    "[a-zA-Z0-9 \"\\\\\n\u{e9}\u{4e2d}\u{1f600}]{1,40}"
}

/// [`text_strategy`] with something besides whitespace: a text block Anthropic
/// takes (it refuses blank ones, and the translation drops them).
fn filled_text_strategy() -> impl Strategy<Value = String> {
    text_strategy().prop_filter("not blank", |t| !t.trim().is_empty())
}

fn calls_strategy() -> impl Strategy<Value = Vec<(String, String, Value)>> {
    prop::collection::vec(
        ("[a-z]{1,8}", "[a-z_]{1,12}", "[a-z]{0,6}", any::<i32>()).prop_map(|(id, name, k, n)| {
            (
                format!("toolu_{id}"),
                name,
                if k.is_empty() {
                    json!({})
                } else {
                    json!({ k: n })
                },
            )
        }),
        0..3,
    )
}

fn openai_answer(k: &Kept) -> Value {
    let calls: Vec<Value> = k
        .calls
        .iter()
        .map(|(id, name, args)| {
            json!({"id": id, "type": "function",
                   "function": {"name": name, "arguments": args.to_string()}})
        })
        .collect();
    let mut message = json!({"role": "assistant", "content": k.text});
    if !calls.is_empty() {
        message["tool_calls"] = Value::Array(calls);
    }
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": message,
                     "finish_reason": if k.calls.is_empty() { "stop" } else { "tool_calls" }}],
        "usage": {"prompt_tokens": k.usage.0, "completion_tokens": k.usage.1,
                  "total_tokens": k.usage.0 + k.usage.1}
    })
}

fn kept_of_openai_answer(v: &Value) -> Kept {
    let m = &v["choices"][0]["message"];
    let calls = m["tool_calls"]
        .as_array()
        .map(|c| {
            c.iter()
                .map(|c| {
                    (
                        c["id"].as_str().unwrap().to_owned(),
                        c["function"]["name"].as_str().unwrap().to_owned(),
                        serde_json::from_str(c["function"]["arguments"].as_str().unwrap()).unwrap(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Kept {
        text: m["content"].as_str().unwrap_or("").to_owned(),
        calls,
        usage: (
            v["usage"]["prompt_tokens"].as_u64().unwrap(),
            v["usage"]["completion_tokens"].as_u64().unwrap(),
        ),
    }
}

/// An OpenAI stream of `k`: the text in pieces of `split` characters, each
/// call's arguments in two pieces, usage last.
fn openai_stream(k: &Kept, split: usize) -> Vec<Vec<u8>> {
    let mut chunks = vec![chunk(json!({"role": "assistant", "content": ""}), None)];
    let chars: Vec<char> = k.text.chars().collect();
    for piece in chars.chunks(split.max(1)) {
        chunks.push(chunk(
            json!({"content": piece.iter().collect::<String>()}),
            None,
        ));
    }
    for (i, (id, name, args)) in k.calls.iter().enumerate() {
        let args = args.to_string();
        let (a, b) = args.split_at(args.len() / 2);
        chunks.push(chunk(
            json!({"tool_calls": [{"index": i, "id": id, "type": "function",
                                   "function": {"name": name, "arguments": a}}]}),
            None,
        ));
        chunks.push(chunk(
            json!({"tool_calls": [{"index": i, "function": {"arguments": b}}]}),
            None,
        ));
    }
    let finish = if k.calls.is_empty() {
        "stop"
    } else {
        "tool_calls"
    };
    chunks.push(chunk(json!({}), Some(finish)));
    chunks.push(usage_chunk(k.usage.0, k.usage.1));
    chunks
}

/// What an OpenAI SSE body says, accumulated as a client would.
fn kept_of_openai_sse(sse: &[u8]) -> Kept {
    let mut kept = Kept {
        text: String::new(),
        calls: Vec::new(),
        usage: (0, 0),
    };
    let mut args: Vec<String> = Vec::new();
    for (_, data) in tower_failover_core::sse::events(sse).unwrap() {
        if data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&data).unwrap();
        if let Some(u) = v.get("usage").filter(|u| u.is_object()) {
            kept.usage = (
                u["prompt_tokens"].as_u64().unwrap(),
                u["completion_tokens"].as_u64().unwrap(),
            );
        }
        let delta = &v["choices"][0]["delta"];
        if let Some(t) = delta["content"].as_str() {
            kept.text.push_str(t);
        }
        for c in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = c["index"].as_u64().unwrap() as usize;
            if i >= kept.calls.len() {
                kept.calls.push((
                    c["id"].as_str().unwrap().to_owned(),
                    c["function"]["name"].as_str().unwrap().to_owned(),
                    Value::Null,
                ));
                args.push(String::new());
            }
            if let Some(a) = c["function"]["arguments"].as_str() {
                args[i].push_str(a);
            }
        }
    }
    for (call, a) in kept.calls.iter_mut().zip(args) {
        call.2 = serde_json::from_str(&a).unwrap();
    }
    kept
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// OpenAI answer → Anthropic Message (this module) → OpenAI answer
    /// (`translate::anthropic`): text, tool calls and usage survive.
    #[test]
    fn an_answer_round_trip_keeps_text_calls_and_usage(
        text in text_strategy(),
        calls in calls_strategy(),
        prompt in 0u64..1_000_000,
        completion in 0u64..100_000,
    ) {
        let k = Kept { text, calls, usage: (prompt, completion) };
        let anthropic = response_to_anthropic(openai_answer(&k).to_string().as_bytes(), "m").unwrap();
        let (back, counts) = response_to_openai(&anthropic).unwrap();
        let back: Value = serde_json::from_slice(&back).unwrap();
        prop_assert_eq!(kept_of_openai_answer(&back), k.clone());
        prop_assert_eq!((counts.prompt_tokens, counts.completion_tokens), k.usage);
    }

    /// OpenAI stream → Anthropic events (this module) → OpenAI stream
    /// (`translate::anthropic`'s stream translator), whatever the chunking.
    #[test]
    fn a_stream_round_trip_keeps_text_calls_and_usage(
        text in text_strategy(),
        calls in calls_strategy(),
        prompt in 0u64..1_000_000,
        completion in 0u64..100_000,
        split in 1usize..8,
        cut in 1usize..64,
    ) {
        let k = Kept { text, calls, usage: (prompt, completion) };
        let mut t = MessagesStream::new("m");
        let mut anthropic = Vec::new();
        for c in openai_stream(&k, split) {
            t.push(&c, &mut anthropic).unwrap();
        }
        t.finish(&mut anthropic);
        // The Anthropic bytes arrive in arbitrary pieces.
        let mut back = StreamTranslator::new(true, 1 << 20);
        let mut openai = Vec::new();
        for piece in anthropic.chunks(cut) {
            back.push(piece, &mut openai).unwrap();
        }
        back.finish(&mut openai).unwrap();
        prop_assert!(back.is_complete());
        prop_assert_eq!(kept_of_openai_sse(&openai), k);
    }

    /// Anthropic request → OpenAI request (this module) → Anthropic request
    /// (`translate::anthropic`): system prompt, texts, tool uses and tool
    /// results survive.
    #[test]
    fn a_request_round_trip_keeps_text_and_tool_use(
        system in text_strategy(),
        question in filled_text_strategy(),
        calls in calls_strategy(),
        result in filled_text_strategy(),
    ) {
        let mut messages = vec![json!({"role": "user", "content": [{"type": "text", "text": question}]})];
        if !calls.is_empty() {
            let uses: Vec<Value> = calls.iter().map(|(id, name, input)| {
                json!({"type": "tool_use", "id": id, "name": name, "input": input})
            }).collect();
            messages.push(json!({"role": "assistant", "content": uses}));
            let results: Vec<Value> = calls.iter().map(|(id, _, _)| {
                json!({"type": "tool_result", "tool_use_id": id, "content": result})
            }).collect();
            messages.push(json!({"role": "user", "content": results}));
        }
        let req = json!({"model": "claude-haiku-4-5", "max_tokens": 64, "system": system, "messages": messages});
        let openai = request_from_anthropic(req.to_string().as_bytes()).unwrap();
        let models = ModelMap::default();
        let back = request_to_anthropic(
            &openai.body,
            &RequestOptions { models: &models, default_max_tokens: Some(1) },
        ).unwrap();
        let back: Value = serde_json::from_slice(&back.body).unwrap();
        prop_assert_eq!(&back["system"], &json!(system));
        prop_assert_eq!(&back["max_tokens"], &json!(64));
        let msgs = back["messages"].as_array().unwrap();
        prop_assert_eq!(&msgs[0]["content"][0]["text"], &json!(question));
        if !calls.is_empty() {
            let uses = msgs[1]["content"].as_array().unwrap();
            prop_assert_eq!(uses.len(), calls.len());
            for (u, (id, name, input)) in uses.iter().zip(&calls) {
                prop_assert_eq!(&u["id"], &json!(id));
                prop_assert_eq!(&u["name"], &json!(name));
                prop_assert_eq!(&u["input"], input);
            }
            let results = msgs[2]["content"].as_array().unwrap();
            prop_assert_eq!(results.len(), calls.len());
            for (r, (id, _, _)) in results.iter().zip(&calls) {
                prop_assert_eq!(&r["tool_use_id"], &json!(id));
                let content = match &r["content"] {
                    Value::String(s) => s.clone(),
                    Value::Array(b) => b.iter().filter_map(|b| b["text"].as_str()).collect(),
                    other => other.to_string(),
                };
                prop_assert_eq!(content, result.clone());
            }
        }
    }
}

/// An Anthropic caller's prompt-cache breakpoints survive the trip into the
/// stack's OpenAI-shaped request (on system parts, text and image parts, tool
/// results and tools), so that an Anthropic provider gets them back; text that
/// carries none is still sent as a string.
#[test]
fn prompt_cache_breakpoints_are_kept_in_the_openai_request() {
    let eph = json!({"type": "ephemeral"});
    let req = json!({
        "model": "m",
        "max_tokens": 10,
        "system": [{"type": "text", "text": "Long rules.", "cache_control": eph}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "Q", "cache_control": eph}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "t1", "name": "f", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "ok", "cache_control": eph}
            ]},
            {"role": "assistant", "content": "plain"}
        ],
        "tools": [{"name": "f", "input_schema": {"type": "object"}, "cache_control": eph}]
    });
    let out = request_from_anthropic(req.to_string().as_bytes()).unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    let m = &v["messages"];
    assert_eq!(
        m[0],
        json!({"role": "system", "content": [
            {"type": "text", "text": "Long rules.", "cache_control": eph}
        ]})
    );
    assert_eq!(
        m[1]["content"],
        json!([{"type": "text", "text": "Q", "cache_control": eph}])
    );
    assert_eq!(
        m[3],
        json!({"role": "tool", "tool_call_id": "t1", "content": [
            {"type": "text", "text": "ok", "cache_control": eph}
        ]})
    );
    assert_eq!(m[4]["content"], "plain");
    assert_eq!(v["tools"][0]["cache_control"], eph);
}

/// A message's text blocks joined into one string stay apart (a newline between
/// them), as the system prompt's do: "Hello" and "World" were sent "HelloWorld".
#[test]
fn text_blocks_joined_into_a_string_stay_apart() {
    let req = json!({
        "model": "m",
        "max_tokens": 10,
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Hello"}, {"type": "text", "text": "World"}
            ]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "One."}, {"type": "text", "text": "Two."}
            ]}
        ]
    });
    let out = request_from_anthropic(req.to_string().as_bytes()).unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["messages"][0]["content"], "Hello\nWorld");
    assert_eq!(v["messages"][1]["content"], "One.\nTwo.");
}

/// An answer that calls tools stops with `tool_use` even when the provider said
/// `stop` (OpenAI under a forced `tool_choice`, vLLM, Ollama): an SDK's tool loop
/// runs while `stop_reason == "tool_use"`. A cut answer stays `max_tokens`.
#[test]
fn tool_calls_with_a_plain_stop_stop_for_tool_use() {
    let call = json!([{"id": "call_a", "type": "function",
                       "function": {"name": "f", "arguments": "{}"}}]);
    for (finish, expected) in [
        ("stop", "tool_use"),
        ("tool_calls", "tool_use"),
        ("length", "max_tokens"),
    ] {
        let answer = json!({"id": "chatcmpl-1", "model": "m", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": null, "tool_calls": call},
            "finish_reason": finish}]});
        let out: Value = serde_json::from_slice(
            &response_to_anthropic(answer.to_string().as_bytes(), "m").unwrap(),
        )
        .unwrap();
        assert_eq!(out["stop_reason"], expected, "buffered, {finish}");

        let mut t = MessagesStream::new("m").with_input_estimate(42);
        let mut out = Vec::new();
        t.push(
            &chunk(
                json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
                                               "function": {"name": "f", "arguments": "{}"}}]}),
                None,
            ),
            &mut out,
        )
        .unwrap();
        t.push(&chunk(json!({}), Some(finish)), &mut out).unwrap();
        t.finish(&mut out);
        let evs = events(&out);
        assert_eq!(evs[0].1["message"]["usage"]["input_tokens"], 42);
        let delta = &evs[evs.len() - 2].1;
        assert_eq!(
            delta["delta"]["stop_reason"], expected,
            "streamed, {finish}"
        );
    }
    // Without tool calls a stop is the end of the turn.
    let answer = json!({"id": "c", "model": "m", "choices": [{"index": 0,
        "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}]});
    let out: Value =
        serde_json::from_slice(&response_to_anthropic(answer.to_string().as_bytes(), "m").unwrap())
            .unwrap();
    assert_eq!(out["stop_reason"], "end_turn");
}

/// An answer without an id (Azure's first streamed chunk says `"id": ""`) gets an
/// id of its own, different for each answer: clients key answers by it.
#[test]
fn answers_without_an_id_get_ids_of_their_own() {
    let answer = br#"{"choices":[{"message":{"content":"hi"},"finish_reason":"stop"}]}"#;
    let id = |body: &[u8]| {
        let m: serde_json::Value =
            serde_json::from_slice(&response_to_anthropic(body, "m").unwrap()).unwrap();
        m["id"].as_str().unwrap().to_owned()
    };
    let (a, b) = (id(answer), id(answer));
    assert!(a.starts_with("msg_") && b.starts_with("msg_"), "{a} {b}");
    assert_ne!(a, b);
    let named = br#"{"id":"chatcmpl-9","choices":[{"message":{"content":"hi"}}]}"#;
    assert_eq!(id(named), "msg_chatcmpl-9");
}

/// Anthropic's structured output reaches every kind of provider: as OpenAI's
/// strict `response_format`, and from there, for an Anthropic provider, back as
/// `output_config.format` with the caller's very schema. The beta's
/// `output_format` is read too; a format that is not a JSON Schema is refused as
/// Anthropic refuses it.
#[test]
fn structured_output_is_carried_to_both_kinds_of_provider() {
    let schema = json!({"type": "object", "properties": {"city": {"type": "string"}},
        "required": ["city"], "additionalProperties": false});
    let models = ModelMap::default();
    for field in [
        json!({"output_config": {"format": {"type": "json_schema", "schema": schema}}}),
        json!({"output_format": {"type": "json_schema", "schema": schema}}),
    ] {
        let mut request = json!({"model": "m", "max_tokens": 64,
            "messages": [{"role": "user", "content": "Where?"}]});
        request
            .as_object_mut()
            .unwrap()
            .extend(field.as_object().unwrap().clone());
        let openai = openai_request(&request);
        assert_eq!(
            openai["response_format"],
            json!({"type": "json_schema",
                   "json_schema": {"name": "output", "schema": schema, "strict": true}}),
            "{field}"
        );
        let back = request_to_anthropic(
            openai.to_string().as_bytes(),
            &RequestOptions {
                models: &models,
                default_max_tokens: Some(64),
            },
        )
        .expect("translates");
        let back: Value = serde_json::from_slice(&back.body).unwrap();
        assert_eq!(
            back["output_config"],
            json!({"format": {"type": "json_schema", "schema": schema}}),
            "{field}"
        );
    }
    assert!(
        openai_request(&json!({"model": "m", "messages": []}))
            .get("response_format")
            .is_none()
    );
    // Strict only where OpenAI's strict mode takes the schema: not with an
    // optional property, nor with an object left open at any depth.
    let strict_of = |schema: Value| {
        openai_request(&json!({"model": "m", "messages": [],
            "output_format": {"type": "json_schema", "schema": schema}}))
            ["response_format"]["json_schema"]["strict"]
            .clone()
    };
    let mut optional = schema.clone();
    optional["properties"]["note"] = json!({"type": "string"});
    let open_inside = json!({"type": "object", "additionalProperties": false,
        "properties": {"stops": {"type": "array", "items": {"type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        "required": ["stops"]});
    let mut closed_inside = open_inside.clone();
    closed_inside["properties"]["stops"]["items"]["additionalProperties"] = false.into();
    assert_eq!(strict_of(optional), json!(false));
    assert_eq!(strict_of(open_inside), json!(false));
    assert_eq!(strict_of(closed_inside), json!(true));
    for bad in [
        json!({"model": "m", "messages": [], "output_config": {"format": {"type": "text"}}}),
        json!({"model": "m", "messages": [], "output_format": {"type": "json_schema"}}),
        json!({"model": "m", "messages": [], "output_format": {"type": "json_schema", "schema": "x"}}),
    ] {
        let e = request_from_anthropic(bad.to_string().as_bytes()).expect_err("refused");
        assert!(e.to_string().contains("output"), "{e}");
    }
}

/// OpenAI declining a structured output (`content: null`, the sentence in
/// `refusal`) ends as Anthropic's `refusal`, in an answer and in a stream; a
/// refusal does not hide a length cut or a tool call.
#[test]
fn a_declined_structured_output_stops_as_a_refusal() {
    let answer = |finish: &str| {
        json!({"id": "chatcmpl-1", "model": "gpt-4o-mini", "choices": [{"index": 0,
            "message": {"role": "assistant", "content": null, "refusal": "I can't help with that."},
            "finish_reason": finish}]})
        .to_string()
    };
    for (finish, stop) in [("stop", "refusal"), ("length", "max_tokens")] {
        let m: Value =
            serde_json::from_slice(&response_to_anthropic(answer(finish).as_bytes(), "m").unwrap())
                .unwrap();
        assert_eq!(m["stop_reason"], stop, "{m}");
        assert_eq!(m["content"][0]["text"], "I can't help with that.", "{m}");
    }
    let plain = json!({"choices": [{"index": 0, "message": {"role": "assistant",
        "content": "Paris.", "refusal": null}, "finish_reason": "stop"}]});
    let m: Value =
        serde_json::from_slice(&response_to_anthropic(plain.to_string().as_bytes(), "m").unwrap())
            .unwrap();
    assert_eq!(m["stop_reason"], "end_turn", "{m}");

    let mut s = MessagesStream::new("m");
    let mut out = Vec::new();
    s.push(
        &chunk(json!({"role": "assistant", "refusal": ""}), None),
        &mut out,
    )
    .unwrap();
    s.push(&chunk(json!({"refusal": "I can't "}), None), &mut out)
        .unwrap();
    s.push(&chunk(json!({"refusal": "help."}), None), &mut out)
        .unwrap();
    s.push(&chunk(json!({}), Some("stop")), &mut out).unwrap();
    s.finish(&mut out);
    let evs = events(&out);
    let text: String = evs
        .iter()
        .filter_map(|(_, d)| d["delta"]["text"].as_str())
        .collect();
    assert_eq!(text, "I can't help.");
    let delta = &evs
        .iter()
        .find(|(e, _)| e == "message_delta")
        .expect("a message_delta")
        .1;
    assert_eq!(delta["delta"]["stop_reason"], "refusal", "{delta}");
}
