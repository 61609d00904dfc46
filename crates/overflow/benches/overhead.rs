//! Per-request overhead of the overflow router and the quota layer, against the bare
//! inner service measured in the same run, with heap allocations per request.
//!
//! Run with: `cargo bench -p tower-failover-overflow --bench overhead`
//!
//! Every inner service answers at once (a ready future), so the figures are the
//! layers' own cost: `poll_ready`, `call`, the response future and, for the quota
//! layer, reading the response's rate-limit headers.

use std::alloc::System;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use http::{HeaderMap, Request, Response};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{BoxError, Layer, Service};
use tower_failover_core::Health;
use tower_failover_core::replay::{ReplayBody, clone_request};
use tower_failover_overflow::{Overflow, QuotaConfig, QuotaLayer, QuotaTracker};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// An inner service that answers at once, with `headers` on every response.
#[derive(Clone)]
struct Bare {
    headers: HeaderMap,
}

impl Service<Request<ReplayBody>> for Bare {
    type Response = Response<ReplayBody>;
    type Error = BoxError;
    type Future = Ready<Result<Response<ReplayBody>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        drop(req);
        let mut res = Response::new(ReplayBody::empty());
        if !self.headers.is_empty() {
            *res.headers_mut() = self.headers.clone();
        }
        ready(Ok(res))
    }
}

/// Polls a future that must be ready at once.
fn now<F: Future>(f: F) -> F::Output {
    let mut cx = Context::from_waker(Waker::noop());
    match pin!(f).poll(&mut cx) {
        Poll::Ready(out) => out,
        Poll::Pending => panic!("the benchmark's services answer at once"),
    }
}

/// One request: `poll_ready`, `call`, the future.
fn one<S>(svc: &mut S, req: Request<ReplayBody>) -> S::Response
where
    S: Service<Request<ReplayBody>>,
    S::Error: std::fmt::Debug,
{
    let mut cx = Context::from_waker(Waker::noop());
    match svc.poll_ready(&mut cx) {
        Poll::Ready(r) => r.unwrap(),
        Poll::Pending => panic!("not ready"),
    }
    now(svc.call(req)).unwrap()
}

fn request(with_headers: bool) -> Request<ReplayBody> {
    let mut b = Request::post("http://provider/v1/chat/completions");
    if with_headers {
        b = b
            .header("content-type", "application/json")
            .header("authorization", "Bearer sk-bench");
    }
    b.body(ReplayBody::from(r#"{"model":"m","messages":[]}"#))
        .unwrap()
}

fn openai_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in [
        ("x-ratelimit-limit-requests", "10000"),
        ("x-ratelimit-limit-tokens", "2000000"),
        ("x-ratelimit-remaining-requests", "9999"),
        ("x-ratelimit-remaining-tokens", "1999000"),
        ("x-ratelimit-reset-requests", "6ms"),
        ("x-ratelimit-reset-tokens", "30ms"),
        ("content-type", "application/json"),
    ] {
        h.insert(k, v.parse().unwrap());
    }
    h
}

fn overflow(inner: Bare) -> Overflow<Bare> {
    Overflow::new([
        (Health::standalone("primary", "m"), inner.clone()),
        (Health::standalone("overflow", "m"), inner),
    ])
    .unwrap()
}

fn quota<S>(inner: S) -> tower_failover_overflow::Quota<S> {
    let tracker = QuotaTracker::new(QuotaConfig::default()).unwrap();
    QuotaLayer::new(Health::standalone("primary", "m"), tracker).layer(inner)
}

/// Heap allocations per request of `svc` (requests are built beforehand).
fn allocations<S>(name: &str, mut svc: S, with_headers: bool)
where
    S: Service<Request<ReplayBody>>,
    S::Error: std::fmt::Debug,
{
    const N: usize = 10_000;
    let reqs: Vec<_> = (0..N).map(|_| request(with_headers)).collect();
    let mut responses = Vec::with_capacity(N);
    let region = Region::new(GLOBAL);
    for req in reqs {
        responses.push(one(&mut svc, req));
    }
    let allocs = region.change().allocations;
    drop(responses);
    println!(
        "allocations per request: {:<40} {:.2}",
        name,
        allocs as f64 / N as f64
    );
}

fn bench(c: &mut Criterion) {
    let plain = Bare {
        headers: HeaderMap::new(),
    };
    let limited = Bare {
        headers: openai_headers(),
    };

    for with_headers in [false, true] {
        let label = if with_headers {
            "request with 2 headers"
        } else {
            "request without headers"
        };
        let mut g = c.benchmark_group(format!("overflow router, {label}"));
        let mut bare = plain.clone();
        g.bench_function("bare inner service", |b| {
            b.iter_batched(
                || request(with_headers),
                |req| black_box(one(&mut bare, req)),
                BatchSize::SmallInput,
            )
        });
        let mut bare = plain.clone();
        g.bench_function("bare inner service + clone_request", |b| {
            b.iter_batched(
                || request(with_headers),
                |req| {
                    let copy = clone_request(&req);
                    black_box(one(&mut bare, copy));
                    drop(black_box(req));
                },
                BatchSize::SmallInput,
            )
        });
        let mut router = overflow(plain.clone());
        g.bench_function("Overflow over 2 targets, primary available", |b| {
            b.iter_batched(
                || request(with_headers),
                |req| black_box(one(&mut router, req)),
                BatchSize::SmallInput,
            )
        });
        g.finish();
    }

    let mut g = c.benchmark_group("quota layer");
    for (name, inner) in [
        ("response without rate-limit headers", plain.clone()),
        ("response with OpenAI rate-limit headers", limited.clone()),
    ] {
        let mut bare = inner.clone();
        g.bench_function(format!("bare, {name}"), |b| {
            b.iter_batched(
                || request(false),
                |req| black_box(one(&mut bare, req)),
                BatchSize::SmallInput,
            )
        });
        let mut layered = quota(inner.clone());
        g.bench_function(format!("QuotaLayer, {name}"), |b| {
            b.iter_batched(
                || request(false),
                |req| black_box(one(&mut layered, req)),
                BatchSize::SmallInput,
            )
        });
    }
    g.finish();

    allocations("bare, request without headers", plain.clone(), false);
    allocations(
        "Overflow, request without headers",
        overflow(plain.clone()),
        false,
    );
    allocations("bare, request with 2 headers", plain.clone(), true);
    allocations(
        "Overflow, request with 2 headers",
        overflow(plain.clone()),
        true,
    );
    allocations("bare, no rate-limit headers", plain.clone(), false);
    allocations(
        "QuotaLayer, no rate-limit headers",
        quota(plain.clone()),
        false,
    );
    allocations("bare, OpenAI rate-limit headers", limited.clone(), false);
    allocations(
        "QuotaLayer, OpenAI rate-limit headers",
        quota(limited.clone()),
        false,
    );
    allocations(
        "Overflow over QuotaLayer, OpenAI headers",
        Overflow::new([
            (Health::standalone("a", "m"), quota(limited.clone())),
            (Health::standalone("b", "m"), quota(limited)),
        ])
        .unwrap(),
        false,
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
