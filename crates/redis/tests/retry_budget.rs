//! The fleet's retry budget: two replicas share one budget through a real Redis,
//! and each falls back to its own when Redis goes away.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use common::{RedisServer, eventually};
use tower::retry::budget::Budget;
use tower_failover_redis::{FleetRetryBudget, RedisConfig};

/// A local budget that allows `n` retries in all, counting what it is asked.
struct Local {
    left: AtomicU64,
}

impl Budget for Local {
    fn deposit(&self) {}

    fn withdraw(&self) -> bool {
        self.left
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1))
            .is_ok()
    }
}

fn local(n: u64) -> Arc<Local> {
    Arc::new(Local {
        left: AtomicU64::new(n),
    })
}

/// Retries as a fraction of the *fleet's* requests: replica A takes every request,
/// replica B none, and B may still retry its share of the fleet's budget; the two
/// together never exceed it. With Redis gone, each decides alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_one_retry_budget() {
    require_redis!();
    let mut server = RedisServer::start().await;
    let config = RedisConfig::new(server.url()).namespace("retry-budget-test");
    let start = |local| {
        FleetRetryBudget::start(&config, "retry", Duration::from_secs(10), 0, 0.2, local).unwrap()
    };
    let (a, b) = (start(local(0)), start(local(0)));
    // Generous guards: they only matter when something is broken.
    assert!(
        eventually(Duration::from_secs(30), || a.is_connected()
            && b.is_connected())
        .await
    );

    for _ in 0..100 {
        a.deposit();
    }
    assert!(
        eventually(Duration::from_secs(30), || b.fleet_counts().0 == 100).await,
        "B sees the fleet's 100 requests: {:?}",
        b.fleet_counts()
    );
    // 20 % of the fleet's 100 requests: B, which took none of them, may retry 20
    // times; then A, once it has read B's retries, may not retry at all.
    let by_b = (0..25).filter(|_| b.withdraw()).count();
    assert_eq!(by_b, 20, "B alone may take the fleet's whole allowance");
    assert!(eventually(Duration::from_secs(30), || a.fleet_counts().1 == 20).await);
    assert!(!a.withdraw(), "the fleet's budget is spent");

    // Redis goes away: each replica falls back to its local budget.
    server.kill();
    assert!(eventually(Duration::from_secs(30), || !a.is_connected()).await);
    assert!(!a.withdraw(), "the local budget of A allows nothing");
    let c = FleetRetryBudget::start(&config, "retry", Duration::from_secs(10), 0, 0.2, local(3))
        .unwrap();
    assert_eq!(
        (0..5).filter(|_| c.withdraw()).count(),
        3,
        "local decisions"
    );
}
