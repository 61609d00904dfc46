//! Balance and Fallback as services, against mock providers, under paused time.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::Instant;
use tower::retry::budget::TpsBudget;
use tower::{BoxError, Service, ServiceExt};
use tower_failover_balance::{
    Balance, BalanceConfig, Fallback, FallbackConfig, Policy, ProviderOptions, RequestAttrs,
};
use tower_failover_core::error::{
    AllProvidersFailed, CircuitOpen, Elapsed, Shed, TimeoutKind, find,
};
use tower_failover_core::observe::ObserveLayer;
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{
    CircuitState, Deadline, ErrorHint, FailureKind, Health, Outcome, ProviderId, RejectKind,
};

/// What a mock provider does with a request.
#[derive(Clone, Copy, Debug)]
enum Act {
    Status(u16),
    Hint(ErrorHint),
    Delay(Duration),
    Hang,
    ShedErr,
    OpenErr,
}

type BoxFut = Pin<Box<dyn Future<Output = Result<Response<ReplayBody>, BoxError>> + Send>>;

/// A mock provider: counts calls, acts as told, readiness switchable.
#[derive(Clone)]
struct Mock {
    name: &'static str,
    calls: Arc<AtomicUsize>,
    act: Arc<Mutex<Act>>,
    ready: Arc<Gate>,
    ready_err: Arc<AtomicBool>,
}

#[derive(Default)]
struct Gate {
    closed: AtomicBool,
    wakers: Mutex<Vec<Waker>>,
}

impl Gate {
    fn set(&self, open: bool) {
        self.closed.store(!open, Ordering::SeqCst);
        if open {
            for w in self.wakers.lock().unwrap().drain(..) {
                w.wake();
            }
        }
    }
}

