//! An incremental parser for server-sent events (`text/event-stream`).
//!
//! [`SseParser`] follows the WHATWG event-stream rules: lines end with CRLF, LF or a
//! lone CR (also when the CR and the LF arrive in different chunks); a line starting
//! with `:` is a comment; `data:` lines of one event are joined with `\n`; a blank
//! line dispatches the event, and a block without any `data` line dispatches nothing;
//! one leading UTF-8 byte-order mark is skipped; an event still open when the stream
//! ends is discarded ([`SseParser::has_partial`] tells you there was one).
//!
//! It is fed whatever chunks the network produces, split anywhere (inside a line,
//! inside a CRLF, inside a multi-byte character), and produces the same events as if
//! the whole stream had arrived at once. Memory is bounded: a line longer than
//! [`SseLimits::max_line`] or an event whose data exceeds [`SseLimits::max_event`] is
//! a typed [`SseError`], after which the parser refuses further input.
//!
//! ```
//! use tower_failover_validate::sse::SseParser;
//!
//! let mut parser = SseParser::new();
//! let mut events = Vec::new();
//! parser.feed(b"event: ping\r\ndata: {\"a\"", &mut events).unwrap();
//! parser.feed(b":1}\r", &mut events).unwrap();
//! parser.feed(b"\n: a comment\n\ndata: [DONE]\n\n", &mut events).unwrap();
//! assert_eq!(events.len(), 2);
//! assert_eq!(events[0].event(), "ping");
//! assert_eq!(events[0].data, "{\"a\":1}");
//! assert_eq!(events[1].event(), "message");
//! assert_eq!(events[1].data, "[DONE]");
//! ```

use std::fmt;

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field, if the block had one (see [`SseEvent::event`]).
    pub event_type: Option<String>,
    /// The `data:` lines joined with `\n` (invalid UTF-8 replaced by U+FFFD).
    pub data: String,
    /// The last event ID seen so far in the stream (it persists across events, as
    /// the standard says), if any `id:` field has been set.
    pub id: Option<String>,
    /// The `retry:` field of this block, if it was a valid number of milliseconds.
    pub retry: Option<u64>,
}

impl SseEvent {
    /// The event type: the `event:` field, or `"message"` when there was none.
    pub fn event(&self) -> &str {
        match self.event_type.as_deref() {
            Some(e) if !e.is_empty() => e,
            _ => "message",
        }
    }
}

/// Bounds on what one parser will hold in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseLimits {
    /// The longest line accepted, in bytes, without its terminator. Default: 256 KiB.
    pub max_line: usize,
    /// The most data one event may carry, in bytes. Default: 1 MiB.
    pub max_event: usize,
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

const BOM: &[u8] = b"\xEF\xBB\xBF";

