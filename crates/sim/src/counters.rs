//! What a simulated provider received and answered.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::{Deserialize, Serialize};

use crate::fault::FaultKind;

/// A snapshot of a sim's counters, from [`SimHandle::counters`](crate::SimHandle::counters)
/// or `GET /_sim/counters`.
///
/// Admin requests (`/_sim/...`) are never counted. Connection attempts refused
/// while the listener is closed ([`Fault::Refuse`](crate::Fault::Refuse)) never
/// reach the sim and cannot be counted either.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Counters {
    /// API requests received (every route but `/_sim/...`): the total.
    pub received: u64,
    /// Responses whose status line was sent (a hang, a refusal or a client that
    /// went away first is received but not answered).
    pub answered: u64,
    /// Answered responses by HTTP status.
    pub by_status: BTreeMap<u16, u64>,
    /// Requests a fault was applied to, by kind (a request can have a slowdown and
    /// one other fault).
    pub by_fault: BTreeMap<FaultKind, u64>,
    /// `POST /v1/chat/completions` requests received.
    pub chat_completions: u64,
    /// `POST /v1/messages` requests received.
    pub messages: u64,
    /// `GET /v1/models` requests received.
    pub models: u64,
    /// Answers that were streamed (SSE).
    pub streamed: u64,
    /// Completions answered successfully with their full body produced (2xx, no
    /// outage or output fault). A streamed one counts when its stream starts: see
    /// [`abandoned`](Self::abandoned) for those the client did not take whole.
    pub completed: u64,
    /// Streamed answers dropped with events still unsent: the client stopped
    /// reading and went away, or closed the connection, before the stream's end.
    pub abandoned: u64,
    /// Requests answered 429 by the RPM/TPM quota (not by a
    /// [`Fault::RateLimit`](crate::Fault::RateLimit)).
    pub quota_limited: u64,
    /// Prompt (input) tokens of the completions admitted.
    pub prompt_tokens: u64,
    /// Completion (output) tokens of the completions admitted.
    pub completion_tokens: u64,
    /// TCP connections accepted.
    pub connections: u64,
}

impl Counters {
    /// Total API requests received (same as [`received`](Counters::received)).
    pub fn total(&self) -> u64 {
        self.received
    }

    /// Answers sent with this status.
    pub fn status(&self, status: u16) -> u64 {
        self.by_status.get(&status).copied().unwrap_or(0)
    }

    /// Answers sent with a 2xx status.
    pub fn ok(&self) -> u64 {
        self.by_status.range(200..300).map(|(_, n)| n).sum()
    }

    /// Requests this kind of fault was applied to.
    pub fn fault(&self, kind: FaultKind) -> u64 {
        self.by_fault.get(&kind).copied().unwrap_or(0)
    }

    /// Requests any non-slowdown fault was applied to.
    pub fn faulted(&self) -> u64 {
        self.by_fault
            .iter()
            .filter(|(k, _)| **k != FaultKind::Slowdown)
            .map(|(_, n)| n)
            .sum()
    }
}

/// The live, lock-free counters behind [`Counters`].
pub(crate) struct CounterSet {
    pub(crate) received: AtomicU64,
    pub(crate) answered: AtomicU64,
    statuses: Box<[AtomicU64]>,
    faults: [AtomicU64; FaultKind::ALL.len()],
    pub(crate) chat_completions: AtomicU64,
    pub(crate) messages: AtomicU64,
    pub(crate) models: AtomicU64,
    pub(crate) streamed: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) quota_limited: AtomicU64,
    pub(crate) prompt_tokens: AtomicU64,
    pub(crate) completion_tokens: AtomicU64,
    pub(crate) connections: AtomicU64,
}

impl CounterSet {
    pub(crate) fn new() -> Self {
        CounterSet {
            received: AtomicU64::new(0),
            answered: AtomicU64::new(0),
            statuses: (0..600).map(|_| AtomicU64::new(0)).collect(),
            faults: std::array::from_fn(|_| AtomicU64::new(0)),
            chat_completions: AtomicU64::new(0),
            messages: AtomicU64::new(0),
            models: AtomicU64::new(0),
            streamed: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            quota_limited: AtomicU64::new(0),
            prompt_tokens: AtomicU64::new(0),
            completion_tokens: AtomicU64::new(0),
            connections: AtomicU64::new(0),
        }
    }

    pub(crate) fn inc(c: &AtomicU64) {
        c.fetch_add(1, Relaxed);
    }

    pub(crate) fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }

    pub(crate) fn answer(&self, status: u16) {
        Self::inc(&self.answered);
        if let Some(c) = self.statuses.get(status as usize) {
            Self::inc(c);
        }
    }

    pub(crate) fn fault(&self, kind: FaultKind) {
        Self::inc(&self.faults[kind.index()]);
    }

    pub(crate) fn snapshot(&self) -> Counters {
        let by_status = self
            .statuses
            .iter()
            .enumerate()
            .filter_map(|(s, c)| {
                let n = c.load(Relaxed);
                (n > 0).then_some((s as u16, n))
            })
            .collect();
        let by_fault = FaultKind::ALL
            .iter()
            .filter_map(|k| {
                let n = self.faults[k.index()].load(Relaxed);
                (n > 0).then_some((*k, n))
            })
            .collect();
        Counters {
            received: self.received.load(Relaxed),
            answered: self.answered.load(Relaxed),
            by_status,
            by_fault,
            chat_completions: self.chat_completions.load(Relaxed),
            messages: self.messages.load(Relaxed),
            models: self.models.load(Relaxed),
            streamed: self.streamed.load(Relaxed),
            completed: self.completed.load(Relaxed),
            abandoned: self.abandoned.load(Relaxed),
            quota_limited: self.quota_limited.load(Relaxed),
            prompt_tokens: self.prompt_tokens.load(Relaxed),
            completion_tokens: self.completion_tokens.load(Relaxed),
            connections: self.connections.load(Relaxed),
        }
    }

    pub(crate) fn reset(&self) {
        let all = [
            &self.received,
            &self.answered,
            &self.chat_completions,
            &self.messages,
            &self.models,
            &self.streamed,
            &self.completed,
            &self.abandoned,
            &self.quota_limited,
            &self.prompt_tokens,
            &self.completion_tokens,
            &self.connections,
        ];
        for c in all
            .into_iter()
            .chain(self.statuses.iter())
            .chain(self.faults.iter())
        {
            c.store(0, Relaxed);
        }
    }
}
