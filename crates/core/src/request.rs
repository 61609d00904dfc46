//! What a request asks for, read once from its buffered body.
//!
//! Several layers need to know something about a request before any provider
//! answers: the routers its model, whether it defines tools and its size; the quota
//! tracker a token estimate and its completion limit; output validation whether the
//! caller set that limit; the provider adapter the stream flag and where the model
//! name sits (to map it without rewriting the rest). [`RequestInfo`] holds all of
//! it, read in one pass over the JSON body (OpenAI chat completions or Anthropic
//! messages shape), and a [`ReplayBody`](crate::replay::ReplayBody) carries it with
//! its bytes: the first layer that asks parses, the others read the result.
//! [`ReplayLayer`](crate::replay::ReplayLayer) shares that result between every copy
//! of the request made for another attempt, so a request is parsed once however
//! often it is resent.
//!
//! Each field is read leniently, on its own: an odd `tools` (`true`, an object) does
//! not hide the `model`, nor an odd `model` the tools. A body that is not a JSON
//! object reads as "nothing asked for", with the reason kept for the provider
//! adapter, which refuses to forward it.
//!
//! ```
//! use tower_failover_core::replay::ReplayBody;
//!
//! let body = ReplayBody::from(
//!     r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":64,
//!        "messages":[{"role":"user","content":"hi"}],
//!        "tools":[{"type":"function","function":{"name":"f"}}]}"#,
//! );
//! let info = body.info(); // parsed here, once
//! assert_eq!(info.model(), Some("gpt-4o-mini"));
//! assert!(info.stream() && info.tools());
//! assert_eq!(info.max_tokens(), Some(64));
//! assert!(info.prompt_tokens() > 30);
//! assert!(std::ptr::eq(info, body.info())); // read again, not parsed again
//! ```

use std::cell::Cell;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use serde::Deserializer;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use crate::tokens::{BYTES_PER_TOKEN, estimate_tokens};

/// Completion limits at or past this are not a limit anyone asked for (a typo, an
/// attack on a token quota): they are ignored for estimates.
const MAX_LIMIT: u64 = 1_000_000_000_000;

thread_local! {
    static PARSES: Cell<u64> = const { Cell::new(0) };
}

/// How many request bodies this thread has parsed into a [`RequestInfo`]; a test
/// hook for "parsed once" (a current-thread runtime runs a whole request on one
/// thread).
#[doc(hidden)]
pub fn parses_on_this_thread() -> u64 {
    PARSES.with(Cell::get)
}

/// Whether a body could be read as a JSON object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shape {
    /// Empty or only whitespace (a `GET`, a bodyless `POST`).
    Empty,
    /// A JSON object.
    Object,
    /// Anything else: not UTF-8, not an object, or not JSON at all (see
    /// [`RequestInfo::problem`]).
    Invalid,
}

/// What a request body asks for; see the [module documentation](self).
///
/// Cheap to clone: it holds a reference-counted handle on the body's bytes.
#[derive(Clone)]
pub struct RequestInfo {
    body: Bytes,
    shape: Shape,
    problem: Option<Arc<str>>,
    fields: Fields,
}

#[derive(Clone)]
enum Model {
    /// The name is this range of the body (it had no escapes).
    Span(Range<usize>),
    /// The name, unescaped.
    Owned(Arc<str>),
}

impl fmt::Debug for RequestInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The model name is routing data; the body is the caller's content: size only.
        f.debug_struct("RequestInfo")
            .field("len", &self.body.len())
            .field("shape", &self.shape)
            .field("model", &self.model())
            .field("stream", &self.stream())
            .field("tools", &self.tools())
            .field("max_tokens", &self.max_tokens())
            .finish_non_exhaustive()
    }
}

impl RequestInfo {
    /// Reads `body` (a reference-counted handle is kept; nothing is copied).
    pub fn parse(body: Bytes) -> RequestInfo {
        PARSES.with(|n| n.set(n.get() + 1));
        let mut info = RequestInfo {
            body,
            shape: Shape::Invalid,
            problem: None,
            fields: Fields::default(),
        };
        let invalid = |info: &mut RequestInfo, why: &str| {
            info.problem = Some(why.into());
        };
        let Some(first) = info.body.iter().find(|b| !b.is_ascii_whitespace()) else {
            info.shape = Shape::Empty;
            return info;
        };
        // serde reads a struct from an array too (fields by position): objects only.
        if *first != b'{' {
            invalid(&mut info, "request body must be a JSON object");
            return info;
        }
        // JSON is UTF-8, and serde skips the values it ignores without checking
        // them: checked here once, then parsed as text (no second check).
        let Ok(text) = std::str::from_utf8(&info.body) else {
            invalid(&mut info, "request body is not UTF-8");
            return info;
        };
        let mut fields = Fields::default();
        let mut de = serde_json::Deserializer::from_str(text);
        let read = Top {
            base: text.as_ptr() as usize,
            out: &mut fields,
        }
        .deserialize(&mut de)
        .and_then(|()| de.end());
        if let Err(e) = read {
            let why = format!("request body is not a JSON object: {e}");
            invalid(&mut info, &why);
            return info;
        }
        info.shape = Shape::Object;
        info.fields = fields;
        info
    }

