//! Every state transition of the breaker, under paused time with tower-test mocks.

use std::time::Duration;

use http::{Request, Response};
use http_body_util::BodyExt;
use tokio::time::{Instant, advance};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::BoxError;
use tower_failover_circuit::{
    CircuitBreaker, CircuitBreakerLayer, CircuitConfig, OpenMode, Window,
};
use tower_failover_core::error::{CircuitOpen, Elapsed, Shed, TimeoutKind, TransportError, find};
use tower_failover_core::{CircuitState, FailureKind, Health, HealthEventKind, SharedUpdate};
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

fn response(status: u16) -> Up {
    Response::builder()
        .status(status)
        .body(String::new())
        .unwrap()
}

/// Reads a response's body to its end (where a 2xx answer's verdict is made).
async fn drain<B>(res: Result<Response<B>, BoxError>) -> Result<Res, BoxError>
where
    B: http_body::Body,
    B::Error: Into<BoxError>,
{
    let (parts, body) = res?.into_parts();
    body.collect().await.map_err(Into::into)?;
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

impl Harness {
    /// One request that must reach the provider, answered with `status`.
    async fn answer(&mut self, status: u16) -> Result<Res, BoxError> {
        assert_ready_ok!(self.svc.poll_ready());
        let fut = self.svc.call(Request::new(()));
        let (_, send) = self
            .handle
            .next_request()
            .await
            .expect("request reached the provider");
        send.send_response(response(status));
        drain(fut.await).await
    }

    /// One request that must reach the provider and fail with `err`.
    async fn fail(&mut self, err: impl Into<BoxError>) -> Result<Res, BoxError> {
        assert_ready_ok!(self.svc.poll_ready());
        let fut = self.svc.call(Request::new(()));
        let (_, send) = self
            .handle
            .next_request()
            .await
            .expect("request reached the provider");
        send.send_error(err);
        drain(fut.await).await
    }

    /// One request that reaches the provider and is answered 200 after `secs`.
    async fn answer_after(&mut self, secs: u64) -> Result<Res, BoxError> {
        assert_ready_ok!(self.svc.poll_ready());
        let fut = self.svc.call(Request::new(()));
        let (_, send) = self.handle.next_request().await.unwrap();
        advance(Duration::from_secs(secs)).await;
        send.send_response(response(200));
        drain(fut.await).await
    }

    async fn answers(&mut self, status: u16, n: usize) {
        for _ in 0..n {
            let _ = self.answer(status).await;
        }
    }

    /// Fail-fast mode: the call is refused at once and never reaches the provider.
    async fn refused(&mut self) -> CircuitOpen {
        assert_ready_ok!(self.svc.poll_ready());
        let err = self.svc.call(Request::new(())).await.unwrap_err();
        assert!(
            self.handle.poll_request().is_pending(),
            "refused call reached the provider"
        );
        find::<CircuitOpen>(&*err)
            .expect("a CircuitOpen error")
            .clone()
    }
}

#[tokio::test(start_paused = true)]
async fn closed_opens_after_consecutive_failures_and_refuses_fast() {
    let mut h = harness(CircuitConfig::default());
    let mut events = h.health.subscribe();

    // Four failures, then a success: the run resets.
    h.answers(503, 4).await;
    assert_eq!(h.svc.get_ref().consecutive_failures(), 4.0);
    assert_eq!(h.answer(200).await.unwrap().status(), 200);
    assert_eq!(h.svc.get_ref().consecutive_failures(), 0.0);
    assert_eq!(h.health.circuit(), CircuitState::Closed);

    // Five in a row trip it. The fifth response still reaches the caller.
    h.answers(503, 4).await;
    assert_eq!(h.answer(503).await.unwrap().status(), 503);
    assert_eq!(h.health.circuit(), CircuitState::Open);
    assert_eq!(h.health.trips(), 1);
    assert_eq!(
        h.health.open_until(),
        Some(Instant::now() + Duration::from_secs(30))
    );

    let open = h.refused().await;
    assert_eq!(open.retry_in(), Duration::from_secs(30));
    assert_eq!(open.provider().unwrap().to_string(), "sim/model");
    assert_eq!(
        h.health.counters().shed,
        1,
        "the refusal is counted as shed"
    );

    let ev = events.recv().await.unwrap();
    assert_eq!(
        ev.kind,
        HealthEventKind::CircuitChanged {
            from: CircuitState::Closed,
            to: CircuitState::Open,
            open_for: Some(Duration::from_secs(30)),
        }
    );
}

#[tokio::test(start_paused = true)]
async fn open_half_opens_after_cooldown_and_closes_after_successful_probes() {
    let mut h = harness(CircuitConfig::default());
    let mut events = h.health.subscribe();
    h.answers(503, 5).await;
    let _ = events.recv().await; // closed -> open

    advance(Duration::from_millis(29_999)).await;
    assert_eq!(h.refused().await.retry_in(), Duration::from_millis(1));

    advance(Duration::from_millis(1)).await;
    // The cooldown is over: poll_ready moves it to half-open and reserves the permit.
    assert_ready_ok!(h.svc.poll_ready());
    assert_eq!(h.health.circuit(), CircuitState::HalfOpen);
    assert_eq!(h.svc.get_ref().probes_in_flight(), 1);
    assert_eq!(
        events.recv().await.unwrap().kind,
        HealthEventKind::CircuitChanged {
            from: CircuitState::Open,
            to: CircuitState::HalfOpen,
            open_for: None
        }
    );

    // While the only permit is out, another caller is refused (time left: none).
    let probe = h.svc.call(Request::new(()));
    let mut other = h.svc.clone();
    assert_ready_ok!(other.poll_ready());
    let err = other.call(Request::new(())).await.unwrap_err();
    assert_eq!(
        find::<CircuitOpen>(&*err).unwrap().retry_in(),
        Duration::ZERO
    );

    let (_, send) = h.handle.next_request().await.unwrap();
    send.send_response(response(200));
    drain(probe.await).await.unwrap();
    assert_eq!(h.svc.get_ref().probes_in_flight(), 0);
    assert_eq!(
        h.health.circuit(),
        CircuitState::HalfOpen,
        "one success of three"
    );

    h.answers(200, 2).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    assert_eq!(
        events.recv().await.unwrap().kind,
        HealthEventKind::CircuitChanged {
            from: CircuitState::HalfOpen,
            to: CircuitState::Closed,
            open_for: None
        }
    );
    assert_eq!(
        h.health.trips(),
        1,
        "trips are forgiven only after a healthy period"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_reopens_with_a_doubled_cooldown() {
    let mut h = harness(CircuitConfig::default());
    h.answers(503, 5).await;
    advance(Duration::from_secs(30)).await;
    assert_eq!(h.answer(200).await.unwrap().status(), 200);
    assert_eq!(h.health.circuit(), CircuitState::HalfOpen);
    // One failure re-opens, even after a success.
    let _ = h.answer(502).await;
    assert_eq!(h.health.circuit(), CircuitState::Open);
    assert_eq!(h.health.trips(), 2);
    assert_eq!(h.refused().await.retry_in(), Duration::from_secs(60));

    // And again: 120 s.
    advance(Duration::from_secs(60)).await;
    let _ = h
        .fail(TransportError::new(FailureKind::Connect, "refused"))
        .await;
    assert_eq!(h.health.trips(), 3);
    assert_eq!(h.refused().await.retry_in(), Duration::from_secs(120));
}

#[tokio::test(start_paused = true)]
async fn cooldown_is_capped_and_shrinks_back_after_healthy_periods() {
    let config = CircuitConfig::default()
        .consecutive_failures(1)
        .half_open(1, 1)
        .healthy_period(Duration::from_secs(600));
    let mut h = harness(config);
    let mut seen = Vec::new();
    let _ = h.answer(503).await;
    for _ in 0..6 {
        let left = h.refused().await.retry_in();
        seen.push(left.as_secs());
        advance(left).await;
        let _ = h.answer(503).await; // the probe fails
    }
    assert_eq!(seen, [30, 60, 120, 240, 300, 300]);
    assert_eq!(h.health.trips(), 7);

    // Recover, then stay healthy for two healthy periods: two trips forgiven.
    advance(Duration::from_secs(300)).await;
    let _ = h.answer(200).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    advance(Duration::from_secs(600)).await;
    let _ = h.answer(200).await;
    assert_eq!(h.health.trips(), 6);
    advance(Duration::from_secs(600)).await;
    let _ = h.answer(200).await;
    assert_eq!(h.health.trips(), 5);
    // The next trip is the 6th in a row, not the 8th... and after a long quiet
    // spell without any success, the trip itself forgives the periods.
    advance(Duration::from_secs(3 * 600)).await;
    let _ = h.answer(503).await;
    assert_eq!(h.health.trips(), 3, "5 - 3 periods + this trip");
    assert_eq!(h.refused().await.retry_in(), Duration::from_secs(120));
}

#[tokio::test(start_paused = true)]
async fn jitter_only_shortens_and_is_seeded() {
    let run = |seed| async move {
        let health = Health::standalone("p", "m");
        let layer = CircuitBreakerLayer::with_config(
            health.clone(),
            CircuitConfig::default().consecutive_failures(1).seed(seed),
        )
        .unwrap();
        let (mut svc, mut handle) = mock::spawn_layer::<Req, Up, _>(layer);
        assert_ready_ok!(svc.poll_ready());
        let fut = svc.call(Request::new(()));
        handle
            .next_request()
            .await
            .unwrap()
            .1
            .send_response(response(500));
        let _ = fut.await;
        health.open_until().unwrap() - Instant::now()
    };
    let a = run(7).await;
    assert_eq!(a, run(7).await, "same seed, same cooldown");
    assert!(
        a <= Duration::from_secs(30) && a >= Duration::from_secs(24),
        "{a:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn gated_poll_ready_waits_while_open_and_wakes_when_a_probe_is_due() {
    let mut h = harness(CircuitConfig::default().mode(OpenMode::GatePollReady));
    h.answers(503, 5).await;
    assert_pending!(h.svc.poll_ready());
    advance(Duration::from_secs(10)).await;
    assert!(!h.svc.is_woken());
    assert_pending!(h.svc.poll_ready());
    advance(Duration::from_secs(20)).await;
    assert!(h.svc.is_woken(), "woken when the cooldown ends");
    assert_ready_ok!(h.svc.poll_ready());
    assert_eq!(h.health.circuit(), CircuitState::HalfOpen);
    assert_eq!(h.svc.get_ref().probes_in_flight(), 1);

    // A clone waits while the permit is out, and is woken when it comes back.
    let mut other = h.svc.clone();
    assert_pending!(other.poll_ready());
    let probe = h.svc.call(Request::new(()));
    let (_, send) = h.handle.next_request().await.unwrap();
    assert!(!other.is_woken());
    drop(probe); // cancelled: the permit comes back, nothing is counted
    drop(send);
    assert!(other.is_woken());
    assert_eq!(h.svc.get_ref().probes_in_flight(), 0);
    assert_ready_ok!(other.poll_ready());
    assert_eq!(h.svc.get_ref().probes_in_flight(), 1);
    assert_eq!(h.health.circuit(), CircuitState::HalfOpen);
}

#[tokio::test(start_paused = true)]
async fn gated_poll_ready_wakes_on_state_changes_from_elsewhere() {
    let mut h = harness(CircuitConfig::default().mode(OpenMode::GatePollReady));
    h.answers(503, 5).await;
    assert_pending!(h.svc.poll_ready());

    // An operator forces it closed: the parked task is woken through the watch.
    h.health.force(Some(CircuitState::Closed));
    assert!(h.svc.is_woken());
    assert_ready_ok!(h.svc.poll_ready());
    h.health.force(None);
    assert_pending!(h.svc.poll_ready());

    // Another replica saw it recover.
    h.health.apply_remote(&SharedUpdate::Circuit {
        state: CircuitState::Closed,
        open_until: None,
        trips: 1,
    });
    assert!(h.svc.is_woken());
    assert_ready_ok!(h.svc.poll_ready());
    assert_eq!(h.answer(200).await.unwrap().status(), 200);
}

#[tokio::test(start_paused = true)]
async fn operators_force_the_circuit_and_the_breaker_keeps_its_own_state() {
    let mut h = harness(CircuitConfig::default());
    h.health.force(Some(CircuitState::Open));
    assert_eq!(h.refused().await.retry_in(), Duration::ZERO);
    h.health.force(None);
    assert_eq!(h.answer(200).await.unwrap().status(), 200);

    // Forced closed while the breaker is open: calls flow, but do not count.
    h.answers(503, 5).await;
    h.health.force(Some(CircuitState::Closed));
    h.answers(503, 3).await;
    assert_eq!(h.health.breaker_state(), CircuitState::Open);
    assert_eq!(h.health.trips(), 1, "no new trip while open underneath");
    h.health.force(None);
    assert_eq!(h.refused().await.retry_in(), Duration::from_secs(30));
}

#[tokio::test(start_paused = true)]
async fn a_remote_trip_is_obeyed_and_probed_locally() {
    let mut h = harness(CircuitConfig::default());
    h.health.apply_remote(&SharedUpdate::Circuit {
        state: CircuitState::Open,
        open_until: Some(std::time::SystemTime::now() + Duration::from_secs(20)),
        trips: 1,
    });
    let left = h.refused().await.retry_in();
    assert!(
        left <= Duration::from_secs(20) && left > Duration::from_secs(19),
        "{left:?}"
    );
    advance(Duration::from_secs(20)).await;
    h.answers(200, 3).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn dropping_a_service_that_reserved_a_permit_gives_it_back() {
    let mut h = harness(CircuitConfig::default().half_open(2, 3));
    h.answers(503, 5).await;
    advance(Duration::from_secs(30)).await;

    let mut a = h.svc.clone();
    let mut b = h.svc.clone();
    assert_ready_ok!(a.poll_ready());
    assert_ready_ok!(a.poll_ready(), "polling again keeps the same permit");
    assert_ready_ok!(b.poll_ready());
    assert_eq!(h.svc.get_ref().probes_in_flight(), 2);
    // A clone of a ready service is not ready: no permit left for it.
    let mut c = a.clone();
    assert_eq!(h.refused_with(&mut c).await.retry_in(), Duration::ZERO);

    drop(a);
    assert_eq!(h.svc.get_ref().probes_in_flight(), 1);
    let inner = b.into_inner().into_inner();
    drop(inner);
    assert_eq!(h.svc.get_ref().probes_in_flight(), 0);
    h.answers(200, 3).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);
}

impl Harness {
    async fn refused_with(
        &mut self,
        svc: &mut Spawn<CircuitBreaker<Mock<Req, Up>>>,
    ) -> CircuitOpen {
        assert_ready_ok!(svc.poll_ready());
        let err = svc.call(Request::new(())).await.unwrap_err();
        assert!(self.handle.poll_request().is_pending());
        find::<CircuitOpen>(&*err).unwrap().clone()
    }
}

#[tokio::test(start_paused = true)]
async fn stragglers_from_before_the_trip_do_not_count_as_probes() {
    let mut h = harness(CircuitConfig::default());
    // A slow request admitted while closed.
    assert_ready_ok!(h.svc.poll_ready());
    let straggler = h.svc.call(Request::new(()));
    let (_, straggler_send) = h.handle.next_request().await.unwrap();
    h.answers(503, 5).await;
    advance(Duration::from_secs(30)).await;
    assert_ready_ok!(h.svc.poll_ready());
    assert_eq!(h.health.circuit(), CircuitState::HalfOpen);
    // It fails now: that is old news, the circuit stays half-open.
    straggler_send.send_response(response(503));
    let _ = straggler.await;
    assert_eq!(h.health.circuit(), CircuitState::HalfOpen);
    assert_eq!(h.health.trips(), 1);
    let probe = h.svc.call(Request::new(()));
    h.handle
        .next_request()
        .await
        .unwrap()
        .1
        .send_response(response(200));
    drain(probe.await).await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn rate_limits_rejections_and_shed_do_not_count_by_default() {
    let mut h = harness(CircuitConfig::default().consecutive_failures(2));
    for _ in 0..5 {
        let _ = h.answer(429).await;
        let _ = h
            .fail(tower_failover_core::error::Invalid::new(
                tower_failover_core::RejectKind::Schema,
                "bad",
            ))
            .await;
        let _ = h.fail(Shed::new("ramp")).await;
        let _ = h.fail(CircuitOpen::new(Duration::from_secs(1))).await;
    }
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    // Ignored outcomes neither count nor reset the run.
    let _ = h.answer(500).await;
    let _ = h.answer(429).await;
    assert_eq!(h.svc.get_ref().consecutive_failures(), 1.0);
    // A client error means the provider answered: it resets the run.
    let _ = h.answer(400).await;
    assert_eq!(h.svc.get_ref().consecutive_failures(), 0.0);

    let mut strict = harness(
        CircuitConfig::default()
            .consecutive_failures(2)
            .rate_limited_is_failure(true)
            .rejected_is_failure(true),
    );
    let _ = strict.answer(429).await;
    let _ = strict
        .fail(tower_failover_core::error::Invalid::new(
            tower_failover_core::RejectKind::Empty,
            "",
        ))
        .await;
    assert_eq!(strict.health.circuit(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn malformed_answers_count_by_default_through_the_service() {
    use tower_failover_core::RejectKind;
    use tower_failover_core::error::Invalid;
    let mut h = harness(CircuitConfig::default().consecutive_failures(3));
    for kind in [
        RejectKind::InvalidJson,
        RejectKind::Shape,
        RejectKind::ErrorObject,
    ] {
        let err = h
            .fail(Invalid::new(kind, "provider text"))
            .await
            .unwrap_err();
        assert_eq!(find::<Invalid>(&*err).map(Invalid::kind), Some(kind));
    }
    assert_eq!(h.health.circuit(), CircuitState::Open);

    let mut off = harness(
        CircuitConfig::default()
            .consecutive_failures(3)
            .malformed_is_failure(false),
    );
    for _ in 0..6 {
        let _ = off
            .fail(Invalid::new(RejectKind::InvalidJson, "not json"))
            .await;
    }
    assert_eq!(off.health.circuit(), CircuitState::Closed);
}

#[tokio::test(start_paused = true)]
async fn errors_are_classified_and_passed_through() {
    let mut h = harness(CircuitConfig::default().consecutive_failures(2));
    let err = h
        .fail(Elapsed::new(
            TimeoutKind::FirstByte,
            Duration::from_secs(10),
        ))
        .await
        .unwrap_err();
    assert!(
        find::<Elapsed>(&*err).is_some(),
        "the inner error comes back as is"
    );
    let _ = h
        .fail(TransportError::new(FailureKind::Reset, "reset"))
        .await;
    assert_eq!(h.health.circuit(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_kinds_weigh_differently() {
    let config = CircuitConfig::default()
        .consecutive_failures(5)
        .weight(FailureKind::Connect, 2.5)
        .weight(FailureKind::Timeout, 0.5)
        .weight(FailureKind::Overloaded, 0.0);
    let mut h = harness(config.clone());
    let _ = h
        .fail(TransportError::new(FailureKind::Connect, "refused"))
        .await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    let _ = h
        .fail(TransportError::new(FailureKind::Connect, "refused"))
        .await;
    assert_eq!(
        h.health.circuit(),
        CircuitState::Open,
        "two refused connects"
    );

    let mut h = harness(config);
    for _ in 0..9 {
        let _ = h
            .fail(Elapsed::new(TimeoutKind::Total, Duration::from_secs(60)))
            .await;
    }
    assert_eq!(h.svc.get_ref().consecutive_failures(), 4.5);
    h.answers(529, 20).await; // weight 0: not counted, not reset
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    let _ = h
        .fail(Elapsed::new(TimeoutKind::Total, Duration::from_secs(60)))
        .await;
    assert_eq!(h.health.circuit(), CircuitState::Open, "ten timeouts");
}

#[tokio::test(start_paused = true)]
async fn failures_within_a_time_window() {
    let config = CircuitConfig::default()
        .consecutive_failures(0)
        .failures_in_window(3, Duration::from_secs(10));
    let mut h = harness(config);
    // Spread out, with successes between: never three in ten seconds.
    for _ in 0..6 {
        let _ = h.answer(503).await;
        h.answers(200, 3).await;
        advance(Duration::from_secs(6)).await;
    }
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    advance(Duration::from_secs(10)).await;
    let _ = h.answer(503).await;
    advance(Duration::from_secs(2)).await;
    let _ = h.answer(200).await;
    let _ = h.answer(503).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    let _ = h.answer(503).await;
    assert_eq!(h.health.circuit(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_the_last_calls() {
    let config = CircuitConfig::default()
        .consecutive_failures(0)
        .failure_rate(0.5, Window::Calls(10), 10);
    let mut h = harness(config);
    // 4 failures of 9 calls: under the minimum number of calls.
    for _ in 0..4 {
        let _ = h.answer(503).await;
        let _ = h.answer(200).await;
    }
    let _ = h.answer(200).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    // 10th call: 4 of 10 is under 50 %.
    let _ = h.answer(200).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    // 11th: the oldest (a failure) leaves, one comes in: still 4 of 10.
    let _ = h.answer(503).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    // 12th: the oldest success leaves: 5 of 10.
    let _ = h.answer(503).await;
    assert_eq!(h.health.circuit(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn failure_rate_over_a_time_window_with_min_calls() {
    let config = CircuitConfig::default()
        .consecutive_failures(0)
        .failure_rate(0.5, Window::Time(Duration::from_secs(60)), 6);
    let mut h = harness(config);
    h.answers(503, 3).await;
    h.answers(200, 2).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed, "5 calls < min 6");
    // A minute later the old calls have left the window.
    advance(Duration::from_secs(61)).await;
    h.answers(200, 3).await;
    h.answers(503, 2).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed, "2 of 5");
    let _ = h.answer(503).await;
    assert_eq!(h.health.circuit(), CircuitState::Open, "3 of 6");
}

#[tokio::test(start_paused = true)]
async fn slow_calls_trip_and_a_slow_probe_fails() {
    let config = CircuitConfig::default().consecutive_failures(0).slow_calls(
        Duration::from_secs(5),
        0.5,
        Window::Calls(4),
        4,
    );
    let mut h = harness(config);
    h.answer_after(6).await.unwrap();
    h.answer_after(1).await.unwrap();
    h.answer_after(1).await.unwrap();
    assert_eq!(h.health.circuit(), CircuitState::Closed);
    h.answer_after(5).await.unwrap(); // 2 of 4 slow: 50 %
    assert_eq!(h.health.circuit(), CircuitState::Open);
    advance(Duration::from_secs(30)).await;
    h.answer_after(7).await.unwrap();
    assert_eq!(
        h.health.circuit(),
        CircuitState::Open,
        "a slow probe re-opens"
    );
    assert_eq!(h.health.trips(), 2);
}

#[tokio::test(start_paused = true)]
async fn call_without_poll_ready_decides_on_the_spot() {
    let health = Health::standalone("p", "m");
    let mut svc = CircuitBreaker::with_config(
        tower::service_fn(|_: Req| async { Ok::<_, BoxError>(response(503)) }),
        health.clone(),
        CircuitConfig::default().consecutive_failures(1),
    )
    .unwrap();
    use tower::Service;
    let _ = svc.call(Request::new(())).await;
    assert_eq!(health.circuit(), CircuitState::Open);
    let err = svc.call(Request::new(())).await.unwrap_err();
    assert!(find::<CircuitOpen>(&*err).is_some());
}

#[tokio::test(start_paused = true)]
async fn inner_readiness_and_errors_pass_through() {
    let mut h = harness(CircuitConfig::default());
    h.handle.allow(0);
    assert_pending!(h.svc.poll_ready());
    h.handle.allow(1);
    assert!(h.svc.is_woken());
    assert_ready_ok!(h.svc.poll_ready());
    h.handle.send_error("inner broke");
    let err = assert_ready!(h.svc.poll_ready()).unwrap_err();
    assert_eq!(err.to_string(), "inner broke");
}

#[test]
fn invalid_configs_are_refused() {
    let health = Health::standalone("p", "m");
    let err =
        CircuitBreakerLayer::with_config(health, CircuitConfig::default().jitter(2.0)).unwrap_err();
    assert_eq!(err.field(), "jitter");
}

#[tokio::test(start_paused = true)]
async fn a_grant_that_went_stale_before_call_is_decided_again() {
    let mut h = harness(
        CircuitConfig::default()
            .consecutive_failures(1)
            .half_open(2, 3),
    );
    // Ready while closed; another clone trips the circuit before this one calls.
    let mut late = h.svc.clone();
    assert_ready_ok!(late.poll_ready());
    let _ = h.answer(503).await;
    assert_eq!(
        h.refused_with(&mut late).await.retry_in(),
        Duration::from_secs(30)
    );

    // Two probe permits; the first probe fails and re-opens the circuit, so the
    // second permit is worthless: its call is refused without reaching the provider.
    advance(Duration::from_secs(30)).await;
    let mut a = h.svc.clone();
    let mut b = h.svc.clone();
    assert_ready_ok!(a.poll_ready());
    assert_ready_ok!(b.poll_ready());
    let fut = a.call(Request::new(()));
    h.handle
        .next_request()
        .await
        .unwrap()
        .1
        .send_response(response(500));
    let _ = fut.await;
    assert_eq!(h.health.circuit(), CircuitState::Open);
    let err = b.call(Request::new(())).await.unwrap_err();
    assert!(h.handle.poll_request().is_pending());
    assert_eq!(
        find::<CircuitOpen>(&*err).unwrap().retry_in(),
        Duration::from_secs(60)
    );
    assert_eq!(h.svc.get_ref().probes_in_flight(), 0);
}

/// Time spent open is not healthy time: after a rollback re-opens the circuit
/// through Health (a recovery ramp does this), a failed probe must not forgive
/// trips for the time the circuit stayed open.
#[tokio::test(start_paused = true)]
async fn time_spent_open_after_a_rollback_forgives_nothing() {
    let config = CircuitConfig::default()
        .consecutive_failures(1)
        .half_open(1, 1)
        .healthy_period(Duration::from_secs(600));
    let mut h = harness(config);
    let _ = h.answer(503).await;
    assert_eq!(h.health.trips(), 1);
    advance(Duration::from_secs(30)).await;
    let _ = h.answer(200).await;
    assert_eq!(h.health.circuit(), CircuitState::Closed);

    // A ramp rolls back: one more trip, open for 20 minutes (two healthy periods).
    h.health.set_trips(2);
    assert!(h.health.transition(
        CircuitState::Closed,
        CircuitState::Open,
        Some(Instant::now() + Duration::from_secs(1200))
    ));
    advance(Duration::from_secs(1200)).await;
    let _ = h.answer(503).await; // the probe fails
    assert_eq!(h.health.circuit(), CircuitState::Open);
    assert_eq!(h.health.trips(), 3, "no healthy period passed while open");
    assert_eq!(h.refused().await.retry_in(), Duration::from_secs(120));
}
