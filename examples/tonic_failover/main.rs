//! The failover layers around tonic client channels, between two local gRPC
//! backends: nothing in tower-failover is tied to LLM wire formats.
//!
//! Run with:
//!
//! ```sh
//! cargo run --example tonic_failover
//! ```
//!
//! Two backends, `a` (preferred) and `b`, serve `greeter.Greeter/SayHello` on
//! loopback. The client is an ordered fallback over one circuit-broken, observed
//! tonic `Channel` per backend, judging calls by `grpc-status`. The program stops
//! `a` (connections refused), then brings it back, then makes it answer
//! `UNAVAILABLE`, and prints who served each call and what the circuit breaker
//! did. Every call succeeds.

use std::time::Duration;

use tower_failover::Registry;
use tower_failover::circuit::CircuitConfig;
use tower_failover_examples::tonic_failover::{self as grpc, Backend, GreeterClient};

#[tokio::main]
async fn main() -> Result<(), tower::BoxError> {
    let mut a = Backend::start("a").await?;
    let b = Backend::start("b").await?;
    println!("backend a on {}, backend b on {}", a.url(), b.url());

    let registry = Registry::new();
    let circuit = CircuitConfig::default()
        .consecutive_failures(3)
        .cooldown(Duration::from_millis(500), Duration::from_secs(2))
        .half_open(1, 1);
    let mut client = grpc::client(&registry, &[("a", a.url()), ("b", b.url())], circuit)?;

    phase(&mut client, &registry, "both backends up", 3).await?;

    let addr = a.addr();
    a.stop().await;
    phase(
        &mut client,
        &registry,
        "backend a stopped (connection refused)",
        6,
    )
    .await?;

    let a = Backend::start_on("a", addr).await?;
    println!("\nbackend a is back; waiting out the circuit's cooldown");
    tokio::time::sleep(Duration::from_millis(700)).await;
    phase(&mut client, &registry, "backend a back", 3).await?;

    a.set_unavailable(true);
    phase(&mut client, &registry, "backend a answers UNAVAILABLE", 6).await?;

    println!("\nfinal health:");
    println!("{}", serde_json::to_string_pretty(&registry.snapshot())?);
    Ok(())
}

async fn phase(
    client: &mut GreeterClient,
    registry: &Registry,
    title: &str,
    calls: usize,
) -> Result<(), tower::BoxError> {
    println!("\n== {title}");
    for i in 0..calls {
        let reply = client.say_hello(&format!("caller {i}")).await?;
        let a = registry.provider("a", "greeter");
        println!(
            "  {:<22} served by {}   (circuit of a: {})",
            reply.message,
            reply.served_by,
            a.circuit()
        );
    }
    Ok(())
}
