//! Property tests of what the facade reads from users and callers, the CI-sized
//! twins of the `config_toml` and `request_route` cargo-fuzz targets (see
//! `docs/fuzzing.md`):
//!
//! - the TOML configuration: any text, and a full configuration with any of its
//!   fields set to a hostile value, gives a config or an error naming a field, and
//!   a config that is accepted builds a stack or fails with a typed error; never a
//!   panic;
//! - the model router: any request body and model header ends in an answer or a
//!   typed error (a `ModelNotFound` for an unknown model), never a panic.

use bytes::Bytes;
use http::{HeaderValue, Request, Response};
use http_body_util::Full;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use tower::{BoxError, ServiceExt, service_fn};
use tower_failover::replay::ReplayBody;
use tower_failover::{Config, ModelNotFound, ProviderDef, Stack, boxed, error_response};

/// A configuration using every section its router allows (`[fallback]` and
/// `[overflow]` belong to the other routers and are refused here), with a client
/// that is never called.
const FULL: &str = r#"
router = "balance"
deadline = "60s"
max_request_bytes = 4194304
default_model = "gpt-4o-mini"

[models."gpt-4o-mini"]
fallbacks = ["claude-haiku-4-5"]

[balance]
weighting = "cost"
attempt_timeout = "30s"

[circuit]
consecutive_failures = 5
cooldown = "30s"

[ramp]
min_requests = 20

[validate]
hold = "first_content"

[quota]

[retry_budget]

[wait_queue]
capacity = 8
max_wait = "5s"

[health]

[[providers]]
name = "openai"
model = "gpt-4o-mini"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
api_key = "sk-test-not-a-secret"
price = { input_per_million = 0.15, output_per_million = 0.60 }
timeouts = { connect = "5s", first_byte = "30s", total = "5m" }

[[providers]]
name = "anthropic"
model = "claude-haiku-4-5"
kind = "anthropic"
base_url = "http://127.0.0.1:9"
api_key = "sk-test-not-a-secret"
price = { input_per_million = 1.0, output_per_million = 5.0 }
weight = 2.0
priority = 1
"#;

/// Sections of the configuration, and the fields any section may have.
const SECTIONS: &[&str] = &[
    "",
    "balance",
    "fallback",
    "overflow",
    "circuit",
    "ramp",
    "validate",
    "quota",
    "retry_budget",
    "wait_queue",
    "health",
    "providers.0",
    "providers.1",
    "providers.0.timeouts",
    "providers.1.price",
    "models.gpt-4o-mini",
];

const FIELDS: &[&str] = &[
    "router",
    "deadline",
    "max_request_bytes",
    "default_model",
    "route_by_model",
    "weighting",
    "attempt_timeout",
    "total_timeout",
    "max_attempts",
    "latency_buffer",
    "cheapest_within",
    "unmeasured_ttfb",
    "max_ready_wait",
    "policy",
    "seed",
    "consecutive_failures",
    "cooldown",
    "max_cooldown",
    "failure_rate",
    "min_calls",
    "window",
    "half_open_permits",
    "success_threshold",
    "jitter",
    "mode",
    "min_requests",
    "max_error_rate",
    "min_error_rate",
    "error_rate_factor",
    "schedule",
    "check_interval",
    "baseline_window",
    "hold",
    "hold_limit",
    "max_body",
    "max_line",
    "after_commit",
    "fail_after_rejections",
    "finish_reasons",
    "refusal_phrases",
    "schema",
    "wire",
    "capacity",
    "max_wait",
    "ratio",
    "min_per_second",
    "requests_per_minute",
    "tokens_per_minute",
    "default_retry_after",
    "ewma_decay",
    "suspect_factor",
    "suspect_floor",
    "detect_hangs",
    "name",
    "model",
    "kind",
    "base_url",
    "api_key",
    "api_key_env",
    "weight",
    "priority",
    "quota_group",
    "context_window",
    "tools",
    "aliases",
    "tiers",
    "connect",
    "first_byte",
    "total",
    "idle",
    "input_per_million",
    "output_per_million",
    "max_event_bytes",
    "max_response_bytes",
    "fallbacks",
    "enabled",
    "headers",
    "models",
];

