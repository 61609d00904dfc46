//! Anthropic response and error bodies in, OpenAI's shapes out.

use std::borrow::Cow;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize as DeriveDeserialize, Serialize};
use serde_json::value::RawValue;
use tower_failover_core::RejectKind;
use tower_failover_core::error::Invalid;

use crate::translate::str::Str;

use super::request::{JSON_ANSWER_TOOL, concat};

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
    #[serde(borrow, default)]
    stop_sequence: Option<Str<'a>>,
    #[serde(default)]
    usage: Option<AnthUsage>,
}

#[derive(DeriveDeserialize)]
pub(super) struct RespBlock<'a> {
    #[serde(rename = "type", borrow)]
    pub(super) kind: Str<'a>,
    #[serde(borrow, default)]
    pub(super) text: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub(super) id: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub(super) name: Option<Str<'a>>,
    #[serde(borrow, default)]
    pub(super) input: Option<&'a RawValue>,
}

#[derive(DeriveDeserialize, Default, Clone, Copy)]
pub(super) struct AnthUsage {
    #[serde(default, deserialize_with = "crate::translate::count::de_opt")]
    pub(super) input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "crate::translate::count::de_opt")]
    pub(super) output_tokens: Option<u64>,
    #[serde(default, deserialize_with = "crate::translate::count::de_opt")]
    pub(super) cache_creation_input_tokens: Option<u64>,
    #[serde(default, deserialize_with = "crate::translate::count::de_opt")]
    pub(super) cache_read_input_tokens: Option<u64>,
}

impl AnthUsage {
    /// Prompt tokens as OpenAI counts them (cached ones included), if any field
    /// about input was present.
    pub(super) fn prompt(&self) -> Option<u64> {
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
    /// The stop sequence the answer ended at (Anthropic's `stop_sequence`), in
    /// the field vLLM gives it beside `finish_reason: "stop"`: OpenAI's shape has
    /// none, and `/v1/messages` gives it back to its caller.
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_reason: Option<&'a str>,
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
pub(super) struct ChatUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    /// OpenAI's place for the prompt tokens read from the cache.
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<PromptDetails>,
    /// Of the prompt, the tokens written to the cache (billed above the input
    /// price), under Anthropic's name: OpenAI's shape has no place for them, and
    /// `/v1/messages` gives them back to its caller.
    #[serde(skip_serializing_if = "is_zero")]
    cache_creation_input_tokens: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

#[derive(Serialize, Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct PromptDetails {
    cached_tokens: u64,
}

impl ChatUsage {
    pub(super) fn new(counts: TokenCounts) -> Self {
        ChatUsage {
            prompt_tokens: counts.prompt_tokens,
            completion_tokens: counts.completion_tokens,
            total_tokens: counts
                .prompt_tokens
                .saturating_add(counts.completion_tokens),
            prompt_tokens_details: (counts.cache_read_tokens > 0).then_some(PromptDetails {
                cached_tokens: counts.cache_read_tokens,
            }),
            cache_creation_input_tokens: counts.cache_write_tokens,
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
    /// Of the prompt tokens, those read from the prompt cache (priced apart:
    /// [`Price::cost_cached`](tower_failover_core::Price::cost_cached)).
    pub cache_read_tokens: u64,
    /// Of the prompt tokens, those written to the prompt cache.
    pub cache_write_tokens: u64,
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

/// [`finish_reason`] of an answer that may have come as the JSON answer tool's
/// input: when that was the only call (`json_answer_only`), it is the answer, not
/// a tool call the caller must run.
pub(super) fn answered_finish_reason(stop_reason: &str, json_answer_only: bool) -> &'static str {
    match finish_reason(stop_reason) {
        "tool_calls" if json_answer_only => "stop",
        other => other,
    }
}

pub(super) fn now_unix() -> u64 {
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
    // The answer to a request for JSON without a schema, asked for as a tool's
    // input (see `JSON_ANSWER_TOOL`): it is the content, and any text beside it is
    // not part of the JSON asked for.
    let mut json_answer: Option<&str> = None;
    for block in &resp.content {
        match (&*block.kind, &block.text) {
            ("text", Some(t)) => texts.push(t),
            ("tool_use", _) if block.name.as_deref() == Some(JSON_ANSWER_TOOL) => {
                json_answer = Some(block.input.map_or("{}", RawValue::get));
            }
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
    let json_answer_only = json_answer.is_some() && tool_calls.is_empty();
    let usage = resp.usage.unwrap_or_default();
    let counts = TokenCounts {
        prompt_tokens: usage.prompt().unwrap_or(0),
        completion_tokens: usage.output_tokens.unwrap_or(0),
        cache_read_tokens: usage.cache_read_input_tokens.unwrap_or(0),
        cache_write_tokens: usage.cache_creation_input_tokens.unwrap_or(0),
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
                content: match json_answer {
                    Some(json) => Some(Cow::Borrowed(json)),
                    None => (!texts.is_empty()).then(|| concat(&texts)),
                },
                tool_calls,
                refusal: None,
            },
            logprobs: None,
            finish_reason: resp
                .stop_reason
                .as_deref()
                .map(|r| answered_finish_reason(r, json_answer_only)),
            stop_reason: resp
                .stop_sequence
                .as_deref()
                .filter(|_| resp.stop_reason.as_deref() == Some("stop_sequence")),
        }],
        usage: ChatUsage::new(counts),
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
pub(super) struct AnthError<'a> {
    #[serde(rename = "type", borrow, default)]
    pub(super) kind: Str<'a>,
    #[serde(borrow, default)]
    pub(super) message: Str<'a>,
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
