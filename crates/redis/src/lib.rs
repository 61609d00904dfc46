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
//!   an atomic script;
//! - optionally **counters per fixed window** ([`FleetCounters`]), such as a
//!   gateway's spending limit per caller key, added to and read in the background.
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
//! when Redis returns, even to a Redis that restarted empty: on reconnecting, each
//! replica writes its latest circuit and ramp state again (a newer stored value
//! wins). Nothing about a caller's request depends on Redis being up.
//!
//! Keys are namespaced (`<namespace>:circuit:<provider>/<model>`, …) and expire.
//!
//! # Trust model: Redis is a neighbour, not an authority
//!
//! Anything that can write to the namespace (a buggy replica of another version, a
//! compromised service sharing the Redis, an operator's typo) can put anything there
//! and publish anything on the channel. A replica therefore treats every value it reads
//! as a claim to check, and the worst a hostile writer can do is what an honest replica
//! could: open a circuit, or mark a quota group rate limited, for at most
//! [`RedisConfig::max_deadline`].
//!
//! - **Deadlines** (circuit open-until, rate-limit windows, probe leases) are clamped
//!   to `max_deadline` from now; an open circuit without a deadline is ignored.
//! - **Versions**: a value stamped more than a minute in the future is ignored, and
//!   overwritten by the next honest write, so a forged stamp cannot outrank every
//!   write after it.
//! - **Counts** (consecutive trips, ramp steps and shares) are capped; usage sums
//!   saturate at `u64::MAX` locally and at `i64::MAX` in Redis instead of wrapping or
//!   failing; a [`FleetBudget`] counter near `i64::MAX` or not a number counts as spent.
//! - **Sizes**: a message or key over 16 KiB is not parsed, and keys are read by a
//!   script that returns only strings of bounded length, so a huge or wrongly typed
//!   value is never sent to us. (The Redis client still reads a whole pub/sub message
//!   before it is measured; Redis's own `client-output-buffer-limit` bounds that.)
//! - **Memory**: only providers attached to this replica are looked at and
//!   remembered, whatever others publish, with a hard cap of 4096 keys past which
//!   updates are ignored with one warning ([`RedisStore::remembered_keys`]).
//! - **Wrong types**: a key of the wrong type or with garbage is replaced by the next
//!   write rather than failing it; a command Redis refuses is dropped with a warning,
//!   never retried in a loop that would stall every other update.
//! - **Secrets**: passwords in the URL (in the user part, with `@` or percent-encoded
//!   characters, or in a `redis+unix://…?pass=` query) never appear in `Debug`, logs,
//!   errors or the store status ([`RedisConfig::redacted_url`]).
//!
//! Usage drained for a write that fails is put back, merged with newer usage, and
//! written with the next flush: at least once (a write whose reply was lost may be
//! counted twice), never silently dropped.
//!
//! `rediss://` connects with TLS on rustls (the ring provider, the same TLS stack as
//! the provider clients), verifying the server against the system's root
//! certificates or [`RedisConfig::tls_ca_file`].
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

#![cfg_attr(docsrs, feature(doc_cfg))]

mod budget;
mod config;
mod counters;
mod retry_budget;
mod scripts;
mod shared;
mod store;
mod tasks;
mod wire;

pub use budget::FleetBudget;
pub use config::{ConfigError, RedisConfig};
pub use counters::{FleetCounters, MAX_COUNT};
pub use retry_budget::FleetRetryBudget;
pub use store::RedisStore;

#[doc(no_inline)]
pub use tower_failover_core::StateStore;