    /// Whether the body was empty, a JSON object, or neither.
    pub fn shape(&self) -> Shape {
        self.shape
    }

    /// Whether the body is a JSON object.
    pub fn is_object(&self) -> bool {
        self.shape == Shape::Object
    }

    /// Why the body is [`Shape::Invalid`], in words fit for the caller (no body
    /// content beyond a parser's position).
    pub fn problem(&self) -> Option<&str> {
        self.problem.as_deref()
    }

    /// The bytes the information was read from.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The requested `model`, when it is a string.
    pub fn model(&self) -> Option<&str> {
        match self.fields.model.as_ref()? {
            // A range between a string's quotes in text checked to be UTF-8.
            Model::Span(r) => std::str::from_utf8(self.body.get(r.clone())?).ok(),
            Model::Owned(s) => Some(s),
        }
    }

    /// Where the `model` value (any JSON value, quotes included) sits in the body,
    /// for an adapter that replaces it without touching the rest.
    pub fn model_span(&self) -> Option<Range<usize>> {
        self.fields.model_span.clone()
    }

    /// Whether the body has a `model` that is not a string.
    pub fn model_is_odd(&self) -> bool {
        self.fields.model_span.is_some() && self.fields.model.is_none()
    }

    /// Whether the caller asked for a stream (`"stream": true`).
    pub fn stream(&self) -> bool {
        self.fields.stream == Some(true)
    }

    /// Whether `stream` is there but neither a boolean nor `null`.
    pub fn stream_is_odd(&self) -> bool {
        self.fields.stream_odd
    }

    /// Whether the body has a `stream_options` key (whatever its value, `null`
    /// included).
    pub fn has_stream_options(&self) -> bool {
        self.fields.stream_options
    }

    /// Whether the request defines tools: `tools` (or the legacy `functions`) is a
    /// non-empty list.
    pub fn tools(&self) -> bool {
        self.fields.tools || self.fields.functions
    }

    /// The completion limit the request sets: the first of `max_tokens`,
    /// `max_completion_tokens` and `max_output_tokens` at the top level that is a
    /// non-negative number below 10^12 (fractions truncated).
    pub fn max_tokens(&self) -> Option<u64> {
        let f = &self.fields;
        [f.max_tokens, f.max_completion_tokens, f.max_output_tokens]
            .into_iter()
            .flatten()
            .find(|n| *n < MAX_LIMIT)
    }

    /// Whether the request names a completion limit at all: any non-null
    /// `max_tokens`, `max_completion_tokens` or `max_output_tokens` at the top level.
    /// An answer cut at that limit is the answer the caller asked for.
    pub fn sets_max_tokens(&self) -> bool {
        self.fields.sets_limit
    }

    /// The body's size in bytes.
    pub fn len(&self) -> usize {
        self.body.len()
    }

    /// Whether the body is empty.
    pub fn is_empty(&self) -> bool {
        self.body.is_empty()
    }

    /// The prompt's size in tokens, estimated from the body's size at
    /// [`BYTES_PER_TOKEN`] bytes per token.
    pub fn prompt_tokens(&self) -> u64 {
        estimate_tokens(self.body.len() as u64, BYTES_PER_TOKEN)
    }
}

/// The fields read from the top-level object.
#[derive(Clone, Default)]
struct Fields {
    model: Option<Model>,
    model_span: Option<Range<usize>>,
    stream: Option<bool>,
    stream_odd: bool,
    stream_options: bool,
    tools: bool,
    functions: bool,
    max_tokens: Option<u64>,
    max_completion_tokens: Option<u64>,
    max_output_tokens: Option<u64>,
    sets_limit: bool,
}

/// Reads the top-level object into `out`; `base` is the text's address, to turn
/// borrowed raw values into ranges.
struct Top<'o> {
    base: usize,
    out: &'o mut Fields,
}

impl<'de> DeserializeSeed<'de> for Top<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

enum Key {
    Model,
    Stream,
    StreamOptions,
    Tools,
    Functions,
    MaxTokens,
    MaxCompletionTokens,
    MaxOutputTokens,
    Other,
}

