//! The callers: a steady rate with bursts, streamed and not, some of them cancelling
//! at a random point; and the checks on everything each one sees.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::Request;
use http_body_util::BodyExt;
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{BoxError, ServiceExt};
use tower_failover::error::{
    AllProvidersFailed, BodyTooLarge, CircuitOpen, Elapsed, Invalid, RateLimited, Shed,
    TransportError, TruncatedStream, find,
};
use tower_failover::{Failover, ModelNotFound};

use crate::check::{Checker, RequestInfo};
use crate::schedule::{ProviderPlan, Rng};

/// How the callers behave.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoadConfig {
    pub(crate) seed: u64,
    pub(crate) rps: f64,
    pub(crate) duration: Duration,
    pub(crate) stream_share: f64,
    pub(crate) cancel_share: f64,
    /// The stack's total deadline.
    pub(crate) deadline: Duration,
    /// What a request may take beyond it before it counts as hung.
    pub(crate) slack: Duration,
    /// How long a provider must have been free of faults before a request's start
    /// to count as healthy for it (cooldowns, rate-limit windows and the ramp).
    pub(crate) settle: Duration,
    /// Whether Redis is down during `[from, until)` of the soak clock, when known.
    pub(crate) redis_outage: Option<(f64, f64)>,
}

/// What the callers saw, in numbers.
#[derive(Debug, Default, Serialize)]
pub(crate) struct Tally {
    pub(crate) requests: u64,
    pub(crate) streamed: u64,
    pub(crate) in_bursts: u64,
    pub(crate) answered: u64,
    pub(crate) cancelled_before_answer: u64,
    pub(crate) cancelled_mid_stream: u64,
    /// Typed errors, by type.
    pub(crate) errors: BTreeMap<String, u64>,
    /// Answers by the provider that wrote them (from the tag on every word).
    pub(crate) answered_by: BTreeMap<String, u64>,
    /// Answers with no tagged word (a refusal, an empty answer, other content a
    /// provider's fault put there).
    pub(crate) untagged_answers: u64,
    /// Failed requests during which some provider was healthy (the rest failed while
    /// every provider was in trouble, which is allowed).
    pub(crate) failed_while_one_healthy: u64,
    /// Requests whose whole life had a healthy provider (the invariant's population).
    pub(crate) with_a_healthy_provider: u64,
    /// Caller errors while Redis was down.
    pub(crate) errors_during_redis_outage: u64,
    pub(crate) requests_during_redis_outage: u64,
    /// The slowest request, in seconds.
    pub(crate) slowest: f64,
}

/// How one request ended.
enum Ended {
    Answer {
        body: Bytes,
    },
    Error(BoxError),
    /// A non-2xx answer (the stack returned it as a response).
    Status(u16),
    /// The body broke after the headers.
    BodyError {
        got: Bytes,
        err: BoxError,
    },
    CancelledBefore,
    CancelledMidStream,
}

/// What a caller does.
#[derive(Debug, Clone, Copy)]
enum Cancel {
    Never,
    /// Drop the request (whatever stage it is at) after this long.
    After(Duration),
    /// Drop the stream after this many body chunks.
    AfterChunks(usize),
}

fn body(n: u64, stream: bool) -> Bytes {
    let stream = if stream { r#","stream":true"# } else { "" };
    format!(
        r#"{{"model":"soak","max_tokens":400{stream},"messages":[{{"role":"user","content":"Soak request {n}: say something."}}]}}"#
    )
    .into()
}

/// The name of the typed error in `err`'s chain, or `None` for an untyped one.
pub(crate) fn typed(err: &BoxError) -> Option<&'static str> {
    let e = &**err;
    Some(if find::<TruncatedStream>(e).is_some() {
        "truncated_stream"
    } else if find::<AllProvidersFailed>(e).is_some() {
        "all_providers_failed"
    } else if find::<Elapsed>(e).is_some() {
        "elapsed"
    } else if find::<CircuitOpen>(e).is_some() {
        "circuit_open"
    } else if find::<RateLimited>(e).is_some() {
        "rate_limited"
    } else if find::<Shed>(e).is_some() {
        "shed"
    } else if find::<Invalid>(e).is_some() {
        "invalid"
    } else if find::<BodyTooLarge>(e).is_some() {
        "body_too_large"
    } else if find::<ModelNotFound>(e).is_some() {
        "model_not_found"
    } else if find::<TransportError>(e).is_some() {
        "transport"
    } else {
        return None;
    })
}

