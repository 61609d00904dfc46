//! OpenAI chat completion requests in, Anthropic messages requests out.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize as DeriveDeserialize, Serialize};
use serde_json::value::RawValue;

use crate::config::ModelMap;
use crate::error::TranslateError;
use crate::translate::str::{OneOrMany, Str};

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
    /// Features Anthropic's API cannot deliver: read only to refuse them as
    /// unsupported (another provider may serve the request).
    #[serde(default)]
    logprobs: Option<bool>,
    #[serde(default)]
    top_logprobs: Option<u32>,
    #[serde(default)]
    logit_bias: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(borrow, default)]
    modalities: Option<Vec<Str<'a>>>,
    #[serde(borrow, default)]
    audio: Option<&'a RawValue>,
    #[serde(borrow, default)]
    web_search_options: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response_format: Option<ResponseFormat<'a>>,
    /// OpenAI's legacy function calling, which the translation does not carry:
    /// refused as unsupported rather than sent without the functions.
    #[serde(borrow, default)]
    functions: Option<Vec<&'a RawValue>>,
}

/// OpenAI's `response_format`: `text`, `json_object` or `json_schema`.
#[derive(DeriveDeserialize)]
struct ResponseFormat<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<Str<'a>>,
    #[serde(borrow, default)]
    json_schema: Option<JsonSchemaFormat<'a>>,
}

#[derive(DeriveDeserialize)]
struct JsonSchemaFormat<'a> {
    #[serde(borrow, default)]
    schema: Option<&'a RawValue>,
}

impl ChatRequest<'_> {
    /// The first feature of the request Anthropic's API has no equivalent for.
    fn beyond_anthropic(&self) -> Option<&'static str> {
        let set = |raw: Option<&RawValue>| raw.is_some_and(|r| r.get().trim() != "null");
        if self.n.unwrap_or(1) > 1 {
            Some("n > 1 is not supported by Anthropic")
        } else if self.logprobs == Some(true) || self.top_logprobs.is_some_and(|n| n > 0) {
            Some("log probabilities (`logprobs`) are not supported by Anthropic")
        } else if self.logit_bias.as_ref().is_some_and(|b| !b.is_empty()) {
            Some("`logit_bias` is not supported by Anthropic")
        } else if set(self.audio) || self.modalities.iter().flatten().any(|m| &**m == "audio") {
            Some("audio output (`modalities`, `audio`) is not supported by Anthropic")
        } else if self.functions.as_ref().is_some_and(|f| !f.is_empty()) {
            Some("legacy `functions` are not supported by Anthropic's translation (use tools)")
        } else if set(self.web_search_options) {
            Some("`web_search_options` is not supported by Anthropic's chat translation")
        } else if self
            .tools
            .iter()
            .flatten()
            .any(|t| t.kind.as_deref().is_some_and(|k| k != "function") || t.function.is_none())
        {
            Some("tools other than functions are not supported by Anthropic's chat translation")
        } else {
            None
        }
    }
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
    /// A `file` part's file: its `file_data` (a `data:` URL) becomes a document.
    #[serde(borrow, default)]
    file: Option<FilePart<'a>>,
    /// A prompt-cache breakpoint (`{"type": "ephemeral"}`), as Anthropic's blocks
    /// carry it: passed on to the block this part becomes.
    #[serde(borrow, default)]
    cache_control: Option<&'a RawValue>,
}

#[derive(DeriveDeserialize)]
struct FilePart<'a> {
    #[serde(borrow, default)]
    file_data: Option<Str<'a>>,
    #[serde(borrow, default)]
    filename: Option<Str<'a>>,
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
    /// `None` for a tool of another type (OpenAI's `custom` tools), which
    /// [`ChatRequest::beyond_anthropic`] refuses.
    #[serde(borrow, default)]
    function: Option<FunctionDef<'a>>,
    /// A prompt-cache breakpoint after this tool's definition.
    #[serde(borrow, default)]
    cache_control: Option<&'a RawValue>,
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
    system: Option<System<'a>>,
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
    /// Structured output: OpenAI's `response_format: json_schema` as Anthropic's
    /// `output_config.format` (newer Claude models; an older one refuses it with a
    /// 400 that fails over, see `hint.rs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutputConfig<'a>>,
}

