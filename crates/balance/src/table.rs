//! The provider table: an immutable snapshot of the providers, their options and
//! the precomputed candidate pools, shared (behind an `Arc`) by the router and every
//! request in flight.
//!
//! A request keeps the snapshot it started with, so adding or removing a provider
//! while it is in flight can never make an index it holds point at another provider
//! (the stale-index bug of tower's p2c, tower issue 856, cannot happen here).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::time::Instant;
use tower_failover_core::health::FULL_SHARE_PPM;
use tower_failover_core::time::AtomicInstant;
use tower_failover_core::{Health, ProviderId};

use crate::attrs::RequestAttrs;
use crate::config::{Settings, Strategy, Weighting};
use crate::error::ConfigError;
use crate::provider::ProviderOptions;

pub use tower_failover_core::SharedBudget;

/// One provider as configured.
pub(crate) struct Entry<S> {
    pub(crate) health: Health,
    pub(crate) service: S,
    pub(crate) options: ProviderOptions,
    /// Attempts sent and not answered yet, counted by the router itself (kept
    /// across table rebuilds).
    pub(crate) pending: Arc<AtomicU64>,
    /// The recent error rate (kept across table rebuilds).
    pub(crate) errors: Arc<ErrorRate>,
}

impl<S> Entry<S> {
    pub(crate) fn new(health: Health, service: S, options: ProviderOptions) -> Self {
        Entry {
            health,
            service,
            options,
            pending: Arc::new(AtomicU64::new(0)),
            errors: Arc::new(ErrorRate::new()),
        }
    }
}

/// How many recent outcomes the error rate mostly reflects: each new outcome
/// weighs 1 / `ERROR_SAMPLES` of the estimate.
const ERROR_SAMPLES: f64 = 10.0;

/// An error rate below this weighs nothing in a health score (a factor of
/// 1 + penalty × 1e-9) and is stored as zero.
const NEGLIGIBLE_RATE: f64 = 1e-9;

/// The bits of a rate of zero.
const ZERO_RATE: u64 = 0;

/// A provider's recent error rate, for the health score: an average over its
/// last outcomes (about [`ERROR_SAMPLES`] of them), read from the outcome
/// counters of its [`Health`] (which the `ObserveLayer` writes), that also fades
/// with time so that a provider the balancer has stopped sending to is tried
/// again.
///
/// Reading it costs a few atomic loads; it is updated only when new outcomes were
/// counted since, by the one reader that claims the update (a compare-and-swap,
/// never waited for: a reader that finds it claimed reads the estimate as it is).
#[derive(Debug)]
pub(crate) struct ErrorRate {
    /// Set while one reader updates the estimate: the claim on `good` and `bad`.
    /// One compare-and-swap to take and a plain store to give back (a mutex's
    /// `try_lock` and unlock are two read-modify-writes).
    busy: AtomicBool,
    /// Successes counted at the last update (written only under the claim).
    good: AtomicU64,
    /// Failures and rejections counted at the last update (likewise).
    bad: AtomicU64,
    /// f64 bits of the estimate at `stamp`.
    rate: AtomicU64,
    /// Outcomes (successes, failures, rejections) counted when last updated.
    seen: AtomicU64,
    /// When the estimate was last updated.
    stamp: AtomicInstant,
}

/// The claim on an [`ErrorRate`]'s update, given back when dropped (also on unwind).
struct Claim<'a>(&'a AtomicBool);

impl<'a> Claim<'a> {
    #[inline]
    fn take(busy: &'a AtomicBool) -> Option<Self> {
        busy.compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(Claim(busy))
    }
}

impl Drop for Claim<'_> {
    #[inline]
    fn drop(&mut self) {
        self.0.store(false, Ordering::Release);
    }
}

impl ErrorRate {
    fn new() -> Self {
        ErrorRate {
            busy: AtomicBool::new(false),
            good: AtomicU64::new(0),
            bad: AtomicU64::new(0),
            rate: AtomicU64::new(0f64.to_bits()),
            seen: AtomicU64::new(0),
            stamp: AtomicInstant::new(),
        }
    }

