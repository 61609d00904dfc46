//! An OpenAI-compatible HTTP gateway on axum, built from the tower-failover facade.
//!
//! The program is `examples/gateway/main.rs`; this module is its library half, so
//! tests can build the same router and drive it over real HTTP.
//!
//! | route | what it does |
//! | --- | --- |
//! | `POST /v1/chat/completions` | to the providers serving the requested `model` (then its group's fallbacks), streaming (`"stream": true`) or not; `404 model_not_found` for a model nobody serves |
//! | `POST /v1/messages` | Anthropic's Messages API through the chat stack, streaming or not, translated both ways ([`messages`]) |
//! | `POST /v1/embeddings` | through a second stack of the entries marked `embeddings = true` ([`embeddings`]) |
//! | `GET /v1/models` | exactly the models that can be asked for (every entry's model and aliases, chat and embeddings, once), OpenAI's list shape |
//! | `GET /health` | the stack's snapshot as JSON (`503` when no provider is available); the embeddings stack's under `"embeddings"` |
//! | `GET /health/events` | every health event (circuit transitions, overrides, rate-limit windows, ramp steps) as server-sent events |
//! | `POST /health/force` | `{"provider", "model", "state": "open" \| "closed" \| null}`: a manual override |
//! | `GET /metrics` | every metric in Prometheus' text format ([`telemetry`]) |
//!
//! Every answer that went through a provider carries `x-failover-provider:
//! <provider>/<model>`; of the provider's own headers only the content type and
//! length, `cache-control` and the request id are passed on. Errors are OpenAI-shaped
//! JSON from [`error_response`](tower_failover::error_response) (Anthropic-shaped on
//! `/v1/messages`, see [`messages`]): `404 model_not_found` for a model nobody serves,
//! `503` with `Retry-After` when every provider is down, `413`
//! past the body limit, `429`, `502`, `504`.

use std::collections::BTreeSet;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::ServiceExt;
use tower_failover::sim::{Flavor, Sim};
mod chat;
pub mod embeddings;
pub mod messages;
pub mod telemetry;

use tower_failover::{
    CircuitState, Config, ConfigError, CustomLayer, Failover, Handle, ProviderEntry, Stack, boxed,
};

/// The header naming the provider that answered.
pub const SERVED_BY: &str = "x-failover-provider";

/// A built gateway: the axum router and the stack's handle.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// The routes, ready for `axum::serve` (or [`serve`]).
    pub router: Router,
    /// Snapshots, events and overrides of the chat stack behind it.
    pub handle: Handle,
    /// The same for the embeddings stack, when an entry serves embeddings.
    pub embeddings_handle: Option<Handle>,
    /// Ends the event streams at shutdown, so they do not hold up the drain.
    closing: Arc<watch::Sender<bool>>,
}

#[derive(Clone)]
struct AppState {
    failover: Failover,
    /// The stack of the entries that serve embeddings, if any.
    embeddings: Option<Failover>,
    /// The body limit, for the front doors that read the body themselves.
    max_request_bytes: usize,
    models: serde_json::Value,
    closing: watch::Receiver<bool>,
}

/// Builds the gateway's router from a configuration (see [`build`]).
pub fn router(config: &Config) -> Result<Router, ConfigError> {
    build(config).map(|g| g.router)
}

/// Builds the failover stack from `config` (API keys from the environment
/// variables it names), tags each answer with the provider that gave it, and
/// wraps it in the gateway's routes. Call it inside a tokio runtime.
pub fn build(config: &Config) -> Result<Gateway, ConfigError> {
    // The recorder first: the stacks register their metric handles as they are built.
    telemetry::prometheus();
    let (chat_config, embeddings_config) = embeddings::split(config);
    let failover = stack(&chat_config)?;
    let embeddings = match embeddings_config {
        Some(c) => Some(stack(&c)?),
        None => None,
    };
    let handle = failover.handle().clone();
    let embeddings_handle = embeddings.as_ref().map(|f| f.handle().clone());
    let (closing, closed) = watch::channel(false);
    telemetry::spawn_upkeep(closed.clone());
    let state = AppState {
        models: models(config),
        max_request_bytes: config.max_request_bytes,
        failover,
        embeddings,
        closing: closed,
    };
    let router = Router::new()
        .route("/v1/chat/completions", post(chat::chat))
        .route("/v1/embeddings", post(embeddings::embeddings))
        .route("/v1/messages", post(messages::messages))
        .route("/v1/models", get(list_models))
        .route("/health", get(health))
        .route("/health/force", post(force))
        .route("/health/events", get(events))
        .route("/metrics", get(telemetry::metrics))
        .with_state(state);
    let router = telemetry::layers(router);
    Ok(Gateway {
        router,
        handle,
        embeddings_handle,
        closing: Arc::new(closing),
    })
}

