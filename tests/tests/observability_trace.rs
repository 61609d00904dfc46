//! The spans of one request through the gateway that failed over, seen by a
//! capturing subscriber: one `request` span inside the gateway's `http` span, one
//! child `attempt` span per provider tried, with provider, model, outcome and the
//! request id; the log lines of the request are inside them. (One test in its own
//! process: a thread's capturing subscriber must not race other tests' callsites.)

mod common;

use common::{fast_sim, provider_entry, start};

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tower_failover::Config;
use tower_failover::sim::{Fault, FaultSpec, Flavor};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;

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
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
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

    let first = fast_sim(Flavor::OpenAi, "first", 3).await;
    let second = fast_sim(Flavor::OpenAi, "second", 4).await;
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
    let body = r#"{"model":"m","messages":[{"role":"user","content":"Say hello"}]}"#;
    let a = gw
        .send_with(
            "POST",
            "/v1/chat/completions",
            &[("x-request-id", "req-obs-1")],
            body,
        )
        .await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.served_by(), "second/m");
    assert_eq!(
        a.headers["x-request-id"], "req-obs-1",
        "the id is propagated"
    );
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
    assert_eq!(
        request.parent.as_ref(),
        Some(&http[0].0),
        "inside the http span"
    );

    let mut attempts: Vec<Captured> = all
        .iter()
        .filter(|(_, c)| c.name == "attempt" && c.parent.as_ref() == Some(request_id))
        .map(|(_, c)| c.clone())
        .collect();
    attempts.sort_by_key(|c| c.fields.get("failover.attempt").cloned());
    assert_eq!(
        attempts.len(),
        2,
        "one child span per attempt: {attempts:?}"
    );
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

    // The log lines of the request's handling carry its id: the access log and the
    // router's lines (all levels are captured here). (The server's own lines are
    // about connections, not requests.)
    let lines = spans.1.lock().unwrap().clone();
    for target in ["tower_failover_gateway", "tower_failover_balance::future"] {
        let of: Vec<_> = lines.iter().filter(|(t, _)| t == target).collect();
        assert!(!of.is_empty(), "{target}: {lines:?}");
        for (target, ids) in of {
            assert!(ids.iter().any(|id| id == "req-obs-1"), "{target}: {ids:?}");
        }
    }
}