    /// The error rate of `health`'s provider now, in `[0, 1]`, faded by
    /// `decay_ns` since its last update.
    pub(crate) fn get(&self, health: &Health, decay_ns: f64, now: &crate::pick::LazyNow) -> f64 {
        let (good, bad) = health.good_and_bad();
        let total = good.saturating_add(bad);
        if total == self.seen.load(Ordering::Relaxed) {
            return self.faded(decay_ns, now);
        }
        if bad == self.bad.load(Ordering::Relaxed) && self.rate.load(Ordering::Relaxed) == ZERO_RATE
        {
            // Only successes since the last update of a rate at zero: it stays zero
            // (nothing to fade either). The successes are taken as seen without the
            // claim (a compare-and-swap per candidate per pick of a healthy
            // provider); a racing update may count a few of them twice, which only
            // dilutes the next failure's sample by as much.
            self.good.store(good, Ordering::Relaxed);
            self.seen.store(total, Ordering::Relaxed);
            return 0.0;
        }
        if let Some(_claim) = Claim::take(&self.busy) {
            let new_good = good.saturating_sub(self.good.load(Ordering::Relaxed));
            let new_bad = bad.saturating_sub(self.bad.load(Ordering::Relaxed));
            let n = new_good + new_bad;
            let updated = (n > 0).then(|| {
                let faded = self.faded(decay_ns, now);
                // `powi`, not `powf`: a few multiplications instead of libm's pow on
                // every answered request (n is usually 1).
                let keep = (1.0 - 1.0 / ERROR_SAMPLES).powi(n.min(1000) as i32);
                let sample = new_bad as f64 / n as f64;
                let rate = faded * keep + sample * (1.0 - keep);
                // A rate faded below any weight it could have is zero, so that a
                // provider that failed once long ago gets the fast path again.
                let rate = if rate < NEGLIGIBLE_RATE { 0.0 } else { rate };
                self.rate.store(rate.to_bits(), Ordering::Relaxed);
                if rate > 0.0 {
                    // A rate of zero does not fade: no stamp, and no clock read for
                    // a provider that keeps succeeding.
                    self.stamp.set(Some(now.get()));
                }
                rate
            });
            self.good.store(good, Ordering::Relaxed);
            self.bad.store(bad, Ordering::Relaxed);
            self.seen.store(total, Ordering::Relaxed);
            if let Some(rate) = updated {
                // Stamped now: nothing to fade yet.
                return rate.clamp(0.0, 1.0);
            }
        }
        self.faded(decay_ns, now)
    }

    fn faded(&self, decay_ns: f64, now: &crate::pick::LazyNow) -> f64 {
        let rate = f64::from_bits(self.rate.load(Ordering::Relaxed));
        if rate <= 0.0 || decay_ns <= 0.0 {
            return rate.max(0.0);
        }
        let Some(stamp) = self.stamp.get() else {
            return rate;
        };
        let elapsed = now.get().saturating_duration_since(stamp).as_nanos() as f64;
        (rate * (-elapsed / decay_ns).exp()).clamp(0.0, 1.0)
    }
}

/// The editable description the table is built from.
pub(crate) struct Spec<S> {
    pub(crate) entries: Vec<Entry<S>>,
    pub(crate) settings: Settings,
    pub(crate) context_fallback: Option<ProviderId>,
    pub(crate) policy_fallback: Option<ProviderId>,
    pub(crate) budget: Option<SharedBudget>,
}

impl<S> Spec<S> {
    /// Adds a provider, replacing one with the same id.
    pub(crate) fn insert(&mut self, entry: Entry<S>) -> Result<(), ConfigError> {
        let id = entry.health.id();
        entry.options.validate(id)?;
        if self.settings.weighting == Weighting::Cost
            && !entry.options.price_per_million.is_some_and(|p| p > 0.0)
        {
            return Err(ConfigError::new(
                format!("providers[{id}].price_per_million"),
                "weighting = \"cost\" needs a price above zero for every provider",
            ));
        }
        match self.entries.iter_mut().find(|e| e.health.id() == id) {
            Some(slot) => *slot = entry,
            None => self.entries.push(entry),
        }
        Ok(())
    }

