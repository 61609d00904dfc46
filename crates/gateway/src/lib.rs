//! An OpenAI- and Anthropic-compatible LLM gateway on axum, built from the
//! tower-failover facade: a library to embed and a binary to deploy.
//!
//! # Deploy it
//!
//! ```sh
//! cargo install --path crates/gateway          # or: cargo install tower-failover-gateway
//! tower-failover-gateway                       # simulated providers on 127.0.0.1:8080, no keys
//! tower-failover-gateway --config gateway.toml # your providers
//! ```
//!
//! The file is the stack's configuration ([`Config`]) plus the gateway's
//! `[auth]` ([`AuthConfig`]: caller keys, their models and budgets; [`auth`]),
//! `[server]` ([`ServerConfig`]: timeouts and limits), `[upstream]`
//! ([`UpstreamConfig`]: what of a caller's request reaches the providers),
//! `[log]` ([`LogConfig`]) and `[deferred]` (jobs kept while every provider is
//! down; [`jobs`]) sections; a few environment variables override what
//! changes per deployment ([`config`]). The repository has a `Dockerfile` and a
//! `compose.yaml` running two replicas that share circuit state through Redis.
//!
//! # Embed it
//!
//! [`build`] (or [`build_with`]) makes the [`Router`]; [`serve_with`] runs it
//! with the hardened server, or nest the router in your own axum app (then your
//! server's timeouts and limits apply). The parts are separate functions so that
//! middleware (authentication, metrics) can be added around [`Gateway::router`]
//! before serving it.
//!
//! # Routes
//!
//! | route | what it does |
//! | --- | --- |
//! | `POST /v1/chat/completions` | to the providers serving the requested `model` (then its group's fallbacks), streaming (`"stream": true`) or not; `404 model_not_found` for a model nobody serves |
//! | `POST /v1/messages` | Anthropic's Messages API through the chat stack, streaming or not, translated both ways ([`messages`]) |
//! | `POST /v1/messages/count_tokens` | an estimate of the prompt's tokens in Anthropic's shape (Claude Code asks at start-up and for `/context`) |
//! | `GET /v1/jobs/{id}` | a deferred request's status, then its answer: a request with `Prefer: respond-async` (or `x-tower-failover-defer: true`) that finds every provider down gets `202` and a job id, and runs when one recovers ([`jobs`]) |
//! | `DELETE /v1/jobs/{id}` | cancels a job still waiting, or forgets its kept answer ([`jobs`]) |
//! | `POST /v1/embeddings` | through a second stack of the entries marked `embeddings = true` ([`embeddings`]) |
//! | `GET /v1/models` | exactly the models that can be asked for (every entry's model and aliases, chat and embeddings, once), OpenAI's list shape; for a key limited to some models (`[auth]`), only those |
//! | `GET /health` | the stack's snapshot as JSON (`503` when no provider is available); the embeddings stack's under `"embeddings"` |
//! | `GET /health/events` | every health event (circuit transitions, overrides, rate-limit windows, ramp steps) as server-sent events |
//! | `POST /health/force` | `{"provider", "model", "state": "open" \| "closed" \| null}`: a manual override |
//! | `GET /metrics` | every metric in Prometheus' text format (feature `metrics`, on by default; [`telemetry`]) |
//! | `GET /livez` | `200` while the process serves: for liveness probes and the container's health check |
//! | `GET /readyz` | `200` while accepting traffic, `503` once shutdown began (load balancers stop sending before the drain ends) |
//!
//! With caller keys configured ([`auth`]) every route of the router needs one
//! (`401` without), the `/health` routes and `/metrics` an admin key (`403`);
//! any `POST` must be `application/json` (`415`), keys or not.
//!
//! The probes ([`Gateway::probes`]) are served apart from the router: never
//! shed by the server's limits, never behind middleware added to the router,
//! open to unauthenticated callers.
//!
//! Every answer that went through a provider carries `x-failover-provider:
//! <provider>/<model>`; of the provider's own headers only the content type and
//! length, `cache-control` and the request id are passed on. Of the caller's
//! request only an allowlist goes to the providers ([`upstream`]). Errors are
//! OpenAI-shaped JSON from [`error_response`](tower_failover::error_response)
//! (Anthropic-shaped on `/v1/messages`, see [`messages`]): `404 model_not_found`
//! for a model nobody serves, `503` with `Retry-After` when every provider is
//! down, `413` past the body limit, `429`, `502`, `504`. When every provider
//! answered and every answer failed a content check (a refusal every model
//! gives), the last answer is the answer: `200` with `x-failover-rejected:
//! <kind>` ([`REJECTED_HEADER`](tower_failover::REJECTED_HEADER)).

