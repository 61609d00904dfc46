//! The response future of [`CircuitBreaker`](crate::CircuitBreaker).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower_failover_core::error::CircuitOpen;
use tower_failover_core::{BoxError, Classify};

use crate::breaker::{Shared, Ticket};

/// Counts the outcome when the request finishes; gives a probe permit back when
/// dropped (finished or not).
struct Tracker<C> {
    shared: Arc<Shared<C>>,
    ticket: Ticket<C>,
    started: Option<Instant>,
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
    /// Dropping it before it finishes counts nothing (a cancelled request is not a
    /// failure) and gives back its probe permit, if it held one.
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
    ) -> Self {
        ResponseFuture {
            kind: Kind::Called { future },
            tracker: Some(Tracker {
                shared,
                ticket,
                started,
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
            (
                Kind::Called { .. },
                Some(Tracker {
                    ticket: Ticket::Probe(_),
                    ..
                }),
            ) => "probe",
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
    type Output = Result<Response<ResB>, BoxError>;

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
                if let Some(tracker) = this.tracker.take() {
                    let classifier = &tracker.shared.classifier;
                    let outcome = match &result {
                        Ok(response) => classifier.classify_response(response),
                        Err(error) => classifier.classify_error(&**error),
                    };
                    let latency = tracker.started.map(|s| s.elapsed());
                    tracker.shared.complete(&tracker.ticket, &outcome, latency);
                    // The probe permit (if any) goes back here, after counting.
                }
                Poll::Ready(result)
            }
        }
    }
}
