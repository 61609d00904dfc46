//! Redis as an untrusted neighbour: a raw connection on the same namespace writes
//! garbage, absurd numbers, huge strings, many keys and wrong types, and publishes junk
//! on the channel. The replicas keep serving, clamp or ignore what they read, and keep
//! their memory bounded. Each test is named after what it guards.

mod common;

use std::time::Duration;

use common::{RedisServer, eventually};
use redis::AsyncCommands;
use redis::aio::MultiplexedConnection;
use tokio::time::Instant;
use tower_failover_core::{CircuitState, HealthConfig, Registry, SharedUpdate};
use tower_failover_redis::{FleetBudget, RedisConfig, RedisStore};

const I64_MAX: i64 = i64::MAX;

fn config(server: &RedisServer, ns: &str) -> RedisConfig {
    let mut c = RedisConfig::new(server.url())
        .namespace(ns)
        .resync_interval(Duration::from_millis(100))
        .max_deadline(Duration::from_secs(60));
    c.usage_flush_interval = Duration::from_millis(100);
    c
}

fn replica(server: &RedisServer, ns: &str) -> (Registry, std::sync::Arc<RedisStore>) {
    let store = std::sync::Arc::new(RedisStore::start_typed(config(server, ns)).unwrap());
    let registry = Registry::with_store(store.clone(), HealthConfig::default());
    (registry, store)
}

async fn raw(server: &RedisServer) -> MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn connected(r: &Registry) -> bool {
    eventually(Duration::from_secs(30), || r.store().status().connected).await
}

/// How long the provider's quota group is still rate limited, if at all.
fn limited_for(h: &tower_failover_core::Health) -> Option<Duration> {
    h.quota()
        .limited_until()
        .map(|u| u.saturating_duration_since(Instant::now()))
        .filter(|d| !d.is_zero())
}

