//! Hung providers under the balancer and the fallback chain (paused time): each
//! attempt's request carries the instant the router's timer gives up on it, a
//! timeout is listed as that provider's, and a provider that has gone silent with
//! requests waiting is passed over by new requests before any timeout fires.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};
use tower_failover_balance::{Balance, BalanceConfig, Fallback, FallbackConfig, TotalTimeout};
use tower_failover_core::error::{AllProvidersFailed, Elapsed, TimeoutKind, find};
use tower_failover_core::observe::{ObserveLayer, ObservedBody};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{AttemptDeadline, FailureKind, Health, Outcome, Registry};

/// A provider that answers after `delay`, or never while `hung`; it records each
/// request's attempt deadline.
#[derive(Clone)]
struct Provider {
    name: &'static str,
    hung: Arc<AtomicBool>,
    calls: Arc<AtomicUsize>,
    deadlines: Arc<Mutex<Vec<Option<Instant>>>>,
}

impl Provider {
    fn new(name: &'static str) -> Self {
        Provider {
            name,
            hung: Arc::default(),
            calls: Arc::default(),
            deadlines: Arc::default(),
        }
    }

    fn hang(&self, yes: bool) {
        self.hung.store(yes, Ordering::SeqCst);
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// The provider's stack: its service under an observer of `health`.
    fn stack(&self, health: &Health) -> Stack {
        let me = self.clone();
        Stack::new(ObserveLayer::new(health.clone()).layer(service_fn(
            move |req: Request<ReplayBody>| {
                me.calls.fetch_add(1, Ordering::SeqCst);
                me.deadlines.lock().unwrap().push(AttemptDeadline::of(&req));
                let hung = me.hung.load(Ordering::SeqCst);
                let name = me.name;
                async move {
                    if hung {
                        std::future::pending::<()>().await;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Ok::<_, BoxError>(
                        Response::builder()
                            .header("x-from", name)
                            .body(ReplayBody::from(name))?,
                    )
                }
            },
        )))
    }
}

type Stack = BoxCloneSyncService<Request<ReplayBody>, Response<ObservedBody<ReplayBody>>, BoxError>;

fn req() -> Request<ReplayBody> {
    Request::post("/v1/chat/completions")
        .body(ReplayBody::from("{}"))
        .unwrap()
}

/// Sends one request and reads the whole answer: which provider gave it.
async fn send<S>(svc: &S) -> Result<String, BoxError>
where
    S: Service<
            Request<ReplayBody>,
            Response = Response<ObservedBody<ReplayBody>>,
            Error = BoxError,
        > + Clone,
{
    send_owned(svc.clone()).await
}

async fn send_owned<S>(svc: S) -> Result<String, BoxError>
where
    S: Service<
            Request<ReplayBody>,
            Response = Response<ObservedBody<ReplayBody>>,
            Error = BoxError,
        >,
{
    let res = svc.oneshot(req()).await?;
    let from = res.headers()["x-from"].to_str()?.to_owned();
    res.into_body().collect().await?;
    Ok(from)
}

#[tokio::test(start_paused = true)]
async fn each_attempt_carries_its_deadline_and_timeouts_are_listed() {
    let registry = Registry::new();
    let (ha, hb) = (registry.provider("a", "m"), registry.provider("b", "m"));
    let (a, b) = (Provider::new("a"), Provider::new("b"));
    let fallback = Fallback::builder()
        .config(
            FallbackConfig::default()
                .attempt_timeout(Duration::from_secs(2))
                .total_timeout(Duration::from_secs(3)),
        )
        .provider(ha.clone(), a.stack(&ha))
        .provider(hb.clone(), b.stack(&hb))
        .build()
        .unwrap();

    // The primary hangs: its attempt ends at the router's timer, the backup answers.
    a.hang(true);
    let start = Instant::now();
    assert_eq!(send(&fallback).await.unwrap(), "b");
    assert_eq!(Instant::now() - start, Duration::from_millis(2010));
    assert_eq!(
        a.deadlines.lock().unwrap().as_slice(),
        &[Some(start + Duration::from_secs(2))]
    );
    // The backup's attempt: 2 s more, capped by the 3 s total.
    assert_eq!(
        b.deadlines.lock().unwrap().as_slice(),
        &[Some(start + Duration::from_secs(3))]
    );

    // Both hang: the total deadline ends the request, and the error keeps both
    // attempts, each a timeout of its provider.
    b.hang(true);
    let err = send(&fallback).await.unwrap_err();
    assert_eq!(find::<Elapsed>(&*err).unwrap().kind(), TimeoutKind::Total);
    let timeout = find::<TotalTimeout>(&*err).expect("attempts kept");
    let tried: Vec<_> = timeout
        .attempts()
        .iter()
        .map(|t| (t.provider.provider().to_owned(), t.outcome))
        .collect();
    assert_eq!(
        tried,
        vec![
            ("a".to_owned(), Outcome::failure(FailureKind::Timeout)),
            ("b".to_owned(), Outcome::failure(FailureKind::Timeout)),
        ]
    );

    // With time enough for both, the attempt timeouts are listed.
    let fallback = Fallback::builder()
        .config(FallbackConfig::default().attempt_timeout(Duration::from_secs(1)))
        .provider(ha.clone(), a.stack(&ha))
        .provider(hb.clone(), b.stack(&hb))
        .build()
        .unwrap();
    let err = send(&fallback).await.unwrap_err();
    let all = find::<AllProvidersFailed>(&*err).unwrap();
    assert_eq!(all.attempts().len(), 2);
    assert!(
        all.attempts()
            .iter()
            .all(|t| t.outcome == Outcome::failure(FailureKind::Timeout))
    );
    assert_eq!((a.calls(), b.calls()), (3, 3));
}

/// Sends one request in the background.
fn spawn_send<S>(svc: &S) -> tokio::task::JoinHandle<Result<String, BoxError>>
where
    S: Service<
            Request<ReplayBody>,
            Response = Response<ObservedBody<ReplayBody>>,
            Error = BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    let svc = svc.clone();
    tokio::spawn(send_owned(svc))
}

/// The scenario both routers must pass: the primary goes silent; within the
/// suspicion threshold (500 ms: the floor, as the time to first byte is 10 ms) new requests still reach it, after it they go
/// to the backup, while the first ones keep waiting.
async fn hung_primary_is_passed_over<S>(svc: S, a: &Provider, b: &Provider, ha: &Health)
where
    S: Service<
            Request<ReplayBody>,
            Response = Response<ObservedBody<ReplayBody>>,
            Error = BoxError,
        > + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    // Measured fast first (time to first byte 10 ms).
    for _ in 0..5 {
        send(&svc).await.unwrap();
    }
    let before = (a.calls(), b.calls());
    assert!(before.0 > 0, "the primary served while healthy");
    a.hang(true);
    let started = Instant::now();
    // Within the threshold, the silent primary still gets its share.
    let mut early = Vec::new();
    for _ in 0..4 {
        early.push(spawn_send(&svc));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!ha.is_suspect(Instant::now()));
    let reached = a.calls() - before.0;
    assert!(reached >= 1, "within the threshold it still gets traffic");