impl Mock {
    fn new(name: &'static str, act: Act) -> Self {
        Mock {
            name,
            calls: Arc::default(),
            act: Arc::new(Mutex::new(act)),
            ready: Arc::default(),
            ready_err: Arc::default(),
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    fn set(&self, act: Act) {
        *self.act.lock().unwrap() = act;
    }
}

impl Service<Request<ReplayBody>> for Mock {
    type Response = Response<ReplayBody>;
    type Error = BoxError;
    type Future = BoxFut;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.ready_err.load(Ordering::SeqCst) {
            return Poll::Ready(Err(CircuitOpen::new(Duration::from_secs(9)).into()));
        }
        if self.ready.closed.load(Ordering::SeqCst) {
            self.ready.wakers.lock().unwrap().push(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<ReplayBody>) -> BoxFut {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let act = *self.act.lock().unwrap();
        let name = self.name;
        Box::pin(async move {
            let res = |status: u16| {
                Response::builder()
                    .status(status)
                    .header("x-from", name)
                    .body(ReplayBody::from(name))
                    .unwrap()
            };
            match act {
                Act::Status(s) => Ok(res(s)),
                Act::Hint(h) => {
                    let mut r = res(400);
                    r.extensions_mut().insert(h);
                    Ok(r)
                }
                Act::Delay(d) => {
                    tokio::time::sleep(d).await;
                    Ok(res(200))
                }
                Act::Hang => std::future::pending().await,
                Act::ShedErr => Err(Shed::new("ramp").into()),
                Act::OpenErr => Err(CircuitOpen::new(Duration::from_secs(5)).into()),
            }
        })
    }
}

fn req() -> Request<ReplayBody> {
    Request::post("/v1/chat/completions")
        .body(ReplayBody::from("{}"))
        .unwrap()
}

fn from(res: &Response<ReplayBody>) -> &str {
    res.headers()["x-from"].to_str().unwrap()
}

fn health(name: &str) -> Health {
    Health::standalone(name, "m")
}

async fn send<S>(svc: &mut S) -> Result<Response<ReplayBody>, BoxError>
where
    S: Service<Request<ReplayBody>, Response = Response<ReplayBody>, Error = BoxError>,
{
    svc.ready().await?.call(req()).await
}

#[tokio::test(start_paused = true)]
async fn retryable_outcomes_go_to_an_untried_provider_once_each() {
    let a = Mock::new("a", Act::Status(503));
    let b = Mock::new("b", Act::Status(200));
    let mut fallback = Fallback::new([(health("a"), a.clone()), (health("b"), b.clone())]);
    let res = send(&mut fallback).await.unwrap();
    assert_eq!(from(&res), "b");
    assert_eq!((a.calls(), b.calls()), (1, 1));

    b.set(Act::Status(529));
    let err = send(&mut fallback).await.unwrap_err();
    let all = find::<AllProvidersFailed>(&*err).expect("all failed");
    let got: Vec<(String, Outcome)> = all
        .attempts()
        .iter()
        .map(|a| (a.provider.to_string(), a.outcome))
        .collect();
    assert_eq!(
        got,
        [
            (
                "a/m".to_string(),
                Outcome::failure(FailureKind::Status(503))
            ),
            ("b/m".to_string(), Outcome::failure(FailureKind::Overloaded)),
        ]
    );
    assert_eq!((a.calls(), b.calls()), (2, 2), "each provider tried once");
    assert_eq!(
        err.to_string(),
        "all providers failed: a/m: failure (status 503) after 0 ms; b/m: failure (overloaded) after 0 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn open_providers_are_skipped_instantly_and_all_down_fails_fast() {
    let a = Mock::new("a", Act::Hang);
    let b = Mock::new("b", Act::Status(200));
    let (ha, hb) = (health("a"), health("b"));
    let mut balance = Balance::builder()
        .seed(3)
        .provider(ha.clone(), a.clone())
        .provider(hb.clone(), b.clone())
        .build()
        .unwrap();
    let until = Instant::now() + Duration::from_secs(30);
    assert!(ha.transition(CircuitState::Closed, CircuitState::Open, Some(until)));
    for _ in 0..20 {
        assert_eq!(from(&send(&mut balance).await.unwrap()), "b");
    }
    assert_eq!(a.calls(), 0, "no request reached the open provider");

    hb.mark_rate_limited(Duration::from_secs(12));
    let start = Instant::now();
    let err = send(&mut balance).await.unwrap_err();
    assert_eq!(Instant::now(), start, "failed without waiting on anything");
    let all = find::<AllProvidersFailed>(&*err).unwrap();
    assert!(all.attempts().is_empty());
    assert_eq!(all.retry_after(), Some(Duration::from_secs(12)));
    assert_eq!(
        err.to_string(),
        "all providers failed: none available; retry after 12000 ms"
    );
}

#[tokio::test(start_paused = true)]
async fn unready_providers_are_passed_over_then_waited_on_briefly() {
    let a = Mock::new("a", Act::Status(200));
    let b = Mock::new("b", Act::Status(200));
    a.ready.set(false);
    let mut fallback = Fallback::builder()
        .config(FallbackConfig::default().max_ready_wait(Duration::from_millis(300)))
        .provider(health("a"), a.clone())
        .provider(health("b"), b.clone())
        .build()
        .unwrap();
    assert_eq!(from(&send(&mut fallback).await.unwrap()), "b");

    // Nothing else left: wait for the pending one, which becomes ready in time.
    b.set(Act::Status(503));
    let gate = a.ready.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(100)).await;
        gate.set(true);
    });
    let start = Instant::now();
    assert_eq!(from(&send(&mut fallback).await.unwrap()), "a");
    assert_eq!(Instant::now() - start, Duration::from_millis(100));

    // It stays pending: the wait is bounded.
    a.ready.set(false);
    let start = Instant::now();
    let err = send(&mut fallback).await.unwrap_err();
    assert_eq!(Instant::now() - start, Duration::from_millis(300));
    let all = find::<AllProvidersFailed>(&*err).unwrap();
    assert_eq!(all.reason(), Some("no provider became ready in time"));
    assert_eq!(all.attempts().len(), 1, "b's 503");
}

#[tokio::test(start_paused = true)]
async fn breaker_refusals_go_elsewhere_without_spending_retry_budget() {
    // A budget with nothing in it: no retry allowed at all.
    let budget = Arc::new(TpsBudget::new(Duration::from_secs(10), 0, 0.0));
    let a = Mock::new("a", Act::ShedErr);
    let b = Mock::new("b", Act::OpenErr);
    let c = Mock::new("c", Act::Status(200));
    c.ready_err.store(false, Ordering::SeqCst);
    let d = Mock::new("d", Act::Status(200));
    d.ready_err.store(true, Ordering::SeqCst);
    let mut fallback = Fallback::builder()
        .budget(budget)
        .provider(health("d"), d.clone())
        .provider(health("a"), a.clone())
        .provider(health("b"), b.clone())
        .provider(health("c"), c.clone())
        .build()
        .unwrap();
    let res = send(&mut fallback).await.unwrap();
    assert_eq!(from(&res), "c");
    assert_eq!((d.calls(), a.calls(), b.calls()), (0, 1, 1));

    // A real failure needs budget for the retry, and there is none.
    a.set(Act::Status(500));
    let err = send(&mut fallback).await.unwrap_err();
    let all = find::<AllProvidersFailed>(&*err).unwrap();
    assert_eq!(all.reason(), Some("retry budget exhausted"));
    assert_eq!(
        all.attempts().iter().map(|a| a.outcome).collect::<Vec<_>>(),
        [
            Outcome::rejected(RejectKind::Shed),
            Outcome::failure(FailureKind::Status(500))
        ]
    );
    assert!(err.to_string().contains("retry budget exhausted"), "{err}");
}

#[tokio::test(start_paused = true)]
async fn client_errors_return_but_typed_fallbacks_move_on() {
    let small = Mock::new("small", Act::Status(400));
    let large = Mock::new("large", Act::Status(200));
    let safe = Mock::new("safe", Act::Status(200));
    let config = BalanceConfig::default()
        .context_window_fallback(ProviderId::new("large", "m"))
        .content_policy_fallback(ProviderId::new("safe", "m"))
        .seed(1);
    // Only `small` is a candidate for the `mini` model; the targets are outside.
    let mut balance = Balance::builder()
        .config(config)
        .provider_with(
            health("small"),
            small.clone(),
            ProviderOptions::default().model("mini"),
        )
        .provider_with(
            health("large"),
            large.clone(),
            ProviderOptions::default().model("large"),
        )
        .provider_with(
            health("safe"),
            safe.clone(),
            ProviderOptions::default().model("safe"),
        )
        .build()
        .unwrap();
    let mini = || {
        Request::post("/")
            .header("x-failover-model", "mini")
            .body(ReplayBody::from("{}"))
            .unwrap()
    };
    let res = balance.ready().await.unwrap().call(mini()).await.unwrap();
    assert_eq!((res.status().as_u16(), from(&res)), (400, "small"));
    assert_eq!(
        large.calls() + safe.calls(),
        0,
        "a plain 400 is not retried"
    );

    small.set(Act::Hint(ErrorHint::ContextWindowExceeded));
    let res = balance.ready().await.unwrap().call(mini()).await.unwrap();
    assert_eq!(from(&res), "large");
    small.set(Act::Hint(ErrorHint::ContentPolicy));
    let res = balance.ready().await.unwrap().call(mini()).await.unwrap();
    assert_eq!(from(&res), "safe");

    // The target failing ends the request: nothing else can take it.
    safe.set(Act::Status(503));
    let err = balance
        .ready()
        .await
        .unwrap()
        .call(mini())
        .await
        .unwrap_err();
    let all = find::<AllProvidersFailed>(&*err).unwrap();
    assert_eq!(all.attempts().len(), 2);
    assert_eq!((small.calls(), large.calls(), safe.calls()), (4, 1, 2));

    let err = Balance::<Mock>::builder()
        .config(BalanceConfig::default().context_window_fallback(ProviderId::new("x", "y")))
        .provider(health("a"), small.clone())
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "context_window_fallback");
}

