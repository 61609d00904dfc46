//! What validators look at: a normalized view of one response, buffered or streamed.

use std::borrow::Cow;
use std::sync::OnceLock;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::Value;
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::sse::SseEvent;

/// The wire format of a response body: core's one [`Wire`] enum.
pub use tower_failover_core::Wire;

/// A normalized view of one response, handed to every [`Validator`](crate::Validator).
///
/// For a buffered (non-streaming) body, [`is_complete`](Output::is_complete) is
/// always true and [`body`](Output::body) / [`json`](Output::json) give the raw body.
/// For a stream (`text/event-stream`), the view is built from the events seen so far:
/// [`content`](Output::content) is the text of every delta, and
/// [`is_complete`](Output::is_complete) turns true once the terminal event
/// (`data: [DONE]`, `message_stop`) has arrived. Either way the accessors mean the
/// same thing, so one validator serves both.
#[derive(Debug, Clone, Copy)]
pub struct Output<'a> {
    pub(crate) status: StatusCode,
    pub(crate) headers: &'a HeaderMap,
    pub(crate) body: Option<&'a Bytes>,
    pub(crate) json: Option<&'a LazyJson<'a>>,
    pub(crate) facts: &'a Facts,
    pub(crate) stream: bool,
    /// The request's body, when the layer could see it (a
    /// [`ReplayBody`](tower_failover_core::replay::ReplayBody) request).
    pub(crate) request: Option<&'a ReplayBody>,
}

impl<'a> Output<'a> {
    /// The response status (validation only runs on 2xx responses).
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The response headers.
    pub fn headers(&self) -> &'a HeaderMap {
        self.headers
    }

    /// Whether the response is a server-sent event stream.
    pub fn is_stream(&self) -> bool {
        self.stream
    }

    /// Whether the whole output is known: always for a buffered body; for a stream,
    /// once its terminal event has arrived. Validators that can only judge a whole
    /// answer (finish reason, JSON Schema) pass partial output and judge it when it is
    /// complete.
    pub fn is_complete(&self) -> bool {
        !self.stream || self.facts.terminal
    }

    /// The wire format, as configured or detected (`None`: neither shape was
    /// recognized).
    pub fn wire(&self) -> Option<Wire> {
        self.facts.wire
    }

    /// The raw body of a buffered response (`None` for streams).
    pub fn body(&self) -> Option<&'a Bytes> {
        self.body
    }

    /// The body of a buffered response parsed as JSON (`None` for streams and for
    /// bodies that are not JSON).
    ///
    /// Parsed the first time it is asked for (validation's own checks read the
    /// body without building a `Value`), then kept for the other validators.
    pub fn json(&self) -> Option<&'a Value> {
        self.json.and_then(LazyJson::get)
    }

    /// Why the body (or, in a stream, the first bad event) was not valid JSON.
    pub fn json_error(&self) -> Option<&'a str> {
        self.facts.json_error.as_deref()
    }

    /// Why the JSON did not have the expected shape for its wire format (missing
    /// `choices`, `message`, `content`…), if it did not.
    pub fn shape_error(&self) -> Option<&'a str> {
        self.facts.shape_error.as_deref()
    }

    /// The message of an error object sent with a success status (`{"error": …}`,
    /// an Anthropic `error` event), if there was one.
    pub fn error_object(&self) -> Option<&'a str> {
        self.facts.error.as_deref()
    }

    /// The text of the answer: `choices[0].message.content` (or the concatenated
    /// deltas), or the concatenated Anthropic text blocks. Empty when there is none.
    pub fn content(&self) -> &'a str {
        &self.facts.content
    }

    /// Whether [`content`](Output::content) stopped growing because it reached the
    /// configured body limit (a very long stream): checks of the whole content are
    /// then skipped.
    pub fn content_is_capped(&self) -> bool {
        self.facts.capped
    }

    /// The model's refusal message (OpenAI's `message.refusal`), if it sent one.
    pub fn refusal(&self) -> Option<&'a str> {
        (!self.facts.refusal.is_empty()).then_some(self.facts.refusal.as_str())
    }

    /// Whether the answer contains tool calls (`tool_calls`, `function_call`,
    /// `tool_use` blocks).
    pub fn has_tool_calls(&self) -> bool {
        self.facts.tool_calls
    }

    /// `finish_reason` (OpenAI) or `stop_reason` (Anthropic), once known.
    pub fn finish_reason(&self) -> Option<&'a str> {
        self.facts.finish_reason.as_deref()
    }

    /// Whether the answer has begun: some content, a refusal or a tool call.
    pub fn has_started(&self) -> bool {
        self.facts.started()
    }

    /// How many server-sent events have been seen (0 for buffered bodies).
    pub fn events(&self) -> usize {
        self.facts.events
    }

    /// Whether the request set its own completion limit: a non-null `max_tokens`,
    /// `max_completion_tokens` or `max_output_tokens` at the top level of its JSON
    /// body. An answer cut at that limit is the answer the caller asked for.
    ///
    /// Known when the request body is a
    /// [`ReplayBody`](tower_failover_core::replay::ReplayBody) (what the
    /// tower-failover stack sends each provider); for other bodies the layer cannot
    /// see the request and this is `false`. The body's
    /// [`RequestInfo`](tower_failover_core::request::RequestInfo) is read only when
    /// this is called (and only once for every layer), so the check costs nothing on
    /// answers that were not cut.
    pub fn request_sets_max_tokens(&self) -> bool {
        self.request.is_some_and(|b| b.info().sets_max_tokens())
    }
}

