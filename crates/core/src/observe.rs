//! Recording what happens at one provider into its [`Health`].
//!
//! [`ObserveLayer`] is the one place where a per-provider stack writes its statistics:
//! it classifies each attempt, counts the outcome, tracks requests in flight (until
//! the response body ends, so long streams count), measures the time to the first
//! body byte (not to the response headers: a stream's headers come before its first
//! token) and whole-request latency, and marks the quota group rate limited on a 429.
//! Balancers, fallbacks, ramps and snapshots then only read the handle.
//!
//! Place it below the circuit breaker and the ramp, so that requests they refuse are
//! not counted as requests to the provider:
//!
//! ```
//! use http::{Request, Response};
//! use tower::{ServiceBuilder, ServiceExt, service_fn};
//! use tower_failover_core::{Health, observe::ObserveLayer, replay::ReplayBody};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let health = Health::standalone("openai", "gpt-4o-mini");
//! let provider = service_fn(|_req: Request<ReplayBody>| async {
//!     Ok::<_, tower::BoxError>(Response::builder().status(429).header("retry-after", "7").body(ReplayBody::empty())?)
//! });
//! let svc = ServiceBuilder::new().layer(ObserveLayer::new(health.clone())).service(provider);
//! let res = svc.oneshot(Request::new(ReplayBody::from("{}"))).await?;
//! assert_eq!(res.status(), 429);
//! assert_eq!(health.counters().rate_limited, 1);
//! assert!(health.is_rate_limited(tokio::time::Instant::now()));
//! # Ok(())
//! # }
//! ```

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::BoxError;
use tower_layer::Layer;
use tower_service::Service;

use crate::classify::{Classify, LlmClassifier};
use crate::health::{Health, InFlight};
use crate::outcome::{FailureKind, Outcome};

/// Records each attempt's outcome, load and latency into a [`Health`] handle.
#[derive(Clone)]
pub struct ObserveLayer<C = LlmClassifier> {
    health: Health,
    classifier: C,
    default_retry_after: Duration,
}

impl ObserveLayer {
    /// Observes into `health` with the default classifier; a 429 without a wait
    /// marks the provider rate limited for 1 second.
    pub fn new(health: Health) -> Self {
        ObserveLayer {
            health,
            classifier: LlmClassifier::default(),
            default_retry_after: Duration::from_secs(1),
        }
    }
}

impl<C> ObserveLayer<C> {
    /// Uses another classifier.
    pub fn classifier<C2: Classify>(self, classifier: C2) -> ObserveLayer<C2> {
        ObserveLayer {
            health: self.health,
            classifier,
            default_retry_after: self.default_retry_after,
        }
    }

    /// The rate-limit window assumed for a 429 that names none.
    pub fn default_retry_after(mut self, wait: Duration) -> Self {
        self.default_retry_after = wait;
        self
    }
}

impl<C> fmt::Debug for ObserveLayer<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserveLayer")
            .field("health", self.health.id())
            .finish_non_exhaustive()
    }
}

impl<S, C: Clone> Layer<S> for ObserveLayer<C> {
    type Service = Observe<S, C>;

    fn layer(&self, inner: S) -> Observe<S, C> {
        Observe {
            inner,
            health: self.health.clone(),
            classifier: self.classifier.clone(),
            default_retry_after: self.default_retry_after,
        }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S, C = LlmClassifier> {
    inner: S,
    health: Health,
    classifier: C,
    default_retry_after: Duration,
}

impl<S, C> Observe<S, C> {
    /// The health handle written to.
    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The inner service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the inner service.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Observe<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Observe")
            .field("inner", &self.inner)
            .field("health", self.health.id())
            .finish_non_exhaustive()
    }
}

impl<S, C, B, RB> Service<Request<B>> for Observe<S, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    C: Classify,
    RB: Body,
{
    type Response = Response<ObservedBody<RB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let guard = self.health.start_request();
        ResponseFuture {
            fut: self.inner.call(req),
            guard: Some(guard),
            classifier: self.classifier.clone(),
            started: Instant::now(),
            default_retry_after: self.default_retry_after,
        }
    }
}

pin_project! {
    /// The future of [`Observe`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        fut: F,
        guard: Option<InFlight>,
        classifier: C,
        started: Instant,
        default_retry_after: Duration,
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

fn note(health: &Health, outcome: &Outcome, started: Instant, default_retry_after: Duration) {
    health.record(outcome);
    match outcome {
        Outcome::RateLimited { retry_after } => {
            health.mark_rate_limited(retry_after.unwrap_or(default_retry_after));
        }
        // A timeout is a lower bound of the time to first byte: let the balancer
        // see how slow the provider was.
        Outcome::Failure {
            kind: FailureKind::Timeout,
        } => {
            let now = Instant::now();
            health
                .ttfb()
                .observe(now.saturating_duration_since(started), now);
        }
        _ => {}
    }
}

impl<F, C, RB, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    C: Classify,
    RB: Body,
{
    type Output = Result<Response<ObservedBody<RB>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = ready!(this.fut.poll(cx));
        let Some(mut guard) = this.guard.take() else {
            return Poll::Ready(Err("observe future polled after completion".into()));
        };
        match result {
            Ok(res) => {
                let outcome = this.classifier.classify_response(&res);
                guard.answered(&outcome);
                note(
                    guard.health(),
                    &outcome,
                    *this.started,
                    *this.default_retry_after,
                );
                let measure = outcome.is_success();
                let started = *this.started;
                Poll::Ready(Ok(res.map(|inner| ObservedBody {
                    inner,
                    guard: Some(guard),
                    started,
                    first_byte_pending: measure,
                })))
            }
            Err(e) => {
                let err = e.into();
                let outcome = this.classifier.classify_error(&*err);
                guard.answered(&outcome);
                note(
                    guard.health(),
                    &outcome,
                    *this.started,
                    *this.default_retry_after,
                );
                Poll::Ready(Err(err))
            }
        }
    }
}

