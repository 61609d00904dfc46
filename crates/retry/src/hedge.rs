//! Hedging: a second attempt when the first is slower than usual.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use pin_project_lite::pin_project;
use serde::Deserialize;
use tokio::time::{Instant, Sleep};
use tower::BoxError;
use tower::retry::budget::Budget;
use tower_failover_core::metrics;
use tower_failover_core::replay::clone_request;
use tower_layer::Layer;
use tower_service::Service;

/// Settings of hedging.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HedgeConfig {
    /// Hedge when the first attempt is slower than this percentile of recent
    /// latencies (`0 < percentile < 1`). Default: 0.9.
    pub percentile: f64,
    /// Never hedge sooner than this. Default: 50 ms.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub min_delay: Duration,
    /// The delay used until enough latencies are known. Default: 2 s.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub initial_delay: Duration,
    /// How many recent latencies the percentile is computed over. Default: 512.
    pub window: usize,
}

impl Default for HedgeConfig {
    fn default() -> Self {
        HedgeConfig {
            percentile: 0.9,
            min_delay: Duration::from_millis(50),
            initial_delay: Duration::from_secs(2),
            window: 512,
        }
    }
}

/// A request extension on the second (hedged) attempt, so routers and logs can tell
/// it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hedged;

/// Sends a second attempt when the first has taken longer than a recent latency
/// percentile; the first answer wins and the other attempt is cancelled (its future
/// dropped, which closes its connection).
///
/// Wrap a router: the hedged copy goes through the router again, which sees the
/// first attempt's provider as loaded (in-flight counts, time to first byte) and
/// normally picks another. Both attempts count in the retry budget when one is given:
/// a hedge is sent only if the budget allows, so hedging cannot double the load in an
/// incident.
///
/// ```
/// use std::time::Duration;
/// use http::Request;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_failover_retry::{HedgeConfig, HedgeLayer};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let calls = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(0));
/// let svc = ServiceBuilder::new()
///     .layer(HedgeLayer::new(HedgeConfig { initial_delay: Duration::from_millis(200), ..Default::default() }))
///     .service(service_fn({
///         let calls = calls.clone();
///         move |_req: Request<String>| {
///             let slow = calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0;
///             async move {
///                 tokio::time::sleep(Duration::from_millis(if slow { 5_000 } else { 100 })).await;
///                 Ok::<_, tower::BoxError>(if slow { "slow" } else { "hedge" })
///             }
///         }
///     }));
/// let started = tokio::time::Instant::now();
/// assert_eq!(svc.oneshot(Request::new(String::new())).await?, "hedge");
/// assert_eq!(started.elapsed(), Duration::from_millis(300)); // 200 ms wait + 100 ms hedge
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct HedgeLayer {
    shared: Arc<HedgeShared>,
}

struct HedgeShared {
    config: HedgeConfig,
    budget: Option<Arc<dyn Budget + Send + Sync>>,
    latencies: Mutex<Latencies>,
}

struct Latencies {
    ring: Vec<Duration>,
    next: usize,
    /// The delay in force, recomputed every `window / 8` samples.
    delay: Duration,
    since_update: usize,
}

impl HedgeLayer {
    /// Hedging with `config` and no budget.
    pub fn new(config: HedgeConfig) -> Self {
        HedgeLayer {
            shared: Arc::new(HedgeShared {
                config,
                budget: None,
                latencies: Mutex::new(Latencies {
                    ring: Vec::with_capacity(config.window.clamp(8, 65_536)),
                    next: 0,
                    delay: config.initial_delay.max(config.min_delay),
                    since_update: 0,
                }),
            }),
        }
    }

    /// Hedges only when `budget` allows a retry (and counts every hedge in it).
    pub fn budget(self, budget: Arc<dyn Budget + Send + Sync>) -> Self {
        let shared = &self.shared;
        HedgeLayer {
            shared: Arc::new(HedgeShared {
                config: shared.config,
                budget: Some(budget),
                latencies: Mutex::new(Latencies {
                    ring: Vec::with_capacity(shared.config.window.clamp(8, 65_536)),
                    next: 0,
                    delay: shared.config.initial_delay.max(shared.config.min_delay),
                    since_update: 0,
                }),
            }),
        }
    }

