//! A real redis-server per test, on a free loopback port, so a test can kill and
//! restart it.

#![allow(dead_code, unreachable_pub)]

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub struct RedisServer {
    pub port: u16,
    child: Option<Child>,
    /// Extra arguments (TLS); with them, `port` is the TLS port and plain TCP is off.
    tls_args: Vec<String>,
}

/// Whether a redis-server binary is installed (CI installs it; see `.ci/run`).
pub fn available() -> bool {
    Command::new("redis-server")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Skips the calling test with a loud message when redis-server is missing, unless
/// `CI` is set, where its absence is an error.
#[macro_export]
macro_rules! require_redis {
    () => {
        if !common::available() {
            if std::env::var_os("CI").is_some() {
                panic!("redis-server is not installed; .ci/run installs it");
            }
            eprintln!("SKIPPED: redis-server is not installed (apt-get install redis-server)");
            return;
        }
    };
}

/// A loopback port nobody listens on now and that this process has not handed out
/// before. Tests run in parallel and some stop and restart their server on the same
/// port; without the second rule a neighbour could be handed that port in the gap and
/// two servers would race for it.
fn free_port() -> u16 {
    use std::collections::HashSet;
    use std::sync::Mutex;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    loop {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port");
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return port;
        }
    }
}

/// Whether the server answering on `port` is the process `pid` (its `INFO server`
/// names its `process_id`). Another process may have held the port when ours tried to
/// bind it; then ours exited and a bare connect would have reached the other one.
async fn answered_by(port: u16, pid: u32) -> bool {
    let ask = async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("INFO")
            .arg("server")
            .query_async::<String>(&mut conn)
            .await
            .ok()
    };
    // A guard against a listener that never answers, not a timing assumption: a
    // wrong or missing answer means "not ours", and the caller tries again.
    match tokio::time::timeout(Duration::from_secs(30), ask).await {
        Ok(Some(info)) => info
            .lines()
            .any(|l| l.trim() == format!("process_id:{pid}")),
        _ => false,
    }
}

impl RedisServer {
    pub async fn start() -> RedisServer {
        for _ in 0..20 {
            let mut s = RedisServer {
                port: free_port(),
                child: None,
                tls_args: Vec::new(),
            };
            if s.try_restart().await {
                return s;
            }
        }
        panic!("redis-server did not start on any of 20 free ports");
    }

    /// Starts a server that speaks only TLS, with the given PEM files and no client
    /// certificates. `Err` says why it could not (for example a redis-server built
    /// without TLS), so the caller can skip with that reason.
    pub async fn start_tls(cert: &str, key: &str, ca: &str) -> Result<RedisServer, String> {
        let port = free_port();
        let tls_args: Vec<String> = [
            "--port",
            "0",
            "--tls-port",
            &port.to_string(),
            "--tls-cert-file",
            cert,
            "--tls-key-file",
            key,
            "--tls-ca-cert-file",
            ca,
            "--tls-auth-clients",
            "no",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut child = Command::new("redis-server")
            .args(&tls_args)
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("redis-server did not start: {e}"))?;
        for _ in 0..1500 {
            if let Ok(Some(status)) = child.try_wait() {
                let mut out = String::new();
                if let Some(mut o) = child.stdout.take() {
                    let _ = std::io::Read::read_to_string(&mut o, &mut out);
                }
                return Err(format!(
                    "redis-server with TLS options exited ({status}); this build may lack TLS: {}",
                    out.lines().rev().take(3).collect::<Vec<_>>().join(" | ")
                ));
            }
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(RedisServer {
                    port,
                    child: Some(child),
                    tls_args,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        Err(format!(
            "redis-server with TLS did not listen on port {port}"
        ))
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts the server again on the same port (after [`kill`](Self::kill)).
    pub async fn restart(&mut self) {
        assert!(
            self.try_restart().await,
            "redis-server did not start on port {} (another process holds it?)",
            self.port
        );
    }

    /// Starts redis-server on `self.port` and waits until it is the one answering
    /// there; `false` if it exited (port taken) or never answered.
    async fn try_restart(&mut self) -> bool {
        assert!(self.tls_args.is_empty(), "restart is for plain servers");
        let mut child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let pid = child.id();
        // Generous: a loaded 2-core machine can take seconds to start a process.
        for _ in 0..1500 {
            if let Ok(Some(_)) = child.try_wait() {
                return false;
            }
            if answered_by(self.port, pid).await {
                self.child = Some(child);
                return true;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Polls `f` every 10 ms until it is true or `within` passes; returns whether it
/// became true.
pub async fn eventually(within: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    while tokio::time::Instant::now() < deadline {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f()
}
