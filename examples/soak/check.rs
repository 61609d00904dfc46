//! The invariants, the violations found, and the timeline kept to explain them.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use crate::schedule::ProviderPlan;

/// Every invariant the soak checks, by the name the report uses.
pub(crate) const INVARIANTS: [(&str, &str); 9] = [
    (
        "ended_in_time",
        "every request ended (answer or typed error) within its deadline plus the slack",
    ),
    (
        "typed_errors",
        "every error a caller saw is one of the stack's typed errors",
    ),
    (
        "no_mixed_answers",
        "no answer holds the output of two providers",
    ),
    (
        "no_truncation_reported_complete",
        "no stream ended without its terminal event and without an error",
    ),
    (
        "truncation_is_typed",
        "every stream that broke after its first byte ended with the typed truncation error",
    ),
    (
        "answers_well_formed",
        "every answer delivered as a success is whole, well-formed output",
    ),
    (
        "no_traffic_to_open_circuits",
        "no request reached a provider whose circuit was open (outside probes)",
    ),
    (
        "answered_while_a_provider_was_healthy",
        "a caller got an answer whenever some provider was healthy for the request's whole life",
    ),
    (
        "resources_flat",
        "heap, tasks and descriptors flat after warm-up",
    ),
];

/// Fleet mode adds these.
pub(crate) const FLEET_INVARIANTS: [(&str, &str); 2] = [
    (
        "no_error_from_redis_absence",
        "no caller error mentions Redis, and none happened only because it was gone",
    ),
    (
        "redis_resynchronised",
        "every replica reconnected after the restart and rewrote the shared state",
    ),
];

/// One violation, with what is needed to find it again.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Violation {
    pub(crate) invariant: &'static str,
    /// Seconds since the load started.
    pub(crate) at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) request: Option<RequestInfo>,
    pub(crate) detail: String,
    /// The faults around it and the stack's last events before it.
    pub(crate) timeline: Vec<String>,
}

/// A request as the timeline shows it.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct RequestInfo {
    pub(crate) n: u64,
    pub(crate) replica: usize,
    pub(crate) stream: bool,
    pub(crate) start: f64,
    pub(crate) end: f64,
}

/// A state change seen on a replica's handle, or a soak action.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Event {
    pub(crate) at: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) replica: Option<usize>,
    pub(crate) what: String,
}

/// Violations kept in full, per invariant (the count goes on).
const KEEP: usize = 20;
/// The latest events kept for timelines (a ring: the soak's own memory stays flat).
const MAX_EVENTS: usize = 4096;

#[derive(Default)]
struct Log {
    counts: BTreeMap<&'static str, u64>,
    kept: Vec<Violation>,
    events: VecDeque<Event>,
    events_seen: u64,
}

/// What every part of the soak reports to.
pub(crate) struct Checker {
    pub(crate) start: Instant,
    plans: Vec<ProviderPlan>,
    /// How far back before a request its timeline shows faults.
    settle: f64,
    log: Mutex<Log>,
}

impl Checker {
    pub(crate) fn new(start: Instant, plans: Vec<ProviderPlan>, settle: Duration) -> Self {
        Checker {
            start,
            plans,
            settle: settle.as_secs_f64(),
            log: Mutex::new(Log::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Seconds since the load started.
    pub(crate) fn now(&self) -> f64 {
        self.at(Instant::now())
    }

    pub(crate) fn at(&self, t: Instant) -> f64 {
        t.saturating_duration_since(self.start).as_secs_f64()
    }

    pub(crate) fn violation(
        &self,
        invariant: &'static str,
        request: Option<RequestInfo>,
        detail: String,
    ) {
        let at = request.as_ref().map_or_else(|| self.now(), |r| r.end);
        let n = {
            let mut log = self.lock();
            let n = log.counts.entry(invariant).or_default();
            *n += 1;
            *n
        };
        if n as usize <= KEEP {
            let timeline = self.timeline(at, request.as_ref());
            self.lock().kept.push(Violation {
                invariant,
                at,
                request,
                detail,
                timeline,
            });
        }
    }

    pub(crate) fn event(&self, replica: Option<usize>, what: String) {
        let at = self.now();
        let mut log = self.lock();
        if log.events.len() == MAX_EVENTS {
            log.events.pop_front();
        }
        log.events.push_back(Event { at, replica, what });
        log.events_seen += 1;
    }

    pub(crate) fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.lock().counts.clone()
    }

    pub(crate) fn kept(&self) -> Vec<Violation> {
        self.lock().kept.clone()
    }

    /// Events seen in all.
    pub(crate) fn events_seen(&self) -> u64 {
        self.lock().events_seen
    }

    /// The minimal timeline of a violation at `at`: the faults active around it
    /// (from `settle` before the request) and the events of the seconds before it.
    fn timeline(&self, at: f64, request: Option<&RequestInfo>) -> Vec<String> {
        let (from, until) = match request {
            Some(r) => (r.start - self.settle, r.end),
            None => (at - self.settle, at),
        };
        let mut lines = Vec::new();
        for p in &self.plans {
            for f in &p.faults {
                let (a, b) = (f.from.as_secs_f64(), f.until.as_secs_f64());
                if a <= until && from < b {
                    lines.push(format!(
                        "  fault  {:>8.3}s..{:<8.3}s {} {} (fraction {})",
                        a, b, p.name, f.fault, f.fraction
                    ));
                }
            }
        }
        let log = self.lock();
        let near: Vec<&Event> = log
            .events
            .iter()
            .filter(|e| e.at >= until - 5.0 && e.at <= until + 0.5)
            .collect();
        let skip = near.len().saturating_sub(25);
        for e in &near[skip..] {
            let who = e
                .replica
                .map_or_else(String::new, |r| format!("replica {r} "));
            lines.push(format!("  event  {:>8.3}s {who}{}", e.at, e.what));
        }
        lines
    }
}

/// The seconds of a duration, for reports.
pub(crate) fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1000.0).round() / 1000.0
}
