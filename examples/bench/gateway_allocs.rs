//! Allocations per request through the whole gateway (axum included), and the
//! memory the gateway holds after many requests (issue 19).
//!
//! Run with:
//!
//! ```sh
//! cargo run --release --example gateway_allocs                          # counts, then 1M requests
//! cargo run --release --example gateway_allocs -- --count 2000 --soak 0 # counts only
//! cargo run --release --example gateway_allocs -- --soak 300000 --soak-through direct
//! cargo run --release --example gateway_allocs -- --drop-gateway # only the router kept
//! cargo run --release --example gateway_allocs -- --only gateway --answer json --count 50 --soak 0 # for a profiler
//! ```
//!
//! Every request goes through the axum [`Router`] in process (`tower::ServiceExt::oneshot`,
//! no listener in front), and the router's provider is the simulated OpenAI-compatible
//! provider (`crates/sim`) over loopback HTTP, in the same process. A counting global
//! allocator sees every allocation in the process, the simulator's and the
//! upstream client's included, so the same load goes three ways in the same run:
//!
//! - **direct**: one pooled hyper client calls the simulator (what answering costs
//!   without us: the simulator's own allocations and a bare client's);
//! - **passthrough**: a bare axum router with one route that forwards the request to
//!   the simulator with that client and streams the answer back (axum plus a minimal
//!   proxy);
//! - **gateway**: the gateway's router (`build_with`), with the full default stack.
//!
//! `gateway − direct` is what the gateway costs a request, axum included;
//! `gateway − passthrough` is what it costs beyond a bare axum proxy. Each is
//! measured for a non-streamed and a streamed (SSE) answer, one request at a time so
//! the count is not smeared by concurrency.
//!
//! Then `--soak` requests (default 1,000,000, half streamed) go through the gateway
//! router, 32 at a time, and the process's resident memory (`VmRSS`) and live heap
//! bytes (the counting allocator's) are printed before, at every tenth, and after.
//! `--soak-through direct` (or `passthrough`) sends the soak's requests straight to
//! the simulator (or through the bare axum proxy) instead, to tell the gateway's
//! growth from the simulator's and the client's.

use std::alloc::System;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::routing::post;
use http::{Request, Response, Uri};
use http_body_util::{BodyExt, Full};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::ServiceExt;
use tower_failover_gateway::{self as gateway, GatewayConfig};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const PATH: &str = "/v1/chat/completions";
const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hello"}]}"#;
const BODY_STREAM: &str =
    r#"{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"hello"}]}"#;

#[path = "loopback.rs"]
mod loopback;
use loopback::{HttpClient, client};

fn body(stream: bool) -> &'static str {
    if stream { BODY_STREAM } else { BODY }
}

/// One request through `router` in process; `true` when it succeeded and the whole
/// answer was read.
async fn through(router: &Router, stream: bool) -> bool {
    let req = Request::post(PATH)
        .header("content-type", "application/json")
        .body(Body::from(body(stream)))
        .expect("a valid request");
    match router.clone().oneshot(req).await {
        Ok(res) => res.status().is_success() && res.into_body().collect().await.is_ok(),
        Err(never) => match never {},
    }
}

/// One request straight to the simulator.
async fn direct(client: &HttpClient, url: &Uri, stream: bool) -> bool {
    loopback::post(client, url, body(stream)).await
}

/// A bare axum proxy: one route, the body forwarded as is, the answer streamed back.
fn passthrough(client: HttpClient, url: Uri) -> Router {
    async fn forward(
        State((client, url)): State<(HttpClient, Uri)>,
        req: Request<Body>,
    ) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let Ok(bytes) = body.collect().await.map(|c| c.to_bytes()) else {
            return bad_gateway();
        };
        let mut up = Request::post(url);
        if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
            up = up.header(http::header::CONTENT_TYPE, ct);
        }
        let Ok(up) = up.body(Full::new(bytes)) else {
            return bad_gateway();
        };
        match client.request(up).await {
            Ok(res) => res.map(Body::new),
            Err(_) => bad_gateway(),
        }
    }
    fn bad_gateway() -> Response<Body> {
        let mut res = Response::new(Body::empty());
        *res.status_mut() = http::StatusCode::BAD_GATEWAY;
        res
    }
    Router::new()
        .route(PATH, post(forward))
        .with_state((client, url))
}

/// What the soak sends its requests through (`--soak-through`).
#[derive(Clone)]
enum Target {
    Direct(Box<(HttpClient, Uri)>),
    Router(Router),
}

impl Target {
    async fn one(&self, stream: bool) -> bool {
        match self {
            Target::Direct(to) => direct(&to.0, &to.1, stream).await,
            Target::Router(router) => through(router, stream).await,
        }
    }
}

fn arg(name: &str, default: u64) -> u64 {
    std::env::args()
        .skip_while(|a| a != name)
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Allocations and bytes allocated per request over `n` sequential requests.
async fn count<F: AsyncFnMut() -> bool>(n: u64, mut one: F) -> (f64, f64, u64) {
    let mut failed = 0;
    for _ in 0..n.min(200) {
        one().await; // warm pools, caches and lazily grown buffers
    }
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        if !one().await {
            failed += 1;
        }
    }
    let c = region.change();
    (
        c.allocations as f64 / n as f64,
        c.bytes_allocated as f64 / n as f64,
        failed,
    )
}