    /// Removes the provider `id`; whether it was there.
    pub(crate) fn remove(&mut self, id: &ProviderId) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.health.id() != id);
        self.entries.len() != before
    }

    /// Checks that the typed-fallback targets name configured providers.
    pub(crate) fn check_targets(&self) -> Result<(), ConfigError> {
        for (field, target) in [
            ("context_window_fallback", &self.context_fallback),
            ("content_policy_fallback", &self.policy_fallback),
        ] {
            if let Some(id) = target
                && !self.entries.iter().any(|e| e.health.id() == id)
            {
                return Err(ConfigError::new(field, format!("unknown provider {id}")));
            }
        }
        Ok(())
    }

    pub(crate) fn build(&self, version: u64) -> Table<S>
    where
        S: Clone,
    {
        Table::build(self, version)
    }
}

/// One provider in a table.
pub(crate) struct Endpoint<S> {
    pub(crate) health: Health,
    pub(crate) service: S,
    pub(crate) pending: Arc<AtomicU64>,
    /// The recent error rate.
    pub(crate) errors: Arc<ErrorRate>,
    /// 1 ÷ effective weight.
    pub(crate) inv_weight: f64,
    /// Integer weight for round-robin.
    pub(crate) wrr_weight: i64,
    /// Price per million tokens (infinite when unknown).
    pub(crate) price: f64,
    /// Context window in tokens (`u64::MAX` when unknown).
    pub(crate) window: u64,
    model_slots: Box<[u32]>,
    tier_slots: Box<[u32]>,
    any_model: bool,
    tools: bool,
    /// Instances of `service` that earlier requests sent through and left (see
    /// [`Endpoint::instance`]), boxed: an attempt moves its instance out of here and
    /// back, and a box moves as one word where a whole provider stack (~150 bytes)
    /// is a `memcpy` each way.
    spare: std::sync::Mutex<Vec<Box<S>>>,
}

/// The most instances an endpoint keeps for reuse (about the requests in flight
/// to it at once; more are dropped).
const SPARE_MAX: usize = 64;

impl<S: Clone> Endpoint<S> {
    /// A service instance for one attempt: one an earlier attempt already sent
    /// through (it is made ready again like any other), else a clone.
    ///
    /// Every attempt needs an instance of its own (`Service::call` takes `&mut`),
    /// and cloning one costs what the service's layers cost to clone: behind the
    /// facade's type-erased positions, one allocation per position, about eight a
    /// request. Reused instances cost none. Never blocks: when another thread holds
    /// the spares, this clones.
    pub(crate) fn instance(&self) -> Box<S> {
        if let Ok(mut spare) = self.spare.try_lock()
            && let Some(svc) = spare.pop()
        {
            return svc;
        }
        Box::new(self.service.clone())
    }

    /// Keeps `svc` for a later attempt. Only for an instance whose readiness was
    /// spent by a `call` (one still ready would hold the capacity it reserved
    /// while it waits here).
    pub(crate) fn give_back(&self, svc: Box<S>) {
        if let Ok(mut spare) = self.spare.try_lock()
            && spare.len() < SPARE_MAX
        {
            spare.push(svc);
        }
    }
}

/// The candidates of one combination of (model, tier, tools), in the strategy's
/// order: context window ascending (least loaded, so a prompt size selects a
/// suffix), price ascending (cheapest), priority (ordered), insertion (round-robin).
pub(crate) struct Pool {
    pub(crate) members: Box<[u32]>,
    pub(crate) windows: Box<[u64]>,
    /// Smooth weighted round-robin state (round-robin only).
    pub(crate) wrr: Option<Mutex<Vec<i64>>>,
}

/// Where one request's candidates are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Route {
    pub(crate) pool: u32,
    /// First member whose window fits the prompt (least-loaded pools only).
    pub(crate) lo: u32,
    model: u32,
    tier: u32,
    tools: bool,
    pub(crate) tokens: Option<u64>,
}

pub(crate) struct Table<S> {
    pub(crate) endpoints: Box<[Endpoint<S>]>,
    pub(crate) settings: Settings,
    pub(crate) budget: Option<SharedBudget>,
    pub(crate) context_fallback: Option<u32>,
    pub(crate) policy_fallback: Option<u32>,
    pub(crate) version: u64,
    models: HashMap<Box<str>, u32>,
    tiers: HashMap<Box<str>, u32>,
    tier_slots: u32,
    pools: Box<[Pool]>,
}

