use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::time::AtomicInstant;

/// A rate limit shared by every provider handle in the group (deployments that share
/// one API key or organisation). A provider not in a named group has a group of its
/// own.
#[derive(Debug, Clone)]
pub struct QuotaGroup {
    inner: Arc<QuotaInner>,
}

#[derive(Debug)]
struct QuotaInner {
    name: Option<Arc<str>>,
    until: AtomicInstant,
}

impl QuotaGroup {
    /// A quota group; `None` for an anonymous one-provider group.
    pub fn new(name: Option<&str>) -> Self {
        QuotaGroup {
            inner: Arc::new(QuotaInner {
                name: name.map(Arc::from),
                until: AtomicInstant::new(),
            }),
        }
    }

    /// The group's name, if it is a named group.
    pub fn name(&self) -> Option<&str> {
        self.inner.name.as_deref()
    }

    /// Until when the group is rate limited, if it is.
    pub fn limited_until(&self) -> Option<Instant> {
        self.inner.until.get()
    }

    /// Whether the group is rate limited at `now`.
    #[inline]
    pub fn is_limited(&self, now: Instant) -> bool {
        self.inner.until.is_after(now)
    }

    /// Time left in the rate-limit window at `now`.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        self.inner.until.remaining(now)
    }

    /// Marks the group rate limited until `until`. A later deadline wins: a new 429
    /// never shortens a known window. Returns whether the deadline moved.
    pub fn limit_until(&self, until: Instant) -> bool {
        self.inner.until.extend(until)
    }

    /// Ends the rate-limit window now.
    pub fn clear(&self) {
        self.inner.until.set(None);
    }

    /// Whether two handles are the same group.
    pub fn same_as(&self, other: &QuotaGroup) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}