impl Key {
    fn name(&self) -> &'static str {
        match self {
            Key::Model => "model",
            Key::Stream => "stream",
            Key::StreamOptions => "stream_options",
            Key::Tools => "tools",
            Key::Functions => "functions",
            Key::MaxTokens => "max_tokens",
            Key::MaxCompletionTokens => "max_completion_tokens",
            Key::MaxOutputTokens => "max_output_tokens",
            Key::Other => "",
        }
    }
}

impl<'de> de::Deserialize<'de> for Key {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Key, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Key;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a key")
            }
            fn visit_str<E>(self, v: &str) -> Result<Key, E> {
                Ok(match v {
                    "model" => Key::Model,
                    "stream" => Key::Stream,
                    "stream_options" => Key::StreamOptions,
                    "tools" => Key::Tools,
                    "functions" => Key::Functions,
                    "max_tokens" => Key::MaxTokens,
                    "max_completion_tokens" => Key::MaxCompletionTokens,
                    "max_output_tokens" => Key::MaxOutputTokens,
                    _ => Key::Other,
                })
            }
        }
        d.deserialize_identifier(V)
    }
}

impl<'de> Visitor<'de> for Top<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let out = self.out;
        let mut seen = 0u16;
        while let Some(key) = map.next_key::<Key>()? {
            if let Key::Other = key {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            // A second value for a key would make the body's meaning depend on the
            // parser that reads it: refused, as serde's derive does.
            let bit = 1u16 << key_index(&key);
            if seen & bit != 0 {
                return Err(de::Error::duplicate_field(key.name()));
            }
            seen |= bit;
            match key {
                Key::Model => {
                    let raw: &'de RawValue = map.next_value()?;
                    let text = raw.get();
                    let start = text.as_ptr() as usize - self.base;
                    out.model_span = Some(start..start + text.len());
                    out.model = model_name(text, start);
                }
                Key::Stream => match map.next_value::<Kind>()? {
                    Kind::Bool(b) => out.stream = Some(b),
                    Kind::Null => {}
                    _ => out.stream_odd = true,
                },
                Key::StreamOptions => {
                    map.next_value::<IgnoredAny>()?;
                    out.stream_options = true;
                }
                Key::Tools => out.tools = map.next_value::<Kind>()?.is_non_empty_list(),
                Key::Functions => out.functions = map.next_value::<Kind>()?.is_non_empty_list(),
                Key::MaxTokens | Key::MaxCompletionTokens | Key::MaxOutputTokens => {
                    let kind = map.next_value::<Kind>()?;
                    out.sets_limit |= !matches!(kind, Kind::Null);
                    let n = kind.count();
                    match key {
                        Key::MaxTokens => out.max_tokens = n,
                        Key::MaxCompletionTokens => out.max_completion_tokens = n,
                        _ => out.max_output_tokens = n,
                    }
                }
                Key::Other => {}
            }
        }
        Ok(())
    }
}

fn key_index(key: &Key) -> usize {
    match key {
        Key::Model => 0,
        Key::Stream => 1,
        Key::StreamOptions => 2,
        Key::Tools => 3,
        Key::Functions => 4,
        Key::MaxTokens => 5,
        Key::MaxCompletionTokens => 6,
        Key::MaxOutputTokens => 7,
        Key::Other => 8,
    }
}

/// The model name in the raw JSON value `text` found at `start`: a range of the
/// body when the string has no escapes, an unescaped copy when it has.
fn model_name(text: &str, start: usize) -> Option<Model> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Model::Span(start + 1..start + 1 + inner.len()));
    }
    serde_json::from_str::<String>(text)
        .ok()
        .map(|s| Model::Owned(s.into()))
}

/// What kind of JSON value a field holds; contents are skipped.
enum Kind {
    Null,
    Bool(bool),
    /// A number, as a count: non-negative, fractions truncated (`None` otherwise).
    Number(Option<u64>),
    Str,
    List {
        empty: bool,
    },
    Object,
}

impl Kind {
    fn is_non_empty_list(&self) -> bool {
        matches!(self, Kind::List { empty: false })
    }

    fn count(&self) -> Option<u64> {
        match self {
            Kind::Number(n) => *n,
            _ => None,
        }
    }
}

