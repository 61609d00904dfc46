//! Property tests of the tracker's buckets and of the router's hops.

mod common;

use std::time::Duration;

use common::{Scripted, req, status};
use http::Response;
use proptest::prelude::*;
use tokio::time::{Instant, advance};
use tower::ServiceExt;
use tower_failover_core::error::{AllProvidersFailed, find};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{Health, Registry};
use tower_failover_overflow::{Overflow, OverflowConfig, PacingConfig, QuotaConfig, QuotaTracker};

fn paused<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A configured budget is never exceeded, whatever the arrival pattern, and a
    /// refused request always fits after the wait it was told.
    #[test]
    fn budget_never_exceeded_and_waits_are_honest(
        rpm in 1u64..600,
        steps in prop::collection::vec((0u64..5_000, 1usize..20), 1..40),
    ) {
        paused(async move {
            let h = Health::standalone("p", "m");
            let t = QuotaTracker::new(QuotaConfig::default().requests_per_minute(rpm)).unwrap();
            let start = Instant::now();
            let mut admitted = 0u64;
            for (gap_ms, burst) in steps {
                advance(Duration::from_millis(gap_ms)).await;
                for _ in 0..burst {
                    let now = Instant::now();
                    match t.admit(0, now, &h) {
                        Ok(_) => admitted += 1,
                        Err(wait) => {
                            prop_assert!(!wait.is_zero());
                            prop_assert!(h.is_rate_limited(now));
                            // Honest: with nothing else admitted, it fits after `wait`.
                            advance(wait).await;
                            prop_assert!(t.admit(0, Instant::now(), &h).is_ok());
                            admitted += 1;
                            break;
                        }
                    }
                }
                let elapsed = (Instant::now() - start).as_secs_f64();
                let allowance = rpm as f64 + rpm as f64 / 60.0 * elapsed;
                prop_assert!(admitted as f64 <= allowance + 1e-6, "{admitted} > {allowance}");
            }
            Ok(())
        })?;
    }

    /// Each request reaches each target at most once, in order, until one answers;
    /// if none does, the caller gets every attempt listed.
    #[test]
    fn hops_visit_each_target_at_most_once(answers in prop::collection::vec(any::<bool>(), 1..8)) {
        paused(async move {
            let reg = Registry::new();
            let svcs: Vec<Scripted> = answers
                .iter()
                .map(|&ok| {
                    Scripted::new("t", move |_, _| {
                        if ok {
                            Response::new(ReplayBody::from("ok"))
                        } else {
                            status(429, &[("retry-after", "3")])
                        }
                    })
                })
                .collect();
            let router = Overflow::builder()
                .targets(
                    svcs.iter()
                        .enumerate()
                        .map(|(i, s)| (reg.provider("t", &i.to_string()), s.clone())),
                )
                .config(OverflowConfig::default().pacing(PacingConfig::disabled()))
                .build()
                .unwrap();
            let result = router.oneshot(req("x")).await;
            let first_ok = answers.iter().position(|&ok| ok);
            for (i, s) in svcs.iter().enumerate() {
                let expected = match first_ok {
                    Some(k) => usize::from(i <= k),
                    None => 1,
                };
                prop_assert_eq!(s.calls(), expected, "target {}", i);
            }
            match (first_ok, result) {
                (Some(_), Ok(res)) => prop_assert_eq!(res.status(), 200),
                (None, Err(e)) => {
                    let failed = find::<AllProvidersFailed>(&*e).unwrap();
                    prop_assert_eq!(failed.attempts().len(), answers.len());
                    prop_assert_eq!(failed.retry_after(), Some(Duration::from_secs(3)));
                }
                (want, got) => prop_assert!(false, "{:?} vs {:?}", want, got.map(|r| r.status())),
            }
            Ok(())
        })?;
    }
}
