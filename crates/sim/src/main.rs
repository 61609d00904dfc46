//! `tower-failover-sim`: run simulated LLM providers from a script file.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tower_failover_sim::{Script, Sim};

const AFTER_HELP: &str = concat!(
    "SCRIPT FORMAT (TOML, or JSON when the file name ends in .json)

A script lists providers. Each provider has a name and a flavor (openai: POST
/v1/chat/completions; anthropic: POST /v1/messages; both: GET /v1/models), an
optional fixed port, a latency model, an optional quota, and a fault timeline.

Fault kinds (`kind`, with its parameter):
  status          status = 500 | 502 | 503 | 529 | ...   provider error body
  refuse          connection refused (listener closed while active for all requests;
                  with fraction < 1, picked requests get a TCP reset)
  reset           headers and half the body, then a TCP reset
  hang            never answers
  slowdown        factor = 8          time to first token and token interval x factor
  rate_limit      retry_after = 5, retry_after_format = seconds | http_date | absent
  malformed_json  broken JSON body / one broken SSE event
  error_object    200 with the provider's error object (an error event in a stream)
  truncate        after_events = 3    stream ends cleanly without [DONE]/message_stop
  refusal         refusal text (OpenAI json_schema: the `refusal` field)
  wrong_schema    content {\"wrong\": true} (breaks a requested JSON schema)
  not_json        prose where JSON was asked for
  empty_content   empty content
  length          cut short: finish_reason length / stop_reason max_tokens
  credential      status = 401 | 403  rejected key (OpenAI's 401 echoes a masked key)
  billing         shape = native | payment_required | insufficient_quota | credit_balance
                  402 / 429 insufficient_quota (no rate-limit headers) / Anthropic's 400
  stall           after_events = 1, after_bytes = 0   then silence, connection open
  reset_after     after_events = 1, after_bytes = 0   then a TCP reset
  drip            interval = \"2s\"   the answer one byte at a time
  html_page       200 with a proxy's HTML error page
  empty_body      200 with content-length 0
  absurd_headers  value = \"1e23\" (default: rotate 1e23, 2^64, -5, NaN, -0, inf,
                  obs-text), count = 200 filler headers: on an otherwise good answer
Conditions: from, until (sim clock, e.g. \"10s\"), fraction (0..1, seeded),
limit (at most N requests). The first matching non-slowdown fault decides; every
matching slowdown applies.

Live control on each provider's own port:
  GET /_sim/info   GET|POST|PUT|DELETE /_sim/faults   POST /_sim/faults/add
  GET|DELETE /_sim/counters   PUT /_sim/quota
  e.g. curl -X POST localhost:8081/_sim/faults -d '[{\"kind\":\"status\",\"status\":529}]'

EXAMPLE
",
    include_str!("example_script.toml")
);

/// Simulated OpenAI and Anthropic providers with scripted faults, for failover drills.
#[derive(Parser, Debug)]
#[command(name = "tower-failover-sim", version, after_help = AFTER_HELP)]
struct Args {
    /// The script file (TOML, or JSON if it ends in .json).
    #[arg(long, short)]
    script: PathBuf,
    /// Check the script and print it back as JSON, without starting anything.
    #[arg(long)]
    check: bool,
    /// Where to write the generated CA certificate (PEM) when a provider has
    /// `tls = true` (default: print it).
    #[arg(long)]
    ca_out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let script = match Script::load(&args.script) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    if args.check {
        match serde_json::to_string_pretty(&script) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
        return ExitCode::SUCCESS;
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(script, args.ca_out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(script: Script, ca_out: Option<PathBuf>) -> Result<(), Box<dyn std::error::Error>> {
    let sims: Vec<Sim> = if script.wants_tls() {
        start_tls(&script, ca_out).await?
    } else {
        script.start().await?
    };
    // Write errors (a closed pipe) are ignored: the sims keep serving.
    let mut out = std::io::stdout();
    for (sim, p) in sims.iter().zip(&script.providers) {
        let _ = writeln!(
            out,
            "{} {} {} ({} faults)",
            p.name,
            p.flavor,
            sim.base_url(),
            p.faults.len()
        );
    }
    let _ = writeln!(out, "ready; Ctrl-C to stop");
    let _ = out.flush();
    tokio::signal::ctrl_c().await?;
    for sim in sims {
        let c = sim.counters();
        let _ = writeln!(
            out,
            "{}: received {}, answered {}, by status {:?}, by fault {:?}",
            sim.handle().name(),
            c.received,
            c.answered,
            c.by_status,
            c.by_fault
        );
        sim.shutdown().await;
    }
    Ok(())
}

#[cfg(feature = "tls")]
async fn start_tls(
    script: &Script,
    ca_out: Option<PathBuf>,
) -> Result<Vec<Sim>, Box<dyn std::error::Error>> {
    let certs = tower_failover_sim::tls::self_signed()?;
    match ca_out {
        Some(path) => {
            std::fs::write(&path, &certs.ca_pem)?;
            println!("CA certificate written to {}", path.display());
        }
        None => print!(
            "CA certificate (trust it in your client):\n{}",
            certs.ca_pem
        ),
    }
    Ok(script.start_with_tls(certs.server_config).await?)
}

#[cfg(not(feature = "tls"))]
async fn start_tls(
    _script: &Script,
    _ca_out: Option<PathBuf>,
) -> Result<Vec<Sim>, Box<dyn std::error::Error>> {
    Err("a provider has tls = true but this binary was built without the `tls` feature".into())
}
