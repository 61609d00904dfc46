//! The ramp under paused time: schedule, exact shares, checks, rollback, flapping.

mod common;

use std::time::Duration;

use common::{Provider, outage, ramp_events, recovery, send, settle};
use tokio::time::{Instant, sleep};
use tower::{Layer, ServiceBuilder, ServiceExt};
use tower_failover_core::{CircuitState, Health, HealthEventKind};
use tower_failover_ramp::{Curve, CurveShape, RampConfig, RampLayer, Step};

const MIN: Duration = Duration::from_secs(60);

#[tokio::test(start_paused = true)]
async fn the_default_twenty_minute_ramp_admits_each_share_within_two_points() {
    let health = Health::standalone("openai", "gpt-4o-mini");
    let mut events = health.subscribe();
    let provider = Provider::default();
    let mut svc = ServiceBuilder::new()
        .layer(RampLayer::with_config(health.clone(), RampConfig::default().seed(7)).unwrap())
        .service(provider.clone());
    settle().await;
    assert_eq!(health.ramp_step(), None, "no ramp before an outage");
    assert_eq!(send(&mut svc, 100).await, 100);

    outage(&health).await;
    sleep(Duration::from_secs(30)).await;
    recovery(&health).await;
    let started = Instant::now();

    let expected = [0.05, 0.25, 0.50, 1.00];
    for (step, share) in expected.iter().enumerate() {
        assert_eq!(health.ramp_step(), Some(step as u32), "step {step}");
        assert!((health.ramp_share() - share).abs() < 1e-9);
        let snap = health.snapshot();
        assert_eq!(snap.ramp_step, Some(step as u32));
        let before = provider.calls();
        let admitted = send(&mut svc, 2000).await;
        assert_eq!(
            provider.calls() - before,
            admitted,
            "shed requests never reach the provider"
        );
        let got = admitted as f64 / 2000.0;
        assert!(
            (got - share).abs() <= 0.02,
            "step {step}: admitted {got}, want {share} ± 0.02"
        );
        // Not before the hold time is over...
        sleep(5 * MIN - Duration::from_secs(1)).await;
        assert_eq!(health.ramp_step(), Some(step as u32), "step {step} held");
        // ...and then at once.
        sleep(Duration::from_secs(1)).await;
        settle().await;
    }
    assert_eq!(Instant::now() - started, 20 * MIN);
    assert_eq!(health.ramp_step(), None, "completed");
    assert_eq!(health.ramp_share(), 1.0);
    assert_eq!(send(&mut svc, 100).await, 100);

    let got = ramp_events(&mut events);
    let want = vec![
        HealthEventKind::RampStep {
            step: 0,
            share: 0.05,
        },
        HealthEventKind::RampStep {
            step: 1,
            share: 0.25,
        },
        HealthEventKind::RampStep {
            step: 2,
            share: 0.50,
        },
        HealthEventKind::RampStep {
            step: 3,
            share: 1.00,
        },
        HealthEventKind::RampCompleted,
    ];
    assert_eq!(got, want);
}

#[tokio::test(start_paused = true)]
async fn a_quiet_provider_is_not_advanced_before_its_minimum_requests() {
    let health = Health::standalone("p", "m");
    let config = RampConfig::default()
        .seed(1)
        .steps([Step::new(0.5, MIN), Step::new(1.0, MIN)])
        .min_requests(20)
        // Patient: this test is about the minimum, not about low traffic.
        .quiet_wait(60 * MIN);
    let mut svc = RampLayer::with_config(health.clone(), config)
        .unwrap()
        .layer(Provider::default());
    outage(&health).await;
    recovery(&health).await;
    assert_eq!(health.ramp_step(), Some(0));
    // 20 offered at 50 %: about 10 admitted, not enough.
    let admitted = send(&mut svc, 20).await;
    assert!(admitted < 20);
    sleep(10 * MIN).await;
    assert_eq!(
        health.ramp_step(),
        Some(0),
        "held until it has seen enough requests"
    );
    send(&mut svc, 40).await;
    sleep(Duration::from_secs(1)).await; // the check interval
    settle().await;
    assert_eq!(health.ramp_step(), Some(1));
}

