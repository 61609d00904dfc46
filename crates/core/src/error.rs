//! Small concrete error types, carried as [`tower::BoxError`].
//!
//! Every layer fails with one of these (boxed), so callers and gateway authors can
//! find the one they care about anywhere in an error chain with [`find`], and turn any
//! of them into an HTTP response with [`error_response`](crate::error_response).
//! Each has a stable `Display` (safe to show to callers: it never contains secrets).

use std::error::Error;
use std::fmt;
use std::time::Duration;

use serde::Serialize;

use crate::health::ProviderId;
use crate::outcome::{FailureKind, Outcome, RejectKind};

/// Finds the first error of type `T` in `err` or its chain of sources.
///
/// ```
/// use tower::BoxError;
/// use tower_failover_core::error::{find, Elapsed, TimeoutKind};
/// use std::time::Duration;
///
/// let err: BoxError = Elapsed::new(TimeoutKind::FirstByte, Duration::from_secs(10)).into();
/// let elapsed = find::<Elapsed>(&*err).unwrap();
/// assert_eq!(elapsed.kind(), TimeoutKind::FirstByte);
/// ```
pub fn find<'a, T: Error + 'static>(err: &'a (dyn Error + 'static)) -> Option<&'a T> {
    let mut cur: Option<&'a (dyn Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        cur = e.source();
    }
    None
}

fn provider_prefix(f: &mut fmt::Formatter<'_>, provider: &Option<ProviderId>) -> fmt::Result {
    match provider {
        Some(p) => write!(f, "{p}: "),
        None => Ok(()),
    }
}

/// The circuit of a provider is open: the request was not sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CircuitOpen {
    provider: Option<ProviderId>,
    retry_in: Duration,
}

impl CircuitOpen {
    /// A circuit-open error; `retry_in` is the time left until it lets a probe through.
    pub fn new(retry_in: Duration) -> Self {
        CircuitOpen {
            provider: None,
            retry_in,
        }
    }

    /// Names the provider whose circuit is open.
    pub fn with_provider(mut self, provider: ProviderId) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The provider, if known.
    pub fn provider(&self) -> Option<&ProviderId> {
        self.provider.as_ref()
    }

    /// Time left until the circuit lets a probe through.
    pub fn retry_in(&self) -> Duration {
        self.retry_in
    }
}

impl fmt::Display for CircuitOpen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        provider_prefix(f, &self.provider)?;
        write!(
            f,
            "circuit open (retry in {} ms)",
            self.retry_in.as_millis()
        )
    }
}

impl Error for CircuitOpen {}

/// A provider is rate limiting us: the request was not sent, or it was answered 429.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimited {
    provider: Option<ProviderId>,
    retry_after: Option<Duration>,
}

impl RateLimited {
    /// A rate-limited error with the provider's requested wait, if known.
    pub fn new(retry_after: Option<Duration>) -> Self {
        RateLimited {
            provider: None,
            retry_after,
        }
    }

    /// Names the provider.
    pub fn with_provider(mut self, provider: ProviderId) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The provider, if known.
    pub fn provider(&self) -> Option<&ProviderId> {
        self.provider.as_ref()
    }

    /// How long the provider asked us to wait.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }
}

impl fmt::Display for RateLimited {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        provider_prefix(f, &self.provider)?;
        match self.retry_after {
            Some(d) => write!(f, "rate limited (retry after {} ms)", d.as_millis()),
            None => f.write_str("rate limited"),
        }
    }
}

impl Error for RateLimited {}

/// A layer declined to send this request to this provider right now (a recovery ramp
/// admitting only part of the traffic, a full queue). Not a failure of the provider:
/// routers send the request elsewhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shed {
    provider: Option<ProviderId>,
    reason: &'static str,
}

impl Shed {
    /// A shed error with a short static reason such as `"ramp"`.
    pub fn new(reason: &'static str) -> Self {
        Shed {
            provider: None,
            reason,
        }
    }

