//! The gateway's configuration file, and what the environment overrides.
//!
//! One TOML file holds the stack's [`Config`] (providers, router, circuits,
//! `[redis]`, …) and the gateway's own sections:
//!
//! | section | type | what |
//! | --- | --- | --- |
//! | `[server]` | [`ServerConfig`] | listen address, timeouts, connection and in-flight limits, drain |
//! | `[upstream]` | [`UpstreamConfig`] | which caller headers reach the providers, the query string |
//! | `[log]` | [`LogConfig`] | `format = "text"` or `"json"`, `level` |
//! | `[auth]` | [`AuthConfig`] | caller keys (from the environment or hashed), their models and budgets, allowed hosts ([`crate::auth`]) |
//! | `[deferred]` | [`DeferredConfig`] | deferred jobs: on by default (each request opts in), bounds; `deferred = false` turns them off ([`jobs`](crate::jobs)) |
//!
//! Operators change a few things per deployment without editing the file
//! ([`GatewayConfig::apply_env`]):
//!
//! | variable | overrides |
//! | --- | --- |
//! | `TOWER_FAILOVER_LISTEN` | `server.listen` (default `127.0.0.1:8080`; `0.0.0.0:8080` in a container) |
//! | `TOWER_FAILOVER_LOG_FORMAT` | `log.format` (`text` or `json`) |
//! | `TOWER_FAILOVER_REDIS_URL` | `redis.url` (adds a `[redis]` section with its defaults if the file has none) |
//! | `RUST_LOG` | `log.level` (a `tracing` filter such as `info,tower_failover=debug`) |
//!
//! Provider API keys come from the environment variables each entry names
//! (`api_key_env`), as for the library.

use std::path::Path;

use serde::Deserialize;
use tower_failover::retry::DeferredConfig;
use tower_failover::{Config, ConfigError, Toggle};

use crate::ServerConfig;
use crate::auth::AuthConfig;
use crate::log::LogConfig;
use crate::upstream::UpstreamConfig;

/// The variable overriding [`ServerConfig::listen`].
pub const ENV_LISTEN: &str = "TOWER_FAILOVER_LISTEN";
/// The variable overriding [`LogConfig::format`].
pub const ENV_LOG_FORMAT: &str = "TOWER_FAILOVER_LOG_FORMAT";
/// The variable overriding the `[redis]` section's `url`.
pub const ENV_REDIS_URL: &str = "TOWER_FAILOVER_REDIS_URL";
/// The variable overriding [`LogConfig::level`].
pub const ENV_LOG_LEVEL: &str = "RUST_LOG";

/// The gateway's own sections of the file; the rest is the stack's.
const SECTIONS: [&str; 5] = ["server", "upstream", "log", "auth", "deferred"];

/// Everything the gateway reads from its file. See the [module documentation](self).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct GatewayConfig {
    /// `[server]`.
    pub server: ServerConfig,
    /// `[upstream]`.
    pub upstream: UpstreamConfig,
    /// `[log]`.
    pub log: LogConfig,
    /// `[auth]`.
    pub auth: AuthConfig,
    /// `[deferred]`, or `deferred = false`: on with its defaults unless the
    /// file says otherwise.
    pub deferred: Toggle<DeferredConfig>,
    /// Every other key: the stack's configuration.
    pub stack: Config,
}

impl GatewayConfig {
    /// The stack's configuration with the gateway's defaults.
    pub fn new(stack: Config) -> Self {
        GatewayConfig {
            server: ServerConfig::default(),
            upstream: UpstreamConfig::default(),
            log: LogConfig::default(),
            auth: AuthConfig::default(),
            deferred: Toggle::default(),
            stack,
        }
    }

