//! The gateway's other front doors over real loopback HTTP, simulated providers
//! behind them: OpenAI's embeddings and Anthropic's Messages API.

mod common;

use common::{Answer, Running, start};

use std::time::Duration;

use http::StatusCode;
use serde_json::{Value, json};
use tower_failover::Config;
use tower_failover::sim::{Fault, Flavor, Sim};
use tower_failover_gateway as gateway;

impl Running {
    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send_with("POST", path, &[], body.to_string()).await
    }
}

async fn sim(flavor: Flavor, name: &str, seed: u64, models: &[&str]) -> Sim {
    Sim::builder(flavor)
        .name(name)
        .seed(seed)
        .models(models.iter().copied())
        .ttft(Duration::from_millis(2))
        .token_interval(Duration::from_millis(1))
        .start()
        .await
        .expect("a sim starts")
}

fn embed_request(input: Value) -> Value {
    json!({"model": "text-embedding-3-small", "input": input})
}

// --- embeddings --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_gateway_serves_embeddings_and_lists_the_model() {
    let simulated = gateway::simulated().await.unwrap();
    let gw = start(&simulated.config).await;

    let models = gw.send_with("GET", "/v1/models", &[], "").await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&gateway::SIMULATED_EMBEDDINGS_MODEL),
        "{ids:?}"
    );
    assert!(ids.contains(&"gpt-4o-mini"), "{ids:?}");

    let a = gw
        .post(
            "/v1/embeddings",
            &embed_request(json!(["one", "two", "one"])),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.served_by(), "openai/text-embedding-3-small");
    let v = a.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 1536);
    // Deterministic: the same text, the same vector; another text, another.
    assert_eq!(data[0]["embedding"], data[2]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    // The embeddings stack's health is on /health, and it takes overrides.
    let health = gw.send_with("GET", "/health", &[], "").await.json();
    assert_eq!(health["embeddings"]["status"], "ok", "{health}");
    assert!(
        health["embeddings"]
            .to_string()
            .contains("text-embedding-3-small"),
        "{health}"
    );
    let force = |state: Value| json!({"provider": "openai", "model": "text-embedding-3-small", "state": state});
    let forced = gw.post("/health/force", &force(json!("open"))).await;
    assert_eq!(forced.status, StatusCode::OK, "{}", forced.body);
    let refused = gw
        .post("/v1/embeddings", &embed_request(json!("one")))
        .await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        refused.body
    );
    let released = gw.post("/health/force", &force(json!("closed"))).await;
    assert_eq!(released.status, StatusCode::OK, "{}", released.body);
    let again = gw
        .post("/v1/embeddings", &embed_request(json!("one")))
        .await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.json()["data"][0], data[0]);

    // Chat never reaches the embeddings entry.
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..6 {
        let a = gw.post("/v1/chat/completions", &chat).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(!a.served_by().contains("embedding"), "{}", a.served_by());
    }
    gw.shutdown().await.unwrap();
}