    /// Names the provider.
    pub fn with_provider(mut self, provider: ProviderId) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The provider, if known.
    pub fn provider(&self) -> Option<&ProviderId> {
        self.provider.as_ref()
    }

    /// Why the request was shed.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for Shed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        provider_prefix(f, &self.provider)?;
        write!(f, "request shed ({})", self.reason)
    }
}

impl Error for Shed {}

/// A response failed validation.
///
/// Its `Display` (and so every message a caller or a log can see: an error
/// response's body, [`AllProvidersFailed`]'s attempts) names the provider and the
/// [`RejectKind`] only. The [`detail`](Invalid::detail) may quote the provider's own
/// words (the message of an error object, which can name a fragment of an API key),
/// so it is kept for programmatic use and left out of `Display` and `Debug`.
#[derive(Clone, PartialEq, Eq)]
pub struct Invalid {
    provider: Option<ProviderId>,
    kind: RejectKind,
    detail: String,
    answer: Option<RejectedAnswer>,
}

/// The whole body of an answer that was well formed but failed a check of its
/// content (a refusal, an empty answer, a schema), kept with its rejection so that
/// when every provider's answer is rejected so, the caller can be given the last
/// one instead of an error ([`AllProvidersFailed::answer`]). `Debug` shows its
/// length only.
#[derive(Clone, PartialEq, Eq)]
pub struct RejectedAnswer {
    kind: RejectKind,
    body: bytes::Bytes,
}

impl RejectedAnswer {
    /// Why it was rejected.
    pub fn kind(&self) -> RejectKind {
        self.kind
    }

    /// The answer's body, as the provider (or its adapter) gave it.
    pub fn body(&self) -> &bytes::Bytes {
        &self.body
    }
}

impl fmt::Debug for RejectedAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RejectedAnswer")
            .field("kind", &self.kind)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Invalid {
    /// An invalid-output error of `kind`, with a short human-readable detail (never
    /// the whole body).
    pub fn new(kind: RejectKind, detail: impl Into<String>) -> Self {
        let mut detail = detail.into();
        if detail.len() > 200 {
            let mut cut = 200;
            while !detail.is_char_boundary(cut) {
                cut -= 1;
            }
            detail.truncate(cut);
            detail.push('…');
        }
        Invalid {
            provider: None,
            kind,
            detail,
            answer: None,
        }
    }

    /// Keeps the rejected answer's whole body, for the caller to be given it when
    /// every provider's answer is rejected for its content. Not for a malformed
    /// answer ([`RejectKind::is_malformed`]) nor a shed attempt: those are kept
    /// without it.
    ///
    /// ```
    /// use tower_failover_core::{RejectKind, error::Invalid};
    ///
    /// let body = bytes::Bytes::from_static(br#"{"choices":[{"message":{"content":""}}]}"#);
    /// let kept = Invalid::new(RejectKind::Empty, "no content").with_answer(body.clone());
    /// assert_eq!(kept.answer().map(|a| a.body()), Some(&body));
    /// let broken = Invalid::new(RejectKind::InvalidJson, "cut").with_answer(body);
    /// assert!(broken.answer().is_none());
    /// ```
    pub fn with_answer(mut self, body: bytes::Bytes) -> Self {
        if !self.kind.is_malformed() && self.kind != RejectKind::Shed {
            self.answer = Some(RejectedAnswer {
                kind: self.kind,
                body,
            });
        }
        self
    }

    /// The rejected answer, when [`with_answer`](Self::with_answer) kept it.
    pub fn answer(&self) -> Option<&RejectedAnswer> {
        self.answer.as_ref()
    }

    /// Names the provider.
    pub fn with_provider(mut self, provider: ProviderId) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The provider, if known.
    pub fn provider(&self) -> Option<&ProviderId> {
        self.provider.as_ref()
    }

    /// What was wrong.
    pub fn kind(&self) -> RejectKind {
        self.kind
    }

    /// A short description, at most 200 bytes. It may quote the provider's text
    /// (an error object's message): never show it to callers or write it to logs.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Debug for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Invalid")
            .field("provider", &self.provider)
            .field("kind", &self.kind)
            .field("detail_len", &self.detail.len())
            .finish()
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        provider_prefix(f, &self.provider)?;
        write!(f, "invalid response ({})", self.kind)
    }
}

