//! [`Balance`]: latency- and cost-weighted power of two choices over per-provider
//! stacks, with capability routing, recovery-ramp shares and failover to untried
//! providers. The router itself is [`Router`] (shared with
//! [`Fallback`](crate::Fallback)); this file holds what is the balancer's own.

use tower_failover_core::LlmClassifier;

use crate::attrs::DefaultAttributes;
use crate::config::{BalanceConfig, Policy, Settings, Weighting};
use crate::routed::{Router, RouterBuilder, router_config};

/// Balances requests over per-provider stacks. See the [crate documentation](crate)
/// for how it chooses.
///
/// Built from `(Health, S)` pairs (each provider's stack and its health handle)
/// with [`Balance::new`](Router::new) or [`Balance::builder`](Router::builder). Clones share the providers and
/// their handle, each with its own random generator (derived from the seed).
///
/// ```
/// use http::{Request, Response};
/// use tower::{ServiceExt, service_fn};
/// use tower_failover_balance::{Balance, BalanceConfig, Policy, ProviderOptions, Weighting};
/// use tower_failover_core::{Health, replay::ReplayBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let provider = |name: &'static str| service_fn(move |_req: Request<ReplayBody>| async move {
///     Ok::<_, tower::BoxError>(Response::new(ReplayBody::from(name)))
/// });
/// let balance = Balance::builder()
///     .config(BalanceConfig::default().weighting(Weighting::Cost).seed(7))
///     .provider_with(
///         Health::standalone("cheap", "mini"),
///         provider("cheap"),
///         ProviderOptions::default().price_per_million(0.2),
///     )
///     .provider_with(
///         Health::standalone("strong", "large"),
///         provider("strong"),
///         ProviderOptions::default().price_per_million(5.0),
///     )
///     .build()?;
/// let res = balance.oneshot(Request::new(ReplayBody::from("{}"))).await?;
/// assert_eq!(res.status(), 200);
/// # Ok(()) }
/// ```
pub type Balance<S, C = LlmClassifier, A = DefaultAttributes> = Router<BalanceConfig, S, C, A>;

/// Builds a [`Balance`]. From [`Balance::builder`](Router::builder).
pub type BalanceBuilder<S, C = LlmClassifier, A = DefaultAttributes> =
    RouterBuilder<BalanceConfig, S, C, A>;

router_config!(
    BalanceConfig,
    "Balance",
    "BalanceBuilder",
    Settings::balance
);

impl<S, C, A> RouterBuilder<BalanceConfig, S, C, A> {
    /// Sets the [`policy`](BalanceConfig::policy).
    pub fn policy(mut self, policy: Policy) -> Self {
        self.config.policy = policy;
        self
    }

    /// Sets the [`weighting`](BalanceConfig::weighting).
    pub fn weighting(mut self, weighting: Weighting) -> Self {
        self.config.weighting = weighting;
        self
    }

    /// Sets the [`seed`](BalanceConfig::seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = Some(seed);
        self
    }
}
