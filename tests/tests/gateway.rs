//! The gateway example's router over real loopback HTTP, in front of simulated
//! providers: an outage (errors, then refused connections), recovery, both
//! providers down, the body limit, the listing routes, graceful shutdown.

mod common;

use common::{Answer, Running, start};

use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tower_failover::Config;
use tower_failover::sim::{Fault, FaultSpec, Flavor, Sim};
use tower_failover_gateway as gateway;

impl Running {
    async fn chat(&self, stream: bool) -> Answer {
        let body = serde_json::json!({
            "model": "gpt-4o-mini",
            "stream": stream,
            "messages": [{"role": "user", "content": "Say hello"}],
        });
        self.send("POST", "/v1/chat/completions", body.to_string())
            .await
    }

    async fn health(&self) -> serde_json::Value {
        let a = self.send("GET", "/health", "").await;
        serde_json::from_str(&a.body).expect("health is JSON")
    }
}

/// A complete, valid answer: JSON with content, or an SSE stream ending in `[DONE]`.
fn assert_complete(a: &Answer, stream: bool) {
    assert_eq!(a.status, StatusCode::OK, "body: {}", a.body);
    if stream {
        assert!(
            a.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        assert!(a.body.contains("chat.completion.chunk"), "{}", a.body);
        assert!(a.body.trim_end().ends_with("data: [DONE]"), "{}", a.body);
    } else {
        let v: serde_json::Value = serde_json::from_str(&a.body).expect("JSON");
        assert_eq!(v["object"], "chat.completion");
        let content = v["choices"][0]["message"]["content"].as_str().unwrap();
        assert!(!content.is_empty());
    }
}

async fn sims() -> (Sim, Sim) {
    let primary = Sim::builder(Flavor::OpenAi)
        .name("primary")
        .seed(1)
        .ttft(Duration::from_millis(2))
        .token_interval(Duration::from_millis(1))
        .start()
        .await
        .unwrap();
    let backup = Sim::builder(Flavor::Anthropic)
        .name("backup")
        .seed(2)
        .ttft(Duration::from_millis(2))
        .token_interval(Duration::from_millis(1))
        .start()
        .await
        .unwrap();
    (primary, backup)
}

/// An ordered chain: the OpenAI-compatible primary, then the Anthropic backup
/// (translated), with a fast circuit breaker and a short ramp.
fn config(primary: &Sim, backup: &Sim) -> Config {
    Config::from_toml_str(&format!(
        r#"
        router = "fallback"
        deadline = "10s"
        max_request_bytes = 65536

        [models."gpt-4o-mini"]      # the Anthropic backup answers for gpt-4o-mini
        fallbacks = ["claude-haiku-4-5"]

        [circuit]
        consecutive_failures = 3
        cooldown = "300ms"
        max_cooldown = "600ms"
        half_open_permits = 1
        success_threshold = 1

        [ramp]
        min_requests = 1
        min_sample = 1000
        check_interval = "20ms"
        cooldown = "300ms"
        max_cooldown = "600ms"
        schedule = {{ steps = [{{ share = 0.5, hold = "50ms" }}, {{ share = 1.0, hold = "50ms" }}] }}

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
    .expect("a valid configuration")
}

const PRIMARY: &str = "primary/gpt-4o-mini";
const BACKUP: &str = "backup/claude-haiku-4-5";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_is_invisible_to_clients() {
    let (primary, backup) = sims().await;
    let gw = start(&config(&primary, &backup)).await;

    // Healthy: the primary serves, streaming or not.
    for i in 0..4 {
        let a = gw.chat(i % 2 == 1).await;
        assert_complete(&a, i % 2 == 1);
        assert_eq!(a.served_by(), PRIMARY);
        // The provider's own rate-limit headers stay behind the gateway.
        assert!(!a.headers.contains_key("x-ratelimit-remaining-requests"));
        assert!(!a.headers.contains_key("x-sim-name"));
    }

    // Outage: every answer still complete, from the backup (translated from
    // Anthropic's wire format); the circuit opens after three failures, so the
    // primary stops being asked.
    primary
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    let before = primary.counters().received;
    for i in 0..12 {
        let stream = i % 3 == 0;
        let a = gw.chat(stream).await;
        assert_complete(&a, stream);
        assert_eq!(a.served_by(), BACKUP);
    }
    // Three failures opened the circuit; after that the primary only saw the
    // half-open probes made each time a cooldown ended (one per extra trip).
    let health = gw.health().await;
    let trips = health["providers"][0]["trips"].as_u64().unwrap();
    assert!(trips >= 1);
    assert_eq!(primary.counters().received - before, 3 + (trips - 1));
    assert_eq!(health["providers"][0]["circuit"], "open");
    assert_eq!(health["providers"][1]["circuit"], "closed");
    assert_eq!(health["status"], "ok");

    // Recovery: after the cooldown a probe passes, the circuit closes and the
    // primary gets its traffic back (through the ramp).
    primary.clear_faults();
    let mut back = false;
    for _ in 0..60 {
        let a = gw.chat(false).await;
        assert_complete(&a, false);
        if a.served_by() == PRIMARY {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(back, "the primary serves again after recovering");

    // A harder outage: the primary refuses connections. Still no client error.
    primary
        .set_faults([FaultSpec::always(Fault::Refuse)])
        .unwrap();
    for i in 0..8 {
        let a = gw.chat(i % 2 == 0).await;
        assert_complete(&a, i % 2 == 0);
        assert_eq!(a.served_by(), BACKUP);
    }

    // Everything down: 503 with Retry-After, in OpenAI's error shape.
    backup
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    let mut last = None;
    for _ in 0..5 {
        let a = gw.chat(false).await;
        assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(v["error"]["type"], "all_providers_failed");
        last = Some(a);
    }
    let last = last.unwrap();
    let wait: u64 = last.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "Retry-After {wait}");
    assert_eq!(gw.health().await["providers"][1]["circuit"], "open");

    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_listing_and_overrides() {
    let (primary, backup) = sims().await;
    // A small limit, so the whole oversized request arrives in the gateway's first
    // read: a 413 sent while the client is still writing a large body can reach it as
    // a broken pipe instead (the connection closes with unread data).
    let mut small_limit = config(&primary, &backup);
    small_limit.max_request_bytes = 1024;
    let gw = start(&small_limit).await;

    // Bodies over the limit are refused before any provider sees them.
    let big = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2_000)
    );
    let a = gw.send("POST", "/v1/chat/completions", big).await;
    assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(primary.counters().received + backup.counters().received, 0);

    let models: serde_json::Value =
        serde_json::from_str(&gw.send("GET", "/v1/models", "").await.body).unwrap();
    assert_eq!(models["object"], "list");
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["gpt-4o-mini", "claude-haiku-4-5"]);

    let health = gw.health().await;
    assert_eq!(health["router"], "fallback");
    assert_eq!(health["providers"].as_array().unwrap().len(), 2);
    assert_eq!(health["providers"][0]["provider"], "primary");

    // Health events stream as SSE; an operator's override is one.
    let events_req = Request::get(format!("http://{}/health/events", gw.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let events = gw.client.request(events_req).await.unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut events = events.into_body();

    // An operator takes the primary out by hand: traffic moves at once.
    let a = gw
        .send(
            "POST",
            "/health/force",
            r#"{"provider":"primary","model":"gpt-4o-mini","state":"open"}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(gw.chat(false).await.served_by(), BACKUP);
    let frame = tokio::time::timeout(Duration::from_secs(5), events.frame())
        .await
        .expect("an event in time")
        .unwrap()
        .unwrap();
    let text = String::from_utf8(frame.into_data().unwrap().to_vec()).unwrap();
    assert!(text.starts_with("data: {"), "{text}");
    assert!(text.contains(r#""event":"forced""#), "{text}");
    assert!(
        text.contains(r#""provider":"primary/gpt-4o-mini""#),
        "{text}"
    );
    drop(events);
    let a = gw
        .send(
            "POST",
            "/health/force",
            r#"{"provider":"primary","model":"gpt-4o-mini","state":null}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);
    // Released: the primary gets its traffic back through the recovery ramp.
    let mut back = false;
    for _ in 0..40 {
        if gw.chat(false).await.served_by() == PRIMARY {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(back, "the primary serves again once released");
    let a = gw
        .send(
            "POST",
            "/health/force",
            r#"{"provider":"nobody","model":"x","state":"open"}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);

    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_requests_in_flight() {
    let slow = Sim::builder(Flavor::OpenAi)
        .name("slow")
        .ttft(Duration::from_millis(400))
        .jitter(0.0)
        .start()
        .await
        .unwrap();
    let config = Config::from_toml_str(&format!(
        r#"
        [[providers]]
        name = "slow"
        model = "gpt-4o-mini"
        base_url = "{}/v1"
        "#,
        slow.base_url()
    ))
    .unwrap();
    let gw = start(&config).await;
    let addr = gw.addr;
    let client = gw.client.clone();
    let in_flight = tokio::spawn(async move {
        let req = Request::post(format!("http://{addr}/v1/chat/completions"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
            )))
            .unwrap();
        let res = client.request(req).await.unwrap();
        let status = res.status();
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    });
    // An event stream stays open until shutdown, and must not hold up the drain.
    let events_req = Request::get(format!("http://{addr}/health/events"))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let events = gw.client.request(events_req).await.unwrap();
    let events = tokio::spawn(events.into_body().collect());
    // Let the request reach the provider, then ask the gateway to stop.
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert_eq!(slow.counters().received, 1);
    gw.shutdown().await.unwrap();
    let (status, body) = in_flight.await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert!(
        std::str::from_utf8(&body)
            .unwrap()
            .contains("chat.completion")
    );
    // The event stream ended cleanly.
    tokio::time::timeout(Duration::from_secs(2), events)
        .await
        .expect("the event stream ends at shutdown")
        .unwrap()
        .unwrap();
    // And the listener is closed.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_on_a_fresh_machine_with_simulated_providers() {
    let sim = gateway::simulated().await.unwrap();
    assert_eq!(sim.sims.len(), 3);
    let gw = start(&sim.config).await;
    let a = gw.chat(false).await;
    assert_complete(&a, false);
    let a = gw.chat(true).await;
    assert_complete(&a, true);
    gw.shutdown().await.unwrap();
}

/// A path the gateway does not serve, or a method a route does not take, gets an
/// error in the API's JSON shape (SDKs show its message), not an empty body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_routes_and_methods_get_json_errors() {
    let sim = gateway::simulated().await.unwrap();
    let gw = start(&sim.config).await;
    let a = gw.send("GET", "/v1/chat/completion", "").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
    assert_eq!(a.json()["error"]["code"], "unknown_route");
    let message = a.json()["error"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains("GET /v1/chat/completion"), "{message}");

    let a = gw.send("GET", "/v1/chat/completions", "").await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{}", a.body);
    assert_eq!(a.json()["error"]["code"], "method_not_allowed");
    assert_eq!(a.headers["allow"], "POST");

    // Anthropic's shape on its route.
    let a = gw.send("GET", "/v1/messages", "").await;
    assert_eq!(a.status, StatusCode::METHOD_NOT_ALLOWED, "{}", a.body);
    assert_eq!(a.json()["type"], "error", "{}", a.body);
    gw.shutdown().await.unwrap();
}

/// Through the gateway over HTTP: a caller without a request id gets a fresh
/// version-4 UUID (one a request), the provider's own id comes back renamed, and of
/// the provider's other headers only the passed ones reach the caller.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_ids_are_made_and_the_providers_is_passed_on_renamed() {
    let sim = gateway::simulated().await.unwrap();
    // The provider itself does send rate-limit headers (as OpenAI does), so their
    // absence below is the gateway's doing.
    let direct = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<Full<Bytes>>()
        .request(
            Request::post(format!("{}/v1/chat/completions", sim.sims[0].base_url()))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(
                    br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
                )))
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(
        direct
            .headers()
            .contains_key("x-ratelimit-remaining-requests"),
        "{:?}",
        direct.headers()
    );
    let gw = start(&sim.config).await;
    let mut ids = Vec::new();
    for stream in [false, true, false] {
        let a = gw.chat(stream).await;
        assert_complete(&a, stream);
        let id = a.headers["x-request-id"].to_str().unwrap().to_owned();
        let b = id.as_bytes();
        assert_eq!(b.len(), 36, "{id}");
        assert!(
            b.iter().enumerate().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => *c == b'-',
                _ => c.is_ascii_digit() || (b'a'..=b'f').contains(c),
            }),
            "{id}"
        );
        assert_eq!(b[14], b'4', "version 4: {id}");
        assert!(matches!(b[19], b'8' | b'9' | b'a' | b'b'), "variant: {id}");
        // The simulated provider sends an id of its own, as OpenAI does.
        let upstream = a.headers["x-provider-request-id"].to_str().unwrap();
        assert!(!upstream.is_empty() && upstream != id, "{upstream}");
        assert!(a.headers.contains_key("x-failover-provider"));
        // Rate-limit headers are the provider's business, read by the stack.
        assert!(
            !a.headers
                .keys()
                .any(|k| k.as_str().starts_with("x-ratelimit-")),
            "{:?}",
            a.headers
        );
        ids.push(id);
    }
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3, "{ids:?}");
    gw.shutdown().await.unwrap();
}

/// Headers a caller may send that must never reach a provider.
const NOT_FORWARDED: [(&str, &str); 8] = [
    ("x-portkey-config", "pc-secret-config"),
    ("x-portkey-api-key", "pk-caller"),
    ("forwarded", "for=10.1.2.3;proto=https"),
    ("x-forwarded-for", "10.1.2.3"),
    ("x-internal-tenant", "acme"),
    ("authorization", "Bearer caller-key"),
    ("cookie", "session=caller"),
    ("user-agent", "caller-app/1.0"),
];

/// Every request the sims received, with the provider's name.
fn received(sims: &[Sim]) -> Vec<(String, tower_failover::sim::Received)> {
    sims.iter()
        .flat_map(|s| {
            let name = s.handle().name().to_owned();
            s.received().into_iter().map(move |r| (name.clone(), r))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_caller_headers_and_no_query_reach_the_provider() {
    let sim = gateway::simulated().await.unwrap();
    let gw = start(&sim.config).await;
    let mut headers: Vec<(&str, &str)> = NOT_FORWARDED.to_vec();
    headers.extend([
        ("x-request-id", "req-caller-1"),
        ("x-upstream-team", "search"),
    ]);
    let chat = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let message = r#"{"model":"claude-haiku-4-5","max_tokens":50,"messages":[{"role":"user","content":"hi"}]}"#;
    let embed = r#"{"model":"text-embedding-3-small","input":["hi"]}"#;
    for (path, body, model) in [
        (
            "/v1/chat/completions?api-version=1&key=sk-caller",
            chat,
            "gpt-4o-mini",
        ),
        ("/v1/messages?beta=true", message, "claude-haiku-4-5"),
        ("/v1/embeddings?user=x", embed, "text-embedding-3-small"),
    ] {
        for s in &sim.sims {
            s.handle().clear_received();
        }
        // The routing header is read by the gateway, not passed on.
        let mut headers = headers.clone();
        headers.push(("x-failover-model", model));
        let a = gw.send_with("POST", path, &headers, body).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {}", a.body);
        let seen = received(&sim.sims);
        assert_eq!(seen.len(), 1, "{path}: one provider request");
        let (provider, req) = &seen[0];
        assert!(a.served_by().starts_with(provider.as_str()));
        assert_eq!(
            req.uri.query(),
            None,
            "{path}: the caller's query stays here"
        );
        for (name, _) in NOT_FORWARDED {
            assert!(
                req.header(name).is_none(),
                "{path}: {name} reached {provider}"
            );
        }
        assert!(req.header("x-failover-model").is_none(), "{path}");
        assert!(
            !req.headers
                .keys()
                .any(|k| k.as_str().starts_with("x-portkey")),
            "{path}"
        );
        assert_eq!(req.header("x-request-id"), Some("req-caller-1"), "{path}");
        assert_eq!(req.header("x-upstream-team"), Some("search"), "{path}");
    }
    gw.shutdown().await.unwrap();

    // Configured: the query string and a listed header cross; still no credential.
    let mut config = tower_failover_gateway::GatewayConfig::new(sim.config.clone());
    config.upstream.forward_query = true;
    config.upstream.headers = vec!["x-internal-tenant".into()];
    let gw = common::start_with(&config).await;
    for s in &sim.sims {
        s.handle().clear_received();
    }
    let a = gw
        .send_with("POST", "/v1/chat/completions?api-version=1", &headers, chat)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let seen = received(&sim.sims);
    let (_, req) = &seen[0];
    assert_eq!(req.uri.query(), Some("api-version=1"));
    assert_eq!(req.header("x-internal-tenant"), Some("acme"));
    assert!(
        req.header("authorization")
            .is_none_or(|v| !v.contains("caller"))
    );
    assert!(req.header("x-portkey-config").is_none());
    gw.shutdown().await.unwrap();
}

/// A build error names the entry by its place in the file, though the gateway
/// builds its chat and embeddings entries as two stacks (it named the third entry
/// `providers[0]`, the first of its half).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_build_error_names_the_entry_by_its_place_in_the_file() {
    let text = "\
        [[providers]]\nname = \"a\"\nmodel = \"m1\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
        [[providers]]\nname = \"b\"\nmodel = \"m2\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\
        [[providers]]\nname = \"e\"\nmodel = \"text-embedding-3-small\"\nembeddings = true\n\
        api_key_env = \"TFG_TEST_UNSET_EMBEDDINGS_KEY\"\n";
    let config = gateway::GatewayConfig::from_toml_str(text).unwrap();
    let Err(err) = gateway::build_with(&config) else {
        panic!("the key is not set: the build must fail");
    };
    assert_eq!(err.field(), "providers[2].api_key_env", "{err}");
}
