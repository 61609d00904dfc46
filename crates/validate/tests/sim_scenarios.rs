//! Scenario tests over real loopback HTTP against the simulated providers: a provider
//! answering 200 with unusable output is rejected by validation, and a minimal
//! failover loop gets the caller a valid answer from another provider, streaming and
//! not. A stream truncated after its commit point reaches the caller as an error.

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tower::{BoxError, Layer, ServiceExt};
use tower_failover_core::error::{Invalid, TruncatedStream, find};
use tower_failover_core::{Classify, LateVerdict, LlmClassifier, RejectKind};
use tower_failover_sim::{Fault, FaultSpec, Flavor, Sim};
use tower_failover_validate::checks::{FinishReason, JsonSchema};
use tower_failover_validate::{
    AfterCommit, StreamHold, Validate, ValidateLayer, ValidatedBody, Validators,
};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// The default checks plus the opt-in truncation check ([`FinishReason`]), so a
/// `length` finish fails over.
fn llm_truncating() -> ValidateLayer {
    ValidateLayer::new(Validators::llm().with(FinishReason::default()))
}

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

async fn sim(flavor: Flavor, name: &str, fault: Option<Fault>) -> Sim {
    let mut b = Sim::builder(flavor)
        .name(name)
        .seed(11)
        .ttft(Duration::from_millis(1))
        .token_interval(Duration::ZERO);
    if let Some(f) = fault {
        b = b.fault(FaultSpec::always(f));
    }
    b.start().await.expect("sim starts")
}

/// One provider's stack: the hyper client behind a validation layer.
fn stack(
    client: &HttpClient,
    layer: &ValidateLayer,
) -> Validate<
    impl tower::Service<
        Request<Full<Bytes>>,
        Response = Response<Incoming>,
        Error = hyper_util::client::legacy::Error,
        Future: Send,
    > + Clone,
> {
    let client = client.clone();
    layer.layer(tower::service_fn(move |req: Request<Full<Bytes>>| {
        client.request(req)
    }))
}

fn request(sim: &Sim, body: &Value) -> Request<Full<Bytes>> {
    Request::post(sim.completion_url())
        .header("content-type", "application/json")
        .header("authorization", "Bearer test")
        .header("x-api-key", "test")
        .header("anthropic-version", "2023-06-01")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// The minimal failover the routers generalize: try each provider in order, move on
/// when the outcome is retryable elsewhere (a rejection, here).
async fn failover(
    providers: &[&Sim],
    layer: &ValidateLayer,
    body: &Value,
) -> Result<(String, Response<ValidatedBody<Incoming>>, Vec<RejectKind>), BoxError> {
    let client = client();
    let mut rejected = Vec::new();
    let mut last = None;
    for sim in providers {
        match stack(&client, layer).oneshot(request(sim, body)).await {
            Ok(res) => return Ok((sim.handle().name().to_owned(), res, rejected)),
            Err(e) => {
                let outcome = LlmClassifier::default().classify_error(&*e);
                assert!(outcome.is_retryable_elsewhere(), "{e}");
                rejected.push(
                    find::<Invalid>(&*e)
                        .map(Invalid::kind)
                        .expect("a rejection"),
                );
                last = Some(e);
            }
        }
    }
    Err(last.unwrap_or_else(|| "no provider".into()))
}

fn chat(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Say something nice."}],
        "stream": stream
    })
}

fn messages(stream: bool) -> Value {
    json!({
        "model": "claude-haiku-4-5",
        "max_tokens": 256,
        "messages": [{"role": "user", "content": "Say something nice."}],
        "stream": stream
    })
}

fn schema() -> Value {
    json!({
        "type": "object",
        "required": ["city", "population"],
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "additionalProperties": false
    })
}

fn chat_with_schema(stream: bool) -> Value {
    let mut v = chat(stream);
    v["response_format"] = json!({
        "type": "json_schema",
        "json_schema": {"name": "city", "strict": true, "schema": schema()}
    });
    v
}

/// The text of a buffered OpenAI answer.
async fn buffered_content(res: Response<ValidatedBody<Incoming>>) -> String {
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    let v: Value = serde_json::from_slice(&bytes).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .or_else(|| v["content"][0]["text"].as_str())
        .unwrap()
        .to_owned()
}

/// The concatenated deltas of a streamed answer; panics unless it ended properly.
async fn streamed_content(res: Response<ValidatedBody<Incoming>>) -> String {
    let bytes = res
        .into_body()
        .collect()
        .await
        .expect("a complete stream")
        .to_bytes();
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    assert!(
        text.contains("data: [DONE]") || text.contains("message_stop"),
        "no terminal event"
    );
    let mut out = String::new();
    for (_, data) in tower_failover_core::sse::events(&bytes).expect("an SSE body") {
        let Ok(v) = serde_json::from_str::<Value>(&data) else {
            continue;
        };
        if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
            out.push_str(t);
        }
        if let Some(t) = v["delta"]["text"].as_str() {
            out.push_str(t);
        }
    }
    out
}

