//! The OpenAI-compatible side: forward the caller's JSON as it is, except the model
//! name (mapped) and `stream_options.include_usage` (set to get usage at the end of
//! streams).
//!
//! The body is scanned once; only the model value is spliced, so whatever else the
//! caller sent (new parameters, provider extensions) reaches the provider
//! byte for byte. One exception: a body with Anthropic's prompt-cache breakpoints
//! (`cache_control`) is rewritten without them (OpenAI caches by itself, and a
//! server that refuses unknown fields would answer 400).

use std::sync::LazyLock;

use bytes::Bytes;
use memchr::memmem;
use serde::Deserialize;
use tower_failover_core::RejectKind;
use tower_failover_core::error::Invalid;
use tower_failover_core::json::{self, Kind, Outline, Reader, Unsure};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::request::Shape;

use crate::config::ModelMap;
use crate::error::TranslateError;

/// A request body ready for an OpenAI-compatible provider.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreparedRequest {
    /// The body to send.
    pub body: Bytes,
    /// The model the caller asked for, if the body named one.
    pub requested_model: Option<String>,
    /// The provider model sent (after mapping), if the body named one.
    pub model: Option<String>,
    /// Whether the caller asked for a stream.
    pub stream: bool,
}

const INCLUDE_USAGE: &[u8] = br#""stream_options":{"include_usage":true},"#;

