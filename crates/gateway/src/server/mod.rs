//! The HTTP server in front of the router (`[server]`): timeouts, limits, and a
//! graceful drain, so that clients cannot hold the gateway's resources forever.
//!
//! [`serve_with`] accepts connections (HTTP/1.1, and HTTP/2 with prior
//! knowledge) and applies, with the defaults in parentheses:
//!
//! | setting | what happens |
//! | --- | --- |
//! | `header_read_timeout` (10 s) | a connection that does not finish a request's headers in time is closed (slow-loris); also the time a new connection has to send its first request |
//! | `body_read_timeout` (60 s) | a request body that has not fully arrived in time gets `408` and the connection is closed |
//! | `write_timeout` (60 s) | a client that stops reading (the answer cannot be written for this long, counted from the last byte that could) is disconnected, and the provider's stream behind its answer is dropped; a slow reader that keeps reading is never cut |
//! | `keep_alive_idle` (75 s) | a kept-alive connection with no request in flight is closed after this long (more than a load balancer's usual 60 s, so the balancer closes first) |
//! | `max_connections` (4096) | past it, a few more connections are answered `503` with `Retry-After` and closed; the rest are closed at once |
//! | `max_in_flight` (1024) | past it, requests get `503` with `Retry-After` at once (no queue); a streamed answer counts until its last byte |
//! | `http2_max_concurrent_streams` (100) | per HTTP/2 connection; resets and header lists are bounded too |
//! | `max_header_bytes` (64 KiB) | the largest request head (HTTP/1.1) or header list (HTTP/2) |
//! | `oversize_drain_bytes` (8 MiB) | a body over the limit (`max_request_bytes`) is read and discarded up to this much more before the `413` is sent, so the client is not cut off mid-upload and sees the answer |
//! | `retry_after` (1 s) | the `Retry-After` of a shed request |
//! | `drain_timeout` (30 s) | at shutdown: how long requests in flight may take to finish |
//!
//! `/livez` and `/readyz` are never shed, so probes tell "busy" from "down".
//! Errors are OpenAI-shaped JSON (Anthropic-shaped on `/v1/messages`).
//!
//! ```toml
//! [server]
//! listen = "0.0.0.0:8080"
//! header_read_timeout = "10s"
//! body_read_timeout = "60s"
//! write_timeout = "60s"
//! keep_alive_idle = "75s"
//! max_connections = 4096
//! max_in_flight = 1024
//! drain_timeout = "30s"
//! ```

mod conn;
mod request;

pub(crate) use request::error_answer;

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinSet;
use tower_failover::ConfigError;

use crate::Gateway;
use conn::{Activity, TimedIo};

/// How many connections past `max_connections` are answered `503` before being
/// closed; past these, new connections are closed at once.
const REFUSAL_SLOTS: usize = 64;

/// `[server]`: the gateway's HTTP server. See the [module documentation](self).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Where the binary listens. Default: `127.0.0.1:8080`
    /// (`TOWER_FAILOVER_LISTEN` overrides it).
    pub listen: SocketAddr,
    /// Time to send a request's headers. Default: 10 s.
    #[serde(with = "tower_failover::duration_serde")]
    pub header_read_timeout: Duration,
    /// Time to send a request's body, from the end of its headers. Default: 60 s.
    #[serde(with = "tower_failover::duration_serde")]
    pub body_read_timeout: Duration,
    /// How long writing an answer may wait for a client that does not read,
    /// from the last byte written. Default: 60 s.
    #[serde(with = "tower_failover::duration_serde")]
    pub write_timeout: Duration,
    /// How long an idle kept-alive connection stays open. Default: 75 s.
    #[serde(with = "tower_failover::duration_serde")]
    pub keep_alive_idle: Duration,
    /// Open connections at most. Default: 4096.
    pub max_connections: usize,
    /// Requests in flight at most (streams until their last byte). Default: 1024.
    pub max_in_flight: usize,
    /// The `Retry-After` of an answer shed past a limit. Default: 1 s.
    #[serde(with = "tower_failover::duration_serde")]
    pub retry_after: Duration,
    /// Concurrent streams per HTTP/2 connection. Default: 100.
    pub http2_max_concurrent_streams: u32,
    /// The largest request head or HTTP/2 header list. Default: 64 KiB.
    pub max_header_bytes: usize,
    /// How much of a too-large body is read and discarded before the `413`.
    /// Default: 8 MiB.
    pub oversize_drain_bytes: usize,
    /// How long requests in flight may take to finish at shutdown. Default: 30 s.
    #[serde(with = "tower_failover::duration_serde")]
    pub drain_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            write_timeout: Duration::from_secs(60),
            keep_alive_idle: Duration::from_secs(75),
            max_connections: 4096,
            max_in_flight: 1024,
            retry_after: Duration::from_secs(1),
            http2_max_concurrent_streams: 100,
            max_header_bytes: 64 << 10,
            oversize_drain_bytes: 8 << 20,
            drain_timeout: Duration::from_secs(30),
        }
    }
}

