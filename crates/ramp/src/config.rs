//! Configuration of the recovery ramp (its schedule is in `schedule.rs`, the
//! probes' in `probe_config.rs`).

use std::time::Duration;

use serde::Deserialize;
use tower_failover_core::duration_serde;

use crate::schedule::{Curve, Schedule, Step};

/// A configuration value was refused (the one error type every tower-failover crate
/// uses for configuration).
pub use tower_failover_core::ConfigError;

/// Settings of the recovery ramp.
///
/// Plain fields with [`Default`]s, builder methods of the same names, and `serde`
/// support so a gateway can load it from TOML or JSON (durations accept `"30s"`,
/// `"500ms"` or a number of seconds). [`validate`](RampConfig::validate) refuses
/// invalid values with an error naming the field.
///
/// ```
/// use std::time::Duration;
/// use tower_failover_ramp::RampConfig;
///
/// let config: RampConfig = toml::from_str(r#"
///     min_requests = 50
///     cooldown = "30s"
///     schedule = { steps = [
///         { share = 0.1, hold = "2m" },
///         { share = 0.5, hold = "2m" },
///         { share = 1.0, hold = "1m" },
///     ] }
/// "#).unwrap();
/// config.validate().unwrap();
/// assert_eq!(config.schedule.duration(), Duration::from_secs(300));
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RampConfig {
    /// How the share grows after the circuit closes. Default: 5 %, 25 %, 50 %,
    /// 100 %, five minutes each.
    pub schedule: Schedule,
    /// Admitted requests with a counted outcome (success, failure or client error)
    /// a step needs, on top of its hold time, before the ramp advances: a quiet
    /// provider is not jumped to 100 % unverified. Default: 20. At traffic too low
    /// to bring them (a 5 % step of one request a minute would wait hours), see
    /// [`quiet_wait`](Self::quiet_wait).
    pub min_requests: u64,
    /// How much longer than its hold time a step waits for `min_requests`: past
    /// it, the step advances if none of the requests it did see failed (its
    /// verdict is then the circuit breaker's, which still opens on failures).
    /// Default: 5 minutes, so a ramp of the default schedule takes 20 minutes under
    /// steady traffic and at most 40 at any traffic.
    #[serde(with = "duration_serde")]
    pub quiet_wait: Duration,
    /// Counted outcomes a step needs before its error rate is judged. Default: 20.
    pub min_sample: u64,
    /// A step rolls back when its error rate exceeds the provider's baseline error
    /// rate times this factor (bounded by `min_error_rate` and `max_error_rate`).
    /// Default: 2.
    pub error_rate_factor: f64,
    /// The threshold is never below this error rate, so a provider with a spotless
    /// baseline is not rolled back for one unlucky request. Default: 0.1.
    pub min_error_rate: f64,
    /// The threshold is never above this error rate, however bad the baseline.
    /// Default: 0.5.
    pub max_error_rate: f64,
    /// After a step's hold time, how often the ramp checks whether the step has
    /// seen `min_requests`. Default: 1 s. (Failures are checked at once.)
    #[serde(with = "duration_serde")]
    pub check_interval: Duration,
    /// The window over which the baseline error rate is measured while the
    /// provider is healthy (closed circuit, no ramp). Default: 60 s.
    #[serde(with = "duration_serde")]
    pub baseline_window: Duration,
    /// The base cooldown, doubled per consecutive trip, as the circuit breaker's.
    /// Default: 30 s.
    #[serde(with = "duration_serde")]
    pub cooldown: Duration,
    /// The cooldown never grows beyond this. Default: 5 min.
    #[serde(with = "duration_serde")]
    pub max_cooldown: Duration,
    /// Whether requests beyond the share are shed with
    /// [`Shed`](tower_failover_core::error::Shed) (default). Turn it off when a
    /// share-aware router (such as tower-failover-balance) already routes by
    /// [`Health::ramp_share`](tower_failover_core::Health::ramp_share): the ramp then
    /// only drives and checks the schedule, and requests are not thinned twice.
    pub shed: bool,
    /// Seed of the admission sequence, for replayable tests. Default: random.
    pub seed: Option<u64>,
}

impl Default for RampConfig {
    fn default() -> Self {
        RampConfig {
            schedule: Schedule::default(),
            min_requests: 20,
            quiet_wait: Duration::from_secs(300),
            min_sample: 20,
            error_rate_factor: 2.0,
            min_error_rate: 0.1,
            max_error_rate: 0.5,
            check_interval: Duration::from_secs(1),
            baseline_window: Duration::from_secs(60),
            cooldown: Duration::from_secs(30),
            max_cooldown: Duration::from_secs(300),
            shed: true,
            seed: None,
        }
    }
}

impl RampConfig {
    /// The default configuration.
    pub fn new() -> Self {
        RampConfig::default()
    }

    /// Follows these steps.
    pub fn steps(mut self, steps: impl IntoIterator<Item = Step>) -> Self {
        self.schedule = Schedule::Steps(steps.into_iter().collect());
        self
    }

    /// Follows this curve.
    pub fn curve(mut self, curve: Curve) -> Self {
        self.schedule = Schedule::Curve(curve);
        self
    }

