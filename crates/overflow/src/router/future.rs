//! The response future of [`Overflow`](crate::Overflow): the attempt in flight,
//! the hops after a 429, and the wait in the pacing queue.

use std::error::Error;
use std::fmt;
use std::future::Future;
use std::mem;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::BoxError;
use tower_failover_core::error::{AllProvidersFailed, Attempt};
use tower_failover_core::metrics;
use tower_failover_core::replay::clone_request;
use tower_failover_core::{Classify, Deadline, Outcome};
use tower_service::Service;

use crate::error::{REASON_ALL_LIMITED, REASON_BUDGET, REASON_QUEUE_FULL, REASON_TOO_LONG};
use crate::router::service::not_sent;
use crate::router::shared::{Shared, bit};

pin_project! {
    /// The future of [`Overflow`](crate::Overflow).
    ///
    /// On the happy path it only forwards the primary's future (no allocation).
    /// After a 429 or a refusal it sends a copy of the request to the next
    /// available target; when every target is limited it waits in the pacing queue
    /// or fails with [`AllProvidersFailed`].
    pub struct ResponseFuture<S, B, C>
    where
        S: Service<Request<B>>,
    {
        #[pin]
        state: State<S::Future>,
        ctx: Ctx<S, B, C>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        // An attempt is in flight.
        Calling {
            #[pin]
            fut: F,
        },
        // A fresh service (in `ctx.svc`) is being made ready.
        Readying,
        // Waiting in the pacing queue.
        Sleeping {
            sleep: Pin<Box<Sleep>>,
        },
        // Gave up: the error is in `ctx.error`.
        Failed,
        Done,
    }
}

/// What to do next.
enum Step {
    Try(usize),
    Wait(Instant),
    Fail(BoxError),
}

struct Ctx<S, B, C> {
    shared: Arc<Shared<S, C>>,
    /// The caller's request, kept for another attempt (`None` once given away).
    req: Option<Request<B>>,
    /// Whether attempts get copies (false: the only possible attempt takes it).
    keep: bool,
    /// A fresh service being made ready for target `current`.
    svc: Option<S>,
    current: usize,
    /// Targets this request reached and that answered 429: never again.
    sent: u64,
    /// Targets that refused it without sending, since the last wait.
    refused: u64,
    attempts: Vec<Attempt>,
    started: Instant,
    /// When the pacing wait ends, set on first entering the queue.
    deadline: Option<Instant>,
    /// Whether a place in the pacing queue is held.
    queued: bool,
    /// A provider already answered this request: the next send is a retry.
    owe_budget: bool,
    /// The target the last attempt was sent to: the next send is a failover from
    /// it.
    failed_at: Option<usize>,
    error: Option<BoxError>,
}

