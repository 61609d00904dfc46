//! What of a caller's request goes to the providers (`[upstream]`).
//!
//! The gateway builds each provider request itself instead of passing the
//! caller's on: the path is the route's own (`/v1/chat/completions`,
//! `/v1/embeddings`), whatever spelling reached the router; the caller's query
//! string is dropped unless [`forward_query`](UpstreamConfig::forward_query) is
//! set; and of the caller's headers only an allowlist crosses:
//!
//! - `content-type`, `accept`, `x-request-id`, and the W3C trace context
//!   (`traceparent`, `tracestate`);
//! - every header starting with [`header_prefix`](UpstreamConfig::header_prefix)
//!   (default `x-upstream-`), for your own headers (`x-upstream-team: search`);
//! - the names listed in [`headers`](UpstreamConfig::headers).
//!
//! Everything else stays at the gateway: the caller's credentials
//! (`authorization`, `x-api-key`, cookies), other gateways' headers
//! (`x-portkey-*`, `x-litellm-*`), `forwarded` / `x-forwarded-*`, hop-by-hop
//! headers, and any header nobody listed. The routing headers the stack reads
//! (`x-failover-model`, `x-failover-tier`) are read at the gateway and removed
//! before a provider is called. Credentials are never forwarded, even when a
//! prefix or list would match them.
//!
//! ```toml
//! [upstream]
//! header_prefix = "x-upstream-"   # the default; "" forwards no prefixed header
//! headers = ["x-app-user"]        # more names, forwarded as they are
//! forward_query = false           # the default
//! ```

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName};
use http::request::Parts;
use http::{Request, Uri};
use serde::Deserialize;
use tower_failover::ConfigError;

/// The caller headers always forwarded.
static ALWAYS: [HeaderName; 5] = [
    header::CONTENT_TYPE,
    header::ACCEPT,
    HeaderName::from_static("x-request-id"),
    HeaderName::from_static("traceparent"),
    HeaderName::from_static("tracestate"),
];

/// The headers the stack reads to route (model and tier), kept for the stack and
/// removed before a provider is called.
pub(crate) static ROUTING: [HeaderName; 2] = [
    HeaderName::from_static("x-failover-model"),
    HeaderName::from_static("x-failover-tier"),
];

/// Never forwarded, whatever the configuration says: credentials, connection and
/// framing headers, and what the provider client sets itself.
fn never(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "proxy-authorization"
            | "x-api-key"
            | "api-key"
            | "x-goog-api-key"
            | "cookie"
            | "set-cookie"
            | "host"
            | "content-length"
            | "transfer-encoding"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "upgrade"
            | "expect"
    )
}

/// `[upstream]`: which parts of a caller's request reach the providers. See the
/// [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct UpstreamConfig {
    /// Caller headers whose name starts with this prefix are forwarded unchanged.
    /// Empty: none. Default: `x-upstream-`.
    pub header_prefix: String,
    /// More caller headers forwarded, by name. Default: none.
    pub headers: Vec<String>,
    /// Append the caller's query string to the provider's URL. Default: false.
    pub forward_query: bool,
}

/// The default [`UpstreamConfig::header_prefix`].
pub const DEFAULT_HEADER_PREFIX: &str = "x-upstream-";

impl Default for UpstreamConfig {
    fn default() -> Self {
        UpstreamConfig {
            header_prefix: DEFAULT_HEADER_PREFIX.to_owned(),
            headers: Vec::new(),
            forward_query: false,
        }
    }
}

