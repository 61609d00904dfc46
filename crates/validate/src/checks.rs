//! The built-in validators.
//!
//! | validator | rejects | as |
//! | --- | --- | --- |
//! | [`ValidJson`] | a body (or a streamed event) that is not JSON | [`InvalidJson`](RejectKind::InvalidJson) |
//! | [`ErrorObject`] | `{"error": …}` / an `error` event with a success status | [`ErrorObject`](RejectKind::ErrorObject) |
//! | [`Shape`] | no `choices[0].message` / `content` array; an answer with no content, refusal or tool call | [`Shape`](RejectKind::Shape), [`Empty`](RejectKind::Empty) |
//! | [`FinishReason`] (opt-in) | `finish_reason: length`, `stop_reason: max_tokens` (configurable), unless the request set its own limit | [`Truncated`](RejectKind::Truncated) |
//! | [`Refusal`] | OpenAI's `refusal` field, `stop_reason: refusal`, content starting with a refusal phrase | [`Refusal`](RejectKind::Refusal) |
//! | [`JsonSchema`] | content (or body) that does not match a JSON Schema | [`Schema`](RejectKind::Schema) |
//!
//! Any closure is a validator too, with [`from_fn`](crate::from_fn).
//!
//! [`InvalidJson`](RejectKind::InvalidJson), [`ErrorObject`](RejectKind::ErrorObject)
//! and [`Shape`](RejectKind::Shape) say the answer is malformed, not a well-formed
//! answer of its wire format ([`RejectKind::is_malformed`]): evidence against the
//! provider whatever the prompt, which the circuit breaker and the ramp count as a
//! failure by default. The other kinds judge the content of a well-formed answer
//! and are neutral by default.

use std::fmt;
use std::sync::Arc;

use serde_json::Value;
use tower_failover_core::RejectKind;

use crate::output::Output;
use crate::validator::{Validator, Verdict};

/// Rejects bodies, and streamed events, that are not valid JSON.
#[derive(Debug, Clone, Copy, Default)]
pub struct ValidJson;

impl Validator for ValidJson {
    fn check(&self, out: &Output<'_>) -> Verdict {
        match out.json_error() {
            Some(e) => Verdict::reject(RejectKind::InvalidJson, e),
            None => Verdict::Pass,
        }
    }
}

/// Rejects an error object sent with a success status: `{"error": {...}}` (OpenAI),
/// `{"type": "error", ...}` (Anthropic), or an error event in a stream.
///
/// The rejection's [`detail`](tower_failover_core::error::Invalid::detail) is the
/// provider's own message (bounded), for programmatic use only: it may quote key
/// material, so neither the error's `Display` nor the layer's log shows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorObject;

impl Validator for ErrorObject {
    fn check(&self, out: &Output<'_>) -> Verdict {
        match out.error_object() {
            Some(e) => Verdict::reject(RejectKind::ErrorObject, e),
            None => Verdict::Pass,
        }
    }
}

/// Checks the wire shape: OpenAI's `choices[0].message` (or `delta`s) with non-empty
/// `content`, `tool_calls` or `refusal`; Anthropic's `content` array with a non-empty
/// text block or a tool use.
///
/// A malformed shape is [`Shape`](RejectKind::Shape); a well-formed answer with
/// nothing in it is [`Empty`](RejectKind::Empty), unless it stopped at its token
/// limit (`finish_reason: "length"`, `stop_reason: "max_tokens"`: a reasoning model
/// can spend the whole allowance thinking). A stream waits for its first content
/// (or reasoning) before passing.
#[derive(Debug, Clone, Copy, Default)]
pub struct Shape;

impl Validator for Shape {
    fn check(&self, out: &Output<'_>) -> Verdict {
        if let Some(e) = out.shape_error() {
            return Verdict::reject(RejectKind::Shape, e);
        }
        if out.has_started() {
            Verdict::Pass
        } else if out.is_complete() {
            match out.finish_reason() {
                // The whole allowance went before any content: a reasoning model
                // that thought through the caller's `max_tokens` (or a provider's
                // own limit). Every provider would spend it the same way, so this
                // is the answer, not a provider's failure.
                Some("length" | "max_tokens") => Verdict::Pass,
                _ => Verdict::reject(RejectKind::Empty, "no content, refusal or tool call"),
            }
        } else {
            Verdict::Wait
        }
    }
}

