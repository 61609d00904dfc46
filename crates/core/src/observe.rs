//! Recording what happens at one provider into its [`Health`].
//!
//! [`ObserveLayer`] is the one place where a per-provider stack writes its statistics:
//! it classifies each attempt, counts the outcome, tracks requests in flight (until
//! the response body ends, so long streams count), measures the time to the first
//! body byte (not to the response headers: a stream's headers come before its first
//! token) and whole-request latency, and marks the quota group rate limited on a 429.
//! Balancers, fallbacks, ramps and snapshots then only read the handle.
//!
//! # When the verdict is made
//!
//! - An error from the provider's service, or a non-2xx answer, is decided at once.
//! - A 2xx answer is a success only once its body **ends cleanly**: a stream that
//!   answers 200, sends a chunk and then breaks (a reset, a truncation, an idle
//!   timeout) is that provider's failure, classified with
//!   [`Classify::classify_error`] from the body's error. Until then nothing is
//!   counted, so the counters of a stream move when it ends, not at its headers.
//! - An attempt (future or body) dropped unfinished **at or after** its
//!   [`AttemptDeadline`] was ended by a timer above (a router's attempt timeout, the
//!   request's [`Deadline`](crate::Deadline)): it counts as a
//!   [`Timeout`](FailureKind::Timeout) failure, so a hung provider trips its circuit
//!   whichever timer fires. Dropped before it, the caller cancelled: nothing is
//!   counted.
//! - A 2xx body that ends cleanly can still carry a **late verdict**: output
//!   validation below this layer may only find a bad answer after its commit point
//!   (a malformed event in the middle of a stream that has already reached the
//!   caller). With `after_commit = "report"` it ends the caller's body cleanly, but
//!   it sets the response's [`LateVerdict`] first, and the clean end then counts as
//!   [`Outcome::Rejected`] of that kind instead of a success. Each layer that judges
//!   at the end of a body (this one, the circuit breaker's and the ramp's) looks the
//!   cell up once, at the response headers, and reads it once, at the end of the
//!   body: nothing per frame, and nothing at all when no validation is installed.
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
use std::sync::{Arc, OnceLock};
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
use crate::deadline::AttemptDeadline;
use crate::health::{Health, InFlight};
use crate::outcome::{FailureKind, Outcome, RejectKind};
use crate::time;
use crate::trace;
use crate::verdict::Verdict;

/// A verdict on a 2xx answer found after its body's commit point, handed from the
/// layer that found it to the layers above that count the answer's outcome.
///
/// Output validation that checks a stream puts one into the response's
/// [extensions](http::Response::extensions) with its headers, and sets it if the
/// stream fails validation after bytes have already gone to the caller. The layers
/// that give a 2xx its verdict at the end of its body ([`ObservedBody`], the circuit
/// breaker's and the ramp's bodies) take the cell at the headers
/// ([`LateVerdict::of`]) and, when the body ends cleanly, count
/// [`LateVerdict::outcome`] instead of a plain success: the provider's health hears
/// the rejection as the rejection it is (a malformed kind counts as a failure by
/// default, a content kind stays neutral unless configured otherwise), while the
/// caller's body still ends as the validation's `after_commit` mode says.
///
/// Clones share one cell; the first rejection set wins. It is a pointer-sized
/// handle, allocated once per validated stream, and absent otherwise.
///
/// ```
/// use http::Response;
/// use tower_failover_core::{LateVerdict, Outcome, RejectKind};
///
/// let late = LateVerdict::new();
/// let mut res = Response::new(());
/// res.extensions_mut().insert(late.clone());
///
/// // A layer above, at the headers:
/// let seen = LateVerdict::of(&res);
/// assert_eq!(LateVerdict::outcome(seen.as_ref()), Outcome::Success);
///
/// // Validation below finds a cut event after the commit point:
/// assert!(late.reject(RejectKind::InvalidJson));
/// assert!(!late.reject(RejectKind::Refusal), "the first verdict stays");
///
/// // The layer above, at the clean end of the body:
/// assert_eq!(
///     LateVerdict::outcome(seen.as_ref()),
///     Outcome::Rejected { kind: RejectKind::InvalidJson }
/// );
/// ```
#[derive(Clone, Default)]
pub struct LateVerdict(Arc<OnceLock<RejectKind>>);

