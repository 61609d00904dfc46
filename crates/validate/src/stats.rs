//! Counters of what the validation layer decided.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use serde::Serialize;

/// Counters shared by every service and response made from one
/// [`ValidateLayer`](crate::ValidateLayer) (cloning shares them). Use one layer per
/// provider to count per provider.
///
/// Rejections are counted on their own, apart from the provider's health: a router
/// or circuit breaker that wants to treat "N invalid answers in a row" as a failure
/// can read [`consecutive_rejections`](ValidateStats::consecutive_rejections), or let
/// the layer do it with
/// [`fail_after_rejections`](crate::ValidateLayer::fail_after_rejections).
#[derive(Clone, Default)]
pub struct ValidateStats {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    checked: AtomicU64,
    passed: AtomicU64,
    rejected: AtomicU64,
    late_rejected: AtomicU64,
    truncated: AtomicU64,
    too_large: AtomicU64,
    consecutive: AtomicU32,
}

/// A copy of the counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct StatsSnapshot {
    /// Success (2xx) responses that were validated.
    pub checked: u64,
    /// Responses that passed (streams: that reached their commit point).
    pub passed: u64,
    /// Responses rejected before anything reached the caller.
    pub rejected: u64,
    /// Streams that failed a check after their commit point (reported only).
    pub late_rejected: u64,
    /// Streams that broke or ended without their terminal event after the commit point.
    pub truncated: u64,
    /// Buffered bodies over the size limit.
    pub too_large: u64,
    /// Rejections since the last response that passed.
    pub consecutive_rejections: u32,
}

impl ValidateStats {
    /// Fresh counters.
    pub fn new() -> Self {
        ValidateStats::default()
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let i = &self.inner;
        let l = |a: &AtomicU64| a.load(Ordering::Relaxed);
        StatsSnapshot {
            checked: l(&i.checked),
            passed: l(&i.passed),
            rejected: l(&i.rejected),
            late_rejected: l(&i.late_rejected),
            truncated: l(&i.truncated),
            too_large: l(&i.too_large),
            consecutive_rejections: i.consecutive.load(Ordering::Relaxed),
        }
    }

    /// Rejections since the last response that passed.
    pub fn consecutive_rejections(&self) -> u32 {
        self.inner.consecutive.load(Ordering::Relaxed)
    }

    pub(crate) fn checked(&self) {
        self.inner.checked.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn passed(&self) {
        self.inner.passed.fetch_add(1, Ordering::Relaxed);
        self.inner.consecutive.store(0, Ordering::Relaxed);
    }

    /// Counts a rejection and returns how many there have been in a row.
    pub(crate) fn rejected(&self) -> u32 {
        self.inner.rejected.fetch_add(1, Ordering::Relaxed);
        self.inner
            .consecutive
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1)
    }

    pub(crate) fn late_rejected(&self) {
        self.inner.late_rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn truncated(&self) {
        self.inner.truncated.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn too_large(&self) {
        self.inner.too_large.fetch_add(1, Ordering::Relaxed);
    }
}

impl fmt::Debug for ValidateStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}
