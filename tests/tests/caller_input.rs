//! What callers send, and what a hostile provider sends back, through the assembled
//! stack (`Stack::from_config`) and the gateway over real loopback HTTP:
//!
//! - a caller's own `max_tokens` gives a normal answer with `finish_reason:
//!   "length"`, streamed or not, from either wire format (the simulator honours
//!   `max_tokens` itself), with no retry on another provider;
//! - a request body that is not a JSON object is a `400` in OpenAI's error shape,
//!   and no provider is asked;
//! - a provider whose rate-limit headers hold absurd numbers (`1e23`, 2^64, `NaN`)
//!   still serves: no panic, every caller gets a 200;
//! - a request one kind of provider cannot serve (`n > 1`, an audio part, a file by
//!   id at Anthropic) goes to a provider that can, under every router and along
//!   model fallbacks; with none that can, it is the adapter's `400`.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tower::ServiceExt;
use tower_failover::sim::{Fault, FaultSpec, Flavor, Sim};
use tower_failover::{Config, Stack};
use tower_failover_gateway as gateway;

async fn sim(flavor: Flavor, name: &str) -> Sim {
    sim_with(flavor, name, |b| b).await
}

/// [`sim`] with more of the builder's settings (a provider's own behaviour).
async fn sim_with(
    flavor: Flavor,
    name: &str,
    more: impl FnOnce(tower_failover::sim::SimBuilder) -> tower_failover::sim::SimBuilder,
) -> Sim {
    more(
        Sim::builder(flavor)
            .name(name)
            .seed(7)
            .ttft(Duration::from_millis(1))
            .token_interval(Duration::from_millis(1)),
    )
    .start()
    .await
    .unwrap()
}

/// An ordered chain of providers at these base URLs (`openai` or `anthropic`),
/// everything else at its defaults (validation included).
fn config(providers: &[(&str, &str, String)]) -> Config {
    Config::from_toml_str(&config_text(providers)).expect("a valid configuration")
}

/// [`config`]'s text, for a test that adds to it.
fn config_text(providers: &[(&str, &str, String)]) -> String {
    let mut text = String::from("router = \"fallback\"\ndeadline = \"10s\"\n");
    for (i, (name, kind, base)) in providers.iter().enumerate() {
        let model = if *kind == "anthropic" {
            "claude-haiku-4-5"
        } else {
            "gpt-4o-mini"
        };
        text.push_str(&format!(
            "\n[[providers]]\nname = \"{name}\"\nmodel = \"{model}\"\nkind = \"{kind}\"\nbase_url = \"{base}\"\npriority = {i}\n"
        ));
    }
    // Requests ask for gpt-4o-mini: the Anthropic backup serves them as its fallback.
    if providers.iter().any(|p| p.1 == "anthropic") && providers.iter().any(|p| p.1 == "openai") {
        text.push_str("\n[models.\"gpt-4o-mini\"]\nfallbacks = [\"claude-haiku-4-5\"]\n");
    }
    text
}

fn openai_base(s: &Sim) -> String {
    format!("{}/v1", s.base_url())
}

/// The configuration of an OpenAI-wire primary and an Anthropic backup.
fn primary_and_backup_config(primary: &Sim, backup: &Sim) -> Config {
    Config::from_toml_str(&primary_and_backup_text(primary, backup)).expect("a valid configuration")
}

/// [`primary_and_backup_config`]'s text.
fn primary_and_backup_text(primary: &Sim, backup: &Sim) -> String {
    config_text(&[
        ("primary", "openai", openai_base(primary)),
        ("backup", "anthropic", backup.base_url().to_string()),
    ])
}

/// An OpenAI primary answering only 503s and an Anthropic backup, and the stack
/// over them: every request is failed over to Anthropic.
async fn primary_down() -> (Sim, Sim, tower_failover::Failover) {
    let primary = sim(Flavor::OpenAi, "primary").await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    primary
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    let stack = primary_and_backup(&primary, &backup);
    (primary, backup, stack)
}

/// Sends `body` through `stack`: the answer's status, and its body as text.
async fn ask(stack: &tower_failover::Failover, body: impl Into<Bytes>) -> (StatusCode, String) {
    let res = stack.clone().oneshot(post(body)).await.expect("an answer");
    let status = res.status();
    let body = res
        .into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The stack users build from [`primary_and_backup_config`].
fn primary_and_backup(primary: &Sim, backup: &Sim) -> tower_failover::Failover {
    Stack::from_config(&primary_and_backup_config(primary, backup))
        .unwrap()
        .build()
        .unwrap()
}

fn chat_body(stream: bool, max_tokens: Option<(&str, u64)>) -> String {
    let mut v = serde_json::json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "messages": [{"role": "user", "content": "Tell me a long story about failover"}],
    });
    if let Some((key, n)) = max_tokens {
        v[key] = n.into();
    }
    v.to_string()
}

fn post(body: impl Into<Bytes>) -> Request<Full<Bytes>> {
    Request::post("http://gateway.invalid/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(body.into()))
        .unwrap()
}

/// The finish reason of a JSON answer, or of the last chunk of a stream that has
/// one; checks a stream ends in `[DONE]`.
fn finish_reason(body: &str, stream: bool) -> String {
    if !stream {
        let v: serde_json::Value = serde_json::from_str(body).expect("a JSON answer");
        assert!(
            !v["choices"][0]["message"]["content"]
                .as_str()
                .unwrap_or("")
                .is_empty(),
            "{body}"
        );
        return v["choices"][0]["finish_reason"]
            .as_str()
            .unwrap_or("")
            .to_owned();
    }
    assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");
    tower_failover_core::sse::events(body.as_bytes())
        .expect("an SSE body")
        .into_iter()
        .filter_map(|(_, d)| serde_json::from_str::<serde_json::Value>(&d).ok())
        .filter_map(|v| v["choices"][0]["finish_reason"].as_str().map(str::to_owned))
        .next_back()
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_gives_a_length_finish_through_the_stack() {
    let primary = sim(Flavor::OpenAi, "primary").await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    let stack = primary_and_backup(&primary, &backup);

    for key in ["max_tokens", "max_completion_tokens"] {
        for stream in [false, true] {
            let res = stack
                .clone()
                .oneshot(post(chat_body(stream, Some((key, 3)))))
                .await
                .expect("an answer, not an error");
            assert_eq!(res.status(), StatusCode::OK, "{key} stream={stream}");
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body);
            assert_eq!(finish_reason(&body, stream), "length", "{key}: {body}");
        }
    }
    // Each request was answered by the primary alone: no retry elsewhere.
    assert_eq!(primary.counters().received, 4);
    assert_eq!(backup.counters().received, 0);

    // The same from the Anthropic backup (`stop_reason: max_tokens`, translated).
    primary
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    for stream in [false, true] {
        let res = stack
            .clone()
            .oneshot(post(chat_body(stream, Some(("max_tokens", 3)))))
            .await
            .expect("an answer from the backup");
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            finish_reason(&String::from_utf8_lossy(&body), stream),
            "length"
        );
    }
    assert_eq!(backup.counters().received, 2);
}