impl LateVerdict {
    /// An empty cell: no late verdict yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The cell a response carries, if a layer below put one there (a clone
    /// sharing it). Call it once, at the response headers.
    #[inline]
    pub fn of<B>(res: &Response<B>) -> Option<LateVerdict> {
        res.extensions().get::<LateVerdict>().cloned()
    }

    /// Records that the answer failed validation after its commit point. Returns
    /// `false` (and keeps the first) if a verdict was already set.
    pub fn reject(&self, kind: RejectKind) -> bool {
        self.0.set(kind).is_ok()
    }

    /// The late rejection, if one was found.
    #[inline]
    pub fn rejected(&self) -> Option<RejectKind> {
        self.0.get().copied()
    }

    /// What a 2xx answer whose body ended cleanly amounts to: a success, unless
    /// `late` holds a rejection.
    #[inline]
    pub fn outcome(late: Option<&LateVerdict>) -> Outcome {
        match late.and_then(LateVerdict::rejected) {
            Some(kind) => Outcome::Rejected { kind },
            None => Outcome::Success,
        }
    }
}

impl fmt::Debug for LateVerdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("LateVerdict")
            .field(&self.rejected())
            .finish()
    }
}

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
            default_retry_ms: whole_millis(self.default_retry_after),
        }
    }
}

/// The service made by [`ObserveLayer`].
#[derive(Clone)]
pub struct Observe<S, C = LlmClassifier> {
    inner: S,
    health: Health,
    classifier: C,
    /// The layer's `default_retry_after`, in the form each attempt carries.
    default_retry_ms: u32,
}

/// A wait in whole milliseconds, rounded up and saturating at `u32::MAX` (49
/// days): four bytes in [`Owed`]'s padding instead of a 16-byte `Duration` in every
/// future and body of this layer.
fn whole_millis(wait: Duration) -> u32 {
    let ms = wait.as_nanos().div_ceil(1_000_000);
    u32::try_from(ms).unwrap_or(u32::MAX)
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
    RB::Error: Into<BoxError>,
{
    type Response = Response<ObservedBody<RB, C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        // The reading a layer above took for this call, if one did (see
        // `time::call_now`): one clock reading less per request in a stack.
        let started = time::call_now();
        let started_ns = self.health.clock_nanos(started);
        let span = AttemptSpan::new(trace::current_attempt(self.health.id(), req.headers()));
        let deadline_ns =
            AttemptDeadline::of(&req).map_or(0, |at| self.health.clock_nanos(at).saturating_add(1));
        let owed = Owed {
            guard: self.health.start_request_at_nanos(started_ns),
            deadline_ns,
            started_ns,
            default_retry_ms: self.default_retry_ms,
            pending: true,
            first_byte: true,
            late: None,
            span,
        };
        let fut = {
            let _in = owed.span.enter();
            self.inner.call(req)
        };
        ResponseFuture {
            fut,
            owed: Some(owed),
            classifier: self.classifier.clone(),
        }
    }
}

/// One attempt still owed its verdict: counted in flight while it lives, and, if it
/// is dropped unfinished at or after the instant a timer above gives up on it (its
/// [`AttemptDeadline`]), counted as that provider's
/// [`Timeout`](FailureKind::Timeout). Dropped earlier, the caller cancelled: nothing
/// is counted.
struct Owed {
    guard: InFlight,
    /// When a timer above gives up on the attempt ([`AttemptDeadline`]): one more
    /// than its nanoseconds on the health record's clock; 0 when none does.
    deadline_ns: u64,
    /// When the attempt started, on the health record's clock
    /// ([`Health::clock_nanos`]): 8 bytes instead of an `Instant`'s 16 in a struct
    /// that every move of the response copies.
    started_ns: u64,
    /// The wait assumed for a 429 that names none ([`whole_millis`]).
    default_retry_ms: u32,
    /// No verdict recorded yet (the future has not finished, or a 2xx body has not
    /// ended).
    pending: bool,
    /// The time to first byte is still to be measured.
    first_byte: bool,
    /// A verdict a layer below may set before the body ends (a 2xx only).
    late: Option<LateVerdict>,
    /// The attempt's span: entered while the attempt and its body are polled, and
    /// given the outcome and the time to first byte.
    span: AttemptSpan,
}

