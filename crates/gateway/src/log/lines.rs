//! Log lines written off the request path: a logger that never waits on stderr.
//!
//! Writing each line to stderr as it is made puts a system call on every request,
//! and a log collector that reads slowly (a full pipe, a blocking container log
//! driver) would stop the runtime's worker threads mid-request. Instead, each line
//! goes into a bounded queue that one thread of its own writes out, a buffer at a
//! time. When the queue is full, lines are dropped, counted, and the count is
//! written once the writer catches up (`… log lines dropped …`): serving callers
//! comes before logging them.

use std::io::{self, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Lines waiting to be written, at most (a few MB of typical lines).
pub(crate) const QUEUE_LINES: usize = 8192;

/// How long [`Lines::flush`] waits for the writer (at shutdown).
const FLUSH_WAIT: Duration = Duration::from_secs(2);

enum Msg {
    Line(Vec<u8>),
    /// Write out everything before this, then answer.
    Flush(SyncSender<()>),
}

/// The sending side: a [`MakeWriter`] for `tracing_subscriber::fmt`.
#[derive(Clone)]
pub(crate) struct Lines {
    /// `None` when the writer thread could not start: lines go to stderr at once.
    tx: Option<SyncSender<Msg>>,
    dropped: Arc<AtomicU64>,
}

impl std::fmt::Debug for Lines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lines")
            .field("dropped", &self.dropped.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl Lines {
    /// Starts the thread that writes to `sink`, with room for `queue` lines. If
    /// the thread cannot start, lines are written to stderr as they are made.
    pub(crate) fn start<W: Write + Send + 'static>(sink: W, queue: usize) -> Lines {
        let (tx, rx) = sync_channel(queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let counted = dropped.clone();
        let started = std::thread::Builder::new()
            .name("tower-failover-log".into())
            .spawn(move || write_out(rx, sink, &counted));
        Lines {
            tx: started.is_ok().then_some(tx),
            dropped,
        }
    }

    /// Waits (up to two seconds) until every line sent so far is written.
    pub(crate) fn flush(&self) {
        let Some(tx) = &self.tx else { return };
        let (ack, done) = sync_channel(1);
        // Blocking here is fine: flushing is for shutdown, not for requests.
        if tx.send(Msg::Flush(ack)).is_ok() {
            let _ = done.recv_timeout(FLUSH_WAIT);
        }
    }

    /// Lines dropped so far because the queue was full.
    #[cfg(test)]
    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// One line being formatted; queued when the formatter lets go of it.
pub(crate) struct Line<'a> {
    buf: Vec<u8>,
    lines: &'a Lines,
}

impl Write for Line<'_> {
    fn write(&mut self, b: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(b);
        Ok(b.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let line = std::mem::take(&mut self.buf);
        let Some(tx) = &self.lines.tx else {
            let _ = io::stderr().write_all(&line);
            return;
        };
        match tx.try_send(Msg::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.lines.dropped.fetch_add(1, Ordering::Relaxed);
            }
            // The writer is gone (it failed to write): nowhere to log to.
            Err(TrySendError::Disconnected(_)) => {}
        }
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            buf: Vec::with_capacity(256),
            lines: self,
        }
    }
}

/// The writer thread: writes lines as they come, a burst at a time (one write of
/// the buffer once the queue is empty), and says how many were dropped once it
/// has caught up. Ends when every sender is gone or the sink fails.
fn write_out<W: Write>(rx: Receiver<Msg>, sink: W, dropped: &AtomicU64) {
    let mut out = io::BufWriter::with_capacity(64 << 10, sink);
    while let Ok(first) = rx.recv() {
        let mut next = Some(first);
        while let Some(msg) = next {
            let ok = match msg {
                Msg::Line(line) => out.write_all(&line).is_ok(),
                Msg::Flush(ack) => {
                    let ok = note_dropped(&mut out, dropped) && out.flush().is_ok();
                    let _ = ack.send(());
                    ok
                }
            };
            if !ok {
                return;
            }
            next = rx.try_recv().ok();
        }
        if !(note_dropped(&mut out, dropped) && out.flush().is_ok()) {
            return;
        }
    }
    let _ = out.flush();
}

/// Writes "N log lines dropped" if any were; false if the sink failed.
fn note_dropped<W: Write>(out: &mut W, dropped: &AtomicU64) -> bool {
    let n = dropped.swap(0, Ordering::Relaxed);
    if n == 0 {
        return true;
    }
    writeln!(
        out,
        "tower-failover: {n} log lines dropped: the log output was not keeping up"
    )
    .is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc::Receiver;

    /// A sink that holds its first write until `open` says so, then keeps
    /// everything in `got`.
    struct Gate {
        open: Option<Receiver<()>>,
        got: Arc<Mutex<Vec<u8>>>,
    }

    impl Write for Gate {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if let Some(open) = self.open.take() {
                let _ = open.recv();
            }
            self.got.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A log output that stops reading never holds up the code that logs: lines
    /// past the queue are dropped and counted, every line is either written or
    /// counted, and the count is written once the output reads again.
    #[test]
    fn a_stuck_output_never_blocks_the_logger() {
        let (open, gate) = sync_channel(1);
        let got = Arc::new(Mutex::new(Vec::new()));
        let sink = Gate {
            open: Some(gate),
            got: got.clone(),
        };
        let lines = Lines::start(sink, 4);
        // Each line is larger than the writer's buffer, so the first one reaches
        // the stuck sink at once.
        let line = format!("{}\n", "x".repeat(70 << 10));
        const SENT: u64 = 100;
        for _ in 0..SENT {
            let mut w = lines.make_writer();
            w.write_all(line.as_bytes()).unwrap();
        }
        let dropped = lines.dropped();
        assert!(
            dropped >= SENT - 5,
            "at most the queue and one line in hand: {dropped}"
        );
        open.send(()).unwrap();
        lines.flush();
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        let written = text.lines().filter(|l| l.starts_with("xxx")).count() as u64;
        assert_eq!(written + dropped, SENT, "each line written or counted");
        assert!(
            text.contains(&format!("{dropped} log lines dropped")),
            "the count is reported"
        );
        assert_eq!(lines.dropped(), 0, "and reset once reported");
    }

    /// Through `tracing_subscriber::fmt`, as the gateway logs: the line arrives,
    /// whole, once flushed.
    #[test]
    fn formatted_events_arrive_whole() {
        let got = Arc::new(Mutex::new(Vec::new()));
        let lines = Lines::start(
            Gate {
                open: None,
                got: got.clone(),
            },
            QUEUE_LINES,
        );
        let subscriber = tracing_subscriber::fmt()
            .with_writer(lines.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..3 {
                tracing::info!(i, "request");
            }
        });
        lines.flush();
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(
            text.lines()
                .all(|l| l.contains("INFO") && l.contains("request"))
        );
    }
}
