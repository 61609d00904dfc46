//! Routing, deadlines, limits, hints and configuration, against a recording server.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{ANTHROPIC_JSON, OPENAI_JSON, Scripted, TestServer, chat, json, post, read_body, sse};
use http::{Request, Version};
use http_body_util::Full;
use serde_json::Value;
use tower::ServiceExt;
use tower_failover_core::error::{BodyTooLarge, Elapsed, TimeoutKind, find};
use tower_failover_core::{Classify, ClientErrorKind, Deadline, LlmClassifier, Outcome};
use tower_failover_provider::{
    Anthropic, HttpVersion, OpenAiCompatible, Price, Provider, ProviderConfig, RootStore, Usage,
    UsageHandle,
};

fn local(server: &TestServer) -> String {
    format!("http://127.0.0.1:{}", server.addr.port())
}

#[tokio::test]
async fn paths_queries_models_and_stream_usage() {
    let server = TestServer::start(None, |r| {
        let stream = serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["stream"] == true);
        if stream {
            sse(vec![(
                Duration::ZERO,
                "data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}\n\n\
                 data: {\"choices\":[],\"usage\":{\"prompt_tokens\":3,\"completion_tokens\":1}}\n\n\
                 data: [DONE]\n\n",
            )])
        } else {
            json(200, OPENAI_JSON)
        }
    })
    .await;
    // An Azure-style base URL with a path prefix and a query.
    let svc = OpenAiCompatible::builder()
        .base_url(format!(
            "{}/openai/v1/?api-version=2024-10-21",
            local(&server)
        ))
        .api_key("k")
        .auth_header("api-key")
        .model("smart", "gpt-4o")
        .price("*", Price::per_million(1.0, 2.0))
        .build()
        .unwrap();
    let req = Request::post("/v1/chat/completions?trace=1")
        .body(Full::new(Bytes::from(chat("smart", false))))
        .unwrap();
    let res = svc.clone().oneshot(req).await.unwrap();
    let usage = *res.extensions().get::<Usage>().unwrap();
    assert_eq!(usage.prompt_tokens, 10);
    assert_eq!(usage.total_tokens(), 15);
    assert_eq!(usage.cost.unwrap().micros(), 20);

    let res = svc
        .clone()
        .oneshot(post(chat("smart", true)))
        .await
        .unwrap();
    let handle = res.extensions().get::<UsageHandle>().unwrap().clone();
    let (body, err) = read_body(res.into_body()).await;
    assert!(err.is_none());
    // Passed through byte for byte.
    assert!(
        body.starts_with(b"data: {\"choices\":[{\"delta\":{\"content\":\"hi\"}}],\"usage\":null}")
    );
    assert_eq!(handle.get().unwrap().completion_tokens, 1);

    let seen = server.requests();
    assert_eq!(
        seen[0].path_and_query,
        "/openai/v1/chat/completions?api-version=2024-10-21&trace=1"
    );
    assert_eq!(seen[0].header("api-key"), Some("k"));
    assert!(seen[0].header("authorization").is_none());
    assert_eq!(seen[0].json()["model"], "gpt-4o");
    assert!(seen[0].json().get("stream_options").is_none());
    assert_eq!(
        seen[1].json()["stream_options"],
        serde_json::json!({"include_usage": true})
    );

    // Other routes pass through too (the `/v1` prefix belongs to the base URL).
    let req = Request::get("/v1/models")
        .body(Full::new(Bytes::new()))
        .unwrap();
    svc.oneshot(req).await.unwrap();
    assert_eq!(
        server.requests()[2].path_and_query,
        "/openai/v1/models?api-version=2024-10-21"
    );
}

