//! Scenarios against the simulated providers' real RPM quota, over loopback HTTP.
//!
//! The sims enforce per-minute token buckets on tokio's clock and report them in
//! truthful rate-limit headers; these tests run on paused time, so minutes of
//! traffic take well under a second of real time. The load is twice the primary's
//! RPM; the primary's bucket starts full, so the first minute drains it and the rest
//! runs at the limit.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::time::{Instant, sleep};
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};
use tower_failover_core::observe::{Observe, ObserveLayer};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{Health, Registry};
use tower_failover_overflow::{
    Overflow, OverflowConfig, Quota, QuotaConfig, QuotaLayer, QuotaTracker,
};
use tower_failover_sim::{Flavor, Sim};

/// The provider adapter of these tests: points the request at one sim.
#[derive(Clone)]
struct SimClient {
    client: Client<HttpConnector, ReplayBody>,
    url: Uri,
}

impl Service<Request<ReplayBody>> for SimClient {
    type Response = Response<Incoming>;
    type Error = hyper_util::client::legacy::Error;
    type Future = hyper_util::client::legacy::ResponseFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.client.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<ReplayBody>) -> Self::Future {
        *req.uri_mut() = self.url.clone();
        self.client.call(req)
    }
}

/// Counts requests the router hands to a target while that target's quota group is
/// known to be limited (there must be none).
#[derive(Clone)]
struct Probe<S> {
    inner: S,
    health: Health,
    violations: Arc<AtomicUsize>,
}

impl<S: Service<Request<ReplayBody>>> Service<Request<ReplayBody>> for Probe<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody>) -> S::Future {
        if self.health.is_rate_limited(Instant::now()) {
            self.violations.fetch_add(1, Ordering::SeqCst);
        }
        self.inner.call(req)
    }
}

type Stack = Probe<Quota<Observe<SimClient>>>;

struct Report {
    requests: usize,
    errors: usize,
    primary_completed: u64,
    primary_quota_429s: u64,
    allowance: f64,
    violations: usize,
}

const RPM: u64 = 120;

/// Runs `seconds` of traffic at twice the primary's RPM through an overflow router
/// (primary first, a generous sim second) and reports what happened.
async fn run(flavor: Flavor, predictive: bool, seconds: u64) -> Report {
    let primary = Sim::builder(flavor)
        .name("primary")
        .seed(1)
        .quota(tower_failover_sim::Quota::new(RPM, 1_000_000_000))
        .start()
        .await
        .unwrap();
    let overflow = Sim::builder(flavor)
        .name("overflow")
        .seed(2)
        .start()
        .await
        .unwrap();
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    let registry = Registry::new();
    let violations = Arc::new(AtomicUsize::new(0));
    let stack = |name: &str, sim: &Sim| -> (Health, Stack) {
        let health = registry.provider(name, "m");
        let tracker = QuotaTracker::new(QuotaConfig::default().predictive(predictive)).unwrap();
        let svc = ServiceBuilder::new()
            .layer(QuotaLayer::new(health.clone(), tracker))
            .layer(ObserveLayer::new(health.clone()))
            .service(SimClient {
                client: client.clone(),
                url: sim.completion_url().parse().unwrap(),
            });
        let probe = Probe {
            inner: svc,
            health: health.clone(),
            violations: violations.clone(),
        };
        (health, probe)
    };
    let router = Overflow::builder()
        .targets([stack("primary", &primary), stack("overflow", &overflow)])
        .config(OverflowConfig::default().seed(9))
        .build()
        .unwrap();

    let body = match flavor {
        Flavor::OpenAi => {
            r#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}"#
        }
        Flavor::Anthropic => {
            r#"{"model":"claude-haiku-4-5","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}"#
        }
    };
    let interval = Duration::from_secs(60) / (2 * RPM as u32);
    let start = Instant::now();
    let mut tasks = Vec::new();
    let mut last = start;
    while Instant::now() - start < Duration::from_secs(seconds) {
        let req = Request::post("/")
            .header("content-type", "application/json")
            .header("anthropic-version", "2023-06-01")
            .body(ReplayBody::from(body))
            .unwrap();
        let svc = router.clone();
        last = Instant::now();
        tasks.push(tokio::spawn(async move {
            let res = svc.oneshot(req).await?;
            let ok = res.status().is_success();
            res.into_body().collect().await?;
            Ok::<bool, BoxError>(ok)
        }));
        sleep(interval).await;
    }
    let requests = tasks.len();
    let mut errors = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(true) => {}
            Ok(false) => errors += 1,
            Err(e) => {
                eprintln!("caller saw: {e}");
                errors += 1;
            }
        }
    }
    let elapsed = (last - start).as_secs_f64();
    let counters = primary.counters();
    Report {
        requests,
        errors,
        primary_completed: counters.completed,
        primary_quota_429s: counters.quota_limited,
        // A full bucket at the start, then the refill while traffic was sent.
        allowance: RPM as f64 + RPM as f64 / 60.0 * elapsed,
        violations: violations.load(Ordering::SeqCst),
    }
}