use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::sync::watch;
use tower::ServiceExt;

pub mod auth;
mod chat;
pub mod config;
pub mod embeddings;
pub mod jobs;
pub mod log;
pub mod messages;
pub mod otlp;
pub mod server;
mod simulated;
pub mod telemetry;
pub mod upstream;

pub use auth::AuthConfig;
pub use config::GatewayConfig;
pub use log::{LogConfig, LogFormat};
pub use server::{ServerConfig, serve, serve_with};
pub use simulated::{SIMULATED_EMBEDDINGS_MODEL, Simulated, simulated};
pub use upstream::UpstreamConfig;

use tower_failover::{
    CircuitState, Config, ConfigError, CustomLayer, Failover, Handle, Stack, boxed,
};
use upstream::Forwarding;

/// The liveness probe's path.
pub const LIVEZ: &str = "/livez";
/// The readiness probe's path.
pub const READYZ: &str = "/readyz";

/// The header naming the provider that answered.
pub const SERVED_BY: &str = "x-failover-provider";

/// A built gateway: the axum router and the stack's handle.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The routes, ready for [`serve_with`] (or `axum::serve`). Wrap it in your
    /// own middleware before serving if you like.
    ///
    /// On a server of your own, turn `TCP_NODELAY` on (with `axum::serve`:
    /// `listener.tap_io(|tcp| { let _ = tcp.set_nodelay(true); })`, from
    /// `axum::serve::ListenerExt`): without it a streamed answer's small event
    /// writes wait for the client's delayed acknowledgement, about 40 ms each on
    /// Linux. [`serve_with`] does it. A binary of your own also chooses its
    /// allocator: this crate's binary uses mimalloc, which doubled the gateway's
    /// throughput against glibc's on two cores (`docs/benchmarks.md`).
    pub router: Router,
    /// Snapshots, events and overrides of the chat stack behind it.
    pub handle: Handle,
    /// The same for the embeddings stack, when an entry serves embeddings.
    pub embeddings_handle: Option<Handle>,
    /// Ends the event streams at shutdown, so they do not hold up the drain,
    /// and turns `/readyz` to `503`.
    closing: Arc<watch::Sender<bool>>,
    /// The stack's body limit, which the server enforces before routing.
    max_request_bytes: usize,
    /// `/livez` and `/readyz`, served apart from `router`.
    probes: Router,
    /// Whether callers need a key (`[auth]`); [`serve_with`] warns when not.
    auth_enabled: bool,
}

/// The routes' state. Axum clones it for every layer a request passes (each
/// route's middleware clones the service below it), so it is one `Arc`: cloning
/// the fields themselves (the models list, the stacks) cost about 200 allocations
/// a request (issue 19).
#[derive(Clone)]
struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;

    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// What [`AppState`] shares.
struct Shared {
    failover: Failover,
    /// The stack of the entries that serve embeddings, if any.
    embeddings: Option<Failover>,
    /// The body limit, for the front doors that read the body themselves.
    max_request_bytes: usize,
    models: serde_json::Value,
    closing: watch::Receiver<bool>,
    /// What of a caller's request goes upstream.
    forwarding: Arc<Forwarding>,
    /// Deferred jobs (`[deferred]`), unless turned off.
    jobs: Option<jobs::Jobs>,
}