/// A reasoning model that spends the caller's whole `max_tokens` thinking answers
/// with nothing and `finish_reason: "length"`, from either wire format: that is the
/// caller's answer (200), not an empty one to fail over from (it was rejected by
/// validation at every provider alike and became a 503). Streamed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reasoning_model_that_thinks_through_max_tokens_answers_not_503() {
    let thinker = |flavor, name: &'static str| async move {
        Sim::builder(flavor)
            .name(name)
            .seed(7)
            .reasoning(200)
            .start()
            .await
            .unwrap()
    };
    let primary = thinker(Flavor::OpenAi, "primary").await;
    let backup = thinker(Flavor::Anthropic, "backup").await;
    let stack = primary_and_backup(&primary, &backup);
    let answer = |stack: tower_failover::Failover, stream: bool| async move {
        let res = stack
            .oneshot(post(chat_body(stream, Some(("max_tokens", 50)))))
            .await
            .expect("an answer, not an error");
        assert_eq!(res.status(), StatusCode::OK, "stream={stream}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8_lossy(&body).into_owned()
    };
    for stream in [false, true] {
        let body = answer(stack.clone(), stream).await;
        if stream {
            assert!(body.contains("\"finish_reason\":\"length\""), "{body}");
        } else {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            assert_eq!(v["choices"][0]["finish_reason"], "length", "{body}");
            assert_eq!(
                v["choices"][0]["message"]["content"].as_str().unwrap_or(""),
                ""
            );
            assert_eq!(
                v["usage"]["completion_tokens_details"]["reasoning_tokens"],
                50
            );
        }
    }
    // Answered by the primary alone: no failover for an answer every provider gives.
    assert_eq!(primary.counters().received, 2);
    assert_eq!(backup.counters().received, 0);
    // The same from the Anthropic backup (`stop_reason: max_tokens`, translated).
    primary
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    for stream in [false, true] {
        let body = answer(stack.clone(), stream).await;
        assert!(body.contains("\"finish_reason\":\"length\""), "{body}");
    }
    assert_eq!(backup.counters().received, 2);

    // And over HTTP through the gateway, as deployed.
    primary.clear_faults();
    let gw = start_gateway(&primary_and_backup_config(&primary, &backup)).await;
    for stream in [false, true] {
        let (status, body) = gw.post(chat_body(stream, Some(("max_tokens", 50)))).await;
        assert_eq!(status, StatusCode::OK, "stream={stream}: {body}");
        assert!(body.contains("\"finish_reason\":\"length\""), "{body}");
    }
    gw.shutdown().await;
}