#[tokio::test]
async fn anthropic_routes() {
    let server = TestServer::start(None, |r| {
        if r.path_and_query.ends_with("/messages") {
            json(200, ANTHROPIC_JSON)
        } else {
            json(200, r#"{"data":[]}"#)
        }
    })
    .await;
    // A base URL with `/v1` works as well as without.
    let svc = Anthropic::builder()
        .base_url(format!("{}/v1", local(&server)))
        .api_key("k")
        .anthropic_version("2023-06-01")
        .default_max_tokens(77)
        .header("anthropic-beta", "tools-2024-05-16")
        .build()
        .unwrap();
    let res = svc
        .clone()
        .oneshot(post(chat("claude-haiku-4-5", false)))
        .await
        .unwrap();
    let (body, _) = read_body(res.into_body()).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["choices"][0]["message"]["content"], "Hello!");
    let req = Request::get("/v1/models")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    let (body, _) = read_body(res.into_body()).await;
    assert_eq!(body, br#"{"data":[]}"#);

    let seen = server.requests();
    assert_eq!(seen[0].path_and_query, "/v1/messages");
    assert_eq!(seen[0].json()["max_tokens"], 77);
    assert_eq!(seen[0].json()["system"], "Be brief.");
    assert_eq!(seen[0].header("anthropic-beta"), Some("tools-2024-05-16"));
    assert_eq!(seen[1].path_and_query, "/v1/models");
    assert_eq!(seen[1].header("x-api-key"), Some("k"));
}

#[tokio::test]
async fn error_bodies_give_hints_to_the_classifier() {
    let openai_server = TestServer::start(None, |_| {
        json(
            400,
            r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
        )
    })
    .await;
    let anthropic_server = TestServer::start(None, |_| {
        json(
            400,
            r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 250000 tokens > 200000 maximum"}}"#,
        )
    })
    .await;
    let c = LlmClassifier::default();
    let want = Outcome::ClientError {
        kind: ClientErrorKind::ContextWindowExceeded,
    };
    let svc = OpenAiCompatible::builder()
        .base_url(format!("{}/v1", local(&openai_server)))
        .build()
        .unwrap();
    let res = svc.oneshot(post(chat("m", false))).await.unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(c.classify_response(&res), want);
    let (body, _) = read_body(res.into_body()).await;
    assert!(
        String::from_utf8(body)
            .unwrap()
            .contains("context_length_exceeded")
    );

    let svc = Anthropic::builder()
        .base_url(local(&anthropic_server))
        .build()
        .unwrap();
    let res = svc.oneshot(post(chat("m", false))).await.unwrap();
    assert_eq!(c.classify_response(&res), want);
    let (body, _) = read_body(res.into_body()).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .starts_with("prompt is too long")
    );
}

#[tokio::test]
async fn deadlines_are_typed() {
    // Headers at once, the first event late: first-byte deadline of a stream.
    let late_first = TestServer::start(None, |_| {
        sse(vec![(Duration::from_secs(30), "data: [DONE]\n\n")])
    })
    .await;
    // The first event at once, the rest late: the total deadline, mid-stream.
    let stalls = TestServer::start(None, |_| {
        sse(vec![
            (Duration::ZERO, "data: {\"choices\":[]}\n\n"),
            (Duration::from_secs(30), "data: [DONE]\n\n"),
        ])
    })
    .await;
    // A JSON answer that comes late.
    let slow_json = TestServer::start(None, |_| {
        let mut r = json(200, OPENAI_JSON);
        *r.body_mut() = Scripted::new([(Duration::from_secs(30), Bytes::from(OPENAI_JSON))]);
        r
    })
    .await;
    let svc = |s: &TestServer| -> OpenAiCompatible {
        OpenAiCompatible::builder()
            .base_url(format!("{}/v1", local(s)))
            .first_byte_timeout(Duration::from_millis(150))
            .total_timeout(Duration::from_millis(400))
            .build()
            .unwrap()
    };
    let kind_of = |e: tower_failover_core::BoxError| find::<Elapsed>(&*e).map(Elapsed::kind);

    let res = svc(&late_first)
        .oneshot(post(chat("m", true)))
        .await
        .unwrap();
    let (_, err) = read_body(res.into_body()).await;
    assert_eq!(kind_of(err.unwrap()), Some(TimeoutKind::FirstByte));

    let res = svc(&stalls).oneshot(post(chat("m", true))).await.unwrap();
    let (body, err) = read_body(res.into_body()).await;
    assert_eq!(body, b"data: {\"choices\":[]}\n\n");
    assert_eq!(kind_of(err.unwrap()), Some(TimeoutKind::Attempt));

    let err = svc(&slow_json)
        .oneshot(post(chat("m", false)))
        .await
        .unwrap_err();
    assert_eq!(kind_of(err), Some(TimeoutKind::FirstByte));

    // The request's own deadline (set by a layer above) wins when it comes first.
    let mut req = post(chat("m", false));
    Deadline::set_on(
        &mut req,
        tokio::time::Instant::now() + Duration::from_millis(100),
    );
    let err = svc(&slow_json).oneshot(req).await.unwrap_err();
    assert_eq!(kind_of(err), Some(TimeoutKind::Total));
}

