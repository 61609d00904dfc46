//! Three gateway replicas in one process — each a real stack (provider client →
//! ObserveLayer, under an ordered fallback) over simulated providers on loopback —
//! sharing one real Redis.
//!
//! Here, not in `crates/redis/tests`, because it needs several layer crates at once;
//! it shares the Redis crate's real-server harness instead of copying it.

#[path = "../../crates/redis/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{RedisServer, eventually};
use http::Request;
use http_body_util::Full;
use tokio::time::Instant;
use tower::{Layer, ServiceExt};
use tower_failover_balance::Fallback;
use tower_failover_core::observe::ObserveLayer;
use tower_failover_core::replay::ReplayLayer;
use tower_failover_core::{HealthConfig, Registry};
use tower_failover_provider::OpenAiCompatible;
use tower_failover_redis::{RedisConfig, RedisStore};
use tower_failover_sim::{Fault, FaultSpec, Flavor, RetryAfter, Sim};

const BODY: &str = r#"{"model":"m","messages":[{"role":"user","content":"hello"}]}"#;

fn request() -> Request<Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap()
}

async fn sim(name: &str) -> Sim {
    Sim::builder(Flavor::OpenAi)
        .name(name)
        .ttft(Duration::from_millis(1))
        .token_interval(Duration::ZERO)
        .start()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_seen_by_one_replica_steers_the_whole_fleet() {
    require_redis!();
    let server = RedisServer::start().await;
    let (primary, backup) = (sim("primary").await, sim("backup").await);

    // Three replicas: one registry on Redis each (one namespace), the same stack.
    let config = RedisConfig::new(server.url())
        .namespace("fleet")
        .resync_interval(Duration::from_millis(100));
    let replicas: Vec<Registry> = (0..3)
        .map(|_| {
            Registry::with_store(
                RedisStore::start(config.clone()).unwrap(),
                HealthConfig::default(),
            )
        })
        .collect();
    let stacks: Vec<_> = replicas
        .iter()
        .map(|registry| {
            let mut chain = Fallback::builder();
            for (name, sim) in [("primary", &primary), ("backup", &backup)] {
                let health = registry.provider(name, "m");
                let client = OpenAiCompatible::builder()
                    .name(name)
                    .base_url(format!("{}/v1", sim.base_url()))
                    .api_key("sk-test")
                    .build()
                    .unwrap();
                chain = chain.provider(health.clone(), ObserveLayer::new(health).layer(client));
            }
            ReplayLayer::new(1 << 20).layer(chain.build().unwrap())
        })
        .collect();
    for r in &replicas {
        assert!(eventually(Duration::from_secs(30), || r.store().status().connected).await);
    }
    tokio::time::sleep(Duration::from_millis(100)).await;

    // Everyone is served by the primary while it is healthy.
    for s in &stacks {
        assert_eq!(s.clone().oneshot(request()).await.unwrap().status(), 200);
    }
    assert_eq!(primary.counters().received, 3);

    // The primary starts refusing with 429 and a 30 s Retry-After. Replica A meets
    // it once, and its caller is still served by the backup.
    primary
        .set_faults([FaultSpec::always(Fault::RateLimit(RetryAfter::Seconds(30)))])
        .unwrap();
    primary.handle().reset_counters();
    assert_eq!(
        stacks[0].clone().oneshot(request()).await.unwrap().status(),
        200
    );
    assert_eq!(primary.counters().status(429), 1);

    // B and C learn of it through Redis and overflow without collecting 429s of
    // their own: the primary receives nothing more.
    let b_primary = replicas[1].provider("primary", "m");
    let c_primary = replicas[2].provider("primary", "m");
    assert!(
        eventually(Duration::from_secs(30), || b_primary
            .is_rate_limited(Instant::now())
            && c_primary.is_rate_limited(Instant::now()))
        .await,
        "B and C know the primary is rate limited"
    );
    let backup_before = backup.counters().received;
    for s in &stacks[1..] {
        for _ in 0..10 {
            assert_eq!(s.clone().oneshot(request()).await.unwrap().status(), 200);
        }
    }
    assert_eq!(
        primary.counters().received,
        1,
        "only A's one request met the 429"
    );
    assert_eq!(backup.counters().received - backup_before, 20);
}

/// One recovery ramp for the fleet: when a provider recovers, the replica holding
/// the ramp lease drives the schedule and the others follow its share through
/// Redis, instead of each running a ramp of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_ramp_for_the_fleet_driven_by_one_replica() {
    use tower_failover_core::{CircuitState, HealthEvent, HealthEventKind};
    use tower_failover_ramp::{RampConfig, RampLayer, Step};
    require_redis!();
    let server = RedisServer::start().await;
    let config = RedisConfig::new(server.url())
        .namespace("fleet-ramp")
        .resync_interval(Duration::from_millis(100));
    let replicas: Vec<Registry> = (0..2)
        .map(|_| {
            Registry::with_store(
                RedisStore::start(config.clone()).unwrap(),
                HealthConfig::default(),
            )
        })
        .collect();
    let ramp = RampConfig::default()
        .steps([
            Step::new(0.25, Duration::from_millis(300)),
            Step::new(0.5, Duration::from_millis(300)),
            Step::new(1.0, Duration::from_millis(300)),
        ])
        .min_requests(1)
        .min_sample(10_000)
        .check_interval(Duration::from_millis(20))
        .shed(false);
    let healths: Vec<_> = replicas.iter().map(|r| r.provider("p", "m")).collect();
    let services: Vec<_> = healths
        .iter()
        .map(|h| {
            RampLayer::with_config(h.clone(), ramp.clone())
                .unwrap()
                .layer(tower::service_fn(|_req: Request<()>| async {
                    Ok::<_, tower::BoxError>(http::Response::new(String::new()))
                }))
        })
        .collect();
    for r in &replicas {
        assert!(eventually(Duration::from_secs(30), || r.store().status().connected).await);
    }
    let mut events: Vec<_> = replicas.iter().map(Registry::subscribe).collect();
    tokio::time::sleep(Duration::from_millis(100)).await;

    // An outage and a recovery, seen by A and, through Redis, by B.
    let a = &healths[0];
    a.transition(
        CircuitState::Closed,
        CircuitState::Open,
        Some(Instant::now() + Duration::from_millis(50)),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    a.transition(CircuitState::Open, CircuitState::HalfOpen, None);
    a.transition(CircuitState::HalfOpen, CircuitState::Closed, None);
    // Bounds here are generous on purpose: they only matter when something is
    // broken, and a loaded CI machine can take seconds to schedule a Redis round trip.
    assert!(
        eventually(Duration::from_secs(30), || healths[1].circuit()
            == CircuitState::Closed)
        .await
    );

    // Traffic through both replicas until the fleet's ramp has completed (the
    // leader's event) and every replica is back at full share with no step.
    let mut completed = vec![0u32; events.len()];
    let mut last_steps: Vec<Option<u32>> = vec![None; events.len()];
    fn drain(
        events: &mut [tokio::sync::broadcast::Receiver<HealthEvent>],
        completed: &mut [u32],
        last_steps: &mut [Option<u32>],
    ) {
        for (i, rx) in events.iter_mut().enumerate() {
            while let Ok(ev) = rx.try_recv() {
                match ev.kind {
                    HealthEventKind::RampCompleted => completed[i] += 1,
                    HealthEventKind::RampStep { step, .. } => last_steps[i] = Some(step),
                    _ => {}
                }
            }
        }
    }
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        for s in &services {
            let res = s.clone().oneshot(Request::new(())).await.unwrap();
            // The ramp counts a 2xx when its body ends.
            http_body_util::BodyExt::collect(res.into_body())
                .await
                .unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        drain(&mut events, &mut completed, &mut last_steps);
        let settled = healths.iter().all(|h| {
            h.ramp_step().is_none()
                && h.ramp_share_ppm() == tower_failover_core::health::FULL_SHARE_PPM
        });
        if completed.iter().sum::<u32>() >= 1 && settled {
            break;
        }
        assert!(
            Instant::now() < give_up,
            "the fleet's ramp did not complete: {completed:?} {last_steps:?}"
        );
    }
    // Late events (a second completion would be a bug) arrive within a resync or two.
    tokio::time::sleep(Duration::from_millis(300)).await;
    drain(&mut events, &mut completed, &mut last_steps);
    assert_eq!(
        completed.iter().sum::<u32>(),
        1,
        "one ramp completed in the fleet: {completed:?}"
    );
    let leader = completed.iter().position(|&c| c == 1).unwrap();
    assert_eq!(last_steps[leader], Some(2), "the leader drove every step");
    assert!(
        last_steps[1 - leader].is_none_or(|s| s == 0),
        "the follower drove nothing past the first step: {last_steps:?}"
    );
    for h in &healths {
        assert_eq!(h.ramp_step(), None);
        assert_eq!(
            h.ramp_share_ppm(),
            tower_failover_core::health::FULL_SHARE_PPM
        );
    }
}
