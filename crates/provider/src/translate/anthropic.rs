//! OpenAI chat completions ⇄ Anthropic messages.
//!
//! | OpenAI | Anthropic |
//! | --- | --- |
//! | `system` / `developer` messages | top-level `system` (joined by blank lines) |
//! | `user` text and `image_url` parts (data URLs or links) | `user` text and `image` blocks |
//! | `assistant` content and `tool_calls` | `assistant` text and `tool_use` blocks |
//! | `tool` messages | `user` `tool_result` blocks |
//! | `max_completion_tokens` / `max_tokens` | `max_tokens` (required: a default fills in) |
//! | `temperature` (0–2), `top_p`, `stop` | `temperature` (clamped to 0–1), `top_p`, `stop_sequences` |
//! | `tools`, `tool_choice`, `parallel_tool_calls` | `tools`, `tool_choice`, `disable_parallel_tool_use` |
//! | `user` | `metadata.user_id` |
//! | `finish_reason` `stop` / `length` / `tool_calls` / `content_filter` | `stop_reason` `end_turn`, `stop_sequence` / `max_tokens` / `tool_use` / `refusal` |
//! | `usage.prompt_tokens` / `completion_tokens` | `input_tokens` (+ cache reads and writes) / `output_tokens` |
//!
//! Consecutive messages of the same role are merged (tool results then text in one
//! user turn, as Anthropic expects). Parameters with no Anthropic equivalent
//! (`response_format`, `logprobs`, `seed`, …) are dropped; `n > 1` is refused.
//!
//! Streams are translated event by event ([`StreamTranslator`]): `message_start` →
//! the role chunk, text and tool-argument deltas → content and `tool_calls` deltas,
//! `message_delta` → the `finish_reason` chunk, `message_stop` → the usage chunk
//! and `data: [DONE]`. A stream that ends without `message_stop` is a
//! [`TruncatedStream`] error, never a silent end.

use std::borrow::Cow;
use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize as DeriveDeserialize, Serialize};
use serde_json::value::RawValue;
use tower_failover_core::error::{Invalid, TransportError, TruncatedStream};
use tower_failover_core::{BoxError, FailureKind, RejectKind};

use super::str::{OneOrMany, Str};
use crate::config::ModelMap;
use crate::error::TranslateError;
use crate::sse::{SseEvent, SseParser};

// ---- request: OpenAI in ----------------------------------------------------------

#[derive(DeriveDeserialize)]
struct ChatRequest<'a> {
    #[serde(borrow)]
    model: Str<'a>,
    #[serde(borrow)]
    messages: Vec<ChatMessage<'a>>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    temperature: Option<f64>,
    #[serde(default)]
    top_p: Option<f64>,
    #[serde(borrow, default)]
    stop: Option<OneOrMany<'a>>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(borrow, default)]
    tools: Option<Vec<ChatTool<'a>>>,
    #[serde(borrow, default)]
    tool_choice: Option<&'a RawValue>,
    #[serde(default)]
    parallel_tool_calls: Option<bool>,
    #[serde(borrow, default)]
    user: Option<Str<'a>>,
    #[serde(default)]
    n: Option<u32>,
}

#[derive(DeriveDeserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

#[derive(DeriveDeserialize)]
struct ChatMessage<'a> {
    #[serde(borrow)]
    role: Str<'a>,
    #[serde(borrow, default)]
    content: Option<Content<'a>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<ChatToolCall<'a>>>,
    #[serde(borrow, default)]
    tool_call_id: Option<Str<'a>>,
}

/// Message content: a string or a list of parts.
enum Content<'a> {
    Text(Str<'a>),
    Parts(Vec<Part<'a>>),
}

struct ContentVisitor;

impl<'de> Visitor<'de> for ContentVisitor {
    type Value = Content<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or a list of content parts")
    }

    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Content::Text(Str(Cow::Borrowed(v))))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Content::Text(Str(Cow::Owned(v.to_owned()))))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
        Ok(Content::Text(Str(Cow::Owned(v))))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut parts = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(16));
        while let Some(p) = seq.next_element::<Part<'de>>()? {
            parts.push(p);
        }
        Ok(Content::Parts(parts))
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Content<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ContentVisitor)
    }
}

#[derive(DeriveDeserialize)]
struct Part<'a> {
    #[serde(rename = "type", borrow)]
    kind: Str<'a>,
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
    #[serde(borrow, default)]
    refusal: Option<Str<'a>>,
    #[serde(borrow, default)]
    image_url: Option<ImageUrl<'a>>,
}

#[derive(DeriveDeserialize)]
struct ImageUrl<'a> {
    #[serde(borrow)]
    url: Str<'a>,
}