/// Rejects answers cut short: by default `finish_reason: "length"` (OpenAI) and
/// `stop_reason: "max_tokens"` (Anthropic).
///
/// Not among the default checks ([`Validators::llm`](crate::Validators::llm),
/// [`Checks`](crate::Checks)): an answer cut at the caller's own limit is a correct
/// answer, and every provider would cut it the same way. When it is on, an answer
/// to a request that set its own limit still passes
/// ([`Output::request_sets_max_tokens`]): only cuts the caller did not ask for (a
/// provider's default limit, a model's context window) are rejected.
///
/// In a stream the finish reason comes last, after the commit point (unless the hold
/// mode is [`StreamHold::Complete`](crate::StreamHold::Complete)); it is then reported
/// as a late verdict.
#[derive(Debug, Clone)]
pub struct FinishReason {
    reasons: Arc<[String]>,
}

impl FinishReason {
    /// Rejects these finish / stop reasons.
    pub fn new<I, S>(reasons: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        FinishReason {
            reasons: reasons.into_iter().map(Into::into).collect(),
        }
    }

    /// The rejected reasons.
    pub fn reasons(&self) -> &[String] {
        &self.reasons
    }
}

impl Default for FinishReason {
    fn default() -> Self {
        FinishReason::new(["length", "max_tokens"])
    }
}

impl Validator for FinishReason {
    fn check(&self, out: &Output<'_>) -> Verdict {
        match out.finish_reason() {
            Some(r) if self.reasons.iter().any(|x| x == r) && !out.request_sets_max_tokens() => {
                Verdict::reject(RejectKind::Truncated, format!("finish reason {r:?}"))
            }
            _ => Verdict::Pass,
        }
    }
}

/// The refusal phrases [`Refusal`] looks for by default, at the start of the content
/// (case-insensitive, curly apostrophes read as straight ones).
///
/// Each names what is declined ("help with", "assist with", "comply"): an apology
/// alone starts many good answers ("I'm sorry, but I can't find a bug in this
/// code", "Sorry, I can't go tomorrow" in a translation), which every provider
/// would give too, so rejecting them would fail over everywhere and answer an
/// error instead.
pub const DEFAULT_REFUSAL_PHRASES: &[&str] = &[
    "I'm sorry, but I can't help with",
    "I'm sorry, but I can't assist with",
    "I'm sorry, but I can't comply",
    "I'm sorry, but I cannot help with",
    "I'm sorry, but I cannot assist with",
    "I'm sorry, but I cannot comply",
    "I'm sorry, I can't help with",
    "I'm sorry, I can't assist with",
    "I'm sorry, I cannot help with",
    "I'm sorry, I cannot assist with",
    "I am sorry, but I cannot help with",
    "I am sorry, but I cannot assist with",
    "Sorry, but I can't help with",
    "Sorry, I can't help with",
    "Sorry, I can't assist with",
    "I can't help with that",
    "I cannot help with that",
    "I can't assist with that",
    "I cannot assist with that",
    "I can't comply with",
    "I cannot comply with",
    "I'm unable to help with",
    "I am unable to help with",
    "I'm not able to help with",
    "I won't be able to help with",
];

/// Detects refusals: OpenAI's `refusal` field, a refusal stop reason (Anthropic's
/// `stop_reason: "refusal"`, OpenAI's `finish_reason: "content_filter"`), and
/// content that *starts* with one of a list of phrases
/// ([`DEFAULT_REFUSAL_PHRASES`] unless replaced). An answer with tool calls is
/// never a refusal by its phrases.
///
/// Phrases are matched at the start of the content only, so an answer that merely
/// quotes one is not rejected. In a stream, the check waits while the content so far
/// could still become a phrase (it starts with "I'm s…"), and passes as soon as it
/// cannot: most answers commit at their first token.
///
/// ```
/// use tower_failover_validate::{check_body, checks::Refusal};
///
/// let r = Refusal::default().phrase("As an AI, I must decline");
/// let body = br#"{"choices":[{"message":{"content":"as an AI, I must decline to answer."}}]}"#;
/// assert!(check_body(&r, body).is_reject());
/// ```
#[derive(Debug, Clone)]
pub struct Refusal {
    phrases: Arc<[String]>,
    /// The length in bytes of the longest phrase: how much of the content's start
    /// is folded to compare them all with.
    longest: usize,
    /// The first bytes of the phrases, as a set: content that starts with none of
    /// them (most answers) is not folded or compared at all.
    firsts: [u64; 4],
    stop_reasons: Arc<[String]>,
}

