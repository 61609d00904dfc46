//! Credentials: each provider gets its own key and nothing else; the caller's
//! credentials and hop-by-hop headers never cross; no key appears in logs, errors or
//! `Debug` output.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::{ANTHROPIC_JSON, OPENAI_JSON, Recorded, TestServer, chat, json, read_body, sse};
use http::Request;
use tower::ServiceExt;
use tower_failover_core::replay::{ReplayBody, clone_request};
use tower_failover_provider::{Anthropic, OpenAiCompatible, ProviderConfig, ProviderKind, Secret};

const KEY_A: &str = "sk-openai-SECRET-aaaa1111";
const KEY_B: &str = "sk-ant-SECRET-bbbb2222";
const CALLER_KEY: &str = "caller-SECRET-cccc3333";
const HEADER_SECRET: &str = "hdr-SECRET-dddd4444";
const SECRETS: &[&str] = &[KEY_A, KEY_B, CALLER_KEY, HEADER_SECRET];

/// Every log line of this test binary, at every level.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn assert_no_secret(what: &str, text: &str, allowed: &[&str]) {
    for s in SECRETS {
        if !allowed.contains(s) {
            assert!(!text.contains(s), "{what} contains {s}: {text}");
        }
    }
}

fn all_header_text(r: &Recorded) -> String {
    r.headers
        .iter()
        .map(|(k, v)| format!("{k}: {}\n", String::from_utf8_lossy(v.as_bytes())))
        .collect()
}

/// The caller's request, loaded with credentials and hop-by-hop headers.
fn hostile_request(stream: bool) -> Request<ReplayBody> {
    Request::post("/v1/chat/completions")
        .header("authorization", format!("Bearer {CALLER_KEY}"))
        .header("x-api-key", CALLER_KEY)
        .header("api-key", CALLER_KEY)
        .header("proxy-authorization", CALLER_KEY)
        .header("cookie", format!("session={CALLER_KEY}"))
        .header("anthropic-version", "1999-01-01")
        .header("openai-organization", "org-of-the-caller")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "hop-value")
        .header("keep-alive", "timeout=5")
        .header("te", "trailers")
        .header("x-request-id", "req-42")
        .body(ReplayBody::from(chat("gpt-4o-mini", stream)))
        .unwrap()
}

#[tokio::test]
async fn no_credential_crosses_providers() {
    logs();
    let a = TestServer::start(None, |r| {
        if r.json()["stream"] == true {
            sse(vec![(
                Duration::ZERO,
                "data: {\"choices\":[]}\n\ndata: [DONE]\n\n",
            )])
        } else {
            json(200, OPENAI_JSON)
        }
    })
    .await;
    let b = TestServer::start(None, |_| json(200, ANTHROPIC_JSON)).await;
    let openai = OpenAiCompatible::builder()
        .base_url(format!("http://127.0.0.1:{}/v1", a.addr.port()))
        .api_key(KEY_A)
        .header("OpenAI-Organization", "org-configured")
        .header("X-Gateway-Token", HEADER_SECRET)
        .build()
        .unwrap();
    let anthropic = Anthropic::builder()
        .base_url(format!("http://127.0.0.1:{}", b.addr.port()))
        .api_key(KEY_B)
        .build()
        .unwrap();

    // A failover: the same request goes to A, then (a replayed copy) to B.
    for stream in [false, true] {
        let req = hostile_request(stream);
        let retry = clone_request(&req);
        let res = openai.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), 200);
        let _ = read_body(res.into_body()).await;
        let res = anthropic.clone().oneshot(retry).await.unwrap();
        assert_eq!(res.status(), 200);
    }

    for seen in a.requests() {
        assert_eq!(
            seen.header("authorization"),
            Some(&*format!("Bearer {KEY_A}"))
        );
        assert_eq!(seen.header("openai-organization"), Some("org-configured"));
        assert_eq!(seen.header("x-gateway-token"), Some(HEADER_SECRET));
        assert_eq!(seen.header("x-request-id"), Some("req-42"));
        for absent in [
            "x-api-key",
            "api-key",
            "proxy-authorization",
            "cookie",
            "anthropic-version",
            "x-hop",
            "keep-alive",
            "te",
        ] {
            assert!(seen.header(absent).is_none(), "A saw {absent}");
        }
        let text = all_header_text(&seen);
        assert_no_secret("A's headers", &text, &[KEY_A, HEADER_SECRET]);
        assert_no_secret("A's body", &String::from_utf8_lossy(&seen.body), &[]);
    }
    for seen in b.requests() {
        assert_eq!(seen.path_and_query, "/v1/messages");
        assert_eq!(seen.header("x-api-key"), Some(KEY_B));
        assert_eq!(seen.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(seen.header("x-request-id"), Some("req-42"));
        for absent in [
            "authorization",
            "api-key",
            "proxy-authorization",
            "cookie",
            "openai-organization",
            "x-gateway-token",
            "x-hop",
            "keep-alive",
            "te",
        ] {
            assert!(seen.header(absent).is_none(), "B saw {absent}");
        }
        let text = all_header_text(&seen);
        assert_no_secret("B's headers", &text, &[KEY_B]);
        assert_no_secret("B's body", &String::from_utf8_lossy(&seen.body), &[]);
    }
    assert_eq!(a.requests().len(), 2);
    assert_eq!(b.requests().len(), 2);
}

