//! The `tower-failover-gateway` binary as operators run it: no arguments (simulated
//! providers on loopback, said loudly), a configuration file, JSON logs, and a
//! graceful stop on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStderr, Command};
use tower_failover::sim::{Flavor, Sim};

const BIN: &str = env!("CARGO_BIN_EXE_tower-failover-gateway");
/// A guard against a hang, not a timing assertion.
const GUARD: Duration = Duration::from_secs(60);

fn gateway() -> Command {
    let mut cmd = Command::new(BIN);
    cmd.env("TOWER_FAILOVER_LISTEN", "127.0.0.1:0")
        .env("TOWER_FAILOVER_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        // CI exports it for the Redis tests; these gateways run alone.
        .env_remove("TOWER_FAILOVER_REDIS_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads JSON log lines until the "listening on" one; every line read so far and
/// the address.
async fn wait_listening(
    lines: &mut Lines<BufReader<ChildStderr>>,
) -> (Vec<serde_json::Value>, String) {
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(GUARD, lines.next_line())
            .await
            .expect("the gateway starts in time")
            .unwrap()
            .unwrap_or_else(|| panic!("the gateway exited early: {seen:#?}"));
        let v: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        let message = v["message"].as_str().unwrap_or("").to_owned();
        seen.push(v);
        if let Some(rest) = message.strip_prefix("listening on http://") {
            let addr = rest.split_whitespace().next().unwrap().to_owned();
            return (seen, addr);
        }
    }
}

/// One HTTP/1.1 request on its own connection; the whole answer as text.
async fn http(addr: &str, method: &str, path: &str, body: &str) -> String {
    http_with(addr, method, path, "", body).await
}

/// The same with more header lines (each ending in `\r\n`).
async fn http_with(addr: &str, method: &str, path: &str, headers: &str, body: &str) -> String {
    let mut conn = TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: gw\r\n{headers}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    conn.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(GUARD, conn.read_to_end(&mut out))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&out).into_owned()
}

async fn terminate(mut child: Child, lines: &mut Lines<BufReader<ChildStderr>>) -> Vec<String> {
    let pid = child.id().expect("still running").to_string();
    let killed = Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .await
        .unwrap();
    assert!(killed.success());
    let status = tokio::time::timeout(GUARD, child.wait())
        .await
        .expect("the gateway exits after SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
    let mut rest = Vec::new();
    while let Ok(Some(line)) = lines.next_line().await {
        rest.push(line);
    }
    rest
}

/// A simulated OpenAI provider serving `m`, and a configuration file (in a
/// directory of its own named after `tag`) with `sections` and one entry for it.
async fn upstream_and_file(tag: &str, sections: &str) -> (Sim, std::path::PathBuf) {
    let sim = Sim::builder(Flavor::OpenAi)
        .name("upstream")
        .models(["m"])
        .start()
        .await
        .unwrap();
    let dir = std::env::temp_dir().join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    let entry = format!(
        "[[providers]]\nname = \"upstream\"\nmodel = \"m\"\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"sk-test-0000\"\n",
        sim.base_url()
    );
    std::fs::write(&file, format!("{sections}\n{entry}")).unwrap();
    (sim, file)
}

const CHAT: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_arguments_it_serves_simulated_providers_and_says_so() {
    let mut child = gateway().spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (logs, addr) = wait_listening(&mut lines).await;
    assert!(addr.starts_with("127.0.0.1:"), "{addr}");
    let warning = logs
        .iter()
        .find(|l| l["message"].as_str().unwrap_or("").contains("SIMULATED"))
        .expect("a loud warning about the simulated providers");
    assert_eq!(warning["level"], "WARN");

    let live = http(&addr, "GET", "/livez", "").await;
    assert!(live.starts_with("HTTP/1.1 200"), "{live}");
    let ready = http(&addr, "GET", "/readyz", "").await;
    assert!(ready.starts_with("HTTP/1.1 200"), "{ready}");
    let answer = http(&addr, "POST", "/v1/chat/completions", CHAT).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("x-failover-provider: "), "{answer}");
    assert!(answer.contains("chat.completion"), "{answer}");

    // The container's health check.
    let probe = gateway()
        .args(["--probe", "--listen", &addr])
        .status()
        .await
        .unwrap();
    assert!(probe.success());

    let rest = terminate(child, &mut lines).await;
    let probe = gateway()
        .args(["--probe", "--listen", &addr])
        .status()
        .await
        .unwrap();
    assert!(!probe.success(), "nothing listens any more");
    assert!(
        rest.iter().any(|l| l.contains("drained")),
        "a graceful drain on SIGTERM: {rest:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_configuration_file_it_serves_its_providers() {
    let (sim, file) = upstream_and_file(
        "tfg-bin",
        r#"
        [server]
        header_read_timeout = "5s"
        max_in_flight = 64

        [log]
        format = "text"     # the environment says json, and wins
        "#,
    )
    .await;

    let mut child = gateway().arg("--config").arg(&file).spawn().unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (logs, addr) = wait_listening(&mut lines).await;
    assert!(
        !logs.iter().any(|l| l.to_string().contains("SIMULATED")),
        "{logs:#?}"
    );
    let answer = http(
        &addr,
        "POST",
        "/v1/chat/completions",
        r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        answer.contains("x-failover-provider: upstream/m"),
        "{answer}"
    );
    assert_eq!(sim.counters().received, 1);
    terminate(child, &mut lines).await;

    // `--check` validates without serving; a mistake names its field.
    let ok = gateway()
        .args(["--check", "--config"])
        .arg(&file)
        .status()
        .await
        .unwrap();
    assert!(ok.success());
    std::fs::write(&file, "[server]\nmax_connections = 0\n[[providers]]\nname = \"a\"\nmodel = \"m\"\nkind = \"openai\"\napi_key = \"k\"\n").unwrap();
    let bad = gateway()
        .args(["--check", "--config"])
        .arg(&file)
        .output()
        .await
        .unwrap();
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("server.max_connections"), "{err}");
    if let Some(dir) = file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// The body of `GET /health` of the gateway at `addr`.
async fn health(addr: &str) -> serde_json::Value {
    let answer = http(addr, "GET", "/health", "").await;
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
    // A chunked body: the JSON is the line that starts with `{`.
    let json = body
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON in {answer}"));
    serde_json::from_str(json).unwrap()
}

/// What `compose.yaml` promises: two gateway processes given one Redis
/// (`TOWER_FAILOVER_REDIS_URL`) share circuit state. Needs the Redis `.ci/run`
/// starts; skipped without it outside CI.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_redis_share_circuit_openings() {
    let Ok(redis) = std::env::var("TOWER_FAILOVER_REDIS_URL") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must provide TOWER_FAILOVER_REDIS_URL (.ci/run starts Redis)"
        );
        eprintln!("SKIPPED: set TOWER_FAILOVER_REDIS_URL to run against a Redis");
        return;
    };
    let primary = Sim::builder(Flavor::OpenAi)
        .name("primary")
        .models(["m"])
        .start()
        .await
        .unwrap();
    let backup = Sim::builder(Flavor::OpenAi)
        .name("backup")
        .models(["m"])
        .start()
        .await
        .unwrap();
    // Unique per run: the Redis outlives the test.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let dir = std::env::temp_dir().join(format!("tfg-replicas-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    let entry = |name: &str, url: &str, priority: u32| {
        format!(
            "[[providers]]\nname = \"{name}\"\nmodel = \"m\"\nkind = \"openai\"\nbase_url = \"{url}/v1\"\napi_key = \"sk-test\"\npriority = {priority}\n"
        )
    };
    std::fs::write(
        &file,
        format!(
            "router = \"fallback\"\n[circuit]\nconsecutive_failures = 2\ncooldown = \"5m\"\n\
             [redis]\nnamespace = \"replicas-{nanos}\"\nresync_interval = \"100ms\"\n{}{}",
            entry("primary", primary.base_url(), 0),
            entry("backup", backup.base_url(), 1),
        ),
    )
    .unwrap();

    let mut replicas = Vec::new();
    for _ in 0..2 {
        let mut child = gateway()
            .env("TOWER_FAILOVER_REDIS_URL", &redis)
            .arg("--config")
            .arg(&file)
            .spawn()
            .unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let (_, addr) = wait_listening(&mut lines).await;
        replicas.push((child, lines, addr));
    }
    let (a, b) = (replicas[0].2.clone(), replicas[1].2.clone());
    let circuit = |h: &serde_json::Value| {
        h["providers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["provider"] == "primary")
            .map(|p| p["circuit"].as_str().unwrap_or("").to_owned())
            .unwrap()
    };
    assert_eq!(circuit(&health(&b).await), "closed");

    // The primary fails; replica A's circuit for it opens (its callers are
    // served by the backup meanwhile).
    primary
        .set_faults([tower_failover::sim::FaultSpec::always(
            tower_failover::sim::Fault::Status(503),
        )])
        .unwrap();
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    for _ in 0..4 {
        let answer = http(&a, "POST", "/v1/chat/completions", chat).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    }
    assert_eq!(circuit(&health(&a).await), "open");

    // Replica B learns it through Redis, without a request of its own.
    let seen_by_b = tokio::time::timeout(GUARD, async {
        while circuit(&health(&b).await) != "open" {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(seen_by_b.is_ok(), "replica B sees the circuit A opened");
    let before = primary.counters().received;
    let answer = http(&b, "POST", "/v1/chat/completions", chat).await;
    assert!(answer.contains("x-failover-provider: backup/m"), "{answer}");
    assert_eq!(
        primary.counters().received,
        before,
        "B does not try the primary"
    );

    for (child, mut lines, _) in replicas {
        terminate(child, &mut lines).await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A caller key read from the environment variable the file names: requests
/// without it are refused, with it served, and the logs name the caller, never
/// the key. Without the variable the gateway does not start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn caller_keys_come_from_the_environment() {
    const KEY: &str = "sk-caller-from-env-0123456789";
    let (sim, file) = upstream_and_file(
        "tfg-bin-auth",
        r#"
        [[auth.keys]]
        name = "app"
        key_env = "TFG_TEST_CALLER_KEY"
        "#,
    )
    .await;
    let mut child = gateway()
        .arg("--config")
        .arg(&file)
        .env("TFG_TEST_CALLER_KEY", KEY)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let (logs, addr) = wait_listening(&mut lines).await;
    assert!(
        !logs
            .iter()
            .any(|l| l.to_string().contains("no caller keys")),
        "{logs:#?}"
    );
    let chat = r#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let refused = http(&addr, "POST", "/v1/chat/completions", chat).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let auth = format!("authorization: Bearer {KEY}\r\n");
    let served = http_with(&addr, "POST", "/v1/chat/completions", &auth, chat).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    let rest = terminate(child, &mut lines).await;
    assert!(
        rest.iter().any(|l| l.contains("\"caller\":\"app\"")),
        "the access log names the caller: {rest:#?}"
    );
    assert!(rest.iter().all(|l| !l.contains(KEY)), "{rest:#?}");
    assert_eq!(sim.counters().received, 1);

    // `--check` reads the keys too.
    let check = gateway()
        .args(["--check", "--config"])
        .arg(&file)
        .env("TFG_TEST_CALLER_KEY", KEY)
        .status()
        .await
        .unwrap();
    assert!(check.success());
    let check = gateway()
        .args(["--check", "--config"])
        .arg(&file)
        .env_remove("TFG_TEST_CALLER_KEY")
        .status()
        .await
        .unwrap();
    assert!(!check.success());

    // Without the variable: a clear error naming it, and no server.
    let out = gateway()
        .arg("--config")
        .arg(&file)
        .env_remove("TFG_TEST_CALLER_KEY")
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("auth.keys[0].key_env") && err.contains("TFG_TEST_CALLER_KEY"),
        "{err}"
    );
    if let Some(dir) = file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// `--check` refuses what starting would refuse: a provider's key variable that is
/// not set (it used to say "configuration ok" and the gateway then failed to start).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_reads_the_providers_keys_too() {
    let (_sim, file) = upstream_and_file("tfg-check-keys", "").await;
    let text = std::fs::read_to_string(&file).unwrap().replace(
        "api_key = \"sk-test-0000\"",
        "api_key_env = \"TFG_TEST_PROVIDER_KEY\"",
    );
    std::fs::write(&file, text).unwrap();
    let run = |key: Option<&str>| {
        let mut cmd = gateway();
        cmd.args(["--check", "--config"])
            .arg(&file)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match key {
            Some(k) => cmd.env("TFG_TEST_PROVIDER_KEY", k),
            None => cmd.env_remove("TFG_TEST_PROVIDER_KEY"),
        };
        cmd.output()
    };
    let ok = run(Some("sk-provider-0000")).await.unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert!(String::from_utf8_lossy(&ok.stdout).contains("configuration ok"));
    let refused = run(None).await.unwrap();
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("api_key_env") && err.contains("TFG_TEST_PROVIDER_KEY"),
        "{err}"
    );
    if let Some(dir) = file.parent() {
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A stop that comes right after the gateway says it listens (a supervisor's
/// restart) drains it: it exits cleanly and says so. The signal handlers are
/// installed before that line; they were installed only once the serve loop first
/// ran, and a SIGTERM in between ended the process by the signal's default action
/// (`signal: 15`, seen once in a CI run under load; the window is too short to hit
/// on purpose on an idle machine: this checks the contract, the fix closes the
/// window by construction).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_right_after_it_says_it_listens_drains_it() {
    for _ in 0..3 {
        let mut child = gateway().spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        wait_listening(&mut lines).await;
        let rest = terminate(child, &mut lines).await;
        assert!(
            rest.iter().any(|l| l.contains("shutdown signal received")),
            "{rest:#?}"
        );
    }
}
