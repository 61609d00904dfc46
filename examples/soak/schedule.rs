//! The seeded chaos: which providers there are, and the fault schedule of each,
//! drawn from every fault the simulator knows. Same seed, same schedule.

use std::time::Duration;

use serde::Serialize;
use tower_failover_sim::{
    AbsurdHeaders, Billing, CutPoint, Fault, FaultKind, FaultSpec, Flavor, RetryAfter,
};

/// The soak's draws, on core's seedable generator (one generator in the project).
#[derive(Debug, Clone)]
pub(crate) struct Rng(tower_failover_core::rng::Rng);

impl Rng {
    pub(crate) fn seeded(seed: u64) -> Self {
        Rng(tower_failover_core::rng::Rng::seeded(seed))
    }

    /// Uniform in `[0, 1)`.
    pub(crate) fn unit(&mut self) -> f64 {
        self.0.f64()
    }

    /// Uniform in `lo..=hi`.
    pub(crate) fn range(&mut self, lo: u64, hi: u64) -> u64 {
        self.0.range(lo, hi)
    }

    /// A duration uniform in `[lo, hi]` seconds, to the millisecond.
    pub(crate) fn secs(&mut self, lo: f64, hi: f64) -> Duration {
        Duration::from_millis(((lo + (hi - lo) * self.unit()) * 1000.0) as u64)
    }

    pub(crate) fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    pub(crate) fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

/// One simulated provider of the soak.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct ProviderPlan {
    /// `p0`, `p1`, …: the entry's name and the tag on every word it writes.
    pub(crate) name: String,
    pub(crate) flavor: &'static str,
    #[serde(skip)]
    pub(crate) wire: Flavor,
    pub(crate) ttft_ms: u64,
    pub(crate) token_interval_ms: u64,
    /// Its faults, windows on the soak's clock (from the start of the load).
    pub(crate) faults: Vec<Planned>,
}

/// One fault window of the schedule.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Planned {
    pub(crate) kind: FaultKind,
    /// What it is, in words.
    pub(crate) fault: String,
    #[serde(serialize_with = "secs")]
    pub(crate) from: Duration,
    #[serde(serialize_with = "secs")]
    pub(crate) until: Duration,
    pub(crate) fraction: f64,
    #[serde(skip)]
    pub(crate) spec: Fault,
}

fn secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64((d.as_secs_f64() * 1000.0).round() / 1000.0)
}

impl Planned {
    /// The simulator's spec, its window moved onto a clock that read `offset` when
    /// the soak's started.
    pub(crate) fn spec(&self, offset: Duration) -> FaultSpec {
        FaultSpec::new(self.spec.clone())
            .window(offset + self.from, offset + self.until)
            .fraction(self.fraction)
    }

    /// Whether the window meets `[from, until]` (soak clock).
    pub(crate) fn overlaps(&self, from: Duration, until: Duration) -> bool {
        self.from <= until && from < self.until
    }
}

/// Draws one fault of `kind`, with random parameters.
fn draw(kind: FaultKind, rng: &mut Rng) -> Fault {
    match kind {
        FaultKind::Status => Fault::Status(*rng.pick(&[500, 502, 503, 504, 529])),
        FaultKind::Refuse => Fault::Refuse,
        FaultKind::Reset => Fault::Reset,
        FaultKind::Hang => Fault::Hang,
        FaultKind::Slowdown => Fault::Slowdown(*rng.pick(&[2.0, 5.0, 20.0, 100.0])),
        FaultKind::RateLimit => Fault::RateLimit(match rng.range(0, 2) {
            0 => RetryAfter::Seconds(rng.range(1, 5)),
            1 => RetryAfter::HttpDate(rng.range(1, 5)),
            _ => RetryAfter::Absent,
        }),
        FaultKind::MalformedJson => Fault::MalformedJson,
        FaultKind::ErrorObject => Fault::ErrorObject,
        FaultKind::Truncate => Fault::Truncate(rng.range(1, 6) as usize),
        FaultKind::Refusal => Fault::Refusal,
        FaultKind::WrongSchema => Fault::WrongSchema,
        FaultKind::NotJson => Fault::NotJson,
        FaultKind::EmptyContent => Fault::EmptyContent,
        FaultKind::Length => Fault::Length,
        FaultKind::Credential => Fault::Credential(*rng.pick(&[401, 403])),
        FaultKind::Billing => Fault::Billing(*rng.pick(&[
            Billing::Native,
            Billing::PaymentRequired,
            Billing::InsufficientQuota,
            Billing::CreditBalance,
        ])),
        FaultKind::Stall => Fault::Stall(CutPoint::new(
            rng.range(0, 5) as usize,
            rng.range(0, 200) as usize,
        )),
        FaultKind::ResetAfter => Fault::ResetAfter(CutPoint::new(
            rng.range(0, 5) as usize,
            rng.range(0, 200) as usize,
        )),
        FaultKind::Drip => Fault::Drip(Duration::from_millis(rng.range(50, 400))),
        FaultKind::HtmlPage => Fault::HtmlPage,
        FaultKind::EmptyBody => Fault::EmptyBody,
        FaultKind::AbsurdHeaders => Fault::AbsurdHeaders(AbsurdHeaders {
            value: None,
            count: rng.range(0, 200) as usize,
        }),
    }
}