impl Error for Invalid {}

/// A streamed response broke or ended without its terminal event after the commit
/// point (after bytes had reached the caller), so it could not fail over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TruncatedStream {
    provider: Option<ProviderId>,
    detail: String,
    timeout: Option<Elapsed>,
}

impl TruncatedStream {
    /// A truncated-stream error with a short detail.
    pub fn new(detail: impl Into<String>) -> Self {
        TruncatedStream {
            provider: None,
            detail: detail.into(),
            timeout: None,
        }
    }

    /// Records that a deadline cut the stream (for example the idle timeout
    /// between chunks, [`TimeoutKind::Idle`]). It becomes this error's
    /// [`source`](Error::source), so classifiers count the stream as a
    /// [`Timeout`](crate::FailureKind::Timeout) rather than a reset.
    pub fn with_timeout(mut self, elapsed: Elapsed) -> Self {
        self.timeout = Some(elapsed);
        self
    }

    /// The deadline that cut the stream, if one did.
    pub fn timeout(&self) -> Option<&Elapsed> {
        self.timeout.as_ref()
    }

    /// Names the provider.
    pub fn with_provider(mut self, provider: ProviderId) -> Self {
        self.provider = Some(provider);
        self
    }

    /// The provider, if known.
    pub fn provider(&self) -> Option<&ProviderId> {
        self.provider.as_ref()
    }

    /// What happened.
    pub fn detail(&self) -> &str {
        &self.detail
    }
}

impl fmt::Display for TruncatedStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        provider_prefix(f, &self.provider)?;
        write!(f, "stream truncated: {}", self.detail)
    }
}

impl Error for TruncatedStream {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        self.timeout.as_ref().map(|e| e as &(dyn Error + 'static))
    }
}

/// Which deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimeoutKind {
    /// Opening the connection.
    Connect,
    /// Waiting for the first byte of the response body.
    FirstByte,
    /// One attempt against one provider, as a whole.
    Attempt,
    /// The whole request, across every attempt.
    Total,
    /// Waiting in a queue for a provider to become available.
    Queue,
    /// The gap between two chunks of a response body (a stream that went silent).
    Idle,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TimeoutKind::Connect => "connect",
            TimeoutKind::FirstByte => "first byte",
            TimeoutKind::Attempt => "attempt",
            TimeoutKind::Total => "total",
            TimeoutKind::Queue => "queue",
            TimeoutKind::Idle => "idle",
        })
    }
}

/// A deadline passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Elapsed {
    kind: TimeoutKind,
    after: Duration,
}

impl Elapsed {
    /// The `kind` deadline passed after `after`.
    pub fn new(kind: TimeoutKind, after: Duration) -> Self {
        Elapsed { kind, after }
    }

    /// Which deadline.
    pub fn kind(&self) -> TimeoutKind {
        self.kind
    }

    /// How long it was.
    pub fn after(&self) -> Duration {
        self.after
    }
}

impl fmt::Display for Elapsed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} timeout after {} ms",
            self.kind,
            self.after.as_millis()
        )
    }
}

impl Error for Elapsed {}

/// A request or response body was larger than the configured limit. The oversized
/// body was not buffered.
///
/// A request body past the limit is the caller's doing (HTTP 413); a response body
/// past it is the provider's (HTTP 502): see [`BodyTooLarge::response`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyTooLarge {
    limit: u64,
    response: bool,
}

