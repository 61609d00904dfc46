//! Capability routing: what a request needs, read from the request.
//!
//! Before choosing a provider, the routers read a request's [`RequestAttrs`] (the
//! requested model, a tier, whether tools are present, an estimate of the prompt's
//! size) and keep only the providers whose [`ProviderOptions`](crate::ProviderOptions)
//! can serve it. Simple requests then go to the cheapest capable model and hard ones
//! to the strong tier; within that candidate set the balancer balances and the
//! fallback chain falls back.
//!
//! Where the attributes come from is an [`Attributes`] implementation:
//!
//! - [`DefaultAttributes`] (the default) reads a [`RequestInfo`] extension, set by
//!   an earlier layer that has parsed the body, then the `x-failover-model` and
//!   `x-failover-tier` headers. It never reads the body.
//! - [`JsonBodyAttributes`] also peeks into a buffered JSON body (OpenAI or
//!   Anthropic shape) for `model` and `tools`, and estimates the prompt's tokens from
//!   its size (about 4 bytes per token).
//!
//! The facade's `Stack` reads a request once with [`JsonBodyAttributes`] (its model
//! routing picks the model's group from it) and leaves the result on the request as
//! a [`RequestInfo`] extension, which the routers below it read with
//! [`DefaultAttributes`] instead of parsing the body again.
//!
//! ```
//! use http::Request;
//! use tower_failover_balance::{Attributes, JsonBodyAttributes};
//! use tower_failover_core::replay::ReplayBody;
//!
//! let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}],
//!              "tools":[{"type":"function","function":{"name":"f"}}]}"#;
//! let req = Request::post("/v1/chat/completions")
//!     .header("x-failover-tier", "cheap")
//!     .body(ReplayBody::from(body))
//!     .unwrap();
//! let attrs = JsonBodyAttributes::default().attributes(&req);
//! assert_eq!(attrs.model.as_deref(), Some("gpt-4o-mini"));
//! assert_eq!(attrs.tier.as_deref(), Some("cheap"));
//! assert!(attrs.tools);
//! assert!(attrs.prompt_tokens.unwrap() > 20);
//! ```

use std::borrow::Cow;

use bytes::Bytes;
use http::{HeaderName, Request};
use serde::Deserialize;
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::tokens::{BYTES_PER_TOKEN, estimate_tokens};

/// What a request needs from a provider. Borrowed from the request where possible.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestAttrs<'a> {
    /// The model the request asks for.
    pub model: Option<Cow<'a, str>>,
    /// The tier the request asks for (for example from a header).
    pub tier: Option<Cow<'a, str>>,
    /// Whether the request defines tools.
    pub tools: bool,
    /// An estimate of the prompt's size in tokens.
    pub prompt_tokens: Option<u64>,
}

impl<'a> RequestAttrs<'a> {
    /// Attributes that ask for nothing in particular (every provider is a candidate).
    pub fn new() -> Self {
        RequestAttrs::default()
    }

    /// Sets the requested model.
    pub fn model(mut self, model: impl Into<Cow<'a, str>>) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Sets the requested tier.
    pub fn tier(mut self, tier: impl Into<Cow<'a, str>>) -> Self {
        self.tier = Some(tier.into());
        self
    }

    /// Sets whether tools are present.
    pub fn tools(mut self, tools: bool) -> Self {
        self.tools = tools;
        self
    }

    /// Sets the estimated prompt size in tokens.
    pub fn prompt_tokens(mut self, tokens: u64) -> Self {
        self.prompt_tokens = Some(tokens);
        self
    }
}

/// Reads the [`RequestAttrs`] of a request. Called once per request, before the
/// first pick.
pub trait Attributes<B>: Clone + Send + Sync + 'static {
    /// The attributes of `request`.
    fn attributes<'a>(&self, request: &'a Request<B>) -> RequestAttrs<'a>;
}

/// A request extension describing the request, set by a layer that has already
/// parsed the body (a gateway, a validation layer), so routers need not parse it
/// again.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestInfo {
    /// The requested model.
    pub model: Option<String>,
    /// The requested tier.
    pub tier: Option<String>,
    /// Whether tools are defined.
    pub tools: bool,
    /// Estimated prompt tokens.
    pub prompt_tokens: Option<u64>,
}

impl RequestInfo {
    /// Reads an OpenAI chat-completions or Anthropic messages body: `model`, whether
    /// `tools` (or legacy `functions`) is a non-empty list, and an estimate of the
    /// prompt's tokens from the body's size. `None` if the body is not a JSON object.
    pub fn from_json(body: &[u8]) -> Option<RequestInfo> {
        let attrs = peek_json(body)?;
        Some(RequestInfo {
            model: attrs.model.map(Cow::into_owned),
            tier: None,
            tools: attrs.tools,
            prompt_tokens: attrs.prompt_tokens,
        })
    }

