//! The gateway's other front doors over real loopback HTTP, simulated providers
//! behind them: OpenAI's embeddings and Anthropic's Messages API.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tower_failover::Config;
use tower_failover::sim::{Fault, Flavor, Sim};
use tower_failover_examples::gateway::{self, SERVED_BY};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

struct Running {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<std::io::Result<()>>,
    client: HttpClient,
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn served_by(&self) -> &str {
        self.headers
            .get(SERVED_BY)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

async fn start(config: &Config) -> Running {
    let gw = gateway::build(config).expect("a valid gateway configuration");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(gateway::serve(
        listener,
        gw,
        async move {
            let _ = rx.await;
        },
        Duration::from_secs(5),
    ));
    Running {
        addr,
        stop: Some(tx),
        task,
        client: Client::builder(TokioExecutor::new()).build_http(),
    }
}

impl Running {
    async fn send_with(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: impl Into<Bytes>,
    ) -> Answer {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr))
            .header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Full::new(body.into())).unwrap();
        // A generous guard, not a timing assertion.
        let res = tokio::time::timeout(Duration::from_secs(20), self.client.request(req))
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

    async fn post(&self, path: &str, body: &Value) -> Answer {
        self.send_with("POST", path, &[], body.to_string()).await
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

async fn sim(flavor: Flavor, name: &str, seed: u64, models: &[&str]) -> Sim {
    Sim::builder(flavor)
        .name(name)
        .seed(seed)
        .models(models.iter().copied())
        .ttft(Duration::from_millis(2))
        .token_interval(Duration::from_millis(1))
        .start()
        .await
        .expect("a sim starts")
}

fn embed_request(input: Value) -> Value {
    json!({"model": "text-embedding-3-small", "input": input})
}

// --- embeddings --------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn simulated_gateway_serves_embeddings_and_lists_the_model() {
    let simulated = gateway::simulated().await.unwrap();
    let gw = start(&simulated.config).await;

    let models = gw.send_with("GET", "/v1/models", &[], "").await.json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|m| m["id"].as_str())
        .collect();
    assert!(
        ids.contains(&gateway::SIMULATED_EMBEDDINGS_MODEL),
        "{ids:?}"
    );
    assert!(ids.contains(&"gpt-4o-mini"), "{ids:?}");

    let a = gw
        .post(
            "/v1/embeddings",
            &embed_request(json!(["one", "two", "one"])),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.served_by(), "openai/text-embedding-3-small");
    let v = a.json();
    assert_eq!(v["object"], "list");
    let data = v["data"].as_array().unwrap();
    assert_eq!(data.len(), 3);
    assert_eq!(data[0]["embedding"].as_array().unwrap().len(), 1536);
    // Deterministic: the same text, the same vector; another text, another.
    assert_eq!(data[0]["embedding"], data[2]["embedding"]);
    assert_ne!(data[0]["embedding"], data[1]["embedding"]);
    assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);

    // Chat never reaches the embeddings entry.
    let chat = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    for _ in 0..6 {
        let a = gw.post("/v1/chat/completions", &chat).await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert!(!a.served_by().contains("embedding"), "{}", a.served_by());
    }
    gw.shutdown().await;
}

/// Two embeddings entries and a chat entry: an outage of the first embeddings
/// provider is invisible; chat requests never reach an embeddings entry and
/// embeddings requests never reach the chat entry.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_fail_over_only_between_embeddings_entries() {
    let chat = sim(Flavor::OpenAi, "chat", 1, &["gpt-4o-mini"]).await;
    let first = sim(Flavor::OpenAi, "first", 2, &["text-embedding-3-small"]).await;
    let second = sim(Flavor::OpenAi, "second", 3, &["text-embedding-3-small"]).await;
    let config = Config::from_toml_str(&format!(
        r#"
        router = "fallback"
        deadline = "10s"

        [circuit]
        consecutive_failures = 2
        cooldown = "30s"

        [[providers]]
        name = "chat"
        model = "gpt-4o-mini"
        kind = "openai"
        base_url = "{}/v1"
        priority = 0

        [[providers]]
        name = "first"
        model = "text-embedding-3-small"
        embeddings = true
        kind = "openai"
        base_url = "{}/v1"
        priority = 0

        [[providers]]
        name = "second"
        model = "text-embedding-3-small"
        embeddings = true
        kind = "openai"
        base_url = "{}/v1"
        priority = 1
        "#,
        chat.base_url(),
        first.base_url(),
        second.base_url()
    ))
    .unwrap();
    let gw = start(&config).await;

    let healthy = gw
        .post("/v1/embeddings", &embed_request(json!("hello")))
        .await;
    assert_eq!(healthy.status, StatusCode::OK, "{}", healthy.body);
    assert_eq!(healthy.served_by(), "first/text-embedding-3-small");

    first.set_faults([Fault::Status(503).into()]).unwrap();
    for _ in 0..4 {
        let a = gw
            .post("/v1/embeddings", &embed_request(json!("hello")))
            .await;
        assert_eq!(a.status, StatusCode::OK, "{}", a.body);
        assert_eq!(a.served_by(), "second/text-embedding-3-small");
        // Another provider, the same model: the same vector.
        assert_eq!(a.json()["data"], healthy.json()["data"]);
    }
    assert!(first.counters().status(503) >= 1);

    // Everything down: OpenAI's error shape, 503 with retry-after.
    second.set_faults([Fault::Status(503).into()]).unwrap();
    let mut last = None;
    for _ in 0..4 {
        last = Some(
            gw.post("/v1/embeddings", &embed_request(json!("hello")))
                .await,
        );
    }
    let down = last.unwrap();
    assert_eq!(
        down.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{}",
        down.body
    );
    assert!(down.headers.contains_key("retry-after"));
    assert!(down.json()["error"]["message"].is_string());

    // The chat entry saw no embeddings request, and vice versa.
    let c = gw
        .post(
            "/v1/chat/completions",
            &json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}),
        )
        .await;
    assert_eq!(c.status, StatusCode::OK, "{}", c.body);
    assert_eq!(c.served_by(), "chat/gpt-4o-mini");
    assert_eq!(chat.counters().received, 1);
    assert_eq!(first.counters().chat_completions, 0);
    assert_eq!(second.counters().chat_completions, 0);
    gw.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embeddings_without_an_embeddings_entry_is_a_typed_404() {
    let chat = sim(Flavor::OpenAi, "chat", 1, &["gpt-4o-mini"]).await;
    let config = Config::from_toml_str(&format!(
        "[[providers]]\nname = \"chat\"\nmodel = \"gpt-4o-mini\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\n",
        chat.base_url()
    ))
    .unwrap();
    let gw = start(&config).await;
    let a = gw.post("/v1/embeddings", &embed_request(json!("x"))).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    assert_eq!(a.json()["error"]["code"], "model_not_found");
    assert_eq!(chat.counters().received, 0);
    gw.shutdown().await;
}
