use serde_json::{Value, json};

use tower_failover_core::error::{Invalid, TransportError, TruncatedStream};
use tower_failover_core::{FailureKind, RejectKind};

use super::*;
use crate::config::ModelMap;

fn opts(models: &ModelMap) -> RequestOptions<'_> {
    RequestOptions {
        models,
        default_max_tokens: Some(4096),
    }
}

fn translate(req: &Value) -> (Value, TranslatedRequest) {
    let models = ModelMap::from_iter([("smart", "claude-sonnet-4-5")]);
    let out = request_to_anthropic(&serde_json::to_vec(req).unwrap(), &opts(&models)).unwrap();
    (serde_json::from_slice(&out.body).unwrap(), out)
}

fn stream_text(chunks: &[&str]) -> (String, StreamTranslator) {
    let mut t = StreamTranslator::new(true, 1 << 20);
    let mut out = Vec::new();
    for c in chunks {
        t.push(c.as_bytes(), &mut out).unwrap();
    }
    t.finish(&mut out).unwrap();
    (String::from_utf8(out).unwrap(), t)
}

/// The `data:` payloads of an OpenAI stream, parsed (`[DONE]` as a string).
fn chunks(sse: &str) -> Vec<Value> {
    assert!(sse.is_empty() || sse.ends_with("\n\n"), "{sse}");
    tower_failover_core::sse::events(sse.as_bytes())
        .unwrap()
        .into_iter()
        .map(|(_, data)| serde_json::from_str(&data).unwrap_or(Value::String(data)))
        .collect()
}

const TOOLS: &str = r#"[{"type":"function","function":{"name":"get_weather","description":"Weather by city","parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]"#;

#[test]
fn full_request_translation() {
    let req = json!({
        "model": "smart",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "developer", "content": [{"type": "text", "text": "Use metric units."}]},
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather in Paris?"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                {"type": "image_url", "image_url": {"url": "https://example.com/cat.jpg"}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "toolu_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}}
            ]},
            {"role": "tool", "tool_call_id": "toolu_1", "content": "18°C, sunny"},
            {"role": "user", "content": "Thanks! Anything else?"}
        ],
        "max_completion_tokens": 300,
        "temperature": 1.7,
        "top_p": 0.9,
        "stop": ["\n\nHuman:", "END"],
        "stream": true,
        "stream_options": {"include_usage": true},
        "tools": serde_json::from_str::<Value>(TOOLS).unwrap(),
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": false,
        "user": "user-42",
        "response_format": {"type": "text"},
        "seed": 7
    });
    let (body, out) = translate(&req);
    assert_eq!(
        body,
        json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 300,
            "system": "You are terse.\n\nUse metric units.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "What is in this picture, and the weather in Paris?"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "image", "source": {"type": "url", "url": "https://example.com/cat.jpg"}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "18°C, sunny"}]},
                    {"type": "text", "text": "Thanks! Anything else?"}
                ]}
            ],
            "temperature": 1.0,
            "stop_sequences": ["\n\nHuman:", "END"],
            "stream": true,
            "tools": [{"name": "get_weather", "description": "Weather by city",
                       "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}],
            "tool_choice": {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": true},
            "metadata": {"user_id": "user-42"}
        })
    );
    assert_eq!(out.requested_model, "smart");
    assert_eq!(out.model, "claude-sonnet-4-5");
    assert!(out.stream);
    assert!(out.include_usage);
}

#[test]
fn tool_choice_modes() {
    for (choice, want) in [
        (json!("auto"), json!({"type": "auto"})),
        (json!("required"), json!({"type": "any"})),
        (json!("none"), json!({"type": "none"})),
    ] {
        let (body, _) = translate(&json!({
            "model": "m", "messages": [{"role": "user", "content": "hi"}],
            "tools": serde_json::from_str::<Value>(TOOLS).unwrap(), "tool_choice": choice
        }));
        assert_eq!(body["tool_choice"], want);
    }
    let (body, _) = translate(&json!({
        "model": "m", "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "function", "function": {"name": "noop"}}]
    }));
    assert_eq!(
        body["tools"],
        json!([{"name": "noop", "input_schema": {"type": "object", "properties": {}}}])
    );
    assert!(body.get("tool_choice").is_none());
    assert_eq!(body["max_tokens"], 4096);
    assert_eq!(body["model"], "m");
}

#[test]
fn bad_requests_are_typed_errors() {
    let models = ModelMap::new();
    for bad in [
        "",
        "not json",
        "[]",
        r#"{"messages":[]}"#,
        r#"{"model":"m","messages":[{"role":"function","content":"x"}]}"#,
        r#"{"model":"m","messages":[{"role":"tool","content":"x"}]}"#,
        r#"{"model":"m","messages":[{"role":"assistant","tool_calls":[{"id":"a","type":"function","function":{"name":"f","arguments":"{oops"}}]}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"input_audio","input_audio":{}}]}]}"#,
        r#"{"model":"m","messages":[{"role":"user","content":[{"type":"image_url","image_url":{"url":"data:image/png,raw"}}]}]}"#,
        r#"{"model":"m","messages":[],"n":2}"#,
        r#"{"model":"m","messages":[],"tool_choice":"sometimes"}"#,
        r#"{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
    ] {
        let err = request_to_anthropic(bad.as_bytes(), &opts(&models));
        assert!(err.is_err(), "{bad}");
    }
}

