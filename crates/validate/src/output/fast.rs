//! The facts of a buffered OpenAI-shaped body, read without building a `Value`.
//!
//! Parsing the whole answer into a `serde_json::Value` (every string and every
//! object a heap allocation: about 40 for a short chat completion) only to read a
//! few fields cost most of validation's allocations (issue 19). This reads the same
//! fields straight from the bytes with core's strict [`Reader`], borrowing strings,
//! and skips everything else without allocating (and without serde's visitors,
//! which cost more than the reading itself).
//!
//! It reads only what it can read exactly as [`Facts::read_json`] reads a `Value`,
//! and gives up (`None`) otherwise, for the `Value` path to decide: a body that is
//! not a JSON object or not JSON at all, anything the reader cannot vouch for (see
//! [`tower_failover_core::json`]: a key with escapes, a lone surrogate, an
//! extreme number, deep nesting), a key read twice (a `Value` keeps the last one),
//! `message.content` as an array of parts, an Anthropic body.

use std::borrow::Cow;

use serde_json::Value;
use tower_failover_core::json::{self, Kind, Outline, Reader, Unsure};

use serde::de::IgnoredAny;

use super::{
    Choice as EventChoice, Choices as EventChoices, DeltaContent, Event, Facts, OpenAiDelta, Said,
    Wire, error_message,
};

/// The facts of `body`, or `None` when only the `Value` path can tell them.
///
/// `outline`, when the provider left one for exactly these bytes, says where the
/// top-level members are: only the members read here are read again.
pub(super) fn read(
    body: &[u8],
    wire: Option<Wire>,
    cap: usize,
    outline: Option<&Outline>,
) -> Option<Facts> {
    if wire == Some(Wire::Anthropic) {
        return None;
    }
    let doc = match outline {
        Some(outline) => outlined_doc(outline, body).ok()?,
        None => read_doc(body).ok()?,
    };
    let mut facts = Facts::new(wire, cap);
    if let Some(err) = &doc.error {
        facts.error = Some(error_message(err));
    } else if doc.ty.as_str() == Some("error") {
        facts.error = Some("error".into());
    }
    if facts.wire.is_none() {
        if doc.choices.is_some() {
            facts.wire = Some(Wire::OpenAi);
        } else if doc.content || doc.ty.as_str() == Some("message") {
            // Anthropic's shape: the `Value` path reads it.
            return None;
        } else {
            facts.shape_error =
                Some("neither `choices` (OpenAI) nor `content` (Anthropic) present".into());
            return Some(facts);
        }
    }
    let first = match doc.choices {
        None | Some(Choices::NotArray) => {
            facts.shape_error = Some("no `choices` array".into());
            return Some(facts);
        }
        Some(Choices::Empty) => {
            facts.shape_error = Some("`choices` is empty".into());
            return Some(facts);
        }
        Some(Choices::First(first)) => first,
    };
    let Choice::Object {
        finish_reason,
        message,
    } = first
    else {
        facts.shape_error = Some("`choices[0]` has no `message` object".into());
        return Some(facts);
    };
    facts.finish_reason = finish_reason.as_str().map(str::to_owned);
    let Some(message) = message else {
        facts.shape_error = Some("`choices[0]` has no `message` object".into());
        return Some(facts);
    };
    match message.content {
        Shallow::Missing | Shallow::Null => {}
        Shallow::Str(s) => facts.push_content(&s),
        // Parts: the `Value` path reads them.
        Shallow::Array { .. } => return None,
        Shallow::Object | Shallow::Other => {
            facts.shape_error = Some("`message.content` is neither a string nor parts".into());
        }
    }
    if let Some(r) = message.refusal.as_str() {
        facts.push_refusal(r);
    }
    let tools = matches!(message.tool_calls, Shallow::Array { empty: false });
    let function = matches!(message.function_call, Shallow::Object);
    facts.tool_calls = tools || function;
    facts.audio = matches!(message.audio, Shallow::Object);
    Some(facts)
}

/// Sets `slot` once; a key seen twice gives up (a `Value` keeps the last one).
fn once<T>(slot: &mut Option<T>, value: T) -> json::Result<()> {
    if slot.is_some() {
        return Err(Unsure);
    }
    *slot = Some(value);
    Ok(())
}

