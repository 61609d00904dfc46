//! The all-providers-down wait queue, under paused time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt, service_fn};
use tower_failover_core::error::{AllProvidersFailed, Elapsed, TimeoutKind, find};
use tower_failover_core::{CircuitState, Health, Registry};
use tower_failover_retry::{DeadlineLayer, QueueConfig, WaitQueueLayer};
use tower_layer::Layer;

/// A router stand-in: fails with AllProvidersFailed while the provider's circuit is
/// open, answers otherwise.
fn router(
    health: Health,
    calls: Arc<AtomicU32>,
) -> impl Service<Request<String>, Response = Response<String>, Error = BoxError, Future = impl Send>
+ Clone
+ Send
+ 'static {
    service_fn(move |_req: Request<String>| {
        let health = health.clone();
        calls.fetch_add(1, Ordering::SeqCst);
        async move {
            if health.circuit() == CircuitState::Open {
                Err::<Response<String>, BoxError>(
                    AllProvidersFailed::new(vec![])
                        .with_retry_after(Some(health.recovers_in(Instant::now())))
                        .into(),
                )
            } else {
                Ok(Response::new("ok".to_owned()))
            }
        }
    })
}

fn open(h: &Health, for_: Duration) {
    h.transition(
        CircuitState::Closed,
        CircuitState::Open,
        Some(Instant::now() + for_),
    );
}

