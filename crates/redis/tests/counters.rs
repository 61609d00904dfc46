//! Counters per window shared by replicas: what one adds, the other reads; a
//! garbage counter reads as spent; with Redis gone, counts wait and are sent
//! when it is back.

mod common;

use std::time::Duration;

use common::{RedisServer, eventually};
use tower_failover_redis::{FleetCounters, MAX_COUNT, RedisConfig};

const GUARD: Duration = Duration::from_secs(20);

fn config(server: &RedisServer, namespace: &str) -> RedisConfig {
    let mut c = RedisConfig::new(server.url());
    c.namespace = namespace.to_owned();
    c.command_timeout = Duration::from_millis(500);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_count_together() {
    require_redis!();
    let mut server = RedisServer::start().await;
    let c = config(&server, "counters-a");
    let day = Duration::from_secs(86_400);
    let list = [("tokens", day), ("cost", day)];
    let a = FleetCounters::start(&c, &list, Duration::from_millis(50)).unwrap();
    let b = FleetCounters::start(&c, &list, Duration::from_millis(50)).unwrap();
    a.add(0, 70);
    assert_eq!(a.total(0), 70, "this replica's own counts are seen at once");
    b.add(0, 5);
    b.add(1, 9);
    assert!(eventually(GUARD, || a.total(0) == 75 && b.total(0) == 75).await);
    assert!(eventually(GUARD, || a.total(1) == 9).await);
    assert!(a.is_connected() && b.is_connected());
    assert!(a.window_left(0) <= day && a.window_left(0) > Duration::ZERO);
    // Out of range: nothing, no panic.
    a.add(7, 1);
    assert_eq!(a.total(7), 0);

    // Redis gone: counts go on locally and reach Redis once it is back.
    server.kill();
    a.add(0, 10);
    assert!(eventually(GUARD, || !a.is_connected()).await);
    assert_eq!(a.total(0), 85);
    server.restart().await;
    assert!(eventually(GUARD, || a.is_connected()).await);
    // The restarted Redis is empty: it holds what was sent since (at least the 10).
    assert!(
        eventually(GUARD, || b.total(0) >= 10).await,
        "{}",
        b.total(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_counter_reads_as_spent() {
    require_redis!();
    let server = RedisServer::start().await;
    let c = config(&server, "counters-g");
    let window = Duration::from_secs(3600);
    let a = FleetCounters::start(
        &c,
        &[("x", window), ("y", window)],
        Duration::from_millis(50),
    )
    .unwrap();
    // What a hostile or broken writer could leave in the current window's keys.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    let slot = now / 3_600_000;
    let _: () = redis::cmd("SET")
        .arg(format!("counters-g:counter:x:{slot}"))
        .arg("not a number")
        .query_async(&mut conn)
        .await
        .unwrap();
    let _: () = redis::cmd("SET")
        .arg(format!("counters-g:counter:y:{slot}"))
        .arg(i64::MAX.to_string())
        .query_async(&mut conn)
        .await
        .unwrap();
    a.add(0, 1);
    a.add(1, 1);
    assert!(eventually(GUARD, || a.total(0) >= MAX_COUNT && a.total(1) >= MAX_COUNT).await);
    // Garbage gets an expiry, so the next window starts clean.
    let ttl: i64 = redis::cmd("PTTL")
        .arg(format!("counters-g:counter:x:{slot}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 0, "{ttl}");
}
