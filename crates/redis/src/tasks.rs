//! The store's background tasks: the writer (batches and writes updates), the
//! listener (applies other replicas' updates) and the resyncer (reads the shared
//! state back after a reconnect). They are spawned by [`RedisStore::start`] and
//! aborted when the store is dropped.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tower_failover_core::{CircuitState, Health};

#[cfg(doc)]
use crate::RedisStore;
use crate::shared::{Inner, KindName, Lease, MAX_REMEMBERED, Outgoing, add_usage, kind_of, lock};
use crate::wire::{
    MAX_HOLDER_LEN, MAX_INCREMENT, MAX_PAYLOAD, Message, Stored, Update, millis, now_ms,
    parse_deadline, parse_message, parse_stored,
};

/// The background writer: batches updates, writes them, keeps the latest state per
/// key until Redis has it.
pub(crate) async fn writer(inner: Arc<Inner>, mut rx: mpsc::Receiver<Outgoing>) {
    let mut conn: Option<ConnectionManager> = None;
    let mut pending: HashMap<String, Outgoing> = HashMap::new();
    let mut flush = tokio::time::interval(inner.config.usage_flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backoff = Duration::from_millis(100);
    loop {
        tokio::select! {
            msg = rx.recv() => match msg {
                Some(m) => merge(&inner, &mut pending, m),
                None => return,
            },
            _ = flush.tick() => {}
        }
        while let Ok(m) = rx.try_recv() {
            merge(&inner, &mut pending, m);
        }
        if inner.resend.swap(false, Ordering::AcqRel) {
            // Newer updates already pending win; the script keeps a newer stored one.
            for (key, m) in lock(&inner.latest).iter() {
                pending.entry(key.clone()).or_insert_with(|| m.clone());
            }
        }
        let has_usage = !lock(&inner.usage).is_empty();
        if pending.is_empty() && !has_usage {
            continue;
        }
        if conn.is_none() {
            conn = inner.connect().await;
        }
        let Some(c) = conn.as_mut() else {
            // Usage stays where it is, merged with newer usage, until Redis is back.
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            continue;
        };
        match write_batch(&inner, c, &mut pending).await {
            Ok(()) => {
                backoff = Duration::from_millis(100);
                inner.set_connected(true, None);
            }
            Err(e) => {
                inner.set_connected(false, Some(kind_of(&e)));
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Writes every pending update, then the usage accumulated so far. Stops at the first
/// connection error, keeping what was not written: pending updates stay pending, and
/// drained usage goes back into the sums (merged with any usage added meanwhile), to
/// be written on the next attempt. A command Redis refuses is dropped with a warning
/// rather than retried forever.
async fn write_batch(
    inner: &Inner,
    c: &mut ConnectionManager,
    pending: &mut HashMap<String, Outgoing>,
) -> redis::RedisResult<()> {
    let keys: Vec<String> = pending.keys().cloned().collect();
    for key in keys {
        let Some(item) = pending.get(&key) else {
            continue;
        };
        match write(inner, c, item).await {
            Ok(()) => {}
            Err(e) if !e.is_connection() => {
                tracing::warn!(error = %kind_of(&e), "redis store: an update was refused by redis and dropped");
            }
            Err(e) => return Err(e),
        }
        pending.remove(&key);
    }
    let mut usage: Vec<(String, [u64; 3])> = lock(&inner.usage).drain().collect();
    while let Some((provider, sums)) = usage.pop() {
        if let Err(e) = write_usage(inner, c, &provider, sums).await {
            let mut kept = lock(&inner.usage);
            add_usage(&mut kept, provider, sums);
            if e.is_connection() {
                for (provider, sums) in usage {
                    add_usage(&mut kept, provider, sums);
                }
                return Err(e);
            }
            tracing::warn!(error = %kind_of(&e), "redis store: a usage write was refused; kept for the next flush");
        }
    }
    Ok(())
}

async fn write_usage(
    inner: &Inner,
    c: &mut ConnectionManager,
    provider: &str,
    sums: [u64; 3],
) -> redis::RedisResult<()> {
    let mut call = inner.scripts.add_usage.key(inner.key("usage", provider));
    for n in sums {
        call.arg(n.min(MAX_INCREMENT));
    }
    let _: i64 = call
        .arg(millis(inner.config.key_ttl))
        .invoke_async(c)
        .await?;
    Ok(())
}

fn merge(inner: &Inner, pending: &mut HashMap<String, Outgoing>, m: Outgoing) {
    let key = match &m {
        Outgoing::Update {
            provider, update, ..
        } => match update {
            Update::RateLimited { group, .. } => inner.key("ratelimit", group),
            other => inner
                .versioned_key(provider, other)
                .unwrap_or_else(|| provider.clone()),
        },
        Outgoing::Lease { key, .. } => key.clone(),
    };
    if let Outgoing::Update {
        provider, update, ..
    } = &m
        && inner.versioned_key(provider, update).is_some()
    {
        lock(&inner.latest).insert(key.clone(), m.clone());
    }
    // A later deadline always wins; for versioned values, the newest write wins.
    if let (
        Some(Outgoing::Update {
            update: Update::RateLimited { until_ms: old, .. },
            ..
        }),
        Outgoing::Update {
            update: Update::RateLimited { until_ms: new, .. },
            ..
        },
    ) = (pending.get(&key), &m)
        && old >= new
    {
        return;
    }
    pending.insert(key, m);
}

async fn write(
    inner: &Inner,
    c: &mut ConnectionManager,
    item: &Outgoing,
) -> redis::RedisResult<()> {
    let ttl_ms = millis(inner.config.key_ttl);
    match item {
        Outgoing::Update {
            provider,
            ts_ms,
            update,
        } => {
            let message = Message {
                replica: inner.replica.clone(),
                ts_ms: *ts_ms,
                provider: provider.clone(),
                update: update.clone(),
            };
            let payload = serde_json::to_string(&message).unwrap_or_default();
            let now = now_ms();
            match update {
                Update::RateLimited { group, until_ms } => {
                    let cap = now.saturating_add(millis(inner.config.max_deadline));
                    let _: i32 = inner
                        .scripts
                        .extend
                        .key(inner.key("ratelimit", group))
                        .arg((*until_ms).min(cap))
                        .arg(cap)
                        .invoke_async(c)
                        .await?;
                }
                Update::Circuit { .. } | Update::Ramp { .. } => {
                    let stored = Stored {
                        replica: inner.replica.clone(),
                        ts_ms: *ts_ms,
                        update: update.clone(),
                    };
                    let key = inner.versioned_key(provider, update).unwrap_or_default();
                    let _: i32 = inner
                        .scripts
                        .set_if_newer
                        .key(key)
                        .arg(serde_json::to_string(&stored).unwrap_or_default())
                        .arg(*ts_ms)
                        .arg(ttl_ms)
                        .arg(now.saturating_add(crate::wire::MAX_CLOCK_SKEW_MS))
                        .invoke_async(c)
                        .await?;
                }
            }
            let _: i64 = redis::cmd("PUBLISH")
                .arg(inner.channel())
                .arg(payload)
                .query_async(c)
                .await?;
            // When a circuit opens, race for the right to probe it when half-open is
            // due, so exactly one replica probes.
            if let Update::Circuit {
                state: CircuitState::Open,
                open_until_ms: Some(until),
                ..
            } = update
            {
                let ttl = until.saturating_sub(now).saturating_add(30_000);
                claim_lease(inner, c, &inner.key("lease:probe", provider), ttl).await?;
            }
            Ok(())
        }
        Outgoing::Lease { key, ttl } => {
            claim_lease(inner, c, key, millis(*ttl)).await?;
            Ok(())
        }
    }
}

/// The longest a lease read from Redis is believed: a hostile TTL cannot keep every
/// replica from probing for longer than a circuit may stay open, plus slack.
fn lease_cap(inner: &Inner) -> Duration {
    inner.config.max_deadline + Duration::from_secs(60)
}

async fn claim_lease(
    inner: &Inner,
    c: &mut ConnectionManager,
    key: &str,
    ttl_ms: u64,
) -> redis::RedisResult<()> {
    let ttl_ms = ttl_ms.clamp(1, millis(lease_cap(inner)));
    let _: Option<String> = redis::cmd("SET")
        .arg(key)
        .arg(&inner.replica)
        .arg("NX")
        .arg("PX")
        .arg(ttl_ms)
        .query_async(c)
        .await?;
    learn_lease(inner, c, key).await
}

async fn learn_lease(
    inner: &Inner,
    c: &mut ConnectionManager,
    key: &str,
) -> redis::RedisResult<()> {
    let read: Option<(Vec<u8>, i64)> = inner
        .scripts
        .read_lease
        .key(key)
        .arg(MAX_HOLDER_LEN)
        .invoke_async(c)
        .await?;
    let Some((holder, pttl)) = read else {
        return Ok(());
    };
    let (Ok(holder), Ok(pttl)) = (String::from_utf8(holder), u64::try_from(pttl)) else {
        return Ok(());
    };
    if pttl == 0 || holder.is_empty() {
        return Ok(());
    }
    let ttl = Duration::from_millis(pttl).min(lease_cap(inner));
    let mut leases = lock(&inner.leases);
    if !leases.contains_key(key) && leases.len() >= MAX_REMEMBERED {
        let now = Instant::now();
        leases.retain(|_, l| l.expires > now);
        if leases.len() >= MAX_REMEMBERED {
            inner.warn_full();
            return Ok(());
        }
    }
    leases.insert(
        key.to_owned(),
        Lease {
            holder,
            expires: Instant::now() + ttl,
        },
    );
    Ok(())
}

/// Listens on the channel and applies other replicas' updates.
pub(crate) async fn listener(inner: Arc<Inner>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let t = inner.config.command_timeout;
        match tokio::time::timeout(t * 2, inner.client.get_async_pubsub()).await {
            Ok(Ok(mut pubsub)) => {
                if pubsub.subscribe(inner.channel()).await.is_ok() {
                    backoff = Duration::from_millis(100);
                    inner.set_connected(true, None);
                    inner.resync_now.notify_one();
                    let mut stream = pubsub.into_on_message();
                    while let Some(msg) = stream.next().await {
                        let Some(m) = parse_message(msg.get_payload_bytes()) else {
                            tracing::debug!("redis store: ignored a malformed message");
                            continue;
                        };
                        if m.replica != inner.replica {
                            inner.apply(&m.provider, m.ts_ms, &m.update);
                        }
                    }
                }
                inner.set_connected(false, Some("pub/sub connection lost".to_owned()));
            }
            Ok(Err(e)) => inner.set_connected(false, Some(kind_of(&e))),
            Err(_) => inner.set_connected(false, Some("pub/sub: timed out".to_owned())),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Reads every attached provider's shared state back, in case a message was missed.
pub(crate) async fn resyncer(inner: Arc<Inner>) {
    let mut conn: Option<ConnectionManager> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(inner.config.resync_interval) => {}
            _ = inner.resync_now.notified() => {}
        }
        let healths = inner.healths();
        if healths.is_empty() {
            continue;
        }
        if conn.is_none() {
            conn = inner.connect().await;
        }
        let Some(c) = conn.as_mut() else { continue };
        if let Err(e) = resync_once(&inner, c, &healths).await {
            inner.set_connected(false, Some(kind_of(&e)));
        }
    }
}

/// Reads `keys`, each as a string of at most `max` bytes or nothing.
async fn read_bounded(
    inner: &Inner,
    c: &mut ConnectionManager,
    keys: &[String],
    max: usize,
) -> redis::RedisResult<Vec<Option<Vec<u8>>>> {
    let mut call = inner.scripts.read_bounded.prepare_invoke();
    for k in keys {
        call.key(k);
    }
    let mut values: Vec<Option<Vec<u8>>> = call.arg(max).invoke_async(c).await?;
    values.resize(keys.len(), None);
    Ok(values)
}

async fn resync_once(
    inner: &Inner,
    c: &mut ConnectionManager,
    healths: &[Health],
) -> redis::RedisResult<()> {
    let names: Vec<String> = healths.iter().map(|h| h.id().to_string()).collect();
    let mut keys = Vec::with_capacity(names.len() * 2);
    for n in &names {
        keys.push(inner.key("circuit", n));
        keys.push(inner.key("ramp", n));
    }
    let values = read_bounded(inner, c, &keys, MAX_PAYLOAD).await?;
    for (i, v) in values.iter().enumerate() {
        let Some(stored) = v.as_deref().and_then(parse_stored) else {
            continue;
        };
        if stored.replica != inner.replica {
            inner.apply(&names[i / 2], stored.ts_ms, &stored.update);
        }
    }
    let mut groups: Vec<String> = healths
        .iter()
        .map(|h| {
            h.quota()
                .name()
                .map_or_else(|| h.id().to_string(), str::to_owned)
        })
        .collect();
    groups.sort();
    groups.dedup();
    let keys: Vec<String> = groups.iter().map(|g| inner.key("ratelimit", g)).collect();
    let values = read_bounded(inner, c, &keys, 64).await?;
    for (group, v) in groups.iter().zip(values) {
        let Some(until_ms) = v.as_deref().and_then(parse_deadline) else {
            continue;
        };
        let update = Update::RateLimited {
            group: group.clone(),
            until_ms,
        };
        inner.apply(group, 0, &update);
    }
    for n in &names {
        learn_lease(inner, c, &inner.key("lease:probe", n)).await?;
    }
    inner.set_connected(true, None);
    Ok(())
}