mod fast;

/// The fast reader alone, for the fuzz target that holds it to the `Value` reader.
#[cfg(feature = "fuzzing")]
pub(crate) fn fast_read(body: &[u8], wire: Option<Wire>, cap: usize) -> Option<Facts> {
    fast::read(body, wire, cap, None)
}

/// The fast reader through an outline of `body` (as the provider leaves one).
#[cfg(feature = "fuzzing")]
pub(crate) fn outlined_read(body: &bytes::Bytes, wire: Option<Wire>, cap: usize) -> Option<Facts> {
    let outline = tower_failover_core::json::Outline::read(body).ok()?;
    fast::read(body, wire, cap, Some(&outline))
}

/// A buffered body's JSON for [`Output::json`], parsed the first time it is
/// asked for (most validators never do).
#[derive(Debug)]
pub(crate) struct LazyJson<'a> {
    body: &'a [u8],
    value: OnceLock<Option<Value>>,
}

impl<'a> LazyJson<'a> {
    /// `body`'s JSON; `parsed` if it was already parsed, and known not to be JSON
    /// when `invalid`.
    pub(crate) fn new(body: &'a [u8], parsed: Option<Value>, invalid: bool) -> Self {
        let value = OnceLock::new();
        if parsed.is_some() || invalid {
            let _ = value.set(parsed);
        }
        LazyJson { body, value }
    }

    fn get(&self) -> Option<&Value> {
        self.value
            .get_or_init(|| serde_json::from_slice(self.body).ok())
            .as_ref()
    }
}

/// What the validators read: a summary of the response, extracted once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Facts {
    pub(crate) wire: Option<Wire>,
    pub(crate) json_error: Option<String>,
    pub(crate) shape_error: Option<String>,
    pub(crate) error: Option<String>,
    pub(crate) content: String,
    pub(crate) capped: bool,
    pub(crate) refusal: String,
    pub(crate) tool_calls: bool,
    /// A stream's reasoning model has started thinking (its answer comes later):
    /// the stream has started, and is not held until its first content.
    pub(crate) reasoning: bool,
    /// A buffered OpenAI answer carries `message.audio` (an answer in speech).
    pub(crate) audio: bool,
    pub(crate) finish_reason: Option<String>,
    pub(crate) events: usize,
    pub(crate) terminal: bool,
    /// The most content to accumulate.
    pub(crate) cap: usize,
}

/// Cuts `s` to at most `max` bytes on a character boundary.
fn bounded(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &s[..cut])
}

/// A short description of an error object: its `message` if it has one.
fn error_message(err: &Value) -> String {
    let msg = err
        .get("message")
        .and_then(Value::as_str)
        .or_else(|| err.as_str());
    match msg {
        Some(m) => bounded(m, 160),
        None => bounded(&err.to_string(), 160),
    }
}

impl Facts {
    /// Whether an event so far was not JSON, or not the wire format's shape.
    pub(crate) fn is_malformed(&self) -> bool {
        self.json_error.is_some() || self.shape_error.is_some()
    }

