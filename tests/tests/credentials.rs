//! A primary whose key was revoked or whose account cannot pay, through
//! `Stack::from_config` over real loopback HTTP, with `router = "fallback"` and a
//! healthy backup (the simulator): every caller gets the backup's answer, the
//! primary sees exactly one request (its circuit opens at once), one distinct
//! health event is raised, and neither the provider's text nor the key fragment it
//! quotes reaches a caller or a log line. With every provider refusing, callers get
//! the stack's own 503.
//!
//! The refusing upstream is the simulator with its credential and billing faults
//! (which echo a masked fragment of the key they received, as OpenAI does), and,
//! for what the simulator does not send (a reason phrase of the provider's own, a
//! header quoting the key), a few lines of raw HTTP/1.1 below.

mod common;

use common::{capture_logs, provider_entry as provider};

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;
use tower_failover::sim::{Billing, Fault, FaultSpec, Flavor, Sim};
use tower_failover::{
    BoxBody, Config, Failover, FailureKind, HealthEventKind, Stack, error_response,
};

/// The key fragment every refusal quotes (as OpenAI's "Incorrect API key
/// provided: sk-proj-****wxyz" does). It must never reach a caller or a log.
const FRAGMENT: &str = "wxyz";
/// A phrase of every refusal's own text.
const PROVIDER_TEXT: &str = "SECRET-PROVIDER-TEXT";

/// One way a provider refuses the operator's account.
struct Refusal {
    name: &'static str,
    /// `kind` of the provider entry: `openai` or `anthropic`.
    wire: &'static str,
    /// The status line after `HTTP/1.1 `, with a reason phrase of the provider's.
    status_line: &'static str,
    body: &'static str,
    kind: FailureKind,
}

const REFUSALS: &[Refusal] = &[
    Refusal {
        name: "401 invalid_api_key",
        wire: "openai",
        status_line: "401 Incorrect key sk-proj-****wxyz",
        body: r#"{"error":{"message":"Incorrect API key provided: sk-proj-********************wxyz. SECRET-PROVIDER-TEXT You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
        kind: FailureKind::Credentials,
    },
    Refusal {
        name: "402",
        wire: "openai",
        status_line: "402 Payment Required for sk-****wxyz",
        body: r#"{"error":{"message":"Insufficient credits on key sk-or-v1-****wxyz. SECRET-PROVIDER-TEXT","code":402}}"#,
        kind: FailureKind::Billing,
    },
    Refusal {
        name: "429 insufficient_quota",
        wire: "openai",
        status_line: "429 Too Many Requests",
        body: r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details (key sk-****wxyz). SECRET-PROVIDER-TEXT","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
        kind: FailureKind::Billing,
    },
    Refusal {
        name: "anthropic credit balance 400",
        wire: "anthropic",
        status_line: "400 Bad Request",
        body: r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits. SECRET-PROVIDER-TEXT sk-ant-****wxyz"}}"#,
        kind: FailureKind::Billing,
    },
];

/// An upstream that answers every request with the same refusal, and counts them.
struct Upstream {
    url: String,
    hits: Arc<AtomicUsize>,
}

async fn refusing(refusal: &'static Refusal) -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(serve(conn, refusal, counted.clone()));
        }
    });
    Upstream { url, hits }
}

