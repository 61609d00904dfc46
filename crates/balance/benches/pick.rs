//! Pick cost of the balancer with 2, 10, 100 and 1000 providers, against a
//! baseline measured in the same run (a uniform random pick that reads the chosen
//! provider's health), and the whole per-request overhead of `Balance` over calling
//! a provider directly.
//!
//! Run with: `cargo bench -p tower-failover-balance --bench pick`

use std::alloc::System;
use std::convert::Infallible;
use std::future::{Future, Ready, ready};
use std::hint::black_box;
use std::pin::pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion};
use http::{Request, Response};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};
use tower::Service;
use tower_failover_balance::{Balance, BalanceConfig, Policy, RequestAttrs};
use tower_failover_core::Health;
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::rng::Rng;

/// Counts heap allocations, to report them per pick and per request.
#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SIZES: [usize; 4] = [2, 10, 100, 1000];

/// Heap allocations per call of `f`, over `rounds` calls.
fn allocations(rounds: u32, mut f: impl FnMut()) -> f64 {
    let region = Region::new(GLOBAL);
    for _ in 0..rounds {
        f();
    }
    region.change().allocations as f64 / f64::from(rounds)
}

/// Providers with different measured latencies and a few requests in flight.
fn healths(n: usize) -> (Vec<Health>, Vec<tower_failover_core::InFlight>) {
    let hs: Vec<Health> = (0..n)
        .map(|i| {
            let h = Health::standalone(format!("p{i}"), "m");
            h.observe_ttfb(Duration::from_millis(200 + (i as u64 * 37) % 400));
            h
        })
        .collect();
    let guards = hs.iter().step_by(3).map(Health::start_request).collect();
    (hs, guards)
}

fn balance(hs: &[Health], policy: Policy) -> Balance<()> {
    Balance::builder()
        .config(BalanceConfig::default().policy(policy).seed(1))
        .providers(hs.iter().map(|h| (h.clone(), ())))
        .build()
        .unwrap()
}

/// The baseline: one uniform random draw and the same health reads for the one
/// provider drawn.
fn uniform(rng: &mut Rng, hs: &[Health]) -> f64 {
    let h = &hs[rng.below(hs.len() as u64) as usize];
    let now = tokio::time::Instant::now();
    if h.is_available(now) {
        h.ttfb().get_ns() * (h.in_flight() + 1) as f64
    } else {
        0.0
    }
}

fn bench_pick(c: &mut Criterion) {
    let mut group = c.benchmark_group("pick");
    let attrs = RequestAttrs::new();
    for n in SIZES {
        let (hs, _guards) = healths(n);
        let mut rng = Rng::seeded(1);
        group.bench_with_input(BenchmarkId::new("uniform_baseline", n), &n, |b, _| {
            b.iter(|| black_box(uniform(&mut rng, &hs)))
        });
        let mut p2c = balance(&hs, Policy::LeastLoaded);
        group.bench_with_input(BenchmarkId::new("least_loaded_p2c", n), &n, |b, _| {
            b.iter(|| black_box(p2c.pick(&attrs).is_some()))
        });
    }
    for n in [2, 10, 100] {
        let (hs, _guards) = healths(n);
        let mut cheapest = balance(&hs, Policy::Cheapest);
        group.bench_with_input(BenchmarkId::new("cheapest", n), &n, |b, _| {
            b.iter(|| black_box(cheapest.pick(&attrs).is_some()))
        });
        let mut rr = balance(&hs, Policy::RoundRobin);
        group.bench_with_input(BenchmarkId::new("round_robin", n), &n, |b, _| {
            b.iter(|| black_box(rr.pick(&attrs).is_some()))
        });
    }
    group.finish();
}

/// A provider that answers at once.
#[derive(Clone)]
struct Instant200;

impl Service<Request<ReplayBody>> for Instant200 {
    type Response = Response<ReplayBody>;
    type Error = Infallible;
    type Future = Ready<Result<Response<ReplayBody>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<ReplayBody>) -> Self::Future {
        ready(Ok(Response::new(ReplayBody::empty())))
    }
}