    /// Sets [`min_requests`](Self::min_requests).
    pub fn min_requests(mut self, n: u64) -> Self {
        self.min_requests = n;
        self
    }

    /// Sets [`quiet_wait`](Self::quiet_wait).
    pub fn quiet_wait(mut self, wait: Duration) -> Self {
        self.quiet_wait = wait;
        self
    }

    /// Sets [`min_sample`](Self::min_sample).
    pub fn min_sample(mut self, n: u64) -> Self {
        self.min_sample = n;
        self
    }

    /// Sets [`error_rate_factor`](Self::error_rate_factor).
    pub fn error_rate_factor(mut self, factor: f64) -> Self {
        self.error_rate_factor = factor;
        self
    }

    /// Sets [`min_error_rate`](Self::min_error_rate).
    pub fn min_error_rate(mut self, rate: f64) -> Self {
        self.min_error_rate = rate;
        self
    }

    /// Sets [`max_error_rate`](Self::max_error_rate).
    pub fn max_error_rate(mut self, rate: f64) -> Self {
        self.max_error_rate = rate;
        self
    }

    /// Sets [`check_interval`](Self::check_interval).
    pub fn check_interval(mut self, every: Duration) -> Self {
        self.check_interval = every;
        self
    }

    /// Sets [`baseline_window`](Self::baseline_window).
    pub fn baseline_window(mut self, window: Duration) -> Self {
        self.baseline_window = window;
        self
    }

    /// Sets the base and the largest cooldown.
    pub fn cooldown(mut self, base: Duration, max: Duration) -> Self {
        self.cooldown = base;
        self.max_cooldown = max;
        self
    }

    /// Sets [`shed`](Self::shed).
    pub fn shed(mut self, shed: bool) -> Self {
        self.shed = shed;
        self
    }

