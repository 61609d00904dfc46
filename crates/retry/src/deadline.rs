//! A total deadline per request, across every attempt.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::BoxError;
use tower_failover_core::Deadline;
use tower_failover_core::error::{Elapsed, TimeoutKind};
use tower_layer::Layer;
use tower_service::Service;

/// Gives every request a total deadline: it is written into the request's
/// [`Deadline`] extension (an earlier deadline already there wins), so routers and
/// per-attempt timeouts below give each attempt only the time left, and the whole
/// request fails with [`Elapsed`] (`TimeoutKind::Total`) when it passes.
///
/// ```
/// use std::time::Duration;
/// use http::Request;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_failover_core::{Deadline, error::{find, Elapsed}};
/// use tower_failover_retry::DeadlineLayer;
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let svc = ServiceBuilder::new()
///     .layer(DeadlineLayer::new(Duration::from_secs(30)))
///     .service(service_fn(|req: Request<()>| async move {
///         let left = Deadline::of(&req).unwrap().remaining();
///         assert!(left <= Duration::from_secs(30));
///         tokio::time::sleep(Duration::from_secs(60)).await; // a hung provider
///         Ok::<_, tower::BoxError>(())
///     }));
/// let err = svc.oneshot(Request::new(())).await.unwrap_err();
/// assert!(find::<Elapsed>(&*err).is_some());
/// # }
/// ```
#[derive(Debug, Clone, Copy)]
pub struct DeadlineLayer {
    total: Duration,
}

impl DeadlineLayer {
    /// Requests must complete within `total`.
    pub fn new(total: Duration) -> Self {
        DeadlineLayer { total }
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = DeadlineService<S>;

    fn layer(&self, inner: S) -> DeadlineService<S> {
        DeadlineService {
            inner,
            total: self.total,
        }
    }
}

/// The service made by [`DeadlineLayer`].
#[derive(Debug, Clone)]
pub struct DeadlineService<S> {
    inner: S,
    total: Duration,
}

impl<S> DeadlineService<S> {
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
        ResponseFuture {
            fut: self.inner.call(req),
            sleep: tokio::time::sleep_until(at),
            started,
        }
    }
}

pin_project! {
    /// The future of [`DeadlineService`].
    pub struct ResponseFuture<F> {
        #[pin]
        fut: F,
        #[pin]
        sleep: Sleep,
        started: Instant,
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
