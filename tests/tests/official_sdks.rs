//! The official Python SDKs, unchanged, against the gateway example over
//! loopback, with simulated providers behind it and an outage of the primary in
//! the middle that the SDK must not see.
//!
//! Runs `official_sdks.py` (beside this file) with `$SIM_PYTHON` (default
//! `python3`). When that interpreter cannot import the `openai` and `anthropic`
//! packages the test prints why and skips, unless `CI` is set: then it fails, so
//! CI cannot pass without running it (`.ci/run` installs the SDKs pinned in
//! `.ci/sdk-requirements.txt` into `target/ci-venv`).

use std::process::Command;
use std::time::Duration;

use tokio::net::TcpListener;
use tower_failover::Config;
use tower_failover::sim::{Flavor, Sim};
use tower_failover_gateway as gateway;

fn python() -> String {
    std::env::var("SIM_PYTHON").unwrap_or_else(|_| "python3".into())
}

/// `Ok(())` when `py` imports both SDKs, else why not.
fn sdks_importable(py: &str) -> Result<(), String> {
    match Command::new(py)
        .args(["-c", "import openai, anthropic"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(String::from_utf8_lossy(&o.stderr)
            .lines()
            .last()
            .unwrap_or("no output")
            .to_owned()),
        Err(e) => Err(e.to_string()),
    }
}

/// The interpreter to run the script with, or `None` to skip (outside CI only).
fn interpreter() -> Option<String> {
    let py = python();
    match sdks_importable(&py) {
        Ok(()) => Some(py),
        Err(why) if std::env::var_os("CI").is_some() => panic!(
            "CI is set but `{py}` cannot import the official SDKs ({why}); \
             .ci/run installs them (SIM_PYTHON=target/ci-venv/bin/python)"
        ),
        Err(why) => {
            println!(
                "skipped: `{py}` cannot import the `openai` and `anthropic` packages ({why}); \
                 pip install -r .ci/sdk-requirements.txt, or set SIM_PYTHON"
            );
            None
        }
    }
}

async fn sim(flavor: Flavor, name: &str, seed: u64) -> Sim {
    Sim::builder(flavor)
        .name(name)
        .seed(seed)
        .ttft(Duration::from_millis(2))
        .token_interval(Duration::from_millis(1))
        .start()
        .await
        .expect("a sim starts")
}

/// The OpenAI-compatible primary first, the Anthropic backup (translated) next;
/// for embeddings, the primary first, another OpenAI-compatible sim next.
fn config(primary: &Sim, backup: &Sim, embed_backup: &Sim) -> Config {
    Config::from_toml_str(&format!(
        r#"
        router = "fallback"
        deadline = "20s"

        [circuit]
        consecutive_failures = 2
        cooldown = "30s"

        # Requests are routed by the model they ask for (both SDKs ask for
        # gpt-4o-mini); when its group is down the Anthropic model answers.
        [models."gpt-4o-mini"]
        fallbacks = ["claude-haiku-4-5"]

        [[providers]]
        name = "primary"
        model = "gpt-4o-mini"
        kind = "openai"
        base_url = "{}/v1"
        priority = 0

        [[providers]]
        name = "backup"
        model = "claude-haiku-4-5"
        kind = "anthropic"
        base_url = "{}"
        priority = 1

        [[providers]]
        name = "primary"
        model = "text-embedding-3-small"
        embeddings = true
        kind = "openai"
        base_url = "{}/v1"
        priority = 0

        [[providers]]
        name = "embed-backup"
        model = "text-embedding-3-small"
        embeddings = true
        kind = "openai"
        base_url = "{}/v1"
        priority = 1
        "#,
        primary.base_url(),
        backup.base_url(),
        primary.base_url(),
        embed_backup.base_url(),
    ))
    .expect("a valid configuration")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn official_sdks_through_the_gateway() {
    let Some(py) = interpreter() else { return };
    let primary = sim(Flavor::OpenAi, "primary", 1).await;
    let backup = sim(Flavor::Anthropic, "backup", 2).await;
    let embed_backup = sim(Flavor::OpenAi, "embed-backup", 3).await;
    let gw = gateway::build(&config(&primary, &backup, &embed_backup)).expect("the gateway builds");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(gateway::serve(
        listener,
        gw,
        async move {
            let _ = stopped.await;
        },
        Duration::from_secs(5),
    ));

    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/official_sdks.py");
    let mut cmd = Command::new(&py);
    cmd.arg(script)
        .env("GW", format!("http://{addr}"))
        .env("PRIMARY", primary.base_url())
        .env("BACKUP", backup.base_url())
        // The SDKs must reach only the gateway (and the sim's admin route).
        .env_remove("OPENAI_BASE_URL")
        .env_remove("ANTHROPIC_BASE_URL")
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY")
        .env("NO_PROXY", "127.0.0.1,localhost");
    // A generous guard against a hung interpreter, not a timing assertion.
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::task::spawn_blocking(move || cmd.output()),
    )
    .await
    .expect("the script finishes")
    .unwrap()
    .expect("the interpreter runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("through the gateway OK"), "{stdout}");

    // The primary saw the outage; the backup answered during it.
    assert!(primary.counters().status(503) >= 1);
    assert!(backup.counters().ok() >= 12);
    assert!(backup.counters().status(503) >= 1);
    assert!(embed_backup.counters().ok() >= 3);
    let _ = stop.send(());
    server.await.unwrap().unwrap();
}
