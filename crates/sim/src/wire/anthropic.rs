//! Anthropic messages: `POST /v1/messages` and `GET /v1/models`.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Ask, Finish, ForcedTool, JsonMode, Reply, content_text, sse, text::split_pieces, tokens,
};

/// Identity of one reply.
pub(crate) struct Meta<'a> {
    pub(crate) id: &'a str,
    pub(crate) model: &'a str,
}

#[derive(Deserialize)]
struct Req {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Msg>,
    #[serde(default)]
    system: Option<Value>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    stream: Option<bool>,
    /// The structured-outputs beta's field (with its `anthropic-beta` header).
    #[serde(default)]
    output_format: Option<Value>,
    /// Structured outputs, generally available: `output_config.format`.
    #[serde(default)]
    output_config: Option<Value>,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    stop_sequences: Vec<String>,
    #[serde(default)]
    tools: Vec<Value>,
    #[serde(default)]
    tool_choice: Option<Value>,
}

#[derive(Deserialize)]
struct Msg {
    role: String,
    #[serde(default)]
    content: Value,
}

/// What Anthropic's API refuses in a message's blocks, with its wording: a text
/// block that is empty or whitespace only, a tool id outside `^[a-zA-Z0-9_-]+$`, a
/// base64 image of a media type it does not read. (And, in [`parse`], a final
/// assistant turn that ends in whitespace.)
fn check_blocks(i: usize, content: &Value) -> Result<(), String> {
    let Some(blocks) = content.as_array() else {
        return Ok(());
    };
    let id_ok = |id: &str| {
        !id.is_empty()
            && id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
    };
    for (j, b) in blocks.iter().enumerate() {
        let field = |k: &str| b.get(k).and_then(Value::as_str);
        match field("type") {
            Some("text") if field("text").is_none_or(|t| t.trim().is_empty()) => {
                return Err(
                    "messages: text content blocks must contain non-whitespace text".into(),
                );
            }
            Some("tool_use") if !field("id").is_some_and(id_ok) => {
                return Err(format!(
                    "messages.{i}.content.{j}.tool_use.id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                ));
            }
            Some("tool_result") if !field("tool_use_id").is_some_and(id_ok) => {
                return Err(format!(
                    "messages.{i}.content.{j}.tool_result.tool_use_id: String should match pattern '^[a-zA-Z0-9_-]+$'"
                ));
            }
            Some("image") => {
                let source = b.get("source");
                let base64 =
                    source.and_then(|s| s.get("type")).and_then(Value::as_str) == Some("base64");
                let media = source
                    .and_then(|s| s.get("media_type"))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if base64
                    && !["image/jpeg", "image/png", "image/gif", "image/webp"].contains(&media)
                {
                    return Err(format!(
                        "messages.{i}.content.{j}.image.source.base64.media_type: Input should be 'image/jpeg', 'image/png', 'image/gif' or 'image/webp'"
                    ));
                }
            }
            _ => {}
        }
        if let Some(inner) = b.get("content") {
            check_blocks(i, inner)?;
        }
    }
    Ok(())
}

/// The most output tokens a Claude model takes (`None` for a name this does not
/// know), as Anthropic's API enforces them.
fn output_limit(model: &str) -> Option<u64> {
    let name = &model[model.find("claude-")? + "claude-".len()..];
    Some(if name.starts_with("3-7") {
        64_000
    } else if name.starts_with("3-5") {
        8_192
    } else if name.starts_with('3') {
        4_096
    } else if name.starts_with("opus-4-1") || name.starts_with("opus-4-0") || name == "opus-4" {
        32_000
    } else if name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        64_000
    } else {
        return None;
    })
}

/// Parse a messages request; the error is a message for a 400.
pub(crate) fn parse(body: &[u8]) -> Result<Ask, String> {
    let req: Req =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    if req.messages.is_empty() {
        return Err("messages: at least one message is required".into());
    }
    for (i, m) in req.messages.iter().enumerate() {
        check_blocks(i, &m.content)?;
    }
    // A prefill (the conversation ends with the assistant's turn) must not end in
    // whitespace: Anthropic's check, with its wording.
    if let Some(last) = req.messages.last().filter(|m| m.role == "assistant") {
        let text = match &last.content {
            Value::String(t) => Some(t.as_str()),
            Value::Array(blocks) => blocks
                .last()
                .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
                .and_then(|b| b.get("text"))
                .and_then(Value::as_str),
            _ => None,
        };
        if text.is_some_and(|t| t != t.trim_end()) {
            return Err(
                "messages: final assistant content cannot end with trailing whitespace".into(),
            );
        }
    }
    // A stop sequence of nothing but whitespace: Anthropic refuses the request.
    if req.stop_sequences.iter().any(|s| s.trim().is_empty()) {
        return Err(
            "stop_sequences: each stop sequence must contain non-whitespace characters".into(),
        );
    }
    // Anthropic's checks of `metadata.user_id`, with its wording.
    if let Some(user) = req
        .metadata
        .as_ref()
        .and_then(|m| m.get("user_id"))
        .and_then(Value::as_str)
    {
        if user.contains('@') {
            return Err("metadata.user_id: user_id appears to contain an email address. Please send a uuid or hash value instead.".into());
        }
        if user.chars().count() > 256 {
            return Err("metadata.user_id: String should have at most 256 characters".into());
        }
    }
    let mut prompt_tokens = 0;
    if let Some(s) = &req.system {
        let mut t = String::new();
        content_text(s, &mut t);
        prompt_tokens += tokens(&t);
    }
    let mut last_user = String::new();
    for m in &req.messages {
        let mut t = String::new();
        content_text(&m.content, &mut t);
        prompt_tokens += 3 + tokens(&t);
        if m.role == "user" {
            last_user = t;
        }
    }
    // Anthropic's own limit on an answer's tokens, per model, with its wording.
    if let (Some(asked), Some(model)) = (req.max_tokens, req.model.as_deref())
        && let Some(most) = output_limit(model)
        && asked > most
    {
        return Err(format!(
            "max_tokens: {asked} > {most}, which is the maximum allowed number of output tokens for {model}"
        ));
    }
    let format = req
        .output_config
        .as_ref()
        .and_then(|c| c.get("format"))
        .or(req.output_format.as_ref());
    let json = match format {
        Some(of) => match (of.get("type").and_then(Value::as_str), of.get("schema")) {
            (Some("json_schema"), Some(s)) => JsonMode::Schema(s.clone()),
            _ => JsonMode::Object,
        },
        None => JsonMode::Off,
    };
    // `tool_choice`: `{"type":"any"}` (any tool) or `{"type":"tool","name"}`.
    let choice = |k: &str| {
        req.tool_choice
            .as_ref()
            .and_then(|c| c.get(k))
            .and_then(Value::as_str)
    };
    let named = choice("name").filter(|_| choice("type") == Some("tool"));
    let tool = ForcedTool::pick(&req.tools, named, choice("type") == Some("any"), |t| {
        Some((t.get("name")?.as_str()?, t.get("input_schema")))
    });
    Ok(Ask {
        model: req.model.unwrap_or_default(),
        stream: req.stream.unwrap_or(false),
        include_usage: false,
        max_tokens: req.max_tokens,
        legacy_max_tokens: false,
        json,
        stop: req.stop_sequences,
        tool,
        cache_prefix: cache_prefix(body, prompt_tokens),
        prompt_tokens,
        last_user,
        cache_read: 0,
        cache_write: 0,
    })
}

/// The fewest prompt tokens Anthropic caches (its larger models' minimum).
const MIN_CACHED_TOKENS: u64 = 1024;

/// The prefix Anthropic would cache for this request: the prompt (from the first
/// of `tools`, `system` and `messages`, so that `model` or `max_tokens` written
/// before it do not count) up to its last `cache_control` breakpoint, as a hash of
/// those bytes and an estimate of its tokens (4 bytes a token, at most the
/// prompt's), if it is long enough. A rough model of Anthropic's: the same
/// prompt written the same way hits.
fn cache_prefix(body: &[u8], prompt_tokens: u64) -> Option<(u64, u64)> {
    let find = |what: &[u8]| body.windows(what.len()).position(|w| w == what);
    let end = body
        .windows(b"\"cache_control\"".len())
        .rposition(|w| w == b"\"cache_control\"")?;
    let start = [&b"\"tools\""[..], b"\"system\"", b"\"messages\""]
        .into_iter()
        .filter_map(find)
        .min()
        .unwrap_or(0)
        .min(end);
    let tokens = ((end - start) as u64 / 4).min(prompt_tokens);
    if tokens < MIN_CACHED_TOKENS {
        return None;
    }
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    body[start..end].hash(&mut h);
    Some((h.finish(), tokens))
}

fn stop_reason(reply: &Reply) -> &'static str {
    if reply.refused {
        return "refusal";
    }
    match reply.finish {
        Finish::Stop if reply.tool.is_some() => "tool_use",
        Finish::Stop if reply.stop_sequence.is_some() => "stop_sequence",
        Finish::Stop => "end_turn",
        Finish::Length => "max_tokens",
    }
}

