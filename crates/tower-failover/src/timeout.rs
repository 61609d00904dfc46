//! The attempt timeout for routers that do not time attempts themselves.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tower::BoxError;
use tower_failover_core::AttemptDeadline;
use tower_failover_core::error::{Elapsed, TimeoutKind};
use tower_failover_core::replay::ReplayBody;
use tower_service::Service;

use crate::service::{BoxBody, ProviderService};

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<BoxBody>, BoxError>> + Send>>;

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
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReplayBody>) -> BoxFuture {
        let started = tokio::time::Instant::now();
        let AttemptDeadline(at) = AttemptDeadline::set_on(&mut req, started + self.each);
        let fut = self.inner.call(req);
        Box::pin(async move {
            match tokio::time::timeout_at(at, fut).await {
                Ok(result) => result,
                Err(_) => Err(Elapsed::new(TimeoutKind::Attempt, started.elapsed()).into()),
            }
        })
    }
}
