//! OpenAI chat completions: `POST /v1/chat/completions` and `GET /v1/models`.

use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{
    Ask, Finish, ForcedTool, JsonMode, Reply, content_text, sse, text::split_pieces, tokens,
};

/// Identity of one reply, shared by all its chunks.
pub(crate) struct Meta<'a> {
    pub(crate) id: &'a str,
    pub(crate) created: u64,
    pub(crate) model: &'a str,
    /// `content` as a list of parts (`SimBuilder::content_parts`).
    pub(crate) parts: bool,
}

/// What a reasoning model shows of its thinking, as a content part.
fn thinking_part() -> Value {
    json!({"type": "thinking", "thinking": [{"type": "text", "text": "Let me think this through."}]})
}

pub(crate) const FINGERPRINT: &str = "fp_5f4e3c2b1a";

#[derive(Deserialize)]
struct Req {
    #[serde(default)]
    model: Option<String>,
    messages: Vec<Msg>,
    #[serde(default)]
    stream: Option<bool>,
    #[serde(default)]
    stream_options: Option<StreamOptions>,
    #[serde(default)]
    max_tokens: Option<u64>,
    #[serde(default)]
    max_completion_tokens: Option<u64>,
    #[serde(default)]
    response_format: Option<Value>,
    /// A string or up to four of them.
    #[serde(default)]
    stop: Option<Value>,
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

#[derive(Deserialize)]
struct StreamOptions {
    #[serde(default)]
    include_usage: Option<bool>,
}

/// Parse a chat completion request; the error is a message for a 400.
pub(crate) fn parse(body: &[u8]) -> Result<Ask, String> {
    let req: Req =
        serde_json::from_slice(body).map_err(|e| format!("invalid request body: {e}"))?;
    if req.messages.is_empty() {
        return Err("[] is too short - 'messages'".into());
    }
    let mut prompt_tokens = 3;
    let mut last_user = String::new();
    // OpenAI caches prompts on its own: the conversation before the last message,
    // hashed with its tokens, is the prefix a later request may find cached.
    use std::hash::{Hash, Hasher};
    let mut prefix = std::collections::hash_map::DefaultHasher::new();
    let mut prefix_tokens = 0;
    let last = req.messages.len() - 1;
    for (i, m) in req.messages.iter().enumerate() {
        let mut t = String::new();
        content_text(&m.content, &mut t);
        prompt_tokens += 4 + tokens(&t);
        if i < last {
            (&m.role, &t).hash(&mut prefix);
            prefix_tokens = prompt_tokens;
        }
        if m.role == "user" {
            last_user = t;
        }
    }
    // Cached from 1,024 tokens on, in steps of 128, as OpenAI reports it.
    let cache_prefix =
        (prefix_tokens >= 1024).then(|| (prefix.finish(), prefix_tokens / 128 * 128));
    let json = match &req.response_format {
        Some(rf) => match rf.get("type").and_then(Value::as_str) {
            Some("json_object") => JsonMode::Object,
            Some("json_schema") => match rf.pointer("/json_schema/schema") {
                Some(s) => {
                    if rf.pointer("/json_schema/strict") == Some(&Value::Bool(true))
                        && let Some(problem) = strict_schema_problem(s, &mut Vec::new())
                    {
                        let name = rf
                            .pointer("/json_schema/name")
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        return Err(format!(
                            "Invalid schema for response_format '{name}': {problem}"
                        ));
                    }
                    JsonMode::Schema(s.clone())
                }
                None => JsonMode::Object,
            },
            Some("text") | None => JsonMode::Off,
            Some(other) => return Err(format!("unsupported response_format type {other:?}")),
        },
        None => JsonMode::Off,
    };
    // `tool_choice`: `"required"` (any tool) or `{"type":"function","function":{"name"}}`.
    let named = req
        .tool_choice
        .as_ref()
        .and_then(|c| c.pointer("/function/name"))
        .and_then(Value::as_str);
    let required = req.tool_choice.as_ref().and_then(Value::as_str) == Some("required");
    let tool = ForcedTool::pick(&req.tools, named, required, |t| {
        let f = t.get("function")?;
        Some((f.get("name")?.as_str()?, f.get("parameters")))
    });
    Ok(Ask {
        model: req.model.unwrap_or_default(),
        stream: req.stream.unwrap_or(false),
        include_usage: req
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        max_tokens: req.max_completion_tokens.or(req.max_tokens),
        legacy_max_tokens: req.max_tokens.is_some(),
        json,
        stop: match req.stop {
            Some(Value::String(s)) => vec![s],
            Some(Value::Array(list)) => list
                .into_iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect(),
            _ => Vec::new(),
        },
        tool,
        prompt_tokens,
        last_user,
        cache_prefix,
        cache_read: 0,
        cache_write: 0,
    })
}

fn finish(reply: &Reply) -> &'static str {
    match reply.finish {
        Finish::Stop if reply.tool.is_some() => "tool_calls",
        Finish::Stop => "stop",
        Finish::Length => "length",
    }
}

