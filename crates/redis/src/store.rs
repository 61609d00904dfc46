//! The Redis implementation of the core store trait.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::{Notify, mpsc};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_failover_core::{
    CircuitState, Health, HealthEventKind, ProviderId, SharedStore, SharedUpdate, StateStore,
    StoreStatus, health::WeakHealth,
};

use crate::config::{ConfigError, RedisConfig};
use crate::wire::{
    MAX_HOLDER_LEN, MAX_INCREMENT, MAX_PAYLOAD, Message, Stored, Update, millis, now_ms,
    parse_deadline, parse_message, parse_stored, plausible_ts,
};

/// How many updates may wait for the writer; past it, new updates are dropped (the
/// latest state per key is kept and re-sent on reconnect, so nothing durable is lost).
const QUEUE: usize = 4096;

/// The most per-provider keys (circuit and ramp versions, probe leases) one replica
/// remembers. Only providers attached to this replica are remembered at all, so this is
/// a second line of defence; past it, remote updates for new keys are ignored.
const MAX_REMEMBERED: usize = 4096;

/// Writes only if the stored value is older (by `ts_ms`) than ours. A stored value
/// of the wrong type, that does not decode, or stamped later than `ARGV[4]` (now
/// plus the allowed clock skew) is garbage and is overwritten.
const SET_IF_NEWER: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
  local ok, v = pcall(cjson.decode, redis.call('GET', KEYS[1]))
  if ok and type(v) == 'table' then
    local ts = tonumber(v['ts_ms'])
    if ts and ts >= tonumber(ARGV[2]) and ts <= tonumber(ARGV[4]) then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"#;

/// Moves a deadline later, never earlier. A stored deadline of the wrong type, not a
/// number, or beyond `ARGV[2]` (now plus the deadline cap) is garbage and replaced.
const EXTEND_DEADLINE: &str = r#"
local cur = 0
if redis.call('TYPE', KEYS[1])['ok'] == 'string' then
  cur = tonumber(redis.call('GET', KEYS[1])) or 0
end
if cur ~= cur or cur > tonumber(ARGV[2]) then cur = 0 end
local new = tonumber(ARGV[1])
if new > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'PXAT', ARGV[1] + 1000)
  return 1
end
return 0
"#;

/// Adds usage to a hash, saturating at `i64::MAX` instead of failing on overflow. A
/// key of the wrong type, or a field that is not an integer, is garbage: replaced.
const ADD_USAGE: &str = r#"
local t = redis.call('TYPE', KEYS[1])['ok']
if t ~= 'hash' and t ~= 'none' then redis.call('DEL', KEYS[1]) end
local fields = {'prompt_tokens', 'completion_tokens', 'cost_micros'}
for i, f in ipairs(fields) do
  local r = redis.pcall('HINCRBY', KEYS[1], f, ARGV[i])
  if type(r) == 'table' and r['err'] then
    if string.find(r['err'], 'overflow') then
      redis.call('HSET', KEYS[1], f, '9223372036854775807')
    else
      redis.call('HSET', KEYS[1], f, ARGV[i])
    end
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

/// Reads string keys, each only if it is a string of at most `ARGV[1]` bytes (anything
/// else reads as nil): a huge or wrongly typed value is never sent to us.
const READ_BOUNDED: &str = r#"
local out = {}
for i, k in ipairs(KEYS) do
  if redis.call('TYPE', k)['ok'] == 'string' and redis.call('STRLEN', k) <= tonumber(ARGV[1]) then
    out[i] = redis.call('GET', k)
  else
    out[i] = false
  end
end
return out
"#;

/// A lease's holder and remaining milliseconds, if it is a short string with a TTL.
const READ_LEASE: &str = r#"
if redis.call('TYPE', KEYS[1])['ok'] ~= 'string' or redis.call('STRLEN', KEYS[1]) > tonumber(ARGV[1]) then
  return false
end
return {redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1])}
"#;

/// The Lua scripts, loaded once per store.
struct Scripts {
    set_if_newer: redis::Script,
    extend: redis::Script,
    add_usage: redis::Script,
    read_bounded: redis::Script,
    read_lease: redis::Script,
}