#[tokio::test]
async fn connect_deadline_covers_the_tls_handshake() {
    // Accepts TCP, never answers the TLS handshake.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = listener.accept().await {
            held.push(s);
        }
    });
    let svc = OpenAiCompatible::builder()
        .base_url(format!("https://127.0.0.1:{port}/v1"))
        .connect_timeout(Duration::from_millis(150))
        .build()
        .unwrap();
    let err = svc.oneshot(post(chat("m", false))).await.unwrap_err();
    let e = find::<Elapsed>(&*err).unwrap();
    assert_eq!(e.kind(), TimeoutKind::Connect);
    assert_eq!(e.after(), Duration::from_millis(150));
    hold.abort();
}

#[tokio::test]
async fn http_versions() {
    let certs = tower_failover_sim::tls::self_signed().unwrap();
    let tls = TestServer::start(Some(certs.server_config.clone()), |_| {
        json(200, OPENAI_JSON)
    })
    .await;
    let plain = TestServer::start(None, |_| json(200, OPENAI_JSON)).await;
    let cases = [
        (&tls, HttpVersion::Auto, Version::HTTP_2),
        (&tls, HttpVersion::Http1, Version::HTTP_11),
        (&tls, HttpVersion::Http2, Version::HTTP_2),
        (&plain, HttpVersion::Auto, Version::HTTP_11),
        (&plain, HttpVersion::Http2, Version::HTTP_2),
    ];
    for (server, version, want) in cases {
        let svc = OpenAiCompatible::builder()
            .base_url(format!("{}/v1", server.url()))
            .tls_roots(RootStore::None)
            .ca_pem(certs.ca_pem.clone())
            .http_version(version)
            .build()
            .unwrap();
        let res = svc.oneshot(post(chat("m", false))).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(
            server.requests().last().unwrap().version,
            want,
            "{version:?}"
        );
    }
}

#[tokio::test]
async fn bad_requests_are_answered_locally() {
    let server = TestServer::start(None, |_| json(200, ANTHROPIC_JSON)).await;
    let anthropic = Anthropic::builder()
        .base_url(local(&server))
        .max_request_bytes(2048)
        .build()
        .unwrap();
    let c = LlmClassifier::default();

    let res = anthropic
        .clone()
        .oneshot(post("{not json".into()))
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(
        c.classify_response(&res),
        Outcome::ClientError {
            kind: ClientErrorKind::Status(400)
        }
    );
    let (body, _) = read_body(res.into_body()).await;
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["error"]["type"], "invalid_request_error");

    let res = anthropic.oneshot(post("x".repeat(4096))).await.unwrap();
    assert_eq!(res.status(), 413);
    assert!(server.requests().is_empty(), "nothing was sent");

    let openai = OpenAiCompatible::builder()
        .base_url(format!("{}/v1", local(&server)))
        .build()
        .unwrap();
    let res = openai.oneshot(post("[1,2]".into())).await.unwrap();
    assert_eq!(res.status(), 400);
    assert!(server.requests().is_empty());
}

#[tokio::test]
async fn oversized_answers_are_refused() {
    let server = TestServer::start(None, |_| json(200, OPENAI_JSON)).await;
    let svc = OpenAiCompatible::builder()
        .base_url(format!("{}/v1", local(&server)))
        .max_response_bytes(32)
        .build()
        .unwrap();
    let err = svc.oneshot(post(chat("m", false))).await.unwrap_err();
    assert_eq!(find::<BodyTooLarge>(&*err).unwrap().limit(), 32);
}

#[tokio::test]
async fn provider_from_a_config_file() {
    let server = TestServer::start(None, |_| json(200, ANTHROPIC_JSON)).await;
    let config: ProviderConfig = toml::from_str(&format!(
        r#"
        kind = "anthropic"
        name = "claude"
        base_url = "{}"
        api_key = "k"
        models = {{ smart = "claude-haiku-4-5" }}
        prices = {{ claude-haiku-4-5 = {{ input_per_million = 1.0, output_per_million = 5.0 }} }}
        timeouts = {{ connect = "2s", first_byte = "5s", total = "30s" }}
        "#,
        local(&server)
    ))
    .unwrap();
    let svc: Provider = Provider::from_config(config).build().unwrap();
    assert_eq!(svc.name(), "claude");
    let res = svc.oneshot(post(chat("smart", false))).await.unwrap();
    // 10 input tokens at 1.0 and 5 output tokens at 5.0 per million.
    assert_eq!(
        res.extensions()
            .get::<Usage>()
            .unwrap()
            .cost
            .unwrap()
            .micros(),
        35
    );
    assert_eq!(server.requests()[0].json()["model"], "claude-haiku-4-5");
}