/// The id of the reply's tool call, made from the reply's own id.
fn call_id(meta: &Meta<'_>) -> String {
    let tail = meta.id.rsplit(['-', '_']).next().unwrap_or(meta.id);
    format!("call_{tail}")
}

fn usage(ask: &Ask, reply: &Reply) -> Value {
    json!({
        "prompt_tokens": ask.prompt_tokens,
        "completion_tokens": reply.completion_tokens,
        "total_tokens": ask.prompt_tokens + reply.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": ask.cache_read, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": reply.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0
        }
    })
}

/// The non-streaming `chat.completion` body.
pub(crate) fn completion(meta: &Meta<'_>, ask: &Ask, reply: &Reply) -> Vec<u8> {
    let content = if reply.refusal.is_some() || reply.tool.is_some() {
        Value::Null
    } else if meta.parts {
        let mut parts = Vec::new();
        if reply.reasoning_tokens > 0 {
            parts.push(thinking_part());
        }
        if !reply.content.is_empty() {
            parts.push(json!({"type": "text", "text": reply.content}));
        }
        Value::Array(parts)
    } else {
        Value::from(reply.content.as_str())
    };
    let mut message = json!({
        "role": "assistant",
        "content": content,
        "refusal": reply.refusal,
        "annotations": []
    });
    if let Some(name) = &reply.tool {
        message["tool_calls"] = json!([{
            "id": call_id(meta),
            "type": "function",
            "function": {"name": name, "arguments": reply.content}
        }]);
    }
    let body = json!({
        "id": meta.id,
        "object": "chat.completion",
        "created": meta.created,
        "model": meta.model,
        "choices": [{
            "index": 0,
            "message": message,
            "logprobs": null,
            "finish_reason": finish(reply)
        }],
        "usage": usage(ask, reply),
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

fn chunk(meta: &Meta<'_>, ask: &Ask, delta: Value, finish: Option<&str>) -> Bytes {
    let mut c = json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "service_tier": "default",
        "system_fingerprint": FINGERPRINT,
        "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
    });
    if ask.include_usage {
        c["usage"] = Value::Null;
    }
    sse(None, &serde_json::to_vec(&c).unwrap_or_default())
}

/// How a stream should misbehave (apart from truncation and resets).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamFault {
    None,
    /// One chunk's `data` is broken JSON.
    Malformed,
    /// An error object after the first chunk, then the stream ends.
    Error,
}

/// The SSE events of a streamed reply, `data: [DONE]` included.
pub(crate) fn stream(meta: &Meta<'_>, ask: &Ask, reply: &Reply, fault: StreamFault) -> Vec<Bytes> {
    let mut ev = Vec::with_capacity(reply.pieces.len() + 4);
    ev.push(chunk(
        meta,
        ask,
        json!({"role": "assistant", "content": "", "refusal": null}),
        None,
    ));
    if fault == StreamFault::Error {
        ev.push(sse(None, &error_body(500, None)));
        return ev;
    }
    match &reply.refusal {
        None if reply.tool.is_some() => {
            // A tool call: its id and name first, then its arguments piece by piece.
            let call = json!({"index": 0, "id": call_id(meta), "type": "function",
                "function": {"name": reply.tool, "arguments": ""}});
            ev.push(chunk(meta, ask, json!({"tool_calls": [call]}), None));
            for i in 0..reply.pieces.len() {
                let args = json!({"index": 0, "function": {"arguments": reply.piece(i)}});
                ev.push(chunk(meta, ask, json!({"tool_calls": [args]}), None));
            }
        }
        Some(r) => {
            for (a, b) in split_pieces(r) {
                ev.push(chunk(meta, ask, json!({"refusal": &r[a..b]}), None));
            }
        }
        None if meta.parts => {
            if reply.reasoning_tokens > 0 {
                ev.push(chunk(
                    meta,
                    ask,
                    json!({"content": [thinking_part()]}),
                    None,
                ));
            }
            for i in 0..reply.pieces.len() {
                let part = json!({"type": "text", "text": reply.piece(i)});
                ev.push(chunk(meta, ask, json!({"content": [part]}), None));
            }
        }
        None => {
            for i in 0..reply.pieces.len() {
                ev.push(chunk(meta, ask, json!({"content": reply.piece(i)}), None));
            }
        }
    }
    if fault == StreamFault::Malformed {
        let at = ev.len().min(2);
        let broken = format!(
            "data: {{\"id\":\"{}\",\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"\n\n",
            meta.id
        );
        ev.insert(at, Bytes::from(broken));
    }
    ev.push(chunk(meta, ask, json!({}), Some(finish(reply))));
    if ask.include_usage {
        let c = json!({
            "id": meta.id,
            "object": "chat.completion.chunk",
            "created": meta.created,
            "model": meta.model,
            "service_tier": "default",
            "system_fingerprint": FINGERPRINT,
            "choices": [],
            "usage": usage(ask, reply)
        });
        ev.push(sse(None, &serde_json::to_vec(&c).unwrap_or_default()));
    }
    ev.push(Bytes::from_static(b"data: [DONE]\n\n"));
    ev
}

