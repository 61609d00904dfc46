//! `[auth]`: the caller keys, their limits, and the allowed hosts.

use std::collections::BTreeSet;
use std::time::Duration;

use serde::Deserialize;
use tower_failover::ConfigError;

use super::keys::{Digest, MIN_KEY_BYTES, hash, parse_digest};

/// The longest key name (it becomes a metric label and part of a Redis key).
const MAX_NAME: usize = 64;
/// The name of the separate admin key ([`AuthConfig::admin_key_env`]) in logs and
/// metrics.
pub const ADMIN_NAME: &str = "admin";

/// `[auth]`: who may call the gateway. See the [module documentation](super).
///
/// With no key at all (the default) the gateway is open to anyone who can reach
/// it, and says so in its logs.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct AuthConfig {
    /// The callers' keys (`[[auth.keys]]`).
    pub keys: Vec<KeyConfig>,
    /// The environment variable holding a separate admin key: it opens the admin
    /// routes and calls no model. Logged and counted as `admin`.
    pub admin_key_env: Option<String>,
    /// The same key stored as its SHA-256 (64 hex digits) instead.
    pub admin_key_sha256: Option<String>,
    /// The `Host` names (or addresses) the gateway answers to, port ignored; any
    /// other host gets `421`. Empty (the default): any host. Set it when browsers
    /// on the gateway's machine or network could be pointed at it (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

/// One caller's key (`[[auth.keys]]`). Exactly one of `key_env` and
/// `key_sha256` is set: the key itself is never written in the file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct KeyConfig {
    /// The caller's name in logs, metrics and Redis (letters, digits, `.`, `_`,
    /// `-`; at most 64): never the key.
    pub name: String,
    /// The environment variable holding the key (at least 16 bytes).
    #[serde(default)]
    pub key_env: Option<String>,
    /// The key's SHA-256 as 64 hex digits (`printf %s "$KEY" | sha256sum`).
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// The models this key may ask for (by the name the caller sends). Absent:
    /// every model; empty: none (an admin-only key).
    #[serde(default)]
    pub models: Option<Vec<String>>,
    /// Whether this key also opens the admin routes. Default: false.
    #[serde(default)]
    pub admin: bool,
    /// Tokens and/or cost this key may spend per period.
    #[serde(default)]
    pub budget: Option<BudgetConfig>,
}

impl KeyConfig {
    /// A key named `name` stored as the SHA-256 `sha256_hex` of the key (see
    /// [`hash_key`](super::hash_key)), with every model, no budget, not admin.
    pub fn hashed(name: impl Into<String>, sha256_hex: impl Into<String>) -> Self {
        KeyConfig {
            name: name.into(),
            key_env: None,
            key_sha256: Some(sha256_hex.into()),
            models: None,
            admin: false,
            budget: None,
        }
    }

    /// A key named `name` read from the environment variable `var`.
    pub fn from_env(name: impl Into<String>, var: impl Into<String>) -> Self {
        KeyConfig {
            key_env: Some(var.into()),
            key_sha256: None,
            ..KeyConfig::hashed(name, "")
        }
    }

    /// Only these models.
    pub fn models<S: Into<String>>(mut self, models: impl IntoIterator<Item = S>) -> Self {
        self.models = Some(models.into_iter().map(Into::into).collect());
        self
    }

    /// Opens the admin routes too.
    pub fn admin(mut self) -> Self {
        self.admin = true;
        self
    }

    /// With this budget.
    pub fn budget(mut self, budget: BudgetConfig) -> Self {
        self.budget = Some(budget);
        self
    }
}

/// What a key may spend per `period` (fixed windows aligned to the Unix epoch:
/// `"1d"` ends at 00:00 UTC, `"1h"` on the hour). Once either limit is reached,
/// the key's requests get `429` with `Retry-After` until the period ends.
///
/// Usage is what the providers report, counted when an answer ends; a request
/// admitted while the budget was not yet spent is counted in full, so a key can
/// exceed its budget by what its requests in flight spend.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
#[non_exhaustive]
pub struct BudgetConfig {
    /// Prompt plus completion tokens per period.
    #[serde(default)]
    pub tokens: Option<u64>,
    /// Cost per period, in the currency of the providers' `price` (answers of
    /// entries without a price cost nothing).
    #[serde(default)]
    pub cost: Option<f64>,
    /// The period: from `1s` to `366d`.
    #[serde(with = "tower_failover::duration_serde")]
    pub period: Duration,
}

impl BudgetConfig {
    /// `tokens` per `period`.
    pub fn tokens(tokens: u64, period: Duration) -> Self {
        BudgetConfig {
            tokens: Some(tokens),
            cost: None,
            period,
        }
    }

    /// `cost` per `period`.
    pub fn cost(cost: f64, period: Duration) -> Self {
        BudgetConfig {
            tokens: None,
            cost: Some(cost),
            period,
        }
    }
}

impl AuthConfig {
    /// Whether any key is configured (then every route of the router needs one).
    pub fn is_enabled(&self) -> bool {
        !self.keys.is_empty() || self.admin_key_env.is_some() || self.admin_key_sha256.is_some()
    }