#[test]
fn invalid_configurations_name_the_field() {
    let openai = OpenAiCompatible::builder;
    let cases = [
        (openai().base_url("ftp://x").build().err(), "base_url"),
        (openai().base_url("not a url").build().err(), "base_url"),
        (
            openai().base_url("https://u:p@host/v1").build().err(),
            "base_url",
        ),
        (openai().api_key("").build().err(), "api_key"),
        (
            openai().connect_timeout(Duration::ZERO).build().err(),
            "timeouts.connect",
        ),
        (
            openai()
                .total_timeout(Duration::from_secs(30 * 86_400))
                .build()
                .err(),
            "timeouts.total",
        ),
        (openai().header("bad header", "v").build().err(), "headers"),
        (
            openai().header("x-ok", "bad\nvalue").build().err(),
            "headers",
        ),
        (
            openai().header("host", "elsewhere").build().err(),
            "headers",
        ),
        (openai().model("", "x").build().err(), "models"),
        (
            openai()
                .price("m", Price::per_million(-1.0, 1.0))
                .build()
                .err(),
            "prices",
        ),
        (
            openai().max_request_bytes(0).build().err(),
            "max_request_bytes",
        ),
        (
            openai()
                .auth_header("bad header")
                .api_key("k")
                .build()
                .err(),
            "auth_header",
        ),
        (openai().tls_roots(RootStore::None).build().err(), "tls"),
        (
            Anthropic::builder()
                .api_key("k")
                .default_max_tokens(0)
                .build()
                .err(),
            "default_max_tokens",
        ),
        (
            Anthropic::builder()
                .api_key("k")
                .anthropic_version("bad\nversion")
                .build()
                .err(),
            "anthropic_version",
        ),
        // A hosted API with no key would answer every request 401.
        (Anthropic::builder().build().err(), "api_key_env"),
    ];
    for (err, field) in cases {
        let err = err.unwrap_or_else(|| panic!("{field} should be refused"));
        assert_eq!(err.field(), field, "{err}");
    }
    let both = ProviderConfig {
        api_key: Some("k".into()),
        api_key_env: Some("X".into()),
        ..ProviderConfig::default()
    };
    assert_eq!(
        Provider::from_config(both).build().unwrap_err().field(),
        "api_key"
    );
    let mut anth = ProviderConfig::new(tower_failover_provider::ProviderKind::Anthropic);
    anth.auth_header = Some("api-key".into());
    assert_eq!(
        Provider::from_config(anth).build().unwrap_err().field(),
        "auth_header"
    );
}

#[tokio::test]
async fn a_stream_dropped_midway_still_records_its_usage() {
    let server = TestServer::start(None, |_| {
        sse(vec![
            (
                Duration::ZERO,
                "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":40,\"output_tokens\":1}}}\n\n",
            ),
            (Duration::from_secs(30), "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"),
        ])
    })
    .await;
    let health = tower_failover_core::Health::standalone("anthropic", "claude-haiku-4-5");
    let svc = Anthropic::builder()
        .base_url(local(&server))
        .price("*", Price::per_million(1.0, 5.0))
        .health(health.clone())
        .build()
        .unwrap();
    let res = svc.oneshot(post(chat("m", true))).await.unwrap();
    let handle = res.extensions().get::<UsageHandle>().unwrap().clone();
    let mut body = res.into_body();
    let first = http_body_util::BodyExt::frame(&mut body)
        .await
        .unwrap()
        .unwrap();
    assert!(
        first
            .into_data()
            .unwrap()
            .starts_with(b"data: {\"id\":\"msg_1\"")
    );
    assert!(handle.get().is_none());
    drop(body); // the caller went away
    let usage = handle.get().expect("partial usage recorded on drop");
    assert_eq!((usage.prompt_tokens, usage.completion_tokens), (40, 1));
    assert_eq!(health.usage().prompt_tokens, 40);
    assert_eq!(usage.cost.unwrap().micros(), 45);
}

#[test]
fn services_fit_in_stacks() {
    fn stackable<S: Clone + Send + Sync + 'static>() {}
    fn sendable<T: Send + 'static>() {}
    stackable::<OpenAiCompatible>();
    stackable::<Anthropic>();
    stackable::<Provider>();
    sendable::<tower_failover_provider::ResponseBody>();
    sendable::<tower_failover_provider::ResponseFuture>();
}