#[test]
fn response_translation_with_tools() {
    let body = br#"{
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "hmm", "signature": "x"},
            {"type": "text", "text": "Let me check. "},
            {"type": "text", "text": "One moment."},
            {"type": "tool_use", "id": "toolu_9", "name": "get_weather", "input": {"city": "Oslo"}}
        ],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 20, "cache_read_input_tokens": 100, "cache_creation_input_tokens": 5, "output_tokens": 30}
    }"#;
    let (out, counts) = response_to_openai(body).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert!(v["created"].as_u64().unwrap() > 1_600_000_000);
    let mut v = v;
    v["created"] = json!(0);
    assert_eq!(
        v,
        json!({
            "id": "msg_01", "object": "chat.completion", "created": 0, "model": "claude-sonnet-4-5",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant", "content": "Let me check. One moment.",
                    "tool_calls": [{"id": "toolu_9", "type": "function",
                                    "function": {"name": "get_weather", "arguments": "{\"city\": \"Oslo\"}"}}],
                    "refusal": null
                },
                "logprobs": null, "finish_reason": "tool_calls"
            }],
            "usage": {"prompt_tokens": 125, "completion_tokens": 30, "total_tokens": 155,
                      "prompt_tokens_details": {"cached_tokens": 100},
                      "cache_creation_input_tokens": 5}
        })
    );
    assert_eq!(
        counts,
        TokenCounts {
            prompt_tokens: 125,
            completion_tokens: 30,
            cache_read_tokens: 100,
            cache_write_tokens: 5,
        }
    );
}

#[test]
fn stop_reasons() {
    for (anthropic, openai) in [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("something_new", "stop"),
    ] {
        assert_eq!(finish_reason(anthropic), openai);
    }
}

