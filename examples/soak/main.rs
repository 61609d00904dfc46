//! The chaos soak: three to five simulated LLM providers of both wire formats under a
//! random, seeded schedule of every fault the simulator knows, overlapping; callers
//! sending streamed and non-streamed requests with bursts, some cancelling; and the
//! stack built by the facade from `examples/soak/soak.toml`, checked continuously.
//!
//! Run with:
//!
//! ```text
//! cargo run --release --example soak -- --duration 10m --seed 1
//! cargo run --release --example soak -- --duration 10m --seed 1 --replicas 3 --spawn-redis
//! cargo run --release --example soak -- --duration 10m --seed 1 --replicas 3 --redis redis://127.0.0.1:6379/
//! cargo run --example soak -- --duration 60s --seed 1 --json soak.json   # what CI runs
//! ```
//!
//! It prints one JSON report (also written to `--json`): the requests and how they
//! ended, the faults each simulator injected, heap bytes, tokio tasks and file
//! descriptors (start, peak, end, trend), and every invariant with its violations.
//! A violation prints the seed, the command that replays the schedule, and a minimal
//! timeline (the faults around it and the stack's events just before it). The exit
//! code is 0 when every invariant held, 1 when one did not, 2 when the soak could
//! not run. See `docs/soak.md`.

mod check;
mod load;
mod redis;
mod resources;
mod schedule;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use clap::Parser;
use serde_json::json;
use tokio::time::Instant;
use tower_failover::sim::{Sim, SimHandle};
use tower_failover::{CircuitState, Config, Failover, Health, Stack};

use crate::check::{Checker, FLEET_INVARIANTS, INVARIANTS, secs};
use crate::load::{Load, LoadConfig, Tally};
use crate::schedule::ProviderPlan;

/// The stack's configuration, beside this file.
const STACK_TOML: &str = include_str!("soak.toml");

/// The client settings of every provider entry the soak adds (compressed timeouts).
const TIMEOUTS: &str = r#"{ connect = "1s", first_byte = "2s", first_byte_unstreamed = "4s", idle = "1s", total = "6s" }"#;

/// The tower-failover chaos soak.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// How long the load runs: "60s", "10m", or seconds.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    duration: Duration,
    /// Seed of the providers, their fault schedule and the callers.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Simulated providers (3 to 5); default: 3 + seed % 3.
    #[arg(long)]
    providers: Option<usize>,
    /// Requests per second between bursts.
    #[arg(long, default_value_t = 25.0)]
    rps: f64,
    /// Share of the requests streamed.
    #[arg(long, default_value_t = 0.4)]
    stream_share: f64,
    /// Share of the callers that cancel (before the answer, or mid-stream).
    #[arg(long, default_value_t = 0.15)]
    cancel_share: f64,
    /// What a request may take beyond the stack's deadline before it counts as hung.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    slack: Duration,
    /// Stack replicas (each built from the same file), callers spread round-robin.
    #[arg(long, default_value_t = 1)]
    replicas: usize,
    /// Share state between the replicas through this Redis.
    #[arg(long, value_name = "URL", conflicts_with = "spawn_redis")]
    redis: Option<String>,
    /// Start a `redis-server` on a free port for the fleet, kill it at 40 % of the
    /// run and restart it at 55 %.
    #[arg(long)]
    spawn_redis: bool,
    /// Write the report here too.
    #[arg(long, value_name = "PATH")]
    json: Option<std::path::PathBuf>,
    /// Also print every sample of heap, tasks and descriptors in the report.
    #[arg(long)]
    samples: bool,
    /// No faults at all: the same load on healthy providers (a baseline for the
    /// resource figures).
    #[arg(long)]
    calm: bool,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    tower_failover::parse_duration(s).map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    match run(args).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("soak: {e}");
            ExitCode::from(2)
        }
    }
}

