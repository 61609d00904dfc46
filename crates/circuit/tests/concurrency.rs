//! Real threads racing for half-open probe permits, some of them cancelling their
//! requests half-way: the provider never sees more probes at once than there are
//! permits, and every permit comes back.

use std::convert::Infallible;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{Service, ServiceExt, service_fn};
use tower_failover_circuit::{CircuitBreakerLayer, CircuitConfig, OpenMode};
use tower_failover_core::{CircuitState, Health};

#[derive(Default)]
struct InFlight {
    now: AtomicUsize,
    max: AtomicUsize,
    total: AtomicUsize,
}

struct Leave(Arc<InFlight>);

impl Drop for Leave {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn race(mode: OpenMode) {
    const PERMITS: u32 = 2;
    let health = Health::standalone("race", "model");
    let config = CircuitConfig::default()
        .mode(mode)
        .half_open(PERMITS, 0xFFFF); // stays half-open for the whole test
    let layer = CircuitBreakerLayer::with_config(health.clone(), config).unwrap();
    // Open, with the cooldown already over: the first caller moves it to half-open.
    assert!(health.transition(
        CircuitState::Closed,
        CircuitState::Open,
        Some(Instant::now())
    ));

    let stats = Arc::new(InFlight::default());
    let provider = service_fn({
        let stats = stats.clone();
        move |_req: Request<()>| {
            let stats = stats.clone();
            async move {
                let n = stats.now.fetch_add(1, Ordering::SeqCst) + 1;
                stats.max.fetch_max(n, Ordering::SeqCst);
                stats.total.fetch_add(1, Ordering::SeqCst);
                // Counted out when answered or cancelled.
                let _guard = Leave(stats.clone());
                for _ in 0..3 {
                    tokio::task::yield_now().await;
                }
                Ok::<_, Infallible>(Response::new(()))
            }
        }
    });
    let svc = tower::ServiceBuilder::new()
        .layer(layer.clone())
        .service(provider);

    let mut tasks = Vec::new();
    for t in 0..8 {
        let svc = svc.clone();
        tasks.push(tokio::spawn(async move {
            let mut ok = 0usize;
            for i in 0..200 {
                let mut svc = svc.clone();
                let Ok(ready) = svc.ready().await else {
                    continue;
                };
                let fut = ready.call(Request::new(()));
                if (t + i) % 3 == 0 {
                    // Cancel after one poll: the permit must come back.
                    let _ = tokio::time::timeout(Duration::ZERO, fut).await;
                } else if fut.await.is_ok() {
                    ok += 1;
                }
            }
            ok
        }));
    }
    let mut ok = 0;
    for task in tasks {
        ok += task.await.unwrap();
    }
    assert!(ok > 0, "some probes went through");
    assert!(
        stats.max.load(Ordering::SeqCst) <= PERMITS as usize,
        "{} probes at once",
        stats.max.load(Ordering::SeqCst)
    );
    assert_eq!(layer.probes_in_flight(), 0, "every permit came back");
    assert_eq!(health.circuit(), CircuitState::HalfOpen);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn gated_callers_share_the_permits() {
    // Bounded: a lost wakeup would hang, so fail instead.
    tokio::time::timeout(Duration::from_secs(60), race(OpenMode::GatePollReady))
        .await
        .expect("gated callers were never woken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fail_fast_callers_share_the_permits() {
    tokio::time::timeout(Duration::from_secs(60), race(OpenMode::FailFast))
        .await
        .expect("fail-fast callers hung");
}
