//! The response future of [`Balance`](crate::Balance) and
//! [`Fallback`](crate::Fallback): picks a provider, waits for it to be ready (never
//! for one known dead), sends, classifies, and on a retryable outcome moves on to a
//! provider this request has not tried.
//!
//! # Allocation
//!
//! On the happy path (first provider answers) the future allocates nothing of its
//! own: the provider table is shared (`Arc`), the tried set keeps its first four
//! providers inline, and one timer (inline) serves the total deadline,
//! the attempt timeout and the wait for a not-ready provider, created only when one
//! of them applies. The clock is read once per attempt on the happy path.
//! What remains per attempt is the copy of the request
//! ([`clone_request`]: the header map
//! and extensions are copied, the body is a reference-counted `Bytes` clone with a
//! [`ReplayBody`](tower_failover_core::replay::ReplayBody)) and an instance of
//! the provider's service (reused from an earlier attempt, else a clone). The last
//! attempt there can be (every provider tried, none parked: the only attempt of a
//! one-provider group) is sent the request itself, not a copy. Failed attempts
//! are recorded in a `Vec` (allocated on the first failure), and a request that
//! passes over more than four providers gets a bit set over the table.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep, sleep_until};
use tower::BoxError;
use tower_failover_core::error::{AllProvidersFailed, Attempt, Elapsed, TimeoutKind};
use tower_failover_core::metrics;
use tower_failover_core::replay::clone_request;
use tower_failover_core::rng::Rng;
use tower_failover_core::{
    AttemptDeadline, Classify, ClientErrorKind, FailureKind, Outcome, RejectKind,
};
use tower_failover_core::{time, trace};
use tower_service::Service;

use crate::error::TotalTimeout;
use crate::pick::{LazyNow, Pick, available, select};
use crate::table::{Admitted, Route, Table, Tried};

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Idle,
        Calling {
            #[pin]
            fut: F,
        },
        Done,
    }
}

pin_project! {
    /// The future of [`Balance`](crate::Balance) and [`Fallback`](crate::Fallback).
    pub struct ResponseFuture<S: Service<Request<B>>, B, C> {
        #[pin]
        state: State<S::Future>,
        // One timer for the earliest of: the total deadline, the attempt's
        // deadline, the end of the wait for a not-ready provider.
        #[pin]
        timer: Option<Sleep>,
        ctx: Ctx<S, B, C>,
    }
}

impl<S: Service<Request<B>>, B, C> fmt::Debug for ResponseFuture<S, B, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("attempts", &self.ctx.attempts)
            .finish_non_exhaustive()
    }
}

/// Everything but the pinned parts.
struct Ctx<S, B, C> {
    table: Arc<Table<S>>,
    /// The request, copied for each attempt; the last attempt there can be (every
    /// provider tried, none parked) is sent the request itself.
    request: Option<Request<B>>,
    classifier: C,
    rng: Rng,
    route: Route,
    admitted: Admitted,
    tried: Tried,
    /// The provider to try next, chosen before (ramp sample, typed fallback).
    next: Option<u32>,
    /// After a typed fallback, no other provider is tried.
    closed: bool,
    attempts: Vec<Attempt>,
    /// Attempts that count against `max_attempts` (not shed ones).
    counted: u32,
    /// The next attempt is a retry and must be paid from the budget.
    owe_budget: bool,
    /// The provider the last attempt was sent to and failed at: the next one
    /// sent is a failover from it.
    failed_at: Option<u32>,
    /// Attempts sent so far (the next one's number, less one).
    sent: u32,
    /// The provider being called and since when.
    current: Option<(u32, Instant)>,
    /// A provider that was not ready, kept to wait on when nothing else is left
    /// (its instance is boxed, as every instance is: a full provider stack inline
    /// would be copied with the future every time the future moves).
    parked: Option<(u32, Box<S>)>,
    /// The request's deadline and how long it gave the request.
    deadline: Option<(Instant, Duration)>,
    /// When the attempt in flight times out.
    attempt_until: Option<Instant>,
    /// When the wait for a not-ready provider ends.
    wait_until: Option<Instant>,
    /// What the timer is set to.
    armed: Option<Instant>,
}

/// What [`Ctx::advance`] did.
enum Advance {
    /// An attempt was sent: the state holds its future.
    Called,
    Wait,
    Fail(BoxError),
}

/// What the timer says.
enum Expired {
    Total(Duration),
    Attempt,
    Wait,
}

enum Step<R> {
    Done(Result<R, BoxError>),
    Next,
}