/// Two embeddings entries and a chat entry: an outage of the first embeddings
/// provider is invisible; chat requests never reach an embeddings entry and
/// embeddings requests never reach the chat entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_fail_over_only_between_embeddings_entries() {
    let chat = sim(Flavor::OpenAi, "chat", 1, &["gpt-4o-mini"]).await;
    let first = sim(Flavor::OpenAi, "first", 2, &["text-embedding-3-small"]).await;
    let second = sim(Flavor::OpenAi, "second", 3, &["text-embedding-3-small"]).await;
    let config = Config::from_toml_str(&format!(
        r#"
        router = "fallback"
        deadline = "10s"

        [circuit]
        consecutive_failures = 2
        cooldown = "30s"

        [[providers]]
        name = "chat"
        model = "gpt-4o-mini"
        kind = "openai"
        base_url = "{}/v1"
        priority = 0

        [[providers]]
        name = "first"
        model = "text-embedding-3-small"
        embeddings = true
        kind = "openai"
        base_url = "{}/v1"
        priority = 0

        [[providers]]
        name = "second"
        model = "text-embedding-3-small"
        embeddings = true
        kind = "openai"
        base_url = "{}/v1"
        priority = 1
        "#,
        chat.base_url(),
        first.base_url(),
        second.base_url()
    ))
    .unwrap();
    let gw = start(&config).await;

    let healthy = gw
        .post("/v1/embeddings", &embed_request(json!("hello")))
        .await;
    assert_eq!(healthy.status, StatusCode::OK, "{}", healthy.body);
    assert_eq!(healthy.served_by(), "first/text-embedding-3-small");

    first.set_faults([Fault::Status(503).into()]).unwrap();
    for _ in 0..4 {
        let a = gw
            .post("/v1/embeddings", &embed_request(json!("hello")))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.served_by(), "second/text-embedding-3-small");
        // Another provider, the same model: the same vector.
        assert_eq!(a.json()["data"], healthy.json()["data"]);
    }
    assert!(first.counters().status(503) >= 1);

    // Everything down: OpenAI's error shape, 503 with retry-after.
    second.set_faults([Fault::Status(503).into()]).unwrap();
    let mut last = None;
    for _ in 0..4 {
        last = Some(
            gw.post("/v1/embeddings", &embed_request(json!("hello")))
                .await,
        );
    }
    let down = last.unwrap();
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.body
    );
    assert!(down.headers.contains_key("retry-after"));
    assert!(down.json()["error"]["message"].is_string());

    // The chat entry saw no embeddings request, and vice versa.
    let c = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    assert_eq!(c.served_by(), "chat/gpt-4o-mini");
    assert_eq!(chat.counters().received, 1);
    assert_eq!(first.counters().chat_completions, 0);
    assert_eq!(second.counters().chat_completions, 0);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_without_an_embeddings_entry_is_a_typed_404() {
    let chat = sim(Flavor::OpenAi, "chat", 1, &["gpt-4o-mini"]).await;
    let config = Config::from_toml_str(&format!(
        "[[providers]]\nname = \"chat\"\nmodel = \"gpt-4o-mini\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n",
        chat.base_url()
    ))
    .unwrap();
    let gw = start(&config).await;
    let a = gw.post("/v1/embeddings", &embed_request(json!("x"))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["error"]["code"], "model_not_found");
    assert_eq!(chat.counters().received, 0);
    gw.shutdown().await.unwrap();
}

// --- Anthropic's Messages API ------------------------------------------------

/// An OpenAI-compatible primary and an Anthropic backup, both answering
/// `/v1/messages` callers.
async fn messages_gateway() -> (Sim, Sim, Running) {
    let primary = sim(Flavor::OpenAi, "primary", 1, &["gpt-4o-mini"]).await;
    let backup = sim(Flavor::Anthropic, "backup", 2, &["claude-haiku-4-5"]).await;
    let config = Config::from_toml_str(&format!(
        r#"
        router = "fallback"
        deadline = "10s"
        max_request_bytes = 65536

        [circuit]
        consecutive_failures = 2
        cooldown = "30s"

        # Requests are routed by the model they ask for; when gpt-4o-mini's
        # group is down, the Anthropic model answers for it.
        [models."gpt-4o-mini"]
        fallbacks = ["claude-haiku-4-5"]

        [[providers]]
        name = "primary"
        model = "gpt-4o-mini"
        kind = "openai"
        base_url = "{}/v1"
        priority = 0

        [[providers]]
        name = "backup"
        model = "claude-haiku-4-5"
        kind = "anthropic"
        base_url = "{}"
        priority = 1
        "#,
        primary.base_url(),
        backup.base_url()
    ))
    .unwrap();
    let gw = start(&config).await;
    (primary, backup, gw)
}

const ANTHROPIC_HEADERS: [(&str, &str); 2] = [
    ("x-api-key", "caller-key"),
    ("anthropic-version", "2023-06-01"),
];

fn message_request(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "max_tokens": 200,
        "stream": stream,
        "system": [{"type": "text", "text": "Be brief."}],
        "messages": [
            {"role": "user", "content": "What is the weather in Paris?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Let me look."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "Sunny"},
                {"type": "text", "text": "Thanks, and in one word?"}
            ]}
        ],
        "tools": [{"name": "get_weather", "description": "Weather in a city",
                   "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}],
        "tool_choice": {"type": "auto"}
    })
}