#[tokio::test(start_paused = true)]
async fn attempt_timeout_moves_on_and_marks_the_provider_slow() {
    let a = Mock::new("a", Act::Hang);
    let b = Mock::new("b", Act::Delay(Duration::from_millis(50)));
    let ha = health("a");
    let mut fallback = Fallback::builder()
        .config(FallbackConfig::default().attempt_timeout(Duration::from_secs(2)))
        .provider(ha.clone(), a.clone())
        .provider(health("b"), b.clone())
        .build()
        .unwrap();
    let start = Instant::now();
    let res = send(&mut fallback).await.unwrap();
    assert_eq!(from(&res), "b");
    assert_eq!(Instant::now() - start, Duration::from_millis(2050));
    assert_eq!(ha.ttfb().get(), Duration::from_secs(2));

    // The total deadline ends everything.
    let mut fallback = Fallback::builder()
        .config(
            FallbackConfig::default()
                .attempt_timeout(Duration::from_secs(2))
                .total_timeout(Duration::from_secs(3)),
        )
        .provider(health("a"), a.clone())
        .provider(health("c"), Mock::new("c", Act::Hang))
        .build()
        .unwrap();
    let start = Instant::now();
    let err = send(&mut fallback).await.unwrap_err();
    assert_eq!(Instant::now() - start, Duration::from_secs(3));
    let e = find::<Elapsed>(&*err).unwrap();
    assert_eq!(
        (e.kind(), e.after()),
        (TimeoutKind::Total, Duration::from_secs(3))
    );

    // A deadline set by an outer layer is honoured too.
    let mut req = req();
    Deadline::set_on(&mut req, Instant::now() + Duration::from_millis(700));
    let err = fallback.ready().await.unwrap().call(req).await.unwrap_err();
    assert_eq!(find::<Elapsed>(&*err).unwrap().kind(), TimeoutKind::Total);
}

