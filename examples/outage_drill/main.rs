//! The outage drill: three simulated LLM providers, the tower-failover stack in front
//! of them, steady load, and a scripted timeline of outages, slowdowns, rate limits
//! and recoveries — with a live view, a per-phase report, JSON and an SVG timeline.
//!
//! Run with:
//!
//! ```text
//! cargo run --release --example outage_drill                 # about 70 seconds
//! cargo run --release --example outage_drill -- --quick      # about 17 seconds
//! cargo run --release --example outage_drill -- --quick --json drill.json --svg drill.svg
//! cargo run --release --example outage_drill -- --rps 100 --seed 7 --script examples/outage_drill/default.toml
//! ```
//!
//! The three providers are simulators from `tower-failover-sim` on loopback: an
//! OpenAI-compatible primary, an Anthropic-format secondary (reached through the
//! Anthropic adapter, which translates to and from the OpenAI shape), and a cheap
//! OpenAI-compatible tertiary. The default script (`examples/outage_drill/default.toml`)
//! runs seven phases: baseline; primary full outage; secondary time-to-first-token
//! degradation; a 429 storm on the tertiary; primary recovery and the gradual ramp;
//! a second recovery that flaps and must roll back; and last, a revoked primary key
//! (401) while the secondary's streams and bodies die mid-answer.
//!
//! A share of the requests (`--stream-share`, 25 % by default) is streamed and read
//! to its end; a stream that breaks or ends without its terminal event is a caller
//! error.
//!
//! The exit code is non-zero when the drill misses its targets: a caller error in a
//! phase where some provider is healthy, a request reaching a provider whose
//! circuit is open (outside half-open probes), or a caller seeing a provider's
//! rejection text or key material. See `docs/drill.md`.

mod leak;
mod load;
mod metrics;
mod report;
mod script;
mod stack;
mod view;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use tokio::time::Instant;
use tower_failover::redis::RedisConfig;
use tower_failover_core::Registry;
use tower_failover_sim::{Sim, SimHandle};

use crate::metrics::Recorder;
use crate::script::{PROVIDERS, Script};

/// The tower-failover outage drill.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Run every phase at the script's `quick_scale` (about 17 s instead of 68 s).
    #[arg(long)]
    quick: bool,
    /// Seed for the simulators and the stack's randomness.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Requests per second (default: the script's, 200).
    #[arg(long)]
    rps: Option<u32>,
    /// A custom script (TOML, like examples/outage_drill/default.toml).
    #[arg(long, value_name = "FILE")]
    script: Option<PathBuf>,
    /// Write the report as JSON to this file.
    #[arg(long, value_name = "PATH")]
    json: Option<PathBuf>,
    /// Draw the timeline as SVG to this file.
    #[arg(long, value_name = "PATH")]
    svg: Option<PathBuf>,
    /// Print plain lines even on a terminal.
    #[arg(long)]
    plain: bool,
    /// The fraction of requests sent with `"stream": true` (spread evenly; 0.25 is
    /// every 4th). Each streamed answer is read to its end.
    #[arg(long, default_value_t = 0.25, value_name = "FRACTION")]
    stream_share: f64,
    /// At most this many caller requests in flight (ticks beyond it are counted as errors).
    #[arg(long, default_value_t = 1000)]
    max_in_flight: u64,
    /// Run this many gateway replicas (each with its own stack), load spread round-robin.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Share health between the replicas through this Redis (e.g. redis://127.0.0.1:6379/).
    /// Without it, replicas learn of outages and 429s each on its own.
    #[arg(long, value_name = "URL")]
    redis: Option<String>,
}

/// Per-provider simulator settings: (time to first token, token interval).
const SIM_LATENCY: [(u64, u64); 3] = [(40, 1), (60, 1), (50, 1)];

async fn start_sims(seed: u64) -> Result<Vec<Sim>, Box<dyn std::error::Error>> {
    let mut sims = Vec::new();
    for (i, name) in PROVIDERS.iter().enumerate() {
        let (ttft, interval) = SIM_LATENCY[i];
        let sim = Sim::builder(stack::flavor(i))
            .name(*name)
            .seed(seed.wrapping_add(i as u64))
            .ttft(Duration::from_millis(ttft))
            .token_interval(Duration::from_millis(interval))
            .jitter(0.2)
            .reply_words(8, 16)
            .start()
            .await?;
        sims.push(sim);
    }
    Ok(sims)
}

/// Applies each phase's faults at its start, windows made relative to it.
async fn drive_phases(script: Script, sims: Vec<SimHandle>, recorder: Arc<Recorder>) {
    let start = recorder.start;
    let mut at = Duration::ZERO;
    for (i, phase) in script.phases.iter().enumerate() {
        tokio::time::sleep_until(start + at).await;
        recorder.set_phase(i);
        for (p, sim) in PROVIDERS.iter().zip(&sims) {
            let offset = sim.elapsed();
            let specs = phase.faults.get(*p).cloned().unwrap_or_default();
            let specs = specs.into_iter().map(|mut s| {
                s.from = s.from.map(|f| offset + f);
                s.until = s.until.map(|u| offset + u);
                s
            });
            if let Err(e) = sim.set_faults(specs) {
                eprintln!("warning: could not set the faults of {p}: {e}");
            }
        }
        at += phase.duration;
    }
}

/// Feeds ramp events (step, rollback, completion) to the recorder.
async fn follow_ramps(registry: Registry, recorder: Arc<Recorder>) {
    let mut events = registry.subscribe();
    loop {
        match events.recv().await {
            Ok(ev) => {
                if let Some(i) = PROVIDERS.iter().position(|p| *p == ev.provider.provider()) {
                    recorder.ramp_event(i, &ev.kind);
                }
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                eprintln!("warning: missed {n} health events");
            }
            Err(_) => return,
        }
    }
}

