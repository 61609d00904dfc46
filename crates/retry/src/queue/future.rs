//! The future of [`WaitQueue`](super::WaitQueue).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll, ready};

use http::Request;
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_failover_core::error::{AllProvidersFailed, find};
use tower_failover_core::metrics;
use tower_service::Service;

use super::wait::{MAX_PAUSE, Shared, wait_and_retry};

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

pin_project! {
    /// The future of [`WaitQueue`](super::WaitQueue).
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
        #[pin]
        state: State<S, B>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<S: Service<Request<B>>, B> {
        First {
            #[pin]
            fut: S::Future,
            copy: Option<Request<B>>,
            svc: Option<S>,
            shared: Option<Arc<Shared>>,
        },
        Waiting {
            fut: BoxFuture<Result<S::Response, BoxError>>,
        },
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(super) fn new(fut: S::Future, copy: Request<B>, svc: S, shared: Arc<Shared>) -> Self {
        ResponseFuture {
            state: State::First {
                fut,
                copy: Some(copy),
                svc: Some(svc),
                shared: Some(shared),
            },
        }
    }
}

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
    S::Response: Send + 'static,
    B: Clone + Send + 'static,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::First {
                    fut,
                    copy,
                    svc,
                    shared,
                } => {
                    let err = match ready!(fut.poll(cx)) {
                        Ok(res) => return Poll::Ready(Ok(res)),
                        Err(err) => err,
                    };
                    let Some(all_failed) = find::<AllProvidersFailed>(&*err).cloned() else {
                        return Poll::Ready(Err(err));
                    };
                    if all_failed.answer().is_some() {
                        // Every provider answered, and every answer was rejected for
                        // its content: waiting would ask them again for the same.
                        return Poll::Ready(Err(err));
                    }
                    let (Some(copy), Some(svc), Some(shared)) =
                        (copy.take(), svc.take(), shared.take())
                    else {
                        return Poll::Ready(Err(err));
                    };
                    let slot = shared.waiting.fetch_add(1, Ordering::AcqRel);
                    if slot >= shared.config.capacity {
                        shared.waiting.fetch_sub(1, Ordering::AcqRel);
                        metrics::count_result(metrics::names::QUEUE_WAITS, "full");
                        tracing::warn!(
                            capacity = shared.config.capacity,
                            "all providers down and the wait queue is full"
                        );
                        return Poll::Ready(Err(all_failed.with_reason("wait queue full").into()));
                    }
                    let fut = Box::pin(wait_and_retry(svc, copy, shared, all_failed, MAX_PAUSE));
                    this.state.set(State::Waiting { fut });
                }
                StateProj::Waiting { fut } => return fut.as_mut().poll(cx),
            }
        }
    }
}
