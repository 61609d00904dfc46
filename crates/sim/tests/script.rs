//! Script files and the binary.
mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use tower_failover_sim::{Fault, FaultSpec, Flavor, Script, SimError};

const EXAMPLE: &str = include_str!("../src/example_script.toml");

#[test]
fn the_help_example_parses() {
    let s = Script::from_toml(EXAMPLE).unwrap();
    assert_eq!(s.providers.len(), 2);
    let p = &s.providers[0];
    assert_eq!(
        (p.name.as_str(), p.flavor, p.port),
        ("primary", Flavor::OpenAi, 8081)
    );
    assert_eq!(p.ttft, Duration::from_millis(300));
    assert_eq!(p.faults.len(), 4);
    assert_eq!(
        p.faults[1],
        FaultSpec::new(Fault::Status(503)).window(Duration::from_secs(20), Duration::from_secs(50))
    );
    assert_eq!(s.providers[1].quota.requests_per_minute, 50);
    // JSON round trip.
    let json = serde_json::to_string(&s).unwrap();
    assert_eq!(Script::from_json(&json).unwrap(), s);
}

#[test]
fn bad_scripts_are_refused_with_the_field_named() {
    let err = |s: &str| Script::from_toml(s).unwrap_err().to_string();
    assert!(err("").contains("no providers"));
    assert!(err("[[providers]]\nname = \"a\"\nflavor = \"gemini\"").contains("gemini"));
    assert!(
        err("[[providers]]\nname = \"a\"\nflavor = \"openai\"\nttft = \"fast\"").contains("fast")
    );
    assert!(err("[[providers]]\nname = \"a\"\nflavor = \"openai\"\ncolour = 1").contains("colour"));
    let two = "[[providers]]\nname = \"a\"\nflavor = \"openai\"\n[[providers]]\nname = \"a\"\nflavor = \"anthropic\"";
    assert!(err(two).contains("`name`"));
    let bad_fault = "[[providers]]\nname = \"a\"\nflavor = \"openai\"\n[[providers.faults]]\nkind = \"hang\"\nfraction = -1";
    assert!(err(bad_fault).contains("fraction"));
    assert!(matches!(
        Script::load("/nonexistent/x.toml"),
        Err(SimError::Script(_))
    ));
}

#[tokio::test]
async fn a_script_starts_its_providers() {
    let script = Script::from_json(
        r#"{"providers": [
            {"name": "a", "flavor": "openai", "faults": [{"kind": "status", "status": 502}]},
            {"name": "b", "flavor": "anthropic", "ttft": 0.01, "echo": true}
        ]}"#,
    )
    .unwrap();
    let sims = script.start().await.unwrap();
    let c = client();
    let r = post(&c, &sims[0].completion_url(), &openai_chat(false)).await;
    assert_eq!(r.status, 502);
    assert_eq!(r.header("x-sim-name"), Some("a"));
    let r = post(&c, &sims[1].completion_url(), &anthropic_messages(false)).await;
    assert_eq!(r.status, 200);
    assert!(
        said(Flavor::Anthropic, &r, false)
            .unwrap()
            .text
            .starts_with("You said")
    );
}

#[test]
fn the_binary_explains_the_script_format() {
    let out = Command::new(env!("CARGO_BIN_EXE_tower-failover-sim"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "--script",
        "[[providers]]",
        "[[providers.faults]]",
        "retry_after_format",
        "/_sim/faults",
        "wrong_schema",
    ] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}

#[test]
fn the_binary_checks_scripts() {
    let dir = std::env::temp_dir().join(format!("sim-script-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        "[[providers]]\nname = \"x\"\nflavor = \"openai\"\njitter = 3",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tower-failover-sim"))
        .args(["--check", "--script"])
        .arg(&bad)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("jitter"));
    let good = dir.join("good.toml");
    std::fs::write(&good, EXAMPLE).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_tower-failover-sim"))
        .args(["--check", "--script"])
        .arg(&good)
        .output()
        .unwrap();
    assert!(out.status.success());
    let back = Script::from_json(&String::from_utf8(out.stdout).unwrap()).unwrap();
    assert_eq!(back, Script::from_toml(EXAMPLE).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_a_script() {
    let dir = std::env::temp_dir().join(format!("sim-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("drill.json");
    std::fs::write(
        &path,
        r#"{"providers": [{"name": "p", "flavor": "openai", "faults": [{"kind": "status", "status": 529, "limit": 1}]}]}"#,
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tower-failover-sim"))
        .arg("--script")
        .arg(&path)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let line = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        line
    });
    let line = within(10, line).await.unwrap();
    // "p openai http://127.0.0.1:PORT (1 faults)"
    let url = line.split_whitespace().nth(2).unwrap().to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{line}");
    let c = client();
    let chat = format!("{url}/v1/chat/completions");
    let first = within(5, post(&c, &chat, &openai_chat(false))).await.status;
    let second = within(5, post(&c, &chat, &openai_chat(false))).await.status;
    child.kill().unwrap();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!((first.as_u16(), second.as_u16()), (529, 200));
}