fn banner(script: &Script, args: &Args, rps: u32) -> String {
    let t = &script.timings;
    let mut s = format!(
        "tower-failover outage drill: {rps} req/s for {:.0} s ({:.0} % streamed), seed {}{}\n\nstack (per provider, innermost first; then across providers):\n",
        script.total().as_secs_f64(),
        args.stream_share * 100.0,
        args.seed,
        if args.quick { ", --quick" } else { "" }
    );
    s.push_str(&format!("  (from {})\n", stack::STACK_CONFIG_PATH));
    for (what, by) in stack::describe() {
        s.push_str(&format!("  {what:<18} {by}\n"));
    }
    s.push_str(&format!(
        "\nrecovery timings are COMPRESSED so a whole ramp fits in one phase: shares {:?}, {:.2} s per step, circuit cooldown {:.2} s (a real deployment ramps over minutes)\n\nphases:",
        t.ramp_shares,
        t.ramp_step.as_secs_f64(),
        t.circuit_cooldown.as_secs_f64()
    ));
    for p in &script.phases {
        s.push_str(&format!(" {} ({:.1} s);", p.name, p.duration.as_secs_f64()));
    }
    s.push('\n');
    s
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let script = Script::load(args.script.as_deref())?;
    let scale = if args.quick { script.quick_scale } else { 1.0 };
    let script = script.scaled(scale);
    let rps = args.rps.unwrap_or(script.rps);
    if rps == 0 {
        return Err("--rps must be at least 1".into());
    }
    if !(0.0..=1.0).contains(&args.stream_share) {
        return Err("--stream-share must be between 0 and 1".into());
    }
    let terminal = std::io::stdout().is_terminal() && !args.plain;
    println!("{}", banner(&script, &args, rps));

    let sims = start_sims(args.seed).await?;
    let handles: Vec<SimHandle> = sims.iter().map(Sim::handle).collect();
    if !(1..=16).contains(&args.replicas) {
        return Err("--replicas must be between 1 and 16".into());
    }
    // One stack per replica, each from the drill's configuration file: on Redis
    // when asked (one namespace per run, so no state from an earlier run leaks
    // in), in-process otherwise.
    let namespace = format!("drill-{}-{}", args.seed, std::process::id());
    if args.replicas > 1 {
        println!(
            "{} replicas, {}; the view and the open-circuit count follow replica 1",
            args.replicas,
            match &args.redis {
                Some(url) =>
                    format!("sharing health through Redis at {url} (namespace {namespace})"),
                None => "sharing nothing (give --redis URL to share health)".to_owned(),
            }
        );
    }
    let recorder = Recorder::new(script.phases.len());
    let mut routers = Vec::with_capacity(args.replicas);
    let mut healths = Vec::new();
    let mut registry = None;
    for k in 0..args.replicas {
        let redis = args
            .redis
            .as_ref()
            .map(|url| RedisConfig::new(url.clone()).namespace(namespace.clone()));
        let config = stack::config(&handles, &script.timings, args.seed ^ k as u64, redis)
            .map_err(|e| e.to_string())?;
        let (router, h, r) = stack::build(&config, &recorder).map_err(|e| e.to_string())?;
        if k == 0 {
            healths = h;
            registry = Some(r);
        }
        routers.push(router);
    }
    let registry = registry.ok_or("at least one replica")?;
    let router = stack::fleet(routers);

    let mut phases = Vec::new();
    let mut at = Duration::ZERO;
    for p in &script.phases {
        phases.push((p.name.clone(), at));
        at += p.duration;
    }
    let total = script.total();
    let background = [
        tokio::spawn(follow_ramps(registry.clone(), Arc::clone(&recorder))),
        tokio::spawn(metrics::sample_open_circuits(
            Arc::clone(&recorder),
            handles.clone(),
            healths.clone(),
        )),
        tokio::spawn(drive_phases(
            script.clone(),
            handles.clone(),
            Arc::clone(&recorder),
        )),
        tokio::spawn(
            view::View {
                recorder: Arc::clone(&recorder),
                healths: healths.clone(),
                phases,
                total,
                terminal,
            }
            .run(),
        ),
    ];
    let started = Instant::now();
    load::run(
        router,
        Arc::clone(&recorder),
        load::LoadConfig {
            rps,
            duration: total,
            deadline: script.timings.request_deadline,
            max_in_flight: args.max_in_flight,
            stream_share: args.stream_share,
        },
    )
    .await;
    for task in background {
        task.abort();
    }
    let wall = started.elapsed();
    drop(sims);

    let bucket = Duration::from_secs(1).mul_f64(scale);
    let report = report::Report::build(&script, &recorder, bucket);
    println!("\n{}", report.text());
    println!(
        "ran {:.1} s of load in {:.1} s",
        total.as_secs_f64(),
        wall.as_secs_f64()
    );
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_string_pretty(&report.json())? + "\n")
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("JSON report: {}", path.display());
    }
    if let Some(path) = &args.svg {
        report
            .svg(path)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        println!("SVG timeline: {}", path.display());
    }
    let misses = report.misses();
    if misses.is_empty() {
        println!(
            "targets met: no caller errors while a provider was healthy, no requests to open circuits, no provider rejection text or key material shown to a caller"
        );
        Ok(ExitCode::SUCCESS)
    } else {
        println!("TARGETS MISSED:");
        for m in &misses {
            println!("  {m}");
        }
        Ok(ExitCode::from(1))
    }
}
