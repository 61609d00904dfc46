//! Non-streaming requests per second a sim serves on one core.
//!
//! Everything (the hyper client, the sim, or the baseline server) runs on one
//! current-thread tokio runtime, so the figures are for ONE core doing both the
//! client's and the server's work: a lower bound for the sim alone.
//!
//! The baseline is a bare hyper server (same hyper-util auto builder) answering a
//! fixed JSON body of similar size: the ratio sim / baseline is the price of the
//! simulator's logic (parsing, generation, quota, faults, counters).
//!
//! Run with: `cargo bench -p tower-failover-sim --bench throughput`

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::runtime::Runtime;
use tower_failover_sim::{Flavor, Sim};

type HttpClient = Client<HttpConnector, Full<Bytes>>;

const BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},{"role":"user","content":"Say something about failover."}]}"#;
const CONCURRENCY: usize = 32;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A bare hyper server answering a fixed completion-sized JSON body.
async fn baseline() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let reply = Bytes::from(format!(
        r#"{{"id":"chatcmpl-x","object":"chat.completion","created":1,"model":"gpt-4o-mini","choices":[{{"index":0,"message":{{"role":"assistant","content":"{}"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":20,"completion_tokens":30,"total_tokens":50}}}}"#,
        "word ".repeat(24)
    ));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let reply = reply.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let reply = reply.clone();
                    async move {
                        let _ = req.into_body().collect().await;
                        Ok::<_, Infallible>(http::Response::new(Full::new(reply)))
                    }
                });
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

async fn one(client: &HttpClient, url: &str) {
    let req = http::Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(BODY.as_bytes())))
        .unwrap();
    let res = client.request(req).await.unwrap();
    assert_eq!(res.status(), 200);
    res.into_body().collect().await.unwrap();
}

async fn batch(client: &HttpClient, url: &str) {
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..CONCURRENCY {
        let (c, u) = (client.clone(), url.to_string());
        set.spawn(async move { one(&c, &u).await });
    }
    while let Some(r) = set.join_next().await {
        r.unwrap();
    }
}

fn bench(c: &mut Criterion) {
    let rt = runtime();
    let (sim, base) = rt.block_on(async {
        // A quota that the benchmark cannot exhaust.
        let sim = Sim::builder(Flavor::OpenAi)
            .quota(tower_failover_sim::Quota::new(u64::MAX / 4, u64::MAX / 4))
            .start()
            .await
            .unwrap();
        (sim, baseline().await)
    });
    let sim_url = sim.completion_url();
    let base_url = format!("http://{base}/v1/chat/completions");
    let client: HttpClient = Client::builder(TokioExecutor::new()).build_http();

    let mut g = c.benchmark_group("sequential");
    g.throughput(Throughput::Elements(1));
    g.bench_function("baseline_hyper", |b| {
        b.iter(|| rt.block_on(one(&client, &base_url)))
    });
    g.bench_function("sim_openai", |b| {
        b.iter(|| rt.block_on(one(&client, &sim_url)))
    });
    g.finish();

    let mut g = c.benchmark_group("concurrent_32");
    g.throughput(Throughput::Elements(CONCURRENCY as u64));
    g.bench_function("baseline_hyper", |b| {
        b.iter(|| rt.block_on(batch(&client, &base_url)))
    });
    g.bench_function("sim_openai", |b| {
        b.iter(|| rt.block_on(batch(&client, &sim_url)))
    });
    g.finish();

    let counters = sim.counters();
    assert_eq!(
        counters.received,
        counters.ok(),
        "every request answered 200"
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
