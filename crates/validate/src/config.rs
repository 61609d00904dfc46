//! Configuration: limits, the streaming hold-back policy, and the built-in checks.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::checks::{
    DEFAULT_REFUSAL_PHRASES, ErrorObject, FinishReason, JsonSchema, Refusal, Shape, ValidJson,
};
#[cfg(doc)]
use crate::layer::ValidateLayer;
use crate::output::Wire;
use crate::validator::Validators;

/// Default limit on a buffered body: 8 MiB.
pub const DEFAULT_MAX_BODY: usize = 8 * 1024 * 1024;
/// Default limit on the held-back prefix of a stream: 64 KiB.
pub const DEFAULT_HOLD_LIMIT: usize = 64 * 1024;
/// Default limit on one line of a stream: 256 KiB.
pub const DEFAULT_MAX_LINE: usize = 256 * 1024;

/// How much of a stream is held back before the commit point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StreamHold {
    /// Hold back until the first content token (or refusal, or tool call) has arrived
    /// and every validator passes what it has seen: the time to first token grows by
    /// at most a few events. Checks of the whole answer (finish reason, JSON Schema)
    /// then run after the commit point and can only be reported. The default.
    #[default]
    FirstContent,
    /// Hold back the whole stream, up to the hold limit, and validate it complete
    /// before anything reaches the caller: a `length` finish or a schema mismatch
    /// still fails over. Streams longer than the limit commit when they reach it.
    /// Costs the whole generation time in time to first token.
    Complete,
}

/// What happens when a check fails after the commit point (a stream whose finish
/// reason or schema is only known at its end).
///
/// A broken event after the commit point (not JSON, or not the wire format's
/// shape, when a configured check says so) is not a check of the whole answer but
/// lost output: whatever the mode, it never reaches the caller, whose body ends
/// with the typed [`TruncatedStream`](tower_failover_core::error::TruncatedStream)
/// as for any stream that breaks, and the provider's health hears the rejection.
///
/// The mode decides only how the **caller's** body ends. The provider's health hears
/// the rejection in both: a validated stream's response carries a
/// [`LateVerdict`](tower_failover_core::LateVerdict) in its extensions, set when the
/// late check fails, and the layers above that judge a 2xx at the end of its body
/// (the observer, the circuit breaker, the ramp) count the
/// [`Rejected`](tower_failover_core::Outcome::Rejected) outcome of its kind instead
/// of a success. A malformed kind ([`RejectKind::is_malformed`]) counts as the
/// provider's failure by default, a content kind (a `length` finish, a schema
/// mismatch) stays neutral unless the circuit's `rejected_is_failure` says otherwise.
///
/// [`RejectKind::is_malformed`]: tower_failover_core::RejectKind::is_malformed
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterCommit {
    /// Log a warning (naming the kind, never the provider's text), count it in
    /// [`StatsSnapshot::late_rejected`](crate::StatsSnapshot), set the response's
    /// late verdict, and end the caller's body cleanly: the caller has the whole
    /// stream, `finish_reason` included, and can act on it. The default.
    #[default]
    Report,
    /// End the caller's body with the [`Invalid`](tower_failover_core::error::Invalid)
    /// error instead of a clean end, so a caller that does not read `finish_reason`
    /// still cannot mistake the answer for a good one.
    Error,
}

/// A configuration value was refused (the one error type every tower-failover crate
/// uses for configuration).
pub use tower_failover_core::ConfigError;

