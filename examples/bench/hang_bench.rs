//! A provider that goes silent under load: how many requests still reach it, and
//! how many callers fail.
//!
//! Run with:
//!
//! ```sh
//! cargo run --release --example hang_bench                       # defaults: ~25 s
//! cargo run --release --example hang_bench -- --no-detect        # hang detection off
//! cargo run --release --example hang_bench -- --no-detect --first-byte 120s   # as before issue 16
//! cargo run --release --example hang_bench -- --unstreamed --caller-deadline 130s
//! ```
//!
//! Two simulated OpenAI-compatible providers on loopback, a primary and a backup,
//! behind the stack [`Stack::from_config`](tower_failover::Stack::from_config)
//! builds with `router = "fallback"` and default settings otherwise. Callers arrive
//! at a fixed rate (100 per second, open loop: a slow stack does not slow the
//! arrivals), each with its own deadline (default 15 s, longer than the first-byte
//! timeout) and reading its whole answer, streamed by default. After a healthy
//! warm-up the primary is switched live to `Fault::Hang` (it accepts connections
//! and never answers) and stays so until the end.
//!
//! It prints a table on stderr and one JSON line on stdout: requests that reached
//! the primary after it went silent, how long until it was suspect and until its
//! circuit opened, callers that failed, and caller latency percentiles.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::time::{Instant, MissedTickBehavior};
use tower::ServiceExt;
use tower_failover::{Config, Stack};
use tower_failover_core::HealthEventKind;
use tower_failover_core::{CircuitState, parse_duration};
use tower_failover_sim::{Fault, FaultSpec, Flavor, Sim};

#[derive(Parser, Debug)]
#[command(about = "A provider that goes silent under load")]
struct Args {
    /// Callers per second.
    #[arg(long, default_value_t = 100)]
    rate: u32,
    /// Healthy warm-up before the primary goes silent.
    #[arg(long, default_value = "5s", value_parser = duration)]
    warmup: Duration,
    /// How long callers keep arriving after the primary went silent.
    #[arg(long, default_value = "15s", value_parser = duration)]
    silent: Duration,
    /// Each caller's own deadline.
    #[arg(long, default_value = "15s", value_parser = duration)]
    caller_deadline: Duration,
    /// Non-streamed requests (their first byte comes with the whole answer: the
    /// longer `first_byte_unstreamed` deadline applies).
    #[arg(long)]
    unstreamed: bool,
    /// Turn hang detection off (`[health] detect_hangs = false`).
    #[arg(long)]
    no_detect: bool,
    /// Override the providers' first-byte deadlines (both kinds).
    #[arg(long, value_parser = duration)]
    first_byte: Option<Duration>,
    /// The simulated providers' time to first token.
    #[arg(long, default_value = "50ms", value_parser = duration)]
    ttft: Duration,
}

fn duration(s: &str) -> Result<Duration, String> {
    parse_duration(s).map_err(|e| e.to_string())
}

fn millis(d: Duration) -> String {
    format!("{}ms", d.as_millis())
}

fn config(args: &Args, primary: &Sim, backup: &Sim) -> Config {
    let timeouts = match args.first_byte {
        Some(d) => format!(
            "timeouts = {{ first_byte = \"{0}\", first_byte_unstreamed = \"{0}\" }}",
            millis(d)
        ),
        None => String::new(),
    };
    let text = format!(
        r#"
        router = "fallback"

        [health]
        detect_hangs = {detect}

        [[providers]]
        name = "primary"
        model = "gpt-4o-mini"
        base_url = "{primary}/v1"
        priority = 0
        {timeouts}

        [[providers]]
        name = "backup"
        model = "gpt-4o-mini"
        base_url = "{backup}/v1"
        priority = 1
        {timeouts}
        "#,
        detect = !args.no_detect,
        primary = primary.base_url(),
        backup = backup.base_url(),
    );
    match Config::from_toml_str(&text) {
        Ok(c) => c,
        Err(e) => panic!("the benchmark's configuration is refused: {e}"),
    }
}

