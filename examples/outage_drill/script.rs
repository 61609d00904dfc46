//! The drill's script: phases, their faults, and the (compressed) recovery timings.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tower_failover_core::duration_serde;
use tower_failover_sim::FaultSpec;

/// The names of the three providers, in the fallback order.
pub(crate) const PROVIDERS: [&str; 3] = ["primary", "secondary", "tertiary"];

/// The script the drill runs without `--script`.
pub(crate) const DEFAULT_SCRIPT: &str = include_str!("default.toml");

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Script {
    /// Requests per second (overridden by `--rps`).
    #[serde(default = "default_rps")]
    pub(crate) rps: u32,
    /// What `--quick` multiplies every duration by.
    #[serde(default = "default_quick_scale")]
    pub(crate) quick_scale: f64,
    #[serde(default)]
    pub(crate) timings: Timings,
    #[serde(rename = "phase")]
    pub(crate) phases: Vec<Phase>,
}

fn default_rps() -> u32 {
    200
}

fn default_quick_scale() -> f64 {
    0.25
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct Timings {
    #[serde(with = "duration_serde")]
    pub(crate) attempt_timeout: Duration,
    #[serde(with = "duration_serde")]
    pub(crate) request_deadline: Duration,
    #[serde(with = "duration_serde")]
    pub(crate) circuit_cooldown: Duration,
    pub(crate) ramp_shares: Vec<f64>,
    #[serde(with = "duration_serde")]
    pub(crate) ramp_step: Duration,
}

impl Default for Timings {
    fn default() -> Self {
        Timings {
            attempt_timeout: Duration::from_secs(2),
            request_deadline: Duration::from_secs(5),
            circuit_cooldown: Duration::from_millis(1500),
            ramp_shares: vec![0.05, 0.25, 0.5, 1.0],
            ramp_step: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Phase {
    pub(crate) name: String,
    #[serde(with = "duration_serde")]
    pub(crate) duration: Duration,
    /// Provider name → faults, with windows relative to the phase's start.
    #[serde(default)]
    pub(crate) faults: BTreeMap<String, Vec<FaultSpec>>,
}

impl Phase {
    /// Whether some provider has no fault in this phase.
    pub(crate) fn has_healthy_provider(&self) -> bool {
        PROVIDERS
            .iter()
            .any(|p| self.faults.get(*p).is_none_or(|f| f.is_empty()))
    }
}

impl Script {
    pub(crate) fn load(path: Option<&Path>) -> Result<Script, String> {
        let (text, origin) = match path {
            Some(p) => (
                std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?,
                p.display().to_string(),
            ),
            None => (DEFAULT_SCRIPT.to_owned(), "the default script".to_owned()),
        };
        let script: Script = toml::from_str(&text).map_err(|e| format!("{origin}: {e}"))?;
        script.validate().map_err(|e| format!("{origin}: {e}"))?;
        Ok(script)
    }

    fn validate(&self) -> Result<(), String> {
        if self.phases.is_empty() {
            return Err("`phase`: the script has no phases".into());
        }
        if !(1..=20_000).contains(&self.rps) {
            return Err(format!("`rps`: {} is not in 1..=20000", self.rps));
        }
        if !(self.quick_scale > 0.0 && self.quick_scale <= 1.0) {
            return Err(format!(
                "`quick_scale`: {} is not in (0, 1]",
                self.quick_scale
            ));
        }
        let t = &self.timings;
        if t.ramp_shares.is_empty()
            || t.ramp_shares.iter().any(|s| !(*s > 0.0 && *s <= 1.0))
            || t.ramp_shares.windows(2).any(|w| w[0] >= w[1])
        {
            return Err("`timings.ramp_shares`: must rise strictly within (0, 1]".into());
        }
        for (name, d) in [
            ("timings.attempt_timeout", t.attempt_timeout),
            ("timings.request_deadline", t.request_deadline),
            ("timings.circuit_cooldown", t.circuit_cooldown),
            ("timings.ramp_step", t.ramp_step),
        ] {
            if d.is_zero() {
                return Err(format!("`{name}`: must be more than zero"));
            }
        }
        for (i, phase) in self.phases.iter().enumerate() {
            if phase.duration < Duration::from_millis(100) {
                return Err(format!("`phase[{i}].duration`: shorter than 100 ms"));
            }
            for (provider, specs) in &phase.faults {
                if !PROVIDERS.contains(&provider.as_str()) {
                    return Err(format!(
                        "`phase[{i}].faults.{provider}`: unknown provider (expected one of {PROVIDERS:?})"
                    ));
                }
                for spec in specs {
                    spec.validate()
                        .map_err(|e| format!("`phase[{i}].faults.{provider}`: {e}"))?;
                }
            }
        }
        Ok(())
    }

    /// Every duration multiplied by `scale` (for `--quick`).
    pub(crate) fn scaled(mut self, scale: f64) -> Script {
        let s = |d: Duration| d.mul_f64(scale);
        let t = &mut self.timings;
        // The per-attempt timeout and the caller's deadline describe the providers,
        // not the timeline: they stay as they are.
        t.circuit_cooldown = s(t.circuit_cooldown);
        t.ramp_step = s(t.ramp_step);
        for phase in &mut self.phases {
            phase.duration = s(phase.duration);
            for specs in phase.faults.values_mut() {
                for spec in specs {
                    spec.from = spec.from.map(s);
                    spec.until = spec.until.map(s);
                }
            }
        }
        self
    }

    pub(crate) fn total(&self) -> Duration {
        self.phases.iter().map(|p| p.duration).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_script_loads_and_has_healthy_providers() {
        let s = Script::load(None).unwrap();
        assert_eq!(s.phases.len(), 7);
        assert!(s.phases.iter().all(Phase::has_healthy_provider));
        let q = s.clone().scaled(s.quick_scale);
        assert!(q.total() < s.total() / 3);
    }

    #[test]
    fn the_revoked_key_phase_comes_last() {
        use tower_failover_sim::Fault;
        let s = Script::load(None).unwrap();
        let (last, before) = s.phases.split_last().unwrap();
        let primary = &last.faults["primary"];
        assert!(matches!(primary[..], [ref f] if f.fault == Fault::Credential(401)));
        let secondary = &last.faults["secondary"];
        assert!(!secondary.is_empty());
        assert!(
            secondary
                .iter()
                .all(|f| matches!(f.fault, Fault::ResetAfter(_)))
        );
        assert!(!last.faults.contains_key("tertiary"));
        // The credential failure's long cooldown must not overlap the recovery phases.
        assert!(before.iter().all(|p| {
            p.faults
                .values()
                .flatten()
                .all(|f| !matches!(f.fault, Fault::Credential(_)))
        }));
    }
}
