//! Builders: a [`ProviderConfig`] plus what cannot come from a file (a health
//! handle, a ready-made rustls configuration).

use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderName, HeaderValue};
use http::uri::{Scheme, Uri};
use tower_failover_core::Health;

use crate::client;
use crate::config::{HttpVersion, ModelMap, ProviderConfig, ProviderKind, RootStore};
use crate::error::ConfigError;
use crate::headers::{looks_secret, sensitive};
use crate::secret::Secret;
use crate::service::{Anthropic, Base, Engine, OpenAiCompatible, Provider, Shared};
use crate::usage::{Price, PriceTable};

/// The longest timeout accepted: a week.
const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 86_400);

/// Builds an adapter: [`OpenAiCompatible::builder`], [`Anthropic::builder`] or
/// [`Provider::from_config`].
///
/// Every setter writes the underlying [`ProviderConfig`]; nothing is checked until
/// [`build`](Builder::<OpenAiCompatible>::build), which refuses invalid values with a
/// [`ConfigError`] naming the field.
#[must_use = "a builder does nothing until built"]
pub struct Builder<W> {
    config: ProviderConfig,
    health: Option<Health>,
    tls: Option<Arc<rustls::ClientConfig>>,
    /// Typed builders keep their kind when given a whole configuration.
    fixed_kind: bool,
    _wire: PhantomData<fn() -> W>,
}

impl<W> fmt::Debug for Builder<W> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder")
            .field("config", &self.config)
            .field("health", &self.health.as_ref().map(Health::id))
            .field("custom_tls", &self.tls.is_some())
            .finish()
    }
}

impl<W> Builder<W> {
    fn with_kind(kind: ProviderKind, fixed_kind: bool) -> Self {
        Builder {
            config: ProviderConfig::new(kind),
            health: None,
            tls: None,
            fixed_kind,
            _wire: PhantomData,
        }
    }

    /// Replaces the whole configuration (typed builders keep their own kind).
    pub fn config(mut self, config: ProviderConfig) -> Self {
        let kind = self.config.kind;
        self.config = config;
        if self.fixed_kind {
            self.config.kind = kind;
        }
        self
    }

    /// The configuration so far.
    pub fn get_config(&self) -> &ProviderConfig {
        &self.config
    }