/// Mistral's reasoning models send `content` as a list of parts, streamed too
/// (`[{"type": "thinking", …}]`, then `[{"type": "text", "text": …}]`): an answer,
/// not a malformed stream to fail over from, and its text reaches an Anthropic
/// caller of `/v1/messages`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_sent_as_a_list_of_parts_is_an_answer() {
    let primary = sim_with(Flavor::OpenAi, "primary", |b| {
        b.reasoning(20).content_parts(true)
    })
    .await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    let stack = primary_and_backup(&primary, &backup);
    for stream in [false, true] {
        let res = stack
            .clone()
            .oneshot(post(chat_body(stream, None)))
            .await
            .expect("an answer, not an error");
        assert_eq!(res.status(), StatusCode::OK, "stream={stream}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        assert!(body.contains(r#""type":"text""#), "stream={stream}: {body}");
    }
    // Both answered by the primary: nothing was taken for a bad answer.
    assert_eq!(primary.counters().received, 2);
    assert_eq!(backup.counters().received, 0);

    // Over HTTP, to an Anthropic caller: the text parts become text, the
    // thinking is not passed on as the answer.
    let gw = start_gateway(&primary_and_backup_config(&primary, &backup)).await;
    let messages = |stream: bool| {
        serde_json::json!({
            "model": "gpt-4o-mini",
            "max_tokens": 200,
            "stream": stream,
            "messages": [{"role": "user", "content": "Say hello."}],
        })
        .to_string()
    };
    let (status, body) = gw.post_to("/v1/messages", messages(false)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let text = v["content"][0]["text"].as_str().unwrap_or("");
    assert!(!text.is_empty(), "{body}");
    assert!(!body.contains("think this through"), "{body}");
    let (status, body) = gw.post_to("/v1/messages", messages(true)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains(r#""type":"text_delta""#), "{body}");
    assert!(!body.contains("think this through"), "{body}");
    // The thinking chunk gave the caller nothing to read: a `ping` in its place,
    // after `message_start` and before the text (a silent stream looks dead).
    let ping = body.find("event: ping").unwrap_or_else(|| panic!("{body}"));
    assert!(
        body.find("message_start").unwrap() < ping && ping < body.find("text_delta").unwrap(),
        "{body}"
    );
    assert_eq!(primary.counters().received, 4);
    assert_eq!(backup.counters().received, 0);
    gw.shutdown().await;
}

/// OpenAI's reasoning models refuse `max_tokens` (a 400 `unsupported_parameter`)
/// and take `max_completion_tokens`; `/v1/messages` callers always send a
/// limit, translated as `max_tokens`. A provider configured with
/// `max_tokens_field = "max_completion_tokens"` (the default for api.openai.com)
/// gets the limit under the name it takes, from both front doors; without it, the
/// refusal fails over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_limit_is_sent_under_the_name_the_provider_takes() {
    let primary = sim_with(Flavor::OpenAi, "primary", |b| b.refuses_max_tokens(true)).await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    // The primary's own setting, added to its entry (the first `priority = 0`).
    let config = |field: &str| {
        let text = primary_and_backup_text(&primary, &backup).replacen(
            "priority = 0\n",
            &format!("priority = 0\n{field}\n"),
            1,
        );
        Config::from_toml_str(&text).expect("a valid configuration")
    };
    // As the provider refuses it (`400 unsupported_parameter`): not the end of the
    // request, the backup answers it; the primary's health is not touched.
    let as_sent = Stack::from_config(&config("")).unwrap().build().unwrap();
    let res = as_sent
        .clone()
        .oneshot(post(chat_body(false, Some(("max_tokens", 3)))))
        .await
        .expect("a response");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(backup.counters().received, 1, "failed over");
    let health = as_sent.handle().provider("primary", "gpt-4o-mini").unwrap();
    assert_eq!(health.counters().failures, 0);

    let renamed = config("max_tokens_field = \"max_completion_tokens\"");
    let stack = Stack::from_config(&renamed).unwrap().build().unwrap();
    for stream in [false, true] {
        let res = stack
            .clone()
            .oneshot(post(chat_body(stream, Some(("max_tokens", 3)))))
            .await
            .expect("an answer");
        assert_eq!(res.status(), StatusCode::OK, "stream={stream}");
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body);
        // The limit arrived: the answer stopped at it.
        assert_eq!(finish_reason(&body, stream), "length", "{body}");
    }
    let gw = start_gateway(&renamed).await;
    for stream in [false, true] {
        let msg = serde_json::json!({
            "model": "gpt-4o-mini",
            "max_tokens": 3,
            "stream": stream,
            "messages": [{"role": "user", "content": "Say hello."}],
        });
        let (status, body) = gw.post_to("/v1/messages", msg.to_string()).await;
        assert_eq!(status, StatusCode::OK, "stream={stream}: {body}");
        assert!(
            body.contains("max_tokens"),
            "stop_reason max_tokens: {body}"
        );
    }
    gw.shutdown().await;
    // Every answer once renamed came from the primary.
    assert_eq!(primary.counters().received, 5);
    assert_eq!(backup.counters().received, 1);
}

/// What an OpenAI caller's request often holds and Anthropic refuses with a 400
/// (which does not fail over): an assistant turn of `"\n\n"` beside its tool
/// calls, tool-call ids from another provider (`functions.get_weather:0`), an image
/// sent as `image/jpg`, an email as `user`. Failed over to Anthropic, the request
/// is answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_openai_history_anthropic_would_refuse_is_sent_as_it_takes_it() {
    let (_primary, backup, stack) = primary_down().await;
    // A 1×1 PNG.
    let png = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        // OpenAI takes any `user`; Anthropic refuses an email as its `user_id`.
        "user": "ada@example.com",
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "What is in this picture, and the weather?"},
                {"type": "image_url", "image_url": {"url": format!("data:image/jpg;base64,{png}")}}
            ]},
            {"role": "assistant", "content": "\n\n", "tool_calls": [{
                "id": "functions.get_weather:0", "type": "function",
                "function": {"name": "get_weather", "arguments": "{}"}
            }]},
            {"role": "tool", "tool_call_id": "functions.get_weather:0", "content": "Sunny."},
            {"role": "user", "content": " "},
        ],
    });
    let res = stack
        .clone()
        .oneshot(post(body.to_string()))
        .await
        .expect("an answer");
    let status = res.status();
    let text = res.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&text));
    assert_eq!(backup.counters().received, 1);
    let sent = backup.received();
    let sent: serde_json::Value = serde_json::from_slice(sent[0].body().expect("read")).unwrap();
    let sent = sent.to_string();
    assert!(sent.contains(r#""id":"functions_get_weather_0""#), "{sent}");
    assert!(
        sent.contains(r#""tool_use_id":"functions_get_weather_0""#),
        "{sent}"
    );
    assert!(sent.contains(r#""media_type":"image/jpeg""#), "{sent}");
    assert!(sent.contains(r#""user_id":"user-"#), "{sent}");
    assert!(!sent.contains("ada@example.com"), "{sent}");
}

/// An agent's history with a few screenshots (here 6 MiB of base64 image) is
/// answered with the shipped body limit, at both front doors; it was a `413`
/// with the old 4 MiB, on every later turn of the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_history_with_screenshots_fits_the_default_body_limit() {
    let primary = sim(Flavor::OpenAi, "primary").await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    let gw = start_gateway(&primary_and_backup_config(&primary, &backup)).await;
    let shot = "A".repeat(2 << 20);
    let url = format!("data:image/png;base64,{shot}");
    let mut content =
        vec![serde_json::json!({"type": "text", "text": "What changed between these?"})];
    for _ in 0..3 {
        content.push(serde_json::json!({"type": "image_url", "image_url": {"url": url}}));
    }
    let chat = serde_json::json!({"model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": content}]});
    let (status, body) = gw.post(chat.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{}", &body[..body.len().min(300)]);
    let mut blocks =
        vec![serde_json::json!({"type": "text", "text": "What changed between these?"})];
    for _ in 0..3 {
        blocks.push(serde_json::json!({"type": "image",
            "source": {"type": "base64", "media_type": "image/png", "data": shot}}));
    }
    let messages = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 50,
        "messages": [{"role": "user", "content": blocks}]});
    let (status, body) = gw.post_to("/v1/messages", messages.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{}", &body[..body.len().min(300)]);
    assert_eq!(primary.counters().received, 2);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_is_not_a_json_object_is_a_400_through_the_stack() {
    let primary = sim(Flavor::OpenAi, "primary").await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    let stack = primary_and_backup(&primary, &backup);
    for body in [
        r#"["gpt-4o-mini", true]"#,
        r#"["gpt-4o-mini",[{"role":"user","content":"hi"}]]"#,
        "[]",
        r#""a string""#,
        "42",
        "null",
    ] {
        let res = stack.clone().oneshot(post(body)).await.expect("a response");
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{body}");
        let text = res.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&text).expect("a JSON error");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        assert!(
            v["error"]["message"]
                .as_str()
                .unwrap()
                .contains("JSON object"),
            "{v}"
        );
    }
    // Refused before sending: neither provider saw any of them.
    assert_eq!(primary.counters().received, 0);
    assert_eq!(backup.counters().received, 0);

    // Also as the first provider's wire format is Anthropic's.
    let stack = Stack::from_config(&config(&[(
        "backup",
        "anthropic",
        backup.base_url().to_string(),
    )]))
    .unwrap()
    .build()
    .unwrap();
    let res = stack
        .oneshot(post(r#"["claude-haiku-4-5", []]"#))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    assert_eq!(backup.counters().received, 0);
}

// ---- the gateway, over real loopback HTTP ------------------------------------------

struct Gateway {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn start_gateway(config: &Config) -> Gateway {
    let gw = gateway::build(config).expect("a valid gateway configuration");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(gateway::serve(
        listener,
        gw,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    Gateway {
        addr,
        stop: Some(tx),
        task,
    }
}

impl Gateway {
    async fn post(&self, body: String) -> (StatusCode, String) {
        self.post_to("/v1/chat/completions", body).await
    }

    async fn post_to(&self, path: &str, body: String) -> (StatusCode, String) {
        let (status, _, body) = self.post_for_headers(path, body).await;
        (status, body)
    }

    /// [`post_to`](Self::post_to), with the answer's headers.
    async fn post_for_headers(
        &self,
        path: &str,
        body: String,
    ) -> (StatusCode, http::HeaderMap, String) {
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
        let req = Request::post(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        // A failure guard only: the answer comes in milliseconds.
        let res = tokio::time::timeout(Duration::from_secs(30), client.request(req))
            .await
            .expect("the gateway answers")
            .expect("the gateway answers");
        let status = res.status();
        let headers = res.headers().clone();
        let body = res.into_body().collect().await.expect("a whole body");
        (
            status,
            headers,
            String::from_utf8_lossy(&body.to_bytes()).into_owned(),
        )
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_tokens_gives_a_length_finish_through_the_gateway() {
    let primary = sim(Flavor::OpenAi, "primary").await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    let gw = start_gateway(&primary_and_backup_config(&primary, &backup)).await;
    for stream in [false, true] {
        let (status, body) = gw.post(chat_body(stream, Some(("max_tokens", 3)))).await;
        assert_eq!(status, StatusCode::OK, "stream={stream}: {body}");
        assert_eq!(finish_reason(&body, stream), "length", "{body}");
    }
    assert_eq!(primary.counters().received, 2);
    assert_eq!(backup.counters().received, 0);

    // From the Anthropic backup too.
    primary
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    for stream in [false, true] {
        let (status, body) = gw
            .post(chat_body(stream, Some(("max_completion_tokens", 3))))
            .await;
        assert_eq!(status, StatusCode::OK, "stream={stream}: {body}");
        assert_eq!(finish_reason(&body, stream), "length", "{body}");
    }
    assert_eq!(backup.counters().received, 2);
    gw.shutdown().await;
}

// ---- a provider with absurd rate-limit headers -------------------------------------

/// A minimal OpenAI-compatible provider on loopback that answers every request with
/// a valid chat completion and rate-limit headers full of numbers that break float
/// and time arithmetic. Returns its base URL and a counter of requests.
async fn hostile_header_provider() -> (String, std::sync::Arc<std::sync::atomic::AtomicU64>) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    // Read one request: headers, then the declared body.
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .and_then(|v| v.trim().parse().ok())
                        .unwrap_or(0);
                    while buf.len() < end + 4 + len {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + 4 + len);
                    counter.fetch_add(1, Ordering::Relaxed);
                    let body = r#"{"id":"c1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":18446744073709551615,"completion_tokens":18446744073709551615,"total_tokens":18446744073709551615}}"#;
                    let res = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                         retry-after: 1e23\r\nretry-after-ms: 9e999\r\n\
                         x-ratelimit-reset-requests: 1e23\r\nx-ratelimit-reset-tokens: 99999999999h\r\n\
                         x-ratelimit-reset: 340282366920938463463374607431768211456\r\n\
                         x-ratelimit-remaining-requests: 0\r\nx-ratelimit-limit-requests: 18446744073709551616\r\n\
                         x-ratelimit-remaining-tokens: -0\r\nx-ratelimit-limit-tokens: NaN\r\n\
                         anthropic-ratelimit-requests-reset: 9999-12-31T23:59:60.999999999999Z\r\n\
                         anthropic-ratelimit-tokens-remaining: 0\r\n\
                         anthropic-ratelimit-tokens-reset: 0000-01-01T00:00:00Z\r\n\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(res.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (format!("http://{addr}/v1"), hits)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_rate_limit_headers_still_serve_200s_through_the_stack() {
    let (hostile, hits) = hostile_header_provider().await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    let stack = Stack::from_config(&config(&[
        ("primary", "openai", hostile),
        ("backup", "anthropic", backup.base_url().to_string()),
    ]))
    .unwrap()
    .build()
    .unwrap();
    for _ in 0..20 {
        let res = stack
            .clone()
            .oneshot(post(chat_body(false, None)))
            .await
            .expect("an answer");
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(
            finish_reason(&String::from_utf8_lossy(&body), false),
            "stop"
        );
    }
    // The process is still serving, and the answers came from somewhere healthy.
    let served = hits.load(std::sync::atomic::Ordering::Relaxed) + backup.counters().received;
    assert!(served >= 20, "{served}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_rate_limit_headers_and_array_bodies_through_the_gateway() {
    let (hostile, hits) = hostile_header_provider().await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    let gw = start_gateway(&config(&[
        ("primary", "openai", hostile),
        ("backup", "anthropic", backup.base_url().to_string()),
    ]))
    .await;
    for stream in [false, true] {
        for _ in 0..5 {
            let (status, body) = gw.post(chat_body(stream, None)).await;
            assert_eq!(status, StatusCode::OK, "{body}");
            if !stream {
                assert_eq!(finish_reason(&body, false), "stop");
            }
        }
    }
    // A caller's array body: a 400 in OpenAI's shape, and the gateway still serves.
    let (status, body) = gw.post(r#"["gpt-4o-mini", true]"#.to_owned()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
    assert!(v["error"]["message"].is_string(), "{v}");
    let (status, _) = gw.post(chat_body(false, None)).await;
    assert_eq!(status, StatusCode::OK);
    let served = hits.load(std::sync::atomic::Ordering::Relaxed) + backup.counters().received;
    assert!(served >= 11, "{served}");
    gw.shutdown().await;
}

/// Claude's own refusal signal (`stop_reason: "refusal"`, OpenAI's `content_filter`
/// once the Anthropic answer is translated) fails over even when its text matches
/// no refusal phrase: here the phrases are off, so only the stop reason can tell.
/// (Validation looked for `"refusal"` only, which translation never leaves.) A
/// whole answer: a stream's stop reason comes at its end, after its first tokens
/// have reached the caller, where nothing can fail over any more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_refusal_stop_reason_fails_over_without_phrases() {
    let claude = sim(Flavor::Anthropic, "claude").await;
    let backup = sim(Flavor::OpenAi, "backup").await;
    claude.add_fault(Fault::Refusal).unwrap();
    let text = format!(
        "router = \"fallback\"\nroute_by_model = false\n\
         [validate.checks]\nrefusal_phrases = []\n\
         [[providers]]\nname = \"claude\"\nmodel = \"claude-haiku-4-5\"\nkind = \"anthropic\"\nbase_url = \"{}\"\npriority = 0\n\
         [[providers]]\nname = \"backup\"\nmodel = \"gpt-4o-mini\"\nkind = \"openai\"\nbase_url = \"{}\"\npriority = 1\n",
        claude.base_url(),
        openai_base(&backup),
    );
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let stack = Stack::from_config(&config).unwrap().build().unwrap();
    let res = stack
        .oneshot(post(chat_body(false, None)))
        .await
        .expect("the backup answers");
    assert_eq!(res.status(), StatusCode::OK);
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert_eq!(finish_reason(&body, false), "stop", "{body}");
    assert_eq!(claude.counters().received, 1);
    assert_eq!(backup.counters().received, 1);
}

// ---- requests one kind of provider cannot serve -------------------------------------

/// A group serving `gpt-4o-mini` at an Anthropic entry (tried first: `priority = 0`,
/// answering to the name by its alias) and an OpenAI entry, under `router`.
fn mixed_group_text(router: &str, anthropic: &Sim, openai: &Sim) -> String {
    format!(
        "router = \"{router}\"\ndeadline = \"10s\"\n\
         [[providers]]\nname = \"anthropic\"\nkind = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\n\
         aliases = [\"gpt-4o-mini\"]\nbase_url = \"{}\"\npriority = 0\n\
         [[providers]]\nname = \"openai\"\nkind = \"openai\"\nmodel = \"gpt-4o-mini\"\n\
         base_url = \"{}\"\npriority = 1\n",
        anthropic.base_url(),
        openai_base(openai),
    )
}

/// A request OpenAI serves and Anthropic's API cannot take or deliver (`n > 1`,
/// an audio part, a file by id, log probabilities, a logit bias, an answer in
/// speech, a web search, a custom tool, non-JSON tool-call arguments in the history).
fn unsupported_by_anthropic() -> Vec<(&'static str, serde_json::Value)> {
    let user =
        |content: serde_json::Value| serde_json::json!([{"role": "user", "content": content}]);
    vec![
        ("n > 1", serde_json::json!({"n": 2, "messages": user("Two takes, please".into())})),
        (
            "an audio part",
            serde_json::json!({"messages": user(serde_json::json!([
                {"type": "text", "text": "What is said here?"},
                {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}}
            ]))}),
        ),
        (
            "a file by id",
            serde_json::json!({"messages": user(serde_json::json!([
                {"type": "text", "text": "Summarise this"},
                {"type": "file", "file": {"file_id": "file-abc123"}}
            ]))}),
        ),
        (
            "a CSV file (Anthropic reads PDFs only)",
            serde_json::json!({"messages": user(serde_json::json!([
                {"type": "text", "text": "Sum the second column"},
                {"type": "file", "file": {"filename": "t.csv", "file_data": "data:text/csv;base64,YSwxCmIsMgo="}}
            ]))}),
        ),
        (
            "log probabilities",
            serde_json::json!({"logprobs": true, "top_logprobs": 3, "messages": user("Yes or no?".into())}),
        ),
        (
            "a logit bias",
            serde_json::json!({"logit_bias": {"15339": 100}, "messages": user("Yes or no?".into())}),
        ),
        (
            "an answer in speech",
            serde_json::json!({"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "wav"},
                "messages": user("Say hello".into())}),
        ),
        (
            "a web search",
            serde_json::json!({"web_search_options": {}, "messages": user("Today's news?".into())}),
        ),
        (
            "legacy functions",
            serde_json::json!({"functions": [{"name": "get_weather", "parameters": {"type": "object"}}],
                "messages": user("Weather in Paris?".into())}),
        ),
        (
            "a custom tool",
            serde_json::json!({"tools": [{"type": "custom", "custom": {"name": "sql", "description": "Runs SQL"}}],
                "messages": user("Count the users".into())}),
        ),
        (
            "tool-call arguments that are not JSON",
            serde_json::json!({"messages": [
                {"role": "user", "content": "Weather?"},
                {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": "city=Paris"}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": "Sunny."},
            ]}),
        ),
    ]
    .into_iter()
    .map(|(what, mut body)| {
        body["model"] = "gpt-4o-mini".into();
        (what, body)
    })
    .collect()
}

/// Before, the Anthropic adapter's own `400` for a request its API cannot take
/// ended the request (a client error does not fail over), though the OpenAI entry
/// beside it could serve it: now it is tried next, under each router, and the
/// Anthropic entry's health is not touched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_one_kind_of_provider_cannot_serve_goes_to_one_that_can() {
    let anthropic = sim(Flavor::Anthropic, "anthropic").await;
    let openai = sim(Flavor::OpenAi, "openai").await;
    let mut served = 0;
    for router in ["fallback", "balance", "overflow"] {
        let config = Config::from_toml_str(&mixed_group_text(router, &anthropic, &openai))
            .expect("a valid configuration");
        let stack = Stack::from_config(&config).unwrap().build().unwrap();
        for (what, body) in unsupported_by_anthropic() {
            let (status, text) = ask(&stack, body.to_string()).await;
            assert_eq!(status, StatusCode::OK, "{router}, {what}: {text}");
            served += 1;
            assert_eq!(openai.counters().received, served, "{router}, {what}");
        }
        let health = stack
            .handle()
            .provider("anthropic", "claude-haiku-4-5")
            .unwrap();
        assert_eq!(health.counters().failures, 0, "{router}");
        assert_eq!(
            health.circuit(),
            tower_failover_core::CircuitState::Closed,
            "{router}"
        );
    }
    assert_eq!(
        anthropic.counters().received,
        0,
        "nothing was sent to Anthropic"
    );

    // The same through the gateway, over HTTP.
    let config = Config::from_toml_str(&mixed_group_text("fallback", &anthropic, &openai)).unwrap();
    let gw = start_gateway(&config).await;
    let (status, body) = gw.post(unsupported_by_anthropic()[0].1.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    gw.shutdown().await;
    assert_eq!(anthropic.counters().received, 0);
}

/// With no provider that can serve it, the caller gets the adapter's `400` with its
/// reason (not a `503`: asking again will not help); with the one that could serve
/// it down, a `503` naming both attempts (later may work). Along a model group's
/// fallbacks too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_no_provider_can_serve_is_a_400_and_one_whose_server_is_down_a_503() {
    let anthropic = sim(Flavor::Anthropic, "anthropic").await;
    let openai = sim(Flavor::OpenAi, "openai").await;
    let n2 = unsupported_by_anthropic()[0].1.to_string();

    // Only Anthropic: its refusal is the answer.
    let only = config(&[("anthropic", "anthropic", anthropic.base_url().to_string())]);
    let stack = Stack::from_config(&only).unwrap().build().unwrap();
    let mut body = serde_json::from_str::<serde_json::Value>(&n2).unwrap();
    body["model"] = "claude-haiku-4-5".into();
    let (status, text) = ask(&stack, body.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        text.contains("n > 1 is not supported by Anthropic"),
        "{text}"
    );

    // The provider that could serve it is down: a 503, not Anthropic's 400.
    openai
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    for router in ["fallback", "overflow"] {
        let config = Config::from_toml_str(&mixed_group_text(router, &anthropic, &openai)).unwrap();
        let stack = Stack::from_config(&config).unwrap().build().unwrap();
        let status = match stack.clone().oneshot(post(n2.clone())).await {
            // The overflow router passes a provider's own 5xx through.
            Ok(res) => res.status(),
            Err(err) => {
                let all = err
                    .downcast_ref::<tower_failover_core::error::AllProvidersFailed>()
                    .unwrap_or_else(|| panic!("{router}: {err}"));
                let outcomes: Vec<String> = all
                    .attempts()
                    .iter()
                    .map(|a| a.outcome.to_string())
                    .collect();
                assert_eq!(
                    outcomes,
                    [
                        "client error (unsupported by the provider)",
                        "failure (overloaded)"
                    ],
                    "{router}"
                );
                tower_failover::error_response(&*err).status()
            }
        };
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{router}");
    }
    openai.set_faults([]).unwrap();

    // Along a model group's fallbacks: the Anthropic group refuses, the OpenAI
    // group serves.
    let text = config_text(&[
        ("anthropic", "anthropic", anthropic.base_url().to_string()),
        ("openai", "openai", openai_base(&openai)),
    ])
    .replace(
        "[models.\"gpt-4o-mini\"]\nfallbacks = [\"claude-haiku-4-5\"]",
        "[models.\"claude-haiku-4-5\"]\nfallbacks = [\"gpt-4o-mini\"]",
    );
    let stack = Stack::from_config(&Config::from_toml_str(&text).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let before = openai.counters().received;
    let res = stack.clone().oneshot(post(body.to_string())).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(openai.counters().received, before + 1);
    assert_eq!(anthropic.counters().received, 0);

    // And the gateway answers the 400 in OpenAI's shape.
    let gw = start_gateway(&only).await;
    let (status, text) = gw.post(body.to_string()).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error", "{text}");
    gw.shutdown().await;
}

/// A stack whose `max_request_bytes` is raised above 32 MiB takes such bodies to
/// its providers: each provider client had its own 32 MiB limit, which the stack's
/// setting did not reach, so the raise did nothing (a `413` from the client).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_raised_body_limit_reaches_the_providers() {
    let primary = sim_with(Flavor::OpenAi, "primary", |b| b.max_body(64 << 20)).await;
    let text = format!(
        "max_request_bytes = {}\n{}",
        48 << 20,
        config_text(&[("primary", "openai", openai_base(&primary))])
    );
    let stack = Stack::from_config(&Config::from_toml_str(&text).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let big = "A".repeat(34 << 20);
    let body = serde_json::json!({"model": "gpt-4o-mini",
    "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{big}")}}
    ]}]});
    let (status, text) = ask(&stack, body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{}", &text[..text.len().min(300)]);
    assert_eq!(primary.counters().received, 1);
}

/// A provider that refuses a parameter it does not take (Mistral's `422
/// extra_forbidden` for `store`; OpenAI's `unsupported_parameter` for `max_tokens`
/// on its reasoning models) no longer ends the request: the next provider in the
/// group serves it, and the refusing one's health is not touched. With no other
/// provider, the caller gets the refusal as it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parameter_one_provider_refuses_is_served_by_another() {
    let strict = sim_with(Flavor::OpenAi, "strict", |b| {
        b.refuses_fields(["store", "metadata"])
            .refuses_max_tokens(true)
    })
    .await;
    let lenient = sim(Flavor::OpenAi, "lenient").await;
    let stack = Stack::from_config(&Config::from_toml_str(&text_of(&strict, &lenient)).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let with = |key: &str, value: serde_json::Value| {
        let mut v: serde_json::Value = serde_json::from_str(&chat_body(false, None)).unwrap();
        v[key] = value;
        v.to_string()
    };
    for body in [
        with("store", true.into()),
        with("metadata", serde_json::json!({"team": "search"})),
        with("max_tokens", 64.into()),
    ] {
        let (status, text) = ask(&stack, body.clone()).await;
        assert_eq!(status, StatusCode::OK, "{body}: {text}");
    }
    assert_eq!(strict.counters().received, 3, "each was tried there first");
    assert_eq!(lenient.counters().received, 3);
    let health = stack.handle().provider("strict", "gpt-4o-mini").unwrap();
    assert_eq!(health.counters().failures, 0);
    // A request the strict provider takes is its own.
    let res = stack
        .clone()
        .oneshot(post(chat_body(false, None)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(lenient.counters().received, 3);

    // Alone, its refusal is the answer, as the provider wrote it.
    let alone = config(&[("strict", "openai", openai_base(&strict))]);
    let stack = Stack::from_config(&alone).unwrap().build().unwrap();
    let (status, text) = ask(&stack, with("store", true.into())).await;
    assert_eq!(status.as_u16(), 422);
    assert!(text.contains("extra_forbidden"));

    // Through the gateway too.
    let gw = start_gateway(&Config::from_toml_str(&text_of(&strict, &lenient)).unwrap()).await;
    let (status, body) = gw.post(with("store", true.into())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    gw.shutdown().await;
}

/// OpenAI's strict structured-output mode refuses a schema it cannot enforce (a
/// property left out of `required`) with `400 Invalid schema for
/// response_format`, which Anthropic's structured output takes: the request fails
/// over instead of ending with OpenAI's 400, through the stack and the gateway.
/// Alone, the OpenAI provider's 400 is the answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_openai_s_strict_mode_refuses_is_served_by_another_provider() {
    let primary = sim(Flavor::OpenAi, "primary").await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "The largest city in France, as JSON."}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "city", "strict": true,
            "schema": {"type": "object", "additionalProperties": false,
                "properties": {"city": {"type": "string"}, "note": {"type": "string"}},
                "required": ["city"]}}},
    })
    .to_string();
    let (status, text) = ask(&primary_and_backup(&primary, &backup), body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let city: serde_json::Value = serde_json::from_str(content).expect("JSON content");
    assert!(city["city"].is_string(), "{city}");
    assert_eq!(
        (primary.counters().received, backup.counters().received),
        (1, 1)
    );

    let gw = start_gateway(&primary_and_backup_config(&primary, &backup)).await;
    let (status, text) = gw.post(body.clone()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    gw.shutdown().await;

    let alone = config(&[("primary", "openai", openai_base(&primary))]);
    let stack = Stack::from_config(&alone).unwrap().build().unwrap();
    let (status, text) = ask(&stack, body).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{text}");
    assert!(
        text.contains("Invalid schema for response_format"),
        "{text}"
    );
}

fn text_of(strict: &Sim, lenient: &Sim) -> String {
    format!(
        "router = \"fallback\"\n\
         [[providers]]\nname = \"strict\"\nmodel = \"gpt-4o-mini\"\nbase_url = \"{}\"\npriority = 0\n\
         [[providers]]\nname = \"lenient\"\nmodel = \"gpt-4o-mini\"\nbase_url = \"{}\"\npriority = 1\n",
        openai_base(strict),
        openai_base(lenient)
    )
}

/// A provider that refuses `stream_options` (Mistral answers `422` for fields it
/// does not take) is configured with `stream_usage = false`; a streamed
/// `/v1/messages` request to it used to carry the field all the same (the door
/// added it), so every Claude-Code-style stream was a `422`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_messages_request_sends_no_stream_options_a_provider_turned_off() {
    let strict = sim_with(Flavor::OpenAi, "strict", |b| {
        b.refuses_fields(["stream_options"])
    })
    .await;
    let text = config_text(&[("strict", "openai", openai_base(&strict))]).replacen(
        "priority = 0\n",
        "priority = 0\nstream_usage = false\n",
        1,
    );
    let gw = start_gateway(&Config::from_toml_str(&text).unwrap()).await;
    let msg = serde_json::json!({
        "model": "gpt-4o-mini", "max_tokens": 50, "stream": true,
        "messages": [{"role": "user", "content": "Say hello."}],
    });
    let (status, body) = gw.post_to("/v1/messages", msg.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body.contains("event: message_stop"), "{body}");
    gw.shutdown().await;
    assert_eq!(strict.counters().received, 1);
}

/// A conversation that ends with the assistant's turn (a prefill the answer
/// continues: "Here is the JSON:\n") failed over to Anthropic, which refuses a
/// final assistant text ending in whitespace with a 400: the trailing whitespace is
/// taken off.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_ending_in_a_newline_is_answered_by_anthropic() {
    let (_primary, backup, stack) = primary_down().await;
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": "List three colours as JSON."},
            {"role": "assistant", "content": "Here is the JSON:\n"},
        ],
    });
    let (status, text) = ask(&stack, body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(backup.counters().received, 1);
}

/// Structured output failed over to Anthropic: `response_format: json_schema` is
/// sent as Anthropic's `output_config.format` (it was dropped, and Claude answered
/// in prose), so the answer is JSON of the caller's schema.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_json_schema_reaches_anthropic_as_its_structured_output() {
    let (_primary, backup, stack) = primary_down().await;
    let schema = serde_json::json!({
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
        "additionalProperties": false
    });
    let body = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "The largest city in France, as JSON."}],
        "response_format": {"type": "json_schema",
            "json_schema": {"name": "city", "strict": true, "schema": schema}},
    });
    let (status, text) = ask(&stack, body.to_string()).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let answer: serde_json::Value = serde_json::from_str(&text).unwrap();
    let content = answer["choices"][0]["message"]["content"].as_str().unwrap();
    let data: serde_json::Value =
        serde_json::from_str(content).unwrap_or_else(|e| panic!("{e}: {content}"));
    assert!(
        data["city"].is_string() && data["population"].is_i64(),
        "{data}"
    );
    let sent: serde_json::Value =
        serde_json::from_slice(backup.received()[0].body().expect("read")).unwrap();
    assert_eq!(
        sent["output_config"]["format"]["type"], "json_schema",
        "{sent}"
    );
    assert_eq!(sent["output_config"]["format"]["schema"], schema, "{sent}");
}