impl Running {
    async fn message(&self, body: &Value) -> Answer {
        self.send_with("POST", "/v1/messages", &ANTHROPIC_HEADERS, body.to_string())
            .await
    }
}

fn assert_message(a: &Answer) {
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let m = a.json();
    assert_eq!(m["type"], "message");
    assert_eq!(m["role"], "assistant");
    assert!(m["id"].as_str().unwrap().starts_with("msg_"), "{m}");
    assert_eq!(m["content"][0]["type"], "text");
    assert!(!m["content"][0]["text"].as_str().unwrap().is_empty());
    assert_eq!(m["stop_reason"], "end_turn");
    assert!(m["usage"]["input_tokens"].as_u64().unwrap() > 0, "{m}");
    assert!(m["usage"]["output_tokens"].as_u64().unwrap() > 0, "{m}");
}

/// The event names and data of an SSE body, in order.
fn events(body: &str) -> Vec<(String, Value)> {
    tower_failover_core::sse::events(body.as_bytes())
        .expect("an SSE body")
        .into_iter()
        .map(|(name, d)| {
            let data: Value = serde_json::from_str(&d).unwrap_or_else(|e| panic!("{e}: {d}"));
            assert_eq!(data["type"], name.as_str(), "event name and type agree");
            (name, data)
        })
        .collect()
}

fn assert_message_stream(a: &Answer) -> String {
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let evs = events(&a.body);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "message_start", "{names:?}");
    assert_eq!(names[1], "content_block_start", "{names:?}");
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"],
        "{names:?}"
    );
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, d)| d["delta"]["text"].as_str().unwrap().to_owned())
        .collect();
    assert!(!text.is_empty());
    let delta = &evs[evs.len() - 2].1;
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert!(
        delta["usage"]["output_tokens"].as_u64().unwrap() > 0,
        "{delta}"
    );
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_are_served_by_any_provider_through_an_outage() {
    let (primary, backup, gw) = messages_gateway().await;

    // An OpenAI-compatible provider answers an Anthropic caller.
    let a = gw.message(&message_request(false)).await;
    assert_message(&a);
    assert_eq!(a.served_by(), "primary/gpt-4o-mini");
    let s = gw.message(&message_request(true)).await;
    assert_message_stream(&s);
    assert_eq!(s.served_by(), "primary/gpt-4o-mini");
    // The tool history reached the provider as OpenAI messages (a 400 otherwise).
    assert_eq!(primary.counters().chat_completions, 2);

    // The primary goes down: the Anthropic backup answers, translated twice.
    primary.set_faults([Fault::Status(503).into()]).unwrap();
    for _ in 0..3 {
        let a = gw.message(&message_request(false)).await;
        assert_message(&a);
        assert_eq!(a.served_by(), "backup/claude-haiku-4-5");
        let s = gw.message(&message_request(true)).await;
        assert_message_stream(&s);
        assert_eq!(s.served_by(), "backup/claude-haiku-4-5");
    }
    assert!(backup.counters().messages >= 6);

    // Everything down: 529 overloaded_error with retry-after, Anthropic's shape.
    backup.set_faults([Fault::Status(529).into()]).unwrap();
    let mut last = None;
    for _ in 0..4 {
        last = Some(gw.message(&message_request(false)).await);
    }
    let down = last.unwrap();
    assert_eq!(down.status.as_u16(), 529, "{}", down.body);
    assert!(
        down.headers.contains_key("retry-after"),
        "{:?}",
        down.headers
    );
    let e = down.json();
    assert_eq!(e["type"], "error");
    assert_eq!(e["error"]["type"], "overloaded_error");
    assert!(e["error"]["message"].is_string());
    gw.shutdown().await.unwrap();
}