#[derive(DeriveDeserialize)]
struct ChatToolCall<'a> {
    #[serde(borrow)]
    id: Str<'a>,
    #[serde(borrow)]
    function: FunctionCall<'a>,
}

#[derive(DeriveDeserialize)]
struct FunctionCall<'a> {
    #[serde(borrow)]
    name: Str<'a>,
    #[serde(borrow, default)]
    arguments: Str<'a>,
}

#[derive(DeriveDeserialize)]
struct ChatTool<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow)]
    function: FunctionDef<'a>,
}

#[derive(DeriveDeserialize)]
struct FunctionDef<'a> {
    #[serde(borrow)]
    name: Str<'a>,
    #[serde(borrow, default)]
    description: Option<Str<'a>>,
    #[serde(borrow, default)]
    parameters: Option<&'a RawValue>,
}

#[derive(DeriveDeserialize)]
#[serde(untagged)]
enum ToolChoiceIn {
    Mode(String),
    Function { function: NamedFunction },
}

#[derive(DeriveDeserialize)]
struct NamedFunction {
    name: String,
}

// ---- request: Anthropic out ------------------------------------------------------

#[derive(Serialize)]
struct MessagesRequest<'a> {
    model: &'a str,
    max_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<Cow<'a, str>>,
    messages: Vec<AnthMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    stop_sequences: Vec<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<AnthTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<AnthToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<Metadata<'a>>,
}

#[derive(Serialize)]
struct AnthMessage<'a> {
    role: &'static str,
    content: Vec<Block<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum Block<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: ImageSource<'a>,
    },
    ToolUse {
        id: &'a str,
        name: &'a str,
        input: &'a RawValue,
    },
    ToolResult {
        tool_use_id: &'a str,
        content: Vec<Block<'a>>,
    },
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum ImageSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct AnthTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a RawValue,
}

#[derive(Serialize)]
struct AnthToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    disable_parallel_tool_use: Option<bool>,
}

#[derive(Serialize)]
struct Metadata<'a> {
    user_id: &'a str,
}

/// An OpenAI chat completion request, translated for Anthropic's messages API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TranslatedRequest {
    /// The Anthropic request body.
    pub body: Vec<u8>,
    /// The model the caller asked for.
    pub requested_model: String,
    /// The Anthropic model sent (after mapping).
    pub model: String,
    /// Whether the caller asked for a stream.
    pub stream: bool,
    /// Whether the caller asked for usage in the stream
    /// (`stream_options.include_usage`).
    pub include_usage: bool,
}

/// Options of [`request_to_anthropic`].
#[derive(Debug, Clone, Copy)]
pub struct RequestOptions<'a> {
    /// Logical → Anthropic model names.
    pub models: &'a ModelMap,
    /// `max_tokens` when the caller gave none.
    pub default_max_tokens: u64,
}

fn empty_object() -> &'static RawValue {
    serde_json::from_str("{}").expect("a constant JSON object parses")
}

fn empty_schema() -> &'static RawValue {
    serde_json::from_str(r#"{"type":"object","properties":{}}"#)
        .expect("a constant JSON object parses")
}

