//! Configuration of the recovery ramp and of the active probes.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Request, Uri};
use serde::Deserialize;
use tower_failover_core::duration_serde;
use tower_failover_core::health::FULL_SHARE_PPM;

/// A configuration value was refused (the one error type every tower-failover crate
/// uses for configuration).
pub use tower_failover_core::ConfigError;

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

    fn validate(&self) -> Result<(), ConfigError> {
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
    /// provider is not jumped to 100 % unverified. Default: 20.
    pub min_requests: u64,
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

/// Settings of the active probes (opt-in, see [`Prober`](crate::Prober)).
///
/// The default probe is `GET /v1/models` every 10 s with a 5 s timeout, only while
/// the provider's circuit is open. The URI may be a path (when the probed service
/// is a provider adapter that adds the base URL) or absolute (for a bare HTTP
/// client). Header values are never shown in `Debug`: they may hold API keys.
#[derive(Clone, PartialEq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProbeConfig {
    /// The probe's method. Default: `GET`.
    pub method: String,
    /// The probe's URI. Default: `/v1/models`, which costs nothing at OpenAI- and
    /// Anthropic-compatible providers.
    pub uri: String,
    /// Extra request headers.
    pub headers: BTreeMap<String, String>,
    /// The request body (empty by default).
    pub body: String,
    /// Time between probes. Default: 10 s.
    #[serde(with = "duration_serde")]
    pub interval: Duration,
    /// A probe that takes longer fails. Default: 5 s.
    #[serde(with = "duration_serde")]
    pub timeout: Duration,
    /// Also probe a closed provider that has had no requests for this long.
    /// Default: `None` (only open circuits are probed).
    #[serde(with = "duration_serde::option")]
    pub idle_after: Option<Duration>,
    /// Probe with a real tiny chat completion (`POST /v1/chat/completions`,
    /// `max_tokens = 8`, in the OpenAI shape that provider adapters translate)
    /// instead of `method`, `uri` and `body`: a model list can pass while
    /// completions fail. Costs one token per probe. Default: false.
    pub completion: bool,
}

/// The body of a tiny completion probe: at most 8 tokens, so that the answer has
/// some content (output validation refuses an empty one) whatever the tokenizer.
/// The provider adapter puts in its own model.
pub(crate) const COMPLETION_PROBE: &str =
    r#"{"model":"probe","messages":[{"role":"user","content":"ping"}],"max_tokens":8}"#;

impl fmt::Debug for ProbeConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProbeConfig")
            .field("method", &self.method)
            .field("uri", &self.uri)
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .field("body_len", &self.body.len())
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("idle_after", &self.idle_after)
            .field("completion", &self.completion)
            .finish()
    }
}

impl Default for ProbeConfig {
    fn default() -> Self {
        ProbeConfig {
            method: "GET".to_owned(),
            uri: "/v1/models".to_owned(),
            headers: BTreeMap::new(),
            body: String::new(),
            interval: Duration::from_secs(10),
            timeout: Duration::from_secs(5),
            idle_after: None,
            completion: false,
        }
    }
}

impl ProbeConfig {
    /// The default probe settings.
    pub fn new() -> Self {
        ProbeConfig::default()
    }

    /// Probes with this method and URI.
    pub fn request(mut self, method: impl Into<String>, uri: impl Into<String>) -> Self {
        self.method = method.into();
        self.uri = uri.into();
        self
    }

    /// Adds a request header.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }

    /// Sets the request body.
    pub fn body(mut self, body: impl Into<String>) -> Self {
        self.body = body.into();
        self
    }

    /// Sets [`interval`](Self::interval).
    pub fn interval(mut self, every: Duration) -> Self {
        self.interval = every;
        self
    }

    /// Sets [`timeout`](Self::timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Sets [`idle_after`](Self::idle_after).
    pub fn idle_after(mut self, quiet: Option<Duration>) -> Self {
        self.idle_after = quiet;
        self
    }

    /// Sets [`completion`](Self::completion).
    pub fn completion(mut self, yes: bool) -> Self {
        self.completion = yes;
        self
    }

    /// Refuses invalid values with an error naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.template().map(|_| ())
    }

    pub(crate) fn template(&self) -> Result<ProbeTemplate, ConfigError> {
        if self.completion {
            if !self.body.is_empty() {
                return Err(ConfigError::new(
                    "probe.body",
                    "set either `completion = true` or a body of your own",
                ));
            }
            let own = ProbeConfig {
                method: "POST".to_owned(),
                uri: "/v1/chat/completions".to_owned(),
                body: COMPLETION_PROBE.to_owned(),
                completion: false,
                ..self.clone()
            };
            let mut t = own.template()?;
            t.headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Ok(t);
        }
        let method = Method::from_bytes(self.method.as_bytes())
            .map_err(|_| ConfigError::new("probe.method", "is not an HTTP method"))?;
        let uri: Uri = self
            .uri
            .parse()
            .map_err(|e| ConfigError::new("probe.uri", format!("is not a URI: {e}")))?;
        let mut headers = HeaderMap::new();
        for (name, value) in &self.headers {
            let n = HeaderName::from_bytes(name.as_bytes()).map_err(|_| {
                ConfigError::new(format!("probe.headers.{name}"), "is not a header name")
            })?;
            // The value may be a secret: never echo it.
            let v = HeaderValue::from_str(value).map_err(|_| {
                ConfigError::new(
                    format!("probe.headers.{name}"),
                    "is not a valid header value",
                )
            })?;
            headers.insert(n, v);
        }
        for (field, d) in [
            ("probe.interval", self.interval),
            ("probe.timeout", self.timeout),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must not be zero"));
            }
        }
        if self.idle_after.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::new("probe.idle_after", "must not be zero"));
        }
        Ok(ProbeTemplate {
            method,
            uri,
            headers,
            body: Bytes::from(self.body.clone()),
        })
    }
}

/// A parsed probe request, cloned per probe.
#[derive(Clone)]
pub(crate) struct ProbeTemplate {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl ProbeTemplate {
    pub(crate) fn build<B: From<Bytes>>(&self) -> Request<B> {
        let mut req = Request::new(B::from(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }

    pub(crate) fn describe(&self) -> String {
        format!("{} {}", self.method, self.uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
