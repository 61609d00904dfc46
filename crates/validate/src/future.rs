//! [`ResponseFuture`]: calls the inner service, then buffers and validates the body,
//! or holds a stream back until its commit point.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::response::Parts;
use http::{HeaderMap, Response, header};
use http_body::{Body, Frame};
use pin_project_lite::pin_project;
use tower_failover_core::BoxError;
use tower_failover_core::error::{BodyTooLarge, Invalid};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{LateVerdict, RejectKind};

use crate::body::ValidatedBody;
use crate::config::StreamHold;
use crate::shared::Shared;
use crate::stream::Tracker;
use crate::validator::{Verdict, check_buffered};

pin_project! {
    /// The future of [`Validate`](crate::Validate).
    ///
    /// For a buffered body it resolves once the whole body has been read and
    /// validated; for a stream, at the commit point.
    pub struct ResponseFuture<F, B> {
        #[pin]
        state: State<F, B>,
        shared: Arc<Shared>,
        // The request's body, when the service could see it (for
        // `Output::request_sets_max_tokens`).
        request: Option<ReplayBody>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F, B> {
        Calling {
            #[pin]
            fut: F,
        },
        Buffering {
            #[pin]
            body: B,
            parts: Option<Parts>,
            buf: Collected,
        },
        Holding {
            hold: Option<Hold<B>>,
        },
        Done,
    }
}

/// A stream held back before its commit point.
struct Hold<B> {
    parts: Parts,
    body: Pin<Box<B>>,
    tracker: Box<Tracker>,
    held: VecDeque<Frame<Bytes>>,
    held_len: usize,
    /// The upstream body has ended.
    ended: bool,
}

/// A buffered body so far: a single chunk is kept as is (no copy).
#[derive(Default)]
struct Collected {
    first: Option<Bytes>,
    rest: Option<BytesMut>,
}

impl Collected {
    fn len(&self) -> usize {
        match (&self.first, &self.rest) {
            (_, Some(b)) => b.len(),
            (Some(b), None) => b.len(),
            (None, None) => 0,
        }
    }

    fn push(&mut self, data: Bytes) {
        if let Some(rest) = &mut self.rest {
            rest.extend_from_slice(&data);
        } else if let Some(first) = self.first.take() {
            let mut rest = BytesMut::with_capacity(first.len() + data.len());
            rest.extend_from_slice(&first);
            rest.extend_from_slice(&data);
            self.rest = Some(rest);
        } else {
            self.first = Some(data);
        }
    }

    fn take(&mut self) -> Bytes {
        match (self.first.take(), self.rest.take()) {
            (_, Some(b)) => b.freeze(),
            (Some(b), None) => b,
            (None, None) => Bytes::new(),
        }
    }
}

enum Decision {
    Hold,
    Commit,
    Reject(Invalid),
}

fn is_event_stream(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .get(..17)
                .is_some_and(|t| t.eq_ignore_ascii_case("text/event-stream"))
        })
}

fn declared_len(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

impl<F, B> ResponseFuture<F, B> {
    pub(crate) fn new(fut: F, shared: Arc<Shared>, request: Option<ReplayBody>) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            shared,
            request,
        }
    }
}

impl<B> Hold<B> {
    fn decide(&mut self, shared: &Shared) -> Decision {
        match self.tracker.check(shared, Some(&self.parts.headers)) {
            Verdict::Reject(e) => Decision::Reject(e),
            _ if self.tracker.facts.terminal => Decision::Commit,
            Verdict::Pass
                if shared.hold == StreamHold::FirstContent && self.tracker.facts.started() =>
            {
                Decision::Commit
            }
            _ if self.held_len >= shared.hold_limit => {
                tracing::debug!(
                    held = self.held_len,
                    "stream hold-back limit reached: committing without a full decision"
                );
                Decision::Commit
            }
            _ => Decision::Hold,
        }
    }
}

