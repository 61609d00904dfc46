//! Account failures (a rejected key, a billing refusal) under paused time: one is
//! enough to open the circuit whatever the trip policy, the cooldown is the long
//! account one, and each trip raises one distinct health event.

use std::time::Duration;

use http::{Request, Response};
use tokio::sync::broadcast::Receiver;
use tokio::time::advance;
use tokio_test::assert_ready_ok;
use tower::BoxError;
use tower_failover_circuit::{CircuitBreaker, CircuitBreakerLayer, CircuitConfig, Window};
use tower_failover_core::error::{CircuitOpen, find};
use tower_failover_core::{
    CircuitState, ErrorHint, FailureKind, Health, HealthEvent, HealthEventKind,
};
use tower_test::mock::{self, Handle, Mock, Spawn};

type Req = Request<()>;
/// What the provider answers.
type Up = Response<String>;
/// What a caller keeps once the body has been read to its end.
type Res = Response<()>;

struct Harness {
    svc: Spawn<CircuitBreaker<Mock<Req, Up>>>,
    handle: Handle<Req, Up>,
    health: Health,
}

/// Reads a response's body to its end (where a 2xx answer's verdict is made).
async fn drain<B>(res: Result<Response<B>, BoxError>) -> Result<Res, BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = res?.into_parts();
    http_body_util::BodyExt::collect(body)
        .await
        .map_err(Into::into)?;
    Ok(Response::from_parts(parts, ()))
}

fn harness(config: CircuitConfig) -> Harness {
    let health = Health::standalone("sim", "model");
    let layer = CircuitBreakerLayer::with_config(health.clone(), config.jitter(0.0)).unwrap();
    let (svc, handle) = mock::spawn_layer(layer);
    Harness {
        svc,
        handle,
        health,
    }
}

/// A response with `status` and, optionally, the hint a provider adapter attaches.
fn response(status: u16, hint: Option<ErrorHint>) -> Up {
    let mut res = Response::builder()
        .status(status)
        .body(String::new())
        .unwrap();
    if let Some(h) = hint {
        res.extensions_mut().insert(h);
    }
    res
}

impl Harness {
    async fn answer(&mut self, status: u16, hint: Option<ErrorHint>) -> Result<Res, BoxError> {
        assert_ready_ok!(self.svc.poll_ready());
        let fut = self.svc.call(Request::new(()));
        let (_, send) = self
            .handle
            .next_request()
            .await
            .expect("request reached the provider");
        send.send_response(response(status, hint));
        drain(fut.await).await
    }

    async fn refused(&mut self) -> CircuitOpen {
        assert_ready_ok!(self.svc.poll_ready());
        let err = self.svc.call(Request::new(())).await.unwrap_err();
        assert!(
            self.handle.poll_request().is_pending(),
            "refused call reached the provider"
        );
        find::<CircuitOpen>(&*err).expect("CircuitOpen").clone()
    }
}

/// The account events received so far (circuit changes are skipped).
fn account_events(rx: &mut Receiver<HealthEvent>) -> Vec<HealthEventKind> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        if matches!(
            e.kind,
            HealthEventKind::CredentialsRejected { .. } | HealthEventKind::BillingFailed { .. }
        ) {
            out.push(e.kind);
        }
    }
    out
}

const MIN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn one_rejected_key_opens_at_once_for_the_long_cooldown() {
    let mut h = harness(CircuitConfig::default());
    let mut events = h.health.subscribe();

    // The answer itself reaches the layer above (the router fails over on it).
    assert_eq!(h.answer(401, None).await.unwrap().status(), 401);
    assert_eq!(h.health.circuit(), CircuitState::Open);
    assert_eq!(h.health.trips(), 1);
    assert_eq!(h.health.account_failure(), Some(FailureKind::Credentials));
    assert_eq!(
        h.health.snapshot().account_failure,
        Some(FailureKind::Credentials)
    );
    assert_eq!(h.refused().await.retry_in(), 5 * MIN);
    assert_eq!(
        account_events(&mut events),
        [HealthEventKind::CredentialsRejected { open_for: 5 * MIN }]
    );

    // Still refused a second before the cooldown ends; nothing more is emitted.
    advance(5 * MIN - Duration::from_secs(1)).await;
    assert_eq!(h.refused().await.retry_in(), Duration::from_secs(1));
    assert!(account_events(&mut events).is_empty());

    // The probe is refused again: 10 min, one more event.
    advance(Duration::from_secs(1)).await;
    let _ = h.answer(401, Some(ErrorHint::Credentials)).await;
    assert_eq!(h.health.circuit(), CircuitState::Open);
    assert_eq!(h.health.trips(), 2);
    assert_eq!(h.refused().await.retry_in(), 10 * MIN);
    assert_eq!(
        account_events(&mut events),
        [HealthEventKind::CredentialsRejected { open_for: 10 * MIN }]
    );

    // 20, then capped at 30.
    advance(10 * MIN).await;
    let _ = h.answer(403, None).await;
    assert_eq!(h.refused().await.retry_in(), 20 * MIN);
    advance(20 * MIN).await;
    let _ = h.answer(401, None).await;
    assert_eq!(h.refused().await.retry_in(), 30 * MIN);

    // The key is rotated: three good probes close it, and the cause is cleared.
    advance(30 * MIN).await;
    for _ in 0..3 {
        assert_eq!(h.answer(200, None).await.unwrap().status(), 200);
    }
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    assert_eq!(h.health.account_failure(), None);
    assert_eq!(h.health.snapshot().account_failure, None);
}

