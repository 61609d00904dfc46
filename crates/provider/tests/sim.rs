//! Both adapters against the simulated providers, over real loopback HTTP and over
//! real TLS (a locally generated CA), streaming and not, healthy and faulty.

mod common;

use std::time::Duration;

use common::{chat, post, read_body};
use serde_json::Value;
use tower::ServiceExt;
use tower_failover_core::error::{
    Elapsed, Invalid, TimeoutKind, TransportError, TruncatedStream, find,
};
use tower_failover_core::{
    BoxError, Classify, FailureKind, Health, LlmClassifier, Outcome, RejectKind,
};
use tower_failover_provider::{
    Anthropic, HttpVersion, OpenAiCompatible, Price, Provider, RootStore, Usage, UsageHandle,
};
use tower_failover_sim::{Fault, FaultSpec, Flavor, RetryAfter, Sim, SimBuilder, tls};

const OPENAI_KEY: &str = "sk-openai-sim-key";
const ANTHROPIC_KEY: &str = "sk-ant-sim-key";

fn sim(flavor: Flavor) -> SimBuilder {
    let key = match flavor {
        Flavor::OpenAi => OPENAI_KEY,
        Flavor::Anthropic => ANTHROPIC_KEY,
    };
    Sim::builder(flavor).seed(3).api_key(key).echo(true)
}

fn openai(base: &str, health: &Health) -> Provider {
    OpenAiCompatible::builder()
        .base_url(format!("{base}/v1"))
        .api_key(OPENAI_KEY)
        .model("smart", "gpt-4o-mini")
        .price("gpt-4o-mini", Price::per_million(0.15, 0.60))
        .health(health.clone())
        .build()
        .unwrap()
        .into()
}

fn anthropic(base: &str, health: &Health) -> Provider {
    Anthropic::builder()
        .base_url(base)
        .api_key(ANTHROPIC_KEY)
        .model("smart", "claude-haiku-4-5")
        .price("claude-haiku-4-5", Price::per_million(1.0, 5.0))
        .health(health.clone())
        .build()
        .unwrap()
        .into()
}

/// One JSON and one streamed completion; checks shape, echo, usage and cost.
async fn exercise(svc: &Provider, health: &Health) {
    // JSON.
    let res = svc
        .clone()
        .oneshot(post(chat("smart", false)))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "application/json");
    let usage = *res
        .extensions()
        .get::<Usage>()
        .expect("usage of a JSON answer");
    assert_eq!(
        res.extensions().get::<UsageHandle>().unwrap().get(),
        Some(usage)
    );
    let (body, err) = read_body(res.into_body()).await;
    assert!(err.is_none());
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["object"], "chat.completion");
    assert_eq!(v["choices"][0]["message"]["role"], "assistant");
    let text = v["choices"][0]["message"]["content"].as_str().unwrap();
    assert!(text.starts_with("You said: \"Say hello"), "{text}");
    assert_eq!(v["usage"]["prompt_tokens"], usage.prompt_tokens);
    assert_eq!(v["usage"]["completion_tokens"], usage.completion_tokens);
    assert!(usage.prompt_tokens > 0 && usage.completion_tokens > 0);
    assert!(usage.cost.unwrap().micros() > 0);

    // Stream.
    let res = svc
        .clone()
        .oneshot(post(chat("smart", true)))
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(res.body().is_stream());
    assert!(res.extensions().get::<Usage>().is_none());
    let handle = res.extensions().get::<UsageHandle>().unwrap().clone();
    assert!(handle.get().is_none(), "not known before the stream ends");
    let (body, err) = read_body(res.into_body()).await;
    assert!(err.is_none(), "{err:?}");
    let text = String::from_utf8(body).unwrap();
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    let mut content = String::new();
    let mut last_usage = None;
    for (_, data) in tower_failover_core::sse::events(text.as_bytes()).unwrap() {
        if data == "[DONE]" {
            continue;
        }
        let chunk: Value = serde_json::from_str(&data).unwrap();
        assert_eq!(chunk["object"], "chat.completion.chunk");
        if let Some(c) = chunk["choices"][0]["delta"]["content"].as_str() {
            content.push_str(c);
        }
        if chunk["usage"].is_object() {
            last_usage = Some(chunk["usage"].clone());
        }
    }
    assert!(content.starts_with("You said: \"Say hello"), "{content}");
    let streamed = handle.get().expect("usage once the stream ended");
    let last_usage = last_usage.expect("a usage chunk");
    assert_eq!(last_usage["completion_tokens"], streamed.completion_tokens);
    assert!(streamed.cost.is_some());

    let total = health.usage();
    assert_eq!(
        total.prompt_tokens,
        usage.prompt_tokens + streamed.prompt_tokens
    );
    assert_eq!(
        total.completion_tokens,
        usage.completion_tokens + streamed.completion_tokens
    );
    let cost_micros = usage.cost.unwrap().micros() + streamed.cost.unwrap().micros();
    assert!((total.cost - cost_micros as f64 / 1e6).abs() < 1e-9);
}

