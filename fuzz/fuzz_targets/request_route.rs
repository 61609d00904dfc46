//! What the model router reads from callers, on arbitrary bytes: the request
//! information (core's `RequestInfo::parse`, `JsonBodyAttributes` with its headers)
//! and a whole stack with model groups and fallbacks answering the request. A
//! request always ends in an answer or a typed error, never a panic.
#![no_main]

use http::{HeaderValue, Request, Response};
use libfuzzer_sys::fuzz_target;
use tower::{BoxError, ServiceExt, service_fn};
use tower_failover::balance::{Attributes, JsonBodyAttributes};
use tower_failover::replay::ReplayBody;
use tower_failover::request::Shape;
use tower_failover::{ProviderDef, Stack, boxed, error_response};

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

fuzz_target!(|data: &[u8]| {
    let (header, body) = match data.iter().position(|b| *b == b'\n') {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (&b""[..], data),
    };
    let mut req = Request::post("/v1/chat/completions")
        .body(ReplayBody::from(body.to_vec()))
        .unwrap();
    if let Ok(v) = HeaderValue::from_bytes(header) {
        req.headers_mut().insert("x-failover-model", v.clone());
        req.headers_mut().insert("x-failover-tier", v);
    }
    let info = req.body().info();
    // Every body reads as empty, an object, or invalid with a reason.
    assert_eq!(info.shape() == Shape::Invalid, info.problem().is_some());
    let attrs = JsonBodyAttributes::default().attributes(&req);
    let _ = (attrs.model, attrs.tier, attrs.tools, attrs.prompt_tokens);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    rt.block_on(async move {
        let stack = Stack::builder()
            .provider(ProviderDef::from_service("a", "gpt-4o", provider(200)))
            .provider(ProviderDef::from_service("b", "claude", provider(503)))
            .provider(ProviderDef::from_service("c", "claude", provider(200)))
            .model_fallbacks("claude", ["gpt-4o"])
            .model_fallbacks("gpt-4o", ["claude"])
            .build()
            .unwrap();
        match stack.oneshot(req).await {
            Ok(res) => assert!(res.status().as_u16() < 600),
            Err(e) => {
                let res = error_response(&*e);
                assert!(res.status().is_client_error() || res.status().is_server_error());
            }
        }
    });
});
