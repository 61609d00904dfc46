//! Shared helpers for the runnable examples of tower-failover.
//!
//! The examples themselves live next to this file; each one starts with a
//! "Run with" block.

pub mod gateway;
pub mod grpc;