/// An OpenAI caller that sets no token limit, failed over to Claude: Anthropic
/// needs one, and it was 4,096 for every model, so long streamed answers ended at
/// 4,096 tokens (`finish_reason: "length"`) where OpenAI allows 16,384. Now a
/// stream gets the model's default (16,384 for Claude 4.x), unless the entry sets
/// `default_max_tokens`; a
/// caller's limit above the model's maximum is refused by Anthropic (modelled by
/// the simulator) and fails over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_without_a_token_limit_gets_the_claude_model_s_default() {
    let (primary_down_sim, backup, stack) = primary_down().await;
    let sent_limit = |i: usize| {
        let sent: serde_json::Value =
            serde_json::from_slice(backup.received()[i].body().expect("read")).unwrap();
        sent["max_tokens"].as_u64()
    };
    // A stream: the model's default. Not streamed: 4,096 at most (its headers
    // come when it is all written, inside the first-byte window).
    let res = stack
        .clone()
        .oneshot(post(chat_body(true, None)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();
    assert_eq!(sent_limit(0), Some(16_384));
    let res = stack
        .clone()
        .oneshot(post(chat_body(false, None)))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(sent_limit(1), Some(4_096));

    // The entry's own setting wins.
    let primary = sim(Flavor::OpenAi, "primary2").await;
    primary
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    let text = primary_and_backup_text(&primary, &backup).replace(
        "priority = 1\n",
        "priority = 1\ndefault_max_tokens = 1000\n",
    );
    let stack2 = Stack::from_config(&Config::from_toml_str(&text).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let res = stack2.oneshot(post(chat_body(false, None))).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(sent_limit(2), Some(1000));

    // Above the model's maximum (64,000 for claude-haiku-4-5): Anthropic's 400,
    // which moves on where another provider could serve it. Here the group that
    // might have (the primary's) is down, so the caller hears of that failure: a
    // 503, not the 400 (later may work), as the routers inside a group answer.
    let err = stack
        .clone()
        .oneshot(post(chat_body(false, Some(("max_tokens", 100_000)))))
        .await
        .expect_err("the primary is down");
    let all = err
        .downcast_ref::<tower_failover_core::error::AllProvidersFailed>()
        .unwrap_or_else(|| panic!("{err}"));
    assert!(!all.attempts().is_empty());
    assert_eq!(
        tower_failover::error_response(&*err).status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    // With the primary back, it serves the request (its own limit is its business).
    primary_down_sim.set_faults([]).unwrap();
    let res = stack
        .oneshot(post(chat_body(false, Some(("max_tokens", 100_000)))))
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
}

/// The OpenAI content and finish reason of an answer, streamed or not: the
/// streamed content deltas joined, and whether any chunk carried a tool call.
fn content_of(body: &str, stream: bool) -> (String, String, bool) {
    if !stream {
        let v: serde_json::Value = serde_json::from_str(body).unwrap();
        let choice = &v["choices"][0];
        return (
            choice["message"]["content"]
                .as_str()
                .unwrap_or("")
                .to_owned(),
            choice["finish_reason"].as_str().unwrap_or("").to_owned(),
            choice["message"].get("tool_calls").is_some(),
        );
    }
    let (mut content, mut finish, mut tools) = (String::new(), String::new(), false);
    for (_, data) in tower_failover::sse::events(body.as_bytes()).unwrap() {
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) else {
            continue;
        };
        let choice = &v["choices"][0];
        content.push_str(choice["delta"]["content"].as_str().unwrap_or(""));
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = f.to_owned();
        }
        tools |= choice["delta"].get("tool_calls").is_some();
    }
    (content, finish, tools)
}

/// A caller of OpenAI's JSON mode (`response_format: json_object`) failed over to
/// Claude: Anthropic has no such mode, and the request used to reach it without
/// any, so the caller got prose where its code parses JSON. The adapter now asks
/// for the answer as a forced call of a tool whose input is any JSON object (the
/// simulator answers a forced tool as Anthropic's API does), and gives it back as
/// the message's content, streamed or not, through the stack and the gateway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_mode_failed_over_to_claude_still_answers_json() {
    let (_primary, backup, stack) = primary_down().await;
    let body = |stream: bool| {
        serde_json::json!({
            "model": "gpt-4o-mini",
            "stream": stream,
            "messages": [{"role": "user", "content": "Three facts about failover, as JSON."}],
            "response_format": {"type": "json_object"},
        })
        .to_string()
    };
    let check = |status: StatusCode, text: &str, stream: bool| {
        assert_eq!(status, StatusCode::OK, "{text}");
        let (content, finish, tools) = content_of(text, stream);
        let data: serde_json::Value = serde_json::from_str(&content)
            .unwrap_or_else(|e| panic!("stream={stream}: not JSON ({e}): {content:?}"));
        assert!(data.is_object(), "{data}");
        assert_eq!(finish, "stop", "stream={stream}: {text}");
        assert!(!tools, "the answer is no tool call for the caller: {text}");
    };
    for stream in [false, true] {
        let (status, text) = ask(&stack, body(stream)).await;
        check(status, &text, stream);
    }
    let sent: serde_json::Value =
        serde_json::from_slice(backup.received()[0].body().expect("read")).unwrap();
    assert_eq!(sent["tool_choice"]["type"], "tool", "{sent}");
    // Over HTTP through the gateway, as deployed.
    let gw = start_gateway(&primary_and_backup_config(&_primary, &backup)).await;
    for stream in [false, true] {
        let (status, text) = gw.post(body(stream)).await;
        check(status, &text, stream);
    }
    gw.shutdown().await;
}