/// Answers each request on one keep-alive connection.
async fn serve(mut conn: TcpStream, refusal: &'static Refusal, hits: Arc<AtomicUsize>) {
    let mut buf = Vec::new();
    loop {
        // Read one request: headers, then `content-length` bytes of body.
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_ascii_lowercase();
        let len: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + len {
            let mut chunk = [0u8; 4096];
            match conn.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..head_end + len);
        hits.fetch_add(1, Ordering::SeqCst);
        let answer = format!(
            "HTTP/1.1 {}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nx-error-detail: {PROVIDER_TEXT} sk-****{FRAGMENT}\r\n\r\n{}",
            refusal.status_line,
            refusal.body.len(),
            refusal.body
        );
        if conn.write_all(answer.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn healthy_backup() -> Sim {
    Sim::builder(Flavor::OpenAi)
        .name("backup")
        .seed(7)
        .start()
        .await
        .unwrap()
}

/// The stack as a user would write it: defaults everywhere but the router.
fn stack(providers: &[String]) -> Failover {
    let text = format!(
        "router = \"fallback\"\ndeadline = \"10s\"\n{}",
        providers.concat()
    );
    let config = Config::from_toml_str(&text).expect("a valid configuration");
    Stack::from_config(&config).unwrap().build().unwrap()
}

struct Seen {
    status: u16,
    headers: String,
    body: String,
}

/// One caller: a chat request, and everything it sees (an error as the gateway
/// would answer it, with `error_response`).
async fn call(failover: &Failover) -> Seen {
    let body = serde_json::json!({
        "model": "m",
        "messages": [{"role": "user", "content": "Say hello"}],
    })
    .to_string();
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    match failover.clone().oneshot(req).await {
        Ok(res) => seen(res).await,
        Err(err) => {
            let res = error_response(&*err);
            let (parts, body) = res.into_parts();
            Seen {
                status: parts.status.as_u16(),
                headers: format!("{:?}", parts.headers),
                body,
            }
        }
    }
}

async fn seen(res: Response<BoxBody>) -> Seen {
    let (parts, body) = res.into_parts();
    let body = body.collect().await.expect("a whole body").to_bytes();
    Seen {
        status: parts.status.as_u16(),
        headers: format!("{:?} {:?}", parts.headers, parts.extensions),
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

fn assert_clean(what: &str, text: &str) {
    assert!(
        !text.contains(FRAGMENT) && !text.contains(PROVIDER_TEXT),
        "{what} shows the provider's text: {text}"
    );
}

fn account_events(
    rx: &mut tokio::sync::broadcast::Receiver<tower_failover::HealthEvent>,
) -> Vec<(String, HealthEventKind)> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if matches!(
            e.kind,
            HealthEventKind::CredentialsRejected { .. } | HealthEventKind::BillingFailed { .. }
        ) {
            out.push((e.provider.to_string(), e.kind));
        }
    }
    out
}

// One thread, so the log capture sees every task (the stack's, the upstreams').
#[tokio::test(flavor = "current_thread")]
async fn a_refused_account_fails_over_once_and_shows_nothing_of_the_provider() {
    let (logs, _guard) = capture_logs();
    let backup = healthy_backup().await;
    for refusal in REFUSALS {
        let primary = refusing(refusal).await;
        let failover = stack(&[
            provider("primary", refusal.wire, &primary.url, 0),
            provider("backup", "openai", backup.base_url(), 1),
        ]);
        let mut events = failover.handle().subscribe();

        for i in 0..20 {
            let seen = call(&failover).await;
            assert_eq!(
                seen.status, 200,
                "{}: caller {i}: {}",
                refusal.name, seen.body
            );
            let v: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
            assert_eq!(v["object"], "chat.completion", "{}", refusal.name);
            assert_clean("a caller's body", &seen.body);
            assert_clean("a caller's headers", &seen.headers);
        }
        assert_eq!(
            primary.hits.load(Ordering::SeqCst),
            1,
            "{}: the circuit opens on the first refusal",
            refusal.name
        );

        let health = failover.handle().provider("primary", "m").unwrap();
        assert_eq!(
            health.account_failure(),
            Some(refusal.kind),
            "{}",
            refusal.name
        );
        let snapshot = failover.handle().snapshot_json().to_string();
        assert!(
            snapshot.contains(&format!("\"account_failure\":\"{}\"", refusal.kind)),
            "{snapshot}"
        );
        let open_for = health
            .open_until()
            .unwrap()
            .saturating_duration_since(tokio::time::Instant::now());
        assert!(
            open_for > std::time::Duration::from_secs(200),
            "{}: a long cooldown, not {open_for:?}",
            refusal.name
        );
        let want = match refusal.kind {
            FailureKind::Credentials => "credentials_rejected",
            _ => "billing_failed",
        };
        let raised = account_events(&mut events);
        assert_eq!(raised.len(), 1, "{}: {raised:?}", refusal.name);
        assert_eq!(raised[0].0, "primary/m");
        let json = serde_json::to_value(tower_failover::HealthEvent {
            provider: health.id().clone(),
            kind: raised[0].1.clone(),
        })
        .unwrap();
        assert_eq!(json["event"], want, "{}", refusal.name);
    }
    let logs = logs.text();
    assert!(
        logs.contains("credentials") && logs.contains("billing"),
        "the log capture works and names the kinds: {logs}"
    );
    assert_clean("the logs", &logs);
}

#[tokio::test(flavor = "current_thread")]
async fn every_provider_refusing_gets_our_own_503() {
    let (logs, _guard) = capture_logs();
    let first = refusing(&REFUSALS[0]).await;
    let second = refusing(&REFUSALS[3]).await;
    let failover = stack(&[
        provider("primary", "openai", &first.url, 0),
        provider("backup", "anthropic", &second.url, 1),
    ]);
    let mut events = failover.handle().subscribe();
    for i in 0..20 {
        let seen = call(&failover).await;
        assert_eq!(seen.status, 503, "caller {i}: {}", seen.body);
        let v: serde_json::Value = serde_json::from_str(&seen.body).unwrap();
        assert_eq!(v["error"]["type"], "all_providers_failed");
        assert!(
            seen.headers.contains("retry-after"),
            "caller {i}: {}",
            seen.headers
        );
        assert_clean("a caller's body", &seen.body);
        assert_clean("a caller's headers", &seen.headers);
    }
    assert_eq!(first.hits.load(Ordering::SeqCst), 1);
    assert_eq!(second.hits.load(Ordering::SeqCst), 1);
    let raised: Vec<String> = account_events(&mut events)
        .into_iter()
        .map(|(p, k)| format!("{p} {k:?}"))
        .collect();
    assert_eq!(raised.len(), 2, "{raised:?}");
    assert!(raised[0].starts_with("primary/m CredentialsRejected"));
    assert!(raised[1].starts_with("backup/m BillingFailed"));
    assert_clean("the logs", &logs.text());
}

/// Below the routers, the provider client itself: the refusal keeps its status
/// (so any classifier can read it) and carries its hint, but its body is ours and
/// the provider's reason phrase is gone, so even a router that hands an answer
/// back as it is (or no router at all) shows the caller nothing of the provider's.
#[tokio::test(flavor = "current_thread")]
async fn the_provider_client_replaces_the_refusal_text() {
    use tower_failover::ErrorHint;
    use tower_failover::provider::{Anthropic, OpenAiCompatible, Provider};
    let status = |r: &Refusal| r.status_line[..3].parse::<u16>().unwrap();
    for refusal in REFUSALS {
        let upstream = refusing(refusal).await;
        let client: Provider = if refusal.wire == "openai" {
            OpenAiCompatible::builder()
                .base_url(format!("{}/v1", upstream.url))
                .api_key("sk-test")
                .build()
                .unwrap()
                .into()
        } else {
            Anthropic::builder()
                .base_url(&upstream.url)
                .api_key("sk-test")
                .build()
                .unwrap()
                .into()
        };
        let req = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
            )))
            .unwrap();
        let res = client.oneshot(req).await.unwrap();
        assert_eq!(res.status().as_u16(), status(refusal), "{}", refusal.name);
        let hint = res.extensions().get::<ErrorHint>().copied();
        let want = match refusal.kind {
            FailureKind::Credentials => ErrorHint::Credentials,
            _ => ErrorHint::Billing,
        };
        assert_eq!(hint, Some(want), "{}", refusal.name);
        assert!(
            res.extensions().get::<hyper::ext::ReasonPhrase>().is_none(),
            "{}",
            refusal.name
        );
        let body = res.into_body().collect().await.unwrap().to_bytes();
        let body = String::from_utf8_lossy(&body).into_owned();
        assert_clean("the client's body", &body);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert!(
            v["error"]["type"]
                .as_str()
                .unwrap()
                .starts_with("upstream_"),
            "{body}"
        );
    }
}