#[tokio::test]
async fn key_from_the_environment() {
    // The one variable every test environment has; the test cannot set its own
    // (`set_var` is unsafe, and unsafe code is forbidden here).
    let Ok(path) = std::env::var("PATH") else {
        return;
    };
    if http::HeaderValue::from_str(&format!("Bearer {path}")).is_err() {
        return;
    }
    let a = TestServer::start(None, |_| json(200, OPENAI_JSON)).await;
    let svc = OpenAiCompatible::builder()
        .base_url(format!("http://127.0.0.1:{}/v1", a.addr.port()))
        .api_key_env("PATH")
        .build()
        .unwrap();
    assert!(!format!("{svc:?}").contains(&path));
    let res = svc.oneshot(common::post(chat("m", false))).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(
        a.requests()[0].header("authorization"),
        Some(&*format!("Bearer {path}"))
    );
    let err = OpenAiCompatible::builder()
        .api_key_env("TOWER_FAILOVER_SURELY_UNSET_VARIABLE")
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "api_key_env");
}

#[tokio::test]
async fn secrets_stay_out_of_logs_errors_and_debug() {
    let logs = logs();
    let mut texts: Vec<String> = Vec::new();

    // A provider answering 401 and an error body that quotes nothing secret.
    let a = TestServer::start(None, |_| {
        json(
            401,
            r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
        )
    })
    .await;
    let openai = OpenAiCompatible::builder()
        .base_url(format!("http://127.0.0.1:{}/v1", a.addr.port()))
        .api_key(KEY_A)
        .header("x-gateway-token", HEADER_SECRET)
        .build()
        .unwrap();
    let res = openai
        .clone()
        .oneshot(hostile_request(false))
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    texts.push(format!("{res:?}"));

    // A provider that hangs: a timeout error.
    let slow = TestServer::start(None, |_| {
        let mut r = json(200, ANTHROPIC_JSON);
        *r.body_mut() = common::Scripted::new([(Duration::from_secs(30), Bytes::new())]);
        r
    })
    .await;
    let anthropic = Anthropic::builder()
        .base_url(format!("http://127.0.0.1:{}", slow.addr.port()))
        .api_key(KEY_B)
        .first_byte_timeout(Duration::from_millis(100))
        .build()
        .unwrap();
    let err = anthropic
        .clone()
        .oneshot(hostile_request(false))
        .await
        .unwrap_err();
    texts.push(format!("{err} {err:?}"));

    // Nothing listening: a connect error.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let refused = OpenAiCompatible::builder()
        .base_url(format!("http://127.0.0.1:{port}/v1"))
        .api_key(KEY_A)
        .build()
        .unwrap();
    let err = refused.oneshot(hostile_request(true)).await.unwrap_err();
    texts.push(format!("{err} {err:?}"));

    // Configuration errors about the key.
    let err = OpenAiCompatible::builder()
        .api_key(format!("{KEY_A}\n"))
        .build()
        .unwrap_err();
    texts.push(format!("{err} {err:?}"));
    let err = OpenAiCompatible::builder()
        .base_url(format!("https://user:{KEY_A}@api.example.com/v1"))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "base_url");
    texts.push(format!("{err} {err:?}"));

    // Debug of everything that holds a key.
    let mut config = ProviderConfig::new(ProviderKind::Anthropic);
    config.api_key = Some(Secret::new(KEY_B));
    config
        .headers
        .insert("x-gateway-token".into(), HEADER_SECRET.into());
    texts.push(format!("{config:?}"));
    texts.push(format!("{:?}", Anthropic::builder().config(config.clone())));
    texts.push(format!("{openai:?} {anthropic:?}"));
    texts.push(format!("{:?} {}", Secret::new(KEY_A), Secret::new(KEY_A)));

    for t in &texts {
        assert_no_secret("debug/error output", t, &[]);
    }
    let captured = String::from_utf8(logs.lock().unwrap().clone()).unwrap();
    assert!(captured.contains("provider"), "the logs were captured");
    assert_no_secret("logs", &captured, &[]);
}