impl BodyTooLarge {
    /// A request body exceeded `limit` bytes.
    pub fn new(limit: u64) -> Self {
        BodyTooLarge {
            limit,
            response: false,
        }
    }

    /// A provider's response body exceeded `limit` bytes.
    pub fn response(limit: u64) -> Self {
        BodyTooLarge {
            limit,
            response: true,
        }
    }

    /// The limit in bytes.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// Whether it was a response body (the provider's), not the caller's request.
    pub fn is_response(&self) -> bool {
        self.response
    }
}

impl fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let which = if self.response { "response" } else { "request" };
        write!(f, "{which} body larger than the {} byte limit", self.limit)
    }
}

impl Error for BodyTooLarge {}

/// A transport-level failure talking to a provider (connect refused, reset, TLS),
/// tagged with its [`FailureKind`] so classifiers need not guess from text.
#[derive(Debug)]
pub struct TransportError {
    kind: FailureKind,
    source: tower::BoxError,
}

impl TransportError {
    /// Wraps a transport error of `kind`.
    pub fn new(kind: FailureKind, source: impl Into<tower::BoxError>) -> Self {
        TransportError {
            kind,
            source: source.into(),
        }
    }

    /// What kind of failure.
    pub fn kind(&self) -> FailureKind {
        self.kind
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "transport error ({}): {}", self.kind, self.source)
    }
}

impl Error for TransportError {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// One attempt made while serving a request, as reported in [`AllProvidersFailed`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Attempt {
    /// Which provider was tried.
    pub provider: ProviderId,
    /// What came of it.
    pub outcome: Outcome,
    /// How long it took.
    #[serde(with = "crate::duration_serde")]
    pub latency: Duration,
    /// The error's `Display`, if the attempt ended in an error.
    pub error: Option<String>,
    /// The answer, when it was rejected for its content ([`Invalid::answer`]).
    #[serde(skip)]
    answer: Option<RejectedAnswer>,
}

impl Attempt {
    /// Records an attempt.
    pub fn new(provider: ProviderId, outcome: Outcome, latency: Duration) -> Self {
        Attempt {
            provider,
            outcome,
            latency,
            error: None,
            answer: None,
        }
    }

    /// Adds the error message.
    pub fn with_error(mut self, error: &dyn fmt::Display) -> Self {
        self.error = Some(error.to_string());
        self
    }

    /// Adds the error's message and, when it rejected an answer for its content,
    /// that answer ([`Invalid::answer`]).
    pub fn with_error_of(self, error: &(dyn Error + 'static)) -> Self {
        let mut attempt = self.with_error(&error);
        attempt.answer = find::<Invalid>(error).and_then(Invalid::answer).cloned();
        attempt
    }

    /// The answer, when it was rejected for its content.
    pub fn answer(&self) -> Option<&RejectedAnswer> {
        self.answer.as_ref()
    }
}

impl fmt::Display for Attempt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} after {} ms",
            self.provider,
            self.outcome,
            self.latency.as_millis()
        )
    }
}

/// No provider could serve the request. Lists every attempt and, when known, how long
/// until the earliest one is expected to recover.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllProvidersFailed {
    attempts: Vec<Attempt>,
    retry_after: Option<Duration>,
    reason: Option<&'static str>,
}

impl AllProvidersFailed {
    /// Every provider failed; `attempts` lists what was tried (possibly nothing, when
    /// every provider was known to be unavailable).
    pub fn new(attempts: Vec<Attempt>) -> Self {
        AllProvidersFailed {
            attempts,
            retry_after: None,
            reason: None,
        }
    }

    /// Sets the hint of when to retry: the earliest known recovery.
    pub fn with_retry_after(mut self, retry_after: Option<Duration>) -> Self {
        self.retry_after = retry_after;
        self
    }

    /// Says why no further attempt was made (for example `"retry budget exhausted"`).
    pub fn with_reason(mut self, reason: &'static str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Every attempt, in order.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }

    /// When to retry, if known.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// Why no further attempt was made, if a specific reason applies.
    pub fn reason(&self) -> Option<&'static str> {
        self.reason
    }