#[tokio::test]
async fn buffered_bad_output_fails_over_to_a_valid_answer() {
    let healthy = sim(Flavor::OpenAi, "healthy", None).await;
    let cases = [
        (Fault::MalformedJson, RejectKind::InvalidJson),
        (Fault::ErrorObject, RejectKind::ErrorObject),
        (Fault::EmptyContent, RejectKind::Empty),
        (Fault::Refusal, RejectKind::Refusal),
        (Fault::Length, RejectKind::Truncated),
    ];
    for (fault, want) in cases {
        let bad = sim(Flavor::OpenAi, "bad", Some(fault.clone())).await;
        let layer = llm_truncating();
        let (name, res, rejected) = failover(&[&bad, &healthy], &layer, &chat(false))
            .await
            .unwrap_or_else(|e| panic!("{fault}: {e}"));
        assert_eq!(name, "healthy", "{fault}");
        assert_eq!(rejected, [want], "{fault}");
        assert!(!buffered_content(res).await.is_empty());
        assert_eq!(bad.counters().received, 1);
    }
}

#[tokio::test]
async fn buffered_schema_breaking_output_fails_over() {
    let healthy = sim(Flavor::OpenAi, "healthy", None).await;
    let layer = ValidateLayer::new(Validators::llm().with(JsonSchema::new(&schema()).unwrap()));
    for fault in [Fault::WrongSchema, Fault::NotJson] {
        let bad = sim(Flavor::OpenAi, "bad", Some(fault.clone())).await;
        let (name, res, rejected) = failover(&[&bad, &healthy], &layer, &chat_with_schema(false))
            .await
            .unwrap();
        assert_eq!(
            (name.as_str(), rejected.as_slice()),
            ("healthy", &[RejectKind::Schema][..]),
            "{fault}"
        );
        let content: Value = serde_json::from_str(&buffered_content(res).await).unwrap();
        assert!(
            content["city"].is_string() && content["population"].is_i64(),
            "{content}"
        );
    }
}

#[tokio::test]
async fn streamed_bad_output_fails_over_before_the_commit_point() {
    let healthy = sim(Flavor::OpenAi, "healthy", None).await;
    let cases = [
        (Fault::ErrorObject, RejectKind::ErrorObject),
        (Fault::EmptyContent, RejectKind::Empty),
        (Fault::Refusal, RejectKind::Refusal),
        // Only the role chunk, then the stream ends: nothing was committed yet.
        (Fault::Truncate(1), RejectKind::Truncated),
    ];
    for (fault, want) in cases {
        let bad = sim(Flavor::OpenAi, "bad", Some(fault.clone())).await;
        let layer = llm_truncating();
        let (name, res, rejected) = failover(&[&bad, &healthy], &layer, &chat(true))
            .await
            .unwrap_or_else(|e| panic!("{fault}: {e}"));
        assert_eq!(name, "healthy", "{fault}");
        assert_eq!(rejected, [want], "{fault}");
        assert!(!streamed_content(res).await.is_empty(), "{fault}");
    }
}

/// Faults that show only after the first content token (a broken event in the
/// middle, a `length` finish, JSON that turns out not to match the schema) fail over
/// when the layer holds the whole stream back.
#[tokio::test]
async fn streamed_late_faults_fail_over_when_holding_the_whole_stream() {
    let healthy = sim(Flavor::OpenAi, "healthy", None).await;
    let plain = llm_truncating().hold(StreamHold::Complete);
    let with_schema =
        ValidateLayer::new(Validators::llm().with(JsonSchema::new(&schema()).unwrap()))
            .hold(StreamHold::Complete);
    let cases = [
        (
            Fault::MalformedJson,
            &plain,
            chat(true),
            RejectKind::InvalidJson,
        ),
        (Fault::Length, &plain, chat(true), RejectKind::Truncated),
        (
            Fault::WrongSchema,
            &with_schema,
            chat_with_schema(true),
            RejectKind::Schema,
        ),
        (
            Fault::NotJson,
            &with_schema,
            chat_with_schema(true),
            RejectKind::Schema,
        ),
    ];
    for (fault, layer, body, want) in cases {
        let bad = sim(Flavor::OpenAi, "bad", Some(fault.clone())).await;
        let (name, res, rejected) = failover(&[&bad, &healthy], layer, &body)
            .await
            .unwrap_or_else(|e| panic!("{fault}: {e}"));
        assert_eq!(
            (name.as_str(), rejected.as_slice()),
            ("healthy", &[want][..]),
            "{fault}"
        );
        let content = streamed_content(res).await;
        if body.get("response_format").is_some() {
            let v: Value = serde_json::from_str(&content).unwrap();
            assert!(v["city"].is_string() && v["population"].is_i64(), "{v}");
        } else {
            assert!(!content.is_empty());
        }
    }
}

