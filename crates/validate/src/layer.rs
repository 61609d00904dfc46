//! [`ValidateLayer`]: wraps a per-provider service with output validation.

use std::fmt;
use std::sync::Arc;

use tower_failover_core::ProviderId;
use tower_layer::Layer;

use crate::config::{AfterCommit, ConfigError, StreamHold, ValidateConfig};
#[cfg(doc)]
use crate::error::RepeatedRejections;
use crate::output::Wire;
use crate::service::Validate;
use crate::shared::Shared;
use crate::stats::ValidateStats;
use crate::validator::{Validator, Validators};
#[cfg(doc)]
use tower_failover_core::error::Invalid;
use tower_failover_core::sse::SseLimits;

/// Validates every success response of the wrapped service, buffered or streamed,
/// and turns unusable output into an [`Invalid`] error (a `Rejected` outcome that
/// routers retry on another provider).
///
/// See the [crate docs](crate) for the model. Cloning the layer shares its
/// [`stats`](ValidateLayer::stats); make one layer per provider to count per provider.
#[derive(Clone)]
pub struct ValidateLayer {
    validator: Arc<dyn Validator>,
    max_body: usize,
    hold: StreamHold,
    hold_limit: usize,
    sse: SseLimits,
    wire: Option<Wire>,
    after_commit: AfterCommit,
    fail_after: Option<u32>,
    provider: Option<ProviderId>,
    stats: ValidateStats,
}

impl fmt::Debug for ValidateLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidateLayer")
            .field("max_body", &self.max_body)
            .field("hold", &self.hold)
            .field("hold_limit", &self.hold_limit)
            .field("max_line", &self.sse.max_line)
            .field("wire", &self.wire)
            .field("after_commit", &self.after_commit)
            .field("fail_after_rejections", &self.fail_after)
            .field("provider", &self.provider)
            .finish_non_exhaustive()
    }
}

impl ValidateLayer {
    /// Validates with `validator` and the default limits (see [`ValidateConfig`]).
    pub fn new(validator: impl Validator) -> Self {
        let d = ValidateConfig::default();
        ValidateLayer {
            validator: Arc::new(validator),
            max_body: d.max_body,
            hold: d.hold,
            hold_limit: d.hold_limit,
            sse: SseLimits {
                max_line: d.max_line,
                max_event: d.max_body,
            },
            wire: d.wire,
            after_commit: d.after_commit,
            fail_after: d.fail_after_rejections,
            provider: None,
            stats: ValidateStats::new(),
        }
    }

    /// The default checks for LLM APIs ([`Validators::llm`]) with the default limits.
    pub fn llm() -> Self {
        ValidateLayer::new(Validators::llm())
    }

    /// Validates with `validator` and every other setting from `config`; an invalid
    /// `config` is refused with an error naming the field (never replaced by the
    /// default). `config.checks` is not read: the checks are `validator` (use
    /// [`ValidateConfig::build`] to build the configured checks too).
    pub fn with_config(
        validator: impl Validator,
        config: &ValidateConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(ValidateLayer::new(validator).settings(config))
    }

    fn settings(mut self, config: &ValidateConfig) -> Self {
        self.max_body = config.max_body;
        self.hold = config.hold;
        self.hold_limit = config.hold_limit;
        self.sse = SseLimits {
            max_line: config.max_line,
            max_event: config.max_body,
        };
        self.wire = config.wire;
        self.after_commit = config.after_commit;
        self.fail_after = config.fail_after_rejections;
        self
    }

    /// The largest buffered body, in bytes (default 8 MiB; at least 1).
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.max_body = bytes.max(1);
        self.sse.max_event = self.max_body;
        self
    }

    /// How much of a stream to hold back (default [`StreamHold::FirstContent`]).
    pub fn hold(mut self, hold: StreamHold) -> Self {
        self.hold = hold;
        self
    }

    /// The most bytes of a stream held back before committing regardless (default
    /// 64 KiB; at least 1).
    pub fn hold_limit(mut self, bytes: usize) -> Self {
        self.hold_limit = bytes.max(1);
        self
    }

    /// The longest line accepted in a stream (default 256 KiB; at least 64).
    pub fn max_line(mut self, bytes: usize) -> Self {
        self.sse.max_line = bytes.max(64);
        self
    }

    /// Fixes the wire format instead of detecting it.
    pub fn wire(mut self, wire: Wire) -> Self {
        self.wire = Some(wire);
        self
    }

    /// What a failed check after the commit point does (default
    /// [`AfterCommit::Report`]).
    pub fn after_commit(mut self, after: AfterCommit) -> Self {
        self.after_commit = after;
        self
    }

    /// From the `n`th rejection in a row on (`n` at least 1), return rejections as
    /// failures so a circuit breaker counts them; see [`RepeatedRejections`].
    pub fn fail_after_rejections(mut self, n: u32) -> Self {
        self.fail_after = Some(n.max(1));
        self
    }

    /// Names the provider in errors and logs.
    pub fn provider(mut self, provider: ProviderId) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Uses these counters (to share them between layers, or keep a handle).
    pub fn with_stats(mut self, stats: ValidateStats) -> Self {
        self.stats = stats;
        self
    }

    /// The counters of every service made by this layer and its clones.
    pub fn stats(&self) -> &ValidateStats {
        &self.stats
    }

    pub(crate) fn shared(&self) -> Arc<Shared> {
        Arc::new(Shared {
            validator: self.validator.clone(),
            max_body: self.max_body,
            hold: self.hold,
            hold_limit: self.hold_limit,
            sse: self.sse,
            wire: self.wire,
            after_commit: self.after_commit,
            fail_after: self.fail_after,
            provider: self.provider.clone(),
            stats: self.stats.clone(),
        })
    }
}

impl<S> Layer<S> for ValidateLayer {
    type Service = Validate<S>;

    fn layer(&self, inner: S) -> Validate<S> {
        Validate::from_shared(inner, self.shared())
    }
}

impl ValidateConfig {
    /// Validates the configuration and builds the layer with the configured checks.
    pub fn build(&self) -> Result<ValidateLayer, ConfigError> {
        self.validate()?;
        let validators = self.checks.build()?;
        ValidateLayer::with_config(validators, self)
    }
}
