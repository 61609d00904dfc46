//! Active probes: a cheap request sent to a provider whose circuit is open (or
//! that has been idle), so that a recovery is noticed without risking real traffic.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use tokio::time::{Instant, sleep, timeout};
use tower::BoxError;
use tower_failover_core::error::{CircuitOpen, find};
use tower_failover_core::{
    CircuitState, Classify, FailureKind, HealthEventKind, LlmClassifier, Outcome,
};
use tower_service::Service;

use crate::config::ConfigError;
use crate::probe_config::{ProbeConfig, ProbeTemplate};
use crate::state::Core;

/// One probe's outcome, or `None` when the service refused it without sending
/// (a circuit breaker that had no probe permit to give).
type ProbeFuture = Pin<Box<dyn Future<Output = Option<Outcome>> + Send>>;
type SendProbe = Box<dyn FnMut() -> ProbeFuture + Send>;

/// Sends probe requests to one provider: a service (normally the provider's client
/// stack *below* the circuit breaker, so probes reach an open provider) and the
/// [`ProbeConfig`] saying what to send and when.
///
/// Give it to [`RampLayer::with_prober`](crate::RampLayer::with_prober). The layer
/// runs one probe task per provider, however many clones of its services exist,
/// and aborts it when the last one is dropped. A probe runs only while the
/// provider's circuit is open (or, with
/// [`idle_after`](ProbeConfig::idle_after), while it has been idle), and only on
/// the replica that gets the store's `"probe"` lease. A probe passes when its
/// response classifies as [`Outcome::Success`]; a passing probe moves an open
/// circuit to half-open at once, except during the longer cooldown that follows a
/// ramp rollback (a flapping provider is not re-admitted early).
///
/// With [`through_breaker`](Prober::through_breaker), probes go on while the
/// circuit is half-open, through the breaker, which counts them as its half-open
/// trials: a run of passing probes closes the circuit even when no caller is
/// sending (and the recovery ramp starts).
pub struct Prober {
    send: SendProbe,
    through: Option<SendProbe>,
    what: String,
    pub(crate) interval: Duration,
    pub(crate) timeout: Duration,
    pub(crate) idle_after: Option<Duration>,
}

impl fmt::Debug for Prober {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Prober")
            .field("request", &self.what)
            .field("interval", &self.interval)
            .field("timeout", &self.timeout)
            .field("idle_after", &self.idle_after)
            .finish()
    }
}

impl Prober {
    /// Probes through `service` as `config` says, judging responses with the
    /// default [`LlmClassifier`]. Refuses an invalid configuration.
    pub fn new<S, B, RB>(service: S, config: &ProbeConfig) -> Result<Prober, ConfigError>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: From<Bytes> + Send + 'static,
        RB: Send + 'static,
    {
        Prober::with_classifier(service, config, LlmClassifier::default())
    }

    /// Like [`new`](Prober::new), with another classifier.
    pub fn with_classifier<S, B, RB, C>(
        service: S,
        config: &ProbeConfig,
        classifier: C,
    ) -> Result<Prober, ConfigError>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: From<Bytes> + Send + 'static,
        RB: Send + 'static,
        C: Classify,
    {
        let template = config.template()?;
        let what = template.describe();
        let send = sender(service, template, classifier);
        Ok(Prober {
            send,
            through: None,
            what,
            interval: config.interval,
            timeout: config.timeout,
            idle_after: config.idle_after,
        })
    }

    /// Also probes while the circuit is half-open, through `service`: the
    /// provider's stack from its circuit breaker down (the same request as
    /// `config` describes). The breaker admits a probe only when it has a
    /// half-open permit free (callers take them first), and counts its outcome
    /// toward closing or re-opening the circuit.
    ///
    /// A passing probe's body is read to its end: a breaker counts a 2xx answer
    /// when its body ends.
    pub fn through_breaker<S, B, RB>(
        mut self,
        service: S,
        config: &ProbeConfig,
    ) -> Result<Prober, ConfigError>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: From<Bytes> + Send + 'static,
        RB: http_body::Body + Send + 'static,
        RB::Data: Send,
        RB::Error: Into<BoxError>,
    {
        let template = config.template()?;
        let classifier = LlmClassifier::default();
        self.through = Some(Box::new(move || -> ProbeFuture {
            let mut svc = service.clone();
            let req = template.build::<B>();
            Box::pin(async move {
                let (outcome, res) = match send_one(&mut svc, req, &classifier).await {
                    Ok(answered) => answered,
                    Err(outcome) => return outcome,
                };
                let mut body = std::pin::pin!(res.into_body());
                while let Some(frame) = poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
                    if let Err(e) = frame {
                        return judge(&classifier, e.into());
                    }
                }
                Some(outcome)
            })
        }));
        Ok(self)
    }

    /// Whether probes also go through the breaker while half-open.
    pub fn probes_half_open(&self) -> bool {
        self.through.is_some()
    }

    /// Sends one probe now and returns its outcome (a timeout is a
    /// `Failure(Timeout)`). The probe task calls this; tests and tools may too.
    pub async fn probe(&mut self) -> Outcome {
        timed(self.timeout, (self.send)())
            .await
            .unwrap_or(Outcome::failure(FailureKind::Other))
    }

    /// One probe through the breaker, if configured; `None` when there is no such
    /// service or the breaker did not admit the probe.
    async fn probe_through(&mut self) -> Option<Outcome> {
        let send = self.through.as_mut()?;
        timed(self.timeout, send()).await
    }
}

