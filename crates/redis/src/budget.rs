//! A fleet-wide request or token budget, taken atomically in Redis.

use std::fmt;
use std::time::Duration;

use redis::aio::ConnectionManager;

use crate::config::{ConfigError, RedisConfig};
use crate::wire::now_ms;

/// Takes `ARGV[1]` units from a fixed window's counter if that keeps it within
/// `ARGV[2]`; the key expires with the window.
const TAKE: &str = r#"
local n = redis.call('INCRBY', KEYS[1], ARGV[1])
if n == tonumber(ARGV[1]) then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
end
if n > tonumber(ARGV[2]) then
  redis.call('DECRBY', KEYS[1], ARGV[1])
  return 0
end
return 1
"#;

/// A budget of requests or tokens per window shared by every replica (for example a
/// provider's RPM or TPM for the whole organisation), taken by an atomic script so two
/// replicas can never both take the last unit.
///
/// It is asynchronous and talks to Redis, so it belongs off the hot path: a gateway
/// takes from it before admitting a batch, or a pacing queue consults it.
pub struct FleetBudget {
    conn: ConnectionManager,
    key: String,
    limit: u64,
    window: Duration,
    script: redis::Script,
}

impl fmt::Debug for FleetBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FleetBudget")
            .field("key", &self.key)
            .field("limit", &self.limit)
            .field("window", &self.window)
            .finish()
    }
}

impl FleetBudget {
    /// Connects a budget named `name` allowing `limit` units per `window`.
    pub async fn connect(
        config: &RedisConfig,
        name: &str,
        limit: u64,
        window: Duration,
    ) -> Result<FleetBudget, Box<dyn std::error::Error + Send + Sync>> {
        config.validate()?;
        if window < Duration::from_millis(10) {
            return Err(Box::new(ConfigError::new(
                "window",
                "must be at least 10ms",
            )));
        }
        let client = redis::Client::open(config.url.as_str())?;
        let conn =
            tokio::time::timeout(config.command_timeout * 2, client.get_connection_manager())
                .await
                .map_err(|_| "redis connect timed out")??;
        Ok(FleetBudget {
            conn,
            key: format!("{}:budget:{name}", config.namespace),
            limit,
            window,
            script: redis::Script::new(TAKE),
        })
    }

    /// Takes `amount` units if the current window has them. `Ok(false)` means the
    /// fleet's budget for this window is spent.
    pub async fn try_take(&self, amount: u64) -> Result<bool, redis::RedisError> {
        let window_ms = self.window.as_millis().max(1) as u64;
        let slot = now_ms() / window_ms;
        let mut conn = self.conn.clone();
        let taken: i32 = self
            .script
            .key(format!("{}:{slot}", self.key))
            .arg(amount)
            .arg(self.limit)
            .arg(window_ms * 2)
            .invoke_async(&mut conn)
            .await?;
        Ok(taken == 1)
    }
}