/// An incremental `text/event-stream` parser. See the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct SseParser {
    limits: SseLimits,
    /// The current line, when it spans chunks.
    line: Vec<u8>,
    /// The data buffer of the event being built.
    data: Vec<u8>,
    /// Whether the event being built has had a `data` line.
    has_data: bool,
    event_type: Option<Vec<u8>>,
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
    /// yet dispatched: at the end of the stream, it would be discarded.
    pub fn has_partial(&self) -> bool {
        self.pending || !self.line.is_empty()
    }

    /// Feeds the next chunk of the stream, appending every event it completes to
    /// `out`.
    ///
    /// Events completed before an error are still appended. After an error the parser
    /// returns the same error for every further chunk.
    pub fn feed(&mut self, mut chunk: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if let Some(e) = self.failed {
            return Err(e);
        }
        if !self.started {
            // Match a leading BOM, possibly split across chunks.
            while self.bom_matched < BOM.len() {
                match chunk.first() {
                    None => return Ok(()),
                    Some(&b) if b == BOM[self.bom_matched] => {
                        self.bom_matched += 1;
                        chunk = &chunk[1..];
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
        if self.skip_lf && !chunk.is_empty() {
            self.skip_lf = false;
            if chunk[0] == b'\n' {
                chunk = &chunk[1..];
            }
        }
        while let Some(i) = memchr::memchr2(b'\n', b'\r', chunk) {
            let (head, tail) = (&chunk[..i], &chunk[i + 1..]);
            let cr = chunk[i] == b'\r';
            if self.line.is_empty() {
                self.check_line(head.len())?;
                self.process_line(head, out)?;
            } else {
                self.check_line(self.line.len() + head.len())?;
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(head);
                let res = self.process_line(&line, out);
                line.clear();
                self.line = line;
                res?;
            }
            chunk = tail;
            if cr {
                match chunk.first() {
                    Some(b'\n') => chunk = &chunk[1..],
                    Some(_) => {}
                    None => self.skip_lf = true,
                }
            }
        }
        if !chunk.is_empty() {
            self.check_line(self.line.len() + chunk.len())?;
            self.line.extend_from_slice(chunk);
        }
        Ok(())
    }

    fn check_line(&mut self, len: usize) -> Result<(), SseError> {
        if len > self.limits.max_line {
            let e = SseError::LineTooLong {
                limit: self.limits.max_line,
            };
            self.fail(e);
            return Err(e);
        }
        Ok(())
    }

    fn fail(&mut self, e: SseError) {
        self.failed = Some(e);
        self.line = Vec::new();
        self.data = Vec::new();
        self.event_type = None;
    }

    fn process_line(&mut self, line: &[u8], out: &mut Vec<SseEvent>) -> Result<(), SseError> {
        if line.is_empty() {
            self.dispatch(out);
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        self.pending = true;
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                let extra = usize::from(self.has_data);
                if self.data.len() + extra + value.len() > self.limits.max_event {
                    let e = SseError::EventTooLarge {
                        limit: self.limits.max_event,
                    };
                    self.fail(e);
                    return Err(e);
                }
                if self.has_data {
                    self.data.push(b'\n');
                }
                self.data.extend_from_slice(value);
                self.has_data = true;
            }
            b"event" => {
                let buf = self.event_type.get_or_insert_with(Vec::new);
                buf.clear();
                buf.extend_from_slice(value);
            }
            b"id" if !value.contains(&0) => {
                self.last_id = Some(String::from_utf8_lossy(value).into_owned());
            }
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                // Absurdly long numbers saturate rather than fail.
                let n = value.iter().fold(0u64, |n, &d| {
                    n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
                });
                self.retry = Some(n);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, out: &mut Vec<SseEvent>) {
        self.pending = false;
        let event_type = self.event_type.take();
        let retry = self.retry.take();
        if !self.has_data {
            self.data.clear();
            return;
        }
        self.has_data = false;
        let data = std::mem::take(&mut self.data);
        let data = match String::from_utf8(data) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        };
        out.push(SseEvent {
            event_type: event_type.map(|t| match String::from_utf8(t) {
                Ok(s) => s,
                Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
            }),
            data,
            id: self.last_id.clone(),
            retry,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_all(chunks: &[&[u8]]) -> Vec<SseEvent> {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, &mut out).unwrap();
        }
        out
    }

    fn datas(ev: &[SseEvent]) -> Vec<&str> {
        ev.iter().map(|e| e.data.as_str()).collect()
    }

    #[test]
    fn line_endings_of_every_kind() {
        let ev = parse_all(&[b"data: a\n\ndata: b\r\n\r\ndata: c\r\rdata: d\n\r\n"]);
        assert_eq!(datas(&ev), ["a", "b", "c", "d"]);
    }

    #[test]
    fn crlf_split_across_chunks_is_one_terminator() {
        let ev = parse_all(&[b"data: a\r", b"\n", b"\r", b"\ndata: b\r", b"\r"]);
        assert_eq!(datas(&ev), ["a", "b"]);
    }

    #[test]
    fn cr_at_chunk_end_then_other_byte() {
        let ev = parse_all(&[b"data: a\r", b"\rdata: b\n", b"\n"]);
        assert_eq!(datas(&ev), ["a", "b"]);
    }

    #[test]
    fn multi_line_data_and_fields() {
        let ev = parse_all(&[b"event: delta\nid: 7\nretry: 1500\ndata: one\ndata:two\ndata\n\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event(), "delta");
        assert_eq!(ev[0].data, "one\ntwo\n");
        assert_eq!(ev[0].id.as_deref(), Some("7"));
        assert_eq!(ev[0].retry, Some(1500));
    }

    #[test]
    fn comments_and_dataless_blocks_dispatch_nothing() {
        let ev = parse_all(&[b": keep-alive\n\nevent: ping\n\nid: 3\n\ndata: x\n\n"]);
        assert_eq!(ev.len(), 1);
        assert_eq!(ev[0].event(), "message");
        assert_eq!(ev[0].id.as_deref(), Some("3"), "the id persists");
    }

    #[test]
    fn only_one_leading_space_is_stripped() {
        let ev = parse_all(&[b"data:  two\n\n"]);
        assert_eq!(ev[0].data, " two");
    }

    #[test]
    fn bom_is_skipped_once_even_when_split() {
        let ev = parse_all(&[b"\xEF", b"\xBB", b"\xBFdata: a\n\n"]);
        assert_eq!(datas(&ev), ["a"]);
        // A second BOM is part of the field name, so the line is ignored.
        let ev = parse_all(&[b"\xEF\xBB\xBF\xEF\xBB\xBFdata: a\n\ndata: b\n\n"]);
        assert_eq!(datas(&ev), ["b"]);
    }

    #[test]
    fn a_false_bom_start_is_kept() {
        // 0xEF followed by something else: the bytes belong to the line.
        let ev = parse_all(&[b"\xEF", b"data: a\n\ndata: b\n\n"]);
        assert_eq!(datas(&ev), ["b"]);
    }

    #[test]
    fn unterminated_event_is_not_dispatched() {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        p.feed(b"data: a\n\ndata: partial\n", &mut out).unwrap();
        assert_eq!(datas(&out), ["a"]);
        assert!(p.has_partial());
        p.feed(b"\n", &mut out).unwrap();
        assert!(!p.has_partial());
    }

    #[test]
    fn invalid_utf8_is_replaced() {
        let ev = parse_all(&[b"data: \xFF\xFEok\n\n"]);
        assert_eq!(ev[0].data, "\u{FFFD}\u{FFFD}ok");
    }

    #[test]
    fn long_lines_are_refused_and_the_parser_stays_failed() {
        let mut p = SseParser::with_limits(SseLimits {
            max_line: 16,
            max_event: 64,
        });
        let mut out = Vec::new();
        p.feed(b"data: 0123456789", &mut out).unwrap();
        let err = p.feed(b"abcdef", &mut out).unwrap_err();
        assert_eq!(err, SseError::LineTooLong { limit: 16 });
        assert_eq!(p.feed(b"\n\n", &mut out), Err(err));
        assert!(out.is_empty());
    }

    #[test]
    fn big_events_are_refused() {
        let mut p = SseParser::with_limits(SseLimits {
            max_line: 16,
            max_event: 20,
        });
        let mut out = Vec::new();
        let err = p
            .feed(b"data: 0123456789\ndata: 0123456789\n\n", &mut out)
            .unwrap_err();
        assert_eq!(err, SseError::EventTooLarge { limit: 20 });
        assert!(err.to_string().contains("20 bytes"));
    }

    #[test]
    fn retry_must_be_digits() {
        let ev =
            parse_all(&[b"retry: 12a\ndata: x\n\nretry: 99999999999999999999999\ndata: y\n\n"]);
        assert_eq!(ev[0].retry, None);
        assert_eq!(ev[1].retry, Some(u64::MAX));
    }
}
