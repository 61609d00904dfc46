//! An incremental server-sent events parser that works on chunks as they arrive.
//!
//! Lines end with `\n`, `\r\n` or `\r`, possibly split across chunks; `data:` lines
//! of one event are joined with `\n`; comments, `id:` and `retry:` are ignored. Only
//! the unfinished tail line is copied between chunks. Events larger than the limit
//! are refused rather than buffered without bound.

use tower_failover_core::RejectKind;
use tower_failover_core::error::Invalid;

/// One event: its `event:` name (empty if none) and its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SseEvent<'a> {
    /// The `event:` field, or `""`.
    pub event: &'a str,
    /// The joined `data:` lines.
    pub data: &'a [u8],
}

/// Incremental SSE parser.
#[derive(Debug, Clone)]
pub struct SseParser {
    /// The unfinished last line of the previous chunk.
    partial: Vec<u8>,
    /// Data of the event being built (each line followed by `\n`).
    data: Vec<u8>,
    event: String,
    has_data: bool,
    /// The previous chunk ended with `\r`: a leading `\n` belongs to it.
    after_cr: bool,
    max_event: usize,
}

impl SseParser {
    /// A parser refusing events (or lines) larger than `max_event` bytes.
    pub fn new(max_event: usize) -> Self {
        SseParser {
            partial: Vec::new(),
            data: Vec::new(),
            event: String::new(),
            has_data: false,
            after_cr: false,
            max_event,
        }
    }

    /// Feeds a chunk, calling `on_event` for every event it completes.
    ///
    /// Errors from `on_event` stop parsing and are returned; an oversized event is an
    /// [`Invalid`] error of kind [`RejectKind::Shape`].
    pub fn feed<E: From<Invalid>>(
        &mut self,
        mut chunk: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        // An empty chunk changes nothing (not even a pending CR's claim on a LF).
        if chunk.is_empty() {
            return Ok(());
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = chunk.strip_prefix(b"\n") {
                chunk = rest;
            }
        }
        while let Some(pos) = chunk.iter().position(|&b| b == b'\n' || b == b'\r') {
            let line_end = pos;
            let mut next = pos + 1;
            if chunk[pos] == b'\r' {
                match chunk.get(pos + 1) {
                    Some(b'\n') => next += 1,
                    None => self.after_cr = true,
                    Some(_) => {}
                }
            }
            if self.partial.is_empty() {
                // The same bound as a line arriving in pieces (`grow_partial`).
                if line_end + self.data.len() > self.max_event {
                    return Err(too_large(self.max_event).into());
                }
                self.line(&chunk[..line_end], on_event)?;
            } else {
                self.grow_partial(&chunk[..line_end])?;
                let line = std::mem::take(&mut self.partial);
                let res = self.line(&line, on_event);
                self.partial = line;
                self.partial.clear();
                res?;
            }
            chunk = &chunk[next..];
        }
        if !chunk.is_empty() {
            self.grow_partial(chunk)?;
        }
        Ok(())
    }

    /// The stream ended: completes a last event that lacked its blank line.
    pub fn finish<E: From<Invalid>>(
        &mut self,
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if !self.partial.is_empty() {
            let line = std::mem::take(&mut self.partial);
            self.line(&line, on_event)?;
        }
        self.line(b"", on_event)
    }

    /// Whether bytes of an unfinished event are buffered.
    pub fn is_mid_event(&self) -> bool {
        self.has_data || !self.partial.is_empty()
    }

    fn grow_partial(&mut self, bytes: &[u8]) -> Result<(), Invalid> {
        if self.partial.len() + bytes.len() + self.data.len() > self.max_event {
            return Err(too_large(self.max_event));
        }
        self.partial.extend_from_slice(bytes);
        Ok(())
    }

    fn line<E: From<Invalid>>(
        &mut self,
        line: &[u8],
        on_event: &mut impl FnMut(SseEvent<'_>) -> Result<(), E>,
    ) -> Result<(), E> {
        if line.is_empty() {
            if self.has_data {
                self.has_data = false;
                let mut data = std::mem::take(&mut self.data);
                data.pop(); // the last line's `\n`
                let res = on_event(SseEvent {
                    event: &self.event,
                    data: &data,
                });
                data.clear();
                self.data = data;
                self.event.clear();
                return res;
            }
            self.event.clear();
            return Ok(());
        }
        if line[0] == b':' {
            return Ok(());
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_event {
                    return Err(too_large(self.max_event).into());
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
                self.has_data = true;
            }
            b"event" => {
                self.event.clear();
                self.event.push_str(&String::from_utf8_lossy(value));
            }
            _ => {}
        }
        Ok(())
    }
}

fn too_large(limit: usize) -> Invalid {
    Invalid::new(
        RejectKind::Shape,
        format!("server-sent event larger than {limit} bytes"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(chunks: &[&[u8]]) -> Vec<(String, String)> {
        let mut p = SseParser::new(1 << 20);
        let mut out = Vec::new();
        let mut f = |e: SseEvent<'_>| -> Result<(), Invalid> {
            out.push((
                e.event.to_string(),
                String::from_utf8(e.data.to_vec()).unwrap(),
            ));
            Ok(())
        };
        for c in chunks {
            p.feed(c, &mut f).unwrap();
        }
        p.finish(&mut f).unwrap();
        out
    }

    #[test]
    fn events_whole_and_split() {
        let whole: &[u8] =
            b"event: ping\ndata: {}\n\n: comment\ndata: a\ndata: b\n\ndata: [DONE]\n\n";
        let want = vec![
            ("ping".to_string(), "{}".to_string()),
            (String::new(), "a\nb".to_string()),
            (String::new(), "[DONE]".to_string()),
        ];
        assert_eq!(collect(&[whole]), want);
        // Every split point, including inside \r\n.
        let crlf = String::from_utf8(whole.to_vec())
            .unwrap()
            .replace('\n', "\r\n");
        for src in [whole.to_vec(), crlf.into_bytes()] {
            for i in 0..src.len() {
                let (a, b) = src.split_at(i);
                assert_eq!(collect(&[a, b]), want, "split at {i}");
            }
            let bytes: Vec<&[u8]> = src.chunks(1).collect();
            assert_eq!(collect(&bytes), want);
        }
    }

    #[test]
    fn lone_cr_and_missing_final_blank_line() {
        assert_eq!(
            collect(&[b"data: x\r\rdata: y"]),
            vec![
                (String::new(), "x".to_string()),
                (String::new(), "y".to_string())
            ]
        );
        assert_eq!(collect(&[b"data"]), vec![(String::new(), String::new())]);
    }

    #[test]
    fn oversized_events_are_refused() {
        let mut p = SseParser::new(16);
        let mut f = |_: SseEvent<'_>| -> Result<(), Invalid> { Ok(()) };
        assert!(p.feed(b"data: 0123456789abcdefghij\n", &mut f).is_err());
        let mut p = SseParser::new(16);
        assert!(p.feed(b"data: 0123456789", &mut f).is_ok());
        assert!(p.feed(b"abcdefghij", &mut f).is_err());
    }
}