    pub(crate) fn new(wire: Option<Wire>, cap: usize) -> Self {
        Facts {
            wire,
            cap,
            ..Facts::default()
        }
    }

    pub(crate) fn started(&self) -> bool {
        !self.content.is_empty()
            || !self.refusal.is_empty()
            || self.tool_calls
            || self.reasoning
            || self.audio
    }

    fn push_content(&mut self, text: &str) {
        if self.capped {
            return;
        }
        if self.content.len() + text.len() > self.cap {
            self.capped = true;
            return;
        }
        self.content.push_str(text);
    }

    fn push_refusal(&mut self, text: &str) {
        if self.refusal.len() + text.len() <= self.cap {
            self.refusal.push_str(text);
        }
    }

    /// Reads a buffered body: the usual OpenAI answer without building a `Value`
    /// ([`fast`]), anything else through one. The `Value` is returned when one was
    /// built.
    pub(crate) fn from_body(
        body: &[u8],
        wire: Option<Wire>,
        cap: usize,
        outline: Option<&tower_failover_core::json::Outline>,
    ) -> (Facts, Option<Value>) {
        match fast::read(body, wire, cap, outline) {
            Some(facts) => (facts, None),
            None => Facts::from_value(body, wire, cap),
        }
    }

    /// Reads a buffered body through a `serde_json::Value`.
    pub(crate) fn from_value(
        body: &[u8],
        wire: Option<Wire>,
        cap: usize,
    ) -> (Facts, Option<Value>) {
        let mut facts = Facts::new(wire, cap);
        match serde_json::from_slice::<Value>(body) {
            Ok(v) => {
                facts.read_json(&v);
                (facts, Some(v))
            }
            Err(e) => {
                facts.json_error = Some(bounded(&e.to_string(), 160));
                (facts, None)
            }
        }
    }

    fn read_json(&mut self, v: &Value) {
        let Some(obj) = v.as_object() else {
            self.shape_error = Some("body is not a JSON object".into());
            return;
        };
        if let Some(err) = obj.get("error").filter(|e| !e.is_null()) {
            self.error = Some(error_message(err));
        } else if obj.get("type").and_then(Value::as_str) == Some("error") {
            self.error = Some("error".into());
        }
        if self.wire.is_none() {
            self.wire = if obj.contains_key("choices") {
                Some(Wire::OpenAi)
            } else if obj.contains_key("content")
                || obj.get("type").and_then(Value::as_str) == Some("message")
            {
                Some(Wire::Anthropic)
            } else {
                None
            };
        }
        match self.wire {
            Some(Wire::OpenAi) => self.read_openai(v),
            Some(Wire::Anthropic) => self.read_anthropic(v),
            None => {
                self.shape_error =
                    Some("neither `choices` (OpenAI) nor `content` (Anthropic) present".into());
            }
        }
    }

    fn read_openai(&mut self, v: &Value) {
        let Some(choices) = v.get("choices").and_then(Value::as_array) else {
            self.shape_error = Some("no `choices` array".into());
            return;
        };
        let Some(choice) = choices.first() else {
            self.shape_error = Some("`choices` is empty".into());
            return;
        };
        self.finish_reason = choice
            .get("finish_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(message) = choice.get("message").filter(|m| m.is_object()) else {
            self.shape_error = Some("`choices[0]` has no `message` object".into());
            return;
        };
        match message.get("content") {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => self.push_content(s),
            Some(Value::Array(parts)) => {
                for p in parts {
                    if let Some(t) = p.get("text").and_then(Value::as_str) {
                        self.push_content(t);
                    }
                }
            }
            Some(_) => {
                self.shape_error = Some("`message.content` is neither a string nor parts".into());
            }
        }
        if let Some(r) = message.get("refusal").and_then(Value::as_str) {
            self.push_refusal(r);
        }
        let tools = message
            .get("tool_calls")
            .and_then(Value::as_array)
            .is_some_and(|a| !a.is_empty());
        let function = message.get("function_call").is_some_and(Value::is_object);
        self.tool_calls = tools || function;
        // A spoken answer (`modalities: ["text", "audio"]`): its text is the
        // audio's transcript, and `content` is null.
        self.audio = message.get("audio").is_some_and(Value::is_object);
    }

