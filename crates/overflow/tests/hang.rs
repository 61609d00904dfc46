//! A silent primary under the overflow router (paused time): once it has said
//! nothing for far longer than its usual time to first byte while requests wait,
//! new requests go to the next target, before any timeout fires; the ones already
//! waiting keep waiting.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, ServiceExt, service_fn};
use tower_failover_core::observe::{ObserveLayer, ObservedBody};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{Health, Registry};
use tower_failover_overflow::Overflow;

type Stack = BoxCloneSyncService<Request<ReplayBody>, Response<ObservedBody<ReplayBody>>, BoxError>;

#[derive(Clone)]
struct Provider {
    name: &'static str,
    hung: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
}

impl Provider {
    fn new(name: &'static str) -> Self {
        Provider {
            name,
            hung: Arc::default(),
            calls: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn stack(&self, health: &Health) -> Stack {
        let me = self.clone();
        Stack::new(ObserveLayer::new(health.clone()).layer(service_fn(
            move |_req: Request<ReplayBody>| {
                me.calls.fetch_add(1, Ordering::SeqCst);
                let hung = me.hung.load(Ordering::SeqCst);
                let name = me.name;
                async move {
                    if hung {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok::<_, BoxError>(Response::new(ReplayBody::from(name)))
                }
            },
        )))
    }
}

fn req() -> Request<ReplayBody> {
    Request::post("/v1/chat/completions")
        .body(ReplayBody::from("{}"))
        .unwrap()
}

/// Sends one request: the answer's body (the provider's name).
async fn send(router: Overflow<Stack>) -> Result<String, BoxError> {
    let res = router.oneshot(req()).await?;
    let body = res.into_body().collect().await?;
    Ok(String::from_utf8_lossy(&body.to_bytes()).into_owned())
}

#[tokio::test(start_paused = true)]
async fn the_overflow_router_passes_over_a_silent_primary() {
    let registry = Registry::new();
    let (ha, hb) = (registry.provider("a", "m"), registry.provider("b", "m"));
    let (a, b) = (Provider::new("a"), Provider::new("b"));
    let router = Overflow::builder()
        .target(ha.clone(), a.stack(&ha))
        .target(hb.clone(), b.stack(&hb))
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(send(router.clone()).await.unwrap(), "a");
    }
    a.hung.store(true, Ordering::SeqCst);
    let started = Instant::now();
    let first = tokio::spawn(router.clone().oneshot(req()));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let second = tokio::spawn(router.clone().oneshot(req()));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        a.calls(),
        5,
        "within the threshold the primary still gets traffic"
    );
    assert!(!ha.is_suspect(Instant::now()));

    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(ha.is_suspect(Instant::now()));
    for _ in 0..10 {
        let answer = tokio::time::timeout(Duration::from_secs(5), send(router.clone()))
            .await
            .expect("answered at once, by the backup");
        assert_eq!(answer.unwrap(), "b");
    }
    assert_eq!((a.calls(), b.calls()), (5, 10));
    assert!(!first.is_finished() && !second.is_finished());
    assert!(Instant::now() - started < Duration::from_secs(1));

    // Every target suspect: the request still goes somewhere.
    b.hung.store(true, Ordering::SeqCst);
    let third = tokio::spawn(router.clone().oneshot(req()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(hb.is_suspect(Instant::now()));
    let fourth = tokio::spawn(router.clone().oneshot(req()));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        a.calls() + b.calls(),
        17,
        "sent although every target is suspect"
    );
    for t in [first, second, third, fourth] {
        t.abort();
    }
}
