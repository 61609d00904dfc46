//! Anthropic SSE streams in, OpenAI chat completion chunks out, event by event.

use serde::{Deserialize as DeriveDeserialize, Serialize};
use tower_failover_core::error::{Invalid, TransportError, TruncatedStream};
use tower_failover_core::sse::{SseError, SseEvent, SseLimits, SseParser};
use tower_failover_core::{BoxError, FailureKind, RejectKind};

use crate::translate::str::Str;

use super::request::JSON_ANSWER_TOOL;
use super::response::{
    AnthError, AnthUsage, ChatUsage, RespBlock, TokenCounts, answered_finish_reason, now_unix,
};

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
    #[serde(borrow, default)]
    stop_sequence: Option<Str<'a>>,
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
    /// The stop sequence the answer ended at, as vLLM names it beside
    /// `finish_reason: "stop"` (see `response_to_openai`).
    #[serde(skip_serializing_if = "Option::is_none")]
    stop_reason: Option<&'a str>,
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
    /// The tool_use blocks seen so far, in order.
    tools: Vec<ToolBlock>,
    /// The content block of the answer asked for as the JSON answer tool's input
    /// (see `JSON_ANSWER_TOOL`): its argument text is streamed as content.
    json_block: Option<usize>,
    /// Whether content other than whitespace has been sent for it.
    json_sent: bool,
    prompt: Option<u64>,
    completion: Option<u64>,
    /// Of the prompt, tokens read from and written to the prompt cache.
    cache_read: u64,
    cache_write: u64,
    include_usage: bool,
    stopped: bool,
    /// `data: {"id":…,"object":…,"created":…,"model":…,"choices":`, built once.
    head: Vec<u8>,
}

/// A tool_use block of the Anthropic stream, as an OpenAI tool call.
#[derive(Debug, Clone, Copy)]
struct ToolBlock {
    /// Anthropic's content block index.
    block: usize,
    /// OpenAI's tool call index.
    call: usize,
    /// Whether argument text other than whitespace has been sent for this call
    /// (or its `{}` filler).
    has_arguments: bool,
}

impl StreamTranslator {
    /// A translator; `include_usage` ends the stream with OpenAI's usage chunk
    /// (`choices: []`). Events larger than `max_event` bytes are refused.
    pub fn new(include_usage: bool, max_event: usize) -> Self {
        StreamTranslator {
            parser: SseParser::with_limits(SseLimits::both(max_event)),
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
            .feed(chunk, &mut |ev: SseEvent<'_>| {
                state.event(ev.data, out).map_err(StreamError)
            })
            .map_err(|e| e.0)
    }

    /// The Anthropic stream ended: translates a last event that lacked its blank
    /// line, and fails with [`TruncatedStream`] if `message_stop` never came.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), BoxError> {
        let state = &mut self.state;
        self.parser
            .finish(&mut |ev: SseEvent<'_>| state.event(ev.data, out).map_err(StreamError))
            .map_err(|e| e.0)?;
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
        Some(self.state.counts())
    }
}

/// A translation error, or the parser's refusal as [`Invalid`] output.
struct StreamError(BoxError);

impl From<SseError> for StreamError {
    fn from(e: SseError) -> Self {
        StreamError(Invalid::from(e).into())
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
                    "tool_use" if block.name.as_deref() == Some(JSON_ANSWER_TOOL) => {
                        self.json_block = Some(index);
                        Ok(())
                    }
                    "tool_use" => {
                        let tool_index = self.tools.len();
                        self.tools.push(ToolBlock {
                            block: index,
                            call: tool_index,
                            has_arguments: false,
                        });
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
                    Some("input_json_delta")
                        if ev.index.is_some() && ev.index == self.json_block =>
                    {
                        match delta.partial_json.as_deref() {
                            Some(json) if !json.is_empty() => {
                                self.json_sent |= !json.trim().is_empty();
                                self.chunk(
                                    out,
                                    Delta {
                                        content: Some(json),
                                        ..Delta::default()
                                    },
                                    None,
                                )
                            }
                            _ => Ok(()),
                        }
                    }
                    Some("input_json_delta") => {
                        let tool = ev.index.and_then(|i| self.tool_mut(i));
                        match (tool, delta.partial_json.as_deref()) {
                            (Some(tool), Some(json)) if !json.is_empty() => {
                                // Whitespace alone still needs the `{}` at the end.
                                tool.has_arguments |= !json.trim().is_empty();
                                let index = tool.call;
                                self.arguments(out, index, json)
                            }
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
                let Some(delta) = ev.delta else {
                    return Ok(());
                };
                let sequence = delta
                    .stop_sequence
                    .as_deref()
                    .filter(|_| delta.stop_reason.as_deref() == Some("stop_sequence"));
                match delta.stop_reason.as_deref().map(|r| {
                    answered_finish_reason(r, self.json_block.is_some() && self.tools.is_empty())
                }) {
                    Some(reason) => self.write(
                        out,
                        &[ChunkChoice {
                            index: 0,
                            delta: Delta::default(),
                            logprobs: None,
                            finish_reason: Some(reason),
                            stop_reason: sequence,
                        }],
                        None,
                    ),
                    None => Ok(()),
                }
            }
            "message_stop" => {
                self.stopped = true;
                if self.include_usage {
                    let usage = ChatUsage::new(self.counts());
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
            "content_block_stop" => {
                // A tool call without arguments streams no argument text at all
                // (Anthropic sends an empty `input_json_delta`, or none), which
                // would leave the client with `"arguments": ""`: not JSON, and
                // not what the JSON answer gives (`{}`). Such a call gets `{}`
                // when its block ends.
                if ev.index.is_some() && ev.index == self.json_block && !self.json_sent {
                    // The same for a JSON answer: an empty object, not nothing.
                    self.json_sent = true;
                    return self.chunk(
                        out,
                        Delta {
                            content: Some("{}"),
                            ..Delta::default()
                        },
                        None,
                    );
                }
                match ev.index.and_then(|i| self.tool_mut(i)) {
                    Some(tool) if !tool.has_arguments => {
                        tool.has_arguments = true;
                        let index = tool.call;
                        self.arguments(out, index, "{}")
                    }
                    _ => Ok(()),
                }
            }
            // ping and future event types.
            _ => Ok(()),
        }
    }

    /// The tool call streamed from Anthropic content block `block`, if it is one.
    fn tool_mut(&mut self, block: usize) -> Option<&mut ToolBlock> {
        self.tools.iter_mut().find(|t| t.block == block)
    }

    /// A chunk with argument text for OpenAI tool call `index`.
    fn arguments(&mut self, out: &mut Vec<u8>, index: usize, json: &str) -> Result<(), BoxError> {
        self.chunk(
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
        )
    }

    /// The token counts so far.
    fn counts(&self) -> TokenCounts {
        TokenCounts {
            prompt_tokens: self.prompt.unwrap_or(0),
            completion_tokens: self.completion.unwrap_or(0),
            cache_read_tokens: self.cache_read,
            cache_write_tokens: self.cache_write,
        }
    }

    fn absorb(&mut self, u: AnthUsage) {
        if let Some(p) = u.prompt() {
            self.prompt = Some(p);
            // Counts are cumulative: the latest that names its input wins whole.
            self.cache_read = u.cache_read_input_tokens.unwrap_or(0);
            self.cache_write = u.cache_creation_input_tokens.unwrap_or(0);
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
                stop_reason: None,
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
