//! Per-provider quota tracking: [`QuotaLayer`] and its service.

pub mod future;
mod layer;
mod service;

pub use layer::QuotaLayer;
pub use service::Quota;