/// Live heap bytes: allocated minus freed (the counter adds a reallocation's growth
/// to the allocated bytes and its shrinking to the freed ones already).
fn live_heap() -> i64 {
    let s = GLOBAL.stats();
    s.bytes_allocated as i64 - s.bytes_deallocated as i64
}

/// The process's resident set in KiB, from `/proc/self/status` (Linux only).
fn rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

fn memory_line(label: &str, done: u64) -> serde_json::Value {
    let (rss, heap) = (rss_kib(), live_heap());
    eprintln!(
        "{label:<8} {done:>9} requests  VmRSS {:>8} KiB  live heap {:>10} B",
        rss.map_or_else(|| "?".to_owned(), |r| r.to_string()),
        heap
    );
    serde_json::json!({ "at": label, "requests": done, "rss_kib": rss, "live_heap_bytes": heap })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let n = arg("--count", 5_000);
    let soak = arg("--soak", 1_000_000);
    let sim = loopback::start_sim().await;
    let config = loopback::gateway_config(sim.base_url());
    // Keep the `Gateway` alive for the whole run, as `serve_with` does: dropping it
    // (which `gateway::router` does) ends the task that drains the metric histograms,
    // and they then grow with every request (`--drop-gateway` shows it).
    let built = gateway::build_with(&GatewayConfig::new(config)).expect("the gateway builds");
    let gw = built.router.clone();
    let _kept = (!std::env::args().any(|a| a == "--drop-gateway")).then_some(built);
    let url: Uri = format!("{}{PATH}", sim.base_url())
        .parse()
        .expect("a valid URI");
    let http = client();
    let bare = passthrough(http.clone(), url.clone());

    // `--only gateway` (or `direct`, `passthrough`) counts that target alone, so a
    // heap profiler (`valgrind --tool=dhat`) sees one path's allocations only.
    let only = std::env::args()
        .skip_while(|a| a != "--only")
        .nth(1)
        .unwrap_or_default();
    let counted = |target: &str| only.is_empty() || only == target;
    let skipped = (0.0, 0.0, 0);

    let mut rows = Vec::new();
    eprintln!(
        "{:<12} {:<9} {:>9} {:>12} {:>7}",
        "target", "answer", "allocs/req", "bytes/req", "failed"
    );
    // `--answer json` (or `streamed`) counts that answer alone.
    let answers = std::env::args()
        .skip_while(|a| a != "--answer")
        .nth(1)
        .unwrap_or_default();
    for stream in [false, true] {
        if !answers.is_empty() && answers != if stream { "streamed" } else { "json" } {
            continue;
        }
        let answer = if stream { "streamed" } else { "json" };
        let d = if counted("direct") {
            count(n, async || direct(&http, &url, stream).await).await
        } else {
            skipped
        };
        let p = if counted("passthrough") {
            count(n, async || through(&bare, stream).await).await
        } else {
            skipped
        };
        let g = if counted("gateway") {
            count(n, async || through(&gw, stream).await).await
        } else {
            skipped
        };
        for (target, (allocs, bytes, failed)) in [("direct", d), ("passthrough", p), ("gateway", g)]
        {
            eprintln!("{target:<12} {answer:<9} {allocs:>9.1} {bytes:>12.0} {failed:>7}");
            rows.push(serde_json::json!({
                "target": target, "answer": answer, "requests": n,
                "allocs_per_req": allocs, "bytes_per_req": bytes, "failed": failed,
            }));
        }
        eprintln!(
            "{:<12} {answer:<9} {:>9.1} {:>12.0}   (gateway - direct: the gateway, axum included)",
            "=> gateway",
            g.0 - d.0,
            g.1 - d.1
        );
        eprintln!(
            "{:<12} {answer:<9} {:>9.1} {:>12.0}   (gateway - passthrough: beyond a bare axum proxy)",
            "=> stack",
            g.0 - p.0,
            g.1 - p.1
        );
    }

    let soak_through = std::env::args()
        .skip_while(|a| a != "--soak-through")
        .nth(1)
        .unwrap_or_else(|| "gateway".to_owned());
    let target = match soak_through.as_str() {
        "direct" => Target::Direct(Box::new((http.clone(), url.clone()))),
        "passthrough" => Target::Router(bare.clone()),
        _ => Target::Router(gw.clone()),
    };
    let mut memory = Vec::new();
    if soak > 0 {
        eprintln!("soak through {soak_through}");
        memory.push(memory_line("before", 0));
        const WORKERS: u64 = 32;
        let tenth = (soak / 10).max(1);
        let mut done = 0;
        let mut failed = 0;
        while done < soak {
            let step = tenth.min(soak - done);
            let mut tasks = Vec::new();
            for w in 0..WORKERS {
                let share = step / WORKERS + u64::from(w < step % WORKERS);
                let target = target.clone();
                tasks.push(tokio::spawn(async move {
                    let mut failed = 0u64;
                    for i in 0..share {
                        if !target.one(i % 2 == 1).await {
                            failed += 1;
                        }
                    }
                    failed
                }));
            }
            for t in tasks {
                failed += t.await.expect("a worker");
            }
            done += step;
            memory.push(memory_line("after", done));
        }
        eprintln!("soak: {done} requests, {failed} failed");
    }
    let out =
        serde_json::json!({ "allocations": rows, "soak_through": soak_through, "memory": memory });
    println!("{}", serde_json::to_string_pretty(&out).expect("json"));
}
