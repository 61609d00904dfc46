//! The answer's token limit goes under the name the provider takes
//! ([`MaxTokensField`]): renamed in chat completions, never in the legacy
//! `/completions`, which takes `max_tokens` only.

mod common;

use common::{OPENAI_JSON, TestServer, json, read_body};
use http::Request;
use tower::ServiceExt;
use tower_failover_core::replay::ReplayBody;
use tower_failover_provider::{MaxTokensField, OpenAiCompatible};

fn post(path: &str, body: serde_json::Value) -> Request<ReplayBody> {
    Request::post(path)
        .header("content-type", "application/json")
        .body(ReplayBody::from(body.to_string()))
        .unwrap()
}

#[tokio::test]
async fn the_limit_is_renamed_for_chat_completions_only() {
    let server = TestServer::start(None, |_| json(200, OPENAI_JSON)).await;
    let base = format!("http://127.0.0.1:{}/v1", server.addr.port());
    let provider = |field| {
        OpenAiCompatible::builder()
            .base_url(base.clone())
            .api_key("sk-test")
            .max_tokens_field(field)
            .build()
            .unwrap()
    };
    let chat = serde_json::json!({
        "model": "gpt-4o-mini",
        "max_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    });
    let legacy =
        serde_json::json!({"model": "gpt-3.5-turbo-instruct", "max_tokens": 5, "prompt": "hi"});
    let newer = serde_json::json!({
        "model": "gpt-4o-mini",
        "max_completion_tokens": 5,
        "messages": [{"role": "user", "content": "hi"}],
    });
    for (field, path, body) in [
        (
            MaxTokensField::MaxCompletionTokens,
            "/v1/chat/completions",
            chat.clone(),
        ),
        (
            MaxTokensField::MaxCompletionTokens,
            "/v1/completions",
            legacy.clone(),
        ),
        (
            MaxTokensField::MaxTokens,
            "/v1/chat/completions",
            newer.clone(),
        ),
        // `auto` away from api.openai.com: as the caller sent it.
        (MaxTokensField::Auto, "/v1/chat/completions", chat.clone()),
    ] {
        let res = provider(field).oneshot(post(path, body)).await.unwrap();
        assert_eq!(res.status(), 200);
        let _ = read_body(res.into_body()).await;
    }
    let seen: Vec<_> = server.requests().iter().map(|r| r.json()).collect();
    assert_eq!(seen.len(), 4);
    assert_eq!(seen[0]["max_completion_tokens"], 5);
    assert!(seen[0].get("max_tokens").is_none(), "{}", seen[0]);
    assert_eq!(
        seen[1], legacy,
        "the legacy completions API takes max_tokens"
    );
    assert_eq!(seen[2]["max_tokens"], 5);
    assert!(
        seen[2].get("max_completion_tokens").is_none(),
        "{}",
        seen[2]
    );
    assert_eq!(seen[3], chat);
}
