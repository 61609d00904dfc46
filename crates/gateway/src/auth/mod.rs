//! Who may call the gateway (`[auth]`), and what a request must look like.
//!
//! A middleware around the whole router (built by [`build_with`](crate::build_with))
//! checks each request in this order:
//!
//! 1. **Host** — with [`allowed_hosts`](AuthConfig::allowed_hosts) set, a request
//!    for any other `Host` gets `421 host_not_allowed` (a page a browser loaded
//!    from elsewhere, whose name was rebound to the gateway's address, cannot
//!    reach it).
//! 2. **Key** — with keys configured, every route needs one: `Authorization:
//!    Bearer <key>` (OpenAI clients) or `x-api-key: <key>` (Anthropic clients).
//!    Missing or wrong: `401`. The admin routes (`/health`, `/health/events`,
//!    `/health/force`, `/metrics`) need a key with `admin = true` or the
//!    separate admin key: `403` otherwise. `/livez` and `/readyz` are served
//!    apart from the router and stay open.
//! 3. **Content type** — a `POST`, `PUT` or `PATCH` must be `application/json`:
//!    `415` otherwise, whether or not keys are configured (an HTML form or a
//!    `text/plain` fetch from a browser page cannot post to the gateway).
//! 4. **Model** — a key with [`models`](KeyConfig::models) may ask only for those
//!    (the body's `"model"`, the `x-failover-model` header, or the default model
//!    when it names none): `403 model_not_allowed`. `GET /v1/models` lists only
//!    them for that key.
//! 5. **Budget** — a key whose [`budget`](KeyConfig::budget) is spent for the
//!    current period gets `429 budget_exceeded` with `Retry-After` (the seconds
//!    to the period's end). Spending is the usage the providers report, counted
//!    when each answer ends (streamed answers included); with `[redis]`, the
//!    replicas share it (counted in this process and exchanged every 200 ms, so
//!    a fleet can overshoot by what it spends in that time).
//!
//! Errors are OpenAI-shaped (`{"error": {"message", "type", "code"}}`), and
//! Anthropic-shaped on `/v1/messages`. The caller's key is never forwarded to a
//! provider ([`crate::upstream`]), logged, or stored: keys are kept as SHA-256
//! digests, compared in constant time, and known in logs, metrics
//! (`tower_failover_gateway_requests_total{caller}`) and Redis by their name
//! only. A request that passed carries its [`Caller`] as a request extension for
//! the handlers, and as a response extension for the layers outside.
//!
//! ```toml
//! [auth]
//! admin_key_env = "GATEWAY_ADMIN_KEY"      # opens the admin routes; calls no model
//! allowed_hosts = ["localhost", "127.0.0.1", "llm.internal"]
//!
//! [[auth.keys]]
//! name = "search"                          # in logs and metrics
//! key_env = "SEARCH_TEAM_KEY"              # the key is in this variable (16 bytes or more)
//! models = ["gpt-4o-mini"]                 # absent: every model
//! budget = { tokens = 2000000, cost = 5.0, period = "1d" }
//!
//! [[auth.keys]]
//! name = "ops"
//! key_sha256 = "…64 hex digits…"           # printf %s "$KEY" | sha256sum
//! admin = true
//! ```
//!
//! # Without keys
//!
//! With no key configured the gateway serves anyone who reaches it (the first
//! run on simulated providers needs no setup) and logs a warning when it is
//! built; [`serve_with`](crate::serve_with) warns again, louder, when it listens
//! on an address other than loopback. It does not refuse to start: a gateway
//! behind an authenticating proxy or on a private network is a valid choice, and
//! the operator's to make. The host and content-type checks apply either way.

mod budget;
mod config;
mod keys;
mod layer;
#[cfg(test)]
mod tests;

use std::sync::Arc;

use tower_failover::ConfigError;
use tower_failover::redis::RedisConfig;

pub use config::{ADMIN_NAME, AuthConfig, BudgetConfig, KeyConfig};
pub use keys::hash_key;
pub(crate) use layer::{Charge, check};

