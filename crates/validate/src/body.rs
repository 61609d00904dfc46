//! [`ValidatedBody`]: the response body after validation.

use std::collections::VecDeque;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use pin_project_lite::pin_project;
use tower_failover_core::error::{Elapsed, TruncatedStream, find};
use tower_failover_core::{BoxError, LateVerdict, classify_error_chain};

use crate::config::AfterCommit;
use crate::shared::Shared;
use crate::stream::Tracker;
use crate::validator::Verdict;

pin_project! {
    /// The body of a validated response.
    ///
    /// - a buffered body that passed: its bytes, in one frame;
    /// - a stream that passed its commit point: the held-back prefix first, then the
    ///   rest of the upstream stream as it comes. If the stream then breaks, or ends
    ///   without its terminal event, the body yields a
    ///   [`TruncatedStream`] error instead of ending cleanly;
    /// - a non-2xx response: the upstream body, untouched.
    pub struct ValidatedBody<B> {
        #[pin]
        kind: Kind<B>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<B> {
        Full {
            data: Option<Bytes>,
        },
        Passthrough {
            #[pin]
            inner: B,
        },
        Stream {
            held: VecDeque<Frame<Bytes>>,
            inner: Pin<Box<B>>,
            tracker: Box<Tracker>,
            late: Option<LateVerdict>,
            shared: Arc<Shared>,
            done: bool,
        },
    }
}

impl<B> ValidatedBody<B> {
    pub(crate) fn full(data: Bytes) -> Self {
        ValidatedBody {
            kind: Kind::Full {
                data: (!data.is_empty()).then_some(data),
            },
        }
    }

    pub(crate) fn passthrough(inner: B) -> Self {
        ValidatedBody {
            kind: Kind::Passthrough { inner },
        }
    }

    pub(crate) fn stream(
        held: VecDeque<Frame<Bytes>>,
        inner: Pin<Box<B>>,
        ended: bool,
        tracker: Box<Tracker>,
        late: Option<LateVerdict>,
        shared: Arc<Shared>,
    ) -> Self {
        ValidatedBody {
            kind: Kind::Stream {
                held,
                inner,
                tracker,
                late,
                shared,
                done: ended,
            },
        }
    }

    /// Whether this is a validated stream (as opposed to a buffered body or an
    /// untouched error response).
    pub fn is_stream(&self) -> bool {
        matches!(self.kind, Kind::Stream { .. })
    }
}

impl<B> fmt::Debug for ValidatedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Bodies carry user content: show sizes only.
        match &self.kind {
            Kind::Full { data } => f
                .debug_struct("ValidatedBody::Full")
                .field("len", &data.as_ref().map_or(0, Bytes::len))
                .finish(),
            Kind::Passthrough { .. } => f.write_str("ValidatedBody::Passthrough"),
            Kind::Stream { held, done, .. } => f
                .debug_struct("ValidatedBody::Stream")
                .field("held_frames", &held.len())
                .field("done", done)
                .finish(),
        }
    }
}

fn truncated(shared: &Shared, detail: String) -> BoxError {
    shared.stats.truncated();
    tracing::warn!(provider = ?shared.provider, detail, "stream truncated after the commit point");
    let e = TruncatedStream::new(detail);
    match &shared.provider {
        Some(p) => e.with_provider(p.clone()).into(),
        None => e.into(),
    }
}

/// An upstream error after the commit point, as the caller's typed truncation, in
/// our own words: an upstream error's text may be the provider's own (an error event's
/// message, a proxy's page), so neither the caller's error nor the log line repeats
/// it; they name what kind of failure it was instead. A deadline that cut the stream
/// stays the truncation's source, so the provider's health still counts a timeout
/// rather than a reset.
fn truncated_by(shared: &Shared, e: BoxError) -> BoxError {
    let Some(elapsed) = find::<Elapsed>(&*e).cloned() else {
        let outcome = classify_error_chain(&*e);
        return truncated(shared, format!("upstream body error: {outcome}"));
    };
    // Our own wording: which timer, and after how long.
    match truncated(shared, elapsed.to_string()).downcast::<TruncatedStream>() {
        Ok(t) => (*t).with_timeout(elapsed).into(),
        Err(other) => other,
    }
}

impl<B> Body for ValidatedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.project().kind.project() {
            KindProj::Full { data } => Poll::Ready(data.take().map(|d| Ok(Frame::data(d)))),
            KindProj::Passthrough { inner } => inner.poll_frame(cx).map_err(Into::into),
            KindProj::Stream {
                held,
                inner,
                tracker,
                late,
                shared,
                done,
            } => {
                if let Some(frame) = held.pop_front() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                if *done {
                    return Poll::Ready(None);
                }
                match ready!(inner.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        if let Some(data) = frame.data_ref() {
                            let was_malformed = tracker.facts.is_malformed();
                            if let Err(e) = tracker.feed(data) {
                                *done = true;
                                let detail = format!("unreadable event stream: {e}");
                                return Poll::Ready(Some(Err(truncated(shared, detail))));
                            }
                            // A broken event after the commit point is lost output:
                            // it never reaches the caller, and the stream ends with
                            // the typed truncation instead of looking complete
                            // (when a check of the configured ones rejects it).
                            if !was_malformed
                                && tracker.facts.is_malformed()
                                && let Verdict::Reject(e) = tracker.check(shared, None)
                                && e.kind().is_malformed()
                            {
                                *done = true;
                                if let Some(late) = late {
                                    late.reject(e.kind());
                                }
                                let detail = format!(
                                    "event {} is malformed ({})",
                                    tracker.facts.events,
                                    e.kind()
                                );
                                return Poll::Ready(Some(Err(truncated(shared, detail))));
                            }
                        }
                        Poll::Ready(Some(Ok(frame)))
                    }
                    Some(Err(e)) => {
                        *done = true;
                        let e: BoxError = e.into();
                        Poll::Ready(Some(Err(truncated_by(shared, e))))
                    }
                    None => {
                        *done = true;
                        if !tracker.facts.terminal {
                            let detail = format!(
                                "stream ended after {} events without its terminal event",
                                tracker.facts.events
                            );
                            return Poll::Ready(Some(Err(truncated(shared, detail))));
                        }
                        if tracker.judged_complete {
                            return Poll::Ready(None);
                        }
                        match tracker.check(shared, None) {
                            Verdict::Reject(e) => {
                                let e = shared.name(e);
                                shared.stats.late_rejected();
                                // The kind only: the detail may be the provider's text.
                                tracing::warn!(
                                    provider = ?shared.provider,
                                    kind = %e.kind(),
                                    malformed = e.kind().is_malformed(),
                                    "stream failed validation after the commit point"
                                );
                                // The layers above (observe, circuit, ramp) count the
                                // rejection at the end of the body, whatever the mode.
                                if let Some(late) = late {
                                    late.reject(e.kind());
                                }
                                match shared.after_commit {
                                    AfterCommit::Report => Poll::Ready(None),
                                    AfterCommit::Error => Poll::Ready(Some(Err(e.into()))),
                                }
                            }
                            _ => Poll::Ready(None),
                        }
                    }
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full { data } => data.is_none(),
            Kind::Passthrough { inner } => inner.is_end_stream(),
            Kind::Stream { held, done, .. } => held.is_empty() && *done,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full { data } => {
                SizeHint::with_exact(data.as_ref().map_or(0, |d| d.len() as u64))
            }
            Kind::Passthrough { inner } => inner.size_hint(),
            Kind::Stream { .. } => SizeHint::default(),
        }
    }
}
