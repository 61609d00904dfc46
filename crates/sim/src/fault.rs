//! Faults: what can go wrong with a simulated provider, and when.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SimError;

/// One way a provider can misbehave.
///
/// Faults fall in three groups:
///
/// * **outages** — [`Status`](Fault::Status), [`Refuse`](Fault::Refuse),
///   [`Reset`](Fault::Reset), [`ResetAfter`](Fault::ResetAfter),
///   [`Hang`](Fault::Hang), [`Stall`](Fault::Stall), [`Drip`](Fault::Drip),
///   [`Credential`](Fault::Credential), [`HtmlPage`](Fault::HtmlPage),
///   [`EmptyBody`](Fault::EmptyBody), [`AbsurdHeaders`](Fault::AbsurdHeaders):
///   apply to every API route (`/v1/models` included), so health probes see them
///   too;
/// * **degradation** — [`Slowdown`](Fault::Slowdown) (multiplies time to first
///   token; several active slowdowns multiply), [`RateLimit`](Fault::RateLimit);
/// * **account** — [`Billing`](Fault::Billing): completion routes only (a key
///   without credit can still list models, as with the real providers);
/// * **bad output** — [`MalformedJson`](Fault::MalformedJson),
///   [`ErrorObject`](Fault::ErrorObject), [`Truncate`](Fault::Truncate),
///   [`Refusal`](Fault::Refusal), [`WrongSchema`](Fault::WrongSchema),
///   [`NotJson`](Fault::NotJson), [`EmptyContent`](Fault::EmptyContent),
///   [`Length`](Fault::Length): apply to completion routes only.
///
/// When several specs match one request, every matching [`Slowdown`](Fault::Slowdown)
/// applies and the first other matching fault (in list order) decides the answer.
///
/// In scripts and the admin API a fault is an object tagged by `kind`
/// (the [`FaultKind`] name), with its parameter as a named field:
///
/// ```json
/// {"kind": "status", "status": 503}
/// {"kind": "slowdown", "factor": 10}
/// {"kind": "rate_limit", "retry_after": 5, "retry_after_format": "http_date"}
/// {"kind": "truncate", "after_events": 3}
/// {"kind": "hang"}
/// {"kind": "credential", "status": 401}
/// {"kind": "billing", "shape": "insufficient_quota"}
/// {"kind": "stall", "after_events": 1, "after_bytes": 0}
/// {"kind": "reset_after", "after_events": 2, "after_bytes": 100}
/// {"kind": "drip", "interval": "2s"}
/// {"kind": "html_page"}
/// {"kind": "empty_body"}
/// {"kind": "absurd_headers", "value": "1e23", "count": 0}
/// ```
///
/// # The faults modelled on how real providers fail
///
/// | fault | script | on the wire |
/// | --- | --- | --- |
/// | [`Credential`](Fault::Credential) | `credential`, `status` = 401 (default) or 403 | 401: OpenAI `invalid_api_key` naming a masked fragment of the key received; Anthropic `authentication_error` / 403: OpenAI `unsupported_country_region_territory`; Anthropic `permission_error` |
/// | [`Billing`](Fault::Billing) | `billing`, `shape` = `native` (default), `payment_required`, `insufficient_quota`, `credit_balance` | 402 "Insufficient Balance" / 429 `insufficient_quota` without any rate-limit header / 400 "Your credit balance is too low…" ([`Billing`]) |
/// | [`Stall`](Fault::Stall) | `stall`, `after_events` (default 1), `after_bytes` (default 0) | status, headers and that much body, then silence on an open connection |
/// | [`ResetAfter`](Fault::ResetAfter) | `reset_after`, same fields | status, headers and that much body, then a TCP reset |
/// | [`Drip`](Fault::Drip) | `drip`, `interval` (default `"1s"`) | the whole answer, one byte per `interval` |
/// | [`HtmlPage`](Fault::HtmlPage) | `html_page` | `200`, `content-type: text/html`, a proxy's "502 Bad Gateway" page |
/// | [`EmptyBody`](Fault::EmptyBody) | `empty_body` | `200`, `content-type: application/json`, `content-length: 0` |
/// | [`AbsurdHeaders`](Fault::AbsurdHeaders) | `absurd_headers`, `value` (default: rotate [`ABSURD_HEADER_VALUES`]), `count` (default 200) | a good answer whose rate-limit headers ([`ABSURD_HEADER_NAMES`]) hold absurd values, plus `count` filler headers |
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "FaultRepr", into = "FaultRepr")]
#[non_exhaustive]
pub enum Fault {
    /// Answer with this HTTP status (e.g. 500, 502, 503, 529) and the provider's
    /// error body (`{"error": {...}}` for OpenAI, `{"type": "error", ...}` for
    /// Anthropic), without any latency. Script: `{"kind": "status", "status": 503}`.
    Status(u16),
    /// Connection refused. While a `Refuse` spec with `fraction = 1` and no `limit`
    /// is active the sim closes its listening socket, so connecting fails with
    /// `ECONNREFUSED` (the admin endpoint is unreachable meanwhile); it binds the
    /// same address again when the window ends. Requests on connections that were
    /// already open, and requests picked by a fractional spec, get their connection
    /// reset (TCP RST) without any response.
    Refuse,
    /// Send the status line, headers and about half of the body, then reset the
    /// connection (TCP RST). Streaming replies are reset after half of their events.
    Reset,
    /// Never answer (the connection stays open): the client's timeout must fire.
    Hang,
    /// Multiply the time to first token (and, for non-streaming replies, the whole
    /// generation time) by this factor. Script: `{"kind": "slowdown", "factor": 10}`.
    Slowdown(f64),
    /// Answer `429 Too Many Requests` with the provider's rate-limit error body,
    /// `Retry-After` as given, and rate-limit headers that say zero requests remain
    /// until then.
    RateLimit(RetryAfter),
    /// `200` with a body that is not valid JSON (cut in the middle of an object);
    /// in a stream, one event's `data` is broken JSON.
    MalformedJson,
    /// `200` whose body is the provider's error object instead of a completion
    /// (`{"error": {...}}` / `{"type": "error", ...}`); in a stream, an error event.
    ErrorObject,
    /// End a streaming reply cleanly after this many SSE events, without `[DONE]` /
    /// `message_stop`. A non-streaming reply is cut after half of its body.
    /// Script: `{"kind": "truncate", "after_events": 3}`.
    Truncate(usize),
    /// The model refuses: the content is a refusal sentence (with OpenAI and a
    /// `json_schema` response format, `content` is `null` and `refusal` holds it).
    Refusal,
    /// The content is valid JSON that does not match the requested schema:
    /// `{"wrong": true}`.
    WrongSchema,
    /// The content is prose, not JSON, even when the request asked for JSON.
    NotJson,
    /// The content is empty (`""` for OpenAI, no content block for Anthropic).
    EmptyContent,
    /// The reply stops early: `finish_reason: "length"` / `stop_reason: "max_tokens"`,
    /// with about half of the normal content (JSON content is then cut, invalid).
    Length,
    /// The provider rejects the credentials, on every route. `401`: the key is
    /// wrong, revoked or rotated — OpenAI answers
    /// `{"error": {"message": "Incorrect API key provided: sk-*****abcd. You can find
    /// your API key at https://platform.openai.com/account/api-keys.", "type":
    /// "invalid_request_error", "param": null, "code": "invalid_api_key"}}`, echoing
    /// the first 3 and last 4 characters of the key it received (`Authorization:
    /// Bearer`; Anthropic: `x-api-key`) with `*` between (as many as the characters
    /// hidden, at most 40; a key shorter than 8 characters is all `*`; no key at
    /// all: "You didn't provide an API key. …"); Anthropic answers
    /// `{"type": "error", "error": {"type": "authentication_error", "message":
    /// "invalid x-api-key"}}`. `403`: the key may not be used here — OpenAI `type`
    /// `request_forbidden`, `code` `unsupported_country_region_territory`; Anthropic
    /// `permission_error`. No rate-limit headers. Only 401 and 403 are accepted.
    /// Script: `{"kind": "credential", "status": 401}` (`status` defaults to 401).
    Credential(u16),
    /// The account cannot pay: one of the three shapes real providers send (see
    /// [`Billing`]), in this sim's wire format, on completion routes only. No
    /// rate-limit or `Retry-After` headers, even with the 429 shape.
    /// Script: `{"kind": "billing", "shape": "native"}`.
    Billing(Billing),
    /// Send the status, the headers and the first [`CutPoint::after_events`] SSE
    /// events (streams) or [`CutPoint::after_bytes`] bytes (other bodies, which
    /// declare their full `content-length`), then nothing more: the connection
    /// stays open until the client goes away or the sim stops.
    /// Script: `{"kind": "stall", "after_events": 1, "after_bytes": 0}`.
    Stall(CutPoint),
    /// Like [`Stall`](Fault::Stall), but the connection is reset (TCP RST) at
    /// that point instead, once the bytes before it had time to reach the client.
    /// [`Reset`](Fault::Reset) is the same at half of the body.
    /// Script: `{"kind": "reset_after", "after_events": 2, "after_bytes": 100}`.
    ResetAfter(CutPoint),
    /// The whole answer, one byte at a time, one byte every `interval` (the first
    /// byte with the headers; no jitter). Other bodies declare their full
    /// `content-length`. Script: `{"kind": "drip", "interval": "2s"}`.
    Drip(Duration),
    /// `200` with `content-type: text/html; charset=utf-8` and a proxy's error page
    /// (`<html>…<h1>502 Bad Gateway</h1>…cloudflare…</html>`), at once, whatever the
    /// route. Script: `{"kind": "html_page"}`.
    HtmlPage,
    /// `200` with `content-type: application/json` and an empty body
    /// (`content-length: 0`), at once, whatever the route.
    /// Script: `{"kind": "empty_body"}`.
    EmptyBody,
    /// A good answer whose rate-limit headers hold absurd values, plus filler
    /// headers (see [`AbsurdHeaders`]). Script:
    /// `{"kind": "absurd_headers", "value": "1e23", "count": 0}` (both optional).
    AbsurdHeaders(AbsurdHeaders),
}

