//! HTTPS with a generated CA, over HTTP/1.1 and HTTP/2 (ALPN).
#![cfg(feature = "tls")]
mod common;

use std::sync::Arc;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower_failover_sim::{Flavor, Sim, tls};

#[tokio::test]
async fn https_with_a_self_signed_ca_over_h1_and_h2() {
    let certs = tls::self_signed().unwrap();
    assert!(certs.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
    let sim = Sim::builder(Flavor::Anthropic)
        .tls(certs.server_config.clone())
        .start()
        .await
        .unwrap();
    assert!(sim.base_url().starts_with("https://127.0.0.1:"));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(certs.ca_der.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client_config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();

    for (h2, want) in [
        (false, http::Version::HTTP_11),
        (true, http::Version::HTTP_2),
    ] {
        let b = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(client_config.clone())
            .https_only()
            .enable_http1();
        let connector = if h2 {
            b.enable_http2().build()
        } else {
            b.build()
        };
        let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
        for host in ["localhost", "127.0.0.1"] {
            let url = format!("https://{host}:{}/v1/messages", sim.addr().port());
            let req = http::Request::post(url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(anthropic_messages(true).to_string())))
                .unwrap();
            let res = within(5, client.request(req)).await.unwrap();
            assert_eq!(res.status(), 200);
            assert_eq!(res.version(), want);
            let body = res.into_body().collect().await.unwrap().to_bytes();
            assert!(body.ends_with(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        }
    }
    assert_eq!(sim.counters().ok(), 4);
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_fails() {
    let certs = tls::self_signed().unwrap();
    let sim = Sim::builder(Flavor::OpenAi)
        .tls(certs.server_config)
        .start()
        .await
        .unwrap();
    let other = tls::self_signed().unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(other.ca_der).unwrap();
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(cfg)
        .https_only()
        .enable_http1()
        .build();
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let req = http::Request::post(sim.completion_url())
        .body(Full::new(Bytes::from(openai_chat(false).to_string())))
        .unwrap();
    assert!(within(5, client.request(req)).await.is_err());
    assert_eq!(sim.counters().received, 0);
}
