//! Per-request overhead of the ramp's admission service against the bare inner
//! service, measured in the same run, with heap allocations per request.
//!
//! Run with: `cargo bench -p tower-failover-ramp --bench overhead`

use std::alloc::System;
use std::hint::black_box;
use std::task::{Context, Poll, Waker};

use criterion::{Criterion, criterion_group};
use http::{Request, Response};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::{Layer, Service, service_fn};
use tower_failover_core::Health;
use tower_failover_ramp::{RampConfig, RampLayer};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// One request through `svc`: poll_ready, call, and poll the (ready) future.
#[inline]
fn one<S, B>(svc: &mut S, cx: &mut Context<'_>) -> bool
where
    S: Service<Request<()>, Response = Response<B>>,
    B: http_body::Body,
{
    let Poll::Ready(Ok(())) = svc.poll_ready(cx) else {
        unreachable!("always ready")
    };
    let mut fut = std::pin::pin!(svc.call(Request::new(())));
    match fut.as_mut().poll(cx) {
        // A 2xx counts for the ramp when its body ends: read it.
        Poll::Ready(Ok(res)) => {
            let mut body = std::pin::pin!(res.into_body());
            matches!(body.as_mut().poll_frame(cx), Poll::Ready(None))
        }
        Poll::Ready(Err(_)) => false,
        Poll::Pending => unreachable!("always ready"),
    }
}

/// An empty body that allocates nothing.
type Empty = http_body_util::Empty<&'static [u8]>;

use std::future::Future;

fn inner() -> impl Service<Request<()>, Response = Response<Empty>, Error = tower::BoxError> + Clone
{
    service_fn(|_req: Request<()>| {
        std::future::ready(Ok::<_, tower::BoxError>(Response::new(Empty::new())))
    })
}

/// The cases: name, and the ramp share in ppm (`None`: the bare inner service).
const CASES: [(&str, Option<u32>); 4] = [
    ("bare inner service", None),
    ("ramp, no ramp running", Some(1_000_000)),
    ("ramp at 99.9999 % (sampling, admitted)", Some(999_999)),
    ("ramp at 50 % (half shed)", Some(500_000)),
];

fn ramped(
    ppm: u32,
) -> impl Service<Request<()>, Response = Response<impl http_body::Body>, Error = tower::BoxError> {
    let health = Health::standalone("bench", "model");
    if ppm < 1_000_000 {
        health.set_ramp(Some(2), ppm);
    }
    RampLayer::with_config(health, RampConfig::default().seed(1))
        .unwrap()
        .layer(inner())
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut group = c.benchmark_group("ramp/overhead");
    for (name, ppm) in CASES {
        match ppm {
            None => {
                let mut svc = inner();
                group.bench_function(name, |b| b.iter(|| black_box(one(&mut svc, &mut cx))));
            }
            Some(ppm) => {
                let mut svc = ramped(ppm);
                group.bench_function(name, |b| b.iter(|| black_box(one(&mut svc, &mut cx))));
            }
        }
    }
    group.finish();
}

/// A plain summary in the same run: ns per request, ratio to the bare service,
/// and heap allocations per request.
// Benchmarks measure real time: std's clock is the right one here.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn summary() {
    const N: u32 = 5_000_000;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    let _guard = rt.enter();
    let mut cx = Context::from_waker(Waker::noop());
    let mut measure = |svc: &mut dyn FnMut(&mut Context<'_>) -> bool| {
        for _ in 0..N / 10 {
            black_box(svc(&mut cx));
        }
        let region = Region::new(GLOBAL);
        let start = std::time::Instant::now();
        for _ in 0..N {
            black_box(svc(&mut cx));
        }
        let ns = start.elapsed().as_nanos() as f64 / f64::from(N);
        let allocs = region.change().allocations as f64 / f64::from(N);
        (ns, allocs)
    };
    let mut base = 0.0;
    println!(
        "\n{:<42} {:>9} {:>9} {:>12}",
        "case", "ns/req", "ratio", "allocs/req"
    );
    for (name, ppm) in CASES {
        let (ns, allocs) = match ppm {
            None => {
                let mut svc = inner();
                measure(&mut |cx| one(&mut svc, cx))
            }
            Some(ppm) => {
                let mut svc = ramped(ppm);
                measure(&mut |cx| one(&mut svc, cx))
            }
        };
        if ppm.is_none() {
            base = ns;
        }
        println!(
            "{name:<42} {ns:>9.1} {:>9.2} {allocs:>12.2}   (+{:.1} ns)",
            ns / base,
            ns - base
        );
    }
}

criterion_group!(benches, bench);

fn main() {
    benches();
    summary();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
