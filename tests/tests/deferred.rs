//! Deferred mode through the gateway over real loopback HTTP, in front of
//! simulated providers: a request that asks for it (`Prefer: respond-async` or
//! `x-tower-failover-defer: true`) and finds every provider down gets `202` and a
//! job id, runs when a provider recovers, and its answer is read at
//! `GET /v1/jobs/{id}`; unknown, expired and failed jobs; the store at capacity;
//! requests without the opt-in unchanged.
//!
//! Real time with short circuit cooldowns; every wait is a poll with a generous
//! guard, never a timing assertion.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::{Answer, Running, fast_sim, start_with};
use http::StatusCode;
use tower_failover::sim::{Fault, FaultSpec, Flavor, Sim};
use tower_failover_gateway::GatewayConfig;

const PRIMARY: &str = "primary/gpt-4o-mini";

/// The OpenAI-wire primary serves `gpt-4o-mini`, the Anthropic-wire backup its
/// fallback; fast circuits and ramp; `deferred` is the `[deferred]` section's body
/// (or `None` for `deferred = false`).
fn config(primary: &Sim, backup: &Sim, deferred: Option<&str>) -> GatewayConfig {
    let (top, section) = match deferred {
        Some(body) => (String::new(), format!("[deferred]\n{body}\n")),
        None => ("deferred = false\n".to_owned(), String::new()),
    };
    GatewayConfig::from_toml_str(&format!(
        r#"{top}
        router = "fallback"
        deadline = "10s"
        retry = false

        [models."gpt-4o-mini"]
        fallbacks = ["claude-haiku-4-5"]

        [circuit]
        consecutive_failures = 1
        cooldown = "100ms"
        max_cooldown = "200ms"
        half_open_permits = 1
        success_threshold = 1

        [ramp]
        min_requests = 1
        min_sample = 1000
        check_interval = "20ms"
        cooldown = "100ms"
        max_cooldown = "200ms"
        schedule = {{ steps = [{{ share = 1.0, hold = "50ms" }}] }}

        {section}

        [[providers]]
        name = "primary"
        model = "gpt-4o-mini"
        kind = "openai"
        base_url = "{}/v1"
        api_key = "sk-test-0000wxyz"
        priority = 0

        [[providers]]
        name = "backup"
        model = "claude-haiku-4-5"
        kind = "anthropic"
        base_url = "{}"
        api_key = "sk-test-0000wxyz"
        priority = 1
        "#,
        primary.base_url(),
        backup.base_url()
    ))
    .expect("a valid gateway configuration")
}

/// The primary echoes the prompt, so an answer shows which request it answers.
async fn sims() -> (Sim, Sim) {
    let primary = Sim::builder(Flavor::OpenAi)
        .name("primary")
        .seed(1)
        .echo(true)
        .ttft(Duration::from_millis(2))
        .token_interval(Duration::from_millis(1))
        .start()
        .await
        .expect("a simulated provider starts");
    (primary, fast_sim(Flavor::Anthropic, "backup", 2).await)
}

/// Both sims and a gateway in front of them (`deferred` as for [`config`]),
/// with every provider answering 503.
async fn outage(deferred: Option<&str>) -> (Sim, Sim, Running) {
    let (primary, backup) = sims().await;
    let gw = start_with(&config(&primary, &backup, deferred)).await;
    down(&[&primary, &backup]);
    (primary, backup, gw)
}

fn down(sims: &[&Sim]) {
    for s in sims {
        s.set_faults([FaultSpec::always(Fault::Status(503))])
            .unwrap();
    }
}

const CHAT: &str =
    r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Say hello later"}]}"#;
const STREAMED_CHAT: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Say hello"}]}"#;
const MESSAGES: &str = r#"{"model":"gpt-4o-mini","max_tokens":64,"messages":[{"role":"user","content":"Say hello later"}]}"#;

const PREFER: (&str, &str) = ("prefer", "respond-async");
const DEMAND: (&str, &str) = ("x-tower-failover-defer", "true");

fn header<'a>(a: &'a Answer, name: &str) -> &'a str {
    a.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
}

/// A `202` with its job's `Location`: checks the shape, returns the path.
fn accepted(a: &Answer) -> String {
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    let v = a.json();
    let id = v["id"].as_str().expect("an id").to_owned();
    assert_eq!(v["status"], "pending");
    assert_eq!(v["object"], "job");
    assert_eq!(id.len(), 32, "{id}");
    assert!(
        id.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{id}"
    );
    assert_eq!(header(a, "location"), format!("/v1/jobs/{id}"));
    let wait: u64 = header(a, "retry-after").parse().expect("Retry-After");
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(header(a, "x-tower-failover-job-status"), "pending");
    format!("/v1/jobs/{id}")
}

