//! The failover gateway inside your own axum app.
//!
//! To deploy the gateway as it is, use its binary (`cargo install --path
//! crates/gateway`, then `tower-failover-gateway`). This example is for the other
//! case: you have an axum service and want the LLM routes in it, next to your own.
//!
//! Run with:
//!
//! ```sh
//! # No keys, no network: three simulated providers start in-process.
//! cargo run --example gateway
//! # Your providers (API keys read from the environment variables the file names):
//! cargo run --example gateway -- examples/gateway/gateway.toml
//! cargo run --example gateway -- --config examples/gateway/openai_anthropic.toml
//! ```
//!
//! Then:
//!
//! ```sh
//! curl -s localhost:8080/llm/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
//! curl -s localhost:8080/llm/health
//! curl -s localhost:8080/hello          # your own route
//! ```
//!
//! OpenAI clients take `http://127.0.0.1:8080/llm/v1` as their base URL.

use std::time::Duration;

use axum::Router;
use axum::routing::get;
use tower_failover::Config;
use tower_failover_gateway::{self as gateway, ServerConfig};

#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .init();

    // 1. The stack's configuration: a file, or simulated providers (kept alive in
    //    `_sims` while the app runs).
    //    The path may follow `--config`, as for the gateway's binary.
    let mut args = std::env::args().skip(1);
    let path = match args.next() {
        Some(flag) if flag == "--config" => Some(args.next().ok_or("--config needs a path")?),
        other => other,
    };
    let (config, _sims) = match path {
        Some(path) => (Config::from_file(path)?, None),
        None => {
            let sim = gateway::simulated().await?;
            (sim.config.clone(), Some(sim))
        }
    };

    // 2. The gateway: its router, and the handle for health and overrides.
    let llm = gateway::build(&config)?;
    let handle = llm.handle.clone();

    // 3. Your app: your routes, the gateway's under `/llm`. Add your own
    //    middleware (authentication, metrics) around either part here.
    let app = llm.map_router(|routes| {
        Router::new()
            .route("/hello", get(|| async { "hello from my app\n" }))
            .route(
                "/providers",
                get(move || {
                    let h = handle.clone();
                    async move { axum::Json(h.snapshot()) }
                }),
            )
            .nest("/llm", routes)
    });

    // 4. Serve it with the gateway's hardened server (timeouts, connection and
    //    in-flight limits, graceful drain, TCP_NODELAY), or with
    //    `axum::serve(listener, app.router)` and your own (then set TCP_NODELAY
    //    with `ListenerExt::tap_io`, or streamed answers stall ~40 ms an event).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
    tracing::info!("listening on http://{}", listener.local_addr()?);
    let mut server = ServerConfig::default();
    server.drain_timeout = Duration::from_secs(10);
    gateway::serve_with(listener, app, &server, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await?;
    Ok(())
}
