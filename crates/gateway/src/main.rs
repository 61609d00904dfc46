//! An OpenAI-compatible LLM gateway with failover, on axum.
//!
//! Run with:
//!
//! ```sh
//! # No keys, no network: three simulated providers start in-process.
//! cargo run --example gateway
//! # Your providers (API keys read from the environment variables the file names):
//! cargo run --example gateway -- --config examples/gateway/gateway.toml --listen 127.0.0.1:8080
//! ```
//!
//! Then point any OpenAI client at `http://127.0.0.1:8080/v1`:
//!
//! ```sh
//! curl -s localhost:8080/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hello"}]}'
//! curl -sN localhost:8080/v1/chat/completions -H 'content-type: application/json' \
//!   -d '{"model":"gpt-4o-mini","stream":true,"messages":[{"role":"user","content":"Hello"}]}'
//! curl -s localhost:8080/v1/messages -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
//!   -d '{"model":"claude-haiku-4-5","max_tokens":100,"messages":[{"role":"user","content":"Hello"}]}'
//! curl -s localhost:8080/v1/embeddings -H 'content-type: application/json' \
//!   -d '{"model":"text-embedding-3-small","input":["failover"]}'
//! curl -s localhost:8080/v1/models
//! curl -s localhost:8080/health
//! curl -sN localhost:8080/health/events      # circuit changes, overrides, ramp steps as they happen
//! curl -s localhost:8080/health/force -d '{"provider":"openai","model":"gpt-4o-mini","state":"open"}'
//! ```
//!
//! With the simulated providers, cause an outage through a sim's admin API (its
//! address is printed at start) and watch `/health` and the answers' provider:
//!
//! ```sh
//! curl -s -X POST http://127.0.0.1:PORT/_sim/faults -d '{"kind":"status","status":503}'
//! curl -s -X DELETE http://127.0.0.1:PORT/_sim/faults
//! ```
//!
//! Logs go to stderr (`RUST_LOG=debug` for more). Ctrl-C (or SIGTERM) stops
//! accepting connections and drains in-flight requests for up to 30 seconds.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use tower_failover::Config;
use tower_failover_gateway as gateway;
use tracing_subscriber::EnvFilter;

/// An OpenAI-compatible LLM gateway with failover.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The stack's configuration (TOML). Without it, simulated providers are
    /// started in-process.
    #[arg(long)]
    config: Option<PathBuf>,
    /// How long in-flight requests may take to finish at shutdown, in seconds.
    #[arg(long, default_value_t = 30)]
    drain_secs: u64,
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Args::parse()).await {
        eprintln!("gateway: {e}");
        std::process::exit(1);
    }
}

async fn run(args: Args) -> Result<(), tower::BoxError> {
    // Keeps the simulated providers alive while the gateway runs.
    let (_sims, config) = match &args.config {
        Some(path) => (Vec::new(), Config::from_file(path)?),
        None => {
            let sim = gateway::simulated().await?;
            tracing::info!(
                "no --config given: serving from simulated providers (no API keys, no network)"
            );
            for (s, p) in sim.sims.iter().zip(&sim.config.providers) {
                tracing::info!(
                    provider = %p.name,
                    model = %p.model,
                    admin = %format!("http://{}/_sim/faults", s.addr()),
                    "simulated provider"
                );
            }
            (sim.sims, sim.config)
        }
    };
    for p in &config.providers {
        // Names only: never a key.
        tracing::info!(provider = %p.name, model = %p.model, "provider");
    }
    let gateway = gateway::build(&config)?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    tracing::info!(
        "listening on http://{} (OpenAI base URL: http://{}/v1)",
        listener.local_addr()?,
        listener.local_addr()?
    );
    gateway::serve(
        listener,
        gateway,
        shutdown_signal(),
        Duration::from_secs(args.drain_secs),
    )
    .await?;
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
