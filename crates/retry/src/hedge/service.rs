use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use tokio::time::Instant;
use tower::BoxError;
use tower_failover_core::replay::clone_request;
use tower_service::Service;

use super::Hedged;
use super::future::ResponseFuture;
use super::shared::HedgeShared;

/// The service made by [`HedgeLayer`](super::HedgeLayer).
#[derive(Clone)]
pub struct Hedge<S> {
    inner: S,
    shared: Arc<HedgeShared>,
}

impl<S> Hedge<S> {
    pub(super) fn new(inner: S, shared: Arc<HedgeShared>) -> Self {
        Hedge { inner, shared }
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

impl<S: fmt::Debug> fmt::Debug for Hedge<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hedge")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S, B> Service<Request<B>> for Hedge<S>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let mut copy = clone_request(&req);
        copy.extensions_mut().insert(Hedged);
        if let Some(b) = &self.shared.budget {
            b.deposit();
        }
        let first = self.inner.call(req);
        ResponseFuture::new(
            first,
            self.inner.clone(),
            copy,
            self.shared.clone(),
            Instant::now(),
        )
    }
}