/// Model and tier slot numbers: 0 = not asked, 1 = asked but unknown, 2.. = known.
const SLOT_NONE: u32 = 0;
const SLOT_UNKNOWN: u32 = 1;
const SLOT_FIRST: u32 = 2;

impl<S> Table<S> {
    fn build(spec: &Spec<S>, version: u64) -> Table<S>
    where
        S: Clone,
    {
        let settings = spec.settings;
        let mut models: HashMap<Box<str>, u32> = HashMap::new();
        let mut tiers: HashMap<Box<str>, u32> = HashMap::new();
        for e in &spec.entries {
            for m in &e.options.models {
                let n = models.len() as u32;
                models.entry(m.as_str().into()).or_insert(n);
            }
            for t in &e.options.tiers {
                let n = tiers.len() as u32;
                tiers.entry(t.as_str().into()).or_insert(n);
            }
        }
        let weights: Vec<f64> = spec
            .entries
            .iter()
            .map(|e| match settings.weighting {
                Weighting::Static => e.options.weight,
                Weighting::Cost => {
                    e.options.weight / e.options.price_per_million.unwrap_or(1.0).max(1e-9)
                }
            })
            .collect();
        let max_w = weights.iter().copied().fold(f64::MIN_POSITIVE, f64::max);
        let slots = |names: &[String], map: &HashMap<Box<str>, u32>| -> Box<[u32]> {
            let mut v: Vec<u32> = names.iter().map(|n| map[n.as_str()]).collect();
            v.sort_unstable();
            v.dedup();
            v.into_boxed_slice()
        };
        let endpoints: Box<[Endpoint<S>]> = spec
            .entries
            .iter()
            .zip(&weights)
            .map(|(e, &w)| Endpoint {
                health: e.health.clone(),
                service: e.service.clone(),
                pending: e.pending.clone(),
                errors: e.errors.clone(),
                inv_weight: 1.0 / w,
                wrr_weight: ((w / max_w) * 1000.0).round().max(1.0) as i64,
                price: e.options.price_per_million.unwrap_or(f64::INFINITY),
                window: e.options.context_window.unwrap_or(u64::MAX),
                model_slots: slots(&e.options.models, &models),
                tier_slots: slots(&e.options.tiers, &tiers),
                any_model: e.options.models.is_empty(),
                tools: e.options.tools,
                spare: Default::default(),
            })
            .collect();
        let model_slots = models.len() as u32 + SLOT_FIRST;
        let tier_slots = tiers.len() as u32 + SLOT_FIRST;
        // Fallback order: explicit priorities first, then insertion order.
        let priority: Vec<(u32, usize)> = spec
            .entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.options.priority.unwrap_or(u32::MAX), i))
            .collect();
        let mut pools = Vec::with_capacity((model_slots * tier_slots * 2) as usize);
        for model in 0..model_slots {
            for tier in 0..tier_slots {
                for tools in [false, true] {
                    let mut members: Vec<u32> = (0..endpoints.len() as u32)
                        .filter(|&i| accepts(&endpoints[i as usize], model, tier, tools))
                        .collect();
                    match settings.strategy {
                        Strategy::LeastLoaded => {
                            members.sort_by_key(|&i| (endpoints[i as usize].window, i))
                        }
                        Strategy::Cheapest => members.sort_by(|&a, &b| {
                            endpoints[a as usize]
                                .price
                                .total_cmp(&endpoints[b as usize].price)
                                .then(a.cmp(&b))
                        }),
                        Strategy::Ordered => members.sort_by_key(|&i| priority[i as usize]),
                        Strategy::RoundRobin => {}
                    }
                    let windows = members
                        .iter()
                        .map(|&i| endpoints[i as usize].window)
                        .collect();
                    let wrr = (settings.strategy == Strategy::RoundRobin)
                        .then(|| Mutex::new(vec![0; members.len()]));
                    pools.push(Pool {
                        members: members.into_boxed_slice(),
                        windows,
                        wrr,
                    });
                }
            }
        }
        let find = |id: &Option<ProviderId>| {
            id.as_ref().and_then(|id| {
                spec.entries
                    .iter()
                    .position(|e| e.health.id() == id)
                    .map(|i| i as u32)
            })
        };
        Table {
            settings,
            budget: spec.budget.clone(),
            context_fallback: find(&spec.context_fallback),
            policy_fallback: find(&spec.policy_fallback),
            version,
            models,
            tiers,
            tier_slots,
            pools: pools.into_boxed_slice(),
            endpoints,
        }
    }

    /// The number of providers.
    pub(crate) fn len(&self) -> usize {
        self.endpoints.len()
    }

    #[inline]
    pub(crate) fn endpoint(&self, i: u32) -> &Endpoint<S> {
        &self.endpoints[i as usize]
    }

    #[inline]
    pub(crate) fn pool(&self, route: &Route) -> &Pool {
        &self.pools[route.pool as usize]
    }

    /// The candidates of a request.
    pub(crate) fn route(&self, attrs: &RequestAttrs<'_>) -> Route {
        let slot = |name: Option<&str>, map: &HashMap<Box<str>, u32>| match name {
            None => SLOT_NONE,
            Some(n) => map.get(n).map_or(SLOT_UNKNOWN, |k| k + SLOT_FIRST),
        };
        let model = slot(attrs.model.as_deref(), &self.models);
        let tier = slot(attrs.tier.as_deref(), &self.tiers);
        let pool = (model * self.tier_slots + tier) * 2 + u32::from(attrs.tools);
        let lo = match (self.settings.strategy, attrs.prompt_tokens) {
            (Strategy::LeastLoaded, Some(t)) => self.pools[pool as usize]
                .windows
                .partition_point(|&w| w < t) as u32,
            _ => 0,
        };
        Route {
            pool,
            lo,
            model,
            tier,
            tools: attrs.tools,
            tokens: attrs.prompt_tokens,
        }
    }

    /// Whether the prompt fits provider `i`'s context window.
    #[inline]
    pub(crate) fn fits(&self, i: u32, route: &Route) -> bool {
        route.tokens.is_none_or(|t| self.endpoint(i).window >= t)
    }

    /// Whether provider `i` is a candidate of `route`.
    pub(crate) fn accepts(&self, i: u32, route: &Route) -> bool {
        accepts(self.endpoint(i), route.model, route.tier, route.tools) && self.fits(i, route)
    }

    /// The earliest recovery among the candidates of `route` that are unavailable
    /// now (`None` when none is expected to recover at a known time).
    pub(crate) fn earliest_recovery(&self, route: &Route, now: Instant) -> Option<Duration> {
        self.pool(route)
            .members
            .iter()
            .map(|&i| self.endpoint(i).health.recovers_in(now))
            .filter(|d| !d.is_zero())
            .min()
    }
}

