//! One connection's clocks: the header-read, keep-alive idle and write timeouts.
//!
//! A connection is *busy* while a request is in flight on it (from its headers
//! to the last byte of its answer), and no clock runs then: the body-read timeout
//! and the stack's own deadlines take over. Otherwise it is either *waiting for
//! a head* (a new connection, or bytes of a next request have arrived), which
//! must end within the header-read timeout, or *idle* (kept alive, nothing
//! received), which may last the keep-alive idle timeout. When a clock runs out
//! the next read fails, and the server closes the connection.
//!
//! The write clock is apart: it runs whenever a write waits on a client that does
//! not read (the socket's buffers are full), busy or not, and restarts at each
//! byte written. When it runs out the write fails and the connection closes, which
//! drops the answer being sent and, with it, the provider's stream behind it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

/// The start of HTTP/2's connection preface.
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0";

#[derive(Debug, Clone, Copy)]
pub(super) struct Timeouts {
    pub(super) header: Duration,
    pub(super) idle: Duration,
    /// The longest a write may wait for the client to read.
    pub(super) write: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Head,
    Idle,
}

#[derive(Debug)]
struct State {
    busy: usize,
    phase: Phase,
    since: Instant,
    /// Decided at the first read: HTTP/2 frames between streams (pings,
    /// settings) do not start a head.
    h2: Option<bool>,
    /// The reader waiting for bytes, woken when the connection turns idle (its
    /// clock changes then).
    reader: Option<Waker>,
}

/// Whether a connection has requests in flight, shared by its reader and its
/// requests.
#[derive(Debug)]
pub(super) struct Activity(Mutex<State>);

impl Activity {
    pub(super) fn new() -> Arc<Activity> {
        Arc::new(Activity(Mutex::new(State {
            busy: 0,
            phase: Phase::Head,
            since: Instant::now(),
            h2: None,
            reader: None,
        })))
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request started; the connection is busy until the guard drops.
    pub(super) fn begin(self: &Arc<Self>) -> Busy {
        self.state().busy += 1;
        Busy(self.clone())
    }

    fn read(&self, bytes: &[u8]) {
        let mut s = self.state();
        let h2 = *s.h2.get_or_insert_with(|| bytes.starts_with(H2_PREFACE));
        if s.busy == 0 && s.phase == Phase::Idle && !h2 {
            s.phase = Phase::Head;
            s.since = Instant::now();
        }
    }

    /// When the current clock runs out, and which one it is; `None` while busy.
    /// `waker` (the waiting reader) is woken when the connection turns idle,
    /// since its clock changes then.
    fn deadline(&self, t: Timeouts, waker: &Waker) -> Option<(Instant, &'static str)> {
        let mut s = self.state();
        match &mut s.reader {
            Some(w) => w.clone_from(waker),
            None => s.reader = Some(waker.clone()),
        }
        if s.busy > 0 {
            return None;
        }
        Some(match s.phase {
            Phase::Head => (s.since + t.header, "header read timeout"),
            Phase::Idle => (s.since + t.idle, "keep-alive idle timeout"),
        })
    }
}

/// A request in flight on a connection.
#[derive(Debug)]
pub(super) struct Busy(Arc<Activity>);

impl Drop for Busy {
    fn drop(&mut self) {
        let mut s = self.0.state();
        s.busy = s.busy.saturating_sub(1);
        if s.busy == 0 {
            s.phase = Phase::Idle;
            s.since = Instant::now();
            if let Some(reader) = s.reader.take() {
                reader.wake();
            }
        }
    }
}

/// An I/O stream whose reads fail once the connection's clock runs out.
pub(super) struct TimedIo<I> {
    io: I,
    activity: Arc<Activity>,
    timeouts: Timeouts,
    sleep: Pin<Box<Sleep>>,
    armed: Option<Instant>,
    /// The write clock, made at the first stalled write; `stalled` says whether it
    /// runs (a write is waiting).
    write_sleep: Option<Pin<Box<Sleep>>>,
    stalled: bool,
}

impl<I> TimedIo<I> {
    pub(super) fn new(io: I, activity: Arc<Activity>, timeouts: Timeouts) -> Self {
        TimedIo {
            io,
            activity,
            timeouts,
            sleep: Box::pin(tokio::time::sleep(timeouts.header)),
            armed: None,
            write_sleep: None,
            stalled: false,
        }
    }