#[derive(Serialize)]
struct OutputConfig<'a> {
    format: OutputFormat<'a>,
}

#[derive(Serialize)]
struct OutputFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: &'a RawValue,
}

/// The system prompt: one string, or text blocks when a part of it is a
/// prompt-cache breakpoint (only blocks can carry one).
#[derive(Serialize)]
#[serde(untagged)]
enum System<'a> {
    Text(Cow<'a, str>),
    Blocks(Vec<Block<'a>>),
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
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    Image {
        source: ImageSource<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    Document {
        source: ImageSource<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        title: Option<&'a str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: &'a RawValue,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        content: Vec<Block<'a>>,
        #[serde(skip_serializing_if = "Option::is_none")]
        cache_control: Option<&'a RawValue>,
    },
}

impl<'a> Block<'a> {
    /// The block's own prompt-cache breakpoint, taken off it.
    fn take_cache_control(&mut self) -> Option<&'a RawValue> {
        match self {
            Block::Text { cache_control, .. }
            | Block::Image { cache_control, .. }
            | Block::Document { cache_control, .. }
            | Block::ToolResult { cache_control, .. } => cache_control.take(),
            Block::ToolUse { .. } => None,
        }
    }
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
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_control: Option<&'a RawValue>,
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
    user_id: Cow<'a, str>,
}

/// OpenAI's `user` as Anthropic's `metadata.user_id`, which must be an opaque id
/// of at most 256 characters: Anthropic answers `400 user_id appears to contain an
/// email address` for an email (and refuses phone numbers and longer ids), while
/// OpenAI takes any string. Such a `user` is sent as a hash of itself
/// (`user-` and 16 hex digits): still one id per caller for Anthropic's abuse
/// checks, and no address sent.
fn user_id(user: &str) -> Cow<'_, str> {
    let phone = user.strip_prefix('+').is_some_and(|rest| {
        let digits = rest.chars().filter(char::is_ascii_digit).count();
        digits >= 7
            && rest
                .chars()
                .all(|c| c.is_ascii_digit() || matches!(c, ' ' | '-' | '(' | ')' | '.'))
    });
    if !user.contains('@') && !phone && user.chars().count() <= 256 {
        return Cow::Borrowed(user);
    }
    use std::hash::{Hash, Hasher};
    // A fixed-key hash: the same caller is the same id on every replica of a build.
    let mut h = std::hash::DefaultHasher::new();
    user.hash(&mut h);
    Cow::Owned(format!("user-{:016x}", h.finish()))
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
    /// `max_tokens` when the caller gave none; `None`: the model's
    /// [`default_output_tokens`].
    pub default_max_tokens: Option<u64>,
}

/// The default limit of a non-streamed answer (see [`default_output_tokens`]).
const UNSTREAMED_DEFAULT: u64 = 4_096;

