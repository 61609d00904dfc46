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
///   [`Reset`](Fault::Reset), [`Hang`](Fault::Hang): apply to every API route
///   (`/v1/models` included), so health probes see them too;
/// * **degradation** — [`Slowdown`](Fault::Slowdown) (multiplies time to first
///   token; several active slowdowns multiply), [`RateLimit`](Fault::RateLimit);
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
/// ```
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
}

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
}

impl FaultKind {
    /// Every kind, in declaration order.
    pub const ALL: [FaultKind; 14] = [
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
        }
    }

    fn validate(&self) -> Result<(), String> {
        match *self {
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
}

fn one() -> Option<u64> {
    Some(1)
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
