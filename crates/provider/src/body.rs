//! The response body of every adapter: buffered JSON, or a stream passed through
//! or translated event by event, under the first-byte, idle and total deadlines.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};
use tower_failover_core::error::{Elapsed, Invalid, TimeoutKind, TruncatedStream};
use tower_failover_core::sse::{SseEvent, SseParser};
use tower_failover_core::{BoxError, ProviderId};

use crate::error::body_error;
use crate::translate::anthropic::StreamTranslator;
use crate::translate::openai::StreamScan;
use crate::usage::UsageSink;

/// The response body of the adapters.
///
/// A JSON answer (and every error answer) is read whole and held as [`Bytes`], so
/// its usage can be attached to the response before it is returned. A streamed
/// answer (`text/event-stream`) is passed on chunk by chunk as it arrives, or
/// translated chunk by chunk for Anthropic; it fails with
/// [`TruncatedStream`] if it ends early, with
/// [`TransportError`](tower_failover_core::error::TransportError) if the connection
/// breaks, and with [`Elapsed`] if a deadline passes mid-stream. A stream that goes
/// silent for longer than the idle timeout
/// ([`Timeouts::idle`](crate::Timeouts::idle)) between two chunks ends with a
/// [`TruncatedStream`] whose source is an [`Elapsed`] of kind
/// [`Idle`](TimeoutKind::Idle): the caller sees the typed truncation, and the
/// provider's health counts a timeout.
pub struct ResponseBody {
    kind: Kind,
}

enum Kind {
    Full(Option<Bytes>),
    Stream(Box<StreamBody>),
}

impl ResponseBody {
    /// A complete body.
    pub fn full(data: impl Into<Bytes>) -> Self {
        let data = data.into();
        ResponseBody {
            kind: Kind::Full((!data.is_empty()).then_some(data)),
        }
    }

    /// An empty body.
    pub fn empty() -> Self {
        ResponseBody {
            kind: Kind::Full(None),
        }
    }

    /// Whether this body is a stream (as opposed to buffered bytes).
    pub fn is_stream(&self) -> bool {
        matches!(self.kind, Kind::Stream(_))
    }

    pub(crate) fn stream(inner: StreamBody) -> Self {
        ResponseBody {
            kind: Kind::Stream(Box::new(inner)),
        }
    }
}

impl Default for ResponseBody {
    fn default() -> Self {
        ResponseBody::empty()
    }
}

impl fmt::Debug for ResponseBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Full(d) => f
                .debug_struct("ResponseBody")
                .field("len", &d.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Stream(s) => f
                .debug_struct("ResponseBody")
                .field("stream", &s.mode.name())
                .field("done", &s.done)
                .finish(),
        }
    }
}

impl From<Bytes> for ResponseBody {
    fn from(data: Bytes) -> Self {
        ResponseBody::full(data)
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match &mut self.get_mut().kind {
            Kind::Full(data) => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            Kind::Stream(s) => s.poll(cx),
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(d) => d.is_none(),
            Kind::Stream(s) => s.done && s.out.is_empty(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(d) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            Kind::Stream(_) => SizeHint::default(),
        }
    }
}

/// The deadlines of one attempt, from when its request was sent, and the whole
/// request's [`Deadline`](tower_failover_core::Deadline) if the caller set one.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadlines {
    pub(crate) start: Instant,
    pub(crate) first_byte: Duration,
    pub(crate) total: Duration,
    /// The longest gap allowed between two body chunks once bytes flow.
    pub(crate) idle: Duration,
    pub(crate) request: Option<Instant>,
    /// A streamed answer: its headers may come before the model has thought of
    /// its first token, so the gap from them to the first byte is not idleness.
    pub(crate) streamed: bool,
}

impl Deadlines {
    fn at(&self, d: Duration) -> Instant {
        self.start
            .checked_add(d)
            .unwrap_or_else(|| self.start + Duration::from_secs(86_400 * 365))
    }

