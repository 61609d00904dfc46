//! Anthropic's Messages API in front of the stack: the other direction of
//! [`anthropic`](super::anthropic).
//!
//! A front door that accepts Anthropic's `POST /v1/messages` turns the request
//! into the stack's canonical OpenAI chat request ([`request_from_anthropic`]),
//! lets any provider answer (an OpenAI-compatible one natively, an Anthropic one
//! through [`anthropic`](super::anthropic)), and turns the OpenAI-shaped answer
//! back into a Message ([`response_to_anthropic`]) or, streamed, into Anthropic's
//! event sequence ([`MessagesStream`]): `message_start`, then for each content
//! block `content_block_start` / `content_block_delta`… / `content_block_stop`,
//! then `message_delta` (stop reason and usage) and `message_stop`. Errors take
//! Anthropic's shape with [`error_for_status`].
//!
//! | Anthropic request | OpenAI request |
//! | --- | --- |
//! | `system` (string or text blocks) | a first `system` message |
//! | `text` / `image` blocks | `text` / `image_url` parts (base64 sources as `data:` URLs) |
//! | `document` blocks (a base64 PDF, plain text) | a `file` part with its `file_data`, a `text` part |
//! | assistant `tool_use` blocks | `tool_calls` (input as a JSON string) |
//! | user `tool_result` blocks | `tool` messages, before the user's other content; the images and documents a result holds go with that content (a tool message carries text only) |
//! | `tools[].input_schema` | `tools[].function.parameters` |
//! | `tool_choice` `auto` / `any` / `tool` / `none` | `auto` / `required` / the function / `none` |
//! | `stop_sequences`, `max_tokens`, `temperature`, `top_p`, `metadata.user_id` | `stop`, `max_tokens`, `temperature`, `top_p`, `user` |
//! | structured output: `output_config.format` (or the beta's `output_format`) `json_schema` | `response_format` `json_schema` (strict where OpenAI's strict mode takes the schema) |
//!
//! `thinking` blocks and `top_k` have no OpenAI counterpart and are dropped.
//!
//! Back to the caller, a plain `stop` whose choice names the stop sequence it
//! ended at (`stop_reason`, a string: the Anthropic adapter and vLLM say so) is
//! `stop_reason: "stop_sequence"` with that `stop_sequence`; from a provider that
//! does not name it (OpenAI) the answer, cut there, ends as `end_turn`.
//! Prompt-cache breakpoints (`cache_control`) are kept on the parts and tools they
//! mark (a system prompt or message that carries one stays a list of parts), so
//! that an Anthropic provider gets them back; an OpenAI-compatible provider is
//! sent the request without them (OpenAI caches prompts by itself).

use serde_json::{Map, Value, json};

use crate::error::TranslateError;

/// An Anthropic Messages request, translated.
#[derive(Debug, Clone)]
pub struct InboundRequest {
    /// The OpenAI chat completions request body.
    pub body: Vec<u8>,
    /// The model the caller asked for.
    pub model: String,
    /// Whether the caller asked for a stream.
    pub stream: bool,
}

fn bad(message: impl Into<String>) -> TranslateError {
    TranslateError::new(message)
}

