//! The response future of [`CircuitBreaker`](crate::CircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use std::time::Duration;
use tokio::time::Instant;

use tower_failover_core::error::CircuitOpen;
use tower_failover_core::{AttemptDeadline, BoxError, Classify, FailureKind, LateVerdict, Outcome};

pub use crate::body::CircuitBody;
use crate::breaker::{Shared, Ticket};

/// Counts the outcome when the request finishes; gives a probe permit back when
/// dropped (finished or not). Dropped unfinished at or after the instant a timer
/// above gives up on the attempt ([`AttemptDeadline`]), it counts a timeout: the
/// timer ended it. Dropped earlier, the caller cancelled, which counts nothing.
pub(crate) struct Tracker<C> {
    shared: Arc<Shared<C>>,
    ticket: Ticket<C>,
    started: Option<Instant>,
    deadline: Option<Instant>,
    /// The call's latency, once its response headers came (a 2xx body then owes its
    /// verdict; the slow-call policy still times the headers).
    latency: Option<Duration>,
    /// A verdict a layer below may set before a 2xx body ends.
    late: Option<LateVerdict>,
    done: bool,
}

impl<C> Tracker<C> {
    /// Counts `outcome` (once).
    #[inline]
    pub(crate) fn finish(&mut self, outcome: &Outcome) {
        if !self.done {
            self.done = true;
            self.shared.complete(&self.ticket, outcome, self.latency);
        }
    }

    /// Counts a clean end of a 2xx body: a success, or the rejection a layer below
    /// found after the commit point ([`LateVerdict`]).
    #[inline]
    pub(crate) fn finish_clean(&mut self) {
        let outcome = LateVerdict::outcome(self.late.as_ref());
        self.finish(&outcome);
    }

    /// What the classifier makes of an error.
    #[inline]
    pub(crate) fn classify_error(&self, error: &(dyn std::error::Error + 'static)) -> Outcome
    where
        C: Classify,
    {
        self.shared.classifier.classify_error(error)
    }

    pub(crate) fn is_probe(&self) -> bool {
        matches!(self.ticket, Ticket::Probe(_))
    }
}

impl<C> Drop for Tracker<C> {
    fn drop(&mut self) {
        if !self.done && AttemptDeadline::timed_out(self.deadline) {
            if self.latency.is_none() {
                self.latency = self.started.map(|s| s.elapsed());
            }
            self.finish(&Outcome::failure(FailureKind::Timeout));
        }
        // The probe permit (if any) goes back when `ticket` drops, after counting.
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Called {
            #[pin]
            future: F,
        },
        Refused {
            error: Option<CircuitOpen>,
        },
    }
}

pin_project! {
    /// The response future of [`CircuitBreaker`](crate::CircuitBreaker): the inner
    /// service's future, classified and counted when it finishes, or a
    /// [`CircuitOpen`] error when the circuit refused the call.
    ///
    /// A 2xx response comes back with a [`CircuitBody`] that carries the request's
    /// ticket (and probe permit) on: its verdict is made when the body ends.
    ///
    /// Dropping it before it finishes gives back its probe permit, if it held one,
    /// and counts nothing (a cancelled request is not a failure), unless it is
    /// dropped at or after the attempt's [`AttemptDeadline`]: then a timer above
    /// ended it, and it counts as a timeout.
    pub struct ResponseFuture<F, C> {
        #[pin]
        kind: Kind<F>,
        tracker: Option<Tracker<C>>,
    }
}

impl<F, C> ResponseFuture<F, C> {
    #[inline]
    pub(crate) fn called(
        future: F,
        shared: Arc<Shared<C>>,
        ticket: Ticket<C>,
        started: Option<Instant>,
        deadline: Option<Instant>,
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
            tracker: Some(Tracker {
                shared,
                ticket,
                started,
                deadline,
                latency: None,
                late: None,
                done: false,
            }),
        }
    }

    #[inline]
    pub(crate) fn refused(error: CircuitOpen) -> Self {
        ResponseFuture {
            kind: Kind::Refused { error: Some(error) },
            tracker: None,
        }
    }
}

impl<F, C> fmt::Debug for ResponseFuture<F, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match (&self.kind, &self.tracker) {
            (Kind::Refused { .. }, _) => "refused",
            (Kind::Called { .. }, Some(t)) if t.is_probe() => "probe",
            (Kind::Called { .. }, Some(_)) => "called",
            (Kind::Called { .. }, None) => "done",
        };
        f.debug_struct("ResponseFuture")
            .field("kind", &kind)
            .finish()
    }
}

impl<F, C, ResB, E> Future for ResponseFuture<F, C>
where
    F: Future<Output = Result<Response<ResB>, E>>,
    E: Into<BoxError>,
    C: Classify,
{
    type Output = Result<Response<CircuitBody<ResB, C>>, BoxError>;

    #[inline]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Refused { error } => Poll::Ready(Err(match error.take() {
                Some(e) => e.into(),
                None => "circuit breaker response future polled after completion".into(),
            })),
            KindProj::Called { future } => {
                let result = ready!(future.poll(cx)).map_err(Into::into);
                let Some(mut tracker) = this.tracker.take() else {
                    return Poll::Ready(Err(
                        "circuit breaker response future polled after completion".into(),
                    ));
                };
                tracker.latency = tracker.started.map(|s| s.elapsed());
                Poll::Ready(match result {
                    Ok(response) => {
                        let outcome = tracker.shared.classifier.classify_response(&response);
                        // A 2xx is a success only once its body ends cleanly: the
                        // body carries the ticket on. Anything else is decided now.
                        let owed = if outcome.is_success() {
                            tracker.late = LateVerdict::of(&response);
                            Some(tracker)
                        } else {
                            tracker.finish(&outcome);
                            None
                        };
                        Ok(response.map(|inner| CircuitBody::new(inner, owed)))
                    }
                    Err(error) => {
                        let outcome = tracker.shared.classifier.classify_error(&*error);
                        tracker.finish(&outcome);
                        // The probe permit (if any) goes back here, after counting.
                        Err(error)
                    }
                })
            }
        }
    }
}