/// With every provider down: a chat request deferred (`202`), then the primary
/// back and the job done (`200`); returns the job's path.
async fn deferred_then_done(gw: &Running, primary: &Sim) -> String {
    let a = gw
        .send_with("POST", "/v1/chat/completions", &[DEMAND], CHAT)
        .await;
    let job = accepted(&a);
    primary.clear_faults();
    let done = settled(gw, &job).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    job
}

/// Reads `path` until it is no longer pending (a guard, not a timing claim).
async fn settled(gw: &Running, path: &str) -> Answer {
    for _ in 0..600 {
        let a = gw.send("GET", path, "").await;
        if header(&a, "x-tower-failover-job-status") != "pending" {
            return a;
        }
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{path} still pending");
}

/// The whole life of two jobs, one per front door: every provider down → `202`
/// with a `Location` → `GET` says pending → the primary recovers → `GET` gives
/// the answer (a chat completion; an Anthropic Message), again on a second read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_whole_life_through_both_front_doors() {
    let (primary, _backup, gw) = outage(Some("")).await;

    let a = gw
        .send_with("POST", "/v1/chat/completions", &[PREFER], CHAT)
        .await;
    let chat_job = accepted(&a);
    assert_eq!(header(&a, "preference-applied"), "respond-async");
    let a = gw
        .send_with("POST", "/v1/messages", &[DEMAND], MESSAGES)
        .await;
    let messages_job = accepted(&a);
    assert_eq!(header(&a, "preference-applied"), "", "no Prefer was sent");
    assert_ne!(chat_job, messages_job);

    let pending = gw.send("GET", &chat_job, "").await;
    assert_eq!(pending.status, StatusCode::OK);
    assert_eq!(pending.json()["status"], "pending");
    assert_eq!(
        pending.json()["id"].as_str().unwrap(),
        &chat_job["/v1/jobs/".len()..]
    );
    assert!(header(&pending, "retry-after").parse::<u64>().unwrap() >= 1);
    let before = primary.counters().received;

    primary.clear_faults();
    let done = settled(&gw, &chat_job).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(header(&done, "x-tower-failover-job-status"), "done");
    assert_eq!(done.served_by(), PRIMARY);
    let v = done.json();
    assert_eq!(v["object"], "chat.completion");
    // The kept request is what reached the provider (it echoes the prompt).
    let content = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(
        content.starts_with("You said: \"Say hello later\""),
        "{content}"
    );
    assert!(primary.counters().received > before);

    let done = settled(&gw, &messages_job).await;
    assert_eq!(done.status, StatusCode::OK, "{}", done.body);
    assert_eq!(header(&done, "x-tower-failover-job-status"), "done");
    let v = done.json();
    assert_eq!(v["type"], "message", "Anthropic's shape: {v}");
    let text = v["content"][0]["text"].as_str().unwrap_or("");
    assert!(text.starts_with("You said: \"Say hello later\""), "{v}");

    // Read again: the answer is kept.
    let again = gw.send("GET", &chat_job, "").await;
    assert_eq!(again.status, StatusCode::OK);
    assert_eq!(again.json()["object"], "chat.completion");
    gw.shutdown().await.unwrap();
}

/// Unknown ids are `404`; an answer older than `keep_results` is `410`, then
/// forgotten (`404`); a job no provider answers within `max_wait` fails with
/// `504` in OpenAI's shape.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_expired_and_failed_jobs() {
    let (primary, backup) = sims().await;
    let gw = start_with(&config(
        &primary,
        &backup,
        Some("keep_results = \"300ms\"\nmax_wait = \"1s\""),
    ))
    .await;

    for path in [
        "/v1/jobs/0123456789abcdef0123456789abcdef",
        "/v1/jobs/not-an-id",
    ] {
        let a = gw.send("GET", path, "").await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);
        assert_eq!(a.json()["error"]["code"], "job_not_found");
        assert_eq!(a.json()["error"]["type"], "invalid_request_error");
    }

    // Fails for good: nothing recovers within `max_wait`.
    down(&[&primary, &backup]);
    let a = gw
        .send_with("POST", "/v1/chat/completions", &[DEMAND], CHAT)
        .await;
    let failing = accepted(&a);
    let failed = settled(&gw, &failing).await;
    assert_eq!(
        failed.status,
        StatusCode::GATEWAY_TIMEOUT,
        "{}",
        failed.body
    );
    assert_eq!(header(&failed, "x-tower-failover-job-status"), "failed");
    assert_eq!(failed.json()["error"]["type"], "timeout");
    assert!(failed.headers.get("retry-after").is_none(), "final");

    // Expires: done, then 410, then 404.
    let job = deferred_then_done(&gw, &primary).await;
    let mut statuses = Vec::new();
    for _ in 0..600 {
        let a = gw.send("GET", &job, "").await;
        if statuses.last() != Some(&a.status) {
            statuses.push(a.status);
            if a.status == StatusCode::GONE {
                assert_eq!(a.json()["error"]["code"], "job_expired");
            }
        }
        if a.status == StatusCode::NOT_FOUND {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        statuses,
        [StatusCode::OK, StatusCode::GONE, StatusCode::NOT_FOUND],
        "done, expired, forgotten"
    );
    gw.shutdown().await.unwrap();
}