/// Translates an Anthropic Messages request body into an OpenAI chat request
/// (streamed requests ask for usage in the last chunk, which `message_delta`
/// needs).
pub fn request_from_anthropic(body: &[u8]) -> Result<InboundRequest, TranslateError> {
    super::require_object(body)?;
    let req: Map<String, Value> =
        serde_json::from_slice(body).map_err(|e| bad(format!("invalid JSON body: {e}")))?;
    let model = match req.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err(bad("model: a non-empty string is required")),
    };
    let stream = match req.get("stream") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(bad("stream: must be a boolean")),
    };
    let mut messages = Vec::new();
    match req.get("system") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) => messages.push(json!({"role": "system", "content": s})),
        Some(Value::Array(blocks)) if blocks.iter().any(|b| b.get("cache_control").is_some()) => {
            // A prompt-cache breakpoint is kept: the blocks become text parts
            // carrying it (an Anthropic provider gets it back; an OpenAI one, which
            // caches by itself, is sent the parts without it).
            blocks_text(blocks, "system")?;
            let parts: Vec<Value> = blocks
                .iter()
                .map(|b| with_cache(json!({"type": "text", "text": b["text"]}), b))
                .collect();
            messages.push(json!({"role": "system", "content": parts}));
        }
        Some(Value::Array(blocks)) => {
            let text = blocks_text(blocks, "system")?;
            messages.push(json!({"role": "system", "content": text}));
        }
        Some(_) => return Err(bad("system: must be a string or an array of text blocks")),
    }
    let Some(Value::Array(input)) = req.get("messages") else {
        return Err(bad("messages: an array is required"));
    };
    for (i, m) in input.iter().enumerate() {
        translate_message(m, &mut messages).map_err(|e| bad(format!("messages.{i}: {e}")))?;
    }
    let mut out = Map::new();
    out.insert("model".into(), Value::String(model.clone()));
    out.insert("messages".into(), Value::Array(messages));
    match req.get("max_tokens") {
        Some(Value::Number(n)) if n.as_u64().is_some() => {
            out.insert("max_tokens".into(), Value::Number(n.clone()));
        }
        None | Some(Value::Null) => {}
        Some(_) => return Err(bad("max_tokens: must be a non-negative integer")),
    }
    for key in ["temperature", "top_p"] {
        match req.get(key) {
            Some(v @ Value::Number(_)) => {
                out.insert(key.into(), v.clone());
            }
            None | Some(Value::Null) => {}
            Some(_) => return Err(bad(format!("{key}: must be a number"))),
        }
    }
    match req.get("stop_sequences") {
        Some(Value::Array(s)) if !s.is_empty() => {
            if !s.iter().all(Value::is_string) {
                return Err(bad("stop_sequences: must be strings"));
            }
            out.insert("stop".into(), Value::Array(s.clone()));
        }
        None | Some(Value::Null) | Some(Value::Array(_)) => {}
        Some(_) => return Err(bad("stop_sequences: must be an array of strings")),
    }
    if let Some(Value::String(user)) = req.get("metadata").and_then(|m| m.get("user_id")) {
        out.insert("user".into(), Value::String(user.clone()));
    }
    if let Some(tools) = req.get("tools").filter(|t| !t.is_null()) {
        let Value::Array(tools) = tools else {
            return Err(bad("tools: must be an array"));
        };
        if !tools.is_empty() {
            let tools = tools
                .iter()
                .enumerate()
                .map(|(i, t)| tool(t).map_err(|e| bad(format!("tools.{i}: {e}"))))
                .collect::<Result<Vec<_>, _>>()?;
            out.insert("tools".into(), Value::Array(tools));
        }
    }
    if let Some(choice) = req.get("tool_choice").filter(|t| !t.is_null()) {
        let kind = choice.get("type").and_then(Value::as_str).unwrap_or("");
        let mapped = match kind {
            "auto" => json!("auto"),
            "any" => json!("required"),
            "none" => json!("none"),
            "tool" => match choice.get("name").and_then(Value::as_str) {
                Some(name) => json!({"type": "function", "function": {"name": name}}),
                None => return Err(bad("tool_choice: a `tool` choice needs a name")),
            },
            _ => return Err(bad("tool_choice.type: must be auto, any, tool or none")),
        };
        out.insert("tool_choice".into(), mapped);
        if choice.get("disable_parallel_tool_use") == Some(&Value::Bool(true)) {
            out.insert("parallel_tool_calls".into(), Value::Bool(false));
        }
    }
    if let Some(format) = structured_output(&req)? {
        out.insert("response_format".into(), format);
    }
    if stream {
        // Not `stream_options`: each provider adapter asks for the final usage
        // when its `stream_usage` is on (the default), and a provider switched off
        // because it refuses the field (Mistral's 422) must not get it from here.
        out.insert("stream".into(), Value::Bool(true));
    }
    let body = serde_json::to_vec(&Value::Object(out)).map_err(|e| bad(e.to_string()))?;
    Ok(InboundRequest {
        body,
        model,
        stream,
    })
}

/// Anthropic's structured output (`output_config.format`, or the beta's
/// `output_format`) as OpenAI's `response_format`, which every kind of provider
/// takes (the Anthropic adapter turns it back into `output_config.format`).
///
/// `strict`, as Anthropic's is, when OpenAI's strict mode can take the schema
/// ([`strict_takes`]): an OpenAI model then answers only JSON that follows it. A
/// schema it cannot take (Anthropic allows optional properties; OpenAI's strict
/// mode refuses them with a 400) is sent without `strict`, so that an OpenAI
/// provider still answers JSON shaped by the schema rather than refusing the
/// request; an Anthropic provider enforces it either way.
fn structured_output(req: &Map<String, Value>) -> Result<Option<Value>, TranslateError> {
    let (field, format) = match (
        req.get("output_config")
            .and_then(|c| c.get("format"))
            .filter(|f| !f.is_null()),
        req.get("output_format").filter(|f| !f.is_null()),
    ) {
        (Some(f), _) => ("output_config.format", f),
        (None, Some(f)) => ("output_format", f),
        (None, None) => return Ok(None),
    };
    match format.get("type").and_then(Value::as_str) {
        Some("json_schema") => match format.get("schema") {
            Some(schema @ Value::Object(_)) => Ok(Some(json!({
                "type": "json_schema",
                "json_schema": {"name": "output", "schema": schema, "strict": strict_takes(schema)},
            }))),
            _ => Err(bad(format!(
                "{field}.schema: a JSON Schema object is required"
            ))),
        },
        _ => Err(bad(format!("{field}.type: must be json_schema"))),
    }
}

