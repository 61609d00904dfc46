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

/// Words that say the operator's account cannot pay, on any 4xx (429 included).
///
/// On a 429 only the machine codes count: Gemini's per-minute rate limits say "You
/// exceeded your current quota" in prose too, and they are rate limits, so the
/// prose of OpenAI's quota message is not matched; its `insufficient_quota` code is.
const BILLING_CODES: &[&str] = &[
    "insufficient_quota",
    "billing_error",
    "billing_hard_limit_reached",
    "billing_not_active",
];

/// Billing prose, on a 4xx other than 429.
const BILLING_WORDS: &[&str] = &[
    "credit balance is too low",
    "insufficient balance",
    "insufficient_balance",
    "insufficient credits",
    "payment required",
];

/// Words that say the operator's API key was rejected, on a 4xx other than 429.
const CREDENTIAL_WORDS: &[&str] = &[
    "invalid_api_key",
    "incorrect api key",
    "invalid api key",
    "invalid x-api-key",
    "authentication_error",
    "permission_error",
    "api key not valid",
    "api_key_invalid",
];

/// What an error answer says beyond its status, in the words OpenAI, Anthropic,
/// Azure, vLLM, Ollama, DeepSeek and OpenRouter use:
///
/// | hint | statuses | words |
/// | --- | --- | --- |
/// | `Billing` | any 4xx, 429 included | `insufficient_quota`, `billing_error` (Anthropic's 402), `billing_hard_limit_reached`, `billing_not_active`; and, not on a 429, "credit balance is too low", "insufficient balance", "insufficient credits", "payment required" |
/// | `Credentials` | 4xx but 429 | `invalid_api_key`, "incorrect api key", "invalid api key", "invalid x-api-key", `authentication_error`, `permission_error`, "api key not valid" |
/// | `ContextWindowExceeded` | 4xx but 429 | `context_length_exceeded`, "prompt is too long", … |
/// | `ContentPolicy` | 4xx but 429 | `content_policy`, "safety system", … |
/// | `Unsupported` | 4xx but 429 | `unsupported_parameter`, `unsupported_value`, `unknown_parameter`, "unrecognized request argument", "is not supported with this model", a token limit above the model's ("supports at most", "maximum allowed number of output tokens"), `extra_forbidden` / "extra inputs are not permitted" (Mistral), Anthropic's `output_config` refused, "invalid schema for response_format" (OpenAI's strict mode) |
/// | `Overloaded` | 5xx | "overloaded" (a 429 that says it stays a rate limit, with its `Retry-After`) |
///
/// A plain 429 gets no hint: it stays a rate limit.
pub(crate) fn error_hint(status: u16, body: &[u8]) -> Option<ErrorHint> {
    let any_client = (400..500).contains(&status);
    let client = any_client && status != 429;
    let server = status >= 500;
    if !any_client && !server {
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
    if any_client && any(BILLING_CODES) || client && any(BILLING_WORDS) {
        Some(ErrorHint::Billing)
    } else if client && any(CREDENTIAL_WORDS) {
        Some(ErrorHint::Credentials)
    } else if client
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
    } else if client
        && any(&[
            // OpenAI: a parameter or value this model does not take.
            "unsupported_parameter",
            "unsupported_value",
            "unknown_parameter",
            "unrecognized request argument",
            "is not supported with this model",
            // OpenAI's and Anthropic's word for a token limit above the model's.
            "supports at most",
            "maximum allowed number of output tokens",
            // Mistral and other strict validators (pydantic): a field it does not know.
            "extra_forbidden",
            "extra inputs are not permitted",
            // Anthropic refusing the structured output we translated
            // `response_format` into (an older model, a schema it cannot take).
            "output_config",
            // OpenAI refusing a schema its strict mode does not take (optional
            // properties, keywords it lacks): another provider may.
            "invalid schema for response_format",
        ])
    {
        Some(ErrorHint::Unsupported)
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
            // A parameter or value the model does not take: another provider may.
            (
                400,
                r#"{"error":{"message":"Unsupported parameter: 'stop' is not supported with this model.","type":"invalid_request_error","param":"stop","code":"unsupported_parameter"}}"#,
                Some(ErrorHint::Unsupported),
            ),
            (
                400,
                r#"{"error":{"message":"Unsupported value: 'temperature' does not support 0.2 with this model. Only the default (1) value is supported.","type":"invalid_request_error","param":"temperature","code":"unsupported_value"}}"#,
                Some(ErrorHint::Unsupported),
            ),
            (
                400,
                r#"{"error":{"message":"max_tokens is too large: 32000. This model supports at most 16384 completion tokens, whereas you provided 32000.","type":"invalid_request_error","param":"max_tokens","code":"invalid_value"}}"#,
                Some(ErrorHint::Unsupported),
            ),
            (
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"max_tokens: 64001 > 64000, which is the maximum allowed number of output tokens for claude-sonnet-4-5"}}"#,
                Some(ErrorHint::Unsupported),
            ),
            (
                400,
                r#"{"error":{"message":"Invalid schema for response_format 'output': In context=(), 'required' is required to be supplied and to be an array including every key in properties. Missing 'note'.","type":"invalid_request_error","param":"response_format","code":null}}"#,
                Some(ErrorHint::Unsupported),
            ),
            (
                422,
                r#"{"object":"error","message":{"detail":[{"type":"extra_forbidden","loc":["body","store"],"msg":"Extra inputs are not permitted","input":true}]},"type":"invalid_request_error","param":null,"code":null}"#,
                Some(ErrorHint::Unsupported),
            ),
            (
                400,
                r#"{"error":{"message":"Unrecognized request argument supplied: reasoning_effort","type":"invalid_request_error","param":null,"code":null}}"#,
                Some(ErrorHint::Unsupported),
            ),
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

    /// The wordings real providers answer with when the operator's key is rejected
    /// or their account cannot pay (the key fragments are made up).
    #[test]
    fn credential_and_billing_wordings() {
        use ErrorHint::{Billing, Credentials};
        let cases: &[(&str, u16, &str, Option<ErrorHint>)] = &[
            (
                "openai revoked key",
                401,
                r#"{"error":{"message":"Incorrect API key provided: sk-proj-****************************wxyz. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#,
                Some(Credentials),
            ),
            (
                "openai-compatible, no code",
                401,
                r#"{"error":{"message":"Invalid API key","type":"invalid_request_error"}}"#,
                Some(Credentials),
            ),
            (
                "anthropic bad key",
                401,
                r#"{"type":"error","error":{"type":"authentication_error","message":"invalid x-api-key"}}"#,
                Some(Credentials),
            ),
            (
                "anthropic no permission",
                403,
                r#"{"type":"error","error":{"type":"permission_error","message":"Your API key does not have permission to use the specified resource."}}"#,
                Some(Credentials),
            ),
            (
                "gemini bad key on a 400",
                400,
                r#"{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT"}}"#,
                Some(Credentials),
            ),
            (
                "openai quota on a 429",
                429,
                r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#,
                Some(Billing),
            ),
            (
                "openai hard limit",
                400,
                r#"{"error":{"message":"Billing hard limit has been reached","type":"invalid_request_error","param":null,"code":"billing_hard_limit_reached"}}"#,
                Some(Billing),
            ),
            (
                "openai inactive account",
                429,
                r#"{"error":{"message":"Your account is not active, please check your billing details on our website.","type":"billing_not_active","param":null,"code":"billing_not_active"}}"#,
                Some(Billing),
            ),
            (
                "anthropic credit balance",
                400,
                r#"{"type":"error","error":{"type":"invalid_request_error","message":"Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits."}}"#,
                Some(Billing),
            ),
            (
                "deepseek",
                402,
                r#"{"error":{"message":"Insufficient Balance","type":"unknown_error","param":null,"code":"invalid_request_error"}}"#,
                Some(Billing),
            ),
            (
                "openrouter",
                402,
                r#"{"error":{"message":"Insufficient credits. Add more using https://openrouter.ai/credits","code":402}}"#,
                Some(Billing),
            ),
            ("plain 402", 402, "Payment Required", Some(Billing)),
            (
                "anthropic 402",
                402,
                r#"{"type":"error","error":{"type":"billing_error","message":"There is an issue with your account's billing."}}"#,
                Some(Billing),
            ),
            // Rate limits stay rate limits.
            (
                "openai rate limit",
                429,
                r#"{"error":{"message":"Rate limit reached for gpt-4o-mini in organization org-x on requests per min (RPM): Limit 3, Used 3, Requested 1.","type":"requests","param":null,"code":"rate_limit_exceeded"}}"#,
                None,
            ),
            (
                "gemini per-minute quota",
                429,
                r#"{"error":{"code":429,"message":"You exceeded your current quota, please check your plan and billing details.","status":"RESOURCE_EXHAUSTED"}}"#,
                None,
            ),
            (
                "anthropic rate limit",
                429,
                r#"{"type":"error","error":{"type":"rate_limit_error","message":"Number of request tokens has exceeded your per-minute rate limit"}}"#,
                None,
            ),
            // A key complaint on a 429 or a 5xx is not a credentials failure.
            ("429 key words", 429, r#"{"error":"invalid api key"}"#, None),
            ("500 key words", 500, r#"{"error":"invalid_api_key"}"#, None),
            (
                "500 quota words",
                500,
                r#"{"error":"insufficient_quota"}"#,
                None,
            ),
            // An ordinary bad request stays the caller's.
            (
                "bad request",
                400,
                r#"{"error":{"message":"'messages' is a required property","type":"invalid_request_error","param":null,"code":null}}"#,
                None,
            ),
        ];
        for (name, status, body, want) in cases {
            assert_eq!(error_hint(*status, body.as_bytes()), *want, "{name}");
        }
    }
}