/// The gateway example over real loopback HTTP, in front of the same refusing
/// primary and the simulated backup; then with every provider refusing.
#[tokio::test(flavor = "current_thread")]
async fn through_the_gateway_callers_see_the_backup_or_our_503() {
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tower_failover_gateway::{self as gateway, SERVED_BY};

    let (logs, _guard) = capture_logs();
    let backup = healthy_backup().await;
    let refusal = &REFUSALS[0];
    let primary = refusing(refusal).await;
    let other = refusing(&REFUSALS[2]).await;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    for (all_refuse, providers) in [
        (
            false,
            [
                provider("primary", "openai", &primary.url, 0),
                provider("backup", "openai", backup.base_url(), 1),
            ],
        ),
        (
            true,
            [
                provider("primary", "openai", &primary.url, 0),
                provider("backup", "openai", &other.url, 1),
            ],
        ),
    ] {
        let text = format!("router = \"fallback\"\n{}", providers.concat());
        let config = Config::from_toml_str(&text).unwrap();
        let gw = gateway::build(&config).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(gateway::serve(
            listener,
            gw,
            async move {
                let _ = stopped.await;
            },
            std::time::Duration::from_secs(5),
        ));
        let before = primary.hits.load(Ordering::SeqCst);
        for i in 0..20 {
            let req = Request::post(format!("http://{addr}/v1/chat/completions"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(
                    r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
                )))
                .unwrap();
            let res = client.request(req).await.unwrap();
            let status = res.status().as_u16();
            let headers = format!("{:?}", res.headers());
            let served_by = res
                .headers()
                .get(SERVED_BY)
                .map(|v| v.to_str().unwrap().to_owned());
            let body = res.into_body().collect().await.unwrap().to_bytes();
            let body = String::from_utf8_lossy(&body).into_owned();
            assert_clean("a gateway answer's body", &body);
            assert_clean("a gateway answer's headers", &headers);
            if all_refuse {
                assert_eq!(status, 503, "caller {i}: {body}");
                assert!(headers.contains("retry-after"), "{headers}");
                let v: serde_json::Value = serde_json::from_str(&body).unwrap();
                assert_eq!(v["error"]["type"], "all_providers_failed");
            } else {
                assert_eq!(status, 200, "caller {i}: {body}");
                assert_eq!(served_by.as_deref(), Some("backup/m"));
            }
        }
        // Each gateway has its own stack: its primary circuit opened on its first
        // refusal.
        assert_eq!(primary.hits.load(Ordering::SeqCst) - before, 1);
        let _ = stop.send(());
        task.await.unwrap().unwrap();
    }
    assert_eq!(other.hits.load(Ordering::SeqCst), 1);
    assert_clean("the logs", &logs.text());
}

