use std::sync::Arc;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use super::handle::*;
use super::*;
use crate::event::{HealthEvent, HealthEventKind};
use crate::outcome::{FailureKind, Outcome, RejectKind};
use crate::store::{LocalStore, SharedUpdate};

#[test]
fn provider_id_round_trips() {
    let id = ProviderId::new("openrouter", "meta-llama/llama-3-70b");
    assert_eq!(id.to_string(), "openrouter/meta-llama/llama-3-70b");
    let back: ProviderId = id.to_string().parse().unwrap();
    assert_eq!(back, id);
    assert_eq!(back.model(), "meta-llama/llama-3-70b");
    let json = serde_json::to_string(&id).unwrap();
    assert_eq!(serde_json::from_str::<ProviderId>(&json).unwrap(), id);
    assert!("nomodel".parse::<ProviderId>().is_err());
    assert!("/m".parse::<ProviderId>().is_err());
}

#[tokio::test(start_paused = true)]
async fn transitions_publish_events_and_watch() {
    let h = Health::standalone("p", "m");
    let mut events = h.subscribe();
    let mut watch = h.watch_circuit();
    let until = Instant::now() + Duration::from_secs(30);
    assert!(h.transition(CircuitState::Closed, CircuitState::Open, Some(until)));
    assert!(
        !h.transition(CircuitState::Closed, CircuitState::Open, Some(until)),
        "CAS from the wrong state fails"
    );
    assert_eq!(h.circuit(), CircuitState::Open);
    assert_eq!(h.open_until(), Some(until));
    assert!(!h.is_available(Instant::now()));
    assert_eq!(h.recovers_in(Instant::now()), Duration::from_secs(30));
    watch.changed().await.unwrap();
    assert_eq!(*watch.borrow(), CircuitState::Open);
    let ev = events.recv().await.unwrap();
    assert_eq!(
        ev.kind,
        HealthEventKind::CircuitChanged {
            from: CircuitState::Closed,
            to: CircuitState::Open,
            open_for: Some(Duration::from_secs(30))
        }
    );
    tokio::time::advance(Duration::from_secs(31)).await;
    assert!(
        h.is_available(Instant::now()),
        "cooldown over: a probe may go"
    );
    assert!(h.transition(CircuitState::Open, CircuitState::HalfOpen, None));
    assert_eq!(h.open_until(), None);
}

