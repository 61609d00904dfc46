//! OpenAI chat completions ⇄ Anthropic messages.
//!
//! | OpenAI | Anthropic |
//! | --- | --- |
//! | `system` / `developer` messages | top-level `system` (joined by blank lines) |
//! | `user` text and `image_url` parts (data URLs or links) | `user` text and `image` blocks |
//! | `assistant` content and `tool_calls` | `assistant` text and `tool_use` blocks |
//! | `tool` messages | `user` `tool_result` blocks |
//! | `max_completion_tokens` / `max_tokens` | `max_tokens` (required: a default fills in) |
//! | `temperature` (0–2), `top_p`, `stop` | `temperature` (clamped to 0–1), `top_p` (dropped when `temperature` is given too: current Claude models refuse both), `stop_sequences` (empty or whitespace-only entries dropped) |
//! | `tools`, `tool_choice`, `parallel_tool_calls` | `tools`, `tool_choice`, `disable_parallel_tool_use` |
//! | `user` | `metadata.user_id` |
//! | `response_format` `json_schema` / `json_object` | `output_config.format` / a forced call of [`JSON_ANSWER_TOOL`] (input: any JSON object), whose input comes back as the message's content (beside the caller's tools, with `tool_choice` `any`; not after a prefill) |
//! | `cache_control` on a content part or a tool | `cache_control` on its block or tool (on the `tool_result` block for a tool message; the system prompt is then sent as blocks) |
//! | `finish_reason` `stop` / `length` / `tool_calls` / `content_filter` | `stop_reason` `end_turn`, `stop_sequence` / `max_tokens` / `tool_use` / `refusal` |
//! | the choice's `stop_reason` (the stop sequence met, where vLLM puts it) | `stop_sequence` |
//! | `usage.prompt_tokens` / `completion_tokens` | `input_tokens` (+ cache reads and writes) / `output_tokens` |
//!
//! Consecutive messages of the same role are merged (tool results then text in one
//! user turn, as Anthropic expects); a message left with no content (`""` or
//! `null` and no tool calls) is dropped first, as Anthropic refuses it. Parameters
//! with no Anthropic equivalent that change nothing the caller reads (`seed`,
//! `frequency_penalty`, …) are dropped; what Anthropic cannot deliver (`n > 1`,
//! `logprobs`, audio, …) is refused as unsupported, for another provider to serve.
//!
//! Streams are translated event by event ([`StreamTranslator`]): `message_start` →
//! the role chunk, text and tool-argument deltas → content and `tool_calls` deltas
//! (a tool call that streamed no arguments gets `{}` at its `content_block_stop`),
//! `message_delta` → the `finish_reason` chunk, `message_stop` → the usage chunk
//! and `data: [DONE]`. A stream that ends without `message_stop` is a
//! [`TruncatedStream`] error, never a silent end.
//!
//! The translation is in three files: `request.rs` (OpenAI in, Anthropic out:
//! [`request_to_anthropic`]), `response.rs` (Anthropic response and error bodies in,
//! OpenAI's shapes out: [`response_to_openai`], [`error_to_openai`]) and `stream.rs`
//! (SSE event by event: [`StreamTranslator`]).

#[cfg(doc)]
use tower_failover_core::error::TruncatedStream;

mod request;
mod response;
mod stream;
#[cfg(test)]
mod tests;

pub use request::{
    JSON_ANSWER_TOOL, RequestOptions, TranslatedRequest, default_output_tokens,
    request_to_anthropic,
};
pub(crate) use response::openai_error;
pub use response::{TokenCounts, error_to_openai, finish_reason, response_to_openai};
pub use stream::StreamTranslator;