    /// A name for logs, errors and prices (default: `openai` or `anthropic`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = Some(name.into());
        self
    }

    /// The base URL (see [`ProviderConfig::base_url`]).
    pub fn base_url(mut self, url: impl Into<String>) -> Self {
        self.config.base_url = Some(url.into());
        self
    }

    /// The API key.
    pub fn api_key(mut self, key: impl Into<Secret>) -> Self {
        self.config.api_key = Some(key.into());
        self.config.api_key_env = None;
        self
    }

    /// Reads the API key from this environment variable at build time.
    pub fn api_key_env(mut self, var: impl Into<String>) -> Self {
        self.config.api_key_env = Some(var.into());
        self.config.api_key = None;
        self
    }

    /// Sends this header with every request. Credential-looking names are marked
    /// sensitive.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.config.headers.insert(name.into(), value.into());
        self
    }

    /// Maps a logical model name to the provider's (`"*"`: every other name).
    pub fn model(mut self, logical: impl Into<String>, provider: impl Into<String>) -> Self {
        self.config.models.insert(logical.into(), provider.into());
        self
    }

    /// The price of a provider model (`"*"`: every other model).
    pub fn price(mut self, model: impl Into<String>, price: Price) -> Self {
        self.config.prices.insert(model.into(), price);
        self
    }

    /// Deadline of the TCP connect and TLS handshake.
    pub fn connect_timeout(mut self, d: Duration) -> Self {
        self.config.timeouts.connect = d;
        self
    }

    /// Deadline of the first response body byte, for streamed and non-streamed
    /// requests alike (sets both `timeouts.first_byte` and
    /// `timeouts.first_byte_unstreamed`; call
    /// [`unstreamed_first_byte_timeout`](Self::unstreamed_first_byte_timeout)
    /// after it to give non-streamed answers longer).
    pub fn first_byte_timeout(mut self, d: Duration) -> Self {
        self.config.timeouts.first_byte = d;
        self.config.timeouts.first_byte_unstreamed = d;
        self
    }

    /// Deadline of the first response body byte of a non-streamed request (which
    /// comes once the whole answer is generated).
    pub fn unstreamed_first_byte_timeout(mut self, d: Duration) -> Self {
        self.config.timeouts.first_byte_unstreamed = d;
        self
    }

    /// The longest silence allowed between two chunks of a response body (see
    /// [`Timeouts::idle`](crate::Timeouts::idle)).
    pub fn idle_timeout(mut self, d: Duration) -> Self {
        self.config.timeouts.idle = d;
        self
    }

    /// Deadline of the whole attempt, to the last byte.
    pub fn total_timeout(mut self, d: Duration) -> Self {
        self.config.timeouts.total = d;
        self
    }

    /// How long idle pooled connections are kept.
    pub fn pool_idle_timeout(mut self, d: Duration) -> Self {
        self.config.pool.idle_timeout = d;
        self
    }

    /// At most this many idle connections per host.
    pub fn pool_max_idle_per_host(mut self, n: usize) -> Self {
        self.config.pool.max_idle_per_host = n;
        self
    }

    /// Which HTTP versions to speak.
    pub fn http_version(mut self, v: HttpVersion) -> Self {
        self.config.http = v;
        self
    }

    /// Which built-in roots to trust.
    pub fn tls_roots(mut self, roots: RootStore) -> Self {
        self.config.tls.roots = roots;
        self
    }

    /// Also trusts the CA certificates in this PEM.
    pub fn ca_pem(mut self, pem: impl Into<String>) -> Self {
        self.config.tls.ca_pem = Some(pem.into());
        self
    }

    /// Also trusts the CA certificates in this PEM file.
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.config.tls.ca_file = Some(path.into());
        self
    }

    /// Uses this rustls configuration as it is instead of building one from
    /// [`TlsConfig`](crate::TlsConfig) (ALPN is set by the adapter).
    pub fn rustls_config(mut self, config: Arc<rustls::ClientConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Largest request body accepted from the caller.
    pub fn max_request_bytes(mut self, n: usize) -> Self {
        self.config.max_request_bytes = n;
        self
    }

    /// Largest non-streamed response body read from the provider.
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.config.max_response_bytes = n;
        self
    }

    /// Whether to ask for usage at the end of streams (default true).
    pub fn stream_usage(mut self, on: bool) -> Self {
        self.config.stream_usage = on;
        self
    }

    /// Records usage and cost of every response in this health record.
    pub fn health(mut self, health: Health) -> Self {
        self.health = Some(health);
        self
    }

    fn engine(self) -> Result<Engine, ConfigError> {
        build_engine(self.config, self.health, self.tls)
    }
}

impl Builder<OpenAiCompatible> {
    /// Sends the key in this header as it is, instead of `Authorization: Bearer`
    /// (Azure OpenAI's `api-key`, for example).
    pub fn auth_header(mut self, name: impl Into<String>) -> Self {
        self.config.auth_header = Some(name.into());
        self
    }

    /// The field the provider takes for the answer's token limit (default
    /// [`MaxTokensField::Auto`](crate::MaxTokensField::Auto): `max_completion_tokens`
    /// at `api.openai.com`, the caller's own field elsewhere).
    pub fn max_tokens_field(mut self, field: crate::MaxTokensField) -> Self {
        self.config.max_tokens_field = field;
        self
    }

    /// Validates the configuration and builds the service.
    pub fn build(self) -> Result<OpenAiCompatible, ConfigError> {
        Ok(OpenAiCompatible {
            engine: self.engine()?,
        })
    }
}

impl Builder<Anthropic> {
    /// The `anthropic-version` header (default `2023-06-01`).
    pub fn anthropic_version(mut self, version: impl Into<String>) -> Self {
        self.config.anthropic_version = version.into();
        self
    }

    /// `max_tokens` when the caller sets none (default: by model, see
    /// [`ProviderConfig::default_max_tokens`]).
    pub fn default_max_tokens(mut self, n: u64) -> Self {
        self.config.default_max_tokens = Some(n);
        self
    }

    /// Validates the configuration and builds the service.
    pub fn build(self) -> Result<Anthropic, ConfigError> {
        Ok(Anthropic {
            engine: self.engine()?,
        })
    }
}