#[tokio::test]
async fn a_stalled_body_ends_at_the_idle_timeout_as_a_typed_truncation() {
    // The first event at once, then silence far longer than the idle timeout.
    let stalls = TestServer::start(None, |_| {
        sse(vec![
            (Duration::ZERO, "data: {\"choices\":[]}\n\n"),
            (Duration::from_secs(60), "data: [DONE]\n\n"),
        ])
    })
    .await;
    // A JSON answer whose second half never comes.
    let half_json = TestServer::start(None, |_| {
        let mut r = json(200, OPENAI_JSON);
        *r.body_mut() = Scripted::new([
            (Duration::ZERO, Bytes::from_static(b"{\"id\":")),
            (Duration::from_secs(60), Bytes::from(OPENAI_JSON)),
        ]);
        r
    })
    .await;
    let svc = |s: &TestServer| -> OpenAiCompatible {
        OpenAiCompatible::builder()
            .base_url(format!("{}/v1", local(s)))
            .first_byte_timeout(Duration::from_secs(60))
            .total_timeout(Duration::from_secs(120))
            .idle_timeout(Duration::from_millis(200))
            .build()
            .unwrap()
    };

    let res = svc(&stalls).oneshot(post(chat("m", true))).await.unwrap();
    let (body, err) = read_body(res.into_body()).await;
    assert_eq!(
        body, b"data: {\"choices\":[]}\n\n",
        "what came is passed on"
    );
    let err = err.expect("the stall ends the stream with an error");
    assert_idle_truncation(&*err);
    assert_eq!(
        LlmClassifier::default().classify_error(&*err),
        Outcome::failure(tower_failover_core::FailureKind::Timeout),
        "a stall is the provider's timeout"
    );

    let err = svc(&half_json)
        .oneshot(post(chat("m", false)))
        .await
        .unwrap_err();
    assert_eq!(
        find::<Elapsed>(&*err).map(Elapsed::kind),
        Some(TimeoutKind::Idle)
    );
}

/// In paused time: an answer whose events come every 0.6 × the idle timeout streams
/// to its end (eight gaps: nearly five timeouts in all), and one that then goes
/// silent ends at the idle timeout. The idle timer is re-armed lazily (when it fires,
/// not on every chunk): this is what must not change.
#[tokio::test(start_paused = true)]
async fn a_steady_stream_never_idles_out_and_a_silent_one_does_in_paused_time() {
    const IDLE: Duration = Duration::from_secs(1);
    let gap = IDLE.mul_f64(0.6);
    let event = "data: {\"choices\":[]}\n\n";
    let server = TestServer::start(None, move |r| {
        let silent = serde_json::from_slice::<Value>(&r.body).is_ok_and(|v| v["stream"] == true)
            && r.path_and_query.contains("silent");
        let mut events = vec![(Duration::ZERO, event)];
        events.extend(std::iter::repeat_n((gap, event), 8));
        events.push(if silent {
            (Duration::from_secs(3600), "data: [DONE]\n\n")
        } else {
            (gap, "data: [DONE]\n\n")
        });
        sse(events)
    })
    .await;
    let svc = |path: &str| -> OpenAiCompatible {
        OpenAiCompatible::builder()
            .base_url(format!("{}/{path}", local(&server)))
            .first_byte_timeout(Duration::from_secs(60))
            .total_timeout(Duration::from_secs(120))
            .idle_timeout(IDLE)
            .build()
            .unwrap()
    };

    let res = svc("steady").oneshot(post(chat("m", true))).await.unwrap();
    let (body, err) = read_body(res.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    assert_eq!(body.len(), 9 * event.len() + "data: [DONE]\n\n".len());

    let res = svc("silent").oneshot(post(chat("m", true))).await.unwrap();
    let (body, err) = read_body(res.into_body()).await;
    assert_eq!(body.len(), 9 * event.len(), "what came is passed on");
    let err = err.expect("the silence ends the stream");
    assert_idle_truncation(&*err);
}

/// `err` is the typed truncation of a stream that went silent for its idle timeout.
fn assert_idle_truncation(err: &(dyn std::error::Error + 'static)) {
    let truncated =
        find::<tower_failover_core::error::TruncatedStream>(err).expect("a typed truncation");
    assert_eq!(
        truncated.timeout().map(Elapsed::kind),
        Some(TimeoutKind::Idle)
    );
}

#[test]
fn the_idle_timeout_is_read_from_toml_and_defaults_to_30_s() {
    let c: ProviderConfig =
        toml::from_str("kind = \"openai\"\ntimeouts = { idle = \"5s\" }\n").unwrap();
    assert_eq!(c.timeouts.idle, Duration::from_secs(5));
    assert_eq!(
        ProviderConfig::default().timeouts.idle,
        Duration::from_secs(30)
    );
}