pin_project! {
    /// A response body that records the time to its first data frame and keeps the
    /// request counted in flight until it ends (or is dropped).
    pub struct ObservedBody<B> {
        #[pin]
        inner: B,
        guard: Option<InFlight>,
        started: Instant,
        first_byte_pending: bool,
    }
}

impl<B> ObservedBody<B> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body (the request stops counting as in flight).
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> fmt::Debug for ObservedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedBody").finish_non_exhaustive()
    }
}

impl<B: Body> Body for ObservedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let frame = ready!(this.inner.poll_frame(cx));
        match &frame {
            Some(Ok(f)) if f.is_data() => {
                if *this.first_byte_pending {
                    *this.first_byte_pending = false;
                    if let Some(g) = this.guard.as_ref() {
                        let now = Instant::now();
                        g.health()
                            .ttfb()
                            .observe(now.saturating_duration_since(*this.started), now);
                    }
                }
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                if let (Some(g), true) = (this.guard.take(), frame.is_none()) {
                    // One clock read for the end of the body.
                    let now = Instant::now();
                    let took = now.saturating_duration_since(*this.started);
                    if *this.first_byte_pending {
                        // An empty body: its end is its first byte.
                        g.health().ttfb().observe(took, now);
                    }
                    g.health().latency().observe(took, now);
                }
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::TransportError;
    use crate::replay::ReplayBody;
    use http_body_util::BodyExt;
    use tower::{ServiceExt, service_fn};

    #[tokio::test(start_paused = true)]
    async fn measures_first_byte_and_holds_in_flight_until_body_ends() {
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, BoxError>(Response::new(ReplayBody::from("hello")))
        }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(health.in_flight(), 1, "the body has not been read yet");
        assert_eq!(health.counters().successes, 1);
        tokio::time::advance(Duration::from_millis(100)).await;
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        assert_eq!(health.in_flight(), 0);
        assert_eq!(health.ttfb().get(), Duration::from_millis(400));
        assert_eq!(health.latency().get(), Duration::from_millis(400));
    }

    #[tokio::test(start_paused = true)]
    async fn dropping_the_body_releases_in_flight() {
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(Response::new(ReplayBody::from("x")))
        }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(health.in_flight(), 1);
        drop(res);
        assert_eq!(health.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn errors_are_classified_and_timeouts_count_as_slow() {
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            Err::<Response<ReplayBody>, BoxError>(
                TransportError::new(FailureKind::Timeout, "no first byte").into(),
            )
        }));
        let err = svc.oneshot(Request::new(())).await.unwrap_err();
        assert!(err.to_string().contains("timeout"));
        assert_eq!(health.counters().failures, 1);
        assert_eq!(health.ttfb().get(), Duration::from_secs(2));
        assert_eq!(health.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn failed_responses_do_not_lower_ttfb() {
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| async {
            let mut res = Response::new(ReplayBody::from("{\"error\":{}}"));
            *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            Ok::<_, BoxError>(res)
        }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        let _ = res.into_body().collect().await.unwrap();
        assert_eq!(health.counters().failures, 1);
        assert_eq!(health.ttfb().get(), Duration::ZERO);
    }

    #[tokio::test(start_paused = true)]
    async fn rate_limit_without_header_uses_the_default_window() {
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone())
            .default_retry_after(Duration::from_secs(3))
            .layer(service_fn(|_req: Request<()>| async {
                let mut res = Response::new(ReplayBody::empty());
                *res.status_mut() = http::StatusCode::TOO_MANY_REQUESTS;
                Ok::<_, BoxError>(res)
            }));
        let _ = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(
            health.quota().remaining(Instant::now()),
            Some(Duration::from_secs(3))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_hung_provider_is_suspect_while_its_request_waits() {
        let health = Health::standalone("p", "m");
        let svc =
            ObserveLayer::new(health.clone()).layer(service_fn(|req: Request<u64>| async move {
                tokio::time::sleep(Duration::from_millis(*req.body())).await;
                Ok::<_, BoxError>(Response::new(ReplayBody::from("x")))
            }));
        let first = svc.clone().oneshot(Request::new(20)).await.unwrap();
        let _ = first.into_body().collect().await.unwrap();
        assert_eq!(health.suspect_threshold(), Duration::from_millis(500));
        let hung = tokio::spawn(svc.clone().oneshot(Request::new(60_000)));
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(!health.is_suspect(Instant::now()));
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(health.is_suspect(Instant::now()), "silent past 500 ms");
        // An answer from another request clears it; the hung one keeps waiting.
        let res = svc.oneshot(Request::new(10)).await.unwrap();
        assert!(!health.is_suspect(Instant::now()));
        assert_eq!(health.waiting(), 1);
        drop(res);
        hung.abort();
        let _ = hung.await;
        assert_eq!((health.waiting(), health.in_flight()), (0, 0));
    }
}