    fn read_anthropic(&mut self, v: &Value) {
        self.finish_reason = v
            .get("stop_reason")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let Some(blocks) = v.get("content").and_then(Value::as_array) else {
            self.shape_error = Some("no `content` array".into());
            return;
        };
        for b in blocks {
            match b.get("type").and_then(Value::as_str) {
                Some("text") => {
                    if let Some(t) = b.get("text").and_then(Value::as_str) {
                        self.push_content(t);
                    }
                }
                Some("tool_use" | "server_tool_use") => self.tool_calls = true,
                _ => {}
            }
        }
    }

    /// Reads one streamed event.
    pub(crate) fn on_event(&mut self, ev: &SseEvent<'_>) {
        self.on_event_with(ev, true);
    }

    /// [`on_event`](Facts::on_event); with `fast`, the usual OpenAI chunk is read
    /// straight from its bytes first. The strict reader accepts only JSON that is
    /// valid UTF-8 with nothing but JSON blanks around it, so the UTF-8 check and
    /// the trim of the slow path would change nothing, and it is not `[DONE]`.
    pub(crate) fn on_event_with(&mut self, ev: &SseEvent<'_>, fast: bool) {
        if self.terminal {
            return;
        }
        self.events += 1;
        let named_error = ev.event_type() == "error";
        if fast && let Some(e) = fast::event(ev.data) {
            self.apply(e, named_error);
            return;
        }
        let data = ev.data_str();
        let data = data.trim();
        if data == "[DONE]" {
            self.terminal = true;
            self.wire.get_or_insert(Wire::OpenAi);
            return;
        }
        self.on_data(data, named_error, false);
    }

    /// Reads one event's data (trimmed, not `[DONE]`): the usual OpenAI chunk
    /// without serde's derive when `fast`, anything else through it.
    pub(crate) fn on_data(&mut self, data: &str, named_error: bool, fast: bool) {
        let quick = if fast {
            fast::event(data.as_bytes())
        } else {
            None
        };
        let parsed = match quick {
            Some(e) => Ok(e),
            None => serde_json::from_str::<Event<'_>>(data),
        };
        match parsed {
            Ok(e) => self.apply(e, named_error),
            Err(e) => {
                if named_error && self.error.is_none() {
                    self.error = Some(bounded(data, 160));
                }
                // Well-formed JSON of an unexpected type is a shape problem.
                let syntax_ok = serde_json::from_str::<serde::de::IgnoredAny>(data).is_ok();
                let slot = if syntax_ok {
                    &mut self.shape_error
                } else {
                    &mut self.json_error
                };
                if slot.is_none() {
                    *slot = Some(format!(
                        "event {}: {}",
                        self.events,
                        bounded(&e.to_string(), 160)
                    ));
                }
            }
        }
    }

    fn apply(&mut self, e: Event<'_>, named_error: bool) {
        let ty = e.ty.as_deref();
        if let Some(err) = e.error.as_ref().filter(|v| !v.is_null()) {
            if self.error.is_none() {
                self.error = Some(error_message(err));
            }
        } else if (named_error || ty == Some("error")) && self.error.is_none() {
            self.error = Some("error event".into());
        }
        if let Some(Choices(first)) = e.choices {
            self.wire.get_or_insert(Wire::OpenAi);
            if let Some(c) = &first {
                if let Some(d) = &c.delta {
                    if let Some(t) = &d.content.text {
                        self.push_content(t);
                    }
                    if d.content.thinking {
                        self.reasoning = true;
                    }
                    if let Some(r) = &d.refusal {
                        self.push_refusal(r);
                    }
                    if d.tool_calls.as_ref().is_some_and(|t| !t.is_empty())
                        || d.function_call.is_some()
                    {
                        self.tool_calls = true;
                    }
                    if d.reasoning_content.0 || d.reasoning.0 {
                        self.reasoning = true;
                    }
                }
                if let Some(f) = &c.finish_reason {
                    self.finish_reason = Some(f.to_string());
                }
            }
            return;
        }
        let Some(ty) = ty else { return };
        match ty {
            "message_start" => {
                self.wire.get_or_insert(Wire::Anthropic);
                if let Some(m) = &e.message {
                    for b in m.content.iter().flatten() {
                        self.apply_block(b);
                    }
                    if let Some(r) = &m.stop_reason {
                        self.finish_reason = Some(r.to_string());
                    }
                }
            }
            "content_block_start" => {
                self.wire.get_or_insert(Wire::Anthropic);
                if let Some(b) = &e.content_block {
                    self.apply_block(b);
                }
            }
            "content_block_delta" => {
                self.wire.get_or_insert(Wire::Anthropic);
                if let Some(d) = &e.delta {
                    match d.ty.as_deref() {
                        Some("text_delta") => {
                            if let Some(t) = &d.text {
                                self.push_content(t);
                            }
                        }
                        Some("input_json_delta") => self.tool_calls = true,
                        _ => {}
                    }
                }
            }
            "message_delta" => {
                if let Some(r) = e.delta.as_ref().and_then(|d| d.stop_reason.as_ref()) {
                    self.finish_reason = Some(r.to_string());
                }
            }
            "message_stop" => {
                self.wire.get_or_insert(Wire::Anthropic);
                self.terminal = true;
            }
            _ => {}
        }
    }

