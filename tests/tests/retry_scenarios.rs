//! Scenarios against simulated providers over real loopback HTTP: the full
//! per-provider stack (provider client → ObserveLayer → circuit breaker) under the
//! balancer, with the retry pieces of this crate on top.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_failover_balance::{Balance, BalanceConfig};
use tower_failover_circuit::{CircuitBreakerLayer, CircuitConfig};
use tower_failover_core::error::{AllProvidersFailed, Elapsed, find};
use tower_failover_core::observe::{ObserveLayer, ObservedBody};
use tower_failover_core::replay::{ReplayBody, ReplayLayer};
use tower_failover_core::{Health, Registry};
use tower_failover_provider::{OpenAiCompatible, ResponseBody};
use tower_failover_retry::{
    BudgetConfig, DeadlineLayer, HedgeConfig, HedgeLayer, QueueConfig, RetryBudget, WaitQueueLayer,
};
use tower_failover_sim::{Fault, FaultSpec, Flavor, Sim};
use tower_layer::Layer;

type Stack = BoxCloneSyncService<Request<ReplayBody>, http::Response<Bytes>, BoxError>;

const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;

fn request() -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

async fn sim(name: &str, ttft_ms: u64, seed: u64) -> Sim {
    Sim::builder(Flavor::OpenAi)
        .name(name)
        .seed(seed)
        .ttft(Duration::from_millis(ttft_ms))
        .token_interval(Duration::ZERO)
        .start()
        .await
        .unwrap()
}

/// One provider's stack, with the body collected so stacks share one type.
fn stack(sim: &Sim, health: &Health, circuit: Option<CircuitConfig>) -> Stack {
    let client = OpenAiCompatible::builder()
        .name(health.id().provider())
        .base_url(format!("{}/v1", sim.base_url()))
        .api_key("sk-test")
        .first_byte_timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let observed = ObserveLayer::new(health.clone()).layer(client);
    let collected = ServiceExt::<Request<ReplayBody>>::and_then(observed, to_full);
    match circuit {
        // The breaker counts a 2xx when its body ends: read it through.
        Some(cfg) => BoxCloneSyncService::new(ServiceExt::<Request<ReplayBody>>::and_then(
            CircuitBreakerLayer::with_config(health.clone(), cfg)
                .unwrap()
                .layer(collected),
            to_bytes,
        )),
        None => BoxCloneSyncService::new(ServiceExt::<Request<ReplayBody>>::and_then(
            collected, to_bytes,
        )),
    }
}

/// Reads a body whole (where the observer and the breaker judge a 2xx).
async fn to_bytes<B>(res: http::Response<B>) -> Result<http::Response<Bytes>, BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = res.into_parts();
    let bytes = http_body_util::BodyExt::collect(body)
        .await
        .map_err(Into::into)?
        .to_bytes();
    Ok(http::Response::from_parts(parts, bytes))
}

async fn to_full(
    res: http::Response<ObservedBody<ResponseBody>>,
) -> Result<http::Response<http_body_util::Full<Bytes>>, BoxError> {
    let res = to_bytes(res).await?;
    Ok(res.map(http_body_util::Full::new))
}

fn router(
    registry: &Registry,
    sims: &[&Sim],
    circuit: Option<CircuitConfig>,
    budget: Option<Arc<RetryBudget>>,
) -> Balance<Stack> {
    let mut b = Balance::builder().config(BalanceConfig::default().seed(7));
    for (i, s) in sims.iter().enumerate() {
        let h = registry.provider(&format!("p{i}"), "m");
        b = b.provider(h.clone(), stack(s, &h, circuit.clone()));
    }
    if let Some(budget) = budget {
        b = b.budget(budget);
    }
    b.build().unwrap()
}

fn upstream(sims: &[&Sim]) -> u64 {
    sims.iter().map(|s| s.counters().received).sum()
}