/// A caller that makes the model call one of its functions, failed over to
/// Claude: the call comes back in OpenAI's shape (`tool_calls`, arguments to the
/// function's schema, `finish_reason: "tool_calls"`), streamed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forced_function_call_fails_over_to_claude_in_openai_s_shape() {
    let (_primary, _backup, stack) = primary_down().await;
    for stream in [false, true] {
        let body = serde_json::json!({
            "model": "gpt-4o-mini",
            "stream": stream,
            "messages": [{"role": "user", "content": "The weather in Paris?"}],
            "tools": [{"type": "function", "function": {"name": "get_weather",
                "parameters": {"type": "object", "required": ["city"],
                    "properties": {"city": {"type": "string"}}}}}],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        });
        let (status, text) = ask(&stack, body.to_string()).await;
        assert_eq!(status, StatusCode::OK, "{text}");
        let (name, arguments, finish) = if stream {
            let mut name = None;
            let mut args = String::new();
            let mut finish = String::new();
            for (_, data) in tower_failover::sse::events(text.as_bytes()).unwrap() {
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&data) else {
                    continue;
                };
                let call = &v["choices"][0]["delta"]["tool_calls"][0];
                name = name.or(call["function"]["name"].as_str().map(str::to_owned));
                args.push_str(call["function"]["arguments"].as_str().unwrap_or(""));
                if let Some(f) = v["choices"][0]["finish_reason"].as_str() {
                    finish = f.to_owned();
                }
            }
            (name, args, finish)
        } else {
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            let call = &v["choices"][0]["message"]["tool_calls"][0];
            (
                call["function"]["name"].as_str().map(str::to_owned),
                call["function"]["arguments"].as_str().unwrap().to_owned(),
                v["choices"][0]["finish_reason"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            )
        };
        assert_eq!(name.as_deref(), Some("get_weather"), "{text}");
        let args: serde_json::Value = serde_json::from_str(&arguments).unwrap();
        assert!(args["city"].is_string(), "{args}");
        assert_eq!(finish, "tool_calls");
    }
}

