//! The [`Overflow`] router over a primary and its overflow targets.

pub mod future;
mod service;
mod shared;

pub use service::{MAX_TARGETS, Overflow, OverflowBuilder};
pub use shared::SharedBudget;