/// Translates an OpenAI chat completion request body into an Anthropic messages
/// request body.
///
/// ```
/// use tower_failover_provider::ModelMap;
/// use tower_failover_provider::translate::anthropic::{RequestOptions, request_to_anthropic};
///
/// let models = ModelMap::from_iter([("smart", "claude-sonnet-4-5")]);
/// let opts = RequestOptions { models: &models, default_max_tokens: 1024 };
/// let out = request_to_anthropic(br#"{
///     "model": "smart",
///     "messages": [
///         {"role": "system", "content": "Be brief."},
///         {"role": "user", "content": "Hello"}
///     ],
///     "stop": "END"
/// }"#, &opts).unwrap();
/// let body: serde_json::Value = serde_json::from_slice(&out.body).unwrap();
/// assert_eq!(body, serde_json::json!({
///     "model": "claude-sonnet-4-5",
///     "max_tokens": 1024,
///     "system": "Be brief.",
///     "messages": [{"role": "user", "content": [{"type": "text", "text": "Hello"}]}],
///     "stop_sequences": ["END"]
/// }));
/// ```
pub fn request_to_anthropic(
    body: &[u8],
    opts: &RequestOptions<'_>,
) -> Result<TranslatedRequest, TranslateError> {
    super::require_object(body)?;
    let req: ChatRequest<'_> = serde_json::from_slice(body)
        .map_err(|e| TranslateError::new(format!("not a chat completion request: {e}")))?;
    if req.n.unwrap_or(1) > 1 {
        return Err(TranslateError::new("n > 1 is not supported by Anthropic"));
    }
    let model = opts.models.map(&req.model);

    let mut system = SystemPrompt::default();
    let mut messages: Vec<AnthMessage<'_>> = Vec::with_capacity(req.messages.len());
    for (i, msg) in req.messages.iter().enumerate() {
        let role: &'static str = match &*msg.role {
            "system" | "developer" => {
                system.push(msg.content.as_ref(), i)?;
                continue;
            }
            "user" => "user",
            "assistant" => "assistant",
            "tool" => "user",
            other => {
                return Err(TranslateError::new(format!(
                    "messages[{i}]: unsupported role {other:?}"
                )));
            }
        };
        let mut blocks = Vec::new();
        match &*msg.role {
            "tool" => {
                let id = msg.tool_call_id.as_deref().ok_or_else(|| {
                    TranslateError::new(format!("messages[{i}]: tool message without tool_call_id"))
                })?;
                let mut content = Vec::new();
                push_content(&mut content, msg.content.as_ref(), i)?;
                blocks.push(Block::ToolResult {
                    tool_use_id: id,
                    content,
                });
            }
            _ => {
                push_content(&mut blocks, msg.content.as_ref(), i)?;
                for call in msg.tool_calls.iter().flatten() {
                    let args = call.function.arguments.trim();
                    let input = if args.is_empty() {
                        empty_object()
                    } else {
                        serde_json::from_str::<&RawValue>(args).map_err(|e| {
                            TranslateError::new(format!(
                                "messages[{i}]: tool call arguments are not JSON: {e}"
                            ))
                        })?
                    };
                    blocks.push(Block::ToolUse {
                        id: &call.id,
                        name: &call.function.name,
                        input,
                    });
                }
            }
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(AnthMessage {
                role,
                content: blocks,
            }),
        }
    }

    let tools: Vec<AnthTool<'_>> = req
        .tools
        .iter()
        .flatten()
        .filter(|t| t.kind.as_deref().is_none_or(|k| k == "function"))
        .map(|t| AnthTool {
            name: &t.function.name,
            description: t.function.description.as_deref(),
            input_schema: t.function.parameters.unwrap_or_else(|| empty_schema()),
        })
        .collect();

    let choice = match req.tool_choice {
        None => None,
        Some(raw) => Some(
            serde_json::from_str::<ToolChoiceIn>(raw.get())
                .map_err(|_| TranslateError::new("unsupported tool_choice"))?,
        ),
    };
    let disable_parallel = (req.parallel_tool_calls == Some(false)).then_some(true);
    let tool_choice = match &choice {
        None if disable_parallel.is_some() && !tools.is_empty() => Some(AnthToolChoice {
            kind: "auto",
            name: None,
            disable_parallel_tool_use: disable_parallel,
        }),
        None => None,
        Some(ToolChoiceIn::Mode(mode)) => Some(match mode.as_str() {
            "auto" => AnthToolChoice {
                kind: "auto",
                name: None,
                disable_parallel_tool_use: disable_parallel,
            },
            "required" => AnthToolChoice {
                kind: "any",
                name: None,
                disable_parallel_tool_use: disable_parallel,
            },
            "none" => AnthToolChoice {
                kind: "none",
                name: None,
                disable_parallel_tool_use: None,
            },
            other => {
                return Err(TranslateError::new(format!(
                    "unsupported tool_choice {other:?}"
                )));
            }
        }),
        Some(ToolChoiceIn::Function { function }) => Some(AnthToolChoice {
            kind: "tool",
            name: Some(&function.name),
            disable_parallel_tool_use: disable_parallel,
        }),
    };

    let stream = req.stream.unwrap_or(false);
    let out = MessagesRequest {
        model,
        max_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .unwrap_or(opts.default_max_tokens),
        system: system.finish(),
        messages,
        temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
        top_p: req.top_p,
        stop_sequences: req
            .stop
            .as_ref()
            .map(|s| s.iter().collect())
            .unwrap_or_default(),
        stream,
        tools,
        tool_choice,
        metadata: req.user.as_deref().map(|user_id| Metadata { user_id }),
    };
    let body = serde_json::to_vec(&out).map_err(|e| TranslateError::new(e.to_string()))?;
    Ok(TranslatedRequest {
        body,
        requested_model: req.model.to_string(),
        model: model.to_string(),
        stream,
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
    })
}

/// The top-level `system` text: every system and developer message, joined by blank
/// lines (the text parts of one message by a line break).
///
/// The pieces are borrowed as they come and copied once, into one `String` of the
/// right size, at the end: a request of 100 000 tiny system messages costs time
/// linear in its size, not quadratic as joining message by message would.
#[derive(Default)]
struct SystemPrompt<'a> {
    pieces: Vec<&'a str>,
    messages: usize,
}

