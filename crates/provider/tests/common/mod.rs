//! A small recording HTTP(S) server for the adapter tests: it keeps every request it
//! receives (headers, path, body) and answers with a scripted response whose body
//! chunks may be delayed.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, Version};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Sleep;

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path_and_query: String,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Recorded {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap()
    }
}

/// A response body of chunks, each sent after its delay.
pub struct Scripted {
    chunks: VecDeque<(Duration, Bytes)>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Scripted {
    pub fn new(chunks: impl IntoIterator<Item = (Duration, Bytes)>) -> Self {
        Scripted {
            chunks: chunks.into_iter().collect(),
            sleep: None,
        }
    }

    pub fn full(body: impl Into<Bytes>) -> Self {
        Scripted::new([(Duration::ZERO, body.into())])
    }
}

impl Body for Scripted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let Some((delay, _)) = self.chunks.front() else {
            return Poll::Ready(None);
        };
        let delay = *delay;
        if !delay.is_zero() {
            let sleep = self
                .sleep
                .get_or_insert_with(|| Box::pin(tokio::time::sleep(delay)));
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            self.sleep = None;
        }
        let (_, data) = self.chunks.pop_front().unwrap();
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

pub type Handler = Arc<dyn Fn(&Recorded) -> Response<Scripted> + Send + Sync>;

/// A running recording server; stops when dropped.
pub struct TestServer {
    pub addr: SocketAddr,
    pub tls: bool,
    pub requests: Arc<Mutex<Vec<Recorded>>>,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    pub async fn start(
        tls: Option<Arc<rustls::ServerConfig>>,
        handler: impl Fn(&Recorded) -> Response<Scripted> + Send + Sync + 'static,
    ) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let handler: Handler = Arc::new(handler);
        let is_tls = tls.is_some();
        let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
        let reqs = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let handler = handler.clone();
                let reqs = reqs.clone();
                let acceptor = acceptor.clone();
                conns.spawn(async move {
                    let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let handler = handler.clone();
                        let reqs = reqs.clone();
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|c| c.to_bytes());
                            let rec = Recorded {
                                method: parts.method.to_string(),
                                path_and_query: parts
                                    .uri
                                    .path_and_query()
                                    .map(|p| p.to_string())
                                    .unwrap_or_default(),
                                version: parts.version,
                                headers: parts.headers,
                                body: body.unwrap_or_default(),
                            };
                            let res = handler(&rec);
                            reqs.lock().unwrap().push(rec);
                            Ok::<_, Infallible>(res)
                        }
                    });
                    let builder =
                        hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                    match acceptor {
                        Some(a) => {
                            if let Ok(tls) = a.accept(stream).await {
                                let _ = builder.serve_connection(TokioIo::new(tls), svc).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
                        }
                    }
                });
            }
        });
        TestServer {
            addr,
            tls: is_tls,
            requests,
            task,
        }
    }

    /// `http(s)://localhost:PORT` (the test certificate names `localhost`).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "https" } else { "http" };
        format!("{scheme}://localhost:{}", self.addr.port())
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.requests.lock().unwrap().clone()
    }
}

/// A JSON response.
pub fn json(status: u16, body: &str) -> Response<Scripted> {
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Scripted::full(body.to_string()))
        .unwrap()
}

/// An SSE response of events, each after its delay.
pub fn sse(events: Vec<(Duration, &str)>) -> Response<Scripted> {
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Scripted::new(
            events
                .into_iter()
                .map(|(d, e)| (d, Bytes::from(e.to_string()))),
        ))
        .unwrap()
}

/// Reads a whole response body, returning the bytes read before an error too.
pub async fn read_body<B>(mut body: B) -> (Vec<u8>, Option<B::Error>)
where
    B: Body<Data = Bytes> + Unpin,
{
    let mut out = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => {
                if let Ok(d) = f.into_data() {
                    out.extend_from_slice(&d);
                }
            }
            Err(e) => return (out, Some(e)),
        }
    }
    (out, None)
}

/// An OpenAI chat completion request.
pub fn chat(model: &str, stream: bool) -> String {
    serde_json::json!({
        "model": model,
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "user", "content": "Say hello to the test suite"}],
        "stream": stream
    })
    .to_string()
}

/// A request to `/v1/chat/completions` with `body`.
pub fn post(body: String) -> Request<http_body_util::Full<Bytes>> {
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap()
}

pub const ANTHROPIC_JSON: &str = r#"{"id":"msg_1","type":"message","role":"assistant","model":"claude-haiku-4-5","content":[{"type":"text","text":"Hello!"}],"stop_reason":"end_turn","usage":{"input_tokens":10,"output_tokens":5}}"#;

pub const OPENAI_JSON: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":10,"completion_tokens":5,"total_tokens":15}}"#;
