//! The overflow router under paused time: deadlines, jitter, pacing, errors.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{Scripted, body_of, req, status};
use http::{Request, Response};
use tokio::time::{Instant, advance};
use tower::retry::budget::Budget;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};
use tower_failover_core::error::{AllProvidersFailed, RateLimited, find};
use tower_failover_core::observe::{Observe, ObserveLayer};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{Deadline, Health, Registry, error_response};
use tower_failover_overflow::error::{
    REASON_ALL_LIMITED, REASON_BUDGET, REASON_QUEUE_FULL, REASON_TOO_LONG,
};
use tower_failover_overflow::{
    Overflow, OverflowConfig, PacingConfig, Quota, QuotaConfig, QuotaLayer, QuotaTracker,
};

type Stack = Quota<Observe<Scripted>>;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

fn stack(health: &Health, svc: Scripted, tracker: QuotaTracker) -> Stack {
    ServiceBuilder::new()
        .layer(QuotaLayer::new(health.clone(), tracker))
        .layer(ObserveLayer::new(health.clone()))
        .service(svc)
}

fn tracker() -> QuotaTracker {
    QuotaTracker::new(QuotaConfig::default()).unwrap()
}

fn no_jitter() -> OverflowConfig {
    OverflowConfig::default().jitter(0.0)
}

async fn send<S>(router: &mut S, body: &'static str) -> Result<String, BoxError>
where
    S: Service<Request<ReplayBody>, Error = BoxError>,
    S::Response: IntoBody,
{
    let res = router.ready().await?.call(req(body)).await?;
    Ok(res.into_text().await)
}

trait IntoBody {
    fn into_text(self) -> impl std::future::Future<Output = String>;
}

impl<B> IntoBody for Response<B>
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    fn into_text(self) -> impl std::future::Future<Output = String> {
        body_of(self)
    }
}

fn all_failed(err: &BoxError) -> &AllProvidersFailed {
    find::<AllProvidersFailed>(&**err).unwrap_or_else(|| panic!("not AllProvidersFailed: {err}"))
}

#[tokio::test(start_paused = true)]
async fn primary_serves_until_limited_then_overflow_without_waiting() {
    let reg = Registry::new();
    let (p, o) = (reg.provider("primary", "m"), reg.provider("overflow", "m"));
    let (ps, os) = (Scripted::ok("primary"), Scripted::ok("overflow"));
    let mut router = Overflow::builder()
        .target(p.clone(), stack(&p, ps.clone(), tracker()))
        .target(o.clone(), stack(&o, os.clone(), tracker()))
        .config(no_jitter())
        .build()
        .unwrap();
    assert_eq!(send(&mut router, "a").await.unwrap(), "primary");
    p.mark_rate_limited(secs(10));
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(send(&mut router, "b").await.unwrap(), "overflow");
    }
    assert_eq!(Instant::now(), started, "overflow never waits");
    assert_eq!(
        ps.calls(),
        1,
        "nothing sent to the primary inside its window"
    );
    advance(secs(10)).await;
    assert_eq!(send(&mut router, "c").await.unwrap(), "primary");
    assert_eq!((ps.calls(), os.calls()), (2, 5));
}

