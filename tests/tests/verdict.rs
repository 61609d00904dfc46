//! One verdict per attempt, through what users run (`Stack::from_config` with a
//! classifier of their own): the observer at the bottom of each provider's stack
//! classifies each answer once, and the circuit breaker, the ramp, the
//! same-provider retry and the router read its verdict instead of classifying the
//! answer again; a classifier of one's own still decides what every layer does.
//! Simulated providers over real loopback HTTP; assertions are on counts.

mod common;

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tower::ServiceExt;
use tower_failover::sim::{Fault, FaultSpec, Flavor, Sim};
use tower_failover::{
    Classify, Config, Failover, FailureKind, LlmClassifier, Outcome, Slot, Stack, StackBuilder,
};

/// The default classifier, counting how often it is asked about an answer; a 418
/// (which the default calls the caller's error) is the provider overloaded.
#[derive(Clone, Default)]
struct Counting {
    answers: Arc<AtomicU64>,
}

impl Classify for Counting {
    fn classify_response<B>(&self, res: &Response<B>) -> Outcome {
        self.answers.fetch_add(1, Ordering::Relaxed);
        match res.status().as_u16() {
            418 => Outcome::failure(FailureKind::Overloaded),
            _ => LlmClassifier::default().classify_response(res),
        }
    }

    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        LlmClassifier::default().classify_error(error)
    }
}

async fn sim(name: &str, seed: u64) -> Sim {
    common::fast_sim(Flavor::OpenAi, name, seed).await
}

/// The builder of a fallback chain over `primary` then `backup`, as a file says.
fn builder(primary: &Sim, backup: &Sim, extra: &str) -> StackBuilder {
    let text = format!(
        "router = \"fallback\"\n{extra}\n{}{}",
        common::provider_entry("primary", "openai", primary.base_url(), 0),
        common::provider_entry("backup", "openai", backup.base_url(), 1),
    );
    let config = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    Stack::from_config(&config).unwrap_or_else(|e| panic!("{e}\n{text}"))
}

/// One caller, read to the end of its answer: the status.
async fn call(stack: &Failover) -> u16 {
    let req = Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(r#"{"model":"m","messages":[{"role":"user","content":"Say hello"}]}"#.to_owned())
        .unwrap();
    // A generous guard against a hang, not a timing assertion.
    let res = tokio::time::timeout(Duration::from_secs(60), stack.clone().oneshot(req))
        .await
        .expect("a caller never hangs")
        .expect("an answer");
    let status = res.status().as_u16();
    res.into_body().collect().await.expect("a whole body");
    status
}

fn chats(sim: &Sim) -> u64 {
    sim.counters().chat_completions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_classifier_runs_once_per_attempt() {
    let (primary, backup) = (sim("primary", 1).await, sim("backup", 2).await);
    let counting = Counting::default();
    let stack = builder(&primary, &backup, "")
        .classifier(counting.clone())
        .build()
        .unwrap();

    for _ in 0..5 {
        assert_eq!(call(&stack).await, 200);
    }
    assert_eq!(chats(&primary), 5);
    assert_eq!(
        counting.answers.load(Ordering::Relaxed),
        5,
        "five answers, each classified once, by the observer"
    );

    // Two 502s: the attempt, its same-provider retry, then the backup's answer.
    primary
        .set_faults([FaultSpec::always(Fault::Status(502)).limit(2)])
        .unwrap();
    assert_eq!(call(&stack).await, 200);
    // The attempts as each provider's health counted them (the simulator counts a
    // faulted request apart from its completions).
    let snapshot = stack.handle().snapshot();
    let (p, b) = (
        &snapshot.providers[0].health.counters,
        &snapshot.providers[1].health.counters,
    );
    assert_eq!((p.requests, p.failures, b.requests), (7, 2, 1));
    assert_eq!(
        counting.answers.load(Ordering::Relaxed),
        p.requests + b.requests,
        "once per attempt, through the retry and the failover"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_classifier_of_ones_own_decides_every_layer() {
    // With the observer (every layer reads its verdict) and without it (every
    // layer consults the classifier itself), the custom verdict is what counts.
    for observer in [true, false] {
        let (primary, backup) = (sim("primary", 3).await, sim("backup", 4).await);
        let counting = Counting::default();
        let mut b = builder(&primary, &backup, "retry = false").classifier(counting.clone());
        if !observer {
            b = b.observe(Slot::Off);
        }
        let stack = b.build().unwrap();
        primary
            .set_faults([FaultSpec::always(Fault::Status(418))])
            .unwrap();
        // The default would hand the 418 to the caller; this classifier calls it
        // the provider's overload, so the router fails over to the backup.
        assert_eq!(call(&stack).await, 200, "observer: {observer}");
        assert_eq!((chats(&primary), chats(&backup)), (1, 1));
        let asked = counting.answers.load(Ordering::Relaxed);
        if observer {
            assert_eq!(asked, 2, "once per attempt");
            let snapshot = stack.handle().snapshot();
            assert_eq!(snapshot.providers[0].health.counters.failures, 1);
        } else {
            assert!(asked > 2, "each layer asks for itself: {asked}");
        }
        // Five overloads open the primary's circuit, as the classifier says.
        for _ in 0..5 {
            assert_eq!(call(&stack).await, 200);
        }
        assert_eq!(
            stack.handle().snapshot().providers[0].health.circuit,
            tower_failover::CircuitState::Open,
            "observer: {observer}"
        );
    }
}
