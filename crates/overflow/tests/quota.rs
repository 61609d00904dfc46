//! The per-provider quota layer under paused time: every form of `Retry-After`,
//! caps, defaults, never-shortening windows, and the readiness gate.

mod common;

use std::time::{Duration, SystemTime};

use common::{Scripted, req, status};
use tokio::time::{Instant, advance};
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tower_failover_core::observe::ObserveLayer;
use tower_failover_core::{HeaderLimits, Health, LlmClassifier};
use tower_failover_overflow::{LimitedMode, QuotaConfig, QuotaLayer, QuotaTracker};

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Sends one request through quota + observe layers to a provider that answers 429
/// with `headers`, and returns the window the quota group got.
async fn window_after_429(headers: Vec<(&'static str, String)>, limits: HeaderLimits) -> Duration {
    let h = Health::standalone("p", "m");
    let svc = Scripted::new("p", move |_, _| {
        let pairs: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        status(429, &pairs)
    });
    let tracker = QuotaTracker::new(QuotaConfig::default().limits(limits)).unwrap();
    let stack = ServiceBuilder::new()
        .layer(QuotaLayer::new(h.clone(), tracker))
        .layer(ObserveLayer::new(h.clone()).classifier(LlmClassifier::new(limits)))
        .service(svc);
    let res = stack.oneshot(req("x")).await.unwrap();
    assert_eq!(res.status(), 429);
    assert_eq!(h.counters().failures, 0, "a 429 is never a failure");
    h.quota().remaining(Instant::now()).unwrap_or_default()
}

#[tokio::test(start_paused = true)]
async fn retry_after_in_every_form_capped_and_defaulted() {
    let limits = HeaderLimits {
        max_wait: secs(30),
        default_retry_after: secs(2),
    };
    let date = |ahead: u64| httpdate::fmt_http_date(SystemTime::now() + secs(ahead));
    type Case = (
        &'static str,
        Vec<(&'static str, String)>,
        Duration,
        Duration,
    );
    let cases: Vec<Case> = vec![
        (
            "seconds",
            vec![("retry-after", "7".into())],
            secs(7),
            secs(7),
        ),
        (
            "fractional seconds",
            vec![("retry-after", "1.5".into())],
            Duration::from_millis(1500),
            Duration::from_millis(1500),
        ),
        (
            "milliseconds win over seconds",
            vec![
                ("retry-after-ms", "2500".into()),
                ("retry-after", "9".into()),
            ],
            Duration::from_millis(2500),
            Duration::from_millis(2500),
        ),
        // An HTTP-date has whole seconds: 20 s ahead reads as 19 to 20 s.
        (
            "http-date",
            vec![("retry-after", date(20))],
            secs(19),
            secs(20),
        ),
        ("absent: the default", vec![], secs(2), secs(2)),
        (
            "garbage: the default",
            vec![("retry-after", "soon".into())],
            secs(2),
            secs(2),
        ),
        (
            "absurd: clamped",
            vec![("retry-after", "86400".into())],
            secs(30),
            secs(30),
        ),
        (
            "far date: clamped",
            vec![("retry-after", date(9_999_999))],
            secs(30),
            secs(30),
        ),
    ];
    for (name, headers, low, high) in cases {
        let got = window_after_429(headers, limits).await;
        assert!(got >= low && got <= high, "{name}: {got:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_429_without_retry_after_waits_for_one_refill_not_a_full_bucket() {
    // x-ratelimit-reset-requests is the time until the bucket is *full* (60 s here);
    // one more request fits after 1 s at 60 a minute.
    let got = window_after_429(
        vec![
            ("x-ratelimit-limit-requests", "60".into()),
            ("x-ratelimit-remaining-requests", "0".into()),
            ("x-ratelimit-reset-requests", "60s".into()),
        ],
        HeaderLimits::default(),
    )
    .await;
    // The observe layer (core) marks the reset hint; the quota layer's own window is
    // one refill. The group keeps the longer of the two: never shortened.
    assert!(got >= secs(1), "{got:?}");
}

#[tokio::test(start_paused = true)]
async fn a_new_429_never_shortens_a_known_window() {
    let h = Health::standalone("p", "m");
    let svc = Scripted::new("p", |n, _| {
        let wait = if n == 0 { "30" } else { "2" };
        status(429, &[("retry-after", wait)])
    });
    let tracker = QuotaTracker::new(QuotaConfig::default()).unwrap();
    let mut stack = QuotaLayer::new(h.clone(), tracker).layer(svc.clone());
    stack.ready().await.unwrap().call(req("a")).await.unwrap();
    assert_eq!(h.quota().remaining(Instant::now()), Some(secs(30)));
    // The group is limited: the next call is refused without reaching the provider.
    let err = stack
        .ready()
        .await
        .unwrap()
        .call(req("b"))
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("rate limited (retry after 30000 ms)"),
        "{err}"
    );
    assert_eq!(svc.calls(), 1);
    // A shorter 429 (from another replica, say) does not shorten it.
    h.quota().limit_until(Instant::now() + secs(2));
    assert_eq!(h.quota().remaining(Instant::now()), Some(secs(30)));
    advance(secs(30)).await;
    stack.ready().await.unwrap().call(req("c")).await.unwrap();
    assert_eq!(svc.calls(), 2);
    assert_eq!(h.quota().remaining(Instant::now()), Some(secs(2)));
}

#[tokio::test(start_paused = true)]
async fn gate_mode_holds_poll_ready_until_the_window_ends() {
    let h = Health::standalone("p", "m");
    let svc = Scripted::ok("p");
    let tracker = QuotaTracker::new(QuotaConfig::default()).unwrap();
    let layer = QuotaLayer::new(h.clone(), tracker).mode(LimitedMode::GatePollReady);
    let mut gated = tower_test::mock::Spawn::new(layer.layer(svc.clone()));
    assert!(gated.poll_ready().is_ready());
    h.mark_rate_limited(secs(5));
    assert!(gated.poll_ready().is_pending());
    advance(secs(4)).await;
    assert!(!gated.is_woken());
    advance(secs(1)).await;
    assert!(
        gated.is_woken(),
        "the timer wakes the task at the end of the window"
    );
    assert!(gated.poll_ready().is_ready());
    // A longer window set while gated moves the timer.
    h.mark_rate_limited(secs(3));
    assert!(gated.poll_ready().is_pending());
    h.mark_rate_limited(secs(6));
    advance(secs(3)).await;
    assert!(
        gated.poll_ready().is_pending(),
        "still limited: the later deadline holds"
    );
    advance(secs(3)).await;
    assert!(gated.poll_ready().is_ready());

    // Fail-fast (the default) stays ready and refuses in `call`.
    let mut fast = tower_test::mock::Spawn::new(
        QuotaLayer::new(
            h.clone(),
            QuotaTracker::new(QuotaConfig::default()).unwrap(),
        )
        .layer(svc.clone()),
    );
    h.mark_rate_limited(secs(5));
    assert!(fast.poll_ready().is_ready());
    assert!(fast.call(req("x")).await.is_err());
    assert_eq!(svc.calls(), 0);
}

#[tokio::test(start_paused = true)]
async fn token_budgets_use_the_estimator() {
    let h = Health::standalone("p", "m");
    let svc = Scripted::ok("p");
    let tracker = QuotaTracker::new(QuotaConfig::default().tokens_per_minute(1000)).unwrap();
    let mut stack = QuotaLayer::new(h.clone(), tracker.clone()).layer(svc.clone());
    // 40 bytes / 4 + max_tokens 390 = 400 tokens each.
    let body = r#"{"max_tokens":390,"messages":[]}        "#;
    assert_eq!(body.len(), 40);
    for _ in 0..2 {
        stack.ready().await.unwrap().call(req(body)).await.unwrap();
    }
    // 200 tokens left: the next 400-token request is predicted not to fit.
    assert!(h.is_rate_limited(Instant::now()));
    assert_eq!(h.quota().remaining(Instant::now()), Some(secs(12)));
    assert!(stack.ready().await.unwrap().call(req(body)).await.is_err());
    assert_eq!(svc.calls(), 2);
    let estimate = tracker.estimate();
    assert_eq!(estimate.budget_tokens, Some(200.0));

    // A custom estimator: every request costs 100.
    let h = Health::standalone("q", "m");
    let tracker = QuotaTracker::new(QuotaConfig::default().tokens_per_minute(1000)).unwrap();
    let mut stack = QuotaLayer::new(h.clone(), tracker.clone())
        .estimator(|_: &http::Request<tower_failover_core::replay::ReplayBody>| 100u64)
        .layer(Scripted::ok("q"));
    for _ in 0..10 {
        stack.ready().await.unwrap().call(req(body)).await.unwrap();
    }
    assert!(h.is_rate_limited(Instant::now()));
    assert_eq!(tracker.estimate().admitted, 10);
}
