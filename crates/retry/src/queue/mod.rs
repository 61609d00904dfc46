//! All providers down: wait for one to recover instead of failing at once.
//!
//! [`WaitQueueLayer`] makes a [`WaitQueue`], whose calls return a
//! [`future::ResponseFuture`]; a request that found every provider down waits in
//! `wait.rs` until a recovery event or its deadline.

mod config;
pub mod future;
mod layer;
mod service;
mod wait;

pub use config::QueueConfig;
pub use layer::WaitQueueLayer;
pub use service::WaitQueue;