/// The `max_tokens` sent for a streamed request to `model` when neither the caller
/// nor the provider's configuration sets one (a non-streamed one gets at most
/// 4,096, which fits the first-byte window of an answer whose headers come at its
/// end): 16,384 for Claude 3.7 and 4.x models (they take 32,000 to
/// 64,000; 16,384 is what OpenAI's chat models allow, so an answer failed over from
/// them is not cut shorter), 8,192 for Claude 3.5, 4,096 for the Claude 3 models and
/// any name this does not know (a proxy's alias, a future naming). Bedrock- and
/// Vertex-style ids (`anthropic.claude-3-5-sonnet-…`, `claude-sonnet-4@…`) are read
/// by the `claude-…` inside them.
///
/// ```
/// use tower_failover_provider::translate::anthropic::default_output_tokens;
///
/// assert_eq!(default_output_tokens("claude-sonnet-4-5"), 16_384);
/// assert_eq!(default_output_tokens("us.anthropic.claude-3-7-sonnet-20250219-v1:0"), 16_384);
/// assert_eq!(default_output_tokens("claude-3-5-haiku-latest"), 8_192);
/// assert_eq!(default_output_tokens("claude-3-haiku-20240307"), 4_096);
/// assert_eq!(default_output_tokens("my-alias"), 4_096);
/// ```
pub fn default_output_tokens(model: &str) -> u64 {
    let Some(at) = model.find("claude-") else {
        return 4_096;
    };
    let name = &model[at + "claude-".len()..];
    if name.starts_with("3-7") || name.starts_with("3.7") {
        16_384
    } else if name.starts_with("3-5") || name.starts_with("3.5") {
        8_192
    } else if name.starts_with('3') || name.starts_with("instant") || name.starts_with('2') {
        4_096
    } else if name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        // `claude-sonnet-4-5`, `claude-opus-4-1`, `claude-haiku-4-5`: the 4.x
        // naming and what follows it.
        16_384
    } else {
        4_096
    }
}

fn empty_object() -> &'static RawValue {
    serde_json::from_str("{}").expect("a constant JSON object parses")
}

/// The tool a JSON answer without a schema (`response_format: json_object`) is
/// asked for as: its input is the answer, given back as the message's content by
/// [`response_to_openai`](super::response_to_openai) and the
/// [`StreamTranslator`](super::StreamTranslator). Reserved: a caller's tool of this
/// name is read as such an answer too.
pub const JSON_ANSWER_TOOL: &str = "tower_failover_json_answer";