impl Default for Refusal {
    fn default() -> Self {
        Refusal::new().phrases(DEFAULT_REFUSAL_PHRASES.iter().copied())
    }
}

impl Refusal {
    /// Only the refusal field and the `refusal` and `content_filter` stop reasons:
    /// no phrases.
    pub fn new() -> Self {
        Refusal {
            phrases: Arc::new([]),
            longest: 0,
            firsts: [0; 4],
            // Anthropic's own, and OpenAI's `content_filter` (which is also what
            // an Anthropic refusal becomes once translated to OpenAI's shape).
            stop_reasons: Arc::new(["refusal".to_owned(), "content_filter".to_owned()]),
        }
    }

    /// Replaces the phrases.
    pub fn phrases<I, S>(mut self, phrases: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        self.phrases = phrases
            .into_iter()
            .map(|p| normalize(p.as_ref()))
            .filter(|p| !p.is_empty())
            .collect();
        (self.longest, self.firsts) = lengths_and_firsts(&self.phrases);
        self
    }

    /// Adds one phrase.
    pub fn phrase(mut self, phrase: impl AsRef<str>) -> Self {
        let p = normalize(phrase.as_ref());
        if !p.is_empty() {
            let mut v = self.phrases.to_vec();
            v.push(p);
            self.phrases = v.into();
            (self.longest, self.firsts) = lengths_and_firsts(&self.phrases);
        }
        self
    }

    /// Replaces the stop reasons that mean a refusal (default: `refusal`).
    pub fn stop_reasons<I, S>(mut self, reasons: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.stop_reasons = reasons.into_iter().map(Into::into).collect();
        self
    }

    /// The phrases, normalized (lower case, straight apostrophes).
    pub fn phrase_list(&self) -> &[String] {
        &self.phrases
    }
}

fn fold(c: char) -> impl Iterator<Item = char> {
    let c = match c {
        '\u{2018}' | '\u{2019}' | '\u{02BC}' => '\'',
        c => c,
    };
    c.to_lowercase()
}

fn normalize(s: &str) -> String {
    s.trim().chars().flat_map(fold).collect()
}

/// The longest phrase's length in bytes, and the set of the phrases' first bytes.
fn lengths_and_firsts(phrases: &[String]) -> (usize, [u64; 4]) {
    let mut firsts = [0; 4];
    for p in phrases {
        if let Some(&b) = p.as_bytes().first() {
            firsts[usize::from(b / 64)] |= 1 << (b % 64);
        }
    }
    (phrases.iter().map(String::len).max().unwrap_or(0), firsts)
}

/// The most bytes of folded content [`Head`] keeps on the stack; phrases longer
/// than this are compared a character at a time ([`starts_with`]).
const HEAD: usize = 192;

/// The start of an answer's content folded once ([`fold`], after its leading
/// blanks), as long as the longest phrase: each phrase is then one comparison of
/// bytes, where folding the content again for every phrase (about 25 by default)
/// cost about 3,000 instructions an answer.
struct Head {
    /// Room for a last folded character past `HEAD` (at most three of four bytes).
    buf: [u8; HEAD + 12],
    len: usize,
}

impl Head {
    /// `None` when a phrase is longer than the head keeps.
    fn of(content: &str, longest: usize) -> Option<Head> {
        if longest > HEAD {
            return None;
        }
        let mut head = Head {
            buf: [0; HEAD + 12],
            len: 0,
        };
        let mut chars = content.trim_start().chars();
        while head.len < longest {
            let Some(c) = chars.next() else {
                return Some(head);
            };
            if c.is_ascii() {
                head.buf[head.len] = c.to_ascii_lowercase() as u8;
                head.len += 1;
            } else {
                for f in fold(c) {
                    if head.len + f.len_utf8() > head.buf.len() {
                        // Past every phrase already: what is cut cannot matter.
                        break;
                    }
                    head.len += f.encode_utf8(&mut head.buf[head.len..]).len();
                }
            }
        }
        Some(head)
    }

