//! Property test: random interleavings of several callers (clones of one breaker)
//! reserving, calling, cancelling and finishing requests with random outcomes while
//! time moves, in both open modes. Invariants checked after every step:
//!
//! - an open circuit admits nothing: the provider never sees a request while the
//!   circuit is open, and a gated `poll_ready` is pending until the cooldown ends;
//! - a half-open circuit admits at most its permits: neither the breaker's permit
//!   count nor the requests the provider has in flight from half-open admissions
//!   ever exceed them;
//! - dropping releases permits: once every future and service is dropped no permit
//!   is held, and the breaker then recovers (it is never stuck).

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use proptest::prelude::*;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};
use tower_failover_circuit::{
    CircuitBreaker, CircuitBreakerLayer, CircuitConfig, OpenMode, Window, future::ResponseFuture,
};
use tower_failover_core::error::{CircuitOpen, Elapsed, TimeoutKind, TransportError, find};
use tower_failover_core::{CircuitState, FailureKind, Health, LlmClassifier};

#[derive(Debug, Clone, Copy)]
enum Answer {
    Status(u16),
    Connect,
    Timeout,
}

#[derive(Debug, Clone)]
enum Op {
    /// `poll_ready` on caller i, and `call` at once if ready.
    ReadyCall(usize),
    /// `poll_ready` only (a caller that reserves and holds on).
    Ready(usize),
    /// The provider answers one of its pending requests.
    Resolve(usize, Answer),
    /// Poll every response future once.
    PollAll,
    /// A caller gives up on a response future.
    DropFuture(usize),
    /// A caller (service clone) goes away; a fresh clone replaces it.
    DropService(usize),
    /// Time passes.
    Advance(u64),
}

const CALLERS: usize = 3;

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        4 => Just(Answer::Status(200)),
        3 => Just(Answer::Status(503)),
        1 => Just(Answer::Status(429)),
        1 => Just(Answer::Status(400)),
        1 => Just(Answer::Connect),
        1 => Just(Answer::Timeout),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..CALLERS).prop_map(Op::ReadyCall),
        2 => (0..CALLERS).prop_map(Op::Ready),
        5 => (any::<usize>(), answer()).prop_map(|(i, a)| Op::Resolve(i, a)),
        4 => Just(Op::PollAll),
        1 => any::<usize>().prop_map(Op::DropFuture),
        1 => (0..CALLERS).prop_map(Op::DropService),
        2 => (0u64..3_000).prop_map(Op::Advance),
    ]
}

/// A provider whose every request waits for the test to answer it, and which
/// checks what the breaker lets through.
#[derive(Clone)]
struct Provider {
    health: Health,
    probe: Arc<ProbeCount>,
    pending: Arc<Mutex<Vec<oneshot::Sender<Answer>>>>,
    violations: Arc<Mutex<Vec<String>>>,
}

#[derive(Default)]
struct ProbeCount {
    now: AtomicUsize,
    max: AtomicUsize,
}

struct ProbeGuard(Arc<ProbeCount>);

impl Drop for ProbeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, Ordering::SeqCst);
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response<String>, BoxError>> + Send>>;

impl Service<Request<()>> for Provider {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = BoxFuture;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> BoxFuture {
        let guard = match self.health.circuit() {
            CircuitState::Open => {
                self.violations.lock().unwrap().push(format!(
                    "request admitted while open at {:?}",
                    Instant::now()
                ));
                None
            }
            CircuitState::HalfOpen => {
                let n = self.probe.now.fetch_add(1, Ordering::SeqCst) + 1;
                self.probe.max.fetch_max(n, Ordering::SeqCst);
                Some(ProbeGuard(self.probe.clone()))
            }
            CircuitState::Closed => None,
        };
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap().push(tx);
        Box::pin(async move {
            // The guard lives exactly as long as the request: until it is answered
            // or its future is dropped.
            let _guard = guard;
            match rx.await {
                Ok(Answer::Status(s)) => {
                    Ok(Response::builder().status(s).body(String::new()).unwrap())
                }
                Ok(Answer::Connect) => {
                    Err(TransportError::new(FailureKind::Connect, "refused").into())
                }
                Ok(Answer::Timeout) => {
                    Err(Elapsed::new(TimeoutKind::FirstByte, Duration::from_secs(1)).into())
                }
                Err(_) => Err("provider went away".into()),
            }
        })
    }
}

type Svc = CircuitBreaker<Provider, LlmClassifier>;
type Fut = Pin<Box<ResponseFuture<BoxFuture, LlmClassifier>>>;

/// Reads a finished call's body to its end, where a 2xx answer is counted.
fn read_to_end<B: http_body::Body + Unpin>(
    res: Result<Response<B>, BoxError>,
    cx: &mut Context<'_>,
) -> bool {
    let Ok(res) = res else { return false };
    let mut body = res.into_body();
    loop {
        match Pin::new(&mut body).poll_frame(cx) {
            Poll::Ready(Some(Ok(_))) => {}
            Poll::Ready(None) => return true,
            Poll::Ready(Some(Err(_))) | Poll::Pending => return false,
        }
    }
}