impl<S, B, C> ResponseFuture<S, B, C>
where
    S: Service<Request<B>>,
{
    #[allow(clippy::too_many_arguments)]
    #[inline]
    pub(crate) fn new(
        table: Arc<Table<S>>,
        request: Request<B>,
        classifier: C,
        rng: Rng,
        route: Route,
        admitted: Admitted,
        next: Option<u32>,
        deadline: Option<(Instant, Duration)>,
    ) -> Self {
        let tried = Tried::new(table.len());
        ResponseFuture {
            state: State::Idle,
            timer: None,
            ctx: Ctx {
                table,
                request: Some(request),
                classifier,
                rng,
                route,
                admitted,
                tried,
                next,
                closed: false,
                attempts: Vec::new(),
                counted: 0,
                owe_budget: false,
                failed_at: None,
                sent: 0,
                current: None,
                parked: None,
                deadline,
                attempt_until: None,
                wait_until: None,
                armed: None,
            },
        }
    }
}

fn is_shed(outcome: &Outcome) -> bool {
    matches!(
        outcome,
        Outcome::Rejected {
            kind: RejectKind::Shed
        }
    )
}

impl<S, B, C> Ctx<S, B, C>
where
    S: Service<Request<B>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    C: Classify,
{
    fn select(&mut self, now: &LazyNow) -> Option<u32> {
        let pick = Pick {
            tried: &self.tried,
            admitted: &self.admitted,
            now,
            closed: self.closed,
        };
        select(&self.table, &self.route, &mut self.rng, &pick)
    }

    /// Finds the next provider that is ready and sends to it.
    ///
    /// The attempt's future is written into `state` where it is made, not returned:
    /// a provider stack's future is hundreds of bytes, and each return would copy it.
    fn advance(&mut self, state: Pin<&mut State<S::Future>>, cx: &mut Context<'_>) -> Advance {
        // Read when a pick needs it, else just before the call (see `dispatch`).
        let now = LazyNow::new();
        loop {
            let next = match self.next.take() {
                Some(i) if !self.tried.contains(i) => Some(i),
                _ => self.select(&now),
            };
            let Some(i) = next else { break };
            self.tried.insert(i);
            let mut svc = self.table.endpoint(i).instance();
            match svc.poll_ready(cx) {
                Poll::Ready(Ok(())) => return self.dispatch(i, svc, &now, state),
                Poll::Pending => {
                    // Not dead (its health said available) but not ready: go on, and
                    // come back to it only if nothing else is left.
                    if self.parked.is_none() {
                        self.parked = Some((i, svc));
                    }
                }
                Poll::Ready(Err(e)) => self.refused(i, e.into()),
            }
        }
        if let Some(mut parked) = self.parked.take() {
            match parked.1.poll_ready(cx) {
                Poll::Ready(Ok(())) => {
                    let (i, svc) = parked;
                    return self.dispatch(i, svc, &now, state);
                }
                Poll::Pending => {
                    self.parked = Some(parked);
                    return Advance::Wait;
                }
                Poll::Ready(Err(e)) => self.refused(parked.0, e.into()),
            }
        }
        Advance::Fail(self.all_failed(None, now.get()))
    }

    /// A provider's `poll_ready` failed (a breaker refusing, a closed service):
    /// nothing was sent, so no budget is owed.
    fn refused(&mut self, i: u32, err: BoxError) {
        let outcome = self.classifier.classify_error(&*err);
        self.push_attempt(i, outcome, Duration::ZERO, Some(&*err));
    }

    fn dispatch(
        &mut self,
        i: u32,
        mut svc: Box<S>,
        now: &LazyNow,
        mut state: Pin<&mut State<S::Future>>,
    ) -> Advance {
        let max = self.table.settings.failover.max_attempts;
        if max.is_some_and(|max| self.counted >= max) {
            return Advance::Fail(self.all_failed(Some("attempt limit reached"), now.get()));
        }
        if self.owe_budget {
            let paid = self.table.budget.as_ref().is_none_or(|b| b.withdraw());
            if !paid {
                metrics::count(metrics::names::BUDGET_EXHAUSTED);
                return Advance::Fail(self.all_failed(Some("retry budget exhausted"), now.get()));
            }
            self.owe_budget = false;
        }
        if let Some(from) = self.failed_at.take() {
            let from = self.table.endpoint(from).health.id();
            self.table.endpoint(i).health.metrics().failover_from(from);
        } else if cfg!(feature = "metrics")
            && self.sent == 0
            && let Some(metrics::FailedOver(from)) =
                self.request.as_ref().and_then(|r| r.extensions().get())
        {
            // The first attempt of a fallback group the model router moved on to.
            self.table.endpoint(i).health.metrics().failover_from(from);
        }
        let Some(request) = self.request.as_mut() else {
            return Advance::Fail(self.all_failed(Some("no request left to send"), now.get()));
        };
        // The attempt's start, read (unless a pick needed it already) just before
        // the call, and published to the layers below for theirs (the quota's
        // admission, the observer's latency): one clock reading for the stack.
        let now = now.get();
        self.attempt_until = self
            .table
            .settings
            .failover
            .attempt_timeout
            .map(|d| now + d);
        if let Some(at) = self.attempt_until {
            // Tell the layers below when this router's timer gives up on the
            // attempt, so that they count its end as the provider's timeout rather
            // than a cancelled caller. (The request's `Deadline`, when there is
            // one, is already in its extensions.) Set on the request kept, before
            // the copy: the next attempt's replaces it.
            AttemptDeadline::set_on(request, at);
        }
        self.sent += 1;
        let span = trace::attempt_span(
            self.table.endpoint(i).health.id(),
            self.sent,
            request.headers(),
        );
        // No copy for an attempt after which nothing can be tried: no provider
        // left untried and none parked to wait for (a group of one provider, say).
        let last = self.parked.is_none() && self.tried.covers_all();
        // The layers below adopt the span (the observe layer keeps it until the
        // answer's body ends). The attempt's request is made in the call's
        // argument: a request is 280 bytes, and each local it passed through was
        // one more copy of it.
        {
            let _in = span.enter();
            let published = time::CallingAt::publish(now);
            state.set(State::Calling {
                fut: if last {
                    svc.call(self.request.take().expect("checked above"))
                } else {
                    svc.call(clone_request(request))
                },
            });
            drop(published);
        }
        let endpoint = self.table.endpoint(i);
        // Its readiness spent, the instance can serve a later attempt.
        endpoint.give_back(svc);
        endpoint.pending.fetch_add(1, Ordering::Relaxed);
        self.current = Some((i, now));
        self.wait_until = None;
        Advance::Called
    }

    /// Ends the attempt in flight (answered, failed, timed out or dropped).
    fn finish_current(&mut self) -> Option<(u32, Instant)> {
        let (i, at) = self.current.take()?;
        self.attempt_until = None;
        self.table
            .endpoint(i)
            .pending
            .fetch_sub(1, Ordering::Relaxed);
        Some((i, at))
    }

    fn push_attempt(
        &mut self,
        i: u32,
        outcome: Outcome,
        latency: Duration,
        error: Option<&(dyn std::error::Error + 'static)>,
    ) {
        let id = self.table.endpoint(i).health.id();
        tracing::debug!(provider = %id, %outcome, latency_ms = latency.as_millis() as u64, "attempt did not succeed; trying another provider");
        let mut attempt = Attempt::new(id.clone(), outcome, latency);
        if let Some(e) = error {
            attempt = attempt.with_error_of(e);
        }
        self.attempts.push(attempt);
    }

    /// Whether a provider of this request's pool is still untried, or one is
    /// parked to wait for.
    fn untried_left(&self) -> bool {
        self.parked.is_some()
            || self
                .table
                .pool(&self.route)
                .members
                .iter()
                .any(|&m| !self.tried.contains(m))
    }

    /// Records an attempt that was sent and did not succeed.
    fn failed(
        &mut self,
        i: u32,
        outcome: Outcome,
        latency: Duration,
        error: Option<&(dyn std::error::Error + 'static)>,
    ) {
        if !is_shed(&outcome) {
            // Shed (breaker open, ramp not admitting): go elsewhere, not a failure,
            // no retry budget spent.
            self.counted += 1;
            self.owe_budget = true;
            self.failed_at = Some(i);
        }
        self.push_attempt(i, outcome, latency, error);
    }

    /// Whether `answer` ends the request as it is (the classifier calls it a
    /// success); then the attempt is finished here. Otherwise nothing is changed and
    /// [`on_result`](Self::on_result) decides.
    #[inline]
    fn answered<RB>(&mut self, answer: &Response<RB>) -> bool {
        let done = self.current.is_some() && self.classifier.classify_response(answer).is_success();
        if done {
            self.finish_current();
        }
        done
    }

    fn on_result<RB>(&mut self, res: Result<Response<RB>, S::Error>) -> Step<Response<RB>> {
        let Some((i, sent_at)) = self.finish_current() else {
            return Step::Done(Err("balance future lost its attempt".into()));
        };
        let outcome = match &res {
            Ok(res) => self.classifier.classify_response(res),
            // Errors are classified below, off the happy path.
            Err(_) => Outcome::failure(FailureKind::Other),
        };
        if outcome.is_success() {
            return Step::Done(res.map_err(Into::into));
        }
        // Off the happy path: now the clock is worth reading.
        let now = Instant::now();
        let latency = now.saturating_duration_since(sent_at);
        match res {
            Ok(res) => match outcome {
                Outcome::Success => Step::Done(Ok(res)),
                Outcome::ClientError {
                    kind: ClientErrorKind::Unsupported,
                } => {
                    // Well formed, but this provider's API lacks a feature the
                    // request uses: a provider of another kind may serve it. It did
                    // no work there (refused by the adapter before sending, or by the
                    // provider at once), so like a shed attempt it spends no attempt
                    // and no budget. With nothing left to try it is the answer if every
                    // attempt met the same refusal; after a failure elsewhere the
                    // caller hears of the failures instead (a capable provider is
                    // down: later may work).
                    self.push_attempt(i, outcome, latency, None);
                    if !self.closed && self.untried_left() {
                        drop(res);
                        return Step::Next;
                    }
                    if self.attempts.iter().all(|a| a.outcome.is_unsupported()) {
                        Step::Done(Ok(res))
                    } else {
                        Step::Done(Err(self.all_failed(None, now)))
                    }
                }
                Outcome::ClientError { kind } => {
                    let target = match kind {
                        ClientErrorKind::ContextWindowExceeded => self.table.context_fallback,
                        ClientErrorKind::ContentPolicy => self.table.policy_fallback,
                        _ => None,
                    };
                    let usable = target.filter(|&t| {
                        !self.tried.contains(t)
                            && available(&self.table.endpoint(t).health, &LazyNow::at(now))
                    });
                    match usable {
                        Some(t) => {
                            self.failed(i, outcome, latency, None);
                            self.next = Some(t);
                            self.closed = true;
                            Step::Next
                        }
                        None => Step::Done(Ok(res)),
                    }
                }
                o if o.is_retryable_elsewhere() => {
                    drop(res);
                    self.failed(i, o, latency, None);
                    Step::Next
                }
                _ => Step::Done(Ok(res)),
            },
            Err(e) => {
                let e: BoxError = e.into();
                let outcome = self.classifier.classify_error(&*e);
                if !outcome.is_retryable_elsewhere() {
                    return Step::Done(Err(e));
                }
                self.failed(i, outcome, latency, Some(&*e));
                Step::Next
            }
        }
    }

    fn on_attempt_timeout(&mut self, after: Duration) {
        let Some((i, sent_at)) = self.finish_current() else {
            return;
        };
        let elapsed = Instant::now().saturating_duration_since(sent_at);
        // The attempt's own stack never finished, so nobody measured it: the time
        // waited is a lower bound of its time to first byte, and the balancer must
        // see how slow it was.
        self.table.endpoint(i).health.observe_ttfb(elapsed);
        let err = Elapsed::new(TimeoutKind::Attempt, after);
        self.failed(
            i,
            Outcome::failure(FailureKind::Timeout),
            elapsed,
            Some(&err),
        );
    }

    /// The total deadline passed: the attempt in flight (if any) is listed as a
    /// timeout of its provider, and the error keeps every attempt.
    fn on_total_timeout(&mut self, after: Duration) -> BoxError {
        let elapsed = Elapsed::new(TimeoutKind::Total, after);
        if let Some((i, sent_at)) = self.finish_current() {
            let waited = Instant::now().saturating_duration_since(sent_at);
            self.table.endpoint(i).health.observe_ttfb(waited);
            self.push_attempt(
                i,
                Outcome::failure(FailureKind::Timeout),
                waited,
                Some(&elapsed),
            );
        }
        let attempts = std::mem::take(&mut self.attempts);
        if attempts.is_empty() {
            return elapsed.into();
        }
        TotalTimeout::new(elapsed, attempts).into()
    }

    fn all_failed(&mut self, reason: Option<&'static str>, now: Instant) -> BoxError {
        let mut err = AllProvidersFailed::new(std::mem::take(&mut self.attempts))
            .with_retry_after(self.table.earliest_recovery(&self.route, now));
        if let Some(reason) = reason {
            err = err.with_reason(reason);
        } else if self.table.pool(&self.route).members.is_empty() {
            err = err.with_reason("no provider can serve this request");
        }
        tracing::debug!(error = %err, "no provider could serve the request");
        metrics::count(metrics::names::ALL_FAILED);
        err.into()
    }
}

impl<S, B, C> Drop for Ctx<S, B, C> {
    fn drop(&mut self) {
        if let Some((i, _)) = self.current.take() {
            self.table
                .endpoint(i)
                .pending
                .fetch_sub(1, Ordering::Relaxed);
        }
    }
}

impl<S, B, C> Ctx<S, B, C> {
    /// The earliest deadline that applies now.
    fn next_deadline(&self) -> Option<Instant> {
        [
            self.deadline.map(|(at, _)| at),
            self.attempt_until,
            self.wait_until,
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Sets the timer to the earliest deadline and polls it: which deadline passed,
    /// if one did.
    fn poll_timer(
        &mut self,
        mut timer: Pin<&mut Option<Sleep>>,
        cx: &mut Context<'_>,
    ) -> Option<Expired> {
        let at = self.next_deadline()?;
        if self.armed != Some(at) {
            self.armed = Some(at);
            match timer.as_mut().as_pin_mut() {
                Some(sleep) => sleep.reset(at),
                None => timer.set(Some(sleep_until(at))),
            }
        }
        let sleep = timer.as_pin_mut()?;
        if sleep.poll(cx).is_pending() {
            return None;
        }
        let now = Instant::now();
        let passed = |t: Option<Instant>| t.is_some_and(|t| t <= now);
        if let Some((at, after)) = self.deadline
            && at <= now
        {
            return Some(Expired::Total(after));
        }
        if passed(self.attempt_until) {
            return Some(Expired::Attempt);
        }
        if passed(self.wait_until) {
            return Some(Expired::Wait);
        }
        None
    }
}

impl<S, B, C, RB> Future for ResponseFuture<S, B, C>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone,
    S::Error: Into<BoxError>,
    B: Clone,
    C: Classify,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { fut } => {
                    if let Poll::Ready(res) = fut.poll(cx) {
                        this.state.set(State::Idle);
                        // The happy path returns the answer from here: through
                        // `on_result` it would be copied twice more.
                        if let Ok(answer) = &res
                            && this.ctx.answered(answer)
                        {
                            this.state.set(State::Done);
                            this.ctx.parked = None;
                            return Poll::Ready(res.map_err(Into::into));
                        }
                        match this.ctx.on_result(res) {
                            Step::Done(out) => {
                                this.state.set(State::Done);
                                this.ctx.parked = None;
                                return Poll::Ready(out);
                            }
                            Step::Next => continue,
                        }
                    }
                }
                StateProj::Idle => match this.ctx.advance(this.state.as_mut(), cx) {
                    Advance::Called => continue,
                    Advance::Wait => {
                        let wait = this.ctx.table.settings.failover.max_ready_wait;
                        if wait.is_zero() {
                            this.state.set(State::Done);
                            this.ctx.parked = None;
                            let err = this
                                .ctx
                                .all_failed(Some("no provider is ready"), Instant::now());
                            return Poll::Ready(Err(err));
                        }
                        if this.ctx.wait_until.is_none() {
                            this.ctx.wait_until = Some(Instant::now() + wait);
                        }
                    }
                    Advance::Fail(err) => {
                        this.state.set(State::Done);
                        this.ctx.parked = None;
                        return Poll::Ready(Err(err));
                    }
                },
                StateProj::Done => {
                    return Poll::Ready(Err("balance future polled after completion".into()));
                }
            }
            // An attempt is in flight, or a provider is awaited: the deadlines.
            match this.ctx.poll_timer(this.timer.as_mut(), cx) {
                None => return Poll::Pending,
                Some(Expired::Total(after)) => {
                    this.state.set(State::Done);
                    this.ctx.parked = None;
                    return Poll::Ready(Err(this.ctx.on_total_timeout(after)));
                }
                Some(Expired::Attempt) => {
                    this.state.set(State::Idle);
                    let after = this
                        .ctx
                        .table
                        .settings
                        .failover
                        .attempt_timeout
                        .unwrap_or_default();
                    this.ctx.on_attempt_timeout(after);
                }
                Some(Expired::Wait) => {
                    this.state.set(State::Done);
                    this.ctx.parked = None;
                    let err = this
                        .ctx
                        .all_failed(Some("no provider became ready in time"), Instant::now());
                    return Poll::Ready(Err(err));
                }
            }
        }
    }
}
