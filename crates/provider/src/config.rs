//! Provider configuration: a plain, `serde`-deserializable struct with defaults.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use tower_failover_core::{Wire, duration_serde};

use crate::secret::Secret;
use crate::usage::Price;

/// Which wire protocol a provider speaks: core's one [`Wire`] enum under the name
/// this crate has always used (`kind = "openai"` or `"anthropic"` in configuration).
pub type ProviderKind = Wire;

/// Deadlines of one attempt. Each must be positive.
///
/// # The defaults, and why
///
/// A provider that accepts the connection and then says nothing costs each caller
/// whatever the first-byte deadline is, so it must suit LLM traffic rather than be
/// a generous catch-all. But a *streamed* and a *non-streamed* answer start very
/// differently:
///
/// - a stream's first event comes when the model has produced its first token:
///   typically 0.2–2 s for a chat model, but a reasoning model (OpenAI's o-series
///   and GPT-5, at their default effort) thinks silently first, often 10–60 s. So
///   `first_byte` is **60 s** by default: a shorter one cut every long-thinking
///   answer, paid for it, failed over to a provider that cut it the same way, and
///   counted each cut as the provider's timeout until its circuit opened. Lower it
///   for chat models only;
/// - a non-streamed answer's first byte comes only when the *whole* answer is
///   generated, which legitimately takes a minute for a few thousand tokens, so it
///   gets its own `first_byte_unstreamed` (default **120 s**): a shorter one would
///   cut long answers and pay for them twice.
///
/// Silence costs non-streamed callers more, but only the first ones: a provider
/// whose requests wait far longer than its usual time to first byte becomes
/// *suspect* and new requests go elsewhere within about a second (see
/// `tower_failover_core::Health::is_suspect`), and its circuit opens as the
/// waiting requests time out: a long first-byte deadline costs only the callers
/// already waiting on a provider that went silent.
///
/// ```
/// use std::time::Duration;
/// use tower_failover_provider::Timeouts;
///
/// let t = Timeouts::default();
/// assert_eq!(t.first_byte, Duration::from_secs(60));
/// assert_eq!(t.first_byte_unstreamed, Duration::from_secs(120));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Timeouts {
    /// Opening the connection, TCP and TLS handshake together (default 10 s).
    /// Fails with `Elapsed(Connect)`.
    #[serde(with = "duration_serde")]
    pub connect: Duration,
    /// For a streamed request (`"stream": true`): from sending the request to the
    /// first byte of the response body, its time to first token (default 60 s:
    /// reasoning models think before their first token).
    /// Fails with `Elapsed(FirstByte)`.
    #[serde(with = "duration_serde")]
    pub first_byte: Duration,
    /// For any other request: from sending it to the first byte of the response
    /// body, which for a non-streamed answer comes once it is complete (default
    /// 120 s). Fails with `Elapsed(FirstByte)`.
    #[serde(with = "duration_serde")]
    pub first_byte_unstreamed: Duration,
    /// The whole attempt, until the last byte of the body (default 600 s). Fails
    /// with `Elapsed(Attempt)`, also in the middle of a stream.
    #[serde(with = "duration_serde")]
    pub total: Duration,
    /// The longest silence allowed between two chunks of a response body, once
    /// its first byte has come (default 30 s; TOML key `idle`). LLM providers send
    /// a token, or a keep-alive event (Anthropic's `ping`, an SSE comment), every
    /// few seconds while they generate, so a gap of 30 s means the stream has
    /// stalled, while a slow but healthy model is still far from it. A stream that
    /// stalls ends with a
    /// [`TruncatedStream`](tower_failover_core::error::TruncatedStream) whose
    /// source is an `Elapsed(Idle)`: the caller sees the typed truncation (or,
    /// before a validation commit point, the request fails over), and the
    /// provider's health counts a `Timeout` failure, without waiting for the
    /// caller's whole deadline. A non-streamed body that stops half-way, or never
    /// starts after its headers, fails with `Elapsed(Idle)`; a stream's first
    /// byte keeps the first-byte deadline however early its headers came.
    #[serde(with = "duration_serde")]
    pub idle: Duration,
}

impl Timeouts {
    /// The first-byte deadline of a request: [`first_byte`](Self::first_byte) for
    /// a stream, [`first_byte_unstreamed`](Self::first_byte_unstreamed) otherwise.
    pub fn first_byte_for(&self, streamed: bool) -> Duration {
        if streamed {
            self.first_byte
        } else {
            self.first_byte_unstreamed
        }
    }
}

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: Duration::from_secs(10),
            first_byte: Duration::from_secs(60),
            first_byte_unstreamed: Duration::from_secs(120),
            total: Duration::from_secs(600),
            idle: Duration::from_secs(30),
        }
    }
}

