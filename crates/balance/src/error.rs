//! The errors of the routers.

use std::error::Error;
use std::fmt;

use tower_failover_core::error::{Attempt, Elapsed};

/// A configuration value was refused (the one error type every tower-failover crate
/// uses for configuration).
pub use tower_failover_core::ConfigError;

/// The request's total deadline passed while the router was still trying.
///
/// Its [`source`](Error::source) is the [`Elapsed`] (kind
/// [`Total`](tower_failover_core::error::TimeoutKind::Total)), so
/// `find::<Elapsed>` finds it and
/// [`error_response`](tower_failover_core::error_response) answers 504, as for any
/// timeout. It also keeps every attempt made, the one the deadline cut short
/// included, as a timeout of its provider.
///
/// ```
/// use std::time::Duration;
/// use tower_failover_balance::TotalTimeout;
/// use tower_failover_core::error::{find, Attempt, Elapsed, TimeoutKind};
/// use tower_failover_core::{FailureKind, Outcome, ProviderId};
///
/// let attempt = Attempt::new(ProviderId::new("a", "m"), Outcome::failure(FailureKind::Timeout), Duration::from_secs(3));
/// let err: tower::BoxError = TotalTimeout::new(Elapsed::new(TimeoutKind::Total, Duration::from_secs(3)), vec![attempt]).into();
/// assert_eq!(find::<Elapsed>(&*err).unwrap().kind(), TimeoutKind::Total);
/// assert_eq!(find::<TotalTimeout>(&*err).unwrap().attempts().len(), 1);
/// assert_eq!(err.to_string(), "total timeout after 3000 ms: a/m: failure (timeout) after 3000 ms");
/// ```
#[derive(Debug, Clone)]
pub struct TotalTimeout {
    elapsed: Elapsed,
    attempts: Vec<Attempt>,
}

impl TotalTimeout {
    /// The deadline `elapsed` passed after `attempts`.
    pub fn new(elapsed: Elapsed, attempts: Vec<Attempt>) -> Self {
        TotalTimeout { elapsed, attempts }
    }

    /// Which deadline, after how long.
    pub fn elapsed(&self) -> &Elapsed {
        &self.elapsed
    }

    /// Every attempt, in order.
    pub fn attempts(&self) -> &[Attempt] {
        &self.attempts
    }
}

impl fmt::Display for TotalTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.elapsed)?;
        for (i, a) in self.attempts.iter().enumerate() {
            f.write_str(if i == 0 { ": " } else { "; " })?;
            write!(f, "{a}")?;
        }
        Ok(())
    }
}

impl Error for TotalTimeout {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&self.elapsed)
    }
}
