//! The layer with in-memory bodies: buffered validation, limits, and the streaming
//! commit point.

mod common;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::task::Poll;

use bytes::Bytes;
use common::*;
use http::{Request, Response};
use http_body_util::BodyExt;
use serde_json::json;
use tower::{BoxError, Layer, ServiceExt};
use tower_failover_core::error::{BodyTooLarge, Invalid, TransportError, TruncatedStream, find};
use tower_failover_core::{
    Classify, FailureKind, LateVerdict, LlmClassifier, Outcome, ProviderId, RejectKind,
};
use tower_failover_validate::checks::{FinishReason, JsonSchema};
use tower_failover_validate::{
    AfterCommit, StreamHold, ValidateLayer, ValidatedBody, Validators, Verdict, from_fn,
};

type Res = Response<ValidatedBody<ChanBody>>;

async fn run(layer: &ValidateLayer, res: Response<ChanBody>) -> Result<Res, BoxError> {
    layer.layer(once(res)).oneshot(Request::new(())).await
}

/// The default checks plus the opt-in truncation check.
fn llm_truncating() -> ValidateLayer {
    ValidateLayer::new(Validators::llm().with(FinishReason::default()))
}

fn reject_kind(err: &BoxError) -> RejectKind {
    find::<Invalid>(&**err)
        .unwrap_or_else(|| panic!("not an Invalid: {err}"))
        .kind()
}

async fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    std::future::poll_fn(|cx| Poll::Ready(Pin::new(&mut *f).poll(cx))).await
}

async fn body_bytes(res: Res) -> Result<Bytes, BoxError> {
    Ok(res.into_body().collect().await?.to_bytes())
}

// ---- buffered bodies --------------------------------------------------------------

#[tokio::test]
async fn a_good_body_passes_unchanged() {
    let layer = ValidateLayer::llm();
    let body = oa_body("Paris is the capital of France.", "stop");
    let res = run(
        &layer,
        json(chunks([body[..10].to_owned(), body[10..].to_owned()])),
    )
    .await
    .unwrap();
    assert!(!res.body().is_stream());
    assert_eq!(body_bytes(res).await.unwrap(), body);
    let s = layer.stats().snapshot();
    assert_eq!((s.checked, s.passed, s.rejected), (1, 1, 0));
}

#[tokio::test]
async fn bad_bodies_are_rejected_with_their_kind() {
    let cases = [
        (
            r#"{"choices":[{"message":{"content":"#.to_owned(),
            RejectKind::InvalidJson,
        ),
        (
            r#"{"error":{"message":"The server had an error while processing your request."}}"#
                .to_owned(),
            RejectKind::ErrorObject,
        ),
        (
            r#"{"object":"chat.completion"}"#.to_owned(),
            RejectKind::Shape,
        ),
        (oa_body("", "stop"), RejectKind::Empty),
        (oa_body("Half an ans", "length"), RejectKind::Truncated),
        (
            oa_body("I'm sorry, but I can't help with that request.", "stop"),
            RejectKind::Refusal,
        ),
    ];
    for (body, want) in cases {
        let layer = llm_truncating();
        let err = run(&layer, json(chunks([body.clone()]))).await.unwrap_err();
        assert_eq!(reject_kind(&err), want, "{body}");
        assert_eq!(
            LlmClassifier::default().classify_error(&*err),
            Outcome::rejected(want)
        );
        assert_eq!(layer.stats().snapshot().rejected, 1);
    }
}

#[tokio::test]
async fn errors_statuses_pass_through_unchecked() {
    let layer = ValidateLayer::llm();
    let res = Response::builder()
        .status(503)
        .body(chunks(["<html>overloaded</html>"]))
        .unwrap();
    let res = run(&layer, res).await.unwrap();
    assert_eq!(res.status(), 503);
    assert_eq!(body_bytes(res).await.unwrap(), "<html>overloaded</html>");
    assert_eq!(layer.stats().snapshot().checked, 0);
}