/// Whether OpenAI's strict structured-output mode takes `schema`: every object
/// schema in it (anything with `properties` or of type `object`) sets
/// `additionalProperties: false` and lists each of its properties in `required`.
/// Every nested value is looked at, so a keyword that merely holds an object (a
/// `default`, a property named `properties`) can only make the answer `false`:
/// strict is asked for only where it is sure to be taken.
fn strict_takes(schema: &Value) -> bool {
    match schema {
        Value::Object(o) => {
            let properties = o.get("properties").and_then(Value::as_object);
            let object = properties.is_some() || o.get("type") == Some(&json!("object"));
            let closed = o.get("additionalProperties") == Some(&Value::Bool(false));
            let required = |k: &String| {
                o.get("required")
                    .and_then(Value::as_array)
                    .is_some_and(|r| r.iter().any(|v| v.as_str() == Some(k)))
            };
            (!object || closed && properties.is_none_or(|p| p.keys().all(required)))
                && o.values().all(strict_takes)
        }
        Value::Array(a) => a.iter().all(strict_takes),
        _ => true,
    }
}

/// `part` with the prompt-cache breakpoint of the Anthropic block it came from,
/// if that block had one.
fn with_cache(mut part: Value, block: &Value) -> Value {
    if let (Some(c), Value::Object(p)) = (block.get("cache_control"), &mut part)
        && !c.is_null()
    {
        p.insert("cache_control".into(), c.clone());
    }
    part
}

/// The text of an array of `text` blocks (other blocks are refused).
fn blocks_text(blocks: &[Value], what: &str) -> Result<String, TranslateError> {
    let mut text = String::new();
    for b in blocks {
        match (b.get("type").and_then(Value::as_str), b.get("text")) {
            (Some("text"), Some(Value::String(t))) => {
                if !text.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
            }
            _ => return Err(bad(format!("{what}: only text blocks are accepted here"))),
        }
    }
    Ok(text)
}

fn tool(t: &Value) -> Result<Value, String> {
    let name = t
        .get("name")
        .and_then(Value::as_str)
        .ok_or("a tool needs a name")?;
    let kind = t.get("type").and_then(Value::as_str).unwrap_or("custom");
    if kind != "custom" {
        return Err(format!(
            "server tool `{kind}` cannot be served by every provider"
        ));
    }
    let mut f = Map::new();
    f.insert("name".into(), json!(name));
    if let Some(Value::String(d)) = t.get("description") {
        f.insert("description".into(), json!(d));
    }
    let schema = t
        .get("input_schema")
        .cloned()
        .unwrap_or_else(|| json!({"type": "object"}));
    f.insert("parameters".into(), schema);
    Ok(with_cache(json!({"type": "function", "function": f}), t))
}

/// An Anthropic `document` block as an OpenAI content part: a base64 PDF as a
/// `file` part (OpenAI's way of sending one; Anthropic gets its document block back
/// from it), a plain-text document as a text part. Other sources (a URL, a file
/// id, content blocks) are refused, as no provider of the other kind reads them.
fn document_part(block: &Value) -> Result<Value, String> {
    let source = block.get("source").ok_or("a document needs a source")?;
    let field = |k: &str| source.get(k).and_then(Value::as_str);
    match field("type") {
        Some("base64") => {
            let media = field("media_type").ok_or("a base64 document needs a media_type")?;
            let data = field("data").ok_or("a base64 document needs data")?;
            let name = block
                .get("title")
                .and_then(Value::as_str)
                .unwrap_or("document.pdf");
            Ok(json!({"type": "file", "file": {
                "filename": name,
                "file_data": format!("data:{media};base64,{data}"),
            }}))
        }
        Some("text") => {
            let data = field("data").ok_or("a text document needs data")?;
            Ok(json!({"type": "text", "text": data}))
        }
        Some(other) => Err(format!(
            "document source type {other:?} is not supported (send it as base64 or text)"
        )),
        None => Err("a document source needs a type".into()),
    }
}