    /// The deadline that applies before the first body byte, and its error.
    pub(crate) fn before_first_byte(&self) -> (Instant, Elapsed) {
        let (at, elapsed) = if self.first_byte < self.total {
            (
                self.at(self.first_byte),
                Elapsed::new(TimeoutKind::FirstByte, self.first_byte),
            )
        } else {
            (
                self.at(self.total),
                Elapsed::new(TimeoutKind::Attempt, self.total),
            )
        };
        self.or_request(at, elapsed)
    }

    /// The deadline of the first body byte once the response headers came `now`:
    /// the first-byte deadline, or, for a non-streamed answer, the idle timeout
    /// counted from the headers if it comes first (a whole answer whose headers
    /// arrived and whose body then never starts has gone silent, like one that
    /// stops half-way: it ends at the idle timeout instead of 120 s). `true` when
    /// it is the idle timeout. A stream's first byte keeps its own deadline: its
    /// headers may come at once and its first token only after the model has
    /// thought (a reasoning model, for tens of seconds).
    pub(crate) fn after_headers(&self, now: Instant) -> (Instant, Elapsed, bool) {
        let (at, elapsed) = self.before_first_byte();
        if self.streamed {
            return (at, elapsed, false);
        }
        match now.checked_add(self.idle) {
            Some(idle_at) if idle_at < at => {
                (idle_at, Elapsed::new(TimeoutKind::Idle, self.idle), true)
            }
            _ => (at, elapsed, false),
        }
    }

    /// The deadline that applies once bytes flow, and its error.
    pub(crate) fn after_first_byte(&self) -> (Instant, Elapsed) {
        self.or_request(
            self.at(self.total),
            Elapsed::new(TimeoutKind::Attempt, self.total),
        )
    }

    /// The deadline of the next chunk after one that came `now`: the idle timeout,
    /// unless the attempt's (or the request's) deadline comes first. `true` when it
    /// is the idle timeout.
    pub(crate) fn next_chunk(&self, now: Instant) -> (Instant, Elapsed, bool) {
        let (at, elapsed) = self.after_first_byte();
        match now.checked_add(self.idle) {
            Some(idle_at) if idle_at < at => {
                (idle_at, Elapsed::new(TimeoutKind::Idle, self.idle), true)
            }
            _ => (at, elapsed, false),
        }
    }

    /// The request's own deadline when it comes first.
    fn or_request(&self, at: Instant, elapsed: Elapsed) -> (Instant, Elapsed) {
        match self.request {
            Some(r) if r < at => (
                r,
                Elapsed::new(TimeoutKind::Total, r.saturating_duration_since(self.start)),
            ),
            _ => (at, elapsed),
        }
    }
}

/// What reading a whole body gave.
pub(crate) enum Collected {
    /// All of it.
    Complete(Bytes),
    /// More than the limit: the first `limit` bytes; the rest was not read.
    TooLarge(Bytes),
}

/// Reads a body whole, up to `limit` bytes, under the deadlines.
pub(crate) async fn collect(
    mut body: Incoming,
    limit: usize,
    deadlines: Deadlines,
) -> Result<Collected, BoxError> {
    let mut first: Option<Bytes> = None;
    let mut buf = BytesMut::new();
    let headers_at = Instant::now();
    loop {
        let got_any = first.is_some();
        // A body that stops half-way (or never starts after its headers) ends at
        // the idle timeout, not at the attempt's whole deadline.
        let (deadline, elapsed, _) = if got_any {
            deadlines.next_chunk(Instant::now())
        } else {
            deadlines.after_headers(headers_at)
        };
        let frame = match tokio::time::timeout_at(deadline, body.frame()).await {
            Err(_) => return Err(elapsed.into()),
            Ok(None) => break,
            Ok(Some(Err(e))) => return Err(body_error(e)),
            Ok(Some(Ok(frame))) => frame,
        };
        let Ok(data) = frame.into_data() else {
            continue; // trailers
        };
        if data.is_empty() {
            continue;
        }
        let have = first.as_ref().map_or(0, Bytes::len) + buf.len();
        if have + data.len() > limit {
            let mut prefix = BytesMut::with_capacity(limit);
            if let Some(f) = first.take() {
                prefix.extend_from_slice(&f);
            }
            prefix.extend_from_slice(&buf);
            prefix.extend_from_slice(&data[..limit - have]);
            return Ok(Collected::TooLarge(prefix.freeze()));
        }
        match &first {
            // Most JSON answers arrive in one frame: keep it without copying.
            None => first = Some(data),
            Some(f) => {
                if buf.is_empty() {
                    buf.extend_from_slice(f);
                }
                buf.extend_from_slice(&data);
            }
        }
    }
    Ok(Collected::Complete(if buf.is_empty() {
        first.unwrap_or_default()
    } else {
        buf.freeze()
    }))
}