    /// The answer to give the caller instead of this error: when every provider
    /// that was asked answered and every answer was rejected for its content (a
    /// refusal every model gives, an empty answer, a schema none of them meets),
    /// the last of those answers. Asking again would get the same, and an error
    /// would make the caller's SDK retry it, each time paid for. `None` when any
    /// asked provider failed otherwise (later may work) or none was asked.
    /// Attempts that never reached a provider (shed, or refused as unsupported)
    /// are not counted.
    pub fn answer(&self) -> Option<&RejectedAnswer> {
        let mut last = None;
        for a in &self.attempts {
            let asked = !a.outcome.is_unsupported()
                && !matches!(
                    a.outcome,
                    Outcome::Rejected {
                        kind: RejectKind::Shed
                    }
                );
            if asked {
                if !matches!(a.outcome, Outcome::Rejected { .. }) {
                    return None;
                }
                last = Some(a.answer.as_ref()?);
            }
        }
        last
    }
}

impl fmt::Display for AllProvidersFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "all providers failed")?;
        if let Some(reason) = self.reason {
            write!(f, " ({reason})")?;
        }
        if self.attempts.is_empty() {
            f.write_str(": none available")?;
        }
        for (i, a) in self.attempts.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{a}")?;
        }
        if let Some(d) = self.retry_after {
            write!(f, "; retry after {} ms", d.as_millis())?;
        }
        Ok(())
    }
}

