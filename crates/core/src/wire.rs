//! The wire formats LLM providers speak.
//!
//! One enum for the whole workspace: the provider adapters pick a translation by it,
//! output validation reads response bodies by it, and the simulator answers in it.
//! Adding a wire format means one variant here, one translation module in
//! `tower-failover-provider` and one module in the simulator's `wire/`.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A wire format: the shape of requests, responses, streams and rate-limit headers.
///
/// Written `"openai"` or `"anthropic"` in configuration (`"openai_compatible"` and
/// `"open_ai"` are accepted for OpenAI, and the variant names as written in Rust).
///
/// ```
/// use tower_failover_core::Wire;
///
/// let w: Wire = serde_json::from_str(r#""anthropic""#).unwrap();
/// assert_eq!(w, Wire::Anthropic);
/// assert_eq!(w.to_string(), "anthropic");
/// assert_eq!(Wire::default(), Wire::OpenAi);
/// assert_eq!("openai_compatible".parse::<Wire>(), Ok(Wire::OpenAi));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Wire {
    /// OpenAI chat completions (`POST /v1/chat/completions`, `choices[0].message` /
    /// `choices[0].delta`, `x-ratelimit-*` headers): OpenAI, Groq, DeepSeek, Mistral,
    /// Together, OpenRouter, vLLM, Ollama and every other OpenAI-compatible server.
    #[default]
    #[serde(
        rename = "openai",
        alias = "openai_compatible",
        alias = "open_ai",
        alias = "OpenAi"
    )]
    OpenAi,
    /// Anthropic messages (`POST /v1/messages`, `content` blocks, `message_start` …
    /// `message_stop`, `anthropic-ratelimit-*` headers).
    #[serde(rename = "anthropic", alias = "Anthropic")]
    Anthropic,
}

impl Wire {
    /// Every wire format, in a stable order.
    pub const ALL: [Wire; 2] = [Wire::OpenAi, Wire::Anthropic];

    /// `"openai"` or `"anthropic"` (also the default provider name).
    pub fn as_str(self) -> &'static str {
        match self {
            Wire::OpenAi => "openai",
            Wire::Anthropic => "anthropic",
        }
    }

    /// The official API's base URL: `https://api.openai.com/v1` or
    /// `https://api.anthropic.com`.
    pub fn default_base_url(self) -> &'static str {
        match self {
            Wire::OpenAi => "https://api.openai.com/v1",
            Wire::Anthropic => "https://api.anthropic.com",
        }
    }

    /// The completion route: `/v1/chat/completions` or `/v1/messages`.
    pub fn completion_path(self) -> &'static str {
        match self {
            Wire::OpenAi => "/v1/chat/completions",
            Wire::Anthropic => "/v1/messages",
        }
    }
}

impl fmt::Display for Wire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name was not a known wire format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownWire(());

impl fmt::Display for UnknownWire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown wire format (expected \"openai\" or \"anthropic\")")
    }
}

impl std::error::Error for UnknownWire {}

impl FromStr for Wire {
    type Err = UnknownWire;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "openai" | "openai_compatible" | "open_ai" | "OpenAi" => Ok(Wire::OpenAi),
            "anthropic" | "Anthropic" => Ok(Wire::Anthropic),
            _ => Err(UnknownWire(())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_round_trips() {
        for w in Wire::ALL {
            let json = serde_json::to_string(&w).unwrap();
            assert_eq!(json, format!("\"{}\"", w.as_str()));
            assert_eq!(serde_json::from_str::<Wire>(&json).unwrap(), w);
            assert_eq!(w.as_str().parse::<Wire>(), Ok(w));
        }
        for alias in ["openai_compatible", "open_ai", "OpenAi"] {
            let w: Wire = serde_json::from_str(&format!("\"{alias}\"")).unwrap();
            assert_eq!(w, Wire::OpenAi);
        }
        assert!(serde_json::from_str::<Wire>("\"gemini\"").is_err());
        assert!("gemini".parse::<Wire>().is_err());
    }
}
