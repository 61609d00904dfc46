//! The response future of the adapters.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::Response;
use tower_failover_core::BoxError;

use crate::body::ResponseBody;

type Inner = Pin<Box<dyn Future<Output = Result<Response<ResponseBody>, BoxError>> + Send>>;

/// The future returned by [`OpenAiCompatible`](crate::OpenAiCompatible),
/// [`Anthropic`](crate::Anthropic) and [`Provider`](crate::Provider).
///
/// One boxed future per request: an adapter reads and rewrites the request body,
/// waits on the network and, for JSON answers, reads the response, so the box is
/// noise next to the work (the hot-path layers above it stay allocation-free).
pub struct ResponseFuture {
    inner: Inner,
}

impl ResponseFuture {
    pub(crate) fn new(
        fut: impl Future<Output = Result<Response<ResponseBody>, BoxError>> + Send + 'static,
    ) -> Self {
        ResponseFuture {
            inner: Box::pin(fut),
        }
    }
}

impl Future for ResponseFuture {
    type Output = Result<Response<ResponseBody>, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.inner.as_mut().poll(cx)
    }
}

impl fmt::Debug for ResponseFuture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
