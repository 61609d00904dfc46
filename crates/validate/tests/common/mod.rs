//! Test bodies and services shared by the integration tests.
#![allow(dead_code, unreachable_pub)]

use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame, SizeHint};
use tokio::sync::mpsc;
use tower::BoxError;

/// A body fed through a channel: tests decide when each chunk arrives, and whether
/// the stream ends (sender dropped) or breaks (an error sent).
pub struct ChanBody {
    rx: mpsc::UnboundedReceiver<Result<Bytes, BoxError>>,
    pub polls: Arc<AtomicUsize>,
    hint: Option<u64>,
}

impl Body for ChanBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.polls.fetch_add(1, Ordering::SeqCst);
        self.rx.poll_recv(cx).map(|o| o.map(|r| r.map(Frame::data)))
    }

    fn size_hint(&self) -> SizeHint {
        match self.hint {
            Some(n) => SizeHint::with_exact(n),
            None => SizeHint::default(),
        }
    }
}

pub type Tx = mpsc::UnboundedSender<Result<Bytes, BoxError>>;

/// An open body and its sender.
pub fn open() -> (ChanBody, Tx) {
    let (tx, rx) = mpsc::unbounded_channel();
    (
        ChanBody {
            rx,
            polls: Arc::new(AtomicUsize::new(0)),
            hint: None,
        },
        tx,
    )
}

/// A finished body made of these chunks.
pub fn chunks<I, C>(items: I) -> ChanBody
where
    I: IntoIterator<Item = C>,
    C: Into<Bytes>,
{
    let (body, tx) = open();
    for c in items {
        tx.send(Ok(c.into())).unwrap();
    }
    body
}

/// A body that declares an exact size but is never meant to be read.
pub fn sized(n: u64) -> ChanBody {
    let (mut body, _tx) = open();
    body.hint = Some(n);
    body
}

/// A service that answers once with `res`.
pub fn once(
    res: Response<ChanBody>,
) -> impl tower::Service<
    Request<()>,
    Response = Response<ChanBody>,
    Error = BoxError,
    Future = std::future::Ready<Result<Response<ChanBody>, BoxError>>,
> + Clone {
    let slot = Arc::new(Mutex::new(Some(res)));
    tower::service_fn(move |_req: Request<()>| {
        let res = slot
            .lock()
            .unwrap()
            .take()
            .ok_or_else(|| "answered already".into());
        std::future::ready(res)
    })
}

pub fn json(body: ChanBody) -> Response<ChanBody> {
    Response::builder()
        .header("content-type", "application/json")
        .body(body)
        .unwrap()
}

pub fn sse(body: ChanBody) -> Response<ChanBody> {
    Response::builder()
        .header("content-type", "text/event-stream; charset=utf-8")
        .body(body)
        .unwrap()
}

/// `data: <json>\n\n` for an OpenAI chunk with this delta (and finish reason).
pub fn oa_chunk(delta: serde_json::Value, finish: Option<&str>) -> String {
    let c = serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]
    });
    format!("data: {c}\n\n")
}

pub fn oa_role() -> String {
    oa_chunk(
        serde_json::json!({"role": "assistant", "content": ""}),
        None,
    )
}

pub fn oa_text(t: &str) -> String {
    oa_chunk(serde_json::json!({"content": t}), None)
}

pub fn oa_finish(reason: &str) -> String {
    oa_chunk(serde_json::json!({}), Some(reason))
}

pub const DONE: &str = "data: [DONE]\n\n";

/// A complete OpenAI stream saying `words`.
pub fn oa_stream(words: &[&str], finish: &str) -> Vec<String> {
    let mut v = vec![oa_role()];
    v.extend(words.iter().map(|w| oa_text(w)));
    v.push(oa_finish(finish));
    v.push(DONE.to_owned());
    v
}

pub fn oa_body(content: &str, finish: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}]
    })
    .to_string()
}

/// `bytes` cut at these points (any order; a repeated point gives an empty chunk),
/// for property tests that split a stream anywhere.
pub fn cut_at(bytes: &[u8], cuts: &[proptest::sample::Index]) -> Vec<Bytes> {
    let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
    points.extend([0, bytes.len()]);
    points.sort_unstable();
    points
        .windows(2)
        .map(|w| Bytes::copy_from_slice(&bytes[w[0]..w[1]]))
        .collect()
}
