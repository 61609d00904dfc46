//! The response future of [`Ramp`](crate::Ramp).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::BoxError;
use tower_failover_core::error::Shed;
use tower_failover_core::{AttemptDeadline, Classify, FailureKind, LateVerdict, Outcome};

use crate::state::Core;

pin_project! {
    /// The future of [`Ramp`](crate::Ramp): the inner service's future, whose
    /// outcome is counted for the ramp's checks, or an immediate
    /// [`Shed`] error for a request the ramp did not admit.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        track: Option<Track<C>>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Admitted {
            #[pin]
            fut: F,
        },
        Shed {
            error: Option<Shed>,
        },
    }
}

/// An admitted request still owed its verdict. Dropped unfinished at or after the
/// attempt's [`AttemptDeadline`], it counts as a timeout (a timer above ended it);
/// earlier, the caller cancelled, which counts nothing.
struct Track<C> {
    core: Arc<Core>,
    epoch: u64,
    classifier: C,
    deadline: Option<Instant>,
    /// A verdict a layer below may set before a 2xx body ends.
    late: Option<LateVerdict>,
    done: bool,
}

impl<C> Track<C> {
    /// Counts a clean end of a 2xx body: a success, or the rejection a layer below
    /// found after the commit point ([`LateVerdict`]).
    fn finish_clean(&mut self) {
        let outcome = LateVerdict::outcome(self.late.as_ref());
        self.finish(&outcome);
    }

    fn finish(&mut self, outcome: &Outcome) {
        if !self.done {
            self.done = true;
            self.core.record(self.epoch, outcome);
        }
    }
}

impl<C> Drop for Track<C> {
    fn drop(&mut self) {
        if !self.done && AttemptDeadline::timed_out(self.deadline) {
            self.finish(&Outcome::failure(FailureKind::Timeout));
        }
    }
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn admitted(
        fut: F,
        core: Arc<Core>,
        epoch: u64,
        classifier: C,
        deadline: Option<Instant>,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Admitted { fut },
            track: Some(Track {
                core,
                epoch,
                classifier,
                deadline,
                late: None,
                done: false,
            }),
        }
    }

    pub(crate) fn shed(error: Shed) -> Self {
        ResponseFuture {
            kind: Kind::Shed { error: Some(error) },
            track: None,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let admitted = matches!(self.kind, Kind::Admitted { .. });
        f.debug_struct("ResponseFuture")
            .field("admitted", &admitted)
            .finish_non_exhaustive()
    }
}

impl<F, C, RB, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<RampBody<RB, C>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Shed { error } => Poll::Ready(Err(match error.take() {
                Some(e) => e.into(),
                None => "ramp future polled after completion".into(),
            })),
            KindProj::Admitted { fut } => {
                let result = ready!(fut.poll(cx));
                let Some(mut track) = this.track.take() else {
                    return Poll::Ready(Err("ramp future polled after completion".into()));
                };
                match result {
                    Ok(res) => {
                        let outcome = track.classifier.classify_response(&res);
                        // A 2xx counts once its body ends cleanly.
                        let owed = if outcome.is_success() {
                            track.late = LateVerdict::of(&res);
                            Some(track)
                        } else {
                            track.finish(&outcome);
                            None
                        };
                        Poll::Ready(Ok(res.map(|inner| RampBody { inner, owed })))
                    }
                    Err(e) => {
                        let e: BoxError = e.into();
                        let outcome = track.classifier.classify_error(&*e);
                        track.finish(&outcome);
                        Poll::Ready(Err(e))
                    }
                }
            }
        }
    }
}

pin_project! {
    /// The response body of [`Ramp`](crate::Ramp). A 2xx answer counts for the
    /// ramp's checks when its body ends: cleanly, a success (or, if a layer below
    /// set the response's [`LateVerdict`] after the commit point, that rejection: a
    /// malformed answer counts as a failure, any other kind is neutral); with an
    /// error frame, the provider's failure (a stream that dies or stalls after its headers).
    /// Dropped before its end, it counts nothing, unless a timer above dropped it
    /// at its [`AttemptDeadline`] (a timeout).
    pub struct RampBody<B, C> {
        #[pin]
        inner: B,
        owed: Option<Track<C>>,
    }
}

impl<B, C> RampBody<B, C> {
    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B, C> fmt::Debug for RampBody<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RampBody")
            .field("verdict_pending", &self.owed.is_some())
            .finish_non_exhaustive()
    }
}

impl<B, C> Body for RampBody<B, C>
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
        match ready!(this.inner.as_mut().poll_frame(cx)) {
            Some(Ok(frame)) => {
                // Trailers are a body's last frame, and a consumer may stop at
                // them (gRPC's does) or when the body says it has ended.
                if (frame.is_trailers() || this.inner.is_end_stream())
                    && let Some(mut track) = this.owed.take()
                {
                    track.finish_clean();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let err: BoxError = e.into();
                if let Some(mut track) = this.owed.take() {
                    let outcome = match track.classifier.classify_error(&*err) {
                        Outcome::Success => Outcome::failure(FailureKind::Other),
                        other => other,
                    };
                    track.finish(&outcome);
                }
                Poll::Ready(Some(Err(err)))
            }
            None => {
                if let Some(mut track) = this.owed.take() {
                    track.finish_clean();
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