/// With the default hold (first content), a broken event after the commit point
/// cannot fail over. It never reaches the caller, whatever `AfterCommit` says: the
/// body ends with the typed truncation, as for any stream that breaks, and the
/// provider's health hears the malformed answer. (Found by the chaos soak: the
/// caller used to get the broken event and a clean `[DONE]`.)
#[tokio::test]
async fn soak_finding_a_broken_event_after_the_commit_point_ends_with_the_typed_truncation() {
    let bad = sim(Flavor::OpenAi, "bad", Some(Fault::MalformedJson)).await;
    for mode in [AfterCommit::Report, AfterCommit::Error] {
        let layer = llm_truncating().after_commit(mode);
        let res = stack(&client(), &layer)
            .oneshot(request(&bad, &chat(true)))
            .await
            .unwrap();
        let late = LateVerdict::of(&res).expect("a validated stream carries its late verdict");
        let mut body = res.into_body();
        let mut seen = Vec::new();
        let err = loop {
            match body.frame().await {
                Some(Ok(f)) => seen.extend_from_slice(&f.into_data().unwrap()),
                Some(Err(e)) => break e,
                None => panic!("{mode:?}: a stream with a broken event must not end cleanly"),
            }
        };
        let t = find::<TruncatedStream>(&*err).expect("the typed truncation");
        assert!(t.detail().contains("malformed"), "{err}");
        let seen = String::from_utf8(seen).unwrap();
        for line in seen.lines().filter_map(|l| l.strip_prefix("data: ")) {
            assert!(
                serde_json::from_str::<Value>(line).is_ok(),
                "{mode:?}: a broken event reached the caller: {line}"
            );
        }
        assert!(!seen.contains("[DONE]"), "{mode:?}: {seen}");
        assert_eq!(layer.stats().snapshot().truncated, 1, "{mode:?}");
        assert_eq!(
            late.rejected(),
            Some(RejectKind::InvalidJson),
            "{mode:?}: the health hears the rejection"
        );
    }
}

#[tokio::test]
async fn a_stream_truncated_after_the_commit_point_is_an_error_for_the_caller() {
    // Role chunk and two content chunks, then a clean end without `data: [DONE]`.
    let bad = sim(Flavor::OpenAi, "bad", Some(Fault::Truncate(3))).await;
    let layer = ValidateLayer::llm();
    let res = stack(&client(), &layer)
        .oneshot(request(&bad, &chat(true)))
        .await;
    // The first content passed: committed, so no failover is possible any more...
    let res = res.expect("committed at the first content");
    // ...and the caller's body ends in an error, never as a clean short answer.
    let err = res.into_body().collect().await.unwrap_err();
    assert!(find::<TruncatedStream>(&*err).is_some(), "{err}");
    assert_eq!(layer.stats().snapshot().truncated, 1);
}

#[tokio::test]
async fn a_length_finish_after_the_commit_point_is_reported() {
    let bad = sim(Flavor::OpenAi, "bad", Some(Fault::Length)).await;
    let layer = llm_truncating();
    let res = stack(&client(), &layer)
        .oneshot(request(&bad, &chat(true)))
        .await
        .unwrap();
    let content = streamed_content(res).await;
    assert!(!content.is_empty());
    assert_eq!(layer.stats().snapshot().late_rejected, 1);
}

#[tokio::test]
async fn anthropic_bad_output_fails_over_too() {
    let healthy = sim(Flavor::Anthropic, "healthy", None).await;
    for (fault, stream, want) in [
        (Fault::ErrorObject, false, RejectKind::ErrorObject),
        (Fault::EmptyContent, false, RejectKind::Empty),
        (Fault::Length, false, RejectKind::Truncated),
        (Fault::ErrorObject, true, RejectKind::ErrorObject),
        (Fault::Refusal, true, RejectKind::Refusal),
    ] {
        let bad = sim(Flavor::Anthropic, "bad", Some(fault.clone())).await;
        let layer = llm_truncating();
        let (name, res, rejected) = failover(&[&bad, &healthy], &layer, &messages(stream))
            .await
            .unwrap_or_else(|e| panic!("{fault} stream={stream}: {e}"));
        assert_eq!(
            (name.as_str(), rejected.as_slice()),
            ("healthy", &[want][..]),
            "{fault} stream={stream}"
        );
        let content = if stream {
            streamed_content(res).await
        } else {
            buffered_content(res).await
        };
        assert!(!content.is_empty());
    }
}

#[tokio::test]
async fn an_anthropic_stream_cut_after_the_commit_point_is_an_error() {
    let bad = sim(Flavor::Anthropic, "bad", Some(Fault::Truncate(5))).await;
    let layer = ValidateLayer::llm();
    let res = stack(&client(), &layer)
        .oneshot(request(&bad, &messages(true)))
        .await
        .expect("committed");
    let err = res.into_body().collect().await.unwrap_err();
    assert!(find::<TruncatedStream>(&*err).is_some(), "{err}");
}
