//! Estimating a prompt's size in tokens before any provider has counted it.
//!
//! Routers need a size at send time (a balancer to weigh cost, overflow to charge a
//! token quota ahead of the provider's headers); the provider's own count comes only
//! with the answer. Every such estimate in this project is the same rough rule: about
//! one token per [`BYTES_PER_TOKEN`] bytes of request body, rounded up.
//!
//! ```
//! use tower_failover_core::tokens::{BYTES_PER_TOKEN, estimate_tokens};
//!
//! assert_eq!(BYTES_PER_TOKEN, 4);
//! assert_eq!(estimate_tokens(66, BYTES_PER_TOKEN), 17);
//! assert_eq!(estimate_tokens(0, BYTES_PER_TOKEN), 0);
//! ```

/// Bytes of request body counted as one token by default.
pub const BYTES_PER_TOKEN: u64 = 4;

/// `bytes` of request body in tokens at `bytes_per_token` (at least 1), rounded up.
pub fn estimate_tokens(bytes: u64, bytes_per_token: u64) -> u64 {
    bytes.div_ceil(bytes_per_token.max(1))
}
