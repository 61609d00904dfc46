//! When the breaker decides: a 2xx at the end of its body, anything else at its
//! headers, and an attempt dropped by a timer above as a timeout.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt, service_fn};
use tower_failover_circuit::{CircuitBreakerLayer, CircuitConfig};
use tower_failover_core::error::{TruncatedStream, find};
use tower_failover_core::{AttemptDeadline, CircuitState, Health};
use tower_layer::Layer;

/// One SSE chunk, then an error (`Some`) or silence for ever (`None`).
struct OneChunk {
    sent: bool,
    then: Option<BoxError>,
}

impl Body for OneChunk {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if !self.sent {
            self.sent = true;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(b"data: {}\n\n")))));
        }
        match self.then.take() {
            Some(e) => Poll::Ready(Some(Err(e))),
            None => Poll::Pending,
        }
    }
}

fn breaker(
    health: &Health,
    broken: bool,
) -> impl Service<
    Request<()>,
    Response = Response<
        tower_failover_circuit::future::CircuitBody<OneChunk, tower_failover_core::LlmClassifier>,
    >,
    Error = BoxError,
> + Clone {
    let config = CircuitConfig::default()
        .consecutive_failures(3)
        .half_open(1, 1)
        .jitter(0.0);
    CircuitBreakerLayer::with_config(health.clone(), config)
        .unwrap()
        .layer(service_fn(move |_req: Request<()>| async move {
            Ok::<_, BoxError>(Response::new(OneChunk {
                sent: false,
                then: broken.then(|| TruncatedStream::new("connection closed").into()),
            }))
        }))
}

#[tokio::test(start_paused = true)]
async fn a_200_that_breaks_mid_stream_trips_the_circuit() {
    let health = Health::standalone("p", "m");
    let svc = breaker(&health, true);
    for i in 0..3 {
        assert_eq!(health.circuit(), CircuitState::Closed, "call {i}");
        let res = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert_eq!(res.status(), 200);
        assert!(res.body().verdict_pending());
        let err = res.into_body().collect().await.unwrap_err();
        assert!(
            find::<TruncatedStream>(&*err).is_some(),
            "the error is passed on"
        );
    }
    assert_eq!(health.circuit(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_probe_holds_its_permit_until_its_body_ends() {
    let health = Health::standalone("p", "m");
    let layer = CircuitBreakerLayer::with_config(
        health.clone(),
        CircuitConfig::default()
            .consecutive_failures(1)
            .half_open(1, 1)
            .jitter(0.0),
    )
    .unwrap();
    let mut broken = true;
    let mut svc = layer.clone().layer(service_fn(move |_req: Request<()>| {
        let then = broken.then(|| BoxError::from(TruncatedStream::new("cut")));
        broken = false;
        async move { Ok::<_, BoxError>(Response::new(OneChunk { sent: false, then })) }
    }));
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    let _ = res.into_body().collect().await;
    assert_eq!(health.circuit(), CircuitState::Open);
    tokio::time::advance(Duration::from_secs(31)).await;

    // The probe: a stream that has not ended yet keeps the only permit.
    let res = svc
        .ready()
        .await
        .unwrap()
        .call(Request::new(()))
        .await
        .unwrap();
    assert_eq!(layer.probes_in_flight(), 1);
    assert_eq!(health.circuit(), CircuitState::HalfOpen);
    let mut body = res.into_body();
    assert!(body.frame().await.unwrap().is_ok());
    assert_eq!(layer.probes_in_flight(), 1, "still streaming");
    // A caller who walks away mid-stream gives the permit back, counting nothing.
    drop(body);
    assert_eq!(layer.probes_in_flight(), 0);
    assert_eq!(health.circuit(), CircuitState::HalfOpen);
}

fn with_deadline(after: Duration) -> Request<()> {
    let mut req = Request::new(());
    AttemptDeadline::set_on(&mut req, Instant::now() + after);
    req
}

#[tokio::test(start_paused = true)]
async fn a_hung_attempt_dropped_by_its_timer_counts_as_a_timeout() {
    let health = Health::standalone("p", "m");
    let layer = CircuitBreakerLayer::with_config(
        health.clone(),
        CircuitConfig::default().consecutive_failures(3).jitter(0.0),
    )
    .unwrap();
    let svc = layer.layer(service_fn(|_req: Request<()>| {
        std::future::pending::<Result<Response<OneChunk>, BoxError>>()
    }));
    // Cancelled by the caller before the deadline: neutral, however often.
    for _ in 0..5 {
        let call = svc.clone().oneshot(with_deadline(Duration::from_secs(10)));
        assert!(
            tokio::time::timeout(Duration::from_secs(1), call)
                .await
                .is_err()
        );
    }
    assert_eq!(health.circuit(), CircuitState::Closed);
    // Dropped by the timer at its deadline: three timeouts trip it.
    for _ in 0..3 {
        let call = svc.clone().oneshot(with_deadline(Duration::from_secs(2)));
        assert!(
            tokio::time::timeout(Duration::from_secs(2), call)
                .await
                .is_err()
        );
    }
    assert_eq!(health.circuit(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_stream_dropped_by_its_timer_counts_as_a_timeout() {
    let health = Health::standalone("p", "m");
    let svc = breaker(&health, false);
    for _ in 0..3 {
        let read = async {
            let res = svc
                .clone()
                .oneshot(with_deadline(Duration::from_secs(2)))
                .await?;
            res.into_body().collect().await.map(|_| ())
        };
        assert!(
            tokio::time::timeout(Duration::from_secs(2), read)
                .await
                .is_err()
        );
    }
    assert_eq!(health.circuit(), CircuitState::Open);
}
