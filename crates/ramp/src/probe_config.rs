//! Configuration of the active probes.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use serde::Deserialize;
use tower_failover_core::ConfigError;
use tower_failover_core::duration_serde;

/// Settings of the active probes (opt-in, see [`Prober`](crate::Prober)).
///
/// The default probe is `GET /v1/models` every 10 s with a 5 s timeout, only while
/// the provider's circuit is open. The URI may be a path (when the probed service
/// is a provider adapter that adds the base URL) or absolute (for a bare HTTP
/// client). Header values are never shown in `Debug`: they may hold API keys.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// The probe's method. Default: `GET`.
    pub method: String,
    /// The probe's URI. Default: `/v1/models`, which costs nothing at OpenAI- and
    /// Anthropic-compatible providers.
    pub uri: String,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// The request body (empty by default).
    pub body: String,
    /// Time between probes. Default: 10 s.
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    /// A probe that takes longer fails. Default: 5 s.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// Also probe a closed provider that has had no requests for this long.
    /// Default: `None` (only open circuits are probed).
    #[serde(with = "duration_serde::option")]
    pub idle_after: Option<Duration>,
    /// Probe with a real tiny chat completion (`POST /v1/chat/completions`,
    /// `max_tokens = 8`, in the OpenAI shape that provider adapters translate)
    /// instead of `method`, `uri` and `body`: a model list can pass while
    /// completions fail. Costs one token per probe. Default: false.
    pub completion: bool,
}

/// The body of a tiny completion probe: at most 8 tokens, so that the answer has
/// some content (output validation refuses an empty one) whatever the tokenizer.
/// The provider adapter puts in its own model.
pub(crate) const COMPLETION_PROBE: &str =
    r#"{"model":"probe","messages":[{"role":"user","content":"ping"}],"max_tokens":8}"#;

impl fmt::Debug for ProbeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeConfig")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("idle_after", &self.idle_after)
            .field("completion", &self.completion)
            .finish()
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            method: "GET".to_owned(),
            uri: "/v1/models".to_owned(),
            headers: BTreeMap::new(),
            body: String::new(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            idle_after: None,
            completion: false,
        }
    }
}

impl ProbeConfig {
    /// The default probe settings.
    pub fn new() -> Self {
        ProbeConfig::default()
    }

    /// Probes with this method and URI.
    pub fn request(mut self, method: impl Into<String>, uri: impl Into<String>) -> Self {
        self.method = method.into();
        self.uri = uri.into();
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the request body.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets [`interval`](Self::interval).
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`idle_after`](Self::idle_after).
    pub fn idle_after(mut self, quiet: Option<Duration>) -> Self {
        self.idle_after = quiet;
        self
    }

    /// Sets [`completion`](Self::completion).
    pub fn completion(mut self, yes: bool) -> Self {
        self.completion = yes;
        self
    }

    /// Refuses invalid values with an error naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.template().map(|_| ())
    }

    pub(crate) fn template(&self) -> Result<ProbeTemplate, ConfigError> {
        if self.completion {
            if !self.body.is_empty() {
                return Err(ConfigError::new(
                    "probe.body",
                    "set either `completion = true` or a body of your own",
                ));
            }
            let own = ProbeConfig {
                method: "POST".to_owned(),
                uri: "/v1/chat/completions".to_owned(),
                body: COMPLETION_PROBE.to_owned(),
                completion: false,
                ..self.clone()
            };
            let mut t = own.template()?;
            t.headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(t);
        }
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| ConfigError::new("probe.method", "is not an HTTP method"))?;
        let uri: Uri = self
            .uri
            .parse()
            .map_err(|e| ConfigError::new("probe.uri", format!("is not a URI: {e}")))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::new(format!("probe.headers.{name}"), "is not a header name")
            })?;
            // The value may be a secret: never echo it.
            let v = HeaderValue::from_str(value).map_err(|_| {
                ConfigError::new(
                    format!("probe.headers.{name}"),
                    "is not a valid header value",
                )
            })?;
            headers.insert(n, v);
        }
        for (field, d) in [
            ("probe.interval", self.interval),
            ("probe.timeout", self.timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must not be zero"));
            }
        }
        if self.idle_after.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("probe.idle_after", "must not be zero"));
        }
        Ok(ProbeTemplate {
            method,
            uri,
            headers,
            body: Bytes::from(self.body.clone()),
        })
    }
}

/// A parsed probe request, cloned per probe.
#[derive(Clone)]
pub(crate) struct ProbeTemplate {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl ProbeTemplate {
    pub(crate) fn build<B: From<Bytes>>(&self) -> Request<B> {
        let mut req = Request::new(B::from(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }

    pub(crate) fn describe(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }
}