    /// [`starts_with`] of the content this head was folded from. A head shorter
    /// than the phrase is the whole content (folding stops at the longest phrase's
    /// length), so a phrase it begins is a [`Start::Maybe`].
    fn starts_with(&self, phrase: &str) -> Start {
        let (head, phrase) = (&self.buf[..self.len], phrase.as_bytes());
        if head.starts_with(phrase) {
            Start::Yes
        } else if phrase.starts_with(head) {
            Start::Maybe
        } else {
            Start::No
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// The content starts with the phrase.
    Yes,
    /// The content is a strict prefix of the phrase: more may make it a match.
    Maybe,
    No,
}

fn starts_with(content: &str, phrase: &str) -> Start {
    let mut want = phrase.chars();
    for c in content.trim_start().chars().flat_map(fold) {
        match want.next() {
            None => return Start::Yes,
            Some(w) if w == c => {}
            Some(_) => return Start::No,
        }
    }
    if want.next().is_none() {
        Start::Yes
    } else {
        Start::Maybe
    }
}

impl Validator for Refusal {
    fn check(&self, out: &Output<'_>) -> Verdict {
        if let Some(r) = out.refusal() {
            return Verdict::reject(RejectKind::Refusal, r);
        }
        if let Some(r) = out.finish_reason()
            && self.stop_reasons.iter().any(|x| x == r)
        {
            return Verdict::reject(RejectKind::Refusal, format!("stop reason {r:?}"));
        }
        if out.has_tool_calls() {
            // An answer that acts (calls a tool) is not a refusal, whatever its
            // text says first ("Sorry, I can't open that URL; let me search").
            return Verdict::Pass;
        }
        let content = out.content();
        if let Some(&b) = content.trim_start().as_bytes().first()
            && b.is_ascii()
        {
            let b = b.to_ascii_lowercase();
            if self.firsts[usize::from(b / 64)] & (1 << (b % 64)) == 0 {
                // No phrase starts with this character (folded, it is itself).
                return Verdict::Pass;
            }
        }
        let head = Head::of(content, self.longest);
        let mut maybe = false;
        for p in self.phrases.iter() {
            let start = match &head {
                Some(head) => head.starts_with(p),
                None => starts_with(content, p),
            };
            match start {
                Start::Yes => {
                    let shown: String = content.trim_start().chars().take(120).collect();
                    return Verdict::reject(RejectKind::Refusal, shown);
                }
                Start::Maybe => maybe = true,
                Start::No => {}
            }
        }
        if maybe && !out.is_complete() {
            Verdict::Wait
        } else {
            Verdict::Pass
        }
    }
}

/// What a [`JsonSchema`] validates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SchemaTarget {
    /// The answer's content, parsed as JSON (structured output). The default.
    #[default]
    Content,
    /// The whole response body (buffered responses only).
    Body,
}

/// A JSON Schema that could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaError {
    message: String,
}

impl fmt::Display for SchemaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid JSON Schema: {}", self.message)
    }
}

impl std::error::Error for SchemaError {}

/// Checks structured output against a JSON Schema (drafts 4 to 2020-12, compiled once
/// with the `jsonschema` crate; remote `$ref`s are never fetched).
///
/// By default it parses the answer's content as JSON and validates that; content that
/// is not JSON is rejected too. An answer made only of tool calls passes. In a stream
/// it judges the whole content once it is complete (a late verdict after the commit
/// point, unless the hold mode is [`StreamHold::Complete`](crate::StreamHold::Complete)).
///
/// ```
/// use serde_json::json;
/// use tower_failover_validate::{check_body, checks::JsonSchema};
///
/// let schema = JsonSchema::new(&json!({
///     "type": "object",
///     "required": ["answer"],
///     "properties": {"answer": {"type": "string"}}
/// })).unwrap();
/// let good = br#"{"choices":[{"message":{"content":"{\"answer\":\"42\"}"}}]}"#;
/// let bad = br#"{"choices":[{"message":{"content":"{\"wrong\":true}"}}]}"#;
/// assert!(check_body(&schema, good).is_pass());
/// assert!(check_body(&schema, bad).is_reject());
/// ```
#[derive(Clone)]
pub struct JsonSchema {
    validator: Arc<jsonschema::Validator>,
    target: SchemaTarget,
}