#[test]
fn malformed_responses_are_typed() {
    let kind = |b: &[u8]| response_to_openai(b).unwrap_err().kind();
    assert_eq!(kind(b"{\"id\":"), RejectKind::InvalidJson);
    assert_eq!(kind(b""), RejectKind::InvalidJson);
    assert_eq!(kind(b"<html>"), RejectKind::InvalidJson);
    assert_eq!(kind(br#"{"id":"x","content":"nope"}"#), RejectKind::Shape);
    assert_eq!(kind(br#"{"id":"x"}"#), RejectKind::Shape);
    assert_eq!(
        kind(br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#),
        RejectKind::ErrorObject
    );
}

#[test]
fn error_bodies_take_openai_shape() {
    let v: Value = serde_json::from_slice(&error_to_openai(
        br#"{"type":"error","error":{"type":"rate_limit_error","message":"slow down"}}"#,
    ))
    .unwrap();
    assert_eq!(
        v,
        json!({"error": {"message": "slow down", "type": "rate_limit_error", "param": null, "code": null}})
    );
    let v: Value = serde_json::from_slice(&error_to_openai(b"Bad Gateway")).unwrap();
    assert_eq!(v["error"]["message"], "Bad Gateway");
    assert_eq!(v["error"]["type"], "upstream_error");
}

const TOOL_STREAM: &[&str] = &[
    "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_7\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":50,\"cache_read_input_tokens\":10,\"output_tokens\":1}}}\n\n",
    "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Checking\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\" the \\\"weather\\\".\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
    "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_5\",\"name\":\"get_weather\",\"input\":{}}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n",
    "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Oslo\\\"}\"}}\n\n",
    "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n",
    "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":42}}\n\n",
    "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
];

#[test]
fn stream_translation_event_by_event() {
    let (sse, t) = stream_text(TOOL_STREAM);
    let got = chunks(&sse);
    let deltas: Vec<Value> = got
        .iter()
        .map(|c| {
            if c == "[DONE]" {
                return c.clone();
            }
            assert_eq!(c["object"], "chat.completion.chunk");
            assert_eq!(c["id"], "msg_7");
            assert_eq!(c["model"], "claude-sonnet-4-5");
            match c["choices"].as_array().unwrap().first() {
                Some(choice) => json!([choice["delta"], choice["finish_reason"]]),
                None => json!({"usage": c["usage"]}),
            }
        })
        .collect();
    assert_eq!(
        deltas,
        vec![
            json!([{"role": "assistant", "content": ""}, null]),
            json!([{"content": "Checking"}, null]),
            json!([{"content": " the \"weather\"."}, null]),
            json!([{"tool_calls": [{"index": 0, "id": "toolu_5", "type": "function",
                                     "function": {"name": "get_weather", "arguments": ""}}]}, null]),
            json!([{"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}, null]),
            json!([{"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}, null]),
            json!([{}, "tool_calls"]),
            json!({"usage": {"prompt_tokens": 60, "completion_tokens": 42, "total_tokens": 102,
                             "prompt_tokens_details": {"cached_tokens": 10}}}),
            json!("[DONE]"),
        ]
    );
    assert!(t.is_complete());
    assert_eq!(
        t.usage(),
        Some(TokenCounts {
            prompt_tokens: 60,
            completion_tokens: 42,
            cache_read_tokens: 10,
            cache_write_tokens: 0,
        })
    );
}

#[test]
fn stream_translation_is_independent_of_chunking() {
    let whole: String = TOOL_STREAM.concat();
    let (want, _) = stream_text(&[&whole]);
    let strip = |s: &str| {
        // `created` is the same within one translator only.
        chunks(s)
            .into_iter()
            .map(|mut c| {
                if c.is_object() {
                    c["created"] = json!(0);
                }
                c
            })
            .collect::<Vec<_>>()
    };
    for size in [1, 2, 3, 7, 64, 1000] {
        let pieces: Vec<&str> = whole
            .as_bytes()
            .chunks(size)
            .map(|c| std::str::from_utf8(c).unwrap_or(""))
            .collect();
        // Byte chunks may split UTF-8; the stream is ASCII here.
        assert!(whole.is_ascii());
        let (got, _) = stream_text(&pieces);
        assert_eq!(strip(&got), strip(&want), "chunk size {size}");
    }
}

#[test]
fn usage_chunk_only_when_asked() {
    let mut t = StreamTranslator::new(false, 1 << 20);
    let mut out = Vec::new();
    for c in TOOL_STREAM {
        t.push(c.as_bytes(), &mut out).unwrap();
    }
    t.finish(&mut out).unwrap();
    let text = String::from_utf8(out).unwrap();
    assert!(!text.contains("\"usage\""));
    assert!(text.ends_with("data: [DONE]\n\n"));
    assert_eq!(t.usage().unwrap().completion_tokens, 42);
}

#[test]
fn truncated_and_broken_streams_are_errors() {
    // Ends before message_stop.
    let mut t = StreamTranslator::new(true, 1 << 20);
    let mut out = Vec::new();
    for c in &TOOL_STREAM[..5] {
        t.push(c.as_bytes(), &mut out).unwrap();
    }
    let err = t.finish(&mut out).unwrap_err();
    assert!(err.downcast_ref::<TruncatedStream>().is_some(), "{err}");
    assert_eq!(t.usage().unwrap().prompt_tokens, 60);

    // Not JSON.
    let mut t = StreamTranslator::new(true, 1 << 20);
    let err = t
        .push(b"event: message_start\ndata: {\"type\":\n\n", &mut out)
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<Invalid>().unwrap().kind(),
        RejectKind::InvalidJson
    );

    // Error events.
    let mut t = StreamTranslator::new(true, 1 << 20);
    let err = t
        .push(
            b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
            &mut out,
        )
        .unwrap_err();
    assert_eq!(
        err.downcast_ref::<TransportError>().unwrap().kind(),
        FailureKind::Overloaded
    );
    let mut t = StreamTranslator::new(true, 1 << 20);
    let err = t
        .push(
            b"data: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"boom\"}}\n\n",
            &mut out,
        )
        .unwrap_err();
    assert!(err.downcast_ref::<TruncatedStream>().is_some());

    // Oversized event.
    let mut t = StreamTranslator::new(true, 64);
    let big = format!("data: {}\n\n", "x".repeat(100));
    assert!(t.push(big.as_bytes(), &mut out).is_err());

    // Events out of order or missing fields do not panic.
    let mut t = StreamTranslator::new(true, 1 << 20);
    for ev in [
        r#"{"type":"content_block_delta","index":3,"delta":{"type":"input_json_delta","partial_json":"{}"}}"#,
        r#"{"type":"content_block_start"}"#,
        r#"{"type":"content_block_delta"}"#,
        r#"{"type":"message_delta"}"#,
        r#"{"type":"message_start"}"#,
        r#"{"type":"brand_new_event","x":1}"#,
        r#"{"type":"message_stop"}"#,
        r#"{"type":"message_stop"}"#,
    ] {
        t.push(format!("data: {ev}\n\n").as_bytes(), &mut out)
            .unwrap();
    }
    t.finish(&mut out).unwrap();
}

/// A whole conversation through the Anthropic adapter's translation, both ways:
/// the request goes out, the answer (JSON and streamed) comes back in OpenAI shape,
/// is appended to the conversation, and the next request carries it back to
/// Anthropic as the same tool call.
#[test]
fn conversation_round_trip() {
    let mut conversation = vec![
        json!({"role": "system", "content": "You are a weather bot."}),
        json!({"role": "user", "content": "Weather in Oslo?"}),
    ];
    let request = |conv: &[Value], stream: bool| {
        json!({"model": "smart", "messages": conv, "stream": stream,
               "tools": serde_json::from_str::<Value>(TOOLS).unwrap()})
    };

    // Turn 1, streamed: the model calls the tool.
    let (sent, _) = translate(&request(&conversation, true));
    assert_eq!(sent["system"], "You are a weather bot.");
    assert_eq!(
        sent["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]}])
    );
    let (sse, _) = stream_text(TOOL_STREAM);
    // Rebuild the assistant message from the chunks, as an OpenAI client does.
    let mut content = String::new();
    let mut calls: Vec<Value> = Vec::new();
    let mut finish = Value::Null;
    for c in chunks(&sse) {
        let Some(choice) = c.get("choices").and_then(|x| x.get(0)) else {
            continue;
        };
        let delta = &choice["delta"];
        if let Some(t) = delta["content"].as_str() {
            content.push_str(t);
        }
        for tc in delta["tool_calls"].as_array().into_iter().flatten() {
            let i = tc["index"].as_u64().unwrap() as usize;
            if calls.len() <= i {
                calls.push(json!({"id": tc["id"], "type": "function",
                                  "function": {"name": tc["function"]["name"], "arguments": ""}}));
            }
            let args = calls[i]["function"]["arguments"]
                .as_str()
                .unwrap()
                .to_string()
                + tc["function"]["arguments"].as_str().unwrap_or("");
            calls[i]["function"]["arguments"] = json!(args);
        }
        if !choice["finish_reason"].is_null() {
            finish = choice["finish_reason"].clone();
        }
    }
    assert_eq!(finish, "tool_calls");
    assert_eq!(content, "Checking the \"weather\".");
    conversation.push(json!({"role": "assistant", "content": content, "tool_calls": calls}));
    conversation.push(json!({"role": "tool", "tool_call_id": "toolu_5", "content": "-3°C, snow"}));

    // Turn 2, JSON: the tool call goes back to Anthropic as the tool_use it was.
    let (sent, _) = translate(&request(&conversation, false));
    assert_eq!(
        sent["messages"],
        json!([
            {"role": "user", "content": [{"type": "text", "text": "Weather in Oslo?"}]},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking the \"weather\"."},
                {"type": "tool_use", "id": "toolu_5", "name": "get_weather", "input": {"city": "Oslo"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_5", "content": [{"type": "text", "text": "-3°C, snow"}]}
            ]}
        ])
    );
    assert!(sent.get("stream").is_none());
    let answer = json!({
        "id": "msg_8", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "It is -3°C and snowing in Oslo."}],
        "stop_reason": "end_turn", "usage": {"input_tokens": 90, "output_tokens": 12}
    });
    let (body, _) = response_to_openai(&serde_json::to_vec(&answer).unwrap()).unwrap();
    let body: Value = serde_json::from_slice(&body).unwrap();
    let message = body["choices"][0]["message"].clone();
    assert_eq!(message["content"], "It is -3°C and snowing in Oslo.");
    assert!(message.get("tool_calls").is_none());
    conversation.push(json!({"role": "assistant", "content": message["content"]}));
    conversation.push(json!({"role": "user", "content": "Thanks"}));

    // Turn 3: the whole history translates again, alternating roles.
    let (sent, _) = translate(&request(&conversation, false));
    let roles: Vec<&str> = sent["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant", "user", "assistant", "user"]);
    assert_eq!(
        sent["messages"][3]["content"],
        json!([{"type": "text", "text": "It is -3°C and snowing in Oslo."}])
    );
}

/// A 4 MiB request of 100 000 tiny system messages (once quadratic: the system
/// text was re-copied for every message) translates, joined in order.
#[test]
fn many_tiny_system_messages_join_in_order() {
    let n = 100_000;
    let mut body = String::with_capacity(4 << 20);
    body.push_str(r#"{"model":"smart","messages":["#);
    for i in 0..n {
        // Both forms: a string, and text parts joined by a line break.
        if i % 2 == 0 {
            body.push_str(&format!(r#"{{"role":"system","content":"s{i}"}},"#));
        } else {
            body.push_str(&format!(
                r#"{{"role":"developer","content":[{{"type":"text","text":"d{i}"}},{{"type":"text","text":"e"}}]}},"#
            ));
        }
    }
    body.push_str(r#"{"role":"user","content":"hi"}]}"#);
    // Padded to 4 MiB with whitespace, as a body of that size would be.
    while body.len() < 4 << 20 {
        body.push(' ');
    }
    let models = ModelMap::new();
    let out = request_to_anthropic(body.as_bytes(), &opts(&models)).unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    let system = v["system"].as_str().unwrap();
    let want: Vec<String> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                format!("s{i}")
            } else {
                format!("d{i}\ne")
            }
        })
        .collect();
    assert_eq!(system, want.join("\n\n"));
    assert_eq!(
        v["messages"],
        json!([{"role": "user", "content": [{"type": "text", "text": "hi"}]}])
    );
}

#[test]
fn system_text_edge_cases_keep_their_shape() {
    let (v, _) = translate(&json!({
        "model": "smart",
        "messages": [
            {"role": "system"},
            {"role": "system", "content": []},
            {"role": "system", "content": "a"},
            {"role": "user", "content": "hi"}
        ]
    }));
    assert_eq!(v["system"], "\n\n\n\na");
    let (v, _) =
        translate(&json!({"model": "smart", "messages": [{"role": "user", "content": "hi"}]}));
    assert!(v.get("system").is_none());
    let models = ModelMap::new();
    let err = request_to_anthropic(
        br#"{"model":"m","messages":[{"role":"system","content":[{"type":"image_url","image_url":{"url":"x"}}]}]}"#,
        &opts(&models),
    )
    .unwrap_err();
    assert!(err.message().contains("system content may only hold text"));
}

/// Many text blocks in a response are concatenated in order (once quadratic too).
#[test]
fn many_response_text_blocks_concatenate_in_order() {
    let blocks: Vec<Value> = (0..50_000)
        .map(|i| json!({"type": "text", "text": format!("{i},")}))
        .collect();
    let body = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "m",
        "content": blocks, "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 2}
    });
    let (out, _) = response_to_openai(&serde_json::to_vec(&body).unwrap()).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let want: String = (0..50_000).map(|i| format!("{i},")).collect();
    assert_eq!(v["choices"][0]["message"]["content"], want.as_str());
}

#[test]
fn request_to_anthropic_refuses_non_object_bodies() {
    let models = ModelMap::new();
    for body in [
        r#"["m", [{"role":"user","content":"hi"}]]"#,
        "[]",
        r#""x""#,
        "7",
        "null",
    ] {
        let err = request_to_anthropic(body.as_bytes(), &opts(&models)).unwrap_err();
        assert!(err.message().contains("JSON object"), "{body}: {err}");
    }
}

/// A valid answer with absurd usage numbers is still a valid answer; the counts
/// saturate (they were a `Shape` rejection).
#[test]
fn absurd_usage_counts_saturate_instead_of_rejecting() {
    let body = br#"{"id":"m","type":"message","role":"assistant","model":"c",
        "content":[{"type":"text","text":"Hi"}],"stop_reason":"end_turn",
        "usage":{"input_tokens":1e30,"cache_read_input_tokens":18446744073709551615,
                 "cache_creation_input_tokens":-3,"output_tokens":2.5}}"#;
    let (out, counts) = response_to_openai(body).unwrap();
    assert_eq!(counts.prompt_tokens, u64::MAX);
    assert_eq!(counts.completion_tokens, 2);
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["usage"]["total_tokens"], u64::MAX);
}

/// Regression: an error event's message is the provider's own text (it may quote a
/// key); the stream's error names the error type in our words and nothing else.
#[test]
fn a_stream_error_event_never_repeats_the_providers_message() {
    for (kind, shown) in [
        ("api_error", "api_error"),
        ("overloaded_error", "overloaded_error"),
        ("sk-proj-abc123 <html>", "error"),
    ] {
        let mut t = StreamTranslator::new(true, 1 << 20);
        let mut out = Vec::new();
        let event = format!(
            "data: {{\"type\":\"error\",\"error\":{{\"type\":\"{kind}\",\"message\":\"Incorrect API key provided: sk-proj-abc123\"}}}}\n\n"
        );
        let err = t.push(event.as_bytes(), &mut out).unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("sk-proj"), "{text}");
        assert!(!text.contains("Incorrect API key"), "{text}");
        assert!(text.contains(shown), "{text}");
    }
}

/// The arguments of the tool calls in an OpenAI stream, joined per call the way a
/// client joins them.
fn joined_arguments(sse: &str) -> Vec<String> {
    let mut args: Vec<String> = Vec::new();
    for c in chunks(sse) {
        let Some(choice) = c.get("choices").and_then(|x| x.get(0)) else {
            continue;
        };
        for tc in choice["delta"]["tool_calls"]
            .as_array()
            .into_iter()
            .flatten()
        {
            let i = tc["index"].as_u64().unwrap() as usize;
            if args.len() <= i {
                args.resize(i + 1, String::new());
            }
            args[i].push_str(tc["function"]["arguments"].as_str().unwrap_or(""));
        }
    }
    args
}

/// Regression: a streamed tool call without arguments (Anthropic sends an empty
/// `input_json_delta`, or none) ended with `"arguments": ""`, which clients cannot
/// parse; it ends with `{}`, as the JSON answer gives. Calls with arguments are
/// unchanged.
#[test]
fn a_streamed_tool_call_without_arguments_ends_with_an_empty_object() {
    let start = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_9\",\"model\":\"claude-sonnet-4-5\",\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n";
    let tool_start = |index: usize, id: &str, name: &str| {
        format!(
            "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{index},\"content_block\":{{\"type\":\"tool_use\",\"id\":\"{id}\",\"name\":\"{name}\",\"input\":{{}}}}}}\n\n"
        )
    };
    let empty_delta = |index: usize| {
        format!(
            "event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":{index},\"delta\":{{\"type\":\"input_json_delta\",\"partial_json\":\"\"}}}}\n\n"
        )
    };
    let stop = |index: usize| {
        format!(
            "event: content_block_stop\ndata: {{\"type\":\"content_block_stop\",\"index\":{index}}}\n\n"
        )
    };
    let end = "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":9}}\n\nevent: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
    let events = [
        start.to_string(),
        // An empty delta, then the stop.
        tool_start(0, "toolu_a", "get_time"),
        empty_delta(0),
        stop(0),
        // A call with arguments, between two without.
        tool_start(1, "toolu_b", "get_weather"),
        empty_delta(1),
        "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \\\"Oslo\\\"}\"}}\n\n".to_string(),
        stop(1),
        // No delta at all, and a repeated stop that must not add a second `{}`.
        tool_start(2, "toolu_c", "list_files"),
        stop(2),
        stop(2),
        end.to_string(),
    ];
    let events: Vec<&str> = events.iter().map(String::as_str).collect();
    let (sse, _) = stream_text(&events);
    let args = joined_arguments(&sse);
    assert_eq!(args, ["{}", r#"{"city": "Oslo"}"#, "{}"], "{sse}");
    for a in &args {
        serde_json::from_str::<Value>(a).unwrap();
    }
    // The stream with arguments keeps its exact chunks.
    assert_eq!(
        joined_arguments(&stream_text(TOOL_STREAM).0),
        [r#"{"city": "Oslo"}"#]
    );
}

/// Regression: current Claude models refuse `temperature` and `top_p` together
/// (400, which does not fail over); `temperature` is kept, `top_p` dropped. Either
/// alone is forwarded.
#[test]
fn temperature_wins_over_top_p() {
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let (v, _) = translate(&json!({"model": "smart", "messages": msgs,
                                   "temperature": 0.3, "top_p": 0.9}));
    assert_eq!(v["temperature"], 0.3);
    assert!(v.get("top_p").is_none(), "{v}");
    let (v, _) = translate(&json!({"model": "smart", "messages": msgs, "top_p": 0.9}));
    assert_eq!(v["top_p"], 0.9);
    assert!(v.get("temperature").is_none(), "{v}");
    let (v, _) = translate(&json!({"model": "smart", "messages": msgs, "temperature": 0.0}));
    assert_eq!(v["temperature"], 0.0);
    assert!(v.get("top_p").is_none(), "{v}");
}

/// Regression: Anthropic refuses stop sequences that are empty or only whitespace
/// (400); they are dropped, and `stop_sequences` is left out when none remain.
#[test]
fn blank_stop_sequences_are_dropped() {
    let msgs = json!([{"role": "user", "content": "hi"}]);
    let (v, _) = translate(&json!({"model": "smart", "messages": msgs,
                                   "stop": ["\n", "END", "", " \t", "\n\nHuman:"]}));
    assert_eq!(v["stop_sequences"], json!(["END", "\n\nHuman:"]));
    for stop in [json!(["\n"]), json!("  "), json!(""), json!(["", "\r\n"])] {
        let (v, _) = translate(&json!({"model": "smart", "messages": msgs, "stop": stop}));
        assert!(v.get("stop_sequences").is_none(), "{stop}: {v}");
    }
    let (v, _) = translate(&json!({"model": "smart", "messages": msgs, "stop": " END "}));
    assert_eq!(v["stop_sequences"], json!([" END "]));
}

/// Regression: a message whose content is empty (`""`, `null`, no parts, only empty
/// text parts) became an Anthropic message with no content, which Anthropic refuses
/// (400). It is dropped, and its neighbours of the same role merge as usual. An
/// assistant turn with tool calls, and a tool result, are never dropped.
#[test]
fn messages_with_empty_content_are_dropped() {
    let (v, _) = translate(&json!({"model": "smart", "messages": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": null},
        {"role": "user", "content": "Anyone there?"},
        {"role": "assistant", "content": ""},
        {"role": "assistant", "content": "Yes."},
        {"role": "user", "content": [{"type": "text", "text": ""}]},
        {"role": "user", "content": []},
        {"role": "user"},
        {"role": "user", "content": "Good."},
        {"role": "assistant", "content": "", "tool_calls": [
            {"id": "toolu_1", "type": "function", "function": {"name": "get_time", "arguments": ""}}
        ]},
        {"role": "tool", "tool_call_id": "toolu_1", "content": ""},
        {"role": "assistant", "content": null}
    ]}));
    assert_eq!(
        v["messages"],
        json!([
            {"role": "user", "content": [
                {"type": "text", "text": "Hi"},
                {"type": "text", "text": "Anyone there?"}
            ]},
            {"role": "assistant", "content": [{"type": "text", "text": "Yes."}]},
            {"role": "user", "content": [{"type": "text", "text": "Good."}]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_time", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": []}
            ]}
        ])
    );
    for m in v["messages"].as_array().unwrap() {
        assert!(!m["content"].as_array().unwrap().is_empty(), "{m}");
    }
}

