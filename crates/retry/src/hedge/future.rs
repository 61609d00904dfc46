//! The future of [`Hedge`](super::Hedge).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::Request;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::BoxError;
use tower_failover_core::metrics;
use tower_service::Service;

use super::shared::HedgeShared;

pin_project! {
    /// The future of [`Hedge`](super::Hedge).
    pub struct ResponseFuture<S: Service<Request<B>>, B> {
        #[pin]
        first: Option<S::Future>,
        #[pin]
        second: Option<S::Future>,
        #[pin]
        sleep: Sleep,
        svc: Option<S>,
        copy: Option<Request<B>>,
        first_error: Option<BoxError>,
        approved: Option<bool>,
        shared: Arc<HedgeShared>,
        started: Instant,
    }
}

impl<S: Service<Request<B>>, B> ResponseFuture<S, B> {
    pub(super) fn new(
        first: S::Future,
        svc: S,
        copy: Request<B>,
        shared: Arc<HedgeShared>,
        started: Instant,
    ) -> Self {
        ResponseFuture {
            first: Some(first),
            second: None,
            sleep: tokio::time::sleep_until(started + shared.delay()),
            svc: Some(svc),
            copy: Some(copy),
            first_error: None,
            approved: None,
            shared,
            started,
        }
    }
}

impl<S: Service<Request<B>>, B> fmt::Debug for ResponseFuture<S, B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<S, B> Future for ResponseFuture<S, B>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
{
    type Output = Result<S::Response, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();

        if let Some(fut) = this.first.as_mut().as_pin_mut()
            && let Poll::Ready(r) = fut.poll(cx)
        {
            this.first.set(None);
            match r {
                Ok(res) => {
                    this.shared.record(this.started.elapsed());
                    return Poll::Ready(Ok(res));
                }
                Err(e) if this.second.is_none() && this.copy.is_none() => {
                    return Poll::Ready(Err(e.into()));
                }
                // The hedge is running or may still be sent: let it answer.
                Err(e) => *this.first_error = Some(e.into()),
            }
        }

        if let Some(fut) = this.second.as_mut().as_pin_mut()
            && let Poll::Ready(r) = fut.poll(cx)
        {
            this.second.set(None);
            match r {
                Ok(res) => {
                    this.shared.record(this.started.elapsed());
                    return Poll::Ready(Ok(res));
                }
                Err(e) if this.first.is_none() => {
                    // Both failed: report the first attempt's error (the hedge's
                    // failure adds nothing the caller can act on).
                    return Poll::Ready(Err(this.first_error.take().unwrap_or_else(|| e.into())));
                }
                Err(_) => {}
            }
        }

        // Send the hedge when its time comes (or at once if the first attempt failed).
        if this.copy.is_some() {
            let due = this.first_error.is_some() || this.sleep.as_mut().poll(cx).is_ready();
            if due {
                // Ask the budget once, however often readiness is pending.
                let shared = &*this.shared;
                let allowed = *this.approved.get_or_insert_with(|| {
                    let paid = shared.budget.as_ref().is_none_or(|b| b.withdraw());
                    if !paid {
                        metrics::count(metrics::names::BUDGET_EXHAUSTED);
                    }
                    paid
                });
                let svc = this.svc.as_mut();
                match (allowed, svc) {
                    (true, Some(svc)) => match svc.poll_ready(cx) {
                        Poll::Ready(Ok(())) => {
                            if let Some(copy) = this.copy.take() {
                                metrics::count(metrics::names::HEDGES);
                                tracing::debug!(
                                    after_ms = this.started.elapsed().as_millis() as u64,
                                    "hedging"
                                );
                                this.second.set(Some(svc.call(copy)));
                                *this.svc = None;
                                // Poll the new attempt once so it registers its waker.
                                cx.waker().wake_by_ref();
                            }
                        }
                        Poll::Ready(Err(_)) => {
                            *this.copy = None;
                        }
                        Poll::Pending => {}
                    },
                    _ => {
                        *this.copy = None;
                    }
                }
                if this.copy.is_none() && this.second.is_none() && this.first.is_none() {
                    let err = this
                        .first_error
                        .take()
                        .unwrap_or_else(|| "hedge: no attempt left".into());
                    return Poll::Ready(Err(err));
                }
            }
        }
        Poll::Pending
    }
}
