//! Helpers shared by the ramp's tests.
#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use http::{Request, Response};
use tokio::sync::broadcast;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt};
use tower_failover_core::error::{Shed, find};
use tower_failover_core::{CircuitState, Health, HealthEvent, HealthEventKind};

/// Lets the spawned tasks run without moving the clock.
pub async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// A provider that answers 200, or 503 for one request in `fail_every` (0: never).
#[derive(Clone, Default)]
pub struct Provider {
    pub calls: Arc<AtomicU64>,
    pub fail_every: Arc<AtomicU64>,
}

impl Provider {
    pub fn fail_one_in(&self, n: u64) {
        self.fail_every.store(n, Ordering::SeqCst);
    }

    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
}

impl Service<Request<String>> for Provider {
    type Response = Response<String>;
    type Error = BoxError;
    type Future = std::future::Ready<Result<Response<String>, BoxError>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, _req: Request<String>) -> Self::Future {
        let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
        let every = self.fail_every.load(Ordering::SeqCst);
        let status = if every > 0 && n.is_multiple_of(every) {
            503
        } else {
            200
        };
        let res = Response::builder()
            .status(status)
            .body(String::new())
            .map_err(BoxError::from);
        std::future::ready(res)
    }
}

/// Sends `n` requests; returns how many were admitted. Anything but a success, a
/// 503 or a `Shed` fails the test.
pub async fn send<S, B>(svc: &mut S, n: u64) -> u64
where
    S: Service<Request<String>, Response = Response<B>, Error = BoxError>,
    B: http_body::Body,
    B::Error: std::fmt::Display,
{
    let mut admitted = 0;
    for _ in 0..n {
        match svc
            .ready()
            .await
            .unwrap()
            .call(Request::new(String::new()))
            .await
        {
            Ok(res) => {
                // A 2xx counts when its body ends: read it, as a caller would.
                use http_body_util::BodyExt;
                if let Err(e) = res.into_body().collect().await {
                    panic!("unexpected body error: {e}");
                }
                admitted += 1
            }
            Err(e) if find::<Shed>(&*e).is_some() => {}
            Err(e) => panic!("unexpected error: {e}"),
        }
    }
    admitted
}

/// What the breaker does in an outage: one more trip, open for 30 s.
pub async fn outage(health: &Health) {
    health.set_trips(health.trips() + 1);
    let until = Instant::now() + Duration::from_secs(30);
    let state = health.breaker_state();
    assert!(health.transition(state, CircuitState::Open, Some(until)));
    settle().await;
}

/// What the breaker does when its half-open probes succeed.
pub async fn recovery(health: &Health) {
    assert!(health.transition(CircuitState::Open, CircuitState::HalfOpen, None));
    settle().await;
    assert!(health.transition(CircuitState::HalfOpen, CircuitState::Closed, None));
    settle().await;
}

/// The ramp events received so far.
pub fn ramp_events(rx: &mut broadcast::Receiver<HealthEvent>) -> Vec<HealthEventKind> {
    let mut out = Vec::new();
    while let Ok(ev) = rx.try_recv() {
        if let k @ (HealthEventKind::RampStep { .. }
        | HealthEventKind::RampRolledBack { .. }
        | HealthEventKind::RampCompleted
        | HealthEventKind::Probe { .. }) = ev.kind
        {
            out.push(k);
        }
    }
    out
}