/// Connection pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// How long an idle connection is kept (default 90 s).
    #[serde(with = "duration_serde")]
    pub idle_timeout: Duration,
    /// At most this many idle connections per host (default 32).
    pub max_idle_per_host: usize,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            idle_timeout: Duration::from_secs(90),
            max_idle_per_host: 32,
        }
    }
}

/// Which HTTP versions to speak.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HttpVersion {
    /// HTTP/2 or HTTP/1.1 as the server offers by ALPN over TLS; HTTP/1.1 over
    /// cleartext (default).
    #[default]
    Auto,
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only: by ALPN over TLS, with prior knowledge over cleartext.
    Http2,
}

/// Which field an OpenAI-compatible provider takes for the answer's token limit.
///
/// OpenAI's reasoning models (o1, o3, o4-mini, GPT-5) refuse `max_tokens` with a
/// `400 unsupported_parameter` and take `max_completion_tokens`, which OpenAI
/// accepts for every chat model; some OpenAI-compatible servers know only
/// `max_tokens` and refuse fields they do not know. A caller's request (or one
/// translated from `/v1/messages`, which always has `max_tokens`) is sent with the
/// field the provider takes: the other one is renamed to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MaxTokensField {
    /// `max_completion_tokens` for OpenAI's own API (`api.openai.com`); for any
    /// other server, the request as the caller sent it (default).
    #[default]
    Auto,
    /// Always `max_tokens` (a server that refuses `max_completion_tokens`).
    MaxTokens,
    /// Always `max_completion_tokens` (OpenAI's reasoning models behind another
    /// host: Azure, a proxy).
    MaxCompletionTokens,
}

/// Which certificate authorities to trust.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootStore {
    /// Mozilla's roots compiled in (`webpki-roots`): the same everywhere (default).
    #[default]
    Webpki,
    /// The operating system's store.
    System,
    /// Both.
    Both,
    /// None: only the custom CA given in [`TlsConfig`].
    None,
}

/// TLS settings (rustls with the ring provider).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TlsConfig {
    /// Which built-in roots to trust (default: webpki roots).
    pub roots: RootStore,
    /// Additional CA certificates, PEM (for a private gateway or a test server).
    pub ca_pem: Option<String>,
    /// A file of additional CA certificates, PEM.
    pub ca_file: Option<PathBuf>,
}

