//! The facts of a buffered OpenAI-shaped body, read without building a `Value`.
//!
//! Parsing the whole answer into a `serde_json::Value` (every string and every
//! object a heap allocation: about 40 for a short chat completion) only to read a
//! few fields cost most of validation's allocations (issue 19). This reads the same
//! fields straight from the bytes, borrowing strings, and consumes everything else
//! with [`Skip`], which accepts exactly what `Value` accepts (numbers parsed and
//! range-checked, strings checked, the same depth limit) and allocates nothing.
//!
//! It reads only what it can read exactly as [`Facts::read_json`] reads a `Value`,
//! and gives up (`None`) otherwise, for the `Value` path to decide: a body that is
//! not a JSON object or not JSON at all, a key read twice (a `Value` keeps the last
//! one), `message.content` as an array of parts, an Anthropic body.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use super::{Facts, Wire, error_message};

/// The scalar `visit_*` methods of a visitor that gives `$v` for any of them.
macro_rules! scalars {
    ($v:expr) => {
        fn visit_bool<E: de::Error>(self, _: bool) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_i64<E: de::Error>(self, _: i64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_u64<E: de::Error>(self, _: u64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_f64<E: de::Error>(self, _: f64) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_str<E: de::Error>(self, _: &str) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($v)
        }
        fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
            Ok($v)
        }
    };
}

/// The facts of `body`, or `None` when only the `Value` path can tell them.
pub(super) fn read(body: &[u8], wire: Option<Wire>, cap: usize) -> Option<Facts> {
    if wire == Some(Wire::Anthropic) {
        return None;
    }
    let doc = serde_json::from_slice::<Doc<'_>>(body).ok()?;
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
    Some(facts)
}

/// Gives up on the fast path (never shown: the `Value` path reads the body again).
fn give_up<E: de::Error>() -> E {
    E::custom("read with the Value path")
}

/// A key, borrowed unless it has escapes.
#[derive(Deserialize)]
struct Key<'a>(#[serde(borrow)] Cow<'a, str>);

/// Sets `slot` once; a key seen twice gives up (a `Value` keeps the last one).
fn once<T, E: de::Error>(slot: &mut Option<T>, value: T) -> Result<(), E> {
    if slot.is_some() {
        return Err(give_up());
    }
    *slot = Some(value);
    Ok(())
}