/// Prompt-cache breakpoints on OpenAI-shaped parts and tools (as the `/v1/messages`
/// front door writes them, and as clients that mark parts for Claude send them)
/// become Anthropic's: on system blocks (the prompt is then sent as blocks), text
/// blocks, the `tool_result` block of a tool message, and tools.
#[test]
fn prompt_cache_breakpoints_are_carried_to_anthropic() {
    let models = ModelMap::new();
    let eph = json!({"type": "ephemeral"});
    let body = json!({
        "model": "claude-sonnet-4-5",
        "messages": [
            {"role": "system", "content": [
                {"type": "text", "text": "Rules."},
                {"type": "text", "text": "Long context.", "cache_control": eph}
            ]},
            {"role": "user", "content": [{"type": "text", "text": "Q", "cache_control": eph}]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "t1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "t1", "content": [
                {"type": "text", "text": "result", "cache_control": eph}
            ]}
        ],
        "tools": [{"type": "function", "function": {"name": "f"}, "cache_control": eph}]
    });
    let out = request_to_anthropic(body.to_string().as_bytes(), &opts(&models)).unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(
        v["system"],
        json!([
            {"type": "text", "text": "Rules."},
            {"type": "text", "text": "Long context.", "cache_control": eph}
        ])
    );
    assert_eq!(v["messages"][0]["content"][0]["cache_control"], eph);
    let result = &v["messages"][2]["content"][0];
    assert_eq!(result["type"], "tool_result");
    assert_eq!(result["cache_control"], eph, "{v}");
    assert!(result["content"][0].get("cache_control").is_none(), "{v}");
    assert_eq!(v["tools"][0]["cache_control"], eph);

    // Without breakpoints: a system string, and no `cache_control` anywhere.
    let plain = json!({"model": "m", "messages": [
        {"role": "system", "content": [{"type": "text", "text": "Rules."}]},
        {"role": "user", "content": "Q"}
    ]});
    let out = request_to_anthropic(plain.to_string().as_bytes(), &opts(&models)).unwrap();
    let v: Value = serde_json::from_slice(&out.body).unwrap();
    assert_eq!(v["system"], "Rules.");
    assert!(
        !String::from_utf8(out.body)
            .unwrap()
            .contains("cache_control")
    );
}