impl<S> Endpoint<S> {
    /// Requests in flight: the `ObserveLayer`'s count (until the body ends) when the
    /// stack has one, else the router's own (until the response headers).
    #[inline]
    pub(crate) fn in_flight(&self) -> u64 {
        self.health
            .in_flight()
            .max(self.pending.load(Ordering::Relaxed))
    }
}

fn accepts<S>(ep: &Endpoint<S>, model: u32, tier: u32, tools: bool) -> bool {
    let model_ok = match model {
        SLOT_NONE => true,
        SLOT_UNKNOWN => ep.any_model,
        m => ep.any_model || ep.model_slots.binary_search(&(m - SLOT_FIRST)).is_ok(),
    };
    let tier_ok = match tier {
        SLOT_NONE => true,
        SLOT_UNKNOWN => false,
        t => ep.tier_slots.binary_search(&(t - SLOT_FIRST)).is_ok(),
    };
    model_ok && tier_ok && (!tools || ep.tools)
}

/// Whether a provider is under a recovery ramp that admits only part of the traffic.
#[inline]
pub(crate) fn is_ramping(h: &Health) -> bool {
    h.ramp_step().is_some() && h.ramp_share_ppm() < FULL_SHARE_PPM
}

/// The providers a request has tried (or skipped as not ready): the first four
/// inline, then a bit set over the table (allocated only for a fifth).
#[derive(Debug, Clone)]
pub(crate) struct Tried {
    inline: [u32; 4],
    len: u8,
    bits: Option<Box<[u64]>>,
    providers: u32,
}

