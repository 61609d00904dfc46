//! `rediss://`: two replicas share state through a redis-server that speaks only TLS,
//! with a CA and server certificate made here by rcgen and verified by rustls.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{RedisServer, eventually};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::time::Instant;
use tower_failover_core::{CircuitState, HealthConfig, Registry};
use tower_failover_redis::{FleetBudget, RedisConfig, RedisStore};

/// A directory of its own for this test's PEM files, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("tf-redis-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn write(&self, file: &str, contents: &str) -> String {
        let path = self.0.join(file);
        std::fs::write(&path, contents).unwrap();
        path.to_str().unwrap().to_owned()
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A CA, and a certificate for `localhost` and 127.0.0.1 signed by it, as PEM:
/// (ca, server cert, server key).
fn certificates(ca_name: &str) -> (String, String, String) {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, ca_name);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::from_params(&ca, &ca_key);

    let key = KeyPair::generate().unwrap();
    let mut leaf = CertificateParams::new(vec!["localhost".into(), "127.0.0.1".into()]).unwrap();
    leaf.distinguished_name
        .push(DnType::CommonName, "localhost");
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    let cert = leaf.signed_by(&key, &issuer).unwrap();
    (ca_cert.pem(), cert.pem(), key.serialize_pem())
}

/// Starts a TLS-only server, or prints why not and returns `None` (the test then
/// skips; in CI, where the Debian package has TLS, a failure to start is an error).
async fn tls_server(dir: &TempDir) -> Option<RedisServer> {
    let (ca, cert, key) = certificates("tower-failover-redis test CA");
    let ca = dir.write("ca.pem", &ca);
    let cert = dir.write("server.pem", &cert);
    let key = dir.write("server.key", &key);
    match RedisServer::start_tls(&cert, &key, &ca).await {
        Ok(s) => Some(s),
        Err(reason) => {
            if std::env::var_os("CI").is_some() {
                panic!("{reason}");
            }
            eprintln!("SKIPPED: {reason}");
            None
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_share_a_circuit_over_rediss_with_a_private_ca() {
    require_redis!();
    let dir = TempDir::new("tls-share");
    let Some(server) = tls_server(&dir).await else {
        return;
    };
    let url = format!("rediss://localhost:{}/", server.port);
    let ca = dir.path().join("ca.pem");
    let config = || {
        RedisConfig::new(url.clone())
            .namespace("tls")
            .tls_ca_file(&ca)
            .resync_interval(Duration::from_millis(100))
    };
    let [a, b] = [0, 1].map(|_| {
        Registry::with_store(
            RedisStore::start(config()).unwrap(),
            HealthConfig::default(),
        )
    });
    let ha = a.provider("openai", "gpt-4o");
    let hb = b.provider("openai", "gpt-4o");
    for r in [&a, &b] {
        assert!(
            eventually(Duration::from_secs(30), || r.store().status().connected).await,
            "no TLS connection: {:?}",
            r.store().status()
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(ha.transition(
        CircuitState::Closed,
        CircuitState::Open,
        Some(Instant::now() + Duration::from_secs(30))
    ));
    assert!(
        eventually(Duration::from_secs(30), || hb.circuit()
            == CircuitState::Open)
        .await,
        "the circuit opening never crossed the TLS connection"
    );

    // The fleet budget connects the same way.
    let budget = FleetBudget::connect(&config(), "tls", 1, Duration::from_secs(3600))
        .await
        .unwrap();
    assert!(budget.try_take(1).await.unwrap());
    assert!(!budget.try_take(1).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_certificate_from_an_unknown_ca_is_refused() {
    require_redis!();
    let dir = TempDir::new("tls-refuse");
    let Some(server) = tls_server(&dir).await else {
        return;
    };
    // Trust another CA than the one that signed the server's certificate.
    let (other_ca, _, _) = certificates("some other CA");
    let other = dir.write("other-ca.pem", &other_ca);
    let config = RedisConfig::new(format!("rediss://localhost:{}/", server.port))
        .namespace("tls")
        .tls_ca_file(other);
    let store = RedisStore::start_typed(config.clone()).unwrap();
    let registry = Registry::with_store(std::sync::Arc::new(store), HealthConfig::default());
    let _h = registry.provider("openai", "gpt-4o");
    // The verification failure is reported as a connection problem, and stays one.
    assert!(
        eventually(Duration::from_secs(30), || {
            let s = registry.store().status();
            !s.connected && s.detail.as_deref() != Some("connecting")
        })
        .await
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!registry.store().status().connected);
    assert!(
        FleetBudget::connect(&config, "tls", 1, Duration::from_secs(60))
            .await
            .is_err()
    );
}
