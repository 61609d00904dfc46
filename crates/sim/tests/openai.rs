//! The OpenAI wire format over real loopback HTTP.
mod common;

use common::*;
use serde_json::{Value, json};
use tower_failover_sim::{Flavor, Sim};

#[tokio::test]
async fn non_streaming_completion_is_realistic() {
    let sim = sim(Flavor::OpenAi).await;
    let r = post(&client(), &sim.completion_url(), &openai_chat(false)).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some("application/json"));
    assert!(r.header("x-request-id").unwrap().starts_with("req_"));
    assert_eq!(r.header("x-sim-name"), Some("openai"));
    assert_eq!(r.header("x-sim-fault"), None);
    let v = r.json();
    assert!(v["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(v["id"].as_str().unwrap().len(), "chatcmpl-".len() + 29);
    assert_eq!(v["object"], "chat.completion");
    assert!(v["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(v["model"], "gpt-4o-mini");
    assert!(v["system_fingerprint"].as_str().unwrap().starts_with("fp_"));
    let choice = &v["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["finish_reason"], "stop");
    assert_eq!(choice["message"]["role"], "assistant");
    assert_eq!(choice["message"]["refusal"], Value::Null);
    let content = choice["message"]["content"].as_str().unwrap();
    assert!(content.split(' ').count() >= 8, "{content}");
    let u = &v["usage"];
    let ct = u["completion_tokens"].as_u64().unwrap();
    assert_eq!(ct, (content.chars().count() as u64).div_ceil(4));
    assert!(u["prompt_tokens"].as_u64().unwrap() > 10);
    assert_eq!(
        u["total_tokens"].as_u64().unwrap(),
        u["prompt_tokens"].as_u64().unwrap() + ct
    );
    // Rate-limit headers, truthful for the default (generous) quota.
    assert_eq!(r.header("x-ratelimit-limit-requests"), Some("1000000"));
    assert_eq!(r.header("x-ratelimit-remaining-requests"), Some("999999"));
    assert_eq!(r.header("x-ratelimit-limit-tokens"), Some("1000000000"));
    let used = u["total_tokens"].as_u64().unwrap();
    assert_eq!(
        r.header("x-ratelimit-remaining-tokens").unwrap(),
        (1_000_000_000 - used).to_string()
    );
    assert!(
        r.header("x-ratelimit-reset-requests")
            .unwrap()
            .ends_with("ms")
    );
    assert!(r.header("x-ratelimit-reset-tokens").is_some());
    let c = sim.counters();
    assert_eq!((c.received, c.answered, c.ok(), c.completed), (1, 1, 1, 1));
    assert_eq!(c.chat_completions, 1);
    assert_eq!(c.completion_tokens, ct);
}

#[tokio::test]
async fn streaming_chunks_end_with_done_and_match_the_non_streaming_text() {
    let plain = sim(Flavor::OpenAi).await;
    let streaming = sim(Flavor::OpenAi).await;
    let c = client();
    let whole = post(&c, &plain.completion_url(), &openai_chat(false)).await;
    let r = post(&c, &streaming.completion_url(), &openai_chat(true)).await;
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("content-type"),
        Some("text/event-stream; charset=utf-8")
    );
    let events = r.events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|(name, d)| {
            assert!(name.is_none());
            serde_json::from_str(d).unwrap()
        })
        .collect();
    assert!(chunks.len() >= 4);
    let id = chunks[0]["id"].as_str().unwrap();
    for ch in &chunks {
        assert_eq!(ch["object"], "chat.completion.chunk");
        assert_eq!(ch["id"], id);
        assert!(ch.get("usage").is_none(), "usage only with include_usage");
    }
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let last = chunks.last().unwrap();
    assert_eq!(last["choices"][0]["finish_reason"], "stop");
    assert_eq!(last["choices"][0]["delta"], json!({}));
    let s = said(Flavor::OpenAi, &r, true).unwrap();
    assert!(s.complete);
    let w = said(Flavor::OpenAi, &whole, false).unwrap();
    assert_eq!(s.text, w.text, "same seed, same request order: same text");
    assert_eq!(streaming.counters().streamed, 1);
}

#[tokio::test]
async fn include_usage_adds_a_final_usage_chunk() {
    let sim = sim(Flavor::OpenAi).await;
    let mut body = openai_chat(true);
    body["stream_options"] = json!({"include_usage": true});
    let r = post(&client(), &sim.completion_url(), &body).await;
    let events = r.events();
    assert_eq!(events.last().unwrap().1, "[DONE]");
    let usage_chunk: Value = serde_json::from_str(&events[events.len() - 2].1).unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    let u = &usage_chunk["usage"];
    let text = said(Flavor::OpenAi, &r, true).unwrap().text;
    assert_eq!(
        u["completion_tokens"].as_u64().unwrap(),
        (text.chars().count() as u64).div_ceil(4)
    );
    let first: Value = serde_json::from_str(&events[0].1).unwrap();
    assert_eq!(
        first["usage"],
        Value::Null,
        "other chunks carry usage: null"
    );
}

#[tokio::test]
async fn json_modes_answer_valid_json() {
    let sim = sim(Flavor::OpenAi).await;
    let c = client();
    let mut body = openai_chat(false);
    body["response_format"] = json!({"type": "json_object"});
    let r = post(&c, &sim.completion_url(), &body).await;
    let v: Value = serde_json::from_str(&said(Flavor::OpenAi, &r, false).unwrap().text).unwrap();
    assert!(v.is_object());
    for stream in [false, true] {
        let r = post(
            &c,
            &sim.completion_url(),
            &json_request(Flavor::OpenAi, stream),
        )
        .await;
        let text = said(Flavor::OpenAi, &r, stream).unwrap().text;
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(matches_city_schema(&v), "{v}");
    }
}

/// OpenAI's strict structured-output mode refuses a schema it cannot enforce
/// (an object without `additionalProperties: false`, a property left out of
/// `required`, at any depth) with a 400 naming where; the same schema without
/// `strict` is answered.
#[tokio::test]
async fn strict_mode_refuses_a_schema_it_cannot_enforce() {
    let sim = sim(Flavor::OpenAi).await;
    let c = client();
    let ask = |schema: Value, strict: bool| {
        let mut body = openai_chat(false);
        body["response_format"] = json!({"type": "json_schema",
            "json_schema": {"name": "trip", "strict": strict, "schema": schema}});
        body
    };
    let optional = json!({"type": "object", "additionalProperties": false,
        "properties": {"city": {"type": "string"}, "note": {"type": "string"}},
        "required": ["city"]});
    let open_inside = json!({"type": "object", "additionalProperties": false,
        "properties": {"stops": {"type": "array", "items": {"type": "object",
            "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
        "required": ["stops"]});
    for (schema, words) in [
        (
            optional.clone(),
            "In context=(), 'required' is required to be supplied and to be an array including every key in properties. Missing 'note'.",
        ),
        (
            open_inside,
            "In context=('properties', 'stops', 'items'), 'additionalProperties' is required to be supplied and to be false.",
        ),
    ] {
        let r = post(&c, &sim.completion_url(), &ask(schema, true)).await;
        assert_eq!(r.status, 400, "{}", r.text());
        assert_eq!(
            r.json()["error"]["message"],
            format!("Invalid schema for response_format 'trip': {words}")
        );
    }
    let r = post(&c, &sim.completion_url(), &ask(optional, false)).await;
    assert_eq!(r.status, 200, "{}", r.text());
}

#[tokio::test]
async fn max_tokens_cuts_with_finish_reason_length() {
    let sim = Sim::builder(Flavor::OpenAi)
        .reply_words(40, 40)
        .start()
        .await
        .unwrap();
    for key in ["max_tokens", "max_completion_tokens"] {
        let mut body = openai_chat(false);
        body[key] = json!(5);
        let r = post(&client(), &sim.completion_url(), &body).await;
        let s = said(Flavor::OpenAi, &r, false).unwrap();
        assert_eq!(s.finish.as_deref(), Some("length"));
        assert!(s.output_tokens.unwrap() <= 5);
        assert!(!s.text.is_empty());
    }
}

#[tokio::test]
async fn models_route_and_model_checks() {
    let any = sim(Flavor::OpenAi).await;
    let c = client();
    let r = get(&c, &format!("{}/v1/models", any.base_url())).await;
    let v = r.json();
    assert_eq!(v["object"], "list");
    assert_eq!(v["data"][0]["object"], "model");
    assert!(r.header("x-ratelimit-remaining-requests").is_some());

    let strict = Sim::builder(Flavor::OpenAi)
        .models(["gpt-x"])
        .start()
        .await
        .unwrap();
    let v = get(&c, &format!("{}/v1/models", strict.base_url()))
        .await
        .json();
    assert_eq!(v["data"][0]["id"], "gpt-x");
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    let r = post(&c, &strict.completion_url(), &openai_chat(false)).await;
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"]["code"], "model_not_found");
    let mut body = openai_chat(false);
    body["model"] = json!("gpt-x");
    assert_eq!(post(&c, &strict.completion_url(), &body).await.status, 200);
    assert_eq!(strict.counters().models, 1);
}

#[tokio::test]
async fn bad_requests_get_openai_errors() {
    let sim = Sim::builder(Flavor::OpenAi)
        .api_key("sk-test")
        .start()
        .await
        .unwrap();
    let c = client();
    // No key.
    let r = post(&c, &sim.completion_url(), &openai_chat(false)).await;
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"]["code"], "invalid_api_key");
    // Right key, then bad bodies and routes.
    let send = |body: &'static str, path: &'static str, method: &'static str| {
        let c = c.clone();
        let url = format!("{}{path}", sim.base_url());
        async move {
            let req = http::Request::builder()
                .method(method)
                .uri(url)
                .header("authorization", "Bearer sk-test")
                .body(http_body_util::Full::new(bytes::Bytes::from(body)))
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
    let ok = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    assert_eq!(send(ok, "/v1/chat/completions", "POST").await.0, 200);
    let (s, v) = send("{not json", "/v1/chat/completions", "POST").await;
    assert_eq!(s, 400);
    assert_eq!(v["error"]["type"], "invalid_request_error");
    let (s, _) = send(
        r#"{"model":"m","messages":[]}"#,
        "/v1/chat/completions",
        "POST",
    )
    .await;
    assert_eq!(s, 400);
    assert_eq!(send(ok, "/v1/messages", "POST").await.0, 404);
    assert_eq!(send("", "/v1/chat/completions", "GET").await.0, 405);
    let c = sim.counters();
    assert_eq!(c.status(401), 1);
    assert_eq!(c.status(400), 2);
    assert_eq!(c.completed, 1);
}

#[tokio::test]
async fn replies_are_deterministic_per_seed() {
    let c = client();
    let mut texts = Vec::new();
    for seed in [1, 1, 2] {
        let sim = Sim::builder(Flavor::OpenAi)
            .seed(seed)
            .start()
            .await
            .unwrap();
        let mut t = String::new();
        for _ in 0..3 {
            let r = post(&c, &sim.completion_url(), &openai_chat(false)).await;
            t.push_str(&said(Flavor::OpenAi, &r, false).unwrap().text);
        }
        texts.push(t);
    }
    assert_eq!(texts[0], texts[1]);
    assert_ne!(texts[0], texts[2]);
}

#[tokio::test]
async fn echo_shows_the_prompt_arrived() {
    let sim = Sim::builder(Flavor::OpenAi)
        .echo(true)
        .start()
        .await
        .unwrap();
    let r = post(&client(), &sim.completion_url(), &openai_chat(false)).await;
    let s = said(Flavor::OpenAi, &r, false).unwrap();
    assert!(
        s.text
            .starts_with("You said: \"Say something about failover.\". "),
        "{}",
        s.text
    );
}

#[tokio::test]
async fn plain_http2_prior_knowledge_works() {
    let sim = sim(Flavor::OpenAi).await;
    let c: HttpClient =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .http2_only(true)
            .build_http();
    let req = http::Request::builder()
        .method("POST")
        .uri(sim.completion_url())
        .body(http_body_util::Full::new(bytes::Bytes::from(
            openai_chat(true).to_string(),
        )))
        .unwrap();
    let res = c.request(req).await.unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    let body = http_body_util::BodyExt::collect(res.into_body())
        .await
        .unwrap()
        .to_bytes();
    assert!(body.ends_with(b"data: [DONE]\n\n"));
}

/// A function the request makes the model call answers with `tool_calls` whose
/// arguments follow its parameters' schema (`finish_reason: "tool_calls"`);
/// streamed, as argument deltas that join into the same kind of arguments.
#[tokio::test]
async fn a_forced_function_is_called_with_arguments_to_its_schema() {
    let sim = sim(Flavor::OpenAi).await;
    let tools = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "required": ["city"],
            "properties": {"city": {"type": "string"}}}}}]);
    for (choice, called) in [
        (
            json!({"type": "function", "function": {"name": "get_weather"}}),
            true,
        ),
        (json!("required"), true),
        (json!("auto"), false),
    ] {
        for stream in [false, true] {
            let mut body = openai_chat(stream);
            body["tools"] = tools.clone();
            body["tool_choice"] = choice.clone();
            let r = post(&client(), &sim.completion_url(), &body).await;
            assert_eq!(r.status, 200);
            let (name, arguments, finish) = if stream {
                let data: Vec<Value> = r
                    .events()
                    .iter()
                    .filter(|(_, d)| d != "[DONE]")
                    .map(|(_, d)| serde_json::from_str(d).unwrap())
                    .collect();
                let calls: Vec<&Value> = data
                    .iter()
                    .filter_map(|d| d["choices"][0]["delta"]["tool_calls"].get(0))
                    .collect();
                let name = calls
                    .iter()
                    .find_map(|c| c["function"]["name"].as_str().map(str::to_owned));
                let args: String = calls
                    .iter()
                    .filter_map(|c| c["function"]["arguments"].as_str())
                    .collect();
                let finish = data
                    .iter()
                    .find_map(|d| d["choices"][0]["finish_reason"].as_str().map(str::to_owned));
                (name, args, finish.unwrap())
            } else {
                let v = r.json();
                let call = &v["choices"][0]["message"]["tool_calls"][0];
                assert_eq!(
                    v["choices"][0]["message"]["content"].is_null(),
                    called,
                    "{v}"
                );
                (
                    call["function"]["name"].as_str().map(str::to_owned),
                    call["function"]["arguments"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned(),
                    v["choices"][0]["finish_reason"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                )
            };
            if called {
                assert_eq!(name.as_deref(), Some("get_weather"), "{choice}");
                let args: Value = serde_json::from_str(&arguments).unwrap();
                assert!(args["city"].is_string(), "{args}");
                assert_eq!(finish, "tool_calls");
            } else {
                assert_eq!((name, finish.as_str()), (None, "stop"), "{choice}");
            }
        }
    }
}

/// `stop` (a string or a list) ends the reply before the first sequence met, with
/// `finish_reason: "stop"`, streamed or not.
#[tokio::test]
async fn stop_ends_the_reply_before_the_sequence() {
    let sim = Sim::builder(Flavor::OpenAi)
        .echo(true)
        .start()
        .await
        .unwrap();
    for stop in [
        json!("failover"),
        json!(["never in it", "failover", "said"]),
    ] {
        for stream in [false, true] {
            let mut body = openai_chat(stream);
            body["stop"] = stop.clone();
            let r = post(&client(), &sim.completion_url(), &body).await;
            let s = said(Flavor::OpenAi, &r, stream).unwrap();
            let want = if stop.is_array() {
                "You "
            } else {
                "You said: \"Say something about "
            };
            assert_eq!(s.text, want, "{stop} stream={stream}");
            assert_eq!(s.finish.as_deref(), Some("stop"));
        }
    }
}