/// Where a [`Fault::Stall`] or [`Fault::ResetAfter`] cuts the answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CutPoint {
    /// SSE events sent before the cut, in a streamed answer (default 1). More
    /// events than the answer has: all of them, then the cut (before the end of the
    /// chunked body).
    pub after_events: usize,
    /// Bytes of the body sent before the cut, in an answer that is not streamed
    /// (default 0: status and headers only). At most the whole body.
    pub after_bytes: usize,
}

impl Default for CutPoint {
    fn default() -> Self {
        CutPoint {
            after_events: 1,
            after_bytes: 0,
        }
    }
}

impl CutPoint {
    /// Cut after `after_events` SSE events in a stream, `after_bytes` bytes otherwise.
    pub fn new(after_events: usize, after_bytes: usize) -> Self {
        CutPoint {
            after_events,
            after_bytes,
        }
    }
}

/// Which billing failure a [`Fault::Billing`] sends.
///
/// Each shape is rendered in the sim's own envelope (`{"error": {...}}` for OpenAI,
/// `{"type": "error", "error": {...}}` for Anthropic):
///
/// | shape | status | OpenAI envelope (`type` / `code`) | Anthropic envelope (`error.type`) | message |
/// | --- | --- | --- | --- | --- |
/// | `payment_required` (OpenRouter, DeepSeek) | 402 | `unknown_error` / `invalid_request_error` | `billing_error` | `Insufficient Balance` |
/// | `insufficient_quota` (OpenAI) | 429 | `insufficient_quota` / `insufficient_quota` | `rate_limit_error` | `You exceeded your current quota, please check your plan and billing details. For more information on this error, read the docs: https://platform.openai.com/docs/guides/error-codes/api-errors.` |
/// | `credit_balance` (Anthropic) | 400 | `invalid_request_error` / `null` | `invalid_request_error` | `Your credit balance is too low to access the Anthropic API. Please go to Plans & Billing to upgrade or purchase credits.` |
///
/// `native` (the default) is the provider's own: `insufficient_quota` for OpenAI,
/// `credit_balance` for Anthropic. None of them carries rate-limit headers or
/// `Retry-After`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Billing {
    /// The sim's own provider's shape: `InsufficientQuota` (OpenAI) or
    /// `CreditBalance` (Anthropic).
    #[default]
    Native,
    /// `402 Payment Required`, "Insufficient Balance" (OpenRouter, DeepSeek).
    PaymentRequired,
    /// `429` with `insufficient_quota` (OpenAI), and no rate-limit headers.
    InsufficientQuota,
    /// `400 invalid_request_error`, "Your credit balance is too low…" (Anthropic).
    CreditBalance,
}