#[tokio::test]
async fn declared_oversize_is_refused_without_reading() {
    let layer = ValidateLayer::llm().max_body(1024);
    let body = sized(1 << 30);
    let polls = body.polls.clone();
    let err = run(&layer, json(body)).await.unwrap_err();
    assert_eq!(find::<BodyTooLarge>(&*err).unwrap().limit(), 1024);
    assert_eq!(polls.load(Ordering::SeqCst), 0);

    let res = Response::builder()
        .header("content-length", "2048")
        .body(chunks(["x"]))
        .unwrap();
    let err = run(&layer, res).await.unwrap_err();
    assert!(find::<BodyTooLarge>(&*err).is_some());
    assert_eq!(layer.stats().snapshot().too_large, 2);
}

#[tokio::test]
async fn undeclared_oversize_stops_reading_at_the_limit() {
    let layer = ValidateLayer::llm().max_body(10);
    let (body, tx) = open();
    let polls = body.polls.clone();
    for _ in 0..100 {
        tx.send(Ok(Bytes::from_static(b"0123"))).unwrap();
    }
    let err = run(&layer, json(body)).await.unwrap_err();
    assert!(find::<BodyTooLarge>(&*err).is_some(), "{err}");
    // Three chunks make 12 bytes: reading stopped there.
    assert_eq!(polls.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn transport_errors_are_not_rejections() {
    let layer = ValidateLayer::llm();
    let (body, tx) = open();
    tx.send(Ok(Bytes::from_static(b"{\"choi"))).unwrap();
    tx.send(Err(TransportError::new(
        FailureKind::Reset,
        "connection reset",
    )
    .into()))
        .unwrap();
    let err = run(&layer, json(body)).await.unwrap_err();
    assert!(find::<Invalid>(&*err).is_none());
    assert_eq!(
        LlmClassifier::default().classify_error(&*err),
        Outcome::failure(FailureKind::Reset)
    );

    let failing = tower::service_fn(|_: Request<()>| async {
        Err::<Response<ChanBody>, BoxError>("connect refused".into())
    });
    let err = layer
        .layer(failing)
        .oneshot(Request::new(()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "connect refused");
}

#[tokio::test]
async fn readiness_and_requests_reach_the_inner_service() {
    let (mut svc, mut handle) =
        tower_test::mock::spawn_layer::<Request<()>, Response<ChanBody>, _>(ValidateLayer::llm());
    handle.allow(0);
    assert!(svc.poll_ready().is_pending());
    handle.allow(1);
    assert!(svc.poll_ready().is_ready());
    let fut = svc.call(Request::post("/v1/chat/completions").body(()).unwrap());
    let (req, send) = handle.next_request().await.unwrap();
    assert_eq!(req.uri(), "/v1/chat/completions");
    send.send_response(json(chunks([oa_body("hi", "stop")])));
    let res = fut.await.unwrap();
    assert_eq!(body_bytes(res).await.unwrap(), oa_body("hi", "stop"));
}

#[tokio::test]
async fn the_provider_is_named_in_errors() {
    let layer = ValidateLayer::llm().provider(ProviderId::new("openai", "gpt-4o-mini"));
    let err = run(&layer, json(chunks(["nope"]))).await.unwrap_err();
    assert!(
        err.to_string()
            .starts_with("openai/gpt-4o-mini: invalid response (invalid json)"),
        "{err}"
    );
}

// ---- consecutive rejections -------------------------------------------------------

#[tokio::test]
async fn rejections_become_failures_after_n_in_a_row() {
    let layer = ValidateLayer::llm().fail_after_rejections(2);
    let c = LlmClassifier::default();
    let err = run(&layer, json(chunks(["{"]))).await.unwrap_err();
    assert_eq!(
        c.classify_error(&*err),
        Outcome::rejected(RejectKind::InvalidJson)
    );

    let err = run(&layer, json(chunks(["{"]))).await.unwrap_err();
    assert_eq!(
        c.classify_error(&*err),
        Outcome::failure(FailureKind::Other)
    );
    assert_eq!(
        find::<Invalid>(&*err).unwrap().kind(),
        RejectKind::InvalidJson
    );
    assert_eq!(layer.stats().consecutive_rejections(), 2);

    // A good answer resets the run.
    run(&layer, json(chunks([oa_body("ok", "stop")])))
        .await
        .unwrap();
    assert_eq!(layer.stats().consecutive_rejections(), 0);
    let err = run(&layer, json(chunks(["{"]))).await.unwrap_err();
    assert_eq!(
        c.classify_error(&*err),
        Outcome::rejected(RejectKind::InvalidJson)
    );
}

// ---- streams: before the commit point ---------------------------------------------

#[tokio::test]
async fn a_stream_commits_at_its_first_content_while_still_open() {
    let layer = ValidateLayer::llm();
    let (body, tx) = open();
    let mut fut = Box::pin(layer.layer(once(sse(body))).oneshot(Request::new(())));

    tx.send(Ok(oa_role().into())).unwrap();
    assert!(
        poll_once(&mut fut).await.is_pending(),
        "no content yet: held back"
    );

    // The first content event arrives split in two chunks.
    let first = oa_text("Hello");
    tx.send(Ok(Bytes::copy_from_slice(&first.as_bytes()[..7])))
        .unwrap();
    assert!(poll_once(&mut fut).await.is_pending());
    tx.send(Ok(Bytes::copy_from_slice(&first.as_bytes()[7..])))
        .unwrap();
    let res = match poll_once(&mut fut).await {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => panic!("should have committed at the first content"),
    };
    assert!(res.body().is_stream());

    // The rest flows through after the held-back prefix.
    let rest = [oa_text(" world"), oa_finish("stop"), DONE.to_owned()];
    for r in &rest {
        tx.send(Ok(r.clone().into())).unwrap();
    }
    drop(tx);
    let got = body_bytes(res).await.unwrap();
    let want = [oa_role(), first, rest.concat()].concat();
    assert_eq!(got, want);
    let s = layer.stats().snapshot();
    assert_eq!((s.passed, s.truncated, s.late_rejected), (1, 0, 0));
}

#[tokio::test]
async fn bad_streams_fail_before_the_commit_point() {
    let cases: Vec<(Vec<String>, RejectKind)> = vec![
        (
            vec![oa_role(), "data: {\"error\":{\"message\":\"overloaded\"}}\n\n".into()],
            RejectKind::ErrorObject,
        ),
        (
            vec![oa_role(), "data: {\"choices\":[{\"delta\":{\"content\":\"\n\n".into()],
            RejectKind::InvalidJson,
        ),
        (vec![oa_role()], RejectKind::Truncated),
        (vec![], RejectKind::Truncated),
        (vec![oa_role(), oa_finish("stop"), DONE.into()], RejectKind::Empty),
        (
            vec![oa_role(), oa_chunk(json!({"refusal": "I can"}), None)],
            RejectKind::Refusal,
        ),
        // A refusal phrase split across events: held back until it is certain.
        (
            vec![oa_role(), oa_text("I'm so"), oa_text("rry, but I can"), oa_text("'t help with that.")],
            RejectKind::Refusal,
        ),
        (
            vec![
                "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n".into(),
            ],
            RejectKind::ErrorObject,
        ),
    ];
    for (events, want) in cases {
        let layer = ValidateLayer::llm();
        let err = run(&layer, sse(chunks(events.clone()))).await.unwrap_err();
        assert_eq!(reject_kind(&err), want, "{events:?}");
        assert_eq!(layer.stats().snapshot().passed, 0);
    }
}

#[tokio::test]
async fn a_transport_error_before_the_commit_point_is_returned_as_is() {
    let layer = ValidateLayer::llm();
    let (body, tx) = open();
    tx.send(Ok(oa_role().into())).unwrap();
    tx.send(Err(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )
    .into()))
        .unwrap();
    let err = run(&layer, sse(body)).await.unwrap_err();
    assert_eq!(
        LlmClassifier::default().classify_error(&*err),
        Outcome::failure(FailureKind::Reset)
    );
}

#[tokio::test]
async fn an_absurd_line_is_refused_before_the_commit_point() {
    let layer = ValidateLayer::llm().max_line(1024);
    let (body, tx) = open();
    let polls = body.polls.clone();
    tx.send(Ok(Bytes::from_static(b"data: "))).unwrap();
    for _ in 0..1000 {
        tx.send(Ok(Bytes::from(vec![b'x'; 100]))).unwrap();
    }
    let err = run(&layer, sse(body)).await.unwrap_err();
    assert_eq!(reject_kind(&err), RejectKind::Shape);
    let detail = find::<Invalid>(&*err).unwrap().detail();
    assert!(detail.contains("longer than 1024 bytes"), "{detail}");
    assert!(polls.load(Ordering::SeqCst) < 20);
}

#[tokio::test]
async fn the_hold_limit_bounds_what_is_held_back() {
    // Events that never carry content: commit once 1 KiB is held.
    let layer = ValidateLayer::llm().hold_limit(1024);
    let (body, tx) = open();
    let mut fut = Box::pin(layer.layer(once(sse(body))).oneshot(Request::new(())));
    let role = oa_role();
    let mut sent = 0;
    let res = loop {
        tx.send(Ok(role.clone().into())).unwrap();
        sent += role.len();
        if let Poll::Ready(r) = poll_once(&mut fut).await {
            break r.unwrap();
        }
        assert!(sent < 1024, "held more than the limit");
    };
    assert!(sent >= 1024);
    tx.send(Ok(oa_text("late content").into())).unwrap();
    tx.send(Ok(DONE.into())).unwrap();
    drop(tx);
    let got = body_bytes(res).await.unwrap();
    assert!(got.ends_with(DONE.as_bytes()));
}

// ---- streams: after the commit point ----------------------------------------------

#[tokio::test]
async fn a_stream_cut_after_the_commit_point_is_an_error_not_a_short_answer() {
    let layer = ValidateLayer::llm().provider(ProviderId::new("sim", "m"));
    let events = [oa_role(), oa_text("Once upon"), oa_text(" a time")];
    let res = run(&layer, sse(chunks(events))).await.unwrap();
    let err = body_bytes(res).await.unwrap_err();
    let t = find::<TruncatedStream>(&*err).expect("a truncated-stream error");
    assert!(t.detail().contains("without its terminal event"), "{err}");
    assert_eq!(t.provider().unwrap().provider(), "sim");
    assert_eq!(layer.stats().snapshot().truncated, 1);
}

#[tokio::test]
async fn a_stream_broken_after_the_commit_point_is_an_error() {
    let layer = ValidateLayer::llm();
    let (body, tx) = open();
    tx.send(Ok([oa_role(), oa_text("Hi")].concat().into()))
        .unwrap();
    let res = run(&layer, sse(body)).await.unwrap();
    tx.send(Ok(oa_text(" there").into())).unwrap();
    tx.send(Err(std::io::Error::from(
        std::io::ErrorKind::ConnectionReset,
    )
    .into()))
        .unwrap();
    let mut body = res.into_body();
    let mut data = Vec::new();
    let err = loop {
        match body.frame().await {
            Some(Ok(f)) => data.extend_from_slice(&f.into_data().unwrap()),
            Some(Err(e)) => break e,
            None => panic!("a broken stream must not end cleanly"),
        }
    };
    assert!(find::<TruncatedStream>(&*err).is_some());
    assert!(String::from_utf8(data).unwrap().contains(" there"));
    assert!(body.frame().await.is_none());
}

#[tokio::test]
async fn a_length_finish_after_the_commit_point_is_reported_or_an_error() {
    let events = oa_stream(&["Half", " an"], "length");

    let report = llm_truncating();
    let res = run(&report, sse(chunks(events.clone()))).await.unwrap();
    assert_eq!(body_bytes(res).await.unwrap(), events.concat());
    assert_eq!(report.stats().snapshot().late_rejected, 1);

    let strict = llm_truncating().after_commit(AfterCommit::Error);
    let res = run(&strict, sse(chunks(events))).await.unwrap();
    let err = body_bytes(res).await.unwrap_err();
    assert_eq!(reject_kind(&err), RejectKind::Truncated);
}

#[tokio::test]
async fn hold_complete_fails_over_on_length_and_schema() {
    let layer = llm_truncating().hold(StreamHold::Complete);
    let err = run(&layer, sse(chunks(oa_stream(&["Half"], "length"))))
        .await
        .unwrap_err();
    assert_eq!(reject_kind(&err), RejectKind::Truncated);

    let schema = JsonSchema::new(&json!({"type":"object","required":["answer"]})).unwrap();
    let layer = ValidateLayer::new(Validators::llm().with(schema)).hold(StreamHold::Complete);
    let err = run(
        &layer,
        sse(chunks(oa_stream(&["{\"wro", "ng\":true}"], "stop"))),
    )
    .await
    .unwrap_err();
    assert_eq!(reject_kind(&err), RejectKind::Schema);
    let events = oa_stream(&["{\"answer\":", "\"42\"}"], "stop");
    let res = run(&layer, sse(chunks(events.clone()))).await.unwrap();
    assert_eq!(body_bytes(res).await.unwrap(), events.concat());
}

#[tokio::test]
async fn anthropic_streams_end_at_message_stop() {
    let ev = |name: &str, data: serde_json::Value| format!("event: {name}\ndata: {data}\n\n");
    let full = vec![
        ev(
            "message_start",
            json!({"type":"message_start","message":{"content":[],"stop_reason":null}}),
        ),
        ev(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}),
        ),
        ev("ping", json!({"type":"ping"})),
        ev(
            "content_block_delta",
            json!({"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Bonjour"}}),
        ),
        ev(
            "content_block_stop",
            json!({"type":"content_block_stop","index":0}),
        ),
        ev(
            "message_delta",
            json!({"type":"message_delta","delta":{"stop_reason":"end_turn"}}),
        ),
        ev("message_stop", json!({"type":"message_stop"})),
    ];
    let layer = ValidateLayer::llm();
    let res = run(&layer, sse(chunks(full.clone()))).await.unwrap();
    assert_eq!(body_bytes(res).await.unwrap(), full.concat());

    let cut = full[..5].to_vec();
    let res = run(&layer, sse(chunks(cut))).await.unwrap();
    let err = body_bytes(res).await.unwrap_err();
    assert!(find::<TruncatedStream>(&*err).is_some());
}