    /// The delay after which a request is hedged now.
    pub fn current_delay(&self) -> Duration {
        self.shared.delay()
    }
}

impl HedgeShared {
    fn delay(&self) -> Duration {
        self.latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .delay
    }

    fn record(&self, latency: Duration) {
        let window = self.config.window.clamp(8, 65_536);
        let mut l = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if l.ring.len() < window {
            l.ring.push(latency);
        } else {
            let i = l.next;
            l.ring[i] = latency;
        }
        l.next = (l.next + 1) % window;
        l.since_update += 1;
        if l.ring.len() >= 8 && l.since_update >= (window / 8).max(1) {
            l.since_update = 0;
            let mut sorted = l.ring.clone();
            sorted.sort_unstable();
            let p = if self.config.percentile.is_finite() {
                self.config.percentile.clamp(0.0, 1.0)
            } else {
                0.9
            };
            let idx = ((sorted.len() - 1) as f64 * p).round() as usize;
            l.delay = sorted[idx].max(self.config.min_delay);
        }
    }
}

impl fmt::Debug for HedgeLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HedgeLayer")
            .field("config", &self.shared.config)
            .field("delay", &self.current_delay())
            .finish()
    }
}

impl<S> Layer<S> for HedgeLayer {
    type Service = Hedge<S>;

    fn layer(&self, inner: S) -> Hedge<S> {
        Hedge {
            inner,
            shared: self.shared.clone(),
        }
    }
}

/// The service made by [`HedgeLayer`].
#[derive(Clone)]
pub struct Hedge<S> {
    inner: S,
    shared: Arc<HedgeShared>,
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
        let started = Instant::now();
        ResponseFuture {
            first: Some(self.inner.call(req)),
            second: None,
            sleep: tokio::time::sleep_until(started + self.shared.delay()),
            svc: Some(self.inner.clone()),
            copy: Some(copy),
            first_error: None,
            approved: None,
            shared: self.shared.clone(),
            started,
        }
    }
}

