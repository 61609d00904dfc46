//! A total deadline per request, across every attempt.
//!
//! [`DeadlineLayer`] makes a [`DeadlineService`], whose calls return a
//! [`future::ResponseFuture`].

pub mod future;
mod layer;
mod service;

pub use layer::DeadlineLayer;
pub use service::DeadlineService;
