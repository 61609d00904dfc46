//! Instants that can be shared through atomics, and one clock reading shared by the
//! layers of one `Service::call`.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

/// An optional [`Instant`] (a deadline) readable and writable without a lock.
///
/// Stored as nanoseconds since a base instant taken at creation; instants before the
/// base read back as the base. Uses tokio's clock, so paused-time tests are exact.
#[derive(Debug)]
pub struct AtomicInstant {
    base: Instant,
    /// Nanoseconds after `base`, plus one; zero means unset.
    nanos: AtomicU64,
}

impl Default for AtomicInstant {
    fn default() -> Self {
        AtomicInstant::new()
    }
}

impl AtomicInstant {
    /// An unset instant whose base is now.
    pub fn new() -> Self {
        AtomicInstant {
            base: Instant::now(),
            nanos: AtomicU64::new(0),
        }
    }

    fn encode(&self, at: Instant) -> u64 {
        let d = at.saturating_duration_since(self.base).as_nanos();
        u64::try_from(d).unwrap_or(u64::MAX - 1).saturating_add(1)
    }

    fn decode(&self, raw: u64) -> Option<Instant> {
        (raw != 0).then(|| self.base + Duration::from_nanos(raw - 1))
    }

    /// The stored instant, if any.
    #[inline]
    pub fn get(&self) -> Option<Instant> {
        self.decode(self.nanos.load(Ordering::Acquire))
    }

    /// Whether an instant is stored and still in the future at `now`.
    #[inline]
    pub fn is_after(&self, now: Instant) -> bool {
        let raw = self.nanos.load(Ordering::Acquire);
        raw != 0 && raw > self.encode(now)
    }

    /// Time left from `now` until the stored instant (`None` if unset or past).
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let at = self.get()?;
        let left = at.saturating_duration_since(now);
        (!left.is_zero()).then_some(left)
    }

    /// An unset instant counted from `base`.
    pub(crate) fn with_base(base: Instant) -> Self {
        AtomicInstant {
            base,
            nanos: AtomicU64::new(0),
        }
    }

    /// Stores the instant `since_base` nanoseconds after the base.
    #[inline]
    pub(crate) fn set_nanos(&self, since_base: u64) {
        self.nanos.store(
            since_base.min(u64::MAX - 1).saturating_add(1),
            Ordering::Release,
        );
    }

    /// Stores `at` (or clears with `None`).
    pub fn set(&self, at: Option<Instant>) {
        let raw = at.map_or(0, |at| self.encode(at));
        self.nanos.store(raw, Ordering::Release);
    }

    /// Moves the stored instant later to `at`, never earlier. Returns whether it moved.
    pub fn extend(&self, at: Instant) -> bool {
        let raw = self.encode(at);
        self.nanos.fetch_max(raw, Ordering::AcqRel) < raw
    }

    /// Clears the stored instant if it is `expected` (compare-and-swap).
    pub fn clear_if(&self, expected: Instant) -> bool {
        let raw = self.encode(expected);
        self.nanos
            .compare_exchange(raw, 0, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }
}

