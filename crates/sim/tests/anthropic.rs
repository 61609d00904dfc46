//! The Anthropic wire format over real loopback HTTP.
mod common;

use common::*;
use serde_json::{Value, json};
use tower_failover_sim::{Flavor, Sim};

#[tokio::test]
async fn non_streaming_message_is_realistic() {
    let sim = sim(Flavor::Anthropic).await;
    let r = post(&client(), &sim.completion_url(), &anthropic_messages(false)).await;
    assert_eq!(r.status, 200);
    assert!(r.header("request-id").unwrap().starts_with("req_"));
    let v = r.json();
    let id = v["id"].as_str().unwrap();
    assert!(id.starts_with("msg_01") && id.len() == 28, "{id}");
    assert_eq!(v["type"], "message");
    assert_eq!(v["role"], "assistant");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    assert_eq!(v["stop_reason"], "end_turn");
    assert_eq!(v["stop_sequence"], Value::Null);
    assert_eq!(v["content"][0]["type"], "text");
    let text = v["content"][0]["text"].as_str().unwrap();
    assert_eq!(
        v["usage"]["output_tokens"].as_u64().unwrap(),
        (text.chars().count() as u64).div_ceil(4)
    );
    assert!(v["usage"]["input_tokens"].as_u64().unwrap() > 5);
    // Rate-limit headers: limits, remaining, RFC 3339 resets.
    assert_eq!(
        r.header("anthropic-ratelimit-requests-limit"),
        Some("1000000")
    );
    assert_eq!(
        r.header("anthropic-ratelimit-requests-remaining"),
        Some("999999")
    );
    assert_eq!(
        r.header("anthropic-ratelimit-tokens-limit"),
        Some("1000000000")
    );
    for h in [
        "anthropic-ratelimit-requests-reset",
        "anthropic-ratelimit-tokens-reset",
    ] {
        let t = r.header(h).unwrap();
        assert_eq!(t.len(), 20, "{t}");
        assert_eq!(&t[10..11], "T");
        assert!(t.ends_with('Z'));
    }
    assert_eq!(sim.counters().messages, 1);
}

#[tokio::test]
async fn streaming_events_follow_the_documented_sequence() {
    let plain = sim(Flavor::Anthropic).await;
    let streaming = sim(Flavor::Anthropic).await;
    let c = client();
    let whole = post(&c, &plain.completion_url(), &anthropic_messages(false)).await;
    let r = post(&c, &streaming.completion_url(), &anthropic_messages(true)).await;
    let events = r.events();
    let names: Vec<&str> = events.iter().map(|(n, _)| n.as_deref().unwrap()).collect();
    assert_eq!(
        &names[..3],
        ["message_start", "content_block_start", "ping"]
    );
    let n = names.len();
    assert_eq!(
        &names[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    assert!(names[3..n - 3].iter().all(|n| *n == "content_block_delta"));
    assert!(n - 6 >= 3, "several deltas");
    let start: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["stop_reason"], Value::Null);
    let s = said(Flavor::Anthropic, &r, true).unwrap();
    let w = said(Flavor::Anthropic, &whole, false).unwrap();
    assert!(s.complete);
    assert_eq!(s.text, w.text);
    assert_eq!(s.finish.as_deref(), Some("end_turn"));
    assert_eq!(s.output_tokens, w.output_tokens);
}

#[tokio::test]
async fn max_tokens_gives_stop_reason_max_tokens() {
    let sim = Sim::builder(Flavor::Anthropic)
        .reply_words(40, 40)
        .start()
        .await
        .unwrap();
    for stream in [false, true] {
        let mut body = anthropic_messages(stream);
        body["max_tokens"] = json!(4);
        let r = post(&client(), &sim.completion_url(), &body).await;
        let s = said(Flavor::Anthropic, &r, stream).unwrap();
        assert_eq!(s.finish.as_deref(), Some("max_tokens"));
        assert!(s.output_tokens.unwrap() <= 4);
    }
}

#[tokio::test]
async fn output_format_json_schema_answers_matching_json() {
    let sim = sim(Flavor::Anthropic).await;
    for stream in [false, true] {
        let r = post(
            &client(),
            &sim.completion_url(),
            &json_request(Flavor::Anthropic, stream),
        )
        .await;
        let text = said(Flavor::Anthropic, &r, stream).unwrap().text;
        assert!(
            matches_city_schema(&serde_json::from_str(&text).unwrap()),
            "{text}"
        );
    }
}

#[tokio::test]
async fn models_and_errors_use_anthropic_shapes() {
    let sim = Sim::builder(Flavor::Anthropic)
        .api_key("sk-ant-test")
        .models(["claude-sonnet-4-5"])
        .start()
        .await
        .unwrap();
    let c = client();
    let r = post(&c, &sim.completion_url(), &anthropic_messages(false)).await;
    assert_eq!(r.status, 401);
    let v = r.json();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "authentication_error");

    let send = |body: Value, path: &'static str, method: &'static str| {
        let c = c.clone();
        let url = format!("{}{path}", sim.base_url());
        async move {
            let req = http::Request::builder()
                .method(method)
                .uri(url)
                .header("x-api-key", "sk-ant-test")
                .header("anthropic-version", "2023-06-01")
                .body(http_body_util::Full::new(bytes::Bytes::from(
                    body.to_string(),
                )))
                .unwrap();
            let res = c.request(req).await.unwrap();
            let status = res.status();
            let body = http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap()
                .to_bytes();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        }
    };
    let (s, v) = send(Value::Null, "/v1/models", "GET").await;
    assert_eq!(s, 200);
    assert_eq!(v["data"][0]["type"], "model");
    assert_eq!(v["data"][0]["id"], "claude-sonnet-4-5");
    assert_eq!(v["has_more"], false);
    assert_eq!(
        send(anthropic_messages(false), "/v1/messages", "POST")
            .await
            .0,
        200
    );
    let mut other = anthropic_messages(false);
    other["model"] = json!("claude-unknown");
    let (s, v) = send(other, "/v1/messages", "POST").await;
    assert_eq!(s, 404);
    assert_eq!(v["error"]["type"], "not_found_error");
    let (s, v) = send(json!({"model": "x"}), "/v1/messages", "POST").await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert_eq!(
        send(anthropic_messages(false), "/v1/chat/completions", "POST")
            .await
            .0,
        404
    );
}