/// How a stream is handled.
pub(crate) enum Mode {
    /// Forwarded as it is; no parsing.
    Raw,
    /// Forwarded as it is, watched for usage and (if `expect_done`) for
    /// `data: [DONE]`.
    Watch {
        parser: SseParser,
        scan: StreamScan,
        expect_done: bool,
    },
    /// Anthropic translated into OpenAI chunks.
    Translate(StreamTranslator),
}

impl Mode {
    fn name(&self) -> &'static str {
        match self {
            Mode::Raw => "raw",
            Mode::Watch { .. } => "watch",
            Mode::Translate(_) => "translate",
        }
    }
}

/// The one timer of a stream in flight: the deadline of its first byte, then the
/// idle timeout between chunks (capped by the attempt's and the request's deadlines).
///
/// The idle timeout is re-armed lazily. A chunk only notes when it came (one clock
/// read); the sleep is left where it is, and only when it fires is the deadline
/// worked out again from the latest chunk: if it has moved on, the sleep is re-armed
/// for it, otherwise the stream really has been silent that long. Resetting the
/// sleep on every chunk moved the driver's timer entry each time (about 250
/// instructions a chunk, counted through the gateway: issue 19); this way a steady
/// stream re-arms about once per idle timeout, and the deadline that
/// ends a silent stream is the same instant as before (the latest chunk's time plus
/// the idle timeout, or the attempt's or request's deadline if sooner).
struct StreamTimer {
    deadlines: Deadlines,
    sleep: Pin<Box<Sleep>>,
    /// When the latest chunk came; `None` before the first one.
    last_chunk: Option<Instant>,
    /// Before the first chunk: the sleep is the idle timeout counted from the
    /// response headers (rather than the first-byte deadline).
    idle_first: bool,
}

impl StreamTimer {
    /// The timer of a stream whose response headers came `now`.
    fn new(deadlines: Deadlines, now: Instant) -> Self {
        let (deadline, _, idle_first) = deadlines.after_headers(now);
        StreamTimer {
            deadlines,
            sleep: Box::pin(tokio::time::sleep_until(deadline)),
            last_chunk: None,
            idle_first,
        }
    }

    /// A chunk came: only its time is noted (see the type's documentation), but
    /// for the first one. From the first byte on the idle timeout applies, which
    /// may end sooner than the deadline armed at the headers (a stream's first-byte
    /// deadline is not cut short by the idle timeout, so it can be far later): the
    /// sleep is brought forward once, and every later deadline is no earlier than
    /// the one armed, as the lazy re-arming needs.
    fn chunk(&mut self) {
        let now = Instant::now();
        if self.last_chunk.is_none() {
            let (deadline, _, _) = self.deadlines.next_chunk(now);
            if deadline < self.sleep.deadline() {
                self.sleep.as_mut().reset(deadline);
            }
        }
        self.last_chunk = Some(now);
    }

    /// Ready when a deadline has passed, with its error and `true` if it is the idle
    /// timeout; re-arms the sleep (and stays pending) when it fired early because
    /// chunks came since it was armed.
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> Poll<(Elapsed, bool)> {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            let Some(last) = self.last_chunk else {
                // No chunk yet: the deadline armed from the headers stands.
                return Poll::Ready(if self.idle_first {
                    (Elapsed::new(TimeoutKind::Idle, self.deadlines.idle), true)
                } else {
                    (self.deadlines.before_first_byte().1, false)
                });
            };
            // The deadline the latest chunk set. It is never earlier than the one
            // armed (those of earlier chunks, or of the headers, which are all
            // capped by the same deadlines); equal means no chunk since.
            let (deadline, elapsed, idle) = self.deadlines.next_chunk(last);
            if deadline <= self.sleep.deadline() {
                return Poll::Ready((elapsed, idle));
            }
            // Polled again at once: a deadline already past fires at once.
            self.sleep.as_mut().reset(deadline);
        }
    }
}