/// The text of `err` and its sources, for a report (our own errors never hold
/// secrets; the soak's keys are not secret anyway).
fn chain(err: &BoxError) -> String {
    let mut s = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        s.push_str(" <- ");
        s.push_str(&e.to_string());
        next = e.source();
    }
    s.truncate(400);
    s
}

/// The content of an OpenAI-shaped answer: a whole JSON body, or an SSE stream
/// (then also whether it ended with `[DONE]`). `Err` says what is malformed.
fn content(body: &[u8], stream: bool) -> Result<(String, bool), String> {
    if !stream {
        let v: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| format!("not JSON: {e}"))?;
        let msg = &v["choices"][0]["message"];
        if msg.is_null() {
            return Err("no choices[0].message".into());
        }
        let text = msg["content"].as_str().unwrap_or("");
        let refusal = msg["refusal"].as_str().unwrap_or("");
        return Ok((format!("{text}{refusal}"), true));
    }
    std::str::from_utf8(body).map_err(|_| "stream is not UTF-8".to_string())?;
    let events = tower_failover_core::sse::events(body).map_err(|e| e.to_string())?;
    let mut out = String::new();
    let mut done = false;
    for (_, data) in &events {
        let data = data.trim();
        if done {
            return Err("an event after [DONE]".into());
        }
        if data == "[DONE]" {
            done = true;
            continue;
        }
        let v: serde_json::Value =
            serde_json::from_str(data).map_err(|e| format!("an event is not JSON: {e}"))?;
        if let Some(c) = v["choices"][0]["delta"]["content"].as_str() {
            out.push_str(c);
        }
    }
    Ok((out, done))
}