    /// Refuses invalid values, naming the field. (The keys in the environment are
    /// read and checked when the gateway is built.)
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut names = BTreeSet::new();
        let separate_admin = self.admin_key_env.is_some() || self.admin_key_sha256.is_some();
        if self.admin_key_env.is_some() && self.admin_key_sha256.is_some() {
            return Err(ConfigError::new(
                "auth.admin_key_sha256",
                "set admin_key_env or admin_key_sha256, not both",
            ));
        }
        if let Some(h) = &self.admin_key_sha256
            && parse_digest(h).is_none()
        {
            return Err(ConfigError::new(
                "auth.admin_key_sha256",
                "must be a SHA-256 as 64 hex digits",
            ));
        }
        if let Some(v) = &self.admin_key_env {
            check_var("auth.admin_key_env", v)?;
        }
        for (i, k) in self.keys.iter().enumerate() {
            let field = |f: &str| format!("auth.keys[{i}].{f}");
            let name_ok = !k.name.is_empty()
                && k.name.len() <= MAX_NAME
                && k.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
            if !name_ok {
                return Err(ConfigError::new(
                    field("name"),
                    "must be 1 to 64 letters, digits, '.', '_' or '-'",
                ));
            }
            if !names.insert(k.name.as_str()) || (separate_admin && k.name == ADMIN_NAME) {
                return Err(ConfigError::new(
                    field("name"),
                    format!("{:?} is used twice", k.name),
                ));
            }
            match (&k.key_env, &k.key_sha256) {
                (Some(v), None) => check_var(&field("key_env"), v)?,
                (None, Some(h)) => {
                    if parse_digest(h).is_none() {
                        return Err(ConfigError::new(
                            field("key_sha256"),
                            "must be a SHA-256 as 64 hex digits",
                        ));
                    }
                }
                _ => {
                    return Err(ConfigError::new(
                        field("key_env"),
                        "set exactly one of key_env (a variable holding the key) and key_sha256 (its hash)",
                    ));
                }
            }
            if let Some(models) = &k.models
                && models.iter().any(|m| m.trim().is_empty())
            {
                return Err(ConfigError::new(field("models"), "has an empty model name"));
            }
            if let Some(b) = &k.budget {
                b.validate(&field("budget"))?;
            }
        }
        for h in &self.allowed_hosts {
            let ok = !h.is_empty()
                && h.bytes().all(|b| {
                    b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')
                });
            if !ok {
                return Err(ConfigError::new(
                    "auth.allowed_hosts",
                    format!("{h:?} is not a host name or address"),
                ));
            }
        }
        Ok(())
    }

    /// Reads every `key_env` variable with `var` (`|k| std::env::var(k).ok()`)
    /// and checks the keys (set, long enough, no key twice), as building the
    /// gateway does; errors name the field and the variable, never a key.
    pub fn check_keys(&self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        self.validate()?;
        self.digests(&var).map(drop)
    }

    /// The digests of every key, reading `key_env` variables with `var`, each
    /// named by its field.
    pub(super) fn digests(
        &self,
        var: &dyn Fn(&str) -> Option<String>,
    ) -> Result<(Vec<Digest>, Option<Digest>), ConfigError> {
        let mut seen = BTreeSet::new();
        let mut out = Vec::with_capacity(self.keys.len());
        let mut one = |field: String, env: &Option<String>, sha: &Option<String>| {
            let digest = match (env, sha) {
                (Some(v), _) => {
                    let key = var(v).unwrap_or_default();
                    let key = key.trim();
                    if key.len() < MIN_KEY_BYTES {
                        return Err(ConfigError::new(
                            field,
                            format!(
                                "the variable {v} must hold a key of at least {MIN_KEY_BYTES} bytes (it is unset, empty or shorter)"
                            ),
                        ));
                    }
                    hash(key.as_bytes())
                }
                (None, Some(h)) => parse_digest(h)
                    .ok_or_else(|| ConfigError::new(field.clone(), "must be 64 hex digits"))?,
                (None, None) => return Err(ConfigError::new(field, "no key")),
            };
            if !seen.insert(digest) {
                return Err(ConfigError::new(field, "the same key is given twice"));
            }
            Ok(digest)
        };
        for (i, k) in self.keys.iter().enumerate() {
            let field = if k.key_env.is_some() {
                format!("auth.keys[{i}].key_env")
            } else {
                format!("auth.keys[{i}].key_sha256")
            };
            out.push(one(field, &k.key_env, &k.key_sha256)?);
        }
        let admin = if self.admin_key_env.is_some() || self.admin_key_sha256.is_some() {
            let field = if self.admin_key_env.is_some() {
                "auth.admin_key_env"
            } else {
                "auth.admin_key_sha256"
            };
            Some(one(
                field.to_owned(),
                &self.admin_key_env,
                &self.admin_key_sha256,
            )?)
        } else {
            None
        };
        Ok((out, admin))
    }
}

fn check_var(field: &str, v: &str) -> Result<(), ConfigError> {
    if v.is_empty() || v.contains(['=', '\0']) {
        return Err(ConfigError::new(field, "must name an environment variable"));
    }
    Ok(())
}

impl BudgetConfig {
    fn validate(&self, field: &str) -> Result<(), ConfigError> {
        if self.tokens.is_none() && self.cost.is_none() {
            return Err(ConfigError::new(field, "set tokens, cost or both"));
        }
        if self.tokens == Some(0) {
            return Err(ConfigError::new(
                format!("{field}.tokens"),
                "must be at least 1",
            ));
        }
        if let Some(c) = self.cost
            && !(c.is_finite() && c > 0.0 && c < 1e9)
        {
            return Err(ConfigError::new(
                format!("{field}.cost"),
                "must be a positive amount below 1e9",
            ));
        }
        if self.period < Duration::from_secs(1) || self.period > Duration::from_secs(366 * 86_400) {
            return Err(ConfigError::new(
                format!("{field}.period"),
                "must be between 1s and 366d",
            ));
        }
        Ok(())
    }

    /// The cost limit in millionths.
    pub(super) fn cost_micros(&self) -> Option<u64> {
        self.cost.map(|c| (c * 1e6).round() as u64)
    }
}
