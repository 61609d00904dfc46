//! The shape of a ramp: its steps, or a curve sampled into steps.

use std::time::Duration;

use serde::Deserialize;
use tower_failover_core::ConfigError;
use tower_failover_core::duration_serde;
use tower_failover_core::health::FULL_SHARE_PPM;

/// One step of a ramp: admit `share` of the requests for at least `hold`.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// The share of requests admitted, in `(0, 1]`.
    pub share: f64,
    /// The least time spent at this step (`"5m"`, `"200ms"`, or seconds).
    #[serde(with = "duration_serde")]
    pub hold: Duration,
}

impl Step {
    /// A step admitting `share` of the requests for at least `hold`.
    pub const fn new(share: f64, hold: Duration) -> Self {
        Step { share, hold }
    }
}

/// The shape of a continuous ramp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CurveShape {
    /// The share grows by the same amount at every point.
    Linear,
    /// The share grows by the same factor at every point (slow at first, which
    /// suits a provider whose first minutes back are the riskiest).
    Exponential,
}

/// A continuous ramp from `start` to 100 % over `duration`, followed as `points`
/// equal steps (the share is updated every `duration / points`).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Curve {
    /// Linear or exponential.
    pub shape: CurveShape,
    /// The share at the first point, in `(0, 1)`.
    pub start: f64,
    /// The whole ramp's length.
    #[serde(with = "duration_serde")]
    pub duration: Duration,
    /// How many points (steps) the curve is followed with, `2..=1000`. The last one
    /// admits 100 %.
    pub points: u32,
}

impl Curve {
    /// A curve with the given shape, start share, length and number of points.
    pub const fn new(shape: CurveShape, start: f64, duration: Duration, points: u32) -> Self {
        Curve {
            shape,
            start,
            duration,
            points,
        }
    }

    fn steps(&self) -> Vec<Step> {
        let n = self.points.max(2);
        let hold = self.duration / n;
        (0..n)
            .map(|i| {
                let t = f64::from(i) / f64::from(n - 1);
                let share = match self.shape {
                    CurveShape::Linear => self.start + (1.0 - self.start) * t,
                    CurveShape::Exponential => self.start * (1.0 / self.start).powf(t),
                };
                let share = if i == n - 1 { 1.0 } else { share.min(1.0) };
                Step { share, hold }
            })
            .collect()
    }
}

/// How the share grows: explicit steps, or a curve.
///
/// In TOML: `schedule = { steps = [{ share = 0.05, hold = "5m" }, …] }` or
/// `schedule = { curve = { shape = "linear", start = 0.05, duration = "20m", points = 20 } }`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Schedule {
    /// These steps, in order.
    Steps(Vec<Step>),
    /// A continuous curve, followed in equal steps.
    Curve(Curve),
}

impl Default for Schedule {
    /// 5 %, 25 %, 50 %, 100 %, five minutes each.
    fn default() -> Self {
        let five = Duration::from_secs(300);
        Schedule::Steps(vec![
            Step::new(0.05, five),
            Step::new(0.25, five),
            Step::new(0.50, five),
            Step::new(1.00, five),
        ])
    }
}

impl Schedule {
    /// The steps this schedule is followed with.
    pub fn steps(&self) -> Vec<Step> {
        match self {
            Schedule::Steps(s) => s.clone(),
            Schedule::Curve(c) => c.steps(),
        }
    }

    /// The least time the whole ramp takes (the sum of the holds).
    pub fn duration(&self) -> Duration {
        self.steps().iter().map(|s| s.hold).sum()
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        match self {
            Schedule::Steps(steps) => {
                if steps.is_empty() {
                    return Err(ConfigError::new("schedule.steps", "must not be empty"));
                }
                if steps.len() > 1000 {
                    return Err(ConfigError::new(
                        "schedule.steps",
                        "has more than 1000 steps",
                    ));
                }
                let mut prev = 0.0;
                for (i, s) in steps.iter().enumerate() {
                    if !(s.share.is_finite() && s.share > 0.0 && s.share <= 1.0) {
                        return Err(ConfigError::new(
                            format!("schedule.steps[{i}].share"),
                            format!("must be in (0, 1], got {}", s.share),
                        ));
                    }
                    if s.share < prev {
                        return Err(ConfigError::new(
                            format!("schedule.steps[{i}].share"),
                            "must not be below the previous step's share",
                        ));
                    }
                    prev = s.share;
                }
                Ok(())
            }
            Schedule::Curve(c) => {
                if !(c.start.is_finite() && c.start > 0.0 && c.start < 1.0) {
                    return Err(ConfigError::new(
                        "schedule.curve.start",
                        format!("must be in (0, 1), got {}", c.start),
                    ));
                }
                if !(2..=1000).contains(&c.points) {
                    return Err(ConfigError::new(
                        "schedule.curve.points",
                        format!("must be in 2..=1000, got {}", c.points),
                    ));
                }
                if c.duration.is_zero() {
                    return Err(ConfigError::new(
                        "schedule.curve.duration",
                        "must not be zero",
                    ));
                }
                Ok(())
            }
        }
    }
}

/// A step resolved for the driver: the share in parts per million.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PpmStep {
    pub(crate) share: f64,
    pub(crate) ppm: u32,
    pub(crate) hold: Duration,
}

pub(crate) fn ppm_steps(schedule: &Schedule) -> Vec<PpmStep> {
    schedule
        .steps()
        .into_iter()
        .map(|s| PpmStep {
            share: s.share,
            ppm: ((s.share * f64::from(FULL_SHARE_PPM)).round() as u32).clamp(1, FULL_SHARE_PPM),
            hold: s.hold,
        })
        .collect()
}