    /// A write's result, through the write clock: progress stops it; waiting
    /// starts it (if it is not running) and fails once it runs out.
    fn write_clock<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.stalled = false;
            return polled;
        }
        let deadline_from_now = || Instant::now() + self.timeouts.write;
        let sleep = match &mut self.write_sleep {
            Some(sleep) => {
                if !self.stalled {
                    sleep.as_mut().reset(deadline_from_now());
                }
                sleep
            }
            None => self
                .write_sleep
                .insert(Box::pin(tokio::time::sleep_until(deadline_from_now()))),
        };
        self.stalled = true;
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                tracing::debug!(timeout = "write timeout", "closing the connection");
                Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "write timeout: the client stopped reading",
                )))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for TimedIo<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                if !read.is_empty() {
                    this.activity.read(read);
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => {
                let Some((deadline, what)) = this.activity.deadline(this.timeouts, cx.waker())
                else {
                    return Poll::Pending;
                };
                if this.armed != Some(deadline) {
                    this.sleep.as_mut().reset(deadline);
                    this.armed = Some(deadline);
                }
                match this.sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        tracing::debug!(timeout = what, "closing the connection");
                        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for TimedIo<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.write_clock(cx, polled)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.write_clock(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.write_clock(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const T: Timeouts = Timeouts {
        header: Duration::from_secs(10),
        idle: Duration::from_secs(75),
        write: Duration::from_secs(60),
    };

    /// A client that stops reading: writes wait, then fail at the write timeout,
    /// counted from the last byte written; a slow reader that keeps reading is
    /// never cut, however long the answer takes.
    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_is_cut_at_the_write_timeout() {
        let (mut client, server) = tokio::io::duplex(64);
        let activity = Activity::new();
        let _busy = activity.begin();
        let mut io = TimedIo::new(server, activity, T);
        // A reader that takes 59 s for every 64 bytes, five times: 295 s in all.
        let chunk = [b'x'; 64];
        let reader = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(59)).await;
                client.read_exact(&mut buf).await.unwrap();
            }
            client
        });
        for _ in 0..6 {
            io.write_all(&chunk)
                .await
                .expect("a slow reader is not cut");
        }
        let mut client = reader.await.unwrap();
        // Now the client reads nothing more and the buffer is full.
        let stalled_from = Instant::now();
        let stalled = async {
            loop {
                if let Err(e) = io.write(&chunk).await {
                    return e;
                }
            }
        };
        let e = tokio::time::timeout(Duration::from_secs(3600), stalled)
            .await
            .expect("the stalled write fails");
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(stalled_from.elapsed(), T.write);
        let mut rest = [0u8; 64];
        client.read_exact(&mut rest).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_head_never_finished_is_cut_at_the_header_timeout() {
        let (mut client, server) = tokio::io::duplex(1024);
        let activity = Activity::new();
        let mut io = TimedIo::new(server, activity.clone(), T);
        client
            .write_all(b"POST / HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let n = io.read(&mut buf).await.unwrap();
        assert!(n > 0);
        let started = Instant::now();
        let e = io.read(&mut buf).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        assert_eq!(started.elapsed(), T.header);
    }

    #[tokio::test(start_paused = true)]
    async fn no_clock_runs_while_busy_then_the_idle_clock() {
        let (mut client, server) = tokio::io::duplex(1024);
        let activity = Activity::new();
        let mut io = TimedIo::new(server, activity.clone(), T);
        client.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        // The server reads on before its request starts (as hyper does): that
        // read waits through the request and gets the idle clock when it ends.
        let reading = tokio::spawn(async move {
            let mut buf = [0u8; 64];
            let e = io.read(&mut buf).await.unwrap_err();
            (e.kind(), Instant::now())
        });
        tokio::task::yield_now().await;
        let busy = activity.begin();
        // An answer streaming for ten minutes: the connection stays.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert!(
            !reading.is_finished(),
            "no clock while a request is in flight"
        );
        drop(busy);
        let idle_from = Instant::now();
        let (kind, at) = tokio::time::timeout(Duration::from_secs(3600), reading)
            .await
            .expect("the idle clock starts when the answer ends")
            .unwrap();
        assert_eq!(kind, io::ErrorKind::TimedOut);
        assert_eq!(at - idle_from, T.idle);
        // A next request's first bytes start the header clock instead.
        drop(client);
        let (mut client, server) = tokio::io::duplex(1024);
        let activity = Activity::new();
        let mut io = TimedIo::new(server, activity.clone(), T);
        drop(activity.begin());
        tokio::time::advance(Duration::from_secs(70)).await;
        client.write_all(b"GET").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        let head_from = Instant::now();
        io.read(&mut buf).await.unwrap_err();
        assert_eq!(head_from.elapsed(), T.header);
    }

    #[tokio::test(start_paused = true)]
    async fn http2_frames_between_streams_keep_the_idle_clock() {
        let (mut client, server) = tokio::io::duplex(1024);
        let activity = Activity::new();
        let mut io = TimedIo::new(server, activity.clone(), T);
        client
            .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        assert!(io.read(&mut buf).await.unwrap() > 0);
        drop(activity.begin());
        let idle_from = Instant::now();
        tokio::time::advance(Duration::from_secs(30)).await;
        client.write_all(b"ping").await.unwrap();
        assert!(io.read(&mut buf).await.unwrap() > 0);
        io.read(&mut buf).await.unwrap_err();
        assert_eq!(idle_from.elapsed(), T.idle);
    }
}