fn image_part(block: &Value) -> Result<Value, String> {
    let source = block.get("source").ok_or("an image needs a source")?;
    let url = match source.get("type").and_then(Value::as_str) {
        Some("base64") => {
            let media = source
                .get("media_type")
                .and_then(Value::as_str)
                .ok_or("a base64 image needs a media_type")?;
            let data = source
                .get("data")
                .and_then(Value::as_str)
                .ok_or("a base64 image needs data")?;
            format!("data:{media};base64,{data}")
        }
        Some("url") => source
            .get("url")
            .and_then(Value::as_str)
            .ok_or("a url image needs a url")?
            .to_owned(),
        _ => return Err("image source type must be base64 or url".into()),
    };
    Ok(json!({"type": "image_url", "image_url": {"url": url}}))
}

/// The text of a `tool_result`'s content (a string or text blocks; an image is
/// marked `[image]` where it was, and sent in the user message that follows).
fn tool_result_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(blocks)) => {
            let mut text = String::new();
            for b in blocks {
                let piece = match b.get("type").and_then(Value::as_str) {
                    Some("text") => b.get("text").and_then(Value::as_str).unwrap_or(""),
                    Some("image") => "[image]",
                    _ => "",
                };
                if !piece.is_empty() {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(piece);
                }
            }
            text
        }
        _ => String::new(),
    }
}

fn translate_message(m: &Value, out: &mut Vec<Value>) -> Result<(), String> {
    let role = m
        .get("role")
        .and_then(Value::as_str)
        .ok_or("role: required")?;
    if role != "user" && role != "assistant" {
        return Err(format!("role: must be user or assistant, not {role:?}"));
    }
    let blocks = match m.get("content") {
        Some(Value::String(s)) => {
            out.push(json!({"role": role, "content": s}));
            return Ok(());
        }
        Some(Value::Array(b)) => b,
        _ => return Err("content: must be a string or an array of blocks".into()),
    };
    let mut parts = Vec::new();
    let mut text = String::new();
    let mut calls = Vec::new();
    for (i, b) in blocks.iter().enumerate() {
        let kind = b.get("type").and_then(Value::as_str).unwrap_or("");
        match (role, kind) {
            (_, "text") => {
                let t = b
                    .get("text")
                    .and_then(Value::as_str)
                    .ok_or(format!("content.{i}.text: a string is required"))?;
                // Separate blocks stay separate when joined into one string (as
                // the system prompt's do): "Hello" and "World" are not "HelloWorld".
                if !text.is_empty() && !t.is_empty() {
                    text.push('\n');
                }
                text.push_str(t);
                parts.push(with_cache(json!({"type": "text", "text": t}), b));
            }
            ("user", "image") => parts.push(with_cache(
                image_part(b).map_err(|e| format!("content.{i}: {e}"))?,
                b,
            )),
            ("user", "document") => {
                let part = document_part(b).map_err(|e| format!("content.{i}: {e}"))?;
                if let Some(t) = part.get("text").and_then(Value::as_str) {
                    // A text document joins the message's text like a text block.
                    if !text.is_empty() && !t.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(t);
                }
                parts.push(with_cache(part, b));
            }
            ("user", "tool_result") => {
                let id = b
                    .get("tool_use_id")
                    .and_then(Value::as_str)
                    .ok_or(format!("content.{i}.tool_use_id: required"))?;
                let mut content = tool_result_text(b.get("content"));
                // The images a tool gave back (a screenshot, a file read): a tool
                // message carries text only (OpenAI refuses images there), so they
                // go in the user message after the tool messages, where every
                // provider shows them to the model.
                if let Some(Value::Array(inner)) = b.get("content") {
                    for (j, block) in inner.iter().enumerate() {
                        let part = match block.get("type").and_then(Value::as_str) {
                            Some("image") => image_part(block),
                            Some("document") => document_part(block),
                            _ => continue,
                        };
                        parts.push(part.map_err(|e| format!("content.{i}.content.{j}: {e}"))?);
                    }
                }
                if b.get("is_error") == Some(&Value::Bool(true)) {
                    content.insert_str(0, "Error: ");
                }
                // A tool message must follow the assistant's calls directly. A
                // breakpoint on the result rides on its text as a part.
                let content = match b.get("cache_control") {
                    Some(c) if !c.is_null() => {
                        json!([{"type": "text", "text": content, "cache_control": c}])
                    }
                    _ => Value::String(content),
                };
                out.push(json!({"role": "tool", "tool_call_id": id, "content": content}));
            }
            ("assistant", "tool_use") => {
                let id = b
                    .get("id")
                    .and_then(Value::as_str)
                    .ok_or(format!("content.{i}.id: required"))?;
                let name = b
                    .get("name")
                    .and_then(Value::as_str)
                    .ok_or(format!("content.{i}.name: required"))?;
                let input = b.get("input").cloned().unwrap_or_else(|| json!({}));
                calls.push(json!({
                    "id": id,
                    "type": "function",
                    "function": {"name": name, "arguments": input.to_string()},
                }));
            }
            (_, "thinking" | "redacted_thinking") => {}
            _ => {
                return Err(format!(
                    "content.{i}: a {role} message cannot hold a {kind:?} block"
                ));
            }
        }
    }
    // Parts carrying a prompt-cache breakpoint stay parts (a string has no
    // place for one).
    let cached = parts.iter().any(|p| p.get("cache_control").is_some());
    if role == "assistant" {
        let mut msg = Map::new();
        msg.insert("role".into(), json!("assistant"));
        msg.insert(
            "content".into(),
            if cached {
                Value::Array(parts)
            } else if text.is_empty() {
                Value::Null
            } else {
                Value::String(text)
            },
        );
        if !calls.is_empty() {
            msg.insert("tool_calls".into(), Value::Array(calls));
        }
        out.push(Value::Object(msg));
    } else if !parts.is_empty() {
        let only_text = parts.iter().all(|p| p["type"] == "text");
        let content = if only_text && !cached {
            Value::String(text)
        } else {
            Value::Array(parts)
        };
        out.push(json!({"role": "user", "content": content}));
    }
    Ok(())
}

