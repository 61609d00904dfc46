//! The cases that read the request body: what the routing attributes, the quota
//! estimator and the provider's request preparation read from one request, and the
//! facade's stack with model routing and a token quota (the layers that read it).

use std::hint::black_box;
use std::task::{Context, Poll};

use http::{Request, Response};
use tower::{BoxError, Service};
use tower_failover::Slot;
use tower_failover::{Failover, ProviderDef, Stack};
use tower_failover_balance::{Attributes, JsonBodyAttributes};
use tower_failover_core::replay::ReplayBody;
use tower_failover_overflow::{BodyEstimator, EstimateTokens, QuotaConfig};
use tower_failover_provider::ModelMap;
use tower_failover_provider::translate::openai::prepare_request;

/// Reads the request as the layers of the stack do, then calls the inner service.
#[derive(Clone)]
pub(crate) struct RequestRead<S>(pub(crate) S);

impl<S: Service<Request<ReplayBody>>> Service<Request<ReplayBody>> for RequestRead<S> {
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: Request<ReplayBody>) -> S::Future {
        let attrs = JsonBodyAttributes::default().attributes(&req);
        black_box((attrs.model.as_deref(), attrs.tools, attrs.prompt_tokens));
        black_box(BodyEstimator::default().estimate(&req));
        let prepared = prepare_request(req.body(), &ModelMap::new(), true);
        black_box(prepared.map(|p| p.stream).ok());
        self.0.call(req)
    }
}

/// The facade's stack over `client`: one provider serving `gpt-4o-mini`, routed by
/// model, with a token quota (so the estimator runs), validation off.
pub(crate) fn facade<S>(client: S) -> Failover
where
    S: Service<Request<ReplayBody>, Response = Response<ReplayBody>>
        + Clone
        + Send
        + Sync
        + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    let quota = QuotaConfig {
        tokens_per_minute: Some(1 << 40),
        ..QuotaConfig::default()
    };
    Stack::builder()
        .provider(ProviderDef::new("a", "gpt-4o-mini", client))
        .quota(Slot::Builtin(quota))
        .output_validation(Slot::Off)
        .build()
        .expect("a valid stack")
}