    fn apply_block(&mut self, b: &Block<'_>) {
        match b.ty.as_deref() {
            Some("text") => {
                if let Some(t) = &b.text {
                    self.push_content(t);
                }
            }
            Some("tool_use" | "server_tool_use") => self.tool_calls = true,
            _ => {}
        }
    }
}

/// One streamed event of either wire format, read without building a `Value`.
#[derive(Deserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "text")]
    ty: Option<Cow<'a, str>>,
    #[serde(default)]
    error: Option<Value>,
    #[serde(borrow, default)]
    choices: Option<Choices<'a>>,
    #[serde(borrow, default)]
    delta: Option<AnthropicDelta<'a>>,
    #[serde(borrow, default)]
    content_block: Option<Block<'a>>,
    #[serde(borrow, default)]
    message: Option<StartMessage<'a>>,
}

#[derive(Deserialize)]
struct Choice<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    delta: Option<OpenAiDelta<'a>>,
    #[serde(borrow, default, deserialize_with = "text")]
    finish_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct OpenAiDelta<'a> {
    #[serde(borrow, default)]
    content: DeltaContent<'a>,
    #[serde(borrow, default, deserialize_with = "text")]
    refusal: Option<Cow<'a, str>>,
    #[serde(default)]
    tool_calls: Option<Vec<serde::de::IgnoredAny>>,
    #[serde(default)]
    function_call: Option<serde::de::IgnoredAny>,
    /// A reasoning model's thinking, streamed before its answer (DeepSeek, vLLM and
    /// others: `reasoning_content`; OpenRouter, Ollama: `reasoning`).
    #[serde(default)]
    reasoning_content: Said,
    #[serde(default)]
    reasoning: Said,
}

/// A delta's `content`: a string, or a list of parts, as Mistral's reasoning models
/// stream it (`[{"type": "text", "text": …}]`, and `[{"type": "thinking",
/// "thinking": […]}]` while they think). The text parts' text is the content; a
/// thinking part says the stream has started, as `reasoning_content` does. Any
/// other value (a number, an object) fails the event, as for a string field.
#[derive(Default)]
pub(super) struct DeltaContent<'a> {
    pub(super) text: Option<Cow<'a, str>>,
    pub(super) thinking: bool,
}

