//! Choosing one provider among a request's candidates.
//!
//! Every strategy reads each candidate's [`Health`](tower_failover_core::Health)
//! with atomic loads only, and skips candidates that are not eligible: already
//! tried by this request, known unavailable (circuit open, rate limited, ramp at
//! 0 %), under a recovery ramp this request was not sampled into (until nothing else
//! is left), or too small for the prompt.

use std::cell::Cell;
use std::sync::PoisonError;

use tokio::time::Instant;
use tower_failover_core::rng::Rng;
use tower_failover_core::{CircuitState, Health};

use crate::config::{Settings, Strategy};
use crate::table::{Admitted, Endpoint, Route, Table, Tried, is_ramping};

/// How many random draws P2C makes for each of its two samples before it falls
/// back to one pass over the candidates (when most of them are not eligible).
const DRAWS: u32 = 3;

/// The time-to-first-byte estimate of a provider, in nanoseconds.
#[inline]
fn latency_ns<S>(ep: &Endpoint<S>, settings: &Settings) -> f64 {
    let v = ep.health.ttfb().get_ns();
    if v > 0.0 { v } else { settings.unmeasured_ns }
}

/// The health factor of a provider's load: 1 + `error_penalty` × its recent error
/// rate (1 when the penalty is off or the provider has not failed lately).
#[inline]
fn health_factor<S>(ep: &Endpoint<S>, settings: &Settings, now: &LazyNow) -> f64 {
    if settings.error_penalty <= 0.0 {
        return 1.0;
    }
    1.0 + settings.error_penalty * ep.errors.get(&ep.health, settings.error_decay_ns, now)
}

/// Whether `a` is preferred to `b`: lower latency × (in flight + 1) ÷ weight ×
/// health factor (see [`health_factor`]), with latencies within the buffer of each
/// other counted as equal.
#[inline]
fn prefer<S>(a: &Endpoint<S>, b: &Endpoint<S>, settings: &Settings, now: &LazyNow) -> bool {
    let mut la = latency_ns(a, settings);
    let mut lb = latency_ns(b, settings);
    if settings.latency_buffer > 0.0 && (la - lb).abs() <= settings.latency_buffer * la.min(lb) {
        let best = la.min(lb);
        la = best;
        lb = best;
    }
    let ca = la * (a.in_flight() as f64 + 1.0) * a.inv_weight * health_factor(a, settings, now);
    let cb = lb * (b.in_flight() as f64 + 1.0) * b.inv_weight * health_factor(b, settings, now);
    ca <= cb
}

/// The current time, read from the clock only when a decision needs it (or taken
/// from the reading a layer above published for the call in progress,
/// [`call_now`](tower_failover_core::time::call_now)).
#[derive(Debug, Default)]
pub(crate) struct LazyNow(Cell<Option<Instant>>);

impl LazyNow {
    pub(crate) fn new() -> Self {
        LazyNow(Cell::new(None))
    }

    pub(crate) fn at(now: Instant) -> Self {
        LazyNow(Cell::new(Some(now)))
    }

    pub(crate) fn get(&self) -> Instant {
        match self.0.get() {
            Some(now) => now,
            None => {
                // A layer above may have read the clock for this very call.
                let now = tower_failover_core::time::call_now();
                self.0.set(Some(now));
                now
            }
        }
    }
}

/// [`Health::is_available`] at `now`, reading the clock only when the answer
/// depends on it: when the circuit is not open and the quota group has no
/// rate-limit window at all, `is_available` reduces to its ramp clause.
#[inline]
pub(crate) fn available(h: &Health, now: &LazyNow) -> bool {
    if h.circuit() != CircuitState::Open && h.quota().limited_until().is_none() {
        return h.ramp_share_ppm() > 0;
    }
    h.is_available(now.get())
}

/// [`Health::is_suspect`] at `now`, reading the clock only when requests are
/// waiting for the provider (nothing waiting: nothing to suspect).
#[inline]
pub(crate) fn suspect(h: &Health, now: &LazyNow) -> bool {
    h.waiting() > 0 && h.is_suspect(now.get())
}

/// The per-request state a pick depends on.
pub(crate) struct Pick<'a> {
    pub(crate) tried: &'a Tried,
    pub(crate) admitted: &'a Admitted,
    pub(crate) now: &'a LazyNow,
    /// Only the typed-fallback target may be tried next.
    pub(crate) closed: bool,
}