fn check_twice_the_rpm(r: &Report) {
    let used = r.primary_completed as f64 / r.allowance;
    eprintln!(
        "requests {} errors {} primary completed {} of {:.1} ({:.1} %), primary 429s {}, sends inside a window {}",
        r.requests,
        r.errors,
        r.primary_completed,
        r.allowance,
        used * 100.0,
        r.primary_quota_429s,
        r.violations
    );
    assert_eq!(r.errors, 0, "zero errors to callers");
    assert!(used >= 0.95, "primary quota used: {:.1} %", used * 100.0);
    assert!(used <= 1.0 + 1e-9, "never more than the quota");
    assert_eq!(
        r.violations, 0,
        "nothing sent to the primary inside its window"
    );
}

#[tokio::test(start_paused = true)]
async fn openai_at_twice_the_rpm_uses_the_quota_and_never_sends_inside_the_window() {
    let r = run(Flavor::OpenAi, true, 150).await;
    check_twice_the_rpm(&r);
    assert_eq!(
        r.primary_quota_429s, 0,
        "predicted: the primary never said 429"
    );
}

#[tokio::test(start_paused = true)]
async fn anthropic_at_twice_the_rpm_uses_the_quota_and_never_sends_inside_the_window() {
    let r = run(Flavor::Anthropic, true, 150).await;
    check_twice_the_rpm(&r);
    assert_eq!(
        r.primary_quota_429s, 0,
        "predicted: the primary never said 429"
    );
}

#[tokio::test(start_paused = true)]
async fn header_driven_prediction_avoids_most_429s() {
    let predicted = run(Flavor::OpenAi, true, 150).await;
    let reactive = run(Flavor::OpenAi, false, 150).await;
    eprintln!(
        "primary 429s: {} predicted, {} reactive",
        predicted.primary_quota_429s, reactive.primary_quota_429s
    );
    // Both serve every caller (a 429 overflows the same request) ...
    check_twice_the_rpm(&predicted);
    check_twice_the_rpm(&reactive);
    // ... but only prediction does it without collecting 429s.
    assert!(
        reactive.primary_quota_429s >= 20,
        "{}",
        reactive.primary_quota_429s
    );
    assert!(
        predicted.primary_quota_429s * 20 <= reactive.primary_quota_429s,
        "{} vs {}",
        predicted.primary_quota_429s,
        reactive.primary_quota_429s
    );
}

#[tokio::test(start_paused = true)]
async fn the_quota_layer_alone_keeps_a_single_provider_under_its_limit() {
    // No router: one provider, a QuotaLayer, requests refused (not sent) once the
    // headers say the bucket is empty.
    let sim = Sim::builder(Flavor::OpenAi)
        .quota(tower_failover_sim::Quota::new(60, 1_000_000_000))
        .start()
        .await
        .unwrap();
    let health = Health::standalone("openai", "gpt-4o-mini");
    let client = Client::builder(TokioExecutor::new()).build_http::<ReplayBody>();
    let svc = QuotaLayer::new(
        health.clone(),
        QuotaTracker::new(QuotaConfig::default()).unwrap(),
    )
    .layer(SimClient {
        client,
        url: sim.completion_url().parse().unwrap(),
    });
    let body = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..100 {
        match svc
            .clone()
            .oneshot(Request::post("/").body(ReplayBody::from(body)).unwrap())
            .await
        {
            Ok(res) => {
                assert_eq!(res.status(), 200);
                res.into_body().collect().await.unwrap();
                ok += 1;
            }
            Err(e) => {
                assert!(e.to_string().contains("rate limited"), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!((ok, refused), (60, 40));
    assert_eq!(
        sim.counters().quota_limited,
        0,
        "no 429: refused before sending"
    );
    assert_eq!(sim.counters().received, 60);
}