/// A streamed response body in flight.
pub(crate) struct StreamBody {
    incoming: Incoming,
    mode: Mode,
    timer: StreamTimer,
    /// Translated bytes not yet handed out.
    out: Vec<u8>,
    sink: UsageSink,
    provider: ProviderId,
    recorded: bool,
    done: bool,
}

impl StreamBody {
    pub(crate) fn new(
        incoming: Incoming,
        mode: Mode,
        deadlines: Deadlines,
        sink: UsageSink,
        provider: ProviderId,
    ) -> Self {
        StreamBody {
            incoming,
            mode,
            timer: StreamTimer::new(deadlines, Instant::now()),
            out: Vec::new(),
            sink,
            provider,
            recorded: false,
            done: false,
        }
    }

    fn fail(&mut self, err: BoxError) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.done = true;
        self.out.clear();
        Poll::Ready(Some(Err(err)))
    }

    fn record(&mut self) {
        if self.recorded {
            return;
        }
        let counts = match &self.mode {
            Mode::Raw => None,
            Mode::Watch { scan, .. } => scan
                .usage
                .map(|u| (u.prompt_tokens, u.completion_tokens, u.cached_tokens, 0)),
            Mode::Translate(t) => t.usage().map(|u| {
                (
                    u.prompt_tokens,
                    u.completion_tokens,
                    u.cache_read_tokens,
                    u.cache_write_tokens,
                )
            }),
        };
        if let Some((prompt, completion, read, write)) = counts {
            self.recorded = true;
            self.sink.record(prompt, completion, read, write);
        }
    }

    fn take_out(&mut self) -> Option<Bytes> {
        (!self.out.is_empty()).then(|| Bytes::from(std::mem::take(&mut self.out)))
    }

    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        loop {
            if let Some(data) = self.take_out() {
                return Poll::Ready(Some(Ok(Frame::data(data))));
            }
            if self.done {
                return Poll::Ready(None);
            }
            if let Poll::Ready((elapsed, idle)) = self.timer.poll_expired(cx) {
                if idle {
                    // The stream went silent: it ends now, with the typed truncation
                    // error (a timeout for health), not at the caller's deadline.
                    let idle = self.timer.deadlines.idle;
                    tracing::debug!(provider = %self.provider, ?idle, "stream idle timeout");
                    let err = TruncatedStream::new(format!("no data for {idle:?} (idle timeout)"))
                        .with_timeout(elapsed)
                        .with_provider(self.provider.clone());
                    return self.fail(err.into());
                }
                tracing::debug!(provider = %self.provider, error = %elapsed, "stream deadline passed");
                return self.fail(elapsed.into());
            }
            let frame = match Pin::new(&mut self.incoming).poll_frame(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(frame) => frame,
            };
            match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else {
                        continue; // trailers
                    };
                    if data.is_empty() {
                        continue;
                    }
                    // Every chunk moves the idle timeout on (lazily: `StreamTimer`).
                    self.timer.chunk();
                    match &mut self.mode {
                        Mode::Raw => return Poll::Ready(Some(Ok(Frame::data(data)))),
                        Mode::Watch { parser, scan, .. } => {
                            let res = parser.feed(&data, &mut |ev: SseEvent<'_>| {
                                scan.event(ev.data);
                                Ok::<_, Invalid>(())
                            });
                            if let Err(e) = res {
                                return self.fail(e.with_provider(self.provider.clone()).into());
                            }
                            if scan.done {
                                self.record();
                            }
                            return Poll::Ready(Some(Ok(Frame::data(data))));
                        }
                        Mode::Translate(t) => {
                            if let Err(e) = t.push(&data, &mut self.out) {
                                return self.fail(e);
                            }
                            if t.is_complete() {
                                self.record();
                            }
                        }
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(provider = %self.provider, error = %e, "stream broke");
                    return self.fail(body_error(e));
                }
                None => {
                    self.done = true;
                    let res: Result<(), BoxError> = match &mut self.mode {
                        Mode::Raw => Ok(()),
                        Mode::Watch {
                            parser,
                            scan,
                            expect_done,
                        } => {
                            let res = parser.finish(&mut |ev: SseEvent<'_>| {
                                scan.event(ev.data);
                                Ok::<_, Invalid>(())
                            });
                            match res {
                                Err(e) => Err(e.into()),
                                Ok(()) if *expect_done && !scan.done => {
                                    Err(TruncatedStream::new("stream ended before data: [DONE]")
                                        .with_provider(self.provider.clone())
                                        .into())
                                }
                                Ok(()) => Ok(()),
                            }
                        }
                        Mode::Translate(t) => t.finish(&mut self.out),
                    };
                    if let Err(e) = res {
                        tracing::debug!(provider = %self.provider, error = %e, "stream ended early");
                        return self.fail(e);
                    }
                    self.record();
                }
            }
        }
    }
}

