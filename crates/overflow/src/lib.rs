//! Overflow on 429 (docs in progress).

pub mod config;
pub mod error;
pub mod estimate;
pub mod quota;
pub mod router;
pub mod tracker;

pub use config::{LimitedMode, OverflowConfig, PacingConfig, QuotaConfig};
pub use error::ConfigError;
pub use estimate::{BodyEstimator, EstimateTokens};
pub use quota::{Quota, QuotaLayer};
pub use router::{MAX_TARGETS, Overflow, OverflowBuilder, SharedBudget};
pub use tracker::{QuotaEstimate, QuotaTracker, Ticket};