    // 300 ms more: the first request that reached it has waited over 500 ms.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(ha.is_suspect(Instant::now()));
    for _ in 0..10 {
        let answer = tokio::time::timeout(Duration::from_secs(5), send(&svc))
            .await
            .expect("answered at once, by the backup");
        assert_eq!(answer.unwrap(), "b");
    }
    assert_eq!(
        a.calls() - before.0,
        reached,
        "nothing more reached the silent primary"
    );
    let waiting = early.iter().filter(|t| !t.is_finished()).count();
    assert_eq!(waiting, reached, "its requests keep waiting");
    assert_eq!(ha.waiting(), reached as u64);
    assert!(Instant::now() - started < Duration::from_secs(1));
    for t in early {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn the_fallback_chain_passes_over_a_silent_primary() {
    let registry = Registry::new();
    let (ha, hb) = (registry.provider("a", "m"), registry.provider("b", "m"));
    let (a, b) = (Provider::new("a"), Provider::new("b"));
    let fallback = Fallback::builder()
        .provider(ha.clone(), a.stack(&ha))
        .provider(hb.clone(), b.stack(&hb))
        .build()
        .unwrap();
    hung_primary_is_passed_over(fallback, &a, &b, &ha).await;
}

#[tokio::test(start_paused = true)]
async fn the_balancer_passes_over_a_silent_provider() {
    let registry = Registry::new();
    let (ha, hb) = (registry.provider("a", "m"), registry.provider("b", "m"));
    let (a, b) = (Provider::new("a"), Provider::new("b"));
    // Round-robin, so the healthy phase sends to both.
    let balance = Balance::builder()
        .config(
            BalanceConfig::default()
                .policy(tower_failover_balance::Policy::RoundRobin)
                .seed(3),
        )
        .provider(ha.clone(), a.stack(&ha))
        .provider(hb.clone(), b.stack(&hb))
        .build()
        .unwrap();
    hung_primary_is_passed_over(balance, &a, &b, &ha).await;
}

#[tokio::test(start_paused = true)]
async fn when_every_provider_is_suspect_requests_still_go_somewhere() {
    let registry = Registry::new();
    let ha = registry.provider("a", "m");
    let a = Provider::new("a");
    let fallback = Fallback::builder()
        .provider(ha.clone(), a.stack(&ha))
        .build()
        .unwrap();
    send(&fallback).await.unwrap();
    a.hang(true);
    let first = spawn_send(&fallback);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(ha.is_suspect(Instant::now()));
    let second = spawn_send(&fallback);
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(a.calls(), 3, "the only provider still gets the request");
    // It comes back: the answer clears suspicion.
    a.hang(false);
    assert_eq!(send(&fallback).await.unwrap(), "a");
    assert!(!ha.is_suspect(Instant::now()));
    first.abort();
    second.abort();
}