/// At `capacity`, a request that would be deferred gets the all-providers-down
/// `503` with `Retry-After` it would have got without asking, saying why; the
/// kept jobs still run once a provider is back. Every id is distinct.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_store_at_capacity_refuses_with_503() {
    let (primary, _backup, gw) = outage(Some("capacity = 8")).await;

    let mut jobs = Vec::new();
    for _ in 0..8 {
        let a = gw
            .send_with("POST", "/v1/chat/completions", &[PREFER], CHAT)
            .await;
        jobs.push(accepted(&a));
    }
    assert_eq!(jobs.iter().collect::<HashSet<_>>().len(), 8, "unique ids");
    let full = gw
        .send_with("POST", "/v1/chat/completions", &[PREFER], CHAT)
        .await;
    assert_eq!(
        full.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        full.body
    );
    let v = full.json();
    assert_eq!(v["error"]["type"], "all_providers_failed");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("deferred job store full"),
        "{v}"
    );
    assert!(header(&full, "retry-after").parse::<u64>().unwrap() >= 1);
    // Through the Anthropic door, the same refusal in its shape.
    let full = gw
        .send_with("POST", "/v1/messages", &[DEMAND], MESSAGES)
        .await;
    assert_eq!(full.json()["type"], "error", "{}", full.body);
    assert!(header(&full, "retry-after").parse::<u64>().unwrap() >= 1);

    primary.clear_faults();
    for job in &jobs {
        let done = settled(&gw, job).await;
        assert_eq!(done.status, StatusCode::OK, "{}", done.body);
        assert_eq!(done.served_by(), PRIMARY);
    }
    gw.shutdown().await.unwrap();
}

/// Without the opt-in, or with deferral turned off, an outage is the usual `503`;
/// a request the stack answers is answered at once even with the opt-in; a
/// streamed request that demands deferral is a `400`, one that only prefers it
/// is served as a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_an_opted_in_request_in_an_outage_is_deferred() {
    let (primary, backup) = sims().await;
    let gw = start_with(&config(&primary, &backup, Some(""))).await;

    // Healthy: answered now, opt-in or not.
    let a = gw
        .send_with("POST", "/v1/chat/completions", &[PREFER], CHAT)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["object"], "chat.completion");
    assert!(a.headers.get("preference-applied").is_none());
    let a = gw
        .send_with("POST", "/v1/chat/completions", &[PREFER], STREAMED_CHAT)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(a.body.contains("chat.completion.chunk"), "{}", a.body);
    let a = gw
        .send_with("POST", "/v1/chat/completions", &[DEMAND], STREAMED_CHAT)
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    assert!(a.body.contains("stream"), "{}", a.body);
    let a = gw
        .send_with(
            "POST",
            "/v1/chat/completions",
            &[("x-tower-failover-defer", "maybe")],
            CHAT,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{}", a.body);
    // A model nobody serves is answered (404), not deferred.
    let a = gw
        .send_with(
            "POST",
            "/v1/chat/completions",
            &[DEMAND],
            r#"{"model":"nobody","messages":[{"role":"user","content":"hi"}]}"#,
        )
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{}", a.body);

    down(&[&primary, &backup]);
    let a = gw.send("POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.json()["error"]["type"], "all_providers_failed");
    let a = gw
        .send_with(
            "POST",
            "/v1/chat/completions",
            &[("x-tower-failover-defer", "false"), PREFER],
            CHAT,
        )
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    let a = gw
        .send_with("POST", "/v1/chat/completions", &[PREFER], STREAMED_CHAT)
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    gw.shutdown().await.unwrap();

    // Turned off: the opt-in is ignored, and there are no jobs to read.
    let gw = start_with(&config(&primary, &backup, None)).await;
    let a = gw
        .send_with("POST", "/v1/chat/completions", &[PREFER], CHAT)
        .await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert!(a.headers.get("preference-applied").is_none());
    let a = gw
        .send("GET", "/v1/jobs/0123456789abcdef0123456789abcdef", "")
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    gw.shutdown().await.unwrap();
}

/// A job's id is the only key to its answer: the logs show its first 8 digits,
/// never the whole id.
// One thread, so the log capture sees every task (the gateway's, the sims').
#[tokio::test(flavor = "current_thread")]
async fn the_logs_never_show_a_whole_job_id() {
    let (logs, _guard) = common::capture_logs();
    let (primary, _backup, gw) = outage(Some("")).await;
    let job = deferred_then_done(&gw, &primary).await;
    gw.shutdown().await.unwrap();

    let id = &job["/v1/jobs/".len()..];
    let text = logs.text();
    // The store's event names the job by its first 8 digits. (The access log's
    // path is cut the same way: a unit test of the gateway's telemetry; whether
    // its span reaches this thread's capture depends on the other tests here.)
    assert!(text.contains("request deferred"), "{text}");
    assert!(text.contains(&id[..8]), "{text}");
    assert!(!text.contains(id), "the whole id was logged");
}

/// Embedded without the gateway's server (which refuses a large body before
/// routing), a deferrable request past the body limit is still a `413`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedded_router_refuses_a_deferrable_body_past_the_limit() {
    use tower::ServiceExt;
    let (primary, backup) = sims().await;
    let mut c = config(&primary, &backup, Some(""));
    c.stack.max_request_bytes = 1 << 20;
    let gw = tower_failover_gateway::build_with(&c).unwrap();
    let huge = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(2 << 20)
    );
    let req = http::Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .header(PREFER.0, PREFER.1)
        .body(axum::body::Body::from(huge))
        .unwrap();
    let res = gw.router.oneshot(req).await.unwrap();
    assert_eq!(res.status(), StatusCode::PAYLOAD_TOO_LARGE);
}