impl<'a> SystemPrompt<'a> {
    /// Adds the text of system message `i` (a string, or text parts only).
    fn push(&mut self, content: Option<&'a Content<'a>>, i: usize) -> Result<(), TranslateError> {
        if self.messages > 0 {
            self.pieces.push("\n\n");
        }
        self.messages += 1;
        match content {
            None => {}
            Some(Content::Text(s)) => self.pieces.push(s),
            Some(Content::Parts(parts)) => {
                for (k, p) in parts.iter().enumerate() {
                    let text = match (&*p.kind, &p.text) {
                        ("text", Some(t)) => &**t,
                        _ => {
                            return Err(TranslateError::new(format!(
                                "messages[{i}]: system content may only hold text"
                            )));
                        }
                    };
                    if k > 0 {
                        self.pieces.push("\n");
                    }
                    self.pieces.push(text);
                }
            }
        }
        Ok(())
    }

    /// The joined text; `None` if there was no system message.
    fn finish(self) -> Option<Cow<'a, str>> {
        (self.messages > 0).then(|| concat(&self.pieces))
    }
}

/// The pieces one after another: borrowed if there is only one, else copied once
/// into a `String` allocated at its final size.
fn concat<'a>(pieces: &[&'a str]) -> Cow<'a, str> {
    match pieces {
        [] => Cow::Borrowed(""),
        [one] => Cow::Borrowed(one),
        many => {
            let mut out = String::with_capacity(many.iter().map(|p| p.len()).sum());
            for p in many {
                out.push_str(p);
            }
            Cow::Owned(out)
        }
    }
}

/// Appends a message's content as blocks. Empty texts are skipped (Anthropic
/// refuses empty text blocks).
fn push_content<'a>(
    blocks: &mut Vec<Block<'a>>,
    content: Option<&'a Content<'a>>,
    i: usize,
) -> Result<(), TranslateError> {
    match content {
        None => {}
        Some(Content::Text(s)) if !s.is_empty() => blocks.push(Block::Text { text: s }),
        Some(Content::Text(_)) => {}
        Some(Content::Parts(parts)) => {
            for p in parts {
                match (&*p.kind, &p.text, &p.image_url, &p.refusal) {
                    ("text", Some(t), _, _) if !t.is_empty() => {
                        blocks.push(Block::Text { text: t })
                    }
                    ("text", _, _, _) => {}
                    ("refusal", _, _, Some(r)) => blocks.push(Block::Text { text: r }),
                    ("image_url", _, Some(img), _) => blocks.push(Block::Image {
                        source: image_source(&img.url).ok_or_else(|| {
                            TranslateError::new(format!(
                                "messages[{i}]: image data URLs must be base64"
                            ))
                        })?,
                    }),
                    (other, _, _, _) => {
                        return Err(TranslateError::new(format!(
                            "messages[{i}]: unsupported content part {other:?}"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

fn image_source(url: &str) -> Option<ImageSource<'_>> {
    match url.strip_prefix("data:") {
        None => Some(ImageSource::Url { url }),
        Some(rest) => {
            let (meta, data) = rest.split_once(',')?;
            let media_type = meta.strip_suffix(";base64")?;
            Some(ImageSource::Base64 { media_type, data })
        }
    }
}

// ---- response: Anthropic in -------------------------------------------------------

#[derive(DeriveDeserialize)]
struct MessagesResponse<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(borrow, default)]
    model: Str<'a>,
    #[serde(borrow)]
    content: Vec<RespBlock<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Str<'a>>,
    #[serde(default)]
    usage: Option<AnthUsage>,
}

#[derive(DeriveDeserialize)]
struct RespBlock<'a> {
    #[serde(rename = "type", borrow)]
    kind: Str<'a>,
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
    #[serde(borrow, default)]
    id: Option<Str<'a>>,
    #[serde(borrow, default)]
    name: Option<Str<'a>>,
    #[serde(borrow, default)]
    input: Option<&'a RawValue>,
}

#[derive(DeriveDeserialize, Default, Clone, Copy)]
struct AnthUsage {
    #[serde(default, deserialize_with = "super::count::de_opt")]
    input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "super::count::de_opt")]
    output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "super::count::de_opt")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "super::count::de_opt")]
    cache_read_input_tokens: Option<u64>,
}

