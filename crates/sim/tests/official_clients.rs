//! The official OpenAI and Anthropic Python SDKs accept the sims' responses.
//!
//! Runs `tests/official_clients.py` with `$SIM_PYTHON` (default `python3`) when
//! that interpreter can import both `openai` and `anthropic`; otherwise prints why
//! it skipped. To run it: `pip install openai anthropic` (a virtualenv is fine:
//! `SIM_PYTHON=/path/to/venv/bin/python cargo test -p tower-failover-sim`).
mod common;

use std::process::Command;

use common::*;
use tower_failover_sim::{Fault, Flavor, Sim};

fn python() -> String {
    std::env::var("SIM_PYTHON").unwrap_or_else(|_| "python3".into())
}

fn sdks_importable(py: &str) -> bool {
    Command::new(py)
        .args(["-c", "import openai, anthropic"])
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_python_sdks_accept_the_responses() {
    let py = python();
    if !sdks_importable(&py) {
        println!(
            "skipped: `{py}` cannot import the `openai` and `anthropic` packages \
             (pip install openai anthropic, or set SIM_PYTHON)"
        );
        return;
    }
    let oa = sim(Flavor::OpenAi).await;
    let an = sim(Flavor::Anthropic).await;
    let oa_down = Sim::builder(Flavor::OpenAi)
        .fault(Fault::Status(503))
        .start()
        .await
        .unwrap();
    let an_down = Sim::builder(Flavor::Anthropic)
        .fault(Fault::Status(529))
        .start()
        .await
        .unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/official_clients.py");
    let mut cmd = Command::new(&py);
    cmd.arg(script)
        .env("OA", oa.base_url())
        .env("OA_DOWN", oa_down.base_url())
        .env("AN", an.base_url())
        .env("AN_DOWN", an_down.base_url())
        // The SDKs must reach only the sims.
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .env("NO_PROXY", "127.0.0.1,localhost");
    let out = within(60, tokio::task::spawn_blocking(move || cmd.output()))
        .await
        .unwrap()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("official clients OK"), "{stdout}");
    assert!(oa.counters().ok() >= 5);
    assert!(an.counters().ok() >= 4);
    assert_eq!(oa_down.counters().status(503), 1);
    assert_eq!(an_down.counters().status(529), 1);
}