/// A tool that gives back an image (Claude Code's Read of a screenshot) has it
/// shown to the model by either kind of provider, not replaced by a word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_image_a_tool_gave_back_reaches_the_model() {
    let (primary, backup, gw) = messages_gateway().await;
    // A 1×1 PNG.
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let ask = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": "What does the screenshot show?"},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "shot.png"}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": [
                    {"type": "text", "text": "shot.png:"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png}}
                ]}
            ]}
        ],
        "tools": [{"name": "read", "input_schema": {"type": "object"}}]
    });
    let a = gw.message(&ask).await;
    assert_message(&a);
    let sent = primary.received();
    let sent = String::from_utf8_lossy(sent[0].body().expect("read")).into_owned();
    assert!(
        sent.contains(&format!("data:image/png;base64,{png}")),
        "{sent}"
    );
    // OpenAI refuses an image in a tool message: it is in the user message after.
    let v: Value = serde_json::from_str(&sent).unwrap();
    let msgs = v["messages"].as_array().unwrap();
    assert_eq!(msgs[msgs.len() - 2]["role"], "tool", "{sent}");
    assert_eq!(msgs[msgs.len() - 1]["role"], "user", "{sent}");
    assert_eq!(
        msgs[msgs.len() - 1]["content"][0]["type"],
        "image_url",
        "{sent}"
    );

    // The same through the Anthropic backup: an image block.
    primary.set_faults([Fault::Status(503).into()]).unwrap();
    let a = gw.message(&ask).await;
    assert_message(&a);
    let sent = backup.received();
    let sent = String::from_utf8_lossy(sent[0].body().expect("read")).into_owned();
    assert!(sent.contains(r#""type":"image""#), "{sent}");
    assert!(sent.contains(png), "{sent}");
    gw.shutdown().await.unwrap();
}

/// A PDF the caller attached (Claude Code's @-mention of a file) reaches either
/// kind of provider: an OpenAI `file` part, an Anthropic `document` block. It was
/// a 400, and stayed in the session's history: every later turn was a 400 too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attached_pdf_reaches_either_kind_of_provider() {
    let (primary, backup, gw) = messages_gateway().await;
    let pdf =
        "JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNj4+c3RyZWFtCkJUCkVUCmVuZHN0cmVhbQplbmRvYmoK";
    let ask = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 100,
        "messages": [{"role": "user", "content": [
            {"type": "document", "title": "spec.pdf",
             "source": {"type": "base64", "media_type": "application/pdf", "data": pdf}},
            {"type": "text", "text": "Summarise the attached spec."}
        ]}]
    });
    let a = gw.message(&ask).await;
    assert_message(&a);
    let sent = primary.received();
    let sent: Value = serde_json::from_slice(sent[0].body().expect("read")).unwrap();
    let part = &sent["messages"][0]["content"][0];
    assert_eq!(part["type"], "file", "{sent}");
    assert_eq!(part["file"]["filename"], "spec.pdf", "{sent}");
    assert_eq!(
        part["file"]["file_data"],
        format!("data:application/pdf;base64,{pdf}")
    );

    primary.set_faults([Fault::Status(503).into()]).unwrap();
    let a = gw.message(&ask).await;
    assert_message(&a);
    let sent = backup.received();
    let sent: Value = serde_json::from_slice(sent[0].body().expect("read")).unwrap();
    let block = &sent["messages"][0]["content"][0];
    assert_eq!(block["type"], "document", "{sent}");
    assert_eq!(block["source"]["media_type"], "application/pdf", "{sent}");
    assert_eq!(block["source"]["data"], pdf, "{sent}");
    assert_eq!(block["title"], "spec.pdf", "{sent}");
    gw.shutdown().await.unwrap();
}

