//! OpenAI's embeddings endpoint (`POST /v1/embeddings`): deterministic vectors.
//!
//! Each input's vector is drawn from a generator seeded by a hash of its text
//! (and of the requested model), then normalised to unit length, as real
//! embedding models return them: the same text always gets the same vector, on
//! every sim and every run, so tests can compare answers across a failover.

use serde_json::{Value, json};

use crate::wire::tokens;
use tower_failover_core::rng::Rng;

/// The vector length when the request names no `dimensions`
/// (OpenAI's `text-embedding-3-small`).
pub(crate) const DEFAULT_DIMENSIONS: usize = 1536;
/// The largest `dimensions` the sim accepts (OpenAI's largest model's).
pub(crate) const MAX_DIMENSIONS: usize = 3072;
/// At most this many inputs in one request (OpenAI's limit).
pub(crate) const MAX_INPUTS: usize = 2048;

/// A parsed embeddings request.
#[derive(Debug)]
pub(crate) struct EmbeddingsAsk {
    pub(crate) model: String,
    pub(crate) inputs: Vec<String>,
    pub(crate) dimensions: usize,
    /// `encoding_format: "base64"`: little-endian `f32`s, base64-encoded.
    pub(crate) base64: bool,
}

impl EmbeddingsAsk {
    /// Tokens in the inputs, estimated as for chat.
    pub(crate) fn prompt_tokens(&self) -> u64 {
        self.inputs.iter().map(|s| tokens(s)).sum()
    }
}

/// Parses an embeddings request, or says (in OpenAI's words) what is wrong.
pub(crate) fn parse(body: &[u8]) -> Result<EmbeddingsAsk, String> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| format!("We could not parse the JSON body of your request: {e}"))?;
    let model = match v.get("model") {
        Some(Value::String(m)) if !m.is_empty() => m.clone(),
        _ => return Err("you must provide a model parameter".into()),
    };
    let inputs = match v.get("input") {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) if !items.is_empty() => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                match item {
                    Value::String(s) => out.push(s.clone()),
                    // Token arrays: embedded by their text form.
                    Value::Number(_) | Value::Array(_) => out.push(item.to_string()),
                    _ => {
                        return Err(
                            "'input' must be a string, an array of strings or of tokens".into()
                        );
                    }
                }
            }
            out
        }
        _ => return Err("'input' must be a non-empty string or array".into()),
    };
    if inputs.len() > MAX_INPUTS {
        return Err(format!("'input' holds more than {MAX_INPUTS} items"));
    }
    let dimensions = match v.get("dimensions") {
        None | Some(Value::Null) => DEFAULT_DIMENSIONS,
        Some(d) => match d.as_u64() {
            Some(n) if (1..=MAX_DIMENSIONS as u64).contains(&n) => n as usize,
            _ => {
                return Err(format!(
                    "'dimensions' must be an integer from 1 to {MAX_DIMENSIONS}"
                ));
            }
        },
    };
    let base64 = match v.get("encoding_format") {
        None | Some(Value::Null) => false,
        Some(Value::String(f)) if f == "float" => false,
        Some(Value::String(f)) if f == "base64" => true,
        Some(_) => return Err("'encoding_format' must be \"float\" or \"base64\"".into()),
    };
    Ok(EmbeddingsAsk {
        model,
        inputs,
        dimensions,
        base64,
    })
}

/// FNV-1a over `bytes`: the seed of one input's vector.
fn text_seed(model: &str, text: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in model.bytes().chain([0]).chain(text.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// The unit vector of `text` for `model`, `dimensions` long.
pub(crate) fn vector(model: &str, text: &str, dimensions: usize) -> Vec<f32> {
    let mut rng = Rng::seeded(text_seed(model, text));
    let mut v: Vec<f64> = (0..dimensions).map(|_| rng.f64() * 2.0 - 1.0).collect();
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm > 0.0 {
        for x in &mut v {
            *x /= norm;
        }
    }
    v.into_iter().map(|x| x as f32).collect()
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(B64[(n >> (18 - 6 * i) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// The answer to `ask`, in OpenAI's list shape.
pub(crate) fn render(ask: &EmbeddingsAsk) -> Vec<u8> {
    let data: Vec<Value> = ask
        .inputs
        .iter()
        .enumerate()
        .map(|(i, text)| {
            let v = vector(&ask.model, text, ask.dimensions);
            let embedding = if ask.base64 {
                let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                Value::String(base64(&bytes))
            } else {
                json!(v)
            };
            json!({"object": "embedding", "index": i, "embedding": embedding})
        })
        .collect();
    let tokens = ask.prompt_tokens();
    serde_json::to_vec(&json!({
        "object": "list",
        "data": data,
        "model": ask.model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_text_same_unit_vector() {
        let a = vector("m", "hello", 64);
        assert_eq!(a, vector("m", "hello", 64));
        assert_ne!(a, vector("m", "hello!", 64));
        assert_ne!(a, vector("other", "hello", 64));
        let norm: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "{norm}");
    }

    #[test]
    fn base64_matches_the_standard_alphabet() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }

    #[test]
    fn parse_rejects_bad_requests() {
        assert!(parse(b"{}").is_err());
        assert!(parse(br#"{"model":"m","input":[]}"#).is_err());
        assert!(parse(br#"{"model":"m","input":"x","dimensions":0}"#).is_err());
        assert!(parse(br#"{"model":"m","input":"x","encoding_format":"hex"}"#).is_err());
        let a =
            parse(br#"{"model":"m","input":["a","b"],"dimensions":8,"encoding_format":"base64"}"#)
                .unwrap();
        assert_eq!((a.inputs.len(), a.dimensions, a.base64), (2, 8, true));
    }
}