/// At one request a minute a 5 % step gets a request every twenty minutes: waiting
/// for 20 of them held a recovered provider at 5 % for hours. Past its hold and
/// `quiet_wait` (5 minutes each by default) a step advances on what it saw, unless
/// one of those requests failed.
#[tokio::test(start_paused = true)]
async fn at_low_traffic_a_step_advances_after_its_quiet_wait_unless_one_failed() {
    let health = Health::standalone("p", "m");
    let provider = Provider::default();
    let mut svc = RampLayer::with_config(health.clone(), RampConfig::default().seed(5))
        .unwrap()
        .layer(provider.clone());
    outage(&health).await;
    recovery(&health).await;
    let started = Instant::now();
    // One request a minute, every step through.
    let mut last = Some(0);
    while let Some(step) = health.ramp_step() {
        send(&mut svc, 1).await;
        sleep(MIN).await;
        settle().await;
        if health.ramp_step() != last {
            last = health.ramp_step();
            assert!(last.is_none_or(|s| s == step + 1), "{last:?} after {step}");
        }
        assert!(
            Instant::now() - started <= 41 * MIN,
            "still ramping at {:?}",
            Instant::now() - started
        );
    }
    let took = Instant::now() - started;
    assert!(
        took >= 40 * MIN,
        "each step waited its hold and its quiet wait: {took:?}"
    );

    // A failure among the few requests a step saw holds it for `min_requests`.
    outage(&health).await;
    sleep(Duration::from_secs(60)).await;
    recovery(&health).await;
    assert_eq!(health.ramp_step(), Some(0));
    provider.fail_one_in(1);
    let before = provider.calls();
    while provider.calls() == before {
        send(&mut svc, 1).await;
    }
    provider.fail_one_in(0);
    sleep(30 * MIN).await;
    settle().await;
    assert_eq!(
        health.ramp_step(),
        Some(0),
        "held: one of its requests failed"
    );
}

#[tokio::test(start_paused = true)]
async fn a_failing_step_rolls_back_and_reopens_with_a_longer_cooldown() {
    let health = Health::standalone("p", "m");
    let mut events = health.subscribe();
    let provider = Provider::default();
    let layer = RampLayer::with_config(health.clone(), RampConfig::default().seed(3)).unwrap();
    let mut svc = layer.clone().layer(provider.clone());
    outage(&health).await;
    sleep(Duration::from_secs(30)).await;
    recovery(&health).await;
    send(&mut svc, 1000).await;
    sleep(5 * MIN).await;
    settle().await;
    assert_eq!(health.ramp_step(), Some(1));

    // Every third request fails: 33 % > the 10 % threshold.
    provider.fail_one_in(3);
    send(&mut svc, 200).await;
    settle().await;
    assert_eq!(health.circuit(), CircuitState::Open, "re-opened");
    assert_eq!(health.ramp_step(), None);
    assert_eq!(
        health.ramp_share(),
        1.0,
        "the open circuit holds the traffic off"
    );
    assert_eq!(health.trips(), 2, "one more trip than the outage");
    let cooldown = health.open_until().unwrap() - Instant::now();
    assert_eq!(
        cooldown,
        Duration::from_secs(60),
        "longer than the first 30 s"
    );
    assert_eq!(layer.status().consecutive_rollbacks, 1);
    assert_eq!(layer.status().readmit_in, Some(Duration::from_secs(60)));

    let got = ramp_events(&mut events);
    assert_eq!(
        got,
        vec![
            HealthEventKind::RampStep {
                step: 0,
                share: 0.05
            },
            HealthEventKind::RampStep {
                step: 1,
                share: 0.25
            },
            HealthEventKind::RampRolledBack { from_share: 0.25 },
        ]
    );

    // Recovered for real this time: the ramp starts over from the first step.
    provider.fail_one_in(0);
    sleep(Duration::from_secs(60)).await;
    recovery(&health).await;
    assert_eq!(health.ramp_step(), Some(0));
    for _ in 0..4 {
        send(&mut svc, 1000).await;
        sleep(5 * MIN).await;
        settle().await;
    }
    assert_eq!(health.ramp_step(), None);
    assert_eq!(
        layer.status().consecutive_rollbacks,
        0,
        "forgotten once completed"
    );
    assert!(ramp_events(&mut events).ends_with(&[HealthEventKind::RampCompleted]));
}

