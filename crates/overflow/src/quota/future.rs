//! The response future of [`Quota`](crate::Quota).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use http::{Response, StatusCode};
use pin_project_lite::pin_project;
use tower::BoxError;
use tower_failover_core::ErrorHint;
use tower_failover_core::error::RateLimited;

use crate::quota::service::Core;
use crate::tracker::Ticket;

pin_project! {
    /// The future of [`Quota`](crate::Quota): the inner call, whose response headers
    /// feed the tracker, or a refusal made without sending.
    pub struct ResponseFuture<F> {
        #[pin]
        kind: Kind<F>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F> {
        Sent {
            #[pin]
            fut: F,
            core: Arc<Core>,
            ticket: Ticket,
        },
        Refused {
            error: Option<RateLimited>,
        },
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn sent(fut: F, core: Arc<Core>, ticket: Ticket) -> Self {
        ResponseFuture {
            kind: Kind::Sent { fut, core, ticket },
        }
    }

    pub(crate) fn refused(error: RateLimited) -> Self {
        ResponseFuture {
            kind: Kind::Refused { error: Some(error) },
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<RB>, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Sent { fut, core, ticket } => {
                let res = ready!(fut.poll(cx)).map_err(Into::into)?;
                // A 429 that refuses the account for billing (`insufficient_quota`)
                // is no rate-limit window: the circuit breaker handles it.
                let billing = res.extensions().get::<ErrorHint>() == Some(&ErrorHint::Billing);
                let status = match res.status() {
                    StatusCode::TOO_MANY_REQUESTS if billing => StatusCode::PAYMENT_REQUIRED,
                    s => s,
                };
                core.observe(status, res.headers(), ticket);
                Poll::Ready(Ok(res))
            }
            KindProj::Refused { error } => Poll::Ready(Err(match error.take() {
                Some(e) => e.into(),
                None => "quota future polled after completion".into(),
            })),
        }
    }
}