impl fmt::Debug for JsonSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JsonSchema")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl JsonSchema {
    /// Compiles `schema`. Fails on an invalid schema or an unresolvable `$ref`.
    pub fn new(schema: &Value) -> Result<Self, SchemaError> {
        let validator = jsonschema::options()
            .offline()
            .build(schema)
            .map_err(|e| SchemaError {
                message: e.to_string(),
            })?;
        Ok(JsonSchema {
            validator: Arc::new(validator),
            target: SchemaTarget::Content,
        })
    }

    /// Validates the whole body instead of the content.
    pub fn on_body(mut self) -> Self {
        self.target = SchemaTarget::Body;
        self
    }

    /// What is validated.
    pub fn target(&self) -> SchemaTarget {
        self.target
    }

    fn judge(&self, instance: &Value) -> Verdict {
        match self.validator.validate(instance) {
            Ok(()) => Verdict::Pass,
            Err(e) => {
                let path = e.instance_path().to_string();
                let at = if path.is_empty() { "/" } else { &path };
                Verdict::reject(RejectKind::Schema, format!("at {at}: {e}"))
            }
        }
    }
}

impl Validator for JsonSchema {
    fn check(&self, out: &Output<'_>) -> Verdict {
        if !out.is_complete() {
            return Verdict::Pass;
        }
        match self.target {
            SchemaTarget::Body => match out.json() {
                Some(v) => self.judge(v),
                None => Verdict::Pass,
            },
            SchemaTarget::Content => {
                if out.content_is_capped() {
                    return Verdict::Pass;
                }
                let content = out.content().trim();
                if content.is_empty() {
                    if out.has_tool_calls() {
                        return Verdict::Pass;
                    }
                    return Verdict::reject(RejectKind::Schema, "no content to check");
                }
                match serde_json::from_str::<Value>(strip_fence(content)) {
                    Ok(v) => self.judge(&v),
                    Err(e) => {
                        Verdict::reject(RejectKind::Schema, format!("content is not JSON: {e}"))
                    }
                }
            }
        }
    }
}

