use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tower::BoxError;
use tower_failover_core::error::AllProvidersFailed;
use tower_failover_core::replay::clone_request;
use tower_service::Service;

use super::future::ResponseFuture;
use super::wait::{Shared, wait_and_retry};

/// The service made by [`WaitQueueLayer`](super::WaitQueueLayer).
#[derive(Clone)]
pub struct WaitQueue<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> WaitQueue<S> {
    pub(super) fn new(inner: S, shared: Arc<Shared>) -> Self {
        WaitQueue { inner, shared }
    }

    /// How many requests are waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// Waits for a provider to recover, then sends `req`, again after each
    /// recovery, until it is served or `max_wait` (or the request's
    /// [`Deadline`](tower_failover_core::Deadline)) passes: the path of a request
    /// that has already found every provider unavailable (`last` is what it got),
    /// so nothing is sent before the first wake-up. It counts among the
    /// [`waiting`](Self::waiting) requests but is not refused past `capacity`: the
    /// caller bounds these (as [`Deferred`](crate::Deferred) does).
    ///
    /// A recovery event wakes it at once; attempts that fail while a provider
    /// looks available (circuits closed, yet every attempt fails) are spaced by a
    /// pause doubling from 100 ms up to `max_pause` (the queue itself uses 2 s; a
    /// job that may wait half an hour wants more, so a request that fails
    /// everywhere is not resent every two seconds).
    pub fn wait_for_recovery<B>(
        &self,
        req: Request<B>,
        last: AllProvidersFailed,
        max_pause: Duration,
    ) -> impl Future<Output = Result<S::Response, BoxError>> + Send + 'static
    where
        S: Service<Request<B>, Error = BoxError> + Clone + Send + 'static,
        S::Future: Send,
        S::Response: Send + 'static,
        B: Clone + Send + 'static,
    {
        let (svc, shared) = (self.inner.clone(), self.shared.clone());
        async move {
            // Counted on the first poll, where `wait_and_retry` takes the slot that
            // gives it back however the wait ends.
            shared.waiting.fetch_add(1, Ordering::AcqRel);
            wait_and_retry(
                svc,
                req,
                shared,
                last,
                max_pause.max(Duration::from_millis(100)),
            )
            .await
        }
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

impl<S: fmt::Debug> fmt::Debug for WaitQueue<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitQueue")
            .field("inner", &self.inner)
            .field("waiting", &self.waiting())
            .finish()
    }
}
impl<S, B> Service<Request<B>> for WaitQueue<S>
where
    S: Service<Request<B>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    B: Clone + Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let copy = clone_request(&req);
        let fut = self.inner.call(req);
        ResponseFuture::new(fut, copy, self.inner.clone(), self.shared.clone())
    }
}