fn run<S>(svc: &mut S, cx: &mut Context<'_>) -> bool
where
    S: Service<Request<ReplayBody>, Response = Response<ReplayBody>>,
{
    let _ = svc.poll_ready(cx);
    let fut = pin!(svc.call(Request::new(ReplayBody::from("{}"))));
    matches!(fut.poll(cx), Poll::Ready(Ok(_)))
}

fn bench_request(c: &mut Criterion) {
    let mut group = c.benchmark_group("request");
    let mut cx = Context::from_waker(Waker::noop());
    let mut bare = Instant200;
    group.bench_function("bare_provider", |b| {
        b.iter(|| black_box(run(&mut bare, &mut cx)))
    });
    for n in [2, 100] {
        let hs: Vec<Health> = (0..n)
            .map(|i| Health::standalone(format!("p{i}"), "m"))
            .collect();
        let mut balance = Balance::builder()
            .seed(1)
            .providers(hs.iter().map(|h| (h.clone(), Instant200)))
            .build()
            .unwrap();
        group.bench_with_input(BenchmarkId::new("through_balance", n), &n, |b, _| {
            b.iter(|| black_box(run(&mut balance, &mut cx)))
        });
    }
    group.finish();
}

/// Heap allocations per request through `svc` (requests are built beforehand).
fn allocations_per_request<S>(svc: &mut S, cx: &mut Context<'_>, with_header: bool) -> f64
where
    S: Service<Request<ReplayBody>, Response = Response<ReplayBody>>,
{
    const N: usize = 10_000;
    let reqs: Vec<Request<ReplayBody>> = (0..N)
        .map(|_| {
            let mut req = Request::new(ReplayBody::from("{}"));
            if with_header {
                req.headers_mut()
                    .insert("authorization", http::HeaderValue::from_static("x"));
            }
            req
        })
        .collect();
    let region = Region::new(GLOBAL);
    for req in reqs {
        let _ = svc.poll_ready(cx);
        let fut = pin!(svc.call(req));
        black_box(fut.poll(cx).is_ready());
    }
    region.change().allocations as f64 / N as f64
}

/// The ratios against the baselines, measured again in this run by plain timing
/// loops so that they can be printed side by side.
// Benchmarks measure real time: std's clock is the point here.
#[allow(clippy::disallowed_types, clippy::disallowed_methods)]
fn report_ratios() {
    use std::time::Instant;
    const ROUNDS: u32 = 2_000_000;
    let attrs = RequestAttrs::new();
    println!("\nratios (ns per pick, {ROUNDS} rounds each):");
    println!("providers  uniform    p2c  ratio");
    for n in SIZES {
        let (hs, _guards) = healths(n);
        let mut rng = Rng::seeded(1);
        let t = Instant::now();
        for _ in 0..ROUNDS {
            black_box(uniform(&mut rng, &hs));
        }
        let base = t.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        let mut p2c = balance(&hs, Policy::LeastLoaded);
        let t = Instant::now();
        for _ in 0..ROUNDS {
            black_box(p2c.pick(&attrs).is_some());
        }
        let pick = t.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
        let allocs = allocations(10_000, || {
            black_box(p2c.pick(&attrs).is_some());
        });
        println!(
            "{n:>9}  {base:>7.1}  {pick:>5.1}  {:>5.2}  {allocs} allocations per pick",
            pick / base
        );
    }
    let mut cx = Context::from_waker(Waker::noop());
    let mut bare = Instant200;
    let t = Instant::now();
    for _ in 0..ROUNDS {
        black_box(run(&mut bare, &mut cx));
    }
    let base = t.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
    let hs: Vec<Health> = (0..2)
        .map(|i| Health::standalone(format!("p{i}"), "m"))
        .collect();
    let mut balance = Balance::builder()
        .seed(1)
        .providers(hs.iter().map(|h| (h.clone(), Instant200)))
        .build()
        .unwrap();
    let t = Instant::now();
    for _ in 0..ROUNDS {
        black_box(run(&mut balance, &mut cx));
    }
    let through = t.elapsed().as_nanos() as f64 / f64::from(ROUNDS);
    println!(
        "request: bare {base:.1} ns, through Balance (2 providers) {through:.1} ns, overhead {:.1} ns",
        through - base
    );
    for with_header in [false, true] {
        println!(
            "allocations per request{}: bare {}, through Balance {}",
            if with_header { " (one header)" } else { "" },
            allocations_per_request(&mut bare, &mut cx, with_header),
            allocations_per_request(&mut balance, &mut cx, with_header),
        );
    }
}

fn main() {
    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    bench_pick(&mut c);
    bench_request(&mut c);
    c.final_summary();
    report_ratios();
}
