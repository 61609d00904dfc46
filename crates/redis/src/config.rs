//! Configuration of the Redis store.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
pub use tower_failover_core::ConfigError;

/// How to reach Redis and how to share state there.
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// The Redis URL: `redis://[user:password@]host:port/[db]`, `rediss://…` for TLS
    /// (rustls, verified against the system's root certificates, or against
    /// [`tls_ca_file`](Self::tls_ca_file)), or `redis+unix:///path/to.sock?db=0&pass=…`.
    /// Passwords in it (in the user part or in a `pass` query parameter) never appear
    /// in logs, errors, `Debug` or the store status: see
    /// [`redacted_url`](Self::redacted_url).
    pub url: String,
    /// A PEM file of CA certificates to verify a `rediss://` server with, instead of
    /// the system's roots (for a Redis with a private CA). Default: none.
    pub tls_ca_file: Option<PathBuf>,
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
            tls_ca_file: None,
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

    /// Sets a PEM file of CA certificates that `rediss://` servers are verified with.
    pub fn tls_ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.tls_ca_file = Some(path.into());
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
        if self.tls_ca_file.is_some() && !self.url.starts_with("rediss://") {
            return err("tls_ca_file", "is only used with a rediss:// URL");
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

/// Opens a client for `config` (TLS with the configured CA if any). Errors name the
/// field and never quote the URL.
pub(crate) fn client(config: &RedisConfig) -> Result<redis::Client, ConfigError> {
    let Some(path) = &config.tls_ca_file else {
        return redis::Client::open(config.url.as_str())
            .map_err(|_| ConfigError::new("url", "is not a valid redis:// URL"));
    };
    let pem = std::fs::read(path).map_err(|_| ConfigError::new("tls_ca_file", "cannot be read"))?;
    let certs = redis::TlsCertificates {
        client_tls: None,
        root_cert: Some(pem),
    };
    redis::Client::build_with_tls(config.url.as_str(), certs).map_err(|_| {
        ConfigError::new(
            "tls_ca_file",
            "is not a PEM file of CA certificates usable with this URL",
        )
    })
}

/// Query parameters whose value is a secret.
fn is_secret_param(name: &str) -> bool {
    ["pass", "password", "auth", "token"]
        .iter()
        .any(|s| name.eq_ignore_ascii_case(s))
}

pub(crate) fn redact_url(raw: &str) -> String {
    // Parsed the way the redis client parses it, so what it would send as a password is
    // exactly what is hidden. Anything that does not parse is not shown at all.
    let Ok(url) = url::Url::parse(raw) else {
        return "<unparseable url>".to_owned();
    };
    let mut out = format!("{}://", url.scheme());
    if !url.username().is_empty() || url.password().is_some() {
        out.push_str(url.username());
        if url.password().is_some() {
            out.push_str(":***");
        }
        out.push('@');
    }
    if let Some(host) = url.host_str() {
        out.push_str(host);
    }
    if let Some(port) = url.port() {
        out.push_str(&format!(":{port}"));
    }
    let path = url.path();
    // In a TCP URL, an '@' in the path means a password with an unencoded '/' was
    // split off from the user part: hide the path rather than guess.
    if url.scheme().ends_with("unix") || !path.contains('@') {
        out.push_str(path);
    } else {
        out.push_str("/***");
    }
    if let Some(query) = url.query() {
        out.push('?');
        let parts: Vec<String> = query
            .split('&')
            .map(|piece| {
                let name = url::form_urlencoded::parse(piece.as_bytes())
                    .next()
                    .map(|(k, _)| k.into_owned())
                    .unwrap_or_default();
                if is_secret_param(&name) {
                    let raw_name = piece.split('=').next().unwrap_or("");
                    format!("{raw_name}=***")
                } else {
                    piece.to_owned()
                }
            })
            .collect();
        out.push_str(&parts.join("&"));
    }
    if let Some(fragment) = url.fragment() {
        out.push('#');
        out.push_str(fragment);
    }
    out
}

impl fmt::Debug for RedisConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisConfig")
            .field("url", &self.redacted_url())
            .field("tls_ca_file", &self.tls_ca_file)
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

    /// Checks that `url` parses for the redis client, that its redacted form is
    /// `expected`, and that no part of `secret` shows in it or in `Debug`.
    fn hidden(url: &str, secret: &str, expected: &str) {
        let c = RedisConfig::new(url);
        c.validate().unwrap_or_else(|e| panic!("{url}: {e}"));
        assert_eq!(c.redacted_url(), expected, "{url}");
        let debug = format!("{c:?}");
        for shown in [c.redacted_url(), debug] {
            assert!(!shown.contains(secret), "{url} shows {secret}: {shown}");
        }
    }

    #[test]
    fn password_in_the_user_part_never_shows() {
        hidden(
            "redis://admin:hunter2@cache.internal:6379/0",
            "hunter2",
            "redis://admin:***@cache.internal:6379/0",
        );
        hidden(
            "redis://:hunter2@cache:6379",
            "hunter2",
            "redis://:***@cache:6379",
        );
        hidden(
            "rediss://admin:hunter2@cache:6380/#insecure",
            "hunter2",
            "rediss://admin:***@cache:6380/#insecure",
        );
    }

    #[test]
    fn password_containing_at_never_shows() {
        // Unencoded '@' in the password: the last '@' ends the user part.
        hidden(
            "redis://admin:hun@ter2@cache:6379/0",
            "ter2",
            "redis://admin:***@cache:6379/0",
        );
        hidden(
            "redis://:p@ss@w@rd@cache:6379",
            "rd",
            "redis://:***@cache:6379",
        );
        // Percent-encoded '@' (and other characters).
        hidden(
            "redis://admin:hun%40ter2@cache:6379/0",
            "ter2",
            "redis://admin:***@cache:6379/0",
        );
        hidden(
            "redis://admin:%2Fsl%3Fash%23@cache:6379",
            "ash",
            "redis://admin:***@cache:6379",
        );
    }

    #[test]
    fn password_with_a_slash_split_off_as_path_never_shows() {
        // `redis://u:12/secret@host` parses as host `u`, port 12, path `/secret@host`.
        let shown = redact_url("redis://u:12/hunter2@cache:6379");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn password_in_a_unix_socket_query_never_shows() {
        hidden(
            "redis+unix:///run/redis.sock?db=2&pass=hunter2",
            "hunter2",
            "redis+unix:///run/redis.sock?db=2&pass=***",
        );
        hidden(
            "unix:///run/redis.sock?pass=hun%40ter2&user=app",
            "ter2",
            "unix:///run/redis.sock?pass=***&user=app",
        );
        hidden(
            "redis+unix:///run/redis.sock?pass=a@b&db=0",
            "a@b",
            "redis+unix:///run/redis.sock?pass=***&db=0",
        );
        // A percent-encoded parameter name is still the password parameter.
        let shown = redact_url("redis+unix:///run/redis.sock?p%61ss=hunter2");
        assert!(!shown.contains("hunter2"), "{shown}");
    }

    #[test]
    fn an_unparseable_url_is_not_shown_at_all() {
        assert_eq!(redact_url("redis://:hunter2@[bad"), "<unparseable url>");
        assert_eq!(redact_url("hunter2"), "<unparseable url>");
        let err = RedisConfig::new("redis://:hunter2@[bad")
            .validate()
            .unwrap_err();
        assert!(!err.to_string().contains("hunter2"), "{err}");
    }

    #[test]
    fn a_ca_file_needs_rediss_and_must_be_readable() {
        let c = RedisConfig::new("redis://127.0.0.1/").tls_ca_file("/nonexistent.pem");
        assert_eq!(c.validate().unwrap_err().field(), "tls_ca_file");
        let c = RedisConfig::new("rediss://127.0.0.1/").tls_ca_file("/nonexistent.pem");
        c.validate().unwrap();
        assert_eq!(client(&c).unwrap_err().field(), "tls_ca_file");
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