#[tokio::test(start_paused = true)]
async fn the_threshold_is_relative_to_the_measured_baseline() {
    let health = Health::standalone("p", "m");
    let provider = Provider::default();
    let layer = RampLayer::with_config(health.clone(), RampConfig::default().seed(5)).unwrap();
    let mut svc = layer.clone().layer(provider.clone());
    settle().await;
    // A provider that normally fails one request in 8 (12.5 %).
    provider.fail_one_in(8);
    for _ in 0..3 {
        send(&mut svc, 600).await;
        sleep(MIN).await;
        settle().await;
    }
    let baseline = layer.status().baseline_error_rate.expect("measured");
    assert!((baseline - 0.125).abs() < 0.01, "{baseline}");
    let threshold = layer.status().threshold;
    assert!((threshold - 0.25).abs() < 0.02, "{threshold}");

    outage(&health).await;
    recovery(&health).await;
    // The same error rate as usual does not roll back (the absolute 10 % floor
    // alone would have).
    send(&mut svc, 4000).await;
    settle().await;
    assert_eq!(health.circuit(), CircuitState::Closed);
    sleep(5 * MIN).await;
    settle().await;
    assert_eq!(health.ramp_step(), Some(1));
    // Two and a half times the usual does.
    provider.fail_one_in(3);
    send(&mut svc, 1000).await;
    settle().await;
    assert_eq!(health.circuit(), CircuitState::Open);
}

#[tokio::test(start_paused = true)]
async fn a_flapping_provider_waits_longer_each_time() {
    let health = Health::standalone("p", "m");
    let provider = Provider::default();
    let layer = RampLayer::with_config(health.clone(), RampConfig::default().seed(11)).unwrap();
    let mut svc = layer.clone().layer(provider.clone());
    outage(&health).await;
    let mut cooldowns = Vec::new();
    for _ in 0..6 {
        // The breaker's cooldown is over; it probes and closes...
        sleep(health.recovers_in(Instant::now())).await;
        // ...and a breaker that forgives trips quickly would even reset them.
        health.set_trips(0);
        recovery(&health).await;
        assert_eq!(health.ramp_step(), Some(0));
        // ...but the provider falls over again as soon as it gets traffic.
        provider.fail_one_in(2);
        send(&mut svc, 2000).await;
        settle().await;
        assert_eq!(health.circuit(), CircuitState::Open);
        cooldowns.push((health.open_until().unwrap() - Instant::now()).as_secs());
    }
    assert_eq!(cooldowns, [60, 120, 240, 300, 300, 300]);
    assert_eq!(layer.status().consecutive_rollbacks, 6);
}

