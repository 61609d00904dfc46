use std::collections::HashSet;
use std::time::Duration;

use http::{Request, Response, StatusCode};
use tower::{BoxError, service_fn};

use super::*;

/// A job whose body says how long it runs (ms) and, past that, how large an
/// answer it gets; `13` fails like a stack with every provider down.
fn stack() -> impl tower::Service<
    Request<String>,
    Response = Response<String>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    service_fn(|req: Request<String>| async move {
        let ms: u64 = req.body().parse().unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if ms == 13 {
            return Err::<Response<String>, BoxError>(
                tower_failover_core::error::AllProvidersFailed::new(vec![]).into(),
            );
        }
        Ok(Response::new("x".repeat(ms as usize)))
    })
}

/// A store over [`stack`] holding answers of up to `body` bytes, `total` in all.
fn bytes_bounded(
    body: usize,
    total: usize,
) -> Deferred<
    impl tower::Service<
        Request<String>,
        Response = Response<String>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
    + Send
    + 'static,
> {
    Deferred::new(
        stack(),
        DeferredConfig {
            max_body_bytes: body,
            max_total_bytes: total,
            ..Default::default()
        },
    )
}

#[tokio::test(start_paused = true)]
async fn failures_timeouts_and_capacity() {
    let jobs = Deferred::new(
        stack(),
        DeferredConfig {
            capacity: 3,
            max_wait: Duration::from_secs(1),
            max_body_bytes: 100,
            ..Default::default()
        },
    );
    let failing = jobs.submit(Request::new("13".to_owned())).unwrap();
    let slow = jobs.submit(Request::new("5000".to_owned())).unwrap();
    let big = jobs.submit(Request::new("500".to_owned())).unwrap();
    assert_eq!(
        jobs.submit(Request::new("1".to_owned()))
            .unwrap_err()
            .to_string(),
        "deferred job store full (3 jobs)"
    );
    assert_eq!(jobs.pending(), 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    match jobs.status(&failing) {
        JobStatus::Failed { error, class } => {
            assert_eq!(error, "all providers failed: none available");
            assert_eq!(class.status, StatusCode::SERVICE_UNAVAILABLE);
            assert_eq!(class.kind, "all_providers_failed");
        }
        other => panic!("{other:?}"),
    }
    match jobs.status(&slow) {
        JobStatus::Failed { error, class } => {
            assert!(error.contains("within 1000 ms"), "{error}");
            assert_eq!(class.status, StatusCode::GATEWAY_TIMEOUT);
        }
        other => panic!("{other:?}"),
    }
    match jobs.status(&big) {
        JobStatus::Failed { class, .. } => {
            assert_eq!(class.kind, "upstream_response_too_large");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(jobs.status(&JobId::from("nope")), JobStatus::Unknown);
    assert_ne!(failing, slow);
}

#[tokio::test(start_paused = true)]
async fn answers_expire_then_are_forgotten() {
    let jobs = Deferred::new(
        stack(),
        DeferredConfig {
            keep_results: Duration::from_secs(60),
            ..Default::default()
        },
    );
    let id = jobs.submit(Request::new("2".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert!(matches!(jobs.status(&id), JobStatus::Done { .. }));
    assert_eq!(jobs.held_bytes(), 2);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(jobs.status(&id), JobStatus::Expired);
    let _ = jobs.submit(Request::new("0".to_owned())).unwrap(); // sweeps
    assert_eq!(jobs.status(&id), JobStatus::Expired, "a tombstone");
    assert_eq!(jobs.held_bytes(), 1, "the expired answer's bytes are freed");
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(jobs.status(&id), JobStatus::Unknown, "forgotten at last");
}

#[tokio::test(start_paused = true)]
async fn a_removed_job_is_cancelled_or_forgotten() {
    let jobs = Deferred::new(stack(), DeferredConfig::default());
    let waiting = jobs.submit(Request::new("5000".to_owned())).unwrap();
    let answered = jobs.submit(Request::new("2".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(3)).await;
    assert!(matches!(jobs.status(&answered), JobStatus::Done { .. }));
    assert_eq!(jobs.held_bytes(), 4 + 2, "a waiting request and an answer");

    assert!(jobs.remove(&waiting));
    assert_eq!(jobs.pending(), 0, "cancelled");
    assert_eq!(jobs.status(&waiting), JobStatus::Unknown);
    assert_eq!(jobs.held_bytes(), 2);
    // Past the time it would have finished: it does not come back.
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(jobs.status(&waiting), JobStatus::Unknown);

    assert!(jobs.remove(&answered));
    assert_eq!(jobs.status(&answered), JobStatus::Unknown);
    assert_eq!(jobs.held_bytes(), 0);
    assert!(!jobs.remove(&answered), "already gone");
    assert!(!jobs.remove(&JobId::from("0123456789abcdef0123456789abcdef")));
}

#[tokio::test(start_paused = true)]
async fn ids_are_128_random_bits_in_hex() {
    let jobs = Deferred::new(
        stack(),
        DeferredConfig {
            capacity: 2000,
            ..Default::default()
        },
    );
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let id = jobs.submit(Request::new("1".to_owned())).unwrap();
        let s = id.as_str();
        assert_eq!(s.len(), 32, "{s}");
        assert!(
            s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
            "{s}"
        );
        assert!(seen.insert(s.to_owned()), "unique");
        assert_eq!(
            format!("{id:?}"),
            format!("JobId({}…)", &s[..8]),
            "Debug hides it"
        );
    }
    // Not a counter: the ids share no long prefix.
    let prefixes: HashSet<_> = seen.iter().map(|s| &s[..4]).collect();
    assert!(prefixes.len() > 900, "{}", prefixes.len());
}

#[tokio::test(start_paused = true)]
async fn the_byte_budget_refuses_requests_and_expires_old_answers() {
    let jobs = bytes_bounded(40, 60);
    // A request of 61 bytes cannot fit at all.
    let huge = format!("{:061}", 0);
    assert_eq!(
        jobs.submit(Request::new(huge)).unwrap_err().to_string(),
        "deferred job store full (60 bytes)"
    );
    // Two answers of 30 bytes fit (60); a third expires the oldest early.
    let first = jobs.submit(Request::new("30".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(31)).await;
    let second = jobs.submit(Request::new("30".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(31)).await;
    assert_eq!(jobs.held_bytes(), 60);
    let third = jobs.submit(Request::new("20".to_owned())).unwrap_err();
    assert_eq!(third.to_string(), "deferred job store full (60 bytes)");
    assert!(matches!(jobs.status(&first), JobStatus::Done { .. }));
    assert!(matches!(jobs.status(&second), JobStatus::Done { .. }));

    // With room for a request, its answer pushes the oldest answer out.
    let jobs_small = bytes_bounded(40, 60);
    let a = jobs_small.submit(Request::new("30".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(31)).await;
    let b = jobs_small.submit(Request::new("25".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(26)).await;
    assert_eq!(jobs_small.held_bytes(), 55);
    let c = jobs_small.submit(Request::new("9".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert_eq!(
        jobs_small.status(&a),
        JobStatus::Expired,
        "oldest out first"
    );
    assert!(matches!(jobs_small.status(&b), JobStatus::Done { .. }));
    assert!(matches!(jobs_small.status(&c), JobStatus::Done { .. }));
    assert_eq!(jobs_small.held_bytes(), 34);
}

#[tokio::test(start_paused = true)]
async fn an_answer_larger_than_the_room_left_fails_its_job() {
    let jobs = bytes_bounded(50, 50);
    // Two waiting requests hold 4 bytes; the first answer (48) fits, the second
    // (49) expires it early.
    let fits = jobs.submit(Request::new("48".to_owned())).unwrap();
    let slow = jobs.submit(Request::new("49".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    assert_eq!(jobs.status(&fits), JobStatus::Expired, "made room");
    match jobs.status(&slow) {
        JobStatus::Done { body, .. } => assert_eq!(body.len(), 49),
        other => panic!("{other:?}"),
    }
    let jobs = bytes_bounded(50, 50);
    // A request still waiting holds 4 bytes: a 48-byte answer cannot fit, and
    // there is no older answer to expire.
    let waiting = jobs.submit(Request::new("5000".to_owned())).unwrap();
    let big = jobs.submit(Request::new("48".to_owned())).unwrap();
    tokio::time::sleep(Duration::from_millis(60)).await;
    match jobs.status(&big) {
        JobStatus::Failed { error, class } => {
            assert!(error.contains("did not fit"), "{error}");
            assert_eq!(class.kind, "deferred_store_full");
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(jobs.status(&waiting), JobStatus::Pending { .. }));
}

#[test]
fn the_config_names_its_mistakes() {
    assert!(DeferredConfig::default().validate().is_ok());
    let d = DeferredConfig::default;
    let cases = [
        (DeferredConfig { capacity: 0, ..d() }, "capacity"),
        (
            DeferredConfig {
                max_wait: Duration::ZERO,
                ..d()
            },
            "max_wait",
        ),
        (
            DeferredConfig {
                max_wait: Duration::from_secs(3601),
                ..d()
            },
            "max_wait",
        ),
        (
            DeferredConfig {
                keep_results: Duration::from_secs(25 * 3600),
                ..d()
            },
            "keep_results",
        ),
        (
            DeferredConfig {
                max_body_bytes: 0,
                ..d()
            },
            "max_body_bytes",
        ),
        (
            DeferredConfig {
                max_total_bytes: 10,
                max_body_bytes: 11,
                ..d()
            },
            "max_total_bytes",
        ),
    ];
    for (config, field) in cases {
        assert_eq!(config.validate().unwrap_err().field(), field);
    }
}
