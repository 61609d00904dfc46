//! Hedging: a second attempt when the first is slower than usual.
//!
//! [`HedgeLayer`] makes a [`Hedge`], whose calls return a [`future::ResponseFuture`];
//! the hedged copy of a request carries the [`Hedged`] extension.

mod config;
pub mod future;
mod layer;
mod service;
mod shared;
#[cfg(test)]
mod tests;

pub use config::HedgeConfig;
pub use layer::HedgeLayer;
pub use service::Hedge;

/// A request extension on the second (hedged) attempt, so routers and logs can tell
/// it apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hedged;