/// The top level of the body.
struct Doc<'a> {
    error: Option<Value>,
    ty: Shallow<'a>,
    choices: Option<Choices<'a>>,
    content: bool,
}

/// The members of the top level [`read_doc`] looks at, as they are found.
#[derive(Default)]
struct DocMembers<'a> {
    error: Option<Option<Value>>,
    ty: Option<Shallow<'a>>,
    choices: Option<Choices<'a>>,
    content: Option<()>,
}

impl<'a> DocMembers<'a> {
    /// Reads the member `key` whose value `r` is at, if it is one of ours; returns
    /// whether it was (the value is then consumed).
    fn member(&mut self, key: &[u8], r: &mut Reader<'a>, body: &'a [u8]) -> json::Result<bool> {
        match key {
            b"error" => once(&mut self.error, error_value(r, body)?)?,
            b"type" => once(&mut self.ty, shallow(r)?)?,
            b"choices" => once(&mut self.choices, read_choices(r)?)?,
            b"content" => {
                r.skip()?;
                once(&mut self.content, ())?;
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn doc(self) -> Doc<'a> {
        Doc {
            error: self.error.flatten(),
            ty: self.ty.unwrap_or(Shallow::Missing),
            choices: self.choices,
            content: self.content.is_some(),
        }
    }
}

fn read_doc(body: &[u8]) -> json::Result<Doc<'_>> {
    let mut r = Reader::new(body);
    r.object()?;
    let mut members = DocMembers::default();
    let mut first = true;
    while let Some(key) = r.key(&mut first)? {
        if !members.member(key, &mut r, body)? {
            r.skip()?;
        }
    }
    r.end()?;
    Ok(members.doc())
}

/// [`read_doc`] through an outline of `body`: the other members are not read at
/// all (the outline's read vouched for them).
fn outlined_doc<'a>(outline: &'a Outline, body: &'a [u8]) -> json::Result<Doc<'a>> {
    let mut members = DocMembers::default();
    for (key, mut r) in outline.members() {
        members.member(key, &mut r, body)?;
    }
    Ok(members.doc())
}

/// `choices`: not an array, empty, or its first element.
enum Choices<'a> {
    NotArray,
    Empty,
    First(Choice<'a>),
}

fn read_choices<'a>(r: &mut Reader<'a>) -> json::Result<Choices<'a>> {
    if r.peek()? != Kind::Array {
        r.skip()?;
        return Ok(Choices::NotArray);
    }
    r.array()?;
    let mut first = true;
    if !r.element(&mut first)? {
        return Ok(Choices::Empty);
    }
    let choice = read_choice(r)?;
    while r.element(&mut first)? {
        r.skip()?;
    }
    Ok(Choices::First(choice))
}

/// `choices[0]`: an object (its `finish_reason` and `message`), or anything else.
enum Choice<'a> {
    Object {
        finish_reason: Shallow<'a>,
        /// `None` when there is no `message` or it is not an object.
        message: Option<Message<'a>>,
    },
    Other,
}

fn read_choice<'a>(r: &mut Reader<'a>) -> json::Result<Choice<'a>> {
    if r.peek()? != Kind::Object {
        r.skip()?;
        return Ok(Choice::Other);
    }
    r.object()?;
    let (mut finish_reason, mut message) = (None, None);
    let mut first = true;
    while let Some(key) = r.key(&mut first)? {
        match key {
            b"finish_reason" => once(&mut finish_reason, shallow(r)?)?,
            b"message" => once(&mut message, read_message(r)?)?,
            _ => {
                r.skip()?;
            }
        }
    }
    Ok(Choice::Object {
        finish_reason: finish_reason.unwrap_or(Shallow::Missing),
        message: message.flatten(),
    })
}

/// `choices[0].message`'s fields, as `read_openai` reads them.
struct Message<'a> {
    content: Shallow<'a>,
    refusal: Shallow<'a>,
    tool_calls: Shallow<'a>,
    function_call: Shallow<'a>,
    audio: Shallow<'a>,
}

