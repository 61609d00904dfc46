//! End to end on loopback: the gateway against a bare hyper proxy and against
//! calling the simulated provider directly.
//!
//! Run with:
//!
//! ```sh
//! cargo run --release --example e2e_bench             # ~30 s; table on stderr, JSON on stdout
//! cargo run --release --example e2e_bench -- --secs 5 # longer rounds
//! cargo run --release --example e2e_bench -- --stream # streamed answers (SSE)
//! cargo run --release --example e2e_bench --features mimalloc # the binary's allocator
//! cargo run --release --example e2e_bench -- --only gateway --skip-rates # one target, saturation only
//! ```
//!
//! One simulated OpenAI-compatible provider with no latency answers every request.
//! The same load reaches it three ways, measured in the same run:
//!
//! - **direct**: the client calls the simulated provider;
//! - **proxy**: through a bare hyper proxy (one hyper-util client, no layers);
//! - **gateway**: through the gateway as its binary serves it (`gateway::serve`: its
//!   own hyper server, axum, the full tower-failover stack: replay, balancer, ramp,
//!   circuit breaker, quota, observe, validation, provider client);
//! - **gw-axum**: the same router served by a bare `axum::serve` (`TCP_NODELAY` on),
//!   which tells the gateway server's own cost (HTTP/1 and HTTP/2 detection,
//!   connection timeouts, limits) from the router's.
//!
//! At fixed rates (1k and 5k requests per second, open loop, so a slow target queues
//! up instead of being offered less) and at saturation (64 workers back to back), it
//! reports p50 and p99 latency and requests per second. Client, proxies and the
//! simulated provider share the machine's cores, so the figures are relative.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tower_failover_gateway as gateway;

/// `--features mimalloc`: the allocator the gateway binary ships with.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
const BODY_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;

/// Whether the rounds ask for streamed answers (`--stream`).
static STREAM: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

#[path = "loopback.rs"]
mod loopback;
use loopback::{HttpClient, client};

async fn call(client: &HttpClient, url: &Uri) -> bool {
    let body = if STREAM.load(std::sync::atomic::Ordering::Relaxed) {
        BODY_STREAM
    } else {
        BODY
    };
    loopback::post(client, url, body).await
}

/// A bare proxy: forwards every request to `upstream` with one pooled client.
async fn start_proxy(upstream: String) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let upstream_client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build(HttpConnector::new());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            let client = upstream_client.clone();
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let client = client.clone();
                    let uri: Uri = format!("{upstream}{}", req.uri().path())
                        .parse()
                        .expect("a valid upstream URI");
                    async move {
                        let (mut parts, body) = req.into_parts();
                        parts.uri = uri;
                        parts.headers.remove(http::header::HOST);
                        let res = match client.request(Request::from_parts(parts, body)).await {
                            Ok(res) => res.map(|b| b.boxed()),
                            Err(_) => Response::builder()
                                .status(502)
                                .body(Full::new(Bytes::new()).map_err(|e| match e {}).boxed())
                                .expect("a valid response"),
                        };
                        Ok::<_, Infallible>(res)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    addr
}

async fn start_gateway(sim_base: &str) -> SocketAddr {
    let config = loopback::gateway_config(sim_base);
    let built = gateway::build(&config).expect("the gateway builds");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    // The gateway's own server, as the binary runs it (TCP_NODELAY, HTTP/1 and
    // HTTP/2, the connection timeouts), not a bare `axum::serve`.
    tokio::spawn(gateway::serve(
        listener,
        built,
        std::future::pending(),
        Duration::from_secs(1),
    ));
    addr
}

/// The gateway's router served by a bare `axum::serve` (with `TCP_NODELAY`):
/// what the gateway's own server costs, told apart from the router's work.
async fn start_gateway_on_axum(sim_base: &str) -> SocketAddr {
    use axum::serve::ListenerExt;
    let config = loopback::gateway_config(sim_base);
    let built = gateway::build(&config).expect("the gateway builds");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("address");
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move {
        let _ = axum::serve(listener, built.router.clone()).await;
        drop(built);
    });
    addr
}

