//! Scenarios against simulated providers over real loopback HTTP (real time, kept
//! short; counts are asserted, never speed).

mod common;

use std::time::Duration;

use common::*;
use tokio::task::JoinSet;
use tower::{BoxError, ServiceExt};
use tower_failover_balance::{Balance, BalanceConfig, Fallback, ProviderOptions, Weighting};
use tower_failover_circuit::OpenMode;
use tower_failover_core::{CircuitState, Registry};
use tower_failover_sim::{Fault, FaultSpec, Sim};

/// Received-request counts of each sim.
fn received(sims: &[&Sim]) -> Vec<u64> {
    sims.iter().map(|s| s.counters().received).collect()
}

type Tasks = JoinSet<Result<u16, BoxError>>;

/// Spawns one request through `svc`, read to the end.
///
/// Generic on purpose: an `async` block holding a `tower::util::Oneshot` of a
/// concrete service whose error is `BoxError` trips a rustc limitation when checked
/// for `Send` ("implementation of `From` is not general enough"; tower's own
/// `Timeout` does the same). Behind a generic bound the check passes.
fn spawn_one<S>(tasks: &mut Tasks, svc: S)
where
    S: tower::Service<
            http::Request<tower_failover_core::replay::ReplayBody>,
            Response = http::Response<common::StackBody>,
            Error = BoxError,
        > + Send
        + 'static,
    S::Future: Send,
{
    tasks.spawn(async move { status_of(svc.oneshot(chat()).await).await });
}