impl Gateway {
    /// `GET /livez` (`200` while the process serves) and `GET /readyz` (`200`,
    /// then `503` once [`serve_with`] begins to shut down). [`serve_with`] answers
    /// them before `router` (so middleware added to the router, such as
    /// authentication, never covers them) and never sheds them; when you serve
    /// `router` yourself, merge these in your app.
    pub fn probes(&self) -> Router {
        self.probes.clone()
    }

    /// The same gateway with its router replaced by `f(router)`: wrap it in
    /// middleware (authentication, metrics, tracing) or nest it in a larger app,
    /// and keep serving it with [`serve_with`].
    pub fn map_router(mut self, f: impl FnOnce(Router) -> Router) -> Gateway {
        self.router = f(self.router);
        self
    }
}

/// Builds the gateway's router from a configuration (see [`build`]).
pub fn router(config: &Config) -> Result<Router, ConfigError> {
    build(config).map(|g| g.router)
}

/// Builds the gateway from the stack's configuration, with the defaults of the
/// gateway's own sections (see [`build_with`]).
pub fn build(config: &Config) -> Result<Gateway, ConfigError> {
    build_with(&GatewayConfig::new(config.clone()))
}

/// Builds the failover stack from `config.stack` (API keys from the environment
/// variables it names), tags each answer with the provider that gave it, and
/// wraps it in the gateway's routes, forwarding what `config.upstream` allows.
/// Call it inside a tokio runtime. (`config.server` is for [`serve_with`].)
pub fn build_with(config: &GatewayConfig) -> Result<Gateway, ConfigError> {
    config.upstream.validate()?;
    // The recorder first: the stacks register their metric handles as they are built.
    #[cfg(feature = "metrics")]
    telemetry::prometheus();
    let stack_config = &config.stack;
    let (chat_config, embeddings_config) = embeddings::split(stack_config);
    // Each half numbers its own entries: errors name the file's index.
    let at = |embeddings: bool| -> Vec<usize> {
        let entries = stack_config.providers.iter().enumerate();
        entries
            .filter(|(_, p)| p.embeddings == embeddings)
            .map(|(i, _)| i)
            .collect()
    };
    let failover = stack(&chat_config).map_err(|e| renumber(e, &at(false)))?;
    let embeddings = match embeddings_config {
        Some(c) => Some(stack(&c).map_err(|e| renumber(e, &at(true)))?),
        None => None,
    };
    let handle = failover.handle().clone();
    let embeddings_handle = embeddings.as_ref().map(|f| f.handle().clone());
    let (closing, closed) = watch::channel(false);
    let state = AppState(Arc::new(Shared {
        jobs: config
            .deferred
            .get()
            .map(|c| jobs::Jobs::new(&failover, *c))
            .transpose()?,
        models: models(stack_config),
        max_request_bytes: stack_config.max_request_bytes,
        failover,
        embeddings,
        closing: closed.clone(),
        forwarding: Arc::new(config.upstream.compile()),
    }));
    let router = Router::new()
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/messages", post(messages::messages))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/jobs/{id}", get(jobs::get).delete(jobs::delete))
        .route("/v1/models", get(list_models))
        .route("/health", get(health))
        .route("/health/force", post(force))
        .route("/health/events", get(events));
    #[cfg(feature = "metrics")]
    let router = router.route(telemetry::METRICS, get(telemetry::metrics));
    let router = router
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method);
    let access = auth::Access::new(
        &config.auth,
        &|k| std::env::var(k).ok(),
        stack_config.redis.as_ref(),
        stack_config.default_model.clone(),
        stack_config.max_request_bytes,
    )?;
    let auth_enabled = access.is_enabled();
    if !auth_enabled {
        auth::warn_open();
    }
    let router = telemetry::layers(
        router.with_state(state),
        axum::middleware::from_fn_with_state(access, auth::check),
    );
    Ok(Gateway {
        router,
        probes: probes(closed),
        handle,
        embeddings_handle,
        closing: Arc::new(closing),
        max_request_bytes: stack_config.max_request_bytes,
        auth_enabled,
    })
}