/// Anthropic's `stop_reason` for an OpenAI `finish_reason`.
pub fn stop_reason(finish_reason: &str) -> &'static str {
    match finish_reason {
        "length" => "max_tokens",
        "tool_calls" | "function_call" => "tool_use",
        "content_filter" => "refusal",
        _ => "end_turn",
    }
}

/// [`stop_reason`] of an answer that made tool calls or not: a plain `stop` with
/// tool calls is `tool_use` (OpenAI answers so under a forced `tool_choice`, and
/// so do vLLM and Ollama), which is what an SDK's tool loop waits for.
fn stop_reason_after(finish_reason: &str, tool_calls: bool) -> &'static str {
    match stop_reason(finish_reason) {
        "end_turn" if tool_calls => "tool_use",
        other => other,
    }
}

/// Anthropic's `stop_reason` and `stop_sequence` for an answer's finish: a plain
/// `stop` beside the stop sequence it ended at (`matched`: a choice's
/// `stop_reason` string, as vLLM and the Anthropic adapter give it) is
/// `stop_sequence`, naming it.
///
/// An answer that refused (OpenAI's `refusal` field: a structured output the model
/// declined to give) and otherwise ended plainly is `refusal`, Anthropic's word for
/// a declined answer, so that a caller checking the stop reason before parsing does
/// not parse the refusal's sentence as its JSON.
fn stop_after(
    finish_reason: &str,
    tool_calls: bool,
    matched: Option<&str>,
    refused: bool,
) -> (&'static str, Value) {
    match (stop_reason_after(finish_reason, tool_calls), matched) {
        ("end_turn", _) if refused => ("refusal", Value::Null),
        ("end_turn", Some(sequence)) => ("stop_sequence", Value::from(sequence)),
        (reason, _) => (reason, Value::Null),
    }
}

/// Whether a message or a delta carries a refusal (a non-empty `refusal` string).
fn refuses(message: &Value) -> bool {
    message
        .get("refusal")
        .and_then(Value::as_str)
        .is_some_and(|r| !r.is_empty())
}

/// Token counts of an OpenAI `usage` object, as Anthropic reports them:
/// `(input_tokens, output_tokens, cache_read_input_tokens)`, cached prompt
/// tokens counted apart from the rest of the input as Anthropic does.
/// Anthropic's four counts of an OpenAI `usage`: the prompt tokens neither read
/// from nor written to a cache, the answer's, those read
/// (`prompt_tokens_details.cached_tokens`) and those written
/// (`cache_creation_input_tokens`, which the Anthropic adapter adds; OpenAI writes
/// its cache without saying).
type Counts = (u64, u64, u64, u64);

fn usage_counts(usage: Option<&Value>) -> Counts {
    let Some(u) = usage else {
        return (0, 0, 0, 0);
    };
    let n = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    let prompt = n(u.get("prompt_tokens"));
    let completion = n(u.get("completion_tokens"));
    let cached = n(u.pointer("/prompt_tokens_details/cached_tokens")).min(prompt);
    let written = n(u.get("cache_creation_input_tokens")).min(prompt - cached);
    (prompt - cached - written, completion, cached, written)
}

fn usage_json((input, output, cached, written): Counts) -> Value {
    json!({
        "input_tokens": input,
        "output_tokens": output,
        "cache_read_input_tokens": cached,
        "cache_creation_input_tokens": written,
    })
}

