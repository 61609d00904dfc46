//! The fleet's Redis: a `redis-server` the soak starts on a free loopback port (and
//! kills and restarts mid-run), or one given by URL; and the few raw RESP commands
//! the soak needs to look at what the replicas wrote.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// A `redis-server` child process on `127.0.0.1:port`, without persistence.
pub(crate) struct Server {
    port: u16,
    child: Option<Child>,
}

impl Server {
    /// Starts one on a free port and waits until it answers `PING`.
    pub(crate) async fn spawn() -> Result<Server, String> {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free port: {e}"))?
            .port();
        let mut s = Server { port, child: None };
        s.start().await?;
        Ok(s)
    }

    pub(crate) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Starts (again) on the same port.
    pub(crate) async fn start(&mut self) -> Result<(), String> {
        let child = Command::new("redis-server")
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
            .map_err(|e| format!("cannot start redis-server (is it installed?): {e}"))?;
        self.child = Some(child);
        for _ in 0..100 {
            if ping(self.port) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("redis-server on port {} did not answer", self.port))
    }

    /// Kills it (SIGKILL: no goodbye to the clients) and waits for it to go.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ping(port: u16) -> bool {
    command(&format!("127.0.0.1:{port}"), &["PING"])
        .map(|r| r == Reply::Simple("PONG".into()))
        .unwrap_or(false)
}

/// A RESP reply, as much of it as the soak reads.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Simple(String),
    Bulk(Option<String>),
    Int(i64),
    Array(Vec<Reply>),
    Error(String),
}

/// Sends one command and reads its reply (blocking, 2 s timeouts).
pub(crate) fn command(addr: &str, args: &[&str]) -> Result<Reply, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    s.set_write_timeout(Some(Duration::from_secs(2)))
        .map_err(|e| e.to_string())?;
    let mut out = format!("*{}\r\n", args.len());
    for a in args {
        out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    s.write_all(out.as_bytes()).map_err(|e| e.to_string())?;
    read_reply(&mut BufReader::new(s))
}

fn read_reply(r: &mut impl BufRead) -> Result<Reply, String> {
    let mut line = String::new();
    r.read_line(&mut line).map_err(|e| e.to_string())?;
    let line = line.trim_end_matches(['\r', '\n']);
    let (tag, rest) = line.split_at_checked(1).ok_or("empty reply")?;
    match tag {
        "+" => Ok(Reply::Simple(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => rest.parse().map(Reply::Int).map_err(|e| format!("{e}")),
        "$" => {
            let n: i64 = rest.parse().map_err(|e| format!("{e}"))?;
            if n < 0 {
                return Ok(Reply::Bulk(None));
            }
            let mut buf = vec![0; n as usize + 2];
            r.read_exact(&mut buf).map_err(|e| e.to_string())?;
            buf.truncate(n as usize);
            Ok(Reply::Bulk(Some(
                String::from_utf8_lossy(&buf).into_owned(),
            )))
        }
        "*" => {
            let n: i64 = rest.parse().map_err(|e| format!("{e}"))?;
            (0..n.max(0))
                .map(|_| read_reply(r))
                .collect::<Result<_, _>>()
                .map(Reply::Array)
        }
        other => Err(format!("unexpected reply type {other:?}")),
    }
}

/// Every key under `namespace:`, sorted.
pub(crate) fn keys(addr: &str, namespace: &str) -> Result<Vec<String>, String> {
    match command(addr, &["KEYS", &format!("{namespace}:*")])? {
        Reply::Array(items) => {
            let mut v: Vec<String> = items
                .into_iter()
                .filter_map(|i| match i {
                    Reply::Bulk(Some(s)) => Some(s),
                    _ => None,
                })
                .collect();
            v.sort();
            Ok(v)
        }
        other => Err(format!("KEYS answered {other:?}")),
    }
}