/// What Anthropic refuses with a 400 and an OpenAI history often holds: text
/// blocks of whitespace only, tool ids outside `^[a-zA-Z0-9_-]+$`, `image/jpg`.
#[test]
fn histories_are_sent_in_the_form_anthropic_takes() {
    let (out, _) = translate(&json!({
        "model": "m",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "look"},
                {"type": "text", "text": " \n"},
                {"type": "image_url", "image_url": {"url": "data:IMAGE/JPG;charset=x;base64,AAAA"}},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,BBBB"}}
            ]},
            {"role": "assistant", "content": "\n\n", "tool_calls": [
                {"id": "functions.get_weather:0", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{}"}},
                {"id": "call_ok-1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{}"}}
            ]},
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "Sunny."},
            {"role": "tool", "tool_call_id": "call_ok-1", "content": "Rain."},
            {"role": "user", "content": "\t"},
            {"role": "assistant", "content": "  "}
        ]
    }));
    let messages = out["messages"].as_array().unwrap();
    // The blank user turn and the blank assistant turn are gone; the blank text
    // beside the tool calls too.
    assert_eq!(messages.len(), 3, "{out}");
    let user = messages[0]["content"].as_array().unwrap();
    assert_eq!(user.len(), 3, "{out}");
    assert_eq!(user[1]["source"]["media_type"], "image/jpeg");
    assert_eq!(user[2]["source"]["media_type"], "image/png");
    let calls = messages[1]["content"].as_array().unwrap();
    assert_eq!(calls.len(), 2, "{out}");
    assert_eq!(calls[0]["id"], "functions_get_weather_0");
    assert_eq!(calls[1]["id"], "call_ok-1");
    let results = messages[2]["content"].as_array().unwrap();
    assert_eq!(results[0]["tool_use_id"], "functions_get_weather_0");
    assert_eq!(results[1]["tool_use_id"], "call_ok-1");
}