#[tokio::test(start_paused = true)]
async fn take_back_is_jittered_per_router_so_a_fleet_does_not_stampede() {
    let mut take_back = Vec::new();
    for seed in [1, 2, 3] {
        let reg = Registry::new();
        let (p, o) = (reg.provider("primary", "m"), reg.provider("overflow", "m"));
        let mut router = Overflow::builder()
            .target(p.clone(), stack(&p, Scripted::ok("primary"), tracker()))
            .target(o.clone(), stack(&o, Scripted::ok("overflow"), tracker()))
            .config(
                OverflowConfig::default()
                    .jitter(0.5)
                    .max_jitter(secs(4))
                    .seed(seed),
            )
            .build()
            .unwrap();
        let start = Instant::now();
        p.mark_rate_limited(secs(10));
        // The router sees the window while overflowing.
        assert_eq!(send(&mut router, "x").await.unwrap(), "overflow");
        loop {
            advance(Duration::from_millis(50)).await;
            if send(&mut router, "x").await.unwrap() == "primary" {
                break;
            }
        }
        let after = Instant::now() - start;
        // Never before the reset; at most the capped jitter after it.
        assert!(after >= secs(10), "{after:?}");
        assert!(after <= secs(14) + Duration::from_millis(50), "{after:?}");
        take_back.push(after);
    }
    take_back.sort();
    take_back.dedup();
    assert_eq!(
        take_back.len(),
        3,
        "every router drew its own delay: {take_back:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_429_sends_the_same_request_on_and_never_back_inside_the_window() {
    let reg = Registry::new();
    let (p, o) = (reg.provider("primary", "m"), reg.provider("overflow", "m"));
    let ps = Scripted::limited("primary", &[("retry-after", "7")]);
    let os = Scripted::ok("overflow");
    let mut router = Overflow::builder()
        .target(p.clone(), stack(&p, ps.clone(), tracker()))
        .target(o.clone(), stack(&o, os.clone(), tracker()))
        .config(no_jitter())
        .build()
        .unwrap();
    assert_eq!(send(&mut router, "hello-429").await.unwrap(), "overflow");
    assert_eq!(ps.calls(), 1);
    assert_eq!(os.log()[0].1, "hello-429", "the same request, replayed");
    // A 429 is counted as rate limited, never as a failure (the circuit ignores it).
    let c = p.counters();
    assert_eq!((c.rate_limited, c.failures), (1, 0));
    assert_eq!(p.quota().remaining(Instant::now()), Some(secs(7)));
    for _ in 0..3 {
        assert_eq!(send(&mut router, "later").await.unwrap(), "overflow");
    }
    assert_eq!(ps.calls(), 1, "not sent to the primary inside its window");
    advance(secs(7)).await;
    assert_eq!(send(&mut router, "after").await.unwrap(), "overflow");
    assert_eq!(ps.calls(), 2, "the primary was tried again after its reset");
}

#[tokio::test(start_paused = true)]
async fn everything_limited_fails_at_once_with_the_earliest_reset() {
    let reg = Registry::new();
    let (p, o) = (reg.provider("primary", "m"), reg.provider("overflow", "m"));
    let (ps, os) = (Scripted::ok("primary"), Scripted::ok("overflow"));
    let mut router = Overflow::builder()
        .target(p.clone(), stack(&p, ps.clone(), tracker()))
        .target(o.clone(), stack(&o, os.clone(), tracker()))
        .config(no_jitter().pacing(PacingConfig::disabled()))
        .build()
        .unwrap();
    p.mark_rate_limited(secs(5));
    o.mark_rate_limited(secs(3));
    let err = send(&mut router, "x").await.unwrap_err();
    let failed = all_failed(&err);
    assert_eq!(failed.retry_after(), Some(secs(3)));
    assert_eq!(failed.reason(), Some(REASON_ALL_LIMITED));
    assert!(failed.attempts().is_empty());
    let answer = error_response(&*err);
    assert_eq!(answer.status(), 503);
    assert_eq!(answer.headers()["retry-after"], "3");
    assert_eq!(ps.calls() + os.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn every_target_answering_429_lists_the_attempts() {
    let reg = Registry::new();
    let (p, o) = (reg.provider("primary", "m"), reg.provider("overflow", "m"));
    let ps = Scripted::limited("primary", &[("retry-after", "5")]);
    let os = Scripted::limited("overflow", &[("retry-after-ms", "2500")]);
    let mut router = Overflow::builder()
        .target(p.clone(), stack(&p, ps.clone(), tracker()))
        .target(o.clone(), stack(&o, os.clone(), tracker()))
        .config(no_jitter())
        .build()
        .unwrap();
    let err = send(&mut router, "x").await.unwrap_err();
    let failed = all_failed(&err);
    assert_eq!(failed.attempts().len(), 2);
    assert_eq!(failed.retry_after(), Some(Duration::from_millis(2500)));
    assert!(err.to_string().contains("primary/m: rate limited"), "{err}");
    // Each was sent once: a target that answered 429 never gets the request again,
    // even though pacing could have waited for it.
    assert_eq!((ps.calls(), os.calls()), (1, 1));
}

/// A provider whose every answer says its request bucket is empty: 60 a minute,
/// none left, full again in 60 s (so one request fits per second).
fn empty_bucket(name: &'static str) -> Scripted {
    Scripted::new(name, move |_, _| {
        status(
            200,
            &[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "60s"),
            ],
        )
    })
}

#[tokio::test(start_paused = true)]
async fn pacing_releases_requests_just_under_the_known_limit() {
    let h = Health::standalone("only", "m");
    let svc = empty_bucket("only");
    let router = Overflow::builder()
        .target(h.clone(), stack(&h, svc.clone(), tracker()))
        .config(no_jitter().pacing(PacingConfig {
            capacity: 8,
            max_wait: secs(10),
        }))
        .build()
        .unwrap();
    let start = Instant::now();
    let tasks: Vec<_> = (0..5)
        .map(|_| tokio::spawn(router.clone().oneshot(req("x"))))
        .collect();
    tokio::task::yield_now().await;
    assert_eq!(router.waiting(), 4);
    for t in tasks {
        let res = t.await.unwrap().unwrap();
        assert_eq!(res.status(), 200);
    }
    let times: Vec<Duration> = svc.log().iter().map(|(t, _)| *t - start).collect();
    assert_eq!(
        times,
        (0..5).map(secs).collect::<Vec<_>>(),
        "one per second"
    );
    assert_eq!(router.waiting(), 0);
    assert_eq!(h.counters().rate_limited, 0, "no 429 collected");
}

#[tokio::test(start_paused = true)]
async fn pacing_is_bounded_in_size_and_in_wait() {
    let h = Health::standalone("only", "m");
    let svc = empty_bucket("only");
    let router = Overflow::builder()
        .target(h.clone(), stack(&h, svc.clone(), tracker()))
        .config(no_jitter().pacing(PacingConfig {
            capacity: 1,
            max_wait: secs(10),
        }))
        .build()
        .unwrap();
    router.clone().oneshot(req("first")).await.unwrap();
    let waiting = tokio::spawn(router.clone().oneshot(req("second")));
    tokio::task::yield_now().await;
    assert_eq!(router.waiting(), 1);
    let err = router.clone().oneshot(req("third")).await.unwrap_err();
    assert_eq!(all_failed(&err).reason(), Some(REASON_QUEUE_FULL));
    assert_eq!(all_failed(&err).retry_after(), Some(secs(1)));
    waiting.await.unwrap().unwrap();

    // A known wait past max_wait fails at once rather than waiting in vain.
    h.mark_rate_limited(secs(60));
    let before = Instant::now();
    let err = router.clone().oneshot(req("x")).await.unwrap_err();
    assert_eq!(Instant::now(), before);
    assert_eq!(all_failed(&err).reason(), Some(REASON_TOO_LONG));
    assert_eq!(all_failed(&err).retry_after(), Some(secs(60)));

    // So does one past the request's own deadline.
    advance(secs(58)).await;
    let mut r = req("x");
    Deadline::set_on(&mut r, Instant::now() + Duration::from_secs(1));
    let err = router.clone().oneshot(r).await.unwrap_err();
    assert_eq!(all_failed(&err).reason(), Some(REASON_TOO_LONG));
    let mut r = req("x");
    Deadline::set_on(&mut r, Instant::now() + Duration::from_secs(3));
    router.clone().oneshot(r).await.unwrap();
    assert_eq!(Instant::now() - before, secs(60), "released at the reset");
}

#[derive(Default)]
struct CountingBudget {
    left: AtomicUsize,
    withdrawn: AtomicUsize,
}

impl Budget for CountingBudget {
    fn deposit(&self) {
        self.left.fetch_add(1, Ordering::SeqCst);
    }

    fn withdraw(&self) -> bool {
        self.withdrawn.fetch_add(1, Ordering::SeqCst);
        self.left
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok()
    }
}

#[tokio::test(start_paused = true)]
async fn hops_after_a_429_draw_on_the_shared_retry_budget() {
    let reg = Registry::new();
    let (p, o) = (reg.provider("primary", "m"), reg.provider("overflow", "m"));
    let ps = Scripted::limited("primary", &[("retry-after", "1")]);
    let budget = Arc::new(CountingBudget::default());
    let mut router = Overflow::builder()
        .target(p.clone(), stack(&p, ps.clone(), tracker()))
        .target(o.clone(), stack(&o, Scripted::ok("overflow"), tracker()))
        .config(no_jitter())
        .retry_budget(budget.clone())
        .build()
        .unwrap();
    // Nothing deposited (the retry layer would): the re-send is refused.
    let err = send(&mut router, "x").await.unwrap_err();
    let failed = all_failed(&err);
    assert_eq!(failed.reason(), Some(REASON_BUDGET));
    assert_eq!(failed.attempts().len(), 1);
    assert_eq!(budget.withdrawn.load(Ordering::SeqCst), 1);

    // While the primary is known limited, requests go straight to the overflow:
    // nothing is re-sent, nothing is withdrawn.
    assert_eq!(send(&mut router, "y").await.unwrap(), "overflow");
    assert_eq!(budget.withdrawn.load(Ordering::SeqCst), 1);

    // With a deposit, the hop goes through.
    advance(secs(1)).await;
    budget.deposit();
    assert_eq!(send(&mut router, "z").await.unwrap(), "overflow");
    assert_eq!(budget.withdrawn.load(Ordering::SeqCst), 2);
    assert_eq!(ps.calls(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_429_marks_the_whole_quota_group() {
    let reg = Registry::new();
    let mini = reg.provider_in_group("openai", "gpt-4o-mini", "org-main");
    let big = reg.provider_in_group("openai", "gpt-4o", "org-main");
    let claude = reg.provider("anthropic", "claude");
    let org = QuotaTracker::new(QuotaConfig::default()).unwrap();
    let mini_svc = Scripted::limited("mini", &[("retry-after", "30")]);
    let big_svc = Scripted::ok("big");
    let mut router = Overflow::builder()
        .target(mini.clone(), stack(&mini, mini_svc.clone(), org.clone()))
        .target(big.clone(), stack(&big, big_svc.clone(), org))
        .target(
            claude.clone(),
            stack(&claude, Scripted::ok("claude"), tracker()),
        )
        .config(no_jitter())
        .build()
        .unwrap();
    assert_eq!(send(&mut router, "x").await.unwrap(), "claude");
    assert_eq!(send(&mut router, "y").await.unwrap(), "claude");
    assert_eq!(
        big_svc.calls(),
        0,
        "the same key's other model shares the limit"
    );
    assert_eq!(mini_svc.calls(), 1);
    assert!(big.is_rate_limited(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn one_teams_batch_job_cannot_starve_another_teams_chat() {
    // One provider, two API keys: each its own quota group with its own tracker.
    let reg = Registry::new();
    let batch_key = reg.provider_in_group("openai#batch", "gpt-4o-mini", "key-batch");
    let chat_key = reg.provider_in_group("openai#chat", "gpt-4o-mini", "key-chat");
    let backup = reg.provider("backup", "m");
    let budget = |rpm| QuotaTracker::new(QuotaConfig::default().requests_per_minute(rpm)).unwrap();
    let backup_tracker = tracker();
    let (batch_svc, chat_svc, backup_svc) = (
        Scripted::ok("batch-key"),
        Scripted::ok("chat-key"),
        Scripted::ok("backup"),
    );
    let mut batch = Overflow::builder()
        .target(
            batch_key.clone(),
            stack(&batch_key, batch_svc.clone(), budget(10)),
        )
        .target(
            backup.clone(),
            stack(&backup, backup_svc.clone(), backup_tracker.clone()),
        )
        .config(no_jitter())
        .build()
        .unwrap();
    let mut chat = Overflow::builder()
        .target(
            chat_key.clone(),
            stack(&chat_key, chat_svc.clone(), budget(10)),
        )
        .target(
            backup.clone(),
            stack(&backup, backup_svc.clone(), backup_tracker),
        )
        .config(no_jitter())
        .build()
        .unwrap();
    for _ in 0..50 {
        send(&mut batch, "batch").await.unwrap();
    }
    assert_eq!(batch_svc.calls(), 10, "the batch key's own budget");
    assert_eq!(backup_svc.calls(), 40, "the rest overflowed");
    for _ in 0..5 {
        assert_eq!(send(&mut chat, "chat").await.unwrap(), "chat-key");
    }
    assert!(batch_key.is_rate_limited(Instant::now()));
    assert!(!chat_key.is_rate_limited(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn a_primary_under_backpressure_overflows_too() {
    type Mock = tower_test::mock::Mock<Request<ReplayBody>, Response<ReplayBody>>;
    let (primary, mut ph) = tower_test::mock::pair::<Request<ReplayBody>, Response<ReplayBody>>();
    let (overflow, mut oh) = tower_test::mock::pair::<Request<ReplayBody>, Response<ReplayBody>>();
    ph.allow(0);
    let reg = Registry::new();
    let router: Overflow<Mock> = Overflow::builder()
        .target(reg.provider("primary", "m"), primary)
        .target(reg.provider("overflow", "m"), overflow)
        .build()
        .unwrap();
    let call = tokio::spawn(router.clone().oneshot(req("x")));
    let (got, reply) = oh.next_request().await.unwrap();
    assert_eq!(got.body().bytes(), "x");
    reply.send_response(Response::new(ReplayBody::from("ok")));
    assert_eq!(call.await.unwrap().unwrap().status(), 200);
    ph.allow(1);
    assert!(
        tokio::time::timeout(secs(1), ph.next_request())
            .await
            .is_err(),
        "nothing reached the primary"
    );
    drop(router);
}

#[tokio::test(start_paused = true)]
async fn refused_before_sending_is_not_an_error_to_the_caller() {
    // The primary's quota layer refuses (a configured budget), the router goes on.
    let reg = Registry::new();
    let (p, o) = (reg.provider("primary", "m"), reg.provider("overflow", "m"));
    let ps = Scripted::ok("primary");
    let one_a_minute = QuotaTracker::new(QuotaConfig::default().requests_per_minute(1)).unwrap();
    let mut router = Overflow::builder()
        .target(p.clone(), stack(&p, ps.clone(), one_a_minute))
        .target(o.clone(), stack(&o, Scripted::ok("overflow"), tracker()))
        .config(no_jitter())
        .build()
        .unwrap();
    assert_eq!(send(&mut router, "a").await.unwrap(), "primary");
    assert_eq!(send(&mut router, "b").await.unwrap(), "overflow");
    assert_eq!(ps.calls(), 1);
    assert_eq!(
        p.counters().requests,
        1,
        "refusals are not requests to the provider"
    );
    // Calling the primary's stack directly shows the refusal.
    let mut direct = stack(
        &p,
        ps.clone(),
        QuotaTracker::new(QuotaConfig::default()).unwrap(),
    );
    let err = direct
        .ready()
        .await
        .unwrap()
        .call(req("c"))
        .await
        .unwrap_err();
    let limited = find::<RateLimited>(&*err).unwrap();
    assert_eq!(limited.provider(), Some(p.id()));
    assert_eq!(limited.retry_after(), Some(secs(60)));
    assert_eq!(ps.calls(), 1);
}

#[test]
fn builder_refuses_bad_input() {
    let reg = Registry::new();
    let err = Overflow::<Scripted>::builder().build().unwrap_err();
    assert_eq!(err.field(), "targets");
    let many = (0..65).map(|i| (reg.provider("p", &i.to_string()), Scripted::ok("p")));
    assert_eq!(Overflow::new(many).unwrap_err().field(), "targets");
    let err = Overflow::builder()
        .target(reg.provider("p", "m"), Scripted::ok("p"))
        .config(OverflowConfig::default().jitter(2.0))
        .build()
        .unwrap_err();
    assert_eq!(err.field(), "jitter");
    let ok = Overflow::new([(reg.provider("p", "m"), Scripted::ok("p"))]).unwrap();
    assert!(format!("{ok:?}").contains("p/m"));
}

#[tokio::test(start_paused = true)]
async fn pacing_waits_for_rate_limits_only_not_open_circuits() {
    use tower_failover_core::CircuitState;
    let reg = Registry::new();
    let (p, o) = (reg.provider("primary", "m"), reg.provider("overflow", "m"));
    let (ps, os) = (Scripted::ok("primary"), Scripted::ok("overflow"));
    let router = Overflow::builder()
        .target(p.clone(), stack(&p, ps.clone(), tracker()))
        .target(o.clone(), stack(&o, os.clone(), tracker()))
        .config(no_jitter())
        .build()
        .unwrap();
    o.force(Some(CircuitState::Open));
    p.mark_rate_limited(secs(2));
    let start = Instant::now();
    let res = router.clone().oneshot(req("x")).await.unwrap();
    assert_eq!(common::body_of(res).await, "primary");
    assert_eq!(
        Instant::now() - start,
        secs(2),
        "waited for the primary's reset"
    );
    assert_eq!(os.calls(), 0);

    // Nothing limited by a quota, everything down: no wait, no reason of ours.
    p.force(Some(CircuitState::Open));
    let err = router.clone().oneshot(req("y")).await.unwrap_err();
    assert_eq!(all_failed(&err).reason(), None);
    assert_eq!(Instant::now() - start, secs(2));
}

#[tokio::test(start_paused = true)]
async fn a_dropped_waiter_gives_its_place_back() {
    let h = Health::standalone("only", "m");
    let router = Overflow::builder()
        .target(h.clone(), stack(&h, Scripted::ok("only"), tracker()))
        .config(no_jitter())
        .build()
        .unwrap();
    h.mark_rate_limited(secs(3));
    let waiter = tokio::spawn(router.clone().oneshot(req("x")));
    tokio::task::yield_now().await;
    assert_eq!(router.waiting(), 1);
    waiter.abort();
    let _ = waiter.await;
    assert_eq!(router.waiting(), 0);
}

#[tokio::test(start_paused = true)]
async fn an_account_refusal_goes_on_at_once_and_opens_no_rate_limit_window() {
    use tower_failover_core::{ErrorHint, FailureKind};
    // 401 (a revoked key), and OpenAI's 429 `insufficient_quota` as the provider
    // adapter hints it: neither reaches the caller, neither is a rate limit.
    for (code, hint, kind) in [
        (401, None, FailureKind::Credentials),
        (429, Some(ErrorHint::Billing), FailureKind::Billing),
    ] {
        let reg = Registry::new();
        let (p, o) = (reg.provider("primary", "m"), reg.provider("overflow", "m"));
        let ps = Scripted::new("primary", move |_, _| {
            let mut res = status(code, &[]);
            if let Some(h) = hint {
                res.extensions_mut().insert(h);
            }
            res
        });
        let os = Scripted::ok("overflow");
        let mut router = Overflow::builder()
            .target(p.clone(), stack(&p, ps.clone(), tracker()))
            .target(o.clone(), stack(&o, os.clone(), tracker()))
            .config(no_jitter())
            .build()
            .unwrap();
        assert_eq!(send(&mut router, "hi").await.unwrap(), "overflow", "{code}");
        assert_eq!(ps.calls(), 1);
        let c = p.counters();
        assert_eq!((c.failures, c.rate_limited), (1, 0), "{kind}");
        assert_eq!(p.quota().remaining(Instant::now()), None, "{kind}");

        // Every target refusing: the router's own error, listing the kinds.
        let mut alone = Overflow::builder()
            .target(p.clone(), stack(&p, ps.clone(), tracker()))
            .config(no_jitter())
            .build()
            .unwrap();
        let err = send(&mut alone, "hi").await.unwrap_err();
        let failed = all_failed(&err);
        assert_eq!(
            failed.attempts()[0].outcome,
            tower_failover_core::Outcome::failure(kind)
        );
        assert!(!error_response(&*err).body().contains("status 4"));
    }
}