/// Removes a Markdown code fence around JSON, which some models add.
fn strip_fence(s: &str) -> &str {
    let Some(rest) = s.strip_prefix("```") else {
        return s;
    };
    let rest = rest.strip_prefix("json").unwrap_or(rest);
    rest.strip_suffix("```").unwrap_or(rest).trim()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check_body;
    use serde_json::json;

    fn kind(v: Verdict) -> Option<RejectKind> {
        match v {
            Verdict::Reject(e) => Some(e.kind()),
            _ => None,
        }
    }

    fn openai(content: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({"choices":[{"message":{"role":"assistant","content":content},"finish_reason":"stop"}]}))
            .unwrap()
    }

    #[test]
    fn valid_json() {
        assert_eq!(
            kind(check_body(&ValidJson, b"{\"a\":")),
            Some(RejectKind::InvalidJson)
        );
        assert_eq!(
            kind(check_body(&ValidJson, b"<html>")),
            Some(RejectKind::InvalidJson)
        );
        assert_eq!(
            kind(check_body(&ValidJson, b"")),
            Some(RejectKind::InvalidJson)
        );
        assert_eq!(kind(check_body(&ValidJson, b"[]")), None);
    }

    #[test]
    fn error_object() {
        let v = check_body(
            &ErrorObject,
            br#"{"error":{"message":"The server had an error","type":"server_error"}}"#,
        );
        match v {
            Verdict::Reject(e) => {
                assert_eq!(e.kind(), RejectKind::ErrorObject);
                assert_eq!(e.detail(), "The server had an error");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(kind(check_body(&ErrorObject, &openai("hi"))), None);
    }

    #[test]
    fn shape() {
        assert_eq!(kind(check_body(&Shape, &openai("hi"))), None);
        assert_eq!(
            kind(check_body(&Shape, &openai(""))),
            Some(RejectKind::Empty)
        );
        assert_eq!(
            kind(check_body(&Shape, br#"{"choices":[]}"#)),
            Some(RejectKind::Shape)
        );
        assert_eq!(
            kind(check_body(&Shape, br#"{"object":"list"}"#)),
            Some(RejectKind::Shape)
        );
        assert_eq!(
            kind(check_body(&Shape, br#"{"type":"message","content":[]}"#)),
            Some(RejectKind::Empty)
        );
        assert_eq!(
            kind(check_body(
                &Shape,
                br#"{"type":"message","content":[{"type":"text","text":"ok"}]}"#
            )),
            None
        );
        assert_eq!(
            kind(check_body(
                &Shape,
                br#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"x"}]}}]}"#
            )),
            None
        );
    }

    #[test]
    fn finish_reason() {
        let body = |r: &str| {
            serde_json::to_vec(&json!({"choices":[{"message":{"content":"x"},"finish_reason":r}]}))
                .unwrap()
        };
        assert_eq!(
            kind(check_body(&FinishReason::default(), &body("length"))),
            Some(RejectKind::Truncated)
        );
        assert_eq!(
            kind(check_body(&FinishReason::default(), &body("stop"))),
            None
        );
        assert_eq!(
            kind(check_body(
                &FinishReason::default(),
                br#"{"type":"message","content":[{"type":"text","text":"x"}],"stop_reason":"max_tokens"}"#
            )),
            Some(RejectKind::Truncated)
        );
        let custom = FinishReason::new(["content_filter"]);
        assert_eq!(kind(check_body(&custom, &body("length"))), None);
        assert_eq!(
            kind(check_body(&custom, &body("content_filter"))),
            Some(RejectKind::Truncated)
        );
        assert_eq!(custom.reasons(), ["content_filter"]);
    }

    #[test]
    fn refusal_field_stop_reason_and_phrases() {
        let r = Refusal::default();
        assert_eq!(
            kind(check_body(
                &r,
                br#"{"choices":[{"message":{"content":null,"refusal":"I can't."}}]}"#
            )),
            Some(RejectKind::Refusal)
        );
        assert_eq!(
            kind(check_body(
                &r,
                br#"{"type":"message","content":[],"stop_reason":"refusal"}"#
            )),
            Some(RejectKind::Refusal)
        );
        assert_eq!(
            kind(check_body(
                &r,
                &openai("I\u{2019}m sorry, but I can\u{2019}t help with that request.")
            )),
            Some(RejectKind::Refusal)
        );
        assert_eq!(
            kind(check_body(&r, &openai("  i CAN'T HELP WITH THAT."))),
            Some(RejectKind::Refusal)
        );
        // Quoting a phrase later on is fine; so is a short answer that is a prefix.
        assert_eq!(
            kind(check_body(
                &r,
                &openai("He said \"I can't help with that\".")
            )),
            None
        );
        assert_eq!(kind(check_body(&r, &openai("I"))), None);
        // Only the field when phrases are off.
        let bare = Refusal::new();
        assert_eq!(
            kind(check_body(&bare, &openai("I can't help with that."))),
            None
        );
        assert!(bare.phrase_list().is_empty());
        let custom = Refusal::new()
            .phrases(["Nope"])
            .stop_reasons(Vec::<String>::new());
        assert_eq!(
            kind(check_body(&custom, &openai("nope, not today"))),
            Some(RejectKind::Refusal)
        );
        assert_eq!(
            kind(check_body(&custom, br#"{"type":"message","content":[{"type":"text","text":"x"}],"stop_reason":"refusal"}"#)),
            None
        );
    }

    /// Good answers that open with an apology pass (every provider would give them:
    /// rejecting them failed over everywhere and answered an error); refusals that
    /// say what they decline, a `content_filter` stop (what an Anthropic refusal is
    /// once translated) and the refusal field are caught; an answer that calls a
    /// tool is never a refusal by its phrases.
    #[test]
    fn apologies_are_answers_and_refusals_name_what_they_decline() {
        let r = Refusal::default();
        for good in [
            "I'm sorry, but I can't find any bug in this code: it looks right.",
            "Sorry, I can't go tomorrow.",
            "I'm sorry, I cannot share order details until you verify your email.",
            "I can't stress enough how important backups are.",
        ] {
            assert_eq!(kind(check_body(&r, &openai(good))), None, "{good}");
        }
        for refusal in [
            "I'm sorry, but I can't help with that.",
            "I'm sorry, but I can't assist with that request.",
            "Sorry, I can't help with this.",
            "I'm sorry, but I can't comply with this request.",
            "I cannot assist with that.",
        ] {
            assert_eq!(
                kind(check_body(&r, &openai(refusal))),
                Some(RejectKind::Refusal),
                "{refusal}"
            );
        }
        assert_eq!(
            kind(check_body(
                &r,
                br#"{"choices":[{"message":{"content":"Here is the first part of"},"finish_reason":"content_filter"}]}"#
            )),
            Some(RejectKind::Refusal)
        );
        assert_eq!(
            kind(check_body(
                &r,
                br#"{"choices":[{"message":{"content":"Sorry, I can't help with opening that URL; let me search.","tool_calls":[{"id":"t","type":"function","function":{"name":"search","arguments":"{}"}}]},"finish_reason":"tool_calls"}]}"#
            )),
            None
        );
    }

    /// A reasoning model that spends the whole allowance thinking answers with
    /// nothing but `finish_reason: "length"`: that is the answer (every provider
    /// would spend it the same way), not an empty one to fail over from.
    #[test]
    fn an_empty_answer_cut_at_its_token_limit_is_an_answer() {
        for body in [
            &br#"{"choices":[{"message":{"content":"","reasoning_content":"Let me think"},"finish_reason":"length"}]}"#[..],
            br#"{"choices":[{"message":{"content":null},"finish_reason":"length"}]}"#,
            br#"{"type":"message","content":[],"stop_reason":"max_tokens"}"#,
        ] {
            assert_eq!(
                kind(check_body(&Shape, body)),
                None,
                "{}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(
            kind(check_body(
                &Shape,
                br#"{"choices":[{"message":{"content":""},"finish_reason":"stop"}]}"#
            )),
            Some(RejectKind::Empty)
        );
        // A spoken answer: no `content`, its text is the audio's transcript.
        assert_eq!(
            kind(check_body(
                &Shape,
                br#"{"choices":[{"message":{"content":null,"audio":{"id":"audio_1","data":"UklG","transcript":"Hi"}},"finish_reason":"stop"}]}"#
            )),
            None
        );
    }

    #[test]
    fn schema_on_content_and_body() {
        let schema = json!({"type":"object","required":["answer"],"properties":{"answer":{"type":"string"}}});
        let s = JsonSchema::new(&schema).unwrap();
        assert_eq!(kind(check_body(&s, &openai(r#"{"answer":"yes"}"#))), None);
        assert_eq!(
            kind(check_body(
                &s,
                &openai("```json\n{\"answer\":\"yes\"}\n```")
            )),
            None
        );
        assert_eq!(
            kind(check_body(&s, &openai(r#"{"wrong":true}"#))),
            Some(RejectKind::Schema)
        );
        assert_eq!(
            kind(check_body(&s, &openai(r#"{"answer":3}"#))),
            Some(RejectKind::Schema)
        );
        assert_eq!(
            kind(check_body(&s, &openai("Sure! here it is"))),
            Some(RejectKind::Schema)
        );
        assert_eq!(kind(check_body(&s, &openai(""))), Some(RejectKind::Schema));
        if let Verdict::Reject(e) = check_body(&s, &openai(r#"{"answer":3}"#)) {
            assert!(e.detail().starts_with("at /answer:"), "{}", e.detail());
        }
        let body = JsonSchema::new(&json!({"required":["id"]}))
            .unwrap()
            .on_body();
        assert_eq!(body.target(), SchemaTarget::Body);
        assert_eq!(
            kind(check_body(&body, &openai("x"))),
            Some(RejectKind::Schema)
        );
        assert_eq!(kind(check_body(&body, br#"{"id":1,"choices":[]}"#)), None);
    }

    #[test]
    fn bad_schemas_are_refused_without_network() {
        assert!(JsonSchema::new(&json!({"type": 12})).is_err());
        let err = JsonSchema::new(&json!({"$ref": "https://example.com/s.json"})).unwrap_err();
        assert!(err.to_string().starts_with("invalid JSON Schema"));
    }

    #[test]
    fn composition_order_and_wait() {
        use crate::{Validators, from_fn};
        let v = Validators::new()
            .with(from_fn(|_| Verdict::Wait))
            .with(from_fn(|_| Verdict::reject(RejectKind::Custom, "second")));
        match check_body(&v, b"{}") {
            Verdict::Reject(e) => assert_eq!(e.detail(), "second"),
            other => panic!("{other:?}"),
        }
        let waits = Validators::new().with(from_fn(|_| Verdict::Wait));
        assert!(
            check_body(&waits, b"{}").is_pass(),
            "a complete body never waits"
        );
        assert!(Validators::new().is_empty());
        assert!(check_body(&Validators::new(), b"not json").is_pass());
        // The default set: error objects come before shape.
        match check_body(&Validators::llm(), br#"{"error":{"message":"x"}}"#) {
            Verdict::Reject(e) => assert_eq!(e.kind(), RejectKind::ErrorObject),
            other => panic!("{other:?}"),
        }
    }

    /// The folded head answers as folding the content for each phrase does.
    fn same_start(content: &str, phrases: &[String]) {
        let head = Head::of(content, lengths_and_firsts(phrases).0).expect("short phrases");
        for p in phrases {
            assert_eq!(
                head.starts_with(p),
                starts_with(content, p),
                "{content:?} against {p:?}"
            );
        }
    }

    #[test]
    fn the_folded_head_matches_folding_per_phrase() {
        let defaults: Vec<String> = Refusal::default().phrase_list().to_vec();
        for content in [
            "",
            "   ",
            "I",
            "i'M S",
            "I\u{2019}m sorry, but I can\u{2019}t help with that.",
            "  I CAN'T HELP WITH THAT",
            "I can't help with that",
            "I can't help with tha",
            "Sure! Here is the code.",
            "İ can't help with that",
            "\u{1F600} sorry",
            "Sorry, I can\u{02BC}t assist with this one",
        ] {
            same_start(content, &defaults);
        }
        let odd: Vec<String> = ["ı", "i̇", "ß", "straße", "x"].map(normalize).to_vec();
        for content in ["I", "İ", "İx", "SS", "STRASSE", "straße!", "ẞ", "ıx"] {
            same_start(content, &odd);
        }
        // Longer phrases than the head keeps are compared the old way.
        assert!(Head::of("x", HEAD + 1).is_none());
        let long = Refusal::new().phrase("a".repeat(HEAD + 1));
        let text = "A".repeat(HEAD + 5);
        assert_eq!(
            kind(check_body(&long, &openai(&text))),
            Some(RejectKind::Refusal)
        );
    }

    proptest::proptest! {
        #[test]
        fn the_folded_head_matches_folding_per_phrase_anywhere(
            content in "[ \t]{0,2}[iIİıßẞsS' \u{2019}a-c]{0,12}",
            phrases in proptest::collection::vec("[iIİıßsS' \u{2019}a-c]{1,8}", 1..4),
        ) {
            let phrases: Vec<String> = phrases.iter().map(|p| normalize(p)).filter(|p| !p.is_empty()).collect();
            if !phrases.is_empty() {
                same_start(&content, &phrases);
                // And the whole check, its shortcut on the first byte included.
                let r = Refusal::new().phrases(&phrases).stop_reasons(Vec::<String>::new());
                let refused = phrases.iter().any(|p| starts_with(&content, p) == Start::Yes);
                let body = serde_json::to_vec(&json!({"choices": [{"message": {"content": content}}]})).unwrap();
                proptest::prop_assert_eq!(kind(check_body(&r, &body)).is_some(), refused);
            }
        }
    }
}
