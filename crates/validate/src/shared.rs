//! The engine every service, future and body made by one [`ValidateLayer`] shares:
//! the validator, the limits, and what a rejection becomes.

use std::sync::Arc;

use tower_failover_core::error::{Invalid, TransportError};
use tower_failover_core::{BoxError, FailureKind, ProviderId};

#[cfg(doc)]
use crate::ValidateLayer;
use crate::config::{AfterCommit, StreamHold};
use crate::error::RepeatedRejections;
use crate::output::Wire;
use crate::stats::ValidateStats;
use crate::validator::Validator;
use tower_failover_core::sse::SseLimits;

/// What every service, future and body made by one layer shares.
pub(crate) struct Shared {
    pub(crate) validator: Arc<dyn Validator>,
    pub(crate) max_body: usize,
    pub(crate) hold: StreamHold,
    pub(crate) hold_limit: usize,
    pub(crate) sse: SseLimits,
    pub(crate) wire: Option<Wire>,
    pub(crate) after_commit: AfterCommit,
    pub(crate) fail_after: Option<u32>,
    pub(crate) provider: Option<ProviderId>,
    pub(crate) stats: ValidateStats,
}

impl Shared {
    pub(crate) fn name(&self, e: Invalid) -> Invalid {
        match &self.provider {
            Some(p) => e.with_provider(p.clone()),
            None => e,
        }
    }

    /// Counts a rejection before the commit point and turns it into the error the
    /// future returns.
    ///
    /// The log line names the kind, never the [`detail`](Invalid::detail): for an
    /// error object that is the provider's own text, which may quote key material.
    pub(crate) fn reject(&self, e: Invalid) -> BoxError {
        let e = self.name(e);
        let in_a_row = self.stats.rejected();
        tracing::debug!(
            provider = ?self.provider,
            kind = %e.kind(),
            malformed = e.kind().is_malformed(),
            in_a_row,
            "response rejected by validation"
        );
        match self.fail_after {
            Some(n) if in_a_row >= n => {
                TransportError::new(FailureKind::Other, RepeatedRejections { in_a_row, last: e })
                    .into()
            }
            _ => e.into(),
        }
    }
}
