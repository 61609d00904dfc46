//! Active probes under paused time.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Provider, outage, ramp_events, recovery, send, settle};
use http::{Method, Request, Response};
use tokio::time::{Instant, sleep};
use tower::{BoxError, Layer, service_fn};
use tower_failover_core::store::{StateStore, StoreStatus};
use tower_failover_core::{
    CircuitState, Health, HealthConfig, HealthEventKind, ProviderId, Registry, SharedUpdate,
};
use tower_failover_ramp::{ProbeConfig, Prober, RampConfig, RampLayer};

/// A probe target that records what it was sent and answers `status`.
#[derive(Clone)]
struct Target {
    seen: Arc<Mutex<Vec<(Method, String)>>>,
    status: Arc<Mutex<u16>>,
}

impl Target {
    fn new(status: u16) -> Self {
        Target {
            seen: Arc::default(),
            status: Arc::new(Mutex::new(status)),
        }
    }

    fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }

    fn prober(&self, config: &ProbeConfig) -> Prober {
        let t = self.clone();
        let svc = service_fn(move |req: Request<bytes::Bytes>| {
            t.seen
                .lock()
                .unwrap()
                .push((req.method().clone(), req.uri().to_string()));
            let status = *t.status.lock().unwrap();
            async move { Ok::<_, BoxError>(Response::builder().status(status).body(String::new())?) }
        });
        Prober::new(svc, config).unwrap()
    }
}

fn layer_with(health: &Health, target: &Target, config: ProbeConfig) -> RampLayer {
    RampLayer::with_config(health.clone(), RampConfig::default().seed(1))
        .unwrap()
        .with_prober(target.prober(&config))
}

#[tokio::test(start_paused = true)]
async fn a_passing_probe_half_opens_an_open_circuit_early() {
    let health = Health::standalone("p", "m");
    let mut events = health.subscribe();
    let target = Target::new(200);
    let layer = layer_with(&health, &target, ProbeConfig::default());
    assert!(layer.probes());
    let _svc = layer.layer(Provider::default());
    settle().await;
    sleep(Duration::from_secs(30)).await;
    assert_eq!(
        target.count(),
        0,
        "a closed, busy-enough provider is not probed"
    );

    outage(&health).await; // open for 30 s
    sleep(Duration::from_secs(10)).await;
    settle().await;
    assert_eq!(
        target.seen.lock().unwrap().as_slice(),
        &[(Method::GET, "/v1/models".to_owned())]
    );
    assert_eq!(
        health.circuit(),
        CircuitState::HalfOpen,
        "20 s before the cooldown ends"
    );
    assert_eq!(
        ramp_events(&mut events),
        vec![HealthEventKind::Probe { ok: true }]
    );
    sleep(Duration::from_secs(60)).await;
    assert_eq!(
        target.count(),
        1,
        "half-open: the breaker's trials take over"
    );
}

#[tokio::test(start_paused = true)]
async fn failing_and_hanging_probes_change_nothing() {
    let health = Health::standalone("p", "m");
    let mut events = health.subscribe();
    let target = Target::new(503);
    let _svc = layer_with(&health, &target, ProbeConfig::default()).layer(Provider::default());
    outage(&health).await;
    sleep(Duration::from_secs(35)).await;
    settle().await;
    assert_eq!(target.count(), 3);
    assert_eq!(health.circuit(), CircuitState::Open);
    assert_eq!(
        ramp_events(&mut events),
        vec![HealthEventKind::Probe { ok: false }; 3]
    );

    let health = Health::standalone("p", "m");
    let mut events = health.subscribe();
    let hang = service_fn(|_req: Request<bytes::Bytes>| async {
        std::future::pending::<Result<Response<String>, BoxError>>().await
    });
    let config = ProbeConfig::default().timeout(Duration::from_secs(2));
    let layer = RampLayer::with_config(health.clone(), RampConfig::default())
        .unwrap()
        .with_prober(Prober::new(hang, &config).unwrap());
    let _svc = layer.layer(Provider::default());
    outage(&health).await;
    sleep(Duration::from_secs(11)).await;
    settle().await;
    assert_eq!(health.circuit(), CircuitState::Open);
    sleep(Duration::from_secs(2)).await;
    settle().await;
    assert_eq!(
        ramp_events(&mut events),
        vec![HealthEventKind::Probe { ok: false }]
    );
}