async fn sim(name: &str, seed: u64, ttft: Duration) -> Sim {
    match Sim::builder(Flavor::OpenAi)
        .name(name)
        .seed(seed)
        .ttft(ttft)
        .token_interval(Duration::from_millis(2))
        .start()
        .await
    {
        Ok(s) => s,
        Err(e) => panic!("cannot start the simulated provider: {e}"),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let args = Args::parse();
    let primary = sim("primary", 1, args.ttft).await;
    let backup = sim("backup", 2, args.ttft).await;
    let stack = match Stack::from_config(&config(&args, &primary, &backup)).and_then(|b| b.build())
    {
        Ok(s) => s,
        Err(e) => panic!("cannot build the stack: {e}"),
    };
    let body: &'static str = if args.unstreamed {
        r#"{"model":"gpt-4o-mini","max_tokens":16,"messages":[{"role":"user","content":"hello"}]}"#
    } else {
        r#"{"model":"gpt-4o-mini","stream":true,"max_tokens":16,"messages":[{"role":"user","content":"hello"}]}"#
    };

    // When the primary became suspect, and when its circuit opened.
    let start = Instant::now();
    let silent_at = start + args.warmup;
    let suspect_after = Arc::new(AtomicU64::new(u64::MAX));
    let open_after = Arc::new(AtomicU64::new(u64::MAX));
    let mut events = stack.handle().subscribe();
    let watcher = tokio::spawn({
        let (suspect_after, open_after) = (suspect_after.clone(), open_after.clone());
        async move {
            while let Ok(ev) = events.recv().await {
                if ev.provider.provider() != "primary" {
                    continue;
                }
                let after = Instant::now()
                    .saturating_duration_since(silent_at)
                    .as_millis() as u64;
                match ev.kind {
                    HealthEventKind::Suspect { suspect: true, .. } => {
                        let _ = suspect_after.compare_exchange(
                            u64::MAX,
                            after,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    HealthEventKind::CircuitChanged {
                        to: CircuitState::Open,
                        ..
                    } => {
                        let _ = open_after.compare_exchange(
                            u64::MAX,
                            after,
                            Ordering::Relaxed,
                            Ordering::Relaxed,
                        );
                    }
                    _ => {}
                }
            }
        }
    });

    let failed = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut tick = tokio::time::interval(Duration::from_secs(1) / args.rate.max(1));
    tick.set_missed_tick_behavior(MissedTickBehavior::Burst);
    let end = silent_at + args.silent;
    let mut callers = tokio::task::JoinSet::new();
    let mut before = None;
    let mut sent = 0u64;
    loop {
        let now = tick.tick().await;
        if now >= end {
            break;
        }
        if before.is_none() && now >= silent_at {
            before = Some(primary.counters().received);
            if let Err(e) = primary.set_faults([FaultSpec::always(Fault::Hang)]) {
                panic!("cannot switch the fault on: {e}");
            }
            eprintln!(
                "{:>6.1} s  primary goes silent",
                now.duration_since(start).as_secs_f64()
            );
        }
        sent += 1;
        let svc = stack.clone();
        let (failed, latencies) = (failed.clone(), latencies.clone());
        let deadline = args.caller_deadline;
        callers.spawn(async move {
            let began = Instant::now();
            let req = Request::post("http://gateway/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from_static(body.as_bytes())));
            let Ok(req) = req else {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            };
            let call = async move {
                let res = svc.oneshot(req).await.ok()?;
                if !res.status().is_success() {
                    return None;
                }
                res.into_body().collect().await.ok().map(drop)
            };
            match tokio::time::timeout(deadline, call).await {
                Ok(Some(())) => {
                    if let Ok(mut l) = latencies.lock() {
                        l.push(began.elapsed());
                    }
                }
                _ => {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }
    while callers.join_next().await.is_some() {}
    watcher.abort();

    let reached = primary.counters().received - before.unwrap_or(0);
    let failed = failed.load(Ordering::Relaxed);
    let mut lat = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    lat.sort_unstable();
    let ms = |a: &AtomicU64| match a.load(Ordering::Relaxed) {
        u64::MAX => None,
        v => Some(v),
    };
    let (p50, p99, max) = (
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        lat.last().copied().unwrap_or_default(),
    );
    eprintln!(
        "callers {sent} ({} req/s, {}), failed {failed}; reached the silent primary {reached}; \
         suspect after {:?} ms, circuit open after {:?} ms; latency p50 {} ms, p99 {} ms, max {} ms",
        args.rate,
        if args.unstreamed {
            "not streamed"
        } else {
            "streamed"
        },
        ms(&suspect_after),
        ms(&open_after),
        p50.as_millis(),
        p99.as_millis(),
        max.as_millis()
    );
    println!(
        "{}",
        serde_json::json!({
            "rate": args.rate,
            "streamed": !args.unstreamed,
            "detect_hangs": !args.no_detect,
            "first_byte_ms": args.first_byte.map(|d| d.as_millis() as u64),
            "caller_deadline_ms": args.caller_deadline.as_millis() as u64,
            "callers": sent,
            "failed": failed,
            "reached_silent_primary": reached,
            "suspect_after_ms": ms(&suspect_after),
            "circuit_open_after_ms": ms(&open_after),
            "latency_ms": { "p50": p50.as_millis() as u64, "p99": p99.as_millis() as u64, "max": max.as_millis() as u64 },
            "backup_received": backup.counters().received,
        })
    );
}