impl Owed {
    #[inline]
    fn health(&self) -> &Health {
        self.guard.health()
    }

    /// Whether the attempt is being dropped at or after its deadline (a timer
    /// above ended it) rather than cancelled by its caller.
    fn timed_out(&self) -> bool {
        self.deadline_ns != 0
            && self.health().clock_nanos(Instant::now()).saturating_add(1) >= self.deadline_ns
    }

    /// Records a verdict made now (not a clean end of a 2xx body): the outcome,
    /// a rate-limit window for a 429, a lower bound of the time to first byte for a
    /// timeout.
    fn note(&self, outcome: &Outcome) {
        let health = self.health();
        health.record(outcome);
        match outcome {
            Outcome::RateLimited { retry_after } => {
                health.mark_rate_limited(
                    retry_after.unwrap_or(Duration::from_millis(u64::from(self.default_retry_ms))),
                );
            }
            Outcome::Failure {
                kind: FailureKind::Timeout,
            } => timed_out_ttfb(health, self.started_ns),
            _ => {}
        }
    }
}

/// An attempt's span as an attempt in flight keeps it: nothing when the span is
/// disabled (no subscriber was installed, or the installed one does not want
/// attempt spans), boxed when it records.
///
/// A `tracing::Span` is 40 bytes, and `Owed` travels inside this layer's future and
/// body, which are moved several times a request: carried inline even when disabled,
/// it cost the layer about 16 ns a request (`bench_runner --only observe`). A
/// disabled span does nothing when entered or recorded, so leaving it out changes
/// nothing; a traced attempt pays one small allocation, beside what its subscriber
/// spends on the span itself.
struct AttemptSpan(Option<Box<tracing::Span>>);

impl AttemptSpan {
    #[inline]
    fn new(span: tracing::Span) -> Self {
        AttemptSpan((!span.is_disabled()).then(|| Box::new(span)))
    }

    /// Enters the span, if it records.
    #[inline]
    fn enter(&self) -> Option<tracing::span::Entered<'_>> {
        self.0.as_deref().map(tracing::Span::enter)
    }

    #[inline]
    fn outcome(&self, outcome: &Outcome) {
        if let Some(span) = &self.0 {
            trace::record_outcome(span, outcome);
        }
    }

    #[inline]
    fn ttfb(&self, took: Duration) {
        if let Some(span) = &self.0 {
            trace::record_ttfb(span, took);
        }
    }
}

impl Drop for Owed {
    fn drop(&mut self) {
        if self.pending && self.timed_out() {
            let health = self.guard.health();
            let outcome = Outcome::failure(FailureKind::Timeout);
            health.record(&outcome);
            self.span.outcome(&outcome);
            if self.first_byte {
                // As for a timeout error: a lower bound of the time to first byte.
                timed_out_ttfb(health, self.started_ns);
            }
        }
    }
}