async fn timed(limit: Duration, probe: ProbeFuture) -> Option<Outcome> {
    match timeout(limit, probe).await {
        Ok(outcome) => outcome,
        Err(_) => Some(Outcome::failure(FailureKind::Timeout)),
    }
}

/// What sends one probe through `service`.
fn sender<S, B, RB, C>(service: S, template: ProbeTemplate, classifier: C) -> SendProbe
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: From<Bytes> + Send + 'static,
    RB: Send + 'static,
    C: Classify,
{
    Box::new(move || -> ProbeFuture {
        let mut svc = service.clone();
        let req = template.build::<B>();
        let classifier = classifier.clone();
        Box::pin(async move {
            match send_one(&mut svc, req, &classifier).await {
                Ok((outcome, _)) => Some(outcome),
                Err(outcome) => outcome,
            }
        })
    })
}

/// Sends one probe through `svc`: its answer and the answer's outcome, or the
/// outcome of its error (`None` when a breaker refused it).
async fn send_one<S, B, RB, C>(
    svc: &mut S,
    req: Request<B>,
    classifier: &C,
) -> Result<(Outcome, Response<RB>), Option<Outcome>>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Error: Into<BoxError>,
    C: Classify,
{
    let ready: Result<(), BoxError> = poll_fn(|cx| svc.poll_ready(cx)).await.map_err(Into::into);
    if let Err(e) = ready {
        return Err(judge(classifier, e));
    }
    match svc.call(req).await.map_err(Into::into) {
        Ok(res) => Ok((classifier.classify_response(&res), res)),
        Err(e) => Err(judge(classifier, e)),
    }
}

/// A probe's error: `None` when a circuit breaker refused it (no probe permit
/// free, so nothing was sent), else its outcome.
fn judge<C: Classify>(classifier: &C, e: BoxError) -> Option<Outcome> {
    if find::<CircuitOpen>(&*e).is_some() {
        None
    } else {
        Some(classifier.classify_error(&*e))
    }
}

/// The probe task of one provider.
pub(crate) async fn run(core: Arc<Core>, mut prober: Prober) {
    let health = core.health.clone();
    let mut last_count = core.counts().counted;
    let mut quiet_since = Instant::now();
    loop {
        sleep(prober.interval).await;
        let now = Instant::now();
        let count = core.counts().counted;
        if count != last_count {
            last_count = count;
            quiet_since = now;
        }
        let half_open =
            health.forced().is_none() && health.breaker_state() == CircuitState::HalfOpen;
        if half_open && prober.probes_half_open() {
            if health
                .store()
                .try_lease(health.id(), "probe", prober.interval)
                && let Some(outcome) = prober.probe_through().await
            {
                let ok = outcome.is_success();
                health.emit(HealthEventKind::Probe { ok });
                tracing::info!(provider = %health.id(), request = %prober.what, %outcome, "half-open probe through the circuit breaker");
            }
            continue;
        }
        let open = health.forced().is_none() && health.breaker_state() == CircuitState::Open;
        let idle = health.circuit() == CircuitState::Closed
            && prober
                .idle_after
                .is_some_and(|d| now.saturating_duration_since(quiet_since) >= d);
        if !(open || idle) {
            continue;
        }
        if !health
            .store()
            .try_lease(health.id(), "probe", prober.interval)
        {
            continue;
        }
        let outcome = prober.probe().await;
        let ok = outcome.is_success();
        health.emit(HealthEventKind::Probe { ok });
        if ok {
            tracing::info!(provider = %health.id(), request = %prober.what, "probe passed");
        } else {
            tracing::warn!(provider = %health.id(), request = %prober.what, %outcome, "probe failed");
        }
        if ok
            && open
            && !core.readmit_at.is_after(Instant::now())
            && health.transition(CircuitState::Open, CircuitState::HalfOpen, None)
        {
            tracing::info!(provider = %health.id(), "probe passed: circuit half-open early");
        }
    }
}