/// The rate-limit headers a [`Fault::AbsurdHeaders`] fills with absurd values, in
/// order: both providers' families, whatever the sim's flavor.
pub const ABSURD_HEADER_NAMES: [&str; 18] = [
    "x-ratelimit-reset-requests",
    "x-ratelimit-reset-tokens",
    "x-ratelimit-remaining-requests",
    "x-ratelimit-remaining-tokens",
    "x-ratelimit-limit-requests",
    "x-ratelimit-limit-tokens",
    "retry-after",
    "retry-after-ms",
    "anthropic-ratelimit-requests-reset",
    "anthropic-ratelimit-tokens-reset",
    "anthropic-ratelimit-input-tokens-reset",
    "anthropic-ratelimit-output-tokens-reset",
    "anthropic-ratelimit-requests-remaining",
    "anthropic-ratelimit-tokens-remaining",
    "anthropic-ratelimit-input-tokens-remaining",
    "anthropic-ratelimit-output-tokens-remaining",
    "anthropic-ratelimit-requests-limit",
    "anthropic-ratelimit-tokens-limit",
];

/// The values a [`Fault::AbsurdHeaders`] without a `value` rotates through: header
/// `i` of [`ABSURD_HEADER_NAMES`] gets value `i % 7`, so
/// `x-ratelimit-reset-requests: 1e23`, `x-ratelimit-reset-tokens:
/// 18446744073709551616` (2^64), … `retry-after: 0xFF 0xFE` (two obs-text bytes, not
/// UTF-8), `retry-after-ms: 1e23`, and so on. Filler header `i` gets value `i % 7`
/// too.
pub const ABSURD_HEADER_VALUES: [&[u8]; 7] = [
    b"1e23",
    b"18446744073709551616",
    b"-5",
    b"NaN",
    b"-0",
    b"inf",
    b"\xff\xfe",
];

