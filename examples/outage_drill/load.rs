//! The load generator: a fixed request rate with bounded requests in flight, a
//! deadline on every request, and one [`Record`] per request, whatever happened.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, header};
use http_body_util::BodyExt;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tower::{BoxError, ServiceExt};
use tower_failover_core::Deadline;
use tower_failover_core::error::{AllProvidersFailed, Elapsed, find};
use tower_failover_core::replay::ReplayBody;

use crate::metrics::{Record, Recorder};
use crate::stack::{Router, ServedBy};

#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadConfig {
    pub(crate) rps: u32,
    pub(crate) duration: Duration,
    pub(crate) deadline: Duration,
    pub(crate) max_in_flight: u64,
}

fn request_body(n: u64) -> Bytes {
    format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":64,"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"Drill request {n}: say something short."}}]}}"#
    )
    .into()
}

fn describe(err: &BoxError) -> String {
    if let Some(all) = find::<AllProvidersFailed>(&**err) {
        format!("all providers failed ({} attempts)", all.attempts().len())
    } else if find::<Elapsed>(&**err).is_some() {
        "deadline".to_owned()
    } else {
        let mut s = err.to_string();
        s.truncate(80);
        s
    }
}

/// Sends requests at `cfg.rps` for `cfg.duration`, then waits for the ones in
/// flight (each is bounded by its deadline). Returns when every request has a record.
pub(crate) async fn run(router: Router, recorder: Arc<Recorder>, cfg: LoadConfig) {
    let period = Duration::from_secs_f64(1.0 / f64::from(cfg.rps));
    let mut tick = tokio::time::interval(period);
    // A late tick fires at once: the rate is kept on average even when the machine
    // is busy for a moment.
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = Instant::now() + cfg.duration;
    let mut tasks = JoinSet::new();
    let mut n = 0u64;
    loop {
        let at = tick.tick().await;
        if at >= end {
            break;
        }
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        if recorder.in_flight.load(Ordering::Relaxed) >= cfg.max_in_flight {
            recorder.skip();
            continue;
        }
        n += 1;
        recorder.in_flight.fetch_add(1, Ordering::Relaxed);
        recorder.sent.fetch_add(1, Ordering::Relaxed);
        recorder.ramp_request();
        let router = router.clone();
        let recorder = Arc::clone(&recorder);
        let deadline = cfg.deadline;
        tasks.spawn(async move {
            let sent_at = recorder.now();
            let phase = recorder.phase();
            let started = Instant::now();
            let mut req = Request::post("/v1/chat/completions")
                .header(header::CONTENT_TYPE, "application/json")
                .body(ReplayBody::new(request_body(n)))
                .expect("a valid request");
            Deadline::set_on(&mut req, started + deadline);
            let call = async move {
                let res = router.oneshot(req).await?;
                let served = res.extensions().get::<ServedBy>().map(|s| s.0);
                let status = res.status();
                let body = res.into_body().collect().await?.to_bytes();
                Ok::<_, BoxError>((status, served, body))
            };
            // The stack honours the deadline itself; this outer bound only makes
            // sure the drill can never hang on a request.
            let result = tokio::time::timeout(deadline + Duration::from_millis(500), call).await;
            let (served, error) = match result {
                Ok(Ok((status, served, body))) if status.is_success() => {
                    if body.is_empty() {
                        (served, Some("empty body".to_owned()))
                    } else {
                        (served, None)
                    }
                }
                Ok(Ok((status, served, _))) => (served, Some(format!("status {status}"))),
                Ok(Err(e)) => (None, Some(describe(&e))),
                Err(_) => (None, Some("deadline (outer)".to_owned())),
            };
            recorder.push(Record {
                at: sent_at,
                done: recorder.now(),
                phase,
                latency: started.elapsed(),
                served,
                error,
            });
            recorder.in_flight.fetch_sub(1, Ordering::Relaxed);
        });
    }
    // Every request in flight ends by its deadline; give them that long, plus a margin.
    let drain = tokio::time::timeout(cfg.deadline + Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    if drain.is_err() {
        eprintln!("warning: some requests outlived their deadline; aborting them");
        tasks.shutdown().await;
    }
}