    /// Borrows the info as attributes.
    pub fn attrs(&self) -> RequestAttrs<'_> {
        RequestAttrs {
            model: self.model.as_deref().map(Cow::Borrowed),
            tier: self.tier.as_deref().map(Cow::Borrowed),
            tools: self.tools,
            prompt_tokens: self.prompt_tokens,
        }
    }
}

/// Each field is read leniently: an odd `tools` (`true`, an object) must not hide
/// the model the caller asked for, nor an odd model the tools.
#[derive(Deserialize)]
struct Peek<'a> {
    #[serde(borrow, default, deserialize_with = "lenient::string")]
    model: Option<Cow<'a, str>>,
    #[serde(default, deserialize_with = "lenient::non_empty_list")]
    tools: bool,
    #[serde(default, deserialize_with = "lenient::non_empty_list")]
    functions: bool,
}

mod lenient {
    use std::borrow::Cow;
    use std::fmt;

    use serde::Deserializer;
    use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

    /// A string, or `None` for any other JSON value.
    pub(super) fn string<'de: 'a, 'a, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Cow<'a, str>>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Option<Cow<'de, str>>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Some(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Some(Cow::Owned(v.to_owned())))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(None)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(None)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(None)
            }
        }
        d.deserialize_any(V)
    }

    /// Whether the value is a non-empty list (anything else is `false`).
    pub(super) fn non_empty_list<'de, D: Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = bool;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_bool<E>(self, _: bool) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_i64<E>(self, _: i64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_u64<E>(self, _: u64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_f64<E>(self, _: f64) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_str<E>(self, _: &str) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_unit<E>(self) -> Result<bool, E> {
                Ok(false)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<bool, A::Error> {
                let mut any = false;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(any)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<bool, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(false)
            }
        }
        d.deserialize_any(V)
    }
}

fn peek_json(body: &[u8]) -> Option<RequestAttrs<'_>> {
    // serde reads a struct from an array too (fields by position): objects only.
    if body.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return None;
    }
    let peek: Peek<'_> = serde_json::from_slice(body).ok()?;
    let tools = peek.tools || peek.functions;
    Some(RequestAttrs {
        model: peek.model,
        tier: None,
        tools,
        prompt_tokens: Some(estimate_tokens(body.len() as u64, BYTES_PER_TOKEN)),
    })
}

/// The default [`Attributes`]: a [`RequestInfo`] extension if present, then the
/// model and tier headers (by default `x-failover-model` and `x-failover-tier`) for
/// what it leaves unset. Never reads the body.
#[derive(Debug, Clone)]
pub struct DefaultAttributes {
    model_header: Option<HeaderName>,
    tier_header: Option<HeaderName>,
}

impl Default for DefaultAttributes {
    fn default() -> Self {
        DefaultAttributes::new()
    }
}

impl DefaultAttributes {
    /// The default model header, `x-failover-model`.
    pub const MODEL_HEADER: &'static str = "x-failover-model";
    /// The default tier header, `x-failover-tier`.
    pub const TIER_HEADER: &'static str = "x-failover-tier";

    /// Reads the extension and the default headers.
    pub fn new() -> Self {
        DefaultAttributes {
            model_header: Some(HeaderName::from_static(Self::MODEL_HEADER)),
            tier_header: Some(HeaderName::from_static(Self::TIER_HEADER)),
        }
    }

    /// Reads the model from this header instead (`None`: from no header).
    pub fn model_header(mut self, name: Option<HeaderName>) -> Self {
        self.model_header = name;
        self
    }

    /// Reads the tier from this header instead (`None`: from no header).
    pub fn tier_header(mut self, name: Option<HeaderName>) -> Self {
        self.tier_header = name;
        self
    }

    fn read<'a, B>(&self, req: &'a Request<B>) -> RequestAttrs<'a> {
        let mut attrs = req
            .extensions()
            .get::<RequestInfo>()
            .map(RequestInfo::attrs)
            .unwrap_or_default();
        let header = |name: &Option<HeaderName>| {
            name.as_ref()
                .and_then(|n| req.headers().get(n))
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(Cow::Borrowed)
        };
        if attrs.model.is_none() {
            attrs.model = header(&self.model_header);
        }
        if attrs.tier.is_none() {
            attrs.tier = header(&self.tier_header);
        }
        attrs
    }
}