impl Builder<Provider> {
    /// Validates the configuration and builds the service.
    pub fn build(self) -> Result<Provider, ConfigError> {
        Ok(Provider {
            engine: self.engine()?,
        })
    }
}

impl OpenAiCompatible {
    /// A builder for an OpenAI-compatible provider (default base URL:
    /// `https://api.openai.com/v1`).
    pub fn builder() -> Builder<OpenAiCompatible> {
        Builder::with_kind(ProviderKind::OpenAi, true)
    }
}

impl Anthropic {
    /// A builder for Anthropic (default base URL: `https://api.anthropic.com`).
    pub fn builder() -> Builder<Anthropic> {
        Builder::with_kind(ProviderKind::Anthropic, true)
    }
}

impl Provider {
    /// A builder from a configuration, of the kind it says.
    pub fn from_config(config: ProviderConfig) -> Builder<Provider> {
        let mut b = Builder::with_kind(config.kind, false);
        b.config = config;
        b
    }
}

fn parse_base(url: &str) -> Result<Base, ConfigError> {
    let err = |reason: &'static str| ConfigError::new("base_url", reason);
    if url.contains('@') {
        // Userinfo would put a credential in logs and Debug output.
        return Err(err(
            "must not contain credentials (user:password@); use api_key",
        ));
    }
    let uri: Uri = url.trim().parse().map_err(|_| err("is not a valid URL"))?;
    let scheme = uri.scheme().cloned().ok_or_else(|| err("has no scheme"))?;
    if scheme != Scheme::HTTP && scheme != Scheme::HTTPS {
        return Err(err("must use http or https"));
    }
    let authority = uri.authority().cloned().ok_or_else(|| err("has no host"))?;
    Ok(Base {
        scheme,
        authority,
        path: uri.path().trim_end_matches('/').to_string(),
        query: uri.query().filter(|q| !q.is_empty()).map(str::to_string),
    })
}

/// Hosted APIs that answer nothing without a key (a local or self-hosted server
/// may need none).
fn needs_a_key(host: &str) -> bool {
    const HOSTED: &[&str] = &[
        "api.openai.com",
        "api.anthropic.com",
        "api.groq.com",
        "api.mistral.ai",
        "api.deepseek.com",
        "api.together.xyz",
        "api.fireworks.ai",
        "openrouter.ai",
    ];
    HOSTED.iter().any(|h| host.eq_ignore_ascii_case(h))
}

/// Whether configured extra headers carry a credential themselves.
fn sends_a_key(headers: &std::collections::BTreeMap<String, String>) -> bool {
    headers.keys().any(|k| {
        ["authorization", "x-api-key", "api-key"]
            .iter()
            .any(|h| k.eq_ignore_ascii_case(h))
    })
}

