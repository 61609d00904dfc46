//! The error a run of rejections becomes.

use std::fmt;

use tower_failover_core::error::Invalid;
#[cfg(doc)]
use tower_failover_core::{FailureKind, error::TransportError};

#[cfg(doc)]
use crate::ValidateLayer;

/// The error a rejection becomes once
/// [`fail_after_rejections`](ValidateLayer::fail_after_rejections) is reached: it is
/// wrapped in a [`TransportError`] of kind [`FailureKind::Other`], so the default
/// classifier counts it as a failure; the [`Invalid`] is still in the chain
/// ([`find`](tower_failover_core::error::find) finds it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepeatedRejections {
    pub(crate) in_a_row: u32,
    pub(crate) last: Invalid,
}

impl RepeatedRejections {
    /// How many rejections in a row, this one included.
    pub fn in_a_row(&self) -> u32 {
        self.in_a_row
    }

    /// The last rejection.
    pub fn last(&self) -> &Invalid {
        &self.last
    }
}

impl fmt::Display for RepeatedRejections {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} invalid responses in a row", self.in_a_row)
    }
}

impl std::error::Error for RepeatedRejections {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.last)
    }
}