/// A `message` value: `Some` when it is an object.
fn read_message<'a>(r: &mut Reader<'a>) -> json::Result<Option<Message<'a>>> {
    if r.peek()? != Kind::Object {
        r.skip()?;
        return Ok(None);
    }
    r.object()?;
    let (mut content, mut refusal, mut tool_calls, mut function_call) = (None, None, None, None);
    let mut audio = None;
    let mut first = true;
    while let Some(key) = r.key(&mut first)? {
        let slot = match key {
            b"content" => &mut content,
            b"refusal" => &mut refusal,
            b"tool_calls" => &mut tool_calls,
            b"function_call" => &mut function_call,
            b"audio" => &mut audio,
            _ => {
                r.skip()?;
                continue;
            }
        };
        once(slot, shallow(r)?)?;
    }
    let or_missing = |s: Option<Shallow<'a>>| s.unwrap_or(Shallow::Missing);
    Ok(Some(Message {
        content: or_missing(content),
        refusal: or_missing(refusal),
        tool_calls: or_missing(tool_calls),
        function_call: or_missing(function_call),
        audio: or_missing(audio),
    }))
}

/// A value seen by its kind, containers skipped: what `as_str`, `is_null`,
/// `is_object` and `as_array().is_some_and(|a| !a.is_empty())` tell of it.
enum Shallow<'a> {
    Missing,
    Null,
    Str(Cow<'a, str>),
    Array { empty: bool },
    Object,
    Other,
}

impl Shallow<'_> {
    fn as_str(&self) -> Option<&str> {
        match self {
            Shallow::Str(s) => Some(s),
            _ => None,
        }
    }
}

fn shallow<'a>(r: &mut Reader<'a>) -> json::Result<Shallow<'a>> {
    Ok(match r.peek()? {
        Kind::Null => {
            r.null()?;
            Shallow::Null
        }
        Kind::String => Shallow::Str(r.string()?),
        Kind::Array => {
            let span = r.skip()?;
            // Only blanks between the brackets: an empty array.
            let inner = &r.bytes()[span.start + 1..span.end - 1];
            Shallow::Array {
                empty: inner.trim_ascii().is_empty(),
            }
        }
        Kind::Object => {
            r.skip()?;
            Shallow::Object
        }
        Kind::Bool | Kind::Number => {
            r.skip()?;
            Shallow::Other
        }
    })
}

/// One streamed OpenAI chunk as [`Event`], read without serde's derive, or `None`
/// when serde must decide: anything the reader cannot vouch for, a key read twice,
/// a field of a type the derive would refuse (or read oddly: a struct from an
/// array), an Anthropic event (`delta`, `content_block` or `message` present).
pub(super) fn event(data: &[u8]) -> Option<Event<'_>> {
    read_event(data).ok()
}

/// An `error` field: `None` for `null` (as `filter(!is_null)`), else the value
/// parsed as the `Value` path parses it (rare: an error object with a success
/// status). `src` is the whole document the reader reads.
fn error_value(r: &mut Reader<'_>, src: &[u8]) -> json::Result<Option<Value>> {
    if r.peek()? == Kind::Null {
        r.null()?;
        return Ok(None);
    }
    let span = r.skip()?;
    serde_json::from_slice::<Value>(&src[span])
        .map(Some)
        .map_err(|_| Unsure)
}

fn read_event(data: &[u8]) -> json::Result<Event<'_>> {
    let mut r = Reader::new(data);
    r.object()?;
    let (mut ty, mut error, mut choices) = (None, None, None);
    let mut first = true;
    while let Some(key) = r.key(&mut first)? {
        match key {
            b"type" => once(&mut ty, text(&mut r)?)?,
            b"error" => once(&mut error, error_value(&mut r, data)?)?,
            b"choices" => {
                let value = if r.peek()? == Kind::Null {
                    r.null()?;
                    None
                } else {
                    Some(event_choices(&mut r)?)
                };
                once(&mut choices, value)?;
            }
            // Anthropic's, or a field the derive knows: serde reads them.
            b"delta" | b"content_block" | b"message" => return Err(Unsure),
            _ => {
                r.skip()?;
            }
        }
    }
    r.end()?;
    Ok(Event {
        ty: ty.flatten(),
        error: error.flatten(),
        choices: choices.flatten(),
        delta: None,
        content_block: None,
        message: None,
    })
}