use budget::Meter;
use keys::Digest;

/// Says, when the gateway is built, that it has no caller keys.
pub(crate) fn warn_open() {
    tracing::warn!(
        "no caller keys ([auth]): anyone who can reach this gateway can call its providers \
         and its admin routes"
    );
}

/// The caller a request was authenticated as: the key's name (never the key).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Caller(Arc<str>);

impl Caller {
    /// The key's name.
    pub fn name(&self) -> &str {
        &self.0
    }

    /// The key's name, shared (a metric label without a copy).
    #[cfg(feature = "metrics")]
    pub(crate) fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

/// The models a caller's key may ask for, in the request's extensions when the key
/// is limited to some (absent: every model). `GET /v1/models` lists only these.
#[derive(Debug, Clone)]
pub(crate) struct AllowedModels(pub(crate) Arc<[String]>);

impl AllowedModels {
    /// Whether the key may ask for `model` (by the name the caller sends).
    pub(crate) fn allows(&self, model: &str) -> bool {
        self.0.iter().any(|m| m == model)
    }
}

/// The label of requests that presented no valid key (keys not configured, or
/// refused).
pub const ANONYMOUS: &str = "anonymous";

/// One key, ready to check.
#[derive(Debug)]
struct Key {
    caller: Caller,
    /// `None`: every model.
    models: Option<AllowedModels>,
    admin: bool,
    /// (limit, counter index in the meter).
    tokens: Option<(u64, usize)>,
    cost_micros: Option<(u64, usize)>,
}

/// `[auth]`, compiled: what the middleware checks.
pub(crate) struct Access {
    digests: Vec<Digest>,
    keys: Vec<Key>,
    hosts: Vec<String>,
    default_model: Option<String>,
    max_body: usize,
    meter: Meter,
}

impl std::fmt::Debug for Access {
    /// The keys by name; never their digests.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Access")
            .field("keys", &self.keys)
            .field("hosts", &self.hosts)
            .field("meter", &self.meter)
            .finish_non_exhaustive()
    }
}

impl Access {
    /// Reads the keys (`var` reads the environment), and starts the budget
    /// counters (on Redis when `redis` is set). Call it inside a tokio runtime.
    pub(crate) fn new(
        config: &AuthConfig,
        var: &dyn Fn(&str) -> Option<String>,
        redis: Option<&RedisConfig>,
        default_model: Option<String>,
        max_body: usize,
    ) -> Result<Arc<Access>, ConfigError> {
        config.validate()?;
        let (mut digests, admin) = config.digests(var)?;
        let mut counters = Vec::new();
        let mut keys = Vec::with_capacity(digests.len() + 1);
        for k in &config.keys {
            let mut counter = |what: &str, limit: Option<u64>| {
                let b = k.budget.as_ref()?;
                let limit = limit?;
                counters.push((format!("caller:{}:{what}", k.name), b.period));
                Some((limit, counters.len() - 1))
            };
            let tokens = counter("tokens", k.budget.as_ref().and_then(|b| b.tokens));
            let cost_micros = counter(
                "cost_micros",
                k.budget.as_ref().and_then(BudgetConfig::cost_micros),
            );
            keys.push(Key {
                caller: Caller(k.name.as_str().into()),
                models: k.models.as_deref().map(|m| AllowedModels(m.into())),
                admin: k.admin,
                tokens,
                cost_micros,
            });
        }
        if let Some(d) = admin {
            digests.push(d);
            keys.push(Key {
                caller: Caller(ADMIN_NAME.into()),
                models: Some(AllowedModels(Arc::from([]))),
                admin: true,
                tokens: None,
                cost_micros: None,
            });
        }
        let meter = Meter::new(&counters, redis)?;
        Ok(Arc::new(Access {
            digests,
            keys,
            hosts: config
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
            default_model,
            max_body,
            meter,
        }))
    }

    /// Whether callers need a key.
    pub(crate) fn is_enabled(&self) -> bool {
        !self.keys.is_empty()
    }
}
