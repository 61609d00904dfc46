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
