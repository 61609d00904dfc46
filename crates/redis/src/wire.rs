//! What is stored in Redis and sent on the channel, and how it is checked on the way
//! back in.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tower_failover_core::health::FULL_SHARE_PPM;
use tower_failover_core::{CircuitState, ProviderId, SharedUpdate};

/// The largest message or value we parse; anything bigger is ignored.
pub(crate) const MAX_PAYLOAD: usize = 16 * 1024;
/// The most consecutive trips a remote value may claim.
const MAX_TRIPS: u32 = 32;
/// The most ramp steps a remote value may claim.
const MAX_STEP: u32 = 1024;
/// The longest quota-group name accepted from a remote.
pub(crate) const MAX_GROUP_LEN: usize = 256;
/// How far in the future a remote timestamp may be (replicas' clocks disagree a
/// little). A value stamped later is ignored, so a writer cannot stamp a key with a
/// far-future version that would outrank every honest write after it.
pub(crate) const MAX_CLOCK_SKEW_MS: u64 = 60_000;
/// The longest lease holder name accepted from Redis.
pub(crate) const MAX_HOLDER_LEN: usize = 64;
/// The largest usage increment sent to Redis (`HINCRBY` takes an `i64`).
pub(crate) const MAX_INCREMENT: u64 = i64::MAX as u64;

pub(crate) fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Whether a remote timestamp is believable: not later than now plus the allowed
/// clock skew.
pub(crate) fn plausible_ts(ts_ms: u64, now_ms: u64) -> bool {
    ts_ms <= now_ms.saturating_add(MAX_CLOCK_SKEW_MS)
}

/// A duration in whole milliseconds, saturating.
pub(crate) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Parses a deadline stored as a plain number of milliseconds, refusing anything
/// longer than a `u64` could spell (a huge string is not parsed at all).
pub(crate) fn parse_deadline(raw: &[u8]) -> Option<u64> {
    if raw.len() > 24 {
        return None;
    }
    std::str::from_utf8(raw).ok()?.trim().parse::<u64>().ok()
}

pub(crate) fn now_ms() -> u64 {
    unix_ms(SystemTime::now())
}

/// One update on the pub/sub channel.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Message {
    pub(crate) replica: String,
    /// Wall-clock milliseconds when the update was made (orders updates).
    pub(crate) ts_ms: u64,
    pub(crate) provider: String,
    pub(crate) update: Update,
}

/// The shared updates, in a wire form with plain numbers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Update {
    Circuit {
        state: CircuitState,
        open_until_ms: Option<u64>,
        trips: u32,
    },
    RateLimited {
        group: String,
        until_ms: u64,
    },
    Ramp {
        step: Option<u32>,
        share_ppm: u32,
    },
}

impl Update {
    /// The wire form of a core update (usage is batched separately).
    pub(crate) fn from_shared(update: &SharedUpdate) -> Option<Update> {
        Some(match update {
            SharedUpdate::Circuit {
                state,
                open_until,
                trips,
            } => Update::Circuit {
                state: *state,
                open_until_ms: open_until.map(unix_ms),
                trips: *trips,
            },
            SharedUpdate::RateLimitedUntil { group, until } => Update::RateLimited {
                group: group.clone(),
                until_ms: unix_ms(*until),
            },
            SharedUpdate::Ramp { step, share_ppm } => Update::Ramp {
                step: *step,
                share_ppm: *share_ppm,
            },
            _ => return None,
        })
    }

    /// Checks and clamps a value read from Redis, turning it into a core update.
    /// Returns `None` for anything that cannot be trusted or is already over.
    pub(crate) fn validate(&self, now_ms: u64, max_deadline: Duration) -> Option<SharedUpdate> {
        let cap_ms = now_ms.saturating_add(millis(max_deadline));
        let to_time = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms.min(cap_ms));
        match self {
            Update::Circuit {
                state,
                open_until_ms,
                trips,
            } => {
                let open_until = match (state, open_until_ms) {
                    (CircuitState::Open, Some(ms)) => Some(to_time(*ms)),
                    // An open circuit with no deadline would stay open forever.
                    (CircuitState::Open, None) => return None,
                    _ => None,
                };
                Some(SharedUpdate::Circuit {
                    state: *state,
                    open_until,
                    trips: (*trips).min(MAX_TRIPS),
                })
            }
            Update::RateLimited { group, until_ms } => {
                if *until_ms <= now_ms || group.is_empty() || group.len() > MAX_GROUP_LEN {
                    return None;
                }
                Some(SharedUpdate::RateLimitedUntil {
                    group: group.clone(),
                    until: to_time(*until_ms),
                })
            }
            Update::Ramp { step, share_ppm } => Some(SharedUpdate::Ramp {
                step: step.map(|s| s.min(MAX_STEP)),
                share_ppm: (*share_ppm).min(FULL_SHARE_PPM),
            }),
        }
    }
}

