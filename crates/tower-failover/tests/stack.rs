//! The Stack builder with in-memory providers: routers, slots, the handle.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tower::{BoxError, ServiceExt, service_fn};
use tower_failover::balance::FallbackConfig;
use tower_failover::circuit::CircuitConfig;
use tower_failover::error::{AllProvidersFailed, find};
use tower_failover::replay::ReplayBody;
use tower_failover::retry::QueueConfig;
use tower_failover::{
    CircuitState, CustomLayer, CustomRouter, HealthEventKind, ProviderDef, ProviderService,
    Routing, Slot, Stack, boxed,
};

const ANSWER: &str =
    r#"{"choices":[{"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}]}"#;

/// A provider answering `status`, counting the requests it receives.
fn provider(status: u16, seen: &Arc<AtomicUsize>) -> ProviderService {
    let seen = seen.clone();
    boxed(service_fn(move |_req: Request<ReplayBody>| {
        seen.fetch_add(1, Ordering::SeqCst);
        async move {
            let body = if status == 200 {
                ReplayBody::from(ANSWER)
            } else {
                ReplayBody::empty()
            };
            Ok::<_, BoxError>(Response::builder().status(status).body(body)?)
        }
    }))
}

fn request() -> Request<String> {
    Request::post("/v1/chat/completions")
        .body("{}".to_owned())
        .unwrap()
}

#[tokio::test]
async fn events_follow_an_outage_and_an_override() {
    let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let stack = Stack::builder()
        .provider(ProviderDef::new("a", "m", provider(500, &a)).priority(0))
        .provider(ProviderDef::new("b", "m", provider(200, &b)).priority(1))
        .fallback(FallbackConfig::default())
        .circuit(CircuitConfig::default().consecutive_failures(2))
        .build()
        .unwrap();
    let mut events = stack.handle().subscribe();
    for _ in 0..5 {
        assert_eq!(
            stack.clone().oneshot(request()).await.unwrap().status(),
            200
        );
    }
    assert_eq!(a.load(Ordering::SeqCst), 2);
    assert_eq!(b.load(Ordering::SeqCst), 5);

    let event = events.recv().await.unwrap();
    assert_eq!(event.provider.provider(), "a");
    assert!(matches!(
        event.kind,
        HealthEventKind::CircuitChanged {
            to: CircuitState::Open,
            ..
        }
    ));

    stack
        .handle()
        .force("b", "m", Some(CircuitState::Open))
        .unwrap();
    let event = events.recv().await.unwrap();
    assert!(matches!(
        event.kind,
        HealthEventKind::Forced {
            state: Some(CircuitState::Open)
        }
    ));
    assert!(stack.handle().force("c", "m", None).is_err());

    // Both out: the caller hears it at once, with a Retry-After hint.
    let err = stack.clone().oneshot(request()).await.unwrap_err();
    let all = find::<AllProvidersFailed>(&*err).expect("all providers failed");
    assert!(all.retry_after().is_some());
    let snapshot = stack.handle().snapshot();
    assert_eq!(snapshot.status, "down");
    assert_eq!(snapshot.router, "fallback");
    assert!(snapshot.retry_budget_remaining.is_some());
}

#[tokio::test]
async fn every_slot_can_be_off_or_yours() {
    let seen = Arc::new(AtomicUsize::new(0));
    let tagged = Arc::new(AtomicUsize::new(0));
    let count = tagged.clone();
    let stack = Stack::builder()
        .provider(ProviderDef::new("a", "m", provider(200, &seen)))
        .observe(Slot::Off)
        .output_validation(Slot::Off)
        .quota(Slot::Off)
        .circuit(Slot::Off)
        .ramp(Slot::Off)
        .retry_budget(None)
        .provider_layer(CustomLayer::new(move |_health, inner| {
            let count = count.clone();
            boxed(inner.map_request(move |req: Request<ReplayBody>| {
                count.fetch_add(1, Ordering::SeqCst);
                req
            }))
        }))
        .build()
        .unwrap();
    stack.clone().oneshot(request()).await.unwrap();
    assert_eq!(
        (seen.load(Ordering::SeqCst), tagged.load(Ordering::SeqCst)),
        (1, 1)
    );
    // Without the observer nothing is recorded in the provider's health.
    assert_eq!(
        stack.handle().snapshot().providers[0]
            .health
            .counters
            .requests,
        0
    );
    assert_eq!(stack.handle().retry_budget_remaining(), None);
}