impl Error for AllProvidersFailed {}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::BoxError;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(&*self.0)
        }
    }

    #[test]
    fn find_walks_the_chain() {
        let err: BoxError = Box::new(Wrapper(Box::new(CircuitOpen::new(Duration::from_secs(3)))));
        assert_eq!(
            find::<CircuitOpen>(&*err).unwrap().retry_in(),
            Duration::from_secs(3)
        );
        assert!(find::<Shed>(&*err).is_none());
    }

    #[test]
    fn displays_are_stable() {
        let p = ProviderId::new("openai", "gpt-4o");
        let cases: Vec<(Box<dyn Error>, &str)> = vec![
            (
                Box::new(CircuitOpen::new(Duration::from_millis(1500)).with_provider(p.clone())),
                "openai/gpt-4o: circuit open (retry in 1500 ms)",
            ),
            (Box::new(RateLimited::new(None)), "rate limited"),
            (
                Box::new(RateLimited::new(Some(Duration::from_secs(2)))),
                "rate limited (retry after 2000 ms)",
            ),
            (Box::new(Shed::new("ramp")), "request shed (ramp)"),
            (
                Box::new(Invalid::new(
                    RejectKind::InvalidJson,
                    "expected value at line 1",
                )),
                "invalid response (invalid json)",
            ),
            (
                Box::new(Elapsed::new(TimeoutKind::Total, Duration::from_secs(30))),
                "total timeout after 30000 ms",
            ),
            (
                Box::new(BodyTooLarge::new(1024)),
                "request body larger than the 1024 byte limit",
            ),
            (
                Box::new(TruncatedStream::new("no [DONE]")),
                "stream truncated: no [DONE]",
            ),
            (
                Box::new(AllProvidersFailed::new(vec![])),
                "all providers failed: none available",
            ),
            (
                Box::new(
                    AllProvidersFailed::new(vec![
                        Attempt::new(
                            p.clone(),
                            Outcome::failure(FailureKind::Status(503)),
                            Duration::from_millis(12),
                        ),
                        Attempt::new(
                            ProviderId::new("anthropic", "claude"),
                            Outcome::RateLimited { retry_after: None },
                            Duration::from_millis(3),
                        ),
                    ])
                    .with_retry_after(Some(Duration::from_secs(4))),
                ),
                "all providers failed: openai/gpt-4o: failure (status 503) after 12 ms; \
                 anthropic/claude: rate limited after 3 ms; retry after 4000 ms",
            ),
        ];
        for (err, want) in cases {
            assert_eq!(err.to_string(), want);
        }
    }

    #[test]
    fn invalid_detail_is_bounded() {
        let e = Invalid::new(RejectKind::Shape, "é".repeat(500));
        assert!(e.detail().len() <= 204);
    }

    #[test]
    fn invalid_keeps_provider_text_out_of_display_and_debug() {
        let text = "Incorrect API key provided: sk-live-abc123";
        let e = Invalid::new(RejectKind::ErrorObject, text)
            .with_provider(ProviderId::new("openai", "gpt-4o"));
        assert_eq!(e.detail(), text);
        let shown = [e.to_string(), format!("{e:?}")];
        for s in &shown {
            assert!(!s.contains("sk-live") && !s.contains("Incorrect"), "{s}");
        }
        assert_eq!(
            shown[0],
            "openai/gpt-4o: invalid response (error object in a success response)"
        );
        let all = AllProvidersFailed::new(vec![
            Attempt::new(
                ProviderId::new("openai", "gpt-4o"),
                Outcome::rejected(RejectKind::ErrorObject),
                Duration::from_millis(3),
            )
            .with_error(&e),
        ]);
        assert!(!all.to_string().contains("sk-live"));
        assert!(!format!("{all:?}").contains("sk-live"));
    }

    #[test]
    fn the_answer_is_given_only_when_every_asked_provider_answered_and_was_rejected() {
        let body = bytes::Bytes::from_static(
            br#"{"choices":[{"message":{"content":"I'm sorry, but I can't help with that."}}]}"#,
        );
        let id = |n: &str| ProviderId::new(n, "m");
        let ms = Duration::from_millis(1);
        let refused = |n: &str, b: &bytes::Bytes| {
            let e: BoxError = Invalid::new(RejectKind::Refusal, "refused")
                .with_answer(b.clone())
                .into();
            Attempt::new(id(n), Outcome::rejected(RejectKind::Refusal), ms).with_error_of(&*e)
        };
        let other = bytes::Bytes::from_static(b"{}");
        let two = AllProvidersFailed::new(vec![refused("a", &other), refused("b", &body)]);
        assert_eq!(two.answer().map(|a| a.body()), Some(&body), "the last");
        assert_eq!(two.answer().map(|a| a.kind()), Some(RejectKind::Refusal));
        // Attempts that never reached a provider do not count.
        let shed = Attempt::new(id("c"), Outcome::rejected(RejectKind::Shed), ms);
        let unsupported = Attempt::new(
            id("d"),
            Outcome::ClientError {
                kind: crate::outcome::ClientErrorKind::Unsupported,
            },
            ms,
        );
        let skipped = AllProvidersFailed::new(vec![shed.clone(), refused("b", &body), unsupported]);
        assert_eq!(skipped.answer().map(|a| a.body()), Some(&body));
        // A provider that failed otherwise, or none asked: no answer.
        let down = Attempt::new(id("e"), Outcome::failure(FailureKind::Status(503)), ms);
        assert!(
            AllProvidersFailed::new(vec![down, refused("b", &body)])
                .answer()
                .is_none()
        );
        assert!(AllProvidersFailed::new(vec![shed]).answer().is_none());
        assert!(AllProvidersFailed::new(vec![]).answer().is_none());
        // A malformed answer is never kept, and Debug shows only the length.
        let broken: BoxError = Invalid::new(RejectKind::InvalidJson, "cut")
            .with_answer(body.clone())
            .into();
        let a = Attempt::new(id("f"), Outcome::rejected(RejectKind::InvalidJson), ms)
            .with_error_of(&*broken);
        assert!(a.answer().is_none());
        assert!(AllProvidersFailed::new(vec![a]).answer().is_none());
        assert!(!format!("{two:?}").contains("sorry"), "{two:?}");
    }
}