#[tokio::test]
async fn closures_see_the_stream_as_it_grows() {
    // Reject any answer that mentions a competitor, as soon as it does.
    let layer = ValidateLayer::new(Validators::llm().with(from_fn(|out| {
        if out.content().contains("Acme") {
            Verdict::reject(RejectKind::Custom, "mentions Acme")
        } else {
            Verdict::Pass
        }
    })))
    .hold(StreamHold::Complete);
    let err = run(
        &layer,
        sse(chunks(oa_stream(&["Try ", "Ac", "me!"], "stop"))),
    )
    .await
    .unwrap_err();
    assert_eq!(reject_kind(&err), RejectKind::Custom);
}

#[test]
fn futures_and_bodies_are_send() {
    fn is_send<T: Send>(_: &T) {}
    let (body, _tx) = open();
    let fut = ValidateLayer::llm()
        .layer(once(sse(body)))
        .oneshot(Request::new(()));
    is_send(&fut);
    fn send_sync<T: Send + Sync>() {}
    send_sync::<ValidatedBody<ChanBody>>();
    send_sync::<ValidateLayer>();
    let cfg: tower_failover_validate::ValidateConfig =
        serde_json::from_str(r#"{"wire": "openai"}"#).unwrap();
    assert_eq!(cfg.wire, Some(tower_failover_validate::Wire::OpenAi));
    assert_eq!(
        serde_json::to_string(&tower_failover_validate::Wire::Anthropic).unwrap(),
        "\"anthropic\""
    );
}

// ---- streams that die or stall, before and after the commit point ----------------

/// The provider's idle timeout, as the provider crate reports it.
fn idle_cut() -> BoxError {
    use tower_failover_core::error::{Elapsed, TimeoutKind};
    TruncatedStream::new("no data for 30s (idle timeout)")
        .with_timeout(Elapsed::new(
            TimeoutKind::Idle,
            std::time::Duration::from_secs(30),
        ))
        .into()
}

#[tokio::test]
async fn a_stream_that_dies_or_stalls_before_the_commit_point_fails_over() {
    let classifier = LlmClassifier::default();
    for (cut, expected) in [
        (
            BoxError::from(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            FailureKind::Reset,
        ),
        (idle_cut(), FailureKind::Timeout),
    ] {
        let layer = ValidateLayer::llm();
        let (body, tx) = open();
        // The role chunk alone is not enough to commit: it is held back.
        tx.send(Ok(oa_role().into())).unwrap();
        tx.send(Err(cut)).unwrap();
        let err = run(&layer, sse(body)).await.unwrap_err();
        // Nothing reached the caller; the router sees the provider's failure and
        // retries elsewhere.
        let outcome = classifier.classify_error(&*err);
        assert_eq!(outcome, Outcome::failure(expected), "{err}");
        assert!(outcome.is_retryable_elsewhere(), "{err}");
    }
}

#[tokio::test]
async fn a_stall_after_the_commit_point_is_the_typed_truncation_and_a_timeout() {
    let layer = ValidateLayer::llm();
    let (body, tx) = open();
    tx.send(Ok([oa_role(), oa_text("Hi")].concat().into()))
        .unwrap();
    let res = run(&layer, sse(body)).await.unwrap();
    tx.send(Err(idle_cut())).unwrap();
    let err = body_bytes(res).await.unwrap_err();
    assert!(find::<TruncatedStream>(&*err).is_some(), "{err}");
    assert_eq!(
        LlmClassifier::default().classify_error(&*err),
        Outcome::failure(FailureKind::Timeout),
        "the provider's health hears a timeout"
    );
    assert_eq!(layer.stats().snapshot().truncated, 1);

    // Another deadline mid-stream (the attempt's) keeps its kind too.
    let (body, tx) = open();
    tx.send(Ok([oa_role(), oa_text("Hi")].concat().into()))
        .unwrap();
    let res = run(&layer, sse(body)).await.unwrap();
    tx.send(Err(tower_failover_core::error::Elapsed::new(
        tower_failover_core::error::TimeoutKind::Attempt,
        std::time::Duration::from_secs(600),
    )
    .into()))
        .unwrap();
    let err = body_bytes(res).await.unwrap_err();
    assert!(find::<TruncatedStream>(&*err).is_some(), "{err}");
    assert_eq!(
        LlmClassifier::default().classify_error(&*err),
        Outcome::failure(FailureKind::Timeout)
    );
}

// ---- what the layers above hear of a stream judged after its commit point --------

#[tokio::test]
async fn a_late_rejection_sets_the_responses_late_verdict_in_either_mode() {
    let events = oa_stream(&["Half", " an"], "length");
    for mode in [AfterCommit::Report, AfterCommit::Error] {
        let layer = llm_truncating().after_commit(mode);
        let res = run(&layer, sse(chunks(events.clone()))).await.unwrap();
        // Taken at the headers, as the observer, the circuit and the ramp do.
        let late = LateVerdict::of(&res).expect("a validated stream carries a late verdict");
        assert_eq!(late.rejected(), None, "{mode:?}: nothing is known yet");
        let ended = body_bytes(res).await;
        assert_eq!(ended.is_ok(), mode == AfterCommit::Report, "{mode:?}");
        assert_eq!(late.rejected(), Some(RejectKind::Truncated), "{mode:?}");
        assert_eq!(
            LateVerdict::outcome(Some(&late)),
            Outcome::Rejected {
                kind: RejectKind::Truncated
            }
        );
    }

    // A stream that passes its late checks leaves the cell empty.
    let layer = ValidateLayer::llm();
    let res = run(&layer, sse(chunks(oa_stream(&["Hi"], "stop"))))
        .await
        .unwrap();
    let late = LateVerdict::of(&res).unwrap();
    body_bytes(res).await.unwrap();
    assert_eq!(LateVerdict::outcome(Some(&late)), Outcome::Success);
}

#[tokio::test]
async fn only_a_stream_still_open_at_its_commit_point_carries_a_late_verdict() {
    let layer = ValidateLayer::llm();
    // A buffered answer is judged whole before it is returned.
    let res = run(&layer, json(chunks([oa_body("Hi", "stop")])))
        .await
        .unwrap();
    assert!(LateVerdict::of(&res).is_none());
    // An error status passes through unchecked.
    let mut res = json(chunks(["{}"]));
    *res.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
    let res = run(&layer, res).await.unwrap();
    assert!(LateVerdict::of(&res).is_none());
    // A stream that ended while held back was judged whole before its commit point.
    let strict = llm_truncating().hold(StreamHold::Complete);
    let res = run(&strict, sse(chunks(oa_stream(&["Hi"], "stop"))))
        .await
        .unwrap();
    assert!(LateVerdict::of(&res).is_none());
}

#[tokio::test]
async fn a_late_verdict_already_on_the_response_is_shared_not_replaced() {
    let events = oa_stream(&["Half", " an"], "length");
    let below = LateVerdict::new();
    let mut upstream = sse(chunks(events));
    upstream.extensions_mut().insert(below.clone());
    let res = run(&llm_truncating(), upstream).await.unwrap();
    let late = LateVerdict::of(&res).unwrap();
    body_bytes(res).await.unwrap();
    assert_eq!(late.rejected(), Some(RejectKind::Truncated));
    assert_eq!(below.rejected(), Some(RejectKind::Truncated), "one cell");
}

/// An upstream error whose text is the provider's own (an error event's message,
/// say) must not reach the caller's truncation error nor its log line: they say
/// what happened in our words.
#[tokio::test]
async fn a_truncation_never_repeats_the_upstream_errors_text() {
    const PROVIDER_TEXT: &str = "Incorrect API key provided: sk-proj-abc123";
    let cuts: [(BoxError, &str); 3] = [
        (
            TruncatedStream::new(format!(
                "anthropic stream error: overloaded_error: {PROVIDER_TEXT}"
            ))
            .into(),
            "reset",
        ),
        (
            std::io::Error::other(PROVIDER_TEXT).into(),
            "upstream body error",
        ),
        (
            TruncatedStream::new(PROVIDER_TEXT)
                .with_timeout(tower_failover_core::error::Elapsed::new(
                    tower_failover_core::error::TimeoutKind::Idle,
                    std::time::Duration::from_secs(30),
                ))
                .into(),
            "idle timeout after 30000 ms",
        ),
    ];
    for (cut, says) in cuts {
        let layer = ValidateLayer::llm().provider(ProviderId::new("sim", "m"));
        let (body, tx) = open();
        tx.send(Ok([oa_role(), oa_text("Hi")].concat().into()))
            .unwrap();
        let res = run(&layer, sse(body)).await.unwrap();
        tx.send(Err(cut)).unwrap();
        let err = body_bytes(res).await.unwrap_err();
        let t = find::<TruncatedStream>(&*err).expect("the typed truncation");
        for shown in [err.to_string(), format!("{err:?}"), t.detail().to_owned()] {
            assert!(!shown.contains("sk-proj"), "{shown}");
            assert!(!shown.contains("Incorrect API key"), "{shown}");
        }
        assert!(t.detail().contains(says), "{}", t.detail());
        assert_eq!(t.provider().unwrap().provider(), "sim");
        assert_eq!(layer.stats().snapshot().truncated, 1);
    }
}