#[tokio::test(start_paused = true)]
async fn idle_providers_are_probed_when_asked_to() {
    let health = Health::standalone("p", "m");
    let target = Target::new(200);
    let config = ProbeConfig::default()
        .request("POST", "http://127.0.0.1:9/v1/chat/completions")
        .body("{}")
        .idle_after(Some(Duration::from_secs(60)));
    let mut svc = layer_with(&health, &target, config).layer(Provider::default());
    // Busy: a request every 10 s.
    for _ in 0..12 {
        send(&mut svc, 1).await;
        sleep(Duration::from_secs(10)).await;
    }
    assert_eq!(target.count(), 0);
    // The last request was at 110 s: not idle yet at 165 s...
    sleep(Duration::from_secs(45)).await;
    settle().await;
    assert_eq!(target.count(), 0);
    // ...and probed every interval once a minute has passed without requests
    // (from 170 s or 180 s, depending on which task the clock wakes first).
    sleep(Duration::from_secs(45)).await;
    settle().await;
    let n = target.count();
    assert!((4..=5).contains(&n), "{n}");
    assert_eq!(target.seen.lock().unwrap()[0].0, Method::POST);
    assert_eq!(health.circuit(), CircuitState::Closed);
}

#[derive(Debug)]
struct RefusingStore;

impl StateStore for RefusingStore {
    fn publish(&self, _provider: &ProviderId, _update: &SharedUpdate) {}

    fn try_lease(&self, _provider: &ProviderId, what: &str, _ttl: Duration) -> bool {
        assert_eq!(what, "probe");
        false
    }

    fn status(&self) -> StoreStatus {
        StoreStatus {
            kind: "refusing".to_owned(),
            connected: true,
            detail: None,
        }
    }
}

#[tokio::test(start_paused = true)]
async fn only_the_replica_holding_the_lease_probes() {
    let registry = Registry::with_store(Arc::new(RefusingStore), HealthConfig::default());
    let health = registry.provider("p", "m");
    let target = Target::new(200);
    let _svc = layer_with(&health, &target, ProbeConfig::default()).layer(Provider::default());
    outage(&health).await;
    sleep(Duration::from_secs(25)).await;
    assert_eq!(target.count(), 0, "another replica probes");
    assert_eq!(health.circuit(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn one_probe_task_per_provider_aborted_with_the_last_service() {
    let health = Health::standalone("p", "m");
    let target = Target::new(503);
    let layer = layer_with(&health, &target, ProbeConfig::default());
    let services: Vec<_> = (0..20).map(|_| layer.layer(Provider::default())).collect();
    let clones = services.clone();
    outage(&health).await;
    sleep(Duration::from_secs(10)).await;
    settle().await;
    assert_eq!(target.count(), 1, "one probe per interval for 40 services");
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert_eq!(tasks, 2, "a driver and a probe task");
    drop((layer, services, clones));
    settle().await;
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
    sleep(Duration::from_secs(60)).await;
    assert_eq!(target.count(), 1, "aborted");
}

#[tokio::test(start_paused = true)]
async fn a_passing_probe_does_not_cut_a_rollback_cooldown_short() {
    let health = Health::standalone("p", "m");
    let target = Target::new(200);
    let provider = Provider::default();
    let layer = layer_with(&health, &target, ProbeConfig::default());
    let mut svc = layer.layer(provider.clone());
    outage(&health).await;
    recovery(&health).await;
    provider.fail_one_in(2);
    send(&mut svc, 1000).await;
    settle().await;
    assert_eq!(health.circuit(), CircuitState::Open);
    let readmit = Instant::now() + Duration::from_secs(60);
    while Instant::now() + Duration::from_secs(5) < readmit {
        sleep(Duration::from_secs(5)).await;
        settle().await;
        assert_eq!(
            health.circuit(),
            CircuitState::Open,
            "probes pass, but it flapped"
        );
    }
    assert!(target.count() >= 5);
    sleep(Duration::from_secs(11)).await;
    settle().await;
    assert_eq!(
        health.circuit(),
        CircuitState::HalfOpen,
        "after the cooldown, it may"
    );
}

#[test]
fn a_bad_probe_config_is_refused() {
    let target = Target::new(200);
    let svc = service_fn(move |_req: Request<bytes::Bytes>| {
        let _ = &target;
        async { Ok::<_, BoxError>(Response::new(String::new())) }
    });
    let err = Prober::new(svc, &ProbeConfig::default().request("GET", "")).unwrap_err();
    assert_eq!(err.field(), "probe.uri");
}
