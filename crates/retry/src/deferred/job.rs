use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use tower_failover_core::ErrorClass;

/// A job's id: 128 bits from the operating system's random source, written as 32
/// lowercase hex digits. Unguessable, so it can be handed to the caller who
/// submitted the job and act as the only key to its answer: `Debug` and the store's
/// logs show only its first 8 digits ([`short`](Self::short)).
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub(super) String);

impl JobId {
    /// A fresh id from the operating system's random source (`getrandom`).
    pub(super) fn random() -> Result<JobId, getrandom::Error> {
        let mut bits = [0u8; 16];
        getrandom::fill(&mut bits)?;
        let mut s = String::with_capacity(32);
        for b in bits {
            s.push(char::from(HEX[usize::from(b >> 4)]));
            s.push(char::from(HEX[usize::from(b & 0xf)]));
        }
        Ok(JobId(s))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Its first 8 digits: enough to follow a job through the logs, too few to
    /// read its answer.
    pub fn short(&self) -> &str {
        self.0.get(..8).unwrap_or(&self.0)
    }
}

impl fmt::Debug for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "JobId({}…)", self.short())
    }
}

const HEX: &[u8; 16] = b"0123456789abcdef";

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&str> for JobId {
    fn from(s: &str) -> Self {
        JobId(s.to_owned())
    }
}

/// Where a job is.
#[derive(Debug, Clone, PartialEq)]
pub enum JobStatus {
    /// Waiting for a provider or running.
    Pending {
        /// How long it has waited.
        waited: Duration,
    },
    /// Answered.
    Done {
        /// The provider's status.
        status: StatusCode,
        /// The provider's headers.
        headers: HeaderMap,
        /// The answer body.
        body: Bytes,
    },
    /// Failed for good.
    Failed {
        /// Why (the error's `Display`).
        error: String,
        /// How a gateway answers that error
        /// ([`error_class`](tower_failover_core::error_class) of it): status and type.
        class: ErrorClass,
    },
    /// Finished, but its answer is no longer kept (older than `keep_results`, or
    /// dropped early to stay within `max_total_bytes`).
    Expired,
    /// No such job (never submitted here, or expired long ago).
    Unknown,
}

/// The store cannot take a job now: it holds its most jobs or bytes, or no id
/// could be drawn from the operating system's random source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferredFull {
    pub(super) capacity: usize,
    pub(super) why: Why,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Why {
    Jobs,
    Bytes(usize),
    NoRandom,
}

impl fmt::Display for DeferredFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.why {
            Why::Jobs => write!(f, "deferred job store full ({} jobs)", self.capacity),
            Why::Bytes(limit) => write!(f, "deferred job store full ({limit} bytes)"),
            Why::NoRandom => f.write_str(
                "deferred job store: the operating system's random source gave no job id",
            ),
        }
    }
}

impl std::error::Error for DeferredFull {}