/// `(type, code, message)` of OpenAI's error for `status`.
fn error_parts(status: u16) -> (&'static str, Option<&'static str>, &'static str) {
    match status {
        400 => ("invalid_request_error", None, "Invalid request."),
        401 => (
            "invalid_request_error",
            Some("invalid_api_key"),
            "Incorrect API key provided.",
        ),
        403 => (
            "invalid_request_error",
            Some("unsupported_country_region_territory"),
            "Forbidden.",
        ),
        404 => (
            "invalid_request_error",
            Some("model_not_found"),
            "The model does not exist or you do not have access to it.",
        ),
        413 => ("invalid_request_error", None, "Request too large."),
        429 => (
            "requests",
            Some("rate_limit_exceeded"),
            "Rate limit reached for requests. Please try again later.",
        ),
        500 => (
            "server_error",
            None,
            "The server had an error while processing your request. Sorry about that!",
        ),
        502 => ("server_error", None, "Bad gateway."),
        503 => (
            "server_error",
            None,
            "The server is overloaded or not ready yet.",
        ),
        504 => ("server_error", None, "Gateway timeout."),
        529 => (
            "server_error",
            None,
            "The engine is currently overloaded, please try again later.",
        ),
        s if s >= 500 => ("server_error", None, "The server had an error."),
        _ => ("invalid_request_error", None, "The request was rejected."),
    }
}

/// What OpenAI's strict structured-output mode refuses in `schema`, in its words:
/// an object schema must set `additionalProperties: false` and list every one of
/// its properties in `required` (optional properties are not allowed; they are
/// written as a union with `null`). `path` is where the walk is, as OpenAI's
/// `context` names it.
fn strict_schema_problem(schema: &Value, path: &mut Vec<String>) -> Option<String> {
    let Value::Object(o) = schema else {
        return None;
    };
    let context = || {
        let quoted: Vec<String> = path.iter().map(|p| format!("'{p}'")).collect();
        format!("In context=({})", quoted.join(", "))
    };
    let properties = o.get("properties").and_then(Value::as_object);
    if o.get("type").and_then(Value::as_str) == Some("object") || properties.is_some() {
        if o.get("additionalProperties") != Some(&Value::Bool(false)) {
            return Some(format!(
                "{}, 'additionalProperties' is required to be supplied and to be false.",
                context()
            ));
        }
        let required: Vec<&str> = o
            .get("required")
            .and_then(Value::as_array)
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(missing) = properties
            .into_iter()
            .flat_map(|p| p.keys())
            .find(|k| !required.contains(&k.as_str()))
        {
            return Some(format!(
                "{}, 'required' is required to be supplied and to be an array including every key in properties. Missing '{missing}'.",
                context()
            ));
        }
    }
    let mut nested: Vec<(String, &Value)> = Vec::new();
    for (key, value) in o {
        match (key.as_str(), value) {
            ("properties" | "$defs" | "definitions", Value::Object(m)) => {
                nested.extend(m.iter().map(|(k, v)| (format!("{key}', '{k}"), v)));
            }
            ("items", v) => nested.push((key.clone(), v)),
            ("anyOf" | "allOf" | "oneOf", Value::Array(a)) => {
                nested.extend(
                    a.iter()
                        .enumerate()
                        .map(|(i, v)| (format!("{key}', '{i}"), v)),
                );
            }
            _ => {}
        }
    }
    for (at, sub) in nested {
        path.push(at);
        let problem = strict_schema_problem(sub, path);
        path.pop();
        if problem.is_some() {
            return problem;
        }
    }
    None
}