fn run(mode: OpenMode, permits: u32, with_window: bool, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        let health = Health::standalone("prop", "model");
        let mut config = CircuitConfig::default()
            .mode(mode)
            .consecutive_failures(2)
            .half_open(permits, 2)
            .cooldown(Duration::from_secs(1), Duration::from_secs(4))
            .healthy_period(Duration::from_secs(5))
            .seed(3);
        if with_window {
            config = config.failure_rate(0.5, Window::Time(Duration::from_secs(10)), 4);
        }
        let layer = CircuitBreakerLayer::with_config(health.clone(), config).unwrap();
        let provider = Provider {
            health: health.clone(),
            probe: Arc::default(),
            pending: Arc::default(),
            violations: Arc::default(),
        };
        let template: Svc = layer.layer(provider.clone());
        let mut callers: Vec<Svc> = (0..CALLERS).map(|_| template.clone()).collect();
        let mut futures: Vec<Fut> = Vec::new();
        let mut cx = Context::from_waker(Waker::noop());

        for op in ops {
            match op {
                Op::ReadyCall(i) | Op::Ready(i) => {
                    let now = Instant::now();
                    let shut = health.circuit() == CircuitState::Open
                        && health.open_until().is_some_and(|u| u > now);
                    match callers[i].poll_ready(&mut cx) {
                        Poll::Ready(Ok(())) => {
                            prop_assert!(
                                !(shut && mode == OpenMode::GatePollReady),
                                "gated poll_ready was ready while open"
                            );
                            if let Op::ReadyCall(_) = op {
                                let mut fut = Box::pin(callers[i].call(Request::new(())));
                                if let Poll::Ready(res) = fut.as_mut().poll(&mut cx) {
                                    // Only a refusal can finish before the provider answers.
                                    let err = res.expect_err("finished without an answer");
                                    prop_assert!(find::<CircuitOpen>(&*err).is_some());
                                } else {
                                    prop_assert!(!shut, "a call went out while open");
                                    futures.push(fut);
                                }
                            }
                        }
                        Poll::Ready(Err(e)) => prop_assert!(false, "poll_ready failed: {e}"),
                        Poll::Pending => prop_assert_eq!(
                            mode,
                            OpenMode::GatePollReady,
                            "fail-fast poll_ready must never wait"
                        ),
                    }
                }
                Op::Resolve(k, answer) => {
                    let mut pending = provider.pending.lock().unwrap();
                    if !pending.is_empty() {
                        let n = pending.len();
                        let _ = pending.remove(k % n).send(answer);
                    }
                }
                Op::PollAll => {
                    futures.retain_mut(|f| match f.as_mut().poll(&mut cx) {
                        Poll::Pending => true,
                        Poll::Ready(res) => {
                            read_to_end(res, &mut cx);
                            false
                        }
                    });
                }
                Op::DropFuture(k) => {
                    if !futures.is_empty() {
                        let n = futures.len();
                        drop(futures.remove(k % n));
                    }
                }
                Op::DropService(i) => callers[i] = template.clone(),
                Op::Advance(ms) => tokio::time::advance(Duration::from_millis(ms)).await,
            }
            prop_assert!(
                layer.probes_in_flight() <= permits,
                "{} permits held",
                layer.probes_in_flight()
            );
            prop_assert!(
                provider.probe.max.load(Ordering::SeqCst) <= permits as usize,
                "{} half-open requests in flight at once",
                provider.probe.max.load(Ordering::SeqCst)
            );
            let violations = provider.violations.lock().unwrap();
            prop_assert!(violations.is_empty(), "{:?}", *violations);
        }

        // Everyone gives up: no permit may stay held.
        drop(futures);
        drop(callers);
        prop_assert_eq!(layer.probes_in_flight(), 0);
        provider.pending.lock().unwrap().clear();

        // And the breaker is not stuck: once the longest cooldown and the failure
        // window have passed and the provider is healthy, it closes. (Before the
        // window has passed, a success that brings it to its minimum number of calls
        // may rightly trip it on the failures already in it.)
        tokio::time::advance(Duration::from_secs(11)).await;
        let mut svc = template.clone();
        for _ in 0..10 {
            prop_assert!(
                svc.poll_ready(&mut cx).is_ready(),
                "not ready after the cooldown in state {}",
                health.circuit()
            );
            let mut fut = Box::pin(svc.call(Request::new(())));
            prop_assert!(fut.as_mut().poll(&mut cx).is_pending());
            let tx = provider.pending.lock().unwrap().pop().unwrap();
            let _ = tx.send(Answer::Status(200));
            let Poll::Ready(res) = fut.as_mut().poll(&mut cx) else {
                return Err(TestCaseError::fail("a 200 did not finish the call"));
            };
            prop_assert!(read_to_end(res, &mut cx), "the 200's body did not end");
        }
        prop_assert_eq!(health.circuit(), CircuitState::Closed);
        prop_assert_eq!(layer.probes_in_flight(), 0);
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fail_fast_invariants(
        permits in 1u32..4,
        with_window in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run(OpenMode::FailFast, permits, with_window, ops)?;
    }

    #[test]
    fn gated_invariants(
        permits in 1u32..4,
        with_window in any::<bool>(),
        ops in proptest::collection::vec(op(), 1..200),
    ) {
        run(OpenMode::GatePollReady, permits, with_window, ops)?;
    }
}