pub(crate) fn build_engine(
    config: ProviderConfig,
    health: Option<Health>,
    tls: Option<Arc<rustls::ClientConfig>>,
) -> Result<Engine, ConfigError> {
    let kind = config.kind;
    let name = config.provider_name().trim().to_string();
    if name.is_empty() {
        return Err(ConfigError::new("name", "must not be empty"));
    }
    let mut base = parse_base(config.effective_base_url())?;
    if kind == ProviderKind::Anthropic {
        // Both `https://api.anthropic.com` and `.../v1` are accepted.
        if let Some(p) = base.path.strip_suffix("/v1") {
            base.path = p.to_string();
        }
    }

    let key = match (&config.api_key, &config.api_key_env) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                "api_key",
                "and api_key_env are both set: choose one",
            ));
        }
        (Some(k), None) => Some(k.clone()),
        (None, Some(var)) => Some(Secret::from_env(var)?),
        (None, None) => None,
    };
    if key.as_ref().is_some_and(Secret::is_empty) {
        return Err(ConfigError::new("api_key", "must not be empty"));
    }
    let keyless = key.is_none() && !sends_a_key(&config.headers);
    if config.auth_header.is_some() && kind != ProviderKind::OpenAi {
        return Err(ConfigError::new(
            "auth_header",
            "is only for OpenAI-compatible providers",
        ));
    }
    let auth = match key {
        None => None,
        Some(key) => {
            let bad = || ConfigError::new("api_key", "is not a valid header value");
            let (name, value) = match (kind, &config.auth_header) {
                (ProviderKind::Anthropic, _) => (
                    HeaderName::from_static("x-api-key"),
                    HeaderValue::from_str(key.expose()).map_err(|_| bad())?,
                ),
                (ProviderKind::OpenAi, Some(h)) => (
                    HeaderName::try_from(h.as_str()).map_err(|_| {
                        ConfigError::new("auth_header", "is not a valid header name")
                    })?,
                    HeaderValue::from_str(key.expose()).map_err(|_| bad())?,
                ),
                (ProviderKind::OpenAi, None) => (
                    http::header::AUTHORIZATION,
                    HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| bad())?,
                ),
            };
            Some((name, sensitive(value)))
        }
    };

    let mut fixed_headers = HeaderMap::new();
    for (name, value) in &config.headers {
        let header = HeaderName::try_from(name.as_str()).map_err(|_| {
            ConfigError::new("headers", format!("name {name:?} is not a header name"))
        })?;
        if matches!(
            header.as_str(),
            "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade" | "te"
        ) {
            return Err(ConfigError::new(
                "headers",
                format!("{name} is managed by the HTTP client, not configurable"),
            ));
        }
        let mut v = HeaderValue::from_str(value).map_err(|_| {
            ConfigError::new(
                "headers",
                format!("value of {name} is not a valid header value"),
            )
        })?;
        if looks_secret(name) {
            v = sensitive(v);
        }
        fixed_headers.insert(header, v);
    }
    if kind == ProviderKind::Anthropic {
        let v = HeaderValue::from_str(&config.anthropic_version)
            .map_err(|_| ConfigError::new("anthropic_version", "is not a valid header value"))?;
        fixed_headers.insert(HeaderName::from_static("anthropic-version"), v);
        if config.default_max_tokens == Some(0) {
            return Err(ConfigError::new("default_max_tokens", "must be positive"));
        }
    }

    for (logical, provider) in &config.models {
        if logical.is_empty() || provider.is_empty() {
            return Err(ConfigError::new(
                "models",
                "must not map or name an empty model",
            ));
        }
    }
    for (model, price) in &config.prices {
        if !price.is_valid() {
            return Err(ConfigError::new(
                "prices",
                format!("of {model} must be finite and not negative"),
            ));
        }
    }
    let t = &config.timeouts;
    for (field, d) in [
        ("timeouts.connect", t.connect),
        ("timeouts.first_byte", t.first_byte),
        ("timeouts.first_byte_unstreamed", t.first_byte_unstreamed),
        ("timeouts.total", t.total),
        ("timeouts.idle", t.idle),
    ] {
        if d.is_zero() || d > MAX_TIMEOUT {
            return Err(ConfigError::new(
                field,
                "must be positive and at most 7 days",
            ));
        }
    }
    for (field, n) in [
        ("max_request_bytes", config.max_request_bytes),
        ("max_response_bytes", config.max_response_bytes),
        ("max_event_bytes", config.max_event_bytes),
    ] {
        if n == 0 {
            return Err(ConfigError::new(field, "must be positive"));
        }
    }

    let tls = match tls {
        Some(t) => (*t).clone(),
        None => client::tls_config(&config.tls)?,
    };
    if keyless && needs_a_key(base.authority.host()) {
        // Every request would be a 401, opening the circuit for minutes as a
        // credentials failure: callers would see failovers and 503s, not why.
        return Err(ConfigError::new(
            "api_key_env",
            format!(
                "is not set, and {} refuses every request without a key: set api_key_env \
                 (or api_key)",
                base.authority.host()
            ),
        ));
    }
    let client = client::build(tls, config.http, &config.pool, t.connect);

    let token_limit_field =
        crate::service::token_limit_field(config.max_tokens_field, &base.authority);
    let shared = Shared {
        kind,
        name,
        base,
        auth,
        fixed_headers,
        models: ModelMap::from(config.models.clone()),
        prices: PriceTable::new(config.prices.clone()),
        timeouts: config.timeouts,
        max_request_bytes: config.max_request_bytes,
        max_response_bytes: config.max_response_bytes,
        max_event_bytes: config.max_event_bytes,
        stream_usage: config.stream_usage,
        token_limit_field,
        default_max_tokens: config.default_max_tokens,
        health,
    };
    tracing::debug!(provider = %shared.name, kind = %kind, "provider client built");
    Ok(Engine {
        shared: Arc::new(shared),
        client,
    })
}
