//! The one incremental parser for server-sent events (`text/event-stream`) that every
//! crate of the workspace reads streams with.
//!
//! [`SseParser`] follows the WHATWG event-stream rules: lines end with CRLF, LF or a
//! lone CR (also when the CR and the LF arrive in different chunks, with empty chunks
//! between them); a line starting with `:` is a comment; `data:` lines of one event
//! are joined with `\n`; a blank line dispatches the event, and a block without any
//! `data` line dispatches nothing; `id:` persists from event to event, `retry:` counts
//! only when it is all digits; one leading UTF-8 byte-order mark is skipped.
//!
//! It is fed whatever chunks the network produces, split anywhere (inside a line,
//! inside a CRLF, inside a multi-byte character), and hands out the same events as if
//! the whole stream had arrived at once. Events are handed to a callback as
//! [`SseEvent`]s that borrow from the parser or, when an event's single `data:` line
//! lies whole in the chunk being fed (the usual case for LLM streams), from the chunk
//! itself: nothing is copied or allocated per event. Only a line cut by a chunk
//! boundary is copied, into a buffer the parser keeps.
//!
//! Memory is bounded: a line longer than [`SseLimits::max_line`] or an event whose
//! data exceeds [`SseLimits::max_event`] is a typed [`SseError`], after which the
//! parser refuses further input with the same error.
//!
//! At the end of the stream, an event still open (no blank line after it) is
//! discarded by the standard; [`SseParser::has_partial`] tells you there was one, and
//! [`SseParser::finish`] dispatches it instead, for readers that would rather
//! translate a last event that lacked its blank line.
//!
//! ```
//! use tower_failover_core::sse::{SseError, SseParser};
//!
//! let mut parser = SseParser::new();
//! let mut events = Vec::new();
//! let mut on_event = |ev: tower_failover_core::sse::SseEvent<'_>| {
//!     events.push((ev.event_type().to_owned(), ev.data_str().into_owned()));
//!     Ok::<_, SseError>(())
//! };
//! parser.feed(b"event: ping\r\ndata: {\"a\"", &mut on_event)?;
//! parser.feed(b":1}\r", &mut on_event)?;
//! parser.feed(b"\n: a comment\n\ndata: [DONE]\n\n", &mut on_event)?;
//! assert_eq!(events, [
//!     ("ping".to_owned(), "{\"a\":1}".to_owned()),
//!     ("message".to_owned(), "[DONE]".to_owned()),
//! ]);
//! # Ok::<(), SseError>(())
//! ```

use std::borrow::Cow;
use std::fmt;

use crate::RejectKind;
use crate::error::Invalid;

/// One dispatched event, borrowed from the parser or from the chunk being fed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, or `""` when the block had none (the standard's type is
    /// then `message`: see [`SseEvent::event_type`]). Invalid UTF-8 is replaced by
    /// U+FFFD.
    pub event: &'a str,
    /// The `data:` lines joined with `\n`, as bytes (see [`SseEvent::data_str`]).
    pub data: &'a [u8],
    /// The last event ID seen so far in the stream (it persists across events, as
    /// the standard says), if any `id:` field has been set.
    pub id: Option<&'a str>,
    /// The `retry:` field of this block, if it was a number of milliseconds
    /// (absurdly long numbers saturate).
    pub retry: Option<u64>,
}

impl<'a> SseEvent<'a> {
    /// The event type: the `event:` field, or `"message"` when there was none.
    pub fn event_type(&self) -> &'a str {
        if self.event.is_empty() {
            "message"
        } else {
            self.event
        }
    }

    /// The data as text, invalid UTF-8 replaced by U+FFFD (borrowed when valid).
    pub fn data_str(&self) -> Cow<'a, str> {
        // The strict check reads ASCII a word at a time; the lossy one walks byte by
        // byte (about 13 instructions a byte: 2,000 for a typical chunk), so it is
        // kept for data that is not valid UTF-8.
        match std::str::from_utf8(self.data) {
            Ok(text) => Cow::Borrowed(text),
            Err(_) => String::from_utf8_lossy(self.data),
        }
    }
}

/// Bounds on what one parser holds in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseLimits {
    /// The longest line accepted, in bytes, without its terminator. Default: 256 KiB.
    pub max_line: usize,
    /// The most data one event may carry, in bytes. Default: 1 MiB.
    pub max_event: usize,
}

impl SseLimits {
    /// Lines and events both bounded by `bytes`.
    pub const fn both(bytes: usize) -> Self {
        SseLimits {
            max_line: bytes,
            max_event: bytes,
        }
    }
}

impl Default for SseLimits {
    fn default() -> Self {
        SseLimits {
            max_line: 256 * 1024,
            max_event: 1024 * 1024,
        }
    }
}

