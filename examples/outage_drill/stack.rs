//! The stack under test, built by `Stack::from_config` from `stack.toml` beside
//! this file: per provider (innermost first) client → timeouts → validation →
//! observe → quota → circuit breaker → recovery ramp → the drill's tagging (a
//! `CustomLayer`) → same-provider retry; across providers the balancer.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::combinators::UnsyncBoxBody;
use tower::util::BoxCloneSyncService;
use tower::{BoxError, Service, ServiceExt};
use tower_failover::circuit::CircuitConfig;
use tower_failover::ramp::{RampConfig, Step};
use tower_failover::redis::RedisConfig;
use tower_failover::{Config, CustomLayer, Stack, Toggle};
use tower_failover_core::error::{Shed, find};
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{Health, Registry};
use tower_failover_sim::{Flavor, SimHandle};

use crate::metrics::Recorder;
use crate::script::{PROVIDERS, Timings};

/// Where the drill's stack configuration lives (shown in the banner), and its
/// text, compiled in.
pub(crate) const STACK_CONFIG_PATH: &str = "examples/outage_drill/stack.toml";
pub(crate) const STACK_CONFIG: &str = include_str!("stack.toml");

/// The body every provider stack answers with, once type-erased.
pub(crate) type DrillBody = UnsyncBoxBody<Bytes, BoxError>;

/// Which provider answered, set on the response by its stack.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServedBy(pub(crate) usize);

/// What each position in the stack is, for the banner and docs/drill.md.
pub(crate) fn describe() -> Vec<(&'static str, &'static str)> {
    vec![
        (
            "built by",
            "tower_failover::Stack::from_config, from examples/outage_drill/stack.toml",
        ),
        (
            "provider client",
            "OpenAI-compatible / Anthropic (translated to the OpenAI shape), from the file's entries",
        ),
        (
            "timeouts",
            "the provider client's connect / first-byte / total timeouts, within core's Deadline",
        ),
        ("validation", "output validation (the facade's default)"),
        ("observe", "ObserveLayer"),
        ("quota", "quota tracking (rate-limit headers, predictive)"),
        (
            "circuit breaker",
            "5 failures in a row, compressed cooldown; probes while open (default)",
        ),
        (
            "recovery ramp",
            "compressed schedule; the balancer routes its share",
        ),
        (
            "retry",
            "one same-provider retry of a 502/503 blip, from the shared retry budget (default)",
        ),
        (
            "router",
            "Balance (P2C on latency × load ÷ weight × health score, weights 4/1/2; 429, 5xx, shed → next provider)",
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

pub(crate) fn flavor(i: usize) -> Flavor {
    match i {
        1 => Flavor::Anthropic,
        _ => Flavor::OpenAi,
    }
}

/// The breaker's settings: the file's, with the drill's compressed cooldown.
fn circuit_config(base: CircuitConfig, timings: &Timings, seed: u64) -> CircuitConfig {
    base.cooldown(timings.circuit_cooldown, timings.circuit_cooldown * 2)
        .healthy_period(timings.ramp_step * 4)
        .seed(seed ^ 0x0c1c)
}

/// The ramp's settings: the file's, with the drill's compressed schedule.
fn ramp_config(base: RampConfig, timings: &Timings, seed: u64) -> RampConfig {
    base.steps(
        timings
            .ramp_shares
            .iter()
            .map(|&share| Step::new(share, timings.ramp_step)),
    )
    .check_interval(timings.ramp_step / 10)
    .baseline_window(timings.ramp_step * 5)
    .cooldown(timings.circuit_cooldown, timings.circuit_cooldown * 2)
    .seed(seed ^ 0x4a3b)
}

/// The drill's configuration: the file, with this run's simulators, keys,
/// timings, seeds and (with `--redis`) the shared store.
pub(crate) fn config(
    sims: &[SimHandle],
    timings: &Timings,
    seed: u64,
    redis: Option<RedisConfig>,
) -> Result<Config, BoxError> {
    let mut config =
        Config::from_toml_str(STACK_CONFIG).map_err(|e| format!("{STACK_CONFIG_PATH}: {e}"))?;
    if config.providers.len() != PROVIDERS.len() {
        return Err(
            format!("{STACK_CONFIG_PATH}: the drill needs the providers {PROVIDERS:?}").into(),
        );
    }
    for (i, p) in config.providers.iter_mut().enumerate() {
        if p.name != PROVIDERS[i] {
            return Err(format!(
                "{STACK_CONFIG_PATH}: providers[{i}] must be {:?}",
                PROVIDERS[i]
            )
            .into());
        }
        let base_url = match flavor(i) {
            Flavor::OpenAi => format!("{}/v1", sims[i].base_url()),
            _ => sims[i].base_url().to_owned(),
        };
        let attempt = format!("{}ms", timings.attempt_timeout.as_millis());
        p.client.insert("base_url".into(), base_url.into());
        p.client
            .insert("api_key".into(), crate::leak::api_key(i).into());
        let mut timeouts = toml::Table::new();
        timeouts.insert("connect".into(), "1s".into());
        timeouts.insert("first_byte".into(), attempt.clone().into());
        timeouts.insert("total".into(), attempt.into());
        p.client.insert("timeouts".into(), timeouts.into());
    }
    if let Some(balance) = &mut config.balance {
        balance.seed = Some(seed ^ 0xba1a);
    }
    if let Toggle::On(c) = &config.circuit {
        config.circuit = Toggle::On(circuit_config(c.clone(), timings, seed));
    }
    if let Toggle::On(c) = &config.ramp {
        config.ramp = Toggle::On(ramp_config(c.clone(), timings, seed));
    }
    config.redis = redis;
    config
        .validate()
        .map_err(|e| format!("{STACK_CONFIG_PATH}: {e}"))?;
    Ok(config)
}

/// The drill's tagging of each provider's stack, as a layer of its own on top of
/// it: which provider answered, and the attempts each ramp step admitted.
fn tagging(recorder: &Arc<Recorder>) -> CustomLayer {
    let recorder = Arc::clone(recorder);
    CustomLayer::new(move |health, inner| {
        let Some(i) = PROVIDERS.iter().position(|p| *p == health.id().provider()) else {
            return inner;
        };
        let counted = RampCount {
            inner,
            health: health.clone(),
            provider: i,
            recorder: Arc::clone(&recorder),
        };
        tower_failover::boxed(counted.map_response(move |mut res: Response<DrillBody>| {
            res.extensions_mut().insert(ServedBy(i));
            res
        }))
    })
}

/// The router the load generator calls.
pub(crate) type Router = BoxCloneSyncService<Request<ReplayBody>, Response<DrillBody>, BoxError>;

/// One replica's stack, built by `Stack::from_config`: its router, the health of
/// each provider (in `PROVIDERS` order) and its registry.
pub(crate) fn build(
    config: &Config,
    recorder: &Arc<Recorder>,
) -> Result<(Router, Vec<Health>, Registry), BoxError> {
    let stack = Stack::from_config(config)?
        .provider_layer(tagging(recorder))
        .build()?;
    let handle = stack.handle().clone();
    let healths = PROVIDERS
        .iter()
        .zip(&config.providers)
        .map(|(name, p)| {
            handle
                .provider(name, &p.model)
                .ok_or_else(|| format!("no provider {name} in the stack"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let registry = handle.registry().clone();
    Ok((BoxCloneSyncService::new(stack), healths, registry))
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