impl AnthUsage {
    /// Prompt tokens as OpenAI counts them (cached ones included), if any field
    /// about input was present.
    fn prompt(&self) -> Option<u64> {
        let parts = [
            self.input_tokens,
            self.cache_creation_input_tokens,
            self.cache_read_input_tokens,
        ];
        if parts.iter().all(Option::is_none) {
            return None;
        }
        Some(
            parts
                .iter()
                .flatten()
                .fold(0u64, |a, b| a.saturating_add(*b)),
        )
    }
}

// ---- response: OpenAI out -----------------------------------------------------------

#[derive(Serialize)]
struct ChatCompletion<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [Choice<'a>; 1],
    usage: ChatUsage,
}

#[derive(Serialize)]
struct Choice<'a> {
    index: u32,
    message: AssistantOut<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize)]
struct AssistantOut<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<ToolCallOut<'a>>,
    refusal: Option<()>,
}

#[derive(Serialize)]
struct ToolCallOut<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: FunctionOut<'a>,
}

#[derive(Serialize)]
struct FunctionOut<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
}

impl ChatUsage {
    fn new(prompt: u64, completion: u64) -> Self {
        ChatUsage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            total_tokens: prompt.saturating_add(completion),
        }
    }
}

/// Token counts of a translated response.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenCounts {
    /// Prompt tokens, cached ones included.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
}

/// Maps Anthropic's `stop_reason` to OpenAI's `finish_reason`.
pub fn finish_reason(stop_reason: &str) -> &'static str {
    match stop_reason {
        "max_tokens" | "model_context_window_exceeded" => "length",
        "tool_use" => "tool_calls",
        "refusal" => "content_filter",
        // end_turn, stop_sequence, pause_turn and anything new.
        _ => "stop",
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Translates an Anthropic messages response body into an OpenAI chat completion
/// body, returning it with its token counts.
///
/// Malformed JSON is an [`Invalid`] error of kind `InvalidJson`; JSON of the wrong
/// shape is `Shape`; an error object in a success response is `ErrorObject`.
///
/// ```
/// use tower_failover_provider::translate::anthropic::response_to_openai;
///
/// let (body, usage) = response_to_openai(br#"{
///     "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-haiku-4-5",
///     "content": [{"type": "text", "text": "Hi!"}],
///     "stop_reason": "end_turn",
///     "usage": {"input_tokens": 12, "output_tokens": 3}
/// }"#).unwrap();
/// let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
/// assert_eq!(v["choices"][0]["message"]["content"], "Hi!");
/// assert_eq!(v["choices"][0]["finish_reason"], "stop");
/// assert_eq!(v["usage"]["total_tokens"], 15);
/// assert_eq!(usage.prompt_tokens, 12);
/// ```
pub fn response_to_openai(body: &[u8]) -> Result<(Vec<u8>, TokenCounts), Invalid> {
    let resp: MessagesResponse<'_> = serde_json::from_slice(body).map_err(|e| {
        if e.is_syntax() || e.is_eof() {
            Invalid::new(RejectKind::InvalidJson, e.to_string())
        } else if contains_error_object(body) {
            Invalid::new(
                RejectKind::ErrorObject,
                "error object in a success response",
            )
        } else {
            Invalid::new(RejectKind::Shape, e.to_string())
        }
    })?;
    if resp.kind.as_deref() == Some("error") {
        return Err(Invalid::new(
            RejectKind::ErrorObject,
            "error object in a success response",
        ));
    }
    // Text blocks are concatenated once at the end (linear, however many there are).
    let mut texts: Vec<&str> = Vec::new();
    let mut tool_calls = Vec::new();
    for block in &resp.content {
        match (&*block.kind, &block.text) {
            ("text", Some(t)) => texts.push(t),
            ("tool_use", _) => tool_calls.push(ToolCallOut {
                id: block.id.as_deref().unwrap_or(""),
                kind: "function",
                function: FunctionOut {
                    name: block.name.as_deref().unwrap_or(""),
                    arguments: block.input.map_or("{}", RawValue::get),
                },
            }),
            // thinking, redacted_thinking, server tool blocks: not part of the
            // OpenAI shape.
            _ => {}
        }
    }
    let usage = resp.usage.unwrap_or_default();
    let counts = TokenCounts {
        prompt_tokens: usage.prompt().unwrap_or(0),
        completion_tokens: usage.output_tokens.unwrap_or(0),
    };
    let out = ChatCompletion {
        id: &resp.id,
        object: "chat.completion",
        created: now_unix(),
        model: &resp.model,
        choices: [Choice {
            index: 0,
            message: AssistantOut {
                role: "assistant",
                content: (!texts.is_empty()).then(|| concat(&texts)),
                tool_calls,
                refusal: None,
            },
            logprobs: None,
            finish_reason: resp.stop_reason.as_deref().map(finish_reason),
        }],
        usage: ChatUsage::new(counts.prompt_tokens, counts.completion_tokens),
    };
    let body =
        serde_json::to_vec(&out).map_err(|e| Invalid::new(RejectKind::Shape, e.to_string()))?;
    Ok((body, counts))
}