/// What a [`Fault::AbsurdHeaders`] sends.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbsurdHeaders {
    /// The value every header of [`ABSURD_HEADER_NAMES`] (and every filler) gets,
    /// sent as its UTF-8 bytes (a non-ASCII string gives obs-text bytes); `None`
    /// (default): rotate through [`ABSURD_HEADER_VALUES`].
    pub value: Option<String>,
    /// Filler headers added after the rate-limit ones, `x-sim-filler-0` to
    /// `x-sim-filler-{count - 1}` (default 200, at most 10 000). hyper's client
    /// (and so most Rust HTTP clients) refuses a response with more than 100
    /// headers by default: with the default `count` the answer fails to parse,
    /// which is realistic and must count as the provider's failure. `count = 0`
    /// gives a parseable answer with absurd values.
    pub count: usize,
}

impl Default for AbsurdHeaders {
    fn default() -> Self {
        AbsurdHeaders {
            value: None,
            count: DEFAULT_FILLER,
        }
    }
}

const DEFAULT_FILLER: usize = 200;
const MAX_FILLER: usize = 10_000;

/// How a [`Fault::RateLimit`] answer states when to come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RetryAfter {
    /// `Retry-After: <seconds>`.
    Seconds(u64),
    /// `Retry-After: <HTTP-date>` that many seconds in the future.
    HttpDate(u64),
    /// No `Retry-After` header and no rate-limit headers at all: a bare 429.
    Absent,
}

impl Default for RetryAfter {
    fn default() -> Self {
        RetryAfter::Seconds(1)
    }
}

/// The name of a [`Fault`], without its parameters: the key of
/// [`Counters::by_fault`](crate::Counters::by_fault) and the `kind` tag in scripts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// [`Fault::Status`].
    Status,
    /// [`Fault::Refuse`].
    Refuse,
    /// [`Fault::Reset`].
    Reset,
    /// [`Fault::Hang`].
    Hang,
    /// [`Fault::Slowdown`].
    Slowdown,
    /// [`Fault::RateLimit`].
    RateLimit,
    /// [`Fault::MalformedJson`].
    MalformedJson,
    /// [`Fault::ErrorObject`].
    ErrorObject,
    /// [`Fault::Truncate`].
    Truncate,
    /// [`Fault::Refusal`].
    Refusal,
    /// [`Fault::WrongSchema`].
    WrongSchema,
    /// [`Fault::NotJson`].
    NotJson,
    /// [`Fault::EmptyContent`].
    EmptyContent,
    /// [`Fault::Length`].
    Length,
    /// [`Fault::Credential`].
    Credential,
    /// [`Fault::Billing`].
    Billing,
    /// [`Fault::Stall`].
    Stall,
    /// [`Fault::ResetAfter`].
    ResetAfter,
    /// [`Fault::Drip`].
    Drip,
    /// [`Fault::HtmlPage`].
    HtmlPage,
    /// [`Fault::EmptyBody`].
    EmptyBody,
    /// [`Fault::AbsurdHeaders`].
    AbsurdHeaders,
}

impl FaultKind {
    /// Every kind, in declaration order.
    pub const ALL: [FaultKind; 22] = [
        FaultKind::Status,
        FaultKind::Refuse,
        FaultKind::Reset,
        FaultKind::Hang,
        FaultKind::Slowdown,
        FaultKind::RateLimit,
        FaultKind::MalformedJson,
        FaultKind::ErrorObject,
        FaultKind::Truncate,
        FaultKind::Refusal,
        FaultKind::WrongSchema,
        FaultKind::NotJson,
        FaultKind::EmptyContent,
        FaultKind::Length,
        FaultKind::Credential,
        FaultKind::Billing,
        FaultKind::Stall,
        FaultKind::ResetAfter,
        FaultKind::Drip,
        FaultKind::HtmlPage,
        FaultKind::EmptyBody,
        FaultKind::AbsurdHeaders,
    ];