/// The provider tags on the words of `text` (`word_p3` → `p3`).
fn tags(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .split_whitespace()
        .filter_map(|w| {
            let w = w.trim_end_matches(|c: char| !c.is_ascii_alphanumeric());
            let (_, tag) = w.rsplit_once('_')?;
            (tag.len() >= 2 && tag.starts_with('p') && tag[1..].bytes().all(|b| b.is_ascii_digit()))
                .then(|| tag.to_owned())
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

async fn call(svc: Failover, req: Request<Bytes>, stream: bool, cancel: Cancel) -> Ended {
    let work = async {
        let res = match svc.oneshot(req.map(http_body_util::Full::new)).await {
            Ok(r) => r,
            Err(e) => return Ended::Error(e),
        };
        if !res.status().is_success() {
            let status = res.status().as_u16();
            // Read it anyway, as a caller would.
            let _ = res.into_body().collect().await;
            return Ended::Status(status);
        }
        let mut body = res.into_body();
        let mut got = BytesMut::new();
        let mut chunks = 0usize;
        loop {
            match body.frame().await {
                None => {
                    return Ended::Answer { body: got.freeze() };
                }
                Some(Err(err)) => {
                    return Ended::BodyError {
                        got: got.freeze(),
                        err,
                    };
                }
                Some(Ok(frame)) => {
                    if let Ok(data) = frame.into_data() {
                        got.extend_from_slice(&data);
                        chunks += 1;
                        if let Cancel::AfterChunks(k) = cancel
                            && stream
                            && chunks >= k
                        {
                            return Ended::CancelledMidStream;
                        }
                    }
                }
            }
        }
    };
    match cancel {
        Cancel::After(d) => tokio::select! {
            e = work => e,
            _ = tokio::time::sleep(d) => Ended::CancelledBefore,
        },
        _ => work.await,
    }
}

/// Shared between the request tasks.
pub(crate) struct Load {
    pub(crate) cfg: LoadConfig,
    pub(crate) checker: Arc<Checker>,
    pub(crate) plans: Vec<ProviderPlan>,
    pub(crate) tally: Mutex<Tally>,
    pub(crate) in_flight: AtomicU64,
}

impl Load {
    fn tally(&self) -> std::sync::MutexGuard<'_, Tally> {
        self.tally.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The providers free of every fault in `[from - settle, until]` (soak clock).
    fn healthy(&self, from: f64, until: f64) -> Vec<&str> {
        let a = Duration::from_secs_f64((from - self.cfg.settle.as_secs_f64()).max(0.0));
        let b = Duration::from_secs_f64(until.max(0.0));
        self.plans
            .iter()
            .filter(|p| !p.faults.iter().any(|f| f.overlaps(a, b)))
            .map(|p| p.name.as_str())
            .collect()
    }

    async fn one(self: Arc<Self>, n: u64, replica: usize, svc: Failover, burst: bool) {
        let mut rng = Rng::seeded(self.cfg.seed ^ n.wrapping_mul(0x9e37_79b9));
        let stream = rng.chance(self.cfg.stream_share);
        let cancel = if rng.chance(self.cfg.cancel_share) {
            if stream && rng.chance(0.5) {
                Cancel::AfterChunks(rng.range(1, 6) as usize)
            } else {
                Cancel::After(rng.secs(0.0, 3.0))
            }
        } else {
            Cancel::Never
        };
        let req = Request::post("/v1/chat/completions")
            .header("content-type", "application/json")
            .body(body(n, stream))
            .expect("a valid request");
        let start = Instant::now();
        let bound = self.cfg.deadline + self.cfg.slack;
        let ended = tokio::time::timeout(bound, call(svc, req, stream, cancel)).await;
        let end = Instant::now();
        let info = RequestInfo {
            n,
            replica,
            stream,
            start: self.checker.at(start),
            end: self.checker.at(end),
        };
        let took = end.duration_since(start).as_secs_f64();
        {
            let mut t = self.tally();
            t.requests += 1;
            t.streamed += u64::from(stream);
            t.in_bursts += u64::from(burst);
            t.slowest = t.slowest.max((took * 1000.0).round() / 1000.0);
        }
        let ended = match ended {
            Ok(e) => e,
            Err(_) => {
                self.checker.violation(
                    "ended_in_time",
                    Some(info),
                    format!(
                        "no answer nor error after {:.1} s (deadline {:.1} s + slack {:.1} s)",
                        took,
                        self.cfg.deadline.as_secs_f64(),
                        self.cfg.slack.as_secs_f64()
                    ),
                );
                *self.tally().errors.entry("hung".into()).or_default() += 1;
                return;
            }
        };
        let cancelled = matches!(ended, Ended::CancelledBefore | Ended::CancelledMidStream);
        let failure: Option<String> = match ended {
            Ended::CancelledBefore => {
                self.tally().cancelled_before_answer += 1;
                None
            }
            Ended::CancelledMidStream => {
                self.tally().cancelled_mid_stream += 1;
                None
            }
            Ended::Answer { body } => match content(&body, stream) {
                Err(what) => {
                    self.checker.violation(
                        "answers_well_formed",
                        Some(info.clone()),
                        format!(
                            "{what}: {}",
                            String::from_utf8_lossy(&body[..body.len().min(300)])
                        ),
                    );
                    Some("malformed answer".into())
                }
                Ok((_, false)) => {
                    self.checker.violation(
                        "no_truncation_reported_complete",
                        Some(info.clone()),
                        format!(
                            "the stream ended cleanly without [DONE] after {} bytes",
                            body.len()
                        ),
                    );
                    Some("stream ended early without an error".into())
                }
                Ok((text, true)) => {
                    let tags = tags(&text);
                    let mut t = self.tally();
                    t.answered += 1;
                    match tags.as_slice() {
                        [] => t.untagged_answers += 1,
                        [one] => *t.answered_by.entry(one.clone()).or_default() += 1,
                        many => {
                            drop(t);
                            self.checker.violation(
                                "no_mixed_answers",
                                Some(info.clone()),
                                format!("words of {} in one answer: {text:?}", many.join(", ")),
                            );
                        }
                    }
                    None
                }
            },
            Ended::Status(s) => {
                *self
                    .tally()
                    .errors
                    .entry(format!("status {s}"))
                    .or_default() += 1;
                Some(format!("status {s}"))
            }
            Ended::Error(err) => {
                let what = match typed(&err) {
                    Some(t) => t.to_owned(),
                    None => {
                        self.checker.violation(
                            "typed_errors",
                            Some(info.clone()),
                            format!("untyped error: {}", chain(&err)),
                        );
                        "untyped".to_owned()
                    }
                };
                if chain(&err).to_ascii_lowercase().contains("redis") {
                    self.checker.violation(
                        "no_error_from_redis_absence",
                        Some(info.clone()),
                        format!("a caller error mentions Redis: {}", chain(&err)),
                    );
                }
                *self.tally().errors.entry(what.clone()).or_default() += 1;
                Some(format!("{what}: {}", chain(&err)))
            }
            Ended::BodyError { got, err } => {
                let is_trunc = find::<TruncatedStream>(&*err).is_some();
                if stream && !is_trunc {
                    self.checker.violation(
                        "truncation_is_typed",
                        Some(info.clone()),
                        format!(
                            "the stream broke after {} bytes with: {}",
                            got.len(),
                            chain(&err)
                        ),
                    );
                } else if !stream && typed(&err).is_none() {
                    self.checker.violation(
                        "typed_errors",
                        Some(info.clone()),
                        format!("untyped body error: {}", chain(&err)),
                    );
                }
                let what = if is_trunc {
                    "truncated_stream".to_owned()
                } else {
                    format!("body: {}", typed(&err).unwrap_or("untyped"))
                };
                *self.tally().errors.entry(what).or_default() += 1;
                // After the commit point a stream cannot fail over, by design: it is
                // judged by the truncation invariants, not the healthy-provider one.
                if is_trunc {
                    return;
                }
                Some(format!("body error: {}", chain(&err)))
            }
        };
        let healthy = self.healthy(info.start, info.end);
        let in_outage = self
            .cfg
            .redis_outage
            .is_some_and(|(a, b)| info.end >= a && info.start < b + 5.0);
        {
            let mut t = self.tally();
            if !healthy.is_empty() && !cancelled {
                t.with_a_healthy_provider += 1;
            }
            if in_outage {
                t.requests_during_redis_outage += 1;
                t.errors_during_redis_outage += u64::from(failure.is_some());
            }
        }
        if let Some(why) = failure
            && !healthy.is_empty()
        {
            self.tally().failed_while_one_healthy += 1;
            let invariant = if in_outage {
                "no_error_from_redis_absence"
            } else {
                "answered_while_a_provider_was_healthy"
            };
            self.checker.violation(
                invariant,
                Some(info),
                format!("{why} (healthy the whole time: {})", healthy.join(", ")),
            );
        }
    }
}

/// Runs the callers for `cfg.duration`, then waits for every request to end.
pub(crate) async fn run(load: Arc<Load>, replicas: Vec<Failover>) {
    let cfg = load.cfg;
    let mut rng = Rng::seeded(cfg.seed ^ 0x10ad);
    let period = Duration::from_secs_f64(1.0 / cfg.rps.max(0.1));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let start = load.checker.start;
    let end = start + cfg.duration;
    let mut next_burst = start + rng.secs(5.0, 20.0);
    let mut tasks = JoinSet::new();
    let mut n = 0u64;
    loop {
        let at = tick.tick().await;
        if at >= end {
            break;
        }
        while tasks.try_join_next().is_some() {}
        let mut count = 1;
        let burst = at >= next_burst;
        if burst {
            count = rng.range(20, 80);
            next_burst = at + rng.secs(5.0, 20.0);
            load.checker
                .event(None, format!("load: a burst of {count} requests"));
        }
        for _ in 0..count {
            n += 1;
            let replica = (n as usize) % replicas.len();
            let svc = replicas[replica].clone();
            tasks.spawn(Arc::clone(&load).one(n, replica, svc, burst));
        }
        load.in_flight.store(tasks.len() as u64, Ordering::Relaxed);
    }
    while tasks.join_next().await.is_some() {}
    load.in_flight.store(0, Ordering::Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_tags_and_streams() {
        assert_eq!(tags("The_p1 gateway_p1. Kept_p1"), vec!["p1"]);
        assert_eq!(tags("The_p1 gateway_p2."), vec!["p1", "p2"]);
        assert!(tags("I'm sorry, but I can't help with that request.").is_empty());
        let s = b"data: {\"choices\":[{\"delta\":{\"content\":\"a_p0\"}}]}\n\ndata: {\"choices\":[{\"delta\":{\"content\":\" b_p0\"}}]}\n\ndata: [DONE]\n\n";
        assert_eq!(content(s, true).unwrap(), ("a_p0 b_p0".to_owned(), true));
        let cut = b"data: {\"choices\":[{\"delta\":{\"content\":\"a_p0\"}}]}\n\n";
        assert!(!content(cut, true).unwrap().1, "no [DONE]");
        assert!(content(b"data: {broken\n\n", true).is_err());
        assert!(content(b"{\"choices\":[]}", false).is_err());
    }
}