/// Chooses the next provider for a request, or `None` when no candidate is left.
pub(crate) fn select<S>(
    table: &Table<S>,
    route: &Route,
    rng: &mut Rng,
    pick: &Pick<'_>,
) -> Option<u32> {
    if pick.closed {
        return None;
    }
    // First without the ramping providers this request was not sampled into and
    // without suspect ones (silent with requests waiting); if that leaves nothing,
    // they are the last resort: suspicion never fails a request.
    for last_resort in [false, true] {
        let mut skipped = false;
        let filter_window = table.settings.strategy != Strategy::LeastLoaded;
        let mut eligible = |i: u32| {
            if pick.tried.contains(i) {
                return false;
            }
            let ep = table.endpoint(i);
            if !available(&ep.health, pick.now) {
                return false;
            }
            if filter_window && !table.fits(i, route) {
                return false;
            }
            if !last_resort
                && ((is_ramping(&ep.health) && !pick.admitted.contains(i))
                    || suspect(&ep.health, pick.now))
            {
                skipped = true;
                return false;
            }
            true
        };
        let pool = table.pool(route);
        let found = match table.settings.strategy {
            Strategy::LeastLoaded => p2c(
                table,
                &pool.members[route.lo as usize..],
                rng,
                pick.now,
                &mut eligible,
            ),
            Strategy::Cheapest => cheapest(table, &pool.members, pick.now, &mut eligible),
            Strategy::RoundRobin => round_robin(table, route, &mut eligible),
            Strategy::Ordered => pool.members.iter().copied().find(|&i| eligible(i)),
        };
        if found.is_some() || !skipped {
            return found;
        }
    }
    None
}

/// Power of two choices: two distinct eligible candidates drawn at random, the
/// preferred one returned. Constant time while most candidates are eligible.
fn p2c<S>(
    table: &Table<S>,
    members: &[u32],
    rng: &mut Rng,
    now: &LazyNow,
    eligible: &mut impl FnMut(u32) -> bool,
) -> Option<u32> {
    let n = members.len();
    match n {
        0 => return None,
        1 => return eligible(members[0]).then_some(members[0]),
        _ => {}
    }
    let draw = |rng: &mut Rng, eligible: &mut dyn FnMut(u32) -> bool, avoid: Option<usize>| {
        for _ in 0..DRAWS {
            let pos = match avoid {
                None => rng.below(n as u64) as usize,
                Some(a) => {
                    let p = rng.below(n as u64 - 1) as usize;
                    if p >= a { p + 1 } else { p }
                }
            };
            if eligible(members[pos]) {
                return Some(pos);
            }
        }
        None
    };
    let (a, b) = match draw(rng, eligible, None) {
        Some(pa) => match draw(rng, eligible, Some(pa)) {
            Some(pb) => (members[pa], members[pb]),
            None => return two_by_scan(table, members, rng, now, eligible),
        },
        None => return two_by_scan(table, members, rng, now, eligible),
    };
    Some(
        if prefer(table.endpoint(a), table.endpoint(b), &table.settings, now) {
            a
        } else {
            b
        },
    )
}

/// One pass over the candidates keeping two eligible ones uniformly at random
/// (reservoir sampling), then the preferred of them.
fn two_by_scan<S>(
    table: &Table<S>,
    members: &[u32],
    rng: &mut Rng,
    now: &LazyNow,
    eligible: &mut impl FnMut(u32) -> bool,
) -> Option<u32> {
    let mut kept: [Option<u32>; 2] = [None, None];
    let mut seen = 0u64;
    for &i in members {
        if !eligible(i) {
            continue;
        }
        seen += 1;
        if seen <= 2 {
            kept[seen as usize - 1] = Some(i);
        } else {
            let slot = rng.below(seen);
            if slot < 2 {
                kept[slot as usize] = Some(i);
            }
        }
    }
    match kept {
        [Some(a), Some(b)] => Some(
            if prefer(table.endpoint(a), table.endpoint(b), &table.settings, now) {
                a
            } else {
                b
            },
        ),
        [one, _] => one,
    }
}

