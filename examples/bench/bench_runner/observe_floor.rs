//! The least a layer with `ObserveLayer`'s contract can do, as a runner case
//! (`observe_floor`): read the clock at the call, hold the provider's record (an
//! `Arc`) and count the request in flight and waiting, stop counting it waiting at
//! the headers, wrap the body, read the clock at its first data frame, and at its end
//! count the success and leave the flight. No classification, no estimates, no
//! spans, no deadlines: what is left of `observe` above this is its logic.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};

use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;
use tower::Service;

const WAITING: u64 = 1 << 32;

/// The record: the instant its clock counts from (as a provider's `Health` keeps
/// one), the in-flight word, a success count and the last first-byte time.
pub(crate) struct Record {
    base: Instant,
    load: AtomicU64,
    successes: AtomicU64,
    ttfb_ns: AtomicU64,
}

impl Record {
    fn nanos_now(&self) -> u64 {
        Instant::now()
            .saturating_duration_since(self.base)
            .as_nanos() as u64
    }
}

#[derive(Clone)]
pub(crate) struct Floor<S> {
    inner: S,
    record: Arc<Record>,
}

impl<S> Floor<S> {
    pub(crate) fn new(inner: S) -> Self {
        let record = Record {
            base: Instant::now(),
            load: AtomicU64::new(0),
            successes: AtomicU64::new(0),
            ttfb_ns: AtomicU64::new(0),
        };
        Floor {
            inner,
            record: Arc::new(record),
        }
    }
}

impl<S, B, RB> Service<Request<B>> for Floor<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Unpin,
    RB: Body + Unpin,
{
    type Response = Response<FloorBody<RB>>;
    type Error = S::Error;
    type Future = FloorFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let started_ns = self.record.nanos_now();
        let record = self.record.clone();
        record.load.fetch_add(1 + WAITING, Ordering::AcqRel);
        FloorFuture {
            fut: self.inner.call(req),
            owed: Some((record, started_ns)),
        }
    }
}

pub(crate) struct FloorFuture<F> {
    fut: F,
    owed: Option<(Arc<Record>, u64)>,
}

impl<F, RB, E> Future for FloorFuture<F>
where
    F: Future<Output = Result<Response<RB>, E>> + Unpin,
{
    type Output = Result<Response<FloorBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let res = ready!(Pin::new(&mut this.fut).poll(cx));
        let owed = this.owed.take().expect("polled once");
        owed.0.load.fetch_sub(WAITING, Ordering::AcqRel);
        Poll::Ready(res.map(|res| {
            res.map(|inner| FloorBody {
                inner,
                owed: Some(owed),
            })
        }))
    }
}

pub(crate) struct FloorBody<B> {
    inner: B,
    owed: Option<(Arc<Record>, u64)>,
}

impl<B: Body + Unpin> Body for FloorBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.get_mut();
        let frame = ready!(Pin::new(&mut this.inner).poll_frame(cx));
        if let Some((record, started_ns)) = this.owed.take() {
            let now_ns = record.nanos_now();
            record
                .ttfb_ns
                .store(now_ns.saturating_sub(started_ns), Ordering::Relaxed);
            record.successes.fetch_add(1, Ordering::Relaxed);
            record.load.fetch_sub(1, Ordering::Release);
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