/// Why the parser gave up on a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum SseError {
    /// A line was longer than [`SseLimits::max_line`].
    LineTooLong {
        /// The limit in bytes.
        limit: usize,
    },
    /// An event's data was larger than [`SseLimits::max_event`].
    EventTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
}

impl fmt::Display for SseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SseError::LineTooLong { limit } => {
                write!(f, "server-sent event line longer than {limit} bytes")
            }
            SseError::EventTooLarge { limit } => {
                write!(f, "server-sent event data larger than {limit} bytes")
            }
        }
    }
}

impl std::error::Error for SseError {}

/// A stream the parser refused is invalid output of kind [`RejectKind::Shape`].
impl From<SseError> for Invalid {
    fn from(e: SseError) -> Self {
        Invalid::new(RejectKind::Shape, e.to_string())
    }
}

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Buffers grown past this by one large line or event are released after use, so
/// a single burst does not pin its memory for the rest of a long stream.
const KEEP_CAPACITY: usize = 64 * 1024;

/// An incremental `text/event-stream` parser. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct SseParser {
    limits: SseLimits,
    /// The current line, when it spans chunks.
    line: Vec<u8>,
    /// The data of the event being built, when it does not lie in the chunk.
    data: Vec<u8>,
    /// The event's data still lies in the chunk being fed, at this range; only set
    /// during [`SseParser::feed`] (copied into `data` before it returns).
    in_chunk: Option<(usize, usize)>,
    /// Whether the event being built has had a `data` line.
    has_data: bool,
    event: String,
    last_id: Option<String>,
    retry: Option<u64>,
    /// The previous chunk ended with a CR: a LF starting the next one belongs to it.
    skip_lf: bool,
    /// How many bytes of a leading BOM have been matched so far.
    bom_matched: usize,
    /// Whether the start of the stream (and a possible BOM) is behind us.
    started: bool,
    /// Whether any field line has been seen since the last dispatch.
    pending: bool,
    failed: Option<SseError>,
}

impl SseParser {
    /// A parser with the default [`SseLimits`].
    pub fn new() -> Self {
        SseParser::default()
    }