impl Drop for StreamBody {
    fn drop(&mut self) {
        // A stream dropped or broken midway still cost what was generated so far.
        self.record();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(1);

    fn deadlines(first_byte: Duration, total: Duration) -> Deadlines {
        Deadlines {
            start: Instant::now(),
            first_byte,
            total,
            idle: IDLE,
            request: None,
            streamed: false,
        }
    }

    /// Waits `gap` and notes a chunk then, failing if the timer expires first.
    async fn chunk_after(timer: &mut StreamTimer, gap: Duration) {
        tokio::select! {
            biased;
            (elapsed, _) = std::future::poll_fn(|cx| timer.poll_expired(cx)) => {
                panic!("expired {elapsed} while chunks came every {gap:?}")
            }
            () = tokio::time::sleep(gap) => timer.chunk(),
        }
    }

    async fn expired(timer: &mut StreamTimer) -> (Elapsed, bool) {
        std::future::poll_fn(|cx| timer.poll_expired(cx)).await
    }

    /// Chunks every 0.6 × the idle timeout, for 30 idle timeouts, never time out
    /// (the lazily re-armed sleep fires early and moves on each time); then silence
    /// ends the stream one idle timeout after the last chunk, as the idle timeout.
    #[tokio::test(start_paused = true)]
    async fn a_steady_stream_never_idles_out_and_a_silent_one_does() {
        let d = deadlines(Duration::from_secs(10), Duration::from_secs(600));
        let mut timer = StreamTimer::new(d, Instant::now());
        for _ in 0..50 {
            chunk_after(&mut timer, IDLE.mul_f64(0.6)).await;
        }
        let last = Instant::now();
        let (elapsed, idle) = expired(&mut timer).await;
        assert!(idle);
        assert_eq!(elapsed, Elapsed::new(TimeoutKind::Idle, IDLE));
        assert_at(Instant::now() - last, IDLE);
    }

    /// `took` is `want`, to the timer wheel's millisecond.
    fn assert_at(took: Duration, want: Duration) {
        assert!(
            took >= want && took < want + Duration::from_millis(2),
            "{took:?}, wanted {want:?}"
        );
    }

    /// A silent gap is measured from the latest chunk, not from when the sleep was
    /// last armed: chunks at 0.3 and 0.9 × the timeout, then silence, end at 1.9.
    #[tokio::test(start_paused = true)]
    async fn the_idle_timeout_counts_from_the_latest_chunk() {
        let d = deadlines(Duration::from_secs(10), Duration::from_secs(600));
        let mut timer = StreamTimer::new(d, Instant::now());
        chunk_after(&mut timer, IDLE.mul_f64(0.3)).await;
        chunk_after(&mut timer, IDLE.mul_f64(0.6)).await;
        let (_, idle) = expired(&mut timer).await;
        assert!(idle);
        assert_at(Instant::now() - d.start, IDLE.mul_f64(1.9));
    }

    /// A timer polled only long after its deadline (the reader was away) expires at
    /// once, as an idle timeout, like the sleep reset on the latest chunk would have.
    #[tokio::test(start_paused = true)]
    async fn a_deadline_passed_while_nobody_polled_expires_at_once() {
        let d = deadlines(Duration::from_secs(10), Duration::from_secs(600));
        let mut timer = StreamTimer::new(d, Instant::now());
        chunk_after(&mut timer, IDLE.mul_f64(0.5)).await;
        chunk_after(&mut timer, IDLE.mul_f64(0.5)).await;
        tokio::time::sleep(IDLE * 3).await;
        let before = Instant::now();
        let (_, idle) = expired(&mut timer).await;
        assert!(idle);
        assert_eq!(Instant::now(), before);
    }

    /// Before any chunk the first-byte deadline stands; once chunks flow, the
    /// attempt's deadline caps the idle timeout, with its own error.
    #[tokio::test(start_paused = true)]
    async fn the_first_byte_and_attempt_deadlines_still_apply() {
        let d = deadlines(Duration::from_millis(500), Duration::from_secs(5));
        let mut timer = StreamTimer::new(d, Instant::now());
        let (elapsed, idle) = expired(&mut timer).await;
        assert!(!idle);
        assert_eq!(elapsed.kind(), TimeoutKind::FirstByte);
        assert_eq!(Instant::now() - d.start, Duration::from_millis(500));

        let d = deadlines(Duration::from_secs(2), Duration::from_secs(5));
        let mut timer = StreamTimer::new(d, Instant::now());
        while Instant::now() - d.start < Duration::from_millis(4500) {
            chunk_after(&mut timer, IDLE.mul_f64(0.6)).await;
        }
        let (elapsed, idle) = expired(&mut timer).await;
        assert!(!idle);
        assert_eq!(
            elapsed,
            Elapsed::new(TimeoutKind::Attempt, Duration::from_secs(5))
        );
        assert_eq!(Instant::now() - d.start, Duration::from_secs(5));
    }

    /// A stream's headers do not start the idle timeout (a reasoning model may
    /// think long after them): silence after them ends at the first-byte deadline.
    /// But once its first byte comes, the idle timeout counts from it, however far
    /// away the first-byte deadline armed at the headers was.
    #[tokio::test(start_paused = true)]
    async fn a_streams_first_byte_keeps_its_deadline_then_idles_out_from_it() {
        let stream = Deadlines {
            streamed: true,
            ..deadlines(Duration::from_secs(60), Duration::from_secs(600))
        };
        let mut timer = StreamTimer::new(stream, Instant::now());
        let (elapsed, idle) = expired(&mut timer).await;
        assert!(!idle);
        assert_eq!(elapsed.kind(), TimeoutKind::FirstByte);
        assert_eq!(Instant::now() - stream.start, Duration::from_secs(60));

        let stream = Deadlines {
            start: Instant::now(),
            ..stream
        };
        let mut timer = StreamTimer::new(stream, Instant::now());
        chunk_after(&mut timer, Duration::from_secs(20)).await;
        let first = Instant::now();
        let (elapsed, idle) = expired(&mut timer).await;
        assert!(idle);
        assert_eq!(elapsed, Elapsed::new(TimeoutKind::Idle, IDLE));
        assert_at(Instant::now() - first, IDLE);
    }

    /// Headers, then silence: the idle timeout counted from the headers ends the
    /// stream when it comes before the first-byte deadline.
    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_starts_idles_out_from_the_headers() {
        let d = deadlines(Duration::from_secs(10), Duration::from_secs(600));
        let mut timer = StreamTimer::new(d, Instant::now());
        let (elapsed, idle) = expired(&mut timer).await;
        assert!(idle);
        assert_eq!(elapsed, Elapsed::new(TimeoutKind::Idle, IDLE));
        assert_eq!(Instant::now() - d.start, IDLE);
    }
}