/// Polls a usage hash until it holds `expected` (or a generous guard passes); returns
/// what it last held (a field that is not an integer reads as -1).
async fn wait_usage(conn: &mut MultiplexedConnection, key: &str, expected: [i64; 3]) -> Vec<i64> {
    let mut got = Vec::new();
    for _ in 0..3000 {
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(key)
            .arg(&["prompt_tokens", "completion_tokens", "cost_micros"])
            .query_async(conn)
            .await
            .unwrap_or_default();
        got = raw
            .iter()
            .map(|v| v.as_deref().and_then(|v| v.parse().ok()).unwrap_or(-1))
            .collect();
        if got == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    got
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// An honest change made on `a` reaches `b`: the replicas still serve each other.
async fn still_shares(a: &Registry, b: &Registry) {
    let ha = a.provider("openai", "gpt-4o");
    let hb = b.provider("openai", "gpt-4o");
    let from = ha.circuit();
    assert!(ha.transition(
        from,
        CircuitState::Open,
        Some(Instant::now() + Duration::from_secs(30))
    ));
    assert!(
        eventually(Duration::from_secs(30), || hb.circuit()
            == CircuitState::Open)
        .await,
        "an honest circuit opening no longer reaches the other replica"
    );
    assert!(ha.transition(CircuitState::Open, CircuitState::Closed, None));
    assert!(
        eventually(Duration::from_secs(30), || hb.circuit()
            == CircuitState::Closed)
        .await,
        "an honest circuit closing no longer reaches the other replica"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn updates_for_fifty_thousand_made_up_providers_are_not_remembered() {
    require_redis!();
    let server = RedisServer::start().await;
    let (a, store_a) = replica(&server, "many");
    let (b, _store_b) = replica(&server, "many");
    let _ha = a.provider("openai", "gpt-4o");
    let _hb = b.provider("openai", "gpt-4o");
    assert!(connected(&a).await && connected(&b).await);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = store_a.remembered_keys();

    // A hostile writer publishes well-formed updates for 50 000 providers nobody
    // serves, and stores keys for them too (pipelined, so the test stays quick).
    let mut conn = raw(&server).await;
    let ts = now_ms();
    for chunk in 0..50 {
        let mut pipe = redis::pipe();
        for i in 0..1000 {
            let provider = format!("fake{chunk}/model{i}");
            let msg = format!(
                r#"{{"replica":"evil","ts_ms":{ts},"provider":"{provider}","update":{{"type":"circuit","state":"open","open_until_ms":{},"trips":3}}}}"#,
                ts + 30_000
            );
            pipe.publish("many:updates", &msg).ignore();
            pipe.set(format!("many:circuit:{provider}"), &msg).ignore();
        }
        let () = pipe.query_async(&mut conn).await.unwrap();
    }
    // Let the listener work through them, then prove it did: an honest update sent
    // after the flood arrives, so every junk message before it was processed.
    still_shares(&b, &a).await;
    let after = store_a.remembered_keys();
    println!("remembered keys: {before} before the flood, {after} after");
    assert!(
        after <= before + 4,
        "a replica remembered {after} keys after a flood of made-up providers (was {before})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn junk_on_the_channel_is_ignored_and_absurd_numbers_are_clamped() {
    require_redis!();
    let server = RedisServer::start().await;
    let (a, _sa) = replica(&server, "junk");
    let (b, _sb) = replica(&server, "junk");
    let ha = a.provider("openai", "gpt-4o");
    let _hb = b.provider("openai", "gpt-4o");
    assert!(connected(&a).await && connected(&b).await);
    tokio::time::sleep(Duration::from_millis(200)).await;

    let mut conn = raw(&server).await;
    let now = now_ms();
    let huge = "x".repeat(1 << 20);
    let junk: Vec<String> = vec![
        "not json".into(),
        String::new(),
        "\u{0}\u{1}\u{ff}".into(),
        huge.clone(),
        format!(r#"{{"replica":"evil","ts_ms":1,"provider":"openai/gpt-4o","update":{{"type":"ramp","step":1,"share_ppm":5,"pad":"{huge}"}}}}"#),
        r#"{"replica":"evil","ts_ms":-1,"provider":"openai/gpt-4o","update":{"type":"ramp","step":1,"share_ppm":5}}"#.into(),
        r#"{"replica":"evil","ts_ms":1e400,"provider":"openai/gpt-4o","update":{"type":"ramp","step":1,"share_ppm":5}}"#.into(),
        r#"{"replica":"evil","ts_ms":"soon","provider":"openai/gpt-4o","update":{"type":"ramp"}}"#.into(),
        r#"{"replica":"evil","ts_ms":5,"provider":["openai/gpt-4o"],"update":{"type":"ramp","step":1,"share_ppm":5}}"#.into(),
        r#"{"replica":"evil","ts_ms":5,"provider":"openai/gpt-4o","update":{"type":"nuke"}}"#.into(),
        r#"[1,2,3]"#.into(),
        "{".repeat(10_000),
        // Stamped far in the future: would outrank every honest write after it.
        format!(r#"{{"replica":"evil","ts_ms":{},"provider":"openai/gpt-4o","update":{{"type":"circuit","state":"open","open_until_ms":{},"trips":1}}}}"#, u64::MAX, now + 30_000),
        // A rate limit for a year: clamped to max_deadline (60 s here).
        format!(r#"{{"replica":"evil","ts_ms":{now},"provider":"openai/gpt-4o","update":{{"type":"rate_limited","group":"openai/gpt-4o","until_ms":{}}}}}"#, u64::MAX),
        // Absurd trips and ramp values: clamped.
        format!(r#"{{"replica":"evil","ts_ms":{now},"provider":"openai/gpt-4o","update":{{"type":"ramp","step":{},"share_ppm":{}}}}}"#, u32::MAX, u32::MAX),
    ];
    for j in &junk {
        let _: i64 = conn.publish("junk:updates", j).await.unwrap();
    }

    // The future-stamped opening was ignored; the rate limit was clamped to 60 s.
    assert!(
        eventually(Duration::from_secs(30), || limited_for(&ha).is_some()).await,
        "the (clamped) rate limit never arrived"
    );
    let left = limited_for(&ha).unwrap();
    assert!(
        left <= Duration::from_secs(60),
        "rate limit not clamped: {left:?}"
    );
    assert_eq!(
        ha.circuit(),
        CircuitState::Closed,
        "a future-stamped opening was applied"
    );
    assert!(a.store().status().connected);
    // Still serving each other, both ways.
    still_shares(&b, &a).await;
    still_shares(&a, &b).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_future_stamped_key_does_not_outrank_honest_writes() {
    require_redis!();
    let server = RedisServer::start().await;
    let mut conn = raw(&server).await;
    let now = now_ms();
    // Stamped a day ahead, open for "ever" (a year).
    let evil = format!(
        r#"{{"replica":"evil","ts_ms":{},"update":{{"type":"circuit","state":"open","open_until_ms":{},"trips":4000000000}}}}"#,
        now + 86_400_000,
        now + 365 * 86_400_000
    );
    let () = conn
        .set("future:circuit:openai/gpt-4o", &evil)
        .await
        .unwrap();
    let (a, _sa) = replica(&server, "future");
    let ha = a.provider("openai", "gpt-4o");
    assert!(connected(&a).await);
    // Several resyncs pass; the key is never believed.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(ha.circuit(), CircuitState::Closed);

    // An honest write replaces it in Redis.
    assert!(ha.transition(
        CircuitState::Closed,
        CircuitState::Open,
        Some(Instant::now() + Duration::from_secs(30))
    ));
    let mut replaced = false;
    for _ in 0..3000 {
        let v: Option<String> = conn.get("future:circuit:openai/gpt-4o").await.unwrap();
        if v.as_deref().is_some_and(|v| !v.contains("evil")) {
            replaced = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        replaced,
        "the future-stamped key kept outranking an honest write"
    );

    // And a circuit open "for ever" in Redis is clamped to max_deadline on read.
    let (b, _sb) = replica(&server, "future");
    let hb = b.provider("anthropic", "claude");
    let year = format!(
        r#"{{"replica":"evil","ts_ms":{},"update":{{"type":"circuit","state":"open","open_until_ms":{},"trips":9}}}}"#,
        now_ms() + 1000,
        u64::MAX
    );
    let () = conn
        .set("future:circuit:anthropic/claude", &year)
        .await
        .unwrap();
    let set_at = Instant::now();
    assert!(
        eventually(Duration::from_secs(30), || hb.circuit()
            == CircuitState::Open)
        .await
    );
    let until = hb.open_until().unwrap();
    assert!(
        until <= set_at + Duration::from_secs(62),
        "an open-for-ever circuit was not clamped: {:?}",
        until.saturating_duration_since(set_at)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrongly_typed_and_huge_keys_stall_neither_writer_nor_resync() {
    require_redis!();
    let server = RedisServer::start().await;
    let mut conn = raw(&server).await;
    let p = "openai/gpt-4o";
    let huge = "9".repeat(4 << 20);
    let () = redis::pipe()
        .hset(format!("types:circuit:{p}"), "f", "v")
        .ignore()
        .set(format!("types:ramp:{p}"), &huge)
        .ignore()
        .rpush(format!("types:ratelimit:{p}"), "1")
        .ignore()
        .sadd(format!("types:lease:probe:{p}"), "evil")
        .ignore()
        .set(format!("types:usage:{p}"), "not a hash")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();

    let (a, _sa) = replica(&server, "types");
    let (b, _sb) = replica(&server, "types");
    let ha = a.provider("openai", "gpt-4o");
    let hb = b.provider("openai", "gpt-4o");
    assert!(connected(&a).await && connected(&b).await);
    // Several resyncs read the garbage; the replica stays connected and unchanged.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(a.store().status().connected, "{:?}", a.store().status());
    assert_eq!(ha.circuit(), CircuitState::Closed);
    assert!(limited_for(&ha).is_none());

    // Writes over the garbage go through: circuit, rate limit, usage, probe lease.
    still_shares(&a, &b).await;
    let id = ha.id().clone();
    a.store().publish(
        &id,
        &SharedUpdate::RateLimitedUntil {
            group: p.into(),
            until: std::time::SystemTime::now() + Duration::from_secs(20),
        },
    );
    assert!(
        eventually(Duration::from_secs(30), || limited_for(&hb).is_some()).await,
        "a rate limit written over a list never reached the other replica"
    );
    a.store().publish(
        &id,
        &SharedUpdate::Usage {
            prompt_tokens: 7,
            completion_tokens: 8,
            cost_micros: 9,
        },
    );
    let usage = wait_usage(&mut conn, &format!("types:usage:{p}"), [7, 8, 9]).await;
    assert_eq!(
        usage,
        [7, 8, 9],
        "usage over a wrongly typed key was not written"
    );
    assert!(a.store().status().connected, "{:?}", a.store().status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_sums_saturate_at_i64_max_instead_of_failing_or_wrapping() {
    require_redis!();
    let server = RedisServer::start().await;
    let mut conn = raw(&server).await;
    let key = "sat:usage:openai/gpt-4o";
    let () = redis::pipe()
        .hset(key, "prompt_tokens", I64_MAX - 5)
        .ignore()
        .hset(key, "completion_tokens", "garbage")
        .ignore()
        .query_async(&mut conn)
        .await
        .unwrap();
    let (a, _sa) = replica(&server, "sat");
    let h = a.provider("openai", "gpt-4o");
    assert!(connected(&a).await);
    let id = h.id().clone();
    // Locally the sums saturate at u64::MAX; on the wire an increment is at most
    // i64::MAX; in Redis the field saturates at i64::MAX.
    for _ in 0..3 {
        a.store().publish(
            &id,
            &SharedUpdate::Usage {
                prompt_tokens: u64::MAX,
                completion_tokens: 10,
                cost_micros: u64::MAX,
            },
        );
    }
    let got = wait_usage(&mut conn, key, [I64_MAX, 30, I64_MAX]).await;
    assert_eq!(got, [I64_MAX, 30, I64_MAX]);
    // Later usage keeps it saturated, and the writer is still healthy.
    a.store().publish(
        &id,
        &SharedUpdate::Usage {
            prompt_tokens: 1,
            completion_tokens: 1,
            cost_micros: 1,
        },
    );
    assert!(
        eventually(Duration::from_secs(30), || {
            // Checked through the same connection below; here only the status.
            a.store().status().connected
        })
        .await
    );
    let got = wait_usage(&mut conn, key, [I64_MAX, 31, I64_MAX]).await;
    assert_eq!(got, [I64_MAX, 31, I64_MAX]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_budget_counter_near_i64_max_or_garbage_is_spent_not_an_error() {
    require_redis!();
    let server = RedisServer::start().await;
    let mut conn = raw(&server).await;
    let window = Duration::from_secs(3600);
    let slot = now_ms() / 3_600_000;
    // This window's slot and the next (in case the hour turns during the test).
    for s in [slot, slot + 1] {
        let () = conn
            .set(format!("budget:budget:near-max:{s}"), I64_MAX - 1)
            .await
            .unwrap();
        let () = conn
            .set(format!("budget:budget:garbage:{s}"), "lots")
            .await
            .unwrap();
        let () = conn
            .hset(format!("budget:budget:hash:{s}"), "f", "1")
            .await
            .unwrap();
    }
    let cfg = RedisConfig::new(server.url()).namespace("budget");
    for name in ["near-max", "garbage", "hash"] {
        let budget = FleetBudget::connect(&cfg, name, u64::MAX, window)
            .await
            .unwrap();
        assert!(!budget.try_take(10).await.unwrap(), "{name}");
        assert!(!budget.try_take(u64::MAX).await.unwrap(), "{name}");
    }
    // The near-max counter was not pushed over the edge.
    let v: i64 = conn
        .get(format!("budget:budget:near-max:{slot}"))
        .await
        .unwrap();
    assert_eq!(v, I64_MAX - 1);
    // A clean budget with a huge limit still works.
    let budget = FleetBudget::connect(&cfg, "clean", u64::MAX, window)
        .await
        .unwrap();
    assert!(budget.try_take(I64_MAX as u64).await.unwrap());
    assert!(!budget.try_take(1).await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_drained_for_a_failed_write_is_written_later() {
    require_redis!();
    let mut server = RedisServer::start().await;
    let (a, _sa) = replica(&server, "requeue");
    let h = a.provider("openai", "gpt-4o");
    assert!(connected(&a).await);
    let id = h.id().clone();
    let usage = |n: u64| SharedUpdate::Usage {
        prompt_tokens: n,
        completion_tokens: 2 * n,
        cost_micros: 3 * n,
    };
    a.store().publish(&id, &usage(1));
    let key = "requeue:usage:openai/gpt-4o";
    let mut conn = raw(&server).await;
    let got = wait_usage(&mut conn, key, [1, 2, 3]).await;
    assert_eq!(got, [1, 2, 3]);

    // Redis goes away; usage recorded meanwhile is drained by several failed flushes.
    server.kill();
    a.store().publish(&id, &usage(10));
    assert!(
        eventually(Duration::from_secs(30), || !a.store().status().connected).await,
        "the store never noticed Redis was gone"
    );
    // Flushes every 100 ms: these seconds see several failed attempts.
    tokio::time::sleep(Duration::from_secs(1)).await;
    a.store().publish(&id, &usage(100));
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Redis comes back empty (no persistence): what it gets is the usage since the
    // outage, every unit of it, merged.
    server.restart().await;
    let mut conn = raw(&server).await;
    let got = wait_usage(&mut conn, key, [110, 220, 330]).await;
    assert_eq!(
        got,
        [110, 220, 330],
        "usage drained during the outage was lost"
    );
}