#[tokio::test(start_paused = true)]
async fn released_by_the_recovery_event_not_by_polling() {
    let registry = Registry::new();
    let health = registry.provider("p", "m");
    open(&health, Duration::from_secs(600)); // cooldown far away: only the event can wake it
    let calls = Arc::new(AtomicU32::new(0));
    let layer = WaitQueueLayer::with_config(
        registry.clone(),
        QueueConfig {
            capacity: 10,
            max_wait: Duration::from_secs(900),
        },
    )
    .unwrap();
    let svc = layer.layer(router(health.clone(), calls.clone()));

    let started = Instant::now();
    let waiter = tokio::spawn(svc.clone().oneshot(Request::new(String::new())));
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(layer.waiting(), 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        1,
        "no retry while nothing recovered"
    );
    health.transition(CircuitState::Open, CircuitState::Closed, None);
    let res = waiter.await.unwrap().unwrap();
    assert_eq!(res.body(), "ok");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    assert_eq!(layer.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn released_when_a_rate_limit_window_ends_silently() {
    let registry = Registry::new();
    let health = registry.provider("p", "m");
    health.mark_rate_limited(Duration::from_secs(4));
    let svc = service_fn({
        let health = health.clone();
        move |_req: Request<String>| {
            let limited = health.is_rate_limited(Instant::now());
            let retry = health.recovers_in(Instant::now());
            async move {
                if limited {
                    Err::<Response<String>, BoxError>(
                        AllProvidersFailed::new(vec![])
                            .with_retry_after(Some(retry))
                            .into(),
                    )
                } else {
                    Ok(Response::new("ok".to_owned()))
                }
            }
        }
    });
    let svc = WaitQueueLayer::new(registry).layer(svc);
    let started = Instant::now();
    let res = svc.oneshot(Request::new(String::new())).await.unwrap();
    assert_eq!(res.body(), "ok");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(4),
        "woken at the window's end"
    );
}

#[tokio::test(start_paused = true)]
async fn past_the_deadline_a_clear_error() {
    let registry = Registry::new();
    let health = registry.provider("p", "m");
    open(&health, Duration::from_secs(600));
    let calls = Arc::new(AtomicU32::new(0));
    let svc = DeadlineLayer::new(Duration::from_secs(5))
        .layer(WaitQueueLayer::new(registry).layer(router(health, calls)));
    let started = Instant::now();
    let err = svc.oneshot(Request::new(String::new())).await.unwrap_err();
    let elapsed = find::<Elapsed>(&*err).expect("an Elapsed error");
    assert!(
        matches!(elapsed.kind(), TimeoutKind::Queue | TimeoutKind::Total),
        "{err}"
    );
    assert_eq!(started.elapsed(), Duration::from_secs(5));
}

#[tokio::test(start_paused = true)]
async fn a_full_queue_fails_at_once_and_says_so() {
    let registry = Registry::new();
    let health = registry.provider("p", "m");
    open(&health, Duration::from_secs(600));
    let calls = Arc::new(AtomicU32::new(0));
    let layer = WaitQueueLayer::with_config(
        registry,
        QueueConfig {
            capacity: 2,
            max_wait: Duration::from_secs(60),
        },
    )
    .unwrap();
    let svc = layer.layer(router(health, calls));
    let a = tokio::spawn(svc.clone().oneshot(Request::new(String::new())));
    let b = tokio::spawn(svc.clone().oneshot(Request::new(String::new())));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(layer.waiting(), 2);
    let started = Instant::now();
    let err = svc
        .clone()
        .oneshot(Request::new(String::new()))
        .await
        .unwrap_err();
    assert_eq!(started.elapsed(), Duration::ZERO);
    let all = find::<AllProvidersFailed>(&*err).unwrap();
    assert_eq!(all.reason(), Some("wait queue full"));
    a.abort();
    b.abort();
    let _ = a.await;
    let _ = b.await;
    assert_eq!(layer.waiting(), 0, "cancelled waiters free their slots");
}

#[tokio::test(start_paused = true)]
async fn other_errors_pass_through_without_waiting() {
    let registry = Registry::new();
    let svc = WaitQueueLayer::new(registry).layer(service_fn(|_req: Request<String>| async {
        Err::<Response<String>, BoxError>("bad request".into())
    }));
    let started = Instant::now();
    let err = svc.oneshot(Request::new(String::new())).await.unwrap_err();
    assert_eq!(err.to_string(), "bad request");
    assert_eq!(started.elapsed(), Duration::ZERO);
}

/// `wait_for_recovery` is for a request that already found every provider down:
/// nothing is sent until a provider recovers, then the request is served; the
/// wait counts among the waiting requests until it ends.
#[tokio::test(start_paused = true)]
async fn wait_for_recovery_sends_nothing_before_the_recovery() {
    let registry = Registry::new();
    let health = registry.provider("p", "m");
    open(&health, Duration::from_secs(600));
    let calls = Arc::new(AtomicU32::new(0));
    let layer = WaitQueueLayer::with_config(
        registry.clone(),
        QueueConfig {
            capacity: 1,
            max_wait: Duration::from_secs(900),
        },
    )
    .unwrap();
    let svc = layer.layer(router(health.clone(), calls.clone()));
    let waiter = tokio::spawn(svc.wait_for_recovery(
        Request::new(String::new()),
        AllProvidersFailed::new(vec![]),
        Duration::from_secs(2),
    ));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(layer.waiting(), 1);
    assert_eq!(
        calls.load(Ordering::SeqCst),
        0,
        "nothing sent while all are down"
    );
    health.transition(CircuitState::Open, CircuitState::Closed, None);
    let res = waiter.await.unwrap().unwrap();
    assert_eq!(res.body(), "ok");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert_eq!(layer.waiting(), 0);

    // Past `max_wait`, the typed queue timeout.
    open(&health, Duration::from_secs(6000));
    let err = svc
        .wait_for_recovery(
            Request::new(String::new()),
            AllProvidersFailed::new(vec![]),
            Duration::from_secs(2),
        )
        .await
        .unwrap_err();
    assert_eq!(find::<Elapsed>(&*err).unwrap().kind(), TimeoutKind::Queue);
    assert_eq!(layer.waiting(), 0);
}

/// A request that fails everywhere while every provider looks available (no
/// circuit open, so no recovery in sight) is resent at a pause doubling up to
/// `max_pause`, not every 2 s for the whole wait.
#[tokio::test(start_paused = true)]
async fn wait_for_recovery_spaces_attempts_up_to_max_pause() {
    let mut counts = Vec::new();
    for max_pause in [Duration::from_secs(2), Duration::from_secs(30)] {
        let registry = Registry::new();
        let _health = registry.provider("p", "m"); // closed: "available now"
        let calls = Arc::new(AtomicU32::new(0));
        let failing = service_fn({
            let calls = calls.clone();
            move |_req: Request<String>| {
                calls.fetch_add(1, Ordering::SeqCst);
                async { Err::<Response<String>, BoxError>(AllProvidersFailed::new(vec![]).into()) }
            }
        });
        let svc = WaitQueueLayer::with_config(
            registry,
            QueueConfig {
                capacity: 1,
                max_wait: Duration::from_secs(600),
            },
        )
        .unwrap()
        .layer(failing);
        let err = svc
            .wait_for_recovery(
                Request::new(String::new()),
                AllProvidersFailed::new(vec![]),
                max_pause,
            )
            .await
            .unwrap_err();
        assert_eq!(find::<Elapsed>(&*err).unwrap().kind(), TimeoutKind::Queue);
        counts.push(calls.load(Ordering::SeqCst));
    }
    // 0.1 + 0.2 + … doubling, then every `max_pause` until 600 s.
    assert!((295..=305).contains(&counts[0]), "{counts:?}");
    assert!((25..=30).contains(&counts[1]), "{counts:?}");
}
