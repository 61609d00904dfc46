//! The first-byte deadlines as shipped (no timeout configured), under paused time
//! against a loopback server that goes silent: a stream gives up after 10 s, a
//! non-streamed request after 120 s.

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
async fn a_silent_provider_costs_a_stream_10s_and_a_plain_request_120s() {
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
    for (stream, expected) in [(true, 10), (false, 120)] {
        let start = Instant::now();
        let err = match svc.clone().oneshot(post(chat("m", stream))).await {
            Err(e) => e,
            Ok(res) => read_body(res.into_body()).await.1.expect("no answer came"),
        };
        let waited = Instant::now() - start;
        let e = find::<Elapsed>(&*err).expect("a deadline");
        assert_eq!(e.kind(), TimeoutKind::FirstByte, "stream: {stream}");
        assert_eq!(e.after(), Duration::from_secs(expected), "stream: {stream}");
        // Paused time: the deadline, not some other timer.
        assert!(
            waited >= Duration::from_secs(expected) && waited < Duration::from_secs(expected + 1),
            "stream: {stream}, waited {waited:?}"
        );
    }
}