#[tokio::test]
async fn a_router_of_your_own_and_overflow() {
    let (a, b) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    // Always the last provider.
    let last = CustomRouter::new(|mut providers, _budget| Ok(providers.pop().unwrap().service));
    let stack = Stack::builder()
        .provider(ProviderDef::new("a", "m", provider(200, &a)))
        .provider(ProviderDef::new("b", "m", provider(200, &b)))
        .routing(Routing::Custom(last))
        .build()
        .unwrap();
    stack.clone().oneshot(request()).await.unwrap();
    assert_eq!((a.load(Ordering::SeqCst), b.load(Ordering::SeqCst)), (0, 1));

    // Overflow: in priority order; a 429 goes on to the next at once.
    let limited = Arc::new(AtomicUsize::new(0));
    let stack = Stack::builder()
        .provider(ProviderDef::new("b", "m", provider(200, &b)).priority(1))
        .provider(ProviderDef::new("l", "m", provider(429, &limited)).priority(0))
        .routing(Routing::Overflow(Default::default()))
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(
            stack.clone().oneshot(request()).await.unwrap().status(),
            200
        );
    }
    // One 429, then its quota group is known limited: not asked again.
    assert_eq!(limited.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn the_wait_queue_holds_requests_until_a_provider_recovers() {
    let seen = Arc::new(AtomicUsize::new(0));
    let stack = Stack::builder()
        .provider(ProviderDef::new("a", "m", provider(200, &seen)))
        .wait_queue(Some(QueueConfig {
            capacity: 4,
            max_wait: Duration::from_secs(30),
        }))
        .deadline(Some(Duration::from_secs(60)))
        .build()
        .unwrap();
    let handle = stack.handle().clone();
    handle.force("a", "m", Some(CircuitState::Open)).unwrap();
    let waiting = tokio::spawn(stack.clone().oneshot(request()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(handle.snapshot().waiting, Some(1));
    assert_eq!(seen.load(Ordering::SeqCst), 0);
    handle.force("a", "m", None).unwrap();
    let res = waiting.await.unwrap().unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn refuses_bad_builds_naming_the_field() {
    let seen = Arc::new(AtomicUsize::new(0));
    let err = Stack::builder().build().unwrap_err();
    assert_eq!(err.field(), "providers");
    let err = Stack::builder()
        .provider(ProviderDef::new("a", "m", provider(200, &seen)))
        .provider(ProviderDef::new("a", "m", provider(200, &seen)))
        .build()
        .unwrap_err();
    assert_eq!(err.to_string(), "providers[1]: a/m is already providers[0]");
    let err = Stack::builder()
        .provider(ProviderDef::new("a", "m", provider(200, &seen)).weight(-2.0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "providers[0].weight");
    let err = Stack::builder()
        .provider(
            ProviderDef::new("a", "m", provider(200, &seen))
                .circuit(CircuitConfig::default().half_open(0, 1)),
        )
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "providers[0].circuit.half_open_permits");
    let err = Stack::builder()
        .provider(ProviderDef::new("a", "m", provider(200, &seen)))
        .circuit(CircuitConfig::default().half_open(0, 1))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "circuit.half_open_permits");
}

/// The configuration example at the top of `tower_failover::config` (what docs.rs
/// shows for every key) is a file the parser takes: a key written under the wrong
/// section there was copied into users' files and refused.
#[test]
fn the_config_module_example_parses() {
    let source = include_str!("../src/config.rs");
    let mut lines = source.lines().map(|l| l.strip_prefix("//!").unwrap_or(l));
    lines
        .by_ref()
        .find(|l| l.trim() == "```toml")
        .expect("a TOML example");
    let example: String = lines
        .take_while(|l| l.trim() != "```")
        .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
        .collect();
    assert!(example.contains("[[providers]]"), "{example}");
    let config = tower_failover::Config::from_toml_str(&example)
        .unwrap_or_else(|e| panic!("{e}\n{example}"));
    assert_eq!(config.providers.len(), 2);
    assert_eq!(config.default_model.as_deref(), Some("gpt-4o-mini"));
}

/// An entry for a hosted API with no key is refused when the stack is built,
/// naming the entry: every request would have been a 401 that opens the circuit
/// for minutes (callers saw failovers and 503s, not why). A server of one's own
/// needs none; a key in `headers` counts.
#[tokio::test]
async fn a_hosted_api_without_a_key_is_refused_at_build() {
    let keyless = |extra: &str| {
        tower_failover::Config::from_toml_str(&format!(
            "[[providers]]\nname = \"anthropic\"\nmodel = \"claude-haiku-4-5\"\nkind = \"anthropic\"\n{extra}"
        ))
        .unwrap()
    };
    let err = Stack::from_config(&keyless("")).unwrap_err().to_string();
    assert!(
        err.starts_with("providers[0].api_key_env: is not set, and api.anthropic.com"),
        "{err}"
    );
    assert!(Stack::from_config(&keyless("headers = { x-api-key = \"sk-ant-0000\" }")).is_ok());
    assert!(Stack::from_config(&keyless("base_url = \"http://127.0.0.1:8000\"")).is_ok());
}
