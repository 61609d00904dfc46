//! The library half of tower-failover's runnable examples: code that an example
//! program and the cross-crate tests (`tests/`) both use.
//!
//! The programs are one folder each beside `src/` (`outage_drill/`, `gateway/`,
//! `tonic_failover/`), with the benchmark programs together in `bench/`; each
//! starts with a "Run with" block. The gateway's library is its own crate,
//! `tower-failover-gateway` (`crates/gateway`).

pub mod tonic_failover;