    /// Parses and validates a whole file's text. Errors name the field, and the
    /// line for TOML mistakes.
    pub fn from_toml_str(text: &str) -> Result<Self, ConfigError> {
        /// The gateway's sections; the stack's keys are ignored here.
        #[derive(Deserialize, Default)]
        #[serde(default)]
        struct Sections {
            server: ServerConfig,
            upstream: UpstreamConfig,
            log: LogConfig,
            auth: AuthConfig,
            deferred: Toggle<DeferredConfig>,
        }
        let sections: Sections = toml::from_str(text).map_err(|e| {
            ConfigError::new(
                "",
                format!("invalid TOML: {}{}", e.message().trim(), line_of(&e, text)),
            )
        })?;
        let config = GatewayConfig {
            server: sections.server,
            upstream: sections.upstream,
            log: sections.log,
            auth: sections.auth,
            deferred: sections.deferred,
            stack: Config::from_toml_str(&without_sections(text)).map_err(|e| {
                // The stack's parser lists its own keys; a misspelled gateway
                // section (`[sever]`) is one of these too.
                let reason = e.reason();
                if reason.contains("unknown field") && reason.contains("expected one of") {
                    ConfigError::new(
                        e.field(),
                        format!(
                            "{reason}; or one of the gateway's: `server`, `upstream`, `log`, \
                             `auth`, `deferred`"
                        ),
                    )
                } else {
                    e
                }
            })?,
        };
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a file. Errors start with the file's path.
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError::new(path.display().to_string(), e.to_string()))?;
        GatewayConfig::from_toml_str(&text).map_err(|e| e.in_file(path))
    }

    /// Applies the overrides of the [module documentation](self), reading each
    /// variable with `var` (`|k| std::env::var(k).ok()` for the process's
    /// environment), then validates.
    pub fn apply_env(&mut self, var: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let set = |k: &str| var(k).filter(|v| !v.trim().is_empty());
        if let Some(v) = set(ENV_LISTEN) {
            self.server.listen = v.trim().parse().map_err(|e| {
                ConfigError::new(
                    ENV_LISTEN,
                    format!("{v:?} is not an address like 0.0.0.0:8080: {e}"),
                )
            })?;
        }
        if let Some(v) = set(ENV_LOG_FORMAT) {
            self.log.format = v
                .trim()
                .parse()
                .map_err(|e| ConfigError::new(ENV_LOG_FORMAT, e))?;
        }
        if let Some(v) = set(ENV_LOG_LEVEL) {
            self.log.level = v;
        }
        if let Some(url) = set(ENV_REDIS_URL) {
            let mut redis = self.stack.redis.take().unwrap_or_default();
            redis.url = url.trim().to_owned();
            self.stack.redis = Some(redis);
        }
        self.validate()
    }

    /// Refuses invalid values, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.upstream.validate()?;
        self.auth.validate()?;
        if let Some(deferred) = self.deferred.get() {
            deferred.validate().map_err(|e| e.within("deferred"))?;
        }
        self.stack.validate()
    }
}

