//! `tower-failover-gateway`: an OpenAI- and Anthropic-compatible LLM gateway with
//! failover.
//!
//! ```sh
//! tower-failover-gateway                          # simulated providers, no keys, 127.0.0.1:8080
//! tower-failover-gateway --config gateway.toml    # your providers (keys from the variables it names)
//! tower-failover-gateway --config gateway.toml --check   # validate the file and exit
//! ```
//!
//! Environment overrides: `TOWER_FAILOVER_LISTEN`, `TOWER_FAILOVER_LOG_FORMAT`
//! (`text` or `json`), `TOWER_FAILOVER_REDIS_URL`, `RUST_LOG`. `--listen` wins
//! over both the file and the environment. Logs go to stderr. Ctrl-C or SIGTERM
//! stops accepting connections and drains requests in flight (`[server]
//! drain_timeout`, 30 s by default).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tower_failover_gateway::{self as gateway, GatewayConfig, log};

/// An OpenAI- and Anthropic-compatible LLM gateway with failover.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// The configuration file (TOML): the providers and the stack, plus
    /// `[auth]`, `[server]`, `[upstream]`, `[log]` and `[deferred]`. Without it, simulated providers
    /// start in-process.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Listen here (overrides `[server] listen` and `TOWER_FAILOVER_LISTEN`).
    #[arg(long, value_name = "ADDR")]
    listen: Option<SocketAddr>,
    /// Validate the configuration, the environment's overrides and the keys it
    /// names (callers' and providers'), as starting would, then exit.
    #[arg(long)]
    check: bool,
    /// Ask the gateway listening at the configured address for `GET /livez` and
    /// exit with success if it answers `200` (a container's health check; starts
    /// nothing).
    #[arg(long)]
    probe: bool,
}

/// See the `mimalloc` feature in this crate's `Cargo.toml`.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tower-failover-gateway: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), tower::BoxError> {
    if args.probe {
        return probe(&args).await;
    }
    // Keeps the simulated providers alive while the gateway runs.
    let (mut config, sims) = match &args.config {
        Some(path) => (GatewayConfig::from_file(path)?, None),
        None => {
            let sim = gateway::simulated().await?;
            (GatewayConfig::new(sim.config.clone()), Some(sim))
        }
    };
    config.apply_env(|k| std::env::var(k).ok())?;
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if args.check {
        config.auth.check_keys(|k| std::env::var(k).ok())?;
        // Everything starting would check: the providers' keys from the
        // environment, their URLs, every layer's settings. Nothing is served.
        drop(gateway::build_with(&config)?);
        println!(
            "configuration ok: {} provider entries",
            config.stack.providers.len()
        );
        return Ok(());
    }
    let _logs = log::init(&config.log);

    if let Some(sim) = &sims {
        tracing::warn!(
            "NO CONFIGURATION GIVEN: serving SIMULATED providers started in this process \
             (no real model answers; no API keys, no network). \
             Pass --config FILE for real providers."
        );
        for s in &sim.sims {
            tracing::warn!(
                provider = %s.handle().name(),
                faults = %format!("http://{}/_sim/faults", s.addr()),
                "simulated provider (POST a fault to its address to cause an outage)"
            );
        }
    }
    for p in &config.stack.providers {
        // Names only: never a key.
        tracing::info!(provider = %p.name, model = %p.model, "provider");
    }
    let built = gateway::build_with(&config)?;
    let listener = tokio::net::TcpListener::bind(config.server.listen).await?;
    let addr = listener.local_addr()?;
    // Before saying so: from then on a stop drains.
    let shutdown = shutdown_signal();
    tracing::info!(
        "listening on http://{addr} (OpenAI base URL: http://{addr}/v1; probes: /livez, /readyz)"
    );
    gateway::serve_with(listener, built, &config.server, shutdown).await?;
    drop(sims);
    Ok(())
}

/// `GET /livez` on the address this configuration listens on (loopback when it
/// listens on every interface).
async fn probe(args: &Args) -> Result<(), tower::BoxError> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let mut server = match &args.config {
        Some(path) => GatewayConfig::from_file(path)?.server,
        None => gateway::ServerConfig::default(),
    };
    if let Ok(v) = std::env::var(gateway::config::ENV_LISTEN) {
        server.listen = v.trim().parse().map_err(|e| {
            format!(
                "{}: {v:?} is not an address (host:port): {e}",
                gateway::config::ENV_LISTEN
            )
        })?;
    }
    let mut addr = args.listen.unwrap_or(server.listen);
    if addr.ip().is_unspecified() {
        addr.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
    }
    let answer = tokio::time::timeout(std::time::Duration::from_secs(3), async {
        let mut conn = tokio::net::TcpStream::connect(addr).await?;
        conn.write_all(b"GET /livez HTTP/1.1\r\nhost: probe\r\nconnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        conn.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head)
    })
    .await
    .map_err(|_| format!("no answer from {addr} in 3 s"))??;
    if &head_status(&answer) == b"200" {
        Ok(())
    } else {
        Err(format!("{addr}/livez answered {}", String::from_utf8_lossy(&answer)).into())
    }
}

/// The status code of an HTTP/1.1 status line's first 12 bytes.
fn head_status(head: &[u8; 12]) -> [u8; 3] {
    [head[9], head[10], head[11]]
}

/// Ctrl-C, or SIGTERM (what container runtimes and systemd send). The handlers are
/// installed when this is called, not when the future is first polled: it is
/// called before the gateway says it listens, so a signal that comes right after
/// (a supervisor's stop) drains the gateway instead of ending the process at once
/// by the signal's default action.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    let signals = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        )
    };
    async move {
        #[cfg(unix)]
        match signals {
            (Ok(mut term), Ok(mut int)) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = int.recv() => {}
                }
            }
            _ => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
        tracing::info!("shutdown signal received");
    }
}