/// An optional string: `null` or a string, as the `text` helper reads it.
fn text<'a>(r: &mut Reader<'a>) -> json::Result<Option<Cow<'a, str>>> {
    match r.peek()? {
        Kind::Null => {
            r.null()?;
            Ok(None)
        }
        Kind::String => Ok(Some(r.string()?)),
        _ => Err(Unsure),
    }
}

/// `choices`: an array, every element a chunk choice; the first of index 0 kept.
fn event_choices<'a>(r: &mut Reader<'a>) -> json::Result<EventChoices<'a>> {
    r.array()?;
    let mut kept = None;
    let mut first = true;
    while r.element(&mut first)? {
        let c = event_choice(r)?;
        if kept.is_none() && c.index.unwrap_or(0) == 0 {
            kept = Some(c);
        }
    }
    Ok(EventChoices(kept))
}

fn event_choice<'a>(r: &mut Reader<'a>) -> json::Result<EventChoice<'a>> {
    r.object()?;
    let (mut index, mut delta, mut finish_reason) = (None, None, None);
    let mut first = true;
    while let Some(key) = r.key(&mut first)? {
        match key {
            b"index" => {
                let value = match r.peek()? {
                    Kind::Null => {
                        r.null()?;
                        None
                    }
                    Kind::Number => Some(r.number()?.parse::<u64>().map_err(|_| Unsure)?),
                    _ => return Err(Unsure),
                };
                once(&mut index, value)?;
            }
            b"delta" => {
                let value = match r.peek()? {
                    Kind::Null => {
                        r.null()?;
                        None
                    }
                    Kind::Object => Some(event_delta(r)?),
                    _ => return Err(Unsure),
                };
                once(&mut delta, value)?;
            }
            b"finish_reason" => once(&mut finish_reason, text(r)?)?,
            _ => {
                r.skip()?;
            }
        }
    }
    Ok(EventChoice {
        index: index.flatten(),
        delta: delta.flatten(),
        finish_reason: finish_reason.flatten(),
    })
}

fn event_delta<'a>(r: &mut Reader<'a>) -> json::Result<OpenAiDelta<'a>> {
    r.object()?;
    let (mut content, mut refusal, mut tool_calls, mut function_call) = (None, None, None, None);
    let (mut reasoning_content, mut reasoning) = (None, None);
    let mut first = true;
    while let Some(key) = r.key(&mut first)? {
        match key {
            b"content" => once(&mut content, text(r)?)?,
            b"refusal" => once(&mut refusal, text(r)?)?,
            // Only whether it says something (a non-empty string), as `Said` reads it.
            b"reasoning_content" => once(&mut reasoning_content, said(r)?)?,
            b"reasoning" => once(&mut reasoning, said(r)?)?,
            b"tool_calls" => {
                let value = match shallow(r)? {
                    Shallow::Null => None,
                    // What the validators ask of it is only whether it is empty.
                    Shallow::Array { empty } => {
                        Some(if empty { Vec::new() } else { vec![IgnoredAny] })
                    }
                    _ => return Err(Unsure),
                };
                once(&mut tool_calls, value)?;
            }
            b"function_call" => {
                let value = match shallow(r)? {
                    Shallow::Null => None,
                    _ => Some(IgnoredAny),
                };
                once(&mut function_call, value)?;
            }
            _ => {
                r.skip()?;
            }
        }
    }
    Ok(OpenAiDelta {
        content: DeltaContent {
            text: content.flatten(),
            thinking: false,
        },
        refusal: refusal.flatten(),
        tool_calls: tool_calls.flatten(),
        function_call: function_call.flatten(),
        reasoning_content: reasoning_content.unwrap_or_default(),
        reasoning: reasoning.unwrap_or_default(),
    })
}

/// [`Said`]: whether the value is a non-empty string (any other value is read
/// and ignored).
fn said(r: &mut Reader<'_>) -> json::Result<Said> {
    Ok(Said(
        matches!(shallow(r)?, Shallow::Str(s) if !s.is_empty()),
    ))
}

#[cfg(test)]
mod tests {
    use super::super::Facts;
    use super::*;

