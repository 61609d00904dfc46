//! Per-provider stacks over real loopback HTTP against the simulated providers.
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use http::{HeaderValue, Request, Response, Uri, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, ServiceBuilder};
use tower_failover_circuit::future::CircuitBody;
use tower_failover_circuit::{CircuitBreakerLayer, CircuitConfig, OpenMode};
use tower_failover_core::observe::{ObserveLayer, ObservedBody};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{Health, LlmClassifier};
use tower_failover_sim::{Flavor, Sim};

pub type HttpClient = Client<HttpConnector, ReplayBody>;

/// One provider's stack, boxed so that stacks of any shape fit one router.
pub type Stack = BoxCloneSyncService<Request<ReplayBody>, Response<StackBody>, BoxError>;

/// The body of a stack's response: the breaker's over the observer's.
pub type StackBody = CircuitBody<ObservedBody<Incoming>, LlmClassifier>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// circuit breaker → `ObserveLayer` → the sim's completion URL → hyper client.
pub fn stack(health: &Health, sim: &Sim, client: &HttpClient, mode: OpenMode) -> Stack {
    let uri: Uri = sim.completion_url().parse().unwrap();
    let breaker = CircuitConfig::default()
        .consecutive_failures(3)
        .cooldown(Duration::from_secs(60), Duration::from_secs(60))
        .mode(mode);
    let svc = ServiceBuilder::new()
        .layer(CircuitBreakerLayer::with_config(health.clone(), breaker).unwrap())
        .layer(ObserveLayer::new(health.clone()))
        .map_request(move |mut req: Request<ReplayBody>| {
            *req.uri_mut() = uri.clone();
            req.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            req
        })
        .map_err(BoxError::from)
        .service(client.clone());
    BoxCloneSyncService::new(svc)
}

pub async fn sim(name: &str, ttft: Duration, seed: u64) -> Sim {
    Sim::builder(Flavor::OpenAi)
        .name(name)
        .seed(seed)
        .ttft(ttft)
        .jitter(0.05)
        .reply_words(4, 8)
        .start()
        .await
        .unwrap()
}

pub fn chat() -> Request<ReplayBody> {
    Request::post("/")
        .body(ReplayBody::from(
            r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#,
        ))
        .unwrap()
}

/// Reads the whole answer (so that time to first byte is measured) and returns its
/// status.
pub async fn status_of(res: Result<Response<StackBody>, BoxError>) -> Result<u16, BoxError> {
    let res = res?;
    let status = res.status().as_u16();
    res.into_body().collect().await?;
    Ok(status)
}