fn contains_error_object(body: &[u8]) -> bool {
    #[derive(DeriveDeserialize)]
    struct ErrorOnly<'a> {
        #[serde(rename = "type", borrow, default)]
        kind: Option<Str<'a>>,
    }
    matches!(
        serde_json::from_slice::<ErrorOnly<'_>>(body),
        Ok(ErrorOnly { kind: Some(k) }) if &*k == "error"
    )
}

// ---- errors --------------------------------------------------------------------------

#[derive(DeriveDeserialize)]
struct AnthErrorBody<'a> {
    #[serde(borrow)]
    error: AnthError<'a>,
}

#[derive(DeriveDeserialize)]
struct AnthError<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Str<'a>,
    #[serde(borrow, default)]
    message: Str<'a>,
}

#[derive(Serialize)]
struct OpenAiErrorBody<'a> {
    error: OpenAiError<'a>,
}

#[derive(Serialize)]
struct OpenAiError<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    param: Option<()>,
    code: Option<&'a str>,
}

/// Translates an Anthropic error body (`{"type":"error","error":{"type","message"}}`)
/// into OpenAI's error shape (`{"error":{"message","type","param","code"}}`). A body
/// that is not Anthropic's error JSON becomes the message of an `upstream_error`.
pub fn error_to_openai(body: &[u8]) -> Vec<u8> {
    let parsed = serde_json::from_slice::<AnthErrorBody<'_>>(body).ok();
    let lossy;
    let (message, kind) = match &parsed {
        Some(b) => (&*b.error.message, &*b.error.kind),
        None => {
            lossy = String::from_utf8_lossy(&body[..body.len().min(1000)]);
            (&*lossy, "upstream_error")
        }
    };
    openai_error(message, kind, None)
}

/// An error body in OpenAI's shape.
pub(crate) fn openai_error(message: &str, kind: &str, code: Option<&str>) -> Vec<u8> {
    serde_json::to_vec(&OpenAiErrorBody {
        error: OpenAiError {
            message,
            kind,
            param: None,
            code,
        },
    })
    .unwrap_or_else(|_| br#"{"error":{"message":"error","type":"upstream_error"}}"#.to_vec())
}

// ---- streams ------------------------------------------------------------------------

#[derive(DeriveDeserialize)]
struct Event<'a> {
    #[serde(rename = "type", borrow)]
    kind: Str<'a>,
    #[serde(borrow, default)]
    message: Option<EventMessage<'a>>,
    #[serde(default)]
    index: Option<usize>,
    #[serde(borrow, default)]
    content_block: Option<RespBlock<'a>>,
    #[serde(borrow, default)]
    delta: Option<EventDelta<'a>>,
    #[serde(default)]
    usage: Option<AnthUsage>,
    #[serde(borrow, default)]
    error: Option<AnthError<'a>>,
}

#[derive(DeriveDeserialize)]
struct EventMessage<'a> {
    #[serde(borrow, default)]
    id: Str<'a>,
    #[serde(borrow, default)]
    model: Str<'a>,
    #[serde(default)]
    usage: Option<AnthUsage>,
}

#[derive(DeriveDeserialize)]
struct EventDelta<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    text: Option<Str<'a>>,
    #[serde(borrow, default)]
    partial_json: Option<Str<'a>>,
    #[serde(borrow, default)]
    stop_reason: Option<Str<'a>>,
}

/// The fields every chunk of one stream repeats; serialized once per stream.
#[derive(Serialize)]
struct ChunkHead<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
}

#[derive(Serialize)]
struct ChunkChoice<'a> {
    index: u32,
    delta: Delta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'a str>,
}

#[derive(Serialize, Default)]
struct Delta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_calls: Option<[DeltaToolCall<'a>; 1]>,
}

#[derive(Serialize)]
struct DeltaToolCall<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: DeltaFunction<'a>,
}

#[derive(Serialize)]
struct DeltaFunction<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