/// Claude Code asks `/v1/messages/count_tokens` at start-up and for `/context`,
/// and reads a stream's `message_start` for the context used: both say how big
/// the prompt is (estimated; an attachment counts as an image does, not as its
/// base64), and a bad request gets Anthropic's error, as `/v1/messages` would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_prompt_size_is_told_before_the_answer() {
    let (primary, _backup, gw) = messages_gateway().await;
    let mut ask = message_request(false);
    ask.as_object_mut().unwrap().remove("max_tokens");
    ask.as_object_mut().unwrap().remove("stream");
    let a = gw
        .send_with(
            "POST",
            "/v1/messages/count_tokens?beta=true",
            &ANTHROPIC_HEADERS,
            ask.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let counted = a.json()["input_tokens"].as_u64().expect("input_tokens");
    assert!(counted > 20 && counted < 1_000, "{}", a.body);

    // A screenshot of 40 KB (base64) is an image's worth of tokens, not 10,000.
    let shot = "A".repeat(40_000);
    let with_image = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": shot}},
        {"type": "text", "text": "What is this?"}
    ]}]});
    let a = gw
        .send_with(
            "POST",
            "/v1/messages/count_tokens",
            &ANTHROPIC_HEADERS,
            with_image.to_string(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let counted = a.json()["input_tokens"].as_u64().unwrap();
    assert!((1_600..2_000).contains(&counted), "{}", a.body);

    let bad = gw
        .send_with(
            "POST",
            "/v1/messages/count_tokens",
            &ANTHROPIC_HEADERS,
            json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}).to_string(),
        )
        .await;
    assert_eq!(bad.status.as_u16(), 400, "{}", bad.body);
    assert_eq!(bad.json()["type"], "error");
    assert_eq!(bad.json()["error"]["type"], "invalid_request_error");
    // Counted here, not sent anywhere.
    assert_eq!(primary.counters().received, 0);

    // A stream's `message_start` carries the estimate; `message_delta` the count.
    let s = gw.message(&message_request(true)).await;
    assert_message_stream(&s);
    let evs = events(&s.body);
    let start = evs[0].1["message"]["usage"]["input_tokens"]
        .as_u64()
        .unwrap();
    assert!(start > 20, "{}", s.body);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_messages_requests_get_anthropic_errors() {
    let (primary, _backup, gw) = messages_gateway().await;
    for (body, status, kind) in [
        (
            json!({"max_tokens": 5, "messages": []}),
            400,
            "invalid_request_error",
        ),
        (json!(["not", "an", "object"]), 400, "invalid_request_error"),
        (
            json!({"model": "m", "messages": [{"role": "system", "content": "x"}]}),
            400,
            "invalid_request_error",
        ),
        (
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "tool_use"}]}]}),
            400,
            "invalid_request_error",
        ),
    ] {
        let a = gw.message(&body).await;
        assert_eq!(a.status.as_u16(), status, "{body}: {}", a.body);
        assert_eq!(a.json()["type"], "error");
        assert_eq!(a.json()["error"]["type"], kind);
    }
    let huge = json!({"model": "m", "max_tokens": 5,
        "messages": [{"role": "user", "content": "x".repeat(100_000)}]});
    let a = gw.message(&huge).await;
    assert_eq!(a.status.as_u16(), 413, "{}", a.body);
    assert_eq!(a.json()["error"]["type"], "request_too_large");
    assert_eq!(primary.counters().received, 0);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_gateway_answers_messages() {
    let simulated = gateway::simulated().await.unwrap();
    let gw = start(&simulated.config).await;
    let a = gw.message(&message_request(false)).await;
    assert_message(&a);
    let s = gw.message(&message_request(true)).await;
    assert_message_stream(&s);
    gw.shutdown().await.unwrap();
}

/// A stream cut after it reached the caller cannot fail over: the caller gets
/// Anthropic's `error` event, never a `message_stop` for half an answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_stream_cut_midway_ends_with_an_error_event() {
    use tower_failover::sim::CutPoint;
    let (primary, backup, gw) = messages_gateway().await;
    let cut = Fault::ResetAfter(CutPoint {
        after_events: 4,
        after_bytes: 0,
    });
    primary.set_faults([cut.clone().into()]).unwrap();
    backup.set_faults([cut.into()]).unwrap();
    let a = gw.message(&message_request(true)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let evs = events(&a.body);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names[0], "message_start", "{names:?}");
    assert!(names.contains(&"content_block_delta"), "{names:?}");
    assert!(!names.contains(&"message_stop"), "{names:?}");
    let (last, data) = evs.last().unwrap();
    assert_eq!(last, "error", "{names:?}");
    assert!(data["error"]["message"].is_string());
    gw.shutdown().await.unwrap();
}