/// A gateway nested under a prefix in a larger app (`Router::nest`) gives each
/// job a `Location` under that prefix, through both front doors, and the job is
/// read there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_nested_gateway_gives_a_location_under_its_prefix() {
    let (primary, backup) = sims().await;
    let c = config(&primary, &backup, Some(""));
    let gw = tower_failover_gateway::build_with(&c)
        .expect("a valid configuration")
        .map_router(|r| axum::Router::new().nest("/llm", r));
    let gw = common::serve_built(gw, &c.server).await;
    down(&[&primary, &backup]);
    let mut jobs = Vec::new();
    for (path, body) in [
        ("/llm/v1/chat/completions", CHAT),
        ("/llm/v1/messages", MESSAGES),
    ] {
        let a = gw.send_with("POST", path, &[DEMAND], body).await;
        assert_eq!(a.status, StatusCode::ACCEPTED, "{path}: {}", a.body);
        let id = a.json()["id"].as_str().expect("an id").to_owned();
        let location = format!("/llm/v1/jobs/{id}");
        assert_eq!(header(&a, "location"), location, "{path}");
        jobs.push(location);
    }
    primary.clear_faults();
    for job in &jobs {
        let done = settled(&gw, job).await;
        assert_eq!(done.status, StatusCode::OK, "{job}: {}", done.body);
        assert_eq!(header(&done, "x-tower-failover-job-status"), "done");
    }
    gw.shutdown().await.unwrap();
}

/// `DELETE /v1/jobs/{id}` cancels a waiting job (it never comes back, even once a
/// provider recovers) and forgets an answered one; an unknown id is `404`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_is_cancelled_or_forgotten_with_delete() {
    let (primary, _backup, gw) = outage(Some("")).await;
    let a = gw
        .send_with("POST", "/v1/chat/completions", &[DEMAND], CHAT)
        .await;
    let waiting = accepted(&a);
    let deleted = gw.send("DELETE", &waiting, "").await;
    assert_eq!(deleted.status, StatusCode::OK, "{}", deleted.body);
    assert_eq!(deleted.json()["deleted"], true);
    assert_eq!(deleted.json()["id"], waiting["/v1/jobs/".len()..]);
    let gone = gw.send("GET", &waiting, "").await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND, "{}", gone.body);

    // The primary recovers and serves: the cancelled job stays gone.
    let job = deferred_then_done(&gw, &primary).await;
    assert_eq!(
        gw.send("GET", &waiting, "").await.status,
        StatusCode::NOT_FOUND
    );
    // An answered job is forgotten.
    assert_eq!(gw.send("DELETE", &job, "").await.status, StatusCode::OK);
    assert_eq!(gw.send("GET", &job, "").await.status, StatusCode::NOT_FOUND);
    let again = gw.send("DELETE", &job, "").await;
    assert_eq!(again.status, StatusCode::NOT_FOUND, "{}", again.body);
    assert_eq!(again.json()["error"]["code"], "job_not_found");
    gw.shutdown().await.unwrap();
}
