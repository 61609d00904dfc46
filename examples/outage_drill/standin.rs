//! STAND-INS: the smallest honest versions of layers whose crates have not landed
//! yet, so that the drill runs end to end meanwhile. Each one says which crate
//! replaces it; `stack.rs` lists, at run time, which real layers and which stand-ins
//! the drill uses. None of this is the project's API.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt};
use tower_failover_core::error::{AllProvidersFailed, Attempt};
use tower_failover_core::replay::{ReplayBody, clone_request};
use tower_failover_core::{
    Classify, Health, LlmClassifier, Outcome, classify_error_chain, deadline::Deadline,
};

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

// ---- ordered fallback with overflow (replaced by tower-failover-balance/-overflow)

/// STAND-IN for `tower-failover-balance`'s `Fallback` and `tower-failover-overflow`:
/// tries the providers in order, skipping any whose [`Health::is_available`] is false
/// (circuit open, rate limited, ramp at zero), and moves on after a failure, a 429
/// or a shed, never retrying one provider twice for one request.
#[derive(Clone)]
pub(crate) struct OrderedFallback<S> {
    providers: Arc<Vec<(Health, S)>>,
}

impl<S> OrderedFallback<S> {
    pub(crate) fn new(providers: Vec<(Health, S)>) -> Self {
        OrderedFallback {
            providers: Arc::new(providers),
        }
    }
}

impl<S, B> Service<Request<ReplayBody>> for OrderedFallback<S>
where
    S: Service<Request<ReplayBody>, Response = Response<B>, Error = BoxError>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = Response<B>;
    type Error = BoxError;
    type Future = BoxFuture<Response<B>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<ReplayBody>) -> Self::Future {
        let providers = Arc::clone(&self.providers);
        Box::pin(async move {
            let classifier = LlmClassifier::default();
            let mut attempts = Vec::new();
            for (health, svc) in providers.iter() {
                if Deadline::of(&req).is_some_and(|d| d.remaining().is_zero()) {
                    break;
                }
                if !health.is_available(Instant::now()) {
                    continue;
                }
                let started = Instant::now();
                let outcome = match svc.clone().oneshot(clone_request(&req)).await {
                    Ok(res) => {
                        let outcome = classifier.classify_response(&res);
                        if matches!(outcome, Outcome::Success | Outcome::ClientError { .. }) {
                            return Ok(res);
                        }
                        outcome
                    }
                    Err(e) => classify_error_chain(&*e),
                };
                attempts.push(Attempt::new(
                    health.id().clone(),
                    outcome,
                    started.elapsed(),
                ));
            }
            let now = Instant::now();
            let retry_after = providers.iter().map(|(h, _)| h.recovers_in(now)).min();
            Err(AllProvidersFailed::new(attempts)
                .with_retry_after(retry_after)
                .into())
        })
    }
}
