//! What the cross-crate tests share: the gateway example on loopback with a real
//! HTTP client, and a capture of every log line. Each test file includes it with
//! `mod common;` (and uses what it needs).
#![allow(dead_code)]

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_failover::Config;
use tower_failover_gateway::{self as gateway, GatewayConfig, SERVED_BY};

/// The gateway example serving `config` on a loopback port, and a client for it.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    pub(crate) client: Client<HttpConnector, Full<Bytes>>,
}

/// One whole answer of the gateway.
pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: String,
}

impl Answer {
    /// The provider that answered (`x-failover-provider`), or `""`.
    pub(crate) fn served_by(&self) -> &str {
        self.headers
            .get(SERVED_BY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Builds the gateway from `config` and serves it on `127.0.0.1:0`.
pub(crate) async fn start(config: &Config) -> Running {
    let mut full = GatewayConfig::new(config.clone());
    full.server.drain_timeout = Duration::from_secs(5);
    start_with(&full).await
}

/// Builds the gateway from a whole gateway configuration (`[server]`,
/// `[upstream]`, …) and serves it on `127.0.0.1:0` (`server.listen` is ignored).
pub(crate) async fn start_with(config: &GatewayConfig) -> Running {
    let gw = gateway::build_with(config).expect("a valid gateway configuration");
    serve_built(gw, &config.server).await
}

/// Serves an already built (perhaps wrapped) gateway on `127.0.0.1:0`.
pub(crate) async fn serve_built(gw: gateway::Gateway, server: &gateway::ServerConfig) -> Running {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let server = server.clone();
    let task = tokio::spawn(async move {
        gateway::serve_with(listener, gw, &server, async move {
            let _ = rx.await;
        })
        .await
    });
    Running {
        addr,
        stop: Some(tx),
        task,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Running {
    /// A JSON request with extra headers, read to its end.
    pub(crate) async fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send_exact(method, path, &all, body).await
    }

    /// A request with exactly these headers (no content type unless given),
    /// read to its end.
    pub(crate) async fn send_exact(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        // A generous guard against a hang, not a timing assertion.
        let res = tokio::time::timeout(Duration::from_secs(30), self.client.request(req))
            .await
            .expect("the gateway answers in time")
            .expect("the gateway answers");
        let (parts, body) = res.into_parts();
        let body = body.collect().await.expect("a whole body").to_bytes();
        Answer {
            status: parts.status,
            headers: parts.headers,
            body: String::from_utf8_lossy(&body).into_owned(),
        }
    }

    /// A JSON request, read to its end.
    pub(crate) async fn send(&self, method: &str, path: &str, body: impl Into<Bytes>) -> Answer {
        self.send_with(method, path, &[], body).await
    }

    /// Stops accepting, drains and returns how the server ended.
    pub(crate) async fn shutdown(mut self) -> std::io::Result<()> {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap()
    }
}

/// Every log line (all levels) of the current thread, for checking that no
/// provider text or key material is ever logged.
#[derive(Clone, Default)]
pub(crate) struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    /// What was logged so far.
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// Captures the current thread's log lines until the guard is dropped.
pub(crate) fn capture_logs() -> (Logs, tracing::subscriber::DefaultGuard) {
    let logs = Logs::default();
    let writer = logs.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (logs, tracing::subscriber::set_default(subscriber))
}

/// A simulated provider on loopback that answers fast (2 ms to the first token,
/// 1 ms between tokens).
pub(crate) async fn fast_sim(
    flavor: tower_failover::sim::Flavor,
    name: &str,
    seed: u64,
) -> tower_failover::sim::Sim {
    tower_failover::sim::Sim::builder(flavor)
        .name(name)
        .seed(seed)
        .ttft(Duration::from_millis(2))
        .token_interval(Duration::from_millis(1))
        .start()
        .await
        .expect("a simulated provider starts")
}

/// The configuration's `kind` for a simulator's wire format.
pub(crate) fn wire(flavor: tower_failover::sim::Flavor) -> &'static str {
    match flavor {
        tower_failover::sim::Flavor::OpenAi => "openai",
        _ => "anthropic",
    }
}

/// One `[[providers]]` entry for model `m` of a simulator at `base_url` (`/v1` is
/// added for the OpenAI wire), with a key ending in `wxyz` that tests look for.
pub(crate) fn provider_entry(name: &str, wire: &str, base_url: &str, priority: u32) -> String {
    let base_url = if wire == "openai" {
        format!("{base_url}/v1")
    } else {
        base_url.to_owned()
    };
    format!(
        r#"
        [[providers]]
        name = "{name}"
        model = "m"
        kind = "{wire}"
        base_url = "{base_url}"
        api_key = "sk-test-0000wxyz"
        priority = {priority}
        "#
    )
}