/// Maps the model name and, for a stream when `stream_usage` is on, asks for usage
/// in the final chunk (adding `stream_options`, or setting its `include_usage`
/// when the caller's does not ask).
///
/// Reads the body's [`RequestInfo`](tower_failover_core::request::RequestInfo) (parsed
/// once for every layer that asks; where the model name sits, whether a stream is
/// asked for): a body that needs neither edit is sent as the very same bytes, with
/// no copy.
///
/// An empty body passes as it is. A body that is not a JSON object (an array, a
/// string, a number, `null`, bytes that are not UTF-8), or whose `model` is not a
/// string or `stream` not a boolean, is refused with a [`TranslateError`], which the
/// adapter answers with a `400`.
///
/// ```
/// use tower_failover_core::replay::ReplayBody;
/// use tower_failover_provider::ModelMap;
/// use tower_failover_provider::translate::openai::prepare_request;
///
/// let models = ModelMap::from_iter([("smart", "gpt-4o")]);
/// let body = ReplayBody::from(r#"{"model":"smart","stream":true,"messages":[]}"#);
/// let out = prepare_request(&body, &models, true).unwrap();
/// assert_eq!(
///     out.body,
///     r#"{"stream_options":{"include_usage":true},"model":"gpt-4o","stream":true,"messages":[]}"#
/// );
/// assert_eq!(out.model.as_deref(), Some("gpt-4o"));
/// ```
pub fn prepare_request(
    body: &ReplayBody,
    models: &ModelMap,
    stream_usage: bool,
) -> Result<PreparedRequest, TranslateError> {
    let info = body.info();
    let bytes = info.body();
    match info.shape() {
        Shape::Empty => {
            return Ok(PreparedRequest {
                body: bytes.clone(),
                requested_model: None,
                model: None,
                stream: false,
            });
        }
        Shape::Invalid => {
            let why = info
                .problem()
                .unwrap_or("request body is not a JSON object");
            return Err(TranslateError::new(why));
        }
        Shape::Object => {}
    }
    if info.model_is_odd() {
        return Err(TranslateError::new("`model` must be a string"));
    }
    if info.stream_is_odd() {
        return Err(TranslateError::new("`stream` must be a boolean"));
    }
    let stream = info.stream();
    // Built once, as `mentions_usage`'s: every request is searched.
    static CACHE_CONTROL: LazyLock<memmem::Finder<'static>> =
        LazyLock::new(|| memmem::Finder::new(b"\"cache_control\""));
    if CACHE_CONTROL.find(bytes).is_some() {
        // Anthropic's prompt-cache breakpoints (from `/v1/messages` callers, or
        // clients that mark parts for Claude) are taken out: OpenAI caches prompts
        // by itself, and a server that refuses unknown fields would refuse the
        // request (a 400, which does not fail over). The body is rewritten whole.
        return prepare_by_value(bytes, models, stream, stream && stream_usage);
    }
    let inject = stream && stream_usage && !info.has_stream_options();
    // A caller's own `stream_options` that does not ask for usage (`null`, `{}`,
    // `"include_usage": false`) is asked for it all the same: without the final
    // usage chunk nothing could count the stream's tokens (a gateway key's token
    // or cost budget would not be spent). Its other options stay as they are.
    let usage_edit = if stream && stream_usage && info.has_stream_options() {
        match ask_for_usage(bytes) {
            Ok(edit) => edit,
            // What the exact reader cannot vouch for (a number past its range, a
            // key with escapes) is edited through serde's model of the body.
            Err(Unsure) => return prepare_by_value(bytes, models, stream, true),
        }
    } else {
        None
    };

    let mut requested_model = None;
    let mut model = None;
    let mut splice = None;
    if let (Some(name), Some(span)) = (info.model(), info.model_span()) {
        let mapped = models.map(name);
        if mapped != name {
            let quoted =
                serde_json::to_string(mapped).map_err(|e| TranslateError::new(e.to_string()))?;
            splice = Some((span, quoted));
        }
        model = Some(mapped.to_string());
        requested_model = Some(name.to_owned());
    }
    if splice.is_none() && !inject && usage_edit.is_none() {
        return Ok(PreparedRequest {
            body: bytes.clone(),
            requested_model,
            model,
            stream,
        });
    }
    // The edits, each a range of the body replaced with new bytes, in order (they
    // never overlap: the model's value and `stream_options`' are distinct members).
    let mut edits: Vec<(std::ops::Range<usize>, std::borrow::Cow<'static, [u8]>)> = Vec::new();
    if inject {
        // The first non-blank byte is the object's `{` (the parse proved it), and a
        // stream request has at least one member after it.
        let brace = bytes.iter().position(|b| *b == b'{').unwrap_or(0);
        edits.push((brace + 1..brace + 1, INCLUDE_USAGE.into()));
    }
    if let Some((at, with)) = usage_edit {
        edits.push((at, with.into()));
    }
    if let Some((span, quoted)) = splice {
        edits.push((span, quoted.into_bytes().into()));
    }
    edits.sort_by_key(|(at, _)| at.start);
    let mut out = Vec::with_capacity(bytes.len() + INCLUDE_USAGE.len() + 32);
    let mut from = 0;
    for (at, with) in edits {
        out.extend_from_slice(&bytes[from..at.start]);
        out.extend_from_slice(&with);
        from = at.end;
    }
    out.extend_from_slice(&bytes[from..]);
    Ok(PreparedRequest {
        body: out.into(),
        requested_model,
        model,
        stream,
    })
}

/// Where the caller's `stream_options` must change to ask for usage, and the bytes
/// that go there: its `include_usage` value made `true`, the member added to an
/// object without it, or a value that is not an object (`null`) replaced. `None`
/// when it already asks; [`Unsure`] when the body cannot be read exactly.
type UsageEdit = (std::ops::Range<usize>, &'static [u8]);

fn ask_for_usage(bytes: &[u8]) -> Result<Option<UsageEdit>, Unsure> {
    let mut r = Reader::structure(bytes);
    r.object()?;
    let mut first = true;
    let mut edit = None;
    while let Some(key) = r.key(&mut first)? {
        if key != b"stream_options" {
            r.skip()?;
            continue;
        }
        // The last of duplicate keys is the one JSON parsers keep.
        edit = if r.peek()? == Kind::Object {
            // `peek` stopped at the object's `{`.
            let after_brace = r.position() + 1;
            r.object()?;
            let (mut inner_first, mut found, mut empty) = (true, None, true);
            while let Some(k) = r.key(&mut inner_first)? {
                empty = false;
                let value = r.skip()?;
                if k == b"include_usage" {
                    found = Some(value);
                }
            }
            match found {
                Some(v) if &bytes[v.clone()] == b"true" => None,
                Some(v) => Some((v, &b"true"[..])),
                None if empty => Some((after_brace..after_brace, &br#""include_usage":true"#[..])),
                None => Some((after_brace..after_brace, &br#""include_usage":true,"#[..])),
            }
        } else {
            Some((r.skip()?, &br#"{"include_usage":true}"#[..]))
        };
    }
    r.end()?;
    Ok(edit)
}

/// Sends the answer's token limit as `field` (`max_tokens` or
/// `max_completion_tokens`, see [`MaxTokensField`](crate::MaxTokensField)): a body
/// with the other one has it renamed (dropped if it has both). A body without the
/// other field at its top level is returned as it is, with no copy; one with it is
/// rewritten through `serde_json` (key order is not kept).
///
/// ```
/// use bytes::Bytes;
/// use tower_failover_provider::translate::openai::rename_token_limit;
///
/// let body = Bytes::from(r#"{"model":"o3","max_tokens":50,"messages":[]}"#);
/// let out = rename_token_limit(body, "max_completion_tokens").unwrap();
/// let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
/// assert_eq!(v["max_completion_tokens"], 50);
/// assert!(v.get("max_tokens").is_none());
/// ```
pub fn rename_token_limit(body: Bytes, field: &'static str) -> Result<Bytes, TranslateError> {
    let (other, quoted): (&str, &[u8]) = if field == "max_tokens" {
        ("max_completion_tokens", br#""max_completion_tokens""#)
    } else {
        ("max_tokens", br#""max_tokens""#)
    };
    if memmem::find(&body, quoted).is_none() {
        return Ok(body);
    }
    let Ok(mut map) = serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body)
    else {
        // Not an object: `prepare_request` has answered it already.
        return Ok(body);
    };
    let Some(limit) = map.remove(other) else {
        // The name was in a message, not a field of the request.
        return Ok(body);
    };
    map.entry(field).or_insert(limit);
    serde_json::to_vec(&map)
        .map(Bytes::from)
        .map_err(|e| TranslateError::new(e.to_string()))
}

/// [`prepare_request`]'s edits made through a `serde_json::Value` of the body: for
/// the rare body with a caller's `stream_options` that the structure reader cannot
/// follow (a key with escapes), and for one with prompt-cache breakpoints
/// (`cache_control`, taken off every message, part and tool). The members keep
/// their meaning as serde reads them, not their bytes (a float may move in its
/// last digit). A body serde cannot hold is refused.
fn prepare_by_value(
    bytes: &Bytes,
    models: &ModelMap,
    stream: bool,
    ask_usage: bool,
) -> Result<PreparedRequest, TranslateError> {
    use serde_json::Value;
    let mut body: serde_json::Map<String, Value> = serde_json::from_slice(bytes)
        .map_err(|e| TranslateError::new(format!("request body: {e}")))?;
    if ask_usage {
        let options = body.entry("stream_options").or_insert(Value::Null);
        if !options.is_object() {
            *options = Value::Object(serde_json::Map::new());
        }
        if let Some(o) = options.as_object_mut() {
            o.insert("include_usage".into(), Value::Bool(true));
        }
    }
    let strip = |v: &mut Value| {
        if let Some(o) = v.as_object_mut() {
            o.remove("cache_control");
        }
    };
    for list in ["messages", "tools"] {
        for item in body
            .get_mut(list)
            .and_then(Value::as_array_mut)
            .into_iter()
            .flatten()
        {
            strip(item);
            if let Some(parts) = item.get_mut("content").and_then(Value::as_array_mut) {
                parts.iter_mut().for_each(strip);
            }
        }
    }
    let (mut requested_model, mut model) = (None, None);
    if let Some(serde_json::Value::String(name)) = body.get_mut("model") {
        let mapped = models.map(name).to_owned();
        requested_model = Some(std::mem::replace(name, mapped.clone()));
        model = Some(mapped);
    }
    let out = serde_json::to_vec(&body).map_err(|e| TranslateError::new(e.to_string()))?;
    Ok(PreparedRequest {
        body: out.into(),
        requested_model,
        model,
        stream,
    })
}

/// Token counts in OpenAI's `usage` object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
pub(crate) struct WireUsage {
    #[serde(default, deserialize_with = "super::count::de")]
    pub(crate) prompt_tokens: u64,
    #[serde(default, deserialize_with = "super::count::de")]
    pub(crate) completion_tokens: u64,
    /// Of the prompt, the tokens read from the provider's cache
    /// (`prompt_tokens_details.cached_tokens`; priced apart).
    #[serde(
        default,
        rename = "prompt_tokens_details",
        deserialize_with = "super::count::de_cached"
    )]
    pub(crate) cached_tokens: u64,
}

#[derive(Deserialize)]
struct WithUsage {
    #[serde(default)]
    usage: Option<WireUsage>,
}

/// Reads a JSON answer once, for its `usage` and for the [`Outline`] of its
/// members, which output validation above reads instead of the whole body again.
/// The body must be JSON; a missing or null `usage` (some compatible servers omit
/// it) is `None`.
///
/// The usual answer is read by [`quick_answer`]; whatever it cannot vouch for
/// (malformed JSON included) is read by serde_json, which decides and words the
/// error, and leaves no outline.
pub(crate) fn read_answer(body: &Bytes) -> Result<(Option<WireUsage>, Option<Outline>), Invalid> {
    match quick_answer(body) {
        Ok(read) => Ok(read),
        Err(Unsure) => serde_usage(body).map(|usage| (usage, None)),
    }
}

/// [`read_answer`]'s usage alone (the tests' and the fuzz target's entry).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn response_usage(body: &[u8]) -> Result<Option<WireUsage>, Invalid> {
    read_answer(&Bytes::copy_from_slice(body)).map(|(usage, _)| usage)
}

/// [`read_answer`] through serde alone: the reference [`quick_answer`] is held to.
pub(crate) fn serde_usage(body: &[u8]) -> Result<Option<WireUsage>, Invalid> {
    serde_json::from_slice::<WithUsage>(body)
        .map(|w| w.usage)
        .map_err(|e| Invalid::new(RejectKind::InvalidJson, e.to_string()))
}

/// [`quick_answer`]'s usage alone, or [`Unsure`].
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn quick_usage(body: &[u8]) -> json::Result<Option<WireUsage>> {
    quick_answer(&Bytes::copy_from_slice(body)).map(|(usage, _)| usage)
}

/// The top-level `usage` of a JSON object, read with core's strict reader in the
/// same pass that outlines the object (the rest of the body is checked and
/// skipped without going through serde). Gives up (for [`serde_usage`] to decide)
/// on anything but the plain case: a body that is not an object, a `usage` that is
/// neither an object nor `null`, a key read twice (serde refuses duplicate
/// fields), a token count that is not a plain unsigned integer, a key with escapes.
fn quick_answer(body: &Bytes) -> json::Result<(Option<WireUsage>, Option<Outline>)> {
    let mut usage = None;
    let mut seen = false;
    let outline = Outline::read_with(body, |key, r| {
        if key != b"usage" {
            return Ok(false);
        }
        if std::mem::replace(&mut seen, true) {
            return Err(Unsure);
        }
        usage = usage_value(r)?;
        Ok(true)
    })?;
    Ok((usage, outline))
}

/// A `usage` member's value: `null`, or an object of counts.
fn usage_value(r: &mut Reader<'_>) -> json::Result<Option<WireUsage>> {
    match r.peek()? {
        Kind::Null => {
            r.null()?;
            Ok(None)
        }
        Kind::Object => Ok(Some(quick_counts(r)?)),
        _ => Err(Unsure),
    }
}

/// A `usage` object's two counts, read as [`super::count::de`] reads them.
fn quick_counts(r: &mut Reader<'_>) -> json::Result<WireUsage> {
    r.object()?;
    let (mut prompt, mut completion, mut cached) = (None, None, None);
    let mut first = true;
    while let Some(key) = r.key(&mut first)? {
        let (slot, read): (_, fn(&mut Reader<'_>) -> json::Result<u64>) = match key {
            b"prompt_tokens" => (&mut prompt, quick_count),
            b"completion_tokens" => (&mut completion, quick_count),
            b"prompt_tokens_details" => (&mut cached, quick_cached),
            _ => {
                r.skip()?;
                continue;
            }
        };
        if slot.is_some() {
            return Err(Unsure);
        }
        *slot = Some(read(r)?);
    }
    Ok(WireUsage {
        prompt_tokens: prompt.unwrap_or(0),
        completion_tokens: completion.unwrap_or(0),
        cached_tokens: cached.unwrap_or(0),
    })
}

/// `prompt_tokens_details`' `cached_tokens`, read as [`super::count::de_cached`]
/// reads it: the last one, 0 for anything but an object.
fn quick_cached(r: &mut Reader<'_>) -> json::Result<u64> {
    if r.peek()? != Kind::Object {
        r.skip()?;
        return Ok(0);
    }
    r.object()?;
    let mut cached = 0;
    let mut first = true;
    while let Some(key) = r.key(&mut first)? {
        if key == b"cached_tokens" {
            cached = quick_count(r)?;
        } else {
            r.skip()?;
        }
    }
    Ok(cached)
}

/// One count: a plain unsigned integer as it is; anything that is not a number
/// reads as 0 (as `count::de` has it); other numbers are left to serde.
fn quick_count(r: &mut Reader<'_>) -> json::Result<u64> {
    if r.peek()? != Kind::Number {
        r.skip()?;
        return Ok(0);
    }
    r.number()?.parse::<u64>().map_err(|_| Unsure)
}

/// Watches a passed-through OpenAI stream: finds its usage chunk and its `[DONE]`.
#[derive(Debug, Clone, Default)]
pub(crate) struct StreamScan {
    pub(crate) usage: Option<WireUsage>,
    pub(crate) done: bool,
}

impl StreamScan {
    pub(crate) fn event(&mut self, data: &[u8]) {
        if data == b"[DONE]" {
            self.done = true;
            return;
        }
        // Only chunks that mention usage with something other than `null` are worth
        // parsing: most say `"usage":null` or nothing at all. (Parsing one anyway
        // costs an allocation: serde_json skips the nested `choices` with a stack.)
        if mentions_usage(data)
            && let Ok(WithUsage { usage: Some(u) }) = serde_json::from_slice(data)
        {
            self.usage = Some(u);
        }
    }
}

/// Whether `data` has a `"usage"` that is not followed by `: null` (the only
/// chunks whose `usage` can parse as something). Conservative: any other
/// `"usage"`, a nested one included, counts as a mention, and the parse decides.
fn mentions_usage(data: &[u8]) -> bool {
    const KEY: &[u8] = b"\"usage\"";
    // Built once: a chunk is a few hundred bytes, and building a searcher costs
    // about as much as running it over one.
    static FINDER: LazyLock<memmem::Finder<'static>> = LazyLock::new(|| memmem::Finder::new(KEY));
    FINDER.find_iter(data).any(|at| {
        let after = data[at + KEY.len()..].trim_ascii_start();
        let null = after
            .strip_prefix(b":")
            .is_some_and(|v| v.trim_ascii_start().starts_with(b"null"));
        !null
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_limit_is_renamed_to_the_field_the_provider_takes() {
        let read = |b: &Bytes| serde_json::from_slice::<serde_json::Value>(b).unwrap();
        // Renamed, both ways.
        let out = rename_token_limit(
            Bytes::from(r#"{"model":"o3","max_tokens":7}"#),
            "max_completion_tokens",
        )
        .unwrap();
        assert_eq!(
            read(&out),
            serde_json::json!({"model":"o3","max_completion_tokens":7})
        );
        let out = rename_token_limit(
            Bytes::from(r#"{"max_completion_tokens":7,"model":"m"}"#),
            "max_tokens",
        )
        .unwrap();
        assert_eq!(read(&out), serde_json::json!({"model":"m","max_tokens":7}));
        // Both sent: the provider's own is kept, the other dropped.
        let out = rename_token_limit(
            Bytes::from(r#"{"max_tokens":9,"max_completion_tokens":7}"#),
            "max_completion_tokens",
        )
        .unwrap();
        assert_eq!(read(&out), serde_json::json!({"max_completion_tokens":7}));
        // Nothing to rename: the very same bytes (no copy), also when the name
        // is only said in a message.
        for body in [
            r#"{"model":"m","max_completion_tokens":7}"#,
            r#"{"messages":[{"role":"user","content":"what is \"max_tokens\"?"}]}"#,
            "",
        ] {
            let bytes = Bytes::from(body);
            let out = rename_token_limit(bytes.clone(), "max_completion_tokens").unwrap();
            assert_eq!(out.as_ptr(), bytes.as_ptr(), "{body}");
        }
    }

    #[test]
    fn the_token_limit_field_is_openais_own_at_its_host_only_by_default() {
        use crate::config::MaxTokensField as F;
        use crate::service::token_limit_field;
        let at = |h: &str| h.parse::<http::uri::Authority>().unwrap();
        assert_eq!(
            token_limit_field(F::Auto, &at("api.openai.com")),
            Some("max_completion_tokens")
        );
        assert_eq!(
            token_limit_field(F::Auto, &at("API.OpenAI.com:443")),
            Some("max_completion_tokens")
        );
        for other in [
            "api.mistral.ai",
            "localhost:11434",
            "openai.example.com",
            "api.openai.com.evil.test",
        ] {
            assert_eq!(token_limit_field(F::Auto, &at(other)), None, "{other}");
        }
        assert_eq!(
            token_limit_field(F::MaxTokens, &at("api.openai.com")),
            Some("max_tokens")
        );
        assert_eq!(
            token_limit_field(F::MaxCompletionTokens, &at("localhost:8000")),
            Some("max_completion_tokens")
        );
    }

    fn prep(body: &'static str, models: &ModelMap, usage: bool) -> PreparedRequest {
        prepare_request(&ReplayBody::from(body), models, usage).unwrap()
    }

    #[test]
    fn a_null_usage_is_not_parsed_and_a_real_one_is_read() {
        assert!(!mentions_usage(
            br#"{"choices":[{"delta":{}}],"usage":null}"#
        ));
        assert!(!mentions_usage(br#"{"usage" :  null,"x":{"usage":null}}"#));
        assert!(!mentions_usage(br#"{"choices":[]}"#));
        assert!(mentions_usage(br#"{"usage":{"prompt_tokens":1}}"#));
        assert!(mentions_usage(
            br#"{"usage":null,"usage":{"prompt_tokens":1}}"#
        ));
        assert!(mentions_usage(b"{\"usage\"\n:\n{\"prompt_tokens\":1}}"));
        // A nested one is a mention too (then the parse decides).
        assert!(mentions_usage(br#"{"x":{"usage":5}}"#));
        let mut scan = StreamScan::default();
        scan.event(br#"{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}"#);
        scan.event(br#"{"choices":[{"delta":{"content":"x"}}],"usage":null}"#);
        assert_eq!(
            scan.usage,
            Some(WireUsage {
                prompt_tokens: 3,
                completion_tokens: 4,
                cached_tokens: 0,
            })
        );
    }

    #[test]
    fn untouched_when_nothing_to_do() {
        let body = r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"x_ext":1}"#;
        let out = prep(body, &ModelMap::new(), true);
        assert_eq!(out.body, body);
        assert_eq!(out.model.as_deref(), Some("gpt-4o"));
        assert!(!out.stream);
        // The very same buffer: no copy.
        let replay = ReplayBody::from(Bytes::copy_from_slice(body.as_bytes()));
        let out = prepare_request(&replay, &ModelMap::new(), true).unwrap();
        assert_eq!(out.body.as_ptr(), replay.bytes().as_ptr());
        let out = prepare_request(
            &ReplayBody::from(r#"{"model":"m","stream":"yes"}"#),
            &ModelMap::new(),
            true,
        );
        assert!(out.unwrap_err().message().contains("`stream`"));
    }

    #[test]
    fn maps_model_with_escapes_and_whitespace() {
        let models = ModelMap::from_iter([("my \"model\"", "real/model")]);
        let body = "{ \"messages\": [], \"model\" :  \"my \\\"model\\\"\" }";
        let out = prep(body, &models, false);
        assert_eq!(
            out.body,
            "{ \"messages\": [], \"model\" :  \"real/model\" }"
        );
        assert_eq!(out.requested_model.as_deref(), Some("my \"model\""));
        let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(v["model"], "real/model");
    }

    /// A caller's `stream_options` that does not ask for usage is made to (or the
    /// stream's tokens could not be counted against any budget); its other
    /// options, and every other byte, stay. One that asks is left alone, and with
    /// `stream_usage` off nothing is touched.
    #[test]
    fn a_callers_stream_options_is_made_to_ask_for_usage() {
        let none = ModelMap::new();
        for (body, sent) in [
            (
                r#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#,
                r#"{"model":"m","stream":true,"stream_options":{"include_usage":true}}"#,
            ),
            (
                r#"{"stream":true,"stream_options":null,"model":"m"}"#,
                r#"{"stream":true,"stream_options":{"include_usage":true},"model":"m"}"#,
            ),
            (
                r#"{"stream":true,"stream_options": { } }"#,
                r#"{"stream":true,"stream_options": {"include_usage":true } }"#,
            ),
            (
                r#"{"stream":true,"stream_options":{"include_obfuscation":false}}"#,
                r#"{"stream":true,"stream_options":{"include_usage":true,"include_obfuscation":false}}"#,
            ),
            (
                r#"{"stream":true,"stream_options":{"include_usage":0,"x":[1]}}"#,
                r#"{"stream":true,"stream_options":{"include_usage":true,"x":[1]}}"#,
            ),
            // Already asking, and not a stream: as they are.
            (
                r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
                r#"{"stream":true,"stream_options":{"include_usage":true}}"#,
            ),
            (
                r#"{"stream":false,"stream_options":{"include_usage":false}}"#,
                r#"{"stream":false,"stream_options":{"include_usage":false}}"#,
            ),
        ] {
            let out = prep(body, &none, true);
            assert_eq!(out.body, sent, "{body}");
            serde_json::from_slice::<serde_json::Value>(&out.body).unwrap();
        }
        let body = r#"{"model":"m","stream":true,"stream_options":{"include_usage":false}}"#;
        assert_eq!(prep(body, &none, false).body, body);
        let body = r#"{"model":"m","stream":true}"#;
        assert_eq!(prep(body, &none, false).body, body);
        // Numbers past f64 are skipped, not read: still a byte-exact edit.
        let out = prep(
            r#"{"stream":true,"x":1e400,"y":-123456789e-99999999999999999999999,"stream_options":{}}"#,
            &none,
            true,
        );
        assert_eq!(
            out.body,
            r#"{"stream":true,"x":1e400,"y":-123456789e-99999999999999999999999,"stream_options":{"include_usage":true}}"#
        );
        // A key with escapes: edited through serde's model of the body, same meaning.
        let out = prep(
            r#"{"stream":true,"\u0078":1,"stream_options":{"include_usage":false},"model":"m"}"#,
            &ModelMap::from_iter([("m", "n")]),
            true,
        );
        let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"stream":true,"x":1,"stream_options":{"include_usage":true},"model":"n"})
        );
        assert_eq!(out.requested_model.as_deref(), Some("m"));
        assert_eq!(out.model.as_deref(), Some("n"));
        // With the model mapped too, on either side of it.
        let models = ModelMap::from_iter([("*", "pinned")]);
        let out = prep(
            r#"{"stream_options":null,"model":"m","stream":true}"#,
            &models,
            true,
        );
        assert_eq!(
            out.body,
            r#"{"stream_options":{"include_usage":true},"model":"pinned","stream":true}"#
        );
    }

    /// Anthropic's prompt-cache breakpoints are taken off every message, part and
    /// tool before an OpenAI-compatible provider sees them; the rest means the
    /// same, and a stream still asks for usage.
    #[test]
    fn prompt_cache_breakpoints_are_taken_out() {
        let body = serde_json::json!({
            "model": "m",
            "stream": true,
            "messages": [
                {"role": "system", "content": [
                    {"type": "text", "text": "Rules.", "cache_control": {"type": "ephemeral"}}
                ]},
                {"role": "user", "content": "Q", "cache_control": {"type": "ephemeral"}}
            ],
            "tools": [{"type": "function", "function": {"name": "f"},
                       "cache_control": {"type": "ephemeral"}}]
        })
        .to_string();
        let out = prepare_request(
            &ReplayBody::from(body),
            &ModelMap::from_iter([("m", "n")]),
            true,
        )
        .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({
                "model": "n",
                "stream": true,
                "stream_options": {"include_usage": true},
                "messages": [
                    {"role": "system", "content": [{"type": "text", "text": "Rules."}]},
                    {"role": "user", "content": "Q"}
                ],
                "tools": [{"type": "function", "function": {"name": "f"}}]
            })
        );
        assert_eq!(out.model.as_deref(), Some("n"));
        assert_eq!(out.requested_model.as_deref(), Some("m"));
    }

    #[test]
    fn both_edits_at_once() {
        let models = ModelMap::from_iter([("*", "pinned")]);
        let out = prep(r#"  {"stream":true,"model":"m"}"#, &models, true);
        assert_eq!(
            out.body,
            r#"  {"stream_options":{"include_usage":true},"stream":true,"model":"pinned"}"#
        );
        serde_json::from_slice::<serde_json::Value>(&out.body).unwrap();
    }

    #[test]
    fn bad_bodies_are_refused_not_panicked() {
        for body in ["[1,2]", "{\"model\":3}", "{\"model\":\"x\"", "\u{0}", "nul"] {
            assert!(
                prepare_request(&ReplayBody::from(body), &ModelMap::new(), true).is_err(),
                "{body}"
            );
        }
        assert!(
            prepare_request(&ReplayBody::empty(), &ModelMap::new(), true)
                .unwrap()
                .model
                .is_none()
        );
    }

    #[test]
    fn prepare_request_refuses_non_object_bodies() {
        let models = ModelMap::from_iter([("*", "pinned")]);
        for body in [
            r#"["m", true]"#,
            r#"  ["smart",true,{"include_usage":false}]"#,
            "[]",
            r#""model""#,
            "42",
            "null",
            "true",
        ] {
            let err = prepare_request(&ReplayBody::from(body), &models, true).unwrap_err();
            assert!(err.message().contains("JSON object"), "{body}: {err}");
        }
        // An object (even with leading whitespace) still passes.
        assert_eq!(
            prep(" \n{\"model\":\"m\"}", &models, true).model.as_deref(),
            Some("pinned")
        );
    }

    #[test]
    fn absurd_usage_counts_do_not_reject_the_answer() {
        for (usage, want) in [
            (
                r#"{"prompt_tokens":1e20,"completion_tokens":-1}"#,
                (u64::MAX, 0),
            ),
            (
                r#"{"prompt_tokens":18446744073709551616,"completion_tokens":2.9}"#,
                (u64::MAX, 2),
            ),
            (r#"{"prompt_tokens":"12","completion_tokens":null}"#, (0, 0)),
            (
                r#"{"prompt_tokens":[1],"completion_tokens":{"a":1}}"#,
                (0, 0),
            ),
            (r#"{"prompt_tokens":-0.0,"completion_tokens":7}"#, (0, 7)),
        ] {
            let body = format!(r#"{{"choices":[],"usage":{usage}}}"#);
            let u = response_usage(body.as_bytes()).unwrap().unwrap();
            assert_eq!((u.prompt_tokens, u.completion_tokens), want, "{usage}");
        }
    }

    /// `quick_usage` reads what serde reads, or gives up.
    fn agrees(body: &[u8]) -> Result<(), String> {
        let slow = serde_usage(body).map_err(|e| e.to_string());
        if let Ok(quick) = quick_usage(body)
            && Ok(quick) != slow
        {
            return Err(format!(
                "{:?}: quick {quick:?}, serde {slow:?}",
                String::from_utf8_lossy(body)
            ));
        }
        let both = response_usage(body).map_err(|e| e.to_string());
        if both != slow {
            return Err(format!(
                "{:?}: {both:?} != {slow:?}",
                String::from_utf8_lossy(body)
            ));
        }
        Ok(())
    }

    #[test]
    fn the_quick_usage_reader_agrees_with_serde() {
        let plain = br#"{"id":"c","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"h\u00e9 \"q\"","refusal":null,"annotations":[]},"logprobs":null,"finish_reason":"stop"}],"usage":{"prompt_tokens":11,"completion_tokens":7,"total_tokens":18,"prompt_tokens_details":{"cached_tokens":0}},"service_tier":"default"}"#;
        assert_eq!(
            quick_usage(plain),
            Ok(Some(WireUsage {
                prompt_tokens: 11,
                completion_tokens: 7,
                cached_tokens: 0,
            }))
        );
        let cached = br#"{"usage":{"prompt_tokens":2048,"completion_tokens":7,"prompt_tokens_details":{"audio_tokens":0,"cached_tokens":1920}}}"#;
        assert_eq!(quick_usage(cached).unwrap().unwrap().cached_tokens, 1920);
        let bodies: &[&[u8]] = &[
            plain,
            b"{}",
            b" {\"usage\":null} ",
            br#"{"usage":{}}"#,
            br#"{"choices":[{"usage":{"prompt_tokens":9}}],"x":"\"usage\":{}"}"#,
            br#"{"usage":{"prompt_tokens":1},"usage":null}"#,
            br#"{"usage":{"prompt_tokens":1,"prompt_tokens":2}}"#,
            cached,
            br#"{"usage":{"prompt_tokens_details":null}}"#,
            br#"{"usage":{"prompt_tokens_details":5}}"#,
            br#"{"usage":{"prompt_tokens_details":[1,{"cached_tokens":3}]}}"#,
            br#"{"usage":{"prompt_tokens_details":{"cached_tokens":"9"}}}"#,
            br#"{"usage":{"prompt_tokens_details":{"cached_tokens":4,"cached_tokens":6}}}"#,
            br#"{"usage":{"prompt_tokens_details":{},"prompt_tokens_details":{}}}"#,
            br#"{"usage":{"prompt_tokens_details":{"cached_tokens":2.5,"x":[{}]}}}"#,
            br#"{"usage":{"prompt_tokens":"3","completion_tokens":[1,{"a":2}]}}"#,
            br#"{"usage":{"prompt_tokens":true,"completion_tokens":null}}"#,
            br#"{"usage":{"prompt_tokens":-1,"completion_tokens":2.5}}"#,
            br#"{"usage":{"prompt_tokens":18446744073709551616,"completion_tokens":1e3}}"#,
            br#"{"usage":[1,2]}"#,
            br#"{"usage":"x"}"#,
            br#"{"usage":5}"#,
            br#"{"us\u0061ge":{"prompt_tokens":4}}"#,
            br#"[{"prompt_tokens":4}]"#,
            b"[]",
            b"null",
            b"\"usage\"",
            b"",
            b"{oops",
            br#"{"usage":{"prompt_tokens":1}"#,
            br#"{"usage":{"prompt_tokens":1}} x"#,
            br#"{"usage":{"prompt_tokens":1},}"#,
            br#"{"a":"\ud800","usage":{"prompt_tokens":1}}"#,
            br#"{"a":1e999,"usage":{"prompt_tokens":1}}"#,
            b"{\"a\":\"\xff\",\"usage\":{\"prompt_tokens\":1}}",
            b"{\"\xff\":1,\"usage\":{\"prompt_tokens\":1}}",
            b"{\"a\":\"\x01\"}",
        ];
        for body in bodies {
            agrees(body).unwrap();
        }
        let deep = format!(
            r#"{{"x":{}{},"usage":{{"prompt_tokens":2}}}}"#,
            "[".repeat(300),
            "]".repeat(300)
        );
        agrees(deep.as_bytes()).unwrap();
        assert_eq!(
            response_usage(deep.as_bytes())
                .unwrap()
                .unwrap()
                .prompt_tokens,
            2
        );
    }

    /// Any JSON value built of the keys the readers look for.
    fn json_value() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        use serde_json::Value;
        let words = || {
            prop::sample::select(vec![
                "usage",
                "prompt_tokens",
                "completion_tokens",
                "choices",
                "h\u{e9}llo \"q\"",
                "",
            ])
        };
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            words().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec((words(), inner), 0..5).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    /// The first `mentions_usage`, a window at a time: the reference.
    fn mentions_usage_by_windows(data: &[u8]) -> bool {
        const KEY: &[u8] = b"\"usage\"";
        let mut rest = data;
        while let Some(at) = rest.windows(KEY.len()).position(|w| w == KEY) {
            rest = &rest[at + KEY.len()..];
            let after = rest.trim_ascii_start();
            let null = after
                .strip_prefix(b":")
                .is_some_and(|v| v.trim_ascii_start().starts_with(b"null"));
            if !null {
                return true;
            }
        }
        false
    }

    proptest::proptest! {
        #[test]
        fn mentions_usage_agrees_with_the_window_search(
            pieces in proptest::collection::vec(
                proptest::sample::select(vec![
                    "\"usage\"", "\"usage", "usage\"", ":", " ", "\n", "null", "nul", "{", "}", "\"", "x",
                ]),
                0..16,
            )
        ) {
            let data = pieces.concat();
            proptest::prop_assert_eq!(
                mentions_usage(data.as_bytes()),
                mentions_usage_by_windows(data.as_bytes()),
                "{:?}", data
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn the_quick_usage_reader_agrees_on_any_json(
            v in json_value(),
            w in json_value(),
            cut in 0usize..400,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let wrapped = serde_json::json!({"choices": [v], "usage": w, "x": v}).to_string();
            let counts = serde_json::json!({"usage": {"prompt_tokens": v, "completion_tokens": w}})
                .to_string();
            let details = serde_json::json!({"usage": {"prompt_tokens_details": v,
                "completion_tokens": 1}, "u": {"prompt_tokens_details": {"cached_tokens": w}}})
                .to_string();
            let cached = serde_json::json!({"usage": {"prompt_tokens_details": {"cached_tokens": w, "v": v}}})
                .to_string();
            for text in [v.to_string(), wrapped, counts, details, cached] {
                let body = text.as_bytes();
                proptest::prop_assert!(agrees(body).is_ok(), "{:?}", agrees(body));
                // Hostile: cut short, or one byte changed.
                let at = cut.min(body.len());
                proptest::prop_assert!(agrees(&body[..at]).is_ok(), "{:?}", agrees(&body[..at]));
                let mut bent = body.to_vec();
                if let Some(b) = bent.get_mut(at) {
                    *b = byte;
                }
                proptest::prop_assert!(agrees(&bent).is_ok(), "{:?}", agrees(&bent));
            }
        }
    }

    #[test]
    fn usage_scan() {
        let mut s = StreamScan::default();
        s.event(br#"{"choices":[{"delta":{"content":"hi"}}],"usage":null}"#);
        assert!(s.usage.is_none());
        s.event(br#"{"choices":[],"usage":{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}"#);
        assert_eq!(s.usage.unwrap().prompt_tokens, 7);
        s.event(b"[DONE]");
        assert!(s.done);
        assert!(response_usage(b"{oops").is_err());
        assert_eq!(response_usage(b"{}").unwrap(), None);
    }
}
