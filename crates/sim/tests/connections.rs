//! Connection-level faults: refused connections (closed listener), resets.
mod common;

use std::time::Duration;

use common::*;
use tokio::net::TcpStream;
use tower_failover_sim::{Fault, FaultKind, FaultSpec, Flavor, Sim};

/// `Some(true)`: refused; `Some(false)`: connected; `None`: reset while the
/// listener was closing (a connection still in its backlog): ask again.
async fn refused(sim: &Sim) -> Option<bool> {
    match TcpStream::connect(sim.addr()).await {
        Ok(_) => Some(false),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => None,
        Err(e) => {
            assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
            Some(true)
        }
    }
}

/// Wait (at most 2 s) until the listener is in the wanted state.
async fn until_refused(sim: &Sim, want: bool) {
    within(2, async {
        while refused(sim).await != Some(want) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
    .await
}

#[tokio::test]
async fn refuse_closes_the_listener_and_reopens_it() {
    let sim = sim(Flavor::OpenAi).await;
    let c = client();
    // A pooled keep-alive connection exists before the outage.
    assert_eq!(
        post(&c, &sim.completion_url(), &openai_chat(false))
            .await
            .status,
        200
    );
    sim.set_faults([FaultSpec::always(Fault::Refuse)]).unwrap();
    until_refused(&sim, true).await;
    // Through the client: no response, an error (the pooled connection is reset,
    // a new one is refused).
    let err = within(
        2,
        send(
            &c,
            http::Method::POST,
            &sim.completion_url(),
            Some(&openai_chat(false)),
        ),
    )
    .await
    .unwrap_err();
    assert!(
        err.is_connect()
            || format!("{err:?}").contains("Reset")
            || format!("{err:?}").contains("Incomplete"),
        "{err:?}"
    );
    sim.clear_faults();
    until_refused(&sim, false).await;
    assert_eq!(
        within(2, post(&c, &sim.completion_url(), &openai_chat(false)))
            .await
            .status,
        200
    );
    // Same port as before.
    assert_eq!(sim.base_url(), format!("http://{}", sim.addr()));
}

#[tokio::test]
async fn refuse_windows_follow_the_clock() {
    let sim = sim(Flavor::Anthropic).await;
    let now = sim.handle().elapsed();
    sim.set_faults([FaultSpec::new(Fault::Refuse).window(
        now + Duration::from_millis(300),
        now + Duration::from_millis(600),
    )])
    .unwrap();
    assert_eq!(refused(&sim).await, Some(false), "not yet");
    until_refused(&sim, true).await;
    until_refused(&sim, false).await;
    assert_eq!(
        post(&client(), &sim.completion_url(), &anthropic_messages(false))
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn fractional_refuse_resets_picked_requests() {
    let sim = Sim::builder(Flavor::OpenAi).seed(3).start().await.unwrap();
    sim.add_fault(FaultSpec::new(Fault::Refuse).fraction(0.5))
        .unwrap();
    let c = client();
    let (mut ok, mut failed) = (0, 0);
    for _ in 0..20 {
        match within(
            2,
            send(
                &c,
                http::Method::POST,
                &sim.completion_url(),
                Some(&openai_chat(false)),
            ),
        )
        .await
        {
            Ok(r) => {
                assert_eq!(r.status, 200);
                ok += 1;
            }
            Err(_) => failed += 1,
        }
    }
    assert!(ok > 0 && failed > 0, "{ok} ok, {failed} failed");
    let k = sim.counters();
    assert_eq!(k.fault(FaultKind::Refuse), failed);
    assert_eq!(k.answered, ok);
    assert_eq!(
        refused(&sim).await,
        Some(false),
        "a fractional refuse keeps the listener open"
    );
}

#[tokio::test]
async fn reset_is_a_tcp_reset() {
    // A raw socket sees the RST as ECONNRESET (not a clean EOF).
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let sim = sim(Flavor::OpenAi).await;
    sim.add_fault(Fault::Reset).unwrap();
    let mut s = TcpStream::connect(sim.addr()).await.unwrap();
    let body = openai_chat(false).to_string();
    let req = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: sim\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let err = within(2, async {
        loop {
            match s.read(&mut chunk).await {
                Ok(0) => return None,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                Err(e) => return Some(e),
            }
        }
    })
    .await
    .expect("the read fails, it does not end cleanly");
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
    assert!(buf.starts_with(b"HTTP/1.1 200 OK\r\n"));
}