/// Everything that configures one provider.
///
/// Plain data with defaults, deserializable from TOML or JSON; turn it into a
/// service with [`Provider::from_config`](crate::Provider::from_config) or use it
/// through the builders ([`OpenAiCompatible::builder`](crate::OpenAiCompatible::builder),
/// [`Anthropic::builder`](crate::Anthropic::builder)). Validation happens at build
/// time and names the field at fault.
///
/// ```
/// use tower_failover_provider::{ProviderConfig, ProviderKind};
///
/// let config: ProviderConfig = toml::from_str(r#"
///     kind = "anthropic"
///     api_key_env = "ANTHROPIC_API_KEY"
///     models = { smart = "claude-sonnet-4-5" }
///     prices = { claude-sonnet-4-5 = { input_per_million = 3.0, output_per_million = 15.0 } }
///     timeouts = { connect = "5s", first_byte = "20s", total = "5m" }
/// "#).unwrap();
/// assert_eq!(config.kind, ProviderKind::Anthropic);
/// assert_eq!(config.timeouts.first_byte.as_secs(), 20);
/// ```
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderConfig {
    /// The wire protocol (default `openai`).
    pub kind: ProviderKind,
    /// A name for logs, errors and the health record (default: the kind).
    pub name: Option<String>,
    /// The API's base URL, as OpenAI's SDKs take it: for OpenAI-compatible servers
    /// it includes the version path (`https://api.groq.com/openai/v1`,
    /// `http://localhost:8000/v1`); for Anthropic it is the host
    /// (`https://api.anthropic.com`, a trailing `/v1` is accepted). Default: the
    /// kind's official API. Must not contain credentials.
    pub base_url: Option<String>,
    /// The API key. Prefer `api_key_env`.
    pub api_key: Option<Secret>,
    /// The environment variable holding the API key, read at build time.
    pub api_key_env: Option<String>,
    /// OpenAI-compatible only: send the key in this header as it is instead of
    /// `Authorization: Bearer <key>` (Azure's `api-key`, for example).
    pub auth_header: Option<String>,
    /// Extra headers sent with every request (`OpenAI-Organization`,
    /// `anthropic-beta`, `HTTP-Referer`, …). Values of headers whose name suggests a
    /// credential are marked sensitive.
    pub headers: BTreeMap<String, String>,
    /// Logical model name → the provider's model name. `"*"` maps every other
    /// name (use it to pin a stack to one model).
    pub models: BTreeMap<String, String>,
    /// Price per provider model (after mapping); `"*"` prices every other model.
    pub prices: BTreeMap<String, Price>,
    /// Connect, first-byte and total deadlines.
    pub timeouts: Timeouts,
    /// Connection pooling.
    pub pool: PoolConfig,
    /// HTTP versions.
    pub http: HttpVersion,
    /// TLS trust.
    pub tls: TlsConfig,
    /// Largest request body read from the caller (default 32 MiB); larger ones are
    /// answered `413` locally.
    pub max_request_bytes: usize,
    /// Largest non-streamed response body read from the provider (default 32 MiB).
    pub max_response_bytes: usize,
    /// Largest single server-sent event (default 4 MiB).
    pub max_event_bytes: usize,
    /// Ask for token usage at the end of streams (default true): the
    /// OpenAI-compatible adapter sets `stream_options.include_usage` (adding
    /// `stream_options` when the caller did not send it, and overriding a caller's
    /// `false`, `null` or `{}`: without it a stream's tokens could not be counted
    /// against a budget), and the Anthropic adapter ends its translated streams
    /// with the same usage chunk. Either way the caller gets that final chunk
    /// (empty `choices`, the `usage`).
    pub stream_usage: bool,
    /// OpenAI-compatible only: the field the provider takes for the answer's token
    /// limit (default `auto`: `max_completion_tokens` at `api.openai.com`, the
    /// caller's own field elsewhere). See [`MaxTokensField`].
    pub max_tokens_field: MaxTokensField,
    /// Anthropic only: the `anthropic-version` header (default `2023-06-01`).
    pub anthropic_version: String,
    /// Anthropic only: `max_tokens` when the caller set none (Anthropic requires
    /// one). Default: for a stream, by model ([`default_output_tokens`](crate::translate::anthropic::default_output_tokens)):
    /// 16,384 for Claude 3.7 and 4.x models, 8,192 for 3.5, 4,096 for the
    /// Claude 3 models and any other name; for a non-streamed request 4,096 at
    /// most (its headers come when it is all written, inside the 120 s first-byte
    /// window). It was 4,096 for every request, which cut an OpenAI caller's long
    /// streamed answers short at a Claude fallback.
    pub default_max_tokens: Option<u64>,
}

impl Default for ProviderConfig {
    fn default() -> Self {
        ProviderConfig {
            kind: ProviderKind::OpenAi,
            name: None,
            base_url: None,
            api_key: None,
            api_key_env: None,
            auth_header: None,
            headers: BTreeMap::new(),
            models: BTreeMap::new(),
            prices: BTreeMap::new(),
            timeouts: Timeouts::default(),
            pool: PoolConfig::default(),
            http: HttpVersion::Auto,
            tls: TlsConfig::default(),
            max_request_bytes: 32 << 20,
            max_response_bytes: 32 << 20,
            max_event_bytes: 4 << 20,
            stream_usage: true,
            max_tokens_field: MaxTokensField::Auto,
            anthropic_version: "2023-06-01".to_string(),
            default_max_tokens: None,
        }
    }
}

impl ProviderConfig {
    /// A default configuration of `kind`.
    pub fn new(kind: ProviderKind) -> Self {
        ProviderConfig {
            kind,
            ..ProviderConfig::default()
        }
    }

    /// The provider name: `name`, or the kind.
    pub fn provider_name(&self) -> &str {
        self.name.as_deref().unwrap_or(self.kind.as_str())
    }

    /// The base URL: `base_url`, or the kind's official API.
    pub fn effective_base_url(&self) -> &str {
        self.base_url
            .as_deref()
            .unwrap_or(self.kind.default_base_url())
    }
}

impl fmt::Debug for ProviderConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Header values may be credentials: names only. The key prints redacted.
        f.debug_struct("ProviderConfig")
            .field("kind", &self.kind)
            .field("name", &self.name)
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key)
            .field("api_key_env", &self.api_key_env)
            .field("auth_header", &self.auth_header)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("models", &self.models)
            .field("prices", &self.prices)
            .field("timeouts", &self.timeouts)
            .field("pool", &self.pool)
            .field("http", &self.http)
            .field("tls", &self.tls)
            .field("max_request_bytes", &self.max_request_bytes)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_event_bytes", &self.max_event_bytes)
            .field("stream_usage", &self.stream_usage)
            .field("max_tokens_field", &self.max_tokens_field)
            .field("anthropic_version", &self.anthropic_version)
            .field("default_max_tokens", &self.default_max_tokens)
            .finish()
    }
}