/// (1) A correlated outage of every provider: the shared budget keeps upstream
/// requests to the first attempts plus the allowed retries, and callers get
/// `AllProvidersFailed`, soon with a `Retry-After` and without trying anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn correlated_outage_stays_within_the_retry_budget() {
    let (a, b, c) = (
        sim("a", 1, 1).await,
        sim("b", 1, 2).await,
        sim("c", 1, 3).await,
    );
    let sims = [&a, &b, &c];
    for s in sims {
        s.set_faults([FaultSpec::always(Fault::Status(503))])
            .unwrap();
    }
    const N: u64 = 100;

    // Without a budget and without breakers every request tries all three.
    let registry = Registry::new();
    let svc = ReplayLayer::new(1 << 20).layer(router(&registry, &sims, None, None));
    for _ in 0..N {
        let err = svc.clone().oneshot(request()).await.unwrap_err();
        assert!(find::<AllProvidersFailed>(&*err).is_some(), "{err}");
    }
    let unbounded = upstream(&sims);
    assert_eq!(unbounded, 3 * N, "control: every hop retried");

    // With one budget for every hop: at most N first attempts + 20 % + the floor.
    for s in sims {
        s.handle().reset_counters();
    }
    let budget = Arc::new(
        RetryBudget::new(BudgetConfig {
            window: Duration::from_secs(10),
            min_per_second: 1,
            ratio: 0.2,
        })
        .unwrap(),
    );
    let registry = Registry::new();
    let svc = ReplayLayer::new(1 << 20).layer(router(&registry, &sims, None, Some(budget)));
    let mut said_budget = 0;
    for _ in 0..N {
        let err = svc.clone().oneshot(request()).await.unwrap_err();
        let all = find::<AllProvidersFailed>(&*err).expect("AllProvidersFailed");
        if all.reason() == Some("retry budget exhausted") {
            said_budget += 1;
        }
    }
    let bounded = upstream(&sims);
    let allowance = N + N / 5 + 10;
    println!(
        "upstream requests: {unbounded} without a budget, {bounded} with one (allowance {allowance})"
    );
    assert!(
        bounded <= allowance,
        "{bounded} upstream requests > {allowance}"
    );
    assert!(bounded >= N, "every request got its first attempt");
    assert!(said_budget > 0, "callers are told the budget ran out");

    // With breakers too: once every circuit is open, callers fail at once with a
    // Retry-After hint and no request reaches a provider.
    for s in sims {
        s.handle().reset_counters();
    }
    let registry = Registry::new();
    let breaker = CircuitConfig::default().consecutive_failures(3);
    let svc = ReplayLayer::new(1 << 20).layer(router(&registry, &sims, Some(breaker), None));
    for _ in 0..20 {
        let _ = svc.clone().oneshot(request()).await;
    }
    let before = upstream(&sims);
    assert!(
        before <= 9 + 3,
        "three failures per provider open its circuit, got {before}"
    );
    let err = svc.clone().oneshot(request()).await.unwrap_err();
    let all = find::<AllProvidersFailed>(&*err).expect("AllProvidersFailed");
    assert!(
        all.retry_after().is_some_and(|d| d > Duration::ZERO),
        "{err}"
    );
    assert!(
        all.attempts().iter().all(|a| !a.outcome.is_failure()),
        "no attempt reached a provider: {err}"
    );
    assert_eq!(upstream(&sims), before);
}

