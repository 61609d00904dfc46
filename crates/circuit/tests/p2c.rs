//! Both open modes under tower's own power-of-two-choices balancer
//! (`tower::balance::p2c`), with a provider that is down and one that is healthy.
//!
//! Gated: the balancer never picks the open provider (its `poll_ready` is pending),
//! so callers only ever see the healthy one; when the cooldown ends the breaker
//! wakes the balancer, which lets exactly one probe through.
//!
//! Fail fast: the open provider stays "ready", so the balancer still picks it about
//! half the time and those calls fail at once with `CircuitOpen` without reaching it
//! (a retry layer above would send them elsewhere).

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tower::balance::p2c::Balance;
use tower::discover::ServiceList;
use tower::load::{CompleteOnResponse, PendingRequests};
use tower::{BoxError, Service, ServiceExt, service_fn};
use tower_failover_circuit::future::CircuitBody;
use tower_failover_circuit::{CircuitBreakerLayer, CircuitConfig, OpenMode};
use tower_failover_core::error::{CircuitOpen, find};
use tower_failover_core::{CircuitState, Health, LlmClassifier};

/// tower's balancer with our seeded generator, so the picks replay.
struct Seeded(tower_failover_core::rng::Rng);

impl tower::util::rng::Rng for Seeded {
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
}

struct Setup<B> {
    down_calls: Arc<AtomicUsize>,
    down: Health,
    up: Health,
    balance: B,
}

/// What a caller gets: the provider's body, wrapped by the breaker (whose 2xx
/// verdicts wait for the end of the body; these tests count only 503s).
type Res = Response<CircuitBody<(), LlmClassifier>>;

impl<B> Setup<B>
where
    B: Service<Request<()>, Response = Res, Error = BoxError>,
{
    async fn send(&mut self) -> Result<u16, BoxError> {
        let res = self.balance.ready().await?.call(Request::new(())).await?;
        Ok(res.status().as_u16())
    }
}

fn setup(mode: OpenMode) -> Setup<impl Service<Request<()>, Response = Res, Error = BoxError>> {
    let down = Health::standalone("down", "m");
    let up = Health::standalone("up", "m");
    let down_calls = Arc::new(AtomicUsize::new(0));
    let config = CircuitConfig::default().mode(mode).jitter(0.0);
    let stack = |health: &Health, status: u16, calls: Arc<AtomicUsize>| {
        let layer = CircuitBreakerLayer::with_config(health.clone(), config.clone()).unwrap();
        let provider = service_fn(move |_req: Request<()>| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move { Ok::<_, Infallible>(Response::builder().status(status).body(()).unwrap()) }
        });
        PendingRequests::new(
            tower::ServiceBuilder::new().layer(layer).service(provider),
            CompleteOnResponse::default(),
        )
    };
    let services = vec![
        stack(&down, 503, down_calls.clone()),
        stack(&up, 200, Arc::default()),
    ];
    let balance = Balance::from_rng(
        ServiceList::new(services),
        Seeded(tower_failover_core::rng::Rng::seeded(11)),
    );
    Setup {
        down_calls,
        down,
        up,
        balance,
    }
}

#[tokio::test(start_paused = true)]
async fn gated_breaker_keeps_p2c_away_from_an_open_provider() {
    let mut s = setup(OpenMode::GatePollReady);
    let mut statuses = Vec::new();
    for _ in 0..100 {
        statuses.push(s.send().await.unwrap());
    }
    assert_eq!(
        s.down_calls.load(Ordering::SeqCst),
        5,
        "the threshold, then nothing"
    );
    assert_eq!(s.down.circuit(), CircuitState::Open);
    assert_eq!(statuses.iter().filter(|s| **s == 503).count(), 5);
    // Once open, every request went to the healthy provider, without an error.
    let last_503 = statuses.iter().rposition(|s| *s == 503).unwrap();
    assert!(statuses[last_503 + 1..].iter().all(|s| *s == 200));
    assert!(statuses.len() - last_503 > 80);

    // The cooldown ends: the breaker wakes the balancer and one probe goes out. It
    // fails, so the circuit re-opens for 60 s and the rest go to the healthy one.
    tokio::time::advance(Duration::from_secs(30)).await;
    for _ in 0..100 {
        s.send().await.unwrap();
    }
    assert_eq!(s.down_calls.load(Ordering::SeqCst), 6, "exactly one probe");
    assert_eq!(s.down.trips(), 2);
    assert_eq!(s.up.circuit(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn fail_fast_breaker_under_p2c_refuses_without_sending() {
    let mut s = setup(OpenMode::FailFast);
    let (mut ok, mut refused, mut failed) = (0, 0, 0);
    for _ in 0..100 {
        match s.send().await {
            Ok(200) => ok += 1,
            Ok(_) => failed += 1,
            Err(e) => {
                assert!(find::<CircuitOpen>(&*e).is_some(), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(failed, 5);
    assert_eq!(
        s.down_calls.load(Ordering::SeqCst),
        5,
        "refusals never reach it"
    );
    assert!(refused > 20 && ok > 20, "refused {refused}, ok {ok}");
    assert_eq!(s.down.counters().shed, refused as u64);
}
