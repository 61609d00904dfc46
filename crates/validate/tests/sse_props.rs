//! Property test: however a stream is split, the layer hands the caller exactly the
//! bytes the provider sent. (The SSE parser's own properties are core's:
//! `crates/core/tests/sse_props.rs`.)

mod common;

use common::*;
use http::Request;
use http_body_util::BodyExt;
use proptest::prelude::*;
use proptest::sample::Index;
use tower::{Layer, ServiceExt};
use tower_failover_validate::ValidateLayer;

fn words() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec("[A-Za-z ,.é😀]{1,8}", 1..20)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn the_caller_gets_exactly_the_bytes_sent(words in words(), cuts in prop::collection::vec(any::<Index>(), 0..16)) {
        let refs: Vec<&str> = words.iter().map(String::as_str).collect();
        // Words that happen to start a refusal phrase are fine: the stream is complete.
        let stream = oa_stream(&refs, "stop").concat().into_bytes();
        let parts = cut_at(&stream, &cuts);
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let got = rt.block_on(async {
            let layer = ValidateLayer::llm();
            let res = layer.layer(once(sse(chunks(parts)))).oneshot(Request::new(())).await?;
            let bytes = res.into_body().collect().await?.to_bytes();
            Ok::<_, tower::BoxError>(bytes)
        });
        match got {
            Ok(bytes) => prop_assert_eq!(&bytes[..], &stream[..]),
            Err(e) => {
                // The only legitimate rejection of these streams: content that opens
                // with a refusal phrase, which random words cannot produce.
                prop_assert!(false, "rejected: {}", e);
            }
        }
    }
}