/// Sends `rate` requests per second through `svc` for `duration`, into `tasks`.
async fn drive<S>(svc: &S, rate: u64, duration: Duration, tasks: &mut Tasks)
where
    S: tower::Service<
            http::Request<tower_failover_core::replay::ReplayBody>,
            Response = http::Response<common::StackBody>,
            Error = BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    let end = tokio::time::Instant::now() + duration;
    loop {
        tick.tick().await;
        if tokio::time::Instant::now() >= end {
            break;
        }
        spawn_one(tasks, svc.clone());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_down_no_request_reaches_it_once_open_and_callers_see_no_errors() {
    for (fault, mode) in [
        (Fault::Status(503), OpenMode::FailFast),
        (Fault::Refuse, OpenMode::GatePollReady),
    ] {
        let primary = sim("primary", Duration::from_millis(5), 1).await;
        let secondary = sim("secondary", Duration::from_millis(5), 2).await;
        primary
            .set_faults([FaultSpec::always(fault.clone())])
            .unwrap();
        let registry = Registry::new();
        let hp = registry.provider("primary", "gpt-4o-mini");
        let hs = registry.provider("secondary", "gpt-4o-mini");
        let client = client();
        let chain = Fallback::new([
            (hp.clone(), stack(&hp, &primary, &client, mode)),
            (hs.clone(), stack(&hs, &secondary, &client, mode)),
        ]);

        // Sequential at first: the breaker trips after its 3 consecutive failures,
        // each of them served by the secondary.
        for _ in 0..10 {
            let status = status_of(chain.clone().oneshot(chat()).await).await;
            assert_eq!(status.unwrap(), 200, "{fault}");
        }
        assert_eq!(hp.circuit(), CircuitState::Open, "{fault}");
        let reached = hp.counters().requests;
        assert_eq!(reached, 3, "{fault}: attempts that reached the primary");
        let primary_seen = primary.counters().received;
        assert!(primary_seen <= 3, "{fault}: {primary_seen}");

        // Then concurrent traffic: nothing more reaches the primary.
        let mut tasks = JoinSet::new();
        for _ in 0..60 {
            spawn_one(&mut tasks, chain.clone());
        }
        while let Some(r) = tasks.join_next().await {
            assert_eq!(r.unwrap().unwrap(), 200, "{fault}");
        }
        assert_eq!(primary.counters().received, primary_seen, "{fault}");
        assert_eq!(hp.counters().requests, 3, "{fault}");
        assert_eq!(secondary.counters().ok(), 70, "{fault}");

        // The same through the balancer.
        let balance = Balance::builder()
            .seed(11)
            .provider(hp.clone(), stack(&hp, &primary, &client, mode))
            .provider(hs.clone(), stack(&hs, &secondary, &client, mode))
            .build()
            .unwrap();
        for _ in 0..20 {
            let status = status_of(balance.clone().oneshot(chat()).await).await;
            assert_eq!(status.unwrap(), 200);
        }
        assert_eq!(primary.counters().received, primary_seen, "{fault}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_slowing_from_300ms_to_4s_loses_its_share_within_2s() {
    let a = sim("a", Duration::from_millis(300), 3).await;
    let b = sim("b", Duration::from_millis(300), 4).await;
    let registry = Registry::new();
    let (ha, hb) = (registry.provider("a", "m"), registry.provider("b", "m"));
    let client = client();
    let balance = Balance::builder()
        .config(BalanceConfig::default().seed(5))
        .provider(ha.clone(), stack(&ha, &a, &client, OpenMode::FailFast))
        .provider(hb.clone(), stack(&hb, &b, &client, OpenMode::FailFast))
        .build()
        .unwrap();
    let sims = [&a, &b];
    let mut tasks = JoinSet::new();

    // One second of warm-up at 100 requests per second: an even split.
    drive(&balance, 100, Duration::from_secs(1), &mut tasks).await;
    let warm = received(&sims);
    let b_share = warm[1] as f64 / (warm[0] + warm[1]) as f64;
    assert!((0.3..0.7).contains(&b_share), "warm-up split {warm:?}");

    // b's time to first token goes from 300 ms to 4 s.
    b.set_faults([FaultSpec::always(Fault::Slowdown(4000.0 / 300.0))])
        .unwrap();
    let t0 = received(&sims);
    drive(&balance, 100, Duration::from_secs(1), &mut tasks).await;
    let t1 = received(&sims);
    drive(&balance, 100, Duration::from_secs(1), &mut tasks).await;
    let t2 = received(&sims);
    tasks.abort_all();

    let share = |from: &[u64], to: &[u64]| {
        let (da, db) = (to[0] - from[0], to[1] - from[1]);
        (db as f64 / (da + db) as f64, da + db)
    };
    let (first, n1) = share(&t0, &t1);
    let (second, n2) = share(&t1, &t2);
    eprintln!(
        "slow provider's share: {:.1} % in the first second ({n1} requests), {:.1} % in the second ({n2})",
        first * 100.0,
        second * 100.0
    );
    assert!(n1 > 80 && n2 > 80, "traffic kept flowing: {n1}, {n2}");
    assert!(second < 0.10, "share in the second second: {second}");
    assert!(
        first < b_share,
        "already falling in the first second: {first}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cost_weights_favour_the_cheap_provider_while_it_is_fast_enough() {
    let cheap = sim("cheap", Duration::from_millis(40), 6).await;
    let dear = sim("dear", Duration::from_millis(40), 7).await;
    let registry = Registry::new();
    let (hc, hd) = (
        registry.provider("cheap", "mini"),
        registry.provider("dear", "large"),
    );
    let client = client();
    let balance = Balance::builder()
        .config(BalanceConfig::default().weighting(Weighting::Cost).seed(8))
        .provider_with(
            hc.clone(),
            stack(&hc, &cheap, &client, OpenMode::FailFast),
            ProviderOptions::default().price_per_million(0.15),
        )
        .provider_with(
            hd.clone(),
            stack(&hd, &dear, &client, OpenMode::FailFast),
            ProviderOptions::default().price_per_million(3.0),
        )
        .build()
        .unwrap();
    let sims = [&cheap, &dear];
    let mut tasks = JoinSet::new();

    drive(&balance, 100, Duration::from_millis(1500), &mut tasks).await;
    let healthy = received(&sims);
    let cheap_share = healthy[0] as f64 / (healthy[0] + healthy[1]) as f64;
    assert!(cheap_share > 0.9, "healthy and fast: {healthy:?}");

    // The cheap provider slows down twenty-fold: it is no longer fast enough.
    cheap
        .set_faults([FaultSpec::always(Fault::Slowdown(20.0))])
        .unwrap();
    drive(&balance, 100, Duration::from_millis(1200), &mut tasks).await;
    let t1 = received(&sims);
    drive(&balance, 100, Duration::from_millis(1000), &mut tasks).await;
    let t2 = received(&sims);
    let (dc, dd) = (t2[0] - t1[0], t2[1] - t1[1]);
    eprintln!(
        "cheap share while healthy {:.1} % ({healthy:?}); after it slowed {dc} vs {dd}",
        cheap_share * 100.0
    );
    assert!(
        dd > dc,
        "slow and cheap loses to fast and dear: {dc} vs {dd}"
    );
    while let Some(r) = tasks.join_next().await {
        assert_eq!(r.unwrap().unwrap(), 200);
    }
}