/// The TOML of the whole stack: the shipped file, one entry per simulator, Redis.
fn stack_toml(plans: &[ProviderPlan], sims: &[Sim], redis: Option<(&str, &str)>) -> String {
    let mut s = STACK_TOML.to_owned();
    for (p, sim) in plans.iter().zip(sims) {
        let base_url = match p.flavor {
            "openai" => format!("{}/v1", sim.base_url()),
            _ => sim.base_url().to_owned(),
        };
        s.push_str(&format!(
            "\n[[providers]]\nname = \"{}\"\nmodel = \"soak\"\nkind = \"{}\"\nbase_url = \"{base_url}\"\napi_key = \"sk-soak-{}-not-a-secret\"\ntimeouts = {TIMEOUTS}\n",
            p.name, p.flavor, p.name
        ));
    }
    if let Some((url, namespace)) = redis {
        s.push_str(&format!(
            "\n[redis]\nurl = \"{url}\"\nnamespace = \"{namespace}\"\nresync_interval = \"1s\"\n"
        ));
    }
    s
}

/// Requests that reach a provider whose circuit is open in every replica, counted
/// from outside: every 10 ms the simulator's completion counter is compared with
/// the circuit state each replica's [`Health`] shows. A request counts when the
/// simulator received it between two samples that both saw the circuit open (and
/// cooling down, so no half-open probe is due) in every replica, with no change of
/// state in between, open for at least `GRACE` (a request already on the wire when
/// it opened is not its fault).
async fn watch_open_circuits(
    checker: Arc<Checker>,
    sims: Vec<SimHandle>,
    healths: Vec<Vec<Health>>,
) {
    const GRACE: Duration = Duration::from_secs(1);
    let completions = |s: &SimHandle| {
        let c = s.counters();
        c.chat_completions + c.messages
    };
    let mut last: Vec<u64> = sims.iter().map(completions).collect();
    let mut open_since: Vec<Option<Instant>> = vec![None; sims.len()];
    let mut watches: Vec<Vec<_>> = healths
        .iter()
        .map(|r| r.iter().map(Health::watch_circuit).collect())
        .collect();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now();
        for (i, sim) in sims.iter().enumerate() {
            let got = completions(sim);
            let delta = got.saturating_sub(last[i]);
            last[i] = got;
            let mut changed = false;
            for w in watches.iter_mut() {
                if w[i].has_changed().unwrap_or(false) {
                    w[i].borrow_and_update();
                    changed = true;
                }
            }
            let open = healths.iter().all(|r| {
                r[i].circuit() == CircuitState::Open && r[i].open_until().is_some_and(|u| u > now)
            });
            let counted =
                open && !changed && open_since[i].is_some_and(|s| now.duration_since(s) >= GRACE);
            if counted && delta > 0 {
                checker.violation(
                    "no_traffic_to_open_circuits",
                    None,
                    format!(
                        "{} received {delta} request(s) while its circuit was open in every replica (open since {:.3} s)",
                        sim.name(),
                        checker.at(open_since[i].unwrap_or(now))
                    ),
                );
            }
            open_since[i] = match (open, changed, open_since[i]) {
                (true, false, Some(s)) => Some(s),
                (true, _, _) => Some(now),
                (false, _, _) => None,
            };
        }
    }
}

/// Records every replica's health events for the timelines.
async fn follow_events(checker: Arc<Checker>, replica: usize, stack: Failover) {
    let mut events = stack.handle().subscribe();
    loop {
        match events.recv().await {
            Ok(ev) => {
                let kind = serde_json::to_value(&ev.kind)
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                checker.event(Some(replica), format!("{} {kind}", ev.provider.provider()));
            }
            Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                checker.event(Some(replica), format!("({n} events missed)"));
            }
            Err(_) => return,
        }
    }
}

/// Samples heap, tasks and descriptors every second until `stop`.
async fn sample_resources(
    checker: Arc<Checker>,
    out: Arc<std::sync::Mutex<Vec<resources::Sample>>>,
) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let s = resources::sample(checker.start.elapsed());
        out.lock().unwrap_or_else(|e| e.into_inner()).push(s);
    }
}

/// What happened to Redis, in fleet mode.
#[derive(Debug, Default, serde::Serialize)]
struct RedisReport {
    url: String,
    namespace: String,
    spawned: bool,
    killed_at: Option<f64>,
    restarted_at: Option<f64>,
    /// Seconds from the restart until every replica said it was connected.
    reconnected_after: Option<f64>,
    keys_before_kill: usize,
    keys_after_resync: usize,
    /// Circuit and ramp keys present before the kill and missing after the resync.
    missing_after_resync: Vec<String>,
    note: Option<String>,
}

