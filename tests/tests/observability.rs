//! What operators see, over real loopback HTTP in front of simulated providers:
//! `/metrics` parsed with a Prometheus text-format parser through an outage and its
//! recovery (the counters equal what the simulators counted), and the spans of one
//! request that failed over (one request span, one child span per attempt, with
//! provider, model, outcome and the request id).

mod common;

use common::{Running, provider_entry, start};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_parse::{Scrape, Value};
use tower_failover::Config;
use tower_failover::sim::{Fault, FaultSpec, Flavor, Sim};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

impl Running {
    async fn chat(&self, model: &str, headers: &[(&str, &str)]) -> common::Answer {
        let body = serde_json::json!({
            "model": model,
            "messages": [{"role": "user", "content": "Say hello"}],
        });
        self.send_with("POST", "/v1/chat/completions", headers, body.to_string())
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

async fn sim(flavor: Flavor, name: &str, seed: u64) -> Sim {
    Sim::builder(flavor)
        .name(name)
        .seed(seed)
        .ttft(Duration::from_millis(2))
        .token_interval(Duration::from_millis(1))
        .start()
        .await
        .unwrap()
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
        let a = gw.chat("gpt-4o-mini", &[]).await;
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
        let a = gw.chat("gpt-4o-mini", &[]).await;
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
    let share = |s: &Scrape| sum(s, "tower_failover_ramp_share_ratio", &[("provider", "primary")]);
    let (mut ramping, mut recovered) = (false, false);
    // Real-time waits here are failure guards only (cooldown 300 ms, ramp 1 s).
    for _ in 0..400 {
        let a = gw.chat("gpt-4o-mini", &[]).await;
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
    assert_eq!(state(&after, "primary"), 0.0, "the gauge shows the recovery");
    let reclosed = [("provider", "primary"), ("to", "closed")];
    assert!(sum(&after, "tower_failover_circuit_transitions_total", &reclosed) >= 1.0);

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
        let ttfb = sum(
            &after,
            "tower_failover_time_to_first_byte_seconds",
            &labels,
        );
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

/// One captured span: its name, parent and fields (as text).
#[derive(Debug, Clone)]
struct Captured {
    name: &'static str,
    parent: Option<Id>,
    fields: HashMap<String, String>,
}

/// One captured log line: its target and the request ids of the spans it was
/// written in.
type Line = (String, Vec<String>);

#[derive(Clone, Default)]
struct Spans(Arc<Mutex<HashMap<Id, Captured>>>, Arc<Mutex<Vec<Line>>>);

struct Fields<'a>(&'a mut HashMap<String, String>);

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.0
            .insert(field.name().to_owned(), format!("{value:?}"));
    }
}

impl<S> tracing_subscriber::Layer<S> for Spans
where
    S: tracing::Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let mut fields = HashMap::new();
        attrs.record(&mut Fields(&mut fields));
        let parent = ctx.span(id).and_then(|s| s.parent()).map(|p| p.id());
        self.0.lock().unwrap().insert(
            id.clone(),
            Captured {
                name: attrs.metadata().name(),
                parent,
                fields,
            },
        );
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, _ctx: Context<'_, S>) {
        if let Some(span) = self.0.lock().unwrap().get_mut(id) {
            values.record(&mut Fields(&mut span.fields));
        }
    }

    fn on_event(&self, event: &tracing::Event<'_>, ctx: Context<'_, S>) {
        // The request ids of the spans each log line is written in.
        let ids = ctx
            .event_scope(event)
            .map(|scope| {
                scope
                    .filter_map(|s| {
                        self.0
                            .lock()
                            .unwrap()
                            .get(&s.id())
                            .and_then(|c| c.fields.get("request_id").cloned())
                    })
                    .collect()
            })
            .unwrap_or_default();
        let target = event.metadata().target().to_owned();
        self.1.lock().unwrap().push((target, ids));
    }
}

#[tokio::test(flavor = "current_thread")]
async fn one_request_span_with_one_child_span_per_attempt() {
    let spans = Spans::default();
    let subscriber = tracing_subscriber::registry().with(spans.clone());
    let _guard = tracing::subscriber::set_default(subscriber);

    let first = sim(Flavor::OpenAi, "first", 3).await;
    let second = sim(Flavor::OpenAi, "second", 4).await;
    let config = Config::from_toml_str(&format!(
        "router = \"fallback\"\n{}{}",
        provider_entry("first", "openai", first.base_url(), 0),
        provider_entry("second", "openai", second.base_url(), 1),
    ))
    .unwrap();
    let gw = start(&config).await;
    first
        .set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    let a = gw.chat("m", &[("x-request-id", "req-obs-1")]).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.served_by(), "second/m");
    assert_eq!(a.headers["x-request-id"], "req-obs-1", "the id is propagated");
    gw.shutdown().await.unwrap();

    let all: Vec<(Id, Captured)> = spans
        .0
        .lock()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let ours = |name: &str| -> Vec<(Id, Captured)> {
        all.iter()
            .filter(|(_, c)| c.name == name)
            .filter(|(_, c)| c.fields.get("request_id").map(String::as_str) == Some("req-obs-1"))
            .cloned()
            .collect()
    };
    let http = ours("http");
    assert_eq!(http.len(), 1, "one http span: {all:?}");
    let requests = ours("request");
    assert_eq!(requests.len(), 1, "one request span: {all:?}");
    let (request_id, request) = &requests[0];
    assert_eq!(request.parent.as_ref(), Some(&http[0].0), "inside the http span");

    let mut attempts: Vec<Captured> = all
        .iter()
        .filter(|(_, c)| c.name == "attempt" && c.parent.as_ref() == Some(request_id))
        .map(|(_, c)| c.clone())
        .collect();
    attempts.sort_by_key(|c| c.fields.get("failover.attempt").cloned());
    assert_eq!(attempts.len(), 2, "one child span per attempt: {attempts:?}");
    let f = |c: &Captured, k: &str| c.fields.get(k).cloned().unwrap_or_default();
    for (c, provider, number, outcome) in [
        (&attempts[0], "first", "1", "failure"),
        (&attempts[1], "second", "2", "success"),
    ] {
        assert_eq!(f(c, "gen_ai.system"), provider, "{c:?}");
        assert_eq!(f(c, "gen_ai.request.model"), "m", "{c:?}");
        assert_eq!(f(c, "failover.attempt"), number, "{c:?}");
        assert_eq!(f(c, "failover.outcome"), outcome, "{c:?}");
        assert_eq!(f(c, "request_id"), "req-obs-1", "{c:?}");
    }
    assert_eq!(f(&attempts[0], "error.type"), "overloaded", "a 503");
    assert!(!f(&attempts[1], "failover.ttfb_ms").is_empty());
    let usage = f(&attempts[1], "gen_ai.usage.input_tokens");
    assert!(usage.parse::<u64>().is_ok_and(|n| n > 0), "{attempts:?}");

    // The log lines of the request's handling carry its id: the access log, the
    // router's and the breaker's lines (all levels are captured here).
    let lines = spans.1.lock().unwrap().clone();
    for prefix in ["tower_failover::gateway", "tower_failover_balance"] {
        let of: Vec<_> = lines.iter().filter(|(t, _)| t.starts_with(prefix)).collect();
        assert!(!of.is_empty(), "{prefix}: {lines:?}");
        for (target, ids) in of {
            assert!(ids.iter().any(|id| id == "req-obs-1"), "{target}: {ids:?}");
        }
    }
}