    /// The facts both ways, as comparable text.
    /// The facts read through the outline the provider would leave beside `body`
    /// (when it leaves one), else as read without one: the two must agree.
    fn outlined(body: &[u8], wire: Option<Wire>) -> Option<String> {
        let bytes = bytes::Bytes::copy_from_slice(body);
        let outline = Outline::read(&bytes).ok();
        read(&bytes, wire, 64, outline.as_ref()).map(|f| format!("{f:?}"))
    }

    fn both(body: &str, wire: Option<Wire>) -> (Option<String>, String) {
        let fast = read(body.as_bytes(), wire, 64, None).map(|f| format!("{f:?}"));
        assert_eq!(
            outlined(body.as_bytes(), wire),
            fast,
            "through an outline: {body}"
        );
        let slow = format!("{:?}", Facts::from_value(body.as_bytes(), wire, 64).0);
        (fast, slow)
    }

    #[test]
    fn the_fast_path_reads_what_the_value_path_reads() {
        let bodies = [
            r#"{"choices":[{"message":{"role":"assistant","content":"hi","refusal":null},"finish_reason":"stop"}]}"#,
            r#"{"id":"x","object":"chat.completion","created":1,"model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"h\u00e9llo \"q\""},"logprobs":null,"finish_reason":"length"}],"usage":{"prompt_tokens":1,"completion_tokens":2,"total_tokens":3,"details":{"a":[1,2,{"b":null}]}},"system_fingerprint":null}"#,
            r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"t"}]},"finish_reason":"tool_calls"}]}"#,
            r#"{"choices":[{"message":{"content":null,"tool_calls":[]}}]}"#,
            r#"{"choices":[{"message":{"content":"","function_call":{"name":"f"}}}]}"#,
            r#"{"choices":[{"message":{"content":"","function_call":"f"}}]}"#,
            r#"{"choices":[{"message":{"content":null,"audio":{"id":"a","transcript":"Hi"}}}]}"#,
            r#"{"choices":[{"message":{"content":null,"audio":null}}]}"#,
            r#"{"choices":[{"message":{"content":5}}]}"#,
            r#"{"choices":[{"message":{"content":{"text":"x"}},"finish_reason":7}]}"#,
            r#"{"choices":[{"message":{"content":"x","refusal":"no"}}]}"#,
            r#"{"choices":[{"message":{"content":"x","refusal":["no"]}}]}"#,
            r#"{"choices":[{"message":"hi"}]}"#,
            r#"{"choices":[{"message":null,"finish_reason":"stop"}]}"#,
            r#"{"choices":[{"finish_reason":"stop"}]}"#,
            r#"{"choices":["x"]}"#,
            r#"{"choices":[[1,2]]}"#,
            r#"{"choices":[]}"#,
            r#"{"choices":null}"#,
            r#"{"choices":{"0":{}}}"#,
            r#"{"choices":"x"}"#,
            r#"{"choices":[{"message":{"content":"a"}},{"message":{"content":"b"}}]}"#,
            r#"{"error":{"message":"overloaded"},"choices":[]}"#,
            r#"{"error":"plain","choices":[{"message":{"content":"x"}}]}"#,
            r#"{"error":{"code":5},"choices":[{"message":{"content":"x"}}]}"#,
            r#"{"error":null,"choices":[{"message":{"content":"x"}}]}"#,
            r#"{"type":"error","choices":[{"message":{"content":"x"}}]}"#,
            r#"{"type":"error"}"#,
            r#"{"type":5}"#,
            r#"{}"#,
            r#"{"other":[[[[{"deep":[1e5,-2,3.5]}]]]]}"#,
            r#"{"choices":[{"message":{"content":"0123456789012345678901234567890123456789012345678901234567890123456789"}}]}"#,
            r#"{"choices":[{"message":{"content":"x"}}],"content":"also"}"#,
            // Where the fast path gives up, the Value path decides.
            r#"{"content":[{"type":"text","text":"hi"}],"stop_reason":"end_turn"}"#,
            r#"{"type":"message","content":[]}"#,
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"text":"b"}]}}]}"#,
            r#"{"choices":[],"choices":[{"message":{"content":"x"}}]}"#,
            r#"{"choices":[{"message":{"content":"a","content":"b"}}]}"#,
            r#"{"choices":[{"finish_reason":"a","finish_reason":"b","message":{}}]}"#,
            r#"{"error":"a","error":null,"choices":[]}"#,
            r#"["choices"]"#,
            r#""text""#,
            r#"null"#,
            r#"{"choices":[{"message":{"content":"x"}}]} trailing"#,
            r#"{"choices":[{"message":{"content":"x"}}]"#,
            r#"{"choices":[{"message":{"content":"\ud800"}}]}"#,
            r#"{"x":1e400,"choices":[{"message":{"content":"x"}}]}"#,
            "",
            r#"{"choices":[{"message":{"content":null,"audio":"x","audio":{"id":"a"}}}]}"#,
        ];
        for body in bodies {
            for wire in [None, Some(Wire::OpenAi), Some(Wire::Anthropic)] {
                let (fast, slow) = both(body, wire);
                if let Some(fast) = fast {
                    assert_eq!(fast, slow, "{body} ({wire:?})");
                }
            }
        }
        // The usual answers take the fast path.
        for body in &bodies[..31] {
            assert!(read(body.as_bytes(), None, 64, None).is_some(), "{body}");
        }
    }

    /// Any JSON value built of the keys and strings the readers look for.
    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let words = || {
            prop::sample::select(vec![
                "choices",
                "message",
                "content",
                "refusal",
                "tool_calls",
                "function_call",
                "finish_reason",
                "error",
                "type",
                "text",
                "stop",
                "delta",
                "index",
                "h\u{e9}llo \"q\"",
                "",
            ])
        };
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>().prop_map(Value::from),
            words().prop_map(Value::from),
        ];
        leaf.prop_recursive(5, 48, 4, move |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::vec((words(), inner), 0..5).prop_map(|kv| Value::Object(
                    kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
                )),
            ]
        })
    }

    proptest::proptest! {
        #[test]
        fn streamed_chunks_agree_on_any_json(
            v in json(),
            w in json(),
            cut in 0usize..300,
            byte in proptest::prelude::any::<u8>(),
        ) {
            let texts = [
                v.to_string(),
                serde_json::json!({"choices": [{"index": 0, "delta": v, "finish_reason": w}], "x": w})
                    .to_string(),
                serde_json::json!({"choices": [w, {"delta": {
                    "content": v, "refusal": w, "tool_calls": v, "function_call": w,
                }}], "error": w, "type": v})
                .to_string(),
            ];
            for text in &texts {
                let at = cut.min(text.len());
                let mut bent = text.as_bytes().to_vec();
                if let Some(b) = bent.get_mut(at) {
                    *b = byte;
                }
                let bent = String::from_utf8_lossy(&bent).into_owned();
                for data in [text.as_str(), text.get(..at).unwrap_or(""), bent.as_str()] {
                    let (fast, slow) = event_both(data, false);
                    proptest::prop_assert_eq!(fast, slow, "{}", data);
                }
            }
        }

        #[test]
        fn the_fast_path_agrees_on_any_json(
            v in json(),
            w in json(),
            cut in 0usize..400,
            byte in proptest::prelude::any::<u8>(),
        ) {
            // Any value, and any value where the readers look.
            let bodies = [
                v.to_string(),
                serde_json::json!({"choices": [{"message": v, "finish_reason": w}], "x": w})
                    .to_string(),
                serde_json::json!({"choices": [{"message": {
                    "content": v, "refusal": w, "tool_calls": v, "function_call": w,
                }}], "error": w, "type": v})
                .to_string(),
            ];
            for body in &bodies {
                for wire in [None, Some(Wire::OpenAi)] {
                    let (fast, slow) = both(body, wire);
                    if let Some(fast) = fast {
                        proptest::prop_assert_eq!(fast, slow, "{} ({:?})", body, wire);
                    }
                }
                // Hostile: cut short, or one byte changed.
                let at = cut.min(body.len());
                let mut bent = body.as_bytes().to_vec();
                if let Some(b) = bent.get_mut(at) {
                    *b = byte;
                }
                for bytes in [&body.as_bytes()[..at], &bent[..]] {
                    let fast = read(bytes, None, 64, None);
                    proptest::prop_assert_eq!(
                        outlined(bytes, None),
                        fast.as_ref().map(|f| format!("{f:?}")),
                        "through an outline: {:?}",
                        String::from_utf8_lossy(bytes)
                    );
                    if let Some(fast) = fast {
                        let slow = Facts::from_value(bytes, None, 64).0;
                        proptest::prop_assert_eq!(
                            format!("{fast:?}"),
                            format!("{slow:?}"),
                            "{:?}",
                            String::from_utf8_lossy(bytes)
                        );
                    }
                }
            }
        }
    }

    /// The facts of one streamed event's data, read both ways (as the data of a
    /// whole event, then already trimmed).
    fn event_both(data: &str, named_error: bool) -> (String, String) {
        let ev = tower_failover_core::sse::SseEvent {
            event: if named_error { "error" } else { "" },
            data: data.as_bytes(),
            ..Default::default()
        };
        let mut fast = Facts::new(None, 64);
        fast.on_event_with(&ev, true);
        let mut slow = Facts::new(None, 64);
        slow.on_event_with(&ev, false);
        let trimmed = data.trim();
        if trimmed != "[DONE]" {
            let mut on_data = Facts::new(None, 64);
            on_data.events = 1;
            on_data.on_data(trimmed, named_error, true);
            assert_eq!(format!("{on_data:?}"), format!("{slow:?}"), "{data:?}");
        }
        (format!("{fast:?}"), format!("{slow:?}"))
    }

    #[test]
    fn streamed_chunks_read_the_same_both_ways() {
        let chunks = [
            r#"{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","service_tier":"default","system_fingerprint":"fp","choices":[{"index":0,"delta":{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"choices":[{"index":0,"delta":{"content":"h\u00e9 \"q\""},"finish_reason":null}]}"#,
            r#"{"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
            r#"{"choices":[],"usage":{"prompt_tokens":1}}"#,
            r#"{"choices":null}"#,
            r#"{"choices":[{"index":1,"delta":{"content":"b"}},{"index":0,"delta":{"content":"a"}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[{"index":0}]}}]}"#,
            r#"{"choices":[{"delta":{"tool_calls":[]}}]}"#,
            r#"{"choices":[{"delta":{"function_call":{"name":"f"}}}]}"#,
            r#"{"choices":[{"delta":{"function_call":null,"refusal":"no"}}]}"#,
            r#"{"choices":[{"delta":{"content":5}}]}"#,
            r#"{"choices":[{"index":-1,"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"index":1.0,"delta":{"content":"x"}}]}"#,
            r#"{"choices":[{"index":0,"index":0}]}"#,
            r#"{"choices":[["x"]]}"#,
            r#"{"choices":{"0":{}}}"#,
            r#"{"choices":[{"delta":["x"]}]}"#,
            r#"{"error":{"message":"busy"}}"#,
            r#"{"error":null,"type":"ping"}"#,
            r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#,
            r#"{"type":5}"#,
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"a"}}"#,
            r#"{"type":"message_start","message":{"content":[],"stop_reason":null}}"#,
            r#"{"choices":[{"delta":{"content":"x"}}]"#,
            r#"{"choices":[{"delta":{"content":"x"}}]} x"#,
            r#"{"choices":[{"delta":{"content":"\ud800"}}]}"#,
            "[1]",
            "nope",
            "",
        ];
        for data in chunks {
            // Blanks around the data: JSON's, and Unicode's that only the slow
            // path's trim removes.
            for around in ["", " \n", "\u{a0}", "\u{c}", "\u{2028}"] {
                let data = format!("{around}{data}{around}");
                for named_error in [false, true] {
                    let (fast, slow) = event_both(&data, named_error);
                    assert_eq!(fast, slow, "{data:?}");
                }
            }
        }
        for data in ["[DONE]", " [DONE]\n", "\u{a0}[DONE]"] {
            assert_eq!(event_both(data, false).0, event_both(data, false).1);
        }
        // The usual chunks take the fast path.
        for data in &chunks[..10] {
            assert!(event(data.as_bytes()).is_some(), "{data}");
        }
    }

    #[test]
    fn nesting_past_the_value_limit_is_left_to_the_value_path() {
        let deep = format!(
            r#"{{"x":{}{},"choices":[{{"message":{{"content":"x"}}}}]}}"#,
            "[".repeat(200),
            "]".repeat(200)
        );
        assert!(serde_json::from_str::<Value>(&deep).is_err());
        assert!(read(deep.as_bytes(), None, 64, None).is_none());
    }
}