impl Scripts {
    fn new() -> Scripts {
        Scripts {
            set_if_newer: redis::Script::new(SET_IF_NEWER),
            extend: redis::Script::new(EXTEND_DEADLINE),
            add_usage: redis::Script::new(ADD_USAGE),
            read_bounded: redis::Script::new(READ_BOUNDED),
            read_lease: redis::Script::new(READ_LEASE),
        }
    }
}

#[derive(Clone)]
enum Outgoing {
    Update {
        provider: String,
        ts_ms: u64,
        update: Update,
    },
    Lease {
        key: String,
        ttl: Duration,
    },
}

#[derive(Clone)]
struct Lease {
    holder: String,
    expires: Instant,
}

struct Inner {
    config: RedisConfig,
    client: redis::Client,
    replica: String,
    tx: mpsc::Sender<Outgoing>,
    attached: Mutex<Vec<WeakHealth>>,
    /// Newest timestamp applied or published, per circuit/ramp key.
    versions: Mutex<HashMap<String, u64>>,
    /// This replica's latest circuit and ramp update per key, written again
    /// whenever the connection comes back: a Redis that restarted empty (no
    /// persistence, a fresh failover replica) learns the fleet's state again.
    latest: Mutex<HashMap<String, Outgoing>>,
    /// Set when the connection comes back; the writer then re-queues `latest`.
    resend: AtomicBool,
    /// Usage not yet written: provider → (prompt, completion, cost micros).
    usage: Mutex<HashMap<String, [u64; 3]>>,
    leases: Mutex<HashMap<String, Lease>>,
    connected: AtomicBool,
    last_error: Mutex<Option<String>>,
    resync_now: Notify,
    scripts: Scripts,
    /// Whether the "too many keys" warning was logged (it is logged once).
    warned_full: AtomicBool,
    /// Whether the connection state was logged at least once (so a replica that never
    /// reaches Redis says so, not only one that loses it).
    reported: AtomicBool,
}

/// Shared provider state on Redis. See the [crate documentation](crate).
///
/// Dropping the store stops its background tasks.
pub struct RedisStore {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for RedisStore {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStore")
            .field("url", &self.inner.config.redacted_url())
            .field("namespace", &self.inner.config.namespace)
            .field("replica", &self.inner.replica)
            .field("connected", &self.inner.connected.load(Ordering::Relaxed))
            .finish()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RedisStore {
    /// Validates `config` and starts the store's background tasks (writer, pub/sub
    /// listener, resync). Returns at once: connecting happens in the background, and
    /// the replica serves on local state until it succeeds. Must be called inside a
    /// tokio runtime.
    pub fn start(config: RedisConfig) -> Result<SharedStore, ConfigError> {
        Ok(Arc::new(RedisStore::start_typed(config)?))
    }

    /// Like [`start`](Self::start), returning the concrete type (for
    /// [`is_connected`](Self::is_connected) and [`replica_id`](Self::replica_id)).
    pub fn start_typed(config: RedisConfig) -> Result<RedisStore, ConfigError> {
        config.validate()?;
        let client = crate::config::client(&config)?;
        let (tx, rx) = mpsc::channel(QUEUE);
        let mut rng = tower_failover_core::rng::Rng::from_entropy();
        let inner = Arc::new(Inner {
            config,
            client,
            replica: format!("r{:016x}", rng.next_u64()),
            tx,
            attached: Mutex::new(Vec::new()),
            versions: Mutex::new(HashMap::new()),
            latest: Mutex::new(HashMap::new()),
            resend: AtomicBool::new(false),
            usage: Mutex::new(HashMap::new()),
            leases: Mutex::new(HashMap::new()),
            connected: AtomicBool::new(false),
            last_error: Mutex::new(Some("connecting".to_owned())),
            resync_now: Notify::new(),
            scripts: Scripts::new(),
            warned_full: AtomicBool::new(false),
            reported: AtomicBool::new(false),
        });
        let tasks = vec![
            tokio::spawn(writer(inner.clone(), rx)),
            tokio::spawn(listener(inner.clone())),
            tokio::spawn(resyncer(inner.clone())),
        ];
        Ok(RedisStore { inner, tasks })
    }

    /// Whether Redis answered the last command.
    pub fn is_connected(&self) -> bool {
        self.inner.connected.load(Ordering::Relaxed)
    }

    /// This replica's id in Redis (random per store).
    pub fn replica_id(&self) -> &str {
        &self.inner.replica
    }

    /// How many per-provider keys (circuit and ramp versions, probe leases) this
    /// replica holds in memory. Only providers attached to this replica are
    /// remembered, whatever other writers publish, and never more than a fixed cap
    /// (4096), so a hostile writer cannot grow it.
    pub fn remembered_keys(&self) -> usize {
        lock(&self.inner.versions).len() + lock(&self.inner.leases).len()
    }
}

impl StateStore for RedisStore {
    fn publish(&self, provider: &ProviderId, update: &SharedUpdate) {
        let inner = &self.inner;
        let name = provider.to_string();
        if let SharedUpdate::Usage {
            prompt_tokens,
            completion_tokens,
            cost_micros,
        } = update
        {
            add_usage(
                &mut lock(&inner.usage),
                name,
                [*prompt_tokens, *completion_tokens, *cost_micros],
            );
            return;
        }
        let Some(update) = Update::from_shared(update) else {
            return;
        };
        // Versions of one key strictly increase from this replica, even for two
        // transitions in the same millisecond (half-open then closed): with equal
        // stamps the second was dropped by every reader and by the set-if-newer
        // script, and the fleet stayed half-open.
        let mut ts_ms = now_ms();
        if let Some(key) = inner.versioned_key(&name, &update) {
            let mut versions = lock(&inner.versions);
            let v = versions.entry(key).or_default();
            ts_ms = ts_ms.max(v.saturating_add(1));
            *v = ts_ms;
        }
        let msg = Outgoing::Update {
            provider: name,
            ts_ms,
            update,
        };
        if inner.tx.try_send(msg).is_err() {
            tracing::debug!(
                "redis store: update queue full, update dropped (latest state is re-sent on reconnect)"
            );
        }
    }