/// Any JSON object (the input of [`JSON_ANSWER_TOOL`]).
fn any_object_schema() -> &'static RawValue {
    serde_json::from_str(r#"{"type":"object"}"#).expect("a constant JSON object parses")
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
/// let opts = RequestOptions { models: &models, default_max_tokens: Some(1024) };
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
    crate::translate::require_object(body)?;
    let req: ChatRequest<'_> = serde_json::from_slice(body)
        .map_err(|e| TranslateError::new(format!("not a chat completion request: {e}")))?;
    if let Some(why) = req.beyond_anthropic() {
        return Err(TranslateError::unsupported(why));
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
            // OpenAI's legacy function result: no tool-call id to answer.
            "function" => {
                return Err(TranslateError::unsupported(format!(
                    "messages[{i}]: legacy `function` messages are not supported by Anthropic's translation (use tools)"
                )));
            }
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
                // A breakpoint in the tool's answer marks the `tool_result` block
                // itself (the place Anthropic documents for it).
                let cache_control = content
                    .iter_mut()
                    .filter_map(Block::take_cache_control)
                    .last();
                blocks.push(Block::ToolResult {
                    tool_use_id: tool_id(id),
                    content,
                    cache_control,
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
                            TranslateError::unsupported(format!(
                                "messages[{i}]: tool call arguments are not JSON: {e}"
                            ))
                        })?
                    };
                    blocks.push(Block::ToolUse {
                        id: tool_id(&call.id),
                        name: &call.function.name,
                        input,
                    });
                }
            }
        }
        // A message with nothing to send (`""` or `null` content and no tool calls,
        // as clients store an assistant turn that had no text) is dropped:
        // Anthropic refuses a message with an empty content list. Tool results and
        // tool calls always hold a block, so they are never dropped here. Its
        // neighbours may then share a role, and merge below like any other.
        if blocks.is_empty() {
            continue;
        }
        match messages.last_mut() {
            Some(last) if last.role == role => last.content.extend(blocks),
            _ => messages.push(AnthMessage {
                role,
                content: blocks,
            }),
        }
    }

    // Anthropic refuses a conversation that ends with an assistant turn (a
    // prefill the answer continues) whose text ends in whitespace.
    if let Some(last) = messages.last_mut().filter(|m| m.role == "assistant") {
        if let Some(Block::Text { text, .. }) = last.content.last_mut() {
            *text = text.trim_end();
        }
        if matches!(last.content.last(), Some(Block::Text { text, .. }) if text.is_empty()) {
            last.content.pop();
        }
        if last.content.is_empty() {
            messages.pop();
        }
    }

    let mut tools: Vec<AnthTool<'_>> = req
        .tools
        .iter()
        .flatten()
        .filter_map(|t| t.function.as_ref().map(|f| (t, f)))
        .map(|(t, f)| AnthTool {
            name: &f.name,
            description: f.description.as_deref(),
            input_schema: f.parameters.unwrap_or_else(|| empty_schema()),
            cache_control: t.cache_control,
        })
        .collect();

    let choice = match req.tool_choice {
        None => None,
        Some(raw) => Some(
            serde_json::from_str::<ToolChoiceIn>(raw.get())
                .map_err(|_| TranslateError::unsupported("unsupported tool_choice"))?,
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
                return Err(TranslateError::unsupported(format!(
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

    // JSON without a schema: Anthropic has no such mode, so the answer is asked for
    // as the input of a tool it must call (a JSON object by the API's contract,
    // where a prompt alone gets prose or a fenced block); the response translation
    // gives it back as the message's content. Beside the caller's own tools the
    // model must call one of them or ours (`any`: a tool call, or the answer in
    // JSON, as OpenAI's JSON mode with tools); a caller that requires a call of its
    // own gets one, as asked. Not after a prefill (a forced tool call cannot
    // continue one): then nothing is sent, as before.
    let mut tool_choice = tool_choice;
    let json_object = req
        .response_format
        .as_ref()
        .is_some_and(|f| f.kind.as_deref() == Some("json_object"));
    let prefilled = messages.last().is_some_and(|m| m.role == "assistant");
    // Without a `tool_choice`, tools are the model's to call or not (`auto`).
    let mode = match tool_choice.as_ref().map(|c| c.kind) {
        None if tools.is_empty() => "none",
        None => "auto",
        Some(kind) => kind,
    };
    let answer_choice = match mode {
        // No call of the caller's tools may be made: ours.
        "none" if json_object => Some(AnthToolChoice {
            kind: "tool",
            name: Some(JSON_ANSWER_TOOL),
            disable_parallel_tool_use: None,
        }),
        // One of theirs, or ours.
        "auto" if json_object => Some(AnthToolChoice {
            kind: "any",
            name: None,
            disable_parallel_tool_use: disable_parallel,
        }),
        // `any` / a named tool: a call of the caller's, as asked.
        _ => None,
    };
    if let Some(choice) = answer_choice.filter(|_| !prefilled) {
        tools.push(AnthTool {
            name: JSON_ANSWER_TOOL,
            description: Some(
                "Give your whole answer as this tool's input: one JSON object, as the user asked for JSON.",
            ),
            input_schema: any_object_schema(),
            cache_control: None,
        });
        tool_choice = Some(choice);
    }

    let stream = req.stream.unwrap_or(false);
    let out = MessagesRequest {
        model,
        max_tokens: req
            .max_completion_tokens
            .or(req.max_tokens)
            .or(opts.default_max_tokens)
            .unwrap_or_else(|| {
                // A non-streamed answer's headers come when it is all written:
                // 4,096 tokens fit the first-byte window (120 s by default) at any
                // Claude model's speed, more might not, and a timeout would fail
                // over an honest long answer and count against the provider.
                let most = default_output_tokens(model);
                if stream {
                    most
                } else {
                    most.min(UNSTREAMED_DEFAULT)
                }
            }),
        system: system.finish(),
        messages,
        temperature: req.temperature.map(|t| t.clamp(0.0, 1.0)),
        // Current Claude models refuse `temperature` and `top_p` together (a 400,
        // which does not fail over): with both, `temperature` is kept.
        top_p: req.top_p.filter(|_| req.temperature.is_none()),
        // Anthropic refuses a stop sequence that is empty or only whitespace (a
        // 400 for the whole request), so such entries are dropped: the answer may
        // then run past a `"\n"` where OpenAI would have stopped.
        stop_sequences: req
            .stop
            .as_ref()
            .map(|s| s.iter().filter(|s| !s.trim().is_empty()).collect())
            .unwrap_or_default(),
        stream,
        tools,
        tool_choice,
        metadata: req.user.as_deref().map(|user| Metadata {
            user_id: user_id(user),
        }),
        output_config: output_config(req.response_format.as_ref())?,
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

/// `response_format` as Anthropic's `output_config`: a JSON Schema is carried over;
/// `text` sends nothing, nor does `json_object` (JSON without a schema, which
/// Anthropic has no mode for: it is asked for as a forced call of
/// [`JSON_ANSWER_TOOL`] instead).
fn output_config<'a>(
    format: Option<&ResponseFormat<'a>>,
) -> Result<Option<OutputConfig<'a>>, TranslateError> {
    let Some(format) = format else {
        return Ok(None);
    };
    match format.kind.as_deref() {
        Some("json_schema") => {
            let schema = format
                .json_schema
                .as_ref()
                .and_then(|j| j.schema)
                .ok_or_else(|| {
                    TranslateError::new("response_format.json_schema.schema: missing")
                })?;
            Ok(Some(OutputConfig {
                format: OutputFormat {
                    kind: "json_schema",
                    schema,
                },
            }))
        }
        _ => Ok(None),
    }
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
    /// Each text of the system messages with its prompt-cache breakpoint, if
    /// any: the prompt is sent as these blocks when one has a breakpoint.
    blocks: Vec<(&'a str, Option<&'a RawValue>)>,
    cached: bool,
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
            Some(Content::Text(s)) => {
                self.pieces.push(s);
                self.blocks.push((s, None));
            }
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
                    self.blocks.push((text, p.cache_control));
                    self.cached |= p.cache_control.is_some();
                }
            }
        }
        Ok(())
    }

    /// The joined text, or the blocks when one is a prompt-cache breakpoint;
    /// `None` if there was no system message.
    fn finish(self) -> Option<System<'a>> {
        if self.cached {
            let blocks = self
                .blocks
                .into_iter()
                .filter(|(text, _)| !text.is_empty())
                .map(|(text, cache_control)| Block::Text {
                    text,
                    cache_control,
                })
                .collect();
            return Some(System::Blocks(blocks));
        }
        (self.messages > 0).then(|| System::Text(concat(&self.pieces)))
    }
}

