//! A caller's own `max_tokens`: an answer cut at it is a correct answer.
//!
//! The truncation check ([`FinishReason`]) is off by default; when it is on, it still
//! passes answers to requests that set their own limit.

mod common;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use tower::{BoxError, Layer, ServiceExt};
use tower_failover_core::RejectKind;
use tower_failover_core::error::Invalid;
use tower_failover_core::replay::ReplayBody;
use tower_failover_validate::checks::FinishReason;
use tower_failover_validate::{
    AfterCommit, StreamHold, ValidateConfig, ValidateLayer, Validators, check_body,
};

/// Runs `layer` over a provider that answers `res`, for a request with `body`.
async fn call(
    layer: &ValidateLayer,
    body: &'static str,
    res: Response<ChanBody>,
) -> Result<Bytes, BoxError> {
    let slot = std::sync::Mutex::new(Some(res));
    let provider = tower::service_fn(move |_req: Request<ReplayBody>| {
        let res = slot.lock().unwrap().take().ok_or("answered already");
        std::future::ready(res.map_err(BoxError::from))
    });
    let res = layer
        .layer(provider)
        .oneshot(Request::new(ReplayBody::from(body)))
        .await?;
    Ok(res.into_body().collect().await?.to_bytes())
}

fn truncating() -> ValidateLayer {
    ValidateLayer::new(Validators::llm().with(FinishReason::default()))
}

fn kind(err: &BoxError) -> Option<RejectKind> {
    tower_failover_core::error::find::<Invalid>(&**err).map(Invalid::kind)
}

const CAPPED: [&str; 4] = [
    r#"{"model":"m","max_tokens":5,"messages":[]}"#,
    r#"{"model":"m","max_completion_tokens":5,"messages":[]}"#,
    r#"{"model":"m","max_output_tokens":5,"input":"hi"}"#,
    r#" { "messages": [], "max_tokens" : 1 } "#,
];

const UNCAPPED: [&str; 5] = [
    r#"{"model":"m","messages":[]}"#,
    r#"{"model":"m","max_tokens":null,"messages":[]}"#,
    // Named inside a message, not as the request's own parameter.
    r#"{"model":"m","messages":[{"role":"user","content":"\"max_tokens\": 5"}]}"#,
    r#"[{"max_tokens":5}]"#,
    "",
];

#[test]
fn the_default_checks_accept_a_length_finish() {
    let body = oa_body("Half an ans", "length");
    assert!(check_body(&Validators::llm(), body.as_bytes()).is_pass());
    let cfg = ValidateConfig::default();
    assert!(cfg.checks.finish_reasons.is_empty());
    assert!(check_body(&cfg.checks.build().unwrap(), body.as_bytes()).is_pass());
    let anthropic = r#"{"type":"message","role":"assistant","content":[{"type":"text","text":"Half"}],"stop_reason":"max_tokens"}"#;
    assert!(check_body(&cfg.checks.build().unwrap(), anthropic.as_bytes()).is_pass());
}

#[tokio::test]
async fn default_layer_passes_a_length_finish_buffered_and_streamed() {
    let layer = ValidateConfig::default().build().unwrap();
    for req in CAPPED.iter().chain(&UNCAPPED) {
        let body = oa_body("Half an ans", "length");
        let got = call(&layer, req, json(chunks([body.clone()])))
            .await
            .unwrap();
        assert_eq!(got, body);
        let events = oa_stream(&["Half", " an"], "length");
        let got = call(&layer, req, sse(chunks(events.clone())))
            .await
            .unwrap();
        assert_eq!(got, events.concat());
    }
    assert_eq!(layer.stats().snapshot().late_rejected, 0);
}

#[tokio::test]
async fn when_on_the_check_skips_requests_that_set_their_own_limit() {
    let layer = truncating().hold(StreamHold::Complete);
    for req in CAPPED {
        let body = oa_body("Half an ans", "length");
        let got = call(&layer, req, json(chunks([body.clone()]))).await;
        assert_eq!(got.unwrap(), body, "{req}");
        let events = oa_stream(&["Half"], "length");
        let got = call(&layer, req, sse(chunks(events.clone()))).await;
        assert_eq!(got.unwrap(), events.concat(), "{req}");
    }
    for req in UNCAPPED {
        let body = oa_body("Half an ans", "length");
        let err = call(&layer, req, json(chunks([body]))).await.unwrap_err();
        assert_eq!(kind(&err), Some(RejectKind::Truncated), "{req}");
        let err = call(&layer, req, sse(chunks(oa_stream(&["Half"], "length"))))
            .await
            .unwrap_err();
        assert_eq!(kind(&err), Some(RejectKind::Truncated), "{req}");
    }
}

#[tokio::test]
async fn after_the_commit_point_a_requested_cut_is_not_reported() {
    let layer = truncating().after_commit(AfterCommit::Error);
    let events = oa_stream(&["Half", " an"], "length");
    let got = call(&layer, CAPPED[0], sse(chunks(events.clone())))
        .await
        .unwrap();
    assert_eq!(got, events.concat());
    assert_eq!(layer.stats().snapshot().late_rejected, 0);
    let err = call(&layer, UNCAPPED[0], sse(chunks(events)))
        .await
        .unwrap_err();
    assert_eq!(kind(&err), Some(RejectKind::Truncated));
}

#[test]
fn enabled_in_configuration_with_its_reasons() {
    let cfg: ValidateConfig =
        serde_json::from_str(r#"{"checks": {"finish_reasons": ["length", "max_tokens"]}}"#)
            .unwrap();
    let v = cfg.checks.build().unwrap();
    assert_eq!(v.len(), 5);
    let body = oa_body("Half an ans", "length");
    assert!(check_body(&v, body.as_bytes()).is_reject());
}
