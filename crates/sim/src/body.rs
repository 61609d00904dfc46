//! The response body: whole, or paced SSE events (or single bytes), ending cleanly,
//! with a reset, or never (a stall).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::counters::CounterSet;
use crate::server::ConnCtl;
use crate::sim::Shared;
use tower_failover_core::rng::Rng;

/// How long a body waits after its last bytes before resetting the connection.
const RESET_DELAY: Duration = Duration::from_millis(20);

/// The body of every response a sim sends.
///
/// It is either one chunk of bytes, or a sequence of chunks (SSE events, or single
/// bytes for [`Fault::Drip`](crate::Fault::Drip)) sent one interval apart; it ends
/// cleanly, by resetting the connection ([`Fault::Reset`](crate::Fault::Reset),
/// [`Fault::ResetAfter`](crate::Fault::ResetAfter)), or not at all
/// ([`Fault::Stall`](crate::Fault::Stall)).
pub struct SimBody {
    frames: VecDeque<Bytes>,
    pace: Option<Pace>,
    sleep: Option<Pin<Box<Sleep>>>,
    reset: Option<Arc<ConnCtl>>,
    /// Whether the reset was already delayed once (for a body with no frame).
    reset_delayed: bool,
    /// After the last frame, send nothing more and never end.
    stall: bool,
    exact_len: Option<u64>,
    /// Counts the body as abandoned if it is dropped with frames unsent.
    counted: Option<Arc<Shared>>,
}

struct Pace {
    interval: Duration,
    jitter: f64,
    rng: Rng,
}

impl std::fmt::Debug for SimBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SimBody")
            .field("frames_left", &self.frames.len())
            .field("ends_with_reset", &self.reset.is_some())
            .field("stalls", &self.stall)
            .finish()
    }
}

impl SimBody {
    /// A body of these bytes.
    pub(crate) fn full(b: impl Into<Bytes>) -> Self {
        let b = b.into();
        let len = b.len() as u64;
        let mut frames = VecDeque::with_capacity(1);
        if !b.is_empty() {
            frames.push_back(b);
        }
        SimBody {
            frames,
            pace: None,
            sleep: None,
            reset: None,
            reset_delayed: false,
            stall: false,
            exact_len: Some(len),
            counted: None,
        }
    }

    /// Chunks sent `interval` (jittered) apart; the first is sent at once.
    pub(crate) fn paced(frames: Vec<Bytes>, interval: Duration, jitter: f64, rng: Rng) -> Self {
        SimBody {
            frames: frames.into(),
            pace: (!interval.is_zero()).then_some(Pace {
                interval,
                jitter,
                rng,
            }),
            sleep: None,
            reset: None,
            reset_delayed: false,
            stall: false,
            exact_len: None,
            counted: None,
        }
    }

    /// `bytes` one byte at a time, `interval` apart (the first at once).
    pub(crate) fn drip(bytes: Bytes, interval: Duration) -> Self {
        let frames = (0..bytes.len()).map(|i| bytes.slice(i..i + 1)).collect();
        SimBody::paced(frames, interval, 0.0, Rng::seeded(0))
    }

    /// After the last chunk, reset the connection instead of ending cleanly.
    pub(crate) fn then_reset(mut self, ctl: Arc<ConnCtl>) -> Self {
        self.reset = Some(ctl);
        self.stall = false;
        self.exact_len = None;
        self
    }

    /// After the last chunk, send nothing more and never end (the connection stays
    /// open until the client goes away or the sim stops).
    pub(crate) fn then_stall(mut self) -> Self {
        self.stall = true;
        self.reset = None;
        self.exact_len = None;
        self
    }

    /// Count this body in [`Counters::abandoned`](crate::Counters::abandoned) if it
    /// is dropped before its last frame was taken.
    pub(crate) fn count_abandoned(mut self, shared: Arc<Shared>) -> Self {
        self.counted = Some(shared);
        self
    }

    /// Declare a `content-length` of `len` bytes, whatever the frames hold (for a
    /// body that is cut, stalls or drips: the client expects the whole answer).
    pub(crate) fn declared_len(mut self, len: usize) -> Self {
        self.exact_len = Some(len as u64);
        self
    }
}

impl Drop for SimBody {
    fn drop(&mut self) {
        if let Some(shared) = &self.counted
            && !self.frames.is_empty()
        {
            CounterSet::inc(&shared.counters.abandoned);
        }
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, io::Error>>> {
        let this = &mut *self;
        if let Some(sleep) = this.sleep.as_mut() {
            ready!(sleep.as_mut().poll(cx));
        }
        if let Some(frame) = this.frames.pop_front() {
            let wait = match this.pace.as_mut() {
                Some(p) if !this.frames.is_empty() => {
                    Some(crate::sim::jittered(p.interval, p.jitter, &mut p.rng))
                }
                // Before a reset, let the bytes sent so far reach the peer: a reset
                // discards data the peer has not read yet.
                _ if this.frames.is_empty() && this.reset.is_some() => Some(
                    this.pace
                        .as_ref()
                        .map_or(RESET_DELAY, |p| p.interval.max(RESET_DELAY)),
                ),
                _ => None,
            };
            if this.frames.is_empty() {
                this.reset_delayed = true;
            }
            if let Some(d) = wait {
                let deadline = Instant::now() + d;
                match this.sleep.as_mut() {
                    Some(s) => s.as_mut().reset(deadline),
                    None => this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                }
            }
            return Poll::Ready(Some(Ok(Frame::data(frame))));
        }
        if this.stall {
            // Nothing will ever wake this body: it waits for its connection to go.
            return Poll::Pending;
        }
        if this.reset.is_some() && !this.reset_delayed {
            // A body with no frame at all: let the headers reach the peer first.
            this.reset_delayed = true;
            let mut sleep = Box::pin(tokio::time::sleep(RESET_DELAY));
            if sleep.as_mut().poll(cx).is_pending() {
                this.sleep = Some(sleep);
                return Poll::Pending;
            }
        }
        match this.reset.take() {
            Some(ctl) => {
                ctl.kill();
                Poll::Ready(Some(Err(io::Error::new(
                    io::ErrorKind::ConnectionReset,
                    "simulated reset mid-body",
                ))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.frames.is_empty() && self.reset.is_none() && !self.stall
    }

    fn size_hint(&self) -> SizeHint {
        match self.exact_len {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}
