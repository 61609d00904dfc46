//! The ramp's admission service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::BoxError;
use tower_failover_core::error::Shed;
use tower_failover_core::{AttemptDeadline, Classify, Health, LlmClassifier};
use tower_service::Service;

use crate::future::{RampBody, ResponseFuture};
use crate::state::Shared;
use crate::status::RampStatus;

/// Admits the share of requests the recovery ramp allows; sheds the rest with
/// [`Shed`]. Made by [`RampLayer`](crate::RampLayer).
///
/// `poll_ready` is the inner service's: the ramp adds no waiting (an open circuit
/// below still gates it). The admission is decided in `call`, per request
/// actually sent, so the admitted share is exact for the requests this service is
/// offered; a shed request gets an immediately ready error future and never
/// reaches the inner service. Cloning shares the ramp, not readiness.
pub struct Ramp<S, C = LlmClassifier> {
    inner: S,
    shared: Arc<Shared>,
    classifier: C,
}

impl<S, C> Ramp<S, C> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, classifier: C) -> Self {
        shared.ensure_started();
        Ramp {
            inner,
            shared,
            classifier,
        }
    }

    /// The provider's health handle.
    pub fn health(&self) -> &Health {
        &self.shared.core.health
    }

    /// Where the ramp is.
    pub fn status(&self) -> RampStatus {
        RampStatus::of(&self.shared.core)
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

impl<S: Clone, C: Clone> Clone for Ramp<S, C> {
    fn clone(&self) -> Self {
        Ramp {
            inner: self.inner.clone(),
            shared: self.shared.clone(),
            classifier: self.classifier.clone(),
        }
    }
}

impl<S: fmt::Debug, C> fmt::Debug for Ramp<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ramp")
            .field("inner", &self.inner)
            .field("provider", self.shared.core.health.id())
            .finish_non_exhaustive()
    }
}

impl<S, C, B, RB> Service<Request<B>> for Ramp<S, C>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    C: Classify,
{
    type Response = Response<RampBody<RB, C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.shared.ensure_started();
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let core = &self.shared.core;
        if core.admit() {
            let epoch = core.epoch();
            let deadline = AttemptDeadline::of(&req);
            ResponseFuture::admitted(
                self.inner.call(req),
                core.clone(),
                epoch,
                self.classifier.clone(),
                deadline,
            )
        } else {
            ResponseFuture::shed(Shed::new("ramp").with_provider(core.health.id().clone()))
        }
    }
}