/// The pieces one after another: borrowed if there is only one, else copied once
/// into a `String` allocated at its final size.
pub(super) fn concat<'a>(pieces: &[&'a str]) -> Cow<'a, str> {
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

/// Whether a text would be refused as a block: Anthropic answers `400 text content
/// blocks must contain non-whitespace text` for `""` and for `"\n\n"` alike (the
/// text an agent's assistant turn often holds beside its tool calls).
fn is_blank(text: &str) -> bool {
    text.trim().is_empty()
}

/// A tool call's id as Anthropic takes it (`^[a-zA-Z0-9_-]+$`): ids from other
/// providers (`functions.get_weather:0`, `call.1`) have every other character made
/// `_`, the same way for the call and its result, so they still pair up.
fn tool_id(id: &str) -> Cow<'_, str> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !id.is_empty() && id.chars().all(ok) {
        return Cow::Borrowed(id);
    }
    if id.is_empty() {
        return Cow::Borrowed("_");
    }
    Cow::Owned(id.chars().map(|c| if ok(c) { c } else { '_' }).collect())
}

/// An image's media type as Anthropic takes it: one of `image/jpeg`, `image/png`,
/// `image/gif`, `image/webp`, lower case and without parameters. `image/jpg` (a
/// common spelling OpenAI reads) is `image/jpeg`; anything else is sent as it is,
/// and Anthropic's refusal names it.
fn media_type(meta: &str) -> &str {
    let bare = meta.split(';').next().unwrap_or(meta).trim();
    for known in ["image/jpeg", "image/png", "image/gif", "image/webp"] {
        if bare.eq_ignore_ascii_case(known) {
            return known;
        }
    }
    if bare.eq_ignore_ascii_case("image/jpg") {
        return "image/jpeg";
    }
    bare
}