impl Tried {
    pub(crate) fn new(providers: usize) -> Tried {
        Tried {
            inline: [0; 4],
            len: 0,
            bits: None,
            providers: providers as u32,
        }
    }

    #[inline]
    pub(crate) fn contains(&self, i: u32) -> bool {
        match &self.bits {
            Some(words) => words[(i / 64) as usize] & (1u64 << (i % 64)) != 0,
            None => self.inline[..self.len as usize].contains(&i),
        }
    }

    /// Whether every provider of the table has been tried.
    #[inline]
    pub(crate) fn covers_all(&self) -> bool {
        match &self.bits {
            Some(words) => words.iter().map(|w| w.count_ones()).sum::<u32>() >= self.providers,
            None => u32::from(self.len) >= self.providers,
        }
    }

    #[inline]
    pub(crate) fn insert(&mut self, i: u32) {
        if self.contains(i) {
            // Counted once (`covers_all` counts).
            return;
        }
        if self.bits.is_none() {
            if (self.len as usize) < self.inline.len() {
                self.inline[self.len as usize] = i;
                self.len += 1;
                return;
            }
            let mut words =
                vec![0u64; (self.providers.max(i + 1) as usize).div_ceil(64)].into_boxed_slice();
            for &j in &self.inline {
                words[(j / 64) as usize] |= 1u64 << (j % 64);
            }
            self.bits = Some(words);
        }
        if let Some(words) = &mut self.bits {
            words[(i / 64) as usize] |= 1u64 << (i % 64);
        }
    }
}

/// The ramping providers a request was sampled into (at most four).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Admitted {
    ids: [u32; 4],
    len: u8,
}

impl Admitted {
    pub(crate) fn push(&mut self, i: u32) {
        if (self.len as usize) < self.ids.len() {
            self.ids[self.len as usize] = i;
            self.len += 1;
        }
    }

    #[inline]
    pub(crate) fn contains(&self, i: u32) -> bool {
        self.ids[..self.len as usize].contains(&i)
    }

