use std::time::Duration;

use tower_layer::Layer;

use super::DeadlineService;
#[cfg(doc)]
use tower_failover_core::{Deadline, error::Elapsed};

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
        DeadlineService::new(inner, self.total)
    }
}