#[tokio::test(start_paused = true)]
async fn max_attempts_limits_the_chain() {
    let mocks: Vec<Mock> = ["a", "b", "c"]
        .into_iter()
        .map(|n| Mock::new(n, Act::Status(502)))
        .collect();
    let mut fallback = Fallback::builder()
        .config(FallbackConfig::default().max_attempts(2))
        .providers(mocks.iter().map(|m| (health(m.name), m.clone())))
        .build()
        .unwrap();
    let err = send(&mut fallback).await.unwrap_err();
    let all = find::<AllProvidersFailed>(&*err).unwrap();
    assert_eq!(all.reason(), Some("attempt limit reached"));
    assert_eq!(all.attempts().len(), 2);
    assert_eq!(mocks[2].calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn fallback_follows_priority() {
    let a = Mock::new("a", Act::Status(200));
    let b = Mock::new("b", Act::Status(200));
    let c = Mock::new("c", Act::Status(200));
    let (hb, hc) = (health("b"), health("c"));
    let mut fallback = Fallback::builder()
        .provider(health("a"), a.clone())
        .provider_with(
            hb.clone(),
            b.clone(),
            ProviderOptions::default().priority(2),
        )
        .provider_with(
            hc.clone(),
            c.clone(),
            ProviderOptions::default().priority(1),
        )
        .build()
        .unwrap();
    assert_eq!(from(&send(&mut fallback).await.unwrap()), "c");
    assert!(fallback.pick(&RequestAttrs::new()).unwrap().same_as(&hc));
    hc.force(Some(CircuitState::Open));
    assert_eq!(from(&send(&mut fallback).await.unwrap()), "b");
    hb.mark_rate_limited(Duration::from_secs(1));
    assert_eq!(from(&send(&mut fallback).await.unwrap()), "a");
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(from(&send(&mut fallback).await.unwrap()), "b");
    assert_eq!((a.calls(), b.calls(), c.calls()), (1, 2, 1));
}

#[tokio::test(start_paused = true)]
async fn providers_come_and_go_through_the_handle() {
    let a = Mock::new("a", Act::Delay(Duration::from_secs(1)));
    let b = Mock::new("b", Act::Status(200));
    let mut balance = Balance::new([(health("a"), a.clone())]);
    let handle = balance.handle();
    // A request in flight keeps its providers.
    let in_flight = tokio::spawn(balance.ready().await.unwrap().call(req()));
    tokio::task::yield_now().await;
    assert!(handle.remove(&ProviderId::new("a", "m")));
    handle.add(health("b"), b.clone()).unwrap();
    assert_eq!(from(&in_flight.await.unwrap().unwrap()), "a");
    for _ in 0..5 {
        assert_eq!(from(&send(&mut balance).await.unwrap()), "b");
    }
    assert_eq!(a.calls(), 1);
    assert_eq!(balance.providers(), [ProviderId::new("b", "m")]);
    let err = handle
        .add_with(
            health("c"),
            b.clone(),
            ProviderOptions::default().weight(-1.0),
        )
        .unwrap_err();
    assert_eq!(err.field(), "providers[c/m].weight");
    assert!(handle.remove(&ProviderId::new("b", "m")));
    assert!(handle.is_empty());
    let err = send(&mut balance).await.unwrap_err();
    assert!(find::<AllProvidersFailed>(&*err).is_some());
}

#[tokio::test(start_paused = true)]
async fn capability_routing_keeps_requests_on_capable_providers() {
    let cheap = Mock::new("cheap", Act::Status(200));
    let strong = Mock::new("strong", Act::Status(200));
    let mut balance = Balance::builder()
        .seed(5)
        .provider_with(
            health("cheap"),
            cheap.clone(),
            ProviderOptions::default()
                .tier("cheap")
                .context_window(16_000)
                .tools(false),
        )
        .provider_with(
            health("strong"),
            strong.clone(),
            ProviderOptions::default()
                .tier("strong")
                .context_window(1_000_000),
        )
        .attributes(tower_failover_balance::JsonBodyAttributes::default())
        .build()
        .unwrap();
    let call = |tier: Option<&str>, body: String| {
        let mut b = Request::post("/");
        if let Some(t) = tier {
            b = b.header("x-failover-tier", t);
        }
        b.body(ReplayBody::from(body)).unwrap()
    };
    let small = r#"{"model":"m","messages":[]}"#.to_string();
    let tools = r#"{"model":"m","tools":[{"name":"f"}]}"#.to_string();
    let huge = format!(r#"{{"messages":"{}"}}"#, "x".repeat(200_000));
    for (tier, body, want) in [
        (Some("cheap"), small.clone(), "cheap"),
        (Some("strong"), small.clone(), "strong"),
        (None, tools, "strong"),
        (None, huge, "strong"),
    ] {
        let res = balance
            .ready()
            .await
            .unwrap()
            .call(call(tier, body))
            .await
            .unwrap();
        assert_eq!(from(&res), want);
    }
    let err = balance
        .ready()
        .await
        .unwrap()
        .call(call(Some("platinum"), small))
        .await
        .unwrap_err();
    let all = find::<AllProvidersFailed>(&*err).unwrap();
    assert_eq!(all.reason(), Some("no provider can serve this request"));
}

#[tokio::test(start_paused = true)]
async fn ramp_share_holds_whatever_the_number_of_providers() {
    for n in [2usize, 4, 8] {
        let healths: Vec<Health> = (0..n).map(|i| health(&format!("p{i}"))).collect();
        let mut balance = Balance::builder()
            .seed(n as u64)
            .providers(healths.iter().map(|h| (h.clone(), ())))
            .build()
            .unwrap();
        healths[0].set_ramp(Some(1), 250_000);
        let rounds = 4000;
        let hits = (0..rounds)
            .filter(|_| {
                balance
                    .pick(&RequestAttrs::new())
                    .unwrap()
                    .same_as(&healths[0])
            })
            .count();
        let share = hits as f64 / rounds as f64;
        assert!((share - 0.25).abs() < 0.02, "n={n}: share {share}");
        // Ramp at 0 %: never.
        healths[0].set_ramp(Some(0), 0);
        tokio::time::advance(Duration::from_millis(200)).await;
        assert!((0..500).all(|_| {
            !balance
                .pick(&RequestAttrs::new())
                .unwrap()
                .same_as(&healths[0])
        }));
        // Ramp done: back to an equal share.
        healths[0].set_ramp(None, 1_000_000);
        tokio::time::advance(Duration::from_millis(200)).await;
        let hits = (0..rounds)
            .filter(|_| {
                balance
                    .pick(&RequestAttrs::new())
                    .unwrap()
                    .same_as(&healths[0])
            })
            .count();
        let share = hits as f64 / rounds as f64;
        let fair = 1.0 / n as f64;
        assert!((share - fair).abs() < 0.05, "n={n}: share {share}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_ramping_provider_is_still_the_last_resort() {
    let a = Mock::new("a", Act::Status(503));
    let b = Mock::new("b", Act::Status(200));
    let hb = health("b");
    hb.set_ramp(Some(0), 1);
    let mut balance = Balance::builder()
        .seed(2)
        .provider(health("a"), a.clone())
        .provider(hb, b.clone())
        .build()
        .unwrap();
    assert_eq!(from(&send(&mut balance).await.unwrap()), "b");
    assert_eq!(a.calls(), 1, "the non-ramping provider went first");
}

#[tokio::test(start_paused = true)]
async fn same_seed_same_choices() {
    let run = |seed| {
        let healths: Vec<Health> = (0..10).map(|i| health(&format!("p{i}"))).collect();
        let mut balance = Balance::builder()
            .seed(seed)
            .providers(healths.iter().map(|h| (h.clone(), ())))
            .build()
            .unwrap();
        (0..50)
            .map(|_| balance.pick(&RequestAttrs::new()).unwrap().id().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
    assert_ne!(run(42), run(43));
}

#[tokio::test(start_paused = true)]
async fn unmeasured_providers_are_explored() {
    let (old, new) = (health("old"), health("new"));
    let mut balance = Balance::builder()
        .seed(1)
        .provider(old.clone(), ())
        .provider(new.clone(), ())
        .build()
        .unwrap();
    old.observe_ttfb(Duration::from_millis(200));
    // Unmeasured counts as 500 ms: the measured one is preferred while idle...
    assert!(balance.pick(&RequestAttrs::new()).unwrap().same_as(&old));
    // ...but not once it is busy.
    let _busy: Vec<_> = (0..3).map(|_| old.start_request()).collect();
    assert!(balance.pick(&RequestAttrs::new()).unwrap().same_as(&new));
}

#[tokio::test(start_paused = true)]
async fn without_observe_layer_in_flight_alone_balances() {
    let a = Mock::new("a", Act::Hang);
    let b = Mock::new("b", Act::Hang);
    let mut balance = Balance::builder()
        .seed(9)
        .provider(health("a"), a.clone())
        .provider(health("b"), b.clone())
        .build()
        .unwrap();
    let mut pending = Vec::new();
    for _ in 0..20 {
        pending.push(tokio::spawn(balance.ready().await.unwrap().call(req())));
        tokio::task::yield_now().await;
    }
    let (ca, cb) = (a.calls(), b.calls());
    assert_eq!(ca + cb, 20);
    assert!(ca.abs_diff(cb) <= 2, "{ca} vs {cb}");
    for p in &pending {
        p.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn observed_latency_steers_traffic() {
    let fast = Mock::new("fast", Act::Delay(Duration::from_millis(100)));
    let slow = Mock::new("slow", Act::Delay(Duration::from_millis(900)));
    let stack = |h: &Health, m: &Mock| {
        tower::ServiceBuilder::new()
            .layer(ObserveLayer::new(h.clone()))
            .service(m.clone())
    };
    let (hf, hs) = (health("fast"), health("slow"));
    let balance = Balance::builder()
        .config(BalanceConfig::default().seed(4))
        .provider(hf.clone(), stack(&hf, &fast))
        .provider(hs.clone(), stack(&hs, &slow))
        .build()
        .unwrap();
    // 200 requests at 20 per second, bodies read to the end.
    let mut tasks = Vec::new();
    for _ in 0..200 {
        let svc = balance.clone();
        tasks.push(tokio::spawn(async move {
            let res = svc.oneshot(req()).await.unwrap();
            http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap();
        }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for t in tasks {
        t.await.unwrap();
    }
    let (f, s) = (fast.calls(), slow.calls());
    assert_eq!(f + s, 200);
    assert!(s < 30, "the slow provider got {s} of 200");
}

#[tokio::test(start_paused = true)]
async fn round_robin_through_the_service() {
    let a = Mock::new("a", Act::Status(200));
    let b = Mock::new("b", Act::Status(200));
    let mut balance = Balance::builder()
        .policy(Policy::RoundRobin)
        .provider_with(
            health("a"),
            a.clone(),
            ProviderOptions::default().weight(3.0),
        )
        .provider(health("b"), b.clone())
        .build()
        .unwrap();
    for _ in 0..40 {
        send(&mut balance).await.unwrap();
    }
    assert_eq!((a.calls(), b.calls()), (30, 10));
}

#[test]
fn the_response_future_stays_small() {
    use tower_failover_balance::future::ResponseFuture;
    // Moved once or twice per request: keep it well under a kilobyte.
    let size =
        std::mem::size_of::<ResponseFuture<Mock, ReplayBody, tower_failover_core::LlmClassifier>>();
    assert!(size <= 800, "{size} bytes");
}

mod properties {
    use super::*;
    use proptest::prelude::{
        ProptestConfig, Strategy, any, prop, prop_assert, prop_assert_eq, proptest,
    };

    fn act() -> impl Strategy<Value = Act> {
        prop::sample::select(vec![
            Act::Status(200),
            Act::Status(503),
            Act::Status(429),
            Act::Status(400),
            Act::ShedErr,
            Act::OpenErr,
        ])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        /// Whatever the providers do: each is called at most once per request, an open
        /// one never, and the request only fails once every available provider has been
        /// tried (a client error ends it with the provider's answer).
        #[test]
        fn failover_invariants(
            acts in prop::collection::vec((act(), any::<bool>()), 1..7),
            ordered in any::<bool>(),
            seed in any::<u64>(),
        ) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            let names = ["p0", "p1", "p2", "p3", "p4", "p5", "p6"];
            let mocks: Vec<(Mock, Health, bool)> = acts
                .iter()
                .enumerate()
                .map(|(i, &(act, open))| {
                    let h = health(names[i]);
                    if open {
                        h.force(Some(CircuitState::Open));
                    }
                    (Mock::new(names[i], act), h, open)
                })
                .collect();
            let pairs = mocks.iter().map(|(m, h, _)| (h.clone(), m.clone()));
            let result = rt.block_on(async {
                if ordered {
                    let mut f = Fallback::builder()
                        .config(FallbackConfig::default().seed(seed))
                        .providers(pairs)
                        .build()
                        .unwrap();
                    send(&mut f).await
                } else {
                    let mut b = Balance::builder().seed(seed).providers(pairs).build().unwrap();
                    send(&mut b).await
                }
            });
            for (m, _, open) in &mocks {
                prop_assert!(m.calls() <= 1, "{} called {} times", m.name, m.calls());
                if *open {
                    prop_assert_eq!(m.calls(), 0);
                }
            }
            match result {
                Ok(res) => {
                    let s = res.status().as_u16();
                    prop_assert!(s == 200 || s == 400, "status {}", s);
                }
                Err(err) => {
                    let all = find::<AllProvidersFailed>(&*err).expect("AllProvidersFailed");
                    let available = mocks.iter().filter(|(_, _, open)| !open).count();
                    prop_assert_eq!(all.attempts().len(), available);
                    for (m, _, open) in &mocks {
                        if !open {
                            prop_assert_eq!(m.calls(), 1);
                        }
                    }
                }
            }
        }
    }
}

/// A mock that counts its clones.
struct Counted {
    inner: Mock,
    clones: Arc<AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Counted {
            inner: self.inner.clone(),
            clones: self.clones.clone(),
        }
    }
}

impl Service<Request<ReplayBody>> for Counted {
    type Response = Response<ReplayBody>;
    type Error = BoxError;
    type Future = BoxFut;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody>) -> BoxFut {
        self.inner.call(req)
    }
}

#[tokio::test(start_paused = true)]
async fn an_instance_serves_attempt_after_attempt_instead_of_a_clone_each() {
    let a = Mock::new("a", Act::Status(200));
    let clones = Arc::new(AtomicUsize::new(0));
    let counted = Counted {
        inner: a.clone(),
        clones: clones.clone(),
    };
    let mut balance = Balance::new([(health("a"), counted)]);
    let built = clones.load(Ordering::SeqCst);
    for _ in 0..100 {
        assert_eq!(from(&send(&mut balance).await.unwrap()), "a");
    }
    assert_eq!(a.calls(), 100);
    // One request at a time: the first attempt clones an instance and gives it
    // back after its call; the other 99 reuse it.
    assert_eq!(clones.load(Ordering::SeqCst) - built, 1);
    // Requests at once each need an instance: the spares grow to what was in
    // flight, then serve again.
    a.set(Act::Delay(Duration::from_millis(10)));
    let before = clones.load(Ordering::SeqCst);
    let batch = |n| {
        let mut set = tokio::task::JoinSet::new();
        for _ in 0..n {
            let mut b = balance.clone();
            set.spawn(async move { send(&mut b).await.map(|_| ()) });
        }
        async move { set.join_all().await }
    };
    assert!(batch(8).await.iter().all(Result::is_ok));
    let grown = clones.load(Ordering::SeqCst) - before;
    assert!(grown <= 8, "{grown} clones for 8 requests at once");
    let before = clones.load(Ordering::SeqCst);
    assert!(batch(8).await.iter().all(Result::is_ok));
    assert_eq!(clones.load(Ordering::SeqCst) - before, 0);
}

/// An extension that counts its copies: a request carrying it shows how many times
/// the balancer copied the request.
#[derive(Debug)]
struct CopyCount(Arc<AtomicUsize>);

impl Clone for CopyCount {
    fn clone(&self) -> Self {
        self.0.fetch_add(1, Ordering::SeqCst);
        CopyCount(self.0.clone())
    }
}

#[tokio::test(start_paused = true)]
async fn the_last_attempt_there_can_be_gets_the_request_itself() {
    let copies = Arc::new(AtomicUsize::new(0));
    let counted = || {
        let mut r = req();
        r.extensions_mut().insert(CopyCount(copies.clone()));
        r
    };
    // One provider: its attempt is the only one there can be, so it is not copied.
    let a = Mock::new("a", Act::Status(200));
    let mut one = Balance::new([(health("a"), a.clone())]);
    let res = one.ready().await.unwrap().call(counted()).await.unwrap();
    assert_eq!(from(&res), "a");
    assert_eq!(copies.swap(0, Ordering::SeqCst), 0);

    // Two: the first attempt is a copy (the request is kept for the other), the
    // second, the last there can be, is the request itself.
    let (x, y) = (
        Mock::new("x", Act::Status(503)),
        Mock::new("y", Act::Status(503)),
    );
    let mut two = Fallback::new([(health("x"), x.clone()), (health("y"), y.clone())]);
    let err = two
        .ready()
        .await
        .unwrap()
        .call(counted())
        .await
        .unwrap_err();
    assert!(find::<AllProvidersFailed>(&*err).is_some(), "{err}");
    assert_eq!((x.calls(), y.calls()), (1, 1));
    assert_eq!(copies.swap(0, Ordering::SeqCst), 1);

    // A successful first attempt of two is still a copy.
    y.set(Act::Status(200));
    x.set(Act::Status(200));
    let res = two.ready().await.unwrap().call(counted()).await.unwrap();
    assert_eq!(from(&res), "x");
    assert_eq!(copies.load(Ordering::SeqCst), 1);
}
