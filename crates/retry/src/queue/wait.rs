//! The wait itself: listen for a recovery, then send the request again.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use http::Request;
use tokio::sync::broadcast::error::RecvError;
use tokio::time::Instant;
use tower::BoxError;
use tower::util::ServiceExt;
use tower_failover_core::error::{AllProvidersFailed, Elapsed, TimeoutKind, find};
use tower_failover_core::metrics;
use tower_failover_core::replay::clone_request;
use tower_failover_core::{CircuitState, Deadline, HealthEventKind, Registry};
use tower_service::Service;

use super::QueueConfig;

/// What the layer, its services and the waiting requests share.
pub(super) struct Shared {
    pub(super) registry: Registry,
    pub(super) config: QueueConfig,
    pub(super) waiting: AtomicUsize,
}

/// Decrements the waiting count however the wait ends (including cancellation).
struct Slot(Arc<Shared>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::AcqRel);
        metrics::gauge_add(metrics::names::QUEUE_DEPTH, -1.0);
    }
}

fn is_recovery(kind: &HealthEventKind) -> bool {
    matches!(
        kind,
        HealthEventKind::CircuitChanged {
            to: CircuitState::Closed | CircuitState::HalfOpen,
            ..
        } | HealthEventKind::RateLimitCleared
            | HealthEventKind::Forced { .. }
            | HealthEventKind::Probe { ok: true }
            | HealthEventKind::RampStep { .. }
    )
}

/// The longest pause between attempts of a queued request that fail while some
/// provider looks available.
pub(super) const MAX_PAUSE: Duration = Duration::from_secs(2);

/// Waits for a recovery and sends `req` again, until served or past the deadline.
/// Attempts that fail while no recovery is in sight are spaced by a pause that
/// doubles from 100 ms up to `max_pause` (a recovery event wakes it at once).
pub(super) async fn wait_and_retry<S, B>(
    mut svc: S,
    req: Request<B>,
    shared: Arc<Shared>,
    mut last: AllProvidersFailed,
    max_pause: Duration,
) -> Result<S::Response, BoxError>
where
    S: Service<Request<B>, Error = BoxError>,
    B: Clone,
{
    let started = Instant::now();
    let deadline = match Deadline::of(&req) {
        Some(Deadline(d)) => d.min(started + shared.config.max_wait),
        None => started + shared.config.max_wait,
    };
    let mut events = shared.registry.subscribe();
    let _slot = Slot(shared.clone());
    metrics::gauge_add(metrics::names::QUEUE_DEPTH, 1.0);
    let mut pause = Duration::from_millis(100);
    tracing::info!(
        max_wait_ms = deadline.saturating_duration_since(started).as_millis() as u64,
        "all providers down: request waits for a recovery"
    );
    loop {
        // Wake at the earliest known recovery (rate-limit windows end without an
        // event), never sooner than the current pause, and never after the deadline.
        let hint = shared
            .registry
            .earliest_recovery()
            .unwrap_or(pause)
            .max(pause);
        let wake = (Instant::now() + hint).min(deadline);
        tokio::select! {
            _ = tokio::time::sleep_until(wake) => {}
            ev = async {
                loop {
                    match events.recv().await {
                        Ok(ev) if is_recovery(&ev.kind) => return,
                        Ok(_) | Err(RecvError::Lagged(_)) => continue,
                        Err(RecvError::Closed) => std::future::pending::<()>().await,
                    }
                }
            } => ev,
        }
        if Instant::now() >= deadline {
            tracing::warn!(waited_ms = started.elapsed().as_millis() as u64, last = %last, "no provider recovered before the deadline");
            metrics::count_result(metrics::names::QUEUE_WAITS, "expired");
            return Err(Elapsed::new(TimeoutKind::Queue, started.elapsed()).into());
        }
        let attempt = clone_request(&req);
        let ready = tokio::time::timeout_at(deadline, svc.ready()).await;
        let result = match ready {
            Ok(Ok(svc)) => tokio::time::timeout_at(deadline, svc.call(attempt)).await,
            Ok(Err(e)) => Ok(Err(e)),
            Err(_) => {
                return Err(Elapsed::new(TimeoutKind::Queue, started.elapsed()).into());
            }
        };
        match result {
            Ok(Ok(res)) => {
                metrics::count_result(metrics::names::QUEUE_WAITS, "served");
                tracing::info!(
                    waited_ms = started.elapsed().as_millis() as u64,
                    "request served after a recovery"
                );
                return Ok(res);
            }
            Ok(Err(err)) => match find::<AllProvidersFailed>(&*err) {
                Some(again) => {
                    last = again.clone();
                    pause = (pause * 2).min(max_pause);
                }
                None => return Err(err),
            },
            Err(_) => return Err(Elapsed::new(TimeoutKind::Queue, started.elapsed()).into()),
        }
    }
}
