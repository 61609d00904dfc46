//! All providers down: wait for one to recover instead of failing at once.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::Request;
use pin_project_lite::pin_project;
use serde::Deserialize;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tower::BoxError;
use tower::util::ServiceExt;
use tower_failover_core::error::{AllProvidersFailed, Elapsed, TimeoutKind, find};
use tower_failover_core::metrics;
use tower_failover_core::replay::clone_request;
use tower_failover_core::{CircuitState, Deadline, HealthEventKind, Registry};
use tower_layer::Layer;
use tower_service::Service;

/// Settings of the wait queue.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// The most requests waiting at once; past it, requests fail at once with
    /// [`AllProvidersFailed`] (reason "wait queue full"). Default: 256.
    pub capacity: usize,
    /// The longest a request waits, when its own [`Deadline`] is not sooner.
    /// Default: 30 s.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub max_wait: Duration,
}

impl Default for QueueConfig {
    fn default() -> Self {
        QueueConfig {
            capacity: 256,
            max_wait: Duration::from_secs(30),
        }
    }
}

/// Holds requests that found every provider unavailable until one recovers, then
/// sends them again.
///
/// Wrap a router (balancer, fallback, overflow) with it. When the router fails with
/// [`AllProvidersFailed`], the request waits — bounded in number by `capacity` and in
/// time by its [`Deadline`] or `max_wait` — and is released as soon as the registry
/// reports a recovery (a circuit closing or going half-open, a rate limit cleared, a
/// probe passing), or when the earliest known recovery time arrives (rate-limit windows
/// end silently). Nothing waits unbounded and nothing is dropped silently: a request
/// past its deadline fails with [`Elapsed`] (`TimeoutKind::Queue`).
///
/// Only requests that are waiting cost an allocation; the path of a request the router
/// serves at once allocates nothing here.
#[derive(Clone)]
pub struct WaitQueueLayer {
    shared: Arc<Shared>,
}

struct Shared {
    registry: Registry,
    config: QueueConfig,
    waiting: AtomicUsize,
}

impl WaitQueueLayer {
    /// A wait queue that listens to `registry` for recoveries.
    pub fn new(registry: Registry, config: QueueConfig) -> Self {
        WaitQueueLayer {
            shared: Arc::new(Shared {
                registry,
                config,
                waiting: AtomicUsize::new(0),
            }),
        }
    }

    /// How many requests are waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }
}

impl fmt::Debug for WaitQueueLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitQueueLayer")
            .field("config", &self.shared.config)
            .field("waiting", &self.waiting())
            .finish()
    }
}

impl<S> Layer<S> for WaitQueueLayer {
    type Service = WaitQueue<S>;

    fn layer(&self, inner: S) -> WaitQueue<S> {
        WaitQueue {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`WaitQueueLayer`].
#[derive(Clone)]
pub struct WaitQueue<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S> WaitQueue<S> {
    /// How many requests are waiting now.
    pub fn waiting(&self) -> usize {
        self.shared.waiting.load(Ordering::Relaxed)
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
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

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

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
        ResponseFuture {
            state: State::First {
                fut,
                copy: Some(copy),
                svc: Some(self.inner.clone()),
                shared: Some(self.shared.clone()),
            },
        }
    }
}

pin_project! {
    /// The future of [`WaitQueue`].
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
                    let fut = Box::pin(wait_and_retry(svc, copy, shared, all_failed));
                    this.state.set(State::Waiting { fut });
                }
                StateProj::Waiting { fut } => return fut.as_mut().poll(cx),
            }
        }
    }
}

/// Decrements the waiting count however the wait ends (including cancellation).
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge_add(metrics::names::QUEUE_DEPTH, -1.0);
    }
}

fn is_recovery(kind: &HealthEventKind) -> bool {
    matches!(
        kind,
        HealthEventKind::CircuitChanged {
            to: CircuitState::Closed | CircuitState::HalfOpen,
            ..
        } | HealthEventKind::RateLimitCleared
            | HealthEventKind::Forced { .. }
            | HealthEventKind::Probe { ok: true }
            | HealthEventKind::RampStep { .. }
    )
}

async fn wait_and_retry<S, B>(
    mut svc: S,
    req: Request<B>,
    shared: Arc<Shared>,
    mut last: AllProvidersFailed,
) -> Result<S::Response, BoxError>
where
    S: Service<Request<B>, Error = BoxError>,
    B: Clone,
{
    let started = Instant::now();
    let deadline = match Deadline::of(&req) {
        Some(Deadline(d)) => d.min(started + shared.config.max_wait),
        None => started + shared.config.max_wait,
    };
    let mut events = shared.registry.subscribe();
    let _slot = Slot(shared.clone());
    metrics::gauge_add(metrics::names::QUEUE_DEPTH, 1.0);
    let mut pause = Duration::from_millis(100);
    tracing::info!(
        max_wait_ms = deadline.saturating_duration_since(started).as_millis() as u64,
        "all providers down: request waits for a recovery"
    );
    loop {
        // Wake at the earliest known recovery (rate-limit windows end without an
        // event), never sooner than the current pause, and never after the deadline.
        let hint = shared
            .registry
            .earliest_recovery()
            .unwrap_or(pause)
            .max(pause);
        let wake = (Instant::now() + hint).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            ev = async {
                loop {
                    match events.recv().await {
                        Ok(ev) if is_recovery(&ev.kind) => return,
                        Ok(_) | Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            } => ev,
        }
        if Instant::now() >= deadline {
            tracing::warn!(waited_ms = started.elapsed().as_millis() as u64, last = %last, "no provider recovered before the deadline");
            metrics::count_result(metrics::names::QUEUE_WAITS, "expired");
            return Err(Elapsed::new(TimeoutKind::Queue, started.elapsed()).into());
        }
        let attempt = clone_request(&req);
        let ready = tokio::time::timeout_at(deadline, svc.ready()).await;
        let result = match ready {
            Ok(Ok(svc)) => tokio::time::timeout_at(deadline, svc.call(attempt)).await,
            Ok(Err(e)) => Ok(Err(e)),
            Err(_) => {
                return Err(Elapsed::new(TimeoutKind::Queue, started.elapsed()).into());
            }
        };
        match result {
            Ok(Ok(res)) => {
                metrics::count_result(metrics::names::QUEUE_WAITS, "served");
                tracing::info!(
                    waited_ms = started.elapsed().as_millis() as u64,
                    "request served after a recovery"
                );
                return Ok(res);
            }
            Ok(Err(err)) => match find::<AllProvidersFailed>(&*err) {
                Some(again) => {
                    last = again.clone();
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                None => return Err(err),
            },
            Err(_) => return Err(Elapsed::new(TimeoutKind::Queue, started.elapsed()).into()),
        }
    }
}
