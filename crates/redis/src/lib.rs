//! Shared provider health for a fleet of gateway replicas, on Redis.
//!
//! Run several gateway replicas behind a load balancer and each would otherwise learn
//! about an outage or a 429 on its own — and each would keep hammering a provider that
//! another replica already knows is down or rate limited. [`RedisStore`] implements
//! tower-failover-core's [`StateStore`] on Redis, so the replicas share:
//!
//! - **circuit transitions**: a replica that opens a circuit opens it for the fleet;
//!   half-open probing is done by one replica at a time, by a lease decided in Redis
//!   when the circuit opens;
//! - **rate-limit deadlines** per quota group: a 429 seen by one replica steers all;
//! - **the ramp step**: one recovery ramp for the fleet;
//! - **usage and cost counters** (batched);
//! - optionally a **fleet-wide request or token budget** ([`FleetBudget`]), taken by
//!   an atomic script.
//!
//! # Never on the hot path
//!
//! Layers read and write local memory only ([`Health`](tower_failover_core::Health)).
//! The store hears of local changes through a bounded channel (never blocking the
//! caller), writes them from a background task, learns other replicas' changes by
//! pub/sub, and resynchronises periodically in case a message was missed. Every value
//! carries a timestamp, so a stale key never overrides a newer local transition.
//!
//! If Redis is unreachable, the replica keeps serving on its local state, says so in
//! its logs and in the snapshot's `store` status, and writes its latest state back
//! when Redis returns. Nothing about a caller's request depends on Redis being up.
//!
//! Keys are namespaced (`<namespace>:circuit:<provider>/<model>`, …) and expire.
//! Values read back are validated, never trusted blindly: a garbage or hostile deadline
//! is clamped to [`RedisConfig::max_deadline`], so it cannot black out a provider for
//! days.
//!
//! # Example
//!
//! ```no_run
//! use tower_failover_core::{HealthConfig, Registry};
//! use tower_failover_redis::{RedisConfig, RedisStore};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = RedisStore::start(RedisConfig::new("redis://127.0.0.1:6379/"))?;
//! let registry = Registry::with_store(store, HealthConfig::default());
//! // Build every provider's stack from `registry` as usual: circuit openings, 429
//! // windows and ramp steps are now shared with every replica using the same namespace.
//! let primary = registry.provider("openai", "gpt-4o-mini");
//! # let _ = primary; Ok(()) }
//! ```

mod budget;
mod config;
mod store;
mod wire;

pub use budget::FleetBudget;
pub use config::{ConfigError, RedisConfig};
pub use store::RedisStore;

#[doc(no_inline)]
pub use tower_failover_core::StateStore;