impl<'de: 'a, 'a> Deserialize<'de> for DeltaContent<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{SeqAccess, Visitor};

        #[derive(Deserialize)]
        struct Part<'a> {
            #[serde(rename = "type", borrow, default, deserialize_with = "text")]
            ty: Option<Cow<'a, str>>,
            #[serde(borrow, default, deserialize_with = "text")]
            text: Option<Cow<'a, str>>,
            #[serde(default)]
            thinking: Option<serde::de::IgnoredAny>,
        }

        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = DeltaContent<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string, a list of content parts or null")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(DeltaContent {
                    text: Some(Cow::Borrowed(v)),
                    thinking: false,
                })
            }
            fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
                Ok(DeltaContent {
                    text: Some(Cow::Owned(v.to_owned())),
                    thinking: false,
                })
            }
            fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
                Ok(DeltaContent {
                    text: Some(Cow::Owned(v)),
                    thinking: false,
                })
            }
            fn visit_unit<E>(self) -> Result<Self::Value, E> {
                Ok(DeltaContent::default())
            }
            fn visit_none<E>(self) -> Result<Self::Value, E> {
                Ok(DeltaContent::default())
            }
            fn visit_some<D2: serde::Deserializer<'de>>(
                self,
                d: D2,
            ) -> Result<Self::Value, D2::Error> {
                d.deserialize_any(self)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut out = DeltaContent::default();
                while let Some(part) = seq.next_element::<Part<'de>>()? {
                    match part.ty.as_deref() {
                        None | Some("text") => {
                            if let Some(t) = part.text.filter(|t| !t.is_empty()) {
                                out.text = Some(match out.text.take() {
                                    None => t,
                                    Some(before) => Cow::Owned(before.into_owned() + &t),
                                });
                            }
                        }
                        Some("thinking") => out.thinking |= part.thinking.is_some(),
                        Some(_) => {}
                    }
                }
                Ok(out)
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Whether a field said something: a non-empty string. Any other value (`null`,
/// an object some servers send) is read and ignored, never a malformed event.
#[derive(Default)]
pub(super) struct Said(pub(super) bool);

impl<'de> Deserialize<'de> for Said {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Said;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any value")
            }
            fn visit_str<E>(self, v: &str) -> Result<Said, E> {
                Ok(Said(!v.is_empty()))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Said, E> {
                Ok(Said(false))
            }
            fn visit_i64<E>(self, _: i64) -> Result<Said, E> {
                Ok(Said(false))
            }
            fn visit_u64<E>(self, _: u64) -> Result<Said, E> {
                Ok(Said(false))
            }
            fn visit_f64<E>(self, _: f64) -> Result<Said, E> {
                Ok(Said(false))
            }
            fn visit_unit<E>(self) -> Result<Said, E> {
                Ok(Said(false))
            }
            fn visit_none<E>(self) -> Result<Said, E> {
                Ok(Said(false))
            }
            fn visit_some<D2: serde::Deserializer<'de>>(self, d: D2) -> Result<Said, D2::Error> {
                Said::deserialize(d)
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Said, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(Said(false))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Said, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(Said(false))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
struct AnthropicDelta<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "text")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    text: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    stop_reason: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct Block<'a> {
    #[serde(rename = "type", borrow, default, deserialize_with = "text")]
    ty: Option<Cow<'a, str>>,
    #[serde(borrow, default, deserialize_with = "text")]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct StartMessage<'a> {
    #[serde(borrow, default)]
    content: Option<Vec<Block<'a>>>,
    #[serde(borrow, default, deserialize_with = "text")]
    stop_reason: Option<Cow<'a, str>>,
}

/// An optional string, borrowed from the event unless it has escapes. (Serde
/// borrows a `Cow<str>` field only when it is not inside an `Option`: an
/// `Option<Cow<str>>` field allocates every string, one per streamed delta.)
fn text<'de: 'a, 'a, D>(d: D) -> Result<Option<Cow<'a, str>>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    struct Text<'a>(#[serde(borrow)] Cow<'a, str>);
    Ok(Option::<Text<'a>>::deserialize(d)?.map(|t| t.0))
}

