//! What operators see, over real loopback HTTP in front of simulated providers:
//! `/metrics` parsed with a Prometheus text-format parser through an outage and its
//! recovery (the counters equal what the simulators counted). The spans of a
//! request are in `observability_trace.rs` (a process of their own: a capturing
//! subscriber must not race other tests' callsites).

mod common;

use common::{Running, fast_sim as sim, start};

use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use tower_failover::Config;
use tower_failover::sim::{Fault, FaultSpec, Flavor, Sim};

impl Running {
    async fn chat(&self, model: &str) -> common::Answer {
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello"}],
        });
        self.send("POST", "/v1/chat/completions", body.to_string())
            .await
    }

    async fn scrape(&self) -> Scrape {
        let a = self.send("GET", "/metrics", "").await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(
            a.headers["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain; version=0.0.4")
        );
        Scrape::parse(a.body.lines().map(|l| Ok(l.to_owned()))).expect("Prometheus text format")
    }

    async fn circuit_of(&self, provider: &str) -> String {
        let a = self.send("GET", "/health", "").await;
        let v: serde_json::Value = serde_json::from_str(&a.body).unwrap();
        let p = v["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider"] == provider)
            .expect("the provider is listed")
            .clone();
        format!("{}/{}", p["circuit"].as_str().unwrap(), p["ramp_step"])
    }
}