#[tokio::test(start_paused = true)]
async fn forcing_overrides_and_releases() {
    let h = Health::standalone("p", "m");
    h.force(Some(CircuitState::Open));
    assert_eq!(h.circuit(), CircuitState::Open);
    assert_eq!(h.breaker_state(), CircuitState::Closed);
    assert!(!h.is_available(Instant::now()));
    h.force(None);
    assert_eq!(h.circuit(), CircuitState::Closed);
    assert!(h.is_available(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn rate_limit_windows_never_shrink() {
    let h = Health::standalone("p", "m");
    assert!(h.mark_rate_limited(Duration::from_secs(10)));
    assert!(!h.mark_rate_limited(Duration::from_secs(2)));
    assert!(h.is_rate_limited(Instant::now()));
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(
        h.quota().remaining(Instant::now()),
        Some(Duration::from_secs(5))
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(!h.is_rate_limited(Instant::now()));
    assert!(h.is_available(Instant::now()));
}

#[tokio::test(start_paused = true)]
async fn peak_ewma_jumps_up_and_decays_down() {
    let e = PeakEwma::new(Duration::from_secs(1));
    assert_eq!(e.get(), Duration::ZERO);
    e.observe(Duration::from_millis(300), Instant::now());
    assert_eq!(e.get(), Duration::from_millis(300));
    tokio::time::advance(Duration::from_millis(10)).await;
    e.observe(Duration::from_secs(4), Instant::now());
    assert_eq!(
        e.get(),
        Duration::from_secs(4),
        "a peak replaces the estimate at once"
    );
    tokio::time::advance(Duration::from_secs(1)).await;
    e.observe(Duration::from_millis(300), Instant::now());
    let v = e.get().as_secs_f64();
    // keep = e^-1 ≈ 0.368: 4 * 0.368 + 0.3 * 0.632 ≈ 1.66 s
    assert!((1.6..1.7).contains(&v), "{v}");
}

#[test]
fn counters_and_in_flight() {
    let h = Health::standalone("p", "m");
    h.record(&Outcome::Success);
    h.record(&Outcome::failure(FailureKind::Timeout));
    h.record(&Outcome::rejected(RejectKind::Shed));
    h.record(&Outcome::rejected(RejectKind::Schema));
    h.record(&Outcome::RateLimited { retry_after: None });
    let g1 = h.start_request();
    let g2 = h.start_request();
    assert_eq!(h.in_flight(), 2);
    drop(g1);
    drop(g2);
    assert_eq!(h.in_flight(), 0);
    let c = h.counters();
    assert_eq!(
        (
            c.requests,
            c.successes,
            c.failures,
            c.shed,
            c.rejected,
            c.rate_limited
        ),
        (5, 1, 1, 1, 1, 1)
    );
    h.record_usage(100, 20, 1500);
    let s = h.snapshot();
    assert_eq!(s.usage.prompt_tokens, 100);
    assert!((s.usage.cost - 0.0015).abs() < 1e-12);
}

#[tokio::test(start_paused = true)]
async fn remote_updates_apply_without_echo() {
    let h = Health::standalone("p", "m");
    let mut events = h.subscribe();
    let until = std::time::SystemTime::now() + Duration::from_secs(20);
    h.apply_remote(&SharedUpdate::Circuit {
        state: CircuitState::Open,
        open_until: Some(until),
        trips: 2,
    });
    assert_eq!(h.circuit(), CircuitState::Open);
    assert_eq!(h.trips(), 2);
    assert!(matches!(
        events.recv().await.unwrap().kind,
        HealthEventKind::CircuitChanged {
            to: CircuitState::Open,
            ..
        }
    ));
    h.apply_remote(&SharedUpdate::Ramp {
        step: Some(1),
        share_ppm: 250_000,
    });
    assert_eq!(h.ramp_step(), Some(1));
    assert!((h.ramp_share() - 0.25).abs() < 1e-9);
    h.apply_remote(&SharedUpdate::RateLimitedUntil {
        group: "g".into(),
        until: std::time::SystemTime::now() + Duration::from_secs(9),
    });
    assert!(h.is_rate_limited(Instant::now()));
}

fn suspect_events(rx: &mut broadcast::Receiver<HealthEvent>) -> Vec<bool> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if let HealthEventKind::Suspect { suspect, .. } = ev.kind {
            out.push(suspect);
        }
    }
    out
}

#[tokio::test(start_paused = true)]
async fn a_silent_provider_becomes_suspect_and_an_answer_clears_it() {
    let h = Health::standalone("p", "m");
    let mut events = h.subscribe();
    h.observe_ttfb(Duration::from_millis(50));
    // Threshold: max(4 × 50 ms, 500 ms floor).
    assert_eq!(h.suspect_threshold(), Duration::from_millis(500));
    let mut waiting = h.start_request();
    assert_eq!(h.waiting(), 1);
    tokio::time::advance(Duration::from_millis(500)).await;
    assert!(!h.is_suspect(Instant::now()), "at the threshold, not yet");
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(h.is_suspect(Instant::now()));
    assert!(h.is_available(Instant::now()), "suspect is not unavailable");
    assert!(h.snapshot().suspect);
    // More requests while it is silent do not reset the silence.
    let second = h.start_request();
    assert!(h.is_suspect(Instant::now()));
    assert_eq!(suspect_events(&mut events), vec![true]);
    waiting.answered(&Outcome::Success);
    assert_eq!(h.waiting(), 1);
    assert!(!h.is_suspect(Instant::now()), "an answer is a sign of life");
    assert!(!h.snapshot().suspect);
    assert_eq!(suspect_events(&mut events), vec![false]);
    drop(second);
    drop(waiting);
    assert_eq!((h.waiting(), h.in_flight()), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn timeouts_are_no_sign_of_life_and_idle_time_is_not_silence() {
    let h = Health::standalone("p", "m");
    // Idle for a long time: the first request starts the silence clock.
    tokio::time::advance(Duration::from_secs(60)).await;
    let mut a = h.start_request();
    let b = h.start_request();
    assert!(!h.is_suspect(Instant::now()));
    // Unmeasured: the threshold is 4 × 500 ms.
    assert_eq!(h.suspect_threshold(), Duration::from_secs(2));
    tokio::time::advance(Duration::from_millis(1500)).await;
    a.answered(&Outcome::failure(FailureKind::Timeout));
    tokio::time::advance(Duration::from_millis(501)).await;
    assert!(h.is_suspect(Instant::now()), "a timeout did not reset it");
    // The last waiting request given up: nothing waits, nothing to suspect.
    let mut events = h.subscribe();
    drop(b);
    assert_eq!(suspect_events(&mut events), vec![false]);
    assert!(!h.is_suspect(Instant::now()));
    // A fast error is a sign of life.
    let mut c = h.start_request();
    tokio::time::advance(Duration::from_millis(1999)).await;
    let d = h.start_request();
    c.answered(&Outcome::failure(FailureKind::Status(503)));
    tokio::time::advance(Duration::from_millis(1999)).await;
    assert!(!h.is_suspect(Instant::now()));
    tokio::time::advance(Duration::from_millis(2)).await;
    assert!(h.is_suspect(Instant::now()));
    drop(d);
}

#[tokio::test(start_paused = true)]
async fn the_threshold_follows_the_ttfb_average_and_the_config() {
    let h = Health::standalone("p", "m");
    h.observe_ttfb(Duration::from_secs(3));
    assert_eq!(h.suspect_threshold(), Duration::from_secs(12));
    let _g = h.start_request();
    tokio::time::advance(Duration::from_secs(11)).await;
    assert!(
        !h.is_suspect(Instant::now()),
        "a slow provider is given its time"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    assert!(h.is_suspect(Instant::now()));

    let (events, _) = broadcast::channel(8);
    let off = Health::with_parts(
        ProviderId::new("q", "m"),
        QuotaGroup::new(None),
        events,
        Arc::new(LocalStore),
        HealthConfig {
            detect_hangs: false,
            ..HealthConfig::default()
        },
    );
    let _g = off.start_request();
    tokio::time::advance(Duration::from_secs(3600)).await;
    assert!(!off.is_suspect(Instant::now()), "detection off");
}

#[test]
fn health_config_defaults_parse_and_validate() {
    let d = HealthConfig::default();
    assert_eq!(
        (
            d.ewma_decay,
            d.detect_hangs,
            d.suspect_factor,
            d.suspect_floor
        ),
        (
            Duration::from_secs(5),
            true,
            4.0,
            Duration::from_millis(500)
        )
    );
    assert!(d.validate().is_ok());
    let c: HealthConfig =
        serde_json::from_str(r#"{"suspect_factor": 6, "suspect_floor": "2s"}"#).unwrap();
    assert_eq!(
        (c.suspect_factor, c.suspect_floor),
        (6.0, Duration::from_secs(2))
    );
    assert!(serde_json::from_str::<HealthConfig>(r#"{"suspect": 1}"#).is_err());
    for (bad, field) in [
        (
            HealthConfig {
                suspect_factor: 0.5,
                ..d
            },
            "suspect_factor",
        ),
        (
            HealthConfig {
                suspect_factor: f64::NAN,
                ..d
            },
            "suspect_factor",
        ),
        (
            HealthConfig {
                suspect_floor: Duration::ZERO,
                ..d
            },
            "suspect_floor",
        ),
        (
            HealthConfig {
                ewma_decay: Duration::ZERO,
                ..d
            },
            "ewma_decay",
        ),
    ] {
        assert_eq!(bad.validate().unwrap_err().field(), field);
    }
}