    fn attach(&self, health: &Health) {
        lock(&self.inner.attached).push(health.downgrade());
        self.inner.resync_now.notify_one();
    }

    fn try_lease(&self, provider: &ProviderId, what: &str, ttl: Duration) -> bool {
        let inner = &self.inner;
        let key = inner.key(&format!("lease:{what}"), &provider.to_string());
        let now = Instant::now();
        let mut leases = lock(&inner.leases);
        if let Some(l) = leases.get(&key).filter(|l| l.expires > now) {
            return l.holder == inner.replica;
        }
        if leases.len() >= MAX_REMEMBERED {
            leases.retain(|_, l| l.expires > now);
        }
        // Not decided yet (Redis down, or a lease nobody raced for): take it locally
        // and claim it in Redis; if another replica holds it there, the next call
        // learns so. Serving never waits on Redis.
        leases.insert(
            key.clone(),
            Lease {
                holder: inner.replica.clone(),
                expires: now + ttl,
            },
        );
        let _ = inner.tx.try_send(Outgoing::Lease { key, ttl });
        true
    }

    fn status(&self) -> StoreStatus {
        StoreStatus {
            kind: "redis".to_owned(),
            connected: self.inner.connected.load(Ordering::Relaxed),
            detail: lock(&self.inner.last_error).clone(),
        }
    }
}

/// Adds usage to the not-yet-written sums, saturating.
fn add_usage(usage: &mut HashMap<String, [u64; 3]>, provider: String, add: [u64; 3]) {
    let slot = usage.entry(provider).or_default();
    for (total, add) in slot.iter_mut().zip(add) {
        *total = total.saturating_add(add);
    }
}

impl Inner {
    fn key(&self, kind: &str, name: &str) -> String {
        format!("{}:{kind}:{name}", self.config.namespace)
    }

    fn channel(&self) -> String {
        format!("{}:updates", self.config.namespace)
    }

    fn versioned_key(&self, provider: &str, update: &Update) -> Option<String> {
        match update {
            Update::Circuit { .. } => Some(self.key("circuit", provider)),
            Update::Ramp { .. } => Some(self.key("ramp", provider)),
            Update::RateLimited { .. } => None,
        }
    }

    fn healths(&self) -> Vec<Health> {
        let mut attached = lock(&self.attached);
        attached.retain(|w| w.upgrade().is_some());
        attached.iter().filter_map(WeakHealth::upgrade).collect()
    }

