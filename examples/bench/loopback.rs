//! The loopback client the end-to-end benchmarks share: one pooled hyper-util client
//! and one JSON `POST` read to its end.

use bytes::Bytes;
use http::{Request, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

/// A pooled HTTP/1 client for loopback targets.
pub(crate) type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client with `TCP_NODELAY` and up to 256 idle connections per host.
pub(crate) fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(connector)
}

/// `POST`s `body` as JSON to `url`; `true` when the answer succeeded and was read
/// to its end.
pub(crate) async fn post(client: &HttpClient, url: &Uri, body: &'static str) -> bool {
    let req = Request::post(url.clone())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .expect("a valid request");
    match client.request(req).await {
        Ok(res) => res.status().is_success() && res.into_body().collect().await.is_ok(),
        Err(_) => false,
    }
}

/// The simulated OpenAI-compatible provider with no latency and no jitter.
pub(crate) async fn start_sim() -> tower_failover_sim::Sim {
    tower_failover_sim::Sim::builder(tower_failover_sim::Flavor::OpenAi)
        .name("sim")
        .ttft(std::time::Duration::ZERO)
        .token_interval(std::time::Duration::ZERO)
        .jitter(0.0)
        .start()
        .await
        .expect("the simulated provider starts")
}

/// A gateway configuration with one entry: the simulator at `sim_base`.
pub(crate) fn gateway_config(sim_base: &str) -> tower_failover::Config {
    tower_failover::Config::from_toml_str(&format!(
        r#"
        [[providers]]
        name = "sim"
        model = "gpt-4o-mini"
        kind = "openai"
        base_url = "{sim_base}/v1"
        api_key = "sk-bench-not-a-secret"
        "#
    ))
    .expect("a valid gateway configuration")
}
