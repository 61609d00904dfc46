//! The accept loop and connections: plain or TLS, HTTP/1.1 and HTTP/2, and the
//! connection-level faults (closed listener, TCP resets).

use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::task::JoinSet;

use crate::counters::CounterSet;
use crate::service;
use crate::sim::Shared;

/// How connections are accepted.
pub(crate) enum Acceptor {
    Plain,
    #[cfg(feature = "tls")]
    Tls(tokio_rustls::TlsAcceptor),
}

impl Acceptor {
    pub(crate) fn is_tls(&self) -> bool {
        !matches!(self, Acceptor::Plain)
    }
}

/// Per-connection control: lets a request (or a body) reset its connection.
#[derive(Default)]
pub(crate) struct ConnCtl {
    killed: AtomicBool,
    notify: Notify,
}

impl ConnCtl {
    /// Reset the connection: the socket is closed with `SO_LINGER = 0` (TCP RST).
    pub(crate) fn kill(&self) {
        self.killed.store(true, Ordering::Release);
        self.notify.notify_one();
    }

    async fn killed(&self) {
        self.notify.notified().await
    }
}

/// A TCP stream that is reset rather than closed when its connection was killed.
struct KillableStream {
    inner: TcpStream,
    ctl: Arc<ConnCtl>,
}

impl Drop for KillableStream {
    fn drop(&mut self) {
        if self.ctl.killed.load(Ordering::Acquire) {
            let _ = self.inner.set_zero_linger();
        }
    }
}

impl AsyncRead for KillableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for KillableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

async fn accept(listener: &Option<TcpListener>) -> io::Result<(TcpStream, std::net::SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

/// Serve until aborted (dropping the task aborts every connection too).
pub(crate) async fn run(listener: TcpListener, shared: Arc<Shared>, acceptor: Acceptor) {
    let acceptor = Arc::new(acceptor);
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let mut listener = Some(listener);
    let mut changed = shared.changed.subscribe();
    let mut conns = JoinSet::new();
    loop {
        let now = shared.elapsed();
        let (refusing, next) = shared.refusing(now);
        if refusing && listener.is_some() {
            tracing::debug!(name = %shared.cfg.name, "refuse: listener closed");
            listener = None;
        } else if !refusing && listener.is_none() {
            match TcpListener::bind(shared.addr).await {
                Ok(l) => {
                    tracing::debug!(name = %shared.cfg.name, "refuse over: listening again");
                    listener = Some(l);
                }
                Err(e) => {
                    tracing::warn!(name = %shared.cfg.name, error = %e, "cannot bind again; retrying");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            }
        }
        let wake = next.map(|n| shared.start + n);
        tokio::select! {
            biased;
            _ = changed.changed() => {}
            _ = sleep_until_opt(wake) => {}
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            res = accept(&listener) => match res {
                Ok((stream, _peer)) => {
                    CounterSet::inc(&shared.counters.connections);
                    let shared = Arc::clone(&shared);
                    let builder = Arc::clone(&builder);
                    let acceptor = Arc::clone(&acceptor);
                    conns.spawn(connection(stream, shared, builder, acceptor));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off briefly.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            },
        }
    }
}

async fn sleep_until_opt(t: Option<tokio::time::Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn connection(
    stream: TcpStream,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    acceptor: Arc<Acceptor>,
) {
    let _ = stream.set_nodelay(true);
    let ctl = Arc::new(ConnCtl::default());
    let io = KillableStream {
        inner: stream,
        ctl: Arc::clone(&ctl),
    };
    match &*acceptor {
        Acceptor::Plain => serve(TokioIo::new(io), shared, builder, ctl).await,
        #[cfg(feature = "tls")]
        Acceptor::Tls(tls) => {
            let handshake = tokio::time::timeout(Duration::from_secs(10), tls.accept(io));
            match handshake.await {
                Ok(Ok(tls_stream)) => serve(TokioIo::new(tls_stream), shared, builder, ctl).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!("tls handshake timed out"),
            }
        }
    }
}

async fn serve<I>(
    io: I,
    shared: Arc<Shared>,
    builder: Arc<auto::Builder<TokioExecutor>>,
    ctl: Arc<ConnCtl>,
) where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let svc_ctl = Arc::clone(&ctl);
    let svc = service_fn(move |req| {
        let shared = Arc::clone(&shared);
        let ctl = Arc::clone(&svc_ctl);
        async move { Ok::<_, Infallible>(service::handle(shared, ctl, req).await) }
    });
    let conn = builder.serve_connection(io, svc);
    tokio::select! {
        res = conn => {
            if let Err(e) = res {
                tracing::trace!(error = %e, "connection ended with an error");
            }
        }
        _ = ctl.killed() => {}
    }
}