    /// Sets [`seed`](Self::seed).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = Some(seed);
        self
    }

    /// The cooldown after the `trips`-th consecutive trip: `cooldown × 2^(trips-1)`,
    /// at most `max_cooldown` (the circuit breaker's rule).
    pub fn cooldown_for(&self, trips: u32) -> Duration {
        let doublings = trips.saturating_sub(1).min(30);
        self.cooldown
            .saturating_mul(1u32 << doublings)
            .min(self.max_cooldown)
    }

    /// The error rate above which a step rolls back, given the provider's baseline
    /// error rate (`None` when not measured yet).
    pub fn threshold(&self, baseline: Option<f64>) -> f64 {
        let scaled = baseline.unwrap_or(0.0) * self.error_rate_factor;
        scaled.max(self.min_error_rate).min(self.max_error_rate)
    }

    /// Refuses invalid values with an error naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.schedule.validate()?;
        if self.min_sample == 0 {
            return Err(ConfigError::new("min_sample", "must be at least 1"));
        }
        if !(self.error_rate_factor.is_finite() && self.error_rate_factor >= 0.0) {
            return Err(ConfigError::new(
                "error_rate_factor",
                format!(
                    "must be a finite number >= 0, got {}",
                    self.error_rate_factor
                ),
            ));
        }
        if !(self.min_error_rate.is_finite() && (0.0..=1.0).contains(&self.min_error_rate)) {
            return Err(ConfigError::new(
                "min_error_rate",
                format!("must be in [0, 1], got {}", self.min_error_rate),
            ));
        }
        if !(self.max_error_rate.is_finite()
            && (self.min_error_rate..=1.0).contains(&self.max_error_rate))
        {
            return Err(ConfigError::new(
                "max_error_rate",
                format!(
                    "must be in [min_error_rate, 1], got {}",
                    self.max_error_rate
                ),
            ));
        }
        for (field, d) in [
            ("check_interval", self.check_interval),
            ("baseline_window", self.baseline_window),
            ("cooldown", self.cooldown),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must not be zero"));
            }
        }
        if self.max_cooldown < self.cooldown {
            return Err(ConfigError::new(
                "max_cooldown",
                "must not be below cooldown",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::{Method, Request};

    use super::*;
    use crate::probe_config::ProbeConfig;
    use crate::schedule::{CurveShape, ppm_steps};

    #[test]
    fn default_is_the_twenty_minute_ramp() {
        let c = RampConfig::default();
        c.validate().unwrap();
        assert_eq!(c.schedule.duration(), Duration::from_secs(1200));
        let shares: Vec<u32> = ppm_steps(&c.schedule).iter().map(|s| s.ppm).collect();
        assert_eq!(shares, [50_000, 250_000, 500_000, 1_000_000]);
    }

    #[test]
    fn cooldown_doubles_and_caps() {
        let c = RampConfig::default();
        let got: Vec<u64> = (0..8).map(|t| c.cooldown_for(t).as_secs()).collect();
        assert_eq!(got, [30, 30, 60, 120, 240, 300, 300, 300]);
        assert_eq!(c.cooldown_for(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn threshold_is_relative_to_the_baseline_within_bounds() {
        let c = RampConfig::default();
        assert_eq!(c.threshold(None), 0.1);
        assert_eq!(c.threshold(Some(0.01)), 0.1);
        assert!((c.threshold(Some(0.08)) - 0.16).abs() < 1e-12);
        assert_eq!(c.threshold(Some(0.9)), 0.5);
    }

    #[test]
    fn curves_end_at_full_share() {
        for shape in [CurveShape::Linear, CurveShape::Exponential] {
            let s = Schedule::Curve(Curve::new(shape, 0.05, Duration::from_secs(600), 10));
            s.validate().unwrap();
            let steps = s.steps();
            assert_eq!(steps.len(), 10);
            assert!((steps[0].share - 0.05).abs() < 1e-12);
            assert_eq!(steps[9].share, 1.0);
            assert!(steps.windows(2).all(|w| w[0].share < w[1].share));
            assert_eq!(s.duration(), Duration::from_secs(600));
        }
    }

    #[test]
    fn invalid_values_name_their_field() {
        let cases: Vec<(RampConfig, &str)> = vec![
            (RampConfig::new().steps([]), "schedule.steps"),
            (
                RampConfig::new().steps([
                    Step::new(0.5, Duration::from_secs(1)),
                    Step::new(0.2, Duration::from_secs(1)),
                ]),
                "schedule.steps[1].share",
            ),
            (
                RampConfig::new().steps([Step::new(f64::NAN, Duration::from_secs(1))]),
                "schedule.steps[0].share",
            ),
            (
                RampConfig::new().steps([Step::new(1.5, Duration::from_secs(1))]),
                "schedule.steps[0].share",
            ),
            (
                RampConfig::new().curve(Curve::new(
                    CurveShape::Linear,
                    0.0,
                    Duration::from_secs(1),
                    5,
                )),
                "schedule.curve.start",
            ),
            (
                RampConfig::new().curve(Curve::new(
                    CurveShape::Linear,
                    0.1,
                    Duration::from_secs(1),
                    1,
                )),
                "schedule.curve.points",
            ),
            (RampConfig::new().min_sample(0), "min_sample"),
            (
                RampConfig::new().error_rate_factor(-1.0),
                "error_rate_factor",
            ),
            (RampConfig::new().min_error_rate(2.0), "min_error_rate"),
            (
                RampConfig::new().min_error_rate(0.3).max_error_rate(0.2),
                "max_error_rate",
            ),
            (
                RampConfig::new().check_interval(Duration::ZERO),
                "check_interval",
            ),
            (
                RampConfig::new().cooldown(Duration::from_secs(60), Duration::from_secs(10)),
                "max_cooldown",
            ),
        ];
        for (config, field) in cases {
            let err = config.validate().unwrap_err();
            assert_eq!(err.field(), field, "{err}");
            assert!(err.to_string().contains(field));
        }
    }

    #[test]
    fn loads_from_json_with_duration_strings() {
        let c: RampConfig = serde_json::from_str(
            r#"{"schedule": {"curve": {"shape": "exponential", "start": 0.02, "duration": "10m", "points": 5}},
                "cooldown": "45s", "max_cooldown": 600, "shed": false, "seed": 9}"#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.cooldown, Duration::from_secs(45));
        assert_eq!(c.max_cooldown, Duration::from_secs(600));
        assert!(!c.shed);
        assert_eq!(c.schedule.steps().len(), 5);
        assert!(serde_json::from_str::<RampConfig>(r#"{"speed": 3}"#).is_err());
    }

    #[test]
    fn probe_config_parses_and_hides_header_values() {
        let p: ProbeConfig = toml::from_str(
            r#"
            method = "POST"
            uri = "http://127.0.0.1:1/v1/chat/completions"
            body = "{}"
            interval = "2s"
            timeout = "500ms"
            idle_after = "1m"
            headers = { authorization = "Bearer sk-secret" }
            "#,
        )
        .unwrap();
        p.validate().unwrap();
        let shown = format!("{p:?}");
        assert!(shown.contains("authorization"));
        assert!(!shown.contains("sk-secret"), "{shown}");
        let req: Request<String> = p
            .template()
            .unwrap()
            .build::<Bytes>()
            .map(|b| String::from_utf8(b.to_vec()).unwrap());
        assert_eq!(req.method(), Method::POST);
        assert_eq!(req.body(), "{}");
        assert_eq!(req.headers()["authorization"], "Bearer sk-secret");

        let bad = ProbeConfig::new().header("x", "line\nbreak");
        let err = bad.validate().unwrap_err();
        assert_eq!(err.field(), "probe.headers.x");
        assert!(!err.to_string().contains("line"));
        assert_eq!(
            ProbeConfig::new()
                .request("G E T", "/")
                .validate()
                .unwrap_err()
                .field(),
            "probe.method"
        );
        assert_eq!(
            ProbeConfig::new()
                .request("GET", "not a uri")
                .validate()
                .unwrap_err()
                .field(),
            "probe.uri"
        );
        assert_eq!(
            ProbeConfig::new()
                .timeout(Duration::ZERO)
                .validate()
                .unwrap_err()
                .field(),
            "probe.timeout"
        );
    }
}
