//! Wire translation, usable on its own (the adapters call it; so can tests and
//! benchmarks).
//!
//! The canonical wire format is OpenAI chat completions. [`openai`] forwards it to
//! OpenAI-compatible servers with the model name mapped; [`anthropic`] translates
//! requests to Anthropic's messages API and responses (JSON and SSE, event by event)
//! back, so a caller that fails over from an OpenAI model to a Claude model gets the
//! same shape either way.

pub mod anthropic;
pub mod openai;
mod str;

use crate::error::TranslateError;

/// Refuses a request body that is not a JSON object.
///
/// serde reads a struct from a JSON array too (its fields by position), so
/// `["gpt-4o", true]` would otherwise pass for `{"model": "gpt-4o", "stream": true}`
/// and be spliced into. Checked on the first non-blank byte, before any parse.
pub(crate) fn require_object(body: &[u8]) -> Result<(), TranslateError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(TranslateError::new("request body must be a JSON object")),
    }
}
