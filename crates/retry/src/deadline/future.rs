//! The future of [`DeadlineService`](super::DeadlineService).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::BoxError;
use tower_failover_core::error::{Elapsed, TimeoutKind};

pin_project! {
    /// The future of [`DeadlineService`](super::DeadlineService).
    pub struct ResponseFuture<F> {
        #[pin]
        fut: F,
        #[pin]
        sleep: Sleep,
        started: Instant,
    }
}

impl<F> ResponseFuture<F> {
    pub(super) fn new(fut: F, at: Instant, started: Instant) -> Self {
        ResponseFuture {
            fut,
            sleep: tokio::time::sleep_until(at),
            started,
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(r) = this.fut.poll(cx) {
            return Poll::Ready(r.map_err(Into::into));
        }
        match this.sleep.poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(Elapsed::new(
                TimeoutKind::Total,
                this.started.elapsed(),
            )
            .into())),
            Poll::Pending => Poll::Pending,
        }
    }
}
