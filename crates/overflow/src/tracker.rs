//! The model of one quota group's remaining requests and tokens.
//!
//! OpenAI and Anthropic both enforce per-minute limits as token buckets that refill
//! continuously, and report them on every response: the limit, what remains, and the
//! time until the bucket is full again. A [`QuotaTracker`] keeps the same bucket on
//! our side, for requests and for tokens:
//!
//! - every admitted request takes one request and its estimated tokens at once
//!   (several requests in flight are accounted for before any answer comes back);
//! - every response's headers correct the estimate: the level the provider reports,
//!   plus what refilled since the request left, minus what we sent after it. The
//!   reported `remaining` is a whole number, so a level already inside
//!   `[remaining, remaining + 1)` is kept as is (no rounding loss per response);
//! - optional configured budgets (`requests_per_minute`, `tokens_per_minute`) are
//!   purely local buckets, for a key shared with other applications.
//!
//! When the next request would find a bucket short, the tracker marks the provider's
//! [`QuotaGroup`](tower_failover_core::QuotaGroup) limited until the bucket holds
//! enough again: routers then overflow *before* the provider answers 429. A
//! provider whose buckets work differently (a fixed window) is at worst predicted too
//! optimistically; its 429 and `Retry-After` then close the group as usual.
//!
//! Share one tracker between every provider stack that uses the same API key: they
//! draw on one quota.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;
use tower_failover_core::{Health, RateLimitInfo};

use crate::config::QuotaConfig;
use crate::error::ConfigError;

/// Levels within this of the need count as enough (float rounding).
const EPSILON: f64 = 1e-6;

/// The tracked quota of one group (one API key or organisation). Cloning shares it.
///
/// ```
/// use std::time::Duration;
/// use tokio::time::Instant;
/// use tower_failover_core::Health;
/// use tower_failover_overflow::{QuotaConfig, QuotaTracker};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let health = Health::standalone("openai", "gpt-4o-mini");
/// let tracker = QuotaTracker::new(QuotaConfig::default().requests_per_minute(2)).unwrap();
/// let now = Instant::now();
/// assert!(tracker.admit(0, now, &health).is_ok());
/// assert!(tracker.admit(0, now, &health).is_ok());
/// // The budget is used up: the group is marked limited before any 429,
/// // until one request has refilled (30 s at 2 per minute).
/// assert!(health.is_rate_limited(now));
/// assert_eq!(tracker.admit(0, now, &health).unwrap_err(), Duration::from_secs(30));
/// # }
/// ```
#[derive(Clone)]
pub struct QuotaTracker {
    inner: Arc<Inner>,
}

struct Inner {
    config: QuotaConfig,
    tracks_tokens: AtomicBool,
    /// Whether any bucket holds something to take from or predict with (a
    /// configured budget, or limits a provider reported). Until then an admission
    /// only counts, without the lock. Never goes back to `false`.
    watching: AtomicBool,
    /// Requests admitted so far (the tickets' sequence).
    sent_requests: AtomicU64,
    /// Estimated tokens admitted so far; written under the lock only.
    sent_tokens: AtomicU64,
    state: Mutex<State>,
}

/// What the tracker needs to read the response of a request it admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    /// Requests admitted up to and including this one.
    requests_seq: u64,
    /// Estimated tokens admitted up to and including this one.
    tokens_seq: u64,
    sent_at: Instant,
}

impl Ticket {
    /// When the request was admitted.
    pub fn sent_at(&self) -> Instant {
        self.sent_at
    }
}

/// The tracker's current belief, for snapshots and tests.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct QuotaEstimate {
    /// Requests the provider is believed to have left (`None` until it reported any).
    pub requests: Option<f64>,
    /// The provider's request limit per window, if reported.
    pub request_limit: Option<f64>,
    /// Tokens the provider is believed to have left.
    pub tokens: Option<f64>,
    /// The provider's token limit per window, if reported.
    pub token_limit: Option<f64>,
    /// Requests left in the configured budget.
    pub budget_requests: Option<f64>,
    /// Tokens left in the configured budget.
    pub budget_tokens: Option<f64>,
    /// Requests admitted so far.
    pub admitted: u64,
}

#[derive(Debug)]
struct State {
    requests: Bucket,
    tokens: Bucket,
    budget_requests: Option<Bucket>,
    budget_tokens: Option<Bucket>,
    /// Moving average of the estimated cost of a request, for "would the next one fit".
    typical_tokens: f64,
}

