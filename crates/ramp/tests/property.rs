//! Property tests of the ramp's state machine: whatever the circuit and the
//! provider do, the published state stays consistent and a flapping provider's
//! cooldowns never shrink.

mod common;

use std::time::Duration;

use common::{Provider, send, settle};
use proptest::prelude::*;
use tokio::time::{Instant, sleep};
use tower::Layer;
use tower_failover_core::{CircuitState, Health};
use tower_failover_ramp::{RampConfig, RampLayer, Step};

#[derive(Debug, Clone)]
enum Action {
    /// Offer requests; the provider fails one in `fail_every` (0: never).
    Send { n: u64, fail_every: u64 },
    /// Let time pass.
    Wait { secs: u64 },
    /// The breaker trips (from closed or half-open).
    Trip,
    /// The breaker's cooldown is over and its trial succeeds.
    Recover,
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        (1u64..300, prop_oneof![Just(0u64), 2u64..20])
            .prop_map(|(n, fail_every)| Action::Send { n, fail_every }),
        (1u64..200).prop_map(|secs| Action::Wait { secs }),
        Just(Action::Trip),
        Just(Action::Recover),
    ]
}

/// What the checks remember between two looks.
#[derive(Default)]
struct Seen {
    rollbacks: u32,
    cooldown: Duration,
}

const SHARES: [u32; 3] = [100_000, 500_000, 1_000_000];

fn check(health: &Health, layer: &RampLayer, seen: &mut Seen) -> Result<(), TestCaseError> {
    // The published step and share agree.
    match health.ramp_step() {
        None => prop_assert_eq!(health.ramp_share_ppm(), 1_000_000),
        Some(step) => {
            prop_assert_eq!(
                health.circuit(),
                CircuitState::Closed,
                "a ramp runs only while closed"
            );
            prop_assert_eq!(health.ramp_share_ppm(), SHARES[step as usize]);
        }
    }
    // Each rollback in a row waits at least as long as the one before (seen
    // within a second of it), and never more than the cap.
    let rollbacks = layer.status().consecutive_rollbacks;
    if rollbacks > seen.rollbacks {
        let cooldown = health
            .open_until()
            .map(|u| u - Instant::now())
            .unwrap_or_default();
        prop_assert!(
            cooldown + Duration::from_secs(1) >= seen.cooldown,
            "{:?} after {:?}",
            cooldown,
            seen.cooldown
        );
        prop_assert!(cooldown <= Duration::from_secs(300));
        seen.cooldown = cooldown;
    } else if rollbacks == 0 {
        seen.cooldown = Duration::ZERO;
    }
    seen.rollbacks = rollbacks;
    Ok(())
}

async fn run(actions: Vec<Action>) -> Result<(), TestCaseError> {
    let health = Health::standalone("p", "m");
    let config = RampConfig::default()
        .seed(3)
        .steps([0.1, 0.5, 1.0].map(|s| Step::new(s, Duration::from_secs(60))));
    let layer = RampLayer::with_config(health.clone(), config).unwrap();
    let provider = Provider::default();
    let mut svc = layer.layer(provider.clone());
    settle().await;
    let mut seen = Seen::default();
    for a in actions {
        match a {
            Action::Send { n, fail_every } => {
                provider.fail_one_in(fail_every);
                send(&mut svc, n).await;
            }
            Action::Wait { secs } => {
                // A second at a time, so a rollback at a hold's end is seen within
                // a second of it.
                for _ in 0..secs {
                    sleep(Duration::from_secs(1)).await;
                    settle().await;
                    check(&health, &layer, &mut seen)?;
                }
            }
            Action::Trip => {
                let state = health.breaker_state();
                if state != CircuitState::Open {
                    health.set_trips(health.trips() + 1);
                    let until = Instant::now() + Duration::from_secs(30);
                    health.transition(state, CircuitState::Open, Some(until));
                }
            }
            Action::Recover => {
                if health.breaker_state() == CircuitState::Open {
                    sleep(health.recovers_in(Instant::now())).await;
                    health.transition(CircuitState::Open, CircuitState::HalfOpen, None);
                    settle().await;
                }
                health.transition(CircuitState::HalfOpen, CircuitState::Closed, None);
            }
        }
        settle().await;
        check(&health, &layer, &mut seen)?;
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]
    #[test]
    fn the_ramp_stays_consistent(actions in proptest::collection::vec(action(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(run(actions))?;
    }
}
