//! [`Fallback`]: an ordered chain of providers by priority that skips open ones
//! instantly and moves down the chain on a retryable outcome. The router itself is
//! [`Router`] (shared with [`Balance`](crate::Balance)); this file holds what is
//! the chain's own.

use tower_failover_core::LlmClassifier;

use crate::attrs::DefaultAttributes;
use crate::config::{FallbackConfig, Settings};
#[cfg(doc)]
use crate::provider::ProviderOptions;
use crate::routed::{Router, RouterBuilder, router_config};

/// Sends each request to the first provider of a chain that is available, and on a
/// retryable outcome to the next one it has not tried.
///
/// The order is by [`priority`](ProviderOptions::priority) (lower first), then the
/// order providers were added. A provider whose health says it is unavailable
/// (circuit open, rate limited, ramp at 0 %) is skipped without spending any time on
/// it; one whose `poll_ready` is pending is passed over and waited on (up to
/// [`max_ready_wait`](FallbackConfig::max_ready_wait)) only when nothing further down
/// the chain can take the request. Capability routing applies as in
/// [`Balance`](crate::Balance): a request only walks the providers that can serve it.
///
/// ```
/// use http::{Request, Response};
/// use tower::{ServiceExt, service_fn};
/// use tower_failover_balance::Fallback;
/// use tower_failover_core::{CircuitState, Health, replay::ReplayBody};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let provider = |name: &'static str| service_fn(move |_req: Request<ReplayBody>| async move {
///     Ok::<_, tower::BoxError>(Response::builder().header("x-from", name).body(ReplayBody::empty())?)
/// });
/// let primary = Health::standalone("openai", "gpt-4o-mini");
/// let chain = Fallback::new([
///     (primary.clone(), provider("primary")),
///     (Health::standalone("anthropic", "claude-haiku-4-5"), provider("secondary")),
/// ]);
/// // The primary's circuit is open: it is skipped at once.
/// primary.force(Some(CircuitState::Open));
/// let res = chain.oneshot(Request::new(ReplayBody::from("{}"))).await?;
/// assert_eq!(res.headers()["x-from"], "secondary");
/// # Ok(()) }
/// ```
pub type Fallback<S, C = LlmClassifier, A = DefaultAttributes> = Router<FallbackConfig, S, C, A>;

/// Builds a [`Fallback`]. From [`Fallback::builder`](Router::builder).
pub type FallbackBuilder<S, C = LlmClassifier, A = DefaultAttributes> =
    RouterBuilder<FallbackConfig, S, C, A>;

router_config!(
    FallbackConfig,
    "Fallback",
    "FallbackBuilder",
    Settings::fallback
);
