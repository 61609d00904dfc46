use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::Budget;
use tower_layer::Layer;

use super::shared::HedgeShared;
use super::{Hedge, HedgeConfig};

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
///     .layer(HedgeLayer::with_config(HedgeConfig { initial_delay: Duration::from_millis(200), ..Default::default() })?)
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
impl HedgeLayer {
    /// Hedging with the default [`HedgeConfig`] and no budget.
    pub fn new() -> Self {
        HedgeLayer::build(HedgeConfig::default())
    }

    /// Hedging with `config` and no budget; an invalid `config` is refused with an
    /// error naming the field (never replaced by the default).
    pub fn with_config(config: HedgeConfig) -> Result<Self, tower_failover_core::ConfigError> {
        config.validate()?;
        Ok(HedgeLayer::build(config))
    }

    fn build(config: HedgeConfig) -> Self {
        HedgeLayer {
            shared: Arc::new(HedgeShared::new(config, None)),
        }
    }

    /// Hedges only when `budget` allows a retry (and counts every hedge in it).
    pub fn budget(self, budget: Arc<dyn Budget + Send + Sync>) -> Self {
        HedgeLayer {
            shared: Arc::new(HedgeShared::new(self.shared.config, Some(budget))),
        }
    }

    /// The delay after which a request is hedged now.
    pub fn current_delay(&self) -> Duration {
        self.shared.delay()
    }
}
impl Default for HedgeLayer {
    fn default() -> Self {
        HedgeLayer::new()
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
        Hedge::new(inner, self.shared.clone())
    }
}