/// Logical model names → provider model names, with `"*"` as the catch-all.
///
/// ```
/// use tower_failover_provider::ModelMap;
///
/// let map = ModelMap::from_iter([("smart", "gpt-4o"), ("fast", "gpt-4o-mini")]);
/// assert_eq!(map.map("smart"), "gpt-4o");
/// assert_eq!(map.map("o3"), "o3"); // unmapped names pass through
///
/// let pinned = ModelMap::from_iter([("*", "claude-haiku-4-5")]);
/// assert_eq!(pinned.map("anything"), "claude-haiku-4-5");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelMap {
    map: BTreeMap<String, String>,
}

impl ModelMap {
    /// An empty map: every name passes through.
    pub fn new() -> Self {
        ModelMap::default()
    }

    /// The provider's name for `logical`.
    pub fn map<'a>(&'a self, logical: &'a str) -> &'a str {
        self.map
            .get(logical)
            .or_else(|| self.map.get("*"))
            .map_or(logical, String::as_str)
    }

    /// Whether no name is mapped.
    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for ModelMap {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        ModelMap {
            map: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

impl From<BTreeMap<String, String>> for ModelMap {
    fn from(map: BTreeMap<String, String>) -> Self {
        ModelMap { map }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_follow_the_kind() {
        let c = ProviderConfig::new(ProviderKind::Anthropic);
        assert_eq!(c.provider_name(), "anthropic");
        assert_eq!(c.effective_base_url(), "https://api.anthropic.com");
        let c = ProviderConfig::default();
        assert_eq!(c.provider_name(), "openai");
        assert_eq!(c.effective_base_url(), "https://api.openai.com/v1");
    }

    #[test]
    fn json_config_with_durations_as_numbers() {
        let c: ProviderConfig = serde_json::from_str(
            r#"{"name":"vllm","base_url":"http://localhost:8000/v1",
                "timeouts":{"connect":2,"first_byte":"500ms","total":"1m"},
                "http":"http1","tls":{"roots":"none"}}"#,
        )
        .unwrap();
        assert_eq!(c.timeouts.connect, Duration::from_secs(2));
        assert_eq!(c.timeouts.first_byte, Duration::from_millis(500));
        assert_eq!(c.timeouts.first_byte_unstreamed, Duration::from_secs(120));
        assert_eq!(c.http, HttpVersion::Http1);
        assert_eq!(c.tls.roots, RootStore::None);
    }

    #[test]
    fn kind_names() {
        for (name, kind) in [
            ("openai", ProviderKind::OpenAi),
            ("openai_compatible", ProviderKind::OpenAi),
            ("anthropic", ProviderKind::Anthropic),
        ] {
            let c: ProviderConfig =
                serde_json::from_str(&format!(r#"{{"kind":"{name}"}}"#)).unwrap();
            assert_eq!(c.kind, kind);
        }
        assert!(serde_json::from_str::<ProviderConfig>(r#"{"kind":"gemini"}"#).is_err());
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<ProviderConfig>(r#"{"api_kye":"x"}"#).unwrap_err();
        assert!(err.to_string().contains("api_kye"));
    }

    #[test]
    fn debug_hides_key_and_header_values() {
        let mut c = ProviderConfig {
            api_key: Some(Secret::new("sk-top-secret")),
            ..ProviderConfig::default()
        };
        c.headers
            .insert("x-custom-token".into(), "hdr-secret".into());
        let dbg = format!("{c:?}");
        assert!(!dbg.contains("sk-top-secret"));
        assert!(!dbg.contains("hdr-secret"));
        assert!(dbg.contains("x-custom-token"));
    }

    #[test]
    fn timeout_defaults_suit_llm_traffic() {
        let t = Timeouts::default();
        assert_eq!(
            (t.connect, t.first_byte, t.first_byte_unstreamed, t.total),
            (
                Duration::from_secs(10),
                Duration::from_secs(60),
                Duration::from_secs(120),
                Duration::from_secs(600)
            )
        );
        assert_eq!(t.first_byte_for(true), Duration::from_secs(60));
        assert_eq!(t.first_byte_for(false), Duration::from_secs(120));
        assert_eq!(ProviderConfig::default().timeouts, t);
    }
}