pin_project! {
    /// The future of [`Hedge`].
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
        #[pin]
        first: Option<S::Future>,
        #[pin]
        second: Option<S::Future>,
        #[pin]
        sleep: Sleep,
        svc: Option<S>,
        copy: Option<Request<B>>,
        first_error: Option<BoxError>,
        approved: Option<bool>,
        shared: Arc<HedgeShared>,
        started: Instant,
    }
}

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();

        if let Some(fut) = this.first.as_mut().as_pin_mut()
            && let Poll::Ready(r) = fut.poll(cx)
        {
            this.first.set(None);
            match r {
                Ok(res) => {
                    this.shared.record(this.started.elapsed());
                    return Poll::Ready(Ok(res));
                }
                Err(e) if this.second.is_none() && this.copy.is_none() => {
                    return Poll::Ready(Err(e.into()));
                }
                // The hedge is running or may still be sent: let it answer.
                Err(e) => *this.first_error = Some(e.into()),
            }
        }

        if let Some(fut) = this.second.as_mut().as_pin_mut()
            && let Poll::Ready(r) = fut.poll(cx)
        {
            this.second.set(None);
            match r {
                Ok(res) => {
                    this.shared.record(this.started.elapsed());
                    return Poll::Ready(Ok(res));
                }
                Err(e) if this.first.is_none() => {
                    // Both failed: report the first attempt's error (the hedge's
                    // failure adds nothing the caller can act on).
                    return Poll::Ready(Err(this.first_error.take().unwrap_or_else(|| e.into())));
                }
                Err(_) => {}
            }
        }

        // Send the hedge when its time comes (or at once if the first attempt failed).
        if this.copy.is_some() {
            let due = this.first_error.is_some() || this.sleep.as_mut().poll(cx).is_ready();
            if due {
                // Ask the budget once, however often readiness is pending.
                let shared = &*this.shared;
                let allowed = *this.approved.get_or_insert_with(|| {
                    let paid = shared.budget.as_ref().is_none_or(|b| b.withdraw());
                    if !paid {
                        metrics::count(metrics::names::BUDGET_EXHAUSTED);
                    }
                    paid
                });
                let svc = this.svc.as_mut();
                match (allowed, svc) {
                    (true, Some(svc)) => match svc.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            if let Some(copy) = this.copy.take() {
                                metrics::count(metrics::names::HEDGES);
                                tracing::debug!(
                                    after_ms = this.started.elapsed().as_millis() as u64,
                                    "hedging"
                                );
                                this.second.set(Some(svc.call(copy)));
                                *this.svc = None;
                                // Poll the new attempt once so it registers its waker.
                                cx.waker().wake_by_ref();
                            }
                        }
                        Poll::Ready(Err(_)) => {
                            *this.copy = None;
                        }
                        Poll::Pending => {}
                    },
                    _ => {
                        *this.copy = None;
                    }
                }
                if this.copy.is_none() && this.second.is_none() && this.first.is_none() {
                    let err = this
                        .first_error
                        .take()
                        .unwrap_or_else(|| "hedge: no attempt left".into());
                    return Poll::Ready(Err(err));
                }
            }
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};
    use tower::{ServiceExt, service_fn};

    fn svc(
        plan: Vec<(u64, bool)>,
    ) -> (
        impl Service<Request<String>, Response = u32, Error = BoxError, Future = impl Send> + Clone,
        Arc<AtomicU32>,
    ) {
        let calls = Arc::new(AtomicU32::new(0));
        let plan = Arc::new(plan);
        let s = service_fn({
            let calls = calls.clone();
            move |_req: Request<String>| {
                let n = calls.fetch_add(1, Ordering::SeqCst);
                let (ms, ok) = plan[(n as usize).min(plan.len() - 1)];
                async move {
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    if ok {
                        Ok(n)
                    } else {
                        Err::<u32, BoxError>("boom".into())
                    }
                }
            }
        });
        (s, calls)
    }

    fn config(initial_ms: u64) -> HedgeConfig {
        HedgeConfig {
            initial_delay: Duration::from_millis(initial_ms),
            min_delay: Duration::from_millis(10),
            ..HedgeConfig::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn fast_first_attempt_is_not_hedged() {
        let (s, calls) = svc(vec![(50, true)]);
        let h = HedgeLayer::new(config(200)).layer(s);
        assert_eq!(h.oneshot(Request::new(String::new())).await.unwrap(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_first_attempt_is_hedged_and_the_winner_returns() {
        let (s, calls) = svc(vec![(10_000, true), (30, true)]);
        let h = HedgeLayer::new(config(200)).layer(s);
        let t = Instant::now();
        assert_eq!(h.oneshot(Request::new(String::new())).await.unwrap(), 1);
        assert_eq!(t.elapsed(), Duration::from_millis(230));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_first_attempt_hedges_at_once() {
        let (s, calls) = svc(vec![(5, false), (30, true)]);
        let h = HedgeLayer::new(config(1_000)).layer(s);
        let t = Instant::now();
        assert_eq!(h.oneshot(Request::new(String::new())).await.unwrap(), 1);
        assert_eq!(t.elapsed(), Duration::from_millis(35));
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn both_failing_reports_the_first_error() {
        let (s, _) = svc(vec![(5, false), (5, false)]);
        let h = HedgeLayer::new(config(1_000)).layer(s);
        let err = h.oneshot(Request::new(String::new())).await.unwrap_err();
        assert_eq!(err.to_string(), "boom");
    }

    #[tokio::test(start_paused = true)]
    async fn no_budget_no_hedge() {
        use crate::budget::{BudgetConfig, RetryBudget};
        let budget = Arc::new(
            RetryBudget::new(BudgetConfig {
                min_per_second: 0,
                ratio: 0.0,
                ..Default::default()
            })
            .unwrap(),
        );
        let (s, calls) = svc(vec![(1_000, true), (10, true)]);
        let h = HedgeLayer::new(config(100)).budget(budget).layer(s);
        assert_eq!(h.oneshot(Request::new(String::new())).await.unwrap(), 0);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn delay_follows_the_latency_percentile() {
        let (s, _) = svc(vec![(100, true)]);
        let layer = HedgeLayer::new(HedgeConfig {
            window: 64,
            ..config(2_000)
        });
        let h = layer.layer(s);
        for _ in 0..64 {
            h.clone()
                .oneshot(Request::new(String::new()))
                .await
                .unwrap();
        }
        assert_eq!(layer.current_delay(), Duration::from_millis(100));
    }
}