/// A `msg_…` id for an OpenAI completion id.
fn message_id(id: Option<&str>) -> String {
    match id {
        Some(id) if id.starts_with("msg_") => id.to_owned(),
        Some(id) if !id.is_empty() => format!("msg_{id}"),
        // No id (Azure's first streamed chunk has `""`): one of our own, unique
        // as the provider's would be (clients key answers by it).
        _ => {
            thread_local! {
                static IDS: std::cell::RefCell<tower_failover_core::rng::Rng> =
                    std::cell::RefCell::new(tower_failover_core::rng::Rng::from_entropy());
            }
            IDS.with_borrow_mut(|rng| {
                format!("msg_gw{:016x}{:08x}", rng.next_u64(), rng.next_u64() as u32)
            })
        }
    }
}

/// Tool arguments as an input object: the parsed JSON when it is an object,
/// `{}` when empty, the raw text under `"arguments"` otherwise (a model's
/// malformed arguments are the caller's to see, not a reason to fail the answer).
fn tool_input(arguments: &str) -> Value {
    if arguments.trim().is_empty() {
        return json!({});
    }
    match serde_json::from_str::<Value>(arguments) {
        Ok(v @ Value::Object(_)) => v,
        _ => json!({"arguments": arguments}),
    }
}

/// The non-empty texts of an OpenAI-style list of content parts: parts of type
/// `text` (or of no type) with a string `text`. Other parts (`thinking`,
/// `image_url`, …) are not the answer's text.
fn text_parts(parts: &[Value]) -> impl Iterator<Item = &str> {
    parts.iter().filter_map(|p| {
        let typed = p.get("type").and_then(Value::as_str);
        if typed.is_some_and(|t| t != "text") {
            return None;
        }
        p.get("text")
            .and_then(Value::as_str)
            .filter(|t| !t.is_empty())
    })
}

/// Translates an OpenAI chat completion (JSON) into an Anthropic Message.
/// `model` names the model when the answer does not.
pub fn response_to_anthropic(body: &[u8], model: &str) -> Result<Vec<u8>, TranslateError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|e| bad(format!("answer is not JSON: {e}")))?;
    let choice = v
        .pointer("/choices/0")
        .ok_or_else(|| bad("answer has no choices"))?;
    let message = choice.get("message").unwrap_or(&Value::Null);
    let mut content = Vec::new();
    for key in ["content", "refusal"] {
        match message.get(key) {
            Some(Value::String(t)) if !t.is_empty() => {
                content.push(json!({"type": "text", "text": t}));
            }
            // Content as a list of parts (Mistral's reasoning models answer so):
            // its text parts, each a block; thinking parts are not the answer.
            Some(Value::Array(parts)) => {
                for t in text_parts(parts) {
                    content.push(json!({"type": "text", "text": t}));
                }
            }
            _ => {}
        }
    }
    if let Some(Value::Array(calls)) = message.get("tool_calls") {
        for (i, c) in calls.iter().enumerate() {
            let id = c
                .get("id")
                .and_then(Value::as_str)
                .map_or_else(|| format!("toolu_{i}"), str::to_owned);
            let name = c
                .pointer("/function/name")
                .and_then(Value::as_str)
                .unwrap_or("");
            let args = c
                .pointer("/function/arguments")
                .and_then(Value::as_str)
                .unwrap_or("");
            content.push(
                json!({"type": "tool_use", "id": id, "name": name, "input": tool_input(args)}),
            );
        }
    }
    let finish = choice
        .get("finish_reason")
        .and_then(Value::as_str)
        .unwrap_or("stop");
    let counts = usage_counts(v.get("usage"));
    let (stop, sequence) = stop_after(
        finish,
        content.iter().any(|b| b["type"] == "tool_use"),
        choice.get("stop_reason").and_then(Value::as_str),
        refuses(message),
    );
    let out = json!({
        "id": message_id(v.get("id").and_then(Value::as_str)),
        "type": "message",
        "role": "assistant",
        "model": v.get("model").and_then(Value::as_str).unwrap_or(model),
        "content": content,
        "stop_reason": stop,
        "stop_sequence": sequence,
        "usage": usage_json(counts),
    });
    serde_json::to_vec(&out).map_err(|e| bad(e.to_string()))
}

/// Anthropic's error `type` and status for a status the stack answered with.
/// `503` (every provider down) becomes `529 overloaded_error`, as Anthropic's
/// SDKs expect when capacity is gone.
pub fn error_for_status(status: u16) -> (u16, &'static str) {
    match status {
        400 | 422 => (400, "invalid_request_error"),
        401 => (401, "authentication_error"),
        402 => (402, "billing_error"),
        403 => (403, "permission_error"),
        404 => (404, "not_found_error"),
        413 => (413, "request_too_large"),
        429 => (429, "rate_limit_error"),
        503 | 529 => (529, "overloaded_error"),
        504 => (504, "timeout_error"),
        _ => (500, "api_error"),
    }
}