    fn set_connected(&self, connected: bool, detail: Option<String>) {
        let was = self.connected.swap(connected, Ordering::AcqRel);
        *lock(&self.last_error) = detail.clone();
        let first = !self.reported.swap(true, Ordering::AcqRel);
        if was != connected || first {
            if connected {
                tracing::info!(url = %self.config.redacted_url(), "redis store connected");
            } else {
                tracing::warn!(url = %self.config.redacted_url(), error = ?detail, "redis store unreachable: serving on local state");
            }
        }
        if connected && !was {
            self.resend.store(true, Ordering::Release);
        }
        if was != connected
            && let Some(h) = self.healths().first()
        {
            h.emit(HealthEventKind::Store { connected });
        }
    }

    async fn connect(&self) -> Option<ConnectionManager> {
        let t = self.config.command_timeout;
        let cfg = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(t))
            .set_response_timeout(Some(t))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        match tokio::time::timeout(t * 2, self.client.get_connection_manager_with_config(cfg)).await
        {
            Ok(Ok(conn)) => Some(conn),
            Ok(Err(e)) => {
                self.set_connected(false, Some(format!("connect: {}", e.kind_name())));
                None
            }
            Err(_) => {
                self.set_connected(false, Some("connect: timed out".to_owned()));
                None
            }
        }
    }

    /// Applies an update from Redis (channel or resync) if it is newer than what we
    /// know and passes validation.
    fn apply(&self, provider: &str, ts_ms: u64, update: &Update) {
        let now = now_ms();
        if !plausible_ts(ts_ms, now) {
            tracing::debug!(
                provider,
                "redis store: ignored a value stamped in the future"
            );
            return;
        }
        let Some(shared) = update.validate(now, self.config.max_deadline) else {
            tracing::debug!(
                provider,
                "redis store: ignored an untrustworthy or expired value"
            );
            return;
        };
        // Only providers attached here are looked at, and only they are remembered:
        // updates about providers this replica does not serve cost no memory.
        let targets: Vec<Health> = self
            .healths()
            .into_iter()
            .filter(|h| match update {
                Update::RateLimited { group, .. } => match h.quota().name() {
                    Some(name) => name == group,
                    None => h.id().to_string() == *group,
                },
                _ => h.id().to_string() == provider,
            })
            .collect();
        if targets.is_empty() {
            return;
        }
        if let Some(key) = self.versioned_key(provider, update) {
            let mut versions = lock(&self.versions);
            if !versions.contains_key(&key) && versions.len() >= MAX_REMEMBERED {
                self.warn_full();
                return;
            }
            let v = versions.entry(key).or_default();
            if ts_ms <= *v {
                return;
            }
            *v = ts_ms;
        }
        for h in targets {
            h.apply_remote(&shared);
        }
    }

    fn warn_full(&self) {
        if !self.warned_full.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                cap = MAX_REMEMBERED,
                "redis store: too many provider keys remembered; updates for further ones are ignored"
            );
        }
    }
}

fn kind_of(err: &redis::RedisError) -> String {
    // Only the error's kind: messages may quote commands and keys, never needed here.
    format!("redis error: {}", err.kind_name())
}

trait KindName {
    fn kind_name(&self) -> &'static str;
    /// Whether the connection failed (retry later), as opposed to Redis refusing one
    /// command (retrying it would fail again).
    fn is_connection(&self) -> bool;
}

impl KindName for redis::RedisError {
    fn kind_name(&self) -> &'static str {
        if self.is_io_error() || self.is_connection_dropped() || self.is_connection_refusal() {
            "connection"
        } else if self.is_timeout() {
            "timeout"
        } else {
            "command"
        }
    }

    fn is_connection(&self) -> bool {
        self.kind_name() != "command"
    }
}

/// The background writer: batches updates, writes them, keeps the latest state per
/// key until Redis has it.
async fn writer(inner: Arc<Inner>, mut rx: mpsc::Receiver<Outgoing>) {
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
async fn listener(inner: Arc<Inner>) {
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
async fn resyncer(inner: Arc<Inner>) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_usage_sums_saturate_instead_of_wrapping() {
        let mut usage = HashMap::new();
        add_usage(&mut usage, "p/m".into(), [u64::MAX - 1, 5, 1]);
        add_usage(&mut usage, "p/m".into(), [10, u64::MAX, 2]);
        assert_eq!(usage["p/m"], [u64::MAX, u64::MAX, 3]);
    }
}