struct Round {
    target: &'static str,
    load: String,
    sent: u64,
    failed: u64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn summarize(
    target: &'static str,
    load: String,
    mut lat: Vec<Duration>,
    failed: u64,
    took: Duration,
) -> Round {
    lat.sort();
    Round {
        target,
        load,
        sent: lat.len() as u64 + failed,
        failed,
        rps: lat.len() as f64 / took.as_secs_f64(),
        p50_ms: percentile(&lat, 0.50),
        p99_ms: percentile(&lat, 0.99),
    }
}

/// Open loop at `rate` per second for `secs`, at most 1024 in flight.
async fn fixed_rate(target: &'static str, url: &Uri, rate: u64, secs: u64) -> Round {
    let client = client();
    let slots = Arc::new(Semaphore::new(1024));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let started = Instant::now();
    let total = rate * secs;
    let mut failed = 0;
    for i in 0..total {
        let at = started + Duration::from_secs_f64(i as f64 / rate as f64);
        tokio::time::sleep_until(at).await;
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            failed += 1; // more than 1024 waiting: the target is not keeping up
            continue;
        };
        let (client, url, tx) = (client.clone(), url.clone(), tx.clone());
        tokio::spawn(async move {
            let t = Instant::now();
            let ok = call(&client, &url).await;
            let _ = tx.send((ok, t.elapsed()));
            drop(permit);
        });
    }
    drop(tx);
    let mut lat = Vec::with_capacity(total as usize);
    while let Some((ok, d)) = rx.recv().await {
        if ok {
            lat.push(d);
        } else {
            failed += 1;
        }
    }
    let took = started.elapsed();
    summarize(target, format!("{rate}/s"), lat, failed, took)
}

/// `workers` clients back to back for `secs`.
async fn saturate(target: &'static str, url: &Uri, workers: usize, secs: u64) -> Round {
    let client = client();
    let started = Instant::now();
    let until = started + Duration::from_secs(secs);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, url) = (client.clone(), url.clone());
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut failed) = (Vec::new(), 0u64);
            while Instant::now() < until {
                let t = Instant::now();
                if call(&client, &url).await {
                    lat.push(t.elapsed());
                } else {
                    failed += 1;
                }
            }
            (lat, failed)
        }));
    }
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await.expect("a worker");
        lat.extend(l);
        failed += f;
    }
    summarize(
        target,
        format!("saturation ({workers} workers)"),
        lat,
        failed,
        started.elapsed(),
    )
}

#[tokio::main]
async fn main() {
    let arg = |name: &str| std::env::args().skip_while(|a| a != name).nth(1);
    let flag = |name: &str| std::env::args().any(|a| a == name);
    let secs: u64 = arg("--secs").and_then(|s| s.parse().ok()).unwrap_or(3);
    let only = arg("--only");
    let skip_rates = flag("--skip-rates");
    STREAM.store(flag("--stream"), std::sync::atomic::Ordering::Relaxed);
    let sim = loopback::start_sim().await;
    let proxy = start_proxy(sim.base_url().to_owned()).await;
    let gateway = start_gateway(sim.base_url()).await;
    let on_axum = start_gateway_on_axum(sim.base_url()).await;
    let path = "/v1/chat/completions";
    let targets: [(&'static str, Uri); 4] = [
        (
            "direct",
            format!("{}{path}", sim.base_url()).parse().expect("uri"),
        ),
        (
            "proxy",
            format!("http://{proxy}{path}").parse().expect("uri"),
        ),
        (
            "gateway",
            format!("http://{gateway}{path}").parse().expect("uri"),
        ),
        (
            "gw-axum",
            format!("http://{on_axum}{path}").parse().expect("uri"),
        ),
    ];
    let targets: Vec<_> = targets
        .into_iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| o == *name))
        .collect();
    // Warm pools and caches.
    for (name, url) in &targets {
        let _ = fixed_rate(name, url, 500, 1).await;
    }
    let mut rounds = Vec::new();
    let rates: &[u64] = if skip_rates { &[] } else { &[1000, 5000] };
    for &rate in rates {
        for (name, url) in &targets {
            rounds.push(fixed_rate(name, url, rate, secs).await);
        }
    }
    for (name, url) in &targets {
        rounds.push(saturate(name, url, 64, secs).await);
    }

    eprintln!(
        "{:<9} {:<26} {:>8} {:>7} {:>9} {:>8} {:>8}",
        "target", "load", "sent", "failed", "req/s", "p50 ms", "p99 ms"
    );
    for r in &rounds {
        eprintln!(
            "{:<9} {:<26} {:>8} {:>7} {:>9.0} {:>8.2} {:>8.2}",
            r.target, r.load, r.sent, r.failed, r.rps, r.p50_ms, r.p99_ms
        );
    }
    let json: Vec<_> = rounds
        .iter()
        .map(|r| {
            serde_json::json!({
                "target": r.target, "load": r.load, "sent": r.sent, "failed": r.failed,
                "rps": r.rps, "p50_ms": r.p50_ms, "p99_ms": r.p99_ms,
            })
        })
        .collect();
    println!("{}", serde_json::to_string_pretty(&json).expect("json"));
}
