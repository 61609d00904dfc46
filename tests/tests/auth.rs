//! Caller keys (`[auth]`) over real loopback HTTP in front of simulated providers:
//! keys refused and accepted (OpenAI's `Authorization: Bearer`, Anthropic's
//! `x-api-key`), models per key, token budgets from the usage the simulator
//! reports (alone and shared by two gateways on one Redis), admin routes, the
//! content-type and host checks, the key never reaching a provider, and the
//! caller label of the metrics.

mod common;
#[allow(unused_macros)]
#[path = "../../crates/redis/tests/common/mod.rs"]
mod redis_harness;

use std::time::Duration;

use common::{Answer, Running, fast_sim};
use http::StatusCode;
use tower_failover::sim::{Fault, FaultSpec, Flavor, Sim};
use tower_failover_gateway::auth::hash_key;
use tower_failover_gateway::{self as gateway, GatewayConfig};

const SEARCH: &str = "sk-gw-search-0123456789abcdef";
const TIGHT: &str = "sk-gw-tight-0123456789abcdef";
const COSTLY: &str = "sk-gw-costly-0123456789abcdef";
const OPS: &str = "sk-gw-ops-0123456789abcdef";
const ADMIN: &str = "sk-gw-admin-0123456789abcdef";
const GUARD: Duration = Duration::from_secs(20);

fn chat(model: &str) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "user", "content": "Say hello"}],
    })
    .to_string()
}

/// One OpenAI-wire simulator serving `m` (also asked for as `other`) at 1000 a
/// million tokens, and the keys: `search` (model `m` only), `tight` (1 token per
/// hour), `costly` (0.001 a day), `ops` (admin), and the separate admin key.
fn config(sim: &Sim, extra: &str) -> GatewayConfig {
    let text = format!(
        r#"
        [[providers]]
        name = "sim"
        model = "m"
        aliases = ["other"]
        kind = "openai"
        base_url = "http://{addr}/v1"
        api_key = "sk-test-0000wxyz"
        price = {{ input_per_million = 1000.0, output_per_million = 1000.0 }}

        [auth]
        admin_key_sha256 = "{admin}"
        {extra}

        [[auth.keys]]
        name = "search"
        key_sha256 = "{search}"
        models = ["m"]

        [[auth.keys]]
        name = "tight"
        key_sha256 = "{tight}"
        budget = {{ tokens = 1, period = "1h" }}

        [[auth.keys]]
        name = "costly"
        key_sha256 = "{costly}"
        budget = {{ cost = 0.001, tokens = 1000000, period = "1d" }}

        [[auth.keys]]
        name = "ops"
        key_sha256 = "{ops}"
        admin = true
        "#,
        addr = sim.addr(),
        admin = hash_key(ADMIN),
        search = hash_key(SEARCH),
        tight = hash_key(TIGHT),
        costly = hash_key(COSTLY),
        ops = hash_key(OPS),
    );
    let mut c = GatewayConfig::from_toml_str(&text).expect("a valid configuration");
    c.server.drain_timeout = Duration::from_secs(5);
    c
}

async fn start(extra: &str) -> (Sim, Running) {
    let sim = fast_sim(Flavor::OpenAi, "sim", 7).await;
    let gw = common::start_with(&config(&sim, extra)).await;
    (sim, gw)
}

