//! Counters per fixed window shared by every replica, for spending limits (a
//! caller's tokens or cost per day) that no replica may exceed on its own.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::task::JoinHandle;

use crate::config::{ConfigError, RedisConfig};
use crate::wire::{millis, now_ms};

/// A count read from Redis at or above this (or one that is not a count) is
/// "spent": it reads as this much. Well below 2^53, so Lua's numbers stay exact.
pub const MAX_COUNT: u64 = 1 << 50;

/// Adds `ARGV[i]` to `KEYS[i]` (expiring in `ARGV[n+i]` ms) and returns every
/// counter's value; `ARGV[2n+1]` is [`MAX_COUNT`]. A key of the wrong type, not
/// a count, negative or at the cap reads as the cap (and is given an expiry if it
/// has none, so the next window starts clean); a sum past the cap is stored as
/// the cap, so `INCRBY` can never overflow.
const ADD_AND_READ: &str = r#"
local n = #KEYS
local cap = tonumber(ARGV[2 * n + 1])
local out = {}
for i, k in ipairs(KEYS) do
  local add = tonumber(ARGV[i])
  local ttl = ARGV[n + i]
  local t = redis.call('TYPE', k)['ok']
  local cur = 0
  if t == 'string' then
    cur = tonumber(redis.call('GET', k))
  elseif t ~= 'none' then
    cur = nil
  end
  if cur == nil or cur ~= cur or cur < 0 or cur >= cap then
    if t ~= 'none' and redis.call('PTTL', k) < 0 then
      redis.call('PEXPIRE', k, ttl)
    end
    out[i] = cap
  elseif add > 0 then
    if cur + add >= cap then
      redis.call('SET', k, ARGV[2 * n + 1], 'PX', ttl)
      out[i] = cap
    else
      out[i] = redis.call('INCRBY', k, add)
      redis.call('PEXPIRE', k, ttl)
    end
  else
    out[i] = cur
  end
end
return out
"#;

/// Counters of fixed windows (aligned to the Unix epoch, so `1d` is a UTC day)
/// shared by every replica using the same namespace: each replica adds what it
/// counted, and reads what the whole fleet counted in the current window.
///
/// [`add`](FleetCounters::add) and [`total`](FleetCounters::total) never wait on
/// Redis: the total is the fleet's count as last read plus what this replica added
/// since. A background task (owned, aborted on drop) adds this replica's counts
/// to Redis and reads the fleet's totals every `sync_every`, with one script call
/// for every counter. While Redis cannot be reached, the counts wait for the next
/// exchange (at least once: a write whose reply was lost may be counted twice),
/// and totals go on growing with this replica's own counts.
///
/// Keys are `<namespace>:counter:<name>:<window number>` and expire two windows
/// after they were last written. A counter that is garbage in Redis (the wrong
/// type, not a number, negative, or at [`MAX_COUNT`]) reads as [`MAX_COUNT`]:
/// a limit checked against it is spent until the window ends.
pub struct FleetCounters {
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

struct Shared {
    prefix: String,
    counters: Vec<Counter>,
    connected: AtomicBool,
}

struct Counter {
    name: String,
    window_ms: u64,
    state: Mutex<Window>,
}

/// One counter's current window.
#[derive(Default, Clone, Copy)]
struct Window {
    /// The window's number (`unix ms / window ms`).
    number: u64,
    /// The fleet's count as last read from Redis.
    fleet: u64,
    /// Added here, not yet sent.
    pending: u64,
    /// Sent, not yet acknowledged.
    sending: u64,
}

impl Counter {
    fn window(&self, now_ms: u64) -> std::sync::MutexGuard<'_, Window> {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let number = now_ms / self.window_ms;
        if w.number != number {
            *w = Window {
                number,
                ..Window::default()
            };
        }
        w
    }
}

impl fmt::Debug for FleetCounters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetCounters")
            .field("prefix", &self.shared.prefix)
            .field("counters", &self.shared.counters.len())
            .field("connected", &self.is_connected())
            .finish_non_exhaustive()
    }
}