/// `text` with the gateway's sections blanked out line by line, so that the
/// stack's errors keep their line numbers.
fn without_sections(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut ours = false;
    let mut top = true;
    for line in text.lines() {
        let t = line.trim_start();
        // Before any header, `deferred = false` is ours too.
        let our_key = top
            && t.split('=').next().is_some_and(|k| {
                t.contains('=') && SECTIONS.contains(&k.trim().trim_matches(['"', '\'']))
            });
        if let Some(header) = t.strip_prefix('[') {
            top = false;
            // `[server]`, `[server.x]`, `[[auth.keys]]` are ours; `[[providers]]`,
            // `[circuit]` are not.
            let name = header
                .strip_prefix('[')
                .unwrap_or(header)
                .split([']', '.'])
                .next()
                .unwrap_or("")
                .trim()
                .trim_matches(['"', '\''])
                .trim();
            ours = SECTIONS.contains(&name);
        }
        if !ours && !our_key {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

fn line_of(e: &toml::de::Error, text: &str) -> String {
    e.span().map_or_else(String::new, |span| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::log::LogFormat;

    const FILE: &str = r#"
        router = "fallback"

        [server]
        listen = "0.0.0.0:9000"
        header_read_timeout = "2s"
        max_in_flight = 8

        [upstream]
        forward_query = true

        [log]
        format = "json"

        [[providers]]
        name = "a"
        model = "m"
        kind = "openai"
        base_url = "http://127.0.0.1:1/v1"
        api_key = "sk-test"
    "#;

    #[test]
    fn a_misspelled_gateway_section_is_named_among_the_gateways() {
        let err = GatewayConfig::from_toml_str(&FILE.replace("[server]", "[sever]"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("sever") && err.contains("`server`"), "{err}");
    }

    #[test]
    fn a_file_with_a_typo_is_named_once() {
        let dir = std::env::temp_dir().join(format!("tfg-typo-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gateway.toml");
        std::fs::write(&file, FILE.replace("router =", "routr =")).unwrap();
        let err = GatewayConfig::from_file(&file).unwrap_err().to_string();
        let _ = std::fs::remove_dir_all(&dir);
        assert!(err.starts_with(&format!("{}: ", file.display())), "{err}");
        assert!(!err.contains(": : "), "{err}");
        assert!(err.contains("routr"), "{err}");
    }

    #[test]
    fn the_gateway_sections_and_the_stack_share_one_file() {
        let c = GatewayConfig::from_toml_str(FILE).unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(
            c.server.header_read_timeout,
            std::time::Duration::from_secs(2)
        );
        assert_eq!(c.server.max_in_flight, 8);
        assert_eq!(
            c.server.max_connections,
            ServerConfig::default().max_connections
        );
        assert!(c.upstream.forward_query);
        assert_eq!(c.log.format, LogFormat::Json);
        assert_eq!(c.stack.providers.len(), 1);
    }

    #[test]
    fn the_shipped_example_is_valid_and_shows_the_defaults() {
        let c = GatewayConfig::from_toml_str(include_str!("../gateway.toml")).unwrap();
        assert_eq!(c.server, ServerConfig::default());
        assert_eq!(c.upstream, UpstreamConfig::default());
        assert_eq!(c.log, LogConfig::default());
        assert_eq!(c.deferred, Toggle::On(DeferredConfig::default()));
        assert_eq!(c.stack.providers.len(), 3);
    }

    #[test]
    fn deferred_jobs_are_on_by_default_and_can_be_tuned_or_turned_off() {
        let c = GatewayConfig::from_toml_str(FILE).unwrap();
        assert_eq!(c.deferred, Toggle::On(DeferredConfig::default()));
        let tuned = FILE.replace(
            "[log]",
            "[deferred]\ncapacity = 10\nmax_wait = \"2m\"\n[log]",
        );
        let c = GatewayConfig::from_toml_str(&tuned).unwrap();
        let d = c.deferred.get().unwrap();
        assert_eq!(d.capacity, 10);
        assert_eq!(d.max_wait, std::time::Duration::from_secs(120));
        assert_eq!(d.keep_results, DeferredConfig::default().keep_results);
        // A top-level key, before any section (the stack never sees it).
        let off = format!("deferred = false\n{FILE}");
        let c = GatewayConfig::from_toml_str(&off).unwrap();
        assert!(c.deferred.is_off());
        assert_eq!(c.stack.providers.len(), 1);
        let bad = FILE.replace("[log]", "[deferred]\ncapacity = 0\n[log]");
        assert_eq!(
            GatewayConfig::from_toml_str(&bad).unwrap_err().field(),
            "deferred.capacity"
        );
        let typo = FILE.replace("[log]", "[deferred]\ncapacty = 3\n[log]");
        let e = GatewayConfig::from_toml_str(&typo).unwrap_err();
        assert!(e.reason().contains("capacty"), "{e}");
    }

    #[test]
    fn mistakes_name_their_field() {
        let bad = FILE.replace("max_in_flight = 8", "max_in_flight = 0");
        assert_eq!(
            GatewayConfig::from_toml_str(&bad).unwrap_err().field(),
            "server.max_in_flight"
        );
        let typo = FILE.replace("max_in_flight = 8", "max_in_fligth = 8");
        let e = GatewayConfig::from_toml_str(&typo).unwrap_err();
        assert!(e.reason().contains("max_in_fligth"), "{e}");
        assert!(e.reason().contains("(line 7)"), "{e}");
        // The stack's mistakes keep their line too.
        let stack_typo = FILE.replace(
            "[[providers]]",
            "[circuit]\nconsecutive_failures = \"x\"\n[[providers]]",
        );
        let e = GatewayConfig::from_toml_str(&stack_typo).unwrap_err();
        assert!(e.reason().contains("(line 16)"), "{e}");
    }

    #[test]
    fn the_environment_overrides_listen_log_format_and_redis() {
        let mut c = GatewayConfig::from_toml_str(FILE).unwrap();
        assert!(c.stack.redis.is_none());
        let env = |k: &str| match k {
            ENV_LISTEN => Some("127.0.0.1:7000".to_owned()),
            ENV_LOG_FORMAT => Some("text".to_owned()),
            ENV_REDIS_URL => Some("redis://10.0.0.5:6379/".to_owned()),
            _ => None,
        };
        c.apply_env(env).unwrap();
        assert_eq!(c.server.listen.port(), 7000);
        assert_eq!(c.log.format, LogFormat::Text);
        assert_eq!(
            c.stack.redis.as_ref().unwrap().url,
            "redis://10.0.0.5:6379/"
        );
        let e = c
            .apply_env(|k| (k == ENV_LOG_FORMAT).then(|| "xml".to_owned()))
            .unwrap_err();
        assert_eq!(e.field(), ENV_LOG_FORMAT);
        let e = c
            .apply_env(|k| (k == ENV_LISTEN).then(|| "everywhere".to_owned()))
            .unwrap_err();
        assert_eq!(e.field(), ENV_LISTEN);
    }
}