thread_local! {
    /// The clock reading published for the `Service::call` running on this thread
    /// (see [`calling_at`]).
    static CALL_NOW: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// The time of the `Service::call` in progress: the clock reading a layer above
/// published for it with [`calling_at`], or, when none did, a fresh reading.
///
/// A stack of layers that each time the start of a request (the balancer's attempt,
/// the quota's admission, the observer's latency) reads the clock once per request
/// this way instead of once per layer: on a VM one `Instant::now()` costs about as
/// much as a layer's whole bookkeeping. The reading is tokio's clock, so tests with
/// paused time see exactly what a fresh reading would give them.
///
/// ```
/// use tokio::time::Instant;
/// use tower_failover_core::time::{call_now, calling_at};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let taken = Instant::now();
/// // A layer publishes its reading around the call into the layers below...
/// let seen = calling_at(taken, || {
///     // ...and a layer below, in the same call, reuses it.
///     call_now()
/// });
/// assert_eq!(seen, taken);
/// # }
/// ```
#[inline]
pub fn call_now() -> Instant {
    CALL_NOW.get().unwrap_or_else(Instant::now)
}

/// Runs `call` (a layer's synchronous call into the layers below it) with `now`
/// published as the time of that call: [`call_now`] returns it until `call`
/// returns (or unwinds), then the reading published before, if any, is back.
///
/// Publish only a reading taken for this very call, just before it: the layers
/// below take it as the time their part of the request started. Nothing is
/// published across an `.await` or a poll of a future: only synchronous code
/// inside `call` sees it.
#[inline]
pub fn calling_at<R>(now: Instant, call: impl FnOnce() -> R) -> R {
    let _published = CallingAt::publish(now);
    call()
}

/// [`calling_at`] as a guard: `now` is published as the time of the call in
/// progress until the guard drops (also on unwind), then the reading published
/// before, if any, is back. For a call whose arguments are made in place, where a
/// closure would capture them first.
///
/// ```
/// use tokio::time::Instant;
/// use tower_failover_core::time::{CallingAt, call_now};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let taken = Instant::now();
/// let published = CallingAt::publish(taken);
/// assert_eq!(call_now(), taken); // what a layer below reads in the same call
/// drop(published);
/// # }
/// ```
#[must_use = "the reading is published only while the guard lives"]
#[derive(Debug)]
pub struct CallingAt(Option<Instant>);

impl CallingAt {
    /// Publishes `now` for the call made while the guard lives.
    #[inline]
    pub fn publish(now: Instant) -> Self {
        CallingAt(CALL_NOW.replace(Some(now)))
    }
}

impl Drop for CallingAt {
    #[inline]
    fn drop(&mut self) {
        CALL_NOW.set(self.0);
    }
}

/// Converts a wall-clock deadline (as exchanged between replicas) to a local instant.
pub fn instant_from_system(at: std::time::SystemTime, now: Instant) -> Instant {
    match at.duration_since(std::time::SystemTime::now()) {
        Ok(ahead) => now + ahead,
        Err(_) => now,
    }
}

/// Converts a local instant to a wall-clock deadline, to share with other replicas.
pub fn system_from_instant(at: Instant, now: Instant) -> std::time::SystemTime {
    std::time::SystemTime::now() + at.saturating_duration_since(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_published_reading_lasts_for_its_call_only() {
        let first = Instant::now();
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(call_now(), first + Duration::from_secs(1), "none published");
        let outer = calling_at(first, || {
            let inner = calling_at(first + Duration::from_millis(5), call_now);
            (call_now(), inner)
        });
        assert_eq!(outer, (first, first + Duration::from_millis(5)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert_eq!(
            call_now(),
            first + Duration::from_secs(2),
            "gone after the call"
        );
        let unwound = std::panic::catch_unwind(|| calling_at(first, || panic!("inside")));
        assert!(unwound.is_err());
        assert_eq!(
            call_now(),
            first + Duration::from_secs(2),
            "gone after an unwind"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn extend_never_shortens() {
        let now = Instant::now();
        let a = AtomicInstant::new();
        assert_eq!(a.get(), None);
        assert!(!a.is_after(now));
        assert!(a.extend(now + Duration::from_secs(10)));
        assert!(!a.extend(now + Duration::from_secs(5)));
        assert_eq!(a.get(), Some(now + Duration::from_secs(10)));
        assert_eq!(a.remaining(now), Some(Duration::from_secs(10)));
        tokio::time::advance(Duration::from_secs(11)).await;
        assert!(!a.is_after(Instant::now()));
        assert_eq!(a.remaining(Instant::now()), None);
        assert!(a.clear_if(now + Duration::from_secs(10)));
        assert_eq!(a.get(), None);
    }
}
