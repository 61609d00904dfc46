//! The load generator: a fixed request rate with bounded requests in flight, a
//! deadline on every request, a share of them streamed, and one [`Record`] per
//! request, whatever happened.
//!
//! Every answer is read to its end. A streamed answer counts as a success only when
//! it ends with its terminal event (`data: [DONE]`); one that breaks (a body error,
//! such as the typed truncation error after the commit point) or ends early is a
//! caller error with its reason. Everything the caller could see — headers, body,
//! error text — is searched for the provider's rejection text and key material
//! ([`Needles`]).

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use tokio::task::JoinSet;
use tokio::time::{Instant, MissedTickBehavior};
use tower::{BoxError, ServiceExt};
use tower_failover_core::Deadline;
use tower_failover_core::error::{AllProvidersFailed, Elapsed, TruncatedStream, find};
use tower_failover_core::replay::ReplayBody;

use crate::leak::Needles;
use crate::metrics::{Record, Recorder};
use crate::stack::{Router, ServedBy};

#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadConfig {
    pub(crate) rps: u32,
    pub(crate) duration: Duration,
    pub(crate) deadline: Duration,
    pub(crate) max_in_flight: u64,
    /// The fraction of requests sent with `"stream": true`, spread evenly (0.25:
    /// every 4th request).
    pub(crate) stream_share: f64,
}

/// Whether request number `n` (from 1) is streamed, for a share `share` in [0, 1]:
/// the streamed requests are spread evenly, `share × n` of the first `n` rounded down.
pub(crate) fn is_streamed(n: u64, share: f64) -> bool {
    let upto = |k: u64| (k as f64 * share).floor() as u64;
    n > 0 && upto(n) > upto(n - 1)
}