    /// The snake_case name used in scripts, counters and the `x-sim-fault` header.
    pub fn as_str(self) -> &'static str {
        match self {
            FaultKind::Status => "status",
            FaultKind::Refuse => "refuse",
            FaultKind::Reset => "reset",
            FaultKind::Hang => "hang",
            FaultKind::Slowdown => "slowdown",
            FaultKind::RateLimit => "rate_limit",
            FaultKind::MalformedJson => "malformed_json",
            FaultKind::ErrorObject => "error_object",
            FaultKind::Truncate => "truncate",
            FaultKind::Refusal => "refusal",
            FaultKind::WrongSchema => "wrong_schema",
            FaultKind::NotJson => "not_json",
            FaultKind::EmptyContent => "empty_content",
            FaultKind::Length => "length",
            FaultKind::Credential => "credential",
            FaultKind::Billing => "billing",
            FaultKind::Stall => "stall",
            FaultKind::ResetAfter => "reset_after",
            FaultKind::Drip => "drip",
            FaultKind::HtmlPage => "html_page",
            FaultKind::EmptyBody => "empty_body",
            FaultKind::AbsurdHeaders => "absurd_headers",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// Whether this kind only concerns completion output (not `/v1/models`).
    pub(crate) fn is_output(self) -> bool {
        matches!(
            self,
            FaultKind::MalformedJson
                | FaultKind::ErrorObject
                | FaultKind::Truncate
                | FaultKind::Refusal
                | FaultKind::WrongSchema
                | FaultKind::NotJson
                | FaultKind::EmptyContent
                | FaultKind::Length
        )
    }

    /// Whether this kind applies to completion routes only.
    pub(crate) fn completion_only(self) -> bool {
        self.is_output() || self == FaultKind::Billing
    }
}

impl fmt::Display for FaultKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Fault {
    /// This fault's kind.
    pub fn kind(&self) -> FaultKind {
        match self {
            Fault::Status(_) => FaultKind::Status,
            Fault::Refuse => FaultKind::Refuse,
            Fault::Reset => FaultKind::Reset,
            Fault::Hang => FaultKind::Hang,
            Fault::Slowdown(_) => FaultKind::Slowdown,
            Fault::RateLimit(_) => FaultKind::RateLimit,
            Fault::MalformedJson => FaultKind::MalformedJson,
            Fault::ErrorObject => FaultKind::ErrorObject,
            Fault::Truncate(_) => FaultKind::Truncate,
            Fault::Refusal => FaultKind::Refusal,
            Fault::WrongSchema => FaultKind::WrongSchema,
            Fault::NotJson => FaultKind::NotJson,
            Fault::EmptyContent => FaultKind::EmptyContent,
            Fault::Length => FaultKind::Length,
            Fault::Credential(_) => FaultKind::Credential,
            Fault::Billing(_) => FaultKind::Billing,
            Fault::Stall(_) => FaultKind::Stall,
            Fault::ResetAfter(_) => FaultKind::ResetAfter,
            Fault::Drip(_) => FaultKind::Drip,
            Fault::HtmlPage => FaultKind::HtmlPage,
            Fault::EmptyBody => FaultKind::EmptyBody,
            Fault::AbsurdHeaders(_) => FaultKind::AbsurdHeaders,
        }
    }

    fn validate(&self) -> Result<(), String> {
        match *self {
            Fault::Credential(s) if s != 401 && s != 403 => Err(format!(
                "credential status {s} must be 401 (bad key) or 403 (permission)"
            )),
            Fault::Drip(d) if d.is_zero() || d > Duration::from_secs(3600) => Err(format!(
                "drip interval {d:?} must be more than zero and at most an hour"
            )),
            Fault::AbsurdHeaders(ref a) if a.count > MAX_FILLER => Err(format!(
                "absurd_headers count {} is more than {MAX_FILLER}",
                a.count
            )),
            Fault::AbsurdHeaders(AbsurdHeaders {
                value: Some(ref v), ..
            }) if http::HeaderValue::from_bytes(v.as_bytes()).is_err() => Err(format!(
                "absurd_headers value {v:?} cannot be sent as a header value (control characters)"
            )),
            Fault::Status(s) if !(100..=599).contains(&s) => {
                Err(format!("status {s} is not an HTTP status code (100..=599)"))
            }
            Fault::Slowdown(f) if !(f.is_finite() && f > 0.0) => {
                Err(format!("slowdown factor {f} must be a finite number > 0"))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Fault::Status(s) => write!(f, "status {s}"),
            Fault::Slowdown(x) => write!(f, "slowdown x{x}"),
            Fault::RateLimit(RetryAfter::Seconds(s)) => write!(f, "rate_limit (retry after {s}s)"),
            Fault::RateLimit(RetryAfter::HttpDate(s)) => {
                write!(f, "rate_limit (retry after {s}s, as HTTP-date)")
            }
            Fault::RateLimit(RetryAfter::Absent) => write!(f, "rate_limit (no retry-after)"),
            Fault::Truncate(n) => write!(f, "truncate after {n} events"),
            Fault::Credential(s) => write!(f, "credential {s}"),
            Fault::Billing(b) => write!(f, "billing ({b:?})"),
            Fault::Stall(c) => write!(
                f,
                "stall after {} events / {} bytes",
                c.after_events, c.after_bytes
            ),
            Fault::ResetAfter(c) => write!(
                f,
                "reset after {} events / {} bytes",
                c.after_events, c.after_bytes
            ),
            Fault::Drip(d) => write!(f, "drip one byte every {d:?}"),
            Fault::AbsurdHeaders(a) => write!(f, "absurd_headers ({} fillers)", a.count),
            other => f.write_str(other.kind().as_str()),
        }
    }
}

/// The serde form of [`Fault`]: internally tagged by `kind`, parameters named.
#[derive(Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum FaultRepr {
    Status {
        status: u16,
    },
    Refuse,
    Reset,
    Hang,
    Slowdown {
        factor: f64,
    },
    RateLimit {
        #[serde(default = "one", skip_serializing_if = "Option::is_none")]
        retry_after: Option<u64>,
        #[serde(default)]
        retry_after_format: RetryAfterFormat,
    },
    MalformedJson,
    ErrorObject,
    Truncate {
        after_events: usize,
    },
    Refusal,
    WrongSchema,
    NotJson,
    EmptyContent,
    Length,
    Credential {
        #[serde(default = "unauthorized")]
        status: u16,
    },
    Billing {
        #[serde(default)]
        shape: Billing,
    },
    Stall {
        #[serde(default = "one_event")]
        after_events: usize,
        #[serde(default)]
        after_bytes: usize,
    },
    ResetAfter {
        #[serde(default = "one_event")]
        after_events: usize,
        #[serde(default)]
        after_bytes: usize,
    },
    Drip {
        #[serde(default = "one_second", with = "tower_failover_core::duration_serde")]
        interval: Duration,
    },
    HtmlPage,
    EmptyBody,
    AbsurdHeaders {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        value: Option<String>,
        #[serde(default = "default_filler")]
        count: usize,
    },
}

fn one() -> Option<u64> {
    Some(1)
}

fn unauthorized() -> u16 {
    401
}

fn one_event() -> usize {
    1
}

fn one_second() -> Duration {
    Duration::from_secs(1)
}

fn default_filler() -> usize {
    DEFAULT_FILLER
}

#[derive(Clone, Copy, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum RetryAfterFormat {
    #[default]
    Seconds,
    HttpDate,
    Absent,
}

