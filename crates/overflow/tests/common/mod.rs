//! Scripted providers for the paused-time tests.
#![allow(dead_code, unreachable_pub)]

use std::future::{Ready, ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::{BoxError, Service};
use tower_failover_core::replay::ReplayBody;

type Responder = dyn Fn(usize, &Request<ReplayBody>) -> Response<ReplayBody> + Send + Sync;

/// A provider that answers at once with what its script says, and records every
/// request it receives (when, and the body).
#[derive(Clone)]
pub struct Scripted {
    pub name: &'static str,
    calls: Arc<AtomicUsize>,
    log: Arc<Mutex<Vec<(Instant, bytes::Bytes)>>>,
    respond: Arc<Responder>,
}

impl Scripted {
    pub fn new(
        name: &'static str,
        respond: impl Fn(usize, &Request<ReplayBody>) -> Response<ReplayBody> + Send + Sync + 'static,
    ) -> Self {
        Scripted {
            name,
            calls: Arc::new(AtomicUsize::new(0)),
            log: Arc::new(Mutex::new(Vec::new())),
            respond: Arc::new(respond),
        }
    }

    /// Always 200, with the provider's name as the body.
    pub fn ok(name: &'static str) -> Self {
        Scripted::new(name, move |_, _| Response::new(ReplayBody::from(name)))
    }

    /// Always 429 with these headers.
    pub fn limited(name: &'static str, headers: &'static [(&'static str, &'static str)]) -> Self {
        Scripted::new(name, move |_, _| status(429, headers))
    }

    pub fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }

    /// When each request arrived, and its body.
    pub fn log(&self) -> Vec<(Instant, bytes::Bytes)> {
        self.log.lock().unwrap().clone()
    }
}

pub fn status(code: u16, headers: &[(&str, &str)]) -> Response<ReplayBody> {
    let mut b = Response::builder().status(code);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(ReplayBody::from(format!("status {code}"))).unwrap()
}

impl Service<Request<ReplayBody>> for Scripted {
    type Response = Response<ReplayBody>;
    type Error = BoxError;
    type Future = Ready<Result<Response<ReplayBody>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst);
        self.log
            .lock()
            .unwrap()
            .push((Instant::now(), req.body().bytes().clone()));
        ready(Ok((self.respond)(n, &req)))
    }
}

pub fn req(body: &'static str) -> Request<ReplayBody> {
    Request::post("http://provider/v1/chat/completions")
        .header("content-type", "application/json")
        .body(ReplayBody::from(body))
        .unwrap()
}

pub async fn body_of<B>(res: Response<B>) -> String
where
    B: http_body::Body,
    B::Error: std::fmt::Debug,
{
    use http_body_util::BodyExt;
    let bytes = res.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}