/// A versioned value stored under a key (circuit, ramp).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Stored {
    pub(crate) replica: String,
    pub(crate) ts_ms: u64,
    pub(crate) update: Update,
}

pub(crate) fn parse_message(payload: &[u8]) -> Option<Message> {
    if payload.len() > MAX_PAYLOAD {
        return None;
    }
    let msg: Message = serde_json::from_slice(payload).ok()?;
    msg.provider.parse::<ProviderId>().ok()?;
    Some(msg)
}

pub(crate) fn parse_stored(payload: &[u8]) -> Option<Stored> {
    if payload.len() > MAX_PAYLOAD {
        return None;
    }
    serde_json::from_slice(payload).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_800_000_000_000;

    #[test]
    fn absurd_deadlines_are_clamped() {
        let u = Update::Circuit {
            state: CircuitState::Open,
            open_until_ms: Some(NOW + 86_400_000 * 30),
            trips: 9999,
        };
        let SharedUpdate::Circuit {
            open_until, trips, ..
        } = u.validate(NOW, Duration::from_secs(600)).unwrap()
        else {
            panic!()
        };
        assert_eq!(unix_ms(open_until.unwrap()), NOW + 600_000);
        assert_eq!(trips, MAX_TRIPS);

        let u = Update::RateLimited {
            group: "g".into(),
            until_ms: u64::MAX,
        };
        let SharedUpdate::RateLimitedUntil { until, .. } =
            u.validate(NOW, Duration::from_secs(60)).unwrap()
        else {
            panic!()
        };
        assert_eq!(unix_ms(until), NOW + 60_000);
    }

    #[test]
    fn untrustworthy_values_are_dropped() {
        let max = Duration::from_secs(600);
        let past = Update::RateLimited {
            group: "g".into(),
            until_ms: NOW - 1,
        };
        assert!(past.validate(NOW, max).is_none());
        let open_forever = Update::Circuit {
            state: CircuitState::Open,
            open_until_ms: None,
            trips: 1,
        };
        assert!(open_forever.validate(NOW, max).is_none());
        let ramp = Update::Ramp {
            step: Some(u32::MAX),
            share_ppm: u32::MAX,
        };
        assert_eq!(
            ramp.validate(NOW, max),
            Some(SharedUpdate::Ramp {
                step: Some(MAX_STEP),
                share_ppm: FULL_SHARE_PPM
            })
        );
        for garbage in [
            &b"not json"[..],
            br#"{"replica":"r","ts_ms":1,"provider":"no-slash","update":{"type":"ramp","step":1,"share_ppm":5}}"#,
            br#"{"replica":"r","ts_ms":1,"provider":"p/m","update":{"type":"circuit","state":"exploded","trips":1}}"#,
            br#"{"replica":"r","ts_ms":-5,"provider":"p/m","update":{"type":"ramp","step":1,"share_ppm":5}}"#,
        ] {
            assert!(parse_message(garbage).is_none());
        }
        assert!(parse_message(&vec![b' '; MAX_PAYLOAD + 1]).is_none());
    }

    #[test]
    fn future_stamps_beyond_the_clock_skew_are_not_plausible() {
        assert!(plausible_ts(NOW, NOW));
        assert!(plausible_ts(NOW + MAX_CLOCK_SKEW_MS, NOW));
        assert!(!plausible_ts(NOW + MAX_CLOCK_SKEW_MS + 1, NOW));
        assert!(!plausible_ts(u64::MAX, NOW));
        // Near the end of time, the bound saturates instead of wrapping.
        assert!(plausible_ts(u64::MAX, u64::MAX - 1));
    }

    #[test]
    fn stored_deadlines_parse_only_as_short_plain_numbers() {
        assert_eq!(parse_deadline(b"1800000000000"), Some(1_800_000_000_000));
        assert_eq!(parse_deadline(b" 42\n"), Some(42));
        assert_eq!(parse_deadline(b"18446744073709551615"), Some(u64::MAX));
        for bad in [
            &b"18446744073709551616"[..],
            b"-1",
            b"1e30",
            b"soon",
            b"",
            b"\xff\xfe",
        ] {
            assert_eq!(parse_deadline(bad), None, "{bad:?}");
        }
        assert_eq!(parse_deadline(&vec![b'9'; 1 << 20]), None);
    }

    #[test]
    fn absurd_durations_convert_to_milliseconds_without_overflow() {
        assert_eq!(millis(Duration::MAX), u64::MAX);
        assert_eq!(millis(Duration::from_millis(1500)), 1500);
        let far = UNIX_EPOCH + Duration::from_secs(u64::MAX / 1000 + 1);
        assert_eq!(unix_ms(far), u64::MAX);
        let u = Update::RateLimited {
            group: "g".repeat(MAX_GROUP_LEN + 1),
            until_ms: NOW + 1000,
        };
        assert!(u.validate(NOW, Duration::MAX).is_none());
    }
}