/// OpenAI's `user` goes to Anthropic as it is when it is an opaque id, and as a
/// hash of itself when Anthropic would refuse it (an email, a phone number, more
/// than 256 characters): the same hash for the same caller.
#[test]
fn the_user_is_sent_as_an_id_anthropic_takes() {
    let sent = |user: &str| {
        let (out, _) = translate(&json!({"model": "m", "user": user,
            "messages": [{"role": "user", "content": "hi"}]}));
        out["metadata"]["user_id"].as_str().unwrap().to_owned()
    };
    for opaque in [
        "user-42",
        "8f14e45f-ceea-467a-9575-f6ed1e1c5e6d",
        "12345678",
    ] {
        assert_eq!(sent(opaque), opaque);
    }
    for refused in ["ada@example.com", "+44 20 7946 0958", &"x".repeat(257)] {
        let id = sent(refused);
        assert!(id.starts_with("user-") && id.len() == 21, "{id}");
        assert_eq!(id, sent(refused), "the same caller, the same id");
    }
    assert_ne!(sent("ada@example.com"), sent("bob@example.com"));
}

#[test]
fn json_without_a_schema_is_asked_for_as_a_forced_tool_call() {
    let ask = |extra: Value| {
        let mut req = json!({
            "model": "smart",
            "messages": [{"role": "user", "content": "Three colours, as JSON."}],
            "response_format": {"type": "json_object"}
        });
        for (k, v) in extra.as_object().unwrap() {
            req[k] = v.clone();
        }
        translate(&req).0
    };
    let out = ask(json!({}));
    assert_eq!(out["tools"].as_array().unwrap().len(), 1);
    assert_eq!(out["tools"][0]["name"], JSON_ANSWER_TOOL);
    assert_eq!(out["tools"][0]["input_schema"], json!({"type": "object"}));
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": JSON_ANSWER_TOOL})
    );
    assert!(out.get("output_config").is_none());
    // Beside the caller's own tools: one of theirs or ours (`auto`, as without a
    // choice); ours when theirs may not be called; theirs when one is required.
    let tools: Value = serde_json::from_str(TOOLS).unwrap();
    let names = |out: &Value| -> Vec<String> {
        out["tools"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["name"].as_str().unwrap().to_owned())
            .collect()
    };
    for choice in [Value::Null, json!("auto")] {
        let out = ask(json!({"tools": tools, "tool_choice": choice}));
        assert_eq!(names(&out), ["get_weather", JSON_ANSWER_TOOL], "{choice}");
        assert_eq!(out["tool_choice"], json!({"type": "any"}), "{choice}");
    }
    let out = ask(json!({"tools": tools, "tool_choice": "auto", "parallel_tool_calls": false}));
    assert_eq!(
        out["tool_choice"],
        json!({"type": "any", "disable_parallel_tool_use": true})
    );
    let out = ask(json!({"tools": tools, "tool_choice": "none"}));
    assert_eq!(names(&out), ["get_weather", JSON_ANSWER_TOOL]);
    assert_eq!(
        out["tool_choice"],
        json!({"type": "tool", "name": JSON_ANSWER_TOOL})
    );
    for choice in [
        json!("required"),
        json!({"type": "function", "function": {"name": "get_weather"}}),
    ] {
        let out = ask(json!({"tools": tools, "tool_choice": choice}));
        assert_eq!(names(&out), ["get_weather"], "{choice}");
    }
    // After a prefill: nothing, as before.
    let out = ask(json!({"messages": [
        {"role": "user", "content": "Three colours, as JSON."},
        {"role": "assistant", "content": "{\"colours\":"}
    ]}));
    assert!(out.get("tools").is_none() && out.get("tool_choice").is_none());
    // Plain text asks for nothing.
    let out = ask(json!({"response_format": {"type": "text"}}));
    assert!(out.get("tools").is_none());
}