/// One bucket: learned from headers, or a configured budget.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    known: bool,
    /// The limit (0 while unknown).
    capacity: f64,
    /// Refill per second (0 while unknown).
    rate: f64,
    level: f64,
    stamp: Instant,
    /// When the bucket is full again, if the rate is unknown but a reset was reported.
    full_at: Option<Instant>,
}

impl Bucket {
    fn unknown(now: Instant) -> Self {
        Bucket {
            known: false,
            capacity: 0.0,
            rate: 0.0,
            level: 0.0,
            stamp: now,
            full_at: None,
        }
    }

    fn budget(per_minute: u64, now: Instant) -> Self {
        let capacity = per_minute as f64;
        Bucket {
            known: true,
            capacity,
            rate: capacity / 60.0,
            level: capacity,
            stamp: now,
            full_at: None,
        }
    }

    fn refill(&mut self, now: Instant) {
        let last = self.stamp;
        self.stamp = last.max(now);
        if !self.known {
            // Nothing to refill: no `Instant` subtraction either (std's costs
            // about 56 instructions, and this runs for every bucket on every request).
            return;
        }
        let dt = now.saturating_duration_since(last).as_secs_f64();
        if self.rate > 0.0 {
            self.level = (self.level + dt * self.rate).min(self.capacity);
        } else if self.full_at.is_some_and(|at| at <= now) {
            self.full_at = None;
            self.level = self.level.max(self.capacity);
        }
    }

    /// How long until `need` is available; `None` if it is (or if nothing is known
    /// that says otherwise).
    fn wait_for(&self, need: f64, now: Instant) -> Option<Duration> {
        if !self.known {
            return None;
        }
        // A request larger than the whole bucket waits for a full bucket, not forever.
        let need = if self.capacity > 0.0 {
            need.min(self.capacity)
        } else {
            need
        };
        if self.level + EPSILON >= need {
            return None;
        }
        if self.rate > 0.0 {
            let secs = (need - self.level) / self.rate;
            return Some(Duration::from_secs_f64(secs.min(1.0e9)));
        }
        self.full_at
            .filter(|at| *at > now)
            .map(|at| at.saturating_duration_since(now))
    }

    fn take(&mut self, amount: f64) {
        if self.known {
            self.level -= amount;
        }
    }

    /// Corrects the bucket from what a response's headers said.
    ///
    /// `after` is what we admitted after the request this response answers;
    /// `elapsed` the time since that request left.
    #[allow(clippy::too_many_arguments)]
    fn learn(
        &mut self,
        remaining: Option<u64>,
        limit: Option<u64>,
        reset: Option<Duration>,
        after: f64,
        elapsed: Duration,
        now: Instant,
        window: Duration,
    ) {
        let Some(remaining) = remaining else { return };
        let r = remaining as f64;
        match limit {
            Some(limit) if limit > 0 => {
                self.capacity = limit as f64;
                self.rate = self.capacity / window.as_secs_f64();
            }
            _ => {
                self.capacity = self.capacity.max(r);
                if self.rate <= 0.0 {
                    self.full_at = reset.map(|d| now + d);
                }
            }
        }
        let credit = self.rate * elapsed.as_secs_f64();
        // What the provider had right after this request was a whole number `r` of
        // units or up to one more; what we admitted since comes off, what refilled
        // since comes on. Our own running level is kept while it stays inside those
        // bounds (no rounding loss per response), and starts at the low end.
        // The reset time is not used for the level: Anthropic's are whole seconds,
        // worth more than a unit at high rates, and an early guess means a 429.
        let lower = r - after;
        let upper = r + 1.0 + credit - after;
        let level = if self.known { self.level } else { lower };
        let mut level = level.clamp(lower, upper);
        if self.capacity > 0.0 {
            level = level.min(self.capacity);
        }
        self.level = level;
        self.known = true;
    }

    fn level(&self) -> Option<f64> {
        self.known.then_some(self.level)
    }

    fn limit(&self) -> Option<f64> {
        (self.known && self.capacity > 0.0).then_some(self.capacity)
    }
}