impl<S, B, C> Drop for Ctx<S, B, C> {
    fn drop(&mut self) {
        self.leave_queue();
    }
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<B>> + Clone,
    B: Clone,
{
    fn with(
        shared: Arc<Shared<S, C>>,
        req: Option<Request<B>>,
        current: usize,
        now: Instant,
    ) -> Ctx<S, B, C> {
        let keep = shared.len() > 1 || shared.config.pacing.capacity > 0;
        Ctx {
            shared,
            req,
            keep,
            svc: None,
            current,
            sent: 0,
            refused: 0,
            attempts: Vec::new(),
            started: now,
            deadline: None,
            queued: false,
            owe_budget: false,
            failed_at: None,
            error: None,
        }
    }

    /// The attempt on a reserved service has started; `keep` is the copy for later.
    pub(crate) fn calling(
        shared: Arc<Shared<S, C>>,
        keep: Option<Request<B>>,
        current: usize,
        fut: S::Future,
        now: Instant,
    ) -> Self {
        ResponseFuture {
            state: State::Calling { fut },
            ctx: Self::with(shared, keep, current, now),
        }
    }

    /// Target `i` is available but no service is reserved for it.
    pub(crate) fn start(
        shared: Arc<Shared<S, C>>,
        req: Request<B>,
        i: usize,
        now: Instant,
    ) -> Self {
        let svc = shared.service(i);
        let mut ctx = Self::with(shared, Some(req), i, now);
        ctx.svc = Some(svc);
        ResponseFuture {
            state: State::Readying,
            ctx,
        }
    }

    /// Nothing is available now.
    pub(crate) fn wait_or_fail(shared: Arc<Shared<S, C>>, req: Request<B>, now: Instant) -> Self {
        let mut ctx = Self::with(shared, Some(req), 0, now);
        let step = ctx.next(now);
        let state = match step {
            Step::Try(i) => {
                ctx.svc = Some(ctx.shared.service(i));
                ctx.current = i;
                State::Readying
            }
            Step::Wait(at) => State::Sleeping {
                sleep: Box::pin(sleep_until(at)),
            },
            Step::Fail(e) => {
                ctx.error = Some(e);
                State::Failed
            }
        };
        ResponseFuture { state, ctx }
    }
}

impl<S, B, C> Ctx<S, B, C> {
    fn leave_queue(&mut self) {
        if self.queued {
            self.queued = false;
            self.shared.leave_queue();
        }
    }
}

impl<S, B, C> Ctx<S, B, C>
where
    S: Clone,
    B: Clone,
{
    /// The request for the next attempt.
    fn request_for_attempt(&mut self) -> Option<Request<B>> {
        if self.keep {
            self.req.as_ref().map(clone_request)
        } else {
            self.req.take()
        }
    }

    /// Records the attempt on `current` and decides where the request goes next.
    fn hop(
        &mut self,
        sent: bool,
        outcome: Outcome,
        err: Option<&(dyn Error + 'static)>,
        now: Instant,
    ) -> Step {
        let target = &self.shared.targets[self.current];
        let outcome_wait = outcome;
        let mut attempt = Attempt::new(
            target.health.id().clone(),
            outcome,
            now.saturating_duration_since(self.started),
        );
        if let Some(e) = err {
            attempt = attempt.with_error_of(e);
        }
        self.attempts.push(attempt);
        if sent {
            // The observe layer below (if any) has marked the group and published it;
            // mark it here too, quietly, so that no stack without one sends this
            // target anything inside the window. A later deadline always wins.
            if let Outcome::RateLimited { retry_after } = outcome_wait {
                let wait = retry_after.unwrap_or(self.shared.config.default_retry_after);
                target.health.quota().limit_until(now + wait);
            }
            tracing::debug!(provider = %target.health.id(), %outcome, "overflowing");
            self.sent |= bit(self.current);
            self.owe_budget = true;
            self.failed_at = Some(self.current);
        } else {
            self.refused |= bit(self.current);
        }
        self.next(now)
    }

    /// The first available target this request has not met yet; else a wait in the
    /// pacing queue for the earliest one limited only by its quota; else failure.
    fn next(&mut self, now: Instant) -> Step {
        let Some(req) = self.req.as_ref() else {
            return Step::Fail(self.give_up(now, None));
        };
        let request_deadline = Deadline::of(req);
        if let Some(i) = self.shared.first_available(now, self.sent | self.refused) {
            self.leave_queue();
            return Step::Try(i);
        }
        let pacing = self.shared.config.pacing;
        if pacing.capacity == 0 {
            return Step::Fail(self.give_up(now, Some(REASON_ALL_LIMITED)));
        }
        // A target that refused unsent is worth waiting for only while it is
        // limited (`release_at` in the future); one that answered 429 never is.
        let release = (0..self.shared.len())
            .filter(|&i| self.sent & bit(i) == 0)
            .filter_map(|i| self.shared.release_at(i, now))
            .filter(|&at| at > now)
            .min();
        let Some(release) = release else {
            return Step::Fail(self.give_up(now, None));
        };
        let deadline = *self.deadline.get_or_insert_with(|| {
            let own = now + pacing.max_wait;
            request_deadline.map_or(own, |Deadline(d)| own.min(d))
        });
        if release > deadline {
            return Step::Fail(self.give_up(now, Some(REASON_TOO_LONG)));
        }
        if !self.queued {
            if !self.shared.enter_queue() {
                return Step::Fail(self.give_up(now, Some(REASON_QUEUE_FULL)));
            }
            self.queued = true;
        }
        Step::Wait(release)
    }

    fn give_up(&mut self, now: Instant, reason: Option<&'static str>) -> BoxError {
        self.leave_queue();
        metrics::count(metrics::names::ALL_FAILED);
        let mut err = AllProvidersFailed::new(mem::take(&mut self.attempts))
            .with_retry_after(self.shared.earliest_recovery(now));
        if let Some(reason) = reason {
            err = err.with_reason(reason);
        }
        err.into()
    }

    fn budget_refuses(&mut self) -> bool {
        if !mem::take(&mut self.owe_budget) {
            return false;
        }
        let refused = self.shared.budget.as_ref().is_some_and(|b| !b.withdraw());
        if refused {
            metrics::count(metrics::names::BUDGET_EXHAUSTED);
        }
        refused
    }

    /// The span of the attempt about to be sent to `current` (the first one is
    /// sent by the service; this is a later one).
    fn attempt_span(&self, req: &Request<B>) -> tracing::Span {
        let number = self.sent.count_ones() + 1;
        let id = self.shared.targets[self.current].health.id();
        tower_failover_core::trace::attempt_span(id, number, req.headers())
    }

    /// The attempt on `current` is being sent: a failover if the last one failed
    /// elsewhere.
    fn sending(&mut self) {
        if let Some(from) = self.failed_at.take()
            && from != self.current
        {
            let from = self.shared.targets[from].health.id();
            self.shared.targets[self.current]
                .health
                .metrics()
                .failover_from(from);
        }
    }
}

fn apply<S, B, C, F>(mut state: Pin<&mut State<F>>, ctx: &mut Ctx<S, B, C>, step: Step)
where
    S: Clone,
{
    match step {
        Step::Try(i) => {
            ctx.svc = Some(ctx.shared.service(i));
            ctx.current = i;
            state.set(State::Readying);
        }
        Step::Wait(at) => match state.as_mut().project() {
            StateProj::Sleeping { sleep } => sleep.as_mut().reset(at),
            _ => state.set(State::Sleeping {
                sleep: Box::pin(sleep_until(at)),
            }),
        },
        Step::Fail(err) => {
            ctx.error = Some(err);
            state.set(State::Failed);
        }
    }
}

impl<S, B, C> fmt::Debug for ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B, C, RB> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    C: Classify,
    B: Clone,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let step = match this.state.as_mut().project() {
                StateProj::Calling { fut } => match ready!(fut.poll(cx)) {
                    Ok(res) => {
                        let outcome = this.ctx.shared.classifier.classify_response(&res);
                        // A 429, or a refusal of the operator's account (a rejected
                        // key, a billing failure such as OpenAI's 429
                        // `insufficient_quota`): the next target, at once. The
                        // account refusal's body is never the caller's to see.
                        let account =
                            matches!(outcome, Outcome::Failure { kind } if kind.is_account());
                        if outcome.is_unsupported() {
                            // Well formed, but this target's API lacks a feature the
                            // request uses: another available target may serve it.
                            // Answered as it is when none is left and every target
                            // tried refused the same way.
                            let now = Instant::now();
                            let ctx = &mut *this.ctx;
                            let met = ctx.sent | ctx.refused | bit(ctx.current);
                            if ctx.req.is_some() && ctx.shared.first_available(now, met).is_some() {
                                drop(res);
                                ctx.hop(false, outcome, None, now)
                            } else if ctx.attempts.iter().all(|a| a.outcome.is_unsupported()) {
                                this.state.set(State::Done);
                                return Poll::Ready(Ok(res));
                            } else {
                                ctx.attempts.push(Attempt::new(
                                    ctx.shared.targets[ctx.current].health.id().clone(),
                                    outcome,
                                    now.saturating_duration_since(ctx.started),
                                ));
                                this.state.set(State::Done);
                                return Poll::Ready(Err(ctx.give_up(now, None)));
                            }
                        } else if !account && !matches!(outcome, Outcome::RateLimited { .. }) {
                            this.state.set(State::Done);
                            return Poll::Ready(Ok(res));
                        } else {
                            drop(res);
                            this.ctx.hop(true, outcome, None, Instant::now())
                        }
                    }
                    Err(e) => {
                        let e: BoxError = e.into();
                        let outcome = this.ctx.shared.classifier.classify_error(&*e);
                        if !not_sent(&outcome) {
                            this.state.set(State::Done);
                            return Poll::Ready(Err(e));
                        }
                        this.ctx.hop(false, outcome, Some(&*e), Instant::now())
                    }
                },
                StateProj::Readying => {
                    let ctx = &mut *this.ctx;
                    let Some(mut svc) = ctx.svc.take() else {
                        this.state.set(State::Done);
                        return Poll::Ready(Err("overflow future lost its service".into()));
                    };
                    match svc.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            if ctx.budget_refuses() {
                                Step::Fail(ctx.give_up(Instant::now(), Some(REASON_BUDGET)))
                            } else if let Some(req) = ctx.request_for_attempt() {
                                ctx.sending();
                                let span = ctx.attempt_span(&req);
                                let fut = {
                                    let _in = span.enter();
                                    svc.call(req)
                                };
                                ctx.started = Instant::now();
                                this.state.set(State::Calling { fut });
                                continue;
                            } else {
                                Step::Fail(ctx.give_up(Instant::now(), None))
                            }
                        }
                        Poll::Pending => {
                            let now = Instant::now();
                            if ctx.shared.available(ctx.current, now) {
                                ctx.svc = Some(svc);
                                return Poll::Pending;
                            }
                            // Limited while we waited for it: go elsewhere, unsent.
                            ctx.refused |= bit(ctx.current);
                            ctx.next(now)
                        }
                        Poll::Ready(Err(e)) => {
                            let e: BoxError = e.into();
                            let outcome = ctx.shared.classifier.classify_error(&*e);
                            if !not_sent(&outcome) {
                                this.state.set(State::Done);
                                return Poll::Ready(Err(e));
                            }
                            ctx.hop(false, outcome, Some(&*e), Instant::now())
                        }
                    }
                }
                StateProj::Sleeping { sleep } => {
                    ready!(sleep.as_mut().poll(cx));
                    this.ctx.refused = 0;
                    this.ctx.next(Instant::now())
                }
                StateProj::Failed => {
                    let err = this
                        .ctx
                        .error
                        .take()
                        .unwrap_or_else(|| "overflow future polled after completion".into());
                    this.state.set(State::Done);
                    return Poll::Ready(Err(err));
                }
                StateProj::Done => {
                    return Poll::Ready(Err("overflow future polled after completion".into()));
                }
            };
            apply(this.state.as_mut(), this.ctx, step);
        }
    }
}