pin_project! {
    /// The future of [`Observe`].
    pub struct ResponseFuture<F, C> {
        #[pin]
        fut: F,
        owed: Option<Owed>,
        classifier: C,
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

/// A timeout is a lower bound of the time to first byte of an attempt that started
/// at `started_ns` (on the health record's clock): the balancer sees how slow the
/// provider was.
fn timed_out_ttfb(health: &Health, started_ns: u64) {
    let now_ns = health.clock_nanos(Instant::now());
    health
        .ttfb()
        .observe_nanos(now_ns.saturating_sub(started_ns), now_ns);
}

impl<F, C, RB, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    C: Classify,
    RB: Body,
{
    type Output = Result<Response<ObservedBody<RB, C>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let entered = this.owed.as_ref().and_then(|o| o.span.enter());
        let result = ready!(this.fut.poll(cx));
        drop(entered);
        let Some(mut owed) = this.owed.take() else {
            return Poll::Ready(Err("observe future polled after completion".into()));
        };
        match result {
            Ok(mut res) => {
                let outcome = this.classifier.classify_response(&res);
                owed.guard.answered(&outcome);
                // Decided once: the layers above read it (see `crate::verdict`).
                Verdict::carry(this.classifier, &mut res, outcome);
                // A 2xx is a success only once its body has ended cleanly: a stream
                // that dies or stalls after its headers is the provider's failure.
                // Anything else is decided here, at the headers.
                let provisional = outcome.is_success();
                if !provisional {
                    owed.span.outcome(&outcome);
                    owed.note(&outcome);
                }
                owed.pending = provisional;
                owed.first_byte = provisional;
                if provisional {
                    owed.late = LateVerdict::of(&res);
                }
                let classifier = this.classifier.clone();
                Poll::Ready(Ok(res.map(|inner| ObservedBody {
                    inner,
                    owed: Some(owed),
                    classifier,
                })))
            }
            Err(e) => {
                owed.pending = false;
                let err = e.into();
                let outcome = this.classifier.classify_error(&*err);
                owed.guard.answered(&outcome);
                owed.span.outcome(&outcome);
                owed.note(&outcome);
                Poll::Ready(Err(err))
            }
        }
    }
}

/// The body ended cleanly now: a 2xx is now a success (or the rejection a layer
/// below found late); latency is measured.
fn ended(o: Owed) {
    let now_ns = o.health().clock_nanos(Instant::now());
    ended_after(o, now_ns);
}

/// [`ended`], with the clock already read: `now_ns` on the health record's clock.
fn ended_after(mut o: Owed, now_ns: u64) {
    let health = o.health();
    let took_ns = now_ns.saturating_sub(o.started_ns);
    let took = Duration::from_nanos(took_ns);
    if o.pending {
        let outcome = LateVerdict::outcome(o.late.as_ref());
        health.record(&outcome);
        o.span.outcome(&outcome);
    }
    if o.first_byte {
        // An empty body: its end is its first byte.
        health.ttfb().observe_nanos(took_ns, now_ns);
        health.metrics().ttfb(took);
        o.span.ttfb(took);
    }
    health.latency().observe_nanos(took_ns, now_ns);
    health.metrics().duration(took);
    o.pending = false;
}

pin_project! {
    /// A response body that records the time to its first data frame, keeps the
    /// request counted in flight until it ends (or is dropped), and gives a 2xx
    /// answer its verdict when it ends: a clean end is a success (unless a layer
    /// below set the response's [`LateVerdict`]: then that rejection), an error frame
    /// is the provider's failure (classified with [`Classify::classify_error`]).
    pub struct ObservedBody<B, C = LlmClassifier> {
        #[pin]
        inner: B,
        owed: Option<Owed>,
        classifier: C,
    }
}

impl<B, C> ObservedBody<B, C> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the body (the request stops counting as in flight, and a 2xx answer
    /// whose body has not ended gets no verdict).
    pub fn into_inner(self) -> B {
        let ObservedBody {
            inner, mut owed, ..
        } = self;
        if let Some(o) = owed.as_mut() {
            o.pending = false;
        }
        inner
    }
}

impl<B, C> fmt::Debug for ObservedBody<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObservedBody").finish_non_exhaustive()
    }
}