/// The cheapest eligible candidate whose latency is within the slack of the best;
/// among equally cheap ones, the least loaded. `members` are in price order.
fn cheapest<S>(
    table: &Table<S>,
    members: &[u32],
    now: &LazyNow,
    eligible: &mut impl FnMut(u32) -> bool,
) -> Option<u32> {
    let settings = &table.settings;
    let mut best = f64::INFINITY;
    for &i in members {
        if eligible(i) {
            best = best.min(latency_ns(table.endpoint(i), settings));
        }
    }
    if best.is_infinite() {
        return None;
    }
    let limit = best + settings.cheapest_within_ns;
    let mut chosen: Option<u32> = None;
    for &i in members {
        let ep = table.endpoint(i);
        if let Some(c) = chosen
            && ep.price > table.endpoint(c).price
        {
            break;
        }
        if latency_ns(ep, settings) > limit || !eligible(i) {
            continue;
        }
        chosen = match chosen {
            Some(c) if prefer(table.endpoint(c), ep, settings, now) => Some(c),
            _ => Some(i),
        };
    }
    chosen
}

/// Smooth weighted round-robin over the eligible candidates.
fn round_robin<S>(
    table: &Table<S>,
    route: &Route,
    eligible: &mut impl FnMut(u32) -> bool,
) -> Option<u32> {
    let pool = table.pool(route);
    let state = pool.wrr.as_ref()?;
    let mut current = state.lock().unwrap_or_else(PoisonError::into_inner);
    let mut total = 0i64;
    let mut best: Option<usize> = None;
    for (pos, &i) in pool.members.iter().enumerate() {
        if !eligible(i) {
            continue;
        }
        let w = table.endpoint(i).wrr_weight;
        current[pos] += w;
        total += w;
        if best.is_none_or(|b| current[pos] > current[b]) {
            best = Some(pos);
        }
    }
    let b = best?;
    current[b] -= total;
    Some(pool.members[b])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BalanceConfig, Policy};
    use crate::provider::ProviderOptions;
    use crate::table::{Entry, Spec};
    use crate::{RequestAttrs, config::Weighting};
    use proptest::prelude::{Just, any, prop_assert, prop_oneof, proptest};
    use std::time::Duration;

    fn table(config: BalanceConfig, opts: Vec<ProviderOptions>) -> Table<()> {
        let mut spec = Spec {
            entries: Vec::new(),
            settings: Settings::balance(&config),
            context_fallback: None,
            policy_fallback: None,
            budget: None,
        };
        for (i, options) in opts.into_iter().enumerate() {
            spec.insert(Entry::new(
                Health::standalone(format!("p{i}"), "m"),
                (),
                options,
            ))
            .unwrap();
        }
        spec.build(1)
    }

    fn counts(t: &Table<()>, n: usize, rounds: usize) -> Vec<usize> {
        let route = t.route(&RequestAttrs::new());
        let mut rng = Rng::seeded(1);
        let tried = Tried::new(t.len());
        let admitted = Admitted::default();
        let mut out = vec![0; n];
        for _ in 0..rounds {
            let pick = Pick {
                tried: &tried,
                admitted: &admitted,
                now: &LazyNow::new(),
                closed: false,
            };
            out[select(t, &route, &mut rng, &pick).unwrap() as usize] += 1;
        }
        out
    }

    #[test]
    fn p2c_prefers_lower_latency_times_load_over_weight() {
        let t = table(
            BalanceConfig::default().latency_buffer(0.0),
            vec![ProviderOptions::default(); 2],
        );
        t.endpoint(0)
            .health
            .observe_ttfb(Duration::from_millis(100));
        t.endpoint(1)
            .health
            .observe_ttfb(Duration::from_millis(300));
        assert_eq!(counts(&t, 2, 100), [100, 0]);
        // Three requests in flight at the fast one: 100 × 4 > 300 × 1.
        let _g: Vec<_> = (0..3)
            .map(|_| t.endpoint(0).health.start_request())
            .collect();
        assert_eq!(counts(&t, 2, 100), [0, 100]);
    }

    #[tokio::test(start_paused = true)]
    async fn recent_errors_weigh_on_the_load_and_fade() {
        use tower_failover_core::{FailureKind, Outcome};
        let t = table(
            BalanceConfig::default(),
            vec![ProviderOptions::default(); 2],
        );
        for i in 0..2 {
            t.endpoint(i)
                .health
                .observe_ttfb(Duration::from_millis(100));
        }
        // Provider 1 failed three of its last ten attempts: 1 + 20 × ~0.3 ≈ 7 times
        // as loaded. Three requests in flight at provider 0 do not make up for it.
        for k in 0..10 {
            let outcome = if k % 3 == 0 {
                Outcome::failure(FailureKind::Status(500))
            } else {
                Outcome::Success
            };
            t.endpoint(1).health.record(&outcome);
        }
        let _g: Vec<_> = (0..3)
            .map(|_| t.endpoint(0).health.start_request())
            .collect();
        assert_eq!(counts(&t, 2, 100), [100, 0]);
        // Without the penalty, load alone decides.
        let plain = table(
            BalanceConfig::default().error_penalty(0.0),
            vec![ProviderOptions::default(); 2],
        );
        for i in 0..2 {
            plain
                .endpoint(i)
                .health
                .observe_ttfb(Duration::from_millis(100));
        }
        plain
            .endpoint(1)
            .health
            .record(&Outcome::failure(FailureKind::Status(500)));
        let _h = plain.endpoint(0).health.start_request();
        assert_eq!(counts(&plain, 2, 100), [0, 100]);
        // The error rate fades with time: after a few decay constants the provider
        // is tried again.
        tokio::time::advance(Duration::from_secs(150)).await;
        assert_eq!(counts(&t, 2, 100), [0, 100]);
    }

    #[test]
    fn latency_buffer_makes_near_equals_equal() {
        let t = table(
            BalanceConfig::default().latency_buffer(0.2),
            vec![ProviderOptions::default(); 2],
        );
        t.endpoint(0)
            .health
            .observe_ttfb(Duration::from_millis(300));
        t.endpoint(1)
            .health
            .observe_ttfb(Duration::from_millis(330));
        let _g = t.endpoint(0).health.start_request();
        // Within 20 %: the in-flight request decides.
        assert_eq!(counts(&t, 2, 50), [0, 50]);
        let t = table(
            BalanceConfig::default().latency_buffer(0.0),
            vec![ProviderOptions::default(); 2],
        );
        t.endpoint(0)
            .health
            .observe_ttfb(Duration::from_millis(300));
        t.endpoint(1)
            .health
            .observe_ttfb(Duration::from_millis(330));
        assert_eq!(counts(&t, 2, 50), [50, 0]);
    }

    #[test]
    fn weights_scale_the_load() {
        let t = table(
            BalanceConfig::default().weighting(Weighting::Cost),
            vec![
                ProviderOptions::default().price_per_million(0.1),
                ProviderOptions::default().price_per_million(1.0),
            ],
        );
        // Nine in flight at the cheap one still beats one at the dear one.
        let _g: Vec<_> = (0..8)
            .map(|_| t.endpoint(0).health.start_request())
            .collect();
        assert_eq!(counts(&t, 2, 20), [20, 0]);
        let _h: Vec<_> = (0..4)
            .map(|_| t.endpoint(0).health.start_request())
            .collect();
        assert_eq!(counts(&t, 2, 20), [0, 20]);
    }

    #[tokio::test(start_paused = true)]
    async fn unavailable_and_tried_are_never_picked() {
        let t = table(
            BalanceConfig::default(),
            vec![ProviderOptions::default(); 5],
        );
        t.endpoint(1).health.force(Some(CircuitState::Open));
        t.endpoint(3)
            .health
            .mark_rate_limited(Duration::from_secs(5));
        let c = counts(&t, 5, 3000);
        assert_eq!((c[1], c[3]), (0, 0));
        assert!(c[0] > 700 && c[2] > 700 && c[4] > 700, "{c:?}");
    }

    #[test]
    fn cheapest_within_slack_of_the_best() {
        let t = table(
            BalanceConfig::default()
                .policy(Policy::Cheapest)
                .cheapest_within(Duration::from_millis(200)),
            vec![
                ProviderOptions::default().price_per_million(5.0),
                ProviderOptions::default().price_per_million(0.5),
                ProviderOptions::default().price_per_million(1.0),
            ],
        );
        for (i, ms) in [(0, 100), (1, 250), (2, 280)] {
            t.endpoint(i).health.observe_ttfb(Duration::from_millis(ms));
        }
        assert_eq!(counts(&t, 3, 10), [0, 10, 0]);
        // The cheap one slows beyond the slack: the next cheapest takes over.
        t.endpoint(1)
            .health
            .observe_ttfb(Duration::from_millis(900));
        assert_eq!(counts(&t, 3, 10), [0, 0, 10]);
    }

    #[test]
    fn round_robin_is_smooth_and_weighted() {
        let t = table(
            BalanceConfig::default().policy(Policy::RoundRobin),
            vec![
                ProviderOptions::default().weight(2.0),
                ProviderOptions::default(),
            ],
        );
        let route = t.route(&RequestAttrs::new());
        let mut rng = Rng::seeded(1);
        let tried = Tried::new(2);
        let admitted = Admitted::default();
        let seq: Vec<u32> = (0..6)
            .map(|_| {
                let pick = Pick {
                    tried: &tried,
                    admitted: &admitted,
                    now: &LazyNow::new(),
                    closed: false,
                };
                select(&t, &route, &mut rng, &pick).unwrap()
            })
            .collect();
        assert_eq!(seq, [0, 1, 0, 0, 1, 0]);
    }

    #[tokio::test(start_paused = true)]
    async fn available_agrees_with_core_in_every_state() {
        let mut all = Vec::new();
        for circuit in 0..5 {
            for quota in 0..3 {
                for ramp in 0..3 {
                    let h = Health::standalone(format!("c{circuit}q{quota}r{ramp}"), "m");
                    let now = Instant::now();
                    match circuit {
                        1 => drop(h.transition(
                            CircuitState::Closed,
                            CircuitState::Open,
                            Some(now + Duration::from_secs(10)),
                        )),
                        2 => drop(h.transition(
                            CircuitState::Closed,
                            CircuitState::Open,
                            Some(now + Duration::from_secs(1)),
                        )),
                        3 => h.force(Some(CircuitState::Open)),
                        4 => drop(h.transition(CircuitState::Closed, CircuitState::HalfOpen, None)),
                        _ => {}
                    }
                    match quota {
                        1 => drop(h.mark_rate_limited(Duration::from_secs(10))),
                        2 => drop(h.mark_rate_limited(Duration::from_secs(1))),
                        _ => {}
                    }
                    match ramp {
                        1 => h.set_ramp(Some(1), 500_000),
                        2 => h.set_ramp(Some(0), 0),
                        _ => {}
                    }
                    all.push(h);
                }
            }
        }
        for _ in 0..2 {
            for h in &all {
                assert_eq!(
                    available(h, &LazyNow::new()),
                    h.is_available(Instant::now()),
                    "{}",
                    h.id()
                );
            }
            // The one-second windows end.
            tokio::time::advance(Duration::from_secs(5)).await;
        }
    }

    proptest! {
        #[test]
        fn picks_only_eligible_and_finds_one_when_any(
            n in 1usize..200,
            tried_mask in proptest::collection::vec(any::<bool>(), 200),
            open_mask in proptest::collection::vec(any::<bool>(), 200),
            seed in any::<u64>(),
            policy in prop_oneof![Just(Policy::LeastLoaded), Just(Policy::Cheapest), Just(Policy::RoundRobin)],
        ) {
            let t = table(BalanceConfig::default().policy(policy), vec![ProviderOptions::default(); n]);
            let mut tried = Tried::new(n);
            let mut any = false;
            for i in 0..n {
                if tried_mask[i] { tried.insert(i as u32); }
                if open_mask[i] { t.endpoint(i as u32).health.force(Some(CircuitState::Open)); }
                any |= !tried_mask[i] && !open_mask[i];
            }
            let admitted = Admitted::default();
            let pick = Pick { tried: &tried, admitted: &admitted, now: &LazyNow::new(), closed: false };
            let route = t.route(&RequestAttrs::new());
            let mut rng = Rng::seeded(seed);
            match select(&t, &route, &mut rng, &pick) {
                Some(i) => {
                    prop_assert!(!tried_mask[i as usize] && !open_mask[i as usize]);
                }
                None => prop_assert!(!any),
            }
        }
    }
}