fn request_body(n: u64, stream: bool) -> Bytes {
    let stream = if stream { r#","stream":true"# } else { "" };
    format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":64{stream},"messages":[{{"role":"system","content":"You are terse."}},{{"role":"user","content":"Drill request {n}: say something short."}}]}}"#
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

/// Why a body that failed while the caller read it failed.
fn describe_body_error(err: &BoxError, stream: bool) -> String {
    let what = if stream { "stream" } else { "body" };
    if find::<TruncatedStream>(&**err).is_some() {
        format!("{what}: truncated after the commit point")
    } else if find::<Elapsed>(&**err).is_some() {
        format!("{what}: deadline while reading")
    } else {
        let mut s = err.to_string();
        s.truncate(60);
        format!("{what}: body error: {s}")
    }
}

/// What the caller could see of one answer, kept for the leak check.
struct Answer {
    status: StatusCode,
    served: Option<usize>,
    headers: http::HeaderMap,
    content_type: String,
    body: Result<Bytes, BoxError>,
}

/// Judges one answer: `None` when it is a good one. A streamed answer is good only
/// when it is an event stream that ends with OpenAI's terminal event (the drill's
/// router speaks the OpenAI shape for every provider); a non-streamed one when it
/// has a body.
fn judge(answer: &Answer, stream: bool) -> Option<String> {
    if !answer.status.is_success() {
        return Some(format!("status {}", answer.status));
    }
    let body = match &answer.body {
        Ok(body) => body,
        Err(e) => return Some(describe_body_error(e, stream)),
    };
    if !stream {
        return body.is_empty().then(|| "empty body".to_owned());
    }
    if !answer.content_type.starts_with("text/event-stream") {
        return Some("stream: answer is not an event stream".to_owned());
    }
    if !ends_with_done(body) {
        return Some("stream: ended without its terminal event".to_owned());
    }
    None
}

/// Whether an OpenAI SSE stream's last event is `data: [DONE]`.
fn ends_with_done(body: &[u8]) -> bool {
    String::from_utf8_lossy(body)
        .trim_end()
        .ends_with("data: [DONE]")
}

/// Sends requests at `cfg.rps` for `cfg.duration`, then waits for the ones in
/// flight (each is bounded by its deadline). Returns when every request has a record.
pub(crate) async fn run(router: Router, recorder: Arc<Recorder>, cfg: LoadConfig) {
    let needles = Arc::new(Needles::drill());
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
        let stream = is_streamed(n, cfg.stream_share);
        let needles = needles.clone();
        tasks.spawn(async move {
            let sent_at = recorder.now();
            let phase = recorder.phase();
            let started = Instant::now();
            let mut req = Request::post("/v1/chat/completions")
                .header(header::CONTENT_TYPE, "application/json")
                .body(ReplayBody::new(request_body(n, stream)))
                .expect("a valid request");
            Deadline::set_on(&mut req, started + deadline);
            let call = async move {
                let res = router.oneshot(req).await?;
                let served = res.extensions().get::<ServedBy>().map(|s| s.0);
                let status = res.status();
                let content_type = res
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                let (parts, body) = res.into_parts();
                // Read to the end, whatever happens: a body error is the caller's
                // answer too, and must be counted, not dropped.
                let body = body.collect().await.map(|c| c.to_bytes());
                Ok::<_, BoxError>(Answer {
                    status,
                    served,
                    headers: parts.headers,
                    content_type,
                    body,
                })
            };
            // The stack honours the deadline itself; this outer bound only makes
            // sure the drill can never hang on a request.
            let result = tokio::time::timeout(deadline + Duration::from_millis(500), call).await;
            let (served, error, leaked) = match result {
                Ok(Ok(answer)) => {
                    let leaked = needles.found_in_headers(&answer.headers)
                        || match &answer.body {
                            Ok(body) => needles.found_in(body),
                            Err(e) => needles.found_in_error(&**e),
                        };
                    (answer.served, judge(&answer, stream), leaked)
                }
                Ok(Err(e)) => (None, Some(describe(&e)), needles.found_in_error(&*e)),
                Err(_) => (None, Some("deadline (outer)".to_owned()), false),
            };
            recorder.push(Record {
                at: sent_at,
                done: recorder.now(),
                phase,
                latency: started.elapsed(),
                // An answer that failed was served by no one.
                served: if error.is_none() { served } else { None },
                error,
                stream,
                leaked,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streamed_requests_are_spread_evenly() {
        let every_4th: Vec<u64> = (1..=12).filter(|&n| is_streamed(n, 0.25)).collect();
        assert_eq!(every_4th, [4, 8, 12]);
        assert!((1..=100).all(|n| !is_streamed(n, 0.0)));
        assert!((1..=100).all(|n| is_streamed(n, 1.0)));
        assert_eq!((1..=1000).filter(|&n| is_streamed(n, 0.3)).count(), 300);
    }

    fn answer(content_type: &str, body: &'static str) -> Answer {
        Answer {
            status: StatusCode::OK,
            served: Some(0),
            headers: http::HeaderMap::new(),
            content_type: content_type.to_owned(),
            body: Ok(Bytes::from_static(body.as_bytes())),
        }
    }

    #[test]
    fn a_stream_is_good_only_with_its_terminal_event() {
        let sse = "text/event-stream";
        let done = "data: {\"choices\":[]}\n\ndata: [DONE]\n\n";
        assert_eq!(judge(&answer(sse, done), true), None);
        let cut = "data: {\"choices\":[]}\n\n";
        assert_eq!(
            judge(&answer(sse, cut), true).as_deref(),
            Some("stream: ended without its terminal event")
        );
        assert_eq!(
            judge(&answer("application/json", "{}"), true).as_deref(),
            Some("stream: answer is not an event stream")
        );
        let mut broken = answer(sse, "");
        broken.body = Err(TruncatedStream::new("cut").into());
        assert_eq!(
            judge(&broken, true).as_deref(),
            Some("stream: truncated after the commit point")
        );
        assert_eq!(judge(&answer("application/json", "{}"), false), None);
        assert_eq!(
            judge(&answer("application/json", ""), false).as_deref(),
            Some("empty body")
        );
        let mut status = answer("application/json", "{}");
        status.status = StatusCode::UNAUTHORIZED;
        assert_eq!(
            judge(&status, false).as_deref(),
            Some("status 401 Unauthorized")
        );
    }
}
