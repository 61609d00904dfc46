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

    /// SSE events as (event name, data) pairs, read with core's SSE parser.
    pub fn events(&self) -> Vec<(Option<String>, String)> {
        tower_failover_core::sse::events(&self.body)
            .expect("the stream stays within the SSE parser's limits")
            .into_iter()
            .map(|(name, data)| ((!name.is_empty()).then_some(name), data))
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

use tower_failover_sim::{Flavor, Sim};

/// A typical request body for `flavor`.
pub fn request(flavor: Flavor, stream: bool) -> Value {
    match flavor {
        Flavor::OpenAi => openai_chat(stream),
        Flavor::Anthropic => anthropic_messages(stream),
    }
}

/// A request asking for JSON matching a small schema.
pub fn json_request(flavor: Flavor, stream: bool) -> Value {
    let schema = serde_json::json!({
        "type": "object",
        "properties": {
            "city": {"type": "string"},
            "population": {"type": "integer", "minimum": 1}
        },
        "required": ["city", "population"],
        "additionalProperties": false
    });
    let mut v = request(flavor, stream);
    match flavor {
        Flavor::OpenAi => {
            v["response_format"] = serde_json::json!({
                "type": "json_schema",
                "json_schema": {"name": "city", "strict": true, "schema": schema}
            })
        }
        Flavor::Anthropic => {
            v["output_format"] = serde_json::json!({"type": "json_schema", "schema": schema})
        }
    }
    v
}

/// Whether `v` matches the schema of [`json_request`].
pub fn matches_city_schema(v: &Value) -> bool {
    v.as_object().is_some_and(|o| {
        o.len() == 2 && o["city"].is_string() && o["population"].as_i64().is_some_and(|p| p >= 1)
    })
}

/// What a reply says, parsed from either wire format, streamed or not.
#[derive(Debug, Default)]
pub struct Said {
    /// Concatenated text (content; refusal text for OpenAI refusals goes to `refusal`).
    pub text: String,
    pub refusal: Option<String>,
    /// finish_reason / stop_reason.
    pub finish: Option<String>,
    pub output_tokens: Option<u64>,
    /// Whether the stream ended properly ([DONE] / message_stop); true for non-streams.
    pub complete: bool,
    /// An error object seen in the body or a stream event.
    pub error: Option<Value>,
    /// Whether the OpenAI `content` was JSON null / the Anthropic content list empty.
    pub no_content: bool,
}

/// Parse a reply; `Err` with the offending text if some JSON does not parse.
pub fn said(flavor: Flavor, r: &Reply, stream: bool) -> Result<Said, String> {
    let mut s = Said::default();
    if !stream {
        let v: Value = serde_json::from_slice(&r.body).map_err(|_| r.text())?;
        s.complete = true;
        match flavor {
            Flavor::OpenAi => {
                if v.get("error").is_some() {
                    s.error = Some(v["error"].clone());
                    return Ok(s);
                }
                let m = &v["choices"][0]["message"];
                s.no_content = m["content"].is_null();
                s.text = m["content"].as_str().unwrap_or("").to_string();
                s.refusal = m["refusal"].as_str().map(str::to_string);
                s.finish = v["choices"][0]["finish_reason"]
                    .as_str()
                    .map(str::to_string);
                s.output_tokens = v["usage"]["completion_tokens"].as_u64();
            }
            Flavor::Anthropic => {
                if v["type"] == "error" {
                    s.error = Some(v["error"].clone());
                    return Ok(s);
                }
                let content = v["content"].as_array().cloned().unwrap_or_default();
                s.no_content = content.is_empty();
                s.text = content.iter().filter_map(|c| c["text"].as_str()).collect();
                s.finish = v["stop_reason"].as_str().map(str::to_string);
                s.output_tokens = v["usage"]["output_tokens"].as_u64();
            }
        }
        return Ok(s);
    }
    s.no_content = true;
    for (name, data) in r.events() {
        if data == "[DONE]" {
            s.complete = true;
            continue;
        }
        let v: Value = serde_json::from_str(&data).map_err(|_| data.clone())?;
        match flavor {
            Flavor::OpenAi => {
                if v.get("error").is_some() {
                    s.error = Some(v["error"].clone());
                    continue;
                }
                if let Some(c) = v["choices"].get(0) {
                    if let Some(t) = c["delta"]["content"].as_str() {
                        s.text.push_str(t);
                        if !t.is_empty() {
                            s.no_content = false;
                        }
                    }
                    if let Some(t) = c["delta"]["refusal"].as_str() {
                        s.refusal.get_or_insert_with(String::new).push_str(t);
                    }
                    if let Some(f) = c["finish_reason"].as_str() {
                        s.finish = Some(f.to_string());
                    }
                }
                if let Some(u) = v["usage"]["completion_tokens"].as_u64() {
                    s.output_tokens = Some(u);
                }
            }
            Flavor::Anthropic => {
                assert_eq!(
                    name.as_deref(),
                    v["type"].as_str(),
                    "event name and type differ"
                );
                match v["type"].as_str() {
                    Some("error") => s.error = Some(v["error"].clone()),
                    Some("content_block_start") => s.no_content = false,
                    Some("content_block_delta") => {
                        s.text.push_str(v["delta"]["text"].as_str().unwrap())
                    }
                    Some("message_delta") => {
                        s.finish = v["delta"]["stop_reason"].as_str().map(str::to_string);
                        s.output_tokens = v["usage"]["output_tokens"].as_u64();
                    }
                    Some("message_stop") => s.complete = true,
                    _ => {}
                }
            }
        }
    }
    Ok(s)
}

pub async fn sim(flavor: Flavor) -> Sim {
    Sim::builder(flavor).seed(11).start().await.unwrap()
}

pub const FLAVORS: [Flavor; 2] = [Flavor::OpenAi, Flavor::Anthropic];