/// An OpenAI chunk's `choices`: every element is read (a bad one fails the event as
/// a `Vec` would), only the first of index 0 is kept, without a `Vec` per event.
struct Choices<'a>(Option<Choice<'a>>);

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Seq<'a>(std::marker::PhantomData<Choice<'a>>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Seq<'a> {
            type Value = Choices<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Choices<'a>, A::Error> {
                let mut first = None;
                while let Some(c) = seq.next_element::<Choice<'a>>()? {
                    if first.is_none() && c.index.unwrap_or(0) == 0 {
                        first = Some(c);
                    }
                }
                Ok(Choices(first))
            }
        }
        d.deserialize_seq(Seq(std::marker::PhantomData))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(s: &str) -> Facts {
        Facts::from_body(s.as_bytes(), None, 1 << 20, None).0
    }

    fn stream(events: &[(&str, &str)]) -> Facts {
        let mut f = Facts::new(None, 1 << 20);
        for (name, data) in events {
            f.on_event(&SseEvent {
                event: name,
                data: data.as_bytes(),
                ..SseEvent::default()
            });
        }
        f
    }

    #[test]
    fn openai_body() {
        let f = body(
            r#"{"choices":[{"message":{"role":"assistant","content":"hi","refusal":null},"finish_reason":"stop"}]}"#,
        );
        assert_eq!(f.wire, Some(Wire::OpenAi));
        assert_eq!(f.content, "hi");
        assert_eq!(f.finish_reason.as_deref(), Some("stop"));
        assert!(f.shape_error.is_none() && f.error.is_none() && f.refusal.is_empty());
    }

    #[test]
    fn openai_parts_tools_and_refusal() {
        let f = body(
            r#"{"choices":[{"message":{"content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}}]}"#,
        );
        assert_eq!(f.content, "ab");
        let f = body(
            r#"{"choices":[{"message":{"content":null,"tool_calls":[{"id":"1"}]},"finish_reason":"tool_calls"}]}"#,
        );
        assert!(f.tool_calls && f.started());
        let f = body(r#"{"choices":[{"message":{"content":null,"refusal":"no"}}]}"#);
        assert_eq!(f.refusal, "no");
    }

    #[test]
    fn shapes() {
        assert!(body("[1]").shape_error.is_some());
        assert!(body(r#"{"id":1}"#).shape_error.is_some());
        assert!(body(r#"{"choices":[]}"#).shape_error.is_some());
        assert!(body(r#"{"choices":[{"text":"x"}]}"#).shape_error.is_some());
        assert!(
            body(r#"{"choices":[{"message":{"content":5}}]}"#)
                .shape_error
                .is_some()
        );
        assert!(
            body(r#"{"content":"x","type":"message"}"#)
                .shape_error
                .is_some()
        );
        assert!(body("{nope").json_error.is_some());
    }

    #[test]
    fn error_objects() {
        let f = body(r#"{"error":{"message":"overloaded","type":"server_error"}}"#);
        assert_eq!(f.error.as_deref(), Some("overloaded"));
        let f = body(r#"{"type":"error","error":{"type":"overloaded_error","message":"busy"}}"#);
        assert_eq!(f.error.as_deref(), Some("busy"));
        let f = body(r#"{"error":null,"choices":[{"message":{"content":"x"}}]}"#);
        assert!(f.error.is_none());
    }

    #[test]
    fn anthropic_body() {
        let f = body(
            r#"{"type":"message","content":[{"type":"text","text":"a"},{"type":"tool_use","id":"t"}],"stop_reason":"max_tokens"}"#,
        );
        assert_eq!(f.wire, Some(Wire::Anthropic));
        assert_eq!(f.content, "a");
        assert!(f.tool_calls);
        assert_eq!(f.finish_reason.as_deref(), Some("max_tokens"));
    }

    #[test]
    fn openai_stream() {
        let f = stream(&[
            (
                "",
                r#"{"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#,
            ),
            ("", r#"{"choices":[{"index":0,"delta":{"content":"Hel"}}]}"#),
            (
                "",
                r#"{"choices":[{"index":1,"delta":{"content":"other"}}]}"#,
            ),
            (
                "",
                r#"{"choices":[{"index":0,"delta":{"content":"lo\u0021"}}]}"#,
            ),
            (
                "",
                r#"{"choices":[{"index":0,"delta":{},"finish_reason":"length"}]}"#,
            ),
            ("", r#"{"choices":[],"usage":{"total_tokens":3}}"#),
            ("", "[DONE]"),
            ("", r#"{"choices":[{"delta":{"content":"after"}}]}"#),
        ]);
        assert_eq!(f.content, "Hello!");
        assert_eq!(f.finish_reason.as_deref(), Some("length"));
        assert!(f.terminal);
        assert_eq!(f.events, 7);
        assert_eq!(f.wire, Some(Wire::OpenAi));
    }

    #[test]
    fn anthropic_stream() {
        let f = stream(&[
            (
                "message_start",
                r#"{"type":"message_start","message":{"content":[],"stop_reason":null}}"#,
            ),
            (
                "content_block_start",
                r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
            ),
            ("ping", r#"{"type": "ping"}"#),
            (
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hi"}}"#,
            ),
            (
                "message_delta",
                r#"{"type":"message_delta","delta":{"stop_reason":"end_turn"}}"#,
            ),
            ("message_stop", r#"{"type":"message_stop"}"#),
        ]);
        assert_eq!(f.content, "Hi");
        assert_eq!(f.finish_reason.as_deref(), Some("end_turn"));
        assert!(f.terminal);
        assert_eq!(f.wire, Some(Wire::Anthropic));
    }

    #[test]
    fn stream_errors() {
        let f = stream(&[("", r#"{"choices":[{"delta":{"content":"#)]);
        assert!(f.json_error.unwrap().starts_with("event 1:"));
        let f = stream(&[("", r#"{"choices":"nope"}"#)]);
        assert!(f.shape_error.is_some() && f.json_error.is_none());
        let f = stream(&[("", r#"{"error":{"message":"boom"}}"#)]);
        assert_eq!(f.error.as_deref(), Some("boom"));
        let f = stream(&[(
            "error",
            r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
        )]);
        assert_eq!(f.error.as_deref(), Some("Overloaded"));
        let f = stream(&[("error", "not json")]);
        assert_eq!(f.error.as_deref(), Some("not json"));
    }

    #[test]
    fn content_is_capped() {
        let mut f = Facts::new(None, 4);
        f.on_event(&SseEvent {
            data: br#"{"choices":[{"delta":{"content":"abc"}}]}"#,
            ..SseEvent::default()
        });
        f.on_event(&SseEvent {
            data: br#"{"choices":[{"delta":{"content":"def"}}]}"#,
            ..SseEvent::default()
        });
        assert_eq!(f.content, "abc");
        assert!(f.capped);
    }

    /// A reasoning model's thinking deltas start a stream (an object or `null` in
    /// their place is read and ignored, not a malformed event), on both readers.
    #[test]
    fn reasoning_deltas_start_a_stream() {
        for data in [
            &br#"{"choices":[{"delta":{"reasoning_content":"Let me think"}}]}"#[..],
            br#"{"choices":[{"delta":{"content":null,"reasoning":"Hmm"}}]}"#,
        ] {
            let mut f = Facts::new(None, 1 << 20);
            f.on_event(&SseEvent {
                data,
                ..SseEvent::default()
            });
            assert!(f.started(), "{}", String::from_utf8_lossy(data));
            assert!(!f.is_malformed());
            assert!(f.content.is_empty());
        }
        for data in [
            &br#"{"choices":[{"delta":{"reasoning_content":""}}]}"#[..],
            br#"{"choices":[{"delta":{"reasoning":{"summary":"x"}}}]}"#,
            br#"{"choices":[{"delta":{"reasoning":null,"role":"assistant"}}]}"#,
        ] {
            let mut f = Facts::new(None, 1 << 20);
            f.on_event(&SseEvent {
                data,
                ..SseEvent::default()
            });
            assert!(!f.started(), "{}", String::from_utf8_lossy(data));
            assert!(!f.is_malformed(), "{}", String::from_utf8_lossy(data));
        }
    }

    /// A delta's content as a list of parts (Mistral's reasoning models): the text
    /// parts are the content, a thinking part starts the stream; a content that is
    /// neither a string, parts nor null is still a malformed event.
    #[test]
    fn delta_content_as_parts() {
        let read = |data: &[u8]| {
            let mut f = Facts::new(None, 1 << 20);
            f.on_event(&SseEvent {
                data,
                ..SseEvent::default()
            });
            f
        };
        let f = read(br#"{"choices":[{"delta":{"content":[{"type":"thinking","thinking":[{"type":"text","text":"Hmm"}]}]}}]}"#);
        assert!(f.started() && !f.is_malformed());
        assert!(f.content.is_empty(), "thinking is not the answer");
        let f = read(br#"{"choices":[{"delta":{"content":[{"type":"text","text":"Hel"},{"type":"text","text":"lo \"x\""},{"type":"image_url","image_url":{"url":"u"}}]}}]}"#);
        assert!(!f.is_malformed());
        assert_eq!(f.content, "Hello \"x\"");
        let f = read(br#"{"choices":[{"delta":{"content":[]}}]}"#);
        assert!(!f.started() && !f.is_malformed());
        for data in [
            &br#"{"choices":[{"delta":{"content":5}}]}"#[..],
            br#"{"choices":[{"delta":{"content":{"text":"x"}}}]}"#,
            br#"{"choices":[{"delta":{"content":[5]}}]}"#,
        ] {
            assert!(
                read(data).is_malformed(),
                "{}",
                String::from_utf8_lossy(data)
            );
        }
    }

    #[test]
    fn bounded_respects_char_boundaries() {
        assert_eq!(bounded("éé", 3), "é…");
        assert_eq!(bounded("ab", 3), "ab");
    }
}