/// A tool the model must call answers with a `tool_use` block whose input follows
/// the tool's schema (`stop_reason: "tool_use"`); streamed, as `input_json_delta`s
/// that join into the same kind of input. `auto` answers in text.
#[tokio::test]
async fn a_forced_tool_is_called_with_input_to_its_schema() {
    let sim = sim(Flavor::Anthropic).await;
    let schema = json!({"type": "object", "required": ["city"],
        "properties": {"city": {"type": "string"}}});
    let tools = json!([{"name": "other", "input_schema": {"type": "object"}},
        {"name": "get_weather", "input_schema": schema}]);
    for (choice, name) in [
        (
            json!({"type": "tool", "name": "get_weather"}),
            Some("get_weather"),
        ),
        (json!({"type": "any"}), Some("other")),
        (json!({"type": "auto"}), None),
    ] {
        for stream in [false, true] {
            let mut body = anthropic_messages(stream);
            body["tools"] = tools.clone();
            body["tool_choice"] = choice.clone();
            let r = post(&client(), &sim.completion_url(), &body).await;
            assert_eq!(r.status, 200);
            let (called, input, stop) = if stream {
                let events = r.events();
                let data: Vec<Value> = events
                    .iter()
                    .map(|(_, d)| serde_json::from_str(d).unwrap())
                    .collect();
                let start = data.iter().find(|d| d["type"] == "content_block_start");
                let called = start.and_then(|s| {
                    (s["content_block"]["type"] == "tool_use")
                        .then(|| s["content_block"]["name"].as_str().unwrap().to_owned())
                });
                let input: String = data
                    .iter()
                    .filter_map(|d| d["delta"]["partial_json"].as_str())
                    .collect();
                let stop = data
                    .iter()
                    .find_map(|d| d["delta"]["stop_reason"].as_str().map(str::to_owned));
                (called, input, stop.unwrap())
            } else {
                let v = r.json();
                let block = &v["content"][0];
                let called = (block["type"] == "tool_use")
                    .then(|| block["name"].as_str().unwrap().to_owned());
                (
                    called,
                    block["input"].to_string(),
                    v["stop_reason"].as_str().unwrap().to_owned(),
                )
            };
            assert_eq!(called.as_deref(), name, "{choice} stream={stream}");
            match name {
                Some("get_weather") => {
                    let input: Value = serde_json::from_str(&input).unwrap();
                    assert!(input["city"].is_string(), "{input}");
                    assert_eq!(stop, "tool_use");
                }
                Some(_) => assert!(serde_json::from_str::<Value>(&input).unwrap().is_object()),
                None => assert_eq!(stop, "end_turn"),
            }
        }
    }
}

/// A stop sequence ends the reply before it: `stop_reason: "stop_sequence"` and
/// the sequence met in `stop_sequence`, streamed or not; one of only whitespace is
/// refused, as Anthropic does.
#[tokio::test]
async fn stop_sequences_end_the_reply_and_are_named() {
    let sim = Sim::builder(Flavor::Anthropic)
        .echo(true)
        .start()
        .await
        .unwrap();
    for stream in [false, true] {
        let mut body = anthropic_messages(stream);
        body["stop_sequences"] = json!(["never in it", "failover"]);
        let r = post(&client(), &sim.completion_url(), &body).await;
        let s = said(Flavor::Anthropic, &r, stream).unwrap();
        // The echo: `You said: "Say something about failover."…`
        assert_eq!(
            s.text, "You said: \"Say something about ",
            "stream={stream}"
        );
        assert_eq!(s.finish.as_deref(), Some("stop_sequence"));
        let sequence = if stream {
            r.events()
                .iter()
                .filter_map(|(_, d)| serde_json::from_str::<Value>(d).ok())
                .find_map(|v| v["delta"]["stop_sequence"].as_str().map(str::to_owned))
        } else {
            r.json()["stop_sequence"].as_str().map(str::to_owned)
        };
        assert_eq!(sequence.as_deref(), Some("failover"));
    }
    let mut body = anthropic_messages(false);
    body["stop_sequences"] = json!(["\n"]);
    let r = post(&client(), &sim.completion_url(), &body).await;
    assert_eq!(r.status, 400);
}
