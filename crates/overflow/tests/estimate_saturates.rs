//! The token estimate saturates instead of overflowing (a panic in debug builds).

use bytes::Bytes;
use http::Request;
use http_body_util::Full;
use tower_failover_core::replay::ReplayBody;
use tower_failover_overflow::{BodyEstimator, EstimateTokens};

#[test]
fn estimate_saturates_with_a_huge_default_completion() {
    let e = BodyEstimator::default().default_completion(u64::MAX);
    let req = Request::new(ReplayBody::from(
        r#"{"messages":[{"role":"user","content":"hello"}]}"#,
    ));
    assert_eq!(e.estimate(&req), u64::MAX);
    let req = Request::new(Full::new(Bytes::from_static(b"0123456789")));
    assert_eq!(e.estimate(&req), u64::MAX);
}