#[test]
fn a_json_answer_tool_call_comes_back_as_the_content() {
    let body = json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": JSON_ANSWER_TOOL,
                     "input": {"colours": ["red", "green", "blue"]}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 12, "output_tokens": 9}
    });
    let (out, _) = response_to_openai(&serde_json::to_vec(&body).unwrap()).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    let message = &v["choices"][0]["message"];
    let content: Value = serde_json::from_str(message["content"].as_str().unwrap()).unwrap();
    assert_eq!(content, json!({"colours": ["red", "green", "blue"]}));
    assert!(message.get("tool_calls").is_none());
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    // Cut at the token limit: still `length`.
    let mut cut = body.clone();
    cut["stop_reason"] = json!("max_tokens");
    let (out, _) = response_to_openai(&serde_json::to_vec(&cut).unwrap()).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "length");
    // Another tool's call is still a tool call, alone or beside the answer.
    let mut other = body.clone();
    other["content"][0]["name"] = json!("get_weather");
    let (out, _) = response_to_openai(&serde_json::to_vec(&other).unwrap()).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert!(v["choices"][0]["message"]["content"].is_null());
    let mut both = body;
    let call = other["content"][0].clone();
    both["content"].as_array_mut().unwrap().push(call);
    let (out, _) = response_to_openai(&serde_json::to_vec(&both).unwrap()).unwrap();
    let v: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(v["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        v["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_weather"
    );
    assert!(v["choices"][0]["message"]["content"].is_string());
}