/// The sum of the samples of `name` whose labels include all of `labels`.
fn sum(scrape: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    scrape
        .samples
        .iter()
        .filter(|s| s.metric == name)
        .filter(|s| labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .map(|s| match &s.value {
            Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => *v,
            Value::Histogram(buckets) => buckets.iter().map(|b| b.count).fold(0.0, f64::max),
            Value::Summary(_) => 0.0,
        })
        .sum()
}

/// The requests `provider` was sent, by the gateway's count: every outcome but
/// `shed` (refused above the provider, never sent).
fn sent_to(scrape: &Scrape, provider: &str) -> f64 {
    let name = "tower_failover_requests_total";
    sum(scrape, name, &[("provider", provider)])
        - sum(scrape, name, &[("provider", provider), ("outcome", "shed")])
}

/// Two model groups: `gpt-4o-mini` at the OpenAI-compatible primary, falling back
/// to `claude-haiku-4-5` at the Anthropic backup; a fast breaker and a short ramp.
fn outage_config(primary: &Sim, backup: &Sim) -> Config {
    Config::from_toml_str(&format!(
        r#"
        router = "fallback"
        deadline = "10s"

        [models."gpt-4o-mini"]
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
        schedule = {{ steps = [{{ share = 0.5, hold = "1s" }}, {{ share = 1.0, hold = "50ms" }}] }}

        [[providers]]
        name = "primary"
        model = "gpt-4o-mini"
        kind = "openai"
        base_url = "{}/v1"

        [[providers]]
        name = "backup"
        model = "claude-haiku-4-5"
        kind = "anthropic"
        base_url = "{}"
        "#,
        primary.base_url(),
        backup.base_url()
    ))
    .expect("a valid configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_what_the_simulators_saw_through_an_outage_and_its_recovery() {
    let primary = sim(Flavor::OpenAi, "primary", 1).await;
    let backup = sim(Flavor::Anthropic, "backup", 2).await;
    let gw = start(&outage_config(&primary, &backup)).await;
    let state = |s: &Scrape, p: &str| sum(s, "tower_failover_circuit_state", &[("provider", p)]);

    for _ in 0..4 {
        let a = gw.chat("gpt-4o-mini").await;
        assert_eq!(a.served_by(), "primary/gpt-4o-mini", "{}", a.body);
    }
    let healthy = gw.scrape().await;
    assert_eq!(state(&healthy, "primary"), 0.0, "closed");
    assert_eq!(sent_to(&healthy, "primary"), 4.0);

    // The outage: every answer from the backup; the primary's circuit opens.
    primary
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    for _ in 0..8 {
        let a = gw.chat("gpt-4o-mini").await;
        assert_eq!(a.status, 200, "{}", a.body);
        assert_eq!(a.served_by(), "backup/claude-haiku-4-5");
    }
    let outage = gw.scrape().await;
    assert_eq!(state(&outage, "primary"), 1.0, "the gauge shows the outage");
    assert_eq!(state(&outage, "backup"), 0.0);
    let opened = [("provider", "primary"), ("to", "open")];
    assert!(sum(&outage, "tower_failover_circuit_transitions_total", &opened) >= 1.0);

    // The recovery: a probe passes, the circuit closes, the ramp gives the primary
    // half its traffic for a second, then all of it.
    primary.clear_faults();
    let share = |s: &Scrape| {
        sum(
            s,
            "tower_failover_ramp_share_ratio",
            &[("provider", "primary")],
        )
    };
    let (mut ramping, mut recovered) = (false, false);
    let mut recovery_chats = 0;
    // Real-time waits here are failure guards only (cooldown 300 ms, ramp 1 s).
    for _ in 0..400 {
        let a = gw.chat("gpt-4o-mini").await;
        recovery_chats += 1;
        assert_eq!(a.status, 200, "{}", a.body);
        let s = gw.scrape().await;
        ramping |= share(&s) == 0.5;
        if ramping && share(&s) == 1.0 && gw.circuit_of("primary").await == "closed/null" {
            recovered = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(ramping, "the ramp share gauge shows the ramp");
    assert!(recovered, "the primary recovers");
    let after = gw.scrape().await;
    assert_eq!(
        state(&after, "primary"),
        0.0,
        "the gauge shows the recovery"
    );
    let reclosed = [("provider", "primary"), ("to", "closed")];
    assert!(
        sum(
            &after,
            "tower_failover_circuit_transitions_total",
            &reclosed
        ) >= 1.0
    );

    // What callers saw: every chat request answered 200 (the scrapes and health
    // checks are counted under their own routes).
    let answered = [("route", "/v1/chat/completions"), ("status", "200")];
    let chats = sum(&after, "tower_failover_gateway_requests_total", &answered);
    let all_chats = sum(
        &after,
        "tower_failover_gateway_requests_total",
        &[("route", "/v1/chat/completions")],
    );
    assert_eq!(chats, all_chats, "no caller saw an error");
    assert_eq!(chats, 12.0 + recovery_chats as f64);

    // The counters are what the simulators counted.
    let (p, b) = (primary.counters(), backup.counters());
    assert_eq!(sent_to(&after, "primary"), p.received as f64, "{p:?}");
    assert_eq!(sent_to(&after, "backup"), b.received as f64, "{b:?}");
    // (A 503 is an overloaded provider by the default classifier.)
    let failed = [("provider", "primary"), ("outcome", "failure")];
    let failures = sum(&after, "tower_failover_requests_total", &failed);
    assert_eq!(failures, p.status(503) as f64);
    assert!(failures >= 3.0, "three failures opened the circuit");
    // Each request the primary failed went on to the backup.
    let pair = [
        ("from", "primary/gpt-4o-mini"),
        ("to", "backup/claude-haiku-4-5"),
    ];
    assert_eq!(
        sum(&after, "tower_failover_failovers_total", &pair),
        failures
    );
    let ok = |p: &str| {
        sum(
            &after,
            "tower_failover_requests_total",
            &[("provider", p), ("outcome", "success")],
        )
    };
    assert_eq!(ok("primary"), p.status(200) as f64);
    assert_eq!(ok("backup"), b.status(200) as f64);
    // Tokens as the providers reported them; latency histograms filled.
    for (name, c) in [("primary", &p), ("backup", &b)] {
        let labels = [("provider", name)];
        let prompt = sum(&after, "tower_failover_prompt_tokens_total", &labels);
        let completion = sum(&after, "tower_failover_completion_tokens_total", &labels);
        assert_eq!(prompt, c.prompt_tokens as f64, "{name}");
        assert_eq!(completion, c.completion_tokens as f64, "{name}");
        let ttfb = sum(&after, "tower_failover_time_to_first_byte_seconds", &labels);
        assert_eq!(ttfb, c.status(200) as f64, "{name}: one sample per answer");
    }
    gw.shutdown().await.unwrap();
}

#[test]
fn the_dashboard_and_the_readme_name_only_metrics_that_exist() {
    let known = tower_failover::metrics::names::ALL;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for file in ["docs/grafana/tower-failover.json", "README.md"] {
        let text = std::fs::read_to_string(format!("{root}/{file}")).unwrap();
        let mut seen = 0;
        for (i, _) in text.match_indices("tower_failover_") {
            let name: String = text[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            // Histograms are queried by their series.
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(&name);
            assert!(known.contains(&base), "{file}: unknown metric {name}");
            seen += 1;
        }
        assert!(seen >= 10, "{file} names the metrics");
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(format!("{root}/docs/grafana/tower-failover.json")).unwrap(),
    )
    .unwrap();
    assert!(dashboard["panels"].as_array().unwrap().len() >= 8);
}