impl TryFrom<FaultRepr> for Fault {
    type Error = String;

    fn try_from(r: FaultRepr) -> Result<Self, String> {
        let f = match r {
            FaultRepr::Status { status } => Fault::Status(status),
            FaultRepr::Refuse => Fault::Refuse,
            FaultRepr::Reset => Fault::Reset,
            FaultRepr::Hang => Fault::Hang,
            FaultRepr::Slowdown { factor } => Fault::Slowdown(factor),
            FaultRepr::RateLimit {
                retry_after,
                retry_after_format,
            } => {
                let secs = retry_after.unwrap_or(1);
                Fault::RateLimit(match retry_after_format {
                    RetryAfterFormat::Seconds => RetryAfter::Seconds(secs),
                    RetryAfterFormat::HttpDate => RetryAfter::HttpDate(secs),
                    RetryAfterFormat::Absent => RetryAfter::Absent,
                })
            }
            FaultRepr::MalformedJson => Fault::MalformedJson,
            FaultRepr::ErrorObject => Fault::ErrorObject,
            FaultRepr::Truncate { after_events } => Fault::Truncate(after_events),
            FaultRepr::Refusal => Fault::Refusal,
            FaultRepr::WrongSchema => Fault::WrongSchema,
            FaultRepr::NotJson => Fault::NotJson,
            FaultRepr::EmptyContent => Fault::EmptyContent,
            FaultRepr::Length => Fault::Length,
            FaultRepr::Credential { status } => Fault::Credential(status),
            FaultRepr::Billing { shape } => Fault::Billing(shape),
            FaultRepr::Stall {
                after_events,
                after_bytes,
            } => Fault::Stall(CutPoint::new(after_events, after_bytes)),
            FaultRepr::ResetAfter {
                after_events,
                after_bytes,
            } => Fault::ResetAfter(CutPoint::new(after_events, after_bytes)),
            FaultRepr::Drip { interval } => Fault::Drip(interval),
            FaultRepr::HtmlPage => Fault::HtmlPage,
            FaultRepr::EmptyBody => Fault::EmptyBody,
            FaultRepr::AbsurdHeaders { value, count } => {
                Fault::AbsurdHeaders(AbsurdHeaders { value, count })
            }
        };
        f.validate()?;
        Ok(f)
    }
}

impl From<Fault> for FaultRepr {
    fn from(f: Fault) -> Self {
        match f {
            Fault::Status(status) => FaultRepr::Status { status },
            Fault::Refuse => FaultRepr::Refuse,
            Fault::Reset => FaultRepr::Reset,
            Fault::Hang => FaultRepr::Hang,
            Fault::Slowdown(factor) => FaultRepr::Slowdown { factor },
            Fault::RateLimit(ra) => {
                let (retry_after, retry_after_format) = match ra {
                    RetryAfter::Seconds(s) => (Some(s), RetryAfterFormat::Seconds),
                    RetryAfter::HttpDate(s) => (Some(s), RetryAfterFormat::HttpDate),
                    RetryAfter::Absent => (None, RetryAfterFormat::Absent),
                };
                FaultRepr::RateLimit {
                    retry_after,
                    retry_after_format,
                }
            }
            Fault::MalformedJson => FaultRepr::MalformedJson,
            Fault::ErrorObject => FaultRepr::ErrorObject,
            Fault::Truncate(after_events) => FaultRepr::Truncate { after_events },
            Fault::Refusal => FaultRepr::Refusal,
            Fault::WrongSchema => FaultRepr::WrongSchema,
            Fault::NotJson => FaultRepr::NotJson,
            Fault::EmptyContent => FaultRepr::EmptyContent,
            Fault::Length => FaultRepr::Length,
            Fault::Credential(status) => FaultRepr::Credential { status },
            Fault::Billing(shape) => FaultRepr::Billing { shape },
            Fault::Stall(c) => FaultRepr::Stall {
                after_events: c.after_events,
                after_bytes: c.after_bytes,
            },
            Fault::ResetAfter(c) => FaultRepr::ResetAfter {
                after_events: c.after_events,
                after_bytes: c.after_bytes,
            },
            Fault::Drip(interval) => FaultRepr::Drip { interval },
            Fault::HtmlPage => FaultRepr::HtmlPage,
            Fault::EmptyBody => FaultRepr::EmptyBody,
            Fault::AbsurdHeaders(AbsurdHeaders { value, count }) => {
                FaultRepr::AbsurdHeaders { value, count }
            }
        }
    }
}