/// The providers and their schedules for `seed`: `count` providers (3 to 5),
/// `p0` OpenAI and `p1` Anthropic, the others either. Each alternates healthy gaps
/// (5 to 30 s) with bursts of trouble (3 to 20 s) holding one to three overlapping
/// faults, from 3 s to `duration`. Every kind of fault the simulator knows is
/// dealt in turn (a shuffled deck per provider), so a long enough run sees them all.
pub(crate) fn plan(seed: u64, count: usize, duration: Duration) -> Vec<ProviderPlan> {
    let mut rng = Rng::seeded(seed);
    let mut deck: Vec<FaultKind> = Vec::new();
    (0..count)
        .map(|i| {
            let wire = match i {
                0 => Flavor::OpenAi,
                1 => Flavor::Anthropic,
                _ if rng.chance(0.5) => Flavor::OpenAi,
                _ => Flavor::Anthropic,
            };
            let mut faults = Vec::new();
            let mut t = Duration::from_secs(3) + rng.secs(0.0, 10.0);
            while t < duration {
                let burst = rng.secs(3.0, 20.0);
                let end = (t + burst).min(duration);
                for _ in 0..rng.range(1, 3) {
                    if deck.is_empty() {
                        deck = FaultKind::ALL.to_vec();
                        for k in (1..deck.len()).rev() {
                            deck.swap(k, rng.range(0, k as u64) as usize);
                        }
                    }
                    let kind = deck.pop().expect("a full deck");
                    let spec = draw(kind, &mut rng);
                    // A window inside the burst, at least a second long.
                    let span = end.saturating_sub(t);
                    let from = t + span.mul_f64(rng.unit() * 0.5);
                    let until = (from + span.mul_f64(0.3 + 0.7 * rng.unit()))
                        .min(end)
                        .max(from + Duration::from_secs(1));
                    let fraction = if rng.chance(0.5) {
                        1.0
                    } else {
                        (rng.range(30, 95) as f64) / 100.0
                    };
                    faults.push(Planned {
                        kind,
                        fault: spec.to_string(),
                        from,
                        until,
                        fraction,
                        spec,
                    });
                }
                t = end + rng.secs(5.0, 30.0);
            }
            ProviderPlan {
                name: format!("p{i}"),
                flavor: wire.as_str(),
                wire,
                ttft_ms: rng.range(20, 80),
                token_interval_ms: rng.range(1, 5),
                faults,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_one_schedule_and_every_spec_is_valid() {
        let a = plan(7, 5, Duration::from_secs(600));
        let b = plan(7, 5, Duration::from_secs(600));
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            serde_json::to_string(&b).unwrap()
        );
        let mut seen = std::collections::BTreeSet::new();
        for p in &a {
            for f in &p.faults {
                f.spec(Duration::from_secs(1)).validate().unwrap();
                assert!(f.until > f.from);
                seen.insert(f.kind);
            }
        }
        assert_eq!(
            seen.len(),
            FaultKind::ALL.len(),
            "ten minutes deal every fault"
        );
        assert_ne!(
            serde_json::to_string(&plan(8, 5, Duration::from_secs(600))).unwrap(),
            serde_json::to_string(&a).unwrap()
        );
    }
}