#[tokio::test]
async fn openai_over_loopback_http() {
    let sim = sim(Flavor::OpenAi).start().await.unwrap();
    let health = Health::standalone("openai", "gpt-4o-mini");
    exercise(&openai(sim.base_url(), &health), &health).await;
    assert_eq!(sim.counters().status(200), 2);
}

#[tokio::test]
async fn anthropic_over_loopback_http() {
    let sim = sim(Flavor::Anthropic).start().await.unwrap();
    let health = Health::standalone("anthropic", "claude-haiku-4-5");
    exercise(&anthropic(sim.base_url(), &health), &health).await;
    assert_eq!(sim.counters().status(200), 2);
}

#[tokio::test]
async fn both_over_real_tls_http2_and_http1() {
    let certs = tls::self_signed().unwrap();
    for version in [HttpVersion::Auto, HttpVersion::Http1, HttpVersion::Http2] {
        for flavor in [Flavor::OpenAi, Flavor::Anthropic] {
            let sim = sim(flavor)
                .tls(certs.server_config.clone())
                .start()
                .await
                .unwrap();
            let base = sim.base_url().replace("127.0.0.1", "localhost");
            assert!(base.starts_with("https://localhost:"));
            let health = Health::standalone(flavor.as_str(), "m");
            let svc: Provider = match flavor {
                Flavor::OpenAi => OpenAiCompatible::builder()
                    .base_url(format!("{base}/v1"))
                    .api_key(OPENAI_KEY)
                    .model("smart", "gpt-4o-mini")
                    .price("*", Price::per_million(1.0, 1.0))
                    .tls_roots(RootStore::None)
                    .ca_pem(certs.ca_pem.clone())
                    .http_version(version)
                    .health(health.clone())
                    .build()
                    .unwrap()
                    .into(),
                Flavor::Anthropic => Anthropic::builder()
                    .base_url(&base)
                    .api_key(ANTHROPIC_KEY)
                    .model("smart", "claude-haiku-4-5")
                    .price("*", Price::per_million(1.0, 1.0))
                    .tls_roots(RootStore::None)
                    .ca_pem(certs.ca_pem.clone())
                    .http_version(version)
                    .health(health.clone())
                    .build()
                    .unwrap()
                    .into(),
            };
            exercise(&svc, &health).await;
        }
    }
}

#[tokio::test]
async fn tls_with_an_untrusted_certificate_is_a_connect_failure() {
    let certs = tls::self_signed().unwrap();
    let sim = sim(Flavor::OpenAi)
        .tls(certs.server_config.clone())
        .start()
        .await
        .unwrap();
    // Trusts the public web roots only: the test CA is unknown.
    let svc = OpenAiCompatible::builder()
        .base_url(format!("{}/v1", sim.base_url()))
        .api_key(OPENAI_KEY)
        .build()
        .unwrap();
    let err = svc
        .oneshot(post(chat("gpt-4o-mini", false)))
        .await
        .unwrap_err();
    assert_eq!(
        find::<TransportError>(&*err).unwrap().kind(),
        FailureKind::Connect,
        "{err}"
    );
    assert_eq!(
        LlmClassifier::default().classify_error(&*err),
        Outcome::failure(FailureKind::Connect)
    );
}

/// The outcome of one request: a response's class, or an error's.
async fn outcome(svc: &Provider, stream: bool) -> (Outcome, Option<BoxError>, Option<Value>) {
    let c = LlmClassifier::default();
    match svc.clone().oneshot(post(chat("smart", stream))).await {
        Err(e) => (c.classify_error(&*e), Some(e), None),
        Ok(res) => {
            let class = c.classify_response(&res);
            let (body, err) = read_body(res.into_body()).await;
            match err {
                Some(e) => (c.classify_error(&*e), Some(e), None),
                None => (class, None, serde_json::from_slice(&body).ok()),
            }
        }
    }
}