/// `GET /livez` (always `200` while serving) and `GET /readyz` (`200`, then `503`
/// once `closing` turns true at shutdown). They read no configuration and no
/// provider state, so they answer even when every provider is down (that is
/// what `/health` reports).
fn probes(closing: watch::Receiver<bool>) -> Router {
    Router::new().route(LIVEZ, get(|| async { "ok\n" })).route(
        READYZ,
        get(move || {
            let closing = closing.clone();
            async move {
                if *closing.borrow() {
                    (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n")
                } else {
                    (StatusCode::OK, "ready\n")
                }
            }
        }),
    )
}

/// The failover stack of `config`'s entries, each answer tagged with
/// [`SERVED_BY`].
/// `err` with its `providers[i]` counted in the whole file: `at[i]` is the
/// file's index of the half's `i`-th entry.
fn renumber(err: ConfigError, at: &[usize]) -> ConfigError {
    let field = err.field();
    let Some(rest) = field.strip_prefix("providers[") else {
        return err;
    };
    let Some((i, tail)) = rest.split_once(']') else {
        return err;
    };
    match i.parse::<usize>().ok().and_then(|i| at.get(i)) {
        Some(file) => ConfigError::new(format!("providers[{file}]{tail}"), err.reason()),
        None => err,
    }
}

fn stack(config: &Config) -> Result<Failover, ConfigError> {
    Stack::from_config(config)?
        .provider_layer(CustomLayer::new(|health, inner| {
            let tag = HeaderValue::from_str(&health.id().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            boxed(
                inner
                    .map_request(
                        |mut req: http::Request<tower_failover::replay::ReplayBody>| {
                            // Read by the stack's router above; not the provider's business.
                            for name in &upstream::ROUTING {
                                req.headers_mut().remove(name);
                            }
                            req
                        },
                    )
                    .map_response(move |mut res: http::Response<_>| {
                        // A `HeaderName`: inserting by a `&str` copies a
                        // non-standard name, an allocation per answer.
                        const NAME: HeaderName = HeaderName::from_static(SERVED_BY);
                        res.headers_mut().insert(NAME, tag.clone());
                        res
                    }),
            )
        }))
        .build()
}

/// The models a configuration serves, as OpenAI's `GET /v1/models` lists them:
/// every provider's model and every alias, once.
fn models(config: &Config) -> serde_json::Value {
    let mut seen = BTreeSet::new();
    let mut data = Vec::new();
    for p in &config.providers {
        for id in std::iter::once(&p.model).chain(&p.aliases) {
            if seen.insert(id.clone()) {
                data.push(serde_json::json!({
                    "id": id,
                    "object": "model",
                    "created": 0,
                    "owned_by": p.name,
                }));
            }
        }
    }
    serde_json::json!({ "object": "list", "data": data })
}

/// A path the gateway does not serve: `404` in the API's error shape (SDKs show
/// its message), never an empty body.
async fn no_route(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    server::error_answer(
        uri.path(),
        StatusCode::NOT_FOUND,
        "unknown_route",
        &format!(
            "no such route: {method} {}; the gateway serves /v1/chat/completions, /v1/messages, /v1/embeddings and /v1/models",
            quoted_path(uri.path())
        ),
    )
}

/// A route asked with a method it does not take: `405` in the API's error shape
/// (axum adds `Allow`).
async fn wrong_method(method: axum::http::Method, uri: axum::http::Uri) -> Response {
    server::error_answer(
        uri.path(),
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        &format!("{method} is not allowed on {}", quoted_path(uri.path())),
    )
}

/// At most 128 bytes of a caller's path, for an error message.
fn quoted_path(path: &str) -> &str {
    let mut end = path.len().min(128);
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    &path[..end]
}

/// `GET /v1/models`: every model the entries serve, or, for a key limited to some
/// models, those of them the gateway serves.
async fn list_models(
    State(state): State<AppState>,
    allowed: Option<axum::Extension<auth::AllowedModels>>,
) -> Response {
    let Some(axum::Extension(allowed)) = allowed else {
        return axum::Json(&state.models).into_response();
    };
    let mut models = state.models.clone();
    if let Some(data) = models
        .get_mut("data")
        .and_then(serde_json::Value::as_array_mut)
    {
        data.retain(|m| {
            m.get("id")
                .and_then(serde_json::Value::as_str)
                .is_some_and(|id| allowed.allows(id))
        });
    }
    axum::Json(models).into_response()
}

/// The chat stack's snapshot; with embeddings entries, theirs under
/// `"embeddings"` (the status is the chat stack's).
async fn health(State(state): State<AppState>) -> Response {
    let snapshot = state.failover.handle().snapshot();
    let status = if snapshot.status == "ok" {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let Some(embeddings) = &state.embeddings else {
        return (status, axum::Json(snapshot)).into_response();
    };
    let mut body = serde_json::to_value(&snapshot).unwrap_or_default();
    if let Some(obj) = body.as_object_mut() {
        obj.insert(
            "embeddings".into(),
            serde_json::to_value(embeddings.handle().snapshot()).unwrap_or_default(),
        );
    }
    (status, axum::Json(body)).into_response()
}

/// The stack's health events as server-sent events, one JSON object each
/// (`{"provider": "openai/gpt-4o-mini", "event": "circuit_changed", ...}`).
async fn events(State(state): State<AppState>) -> Response {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;

    let rx = state.failover.handle().subscribe();
    let stream = futures_util::stream::unfold(
        (rx, state.closing.clone()),
        |(mut rx, mut closing)| async move {
            loop {
                if *closing.borrow() {
                    return None;
                }
                let received = tokio::select! {
                    r = rx.recv() => r,
                    _ = closing.changed() => return None,
                };
                let event = match received {
                    Ok(e) => Event::default().json_data(&e),
                    Err(RecvError::Lagged(n)) => Ok(Event::default()
                        .event("lagged")
                        .data(format!("{n} events skipped"))),
                    Err(RecvError::Closed) => return None,
                };
                match event {
                    Ok(event) => {
                        return Some((Ok::<_, std::convert::Infallible>(event), (rx, closing)));
                    }
                    Err(e) => tracing::warn!(error = %e, "unserializable health event"),
                }
            }
        },
    );
    Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response()
}

#[derive(Deserialize)]
struct Force {
    provider: String,
    model: String,
    state: Option<CircuitState>,
}

async fn force(State(state): State<AppState>, body: axum::body::Bytes) -> Response {
    let force: Force = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => {
            let body = serde_json::json!({"error": {"message": format!("expected {{\"provider\", \"model\", \"state\"}}: {e}"), "type": "invalid_request_error", "code": 400}});
            return (StatusCode::BAD_REQUEST, axum::Json(body)).into_response();
        }
    };
    // The chat stack first, then the embeddings stack.
    let mut forced = state
        .failover
        .handle()
        .force(&force.provider, &force.model, force.state)
        .map(|()| &state.failover);
    if forced.is_err()
        && let Some(embeddings) = &state.embeddings
        && embeddings
            .handle()
            .force(&force.provider, &force.model, force.state)
            .is_ok()
    {
        forced = Ok(embeddings);
    }
    match forced {
        Ok(stack) => {
            tracing::info!(provider = %force.provider, model = %force.model, state = ?force.state, "manual override");
            axum::Json(stack.handle().snapshot()).into_response()
        }
        Err(e) => {
            let body = serde_json::json!({"error": {"message": e.to_string(), "type": "not_found", "code": 404}});
            (StatusCode::NOT_FOUND, axum::Json(body)).into_response()
        }
    }
}
