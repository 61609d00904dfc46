//! OpenAI chat request → Anthropic messages request on arbitrary caller bytes: a
//! typed error or a well-formed Anthropic request, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tower_failover_provider::ModelMap;
use tower_failover_provider::translate::anthropic::{RequestOptions, request_to_anthropic};

fuzz_target!(|data: &[u8]| {
    let models = ModelMap::from_iter([("a", "claude-x"), ("gpt-4o", "claude-\"q\"")]);
    let opts = RequestOptions {
        models: &models,
        default_max_tokens: Some(1024),
    };
    if let Ok(r) = request_to_anthropic(data, &opts) {
        // Tool schemas are copied as they are: JSON that `serde_json::Value` cannot
        // hold (a lone surrogate escape, a number past f64) stays so. Otherwise
        // the output must be well-formed.
        if serde_json::from_slice::<Value>(data).is_err() {
            return;
        }
        let v: Value = serde_json::from_slice(&r.body).expect("the Anthropic request is JSON");
        assert_eq!(v["model"].as_str(), Some(r.model.as_str()));
        assert!(v["max_tokens"].is_u64(), "{v}");
        for m in v["messages"].as_array().expect("messages") {
            let role = m["role"].as_str().expect("a role");
            assert!(role == "user" || role == "assistant", "{role}");
        }
        if let Some(s) = v.get("system") {
            assert!(s.is_string() || s.is_array(), "{s}");
        }
    }
});