/// The id of the reply's tool call, made from the reply's own id.
fn tool_use_id(meta: &Meta<'_>) -> String {
    let tail = meta.id.rsplit('_').next().unwrap_or(meta.id);
    format!("toolu_{tail}")
}

/// The reply's tool call as a `tool_use` block, with `input` (the whole arguments
/// in a message, `{}` at the start of a stream).
fn tool_use(meta: &Meta<'_>, name: &str, input: Value) -> Value {
    json!({"type": "tool_use", "id": tool_use_id(meta), "name": name, "input": input})
}

/// The text of the reply's single content block (`None`: no block).
fn text(reply: &Reply) -> Option<&str> {
    match &reply.refusal {
        Some(r) => Some(r),
        None if reply.content.is_empty() => None,
        None => Some(&reply.content),
    }
}

/// The non-streaming `message` body.
pub(crate) fn message(meta: &Meta<'_>, ask: &Ask, reply: &Reply) -> Vec<u8> {
    let content: Vec<Value> = match &reply.tool {
        // Arguments cut at the token limit are not JSON: the block keeps what is.
        Some(name) => vec![tool_use(
            meta,
            name,
            serde_json::from_str(&reply.content).unwrap_or_else(|_| json!({})),
        )],
        None => text(reply)
            .map(|t| json!({"type": "text", "text": t}))
            .into_iter()
            .collect(),
    };
    let body = json!({
        "id": meta.id,
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": content,
        "stop_reason": stop_reason(reply),
        "stop_sequence": reply.stop_sequence,
        "usage": {
            "input_tokens": ask.uncached_tokens(),
            "cache_creation_input_tokens": ask.cache_write,
            "cache_read_input_tokens": ask.cache_read,
            "output_tokens": reply.completion_tokens,
            "service_tier": "standard"
        }
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn event(name: &str, v: &Value) -> Bytes {
    sse(Some(name), &serde_json::to_vec(v).unwrap_or_default())
}

pub(crate) use super::openai::StreamFault;

/// The SSE events of a streamed reply, from `message_start` to `message_stop`.
pub(crate) fn stream(meta: &Meta<'_>, ask: &Ask, reply: &Reply, fault: StreamFault) -> Vec<Bytes> {
    let mut ev = Vec::with_capacity(reply.pieces.len() + 7);
    ev.push(event(
        "message_start",
        &json!({"type": "message_start", "message": {
            "id": meta.id,
            "type": "message",
            "role": "assistant",
            "model": meta.model,
            "content": [],
            "stop_reason": null,
            "stop_sequence": null,
            "usage": {
                "input_tokens": ask.uncached_tokens(),
                "cache_creation_input_tokens": ask.cache_write,
                "cache_read_input_tokens": ask.cache_read,
                "output_tokens": 1,
                "service_tier": "standard"
            }
        }}),
    ));
    // A tool call streams its arguments as `input_json_delta`s of its block.
    let text = text(reply).filter(|_| reply.tool.is_none());
    if let Some(name) = &reply.tool {
        ev.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": tool_use(meta, name, json!({}))}),
        ));
    } else if text.is_some() {
        ev.push(event(
            "content_block_start",
            &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ));
    }
    ev.push(Bytes::from_static(
        b"event: ping\ndata: {\"type\": \"ping\"}\n\n",
    ));
    if fault == StreamFault::Error {
        ev.push(sse(Some("error"), &error_body(529, None)));
        return ev;
    }
    // The block's deltas: a tool call's arguments, or the text.
    let deltas: Option<Vec<Value>> = match (&reply.tool, text) {
        (Some(_), _) => Some(
            (0..reply.pieces.len())
                .map(|i| json!({"type": "input_json_delta", "partial_json": reply.piece(i)}))
                .collect(),
        ),
        (None, Some(t)) => Some(
            split_pieces(t)
                .into_iter()
                .map(|(a, b)| json!({"type": "text_delta", "text": &t[a..b]}))
                .collect(),
        ),
        (None, None) => None,
    };
    if let Some(deltas) = deltas {
        for delta in deltas {
            ev.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": delta}),
            ));
        }
        if fault == StreamFault::Malformed {
            // A delta cut off inside its type's name.
            let at = ev.len().min(4);
            ev.insert(
                at,
                Bytes::from_static(
                    b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_del\n\n",
                ),
            );
        }
        ev.push(event(
            "content_block_stop",
            &json!({"type": "content_block_stop", "index": 0}),
        ));
    } else if fault == StreamFault::Malformed {
        ev.push(Bytes::from_static(
            b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\n\n",
        ));
    }
    ev.push(event(
        "message_delta",
        &json!({"type": "message_delta",
            "delta": {"stop_reason": stop_reason(reply), "stop_sequence": reply.stop_sequence},
            "usage": {"output_tokens": reply.completion_tokens}}),
    ));
    ev.push(Bytes::from_static(
        b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
    ));
    ev
}

