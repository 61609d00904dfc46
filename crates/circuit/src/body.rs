//! The response body of [`CircuitBreaker`](crate::CircuitBreaker): a 2xx answer's
//! verdict is made when its body ends.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll, ready};

use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_failover_core::{BoxError, Classify, FailureKind, Outcome};

use crate::future::Tracker;

pin_project! {
    /// The response body of [`CircuitBreaker`](crate::CircuitBreaker).
    ///
    /// A 2xx answer's body carries the request's ticket (and its half-open probe
    /// permit, if it held one): a clean end of the body counts a success (or, if a
    /// layer below set the response's
    /// [`LateVerdict`](tower_failover_core::LateVerdict) after the commit point, that
    /// rejection, counted as the circuit's configuration says of its kind), an error
    /// frame counts the provider's failure (classified with
    /// [`Classify::classify_error`], so a truncated stream is a `Reset` and an idle
    /// timeout a `Timeout`). Dropped before its end, it gives the permit back and
    /// counts nothing (the caller went away), unless it is dropped at or after the
    /// attempt's [`AttemptDeadline`](tower_failover_core::AttemptDeadline): then a
    /// timer ended it, and it counts as a timeout. Any other answer was counted at
    /// its headers, and its body is passed through.
    pub struct CircuitBody<B, C> {
        #[pin]
        inner: B,
        owed: Option<Tracker<C>>,
    }
}

impl<B, C> CircuitBody<B, C> {
    #[inline]
    pub(crate) fn new(inner: B, owed: Option<Tracker<C>>) -> Self {
        CircuitBody { inner, owed }
    }

    /// The wrapped body.
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Whether the verdict of this answer still waits for the end of its body.
    pub fn verdict_pending(&self) -> bool {
        self.owed.is_some()
    }
}

impl<B, C> fmt::Debug for CircuitBody<B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBody")
            .field("verdict_pending", &self.owed.is_some())
            .finish_non_exhaustive()
    }
}

impl<B, C> Body for CircuitBody<B, C>
where
    B: Body,
    B::Error: Into<BoxError>,
    C: Classify,
{
    type Data = B::Data;
    type Error = BoxError;

    #[inline]
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
                    && let Some(mut tracker) = this.owed.take()
                {
                    tracker.finish_clean();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Some(Err(e)) => {
                let err: BoxError = e.into();
                if let Some(mut tracker) = this.owed.take() {
                    let outcome = match tracker.classify_error(&*err) {
                        // A broken body is never a success, whatever a custom
                        // classifier says of its error.
                        Outcome::Success => Outcome::failure(FailureKind::Other),
                        other => other,
                    };
                    tracker.finish(&outcome);
                }
                Poll::Ready(Some(Err(err)))
            }
            None => {
                if let Some(mut tracker) = this.owed.take() {
                    tracker.finish_clean();
                }
                Poll::Ready(None)
            }
        }
    }

    #[inline]
    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    #[inline]
    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