impl<B> Attributes<B> for DefaultAttributes {
    fn attributes<'a>(&self, request: &'a Request<B>) -> RequestAttrs<'a> {
        self.read(request)
    }
}

/// Request bodies whose bytes can be read in place (buffered bodies).
pub trait BodyBytes {
    /// The body's bytes.
    fn body_bytes(&self) -> &[u8];
}

impl BodyBytes for ReplayBody {
    fn body_bytes(&self) -> &[u8] {
        self.bytes()
    }
}

impl BodyBytes for Bytes {
    fn body_bytes(&self) -> &[u8] {
        self
    }
}

impl BodyBytes for Vec<u8> {
    fn body_bytes(&self) -> &[u8] {
        self
    }
}

impl BodyBytes for String {
    fn body_bytes(&self) -> &[u8] {
        self.as_bytes()
    }
}

/// [`DefaultAttributes`], then a look into the buffered JSON body when no
/// [`RequestInfo`] extension describes the request: `model` (if no header named
/// one), whether tools are defined, and the prompt's size in tokens (estimated at
/// [`BYTES_PER_TOKEN`] bytes per token). The JSON is scanned, not kept; the model name is borrowed
/// from the body.
#[derive(Debug, Clone, Default)]
pub struct JsonBodyAttributes {
    base: DefaultAttributes,
}

impl JsonBodyAttributes {
    /// Over the given [`DefaultAttributes`] (header names).
    pub fn new(base: DefaultAttributes) -> Self {
        JsonBodyAttributes { base }
    }
}

impl<B: BodyBytes> Attributes<B> for JsonBodyAttributes {
    fn attributes<'a>(&self, request: &'a Request<B>) -> RequestAttrs<'a> {
        let mut attrs = self.base.read(request);
        if request.extensions().get::<RequestInfo>().is_some() {
            return attrs;
        }
        if let Some(body) = peek_json(request.body().body_bytes()) {
            if attrs.model.is_none() {
                attrs.model = body.model;
            }
            attrs.tools = body.tools;
            attrs.prompt_tokens = body.prompt_tokens;
        }
        attrs
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_wins_then_headers_fill_in() {
        let mut req = Request::post("/")
            .header("x-failover-model", "from-header")
            .header("x-failover-tier", "strong")
            .body(())
            .unwrap();
        let a = DefaultAttributes::new().attributes(&req);
        assert_eq!(a.model.as_deref(), Some("from-header"));
        assert_eq!(a.tier.as_deref(), Some("strong"));
        req.extensions_mut().insert(RequestInfo {
            model: Some("from-ext".into()),
            tools: true,
            prompt_tokens: Some(9),
            ..RequestInfo::default()
        });
        let a = DefaultAttributes::new().attributes(&req);
        assert_eq!(a.model.as_deref(), Some("from-ext"));
        assert_eq!(a.tier.as_deref(), Some("strong"));
        assert!(a.tools);
        assert_eq!(a.prompt_tokens, Some(9));
        let bare = Request::new(());
        let a = DefaultAttributes::new()
            .tier_header(None)
            .model_header(Some(HeaderName::from_static("x-model")))
            .attributes(&bare);
        assert_eq!(a, RequestAttrs::new());
    }

    #[test]
    fn json_bodies_are_peeked() {
        let anthropic =
            r#"{"model":"claude-haiku-4-5","max_tokens":64,"system":"be brief","messages":[]}"#;
        let info = RequestInfo::from_json(anthropic.as_bytes()).unwrap();
        assert_eq!(info.model.as_deref(), Some("claude-haiku-4-5"));
        assert!(!info.tools);
        assert_eq!(info.prompt_tokens, Some(anthropic.len().div_ceil(4) as u64));
        let empty_tools = r#"{"model":"m","tools":[]}"#;
        assert!(
            !RequestInfo::from_json(empty_tools.as_bytes())
                .unwrap()
                .tools
        );
        let functions = r#"{"functions":[{"name":"f"}]}"#;
        assert!(RequestInfo::from_json(functions.as_bytes()).unwrap().tools);
        assert!(RequestInfo::from_json(b"not json").is_none());
        assert!(RequestInfo::from_json(b"[1,2]").is_none());
        let escaped = r#"{"model":"a\u0062c"}"#;
        assert_eq!(
            RequestInfo::from_json(escaped.as_bytes())
                .unwrap()
                .model
                .as_deref(),
            Some("abc")
        );
        let req = Request::new(String::from("garbage"));
        let a = JsonBodyAttributes::default().attributes(&req);
        assert_eq!(a, RequestAttrs::new());
    }
}
