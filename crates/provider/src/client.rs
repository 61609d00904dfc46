//! The hyper client under every adapter: pooled, HTTP/1.1 and HTTP/2, rustls (ring).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http_body_util::Full;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use tokio::time::Sleep;
use tower_failover_core::BoxError;
use tower_failover_core::error::{Elapsed, TimeoutKind};
use tower_service::Service;

use crate::config::{HttpVersion, PoolConfig, RootStore, TlsConfig};
use crate::error::ConfigError;

/// The connector: TCP, then TLS when the scheme is `https`, under one deadline.
pub(crate) type Connector = ConnectTimeout<HttpsConnector<HttpConnector>>;

/// The pooled client every adapter sends through.
pub(crate) type HttpClient = Client<Connector, Full<Bytes>>;

/// Builds the rustls client configuration: ring provider, safe protocol versions,
/// the chosen roots plus any custom CA.
pub(crate) fn tls_config(tls: &TlsConfig) -> Result<rustls::ClientConfig, ConfigError> {
    let mut roots = RootCertStore::empty();
    if matches!(tls.roots, RootStore::Webpki | RootStore::Both) {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if matches!(tls.roots, RootStore::System | RootStore::Both) {
        let native = rustls_native_certs::load_native_certs();
        let (added, _ignored) = roots.add_parsable_certificates(native.certs);
        if added == 0 && tls.roots == RootStore::System {
            return Err(ConfigError::new(
                "tls.roots",
                "found no usable certificate in the system store",
            ));
        }
    }
    let mut add_pem = |pem: &[u8], field: &'static str| -> Result<(), ConfigError> {
        let mut n = 0;
        for cert in CertificateDer::pem_slice_iter(pem) {
            let cert =
                cert.map_err(|e| ConfigError::new(field, format!("is not valid PEM: {e}")))?;
            roots.add(cert).map_err(|e| {
                ConfigError::new(field, format!("holds an invalid CA certificate: {e}"))
            })?;
            n += 1;
        }
        if n == 0 {
            return Err(ConfigError::new(field, "holds no certificate"));
        }
        Ok(())
    };
    if let Some(pem) = &tls.ca_pem {
        add_pem(pem.as_bytes(), "tls.ca_pem")?;
    }
    if let Some(path) = &tls.ca_file {
        let pem = std::fs::read(path).map_err(|e| {
            ConfigError::new(
                "tls.ca_file",
                format!("cannot be read ({}): {e}", path.display()),
            )
        })?;
        add_pem(&pem, "tls.ca_file")?;
    }
    if roots.is_empty() {
        return Err(ConfigError::new(
            "tls",
            "trusts no root: choose roots or give a CA",
        ));
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::new("tls", e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Builds the pooled client.
pub(crate) fn build(
    tls: rustls::ClientConfig,
    http: HttpVersion,
    pool: &PoolConfig,
    connect_timeout: Duration,
) -> HttpClient {
    let mut tcp = HttpConnector::new();
    tcp.enforce_http(false);
    tcp.set_nodelay(true);
    let https = HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let https = match http {
        HttpVersion::Auto => https.enable_http1().enable_http2().wrap_connector(tcp),
        HttpVersion::Http1 => https.enable_http1().wrap_connector(tcp),
        HttpVersion::Http2 => https.enable_http2().wrap_connector(tcp),
    };
    let mut builder = Client::builder(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(pool.idle_timeout)
        .pool_max_idle_per_host(pool.max_idle_per_host);
    if http == HttpVersion::Http2 {
        builder.http2_only(true);
    }
    builder.build(ConnectTimeout {
        inner: https,
        timeout: connect_timeout,
    })
}

/// Puts one deadline on a connector (TCP connect and TLS handshake together), failing
/// with [`Elapsed`] of kind [`TimeoutKind::Connect`].
#[derive(Debug, Clone)]
pub(crate) struct ConnectTimeout<C> {
    inner: C,
    timeout: Duration,
}

impl<C> Service<Uri> for ConnectTimeout<C>
where
    C: Service<Uri>,
    C::Future: Unpin,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    type Future = ConnectFuture<C::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, dst: Uri) -> Self::Future {
        ConnectFuture {
            inner: self.inner.call(dst),
            sleep: Box::pin(tokio::time::sleep(self.timeout)),
            timeout: self.timeout,
        }
    }
}

/// The future of [`ConnectTimeout`]. `Unpin`, as hyper's client requires.
pub(crate) struct ConnectFuture<F> {
    inner: F,
    sleep: Pin<Box<Sleep>>,
    timeout: Duration,
}

impl<F, T, E> Future for ConnectFuture<F>
where
    F: Future<Output = Result<T, E>> + Unpin,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Poll::Ready(res) = Pin::new(&mut self.inner).poll(cx) {
            return Poll::Ready(res.map_err(Into::into));
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) => {
                Poll::Ready(Err(Elapsed::new(TimeoutKind::Connect, self.timeout).into()))
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webpki_roots_build() {
        assert!(tls_config(&TlsConfig::default()).is_ok());
    }

    #[test]
    fn no_roots_is_refused() {
        let err = tls_config(&TlsConfig {
            roots: RootStore::None,
            ..TlsConfig::default()
        })
        .unwrap_err();
        assert_eq!(err.field(), "tls");
    }

    #[test]
    fn bad_pem_is_refused() {
        let err = tls_config(&TlsConfig {
            roots: RootStore::None,
            ca_pem: Some("not a pem".into()),
            ca_file: None,
        })
        .unwrap_err();
        assert_eq!(err.field(), "tls.ca_pem");
        let err = tls_config(&TlsConfig {
            roots: RootStore::None,
            ca_pem: None,
            ca_file: Some("/nonexistent/ca.pem".into()),
        })
        .unwrap_err();
        assert_eq!(err.field(), "tls.ca_file");
    }

    #[tokio::test(start_paused = true)]
    async fn connect_deadline_is_typed() {
        let slow = tower::service_fn(|_: Uri| std::future::pending::<Result<(), BoxError>>());
        let mut svc = ConnectTimeout {
            inner: slow,
            timeout: Duration::from_secs(3),
        };
        let err = svc.call(Uri::from_static("http://x")).await.unwrap_err();
        let e = err.downcast_ref::<Elapsed>().unwrap();
        assert_eq!(e.kind(), TimeoutKind::Connect);
        assert_eq!(e.after(), Duration::from_secs(3));
    }
}
