//! [`Validate`]: the service made by [`ValidateLayer`](crate::ValidateLayer).

use std::any::Any;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use tower_failover_core::BoxError;
use tower_failover_core::replay::ReplayBody;
use tower_service::Service;

use crate::body::ValidatedBody;
use crate::future::ResponseFuture;
use crate::shared::Shared;
use crate::stats::ValidateStats;

/// Validates the responses of `S`. Made by [`ValidateLayer`](crate::ValidateLayer).
pub struct Validate<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: Clone> Clone for Validate<S> {
    fn clone(&self) -> Self {
        Validate {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Validate<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validate")
            .field("inner", &self.inner)
            .field("provider", &self.shared.provider)
            .finish_non_exhaustive()
    }
}

impl<S> Validate<S> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared>) -> Self {
        Validate { inner, shared }
    }

    /// The counters this service updates.
    pub fn stats(&self) -> &ValidateStats {
        &self.shared.stats
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

impl<S, ReqB, ResB> Service<Request<ReqB>> for Validate<S>
where
    S: Service<Request<ReqB>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    ReqB: 'static,
    ResB: http_body::Body<Data = Bytes>,
    ResB::Error: Into<BoxError>,
{
    type Response = Response<ValidatedBody<ResB>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, ResB>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqB>) -> Self::Future {
        // A replayable request is a reference-counted handle on its bytes and its
        // parsed request information: keeping one lets a validator ask whether the
        // caller set `max_tokens`, at no cost unless it does (and without a second
        // parse when another layer has read it).
        let body: &dyn Any = req.body();
        let request = body.downcast_ref::<ReplayBody>().cloned();
        ResponseFuture::new(self.inner.call(req), self.shared.clone(), request)
    }
}
