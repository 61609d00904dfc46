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
//! - [`DefaultAttributes`] (the default) reads a [`RouteInfo`] extension, set by
//!   an earlier layer that has decided what the request needs, then the
//!   `x-failover-model` and `x-failover-tier` headers. It never reads the body.
//! - [`JsonBodyAttributes`] also reads the buffered JSON body (OpenAI or Anthropic
//!   shape) for `model` and `tools`, and estimates the prompt's tokens from its size
//!   (about 4 bytes per token). It reads the body's
//!   [`RequestInfo`], which a
//!   [`ReplayBody`] parses once and keeps for every other layer that asks (the quota
//!   estimator, validation, the provider adapter).
//!
//! The facade's `Stack` reads a request once with [`JsonBodyAttributes`] (its model
//! routing picks the model's group from it) and leaves what the routers below it
//! need as a [`RouteInfo`] extension (without the model: the group is chosen), which
//! they read with [`DefaultAttributes`].
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
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::request::RequestInfo;
#[cfg(doc)]
use tower_failover_core::tokens::BYTES_PER_TOKEN;

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

/// A request extension saying what a request needs, set by a layer that has already
/// decided it (a gateway, the facade's model routing), so routers need not read the
/// body. [`DefaultAttributes`] and [`JsonBodyAttributes`] take it over the body and
/// the headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteInfo {
    /// The requested model.
    pub model: Option<String>,
    /// The requested tier.
    pub tier: Option<String>,
    /// Whether tools are defined.
    pub tools: bool,
    /// Estimated prompt tokens.
    pub prompt_tokens: Option<u64>,
}

impl RouteInfo {
    /// What a request body asks for: its `model`, whether it defines tools and its
    /// estimated prompt tokens (`None` for a body that is not a JSON object).
    pub fn from_request(info: &RequestInfo) -> RouteInfo {
        RouteInfo {
            model: info.model().map(str::to_owned),
            tier: None,
            tools: info.tools(),
            prompt_tokens: info.is_object().then(|| info.prompt_tokens()),
        }
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

/// The default [`Attributes`]: a [`RouteInfo`] extension if present, then the
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
            .get::<RouteInfo>()
            .map(RouteInfo::attrs)
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

    /// The body's [`RequestInfo`], if the body keeps one ([`ReplayBody`] does: it is
    /// read once and shared with the other layers). `None` (the default) makes
    /// [`JsonBodyAttributes`] read [`body_bytes`](BodyBytes::body_bytes) itself.
    fn request_info(&self) -> Option<&RequestInfo> {
        None
    }
}

impl BodyBytes for ReplayBody {
    fn body_bytes(&self) -> &[u8] {
        self.bytes()
    }

    fn request_info(&self) -> Option<&RequestInfo> {
        Some(self.info())
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

/// [`DefaultAttributes`], then the buffered JSON body when no [`RouteInfo`]
/// extension describes the request: `model` (if no header named one), whether tools
/// are defined, and the prompt's size in tokens (estimated at [`BYTES_PER_TOKEN`]
/// bytes per token). The body is read through its
/// [`RequestInfo`]: a [`ReplayBody`]
/// parses it once for every layer, and the model name is borrowed from it.
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
        if request.extensions().get::<RouteInfo>().is_some() {
            return attrs;
        }
        let body = request.body();
        let (model, tools, prompt_tokens) = match body.request_info() {
            Some(info) => (info.model().map(Cow::Borrowed), info.tools(), fill(info)),
            None => {
                let info = RequestInfo::parse(Bytes::copy_from_slice(body.body_bytes()));
                let model = info.model().map(|m| Cow::Owned(m.to_owned()));
                (model, info.tools(), fill(&info))
            }
        };
        if prompt_tokens.is_some() {
            if attrs.model.is_none() {
                attrs.model = model;
            }
            attrs.tools = tools;
            attrs.prompt_tokens = prompt_tokens;
        }
        attrs
    }
}

/// The prompt estimate of a body that is a JSON object.
fn fill(info: &RequestInfo) -> Option<u64> {
    info.is_object().then(|| info.prompt_tokens())
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
        req.extensions_mut().insert(RouteInfo {
            model: Some("from-ext".into()),
            tools: true,
            prompt_tokens: Some(9),
            ..RouteInfo::default()
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
    fn json_bodies_are_read_once() {
        let anthropic =
            r#"{"model":"claude-haiku-4-5","max_tokens":64,"system":"be brief","messages":[]}"#;
        let req = Request::new(ReplayBody::from(anthropic));
        let before = tower_failover_core::request::parses_on_this_thread();
        let a = JsonBodyAttributes::default().attributes(&req);
        assert_eq!(a.model.as_deref(), Some("claude-haiku-4-5"));
        assert!(matches!(a.model, Some(Cow::Borrowed(_))));
        assert!(!a.tools);
        assert_eq!(a.prompt_tokens, Some(anthropic.len().div_ceil(4) as u64));
        let again = JsonBodyAttributes::default().attributes(&req);
        assert_eq!(again, a);
        assert_eq!(
            tower_failover_core::request::parses_on_this_thread() - before,
            1
        );
        let info = RouteInfo::from_request(req.body().info());
        assert_eq!(info.model.as_deref(), Some("claude-haiku-4-5"));

        // Other buffered bodies are read too, without a cache.
        let req = Request::new(String::from(r#"{"functions":[{"name":"f"}]}"#));
        assert!(JsonBodyAttributes::default().attributes(&req).tools);
        let req = Request::new(String::from("garbage"));
        let a = JsonBodyAttributes::default().attributes(&req);
        assert_eq!(a, RequestAttrs::new());
        let req = Request::new(ReplayBody::from("[1,2]"));
        assert_eq!(
            JsonBodyAttributes::default().attributes(&req),
            RequestAttrs::new()
        );
    }
}