impl Drop for FleetCounters {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FleetCounters {
    /// Counters named `counters[i].0` with windows of `counters[i].1` (from one
    /// second to 366 days), in `config`'s namespace, exchanged with Redis every
    /// `sync_every` (clamped to 50 ms – 10 s). Methods take a counter by its index
    /// in `counters`. Starts the background task: call it inside a tokio runtime.
    pub fn start(
        config: &RedisConfig,
        counters: &[(&str, Duration)],
        sync_every: Duration,
    ) -> Result<FleetCounters, ConfigError> {
        config.validate()?;
        let mut list = Vec::with_capacity(counters.len());
        for (name, window) in counters {
            if *window < Duration::from_secs(1) || *window > Duration::from_secs(366 * 86_400) {
                return Err(ConfigError::new(
                    "window",
                    "must be between 1s and 366 days",
                ));
            }
            list.push(Counter {
                name: (*name).to_owned(),
                window_ms: millis(*window),
                state: Mutex::new(Window::default()),
            });
        }
        let client = crate::config::client(config)?;
        let shared = Arc::new(Shared {
            prefix: format!("{}:counter", config.namespace),
            counters: list,
            connected: AtomicBool::new(false),
        });
        let every = sync_every.clamp(Duration::from_millis(50), Duration::from_secs(10));
        let task = tokio::spawn(sync(shared.clone(), client, every, config.command_timeout));
        Ok(FleetCounters { shared, task })
    }

    /// Counts `amount` more on counter `counter` in the current window (a counter
    /// index out of range counts nothing).
    pub fn add(&self, counter: usize, amount: u64) {
        if let Some(c) = self.shared.counters.get(counter) {
            let mut w = c.window(now_ms());
            w.pending = w.pending.saturating_add(amount);
        }
    }

    /// The fleet's count on `counter` in the current window: as last read from
    /// Redis plus what this replica added since (`0` for an index out of range).
    pub fn total(&self, counter: usize) -> u64 {
        self.shared.counters.get(counter).map_or(0, |c| {
            let w = c.window(now_ms());
            w.fleet.saturating_add(w.pending).saturating_add(w.sending)
        })
    }

    /// The time left in `counter`'s current window (zero for an index out of
    /// range).
    pub fn window_left(&self, counter: usize) -> Duration {
        self.shared
            .counters
            .get(counter)
            .map_or(Duration::ZERO, |c| {
                let now = now_ms();
                Duration::from_millis(c.window_ms - now % c.window_ms)
            })
    }

    /// Whether the last exchange with Redis succeeded.
    pub fn is_connected(&self) -> bool {
        self.shared.connected.load(Ordering::Relaxed)
    }
}

async fn sync(shared: Arc<Shared>, client: redis::Client, every: Duration, timeout: Duration) {
    let script = redis::Script::new(ADD_AND_READ);
    let mut conn: Option<ConnectionManager> = None;
    loop {
        tokio::time::sleep(every).await;
        if shared.counters.is_empty() {
            continue;
        }
        if conn.is_none() {
            match tokio::time::timeout(timeout * 2, client.get_connection_manager()).await {
                Ok(Ok(c)) => conn = Some(c),
                _ => {
                    disconnected(&shared, "cannot connect");
                    continue;
                }
            }
        }
        let Some(c) = conn.as_mut() else { continue };
        let now = now_ms();
        let mut invocation = script.prepare_invoke();
        let mut sent = Vec::with_capacity(shared.counters.len());
        for counter in &shared.counters {
            let mut w = counter.window(now);
            w.sending = w.sending.saturating_add(w.pending);
            w.pending = 0;
            sent.push((w.number, w.sending));
            invocation.key(format!("{}:{}:{}", shared.prefix, counter.name, w.number));
        }
        for (_, amount) in &sent {
            invocation.arg(*amount);
        }
        for counter in &shared.counters {
            invocation.arg(counter.window_ms.saturating_mul(2));
        }
        invocation.arg(MAX_COUNT);
        let answer: Result<Result<Vec<u64>, _>, _> =
            tokio::time::timeout(timeout, invocation.invoke_async(c)).await;
        let values = match answer {
            Ok(Ok(v)) if v.len() == sent.len() => Some(v),
            Ok(Err(e)) => {
                disconnected(&shared, &format!("{:?}", e.kind()));
                None
            }
            Ok(Ok(_)) => {
                disconnected(&shared, "unexpected answer");
                None
            }
            Err(_) => {
                disconnected(&shared, "timed out");
                None
            }
        };
        for (i, counter) in shared.counters.iter().enumerate() {
            let (number, amount) = sent[i];
            let mut w = counter.window(now_ms());
            if w.number != number {
                continue;
            }
            w.sending = w.sending.saturating_sub(amount);
            match &values {
                Some(v) => w.fleet = v[i].min(MAX_COUNT),
                // Not counted in Redis: with the next exchange.
                None => w.pending = w.pending.saturating_add(amount),
            }
        }
        if values.is_some() && !shared.connected.swap(true, Ordering::Relaxed) {
            tracing::info!(prefix = %shared.prefix, "fleet counters: counting in Redis");
        }
    }
}

fn disconnected(shared: &Shared, why: &str) {
    if shared.connected.swap(false, Ordering::Relaxed) {
        tracing::warn!(prefix = %shared.prefix, error = %why, "fleet counters: Redis unreachable, counting locally");
    }
}
