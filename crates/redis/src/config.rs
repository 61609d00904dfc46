//! Configuration of the Redis store.

use std::fmt;
use std::time::Duration;

use serde::Deserialize;
pub use tower_failover_core::ConfigError;

/// How to reach Redis and how to share state there.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// The Redis URL, such as `redis://127.0.0.1:6379/` (`rediss://` for TLS is not
    /// enabled in this build). Credentials in it never appear in logs or `Debug`.
    pub url: String,
    /// Prefix of every key and of the pub/sub channel. Replicas that share state use
    /// the same namespace. Default: `tower-failover`.
    pub namespace: String,
    /// How often every attached provider's shared state is read back, in case a
    /// pub/sub message was missed. Default: 2 s.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub resync_interval: Duration,
    /// How long keys live without being refreshed. Default: 1 h.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub key_ttl: Duration,
    /// The furthest deadline accepted from Redis; later ones are clamped (a garbage
    /// value cannot black out a provider for days). Default: 10 min.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub max_deadline: Duration,
    /// Timeout of one Redis command or connection attempt. Default: 500 ms.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub command_timeout: Duration,
    /// How often batched usage counters are written. Default: 1 s.
    #[serde(with = "tower_failover_core::duration_serde")]
    pub usage_flush_interval: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            url: "redis://127.0.0.1:6379/".to_owned(),
            namespace: "tower-failover".to_owned(),
            resync_interval: Duration::from_secs(2),
            key_ttl: Duration::from_secs(3600),
            max_deadline: Duration::from_secs(600),
            command_timeout: Duration::from_millis(500),
            usage_flush_interval: Duration::from_secs(1),
        }
    }
}

impl RedisConfig {
    /// Defaults with the given URL.
    pub fn new(url: impl Into<String>) -> Self {
        RedisConfig {
            url: url.into(),
            ..RedisConfig::default()
        }
    }

    /// Sets the namespace.
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the resync interval.
    pub fn resync_interval(mut self, every: Duration) -> Self {
        self.resync_interval = every;
        self
    }

    /// Sets the cap on deadlines read from Redis.
    pub fn max_deadline(mut self, cap: Duration) -> Self {
        self.max_deadline = cap;
        self
    }

    /// Checks every value; the error names the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let err = |field: &'static str, reason: &'static str| Err(ConfigError::new(field, reason));
        if redis::Client::open(self.url.as_str()).is_err() {
            return err("url", "is not a valid redis:// URL");
        }
        if self.namespace.is_empty()
            || self.namespace.len() > 64
            || !self
                .namespace
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        {
            return err(
                "namespace",
                "must be 1 to 64 characters of letters, digits, '-', '_' or '.'",
            );
        }
        let within = |d: Duration, lo: Duration, hi: Duration| d >= lo && d <= hi;
        if !within(
            self.resync_interval,
            Duration::from_millis(50),
            Duration::from_secs(3600),
        ) {
            return err("resync_interval", "must be between 50ms and 1h");
        }
        if !within(
            self.key_ttl,
            Duration::from_secs(1),
            Duration::from_secs(86_400 * 7),
        ) {
            return err("key_ttl", "must be between 1s and 7 days");
        }
        if !within(
            self.max_deadline,
            Duration::from_secs(1),
            Duration::from_secs(86_400),
        ) {
            return err("max_deadline", "must be between 1s and 1 day");
        }
        if !within(
            self.command_timeout,
            Duration::from_millis(10),
            Duration::from_secs(60),
        ) {
            return err("command_timeout", "must be between 10ms and 60s");
        }
        if !within(
            self.usage_flush_interval,
            Duration::from_millis(50),
            Duration::from_secs(3600),
        ) {
            return err("usage_flush_interval", "must be between 50ms and 1h");
        }
        Ok(())
    }

    /// The URL with any password replaced by `***`, for logs.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }
}

pub(crate) fn redact_url(url: &str) -> String {
    // scheme://user:password@host… → scheme://user:***@host…
    let Some((scheme, rest)) = url.split_once("://") else {
        return "<invalid url>".to_owned();
    };
    match rest.split_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{scheme}://{user}:***@{host}")
        }
        None => url.to_owned(),
    }
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("namespace", &self.namespace)
            .field("resync_interval", &self.resync_interval)
            .field("key_ttl", &self.key_ttl)
            .field("max_deadline", &self.max_deadline)
            .field("command_timeout", &self.command_timeout)
            .field("usage_flush_interval", &self.usage_flush_interval)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_bad_values_naming_the_field() {
        let cases = [
            (RedisConfig::new("http://nope"), "url"),
            (
                RedisConfig::new("redis://x").namespace("has space"),
                "namespace",
            ),
            (RedisConfig::new("redis://x").namespace(""), "namespace"),
            (
                RedisConfig::new("redis://x").resync_interval(Duration::ZERO),
                "resync_interval",
            ),
            (
                RedisConfig::new("redis://x").max_deadline(Duration::from_secs(86_400 * 30)),
                "max_deadline",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
        }
        RedisConfig::default().validate().unwrap();
    }

    #[test]
    fn passwords_never_show() {
        let c = RedisConfig::new("redis://admin:hunter2@cache.internal:6379/0");
        assert_eq!(c.redacted_url(), "redis://admin:***@cache.internal:6379/0");
        assert!(!format!("{c:?}").contains("hunter2"));
        let c = RedisConfig::new("redis://:hunter2@cache:6379");
        assert!(!c.redacted_url().contains("hunter2"));
    }

    #[test]
    fn loads_from_json_with_durations() {
        let c: RedisConfig = serde_json::from_str(
            r#"{"url":"redis://127.0.0.1/","namespace":"prod","resync_interval":"500ms","max_deadline":"2m"}"#,
        )
        .unwrap();
        assert_eq!(c.resync_interval, Duration::from_millis(500));
        assert_eq!(c.max_deadline, Duration::from_secs(120));
        c.validate().unwrap();
        assert!(serde_json::from_str::<RedisConfig>(r#"{"urll":"x"}"#).is_err());
    }
}
