use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tokio::time::Instant;
use tower::BoxError;
use tower_failover_core::Deadline;
use tower_service::Service;

use super::future::ResponseFuture;

/// The service made by [`DeadlineLayer`](super::DeadlineLayer).
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    total: Duration,
}

impl<S> DeadlineService<S> {
    /// Wraps `inner`: every request must complete within `total`.
    pub fn new(inner: S, total: Duration) -> Self {
        DeadlineService { inner, total }
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

impl<S, B> Service<Request<B>> for DeadlineService<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        let started = Instant::now();
        let Deadline(at) = Deadline::set_on(&mut req, started + self.total);
        ResponseFuture::new(self.inner.call(req), at, started)
    }
}