/// The very first requests of an outage (every provider failing, every circuit
/// still closed, so no recovery time is known) get `Retry-After` too, at both
/// front doors: a 503 (a 529 at `/v1/messages`) without it leaves each SDK to its
/// own backoff.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_answer_of_an_outage_says_when_to_retry() {
    let (primary, backup, gw) = messages_gateway().await;
    for s in [&primary, &backup] {
        s.set_faults([Fault::Status(500).into()]).unwrap();
    }
    let chat = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(
        chat.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        chat.body
    );
    assert_eq!(
        chat.headers.get("retry-after").map(|v| v.to_str().unwrap()),
        Some("1"),
        "{}",
        chat.body
    );
    let message = gw.message(&message_request(false)).await;
    assert_eq!(message.status.as_u16(), 529, "{}", message.body);
    assert!(
        message.headers.contains_key("retry-after"),
        "{:?}",
        message.headers
    );
    gw.shutdown().await.unwrap();
}

/// Every provider's own request id comes back as `x-provider-request-id`:
/// OpenAI's `x-request-id` (renamed: the gateway's own takes its place) and
/// Anthropic's `request-id` (copied: Anthropic's SDKs read it under that name).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_providers_request_id_comes_back() {
    let (primary, _backup, gw) = messages_gateway().await;
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let a = gw.post("/v1/chat/completions", &chat).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.served_by(), "primary/gpt-4o-mini");
    let openai = a.headers["x-provider-request-id"].to_str().unwrap();
    assert_ne!(openai, a.headers["x-request-id"].to_str().unwrap());

    // The OpenAI-wire primary down: the Anthropic backup answers.
    primary.set_faults([Fault::Status(500).into()]).unwrap();
    let a = gw.post("/v1/chat/completions", &chat).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.served_by(), "backup/claude-haiku-4-5");
    let anthropic = a.headers.get("x-provider-request-id");
    assert!(anthropic.is_some_and(|v| !v.is_empty()), "{:?}", a.headers);
    gw.shutdown().await.unwrap();
}

/// A `/v1/messages` caller's prompt-cache breakpoints (Claude Code marks its long
/// system prompt) reach an Anthropic provider through the stack's OpenAI-shaped
/// request, so the second request reads the prefix the first one wrote, and the
/// caller sees it in its usage. (They were dropped on the way: every request paid
/// full price for its whole prompt.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prompt_cache_breakpoints_reach_an_anthropic_provider() {
    let (_primary, backup, gw) = messages_gateway().await;
    let long = "You are a careful assistant. ".repeat(400);
    let body = json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 100,
        "system": [
            {"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}
        ],
        "messages": [{"role": "user", "content": "Hello"}]
    });
    let first = gw.message(&body).await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    assert_eq!(first.served_by(), "backup/claude-haiku-4-5");
    // The first request wrote the prefix: told as Anthropic tells it (it was
    // counted as plain input, and the writes, billed above it, were hidden).
    let usage = &first.json()["usage"];
    assert!(
        usage["cache_creation_input_tokens"].as_u64().unwrap_or(0) >= 1024
            && usage["input_tokens"].as_u64().unwrap() < 1024,
        "{usage}"
    );
    let sent = backup.received();
    let last = sent.last().expect("the provider saw the request");
    let sent_body = String::from_utf8_lossy(last.body().expect("its body was read"));
    let sent_json: Value = serde_json::from_str(&sent_body).unwrap();
    assert_eq!(
        sent_json["system"][0]["cache_control"],
        json!({"type": "ephemeral"}),
        "the breakpoint reached the provider: {}",
        &sent_body[..sent_body.len().min(300)]
    );
    let second = gw.message(&body).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.body);
    let usage = &second.json()["usage"];
    assert!(
        usage["cache_read_input_tokens"].as_u64().unwrap_or(0) >= 1024
            && usage["cache_creation_input_tokens"] == 0,
        "{usage}"
    );
    // Streamed: the same counts at the end.
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let a = gw.message(&streamed).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let evs = events(&a.body);
    let usage = &evs[evs.len() - 2].1["usage"];
    assert!(
        usage["cache_read_input_tokens"].as_u64().unwrap_or(0) >= 1024,
        "{usage}"
    );
    // The OpenAI front door sees the same read as OpenAI reports it.
    let chat = json!({
        "model": "claude-haiku-4-5",
        "messages": [
            {"role": "system", "content": [
                {"type": "text", "text": long, "cache_control": {"type": "ephemeral"}}
            ]},
            {"role": "user", "content": "Hello"}
        ]
    });
    let third = gw.post("/v1/chat/completions", &chat).await;
    assert_eq!(third.status, StatusCode::OK, "{}", third.body);
    let cached = &third.json()["usage"]["prompt_tokens_details"]["cached_tokens"];
    assert!(cached.as_u64().unwrap_or(0) >= 1024, "{}", third.body);
    gw.shutdown().await.unwrap();
}

