//! Shared helpers for the runnable examples of tower-failover.
//!
//! The examples themselves live next to this file; each one starts with a
//! "Run with" block. The gateway's library is its own crate,
//! `tower-failover-gateway` (`crates/gateway`).

pub mod grpc;
