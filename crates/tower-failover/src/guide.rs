//! The user guide: every example here is compiled and run as a test, and the
//! README's "User guide" section is a tour of it.
//!
//! # 1. Put the stack into an existing axum service
//!
//! A [`Failover`](crate::Failover) is an ordinary tower service over
//! `http::Request<B>`: route to it with `route_service`. It fails with a
//! [`BoxError`](crate::BoxError), and axum wants infallible services, so put
//! `HandleErrorLayer` in front and answer with
//! [`error_response`](crate::error_response): `503` with `Retry-After` when every
//! provider is down, `429`, `504`, `502` or `413` otherwise, in OpenAI's error
//! shape. (When every provider answered and every answer was rejected for its
//! content, a refusal everyone gives, the stack answers with the last of them,
//! marked [`REJECTED_HEADER`](crate::REJECTED_HEADER), instead of failing.)
//!
//! ```
//! use axum::{Router, body::Body, error_handling::HandleErrorLayer, routing::get};
//! use http::{Request, Response, StatusCode};
//! use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
//! use tower_failover::replay::ReplayBody;
//! use tower_failover::{ProviderDef, Stack, error_response};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! # let client = service_fn(|_req: Request<ReplayBody>| async {
//! #     let answer = r#"{"choices":[{"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}]}"#;
//! #     Ok::<_, BoxError>(Response::new(ReplayBody::from(answer)))
//! # });
//! // `client` is a provider client, such as `tower_failover::provider::OpenAiCompatible`.
//! let llm = Stack::builder()
//!     .provider(ProviderDef::new("openai", "gpt-4o-mini", client))
//!     .build()?;
//! let health = llm.handle().clone();
//!
//! let app = Router::new()
//!     .route("/", get(|| async { "your app" }))
//!     .route_service(
//!         "/v1/chat/completions",
//!         ServiceBuilder::new()
//!             .layer(HandleErrorLayer::new(|err: BoxError| async move { error_response(&*err) }))
//!             .service(llm),
//!     )
//!     .route("/health", get(move || async move { axum::Json(health.snapshot()) }));
//!
//! let req = Request::post("/v1/chat/completions").body(Body::from(r#"{"model":"gpt-4o-mini"}"#))?;
//! let res = app.oneshot(req).await?;
//! assert_eq!(res.status(), StatusCode::OK);
//! # Ok(()) }
//! ```
//!
//! The repository's `tower-failover-gateway` crate (`crates/gateway`) is a complete
//! OpenAI-compatible gateway built this way (streaming, `/v1/models`, `/health`, a
//! hardened server, graceful shutdown), as a library and a binary.
//!
//! # 2. Swap one layer for your own
//!
//! Every position of a provider's stack takes the built-in layer's configuration, a
//! [`CustomLayer`](crate::CustomLayer) of yours, or [`Slot::Off`](crate::Slot::Off);
//! the same goes per provider ([`ProviderDef`](crate::ProviderDef)), and the router
//! can be yours too ([`Routing::Custom`](crate::Routing::Custom)). A custom layer
//! sees the provider's [`Health`](crate::Health), so it can take part in the shared
//! state (here, it refuses calls while an operator forces the circuit open).
//!
//! ```
//! use std::time::Duration;
//! use http::{Request, Response};
//! use tower::timeout::TimeoutLayer;
//! use tower::{BoxError, ServiceExt, service_fn};
//! use tower_failover::error::CircuitOpen;
//! use tower_failover::replay::ReplayBody;
//! use tower_failover::{CircuitState, CustomLayer, Health, ProviderDef, Slot, Stack, boxed};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! # let client = || service_fn(|_req: Request<ReplayBody>| async {
//! #     let answer = r#"{"choices":[{"message":{"role":"assistant","content":"Hi!"},"finish_reason":"stop"}]}"#;
//! #     Ok::<_, BoxError>(Response::new(ReplayBody::from(answer)))
//! # });
//! // Your own "breaker": obeys the operator's override, nothing else.
//! let breaker = CustomLayer::new(|health: &Health, inner| {
//!     let health = health.clone();
//!     boxed(tower::util::service_fn(move |req| {
//!         let (health, inner) = (health.clone(), inner.clone());
//!         async move {
//!             if health.forced() == Some(CircuitState::Open) {
//!                 return Err(BoxError::from(CircuitOpen::new(Duration::from_secs(60))));
//!             }
//!             inner.oneshot(req).await
//!         }
//!     }))
//! });
//!
//! let stack = Stack::builder()
//!     .provider(ProviderDef::new("openai", "gpt-4o-mini", client()))
//!     // This provider keeps the built-in breaker and gets no ramp.
//!     .provider(ProviderDef::new("local", "llama-3.1-8b", client()).ramp(Slot::Off))
//!     // Every other provider: your breaker in the circuit breaker's place.
//!     .circuit(breaker)
//!     // And any tower layer on top of every provider's stack.
//!     .provider_layer(CustomLayer::from_layer(|_: &Health| TimeoutLayer::new(Duration::from_secs(30))))
//!     .build()?;
//!
//! let res = stack.oneshot(Request::post("/v1/chat/completions").body(String::from("{}"))?).await?;
//! assert_eq!(res.status(), 200);
//! # Ok(()) }
//! ```
//!
//! # 3. Use one layer alone
//!
//! Each layer is its own crate, usable without the others (and without this
//! facade): here the circuit breaker alone in front of one client, answering
//! refusals with a 503 and a `Retry-After`.
//!
//! ```
//! use http::{Request, Response};
//! use tower::{BoxError, ServiceBuilder, ServiceExt, service_fn};
//! use tower_failover::circuit::{CircuitBreakerLayer, CircuitConfig};
//! use tower_failover::{Health, error_response};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let health = Health::standalone("openai", "gpt-4o-mini");
//! let client = service_fn(|_req: Request<String>| async {
//!     Ok::<_, BoxError>(Response::builder().status(503).body(String::new())?)
//! });
//! let svc = ServiceBuilder::new()
//!     .layer(CircuitBreakerLayer::with_config(health.clone(), CircuitConfig::default().consecutive_failures(2))?)
//!     .service(client);
//!
//! for _ in 0..2 {
//!     assert_eq!(svc.clone().oneshot(Request::new(String::new())).await?.status(), 503);
//! }
//! // Open: the third call is refused without reaching the provider.
//! let err = svc.clone().oneshot(Request::new(String::new())).await.unwrap_err();
//! let answer = error_response(&*err);
//! assert_eq!(answer.status(), 503);
//! assert!(answer.headers().contains_key("retry-after"));
//! # Ok(()) }
//! ```
//!
//! # 4. Load the stack from a file
//!
//! A [`Config`](crate::Config) (TOML) names the router, the settings of each layer
//! and the providers; API keys come from the environment variables it names.
//! [`Stack::from_config`](crate::Stack::from_config) gives a builder, so code can
//! still replace any layer before building. Invalid files are refused with the
//! field and the reason.
//!
//! ```
//! use tower_failover::{Config, Stack};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let config = Config::from_toml_str(r#"
//!     router = "fallback"
//!     deadline = "10m"           # the caller's whole wait: a long stream must fit
//!
//!     [circuit]
//!     consecutive_failures = 3
//!     cooldown = "20s"
//!
//!     [[providers]]
//!     name = "openai"
//!     model = "gpt-4o-mini"
//!     api_key = "sk-..."        # better: api_key_env = "OPENAI_API_KEY"
//!     priority = 0
//!
//!     [[providers]]
//!     name = "vllm"
//!     model = "llama-3.1-8b"
//!     base_url = "http://127.0.0.1:8000/v1"
//!     priority = 1
//! "#)?;
//! let stack = Stack::from_config(&config)?.build()?;
//! assert_eq!(stack.handle().providers().len(), 2);
//!
//! let err = Config::from_toml_str(r#"
//!     [[providers]]
//!     name = "openai"
//!     model = "gpt-4o-mini"
//!     weight = -1
//! "#).unwrap_err();
//! assert_eq!(err.to_string(), "providers[0].weight: -1 is not a number in (0, 1e9]");
//! # Ok(()) }
//! ```
