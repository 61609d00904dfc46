//! What a closed circuit breaker costs per request, against the bare inner service
//! measured in the same run.
//!
//! One request = `poll_ready` + `call` + polling the response future to completion
//! (the inner service answers at once, so the figure is the breaker's own work:
//! reading the state, moving the grant, classifying the response, counting it).
//! After the criterion runs, a summary line prints both figures, the overhead in
//! nanoseconds, the ratio, and heap allocations per request counted by a counting
//! global allocator.
//!
//! Run with: `cargo bench -p tower-failover-circuit --bench closed`

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::Service;
use tower_failover_circuit::{CircuitBreaker, CircuitConfig, Window};
use tower_failover_core::Health;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// A provider that answers 200 with an empty body at once, without allocating.
#[derive(Clone, Copy)]
struct Instant200;

type Empty = http_body_util::Empty<bytes::Bytes>;

impl Service<Request<()>> for Instant200 {
    type Response = Response<Empty>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Empty>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<()>) -> Self::Future {
        ready(Ok(Response::new(Empty::new())))
    }
}

/// One request through `svc`, driven by hand, its body read to the end (where the
/// breaker counts a 2xx).
#[inline]
fn one<S, B>(svc: &mut S, cx: &mut Context<'_>)
where
    S: Service<Request<()>, Response = Response<B>>,
    B: http_body::Body,
{
    assert!(svc.poll_ready(cx).is_ready());
    let fut = pin!(svc.call(Request::new(())));
    match fut.poll(cx) {
        Poll::Ready(Ok(res)) => {
            let mut body = pin!(res.into_body());
            assert!(matches!(body.as_mut().poll_frame(cx), Poll::Ready(None)));
            black_box(body);
        }
        _ => panic!("the inner service answers at once"),
    }
}

fn breaker(config: CircuitConfig) -> CircuitBreaker<Instant200> {
    CircuitBreaker::with_config(Instant200, Health::standalone("bench", "model"), config).unwrap()
}

fn windowed() -> CircuitConfig {
    CircuitConfig::default()
        .failure_rate(0.5, Window::Calls(50), 10)
        .failures_in_window(5, Duration::from_secs(60))
}

fn bench(c: &mut Criterion) {
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("closed");
    let mut bare = Instant200;
    group.bench_function("bare", |b| b.iter(|| one(&mut bare, &mut cx)));
    let mut circuit = breaker(CircuitConfig::default());
    group.bench_function("circuit", |b| b.iter(|| one(&mut circuit, &mut cx)));
    let mut circuit = breaker(windowed());
    group.bench_function("circuit_windows", |b| b.iter(|| one(&mut circuit, &mut cx)));
    group.finish();
}

/// Nanoseconds per request over `n` requests.
// Benchmarks measure real time: std's clock is the point here.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn ns_per_request<S, B>(svc: &mut S, n: u64) -> f64
where
    S: Service<Request<()>, Response = Response<B>>,
    B: http_body::Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    let start = std::time::Instant::now();
    for _ in 0..n {
        one(svc, &mut cx);
    }
    start.elapsed().as_nanos() as f64 / n as f64
}

fn allocations_per_request<S, B>(svc: &mut S, n: u64) -> f64
where
    S: Service<Request<()>, Response = Response<B>>,
    B: http_body::Body,
{
    let mut cx = Context::from_waker(Waker::noop());
    one(svc, &mut cx); // warm up
    let region = Region::new(GLOBAL);
    for _ in 0..n {
        one(svc, &mut cx);
    }
    region.change().allocations as f64 / n as f64
}

fn summary() {
    const N: u64 = 500_000;
    const ROUNDS: usize = 20;
    let mut bare = Instant200;
    let mut circuit = breaker(CircuitConfig::default());
    let mut windows = breaker(windowed());
    // Interleaved rounds, best of each: a busy machine slows all three alike.
    let mut best = [f64::INFINITY; 3];
    for _ in 0..ROUNDS {
        best[0] = best[0].min(ns_per_request(&mut bare, N));
        best[1] = best[1].min(ns_per_request(&mut circuit, N));
        best[2] = best[2].min(ns_per_request(&mut windows, N));
    }
    let [base, with, with_windows] = best;
    println!();
    println!("closed-state summary (best of {ROUNDS} interleaved rounds of {N} requests):");
    println!(
        "  bare inner service      {base:7.1} ns/request, {:.3} allocations/request",
        allocations_per_request(&mut bare, 100_000)
    );
    for (name, ns, svc) in [
        ("circuit (default)", with, &mut circuit),
        ("circuit + windows", with_windows, &mut windows),
    ] {
        println!(
            "  {name:<22}  {ns:7.1} ns/request, {:.3} allocations/request, overhead {:+.1} ns, ratio {:.2}x",
            allocations_per_request(svc, 100_000),
            ns - base,
            ns / base
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    summary();
    Criterion::default().configure_from_args().final_summary();
}