/// `(type, message)` of Anthropic's error for `status`.
fn error_parts(status: u16) -> (&'static str, &'static str) {
    match status {
        400 => ("invalid_request_error", "Invalid request."),
        401 => ("authentication_error", "invalid x-api-key"),
        403 => (
            "permission_error",
            "Your API key does not have permission to use the specified resource.",
        ),
        404 => (
            "not_found_error",
            "The requested resource could not be found.",
        ),
        413 => (
            "request_too_large",
            "Request exceeds the maximum allowed number of bytes.",
        ),
        429 => (
            "rate_limit_error",
            "Number of requests has exceeded your rate limit. Please try again later.",
        ),
        529 => ("overloaded_error", "Overloaded"),
        s if s >= 500 => ("api_error", "Internal server error"),
        _ => ("invalid_request_error", "The request was rejected."),
    }
}

/// An Anthropic error body for `status`, with an optional specific message.
pub(crate) fn error_body(status: u16, message: Option<&str>) -> Vec<u8> {
    let (ty, default) = error_parts(status);
    let body =
        json!({"type": "error", "error": {"type": ty, "message": message.unwrap_or(default)}});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A billing failure in Anthropic's envelope: `(status, body)`.
pub(crate) fn billing_body(shape: crate::fault::Billing) -> (u16, Vec<u8>) {
    use crate::fault::Billing;
    let (status, ty, message) = match shape {
        Billing::PaymentRequired => (402, "billing_error", super::INSUFFICIENT_BALANCE),
        Billing::InsufficientQuota => (429, "rate_limit_error", super::INSUFFICIENT_QUOTA),
        Billing::Native | Billing::CreditBalance => {
            (400, "invalid_request_error", super::CREDIT_BALANCE)
        }
    };
    let body = json!({"type": "error", "error": {"type": ty, "message": message}});
    (status, serde_json::to_vec(&body).unwrap_or_default())
}

/// `GET /v1/models`.
pub(crate) fn models(models: &[String]) -> Vec<u8> {
    let data: Vec<Value> = models
        .iter()
        .map(|m| {
            json!({"type": "model", "id": m, "display_name": m, "created_at": "2025-05-14T00:00:00Z"})
        })
        .collect();
    let body = json!({
        "data": data,
        "has_more": false,
        "first_id": models.first(),
        "last_id": models.last()
    });
    serde_json::to_vec(&body).unwrap_or_default()
}