    pub(crate) fn first(&self) -> Option<u32> {
        (self.len > 0).then_some(self.ids[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BalanceConfig, FallbackConfig};

    fn spec(settings: Settings, opts: Vec<(&str, ProviderOptions)>) -> Spec<()> {
        let mut spec = Spec {
            entries: Vec::new(),
            settings,
            context_fallback: None,
            policy_fallback: None,
            budget: None,
        };
        for (name, options) in opts {
            spec.insert(Entry::new(Health::standalone(name, "m"), (), options))
                .unwrap();
        }
        spec
    }

    fn names(t: &Table<()>, route: &Route) -> Vec<String> {
        t.pool(route).members[route.lo as usize..]
            .iter()
            .map(|&i| t.endpoint(i).health.id().provider().to_owned())
            .collect()
    }

    #[test]
    fn pools_select_by_model_tier_tools_and_window() {
        let s = spec(
            Settings::balance(&BalanceConfig::default()),
            vec![
                (
                    "small",
                    ProviderOptions::default()
                        .model("mini")
                        .tier("cheap")
                        .context_window(8_000)
                        .tools(false),
                ),
                (
                    "big",
                    ProviderOptions::default()
                        .models(["mini", "large"])
                        .tier("strong")
                        .context_window(200_000),
                ),
                ("any", ProviderOptions::default().context_window(32_000)),
            ],
        );
        let t = s.build(1);
        let r = |a: RequestAttrs<'_>| t.route(&a);
        assert_eq!(names(&t, &r(RequestAttrs::new())), ["small", "any", "big"]);
        assert_eq!(
            names(&t, &r(RequestAttrs::new().model("mini"))),
            ["small", "any", "big"]
        );
        assert_eq!(
            names(&t, &r(RequestAttrs::new().model("large"))),
            ["any", "big"]
        );
        assert_eq!(
            names(&t, &r(RequestAttrs::new().model("unheard-of"))),
            ["any"]
        );
        assert_eq!(names(&t, &r(RequestAttrs::new().tier("strong"))), ["big"]);
        assert!(names(&t, &r(RequestAttrs::new().tier("nope"))).is_empty());
        assert_eq!(
            names(&t, &r(RequestAttrs::new().tools(true))),
            ["any", "big"]
        );
        assert_eq!(
            names(&t, &r(RequestAttrs::new().prompt_tokens(10_000))),
            ["any", "big"]
        );
        assert_eq!(
            names(&t, &r(RequestAttrs::new().prompt_tokens(100_000))),
            ["big"]
        );
        assert!(names(&t, &r(RequestAttrs::new().prompt_tokens(300_000))).is_empty());
    }

    #[test]
    fn fallback_pools_follow_priority_then_insertion() {
        let s = spec(
            Settings::fallback(&FallbackConfig::default()),
            vec![
                ("c", ProviderOptions::default()),
                ("b", ProviderOptions::default().priority(2)),
                ("a", ProviderOptions::default().priority(1)),
                ("d", ProviderOptions::default()),
            ],
        );
        let t = s.build(1);
        assert_eq!(
            names(&t, &t.route(&RequestAttrs::new())),
            ["a", "b", "c", "d"]
        );
    }

    #[test]
    fn cost_weighting_needs_prices_and_replaces_duplicates() {
        let settings = Settings::balance(&BalanceConfig::default().weighting(Weighting::Cost));
        let mut s = spec(settings, vec![]);
        let h = Health::standalone("p", "m");
        let err = s
            .insert(Entry::new(h.clone(), (), ProviderOptions::default()))
            .unwrap_err();
        assert_eq!(err.field(), "providers[p/m].price_per_million");
        for price in [2.0, 0.5] {
            s.insert(Entry::new(
                h.clone(),
                (),
                ProviderOptions::default().price_per_million(price),
            ))
            .unwrap();
        }
        assert_eq!(s.entries.len(), 1);
        let t = s.build(1);
        assert_eq!(t.endpoint(0).inv_weight, 0.5);
        assert!(s.remove(h.id()));
        assert!(!s.remove(h.id()));
    }

    #[test]
    fn tried_sets_inline_then_bits() {
        for n in [3usize, 5, 128, 1000] {
            let mut t = Tried::new(n);
            for i in (0..n as u32).step_by(7) {
                t.insert(i);
            }
            for i in 0..n as u32 {
                assert_eq!(t.contains(i), i % 7 == 0, "n={n} i={i}");
            }
        }
    }

    #[test]
    fn an_error_rate_stays_zero_through_successes_and_weighs_the_next_failure_alone() {
        use tower_failover_core::{FailureKind, Outcome};
        let h = Health::standalone("p", "m");
        let rate = ErrorRate::new();
        let now = crate::pick::LazyNow::at(tokio::time::Instant::now());
        for _ in 0..100 {
            h.record(&Outcome::Success);
            assert_eq!(rate.get(&h, 0.0, &now), 0.0);
        }
        // The successes read one by one were taken as seen: the failure is one
        // sample of ten, not one of a hundred and one.
        h.record(&Outcome::failure(FailureKind::Other));
        let after = rate.get(&h, 0.0, &now);
        assert!((after - 1.0 / ERROR_SAMPLES).abs() < 1e-12, "{after}");
        // Read again with nothing new: the same.
        assert_eq!(rate.get(&h, 0.0, &now), after);
    }

    #[test]
    fn an_error_rate_that_has_faded_to_nothing_is_zero_again() {
        use tower_failover_core::{FailureKind, Outcome};
        let h = Health::standalone("p", "m");
        let rate = ErrorRate::new();
        let now = crate::pick::LazyNow::at(tokio::time::Instant::now());
        h.record(&Outcome::failure(FailureKind::Other));
        assert!(rate.get(&h, 0.0, &now) > 0.0);
        let mut last = 1.0;
        for _ in 0..400 {
            h.record(&Outcome::Success);
            let r = rate.get(&h, 0.0, &now);
            assert!(r <= last, "a success never raises the rate");
            last = r;
        }
        assert_eq!(last, 0.0);
        assert_eq!(rate.rate.load(Ordering::Relaxed), ZERO_RATE);
    }
}