#[test]
fn a_streamed_json_answer_tool_call_streams_as_content() {
    let events = |deltas: &[&str]| {
        let mut ev = vec![
            r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[],"usage":{"input_tokens":5,"output_tokens":1}}}

"#.to_string(),
            format!(
                "event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":0,\"content_block\":{{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"{JSON_ANSWER_TOOL}\",\"input\":{{}}}}}}\n\n"
            ),
        ];
        for d in deltas {
            let delta = json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": d}});
            ev.push(format!("event: content_block_delta\ndata: {delta}\n\n"));
        }
        ev.push(
            "event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n"
                .into(),
        );
        ev.push("event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\"},\"usage\":{\"output_tokens\":7}}\n\n".into());
        ev.push("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n".into());
        ev
    };
    let read = |deltas: &[&str]| {
        let ev = events(deltas);
        let refs: Vec<&str> = ev.iter().map(String::as_str).collect();
        let (sse, _) = stream_text(&refs);
        let chunks = chunks(&sse);
        let content: String = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
            .collect();
        assert!(
            chunks
                .iter()
                .all(|c| c["choices"][0]["delta"].get("tool_calls").is_none()),
            "{sse}"
        );
        let finish: Vec<_> = chunks
            .iter()
            .filter_map(|c| c["choices"][0]["finish_reason"].as_str().map(str::to_owned))
            .collect();
        (content, finish)
    };
    let (content, finish) = read(&["{\"colours\": [\"re", "d\"]}"]);
    assert_eq!(content, r#"{"colours": ["red"]}"#);
    assert_eq!(finish, ["stop"]);
    // Nothing streamed for it: an empty object, as for a tool call without arguments.
    let (content, _) = read(&[]);
    assert_eq!(content, "{}");
    let (content, _) = read(&[" "]);
    assert_eq!(content, " {}");
}