/// Translates an Anthropic SSE stream into OpenAI chat completion chunks, chunk by
/// chunk, holding only the unfinished tail event.
///
/// ```
/// use tower_failover_provider::translate::anthropic::StreamTranslator;
///
/// let mut t = StreamTranslator::new(true, 1 << 20);
/// let mut out = Vec::new();
/// t.push(b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\
///          \"model\":\"claude-haiku-4-5\",\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\n\
///          event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\
///          \"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n", &mut out).unwrap();
/// t.push(b"data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\
///          \"usage\":{\"output_tokens\":2}}\n\ndata: {\"type\":\"message_stop\"}\n\n", &mut out).unwrap();
/// t.finish(&mut out).unwrap();
/// let text = String::from_utf8(out).unwrap();
/// assert!(text.contains(r#""delta":{"content":"Hi"}"#));
/// assert!(text.contains(r#""finish_reason":"stop""#));
/// assert!(text.contains(r#""usage":{"prompt_tokens":9,"completion_tokens":2,"total_tokens":11}"#));
/// assert!(text.ends_with("data: [DONE]\n\n"));
/// assert_eq!(t.usage().unwrap().completion_tokens, 2);
/// ```
#[derive(Debug, Clone)]
pub struct StreamTranslator {
    parser: SseParser,
    state: StreamState,
}

#[derive(Debug, Clone, Default)]
struct StreamState {
    id: String,
    model: String,
    created: u64,
    /// (Anthropic block index, OpenAI tool call index) of each tool_use block.
    tools: Vec<(usize, usize)>,
    prompt: Option<u64>,
    completion: Option<u64>,
    include_usage: bool,
    stopped: bool,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":`, built once.
    head: Vec<u8>,
}

impl StreamTranslator {
    /// A translator; `include_usage` ends the stream with OpenAI's usage chunk
    /// (`choices: []`). Events larger than `max_event` bytes are refused.
    pub fn new(include_usage: bool, max_event: usize) -> Self {
        StreamTranslator {
            parser: SseParser::new(max_event),
            state: StreamState {
                created: now_unix(),
                include_usage,
                ..StreamState::default()
            },
        }
    }

    /// Translates a chunk of the Anthropic stream, appending OpenAI SSE to `out`.
    ///
    /// Errors: [`Invalid`] for an event that is not JSON or too large;
    /// [`TransportError`] of kind `Overloaded` for an `overloaded_error` event;
    /// [`TruncatedStream`] for any other error event.
    pub fn push(&mut self, chunk: &[u8], out: &mut Vec<u8>) -> Result<(), BoxError> {
        let state = &mut self.state;
        self.parser
            .feed(chunk, &mut |ev: SseEvent<'_>| state.event(ev.data, out))
    }

    /// The Anthropic stream ended: translates a last event that lacked its blank
    /// line, and fails with [`TruncatedStream`] if `message_stop` never came.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), BoxError> {
        let state = &mut self.state;
        self.parser
            .finish(&mut |ev: SseEvent<'_>| state.event(ev.data, out))?;
        if !self.state.stopped {
            return Err(TruncatedStream::new("anthropic stream ended before message_stop").into());
        }
        Ok(())
    }

    /// Whether `message_stop` has been translated.
    pub fn is_complete(&self) -> bool {
        self.state.stopped
    }

    /// The token counts seen so far (final once complete), if any.
    pub fn usage(&self) -> Option<TokenCounts> {
        if self.state.prompt.is_none() && self.state.completion.is_none() {
            return None;
        }
        Some(TokenCounts {
            prompt_tokens: self.state.prompt.unwrap_or(0),
            completion_tokens: self.state.completion.unwrap_or(0),
        })
    }
}

impl StreamState {
    fn event(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), BoxError> {
        // Nothing follows `data: [DONE]`: whatever a provider sends after
        // `message_stop` is ignored.
        if self.stopped {
            return Ok(());
        }
        let ev: Event<'_> = serde_json::from_slice(data)
            .map_err(|e| Invalid::new(RejectKind::InvalidJson, format!("anthropic event: {e}")))?;
        match &*ev.kind {
            "message_start" => {
                if let Some(m) = ev.message {
                    self.id = m.id.0.into_owned();
                    self.model = m.model.0.into_owned();
                    self.head.clear();
                    if let Some(u) = m.usage {
                        self.absorb(u);
                    }
                }
                self.chunk(
                    out,
                    Delta {
                        role: Some("assistant"),
                        content: Some(""),
                        ..Delta::default()
                    },
                    None,
                )
            }
            "content_block_start" => {
                let (Some(block), Some(index)) = (ev.content_block, ev.index) else {
                    return Ok(());
                };
                match &*block.kind {
                    "text" => match block.text.as_deref() {
                        Some(t) if !t.is_empty() => self.chunk(
                            out,
                            Delta {
                                content: Some(t),
                                ..Delta::default()
                            },
                            None,
                        ),
                        _ => Ok(()),
                    },
                    "tool_use" => {
                        let tool_index = self.tools.len();
                        self.tools.push((index, tool_index));
                        self.chunk(
                            out,
                            Delta {
                                tool_calls: Some([DeltaToolCall {
                                    index: tool_index,
                                    id: block.id.as_deref(),
                                    kind: Some("function"),
                                    function: DeltaFunction {
                                        name: block.name.as_deref(),
                                        arguments: Some(""),
                                    },
                                }]),
                                ..Delta::default()
                            },
                            None,
                        )
                    }
                    _ => Ok(()),
                }
            }
            "content_block_delta" => {
                let Some(delta) = ev.delta else {
                    return Ok(());
                };
                match delta.kind.as_deref() {
                    Some("text_delta") => match delta.text.as_deref() {
                        Some(t) if !t.is_empty() => self.chunk(
                            out,
                            Delta {
                                content: Some(t),
                                ..Delta::default()
                            },
                            None,
                        ),
                        _ => Ok(()),
                    },
                    Some("input_json_delta") => {
                        let tool = ev
                            .index
                            .and_then(|i| self.tools.iter().find(|(b, _)| *b == i))
                            .map(|(_, t)| *t);
                        match (tool, delta.partial_json.as_deref()) {
                            (Some(index), Some(json)) if !json.is_empty() => self.chunk(
                                out,
                                Delta {
                                    tool_calls: Some([DeltaToolCall {
                                        index,
                                        id: None,
                                        kind: None,
                                        function: DeltaFunction {
                                            name: None,
                                            arguments: Some(json),
                                        },
                                    }]),
                                    ..Delta::default()
                                },
                                None,
                            ),
                            _ => Ok(()),
                        }
                    }
                    // thinking, signature and citation deltas have no OpenAI form.
                    _ => Ok(()),
                }
            }
            "message_delta" => {
                if let Some(u) = ev.usage {
                    self.absorb(u);
                }
                let reason = ev
                    .delta
                    .and_then(|d| d.stop_reason)
                    .map(|r| finish_reason(&r));
                match reason {
                    Some(r) => self.chunk(out, Delta::default(), Some(r)),
                    None => Ok(()),
                }
            }
            "message_stop" => {
                self.stopped = true;
                if self.include_usage {
                    let usage =
                        ChatUsage::new(self.prompt.unwrap_or(0), self.completion.unwrap_or(0));
                    self.write(out, &[], Some(usage))?;
                }
                out.extend_from_slice(b"data: [DONE]\n\n");
                Ok(())
            }
            "error" => {
                // The error's type, when it is a short identifier; never its
                // message, which is the provider's own text and may quote a key.
                let kind = ev
                    .error
                    .as_ref()
                    .map(|e| &*e.kind)
                    .filter(|k| {
                        k.len() <= 40 && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                    })
                    .unwrap_or("error");
                if kind == "overloaded_error" {
                    Err(TransportError::new(
                        FailureKind::Overloaded,
                        format!("anthropic stream error: {kind}"),
                    )
                    .into())
                } else {
                    Err(TruncatedStream::new(format!("anthropic stream error: {kind}")).into())
                }
            }
            // ping, content_block_stop and future event types.
            _ => Ok(()),
        }
    }

