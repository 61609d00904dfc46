//! The gateway's server under hostile or greedy clients, over real loopback
//! connections: slow-loris heads and bodies are cut at their timeouts while other
//! clients are served; past the connection and in-flight limits callers get `503`
//! with `Retry-After`; an oversized body gets a `413` the client actually reads.
//!
//! Timeouts are configured small; the real-time waits here are generous guards
//! against a hang, never the thing measured.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::{Running, start_with};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_failover_gateway::{self as gateway, GatewayConfig, Simulated};

/// A guard against a hang, far above any timeout configured here.
const GUARD: Duration = Duration::from_secs(30);

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

async fn gateway_with(tune: impl FnOnce(&mut GatewayConfig)) -> (Simulated, Running) {
    let sim = gateway::simulated().await.unwrap();
    let mut config = GatewayConfig::new(sim.config.clone());
    config.server.drain_timeout = Duration::from_secs(5);
    tune(&mut config);
    let gw = start_with(&config).await;
    (sim, gw)
}

/// Reads until the server closes the connection; what it sent.
async fn read_to_close(conn: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(GUARD, conn.read(&mut buf))
            .await
            .expect("the server closes the connection in time");
        match n {
            Ok(0) | Err(_) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends until the answer is `200` (the server frees a place a moment after the
/// client let go of it); fails after [`GUARD`].
async fn until_ok(gw: &Running, method: &str, path: &str, body: &'static str) {
    let served = tokio::time::timeout(GUARD, async {
        while gw.send(method, path, body).await.status != StatusCode::OK {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(
        served.is_ok(),
        "{path} is served again once the place is free"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_heads_and_bodies_are_cut_while_others_are_served() {
    let (_sim, gw) = gateway_with(|c| {
        c.server.header_read_timeout = Duration::from_millis(300);
        c.server.body_read_timeout = Duration::from_millis(300);
    })
    .await;

    // Headers never finished.
    let mut head = TcpStream::connect(gw.addr).await.unwrap();
    head.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\n",
    )
    .await
    .unwrap();
    // A body never finished.
    let mut body = TcpStream::connect(gw.addr).await.unwrap();
    body.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: 1000\r\n\r\n{\"model\":",
    )
    .await
    .unwrap();

    // Meanwhile, another client is served.
    let a = gw.send("POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // The head is cut without an answer (there was no request to answer).
    let sent = read_to_close(&mut head).await;
    assert!(sent.is_empty(), "{}", String::from_utf8_lossy(&sent));
    // The body gets a 408, then the connection closes.
    let sent = String::from_utf8_lossy(&read_to_close(&mut body).await).into_owned();
    assert!(sent.starts_with("HTTP/1.1 408"), "{sent}");
    assert!(sent.contains("request_timeout"), "{sent}");

    // And the server still serves.
    let a = gw.send("GET", "/v1/models", "").await;
    assert_eq!(a.status, StatusCode::OK);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_kept_alive_connection_is_closed() {
    let (_sim, gw) = gateway_with(|c| {
        c.server.keep_alive_idle = Duration::from_millis(300);
        // Longer than the guard: only the idle clock can close it in time.
        c.server.header_read_timeout = Duration::from_secs(120);
    })
    .await;
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(b"GET /livez HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    // The answer, then nothing: the connection closes once idle for too long.
    let sent = String::from_utf8_lossy(&read_to_close(&mut conn).await).into_owned();
    assert!(sent.starts_with("HTTP/1.1 200"), "{sent}");
    assert_eq!(sent.matches("HTTP/1.1").count(), 1, "{sent}");
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_in_flight_limit_callers_get_503_with_retry_after() {
    let (_sim, gw) = gateway_with(|c| {
        c.server.max_in_flight = 1;
        c.server.retry_after = Duration::from_secs(2);
    })
    .await;

    // An event stream stays in flight until it is dropped.
    let events = Request::get(format!("http://{}/health/events", gw.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let events = tokio::time::timeout(GUARD, gw.client.request(events))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);

    for path in ["/v1/chat/completions", "/v1/messages"] {
        let a = gw.send("POST", path, CHAT).await;
        assert_eq!(
            a.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "{path}: {}",
            a.body
        );
        assert_eq!(a.headers["retry-after"], "2");
        // The server's own answer has a request id, like the router's.
        assert!(a.headers.contains_key("x-request-id"), "{:?}", a.headers);
        let v = a.json();
        let kind = if path == "/v1/messages" {
            &v["error"]["type"]
        } else {
            &v["error"]["code"]
        };
        assert!(kind.as_str().unwrap().starts_with("overloaded"), "{v}");
    }
    // The probes are never shed.
    assert_eq!(gw.send("GET", "/livez", "").await.status, StatusCode::OK);
    assert_eq!(gw.send("GET", "/readyz", "").await.status, StatusCode::OK);

    // The stream ends: its place is free again.
    drop(events);
    until_ok(&gw, "POST", "/v1/chat/completions", CHAT).await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_limit_callers_get_503_with_retry_after() {
    let (_sim, gw) = gateway_with(|c| {
        c.server.max_connections = 1;
        c.server.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    // One connection holds the only place.
    let mut first = TcpStream::connect(gw.addr).await.unwrap();
    first
        .write_all(b"GET /livez HTTP/1.1\r\nhost: gw\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 512];
    let n = tokio::time::timeout(GUARD, first.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));

    // The next connection gets an answer, not a hang or a reset.
    let a = gw.send("POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert_eq!(a.headers["retry-after"], "1");
    assert_eq!(a.headers["connection"], "close");
    assert_eq!(a.json()["error"]["type"], "overloaded");

    drop(first);
    until_ok(&gw, "GET", "/v1/models", "").await;
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_uploading_too_much_reads_its_413() {
    let (sim, gw) = gateway_with(|c| {
        c.stack.max_request_bytes = 64 << 10;
    })
    .await;
    // Far more than the kernel's socket buffers hold: without the drain the
    // client would still be writing when the connection closed.
    let big = format!(
        r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{}"}}]}}"#,
        "x".repeat(4 << 20)
    );
    for path in ["/v1/chat/completions", "/v1/messages"] {
        let a = gw
            .send_with(
                "POST",
                path,
                &[("x-request-id", "caller-id-413")],
                big.clone(),
            )
            .await;
        assert_eq!(a.status, StatusCode::PAYLOAD_TOO_LARGE, "{path}");
        // The caller's request id comes back on the server's own answer too.
        assert_eq!(a.headers["x-request-id"], "caller-id-413", "{path}");
        let v = a.json();
        if path == "/v1/messages" {
            assert_eq!(v["error"]["type"], "request_too_large", "{v}");
        } else {
            assert_eq!(v["error"]["code"], "request_too_large", "{v}");
        }
    }
    // And it is counted where operators look.
    let scrape = gw.send("GET", "/metrics", "").await;
    assert_eq!(scrape.status, StatusCode::OK);
    for route in ["/v1/chat/completions", "/v1/messages"] {
        let line = format!(
            "tower_failover_gateway_requests_total{{route=\"{route}\",status=\"413\",caller=\"anonymous\"}}"
        );
        assert!(scrape.body.contains(&line), "{line} in:\n{}", scrape.body);
    }
    // A body that small still works, and no provider saw the big ones.
    let a = gw.send("POST", "/v1/chat/completions", CHAT).await;
    assert_eq!(a.status, StatusCode::OK);
    let received: u64 = sim.sims.iter().map(|s| s.counters().received).sum();
    assert_eq!(received, 1);

    // Past what is worth draining, the client is told at once (it could not be
    // drained anyway) and a client that asked first never sends the body.
    let mut conn = TcpStream::connect(gw.addr).await.unwrap();
    conn.write_all(
        b"POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\nexpect: 100-continue\r\ncontent-length: 1000000000\r\n\r\n",
    )
    .await
    .unwrap();
    let sent = String::from_utf8_lossy(&read_to_close(&mut conn).await).into_owned();
    assert!(sent.starts_with("HTTP/1.1 413"), "{sent}");
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_a_stream_in_flight_finish_then_refuses_connections() {
    let (_sim, gw) = gateway_with(|_| {}).await;
    // A slow streamed answer in flight.
    let slow = Request::post(format!("http://{}/v1/chat/completions", gw.addr))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Tell me a long story"}]}"#,
        )))
        .unwrap();
    let res = tokio::time::timeout(GUARD, gw.client.request(slow))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let addr = gw.addr;
    let stopped = tokio::spawn(gw.shutdown());
    // The stream still ends whole.
    let body = tokio::time::timeout(GUARD, res.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert!(String::from_utf8_lossy(&body).contains("[DONE]"));
    tokio::time::timeout(GUARD, stopped)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    // No new connections after the drain.
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_clients_are_served_and_each_stream_counts_against_the_limit() {
    let (_sim, gw) = gateway_with(|c| {
        c.server.max_in_flight = 1;
    })
    .await;
    // HTTP/2 with prior knowledge (h2c), one connection for every request.
    let h2 = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .http2_only(true)
        .build_http::<Full<Bytes>>();
    let request = |path: &str, body: &'static str| {
        Request::post(format!("http://{}{path}", gw.addr))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    let res = tokio::time::timeout(GUARD, h2.request(request("/v1/chat/completions", CHAT)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(res.version(), http::Version::HTTP_2);
    assert_eq!(res.status(), StatusCode::OK);
    res.into_body().collect().await.unwrap();

    // An event stream holds the only place; the next stream is shed.
    let events = Request::get(format!("http://{}/health/events", gw.addr))
        .body(Full::new(Bytes::new()))
        .unwrap();
    let events = tokio::time::timeout(GUARD, h2.request(events))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(events.status(), StatusCode::OK);
    let shed = tokio::time::timeout(GUARD, h2.request(request("/v1/chat/completions", CHAT)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shed.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(shed.headers()["retry-after"], "1");
    drop(events);
    gw.shutdown().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn middleware_around_the_router_never_covers_the_probes() {
    let sim = gateway::simulated().await.unwrap();
    let config = GatewayConfig::new(sim.config.clone());
    // A stand-in for authentication: every request to the router is refused.
    let gw = gateway::build_with(&config).unwrap().map_router(|router| {
        router.layer(axum::middleware::from_fn(
            |_req: axum::extract::Request, _next: axum::middleware::Next| async {
                http::Response::builder()
                    .status(StatusCode::UNAUTHORIZED)
                    .body(axum::body::Body::empty())
                    .unwrap()
            },
        ))
    });
    let gw = common::serve_built(gw, &config.server).await;
    assert_eq!(
        gw.send("POST", "/v1/chat/completions", CHAT).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        gw.send("GET", "/health", "").await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(gw.send("GET", "/livez", "").await.status, StatusCode::OK);
    let ready = gw.send("GET", "/readyz", "").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.body, "ready\n");
    gw.shutdown().await.unwrap();
}

/// A client that asks for a long stream and stops reading is cut at the write
/// timeout: its place is freed for others, the provider's stream behind it is
/// dropped (the simulator counts it abandoned), and what the client had received
/// ends short of `[DONE]`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_at_the_write_timeout() {
    use tower_failover::sim::{Flavor, Sim};
    // About 40 MB of events: far more than the sockets between the gateway and
    // the client can hold.
    let sim = Sim::builder(Flavor::OpenAi)
        .name("long")
        .ttft(Duration::ZERO)
        .token_interval(Duration::ZERO)
        .reply_words(200_000, 200_000)
        .start()
        .await
        .expect("a simulated provider starts");
    let mut config = GatewayConfig::from_toml_str(&common::provider_entry(
        "long",
        "openai",
        &format!("http://{}", sim.addr()),
        1,
    ))
    .expect("a valid configuration");
    config.server.drain_timeout = Duration::from_secs(5);
    config.server.max_in_flight = 1;
    config.server.write_timeout = Duration::from_secs(1);
    let gw = start_with(&config).await;

    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut conn = socket.connect(gw.addr).await.unwrap();
    let body = r#"{"model":"m","stream":true,"messages":[{"role":"user","content":"Tell me everything"}]}"#;
    conn.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The stream holds the only place while it is written. The client reads a
    // little between the checks, so the stream keeps moving and is not cut before
    // a check sees it however slow the machine (a slow reader is never cut)...
    let mut sent = Vec::new();
    let held = tokio::time::timeout(GUARD, async {
        let mut buf = [0u8; 65536];
        while gw.send("GET", "/v1/models", "").await.status != StatusCode::SERVICE_UNAVAILABLE {
            if let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(10), conn.read(&mut buf)).await
            {
                sent.extend_from_slice(&buf[..n]);
            }
        }
    })
    .await;
    assert!(held.is_ok(), "the stream is in flight");
    // ...and, once nobody reads, until the write timeout cuts the connection.
    until_ok(&gw, "GET", "/v1/models", "").await;
    sent.extend(read_to_close(&mut conn).await);
    let sent = String::from_utf8_lossy(&sent).into_owned();
    assert!(
        sent.starts_with("HTTP/1.1 200"),
        "{}",
        &sent[..sent.len().min(200)]
    );
    assert!(sent.contains("data: "), "some of the stream arrived");
    assert!(!sent.contains("[DONE]"), "the stream was cut short");
    // The gateway let go of the provider's stream (a guard, not a bound: the
    // simulator sees its connection close a moment after the gateway drops it).
    let dropped = tokio::time::timeout(GUARD, async {
        while sim.counters().abandoned == 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    assert!(dropped.is_ok(), "the provider's stream was dropped");
    gw.shutdown().await.unwrap();
}
