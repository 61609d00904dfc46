//! Property tests of the request information the routers read from callers'
//! bodies (core's `RequestInfo::parse`, `JsonBodyAttributes`), the CI-sized twin of
//! the `request_route` cargo-fuzz target (see `docs/fuzzing.md`): never a panic,
//! and a string `model` is read whatever the body's other fields hold.

use bytes::Bytes;
use http::Request;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower_failover_balance::{Attributes, JsonBodyAttributes};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::request::RequestInfo;

fn read(body: &[u8]) -> RequestInfo {
    RequestInfo::parse(Bytes::copy_from_slice(body))
}

fn value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        Just(json!(1e23)),
        "[a-z\"\\\\é😀]{0,8}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec(("[a-z]{1,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Any `model`, `tools` and `functions` values: the model is read when it is a
    /// string, tools are present when either list is non-empty.
    #[test]
    fn each_field_is_read_on_its_own(
        model in prop::option::of(value()),
        tools in prop::option::of(value()),
        functions in prop::option::of(value()),
        other in prop::collection::vec(("[a-z]{1,6}", value()), 0..3),
    ) {
        let mut body: Map<String, Value> = other.into_iter().collect();
        for (k, v) in [("model", &model), ("tools", &tools), ("functions", &functions)] {
            match v {
                Some(v) => body.insert(k.to_owned(), v.clone()),
                None => body.remove(k),
            };
        }
        let text = Value::Object(body.clone()).to_string();
        let info = read(text.as_bytes());
        prop_assert!(info.is_object(), "a JSON object is read");
        prop_assert_eq!(info.model(), body.get("model").and_then(Value::as_str));
        let listed = |k: &str| body.get(k).and_then(Value::as_array).is_some_and(|a| !a.is_empty());
        prop_assert_eq!(info.tools(), listed("tools") || listed("functions"));
        let req = Request::new(ReplayBody::from(text));
        let attrs = JsonBodyAttributes::default().attributes(&req);
        prop_assert_eq!(attrs.model.as_deref(), info.model());
        prop_assert_eq!(attrs.tools, info.tools());
    }

    /// Any bytes: `None` or an answer, never a panic.
    #[test]
    fn any_bytes_are_read_without_panic(body in prop::collection::vec(any::<u8>(), 0..64)) {
        let _ = read(&body).model();
        let req = Request::new(ReplayBody::from(body));
        let _ = JsonBodyAttributes::default().attributes(&req);
    }
}

/// Found by `any_request_is_routed_or_refused` (crates/tower-failover): a `tools`
/// that was not a list (`"tools": true`) made the whole body unreadable, so the
/// model was lost and the request went to any provider instead of its model's
/// group (or a 404 for an unknown model).
#[test]
fn request_info_keeps_the_model_when_tools_is_not_a_list() {
    for body in [
        r#"{"model":"nope","tools":true}"#,
        r#"{"model":"nope","tools":{"a":1},"functions":"f"}"#,
        r#"{"tools":7,"model":"nope"}"#,
    ] {
        let info = read(body.as_bytes());
        assert_eq!(info.model(), Some("nope"), "{body}");
        assert!(!info.tools());
    }
    let info = read(br#"{"model":7,"tools":[{}]}"#);
    assert_eq!(info.model(), None);
    assert!(info.tools());
}