    fn absorb(&mut self, u: AnthUsage) {
        if let Some(p) = u.prompt() {
            self.prompt = Some(p);
        }
        if let Some(c) = u.output_tokens {
            self.completion = Some(c);
        }
    }

    fn chunk(
        &mut self,
        out: &mut Vec<u8>,
        delta: Delta<'_>,
        finish_reason: Option<&str>,
    ) -> Result<(), BoxError> {
        self.write(
            out,
            &[ChunkChoice {
                index: 0,
                delta,
                logprobs: None,
                finish_reason,
            }],
            None,
        )
    }

    fn write(
        &mut self,
        out: &mut Vec<u8>,
        choices: &[ChunkChoice<'_>],
        usage: Option<ChatUsage>,
    ) -> Result<(), BoxError> {
        let err = |e: serde_json::Error| Invalid::new(RejectKind::Shape, e.to_string());
        if self.head.is_empty() {
            self.head.extend_from_slice(b"data: ");
            serde_json::to_writer(
                &mut self.head,
                &ChunkHead {
                    id: &self.id,
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: &self.model,
                },
            )
            .map_err(err)?;
            self.head.pop(); // the closing brace
            self.head.extend_from_slice(b",\"choices\":");
        }
        out.extend_from_slice(&self.head);
        serde_json::to_writer(&mut *out, choices).map_err(err)?;
        if let Some(usage) = usage {
            out.extend_from_slice(b",\"usage\":");
            serde_json::to_writer(&mut *out, &usage).map_err(err)?;
        }
        out.extend_from_slice(b"}\n\n");
        Ok(())
    }
}

#[cfg(test)]
mod tests;