impl<B, C> Body for ObservedBody<B, C>
where
    B: Body,
    B::Error: Into<BoxError>,
    C: Classify,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let mut this = self.project();
        let entered = this.owed.as_ref().and_then(|o| o.span.enter());
        let polled = this.inner.as_mut().poll_frame(cx);
        drop(entered);
        match ready!(polled) {
            Some(Ok(frame)) => {
                // At most one clock read per frame: a one-chunk answer's first byte
                // and end share it.
                let mut first = None;
                if frame.is_data()
                    && let Some(o) = this.owed.as_mut()
                    && o.first_byte
                {
                    o.first_byte = false;
                    let now_ns = o.health().clock_nanos(Instant::now());
                    let took_ns = now_ns.saturating_sub(o.started_ns);
                    let took = Duration::from_nanos(took_ns);
                    o.health().ttfb().observe_nanos(took_ns, now_ns);
                    o.health().metrics().ttfb(took);
                    o.span.ttfb(took);
                    first = Some(now_ns);
                }
                // Trailers are a body's last frame, and a consumer may stop at
                // them (gRPC's does) or when the body says it has ended.
                if (frame.is_trailers() || this.inner.is_end_stream())
                    && let Some(o) = this.owed.take()
                {
                    match first {
                        Some(now_ns) => ended_after(o, now_ns),
                        None => ended(o),
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let err: BoxError = e.into();
                if let Some(mut o) = this.owed.take()
                    && o.pending
                {
                    // The answer broke after its headers: the provider's failure.
                    o.pending = false;
                    let outcome = match this.classifier.classify_error(&*err) {
                        // A body error is never a success, whatever a custom
                        // classifier says of it.
                        Outcome::Success => Outcome::failure(FailureKind::Other),
                        other => other,
                    };
                    o.span.outcome(&outcome);
                    o.note(&outcome);
                }
                Poll::Ready(Some(Err(err)))
            }
            None => {
                if let Some(o) = this.owed.take() {
                    ended(o);
                }
                Poll::Ready(None)
            }
        }
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

    #[test]
    fn the_default_wait_is_kept_in_whole_milliseconds_rounded_up() {
        assert_eq!(whole_millis(Duration::ZERO), 0);
        assert_eq!(whole_millis(Duration::from_micros(1)), 1);
        assert_eq!(whole_millis(Duration::from_micros(1_500)), 2);
        assert_eq!(whole_millis(Duration::from_secs(3)), 3_000);
        assert_eq!(whole_millis(Duration::MAX), u32::MAX);
    }

    #[tokio::test(start_paused = true)]
    async fn measures_first_byte_and_holds_in_flight_until_body_ends() {
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            Ok::<_, BoxError>(Response::new(ReplayBody::from("hello")))
        }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(health.in_flight(), 1, "the body has not been read yet");
        assert_eq!(
            health.counters().successes,
            0,
            "a 2xx is a success only once its body ends"
        );
        tokio::time::advance(Duration::from_millis(100)).await;
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, "hello");
        assert_eq!(health.counters().successes, 1);
        assert_eq!(health.in_flight(), 0);
        assert_eq!(health.ttfb().get(), Duration::from_millis(400));
        assert_eq!(health.latency().get(), Duration::from_millis(400));
    }

    /// A stand-in for output validation below: one chunk, then, at its clean end,
    /// a late rejection of `kind` (if any) set in the response's cell.
    struct EndsWithVerdict {
        chunk: Option<bytes::Bytes>,
        late: LateVerdict,
        kind: Option<RejectKind>,
    }

    impl Body for EndsWithVerdict {
        type Data = bytes::Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
            if let Some(chunk) = self.chunk.take() {
                return Poll::Ready(Some(Ok(Frame::data(chunk))));
            }
            if let Some(kind) = self.kind.take() {
                self.late.reject(kind);
            }
            Poll::Ready(None)
        }
    }

    fn late_service(
        kind: Option<RejectKind>,
    ) -> impl Service<
        Request<()>,
        Response = Response<EndsWithVerdict>,
        Error = BoxError,
        Future = impl Future<Output = Result<Response<EndsWithVerdict>, BoxError>>,
    > + Clone {
        service_fn(move |_req: Request<()>| async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let late = LateVerdict::new();
            let mut res = Response::new(EndsWithVerdict {
                chunk: Some(bytes::Bytes::from_static(b"data: {}\n\n")),
                late: late.clone(),
                kind,
            });
            res.extensions_mut().insert(late);
            Ok::<_, BoxError>(res)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_end_with_a_late_rejection_counts_the_rejection() {
        for (kind, what) in [
            (RejectKind::InvalidJson, "malformed"),
            (RejectKind::Refusal, "content"),
        ] {
            let health = Health::standalone("p", "m");
            let svc = ObserveLayer::new(health.clone()).layer(late_service(Some(kind)));
            let res = svc.oneshot(Request::new(())).await.unwrap();
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                body, "data: {}\n\n",
                "{what}: the caller's body is untouched"
            );
            let c = health.counters();
            assert_eq!((c.requests, c.rejected, c.successes), (1, 1, 0), "{what}");
            assert_eq!(health.in_flight(), 0);
            assert_eq!(health.latency().get(), Duration::from_millis(50));
        }
        // The same cell left unset: a plain success.
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone()).layer(late_service(None));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        res.into_body().collect().await.unwrap();
        let c = health.counters();
        assert_eq!((c.requests, c.rejected, c.successes), (1, 0, 1));
    }

    #[test]
    fn a_late_verdict_keeps_the_first_rejection_and_is_shared_by_clones() {
        let late = LateVerdict::new();
        let seen = late.clone();
        assert_eq!(seen.rejected(), None);
        assert_eq!(LateVerdict::outcome(None), Outcome::Success);
        assert!(late.reject(RejectKind::ErrorObject));
        assert!(!late.reject(RejectKind::Refusal));
        assert_eq!(seen.rejected(), Some(RejectKind::ErrorObject));
        assert_eq!(format!("{seen:?}"), "LateVerdict(Some(ErrorObject))");
        assert_eq!(
            LateVerdict::of(&Response::new(())).map(|l| l.rejected()),
            None
        );
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
        assert_eq!(
            health.counters().requests,
            0,
            "a caller who walks away is neutral"
        );
    }

    /// A body that yields one chunk, then what `then` says (an error, or nothing for
    /// ever).
    struct OneChunk {
        sent: bool,
        then: Option<BoxError>,
    }

    impl Body for OneChunk {
        type Data = bytes::Bytes;
        type Error = BoxError;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<bytes::Bytes>, BoxError>>> {
            if !self.sent {
                self.sent = true;
                return Poll::Ready(Some(Ok(Frame::data(bytes::Bytes::from_static(
                    b"data: {}\n\n",
                )))));
            }
            match self.then.take() {
                Some(e) => Poll::Ready(Some(Err(e))),
                None => Poll::Pending,
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_stream_that_breaks_after_its_headers_is_a_failure() {
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(Response::new(OneChunk {
                sent: false,
                then: Some(crate::error::TruncatedStream::new("cut").into()),
            }))
        }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(health.counters().requests, 0, "200: the verdict waits");
        let err = res.into_body().collect().await.unwrap_err();
        assert!(crate::error::find::<crate::error::TruncatedStream>(&*err).is_some());
        let c = health.counters();
        assert_eq!((c.requests, c.failures, c.successes), (1, 1, 0));
        assert_eq!(health.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn error_statuses_are_decided_at_the_headers() {
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| async {
            let mut res = Response::new(OneChunk {
                sent: false,
                then: Some("boom".into()),
            });
            *res.status_mut() = http::StatusCode::BAD_GATEWAY;
            Ok::<_, BoxError>(res)
        }));
        let res = svc.oneshot(Request::new(())).await.unwrap();
        assert_eq!(health.counters().failures, 1);
        let _ = res.into_body().collect().await;
        assert_eq!(health.counters().requests, 1, "counted once");
    }

    fn with_deadline(after: Duration) -> Request<()> {
        let mut req = Request::new(());
        AttemptDeadline::set_on(&mut req, Instant::now() + after);
        req
    }

    #[tokio::test(start_paused = true)]
    async fn an_attempt_dropped_by_its_timer_is_a_timeout() {
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| {
            std::future::pending::<Result<Response<ReplayBody>, BoxError>>()
        }));
        let timed = tokio::time::timeout(
            Duration::from_secs(2),
            svc.clone().oneshot(with_deadline(Duration::from_secs(2))),
        )
        .await;
        assert!(timed.is_err());
        let c = health.counters();
        assert_eq!((c.requests, c.failures), (1, 1));
        assert_eq!(health.ttfb().get(), Duration::from_secs(2));
        assert_eq!(health.in_flight(), 0);

        // Dropped before its deadline: the caller went away; nothing counted.
        let cancelled = tokio::time::timeout(
            Duration::from_secs(1),
            svc.oneshot(with_deadline(Duration::from_secs(5))),
        )
        .await;
        assert!(cancelled.is_err());
        assert_eq!(health.counters().requests, 1);
        assert_eq!(health.in_flight(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_body_dropped_by_its_timer_is_a_timeout() {
        let health = Health::standalone("p", "m");
        let svc = ObserveLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| async {
            Ok::<_, BoxError>(Response::new(OneChunk {
                sent: false,
                then: None,
            }))
        }));
        for (deadline, failures) in [(Duration::from_secs(1), 1), (Duration::from_secs(9), 1)] {
            let read = async {
                let res = svc.clone().oneshot(with_deadline(deadline)).await?;
                res.into_body().collect().await.map(|_| ())
            };
            assert!(
                tokio::time::timeout(Duration::from_secs(1), read)
                    .await
                    .is_err()
            );
            let c = health.counters();
            assert_eq!((c.failures, c.successes), (failures, 0));
            assert_eq!(health.in_flight(), 0);
        }
        // The first byte came at once: the timeout does not pose as a slow first byte.
        assert_eq!(health.ttfb().get(), Duration::ZERO);
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
