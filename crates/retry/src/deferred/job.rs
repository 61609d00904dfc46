use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};

/// A job's id: opaque, unguessable enough to hand to the caller who submitted it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub(super) String);

impl JobId {
    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

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
    },
    /// No such job (never submitted, or expired).
    Unknown,
}

/// The store refused a job because it is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeferredFull {
    pub(super) capacity: usize,
}

impl fmt::Display for DeferredFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "deferred job store full ({} jobs)", self.capacity)
    }
}

impl std::error::Error for DeferredFull {}