impl State {
    fn refill(&mut self, now: Instant) {
        self.requests.refill(now);
        self.tokens.refill(now);
        if let Some(b) = &mut self.budget_requests {
            b.refill(now);
        }
        if let Some(b) = &mut self.budget_tokens {
            b.refill(now);
        }
    }

    /// How long until a request of `tokens` fits every bucket (zero: it fits now).
    fn wait_for(&self, tokens: f64, now: Instant) -> Duration {
        let need = [
            self.requests.wait_for(1.0, now),
            self.tokens.wait_for(tokens, now),
            self.budget_requests.and_then(|b| b.wait_for(1.0, now)),
            self.budget_tokens.and_then(|b| b.wait_for(tokens, now)),
        ];
        need.into_iter().flatten().max().unwrap_or(Duration::ZERO)
    }
}

impl fmt::Debug for QuotaTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("QuotaTracker")
            .field("config", &self.inner.config)
            .field("estimate", &self.estimate())
            .finish()
    }
}

impl QuotaTracker {
    /// A tracker for one quota group, after validating `config`.
    pub fn new(config: QuotaConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let now = Instant::now();
        Ok(QuotaTracker {
            inner: Arc::new(Inner {
                config,
                tracks_tokens: AtomicBool::new(config.tokens_per_minute.is_some()),
                watching: AtomicBool::new(
                    config.requests_per_minute.is_some() || config.tokens_per_minute.is_some(),
                ),
                sent_requests: AtomicU64::new(0),
                sent_tokens: AtomicU64::new(0),
                state: Mutex::new(State {
                    requests: Bucket::unknown(now),
                    tokens: Bucket::unknown(now),
                    budget_requests: config.requests_per_minute.map(|n| Bucket::budget(n, now)),
                    budget_tokens: config.tokens_per_minute.map(|n| Bucket::budget(n, now)),
                    typical_tokens: 0.0,
                }),
            }),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &QuotaConfig {
        &self.inner.config
    }

    /// Whether a token quota is followed (configured, or reported by the provider),
    /// so that requests' tokens are worth estimating.
    #[inline]
    pub fn tracks_tokens(&self) -> bool {
        self.inner.tracks_tokens.load(Ordering::Relaxed)
    }

    /// Whether two handles share one tracker.
    pub fn same_as(&self, other: &QuotaTracker) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Admits a request of `tokens` estimated tokens at `now`, taking it from every
    /// bucket, or says how long until it would fit.
    ///
    /// With `predictive` on (the default), a request that does not fit is refused
    /// and `group`'s quota group is marked limited for that long; and when an
    /// admitted request leaves too little for the next one, the group is marked
    /// limited until there is enough. With it off, every request is admitted and only
    /// counted.
    pub fn admit(&self, tokens: u64, now: Instant, group: &Health) -> Result<Ticket, Duration> {
        if tokens == 0 && !self.inner.watching.load(Ordering::Relaxed) {
            // Nothing known and nothing budgeted: no bucket to take from, no wait to
            // predict, only the request to count (an atomic add instead of the lock,
            // a refill and two waits on every request to a provider that reports no
            // limits).
            return Ok(self.ticket(now));
        }
        let predictive = self.inner.config.predictive;
        let cost = tokens as f64;
        let mut s = self.lock();
        s.refill(now);
        if predictive {
            let wait = self.cap(s.wait_for(cost, now));
            if !wait.is_zero() {
                drop(s);
                self.mark(group, now, wait);
                return Err(wait);
            }
        }
        s.requests.take(1.0);
        s.tokens.take(cost);
        if let Some(b) = &mut s.budget_requests {
            b.take(1.0);
        }
        if let Some(b) = &mut s.budget_tokens {
            b.take(cost);
        }
        if tokens > 0 {
            // Under the lock, the only writer.
            let sent = self.inner.sent_tokens.load(Ordering::Relaxed);
            self.inner
                .sent_tokens
                .store(sent.saturating_add(tokens), Ordering::Relaxed);
        }
        // Requests not estimated (no token quota followed yet) say nothing of size.
        if tokens > 0 {
            s.typical_tokens = if s.typical_tokens == 0.0 {
                cost
            } else {
                s.typical_tokens * 0.8 + cost * 0.2
            };
        }
        let ticket = self.ticket(now);
        let next = if predictive {
            s.wait_for(s.typical_tokens, now)
        } else {
            Duration::ZERO
        };
        drop(s);
        if !next.is_zero() {
            self.mark(group, now, self.cap(next));
        }
        Ok(ticket)
    }

    /// Corrects the model from the rate-limit headers of the response to `ticket`'s
    /// request, read at `now`; marks `group` limited if the next request no longer
    /// fits (predictive mode).
    pub fn observe(&self, ticket: &Ticket, info: &RateLimitInfo, now: Instant, group: &Health) {
        let window = self.inner.config.window;
        let elapsed = now.saturating_duration_since(ticket.sent_at);
        let mut s = self.lock();
        s.refill(now);
        let after_requests = self.sent_requests().saturating_sub(ticket.requests_seq) as f64;
        let after_tokens = self
            .inner
            .sent_tokens
            .load(Ordering::Relaxed)
            .saturating_sub(ticket.tokens_seq) as f64;
        s.requests.learn(
            info.remaining_requests,
            info.limit_requests,
            info.reset_requests,
            after_requests,
            elapsed,
            now,
            window,
        );
        s.tokens.learn(
            info.remaining_tokens,
            info.limit_tokens,
            info.reset_tokens,
            after_tokens,
            elapsed,
            now,
            window,
        );
        if s.tokens.known {
            self.inner.tracks_tokens.store(true, Ordering::Relaxed);
        }
        if s.requests.known || s.tokens.known {
            self.inner.watching.store(true, Ordering::Relaxed);
        }
        let next = if self.inner.config.predictive {
            s.wait_for(s.typical_tokens, now)
        } else {
            Duration::ZERO
        };
        drop(s);
        if !next.is_zero() {
            self.mark(group, now, self.cap(next));
        }
    }

    /// How long until one more request (of typical size) would fit, at `now`.
    pub fn next_fit(&self, now: Instant) -> Duration {
        let mut s = self.lock();
        s.refill(now);
        self.cap(s.wait_for(s.typical_tokens, now))
    }

    /// The tracker's current belief.
    pub fn estimate(&self) -> QuotaEstimate {
        let mut s = self.lock();
        s.refill(Instant::now());
        QuotaEstimate {
            requests: s.requests.level(),
            request_limit: s.requests.limit(),
            tokens: s.tokens.level(),
            token_limit: s.tokens.limit(),
            budget_requests: s.budget_requests.and_then(|b| b.level()),
            budget_tokens: s.budget_tokens.and_then(|b| b.level()),
            admitted: self.sent_requests(),
        }
    }

    /// Counts one more admitted request and gives its ticket.
    #[inline]
    fn ticket(&self, now: Instant) -> Ticket {
        Ticket {
            requests_seq: self.inner.sent_requests.fetch_add(1, Ordering::Relaxed) + 1,
            tokens_seq: self.inner.sent_tokens.load(Ordering::Relaxed),
            sent_at: now,
        }
    }

    fn sent_requests(&self) -> u64 {
        self.inner.sent_requests.load(Ordering::Relaxed)
    }

    fn cap(&self, wait: Duration) -> Duration {
        wait.min(self.inner.config.limits.max_wait)
    }

    /// Marks the group limited for `wait` (never shortening a known window). A
    /// prediction is local knowledge: it is not published as an event nor to the
    /// shared store (a real 429 is, by the observe layer).
    fn mark(&self, group: &Health, now: Instant, wait: Duration) {
        if group.quota().limit_until(now + wait) {
            tracing::debug!(
                provider = %group.id(),
                wait_ms = wait.as_millis() as u64,
                "quota predicted exhausted: limited until it refills"
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderMap;
    use std::time::SystemTime;
    use tower_failover_core::HeaderLimits;

    fn info(pairs: &[(&str, &str)]) -> RateLimitInfo {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        RateLimitInfo::from_headers(&h, SystemTime::now(), &HeaderLimits::default())
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_quota_admits_everything() {
        let h = Health::standalone("p", "m");
        let t = QuotaTracker::new(QuotaConfig::default()).unwrap();
        for _ in 0..1000 {
            t.admit(10, Instant::now(), &h).unwrap();
        }
        assert!(!h.is_rate_limited(Instant::now()));
        assert!(!t.tracks_tokens());
        assert_eq!(t.estimate().admitted, 1000);
    }

    #[tokio::test(start_paused = true)]
    async fn headers_predict_the_limit_before_a_429() {
        let h = Health::standalone("p", "m");
        let t = QuotaTracker::new(QuotaConfig::default()).unwrap();
        let now = Instant::now();
        let ticket = t.admit(0, now, &h).unwrap();
        // 60 per minute: 1 per second. Two left, bucket full again in 58 s.
        t.observe(
            &ticket,
            &info(&[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "2"),
                ("x-ratelimit-reset-requests", "58s"),
            ]),
            now,
            &h,
        );
        assert!((t.estimate().requests.unwrap() - 2.0).abs() < 1e-6);
        t.admit(0, now, &h).unwrap();
        assert!(!h.is_rate_limited(now));
        t.admit(0, now, &h).unwrap();
        // Now empty: limited for one refill period, before the provider said 429.
        assert!(h.is_rate_limited(now));
        assert_eq!(h.quota().remaining(now), Some(Duration::from_secs(1)));
        assert_eq!(t.admit(0, now, &h).unwrap_err(), Duration::from_secs(1));
        tokio::time::advance(Duration::from_secs(1)).await;
        let now = Instant::now();
        assert!(!h.is_rate_limited(now));
        t.admit(0, now, &h).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn requests_admitted_before_any_limit_was_known_count_against_the_first_one_learned() {
        let h = Health::standalone("p", "m");
        let t = QuotaTracker::new(QuotaConfig::default()).unwrap();
        let now = Instant::now();
        // Three requests leave while nothing is known (admitted without the lock).
        let first = t.admit(0, now, &h).unwrap();
        t.admit(0, now, &h).unwrap();
        t.admit(0, now, &h).unwrap();
        assert_eq!(t.estimate().requests, None);
        // The first one's answer says 5 were left after it: the two sent after it
        // come off.
        t.observe(
            &first,
            &info(&[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "5"),
            ]),
            now,
            &h,
        );
        assert!((t.estimate().requests.unwrap() - 3.0).abs() < 1e-6);
        // From now on each admission takes from the bucket.
        let next = t.admit(0, now, &h).unwrap();
        assert!((t.estimate().requests.unwrap() - 2.0).abs() < 1e-6);
        assert_eq!(next.requests_seq, 4);
        assert_eq!(t.estimate().admitted, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn fractional_levels_survive_whole_number_headers() {
        let h = Health::standalone("p", "m");
        let t = QuotaTracker::new(QuotaConfig::default()).unwrap();
        let start = Instant::now();
        let headers = info(&[
            ("x-ratelimit-limit-requests", "60"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "59.5s"),
        ]);
        let ticket = t.admit(0, start, &h).unwrap();
        // First sight: the low end of what `remaining: 0` allows.
        t.observe(&ticket, &headers, start, &h);
        assert_eq!(t.estimate().requests, Some(0.0));
        assert_eq!(h.quota().remaining(start), Some(Duration::from_secs(1)));

        // From then on the running level is kept while the headers allow it:
        // 1.7 - 1 = 0.7 is not rounded down to 0 by the next `remaining: 0`.
        tokio::time::advance(ms(1700)).await;
        let now = Instant::now();
        let ticket = t.admit(0, now, &h).unwrap();
        t.observe(&ticket, &headers, now, &h);
        let level = t.estimate().requests.unwrap();
        assert!((level - 0.7).abs() < 1e-6, "{level}");
        // So the next request fits in 0.3 s, not a whole second.
        assert_eq!(h.quota().remaining(now), Some(ms(300)));

        // A provider that says less than we think (another client on the key) wins.
        let ticket = t.admit(0, now + ms(300), &h).unwrap();
        t.observe(
            &ticket,
            &info(&[
                ("x-ratelimit-limit-requests", "60"),
                ("x-ratelimit-remaining-requests", "0"),
            ]),
            now + ms(300),
            &h,
        );
        assert!(t.estimate().requests.unwrap() < 1.0);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_sent_after_a_response_are_not_forgotten() {
        let h = Health::standalone("p", "m");
        let t = QuotaTracker::new(QuotaConfig::default()).unwrap();
        let now = Instant::now();
        let first = t.admit(0, now, &h).unwrap();
        for _ in 0..3 {
            t.admit(0, now, &h).unwrap();
        }
        // The answer to the first says 10 left (after it): three more left since.
        t.observe(
            &first,
            &info(&[
                ("x-ratelimit-limit-requests", "600"),
                ("x-ratelimit-remaining-requests", "10"),
                ("x-ratelimit-reset-requests", "59s"),
            ]),
            now,
            &h,
        );
        let level = t.estimate().requests.unwrap();
        assert!((level - 7.0).abs() < 1e-6, "{level}");
    }

    #[tokio::test(start_paused = true)]
    async fn token_quota_from_anthropic_style_headers() {
        let h = Health::standalone("anthropic", "claude");
        let t = QuotaTracker::new(QuotaConfig::default()).unwrap();
        let now = Instant::now();
        let ticket = t.admit(0, now, &h).unwrap();
        assert!(!t.tracks_tokens());
        t.observe(
            &ticket,
            &info(&[
                ("anthropic-ratelimit-requests-limit", "1000"),
                ("anthropic-ratelimit-requests-remaining", "900"),
                ("anthropic-ratelimit-tokens-limit", "6000"),
                ("anthropic-ratelimit-tokens-remaining", "150"),
            ]),
            now,
            &h,
        );
        assert!(t.tracks_tokens());
        // 6000 tokens a minute: 100 per second.
        t.admit(100, now, &h).unwrap();
        // 50 left; the typical request (100 tokens, then 100) does not fit.
        assert!(h.is_rate_limited(now));
        assert_eq!(h.quota().remaining(now), Some(ms(500)));
        let wait = t.admit(100, now, &h).unwrap_err();
        assert_eq!(wait, ms(500));
        // A request larger than the whole bucket waits for a full bucket, not forever.
        tokio::time::advance(ms(500)).await;
        let wait = t.admit(1_000_000, Instant::now(), &h).unwrap_err();
        assert_eq!(wait, Duration::from_secs(59));
    }

    #[tokio::test(start_paused = true)]
    async fn configured_budgets_pace_without_headers() {
        let h = Health::standalone("p", "m");
        let t = QuotaTracker::new(QuotaConfig::default().tokens_per_minute(600)).unwrap();
        assert!(t.tracks_tokens());
        let now = Instant::now();
        t.admit(500, now, &h).unwrap();
        // 100 left, 10 per second; the next typical request (500) needs 40 s.
        assert_eq!(h.quota().remaining(now), Some(Duration::from_secs(40)));
        // The tracker's own admission is exact: a small request still fits (the
        // group mark steers typical requests away; the layer checks it first).
        t.admit(100, now, &h).unwrap();
        assert_eq!(t.admit(1, now, &h).unwrap_err(), Duration::from_millis(100));
    }

    #[tokio::test(start_paused = true)]
    async fn non_predictive_only_counts() {
        let h = Health::standalone("p", "m");
        let t = QuotaTracker::new(
            QuotaConfig::default()
                .requests_per_minute(1)
                .predictive(false),
        )
        .unwrap();
        let now = Instant::now();
        for _ in 0..5 {
            t.admit(0, now, &h).unwrap();
        }
        assert!(!h.is_rate_limited(now));
        assert!(t.estimate().budget_requests.unwrap() < 0.0);
    }

    #[tokio::test(start_paused = true)]
    async fn unknown_rate_waits_for_the_reported_reset() {
        let h = Health::standalone("p", "m");
        let t = QuotaTracker::new(QuotaConfig::default()).unwrap();
        let now = Instant::now();
        let ticket = t.admit(0, now, &h).unwrap();
        t.observe(
            &ticket,
            &info(&[
                ("x-ratelimit-remaining-requests", "0"),
                ("x-ratelimit-reset-requests", "7s"),
            ]),
            now,
            &h,
        );
        assert_eq!(h.quota().remaining(now), Some(Duration::from_secs(7)));
        tokio::time::advance(Duration::from_secs(7)).await;
        t.admit(0, Instant::now(), &h).unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn predicted_waits_are_capped() {
        let h = Health::standalone("p", "m");
        let config = QuotaConfig::default().limits(HeaderLimits {
            max_wait: Duration::from_secs(3),
            default_retry_after: Duration::from_secs(1),
        });
        let t = QuotaTracker::new(config.requests_per_minute(1)).unwrap();
        let now = Instant::now();
        t.admit(0, now, &h).unwrap();
        assert_eq!(h.quota().remaining(now), Some(Duration::from_secs(3)));
    }
}