/// OpenAI's 400 for `max_tokens` sent to a reasoning model.
pub(crate) fn max_tokens_refused_body() -> Vec<u8> {
    let body = json!({"error": {
        "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use 'max_completion_tokens' instead.",
        "type": "invalid_request_error",
        "param": "max_tokens",
        "code": "unsupported_parameter"
    }});
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The first of `fields` the request's top level sets, if any.
pub(crate) fn forbidden_field(body: &[u8], fields: &[String]) -> Option<String> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    let obj = v.as_object()?;
    fields
        .iter()
        .find(|f| obj.contains_key(f.as_str()))
        .cloned()
}

/// Mistral's answer to a field it does not know: `422`, pydantic's
/// `extra_forbidden` inside an OpenAI-like envelope.
pub(crate) fn extra_forbidden_body(field: &str) -> Vec<u8> {
    let body = json!({
        "object": "error",
        "message": {"detail": [{
            "type": "extra_forbidden",
            "loc": ["body", field],
            "msg": "Extra inputs are not permitted",
            "input": true
        }]},
        "type": "invalid_request_error",
        "param": null,
        "code": null
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// An OpenAI error body for `status`, with an optional specific message.
pub(crate) fn error_body(status: u16, message: Option<&str>) -> Vec<u8> {
    let (ty, code, default) = error_parts(status);
    let body = json!({
        "error": {"message": message.unwrap_or(default), "type": ty, "param": null, "code": code}
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// The key as OpenAI echoes it in a 401: the first 3 and last 4 characters, `*`
/// between (one per hidden character, at most 40); all `*` under 8 characters.
pub(crate) fn masked_key(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let n = chars.len();
    if n < 8 {
        return "*".repeat(n);
    }
    let mut out: String = chars[..3].iter().collect();
    out.push_str(&"*".repeat((n - 7).min(40)));
    out.extend(&chars[n - 4..]);
    out
}

/// OpenAI's 401 for a wrong, revoked or rotated key, naming the key it received.
pub(crate) fn invalid_key_body(key: Option<&str>) -> Vec<u8> {
    let message = match key.filter(|k| !k.is_empty()) {
        Some(k) => format!(
            "Incorrect API key provided: {}. You can find your API key at https://platform.openai.com/account/api-keys.",
            masked_key(k)
        ),
        None => "You didn't provide an API key. You need to provide your API key in an \
                 Authorization header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), \
                 or as the password field (with blank username) if you're accessing the API \
                 from your browser and are prompted for a username and password. You can \
                 obtain an API key from https://platform.openai.com/account/api-keys."
            .to_string(),
    };
    let body = json!({
        "error": {"message": message, "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// OpenAI's 403 for a key that may not be used from where the request came.
pub(crate) fn forbidden_body() -> Vec<u8> {
    let body = json!({
        "error": {
            "message": "Country, region, or territory not supported",
            "type": "request_forbidden",
            "param": null,
            "code": "unsupported_country_region_territory"
        }
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// A billing failure in OpenAI's envelope: `(status, body)`.
pub(crate) fn billing_body(shape: crate::fault::Billing) -> (u16, Vec<u8>) {
    use crate::fault::Billing;
    let (status, message, ty, code) = match shape {
        Billing::PaymentRequired => (
            402,
            super::INSUFFICIENT_BALANCE,
            "unknown_error",
            Some("invalid_request_error"),
        ),
        Billing::Native | Billing::InsufficientQuota => (
            429,
            super::INSUFFICIENT_QUOTA,
            "insufficient_quota",
            Some("insufficient_quota"),
        ),
        Billing::CreditBalance => (400, super::CREDIT_BALANCE, "invalid_request_error", None),
    };
    let body = json!({"error": {"message": message, "type": ty, "param": null, "code": code}});
    (status, serde_json::to_vec(&body).unwrap_or_default())
}

/// The body of a 429 for a token (not request) quota.
pub(crate) fn tokens_limit_body(message: &str) -> Vec<u8> {
    let body = json!({
        "error": {"message": message, "type": "tokens", "param": null, "code": "rate_limit_exceeded"}
    });
    serde_json::to_vec(&body).unwrap_or_default()
}

/// `GET /v1/models`.
pub(crate) fn models(models: &[String]) -> Vec<u8> {
    let data: Vec<Value> = models
        .iter()
        .map(|m| json!({"id": m, "object": "model", "created": 1_715_367_049u64, "owned_by": "system"}))
        .collect();
    serde_json::to_vec(&json!({"object": "list", "data": data})).unwrap_or_default()
}