/// The failover stack of `config`'s entries, each answer tagged with
/// [`SERVED_BY`].
fn stack(config: &Config) -> Result<Failover, ConfigError> {
    Stack::from_config(config)?
        .provider_layer(CustomLayer::new(|health, inner| {
            let tag = HeaderValue::from_str(&health.id().to_string())
                .unwrap_or_else(|_| HeaderValue::from_static("unknown"));
            boxed(inner.map_response(move |mut res: http::Response<_>| {
                res.headers_mut().insert(SERVED_BY, tag.clone());
                res
            }))
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

async fn list_models(State(state): State<AppState>) -> Response {
    axum::Json(state.models).into_response()
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
    let stream =
        futures_util::stream::unfold((rx, state.closing), |(mut rx, mut closing)| async move {
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
        });
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

/// Serves `gateway` on `listener` until `shutdown` completes, then stops accepting,
/// ends the event streams and lets in-flight requests finish (streamed answers
/// included) for up to `drain`.
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, gateway.router).with_graceful_shutdown(async move {
        let _ = stop_rx.await;
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        done = &mut server => return done,
        () = shutdown => {}
    }
    tracing::info!(
        drain_s = drain.as_secs(),
        "shutting down: no new connections, draining in-flight requests"
    );
    let _ = stop_tx.send(());
    gateway.closing.send_replace(true);
    match tokio::time::timeout(drain, server).await {
        Ok(done) => {
            tracing::info!("drained; bye");
            done
        }
        Err(_) => {
            tracing::warn!("drain time over; closing the remaining connections");
            Ok(())
        }
    }
}

/// Simulated providers started in-process, and a configuration pointing at them.
#[derive(Debug)]
pub struct Simulated {
    /// The running sims (dropping them stops them).
    pub sims: Vec<Sim>,
    /// A configuration with one provider per sim.
    pub config: Config,
}

/// The embeddings model the simulated OpenAI provider also serves.
pub const SIMULATED_EMBEDDINGS_MODEL: &str = "text-embedding-3-small";

/// Starts three simulated providers on loopback (two OpenAI-compatible, one
/// Anthropic, no keys needed) and returns a configuration that balances across
/// them, for running the gateway on a fresh machine. The first OpenAI one also
/// serves [`SIMULATED_EMBEDDINGS_MODEL`] (an `embeddings = true` entry).
pub async fn simulated() -> Result<Simulated, tower::BoxError> {
    let specs = [
        ("openai", Flavor::OpenAi, "gpt-4o-mini", 1u64),
        ("anthropic", Flavor::Anthropic, "claude-haiku-4-5", 2),
        ("groq", Flavor::OpenAi, "llama-3.1-8b-instant", 3),
    ];
    let mut sims = Vec::new();
    let mut config = Config::default();
    config.deadline = Some(Duration::from_secs(60));
    for (i, (name, flavor, model, seed)) in specs.into_iter().enumerate() {
        let embeds = i == 0;
        let mut models = vec![model];
        if embeds {
            models.push(SIMULATED_EMBEDDINGS_MODEL);
        }
        let sim = Sim::builder(flavor)
            .name(name)
            .seed(seed)
            .models(models)
            .ttft(Duration::from_millis(40))
            .token_interval(Duration::from_millis(5))
            .start()
            .await?;
        let base_url = match flavor {
            Flavor::OpenAi => format!("{}/v1", sim.base_url()),
            Flavor::Anthropic => sim.base_url().to_owned(),
        };
        let kind = match flavor {
            Flavor::OpenAi => "openai",
            Flavor::Anthropic => "anthropic",
        };
        config.providers.push(
            ProviderEntry::new(name, model)
                .client("kind", kind)
                .client("base_url", base_url.clone()),
        );
        if embeds {
            let mut entry = ProviderEntry::new(name, SIMULATED_EMBEDDINGS_MODEL)
                .client("kind", kind)
                .client("base_url", base_url);
            entry.embeddings = true;
            config.providers.push(entry);
        }
        sims.push(sim);
    }
    // Each model is its own group; when it is down, the others answer for it.
    let models: Vec<String> = config
        .providers
        .iter()
        .filter(|p| !p.embeddings)
        .map(|p| p.model.clone())
        .collect();
    for m in &models {
        let mut group = tower_failover::ModelGroup::default();
        group.fallbacks = models.iter().filter(|o| *o != m).cloned().collect();
        config.models.insert(m.clone(), group);
    }
    config.validate()?;
    Ok(Simulated { sims, config })
}
