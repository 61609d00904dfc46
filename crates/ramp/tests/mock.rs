//! The admission service against tower-test mocks: readiness, errors, shedding.

use http::{Request, Response};
use tokio_test::{assert_pending, assert_ready_ok};
use tower_failover_core::error::{Shed, find};
use tower_failover_core::{CircuitState, Health};
use tower_failover_ramp::{RampConfig, RampLayer};
use tower_test::mock;

type Mock = mock::Mock<Request<String>, Response<String>>;
type Handle = mock::Handle<Request<String>, Response<String>>;

fn setup(health: &Health) -> (mock::Spawn<tower_failover_ramp::Ramp<Mock>>, Handle) {
    mock::spawn_layer(
        RampLayer::with_config(health.clone(), RampConfig::default().seed(1)).unwrap(),
    )
}

#[tokio::test]
async fn readiness_is_the_inner_services() {
    let health = Health::standalone("p", "m");
    let (mut svc, mut handle) = setup(&health);
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());

    // A ramp at 0 % adds no readiness of its own either: it sheds in `call`.
    let health = Health::standalone("p", "m");
    health.set_ramp(Some(0), 0);
    let (mut svc, mut handle) = setup(&health);
    handle.allow(0);
    assert_pending!(svc.poll_ready());
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    // A shed call leaves the inner service's reservation for the next call.
    assert!(svc.call(Request::new(String::new())).await.is_err());
    assert_ready_ok!(svc.poll_ready());
}

#[tokio::test]
async fn admitted_requests_and_their_errors_pass_through() {
    let health = Health::standalone("p", "m");
    let (mut svc, mut handle) = setup(&health);
    handle.allow(2);

    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::new("hello".to_owned()));
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.body(), "hello");
    send.send_response(Response::new("world".to_owned()));
    assert_eq!(fut.await.unwrap().body().get_ref(), "world");

    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::new(String::new()));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error(std::io::Error::other("boom"));
    let err = fut.await.unwrap_err();
    assert_eq!(err.to_string(), "boom");
    assert!(find::<std::io::Error>(&*err).is_some());
}

#[tokio::test]
async fn requests_beyond_the_share_are_shed_without_reaching_the_provider() {
    let health = Health::standalone("openai", "gpt-4o");
    let (mut svc, mut handle) = setup(&health);
    health.set_ramp(Some(0), 0);
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let err = svc.call(Request::new(String::new())).await.unwrap_err();
    let shed = find::<Shed>(&*err).expect("a Shed error");
    assert_eq!(shed.reason(), "ramp");
    assert_eq!(shed.provider().unwrap().to_string(), "openai/gpt-4o");
    assert!(
        tokio_test::task::spawn(handle.next_request())
            .poll()
            .is_pending(),
        "the provider saw nothing"
    );
}

#[tokio::test]
async fn the_breakers_half_open_trials_are_never_shed() {
    let health = Health::standalone("p", "m");
    let (mut svc, mut handle) = setup(&health);
    health.set_ramp(Some(0), 0);
    health.transition(CircuitState::Closed, CircuitState::Open, None);
    health.transition(CircuitState::Open, CircuitState::HalfOpen, None);
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let fut = svc.call(Request::new(String::new()));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_response(Response::new(String::new()));
    fut.await.unwrap();
}