#[tokio::test(start_paused = true)]
async fn a_breaker_trip_during_the_ramp_counts_as_a_flap() {
    let health = Health::standalone("p", "m");
    let mut events = health.subscribe();
    let layer = RampLayer::with_config(health.clone(), RampConfig::default().seed(2)).unwrap();
    let mut svc = layer.clone().layer(Provider::default());
    outage(&health).await;
    recovery(&health).await;
    send(&mut svc, 100).await;
    // The breaker trips on its own, with its first-trip cooldown.
    health.set_trips(1);
    let until = Instant::now() + Duration::from_secs(30);
    assert!(health.transition(CircuitState::Closed, CircuitState::Open, Some(until)));
    settle().await;
    assert_eq!(health.ramp_step(), None);
    assert_eq!(
        health.open_until().unwrap() - Instant::now(),
        Duration::from_secs(60),
        "extended to the flapping cooldown"
    );
    assert_eq!(
        ramp_events(&mut events),
        vec![
            HealthEventKind::RampStep {
                step: 0,
                share: 0.05
            },
            HealthEventKind::RampRolledBack { from_share: 0.05 },
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_operator_forcing_the_circuit_closed_ends_the_ramp() {
    let health = Health::standalone("p", "m");
    let _svc = RampLayer::with_config(health.clone(), RampConfig::default())
        .unwrap()
        .layer(Provider::default());
    outage(&health).await;
    recovery(&health).await;
    assert_eq!(health.ramp_step(), Some(0));
    health.force(Some(CircuitState::Closed));
    settle().await;
    assert_eq!(health.ramp_step(), None);
    assert_eq!(health.ramp_share(), 1.0);
}

#[tokio::test(start_paused = true)]
async fn a_curve_ramps_in_equal_steps() {
    let health = Health::standalone("p", "m");
    let config = RampConfig::default()
        .seed(4)
        .min_requests(0)
        .curve(Curve::new(CurveShape::Linear, 0.1, 10 * MIN, 10));
    let mut svc = RampLayer::with_config(health.clone(), config)
        .unwrap()
        .layer(Provider::default());
    outage(&health).await;
    recovery(&health).await;
    let mut shares = Vec::new();
    for _ in 0..10 {
        shares.push((health.ramp_share() * 100.0).round() as u32);
        let admitted = send(&mut svc, 1000).await as f64 / 1000.0;
        assert!((admitted - health.ramp_share()).abs() <= 0.02);
        sleep(MIN).await;
        settle().await;
    }
    assert_eq!(shares, [10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    assert_eq!(health.ramp_step(), None);
}

#[tokio::test(start_paused = true)]
async fn rate_limits_and_rejections_do_not_count_against_a_step() {
    use http::{Request, Response};
    use tower::service_fn;
    let health = Health::standalone("p", "m");
    let config = RampConfig::default()
        .seed(9)
        .steps([Step::new(0.5, MIN), Step::new(1.0, MIN)]);
    let inner = service_fn(|_req: Request<String>| async {
        Ok::<_, tower::BoxError>(
            Response::builder()
                .status(429)
                .header("retry-after", "1")
                .body(String::new())
                .unwrap(),
        )
    });
    let mut svc = RampLayer::with_config(health.clone(), config)
        .unwrap()
        .layer(inner);
    outage(&health).await;
    recovery(&health).await;
    send(&mut svc, 500).await;
    settle().await;
    assert_eq!(
        health.circuit(),
        CircuitState::Closed,
        "429s are not failures"
    );
    sleep(2 * MIN).await;
    assert_eq!(
        health.ramp_step(),
        Some(0),
        "nor do they count as verified requests"
    );
}

#[tokio::test(start_paused = true)]
async fn shedding_can_be_left_to_a_share_aware_router() {
    let health = Health::standalone("p", "m");
    let config = RampConfig::default().seed(1).shed(false);
    let mut svc = RampLayer::with_config(health.clone(), config)
        .unwrap()
        .layer(Provider::default());
    outage(&health).await;
    recovery(&health).await;
    assert_eq!(health.ramp_share(), 0.05, "published for the router");
    assert_eq!(send(&mut svc, 100).await, 100, "but not enforced here");
}

#[tokio::test(start_paused = true)]
async fn the_driver_is_one_task_per_layer_and_stops_with_the_last_clone() {
    let health = Health::standalone("p", "m");
    let layer = RampLayer::with_config(health.clone(), RampConfig::default().seed(1)).unwrap();
    let services: Vec<_> = (0..50).map(|_| layer.layer(Provider::default())).collect();
    let clones: Vec<_> = services.to_vec();
    settle().await;
    let tasks = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    assert_eq!(tasks, 1, "one driver for 100 services");
    drop(layer);
    drop(services);
    settle().await;
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        1
    );
    drop(clones);
    settle().await;
    assert_eq!(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks(),
        0
    );
    // Nothing drives the ramp any more.
    outage(&health).await;
    recovery(&health).await;
    assert_eq!(health.ramp_step(), None);
}

#[test]
fn without_a_runtime_nothing_panics_and_everything_is_admitted() {
    let health = Health::standalone("p", "m");
    let layer = RampLayer::with_config(health, RampConfig::default()).unwrap();
    let svc = layer.layer(Provider::default());
    let fut = svc.oneshot(http::Request::new(String::new()));
    let res = futures_lite_block_on(fut);
    assert_eq!(res.unwrap().status(), 200);
}

fn futures_lite_block_on<F: std::future::Future>(fut: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap()
        .block_on(fut)
}

#[test]
#[allow(deprecated)]
fn an_invalid_config_is_refused_by_every_constructor() {
    let health = Health::standalone("p", "m");
    let bad = RampConfig::default().steps([]);
    for err in [
        RampLayer::with_config(health.clone(), bad.clone()).unwrap_err(),
        RampLayer::try_new(health.clone(), bad).unwrap_err(),
    ] {
        assert_eq!(err.field(), "schedule.steps");
    }
    // The default configuration needs no check.
    assert!(!RampLayer::new(health).probes());
}

/// A stand-in for output validation below the ramp: one chunk, then a clean end
/// that first sets the response's late verdict to `kind` (if any), as validation in
/// its `after_commit = "report"` mode does for a stream it rejects after its commit
/// point.
struct EndsWithVerdict {
    chunk: Option<bytes::Bytes>,
    late: tower_failover_core::LateVerdict,
    kind: Option<tower_failover_core::RejectKind>,
}

impl http_body::Body for EndsWithVerdict {
    type Data = bytes::Bytes;
    type Error = tower::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<bytes::Bytes>, tower::BoxError>>> {
        if let Some(chunk) = self.chunk.take() {
            return std::task::Poll::Ready(Some(Ok(http_body::Frame::data(chunk))));
        }
        if let Some(kind) = self.kind.take() {
            self.late.reject(kind);
        }
        std::task::Poll::Ready(None)
    }
}

#[tokio::test(start_paused = true)]
async fn a_late_malformed_rejection_at_a_clean_end_rolls_the_step_back() {
    use http::{Request, Response};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};
    use tower::service_fn;
    use tower_failover_core::{LateVerdict, RejectKind};
    for (kind, malformed) in [
        (RejectKind::InvalidJson, true),
        (RejectKind::Refusal, false),
    ] {
        let health = Health::standalone("p", "m");
        let calls = Arc::new(AtomicU64::new(0));
        let seen = calls.clone();
        // Every third answer streams fine but fails validation after its commit point.
        let inner = service_fn(move |_req: Request<String>| {
            let n = seen.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                let late = LateVerdict::new();
                let mut res = Response::new(EndsWithVerdict {
                    chunk: Some(bytes::Bytes::from_static(b"data: {}\n\n")),
                    late: late.clone(),
                    kind: n.is_multiple_of(3).then_some(kind),
                });
                res.extensions_mut().insert(late);
                Ok::<_, tower::BoxError>(res)
            }
        });
        let config = RampConfig::default().seed(3).shed(false);
        let mut svc = RampLayer::with_config(health.clone(), config)
            .unwrap()
            .layer(inner);
        outage(&health).await;
        sleep(Duration::from_secs(30)).await;
        recovery(&health).await;
        assert_eq!(health.ramp_step(), Some(0));
        send(&mut svc, 300).await;
        settle().await;
        assert_eq!(calls.load(Ordering::SeqCst), 300);
        if malformed {
            assert_eq!(health.circuit(), CircuitState::Open, "{kind}: rolled back");
            assert_eq!(health.ramp_step(), None);
        } else {
            assert_eq!(health.circuit(), CircuitState::Closed, "{kind}: neutral");
            assert_eq!(health.ramp_step(), Some(0));
        }
    }
}
