//! A small real HTTP client for the sim tests (hyper-util's legacy client).
#![allow(dead_code, unreachable_pub)]

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::Value;

pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// A response read to the end (or to the body error).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub body_error: Option<String>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// SSE events as (event name, data) pairs.
    pub fn events(&self) -> Vec<(Option<String>, String)> {
        let text = self.text();
        text.split("\n\n")
            .filter(|e| !e.trim().is_empty())
            .map(|e| {
                let mut name = None;
                let mut data = String::new();
                for line in e.lines() {
                    if let Some(n) = line.strip_prefix("event: ") {
                        name = Some(n.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data.push_str(d);
                    }
                }
                (name, data)
            })
            .collect()
    }
}

pub async fn send(
    client: &HttpClient,
    method: Method,
    url: &str,
    body: Option<&Value>,
) -> Result<Reply, hyper_util::client::legacy::Error> {
    let mut b = Request::builder().method(method).uri(url);
    if body.is_some() {
        b = b.header("content-type", "application/json");
    }
    let bytes = body.map(|v| Bytes::from(v.to_string())).unwrap_or_default();
    let res = client.request(b.body(Full::new(bytes)).unwrap()).await?;
    let (parts, mut incoming) = res.into_parts();
    let mut body = Vec::new();
    let mut body_error = None;
    while let Some(frame) = incoming.frame().await {
        match frame {
            Ok(f) => {
                if let Some(d) = f.data_ref() {
                    body.extend_from_slice(d);
                }
            }
            Err(e) => {
                body_error = Some(format!("{e:?}"));
                break;
            }
        }
    }
    Ok(Reply {
        status: parts.status,
        headers: parts.headers,
        body: Bytes::from(body),
        body_error,
    })
}

pub async fn post(client: &HttpClient, url: &str, body: &Value) -> Reply {
    send(client, Method::POST, url, Some(body))
        .await
        .expect("request failed")
}

pub async fn get(client: &HttpClient, url: &str) -> Reply {
    send(client, Method::GET, url, None)
        .await
        .expect("request failed")
}

/// Fails the test if `fut` takes longer than `secs` (guards against hangs).
pub async fn within<F: std::future::Future>(secs: u64, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(secs), fut)
        .await
        .expect("test step timed out")
}

pub fn openai_chat(stream: bool) -> Value {
    serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": "Say something about failover."}
        ],
        "stream": stream,
    })
}

pub fn anthropic_messages(stream: bool) -> Value {
    serde_json::json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "You are terse.",
        "messages": [{"role": "user", "content": "Say something about failover."}],
        "stream": stream,
    })
}
