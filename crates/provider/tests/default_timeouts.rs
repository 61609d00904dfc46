//! The deadlines as shipped (no timeout configured), under paused time against a
//! loopback server that sends its headers and then goes silent: a stream gives up
//! at its 60 s first-byte deadline (its headers may come before a reasoning model
//! has thought of its first token: that silence is thinking); a non-streamed
//! answer, whose first byte may legitimately take up to 120 s to come, gives up at
//! the 30 s idle timeout counted from its headers (a whole answer that started and
//! then stopped is not thinking).

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use common::{OPENAI_JSON, Scripted, TestServer, chat, json, post, read_body};
use http::Response;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_failover_core::error::{Elapsed, TimeoutKind, find};
use tower_failover_provider::OpenAiCompatible;

#[tokio::test]
async fn a_provider_silent_after_its_headers_costs_a_stream_60s_and_a_plain_request_30s() {
    // The first request is answered (it opens the pooled connection under real
    // time); every later one gets its headers and then nothing for an hour.
    let served = Arc::new(AtomicUsize::new(0));
    let server = TestServer::start(None, {
        let served = served.clone();
        move |_| {
            if served.fetch_add(1, Ordering::SeqCst) == 0 {
                return json(200, OPENAI_JSON);
            }
            let silent = Scripted::new([(Duration::from_secs(3600), bytes::Bytes::from("{}"))]);
            Response::builder()
                .header("content-type", "application/json")
                .body(silent)
                .unwrap()
        }
    })
    .await;
    let svc = OpenAiCompatible::builder()
        .base_url(format!("http://127.0.0.1:{}/v1", server.addr.port()))
        .build()
        .unwrap();
    let res = svc.clone().oneshot(post(chat("m", false))).await.unwrap();
    let (_, err) = read_body(res.into_body()).await;
    assert!(err.is_none());

    tokio::time::pause();
    for (stream, kind, expected) in [
        (true, TimeoutKind::FirstByte, 60),
        (false, TimeoutKind::Idle, 30),
    ] {
        let start = Instant::now();
        let err = match svc.clone().oneshot(post(chat("m", stream))).await {
            Err(e) => e,
            Ok(res) => read_body(res.into_body()).await.1.expect("no answer came"),
        };
        let waited = Instant::now() - start;
        let e = find::<Elapsed>(&*err).expect("a deadline");
        assert_eq!(e.kind(), kind, "stream: {stream}");
        assert_eq!(e.after(), Duration::from_secs(expected), "stream: {stream}");
        // Paused time: the deadline, not some other timer.
        assert!(
            waited >= Duration::from_secs(expected) && waited < Duration::from_secs(expected + 1),
            "stream: {stream}, waited {waited:?}"
        );
    }
}
