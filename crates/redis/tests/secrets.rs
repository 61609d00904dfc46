//! Passwords in every URL form the redis client accepts stay out of `Debug`, logs,
//! errors and the store status, while the store fails to connect (the moment it
//! reports most).

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use tower_failover_core::{HealthConfig, Registry};
use tower_failover_redis::{FleetBudget, RedisConfig, RedisStore, StateStore};

static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();

/// Every event of every level, from every crate, captured for inspection.
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || Capture(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        buf
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// (URL, the secret, a piece of the secret that must not show either). Nothing
/// listens at any of them.
const URLS: &[(&str, &str, &str)] = &[
    ("redis://app:s3cretA@127.0.0.1:1/0", "s3cretA", "s3cretA"),
    ("redis://:s3cretB@127.0.0.1:1", "s3cretB", "s3cretB"),
    ("redis://app:s3c@retC@127.0.0.1:1/", "s3c@retC", "retC"),
    ("redis://app:s3c%40retD@127.0.0.1:1/", "s3c%40retD", "retD"),
    ("rediss://app:s3c@retE@127.0.0.1:1/", "s3c@retE", "retE"),
    (
        "redis+unix:///nonexistent/redis.sock?db=1&pass=s3cretF",
        "s3cretF",
        "s3cretF",
    ),
    (
        "unix:///nonexistent/redis.sock?pass=s3c%40retG&db=0",
        "s3c%40retG",
        "retG",
    ),
    (
        "redis+unix:///nonexistent/redis.sock?pass=s3c@retH",
        "s3c@retH",
        "retH",
    ),
];

fn assert_hidden(what: &str, text: &str) {
    for (url, secret, piece) in URLS {
        assert!(
            !text.contains(secret) && !text.contains(piece),
            "{what} shows the password of {url}: {text}"
        );
    }
}

#[test]
fn passwords_in_every_url_form_stay_out_of_debug_logs_errors_and_status() {
    let logs = logs();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        for (url, _, _) in URLS {
            let config = RedisConfig::new(*url).command_timeout_for_tests();
            config.validate().unwrap_or_else(|e| panic!("{url}: {e}"));
            assert_hidden("RedisConfig Debug", &format!("{config:?}"));
            assert_hidden("redacted_url", &config.redacted_url());

            let store = Arc::new(RedisStore::start_typed(config.clone()).unwrap());
            assert_hidden("RedisStore Debug", &format!("{store:?}"));
            let registry = Registry::with_store(store.clone(), HealthConfig::default());
            let _h = registry.provider("openai", "gpt-4o");
            // Let the writer, listener and resync fail a few times each.
            let mut failed = false;
            for _ in 0..300 {
                let status = store.status();
                if !status.connected && status.detail.as_deref() != Some("connecting") {
                    failed = true;
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            assert!(failed, "{url}: the store never reported failing to connect");
            assert_hidden("store status", &format!("{:?}", store.status()));

            let err = FleetBudget::connect(&config, "b", 1, Duration::from_secs(1))
                .await
                .unwrap_err();
            assert_hidden("FleetBudget error", &format!("{err} {err:?}"));
        }
    });
    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("redis store unreachable"),
        "the failures were logged: {logs}"
    );
    // The URLs were logged, redacted (so the check below looked at them).
    assert!(
        logs.contains("app:***@127.0.0.1:1") && logs.contains("pass=***"),
        "{logs}"
    );
    assert_hidden("logs", &logs);
}

/// A short command timeout, so each unreachable URL fails fast.
trait ForTests {
    fn command_timeout_for_tests(self) -> Self;
}

impl ForTests for RedisConfig {
    fn command_timeout_for_tests(mut self) -> Self {
        self.command_timeout = Duration::from_millis(100);
        self
    }
}