/// Appends a message's content as blocks. Empty and whitespace-only texts are
/// skipped (Anthropic refuses them as blocks).
fn push_content<'a>(
    blocks: &mut Vec<Block<'a>>,
    content: Option<&'a Content<'a>>,
    i: usize,
) -> Result<(), TranslateError> {
    match content {
        None => {}
        Some(Content::Text(s)) if !is_blank(s) => blocks.push(Block::Text {
            text: s,
            cache_control: None,
        }),
        Some(Content::Text(_)) => {}
        Some(Content::Parts(parts)) => {
            for p in parts {
                match (&*p.kind, &p.text, &p.image_url, &p.refusal) {
                    ("text", Some(t), _, _) if !is_blank(t) => blocks.push(Block::Text {
                        text: t,
                        cache_control: p.cache_control,
                    }),
                    ("text", _, _, _) => {}
                    ("refusal", _, _, Some(r)) => blocks.push(Block::Text {
                        text: r,
                        cache_control: p.cache_control,
                    }),
                    ("file", ..) => {
                        let file = p.file.as_ref();
                        let source = file
                            .and_then(|f| f.file_data.as_deref())
                            .and_then(document_source)
                            .ok_or_else(|| {
                                TranslateError::unsupported(format!(
                                    "messages[{i}]: a file part needs its file_data as a base64 data URL (a file_id cannot be sent to Anthropic)"
                                ))
                            })?;
                        if let ImageSource::Base64 { media_type, .. } = &source
                            && !media_type.eq_ignore_ascii_case("application/pdf")
                        {
                            // Anthropic reads base64 documents as PDFs only.
                            return Err(TranslateError::unsupported(format!(
                                "messages[{i}]: a file of type {media_type:?} cannot be sent to Anthropic (PDF only)"
                            )));
                        }
                        blocks.push(Block::Document {
                            source,
                            title: file.and_then(|f| f.filename.as_deref()),
                            cache_control: p.cache_control,
                        });
                    }
                    ("image_url", _, Some(img), _) => blocks.push(Block::Image {
                        source: image_source(&img.url).ok_or_else(|| {
                            TranslateError::new(format!(
                                "messages[{i}]: image data URLs must be base64"
                            ))
                        })?,
                        cache_control: p.cache_control,
                    }),
                    (other, _, _, _) => {
                        return Err(TranslateError::unsupported(format!(
                            "messages[{i}]: unsupported content part {other:?}"
                        )));
                    }
                }
            }
        }
    }
    Ok(())
}

/// A file part's `data:` URL as a document's base64 source.
fn document_source(url: &str) -> Option<ImageSource<'_>> {
    let (meta, data) = url.strip_prefix("data:")?.split_once(',')?;
    let media_type = meta.strip_suffix(";base64")?;
    let media_type = media_type.split(';').next().unwrap_or(media_type).trim();
    Some(ImageSource::Base64 { media_type, data })
}

fn image_source(url: &str) -> Option<ImageSource<'_>> {
    match url.strip_prefix("data:") {
        None => Some(ImageSource::Url { url }),
        Some(rest) => {
            let (meta, data) = rest.split_once(',')?;
            let media_type = media_type(meta.strip_suffix(";base64")?);
            Some(ImageSource::Base64 { media_type, data })
        }
    }
}