impl ServerConfig {
    /// Refuses values the server cannot run with, naming the field.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("header_read_timeout", self.header_read_timeout),
            ("body_read_timeout", self.body_read_timeout),
            ("write_timeout", self.write_timeout),
            ("keep_alive_idle", self.keep_alive_idle),
        ];
        for (field, d) in positive {
            if d.is_zero() {
                return Err(ConfigError::new(
                    format!("server.{field}"),
                    "must be longer than zero",
                ));
            }
        }
        let counts = [
            ("max_connections", self.max_connections),
            ("max_in_flight", self.max_in_flight),
            (
                "http2_max_concurrent_streams",
                self.http2_max_concurrent_streams as usize,
            ),
        ];
        for (field, n) in counts {
            if n == 0 {
                return Err(ConfigError::new(
                    format!("server.{field}"),
                    "must be at least 1",
                ));
            }
            if n > Semaphore::MAX_PERMITS {
                return Err(ConfigError::new(format!("server.{field}"), "is too large"));
            }
        }
        if self.max_header_bytes < 8192 || self.max_header_bytes > u32::MAX as usize {
            return Err(ConfigError::new(
                "server.max_header_bytes",
                "must be between 8 KiB and 4 GiB",
            ));
        }
        Ok(())
    }
}

/// Serves `gateway` on `listener` with the default [`ServerConfig`] but `drain`,
/// until `shutdown` completes (see [`serve_with`]).
pub async fn serve(
    listener: TcpListener,
    gateway: Gateway,
    shutdown: impl Future<Output = ()> + Send + 'static,
    drain: Duration,
) -> io::Result<()> {
    let config = ServerConfig {
        drain_timeout: drain,
        ..ServerConfig::default()
    };
    serve_with(listener, gateway, &config, shutdown).await
}