/// Which built-in checks to run, for configuration files. Build it into
/// [`Validators`] with [`Checks::build`]; for closures and custom validators use
/// [`Validators`] directly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Checks {
    /// [`ValidJson`]. Default: on.
    pub json: bool,
    /// [`ErrorObject`]. Default: on.
    pub error_object: bool,
    /// [`Shape`]. Default: on.
    pub shape: bool,
    /// [`Refusal`]. Default: on.
    pub refusal: bool,
    /// The refusal phrases; `None` uses [`DEFAULT_REFUSAL_PHRASES`], an empty list
    /// checks only the refusal field and stop reason.
    pub refusal_phrases: Option<Vec<String>>,
    /// [`FinishReason`]: the rejected finish / stop reasons; empty turns it off.
    /// Default: empty (off).
    ///
    /// An answer cut at a token limit is usually the answer the caller asked for:
    /// a caller who sets `max_tokens` gets `finish_reason: "length"` from every
    /// provider, so rejecting it would retry everywhere (paying for each) and end
    /// in an error. Turn the check on (`["length", "max_tokens"]`) to fail over on
    /// cuts the caller did not ask for, such as a provider's own default limit;
    /// even then, an answer to a request that set `max_tokens`,
    /// `max_completion_tokens` or `max_output_tokens` passes (see [`FinishReason`]).
    pub finish_reasons: Vec<String>,
    /// A JSON Schema the content must match ([`JsonSchema`]). Default: none.
    pub schema: Option<Value>,
}

impl Default for Checks {
    fn default() -> Self {
        Checks {
            json: true,
            error_object: true,
            shape: true,
            refusal: true,
            refusal_phrases: None,
            finish_reasons: Vec::new(),
            schema: None,
        }
    }
}

impl Checks {
    /// Builds the validators, in the order of the fields. Fails if the schema does
    /// not compile.
    pub fn build(&self) -> Result<Validators, ConfigError> {
        let mut v = Validators::new();
        if self.json {
            v.push(ValidJson);
        }
        if self.error_object {
            v.push(ErrorObject);
        }
        if self.shape {
            v.push(Shape);
        }
        if self.refusal {
            let r = match &self.refusal_phrases {
                Some(p) => Refusal::new().phrases(p),
                None => Refusal::new().phrases(DEFAULT_REFUSAL_PHRASES.iter().copied()),
            };
            v.push(r);
        }
        if !self.finish_reasons.is_empty() {
            v.push(FinishReason::new(self.finish_reasons.iter().cloned()));
        }
        if let Some(schema) = &self.schema {
            let s = JsonSchema::new(schema)
                .map_err(|e| ConfigError::new("checks.schema", e.to_string()))?;
            v.push(s);
        }
        Ok(v)
    }
}

/// Everything [`ValidateLayer`] can be told, as a plain deserializable struct.
///
/// ```
/// use tower_failover_validate::{StreamHold, ValidateConfig};
///
/// let cfg: ValidateConfig = serde_json::from_str(r#"{
///     "max_body": 1048576,
///     "hold": "complete",
///     "hold_limit": 32768,
///     "fail_after_rejections": 5,
///     "checks": {"finish_reasons": ["length"], "refusal_phrases": []}
/// }"#).unwrap();
/// assert_eq!(cfg.hold, StreamHold::Complete);
/// let layer = cfg.build().unwrap();
/// # let _ = layer;
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ValidateConfig {
    /// The largest buffered (non-streaming) body, in bytes; larger ones fail with
    /// [`BodyTooLarge`](tower_failover_core::error::BodyTooLarge) without being held
    /// in memory. Also caps the streamed content accumulated for late checks.
    /// Default: 8 MiB.
    pub max_body: usize,
    /// How much of a stream to hold back. Default: [`StreamHold::FirstContent`].
    pub hold: StreamHold,
    /// The most bytes of a stream held back before committing regardless. Default:
    /// 64 KiB. At most `max_body`.
    pub hold_limit: usize,
    /// The longest line accepted in a stream (one event's `data:` line). Default:
    /// 256 KiB.
    pub max_line: usize,
    /// The wire format; `None` (the default) detects it from each response.
    pub wire: Option<Wire>,
    /// What a failed check after the commit point does. Default:
    /// [`AfterCommit::Report`].
    pub after_commit: AfterCommit,
    /// After this many rejections in a row (no valid answer in between), rejections
    /// are returned as failures (a [`TransportError`](tower_failover_core::error::TransportError)
    /// of kind `Other` wrapping the [`Invalid`](tower_failover_core::error::Invalid)),
    /// so a circuit breaker counts them against the provider's health. `None` (the
    /// default): rejections never count against health.
    pub fail_after_rejections: Option<u32>,
    /// The built-in checks.
    pub checks: Checks,
}

