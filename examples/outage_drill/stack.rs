//! The stack under test: per provider (innermost first) client → timeouts →
//! validation → observe → circuit breaker → recovery ramp; across providers the
//! router (ordered fallback or balancer) with overflow on 429.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use std::time::Duration;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Layer, Service, ServiceExt};
use tower_failover_balance::{Balance, BalanceConfig, ProviderOptions};
use tower_failover_circuit::{CircuitBreakerLayer, CircuitConfig};
use tower_failover_core::error::{Shed, find};
use tower_failover_core::observe::ObserveLayer;
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{Health, Registry};
use tower_failover_overflow::{QuotaConfig, QuotaLayer, QuotaTracker};
use tower_failover_provider::{Anthropic, OpenAiCompatible};
use tower_failover_ramp::{RampConfig, RampLayer, Step};
use tower_failover_sim::{Flavor, SimHandle};
use tower_failover_validate::{ValidateLayer, Wire};

use crate::metrics::Recorder;
use crate::script::{PROVIDERS, Timings};

/// The body every provider stack answers with, once type-erased.
pub(crate) type DrillBody = UnsyncBoxBody<Bytes, BoxError>;
/// One provider's whole stack, type-erased so the router can hold three kinds.
pub(crate) type ProviderSvc =
    BoxCloneSyncService<Request<ReplayBody>, Response<DrillBody>, BoxError>;

/// Which provider answered, set on the response by its stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServedBy(pub(crate) usize);

/// What each position in the stack is, for the banner and docs/drill.md.
pub(crate) fn describe() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "provider client",
            "tower-failover-provider OpenAiCompatible / Anthropic (translated to the OpenAI shape)",
        ),
        (
            "timeouts",
            "the provider client's connect / first-byte / total timeouts, within core's Deadline",
        ),
        ("validation", "tower-failover-validate ValidateLayer::llm()"),
        ("observe", "tower-failover-core ObserveLayer"),
        (
            "quota",
            "tower-failover-overflow QuotaLayer (rate-limit headers, predictive)",
        ),
        (
            "circuit breaker",
            "tower-failover-circuit CircuitBreakerLayer (5 failures in a row, compressed cooldown)",
        ),
        (
            "recovery ramp",
            "tower-failover-ramp RampLayer (compressed schedule; the balancer routes its share)",
        ),
        (
            "router + overflow",
            "tower-failover-balance Balance (P2C least loaded, weights 4/1/2; 429, 5xx, shed → next provider)",
        ),
    ]
}

/// Spreads requests round-robin over several replicas' routers, as a load balancer
/// in front of a fleet of gateways would.
pub(crate) fn fleet(routers: Vec<Router>) -> Router {
    if routers.len() == 1 {
        return routers.into_iter().next().expect("one router");
    }
    let routers = Arc::new(routers);
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    BoxCloneSyncService::new(tower::service_fn(move |req: Request<ReplayBody>| {
        let k = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % routers.len();
        routers[k].clone().oneshot(req)
    }))
}

/// Type-erases a response body.
fn erase<B>(res: Response<B>) -> Response<DrillBody>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    res.map(|b| b.map_err(Into::into).boxed_unsync())
}

/// Type-erases a service of the drill's requests.
fn boxed<S, B>(svc: S) -> ProviderSvc
where
    S: Service<Request<ReplayBody>, Response = Response<B>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    BoxCloneSyncService::new(ServiceExt::<Request<ReplayBody>>::map_response(
        svc, erase::<B>,
    ))
}

/// The model each provider is asked for.
pub(crate) fn model(i: usize) -> &'static str {
    match i {
        1 => "claude-haiku-4-5",
        _ => "gpt-4o-mini",
    }
}

pub(crate) fn flavor(i: usize) -> Flavor {
    match i {
        1 => Flavor::Anthropic,
        _ => Flavor::OpenAi,
    }
}

/// The balancer's static weights: the primary is preferred, the cheap tertiary next.
const WEIGHTS: [f64; 3] = [4.0, 1.0, 2.0];

/// The circuit breaker opens after this many consecutive failures.
const FAILURE_THRESHOLD: u32 = 5;

/// The breaker's settings: the defaults, with the drill's compressed cooldown.
pub(crate) fn circuit_config(timings: &Timings, seed: u64, i: usize) -> CircuitConfig {
    CircuitConfig::default()
        .consecutive_failures(FAILURE_THRESHOLD)
        .cooldown(timings.circuit_cooldown, timings.circuit_cooldown * 2)
        .healthy_period(timings.ramp_step * 4)
        .seed(seed ^ (0x0c1c + i as u64))
}

/// The ramp's settings: the drill's compressed schedule, and samples small enough
/// for a step of a few seconds at a few percent of 200 requests per second.
pub(crate) fn ramp_config(timings: &Timings, seed: u64, i: usize) -> RampConfig {
    RampConfig::default()
        .steps(
            timings
                .ramp_shares
                .iter()
                .map(|&share| Step::new(share, timings.ramp_step)),
        )
        .min_requests(5)
        .min_sample(5)
        .check_interval(timings.ramp_step / 10)
        .baseline_window(timings.ramp_step * 5)
        .cooldown(timings.circuit_cooldown, timings.circuit_cooldown * 2)
        // The balancer routes exactly the ramp's share of all requests here: the
        // ramp layer only drives and checks the schedule.
        .shed(false)
        .seed(seed ^ (0x4a3b + i as u64))
}

