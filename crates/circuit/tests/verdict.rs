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
use tower_failover_core::{AttemptDeadline, CircuitState, Health, LateVerdict, RejectKind};
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

/// A stand-in for output validation below the breaker: one chunk, then a clean end
/// that first sets the response's late verdict to `kind` (if any), as validation in
/// its `after_commit = "report"` mode does.
struct EndsWithVerdict {
    chunk: Option<Bytes>,
    late: LateVerdict,
    kind: Option<RejectKind>,
}

impl Body for EndsWithVerdict {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if let Some(chunk) = self.chunk.take() {
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if let Some(kind) = self.kind.take() {
            self.late.reject(kind);
        }
        Poll::Ready(None)
    }
}

/// Three answers that end cleanly but carry a late rejection of `kind`, through a
/// breaker with `config` and a threshold of three: the circuit's state after them.
async fn after_three_late(kind: RejectKind, config: CircuitConfig) -> (CircuitState, Health) {
    let health = Health::standalone("p", "m");
    let svc = CircuitBreakerLayer::with_config(
        health.clone(),
        config.consecutive_failures(3).half_open(1, 1).jitter(0.0),
    )
    .unwrap()
    .layer(service_fn(move |_req: Request<()>| async move {
        let late = LateVerdict::new();
        let mut res = Response::new(EndsWithVerdict {
            chunk: Some(Bytes::from_static(b"data: {\"x\n\n")),
            late: late.clone(),
            kind: Some(kind),
        });
        res.extensions_mut().insert(late);
        Ok::<_, BoxError>(res)
    }));
    for i in 0..3 {
        assert_eq!(health.circuit(), CircuitState::Closed, "{kind}: call {i}");
        let res = svc.clone().oneshot(Request::new(())).await.unwrap();
        assert!(res.body().verdict_pending());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "data: {\"x\n\n", "the caller's body ends cleanly");
    }
    (health.circuit(), health)
}

#[tokio::test(start_paused = true)]
async fn a_late_malformed_rejection_at_a_clean_end_trips_the_circuit() {
    let (state, health) = after_three_late(RejectKind::InvalidJson, CircuitConfig::default()).await;
    assert_eq!(state, CircuitState::Open);
    let err = health_call_refused(&health).await;
    assert!(err, "the open circuit refuses the next call");
}

#[tokio::test(start_paused = true)]
async fn a_late_content_rejection_is_neutral_unless_configured() {
    let (state, _) = after_three_late(RejectKind::Refusal, CircuitConfig::default()).await;
    assert_eq!(state, CircuitState::Closed, "content kinds stay neutral");
    let (state, _) = after_three_late(
        RejectKind::Refusal,
        CircuitConfig::default().rejected_is_failure(true),
    )
    .await;
    assert_eq!(state, CircuitState::Open);
    let (state, _) = after_three_late(
        RejectKind::InvalidJson,
        CircuitConfig::default().malformed_is_failure(false),
    )
    .await;
    assert_eq!(state, CircuitState::Closed, "malformed_is_failure = false");
}

/// Whether a breaker on `health` refuses a call (its circuit is open).
async fn health_call_refused(health: &Health) -> bool {
    let svc =
        CircuitBreakerLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(Response::new(()))
        }));
    svc.oneshot(Request::new(())).await.is_err()
}