impl Default for ValidateConfig {
    fn default() -> Self {
        ValidateConfig {
            max_body: DEFAULT_MAX_BODY,
            hold: StreamHold::FirstContent,
            hold_limit: DEFAULT_HOLD_LIMIT,
            max_line: DEFAULT_MAX_LINE,
            wire: None,
            after_commit: AfterCommit::Report,
            fail_after_rejections: None,
            checks: Checks::default(),
        }
    }
}

impl ValidateConfig {
    /// Refuses invalid values, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body == 0 {
            return Err(ConfigError::new("max_body", "must be at least 1 byte"));
        }
        if self.hold_limit == 0 {
            return Err(ConfigError::new("hold_limit", "must be at least 1 byte"));
        }
        if self.hold_limit > self.max_body {
            return Err(ConfigError::new(
                "hold_limit",
                format!(
                    "({}) must not exceed max_body ({})",
                    self.hold_limit, self.max_body
                ),
            ));
        }
        if self.max_line < 64 {
            return Err(ConfigError::new("max_line", "must be at least 64 bytes"));
        }
        if self.fail_after_rejections == Some(0) {
            return Err(ConfigError::new(
                "fail_after_rejections",
                "must be at least 1 (or absent to never count rejections as failures)",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_documented() {
        let cfg = ValidateConfig::default();
        cfg.validate().unwrap();
        assert_eq!(cfg.max_body, 8 * 1024 * 1024);
        // JSON, error object, shape, refusal: the truncation check is opt-in.
        assert_eq!(cfg.checks.build().unwrap().len(), 4);
        assert!(cfg.checks.finish_reasons.is_empty());
        let empty: ValidateConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(empty, cfg);
    }

    #[test]
    fn bad_values_name_their_field() {
        let cases: Vec<(ValidateConfig, &str)> = vec![
            (
                ValidateConfig {
                    max_body: 0,
                    ..Default::default()
                },
                "max_body",
            ),
            (
                ValidateConfig {
                    hold_limit: 0,
                    ..Default::default()
                },
                "hold_limit",
            ),
            (
                ValidateConfig {
                    max_body: 10,
                    hold_limit: 11,
                    ..Default::default()
                },
                "hold_limit",
            ),
            (
                ValidateConfig {
                    max_line: 1,
                    ..Default::default()
                },
                "max_line",
            ),
            (
                ValidateConfig {
                    fail_after_rejections: Some(0),
                    ..Default::default()
                },
                "fail_after_rejections",
            ),
            (
                ValidateConfig {
                    checks: Checks {
                        schema: Some(serde_json::json!({"type": 5})),
                        ..Default::default()
                    },
                    ..Default::default()
                },
                "checks.schema",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.build().unwrap_err();
            assert_eq!(err.field(), field);
            assert!(err.to_string().contains(field));
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<ValidateConfig>(r#"{"max_bodyy": 1}"#).unwrap_err();
        assert!(err.to_string().contains("max_bodyy"));
    }

    #[test]
    fn checks_can_be_switched_off() {
        let c = Checks {
            json: false,
            error_object: false,
            shape: false,
            refusal: false,
            refusal_phrases: None,
            finish_reasons: vec![],
            schema: Some(serde_json::json!({"type": "object"})),
        };
        assert_eq!(c.build().unwrap().len(), 1);
        assert!(serde_json::from_str::<Checks>(r#"{"jsn": false}"#).is_err());
    }
}