/// The keys of the namespace (blocking I/O, off the runtime's threads); none if
/// Redis cannot be read.
async fn keys(addr: &str, namespace: &str) -> Vec<String> {
    let (addr, namespace) = (addr.to_owned(), namespace.to_owned());
    tokio::task::spawn_blocking(move || redis::keys(&addr, &namespace))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default()
}

/// Kills Redis at 40 % of the run, restarts it at 55 %, and checks that every
/// replica reconnects and writes the shared state again.
async fn redis_outage(
    checker: Arc<Checker>,
    mut server: redis::Server,
    namespace: String,
    stacks: Vec<Failover>,
    duration: Duration,
) -> (RedisReport, redis::Server) {
    let addr = format!("127.0.0.1:{}", server.port());
    let mut report = RedisReport {
        url: server.url(),
        namespace: namespace.clone(),
        spawned: true,
        ..RedisReport::default()
    };
    let start = checker.start;
    tokio::time::sleep_until(start + duration.mul_f64(0.4)).await;
    // The versioned state (not the leases, which expire, nor usage, written as it comes).
    let (circuit, ramp) = (
        format!("{namespace}:circuit:"),
        format!("{namespace}:ramp:"),
    );
    let shared = |k: &String| k.starts_with(&circuit) || k.starts_with(&ramp);
    let before: Vec<String> = keys(&addr, &namespace)
        .await
        .into_iter()
        .filter(shared)
        .collect();
    report.keys_before_kill = before.len();
    server.kill();
    report.killed_at = Some(checker.now());
    checker.event(None, "redis: killed".into());
    tokio::time::sleep_until(start + duration.mul_f64(0.55)).await;
    if let Err(e) = server.start().await {
        checker.violation(
            "redis_resynchronised",
            None,
            format!("cannot restart Redis: {e}"),
        );
        return (report, server);
    }
    let restarted = Instant::now();
    report.restarted_at = Some(checker.now());
    checker.event(None, "redis: restarted (empty)".into());
    let bound = Duration::from_secs(30);
    loop {
        if stacks.iter().all(|s| s.handle().snapshot().store.connected) {
            report.reconnected_after = Some(secs(restarted.elapsed()));
            checker.event(None, "redis: every replica connected again".into());
            break;
        }
        if restarted.elapsed() > bound {
            checker.violation(
                "redis_resynchronised",
                None,
                format!(
                    "a replica was still disconnected {} s after Redis returned",
                    bound.as_secs()
                ),
            );
            return (report, server);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Two resync periods (1 s each in fleet mode) and some room.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let after = keys(&addr, &namespace).await;
    report.keys_after_resync = after.len();
    report.missing_after_resync = before.into_iter().filter(|k| !after.contains(k)).collect();
    if !report.missing_after_resync.is_empty() {
        checker.violation(
            "redis_resynchronised",
            None,
            format!(
                "shared state not written back after the restart: {:?}",
                report.missing_after_resync
            ),
        );
    }
    // The caller keeps the server alive until the soak ends (dropping it kills it).
    (report, server)
}

async fn run(args: Args) -> Result<bool, Box<dyn std::error::Error>> {
    let count = args.providers.unwrap_or(3 + (args.seed % 3) as usize);
    if !(3..=5).contains(&count) {
        return Err("--providers must be 3 to 5".into());
    }
    if args.replicas == 0 {
        return Err("--replicas must be at least 1".into());
    }
    let fleet = args.replicas > 1 || args.redis.is_some() || args.spawn_redis;
    if args.replicas > 1 && args.redis.is_none() && !args.spawn_redis {
        return Err(
            "several replicas share state through Redis: give --redis URL or --spawn-redis".into(),
        );
    }
    let mut plans = schedule::plan(args.seed, count, args.duration);
    if args.calm {
        for p in &mut plans {
            p.faults.clear();
        }
    }

    // The simulators, each tagging its words with its name.
    let mut sims = Vec::new();
    for (i, p) in plans.iter().enumerate() {
        sims.push(
            Sim::builder(p.wire)
                .name(p.name.clone())
                .tag(p.name.clone())
                .seed(args.seed.wrapping_mul(31).wrapping_add(i as u64))
                .ttft(Duration::from_millis(p.ttft_ms))
                .token_interval(Duration::from_millis(p.token_interval_ms))
                .jitter(0.2)
                .reply_words(8, 24)
                .start()
                .await?,
        );
    }

    // Redis, for a fleet.
    let namespace = format!("soak-{}-{}", args.seed, std::process::id());
    let server = if args.spawn_redis {
        Some(redis::Server::spawn().await?)
    } else {
        None
    };
    let redis_url = server
        .as_ref()
        .map(redis::Server::url)
        .or(args.redis.clone());
    let toml = stack_toml(
        &plans,
        &sims,
        redis_url.as_deref().map(|u| (u, namespace.as_str())),
    );
    let config = Config::from_toml_str(&toml)?;
    let deadline = config.deadline.unwrap_or(Duration::from_secs(60));
    let mut stacks = Vec::new();
    for _ in 0..args.replicas {
        stacks.push(Stack::from_config(&config)?.build()?);
    }
    if fleet {
        // Let every replica connect before the load starts.
        let t = Instant::now();
        while !stacks.iter().all(|s| s.handle().snapshot().store.connected)
            && t.elapsed() < Duration::from_secs(10)
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The fault schedule goes live, on each simulator's clock.
    let start = Instant::now();
    for (p, sim) in plans.iter().zip(&sims) {
        let offset = sim.handle().elapsed();
        sim.set_faults(p.faults.iter().map(|f| f.spec(offset)))?;
    }
    let settle = Duration::from_secs(20);
    let checker = Arc::new(Checker::new(start, plans.clone(), settle));
    let redis_outage_window = server.as_ref().map(|_| {
        (
            args.duration.as_secs_f64() * 0.4,
            args.duration.as_secs_f64() * 0.55,
        )
    });
    let load = Arc::new(Load {
        cfg: LoadConfig {
            seed: args.seed,
            rps: args.rps,
            duration: args.duration,
            stream_share: args.stream_share,
            cancel_share: args.cancel_share,
            deadline,
            slack: args.slack,
            settle,
            redis_outage: redis_outage_window,
        },
        checker: Arc::clone(&checker),
        plans: plans.clone(),
        tally: std::sync::Mutex::new(Tally::default()),
        in_flight: AtomicU64::new(0),
    });

    let mut background = tokio::task::JoinSet::new();
    background.spawn(watch_open_circuits(
        Arc::clone(&checker),
        sims.iter().map(Sim::handle).collect(),
        stacks.iter().map(|s| s.handle().providers()).collect(),
    ));
    for (r, s) in stacks.iter().enumerate() {
        background.spawn(follow_events(Arc::clone(&checker), r, s.clone()));
    }
    let samples = Arc::new(std::sync::Mutex::new(Vec::new()));
    background.spawn(sample_resources(Arc::clone(&checker), Arc::clone(&samples)));
    let outage = server.map(|server| {
        tokio::spawn(redis_outage(
            Arc::clone(&checker),
            server,
            namespace.clone(),
            stacks.clone(),
            args.duration,
        ))
    });

    eprintln!(
        "soak: seed {}, {} providers ({}), {} replica(s){}, {:.0} s at {} req/s with bursts",
        args.seed,
        count,
        plans
            .iter()
            .map(|p| format!("{} {}", p.name, p.flavor))
            .collect::<Vec<_>>()
            .join(", "),
        args.replicas,
        redis_url
            .as_deref()
            .map(|u| format!(" on {u}"))
            .unwrap_or_default(),
        args.duration.as_secs_f64(),
        args.rps
    );
    load::run(Arc::clone(&load), stacks.clone()).await;
    let load_ended = checker.now();

    // Drain: faults off, the pools' idle connections closed, then the end sample.
    for s in &sims {
        s.clear_faults();
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let end_sample = resources::sample(start.elapsed());
    let (redis_report, _server) = match outage {
        Some(task) => match task.await {
            Ok((report, server)) => (Some(report), Some(server)),
            Err(e) => return Err(format!("the Redis outage task failed: {e}").into()),
        },
        None => (
            redis_url.as_ref().map(|u| RedisReport {
                url: u.clone(),
                namespace: namespace.clone(),
                note: Some(
                    "not killed: the soak only kills a redis-server it started (--spawn-redis)"
                        .into(),
                ),
                ..RedisReport::default()
            }),
            None,
        ),
    };
    background.abort_all();

    // Resources.
    let samples = samples.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let warmup = (args.duration.as_secs_f64() * 0.25).clamp(10.0, 120.0);
    let after: Vec<&resources::Sample> = samples.iter().filter(|s| s.t >= warmup).collect();
    let heap = resources::judge(
        &after
            .iter()
            .map(|s| (s.t, s.heap_bytes))
            .collect::<Vec<_>>(),
        end_sample.heap_bytes,
        8 << 20,
    );
    let tasks = resources::judge(
        &after.iter().map(|s| (s.t, s.tasks)).collect::<Vec<_>>(),
        end_sample.tasks,
        384,
    );
    let fds = resources::judge(
        &after.iter().map(|s| (s.t, s.fds)).collect::<Vec<_>>(),
        end_sample.fds,
        256,
    );
    for (name, f) in [
        ("heap bytes", &heap),
        ("tasks", &tasks),
        ("descriptors", &fds),
    ] {
        if !f.flat {
            checker.violation(
                "resources_flat",
                None,
                format!(
                    "{name} grew: first third {} → last third {}, drained end {} (allowed {})",
                    f.first_third_median, f.last_third_median, f.end, f.limit
                ),
            );
        }
    }

    // Faults injected, as the simulators counted them.
    let providers: Vec<serde_json::Value> = plans
        .iter()
        .zip(&sims)
        .map(|(p, s)| {
            let c = s.counters();
            json!({
                "name": p.name,
                "flavor": p.flavor,
                "received": c.received,
                "completed": c.completed,
                "faulted": c.faulted(),
                "by_fault": c.by_fault,
                "scheduled_windows": p.faults.len(),
            })
        })
        .collect();
    let faults_injected: u64 = sims.iter().map(|s| s.counters().faulted()).sum();
    let mut kinds = std::collections::BTreeSet::new();
    for s in &sims {
        kinds.extend(s.counters().by_fault.keys().copied());
    }

    let counts = checker.counts();
    let mut invariants = serde_json::Map::new();
    let list = INVARIANTS.iter().chain(if fleet {
        FLEET_INVARIANTS.iter()
    } else {
        [].iter()
    });
    for (name, what) in list {
        let n = counts.get(name).copied().unwrap_or(0);
        invariants.insert(
            (*name).to_owned(),
            json!({"held": n == 0, "violations": n, "what": what}),
        );
    }
    let passed = counts.values().all(|&n| n == 0);
    let tally = load.tally.lock().unwrap_or_else(|e| e.into_inner());
    let replay = format!(
        "cargo run --release --example soak -- --duration {}s --seed {} --providers {count}{}",
        args.duration.as_secs(),
        args.seed,
        if fleet {
            format!(" --replicas {} --spawn-redis", args.replicas)
        } else {
            String::new()
        }
    );
    let violations = checker.kept();
    let mut report = json!({
        "passed": passed,
        "seed": args.seed,
        "replay": replay,
        "duration_s": secs(args.duration),
        "load_ended_s": load_ended,
        "providers": providers,
        "replicas": args.replicas,
        "redis": redis_report,
        "faults_injected": faults_injected,
        "fault_kinds_injected": kinds.len(),
        "fault_kinds_known": tower_failover::sim::FaultKind::ALL.len(),
        "requests": &*tally,
        "resources": {
            "warmup_s": warmup,
            "heap_bytes": heap,
            "tasks": tasks,
            "fds": fds,
        },
        "invariants": invariants,
        "violations": violations,
        "events_seen": checker.events_seen(),
        "schedule": plans,
    });
    if args.samples {
        report["samples"] = json!(samples);
    }
    let text = serde_json::to_string_pretty(&report)?;
    println!("{text}");
    if let Some(path) = &args.json {
        std::fs::write(path, &text)?;
    }
    if !passed {
        eprintln!(
            "\nsoak: FAILED (seed {}). Replay the schedule with:\n  {replay}",
            args.seed
        );
        for v in checker.kept().iter().take(5) {
            eprintln!("\n{} at {:.3} s: {}", v.invariant, v.at, v.detail);
            for line in &v.timeline {
                eprintln!("{line}");
            }
        }
    } else {
        eprintln!(
            "soak: every invariant held ({} requests, {} faults injected)",
            tally.requests, faults_injected
        );
    }
    Ok(passed)
}