impl UpstreamConfig {
    /// Refuses header names that are not header names, and credentials (which are
    /// never forwarded), naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let p = &self.header_prefix;
        if !p.is_empty() && HeaderName::from_bytes(p.as_bytes()).is_err() {
            return Err(ConfigError::new(
                "upstream.header_prefix",
                format!("{p:?} is not the start of a header name"),
            ));
        }
        if !p.is_empty() && p.len() < 3 {
            return Err(ConfigError::new(
                "upstream.header_prefix",
                format!("{p:?} is too short: it would forward headers nobody chose"),
            ));
        }
        for name in &self.headers {
            let Ok(h) = HeaderName::from_bytes(name.as_bytes()) else {
                return Err(ConfigError::new(
                    "upstream.headers",
                    format!("{name:?} is not a header name"),
                ));
            };
            if never(h.as_str()) {
                return Err(ConfigError::new(
                    "upstream.headers",
                    format!(
                        "{name:?} is never forwarded (credentials and connection headers stay at the gateway)"
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(crate) fn compile(&self) -> Forwarding {
        Forwarding {
            prefix: self.header_prefix.to_ascii_lowercase(),
            extra: self
                .headers
                .iter()
                .filter_map(|h| HeaderName::from_bytes(h.as_bytes()).ok())
                .collect(),
            query: self.forward_query,
        }
    }
}

/// [`UpstreamConfig`], ready to filter requests.
#[derive(Debug, Clone)]
pub(crate) struct Forwarding {
    prefix: String,
    extra: Vec<HeaderName>,
    query: bool,
}

impl Forwarding {
    fn forwards(&self, name: &HeaderName) -> bool {
        let n = name.as_str();
        !never(n)
            && (ALWAYS.contains(name)
                || self.extra.contains(name)
                || ROUTING.contains(name)
                || (!self.prefix.is_empty() && n.starts_with(&self.prefix)))
    }

    /// The caller's headers that may cross (the routing headers included, for the
    /// stack: they are removed before a provider is called).
    pub(crate) fn headers(&self, caller: &HeaderMap) -> HeaderMap {
        // Sized once for the usual few, not grown from empty (bounded: a huge
        // capacity panics, and few headers cross).
        let mut out = HeaderMap::with_capacity(caller.keys_len().min(16));
        for (name, value) in caller {
            if self.forwards(name) {
                out.append(name.clone(), value.clone());
            }
        }
        out
    }

    /// The request for the stack: the caller's method, the route's own `path`, the
    /// caller's query only if configured, the allowed headers, no extensions.
    pub(crate) fn request(&self, parts: &Parts, path: &'static str, body: Body) -> Request<Body> {
        let uri = match parts.uri.query().filter(|q| self.query && !q.is_empty()) {
            Some(q) => format!("{path}?{q}")
                .parse::<Uri>()
                .unwrap_or_else(|_| Uri::from_static(path)),
            None => Uri::from_static(path),
        };
        let mut req = Request::new(body);
        *req.method_mut() = parts.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = self.headers(&parts.headers);
        req
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller() -> Parts {
        let (parts, ()) = Request::post("/v1//chat/completions?api-version=1&key=sk-x")
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .header("x-request-id", "req-1")
            .header("traceparent", "00-abc-def-01")
            .header("authorization", "Bearer caller")
            .header("x-api-key", "caller")
            .header("cookie", "a=b")
            .header("x-portkey-config", "pc-1")
            .header("x-litellm-tags", "t")
            .header("forwarded", "for=10.0.0.1")
            .header("x-forwarded-for", "10.0.0.1")
            .header("x-internal-user", "alice")
            .header("x-upstream-team", "search")
            .header("x-failover-tier", "cheap")
            .header("user-agent", "app/1")
            .body(())
            .unwrap()
            .into_parts();
        parts
    }

    fn names(req: &Request<Body>) -> Vec<&str> {
        req.headers().keys().map(|k| k.as_str()).collect()
    }

    #[test]
    fn only_the_allowlist_crosses() {
        let f = UpstreamConfig::default().compile();
        let req = f.request(&caller(), "/v1/chat/completions", Body::empty());
        assert_eq!(req.uri(), "/v1/chat/completions");
        assert_eq!(
            names(&req),
            [
                "content-type",
                "accept",
                "x-request-id",
                "traceparent",
                "x-upstream-team",
                "x-failover-tier"
            ]
        );
    }

    #[test]
    fn the_query_and_listed_headers_cross_when_configured() {
        let c = UpstreamConfig {
            forward_query: true,
            header_prefix: String::new(),
            headers: vec!["x-internal-user".into()],
        };
        c.validate().unwrap();
        let req = c
            .compile()
            .request(&caller(), "/v1/embeddings", Body::empty());
        assert_eq!(req.uri(), "/v1/embeddings?api-version=1&key=sk-x");
        assert!(names(&req).contains(&"x-internal-user"));
        assert!(!names(&req).contains(&"x-upstream-team"));
    }

    #[test]
    fn credentials_are_never_forwarded_even_when_listed() {
        let mut c = UpstreamConfig {
            headers: vec!["authorization".into()],
            ..UpstreamConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(e.field(), "upstream.headers");
        // A prefix matching credentials still does not forward them.
        c.headers.clear();
        c.header_prefix = "x-a".into();
        let req = c
            .compile()
            .request(&caller(), "/v1/chat/completions", Body::empty());
        assert!(!names(&req).contains(&"x-api-key"));
        for bad in ["x", "not a header"] {
            c.header_prefix = bad.into();
            assert!(c.validate().is_err(), "{bad}");
        }
    }
}
