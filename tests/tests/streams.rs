//! Streams that break after the first byte, through `Stack::from_config` with the
//! ordered fallback: a primary whose stream dies (or stalls) after its first chunk
//! and a healthy backup (the simulator), 20 callers one after another.
//!
//! The first callers get either a clean answer (the stack failed over before the
//! validation's commit point) or the typed truncation error (after it); their
//! failures count against the primary, its circuit opens at its threshold, and
//! every later caller is answered by the backup without the primary seeing it.
//!
//! The primary is a tiny local HTTP/1.1 server (one SSE chunk, then it closes the
//! connection or goes silent), which controls exactly which side of the commit
//! point the cut falls on, and the simulator with its `stall` and `reset_after`
//! faults.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tower::ServiceExt;
use tower_failover::error::{TruncatedStream, find};
use tower_failover::sim::{CutPoint, Fault, FaultSpec, Flavor, Sim};
use tower_failover::{CircuitState, Config, Stack};

/// What the primary does after its first chunk.
#[derive(Clone, Copy, PartialEq)]
enum After {
    /// Closes the connection mid-body.
    Close,
    /// Keeps the connection open and sends nothing more.
    Stall,
}

/// A primary that answers every request with a 200 event stream, sends one chunk
/// (with text when `content`, else only the role, which the validation holds back
/// before its commit point), then does `after`. Returns its base URL and how many
/// requests reached it.
async fn broken_primary(after: After, content: bool) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                // Read the request head and its body (small, sent at once).
                let mut buf = vec![0u8; 16 * 1024];
                let mut got = 0;
                loop {
                    let Ok(n) = sock.read(&mut buf[got..]).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got += n;
                    let text = String::from_utf8_lossy(&buf[..got]);
                    if let Some(head_end) = text.find("\r\n\r\n") {
                        let len = text[..head_end]
                            .lines()
                            .find_map(|l| {
                                let (k, v) = l.split_once(':')?;
                                k.eq_ignore_ascii_case("content-length")
                                    .then(|| v.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if got >= head_end + 4 + len || got == buf.len() {
                            break;
                        }
                    }
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let delta = if content {
                    r#"{"role":"assistant","content":"Once upon a time"}"#
                } else {
                    r#"{"role":"assistant"}"#
                };
                let event = format!(
                    "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\
                     \"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":null}}]}}\n\n"
                );
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                let chunk = format!("{head}{:x}\r\n{event}\r\n", event.len());
                if sock.write_all(chunk.as_bytes()).await.is_err() {
                    return;
                }
                let _ = sock.flush().await;
                match after {
                    After::Close => drop(sock),
                    After::Stall => {
                        // Silent until the client gives up and closes.
                        let mut rest = [0u8; 64];
                        while let Ok(n) = sock.read(&mut rest).await {
                            if n == 0 {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    (format!("http://{addr}/v1"), hits)
}

fn stream_request() -> Request<Full<Bytes>> {
    let body =
        r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"tell me a story"}]}"#;
    Request::post("/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap()
}

/// What one caller got.
#[derive(Debug, PartialEq)]
enum Got {
    /// A whole answer (from the backup, or failed over before the commit point).
    Answer,
    /// The typed truncation error, mid-stream.
    Truncated,
}

async fn run(after: After, content: bool, idle: &str) -> Vec<Got> {
    let (primary_url, primary_hits) = broken_primary(after, content).await;
    run_against(
        &primary_url,
        move || primary_hits.load(Ordering::SeqCst),
        idle,
    )
    .await
}

/// 20 callers through a fallback stack whose primary is at `primary_url`.
async fn run_against(primary_url: &str, primary_hits: impl Fn() -> usize, idle: &str) -> Vec<Got> {
    let backup = Sim::builder(Flavor::OpenAi)
        .name("backup")
        .seed(5)
        .start()
        .await
        .unwrap();
    let threshold = 3;
    let toml = format!(
        r#"
router = "fallback"
deadline = "30s"

[circuit]
consecutive_failures = {threshold}
cooldown = "2m"

[[providers]]
name = "primary"
model = "m"
api_key = "sk-test"
base_url = "{primary_url}"
priority = 0
timeouts = {{ connect = "5s", first_byte = "10s", total = "60s", idle = "{idle}" }}

[[providers]]
name = "backup"
model = "m"
api_key = "sk-test"
base_url = "{}/v1"
priority = 1
"#,
        backup.base_url()
    );
    let config = Config::from_toml_str(&toml).unwrap();
    let stack = Stack::from_config(&config).unwrap().build().unwrap();
    let primary = stack.handle().provider("primary", "m").unwrap();

    let mut got = Vec::new();
    for caller in 0..20 {
        // A generous guard against a hang; no timing is asserted.
        let outcome = tokio::time::timeout(Duration::from_secs(30), async {
            let res = stack.clone().oneshot(stream_request()).await?;
            assert_eq!(res.status(), 200, "caller {caller}");
            res.into_body().collect().await.map(|_| ())
        })
        .await
        .unwrap_or_else(|_| panic!("caller {caller} hung"));
        got.push(match outcome {
            Ok(()) => Got::Answer,
            Err(e) => {
                assert!(
                    find::<TruncatedStream>(&*e).is_some(),
                    "caller {caller}: not a typed truncation: {e}"
                );
                Got::Truncated
            }
        });
    }

    let hits = primary_hits();
    assert_eq!(
        hits, threshold,
        "the primary saw its threshold, then nothing (got {got:?})"
    );
    assert_eq!(primary.circuit(), CircuitState::Open);
    assert!(
        got[threshold..].iter().all(|g| *g == Got::Answer),
        "after the circuit opened every caller got the backup's answer: {got:?}"
    );
    assert!(primary.counters().failures >= threshold as u64);
    backup.shutdown().await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_streams_die_after_one_chunk_trips_and_the_backup_serves() {
    let got = run(After::Close, true, "30s").await;
    // After the commit point: the typed truncation, for the first callers only.
    assert_eq!(got[..3], [Got::Truncated, Got::Truncated, Got::Truncated]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_dies_before_the_commit_point_fails_over_invisibly() {
    let got = run(After::Close, false, "30s").await;
    assert!(got.iter().all(|g| *g == Got::Answer), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_stalls_before_the_commit_point_fails_over_at_the_idle_timeout() {
    let got = run(After::Stall, false, "300ms").await;
    assert!(got.iter().all(|g| *g == Got::Answer), "{got:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_whose_streams_stall_after_one_chunk_trips_at_the_idle_timeout() {
    let got = run(After::Stall, true, "300ms").await;
    assert_eq!(got[..3], [Got::Truncated, Got::Truncated, Got::Truncated]);
}

/// The simulator as the primary, with `fault` on every request.
async fn sim_primary(fault: Fault, idle: &str) -> Vec<Got> {
    let primary = Sim::builder(Flavor::OpenAi)
        .name("primary")
        .seed(9)
        .start()
        .await
        .unwrap();
    primary.set_faults([FaultSpec::always(fault)]).unwrap();
    let url = format!("{}/v1", primary.base_url());
    let got = run_against(&url, || primary.counters().received as usize, idle).await;
    primary.shutdown().await;
    got
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_reset_after_two_events_trips_the_primary() {
    sim_primary(Fault::ResetAfter(CutPoint::new(2, 0)), "30s").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulators_stall_after_two_events_trips_the_primary_at_the_idle_timeout() {
    sim_primary(Fault::Stall(CutPoint::new(2, 0)), "300ms").await;
}

/// Found by the chaos soak: the simulator's broken event comes right after the first
/// content, past the validation's commit point. The callers used to get it, then a
/// clean `[DONE]`; now their streams end with the typed truncation (the broken event
/// never reaches them), which counts against the primary until its circuit opens.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_finding_a_broken_event_after_the_commit_point_is_a_typed_truncation() {
    let got = sim_primary(Fault::MalformedJson, "30s").await;
    assert_eq!(got[..3], [Got::Truncated, Got::Truncated, Got::Truncated]);
}
