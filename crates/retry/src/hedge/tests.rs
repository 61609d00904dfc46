use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use http::Request;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt, service_fn};

use super::*;

fn svc(
    plan: Vec<(u64, bool)>,
) -> (
    impl Service<Request<String>, Response = u32, Error = BoxError, Future = impl Send> + Clone,
    Arc<AtomicU32>,
) {
    let calls = Arc::new(AtomicU32::new(0));
    let plan = Arc::new(plan);
    let s = service_fn({
        let calls = calls.clone();
        move |_req: Request<String>| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            let (ms, ok) = plan[(n as usize).min(plan.len() - 1)];
            async move {
                tokio::time::sleep(Duration::from_millis(ms)).await;
                if ok {
                    Ok(n)
                } else {
                    Err::<u32, BoxError>("boom".into())
                }
            }
        }
    });
    (s, calls)
}

fn config(initial_ms: u64) -> HedgeConfig {
    HedgeConfig {
        initial_delay: Duration::from_millis(initial_ms),
        min_delay: Duration::from_millis(10),
        ..HedgeConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn fast_first_attempt_is_not_hedged() {
    let (s, calls) = svc(vec![(50, true)]);
    let h = HedgeLayer::with_config(config(200)).unwrap().layer(s);
    assert_eq!(h.oneshot(Request::new(String::new())).await.unwrap(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn slow_first_attempt_is_hedged_and_the_winner_returns() {
    let (s, calls) = svc(vec![(10_000, true), (30, true)]);
    let h = HedgeLayer::with_config(config(200)).unwrap().layer(s);
    let t = Instant::now();
    assert_eq!(h.oneshot(Request::new(String::new())).await.unwrap(), 1);
    assert_eq!(t.elapsed(), Duration::from_millis(230));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_first_attempt_hedges_at_once() {
    let (s, calls) = svc(vec![(5, false), (30, true)]);
    let h = HedgeLayer::with_config(config(1_000)).unwrap().layer(s);
    let t = Instant::now();
    assert_eq!(h.oneshot(Request::new(String::new())).await.unwrap(), 1);
    assert_eq!(t.elapsed(), Duration::from_millis(35));
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test(start_paused = true)]
async fn both_failing_reports_the_first_error() {
    let (s, _) = svc(vec![(5, false), (5, false)]);
    let h = HedgeLayer::with_config(config(1_000)).unwrap().layer(s);
    let err = h.oneshot(Request::new(String::new())).await.unwrap_err();
    assert_eq!(err.to_string(), "boom");
}

#[tokio::test(start_paused = true)]
async fn no_budget_no_hedge() {
    use crate::budget::{BudgetConfig, RetryBudget};
    let budget = Arc::new(
        RetryBudget::new(BudgetConfig {
            min_per_second: 0,
            ratio: 0.0,
            ..Default::default()
        })
        .unwrap(),
    );
    let (s, calls) = svc(vec![(1_000, true), (10, true)]);
    let h = HedgeLayer::with_config(config(100))
        .unwrap()
        .budget(budget)
        .layer(s);
    assert_eq!(h.oneshot(Request::new(String::new())).await.unwrap(), 0);
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[tokio::test(start_paused = true)]
async fn delay_follows_the_latency_percentile() {
    let (s, _) = svc(vec![(100, true)]);
    let layer = HedgeLayer::with_config(HedgeConfig {
        window: 64,
        ..config(2_000)
    })
    .unwrap();
    let h = layer.layer(s);
    for _ in 0..64 {
        h.clone()
            .oneshot(Request::new(String::new()))
            .await
            .unwrap();
    }
    assert_eq!(layer.current_delay(), Duration::from_millis(100));
}
