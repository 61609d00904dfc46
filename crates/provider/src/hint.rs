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

/// What an error answer says beyond its status, in the words OpenAI, Anthropic,
/// Azure, vLLM and Ollama use: a context window overflow or a content policy refusal
/// (client errors other than 429), or an overload (server errors only: a 429 that
/// says "overloaded" stays a rate limit, with its `Retry-After`).
pub(crate) fn error_hint(status: u16, body: &[u8]) -> Option<ErrorHint> {
    let client = (400..500).contains(&status) && status != 429;
    let server = status >= 500;
    if !client && !server {
        return None;
    }
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
    if client
        && any(&[
            "context_length_exceeded",
            "context length",
            "context window",
            "context_window",
            "maximum context",
            "prompt is too long",
            "too many tokens",
            "reduce the length",
            "input is too long",
        ])
    {
        Some(ErrorHint::ContextWindowExceeded)
    } else if client
        && any(&[
            "content_policy",
            "content policy",
            "content_filter",
            "content management policy",
            "safety system",
            "responsibleaipolicyviolation",
        ])
    {
        Some(ErrorHint::ContentPolicy)
    } else if server && any(&["overloaded"]) {
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
        let cases: &[(u16, &str, Option<ErrorHint>)] = &[
            (
                400,
                r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#,
                Some(ErrorHint::ContextWindowExceeded),
            ),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"prompt is too long: 210000 tokens > 200000 maximum"}}"#,
                Some(ErrorHint::ContextWindowExceeded),
            ),
            (
                400,
                r#"{"object":"error","message":"This model's maximum context length is 4096 tokens","type":"BadRequestError","code":400}"#,
                Some(ErrorHint::ContextWindowExceeded),
            ),
            (
                400,
                r#"{"error":{"message":"Your request was rejected as a result of our safety system.","type":"invalid_request_error","code":"content_policy_violation"}}"#,
                Some(ErrorHint::ContentPolicy),
            ),
            (
                529,
                r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                Some(ErrorHint::Overloaded),
            ),
            (
                503,
                r#"{"error":"model is overloaded"}"#,
                Some(ErrorHint::Overloaded),
            ),
            (
                401,
                r#"{"error":{"message":"Invalid API key","type":"invalid_request_error"}}"#,
                None,
            ),
            (502, "<html>502 Bad Gateway</html>", None),
            (500, "", None),
            (500, "{\"error\":", None),
        ];
        for (status, body, want) in cases {
            assert_eq!(error_hint(*status, body.as_bytes()), *want, "{body}");
        }
        // The same words under the wrong status class say nothing.
        let overloaded = br#"{"error":{"message":"The engine is currently overloaded"}}"#;
        assert_eq!(error_hint(429, overloaded), None);
        assert_eq!(error_hint(400, overloaded), None);
        assert_eq!(error_hint(200, overloaded), None);
        let too_long = br#"{"error":{"code":"context_length_exceeded"}}"#;
        assert_eq!(error_hint(500, too_long), None);
        assert_eq!(error_hint(429, too_long), None);
    }
}
