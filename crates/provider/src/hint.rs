//! Reading error bodies for what their status cannot say.

use serde::Deserialize;
use tower_failover_core::ErrorHint;

/// The largest error body read to look for a hint (and passed on to the caller).
pub(crate) const MAX_ERROR_BODY: usize = 64 * 1024;

#[derive(Deserialize, Default)]
struct Body<'a> {
    #[serde(borrow, default)]
    error: Option<Field<'a>>,
    #[serde(borrow, default)]
    message: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default, rename = "type")]
    kind: Option<&'a serde_json::value::RawValue>,
    #[serde(borrow, default)]
    code: Option<&'a serde_json::value::RawValue>,
}

/// `error` is an object (OpenAI, Anthropic) or a string (Ollama and others).
#[derive(Deserialize)]
#[serde(untagged)]
enum Field<'a> {
    Object {
        #[serde(default)]
        message: Option<serde_json::Value>,
        #[serde(default, rename = "type")]
        kind: Option<serde_json::Value>,
        #[serde(default)]
        code: Option<serde_json::Value>,
    },
    Text(std::borrow::Cow<'a, str>),
}

/// What an error body says, beyond its status: a context window overflow, a content
/// policy refusal or an overload, in the words OpenAI, Anthropic, Azure, vLLM and
/// Ollama use.
pub(crate) fn error_hint(body: &[u8]) -> Option<ErrorHint> {
    let mut text = String::new();
    match serde_json::from_slice::<Body<'_>>(body) {
        Ok(b) => {
            match b.error {
                Some(Field::Object {
                    message,
                    kind,
                    code,
                }) => {
                    for v in [message, kind, code].into_iter().flatten() {
                        text.push_str(&v.to_string());
                        text.push(' ');
                    }
                }
                Some(Field::Text(t)) => text.push_str(&t),
                None => {}
            }
            for v in [b.message, b.kind, b.code].into_iter().flatten() {
                text.push_str(v.get());
                text.push(' ');
            }
        }
        Err(_) => text.push_str(&String::from_utf8_lossy(body)),
    }
    let t = text.to_ascii_lowercase();
    let any = |needles: &[&str]| needles.iter().any(|n| t.contains(n));
    if any(&[
        "context_length_exceeded",
        "context length",
        "context window",
        "context_window",
        "maximum context",
        "prompt is too long",
        "too many tokens",
        "reduce the length",
        "input is too long",
    ]) {
        Some(ErrorHint::ContextWindowExceeded)
    } else if any(&[
        "content_policy",
        "content policy",
        "content_filter",
        "content management policy",
        "safety system",
        "responsibleaipolicyviolation",
    ]) {
        Some(ErrorHint::ContentPolicy)
    } else if any(&["overloaded"]) {
        Some(ErrorHint::Overloaded)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn provider_wordings() {
        let cases: &[(&str, Option<ErrorHint>)] = &[
            (
                r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
                Some(ErrorHint::ContextWindowExceeded),
            ),
            (
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                Some(ErrorHint::ContextWindowExceeded),
            ),
            (
                r#"{"object":"error","message":"This model's maximum context length is 4096 tokens","type":"BadRequestError","code":400}"#,
                Some(ErrorHint::ContextWindowExceeded),
            ),
            (
                r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","code":"content_policy_violation"}}"#,
                Some(ErrorHint::ContentPolicy),
            ),
            (
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                Some(ErrorHint::Overloaded),
            ),
            (
                r#"{"error":"model is overloaded"}"#,
                Some(ErrorHint::Overloaded),
            ),
            (
                r#"{"error":{"message":"Invalid API key","type":"invalid_request_error"}}"#,
                None,
            ),
            ("<html>502 Bad Gateway</html>", None),
            ("", None),
            ("{\"error\":", None),
        ];
        for (body, want) in cases {
            assert_eq!(error_hint(body.as_bytes()), *want, "{body}");
        }
    }
}