impl<'de> de::Deserialize<'de> for Kind {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Kind, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Kind;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_unit<E>(self) -> Result<Kind, E> {
                Ok(Kind::Null)
            }
            fn visit_none<E>(self) -> Result<Kind, E> {
                Ok(Kind::Null)
            }
            fn visit_bool<E>(self, v: bool) -> Result<Kind, E> {
                Ok(Kind::Bool(v))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Kind, E> {
                Ok(Kind::Number(Some(v)))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Kind, E> {
                Ok(Kind::Number(u64::try_from(v).ok()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Kind, E> {
                // `as` saturates; NaN cannot come from JSON.
                Ok(Kind::Number((v >= 0.0).then_some(v as u64)))
            }
            fn visit_str<E>(self, _: &str) -> Result<Kind, E> {
                Ok(Kind::Str)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Kind, A::Error> {
                let mut empty = true;
                while seq.next_element::<IgnoredAny>()?.is_some() {
                    empty = false;
                }
                Ok(Kind::List { empty })
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Kind, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Kind::Object)
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(s: &str) -> RequestInfo {
        RequestInfo::parse(Bytes::copy_from_slice(s.as_bytes()))
    }

    #[test]
    fn reads_each_field() {
        let i = info(
            r#" {"messages":[],"model":"claude-haiku-4-5","stream":true,"stream_options":null,
                 "tools":[{"name":"f"}],"max_completion_tokens":64}"#,
        );
        assert!(i.is_object());
        assert_eq!(i.model(), Some("claude-haiku-4-5"));
        let span = i.model_span().unwrap();
        assert_eq!(&i.body()[span], br#""claude-haiku-4-5""#);
        assert!(i.stream() && i.has_stream_options() && i.tools());
        assert_eq!(i.max_tokens(), Some(64));
        assert!(i.sets_max_tokens());
        assert_eq!(i.prompt_tokens(), (i.len() as u64).div_ceil(4));
    }

    #[test]
    fn odd_fields_do_not_hide_the_others() {
        let i = info(r#"{"tools":true,"model":"m","functions":{"a":1},"stream":"yes"}"#);
        assert_eq!(i.model(), Some("m"));
        assert!(!i.tools() && !i.stream() && i.stream_is_odd());
        let i = info(r#"{"model":7,"tools":[{}],"stream":null}"#);
        assert_eq!(i.model(), None);
        assert!(i.model_is_odd() && i.tools() && !i.stream_is_odd());
        let i = info(r#"{"model":"a\u0062c","functions":[1]}"#);
        assert_eq!(i.model(), Some("abc"));
        assert!(i.tools());
        assert!(!info(r#"{"tools":[]}"#).tools());
    }

    #[test]
    fn completion_limits() {
        let cases: &[(&str, Option<u64>, bool)] = &[
            (r#"{"max_tokens":256}"#, Some(256), true),
            (r#"{"max_tokens" :  12 , "x":1}"#, Some(12), true),
            (r#"{"max_tokens":12.9}"#, Some(12), true),
            (r#"{"max_output_tokens":5}"#, Some(5), true),
            (r#"{"max_tokens":null}"#, None, false),
            (r#"{"max_tokens":-3}"#, None, true),
            (r#"{"max_tokens":"12"}"#, None, true),
            (r#"{"max_tokens":99999999999999999}"#, None, true),
            (
                r#"{"max_tokens":"x","max_completion_tokens":9}"#,
                Some(9),
                true,
            ),
            (r#"{"nested":{"max_tokens":5}}"#, None, false),
            (r#"{"messages":[]}"#, None, false),
        ];
        for (json, want, sets) in cases {
            let i = info(json);
            assert_eq!(i.max_tokens(), *want, "{json}");
            assert_eq!(i.sets_max_tokens(), *sets, "{json}");
        }
    }

    #[test]
    fn what_is_not_an_object() {
        assert_eq!(info("").shape(), Shape::Empty);
        assert_eq!(info(" \n").shape(), Shape::Empty);
        for (body, why) in [
            ("[1,2]", "must be a JSON object"),
            ("\"model\"", "must be a JSON object"),
            ("{\"model\":\"x\"", "not a JSON object"),
            ("{\"a\":1} x", "not a JSON object"),
            (r#"{"model":"a","model":"b"}"#, "duplicate field `model`"),
        ] {
            let i = info(body);
            assert_eq!(i.shape(), Shape::Invalid, "{body}");
            assert!(
                i.problem().unwrap().contains(why),
                "{body}: {:?}",
                i.problem()
            );
            assert_eq!(i.model(), None);
        }
        let i = RequestInfo::parse(Bytes::from_static(b"{\"x\":\"\xff\"}"));
        assert_eq!(i.problem(), Some("request body is not UTF-8"));
    }

    #[test]
    fn debug_shows_no_content() {
        let i = info(r#"{"model":"m","messages":[{"role":"user","content":"secret"}]}"#);
        let s = format!("{i:?}");
        assert!(s.contains("\"m\"") && !s.contains("secret"), "{s}");
    }
}
