//! Usage totals from provider-reported token counts saturate instead of wrapping.

use tower_failover_core::Health;

#[test]
fn record_usage_saturates_on_absurd_token_counts() {
    let h = Health::standalone("p", "m");
    h.record_usage(u64::MAX, 10, u64::MAX - 1);
    h.record_usage(u64::MAX, u64::MAX, 5);
    let u = h.usage();
    // Wrapping would have left u64::MAX - 1, 9 and 3.
    assert_eq!(u.prompt_tokens, u64::MAX);
    assert_eq!(u.completion_tokens, u64::MAX);
    assert!(u.cost > 1e12);
}
