use std::time::Duration;

use http::{Request, Response};
use tower::{BoxError, service_fn};

use super::*;

#[tokio::test(start_paused = true)]
async fn failures_timeouts_and_capacity() {
    let stack = service_fn(|req: Request<u64>| async move {
        let ms = *req.body();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        if ms == 13 {
            return Err::<Response<String>, BoxError>("all providers failed".into());
        }
        Ok(Response::new("x".repeat(ms as usize)))
    });
    let jobs = Deferred::new(
        stack,
        DeferredConfig {
            capacity: 3,
            max_wait: Duration::from_secs(1),
            max_body_bytes: 100,
            ..Default::default()
        },
    );
    let failing = jobs.submit(Request::new(13)).unwrap();
    let slow = jobs.submit(Request::new(5_000)).unwrap();
    let big = jobs.submit(Request::new(500)).unwrap();
    assert_eq!(
        jobs.submit(Request::new(1)).unwrap_err().to_string(),
        "deferred job store full (3 jobs)"
    );
    assert_eq!(jobs.pending(), 3);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        jobs.status(&failing),
        JobStatus::Failed {
            error: "all providers failed".into()
        }
    );
    assert!(
        matches!(jobs.status(&slow), JobStatus::Failed { error } if error.contains("within 1000 ms"))
    );
    assert!(
        matches!(jobs.status(&big), JobStatus::Failed { error } if error.contains("length limit")),
        "{:?}",
        jobs.status(&big)
    );
    assert_eq!(jobs.status(&JobId::from("nope")), JobStatus::Unknown);
    assert_ne!(failing, slow);
}

#[tokio::test(start_paused = true)]
async fn results_expire() {
    let stack = service_fn(|_req: Request<()>| async {
        Ok::<_, BoxError>(Response::new(String::from("ok")))
    });
    let jobs = Deferred::new(
        stack,
        DeferredConfig {
            keep_results: Duration::from_secs(60),
            ..Default::default()
        },
    );
    let id = jobs.submit(Request::new(())).unwrap();
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert!(matches!(jobs.status(&id), JobStatus::Done { .. }));
    tokio::time::sleep(Duration::from_secs(61)).await;
    let _ = jobs.submit(Request::new(())).unwrap(); // sweeps expired answers
    assert_eq!(jobs.status(&id), JobStatus::Unknown);
}