/// Values that break arithmetic and parsers.
fn hostile() -> impl Strategy<Value = toml::Value> {
    use toml::Value as T;
    prop_oneof![
        prop_oneof![
            Just(0i64),
            Just(-1),
            Just(1),
            Just(i64::MAX),
            Just(i64::MIN),
            any::<i64>()
        ]
        .prop_map(T::Integer),
        prop_oneof![
            Just(f64::NAN),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(1e308),
            Just(1e23),
            Just(-0.0),
            Just(0.5),
            Just(-1.5),
            any::<f64>()
        ]
        .prop_map(T::Float),
        prop_oneof![
            Just("1e23s"),
            Just("0s"),
            Just("-1s"),
            Just("6m0s"),
            Just(""),
            Just("NaN"),
            Just("99999999999999999999d"),
            Just("18446744073709551616ns"),
            Just("1.5"),
            Just("balance"),
            Just("fallback"),
            Just("overflow"),
            Just("openai"),
            Just("anthropic"),
            Just("gpt-4o-mini"),
            Just("claude-haiku-4-5"),
            Just("http://127.0.0.1:9"),
            Just("ftp://x"),
            Just("://"),
            Just("first_content"),
            Just("complete"),
            Just("\u{0}\u{1f600}"),
        ]
        .prop_map(|s| T::String(s.to_owned())),
        "[a-z0-9 .:/-]{0,12}".prop_map(T::String),
        any::<bool>().prop_map(T::Boolean),
        Just(T::Array(vec![])),
        Just(T::Array(vec![
            T::String("gpt-4o-mini".into()),
            T::Integer(-1)
        ])),
        Just(T::Table(toml::Table::new())),
    ]
}

/// Sets `section.field = value` in `doc` (creating what is missing).
fn set(doc: &mut toml::Table, section: &str, field: &str, value: toml::Value) {
    let mut table = doc;
    for part in section.split('.').filter(|p| !p.is_empty()) {
        let next = match part.parse::<usize>() {
            Ok(i) => match table.get_mut("providers").and_then(|p| p.as_array_mut()) {
                Some(list) if i < list.len() => list[i].as_table_mut(),
                _ => None,
            },
            Err(_) => {
                let entry = table
                    .entry(part.to_owned())
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                entry.as_table_mut()
            }
        };
        match next {
            Some(t) => table = t,
            None => return,
        }
    }
    table.insert(field.to_owned(), value);
}

/// Reads `text`; if accepted, builds the stack in a runtime. Never panics.
fn read_and_build(text: &str) {
    let Ok(config) = Config::from_toml_str(text) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async {
        if let Ok(builder) = Stack::from_config(&config) {
            let _ = builder.build();
        }
    });
}

#[test]
fn the_full_configuration_builds() {
    let config = Config::from_toml_str(FULL).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async { Stack::from_config(&config).unwrap().build().unwrap() });
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any text: a config or an error, never a panic.
    #[test]
    fn any_text_is_read_without_panic(text in "(\\[|\\]|=|\"|[a-z_.]{1,12}|[0-9e.+-]{1,6}| |\n){0,40}") {
        read_and_build(&text);
    }

    /// The full configuration with a few fields set to hostile values: a config
    /// that builds, or a typed error, never a panic.
    #[test]
    fn hostile_values_in_every_section(
        edits in prop::collection::vec(
            (prop::sample::select(SECTIONS), prop::sample::select(FIELDS), hostile()),
            1..4,
        ),
    ) {
        let mut doc: toml::Table = toml::from_str(FULL).unwrap();
        for (section, field, value) in edits {
            set(&mut doc, section, field, value);
        }
        // NaN and infinities have TOML spellings too; the writer knows them.
        let text = toml::to_string(&doc).unwrap();
        read_and_build(&text);
    }
}

// --- The model router on callers' requests ----------------------------------------

const ANSWER: &str =
    r#"{"choices":[{"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}]}"#;

fn provider(status: u16) -> tower_failover::ProviderService {
    boxed(service_fn(move |_req: Request<ReplayBody>| async move {
        let body = if status == 200 {
            ReplayBody::from(ANSWER)
        } else {
            ReplayBody::empty()
        };
        Ok::<_, BoxError>(Response::builder().status(status).body(body)?)
    }))
}

fn model_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!("gpt-4o")),
        Just(json!("claude")),
        Just(json!("nope")),
        Just(json!("")),
        Just(Value::Null),
        Just(json!(1e23)),
        Just(json!(["gpt-4o"])),
        Just(json!({"model": "gpt-4o"})),
        "[a-z0-9\"\\\\é😀-]{0,300}".prop_map(Value::from),
    ]
}

