//! The retry budget every router shares.

use std::sync::Arc;

/// A retry budget shared by every hop (same-provider retry, overflow, fallback,
/// hedging): tower's [`Budget`](tower::retry::budget::Budget) trait behind an `Arc`,
/// so routers of different crates draw on one budget.
/// `tower_failover_retry::RetryBudget` is the one this project ships.
pub type SharedBudget = Arc<dyn tower::retry::budget::Budget + Send + Sync>;
