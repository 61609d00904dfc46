//! The circuit breaker service.

use std::fmt;
use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::{Request, Response};
use tokio::time::{Instant, sleep_until};
use tower_failover_core::error::CircuitOpen;
use tower_failover_core::{
    AttemptDeadline, BoxError, CircuitState, Classify, Health, LlmClassifier,
};
use tower_service::Service;

use crate::breaker::{Decision, Shared, Ticket};
use crate::config::{CircuitConfig, ConfigError, OpenMode};
use crate::future::{CircuitBody, ResponseFuture};

/// What `poll_ready` granted, for `call` to consume.
enum Admission<C> {
    Closed,
    Probe(crate::breaker::Permit<C>),
    Refused(Duration),
}

/// A parked caller: wakes when a probe is due, a permit comes back, or the circuit
/// changes state (another replica, an operator, another clone).
struct Wait {
    wake_at: Option<Instant>,
    future: Pin<Box<dyn Future<Output = ()> + Send + Sync>>,
}

/// Opens the circuit of one provider after failures, keeps requests away from it
/// while open, and lets a few probes test its recovery. See the [crate docs](crate).
///
/// Cloning shares the circuit and its counts, not readiness: a clone does not
/// inherit a probe permit reserved by `poll_ready`.
pub struct CircuitBreaker<S, C = LlmClassifier> {
    inner: S,
    shared: Arc<Shared<C>>,
    admission: Option<Admission<C>>,
    wait: Option<Wait>,
}

impl<S> CircuitBreaker<S> {
    /// Wraps `inner` with the default configuration and classifier.
    pub fn new(inner: S, health: Health) -> Self {
        CircuitBreaker::from_shared(
            inner,
            Arc::new(Shared::new(
                health,
                CircuitConfig::default(),
                LlmClassifier::default(),
            )),
        )
    }

    /// Wraps `inner` with `config`, refusing an invalid one.
    pub fn with_config(
        inner: S,
        health: Health,
        config: CircuitConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(CircuitBreaker::from_shared(
            inner,
            Arc::new(Shared::new(health, config, LlmClassifier::default())),
        ))
    }
}

impl<S, C> CircuitBreaker<S, C> {
    pub(crate) fn from_shared(inner: S, shared: Arc<Shared<C>>) -> Self {
        CircuitBreaker {
            inner,
            shared,
            admission: None,
            wait: None,
        }
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }

    /// The wrapped service, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    /// Unwraps the service (a reserved probe permit is given back).
    pub fn into_inner(self) -> S {
        self.inner
    }

    /// The provider's health handle, which holds the circuit state.
    pub fn health(&self) -> &Health {
        &self.shared.health
    }

    /// The effective circuit state (an operator's override wins).
    pub fn state(&self) -> CircuitState {
        self.shared.health.circuit()
    }

    /// The configuration.
    pub fn config(&self) -> &CircuitConfig {
        &self.shared.config
    }

    /// Half-open probe permits currently held, across every clone.
    pub fn probes_in_flight(&self) -> u32 {
        self.shared.probes_in_flight()
    }

    /// The current run of failures, weighted (what the consecutive policy counts).
    pub fn consecutive_failures(&self) -> f64 {
        self.shared.consecutive_failures()
    }
}

impl<S: Clone, C> Clone for CircuitBreaker<S, C> {
    fn clone(&self) -> Self {
        CircuitBreaker::from_shared(self.inner.clone(), Arc::clone(&self.shared))
    }
}

impl<S: fmt::Debug, C> fmt::Debug for CircuitBreaker<S, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CircuitBreaker")
            .field("inner", &self.inner)
            .field("breaker", &self.shared)
            .field(
                "admission",
                &match &self.admission {
                    None => "none",
                    Some(Admission::Closed) => "closed",
                    Some(Admission::Probe(_)) => "probe",
                    Some(Admission::Refused(_)) => "refused",
                },
            )
            .finish()
    }
}

fn park<C: Send + Sync + 'static>(shared: &Arc<Shared<C>>, wake_at: Option<Instant>) -> Wait {
    // Subscribing marks the current state as seen: the caller re-checks the state
    // after the first poll of this future, so a change in between is not lost.
    let mut circuit = shared.health.watch_circuit();
    let shared = Arc::clone(shared);
    let future = async move {
        let mut permit_back = pin!(shared.notify.notified());
        let mut changed = pin!(circuit.changed());
        let mut due = pin!(async move {
            match wake_at {
                Some(at) => sleep_until(at).await,
                None => std::future::pending().await,
            }
        });
        poll_fn(|cx| {
            if permit_back.as_mut().poll(cx).is_ready()
                || changed.as_mut().poll(cx).is_ready()
                || due.as_mut().poll(cx).is_ready()
            {
                Poll::Ready(())
            } else {
                Poll::Pending
            }
        })
        .await;
    };
    Wait {
        wake_at,
        future: Box::pin(future),
    }
}

