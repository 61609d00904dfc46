//! The response future of [`Ramp`](crate::Ramp).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::Response;
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_failover_core::Classify;
use tower_failover_core::error::Shed;

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

struct Track<C> {
    core: Arc<Core>,
    epoch: u64,
    classifier: C,
}

impl<F, C> ResponseFuture<F, C> {
    pub(crate) fn admitted(fut: F, core: Arc<Core>, epoch: u64, classifier: C) -> Self {
        ResponseFuture {
            kind: Kind::Admitted { fut },
            track: Some(Track {
                core,
                epoch,
                classifier,
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
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match this.kind.project() {
            KindProj::Shed { error } => Poll::Ready(Err(match error.take() {
                Some(e) => e.into(),
                None => "ramp future polled after completion".into(),
            })),
            KindProj::Admitted { fut } => {
                let result = ready!(fut.poll(cx));
                let track = this.track.take();
                match result {
                    Ok(res) => {
                        if let Some(t) = track {
                            t.core
                                .record(t.epoch, &t.classifier.classify_response(&res));
                        }
                        Poll::Ready(Ok(res))
                    }
                    Err(e) => {
                        let e: BoxError = e.into();
                        if let Some(t) = track {
                            t.core.record(t.epoch, &t.classifier.classify_error(&*e));
                        }
                        Poll::Ready(Err(e))
                    }
                }
            }
        }
    }
}