/// The top level of the body: a JSON object, else give up.
struct Doc<'a> {
    error: Option<Value>,
    ty: Shallow<'a>,
    choices: Option<Choices<'a>>,
    content: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for Doc<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Doc<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Doc<'a>, A::Error> {
                let (mut error, mut ty, mut choices, mut content) = (None, None, None, None);
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match &*key {
                        // `Option<Value>`: `null` is no error, as `filter(!is_null)`.
                        "error" => once(&mut error, map.next_value::<Option<Value>>()?)?,
                        "type" => once(&mut ty, map.next_value::<Shallow<'de>>()?)?,
                        "choices" => once(&mut choices, map.next_value::<Choices<'de>>()?)?,
                        "content" => once(&mut content, map.next_value::<Skip>()?)?,
                        _ => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(Doc {
                    error: error.flatten(),
                    ty: ty.unwrap_or(Shallow::Missing),
                    choices,
                    content: content.is_some(),
                })
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `choices`: not an array, empty, or its first element.
enum Choices<'a> {
    NotArray,
    Empty,
    First(Choice<'a>),
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Choices<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Choices<'a>, A::Error> {
                let Some(first) = seq.next_element::<Choice<'de>>()? else {
                    return Ok(Choices::Empty);
                };
                while seq.next_element::<Skip>()?.is_some() {}
                Ok(Choices::First(first))
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Choices<'a>, A::Error> {
                SkipVisitor.visit_map(map).map(|_| Choices::NotArray)
            }

            scalars!(Choices::NotArray);
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
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

impl<'de: 'a, 'a> Deserialize<'de> for Choice<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Choice<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Choice<'a>, A::Error> {
                let (mut finish_reason, mut message) = (None, None);
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    match &*key {
                        "finish_reason" => {
                            once(&mut finish_reason, map.next_value::<Shallow<'de>>()?)?;
                        }
                        "message" => once(&mut message, map.next_value::<MaybeMessage<'de>>()?)?,
                        _ => {
                            map.next_value::<Skip>()?;
                        }
                    }
                }
                Ok(Choice::Object {
                    finish_reason: finish_reason.unwrap_or(Shallow::Missing),
                    message: message.and_then(|m| m.0),
                })
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Choice<'a>, A::Error> {
                SkipVisitor.visit_seq(seq).map(|_| Choice::Other)
            }

            scalars!(Choice::Other);
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// `choices[0].message`'s fields, as `read_openai` reads them.
struct Message<'a> {
    content: Shallow<'a>,
    refusal: Shallow<'a>,
    tool_calls: Shallow<'a>,
    function_call: Shallow<'a>,
}

/// A `message` value: `Some` when it is an object.
struct MaybeMessage<'a>(Option<Message<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for MaybeMessage<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = MaybeMessage<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_map<A: MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<MaybeMessage<'a>, A::Error> {
                let (mut content, mut refusal, mut tool_calls, mut function_call) =
                    (None, None, None, None);
                while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
                    let slot = match &*key {
                        "content" => &mut content,
                        "refusal" => &mut refusal,
                        "tool_calls" => &mut tool_calls,
                        "function_call" => &mut function_call,
                        _ => {
                            map.next_value::<Skip>()?;
                            continue;
                        }
                    };
                    once(slot, map.next_value::<Shallow<'de>>()?)?;
                }
                let or_missing = |s: Option<Shallow<'a>>| s.unwrap_or(Shallow::Missing);
                Ok(MaybeMessage(Some(Message {
                    content: or_missing(content),
                    refusal: or_missing(refusal),
                    tool_calls: or_missing(tool_calls),
                    function_call: or_missing(function_call),
                })))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<MaybeMessage<'a>, A::Error> {
                SkipVisitor.visit_seq(seq).map(|_| MaybeMessage(None))
            }

            scalars!(MaybeMessage(None));
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
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

impl<'de: 'a, 'a> Deserialize<'de> for Shallow<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = Shallow<'a>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }

            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Shallow<'a>, E> {
                Ok(Shallow::Str(Cow::Borrowed(v)))
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Shallow<'a>, E> {
                Ok(Shallow::Str(Cow::Owned(v.to_owned())))
            }

            fn visit_string<E: de::Error>(self, v: String) -> Result<Shallow<'a>, E> {
                Ok(Shallow::Str(Cow::Owned(v)))
            }

            fn visit_unit<E: de::Error>(self) -> Result<Shallow<'a>, E> {
                Ok(Shallow::Null)
            }

            fn visit_none<E: de::Error>(self) -> Result<Shallow<'a>, E> {
                Ok(Shallow::Null)
            }

            fn visit_bool<E: de::Error>(self, _: bool) -> Result<Shallow<'a>, E> {
                Ok(Shallow::Other)
            }

            fn visit_i64<E: de::Error>(self, _: i64) -> Result<Shallow<'a>, E> {
                Ok(Shallow::Other)
            }

            fn visit_u64<E: de::Error>(self, _: u64) -> Result<Shallow<'a>, E> {
                Ok(Shallow::Other)
            }

            fn visit_f64<E: de::Error>(self, _: f64) -> Result<Shallow<'a>, E> {
                Ok(Shallow::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Shallow<'a>, A::Error> {
                let mut empty = true;
                while seq.next_element::<Skip>()?.is_some() {
                    empty = false;
                }
                Ok(Shallow::Array { empty })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Shallow<'a>, A::Error> {
                SkipVisitor.visit_map(map).map(|_| Shallow::Object)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Any JSON value, consumed as `Value` would parse it (through `deserialize_any`:
/// numbers parsed and range-checked, strings decoded, the same depth limit), with
/// no allocation. (`IgnoredAny` is laxer: it skips numbers and depth unchecked.)
struct Skip;

impl<'de> Deserialize<'de> for Skip {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(SkipVisitor)
    }
}

impl<'de> DeserializeSeed<'de> for SkipVisitor {
    type Value = Skip;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Skip, D::Error> {
        d.deserialize_any(self)
    }
}

struct SkipVisitor;

impl<'de> Visitor<'de> for SkipVisitor {
    type Value = Skip;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Skip, A::Error> {
        while seq.next_element::<Skip>()?.is_some() {}
        Ok(Skip)
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Skip, A::Error> {
        while map.next_key::<Skip>()?.is_some() {
            map.next_value::<Skip>()?;
        }
        Ok(Skip)
    }

    scalars!(Skip);
}

#[cfg(test)]
mod tests {
    use super::super::Facts;
    use super::*;

    /// The facts both ways, as comparable text.
    fn both(body: &str, wire: Option<Wire>) -> (Option<String>, String) {
        let fast = read(body.as_bytes(), wire, 64).map(|f| format!("{f:?}"));
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
            assert!(read(body.as_bytes(), None, 64).is_some(), "{body}");
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
        fn the_fast_path_agrees_on_any_json(v in json(), w in json()) {
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
            }
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
        assert!(read(deep.as_bytes(), None, 64).is_none());
    }
}