impl<F, E, B> Future for ResponseFuture<F, B>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Output = Result<Response<ValidatedBody<B>>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        let shared: &Arc<Shared> = this.shared;
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    let res = match ready!(fut.poll(cx)) {
                        Ok(res) => res,
                        Err(e) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                    };
                    if !res.status().is_success() {
                        // Errors are the classifier's business, not ours.
                        this.state.set(State::Done);
                        return Poll::Ready(Ok(res.map(ValidatedBody::passthrough)));
                    }
                    shared.stats.checked();
                    let (parts, body) = res.into_parts();
                    if is_event_stream(&parts.headers) {
                        let tracker =
                            Box::new(Tracker::new(shared, parts.status, this.request.take()));
                        this.state.set(State::Holding {
                            hold: Some(Hold {
                                parts,
                                body: Box::pin(body),
                                tracker,
                                held: VecDeque::new(),
                                held_len: 0,
                                ended: false,
                            }),
                        });
                    } else {
                        let max = shared.max_body as u64;
                        if declared_len(&parts.headers).is_some_and(|n| n > max)
                            || body.size_hint().lower() > max
                        {
                            // Refused before reading a byte of it.
                            this.state.set(State::Done);
                            shared.stats.too_large();
                            return Poll::Ready(Err(BodyTooLarge::response(max).into()));
                        }
                        this.state.set(State::Buffering {
                            body,
                            parts: Some(parts),
                            buf: Collected::default(),
                        });
                    }
                }
                StateProj::Buffering {
                    mut body,
                    parts,
                    buf,
                } => match ready!(body.as_mut().poll_frame(cx)) {
                    Some(Ok(frame)) => {
                        // Trailers are dropped: LLM APIs do not send them.
                        if let Ok(data) = frame.into_data() {
                            if buf.len() + data.len() > shared.max_body {
                                // Drops what was read and the rest of the body.
                                this.state.set(State::Done);
                                shared.stats.too_large();
                                return Poll::Ready(Err(BodyTooLarge::response(
                                    shared.max_body as u64,
                                )
                                .into()));
                            }
                            buf.push(data);
                        }
                    }
                    Some(Err(e)) => {
                        this.state.set(State::Done);
                        return Poll::Ready(Err(e.into()));
                    }
                    None => {
                        let bytes = buf.take();
                        let Some(parts) = parts.take() else {
                            return Poll::Ready(Err(
                                "validate future polled after completion".into()
                            ));
                        };
                        this.state.set(State::Done);
                        let verdict = check_buffered(
                            &*shared.validator,
                            &parts,
                            &bytes,
                            shared.wire,
                            shared.max_body,
                            this.request.as_ref(),
                        );
                        return Poll::Ready(match verdict {
                            // A well-formed answer rejected for its content is
                            // kept with its rejection: when every provider's is
                            // rejected so, the caller gets the last one
                            // (`AllProvidersFailed::answer`).
                            Verdict::Reject(e) => Err(shared.reject(e.with_answer(bytes))),
                            _ => {
                                shared.stats.passed();
                                Ok(Response::from_parts(parts, ValidatedBody::full(bytes)))
                            }
                        });
                    }
                },
                StateProj::Holding { hold } => {
                    let Some(h) = hold.as_mut() else {
                        return Poll::Ready(Err("validate future polled after completion".into()));
                    };
                    let decision = match ready!(h.body.as_mut().poll_frame(cx)) {
                        Some(Ok(frame)) => {
                            let mut decide = false;
                            if let Some(data) = frame.data_ref() {
                                h.held_len += data.len();
                                match h.tracker.feed(data) {
                                    Ok(any) => decide = any,
                                    Err(e) => {
                                        this.state.set(State::Done);
                                        let e = Invalid::new(RejectKind::Shape, e.to_string());
                                        return Poll::Ready(Err(shared.reject(e)));
                                    }
                                }
                            }
                            h.held.push_back(frame);
                            if decide || h.held_len >= shared.hold_limit {
                                h.decide(shared)
                            } else {
                                Decision::Hold
                            }
                        }
                        Some(Err(e)) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e.into()));
                        }
                        None => {
                            h.ended = true;
                            if h.tracker.facts.terminal {
                                h.decide(shared)
                            } else {
                                let n = h.tracker.facts.events;
                                Decision::Reject(Invalid::new(
                                    RejectKind::Truncated,
                                    format!(
                                        "stream ended after {n} events, before its terminal event"
                                    ),
                                ))
                            }
                        }
                    };
                    match decision {
                        Decision::Hold => {}
                        Decision::Reject(e) => {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(shared.reject(e)));
                        }
                        Decision::Commit => {
                            let Some(h) = hold.take() else {
                                return Poll::Ready(Err(
                                    "validate future polled after completion".into()
                                ));
                            };
                            this.state.set(State::Done);
                            shared.stats.passed();
                            let Hold {
                                mut parts,
                                body,
                                mut tracker,
                                held,
                                ended,
                                ..
                            } = h;
                            if !tracker.judged_complete {
                                tracker.headers = parts.headers.clone();
                            }
                            // The layers above that judge the answer at the end of its
                            // body learn of a rejection found after this point through
                            // the response's late verdict (shared with a validation
                            // further below, if one put it there first). A stream that
                            // has already ended, or been judged complete, can find none.
                            let late = (!ended && !tracker.judged_complete).then(|| {
                                parts
                                    .extensions
                                    .get_or_insert_with(LateVerdict::new)
                                    .clone()
                            });
                            let body = ValidatedBody::stream(
                                held,
                                body,
                                ended,
                                tracker,
                                late,
                                shared.clone(),
                            );
                            return Poll::Ready(Ok(Response::from_parts(parts, body)));
                        }
                    }
                }
                StateProj::Done => {
                    return Poll::Ready(Err("validate future polled after completion".into()));
                }
            }
        }
    }
}

impl<F, B> fmt::Debug for ResponseFuture<F, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}
