//! The validation layer on arbitrary streamed answers (`text/event-stream`):
//! whatever the provider's bytes and however they are split, the stream is
//! accepted or refused alike (when a failed check after the commit point ends
//! the stream with an error), one accepted whole is accepted split (when it is
//! only reported), and an accepted stream reaches the caller byte for byte.
#![no_main]

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use tower::{BoxError, Layer, ServiceExt, service_fn};
use tower_failover_validate::{AfterCommit, ValidateLayer};

/// A body made of these chunks.
struct Chunks(VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, BoxError>>> {
        Poll::Ready(self.0.pop_front().map(|b| Ok(http_body::Frame::data(b))))
    }
}

fn run(
    rt: &tokio::runtime::Runtime,
    chunks: Vec<Bytes>,
    after: AfterCommit,
) -> Result<Bytes, String> {
    rt.block_on(async move {
        let slot = std::sync::Mutex::new(Some(chunks));
        let inner = service_fn(move |_: Request<()>| {
            let chunks = slot.lock().unwrap().take().unwrap_or_default();
            let res = Response::builder()
                .header("content-type", "text/event-stream")
                .body(Chunks(chunks.into()))
                .map_err(BoxError::from);
            std::future::ready(res)
        });
        let res = ValidateLayer::llm()
            .after_commit(after)
            .layer(inner)
            .oneshot(Request::new(()))
            .await
            .map_err(|e| format!("call: {e}"))?;
        res.into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .map_err(|e| format!("body: {e}"))
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, input)) = data.split_first() else {
        return;
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let pieces = |step: usize| input.chunks(step).map(Bytes::copy_from_slice).collect();
    let (all, step) = (input.len().max(1), usize::from(ctl % 13) + 1);
    // A failed check after the commit point ends the stream with an error: accepted
    // or refused alike whole and split (only the error's kind and place may differ).
    let whole = run(&rt, pieces(all), AfterCommit::Error);
    let split = run(&rt, pieces(step), AfterCommit::Error);
    assert_eq!(whole.is_ok(), split.is_ok(), "{whole:?} / {split:?}");
    // Reported only (the default): a split stream may commit before the event the
    // whole stream is refused for, and is then delivered; one accepted whole is
    // accepted split.
    let whole_report = run(&rt, pieces(all), AfterCommit::Report);
    let split_report = run(&rt, pieces(step), AfterCommit::Report);
    if whole_report.is_ok() {
        assert!(split_report.is_ok(), "{split_report:?}");
    }
    for bytes in [&whole, &split, &whole_report, &split_report]
        .into_iter()
        .flatten()
    {
        assert_eq!(&bytes[..], input);
    }
});
