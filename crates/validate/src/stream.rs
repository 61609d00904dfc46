//! Following a stream: the SSE parser plus what its events say so far.

use http::{HeaderMap, StatusCode};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::sse::{SseError, SseParser};

use crate::output::{Facts, Output};
use crate::shared::Shared;
use crate::validator::Verdict;

/// Parses a stream's bytes and keeps its [`Facts`] up to date, before and after the
/// commit point.
pub(crate) struct Tracker {
    parser: SseParser,
    pub(crate) facts: Facts,
    pub(crate) status: StatusCode,
    /// Set at the commit point when a late check will need them.
    pub(crate) headers: HeaderMap,
    /// Whether the validators have already seen the complete stream.
    pub(crate) judged_complete: bool,
    /// The request's body, if the layer could see it.
    pub(crate) request: Option<ReplayBody>,
}

impl Tracker {
    pub(crate) fn new(shared: &Shared, status: StatusCode, request: Option<ReplayBody>) -> Self {
        Tracker {
            parser: SseParser::with_limits(shared.sse),
            facts: Facts::new(shared.wire, shared.max_body),
            status,
            headers: HeaderMap::new(),
            judged_complete: false,
            request,
        }
    }

    /// Feeds a chunk; returns whether it completed any event. Events completed
    /// before a parse error are still read.
    pub(crate) fn feed(&mut self, data: &[u8]) -> Result<bool, SseError> {
        let mut any = false;
        let facts = &mut self.facts;
        self.parser.feed(data, &mut |ev| {
            facts.on_event(&ev);
            any = true;
            Ok::<_, SseError>(())
        })?;
        Ok(any)
    }

    /// Runs the validators on what has been seen.
    pub(crate) fn check(&mut self, shared: &Shared, headers: Option<&HeaderMap>) -> Verdict {
        let complete = self.facts.terminal;
        let out = Output {
            status: self.status,
            headers: headers.unwrap_or(&self.headers),
            body: None,
            json: None,
            facts: &self.facts,
            stream: true,
            request: self.request.as_ref(),
        };
        let verdict = shared.validator.check(&out);
        if complete {
            self.judged_complete = true;
            if verdict == Verdict::Wait {
                return Verdict::Pass;
            }
        }
        verdict
    }
}