/// A Claude sim (`claude-haiku-4-5`) and a GPT sim (`gpt-4o-mini`), echoing the
/// caller's last words or not, and a configuration serving both models.
async fn claude_and_gpt(echo: bool) -> (Sim, Sim, Config) {
    let start_sim = |flavor, name: &'static str, model: &'static str| async move {
        Sim::builder(flavor)
            .name(name)
            .models([model])
            .echo(echo)
            .start()
            .await
            .expect("a sim starts")
    };
    let claude = start_sim(Flavor::Anthropic, "claude", "claude-haiku-4-5").await;
    let gpt = start_sim(Flavor::OpenAi, "gpt", "gpt-4o-mini").await;
    let config = Config::from_toml_str(&format!(
        r#"
        [[providers]]
        name = "claude"
        model = "claude-haiku-4-5"
        kind = "anthropic"
        base_url = "{}"

        [[providers]]
        name = "gpt"
        model = "gpt-4o-mini"
        kind = "openai"
        base_url = "{}/v1"
        "#,
        claude.base_url(),
        gpt.base_url()
    ))
    .unwrap();
    (claude, gpt, config)
}

/// A caller's stop sequences end the answer where the provider met one, and a
/// `/v1/messages` caller is told which (`stop_reason: "stop_sequence"`,
/// `stop_sequence`), streamed or not, as Anthropic tells it: the Anthropic
/// adapter carries the sequence in the choice's `stop_reason` (where vLLM puts it),
/// which the chat door's caller sees too. An OpenAI provider does not say which
/// sequence it met: the answer is cut there and ends as `end_turn`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stop_sequence_met_is_named_to_a_messages_caller() {
    let (_claude, _gpt, config) = claude_and_gpt(true).await;
    let gw = start(&config).await;
    // The echo: `You said: "Weather in Paris?". …`
    let ask = |model: &str, stream: bool| {
        json!({"model": model, "max_tokens": 100, "stream": stream,
               "stop_sequences": ["Paris"],
               "messages": [{"role": "user", "content": "Weather in Paris?"}]})
    };
    for (model, reason, sequence) in [
        ("claude-haiku-4-5", "stop_sequence", json!("Paris")),
        ("gpt-4o-mini", "end_turn", Value::Null),
    ] {
        let a = gw.message(&ask(model, false)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let m = a.json();
        assert_eq!(m["content"][0]["text"], "You said: \"Weather in ", "{m}");
        assert_eq!(
            (&m["stop_reason"], &m["stop_sequence"]),
            (&json!(reason), &sequence),
            "{m}"
        );

        let a = gw.message(&ask(model, true)).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        let evs = events(&a.body);
        let text: String = evs
            .iter()
            .filter_map(|(_, d)| d["delta"]["text"].as_str())
            .collect();
        assert_eq!(text, "You said: \"Weather in ", "{model}");
        let delta = &evs[evs.len() - 2].1["delta"];
        assert_eq!(
            (&delta["stop_reason"], &delta["stop_sequence"]),
            (&json!(reason), &sequence),
            "{model}"
        );
    }
    // The chat door's caller sees the sequence where vLLM puts it.
    let chat = json!({"model": "claude-haiku-4-5", "stop": ["Paris"],
                      "messages": [{"role": "user", "content": "Weather in Paris?"}]});
    let a = gw.post("/v1/chat/completions", &chat).await;
    let v = a.json();
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    assert_eq!(v["choices"][0]["stop_reason"], "Paris", "{v}");
    gw.shutdown().await.unwrap();
}

