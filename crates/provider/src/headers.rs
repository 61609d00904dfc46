//! What crosses to the provider and back: the caller's credentials and hop-by-hop
//! headers never do.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that belong to one connection, never forwarded (RFC 9110 §7.6.1).
const HOP_BY_HOP: &[HeaderName] = &[
    header::CONNECTION,
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Connection-level names that are not in `http::header`.
const HOP_BY_HOP_EXTRA: &[&str] = &["keep-alive", "proxy-connection"];

/// Whether a request header from the caller may be forwarded to a provider.
///
/// Refused: every credential a caller or another provider could carry
/// (`authorization`, `x-api-key`, `api-key`, `cookie`, `anthropic-*`, `openai-*`,
/// `x-goog-api-key`), what the adapter sets itself (`host`, `content-length`,
/// `content-type`), `accept-encoding` (the adapters read the bodies), `expect`, and
/// hop-by-hop headers.
fn forwardable(name: &HeaderName) -> bool {
    let n = name.as_str();
    !(matches!(
        n,
        "authorization"
            | "x-api-key"
            | "api-key"
            | "x-goog-api-key"
            | "cookie"
            | "host"
            | "content-length"
            | "content-type"
            | "accept-encoding"
            | "expect"
    ) || n.starts_with("anthropic-")
        || n.starts_with("openai-")
        || is_hop_by_hop(name))
}

/// Whether `name` belongs to one connection (RFC 9110 §7.6.1).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name) || HOP_BY_HOP_EXTRA.contains(&name.as_str())
}

/// The caller's headers that may go to the provider, minus those named by its
/// `Connection` header.
pub(crate) fn forward_request_headers(caller: &HeaderMap) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(caller.len() + 4);
    let listed = connection_listed(caller);
    for (name, value) in caller {
        if forwardable(name) && !listed.iter().any(|l| l == name.as_str()) {
            out.append(name.clone(), value.clone());
        }
    }
    out
}

/// Removes hop-by-hop headers from a provider's response. Keeps everything else,
/// rate-limit headers included (the classifiers read them).
pub(crate) fn clean_response_headers(headers: &mut HeaderMap) {
    // Most answers carry none: one walk over the names says so, where removing each
    // of the nine names would hash and probe nine times. (`Connection` is one of
    // them, so any header it lists is found below.)
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let listed = connection_listed(headers);
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    for name in HOP_BY_HOP_EXTRA {
        headers.remove(*name);
    }
    for name in listed {
        headers.remove(name.as_str());
    }
}

fn connection_listed(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Whether a configured header's name suggests its value is a credential.
pub(crate) fn looks_secret(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    [
        "key", "token", "auth", "secret", "cookie", "password", "session",
    ]
    .iter()
    .any(|w| n.contains(w))
}

/// A header value for a credential, marked sensitive.
pub(crate) fn sensitive(value: HeaderValue) -> HeaderValue {
    let mut v = value;
    v.set_sensitive(true);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_are_dropped() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer caller"),
            ("x-api-key", "caller-key"),
            ("api-key", "azure"),
            ("anthropic-version", "2023-01-01"),
            ("anthropic-beta", "x"),
            ("openai-organization", "org"),
            ("cookie", "c=1"),
            ("proxy-authorization", "p"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("transfer-encoding", "chunked"),
            ("te", "trailers"),
            ("upgrade", "h2c"),
            ("host", "gateway"),
            ("content-length", "12"),
            ("accept-encoding", "gzip"),
            ("x-request-id", "abc"),
            ("user-agent", "app/1"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        let out = forward_request_headers(&h);
        let names: Vec<_> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["x-request-id", "user-agent"]);
    }

    #[test]
    fn response_keeps_rate_limit_headers() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        h.insert(
            "anthropic-ratelimit-requests-reset",
            HeaderValue::from_static("x"),
        );
        h.insert("connection", HeaderValue::from_static("close, x-hop"));
        h.insert("x-hop", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        clean_response_headers(&mut h);
        let mut names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        names.sort();
        assert_eq!(names, ["anthropic-ratelimit-requests-reset", "retry-after"]);
    }

    #[test]
    fn secret_looking_names() {
        assert!(looks_secret("X-Portkey-Api-Key"));
        assert!(looks_secret("x-auth"));
        assert!(!looks_secret("HTTP-Referer"));
        assert!(sensitive(HeaderValue::from_static("v")).is_sensitive());
    }
}