/// A [`Fault`] with the conditions under which it applies.
///
/// A spec matches a request when all of these hold:
///
/// * the sim's clock (time since [`SimBuilder::start`](crate::SimBuilder::start)) is
///   in `[from, until)` (either bound may be absent);
/// * a seeded draw for this request falls under `fraction` (default 1: every
///   request) — deterministic for a given seed and request order;
/// * the spec has matched fewer than `limit` requests so far (default: no limit).
///
/// In scripts and the admin API the fault's fields sit next to the conditions:
///
/// ```toml
/// kind = "status"
/// status = 503
/// from = "10s"      # sim clock; "300ms", "1.5s", "2m" or a number of seconds
/// until = "40s"
/// fraction = 0.5
/// limit = 100
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// What goes wrong.
    #[serde(flatten)]
    pub fault: Fault,
    /// Start of the window on the sim's clock (inclusive); `None`: from the start.
    #[serde(
        default,
        with = "tower_failover_core::duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub from: Option<Duration>,
    /// End of the window on the sim's clock (exclusive); `None`: forever.
    #[serde(
        default,
        with = "tower_failover_core::duration_serde::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub until: Option<Duration>,
    /// Share of the requests in the window that get the fault, in `[0, 1]`.
    #[serde(default = "full")]
    pub fraction: f64,
    /// Apply to at most this many requests, then stop matching.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

fn full() -> f64 {
    1.0
}

impl FaultSpec {
    /// `fault` for every request, forever (until changed).
    pub fn always(fault: Fault) -> Self {
        FaultSpec {
            fault,
            from: None,
            until: None,
            fraction: 1.0,
            limit: None,
        }
    }

    /// Same as [`FaultSpec::always`]; narrow it with the builder methods.
    pub fn new(fault: Fault) -> Self {
        Self::always(fault)
    }

    /// Active from `from` (inclusive) to `until` (exclusive) on the sim's clock.
    pub fn window(mut self, from: Duration, until: Duration) -> Self {
        self.from = Some(from);
        self.until = Some(until);
        self
    }

    /// Active from `from` on the sim's clock.
    pub fn from(mut self, from: Duration) -> Self {
        self.from = Some(from);
        self
    }

    /// Active until `until` (exclusive) on the sim's clock.
    pub fn until(mut self, until: Duration) -> Self {
        self.until = Some(until);
        self
    }

    /// Apply to this share of the requests (seeded, deterministic), in `[0, 1]`.
    pub fn fraction(mut self, fraction: f64) -> Self {
        self.fraction = fraction;
        self
    }

    /// Apply to at most `n` requests ("fail the next 3 requests").
    pub fn limit(mut self, n: u64) -> Self {
        self.limit = Some(n);
        self
    }

    /// Refuse invalid values, naming the field.
    pub fn validate(&self) -> Result<(), SimError> {
        self.fault
            .validate()
            .map_err(|m| SimError::config("fault", m))?;
        if !(self.fraction.is_finite() && (0.0..=1.0).contains(&self.fraction)) {
            return Err(SimError::config(
                "fraction",
                format!("{} is not in [0, 1]", self.fraction),
            ));
        }
        if let (Some(from), Some(until)) = (self.from, self.until)
            && until <= from
        {
            return Err(SimError::config(
                "until",
                format!("window end {until:?} is not after its start {from:?}"),
            ));
        }
        Ok(())
    }

    /// Whether the window contains `now` (sim clock).
    pub(crate) fn in_window(&self, now: Duration) -> bool {
        self.from.is_none_or(|f| now >= f) && self.until.is_none_or(|u| now < u)
    }
}

