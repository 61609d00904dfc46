//! The attempt timeout for routers that do not time attempts themselves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Timeout};
use tower::BoxError;
use tower_failover_core::AttemptDeadline;
use tower_failover_core::error::{Elapsed, TimeoutKind};
use tower_failover_core::replay::ReplayBody;
use tower_service::Service;

use crate::service::{BoxBody, ProviderService};

/// Gives one attempt at one provider `each` (never past the request's
/// [`Deadline`](tower_failover_core::Deadline)), marking the attempt's deadline on
/// the request so that the provider's health counts a drop at that instant as its
/// timeout; past it, the attempt fails with [`Elapsed`] ([`TimeoutKind::Attempt`]).
#[derive(Clone)]
pub(crate) struct AttemptTimeout {
    inner: ProviderService,
    each: Duration,
}

impl AttemptTimeout {
    pub(crate) fn new(inner: ProviderService, each: Duration) -> Self {
        AttemptTimeout { inner, each }
    }
}

impl Service<Request<ReplayBody>> for AttemptTimeout {
    type Response = Response<BoxBody>;
    type Error = BoxError;
    type Future = ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReplayBody>) -> ResponseFuture {
        let started = tokio::time::Instant::now();
        let AttemptDeadline(at) = AttemptDeadline::set_on(&mut req, started + self.each);
        ResponseFuture {
            inner: tokio::time::timeout_at(at, self.inner.call(req)),
            started,
        }
    }
}

type ProviderFuture = <ProviderService as Service<Request<ReplayBody>>>::Future;

pin_project! {
    /// The future of [`AttemptTimeout`]: the attempt under its timer, without a box
    /// of its own (the stack's position erases it once).
    pub(crate) struct ResponseFuture {
        #[pin]
        inner: Timeout<ProviderFuture>,
        started: Instant,
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<BoxBody>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        Poll::Ready(match ready!(this.inner.poll(cx)) {
            Ok(result) => result,
            Err(_) => Err(Elapsed::new(TimeoutKind::Attempt, this.started.elapsed()).into()),
        })
    }
}