impl<S, C: Send + Sync + 'static> CircuitBreaker<S, C> {
    /// Whether this service holds a probe permit that is still good.
    #[inline]
    fn holds_current_probe(&self) -> bool {
        matches!(&self.admission, Some(Admission::Probe(p)) if self.shared.is_current(p))
    }

    /// `poll_ready` when the circuit is not simply closed. Returns `None` once
    /// admitted (the grant is stored), or what `poll_ready` must return.
    #[cold]
    #[inline(never)]
    fn poll_not_closed(
        &mut self,
        cx: &mut Context<'_>,
        mut decision: Decision<C>,
    ) -> Option<Poll<Result<(), BoxError>>> {
        let mut rechecked = false;
        loop {
            let (retry_in, wake_at) = match decision {
                Decision::Closed => {
                    self.admission = Some(Admission::Closed);
                    return None;
                }
                Decision::Probe(permit) => {
                    self.admission = Some(Admission::Probe(permit));
                    return None;
                }
                Decision::Blocked { retry_in, wake_at } => (retry_in, wake_at),
            };
            if self.shared.config.mode == OpenMode::FailFast {
                self.wait = None;
                self.admission = Some(Admission::Refused(retry_in));
                return Some(Poll::Ready(Ok(())));
            }
            let fresh = match &self.wait {
                Some(w) if w.wake_at == wake_at => false,
                _ => {
                    self.wait = Some(park(&self.shared, wake_at));
                    true
                }
            };
            let woke = self
                .wait
                .as_mut()
                .is_some_and(|w| w.future.as_mut().poll(cx).is_ready());
            if woke {
                self.wait = None;
            } else if fresh && !rechecked {
                // Registered: look once more, in case the state changed before we
                // subscribed.
                rechecked = true;
            } else {
                return Some(Poll::Pending);
            }
            decision = self.shared.admit();
        }
    }

    /// `call` with a grant other than a still-valid "closed": what `poll_ready`
    /// granted still holds if the circuit has not moved since; if it has (other
    /// requests tripped it in between, say), decide again: an open circuit admits
    /// nothing, whatever was granted before.
    #[cold]
    #[inline(never)]
    fn ticket_slow(&mut self, granted: Option<Admission<C>>) -> Result<Ticket<C>, CircuitOpen> {
        let admission = match granted {
            Some(Admission::Probe(permit)) if self.shared.is_current(&permit) => {
                Admission::Probe(permit)
            }
            Some(Admission::Refused(retry_in)) => Admission::Refused(retry_in),
            stale => {
                // Give a stale permit back before asking for a new one. (`None`:
                // `call` without `poll_ready`; decide now, without waiting.)
                drop(stale);
                match self.shared.admit() {
                    Decision::Closed => Admission::Closed,
                    Decision::Probe(permit) => Admission::Probe(permit),
                    Decision::Blocked { retry_in, .. } => Admission::Refused(retry_in),
                }
            }
        };
        match admission {
            Admission::Closed => Ok(Ticket::Closed),
            Admission::Probe(permit) => Ok(Ticket::Probe(permit)),
            Admission::Refused(retry_in) => {
                self.shared.record_rejection();
                Err(CircuitOpen::new(retry_in).with_provider(self.shared.health.id().clone()))
            }
        }
    }
}

impl<S, C, B, ResB> Service<Request<B>> for CircuitBreaker<S, C>
where
    S: Service<Request<B>, Response = Response<ResB>>,
    S::Error: Into<BoxError>,
    C: Classify,
{
    type Response = Response<CircuitBody<ResB, C>>;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future, C>;

    #[inline]
    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // A reserved probe permit is kept until `call` (unless the circuit has moved
        // on since); anything else is decided afresh: two atomic loads when closed.
        if !self.holds_current_probe() {
            // A stale permit goes back before a new decision.
            self.admission = None;
            match self.shared.admit() {
                Decision::Closed => self.admission = Some(Admission::Closed),
                other => {
                    if let Some(early) = self.poll_not_closed(cx, other) {
                        return early;
                    }
                }
            }
        }
        if self.wait.is_some() {
            self.wait = None;
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => Poll::Ready(Ok(())),
            Poll::Ready(Err(e)) => {
                self.admission = None;
                Poll::Ready(Err(e.into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    #[inline]
    fn call(&mut self, req: Request<B>) -> Self::Future {
        let ticket = match self.admission.take() {
            Some(Admission::Closed) if self.shared.health.circuit() == CircuitState::Closed => {
                Ticket::Closed
            }
            other => match self.ticket_slow(other) {
                Ok(ticket) => ticket,
                Err(open) => return ResponseFuture::refused(open),
            },
        };
        let started = self.shared.needs_clock.then(Instant::now);
        let deadline = AttemptDeadline::of(&req);
        ResponseFuture::called(
            self.inner.call(req),
            Arc::clone(&self.shared),
            ticket,
            started,
            deadline,
        )
    }
}
