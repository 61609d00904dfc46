//! The hot path with the Redis store against the in-process store, and how fast a
//! circuit opening reaches another replica.
//!
//! Run with: `cargo bench -p tower-failover-redis --bench fleet`
//! (the propagation figure needs `redis-server` on the PATH; it is skipped otherwise).

#![allow(missing_docs)]
#![allow(clippy::disallowed_types, clippy::disallowed_methods)] // benchmarks measure real time

use std::hint::black_box;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tower::{Service, ServiceExt, service_fn};
use tower_failover_core::observe::ObserveLayer;
use tower_failover_core::{CircuitState, HealthConfig, Registry};
use tower_failover_redis::{RedisConfig, RedisStore};
use tower_layer::Layer;

fn hot_path(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let local = Registry::new();
    // No server needed: the hot path never talks to Redis.
    let redis = Registry::with_store(
        RedisStore::start(RedisConfig::new("redis://127.0.0.1:1/")).unwrap(),
        HealthConfig::default(),
    );
    let mut group = c.benchmark_group("store_hot_path");
    for (name, registry) in [("local_store", local), ("redis_store", redis)] {
        let health = registry.provider("openai", "gpt-4o");
        let mut svc =
            ObserveLayer::new(health.clone()).layer(service_fn(|_req: Request<()>| async {
                Ok::<_, tower::BoxError>(Response::new(String::new()))
            }));
        group.bench_function(name, |b| {
            b.iter(|| {
                let res = rt.block_on(async {
                    let svc = svc.ready().await.unwrap();
                    svc.call(Request::new(())).await.unwrap()
                });
                black_box(health.is_available(tokio::time::Instant::now()));
                black_box(res)
            })
        });
    }
    group.finish();
}

fn propagation(_c: &mut Criterion) {
    let installed = Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !installed {
        eprintln!("propagation: skipped (no redis-server)");
        return;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        let url = format!("redis://127.0.0.1:{port}/");
        let cfg = RedisConfig::new(url).namespace("bench");
        let a = Registry::with_store(RedisStore::start(cfg.clone()).unwrap(), HealthConfig::default());
        let b = Registry::with_store(RedisStore::start(cfg).unwrap(), HealthConfig::default());
        let mut samples = Vec::new();
        for i in 0..50 {
            let ha = a.provider("p", &format!("m{i}"));
            let hb = b.provider("p", &format!("m{i}"));
            tokio::time::sleep(Duration::from_millis(150)).await;
            let t = Instant::now();
            ha.transition(CircuitState::Closed, CircuitState::Open, Some(tokio::time::Instant::now() + Duration::from_secs(30)));
            while hb.circuit() != CircuitState::Open {
                if t.elapsed() > Duration::from_secs(2) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            samples.push(t.elapsed());
        }
        samples.sort();
        println!(
            "circuit-open propagation to another replica over {} samples: p50 {:?}, p99 {:?}, max {:?}",
            samples.len(),
            samples[samples.len() / 2],
            samples[samples.len() * 99 / 100],
            samples[samples.len() - 1]
        );
    });
    let _ = child.kill();
    let _ = child.wait();
}

criterion_group!(benches, hot_path, propagation);
criterion_main!(benches);