/// (2) With the wait queue: requests that arrive during a short total outage
/// complete after recovery within their deadline; those whose deadline is shorter
/// than the outage get a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queued_requests_complete_after_a_short_total_outage() {
    let (a, b) = (sim("a", 1, 1).await, sim("b", 1, 2).await);
    let sims = [&a, &b];
    let registry = Registry::new();
    let breaker = CircuitConfig::default()
        .consecutive_failures(2)
        .cooldown(Duration::from_millis(300), Duration::from_millis(300))
        .jitter(0.0)
        .half_open(1, 1);
    let routed = router(&registry, &sims, Some(breaker), None);
    let queue = WaitQueueLayer::with_config(
        registry.clone(),
        QueueConfig {
            capacity: 64,
            max_wait: Duration::from_secs(10),
        },
    )
    .unwrap();
    // Tripping goes around the queue (it would hold those requests too).
    let direct = ReplayLayer::new(1 << 20).layer(routed.clone());
    let svc = ServiceBuilder::new()
        .layer(ReplayLayer::new(1 << 20))
        .layer(queue.clone())
        .service(routed);

    for s in sims {
        s.set_faults([FaultSpec::always(Fault::Status(503))])
            .unwrap();
    }
    // Trip both circuits.
    for _ in 0..6 {
        let _ = direct.clone().oneshot(request()).await;
    }
    let started = Instant::now();
    let patient: Vec<_> = (0..10)
        .map(|_| {
            let svc = DeadlineLayer::new(Duration::from_secs(5)).layer(svc.clone());
            tokio::spawn(svc.oneshot(request()))
        })
        .collect();
    let hasty: Vec<_> = (0..5)
        .map(|_| {
            let svc = DeadlineLayer::new(Duration::from_millis(200)).layer(svc.clone());
            tokio::spawn(svc.oneshot(request()))
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        queue.waiting() >= 10,
        "requests wait instead of failing: {}",
        queue.waiting()
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    for s in sims {
        s.clear_faults();
    }
    for h in patient {
        let res = h.await.unwrap().expect("served after recovery");
        assert_eq!(res.status(), 200);
    }
    for h in hasty {
        let err = h.await.unwrap().unwrap_err();
        assert!(
            find::<Elapsed>(&*err).is_some(),
            "a clear timeout error, got: {err}"
        );
    }
    println!(
        "patient requests served {:?} after the outage began",
        started.elapsed()
    );
    assert_eq!(queue.waiting(), 0);
}

fn percentile(mut v: Vec<Duration>, p: f64) -> Duration {
    v.sort();
    v[((v.len() - 1) as f64 * p).round() as usize]
}

/// (3) Hedging cuts p99 when providers have a slow tail. Compared in the same run,
/// with a wide margin (a 25x slowdown against a 60 ms hedge). The tail is on both
/// providers: a tail on one alone is already avoided by the latency-aware balancer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hedging_cuts_the_slow_tail() {
    let (a, b) = (sim("a", 20, 1).await, sim("b", 20, 2).await);
    for s in [&a, &b] {
        s.set_faults([FaultSpec::always(Fault::Slowdown(25.0)).fraction(0.1)])
            .unwrap();
    }
    let sims = [&a, &b];
    const N: usize = 80;

    async fn run(
        svc: impl Service<Request<Full<Bytes>>, Response = http::Response<Bytes>, Error = BoxError>
        + Clone,
    ) -> Vec<Duration> {
        let mut lat = Vec::with_capacity(N);
        for _ in 0..N {
            let t = Instant::now();
            let res = svc.clone().oneshot(request()).await.unwrap();
            assert_eq!(res.status(), 200);
            lat.push(t.elapsed());
        }
        lat
    }

    let plain = ReplayLayer::new(1 << 20).layer(router(&Registry::new(), &sims, None, None));
    let plain_lat = run(plain).await;

    let budget = Arc::new(
        RetryBudget::new(BudgetConfig {
            ratio: 0.5,
            ..BudgetConfig::default()
        })
        .unwrap(),
    );
    let hedged_calls = Arc::new(AtomicU64::new(0));
    let hedge = HedgeLayer::with_config(HedgeConfig {
        initial_delay: Duration::from_millis(60),
        min_delay: Duration::from_millis(60),
        percentile: 0.9,
        window: 64,
    })
    .unwrap()
    .budget(budget);
    let hedged = ServiceBuilder::new()
        .layer(ReplayLayer::new(1 << 20))
        .layer(hedge)
        .service(router(&Registry::new(), &sims, None, None));
    let before = upstream(&sims);
    let hedged_lat = run(hedged).await;
    hedged_calls.store(upstream(&sims) - before, Ordering::Relaxed);

    let (p99_plain, p99_hedged) = (percentile(plain_lat, 0.99), percentile(hedged_lat, 0.99));
    println!(
        "p99 without hedging {p99_plain:?}, with hedging {p99_hedged:?}; {} upstream calls for {N} requests",
        hedged_calls.load(Ordering::Relaxed)
    );
    assert!(
        p99_plain >= Duration::from_millis(400),
        "the slow tail shows without hedging: {p99_plain:?}"
    );
    assert!(
        p99_hedged * 2 < p99_plain,
        "hedging cuts p99: {p99_hedged:?} vs {p99_plain:?}"
    );
    assert!(
        hedged_calls.load(Ordering::Relaxed) < (N as u64) * 3 / 2,
        "hedges stay a minority"
    );
}