/// A request with exactly these headers (no content type unless given).
async fn raw(
    gw: &Running,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    gw.send_exact(method, path, headers, body.to_owned()).await
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

async fn chat_as(gw: &Running, key: &str, model: &str) -> Answer {
    post_chat(gw, &[("authorization", &bearer(key))], chat(model)).await
}

/// `POST /v1/chat/completions` with JSON `body` and these headers.
async fn post_chat(gw: &Running, headers: &[(&str, &str)], body: impl Into<String>) -> Answer {
    gw.send_with("POST", "/v1/chat/completions", headers, body.into())
        .await
}

fn error_code(a: &Answer) -> String {
    a.json()["error"]["code"].as_str().unwrap_or("").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_without_a_valid_key_are_refused() {
    let (_sim, gw) = start("").await;
    let missing = gw.send("POST", "/v1/chat/completions", chat("m")).await;
    assert_eq!(missing.status, StatusCode::UNAUTHORIZED, "{}", missing.body);
    assert_eq!(error_code(&missing), "missing_api_key");
    assert_eq!(missing.json()["error"]["type"], "invalid_request_error");
    assert_eq!(missing.headers["www-authenticate"], "Bearer");

    let wrong_key = "sk-gw-wrong-0123456789abcdef";
    for headers in [
        vec![("authorization", bearer(wrong_key))],
        vec![("x-api-key", wrong_key.to_owned())],
        vec![("authorization", format!("Basic {SEARCH}"))],
        vec![("authorization", bearer(&hash_key(SEARCH)))],
    ] {
        let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let a = gw
            .send_with("POST", "/v1/chat/completions", &h, chat("m"))
            .await;
        assert_eq!(
            a.status,
            StatusCode::UNAUTHORIZED,
            "{headers:?}: {}",
            a.body
        );
        assert_eq!(error_code(&a), "invalid_api_key");
        assert!(!a.body.contains(wrong_key), "the key is not echoed");
    }
    // Every route of the router needs a key, unknown ones included.
    for (method, path) in [
        ("GET", "/v1/models"),
        ("GET", "/nowhere"),
        ("POST", "/v1/embeddings"),
    ] {
        let a = gw.send(method, path, "{}").await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{path}");
    }
    // The probes stay open.
    for path in [gateway::LIVEZ, gateway::READYZ] {
        assert_eq!(gw.send("GET", path, "").await.status, StatusCode::OK);
    }

    let ok = chat_as(&gw, SEARCH, "m").await;
    assert_eq!(ok.status, StatusCode::OK, "{}", ok.body);
    // Anthropic clients send `x-api-key`; a refusal there is Anthropic-shaped.
    let msg = serde_json::json!({
        "model": "m",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "Say hello"}],
    })
    .to_string();
    let a = gw
        .send_with(
            "POST",
            "/v1/messages",
            &[("x-api-key", SEARCH)],
            msg.clone(),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["type"], "message");
    let a = gw.send("POST", "/v1/messages", msg).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert_eq!(a.json()["type"], "error");
    assert_eq!(a.json()["error"]["type"], "authentication_error");
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_asks_only_for_its_models() {
    let (sim, gw) = start("").await;
    let a = chat_as(&gw, SEARCH, "other").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    assert_eq!(error_code(&a), "model_not_allowed");
    // The routing header is what the stack reads first: it is checked too.
    let a = post_chat(
        &gw,
        &[
            ("authorization", &bearer(SEARCH)),
            ("x-failover-model", "other"),
        ],
        chat("m"),
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    // No model and no default model: a restricted key must name one.
    let a = post_chat(
        &gw,
        &[("authorization", &bearer(SEARCH))],
        r#"{"messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    // Two "model" fields could be read differently downstream: refused.
    let a = post_chat(
        &gw,
        &[("authorization", &bearer(SEARCH))],
        r#"{"model":"m","model":"other","messages":[]}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert_eq!(
        sim.counters().received,
        0,
        "no refused request reached the provider"
    );
    // Other keys have every model; the separate admin key none.
    assert_eq!(chat_as(&gw, OPS, "other").await.status, StatusCode::OK);
    let a = chat_as(&gw, ADMIN, "m").await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    gw.shutdown().await.unwrap();
}

/// `GET /v1/models` lists what the caller's key may ask for: a limited key sees its
/// models only, an unlimited key every model, the separate admin key none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_lists_only_its_models() {
    let (_sim, gw) = start("").await;
    let ids = |a: &Answer| -> Vec<String> {
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        a.json()["data"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|m| m["id"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    let list = |key: &'static str| {
        let gw = &gw;
        async move {
            gw.send_with("GET", "/v1/models", &[("authorization", &bearer(key))], "")
                .await
        }
    };
    assert_eq!(ids(&list(SEARCH).await), ["m"]);
    assert_eq!(ids(&list(OPS).await), ["m", "other"]);
    assert!(ids(&list(ADMIN).await).is_empty());
    let a = gw.send("GET", "/v1/models", String::new()).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{}", a.body);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_spent_token_budget_gets_429_until_the_period_ends() {
    let (sim, gw) = start("").await;
    let first = chat_as(&gw, TIGHT, "m").await;
    assert_eq!(first.status, StatusCode::OK, "{}", first.body);
    let used = first.json()["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used > 1, "the simulator reports usage: {used}");
    let refused = chat_as(&gw, TIGHT, "m").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(error_code(&refused), "budget_exceeded");
    assert_eq!(refused.json()["error"]["type"], "rate_limit_error");
    let wait: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=3600).contains(&wait), "to the end of the hour: {wait}");
    // Listing models spends nothing and stays open; other keys are not affected.
    let list = raw(
        &gw,
        "GET",
        "/v1/models",
        &[("authorization", &bearer(TIGHT))],
        "",
    )
    .await;
    assert_eq!(list.status, StatusCode::OK);
    assert_eq!(chat_as(&gw, SEARCH, "m").await.status, StatusCode::OK);
    // A cost budget: the first answer costs more than 0.001 (a token costs 0.001).
    assert_eq!(chat_as(&gw, COSTLY, "m").await.status, StatusCode::OK);
    let refused = chat_as(&gw, COSTLY, "m").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    let wait: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (1..=86_400).contains(&wait),
        "to the end of the UTC day: {wait}"
    );
    assert_eq!(sim.counters().received, 3);
    gw.shutdown().await.unwrap();
}

/// A streamed answer is counted when its stream ends (from the usage chunk the
/// provider sends at the end), whatever the caller's own `stream_options` say: a
/// caller cannot stream past its budget by asking for no usage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_streamed_answer_counts_against_the_budget() {
    for options in [
        None,
        Some(serde_json::json!({"include_usage": false})),
        Some(serde_json::Value::Null),
        Some(serde_json::json!({})),
    ] {
        let (_sim, gw) = start("").await;
        let mut body = serde_json::json!({
            "model": "m",
            "stream": true,
            "messages": [{"role": "user", "content": "Say hello"}],
        });
        if let Some(o) = &options {
            body["stream_options"] = o.clone();
        }
        let body = body.to_string();
        let auth = bearer(TIGHT);
        let headers = [("authorization", auth.as_str())];
        let path = "/v1/chat/completions";
        let a = gw.send_with("POST", path, &headers, body.clone()).await;
        assert_eq!(a.status, StatusCode::OK, "{options:?}: {}", a.body);
        assert!(a.body.contains("[DONE]"));
        let a = gw.send_with("POST", path, &headers, body).await;
        assert_eq!(
            a.status,
            StatusCode::TOO_MANY_REQUESTS,
            "{options:?}: {}",
            a.body
        );
        gw.shutdown().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_need_an_admin_key() {
    let (_sim, gw) = start("").await;
    let force = r#"{"provider":"sim","model":"m","state":null}"#;
    let routes = [
        ("GET", "/health", ""),
        ("GET", "/metrics", ""),
        ("POST", "/health/force", force),
    ];
    for (method, path, body) in routes {
        let none = gw.send(method, path, body).await;
        assert_eq!(none.status, StatusCode::UNAUTHORIZED, "{path}");
        let caller = gw
            .send_with(method, path, &[("authorization", &bearer(SEARCH))], body)
            .await;
        assert_eq!(caller.status, StatusCode::FORBIDDEN, "{path}");
        assert_eq!(error_code(&caller), "admin_key_required");
        for key in [OPS, ADMIN] {
            let admin = gw
                .send_with(method, path, &[("authorization", &bearer(key))], body)
                .await;
            assert_eq!(admin.status, StatusCode::OK, "{path}: {}", admin.body);
        }
    }
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn posts_that_are_not_json_are_refused() {
    // With keys and without: a browser page's form cannot post either way.
    let sim = fast_sim(Flavor::OpenAi, "sim", 7).await;
    let mut open = config(&sim, "");
    open.auth = gateway::AuthConfig::default();
    for c in [config(&sim, ""), open] {
        let gw = common::start_with(&c).await;
        let auth = bearer(SEARCH);
        for content_type in [
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/jsonx"),
            None,
        ] {
            let mut headers = vec![("authorization", auth.as_str())];
            headers.extend(content_type.map(|t| ("content-type", t)));
            let a = raw(&gw, "POST", "/v1/chat/completions", &headers, &chat("m")).await;
            assert_eq!(
                a.status,
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "{content_type:?}: {}",
                a.body
            );
        }
        let headers = [
            ("authorization", auth.as_str()),
            ("content-type", "Application/JSON; charset=utf-8"),
        ];
        let a = raw(&gw, "POST", "/v1/chat/completions", &headers, &chat("m")).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        gw.shutdown().await.unwrap();
    }
    assert_eq!(sim.counters().received, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_hosts_are_answered() {
    let (_sim, gw) = start(r#"allowed_hosts = ["localhost", "llm.internal"]"#).await;
    let auth = bearer(SEARCH);
    let json = ("content-type", "application/json");
    for host in ["evil.example", "127.0.0.1", "llm.internal.evil.example"] {
        let headers = [("authorization", auth.as_str()), json, ("host", host)];
        let a = raw(&gw, "POST", "/v1/chat/completions", &headers, &chat("m")).await;
        assert_eq!(
            a.status,
            StatusCode::MISDIRECTED_REQUEST,
            "{host}: {}",
            a.body
        );
        assert_eq!(error_code(&a), "host_not_allowed");
    }
    for host in ["localhost", "LLM.internal:8080"] {
        let headers = [("authorization", auth.as_str()), json, ("host", host)];
        let a = raw(&gw, "POST", "/v1/chat/completions", &headers, &chat("m")).await;
        assert_eq!(a.status, StatusCode::OK, "{host}: {}", a.body);
    }
    // Probes are served apart (orchestrators probe by address).
    let a = raw(&gw, "GET", gateway::LIVEZ, &[("host", "10.1.2.3")], "").await;
    assert_eq!(a.status, StatusCode::OK);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callers_key_never_reaches_the_provider() {
    let (sim, gw) = start("").await;
    let msg = serde_json::json!({
        "model": "m",
        "max_tokens": 32,
        "messages": [{"role": "user", "content": "Say hello"}],
    })
    .to_string();
    let both = [
        ("authorization", bearer(SEARCH)),
        ("x-api-key", SEARCH.to_owned()),
    ];
    let h: Vec<(&str, &str)> = both.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let a = gw
        .send_with("POST", "/v1/chat/completions", &h, chat("m"))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let a = gw.send_with("POST", "/v1/messages", &h, msg).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let seen = sim.received();
    assert_eq!(seen.len(), 2);
    for r in &seen {
        assert_eq!(r.header("authorization"), Some("Bearer sk-test-0000wxyz"));
        for (name, value) in &r.headers {
            let v = String::from_utf8_lossy(value.as_bytes());
            assert!(!v.contains(SEARCH), "{name} carries the caller's key");
            assert!(!v.contains(&hash_key(SEARCH)), "{name} carries its hash");
        }
    }
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_are_counted_by_caller() {
    let (_sim, gw) = start("").await;
    assert_eq!(chat_as(&gw, SEARCH, "m").await.status, StatusCode::OK);
    // Refusals of a valid key count under its name too (they were `anonymous`).
    assert_eq!(
        chat_as(&gw, SEARCH, "other").await.status,
        StatusCode::FORBIDDEN
    );
    let tight = chat_as(&gw, TIGHT, "m").await;
    assert_eq!(tight.status, StatusCode::OK, "{}", tight.body);
    assert_eq!(
        chat_as(&gw, TIGHT, "m").await.status,
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(
        gw.send("POST", "/v1/chat/completions", chat("m"))
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    let a = raw(
        &gw,
        "GET",
        "/metrics",
        &[("authorization", &bearer(OPS))],
        "",
    )
    .await;
    assert_eq!(a.status, StatusCode::OK);
    let scrape = prometheus_parse::Scrape::parse(a.body.lines().map(|l| Ok(l.to_owned())))
        .expect("Prometheus text format");
    let count = |labels: &[(&str, &str)]| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == "tower_failover_gateway_requests_total")
            .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    let route = ("route", "/v1/chat/completions");
    assert!(count(&[route, ("caller", "search"), ("status", "200")]) >= 1.0);
    assert!(count(&[route, ("caller", "anonymous"), ("status", "401")]) >= 1.0);
    // At least: the recorder is the process's, shared with the other tests.
    assert!(count(&[route, ("caller", "search"), ("status", "403")]) >= 1.0);
    assert!(count(&[route, ("caller", "tight"), ("status", "429")]) >= 1.0);
    assert!(!a.body.contains(SEARCH) && !a.body.contains(&hash_key(SEARCH)));
    gw.shutdown().await.unwrap();
}

/// Two replicas on one Redis spend one budget: what one gateway counted, the
/// other refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_on_one_redis_share_a_budget() {
    if !redis_harness::available() {
        assert!(
            std::env::var_os("CI").is_none(),
            "redis-server is not installed; .ci/run installs it"
        );
        eprintln!("SKIPPED: redis-server is not installed");
        return;
    }
    let redis = redis_harness::RedisServer::start().await;
    let sim = fast_sim(Flavor::OpenAi, "sim", 7).await;
    let mut c = config(&sim, "");
    let mut r = tower_failover::redis::RedisConfig::new(redis.url());
    r.namespace = "auth-test".into();
    c.stack.redis = Some(r);
    let a = common::start_with(&c).await;
    let b = common::start_with(&c).await;
    assert_eq!(chat_as(&a, TIGHT, "m").await.status, StatusCode::OK);
    assert_eq!(
        chat_as(&a, TIGHT, "m").await.status,
        StatusCode::TOO_MANY_REQUESTS,
        "the replica that counted knows at once"
    );
    // B learns it through Redis (every 200 ms). Until then it answers a model
    // nobody serves with 404, which spends nothing; then with 429.
    let deadline = tokio::time::Instant::now() + GUARD;
    loop {
        let a = chat_as(&b, TIGHT, "nobody-serves-this").await;
        if a.status == StatusCode::TOO_MANY_REQUESTS || tokio::time::Instant::now() > deadline {
            assert_eq!(a.status, StatusCode::TOO_MANY_REQUESTS, "{}", a.body);
            break;
        }
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let refused = chat_as(&b, TIGHT, "m").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert!(refused.headers.contains_key("retry-after"));
    assert_eq!(
        sim.counters().received,
        1,
        "only A's first request was admitted"
    );
    // Nothing about keys is stored in Redis: only the key's name.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        keys.iter().any(|k| k.contains("caller:tight:tokens")),
        "{keys:?}"
    );
    assert!(
        keys.iter()
            .all(|k| !k.contains(TIGHT) && !k.contains(&hash_key(TIGHT)))
    );
    a.shutdown().await.unwrap();
    b.shutdown().await.unwrap();
}

/// Without keys the gateway serves (the first run needs no setup) and says it is
/// open; louder when it listens beyond loopback.
#[tokio::test(flavor = "current_thread")]
async fn an_open_gateway_says_so() {
    let (logs, _guard) = common::capture_logs();
    let sim = fast_sim(Flavor::OpenAi, "sim", 7).await;
    let mut c = config(&sim, "");
    c.auth = gateway::AuthConfig::default();
    let gw = gateway::build_with(&c).unwrap();
    assert!(logs.text().contains("no caller keys"), "{}", logs.text());
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    gateway::serve_with(listener, gw, &c.server, async {})
        .await
        .unwrap();
    assert!(
        logs.text().contains("THIS GATEWAY IS OPEN"),
        "{}",
        logs.text()
    );
    // With keys: neither warning.
    let (logs, _guard) = common::capture_logs();
    let gw = gateway::build_with(&config(&sim, "")).unwrap();
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    gateway::serve_with(listener, gw, &c.server, async {})
        .await
        .unwrap();
    assert!(!logs.text().contains("no caller keys"));
    assert!(!logs.text().contains("THIS GATEWAY IS OPEN"));
}

/// A deferred job charges the key that sent it when it runs: `tight` (one token
/// an hour) is let in while the provider is down (nothing spent yet), gets `202`,
/// its job is answered once the provider is back, and then its budget is spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_job_spends_its_callers_budget_when_it_runs() {
    let (sim, gw) = start("").await;
    sim.set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    let auth = bearer(TIGHT);
    let headers = [
        ("authorization", auth.as_str()),
        ("x-tower-failover-defer", "true"),
    ];
    let accepted = post_chat(&gw, &headers, chat("m")).await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{}", accepted.body);
    let job = accepted.headers["location"].to_str().unwrap().to_owned();
    sim.clear_faults();
    let mut done = None;
    for _ in 0..400 {
        let a = gw
            .send_with("GET", &job, &[("authorization", auth.as_str())], "")
            .await;
        if a.headers["x-tower-failover-job-status"] != "pending" {
            done = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let done = done.expect("the job ends");
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert!(done.json()["usage"]["total_tokens"].as_u64().unwrap() > 1);
    let refused = chat_as(&gw, TIGHT, "m").await;
    assert_eq!(
        refused.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{}",
        refused.body
    );
    assert_eq!(error_code(&refused), "budget_exceeded");
    gw.shutdown().await.unwrap();
}