impl From<Fault> for FaultSpec {
    fn from(fault: Fault) -> Self {
        FaultSpec::always(fault)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_round_trip() {
        let specs = vec![
            FaultSpec::always(Fault::Status(503))
                .window(Duration::from_secs(1), Duration::from_secs(3)),
            FaultSpec::new(Fault::RateLimit(RetryAfter::HttpDate(5))).fraction(0.5),
            FaultSpec::new(Fault::RateLimit(RetryAfter::Absent)).limit(2),
            FaultSpec::new(Fault::Truncate(3)),
            FaultSpec::new(Fault::Slowdown(2.5)),
            FaultSpec::new(Fault::Hang).from(Duration::from_millis(1500)),
            FaultSpec::new(Fault::Credential(403)),
            FaultSpec::new(Fault::Billing(Billing::CreditBalance)),
            FaultSpec::new(Fault::Stall(CutPoint::new(4, 100))),
            FaultSpec::new(Fault::ResetAfter(CutPoint::default())),
            FaultSpec::new(Fault::Drip(Duration::from_millis(2500))),
            FaultSpec::new(Fault::HtmlPage),
            FaultSpec::new(Fault::EmptyBody),
            FaultSpec::new(Fault::AbsurdHeaders(AbsurdHeaders::default())),
            FaultSpec::new(Fault::AbsurdHeaders(AbsurdHeaders {
                value: Some("-0".into()),
                count: 0,
            })),
        ];
        let json = serde_json::to_string(&specs).unwrap();
        let back: Vec<FaultSpec> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, specs);
    }

    #[test]
    fn parses_script_forms() {
        let s: FaultSpec =
            serde_json::from_str(r#"{"kind":"status","status":529,"from":"1s","until":2.5}"#)
                .unwrap();
        assert_eq!(s.fault, Fault::Status(529));
        assert_eq!(s.until, Some(Duration::from_millis(2500)));
        let s: FaultSpec = serde_json::from_str(r#"{"kind":"rate_limit"}"#).unwrap();
        assert_eq!(s.fault, Fault::RateLimit(RetryAfter::Seconds(1)));
        assert!(serde_json::from_str::<FaultSpec>(r#"{"kind":"status","status":42}"#).is_err());
        assert!(serde_json::from_str::<FaultSpec>(r#"{"kind":"meltdown"}"#).is_err());
        let s: FaultSpec =
            toml::from_str("kind = \"slowdown\"\nfactor = 4\nfraction = 0.25").unwrap();
        assert_eq!(s.fault, Fault::Slowdown(4.0));
        assert_eq!(s.fraction, 0.25);
    }

    #[test]
    fn new_kinds_have_defaults_and_limits() {
        let parse = |t: &str| toml::from_str::<FaultSpec>(t).map(|s| s.fault);
        assert_eq!(
            parse("kind = \"credential\"").unwrap(),
            Fault::Credential(401)
        );
        assert_eq!(
            parse("kind = \"billing\"").unwrap(),
            Fault::Billing(Billing::Native)
        );
        assert_eq!(
            parse("kind = \"billing\"\nshape = \"insufficient_quota\"").unwrap(),
            Fault::Billing(Billing::InsufficientQuota)
        );
        assert_eq!(
            parse("kind = \"stall\"").unwrap(),
            Fault::Stall(CutPoint::new(1, 0))
        );
        assert_eq!(
            parse("kind = \"reset_after\"\nafter_bytes = 9").unwrap(),
            Fault::ResetAfter(CutPoint::new(1, 9))
        );
        assert_eq!(
            parse("kind = \"drip\"\ninterval = \"2s\"").unwrap(),
            Fault::Drip(Duration::from_secs(2))
        );
        assert_eq!(
            parse("kind = \"drip\"").unwrap(),
            Fault::Drip(Duration::from_secs(1))
        );
        assert_eq!(
            parse("kind = \"absurd_headers\"").unwrap(),
            Fault::AbsurdHeaders(AbsurdHeaders {
                value: None,
                count: 200
            })
        );
        for bad in [
            "kind = \"credential\"\nstatus = 500",
            "kind = \"drip\"\ninterval = 0",
            "kind = \"drip\"\ninterval = \"2h\"",
            "kind = \"absurd_headers\"\ncount = 10001",
            "kind = \"absurd_headers\"\nvalue = \"a\\nb\"",
            "kind = \"billing\"\nshape = \"broke\"",
            "kind = \"stall\"\nafter_chunks = 2",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
        for v in ABSURD_HEADER_VALUES {
            assert!(http::HeaderValue::from_bytes(v).is_ok());
        }
        for n in ABSURD_HEADER_NAMES {
            assert!(http::HeaderName::from_static(n).as_str() == n);
        }
    }

    #[test]
    fn validation_names_the_field() {
        let e = FaultSpec::new(Fault::Hang)
            .fraction(1.5)
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("fraction"), "{e}");
        let e = FaultSpec::new(Fault::Hang)
            .window(Duration::from_secs(2), Duration::from_secs(1))
            .validate()
            .unwrap_err();
        assert!(e.to_string().contains("until"), "{e}");
        assert!(FaultSpec::new(Fault::Slowdown(0.0)).validate().is_err());
        for k in FaultKind::ALL {
            assert_eq!(
                k.index(),
                FaultKind::ALL.iter().position(|x| *x == k).unwrap()
            );
        }
    }
}