#[tokio::test(start_paused = true)]
async fn billing_trips_at_once_under_every_trip_policy() {
    let policies = [
        CircuitConfig::default().consecutive_failures(50),
        CircuitConfig::default()
            .consecutive_failures(0)
            .failures_in_window(20, Duration::from_secs(60)),
        CircuitConfig::default()
            .consecutive_failures(0)
            .failure_rate(0.5, Window::Calls(100), 50),
        CircuitConfig::default()
            .consecutive_failures(0)
            .failure_rate(0.5, Window::Time(Duration::from_secs(60)), 10),
    ];
    for (i, config) in policies.into_iter().enumerate() {
        // 402, and OpenAI's 429 insufficient_quota (hinted by the provider adapter).
        for (status, hint) in [(402, None), (429, Some(ErrorHint::Billing))] {
            let mut h = harness(config.clone());
            let mut events = h.health.subscribe();
            // Some good traffic first, so rate policies have calls to weigh.
            for _ in 0..3 {
                h.answer(200, None).await.unwrap();
            }
            let _ = h.answer(status, hint).await;
            assert_eq!(
                h.health.circuit(),
                CircuitState::Open,
                "policy {i}, {status}"
            );
            assert_eq!(h.health.account_failure(), Some(FailureKind::Billing));
            assert_eq!(h.refused().await.retry_in(), 5 * MIN);
            assert_eq!(
                account_events(&mut events),
                [HealthEventKind::BillingFailed { open_for: 5 * MIN }],
                "policy {i}, {status}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn ordinary_failures_keep_the_ordinary_rules() {
    let mut h = harness(CircuitConfig::default());
    let mut events = h.health.subscribe();
    for _ in 0..4 {
        let _ = h.answer(503, None).await;
    }
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    let _ = h.answer(429, None).await; // a plain rate limit: not a failure
    let _ = h.answer(503, None).await;
    assert_eq!(h.health.circuit(), CircuitState::Open);
    assert_eq!(h.health.account_failure(), None);
    assert_eq!(h.refused().await.retry_in(), Duration::from_secs(30));
    assert!(account_events(&mut events).is_empty());

    // A probe refused for the key re-opens with the account cooldown (second trip
    // in a row: doubled) and names the cause.
    advance(Duration::from_secs(30)).await;
    let _ = h.answer(401, None).await;
    assert_eq!(h.health.trips(), 2);
    assert_eq!(h.health.account_failure(), Some(FailureKind::Credentials));
    assert_eq!(h.refused().await.retry_in(), 10 * MIN);
    assert_eq!(account_events(&mut events).len(), 1);

    // And a later ordinary trip clears the cause.
    advance(10 * MIN).await;
    let _ = h.answer(500, None).await;
    assert_eq!(h.health.account_failure(), None);
    assert_eq!(h.refused().await.retry_in(), Duration::from_secs(120));
}

#[tokio::test(start_paused = true)]
async fn without_trip_at_once_account_failures_count_by_weight() {
    let config = CircuitConfig::default()
        .consecutive_failures(3)
        .account_failures(false, Duration::from_secs(600), Duration::from_secs(3600));
    let mut h = harness(config);
    let mut events = h.health.subscribe();
    let _ = h.answer(401, None).await;
    let _ = h.answer(401, None).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    assert_eq!(h.svc.get_ref().consecutive_failures(), 2.0);
    // The third trips by the consecutive policy; an account failure tripped it, so
    // the account cooldown and event apply.
    let _ = h.answer(401, None).await;
    assert_eq!(h.health.circuit(), CircuitState::Open);
    assert_eq!(h.refused().await.retry_in(), Duration::from_secs(600));
    assert_eq!(
        account_events(&mut events),
        [HealthEventKind::CredentialsRejected {
            open_for: Duration::from_secs(600)
        }]
    );
}

#[tokio::test(start_paused = true)]
async fn a_zero_weight_ignores_the_kind_entirely() {
    let config = CircuitConfig::default().weight(FailureKind::Credentials, 0.0);
    let mut h = harness(config);
    let mut events = h.health.subscribe();
    for _ in 0..20 {
        let _ = h.answer(401, None).await;
    }
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    assert!(account_events(&mut events).is_empty());
    // Billing still trips.
    let _ = h.answer(402, None).await;
    assert_eq!(h.health.circuit(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn answers_that_arrive_while_open_raise_no_more_events() {
    let mut h = harness(CircuitConfig::default());
    let mut events = h.health.subscribe();
    // Twenty requests in flight at once, all answered 401.
    let mut futs = Vec::new();
    for _ in 0..20 {
        let mut svc = h.svc.clone();
        assert_ready_ok!(svc.poll_ready());
        futs.push(svc.call(Request::new(())));
    }
    for _ in 0..20 {
        let (_, send) = h.handle.next_request().await.unwrap();
        send.send_response(response(401, Some(ErrorHint::Credentials)));
    }
    for f in futs {
        assert_eq!(f.await.unwrap().status(), 401);
    }
    assert_eq!(h.health.circuit(), CircuitState::Open);
    assert_eq!(h.health.trips(), 1);
    assert_eq!(account_events(&mut events).len(), 1);
}
