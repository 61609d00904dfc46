//! Scenario: a simulated provider (tower-failover-sim, real HTTP on loopback) goes
//! down. At most the threshold of requests reach it before the circuit opens; after
//! that only probes do, one per cooldown; when it comes back, the probes close the
//! circuit. The sim's own counters say what reached it.
//!
//! Real time: the sim is a real server. Cooldowns are short (100 ms) and every wait
//! is bounded, so the test ends by itself on a busy machine too.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::BodyExt;
use http_body_util::Full;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::timeout;
use tower::{BoxError, Service, ServiceExt};
use tower_failover_circuit::{CircuitBreaker, CircuitBreakerLayer, CircuitConfig, OpenMode};
use tower_failover_core::error::{CircuitOpen, find};
use tower_failover_core::{CircuitState, Health, HealthEventKind};
use tower_failover_sim::{Fault, FaultSpec, Flavor, Sim};

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn request(sim: &Sim) -> Request<Full<Bytes>> {
    Request::post(sim.completion_url())
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

fn config(mode: OpenMode) -> CircuitConfig {
    CircuitConfig::default()
        .mode(mode)
        .consecutive_failures(5)
        .cooldown(Duration::from_millis(100), Duration::from_millis(400))
        .jitter(0.0)
        .half_open(1, 3)
}

async fn start() -> (Sim, Health, HttpClient) {
    let sim = Sim::builder(Flavor::OpenAi)
        .seed(5)
        .ttft(Duration::from_millis(1))
        .start()
        .await
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http();
    (sim, Health::standalone("sim", "gpt-4o-mini"), client)
}

/// Sends one request; `Ok(status)` if it reached the provider, `Err(retry_in)` if
/// the circuit refused it.
async fn send(svc: &mut CircuitBreaker<HttpClient>, sim: &Sim) -> Result<u16, Duration> {
    let ready = timeout(Duration::from_secs(10), svc.ready())
        .await
        .expect("poll_ready hung")
        .unwrap();
    match ready.call(request(sim)).await {
        Ok(res) => {
            let status = res.status().as_u16();
            // A 2xx is counted when its body ends: read it, as a caller would.
            let _ = res.into_body().collect().await;
            Ok(status)
        }
        Err(err) => Err(refusal(&err)),
    }
}

fn refusal(err: &BoxError) -> Duration {
    find::<CircuitOpen>(&**err)
        .unwrap_or_else(|| panic!("unexpected error: {err}"))
        .retry_in()
}

fn half_opens(
    events: &mut tokio::sync::broadcast::Receiver<tower_failover_core::HealthEvent>,
) -> u64 {
    let mut n = 0;
    while let Ok(ev) = events.try_recv() {
        if let HealthEventKind::CircuitChanged {
            to: CircuitState::HalfOpen,
            ..
        } = ev.kind
        {
            n += 1;
        }
    }
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_outage_sends_it_the_threshold_then_only_probes() {
    let (sim, health, client) = start().await;
    let layer =
        CircuitBreakerLayer::with_config(health.clone(), config(OpenMode::FailFast)).unwrap();
    let mut svc = layer.layer_client(client);
    let mut events = health.subscribe();

    // Healthy.
    for _ in 0..5 {
        assert_eq!(send(&mut svc, &sim).await, Ok(200));
    }
    assert_eq!(sim.counters().received, 5);

    // The outage starts. Fifty callers in a row: the first five reach it, then the
    // circuit is open and the rest are refused without being sent.
    sim.set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    sim.handle().reset_counters();
    let mut refused = 0;
    for _ in 0..50 {
        match send(&mut svc, &sim).await {
            Ok(status) => assert_eq!(status, 503),
            Err(_) => refused += 1,
        }
    }
    // The cooldown is 100 ms: on a very slow machine it could end during the 45
    // refusals, and then a probe (and only a probe) goes out.
    let probes_so_far = half_opens(&mut events);
    assert_eq!(
        sim.counters().received,
        5 + probes_so_far,
        "exactly the threshold reached it, then only probes"
    );
    assert_eq!(refused, 45 - probes_so_far);
    assert_eq!(health.counters().shed, refused);

    // While it stays down: keep calling (waiting what the refusal says), and only
    // probes reach it: one per cooldown, each re-opening the circuit for longer.
    let mut probes = probes_so_far;
    sim.handle().reset_counters();
    while probes < probes_so_far + 3 {
        match send(&mut svc, &sim).await {
            Ok(status) => {
                assert_eq!(status, 503);
                probes += 1;
                assert_eq!(health.breaker_state(), CircuitState::Open);
            }
            Err(retry_in) => tokio::time::sleep(retry_in.max(Duration::from_millis(1))).await,
        }
    }
    assert_eq!(sim.counters().received, 3, "nothing but the probes");
    assert_eq!(half_opens(&mut events), 3, "one probe per half-open period");
    assert_eq!(health.trips(), 1 + probes as u32);

    // It recovers: three good probes close the circuit, then everything flows.
    sim.clear_faults();
    sim.handle().reset_counters();
    while health.circuit() != CircuitState::Closed {
        if let Err(retry_in) = send(&mut svc, &sim).await {
            tokio::time::sleep(retry_in.max(Duration::from_millis(1))).await;
        }
    }
    assert_eq!(sim.counters().received, 3, "three probes closed it");
    for _ in 0..10 {
        assert_eq!(send(&mut svc, &sim).await, Ok(200));
    }
    assert_eq!(sim.counters().received, 13);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_breaker_holds_callers_until_a_probe_is_due() {
    let (sim, health, client) = start().await;
    let layer =
        CircuitBreakerLayer::with_config(health.clone(), config(OpenMode::GatePollReady)).unwrap();
    let mut svc = layer.layer_client(client);
    let mut events = health.subscribe();

    sim.set_faults([FaultSpec::always(Fault::Status(503))])
        .unwrap();
    // Each call waits in poll_ready while the circuit is open (no refusals, no
    // sleeps here): five failures trip it, and every later call is a probe that
    // went out when the breaker woke it at the end of a cooldown.
    for i in 0..8 {
        assert_eq!(send(&mut svc, &sim).await, Ok(503), "call {i}");
    }
    assert_eq!(sim.counters().received, 8);
    assert_eq!(half_opens(&mut events), 3, "calls 6, 7 and 8 were probes");
    assert_eq!(health.trips(), 4);
    assert_eq!(health.counters().shed, 0, "nobody was refused");

    sim.clear_faults();
    for _ in 0..5 {
        assert_eq!(send(&mut svc, &sim).await, Ok(200));
    }
    assert_eq!(health.circuit(), CircuitState::Closed);
    sim.shutdown().await;
}

/// `layer.layer(client)` with the service type spelled out.
trait LayerClient {
    fn layer_client(&self, client: HttpClient) -> CircuitBreaker<HttpClient>;
}

impl LayerClient for CircuitBreakerLayer {
    fn layer_client(&self, client: HttpClient) -> CircuitBreaker<HttpClient> {
        tower::Layer::layer(self, client)
    }
}

// The client is a plain tower service: nothing of ours is needed to wrap it.
const _: fn() = || {
    fn is_service<S: Service<Request<Full<Bytes>>>>() {}
    is_service::<HttpClient>();
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_connections_weigh_more() {
    let (sim, health, _) = start().await;
    // No pooled connection: every request connects, so every failure is a refusal.
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(0)
        .build_http();
    let config = config(OpenMode::FailFast)
        .consecutive_failures(5)
        .weight(tower_failover_core::FailureKind::Connect, 2.5);
    let layer = CircuitBreakerLayer::with_config(health.clone(), config).unwrap();
    let mut svc = layer.layer_client(client);
    assert_eq!(send(&mut svc, &sim).await, Ok(200));

    // The sim closes its listening socket: connecting fails with ECONNREFUSED.
    sim.set_faults([FaultSpec::always(Fault::Refuse)]).unwrap();
    // The listener closes in the background: wait (bounded) until connecting fails.
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(sim.addr()).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut errors = 0;
    while health.circuit() == CircuitState::Closed && errors < 10 {
        let ready = svc.ready().await.unwrap();
        let err = ready.call(request(&sim)).await.unwrap_err();
        assert!(find::<CircuitOpen>(&*err).is_none(), "{err}");
        errors += 1;
    }
    assert_eq!(errors, 2, "two refused connections open the circuit");
    assert!(send(&mut svc, &sim).await.is_err(), "then it refuses");
    sim.shutdown().await;
}