/// A prompt every model refuses: each provider's answer is rejected by the refusal
/// check and the request fails over, and when none is left the caller used to get
/// `503 all_providers_failed` with `Retry-After` (a `529 overloaded_error` at
/// `/v1/messages`), which its SDK retries, each time paid for, to the same refusal.
/// Now it gets the last refusal as the answer: `200`, marked `x-failover-rejected:
/// refusal`, through the stack and the gateway's two doors. With a provider that
/// failed otherwise among them (later may work), it is still the `503`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_every_provider_gives_is_the_answer_not_a_503() {
    let primary = sim(Flavor::OpenAi, "primary").await;
    let backup = sim(Flavor::Anthropic, "backup").await;
    for s in [&primary, &backup] {
        s.set_faults([FaultSpec::always(Fault::Refusal)]).unwrap();
    }
    let stack = primary_and_backup(&primary, &backup);
    let res = stack
        .clone()
        .oneshot(post(chat_body(false, None)))
        .await
        .expect("an answer");
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[tower_failover::REJECTED_HEADER], "refusal");
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(content.starts_with("I'm sorry"), "{v}");
    assert_eq!(
        (primary.counters().received, backup.counters().received),
        (1, 1),
        "each provider asked once"
    );

    // Over HTTP, both doors.
    let gw = start_gateway(&primary_and_backup_config(&primary, &backup)).await;
    let (status, headers, text) = gw
        .post_for_headers("/v1/chat/completions", chat_body(false, None))
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers[tower_failover::REJECTED_HEADER], "refusal");
    assert!(text.contains("I'm sorry"), "{text}");
    let message = serde_json::json!({"model": "gpt-4o-mini", "max_tokens": 100,
        "messages": [{"role": "user", "content": "Something every model refuses"}]});
    let (status, headers, text) = gw
        .post_for_headers("/v1/messages", message.to_string())
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(headers[tower_failover::REJECTED_HEADER], "refusal");
    let m: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(m["type"], "message", "{m}");
    assert!(
        m["content"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("I'm sorry"),
        "{m}"
    );
    gw.shutdown().await;

    // With the wait queue on: no wait (it would ask them all again for the same).
    let queued = format!(
        "wait_queue = true\n{}",
        primary_and_backup_text(&primary, &backup)
    );
    let queued = Stack::from_config(&Config::from_toml_str(&queued).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let before = primary.counters().received + backup.counters().received;
    let (status, text) = ask(&queued, chat_body(false, None)).await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert_eq!(
        primary.counters().received + backup.counters().received - before,
        2,
        "each provider asked once, not again from the queue"
    );

    // A provider down among them: later may work, so the error stays.
    primary
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    let err = stack
        .oneshot(post(chat_body(false, None)))
        .await
        .expect_err("no answer to give");
    assert_eq!(
        tower_failover::error_response(&*err).status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "{err}"
    );
}

/// OpenAI caches a long prompt's prefix by itself and reports the tokens it read
/// from the cache (`prompt_tokens_details.cached_tokens`, modelled by the
/// simulator: from 1,024 tokens, in steps of 128), which it bills at a discount.
/// The provider read only the totals, so callers' budgets and the cost metrics
/// charged cached tokens at the full input price. Now they are priced apart: at
/// half the input price by default for an OpenAI-compatible entry (OpenAI's
/// smallest discount), streamed or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_s_cached_prompt_tokens_are_priced_apart() {
    let openai = sim(Flavor::OpenAi, "openai").await;
    let text = format!(
        "[[providers]]\nname = \"openai\"\nkind = \"openai\"\nmodel = \"gpt-4o-mini\"\n\
         base_url = \"{}\"\nprice = {{ input_per_million = 1.0, output_per_million = 0.0 }}\n",
        openai_base(&openai)
    );
    let stack = Stack::from_config(&Config::from_toml_str(&text).unwrap())
        .unwrap()
        .build()
        .unwrap();
    let long = "You are a careful assistant who answers briefly. ".repeat(120);
    let body = |question: &str, stream: bool| {
        serde_json::json!({"model": "gpt-4o-mini", "stream": stream, "messages": [
            {"role": "system", "content": long},
            {"role": "user", "content": question}
        ]})
        .to_string()
    };
    // (prompt tokens, cached tokens as the answer reports them, cost in
    // millionths): the cost is 1 per plain prompt token and 0.5 per cached one,
    // the answer being free.
    let usage_of = |res: http::Response<tower_failover::BoxBody>| async move {
        let handle = res
            .extensions()
            .get::<tower_failover::provider::UsageHandle>()
            .cloned()
            .expect("a usage handle");
        let text = res
            .into_body()
            .collect()
            .await
            .expect("a whole body")
            .to_bytes();
        let text = String::from_utf8_lossy(&text);
        let key = "\"cached_tokens\":";
        let at = text.rfind(key).expect("the answer reports cached tokens") + key.len();
        let digits: String = text[at..]
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        let usage = handle.get().expect("usage recorded");
        (
            usage.prompt_tokens,
            digits.parse::<u64>().unwrap(),
            usage.cost.expect("priced").micros(),
        )
    };
    let first = stack
        .clone()
        .oneshot(post(body("First?", false)))
        .await
        .unwrap();
    let (prompt, cached, cost) = usage_of(first).await;
    assert_eq!(cached, 0);
    assert_eq!(
        cost, prompt,
        "nothing cached yet: every prompt token at full price"
    );
    for (n, stream) in [(2, false), (3, true)] {
        let res = stack
            .clone()
            .oneshot(post(body(&format!("Question {n}?"), stream)))
            .await
            .unwrap();
        let (prompt, cached, cost) = usage_of(res).await;
        assert!(cached >= 1024 && cached < prompt, "{cached} of {prompt}");
        assert_eq!(
            cost,
            prompt - cached / 2,
            "stream={stream}: {cached} of {prompt} prompt tokens cached"
        );
    }
}