/// An Anthropic error body: `{"type":"error","error":{"type":…,"message":…}}`.
pub fn error_body(kind: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"type": "error", "error": {"type": kind, "message": message}}))
        .unwrap_or_default()
}

/// The message of an OpenAI-shaped (or any) error body, for [`error_body`].
pub fn error_message(body: &[u8]) -> String {
    let v: Option<Value> = serde_json::from_slice(body).ok();
    v.as_ref()
        .and_then(|v| {
            v.pointer("/error/message")
                .or_else(|| v.get("message"))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Block {
    Text,
    /// A tool call, with its index in OpenAI's `tool_calls`.
    Tool(u64),
}

/// Translates an OpenAI chat completion stream into Anthropic's Messages events,
/// chunk by chunk.
///
/// Feed it each `data:` payload ([`push`](Self::push)) and call
/// [`finish`](Self::finish) at `[DONE]` or at the end of the body; each returns
/// the events to send, already framed (`event: …\ndata: …\n\n`). Text and tool
/// calls each get a content block, opened when they start and closed when
/// another begins; usage from the last chunk goes into `message_delta`.
#[derive(Debug, Clone)]
pub struct MessagesStream {
    model: String,
    started: bool,
    open: Option<Block>,
    /// The id of the tool call whose block is open, if one is.
    tool_id: Option<String>,
    /// Index of the next content block.
    next: u64,
    finish: Option<String>,
    /// The stop sequence the answer ended at, when a chunk named it (see
    /// [`stop_after`]).
    matched: Option<String>,
    usage: Counts,
    /// The prompt's size told at `message_start`, before the provider counts it.
    input_estimate: u64,
    /// A tool call was streamed: a plain stop is `tool_use`.
    tool_calls: bool,
    /// A delta carried a refusal: a plain stop is `refusal`.
    refused: bool,
    done: bool,
}

impl MessagesStream {
    /// A translator; `model` names the model until a chunk does.
    pub fn new(model: impl Into<String>) -> Self {
        MessagesStream {
            model: model.into(),
            started: false,
            open: None,
            tool_id: None,
            next: 0,
            finish: None,
            matched: None,
            usage: (0, 0, 0, 0),
            input_estimate: 0,
            tool_calls: false,
            refused: false,
            done: false,
        }
    }

    /// The prompt's size in tokens to tell at `message_start` (default 0), where
    /// Anthropic's API gives its count: an OpenAI-compatible provider counts the
    /// prompt only with its last chunk, which `message_delta` carries. Clients show
    /// the first figure as the context used (Claude Code's `/context`).
    pub fn with_input_estimate(mut self, tokens: u64) -> Self {
        self.input_estimate = tokens;
        self
    }

    /// Whether a chunk gave a `finish_reason` (the answer is whole).
    pub fn stopped(&self) -> bool {
        self.finish.is_some()
    }

    /// Whether [`finish`](Self::finish) or [`fail`](Self::fail) has run.
    pub fn is_done(&self) -> bool {
        self.done
    }

    fn emit(out: &mut Vec<u8>, v: &Value) {
        let kind = v.get("type").and_then(Value::as_str).unwrap_or("error");
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\ndata: ");
        // Serializing a Value cannot fail.
        out.extend_from_slice(&serde_json::to_vec(v).unwrap_or_default());
        out.extend_from_slice(b"\n\n");
    }

    fn start(&mut self, chunk: Option<&Value>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        if let Some(m) = chunk.and_then(|c| c.get("model")).and_then(Value::as_str)
            && !m.is_empty()
        {
            self.model = m.to_owned();
        }
        let id = message_id(chunk.and_then(|c| c.get("id")).and_then(Value::as_str));
        Self::emit(
            out,
            &json!({"type": "message_start", "message": {
                "id": id,
                "type": "message",
                "role": "assistant",
                "model": self.model,
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage_json((self.input_estimate, 0, 0, 0)),
            }}),
        );
    }

    fn close(&mut self, out: &mut Vec<u8>) {
        if self.open.take().is_some() {
            Self::emit(
                out,
                &json!({"type": "content_block_stop", "index": self.next - 1}),
            );
        }
    }

    fn open(&mut self, block: Block, content_block: Value, out: &mut Vec<u8>) {
        self.close(out);
        self.open = Some(block);
        Self::emit(
            out,
            &json!({"type": "content_block_start", "index": self.next, "content_block": content_block}),
        );
        self.next += 1;
    }

    fn text(&mut self, t: &str, out: &mut Vec<u8>) {
        if t.is_empty() {
            return;
        }
        if self.open != Some(Block::Text) {
            self.open(Block::Text, json!({"type": "text", "text": ""}), out);
        }
        Self::emit(
            out,
            &json!({"type": "content_block_delta", "index": self.next - 1,
                    "delta": {"type": "text_delta", "text": t}}),
        );
    }

    /// Translates one chunk (the JSON of one `data:` line other than `[DONE]`).
    pub fn push(&mut self, data: &[u8], out: &mut Vec<u8>) -> Result<(), TranslateError> {
        if self.done {
            return Ok(());
        }
        let chunk: Value = serde_json::from_slice(data)
            .map_err(|e| bad(format!("stream chunk is not JSON: {e}")))?;
        self.start(Some(&chunk), out);
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = usage_counts(Some(u));
        }
        let Some(choice) = chunk.pointer("/choices/0") else {
            return Ok(());
        };
        let delta = choice.get("delta").unwrap_or(&Value::Null);
        self.refused |= refuses(delta);
        for key in ["content", "refusal"] {
            match delta.get(key) {
                Some(Value::String(t)) => self.text(t, out),
                // A delta whose content is a list of parts (Mistral's reasoning
                // models stream so): its text parts; thinking is not sent on.
                Some(Value::Array(parts)) => {
                    for t in text_parts(parts) {
                        self.text(t, out);
                    }
                }
                _ => {}
            }
        }
        if let Some(Value::Array(calls)) = delta.get("tool_calls") {
            for (i, c) in calls.iter().enumerate() {
                let index = c.get("index").and_then(Value::as_u64).unwrap_or(i as u64);
                let fresh = c
                    .get("id")
                    .and_then(Value::as_str)
                    .filter(|s| !s.is_empty());
                // A new call starts at a new index or with a new id. Some
                // providers (Fireworks) repeat the call's id on every delta of its
                // arguments: the same id at the same index continues the block.
                let same_call = self.open == Some(Block::Tool(index))
                    && fresh.is_none_or(|id| self.tool_id.as_deref() == Some(id));
                if !same_call {
                    let id = fresh.map_or_else(|| format!("toolu_{index}"), str::to_owned);
                    self.tool_id = Some(id.clone());
                    let name = c
                        .pointer("/function/name")
                        .and_then(Value::as_str)
                        .unwrap_or("");
                    self.tool_calls = true;
                    self.open(
                        Block::Tool(index),
                        json!({"type": "tool_use", "id": id, "name": name, "input": {}}),
                        out,
                    );
                }
                if let Some(Value::String(args)) = c.pointer("/function/arguments")
                    && !args.is_empty()
                {
                    Self::emit(
                        out,
                        &json!({"type": "content_block_delta", "index": self.next - 1,
                                "delta": {"type": "input_json_delta", "partial_json": args}}),
                    );
                }
            }
        }
        if let Some(Value::String(f)) = choice.get("finish_reason") {
            self.finish = Some(f.clone());
            if let Some(Value::String(sequence)) = choice.get("stop_reason") {
                self.matched = Some(sequence.clone());
            }
        }
        Ok(())
    }

    /// A `ping` event, as Anthropic sends them, when the message has started and
    /// not ended: for a chunk of the stack's stream that gave the caller nothing
    /// (a reasoning model's thinking, which has no place here), so that a long
    /// silence is not taken for a dead connection by a proxy on the way.
    pub fn ping(&mut self, out: &mut Vec<u8>) {
        if self.started && !self.done {
            out.extend_from_slice(b"event: ping\ndata: {\"type\":\"ping\"}\n\n");
        }
    }

    /// Ends the message: closes the open block, sends `message_delta` with the
    /// stop reason and usage, then `message_stop`. Only the first call emits.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.start(None, out);
        self.close(out);
        self.done = true;
        let counts = self.usage;
        let (reason, sequence) = stop_after(
            self.finish.as_deref().unwrap_or("stop"),
            self.tool_calls,
            self.matched.as_deref(),
            self.refused,
        );
        Self::emit(
            out,
            &json!({"type": "message_delta",
                    "delta": {"stop_reason": reason, "stop_sequence": sequence},
                    "usage": usage_json(counts)}),
        );
        Self::emit(out, &json!({"type": "message_stop"}));
    }

    /// An `error` event ending the stream (the answer broke after it started).
    pub fn fail(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        Self::emit(
            out,
            &json!({"type": "error", "error": {"type": kind, "message": message}}),
        );
    }
}