    /// A parser with the given limits.
    pub fn with_limits(limits: SseLimits) -> Self {
        SseParser {
            limits,
            ..SseParser::default()
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> SseLimits {
        self.limits
    }

    /// Whether an event has been started (a field line seen, or a line begun) but not
    /// yet dispatched: at the end of the stream, the standard discards it.
    pub fn has_partial(&self) -> bool {
        self.pending || !self.line.is_empty()
    }

    /// Feeds the next chunk of the stream, calling `on_event` for every event it
    /// completes, in order.
    ///
    /// Events completed before an error have been handed out. An error from
    /// `on_event` stops parsing (the rest of the chunk is not read) and is returned;
    /// a limit passed is an [`SseError`], returned again for every further chunk.
    pub fn feed<E: From<SseError>>(
        &mut self,
        chunk: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        let res = self.read(chunk, on_event);
        // What of the open event lies in this chunk must outlive it.
        if let Some((a, b)) = self.in_chunk.take() {
            self.data.extend_from_slice(&chunk[a..b]);
        }
        res
    }

    /// The stream ended: dispatches an event still open (whose last line or blank
    /// line never came), which the standard would discard.
    ///
    /// Returns the parser's error if it had failed, or `on_event`'s.
    pub fn finish<E: From<SseError>>(
        &mut self,
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(e) = self.failed {
            return Err(e.into());
        }
        self.skip_lf = false;
        if !self.line.is_empty() {
            let mut line = std::mem::take(&mut self.line);
            let res = self.field(&line, None, &[]);
            line.clear();
            self.line = line;
            res?;
        }
        self.dispatch(&[], on_event)
    }

    fn read<E: From<SseError>>(
        &mut self,
        input: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(e) = self.failed {
            return Err(e.into());
        }
        let mut pos = 0;
        if !self.started {
            // Match a leading BOM, possibly split across chunks.
            while self.bom_matched < BOM.len() {
                match input.get(pos) {
                    None => return Ok(()),
                    Some(&b) if b == BOM[self.bom_matched] => {
                        self.bom_matched += 1;
                        pos += 1;
                    }
                    Some(_) => {
                        // Not a BOM after all: what matched belongs to the first line.
                        self.line.extend_from_slice(&BOM[..self.bom_matched]);
                        break;
                    }
                }
            }
            self.started = true;
        }
        // An empty chunk changes nothing, not even a pending CR's claim on a LF.
        if self.skip_lf && pos < input.len() {
            self.skip_lf = false;
            if input[pos] == b'\n' {
                pos += 1;
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', &input[pos..]) {
            let end = pos + i;
            if self.line.is_empty() {
                self.check_line(end - pos)?;
                self.line(input, pos, end, on_event)?;
            } else {
                self.check_line(self.line.len() + (end - pos))?;
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&input[pos..end]);
                // Not blank: the part from the last chunk was not empty.
                let res = self.field(&line, None, input);
                line.clear();
                if line.capacity() <= KEEP_CAPACITY {
                    self.line = line;
                }
                res?;
            }
            pos = end + 1;
            if input[end] == b'\r' {
                match input.get(pos) {
                    Some(b'\n') => pos += 1,
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        if pos < input.len() {
            self.check_line(self.line.len() + (input.len() - pos))?;
            self.line.extend_from_slice(&input[pos..]);
        }
        Ok(())
    }

    /// A whole line lying in `input[start..end]`.
    fn line<E: From<SseError>>(
        &mut self,
        input: &[u8],
        start: usize,
        end: usize,
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if start == end {
            return self.dispatch(input, on_event);
        }
        self.field(&input[start..end], Some(start), input)
            .map_err(E::from)
    }

    fn check_line(&mut self, len: usize) -> Result<(), SseError> {
        if len > self.limits.max_line {
            return Err(self.fail(SseError::LineTooLong {
                limit: self.limits.max_line,
            }));
        }
        Ok(())
    }

    fn fail(&mut self, e: SseError) -> SseError {
        self.failed = Some(e);
        self.line = Vec::new();
        self.data = Vec::new();
        self.in_chunk = None;
        self.has_data = false;
        self.event = String::new();
        e
    }

    /// The length of the open event's data.
    fn data_len(&self) -> usize {
        match self.in_chunk {
            Some((a, b)) => b - a,
            None => self.data.len(),
        }
    }

    /// A non-blank line; `at` is where it starts in `input` if it lies there.
    fn field(&mut self, line: &[u8], at: Option<usize>, input: &[u8]) -> Result<(), SseError> {
        if line.first() == Some(&b':') {
            return Ok(());
        }
        self.pending = true;
        let (field, value_at) = match memchr::memchr(b':', line) {
            Some(i) if line.get(i + 1) == Some(&b' ') => (&line[..i], i + 2),
            Some(i) => (&line[..i], i + 1),
            None => (line, line.len()),
        };
        let value = &line[value_at..];
        match field {
            b"data" => {
                let extra = usize::from(self.has_data);
                if self.data_len() + extra + value.len() > self.limits.max_event {
                    return Err(self.fail(SseError::EventTooLarge {
                        limit: self.limits.max_event,
                    }));
                }
                match at {
                    // The first data line, whole in the chunk: point at it.
                    Some(at) if !self.has_data => {
                        self.in_chunk = Some((at + value_at, at + line.len()));
                    }
                    _ => {
                        if let Some((a, b)) = self.in_chunk.take() {
                            self.data.extend_from_slice(&input[a..b]);
                        }
                        if self.has_data {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(value);
                    }
                }
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            b"id" if !value.contains(&0) => {
                let id = self.last_id.get_or_insert_with(String::new);
                id.clear();
                id.push_str(&String::from_utf8_lossy(value));
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let n = value.iter().fold(0u64, |n, &d| {
                    n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                self.retry = Some(n);
            }
            _ => {}
        }
        Ok(())
    }

    /// A blank line: hands out the open event, if it has data.
    fn dispatch<E>(
        &mut self,
        input: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        self.pending = false;
        let retry = self.retry.take();
        let res = if self.has_data {
            self.has_data = false;
            let data = match self.in_chunk.take() {
                Some((a, b)) => &input[a..b],
                None => &self.data[..],
            };
            on_event(SseEvent {
                event: &self.event,
                data,
                id: self.last_id.as_deref(),
                retry,
            })
        } else {
            Ok(())
        };
        self.in_chunk = None;
        if self.data.capacity() > KEEP_CAPACITY {
            self.data = Vec::new();
        } else {
            self.data.clear();
        }
        self.event.clear();
        res
    }
}

/// The events of a complete stream held in memory, read as the standard reads it
/// (an event without its closing blank line is dropped), each as its `event:` field
/// (`""` when none) and its data as text: for tests and clients that buffer a whole
/// answer. The default [`SseLimits`] apply.
///
/// ```
/// let events = tower_failover_core::sse::events(b"event: ping\ndata: {}\n\ndata: [DONE]\n\n")?;
/// assert_eq!(events, [("ping".into(), "{}".into()), (String::new(), "[DONE]".into())]);
/// # Ok::<(), tower_failover_core::sse::SseError>(())
/// ```
pub fn events(body: &[u8]) -> Result<Vec<(String, String)>, SseError> {
    let mut out = Vec::new();
    SseParser::new().feed(body, &mut |ev: SseEvent<'_>| {
        out.push((ev.event.to_owned(), ev.data_str().into_owned()));
        Ok::<_, SseError>(())
    })?;
    Ok(out)
}

#[cfg(test)]
mod tests;