/// The circuit's account keys, from the facade's configuration file, globally and
/// per provider; bad values are refused with the field's whole path.
#[tokio::test(flavor = "current_thread")]
async fn the_account_keys_pass_through_the_configuration_file() {
    let base = r#"
        router = "fallback"
        [circuit]
        weights = { credentials = 1.0, billing = 0.0 }
        [circuit.account]
        trip_at_once = true
        cooldown = "1m"
        max_cooldown = "2h"
    "#;
    let p = r#"
        [[providers]]
        name = "a"
        model = "m"
        base_url = "http://127.0.0.1:9/v1"
        circuit = { account = { cooldown = "10m", max_cooldown = "1h" } }
    "#;
    let config = Config::from_toml_str(&format!("{base}{p}")).unwrap();
    Stack::from_config(&config).unwrap().build().unwrap();

    let refused = |text: String| match Config::from_toml_str(&text) {
        Ok(c) => match Stack::from_config(&c).and_then(|s| s.build()) {
            Ok(_) => panic!("accepted: {text}"),
            Err(e) => e.to_string(),
        },
        Err(e) => e.to_string(),
    };
    let err = refused(format!(
        "[circuit.account]\ncooldown = \"0s\"\n{}",
        p.replace(
            "circuit = { account = { cooldown = \"10m\", max_cooldown = \"1h\" } }",
            ""
        )
    ));
    assert!(err.contains("circuit.account.cooldown"), "{err}");
    let err = refused(p.replace("\"10m\"", "\"2h\""));
    assert!(
        err.contains("providers[0].circuit.account.max_cooldown"),
        "{err}"
    );
    let err = refused(format!("[circuit.account]\ncooldwn = \"1m\"\n{p}"));
    assert!(err.contains("cooldwn"), "{err}");
}

/// The simulator's credential and billing faults, both wire formats.
#[tokio::test(flavor = "current_thread")]
async fn the_simulators_refusals_fail_over_once_and_show_nothing_of_the_provider() {
    let (logs, _guard) = capture_logs();
    let backup = healthy_backup().await;
    let cases = [
        (
            Flavor::OpenAi,
            Fault::Credential(401),
            FailureKind::Credentials,
        ),
        (
            Flavor::OpenAi,
            Fault::Credential(403),
            FailureKind::Credentials,
        ),
        (
            Flavor::Anthropic,
            Fault::Credential(401),
            FailureKind::Credentials,
        ),
        (
            Flavor::Anthropic,
            Fault::Credential(403),
            FailureKind::Credentials,
        ),
        (
            Flavor::OpenAi,
            Fault::Billing(Billing::PaymentRequired),
            FailureKind::Billing,
        ),
        (
            Flavor::OpenAi,
            Fault::Billing(Billing::InsufficientQuota),
            FailureKind::Billing,
        ),
        (
            Flavor::Anthropic,
            Fault::Billing(Billing::CreditBalance),
            FailureKind::Billing,
        ),
        (
            Flavor::Anthropic,
            Fault::Billing(Billing::PaymentRequired),
            FailureKind::Billing,
        ),
    ];
    for (flavor, fault, kind) in cases {
        let name = format!("{flavor:?} {fault}");
        let primary = Sim::builder(flavor)
            .name("primary")
            .seed(3)
            .start()
            .await
            .unwrap();
        primary
            .handle()
            .set_faults([FaultSpec::always(fault)])
            .unwrap();
        let wire = match flavor {
            Flavor::OpenAi => "openai",
            _ => "anthropic",
        };
        let failover = stack(&[
            provider("primary", wire, primary.base_url(), 0),
            provider("backup", "openai", backup.base_url(), 1),
        ]);
        let mut events = failover.handle().subscribe();
        for i in 0..20 {
            let seen = call(&failover).await;
            assert_eq!(seen.status, 200, "{name}: caller {i}: {}", seen.body);
            assert_clean("a caller's body", &seen.body);
            assert_clean("a caller's headers", &seen.headers);
        }
        assert_eq!(primary.counters().received, 1, "{name}");
        let health = failover.handle().provider("primary", "m").unwrap();
        assert_eq!(health.account_failure(), Some(kind), "{name}");
        let raised = account_events(&mut events);
        assert_eq!(raised.len(), 1, "{name}: {raised:?}");
    }
    assert_clean("the logs", &logs.text());
}