/// Serves `gateway` on `listener` under `config` until `shutdown` completes; then
/// stops accepting, reports not ready on `/readyz`, ends the event streams, asks
/// every connection to close after its requests in flight, and waits for them
/// (streamed answers included) for up to `config.drain_timeout`.
pub async fn serve_with(
    listener: TcpListener,
    gateway: Gateway,
    config: &ServerConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    config
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    if let Ok(addr) = listener.local_addr()
        && !addr.ip().is_loopback()
        && !gateway.auth_enabled
    {
        tracing::warn!(
            %addr,
            "!!! THIS GATEWAY IS OPEN: it listens beyond loopback and [auth] has no keys, so \
             anyone who can reach {addr} can spend your provider keys and force circuits open. \
             Add [[auth.keys]] (see the README, \"Caller keys\") unless a proxy in front \
             authenticates callers !!!"
        );
    }
    let ctx = Arc::new(request::Ctx::new(&gateway, config));
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let refusals = Arc::new(Semaphore::new(REFUSAL_SLOTS));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .header_read_timeout(None)
        .max_buf_size(config.max_header_bytes)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(config.http2_max_concurrent_streams)
        .max_header_list_size(config.max_header_bytes as u32)
        .max_pending_accept_reset_streams(20)
        .max_local_error_reset_streams(64)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let timeouts = conn::Timeouts {
        header: config.header_read_timeout,
        idle: config.keep_alive_idle,
        write: config.write_timeout,
    };

    let mut tasks = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while tasks.try_join_next().is_some() {}
        let (tcp, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) if only_that_connection(&e) => {
                    // A client that reset before it was accepted: the next one
                    // is taken at once (a pause here would hold every caller).
                    tracing::debug!(error = %e, "a connection failed before it was accepted");
                    continue;
                }
                Err(e) => {
                    // Out of file descriptors and the like: wait instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = tcp.set_nodelay(true);
        let Ok(permit) = connections.clone().try_acquire_owned() else {
            match refusals.clone().try_acquire_owned() {
                Ok(slot) => {
                    let ctx = ctx.clone();
                    tasks.spawn(async move {
                        request::refuse(tcp, &ctx).await;
                        drop(slot);
                    });
                }
                Err(_) => tracing::debug!(%peer, "over the connection limit: closed"),
            }
            continue;
        };
        let activity = Activity::new();
        let io = TokioIo::new(TimedIo::new(tcp, activity.clone(), timeouts));
        let builder = builder.clone();
        let ctx = ctx.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                request::handle(ctx.clone(), activity.clone(), req)
            });
            let conn = builder.serve_connection(io, service);
            let mut conn = std::pin::pin!(conn);
            let done = tokio::select! {
                done = conn.as_mut() => done,
                () = async { let _ = stop.wait_for(|s| *s).await; } => {
                    conn.as_mut().graceful_shutdown();
                    conn.await
                }
            };
            if let Err(e) = done {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
            drop(permit);
        });
    }

    drop(listener);
    tracing::info!(
        drain_s = config.drain_timeout.as_secs(),
        "shutting down: no new connections, draining in-flight requests"
    );
    gateway.closing.send_replace(true);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(config.drain_timeout, async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    match drained {
        Ok(()) => tracing::info!("drained; bye"),
        Err(_) => {
            tracing::warn!("drain time over; closing the remaining connections");
            tasks.abort_all();
        }
    }
    Ok(())
}

/// How long the accept loop waits after an error that is the process's own (out of
/// file descriptors, of memory), so that it does not spin while it lasts.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Whether an error from `accept` concerns only the connection being taken, not
/// the listener or the process: the client reset or aborted it while it waited in
/// the queue, or its network failed. Linux reports those pending errors from
/// `accept` itself (accept(2): "treat them like EAGAIN by retrying"), so the loop
/// goes on at once; waiting [`ACCEPT_BACKOFF`] on each would stall every caller
/// behind a client (a TCP health check, a scanner) that resets its connections.
fn only_that_connection(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    if matches!(
        e.kind(),
        ConnectionAborted
            | ConnectionReset
            | ConnectionRefused
            | Interrupted
            | WouldBlock
            | NetworkDown
            | NetworkUnreachable
            | HostUnreachable
    ) {
        return true;
    }
    // The rest of accept(2)'s list for TCP/IP, by number (Linux's): EPROTO,
    // ENOPROTOOPT, EHOSTDOWN, ENONET, EOPNOTSUPP.
    cfg!(target_os = "linux") && matches!(e.raw_os_error(), Some(71 | 92 | 112 | 64 | 95))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_reset_in_the_queue_is_not_waited_on_but_running_out_of_files_is() {
        for kind in [
            io::ErrorKind::ConnectionAborted,
            io::ErrorKind::ConnectionReset,
            io::ErrorKind::ConnectionRefused,
            io::ErrorKind::Interrupted,
            io::ErrorKind::HostUnreachable,
        ] {
            assert!(only_that_connection(&io::Error::from(kind)), "{kind:?}");
        }
        // Linux's numbers: ECONNABORTED, and EPROTO (no ErrorKind of its own).
        assert!(only_that_connection(&io::Error::from_raw_os_error(103)));
        if cfg!(target_os = "linux") {
            assert!(only_that_connection(&io::Error::from_raw_os_error(71)));
        }
        // EMFILE, ENFILE, ENOMEM, ENOBUFS: the process's own trouble, waited out.
        for errno in [24, 23, 12, 105] {
            assert!(
                !only_that_connection(&io::Error::from_raw_os_error(errno)),
                "errno {errno}"
            );
        }
        assert!(!only_that_connection(&io::Error::other("anything else")));
    }
}