fn provider_stack(
    i: usize,
    sim: &SimHandle,
    health: &Health,
    timings: &Timings,
    recorder: &Arc<Recorder>,
    seed: u64,
) -> ProviderSvc {
    let validated = ValidateLayer::llm()
        .wire(Wire::OpenAi)
        .provider(health.id().clone());
    let validated = match flavor(i) {
        Flavor::OpenAi => boxed(
            validated.layer(
                OpenAiCompatible::builder()
                    .name(PROVIDERS[i])
                    .base_url(format!("{}/v1", sim.base_url()))
                    .api_key(crate::leak::api_key(i))
                    .connect_timeout(Duration::from_secs(1))
                    .first_byte_timeout(timings.attempt_timeout)
                    .total_timeout(timings.attempt_timeout)
                    .health(health.clone())
                    .build()
                    .expect("a valid provider configuration"),
            ),
        ),
        Flavor::Anthropic => boxed(
            validated.layer(
                Anthropic::builder()
                    .name(PROVIDERS[i])
                    .base_url(sim.base_url())
                    .api_key(crate::leak::api_key(i))
                    .model("gpt-4o-mini", model(i))
                    .connect_timeout(Duration::from_secs(1))
                    .first_byte_timeout(timings.attempt_timeout)
                    .total_timeout(timings.attempt_timeout)
                    .health(health.clone())
                    .build()
                    .expect("a valid provider configuration"),
            ),
        ),
    };
    let observed = ObserveLayer::new(health.clone()).layer(validated);
    let tracker = QuotaTracker::new(QuotaConfig::default()).expect("a valid quota configuration");
    let quota = QuotaLayer::new(health.clone(), tracker).layer(observed);
    let circuit =
        CircuitBreakerLayer::with_config(health.clone(), circuit_config(timings, seed, i))
            .expect("a valid circuit configuration")
            .layer(quota);
    let ramp = RampLayer::try_new(health.clone(), ramp_config(timings, seed, i))
        .expect("a valid ramp configuration")
        .layer(circuit);
    let counted = RampCount {
        inner: ramp,
        health: health.clone(),
        provider: i,
        recorder: Arc::clone(recorder),
    };
    BoxCloneSyncService::new(counted.map_response(move |res| {
        let mut res = erase(res);
        res.extensions_mut().insert(ServedBy(i));
        res
    }))
}

/// The router the load generator calls.
pub(crate) type Router = BoxCloneSyncService<Request<ReplayBody>, Response<DrillBody>, BoxError>;

pub(crate) fn build(
    registry: &Registry,
    sims: &[SimHandle],
    timings: &Timings,
    recorder: &Arc<Recorder>,
    seed: u64,
) -> (Router, Vec<Health>) {
    let healths: Vec<Health> = PROVIDERS
        .iter()
        .enumerate()
        .map(|(i, name)| registry.provider(name, model(i)))
        .collect();
    let providers: Vec<(Health, ProviderSvc)> = healths
        .iter()
        .enumerate()
        .map(|(i, h)| {
            (
                h.clone(),
                provider_stack(i, &sims[i], h, timings, recorder, seed),
            )
        })
        .collect();
    let mut builder = Balance::builder().config(BalanceConfig::default().seed(seed ^ 0xba1a));
    for (i, (h, svc)) in providers.into_iter().enumerate() {
        builder = builder.provider_with(h, svc, ProviderOptions::default().weight(WEIGHTS[i]));
    }
    let balance = builder.build().expect("a valid balancer configuration");
    let router = BoxCloneSyncService::new(balance);
    (router, healths)
}

// ---- drill instrumentation -------------------------------------------------------

/// Counts, outside the ramp, the attempts that reach a provider during each ramp
/// step and are not shed by its ramp layer. Instrumentation for the
/// report, not part of the stack being demonstrated.
#[derive(Clone)]
struct RampCount<S> {
    inner: S,
    health: Health,
    provider: usize,
    recorder: Arc<Recorder>,
}

impl<S, R> Service<Request<ReplayBody>> for RampCount<S>
where
    S: Service<Request<ReplayBody>, Response = R, Error = BoxError>,
    S::Future: Send + 'static,
    R: Send + 'static,
{
    type Response = R;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<R, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        let step = match self.health.ramp_step() {
            Some(_) => self.recorder.ramp_step_of(self.provider),
            None => None,
        };
        let recorder = Arc::clone(&self.recorder);
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            if let Some(step) = step {
                let shed = matches!(&result, Err(e) if find::<Shed>(&**e).is_some());
                if !shed {
                    recorder.ramp_admitted(step);
                }
            }
            result
        })
    }
}
