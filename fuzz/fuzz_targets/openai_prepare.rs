//! The OpenAI request preparation on arbitrary caller bytes: a typed error, or a
//! body that is the caller's JSON with only the model mapped and (for a stream)
//! `stream_options` changed to ask for usage.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower_failover_core::replay::ReplayBody;
use tower_failover_provider::ModelMap;
use tower_failover_provider::translate::openai::prepare_request;

fuzz_target!(|data: &[u8]| {
    let models = ModelMap::from_iter([("a", "gpt-4o"), ("b", "we\"ird\\名")]);
    let body = ReplayBody::from(Bytes::copy_from_slice(data));
    let Ok(out) = prepare_request(&body, &models, true) else {
        return;
    };
    if out.body == data {
        return;
    }
    // What `serde_json::Value` cannot hold (a lone surrogate escape, a number past
    // f64) is still JSON, forwarded as it is; compare the rest.
    let Ok(before) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let after: Value = serde_json::from_slice(&out.body).expect("the prepared body is JSON");
    let (Some(before), Some(after)) = (before.as_object(), after.as_object()) else {
        panic!("a changed body is an object");
    };
    let mapped = out.model.as_deref();
    if mapped.is_some() {
        assert_eq!(after["model"].as_str(), mapped);
    }
    for (k, v) in before {
        if k != "model" && k != "stream_options" {
            assert_eq!(after.get(k), Some(v), "{k}");
        }
    }
    for k in after.keys() {
        assert!(before.contains_key(k) || k == "stream_options", "{k}");
    }
});