/// A `/v1/messages` caller asking for structured output (`output_config.format`,
/// or the beta's `output_format`) was answered in prose: the door dropped the
/// field, so no provider was asked for JSON, and the caller's parse failed. It is
/// now carried to both kinds of provider (OpenAI's strict `response_format`, back
/// to Anthropic's `output_config.format`), streamed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_output_reaches_either_kind_of_provider_from_the_messages_door() {
    let (_claude, _gpt, config) = claude_and_gpt(false).await;
    let gw = start(&config).await;
    // Closed, then with an optional property (`note`): Anthropic takes both;
    // OpenAI's strict mode refuses the second with a 400, so it is asked for it
    // without `strict`.
    let closed = json!({"type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "days"], "additionalProperties": false});
    let mut optional = closed.clone();
    optional["properties"]["note"] = json!({"type": "string"});
    let follows = |text: &str, what: &str| {
        let v: Value =
            serde_json::from_str(text).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {text}"));
        assert!(v["city"].is_string() && v["days"].is_i64(), "{what}: {v}");
    };
    for (model, field, schema) in [
        ("claude-haiku-4-5", "output_config", &closed),
        ("claude-haiku-4-5", "output_format", &closed),
        ("claude-haiku-4-5", "output_config", &optional),
        ("gpt-4o-mini", "output_config", &closed),
        ("gpt-4o-mini", "output_format", &closed),
        ("gpt-4o-mini", "output_config", &optional),
    ] {
        let format = json!({"type": "json_schema", "schema": schema});
        let ask = |stream: bool| {
            let mut m = json!({"model": model, "max_tokens": 200, "stream": stream,
                    "messages": [{"role": "user", "content": "Plan a trip."}]});
            m[field] = if field == "output_config" {
                json!({ "format": format })
            } else {
                format.clone()
            };
            m
        };
        let what = format!("{model}, {field}, {schema}");
        let a = gw.message(&ask(false)).await;
        assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.body);
        let m = a.json();
        follows(m["content"][0]["text"].as_str().unwrap_or(""), &what);

        let a = gw.message(&ask(true)).await;
        assert_eq!(a.status, StatusCode::OK, "{what}: {}", a.body);
        let text: String = events(&a.body)
            .iter()
            .filter_map(|(_, d)| d["delta"]["text"].as_str())
            .collect();
        follows(&text, &format!("{what}, streamed"));
    }
    gw.shutdown().await.unwrap();
}

/// With structured output now reaching OpenAI from `/v1/messages`, so does
/// OpenAI's way of declining it: `content: null` and the sentence in `refusal`.
/// The caller got that sentence as text with `stop_reason: "end_turn"`, which a
/// client that checks the stop reason before parsing takes for its JSON. It is
/// `stop_reason: "refusal"` now (here every provider refused, so the gateway
/// answers with the last refusal and `x-failover-rejected`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_declined_structured_output_is_a_refusal_to_a_messages_caller() {
    let gpt = sim(Flavor::OpenAi, "gpt", 1, &["gpt-4o-mini"]).await;
    gpt.set_faults([Fault::Refusal.into()]).unwrap();
    let config = Config::from_toml_str(&format!(
        "[[providers]]\nname = \"gpt\"\nmodel = \"gpt-4o-mini\"\nkind = \"openai\"\n\
         base_url = \"{}/v1\"\n",
        gpt.base_url()
    ))
    .unwrap();
    let gw = start(&config).await;
    let ask = json!({"model": "gpt-4o-mini", "max_tokens": 200,
        "messages": [{"role": "user", "content": "Plan a trip."}],
        "output_config": {"format": {"type": "json_schema",
            "schema": {"type": "object", "properties": {"city": {"type": "string"}},
                       "required": ["city"], "additionalProperties": false}}}});
    let a = gw.message(&ask).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.headers[tower_failover::REJECTED_HEADER], "refusal");
    let m = a.json();
    assert_eq!(m["stop_reason"], "refusal", "{m}");
    assert!(
        m["content"][0]["text"]
            .as_str()
            .is_some_and(|t| t.starts_with("I'm sorry")),
        "{m}"
    );
    gw.shutdown().await.unwrap();
}