#[tokio::test]
async fn openai_faults_become_the_right_outcomes() {
    let sim = sim(Flavor::OpenAi).start().await.unwrap();
    let svc: Provider = OpenAiCompatible::builder()
        .base_url(format!("{}/v1", sim.base_url()))
        .api_key(OPENAI_KEY)
        .first_byte_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .into();
    let set = |f: Fault| sim.handle().set_faults([FaultSpec::always(f)]).unwrap();

    set(Fault::Status(503));
    let (o, _, body) = outcome(&svc, false).await;
    assert!(o.is_failure(), "{o}");
    assert_eq!(body.unwrap()["error"]["type"], "server_error");

    set(Fault::RateLimit(RetryAfter::Seconds(3)));
    let (o, _, _) = outcome(&svc, false).await;
    assert_eq!(
        o,
        Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(3))
        }
    );

    set(Fault::MalformedJson);
    let (o, e, _) = outcome(&svc, false).await;
    assert_eq!(o, Outcome::rejected(RejectKind::InvalidJson));
    assert!(find::<Invalid>(&*e.unwrap()).unwrap().provider().is_some());

    set(Fault::Truncate(3));
    let (o, e, _) = outcome(&svc, true).await;
    assert_eq!(o, Outcome::failure(FailureKind::Reset));
    assert!(find::<TruncatedStream>(&*e.unwrap()).is_some());

    // An error object mid-stream, then the end without [DONE].
    set(Fault::ErrorObject);
    let (o, e, _) = outcome(&svc, true).await;
    assert!(find::<TruncatedStream>(&*e.unwrap()).is_some(), "{o}");

    set(Fault::Reset);
    let (o, e, _) = outcome(&svc, false).await;
    assert_eq!(o, Outcome::failure(FailureKind::Reset), "{e:?}");

    set(Fault::Hang);
    let (o, e, _) = outcome(&svc, false).await;
    assert_eq!(o, Outcome::failure(FailureKind::Timeout));
    assert_eq!(
        find::<Elapsed>(&*e.unwrap()).unwrap().kind(),
        TimeoutKind::FirstByte
    );

    sim.handle().clear_faults();
    let (o, _, _) = outcome(&svc, true).await;
    assert_eq!(o, Outcome::Success);

    // Last: the sim closes its listener, and reopens it only later. (A pooled
    // connection would get a reset instead: a fresh client has none.)
    set(Fault::Refuse);
    let fresh: Provider = OpenAiCompatible::builder()
        .base_url(format!("{}/v1", sim.base_url()))
        .build()
        .unwrap()
        .into();
    let (o, e, _) = outcome(&fresh, false).await;
    assert_eq!(o, Outcome::failure(FailureKind::Connect), "{e:?}");
}

#[tokio::test]
async fn anthropic_faults_become_the_right_outcomes() {
    let sim = sim(Flavor::Anthropic).start().await.unwrap();
    let svc: Provider = Anthropic::builder()
        .base_url(sim.base_url())
        .api_key(ANTHROPIC_KEY)
        .first_byte_timeout(Duration::from_millis(300))
        .build()
        .unwrap()
        .into();
    let set = |f: Fault| sim.handle().set_faults([FaultSpec::always(f)]).unwrap();

    set(Fault::Status(529));
    let (o, _, body) = outcome(&svc, false).await;
    assert_eq!(o, Outcome::failure(FailureKind::Overloaded));
    // The error body is in OpenAI's shape, like everything the adapter answers.
    assert_eq!(
        body.unwrap(),
        serde_json::json!({"error": {"message": "Overloaded", "type": "overloaded_error",
                                     "param": null, "code": null}})
    );

    set(Fault::RateLimit(RetryAfter::Seconds(4)));
    let (o, _, _) = outcome(&svc, false).await;
    assert_eq!(
        o,
        Outcome::RateLimited {
            retry_after: Some(Duration::from_secs(4))
        }
    );

    set(Fault::MalformedJson);
    assert_eq!(
        outcome(&svc, false).await.0,
        Outcome::rejected(RejectKind::InvalidJson)
    );
    assert_eq!(
        outcome(&svc, true).await.0,
        Outcome::rejected(RejectKind::InvalidJson)
    );

    set(Fault::ErrorObject);
    assert_eq!(
        outcome(&svc, false).await.0,
        Outcome::rejected(RejectKind::ErrorObject)
    );
    let (o, e, _) = outcome(&svc, true).await;
    assert_eq!(o, Outcome::failure(FailureKind::Overloaded));
    assert!(find::<TransportError>(&*e.unwrap()).is_some());

    set(Fault::Truncate(3));
    let (o, e, _) = outcome(&svc, true).await;
    assert_eq!(o, Outcome::failure(FailureKind::Reset));
    assert!(find::<TruncatedStream>(&*e.unwrap()).is_some());

    set(Fault::Reset);
    assert_eq!(
        outcome(&svc, true).await.0,
        Outcome::failure(FailureKind::Reset)
    );

    set(Fault::Hang);
    let (o, e, _) = outcome(&svc, true).await;
    assert_eq!(o, Outcome::failure(FailureKind::Timeout));
    assert_eq!(
        find::<Elapsed>(&*e.unwrap()).unwrap().kind(),
        TimeoutKind::FirstByte
    );

    sim.handle().clear_faults();

    // A wrong key is the operator's: the provider's failure, and its text (which
    // may quote the key) is replaced by ours.
    let wrong: Provider = Anthropic::builder()
        .base_url(sim.base_url())
        .api_key("sk-ant-wrong")
        .build()
        .unwrap()
        .into();
    let (o, _, body) = outcome(&wrong, false).await;
    assert_eq!(o, Outcome::failure(FailureKind::Credentials));
    let body = body.unwrap();
    assert_eq!(body["error"]["type"], "upstream_credentials_error");
    assert!(!body.to_string().contains("sk-ant-wrong"));
    assert_eq!(outcome(&svc, false).await.0, Outcome::Success);
}