fn body() -> impl Strategy<Value = Vec<u8>> {
    let extra = prop::collection::vec(
        (
            prop::sample::select(&["messages", "tools", "functions", "stream", "x"][..]),
            prop_oneof![
                Just(json!([])),
                Just(json!([{"type": "function"}])),
                Just(json!(null)),
                Just(json!(true)),
                Just(json!("s")),
            ],
        ),
        0..4,
    );
    prop_oneof![
        (prop::option::of(model_value()), extra).prop_map(|(model, extra)| {
            let mut o: Map<String, Value> =
                extra.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            if let Some(m) = model {
                o.insert("model".into(), m);
            }
            Value::Object(o).to_string().into_bytes()
        }),
        prop::collection::vec(any::<u8>(), 0..64),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Any body and model header: an answer, or a typed error that maps to an HTTP
    /// error; a known model in the body is answered, an unknown one is a
    /// `ModelNotFound`.
    #[test]
    fn any_request_is_routed_or_refused(
        body in body(),
        header in prop::option::of(prop_oneof![
            Just(b"gpt-4o".to_vec()),
            Just(b"nope".to_vec()),
            Just(b"".to_vec()),
            prop::collection::vec(any::<u8>(), 0..16),
        ]),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        let header_set = header.as_deref().and_then(|h| HeaderValue::from_bytes(h).ok());
        let result = rt.block_on(async {
            let stack = Stack::builder()
                .provider(ProviderDef::from_service("a", "gpt-4o", provider(200)))
                .provider(ProviderDef::from_service("b", "claude", provider(503)))
                .provider(ProviderDef::from_service("c", "claude", provider(200)))
                .model_fallbacks("claude", ["gpt-4o"])
                .model_fallbacks("gpt-4o", ["claude"])
                .build()
                .unwrap();
            let mut req = Request::post("/v1/chat/completions").body(body.clone()).unwrap();
            if let Some(v) = &header_set {
                req.headers_mut().insert("x-failover-model", v.clone());
            }
            stack.oneshot(req.map(|b| Full::new(Bytes::from(b)))).await
        });
        let status = match &result {
            Ok(res) => res.status(),
            Err(e) => error_response(&**e).status(),
        };
        prop_assert!(status.is_success() || status.is_client_error() || status.is_server_error());
        let body_model = parsed.as_ref().and_then(|v| v.get("model")).and_then(Value::as_str);
        if header_set.is_none() {
            match body_model {
                Some("gpt-4o") | Some("claude") => {
                    prop_assert!(result.is_ok(), "{:?}", result.err());
                    prop_assert_eq!(status, 200);
                }
                Some(_) => {
                    let err = result.as_ref().err().map(|e| e.downcast_ref::<ModelNotFound>().is_some());
                    prop_assert_eq!(err, Some(true), "{} -> {}", String::from_utf8_lossy(&body), status);
                    prop_assert_eq!(status, 404);
                }
                None => {}
            }
        }
    }
}

/// Found by `any_request_is_routed_or_refused`: `{"model":"nope","tools":true}`
/// was answered by any provider (200) instead of `404 model_not_found`, and a known
/// model with such a `tools` could be served by another model's group.
#[tokio::test(start_paused = true)]
async fn a_model_is_routed_even_when_tools_is_not_a_list() {
    let stack = Stack::builder()
        .provider(ProviderDef::from_service("a", "gpt-4o", provider(200)))
        .provider(ProviderDef::from_service("c", "claude", provider(503)))
        .build()
        .unwrap();
    let call = |body: &'static str| {
        let stack = stack.clone();
        async move {
            stack
                .oneshot(
                    Request::post("/v1/chat/completions")
                        .body(body.to_owned())
                        .unwrap(),
                )
                .await
        }
    };
    let err = call(r#"{"model":"nope","tools":true}"#).await.unwrap_err();
    assert!(err.downcast_ref::<ModelNotFound>().is_some(), "{err}");
    // `claude`'s only provider fails: its request must not be answered by gpt-4o.
    assert!(call(r#"{"model":"claude","tools":true}"#).await.is_err());
    assert_eq!(
        call(r#"{"model":"gpt-4o","tools":true}"#)
            .await
            .unwrap()
            .status(),
        200
    );
}
