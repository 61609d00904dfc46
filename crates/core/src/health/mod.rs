//! The per-(provider, model) health handle.
//!
//! A [`Health`] is a cheap, cloneable handle (an `Arc`) to everything the layers know
//! about one provider and model: circuit state, time to first byte, in-flight
//! requests, rate-limit deadline (through its [`QuotaGroup`]), recovery-ramp share,
//! outcome counters, and usage. Layers write it; balancers, ramps and snapshots read
//! it. Every read on the hot path is an atomic load of local memory. Changes are
//! published as [`HealthEvent`](crate::event::HealthEvent)s and, for the shared part, to the
//! [`StateStore`](crate::store::StateStore).
//!
//! Create handles from a [`Registry`](crate::Registry) so that they share an event
//! channel, quota groups and a store; [`Health::standalone`] makes a lone one.
//!
//! # Hangs: suspicion before any timeout
//!
//! A provider that accepts connections and then says nothing is the costliest
//! failure: every request sent to it waits for a whole timeout, and a first-byte
//! timeout of 10 s at 100 requests per second still sends it 1,000 requests before
//! the first one fails. So the handle also watches *silence*: it counts the
//! requests waiting for their answer (from [`Health::start_request`] until
//! [`InFlight::answered`]) and remembers the instant of the provider's last sign of
//! life (an answer, an error that is not a timeout, or the moment a request started
//! waiting while none was). A provider is **suspect** ([`Health::is_suspect`]) when
//! requests are waiting and it has been silent for longer than
//!
//! ```text
//! max(suspect_factor × time-to-first-byte EWMA, suspect_floor)    (defaults: 4 ×, 500 ms)
//! ```
//!
//! (an unmeasured provider counts as 500 ms, so 2 s). Routers send new requests to a
//! provider that is not suspect when they have one, and to a suspect one only as a
//! last resort: suspicion never fails a request. Requests already waiting keep
//! their own timeouts, which end them and count against the provider's circuit.
//! The first answer (or the last waiting request ending) clears it. Entering and
//! leaving emit [`HealthEventKind::Suspect`](crate::event::HealthEventKind::Suspect), and snapshots show `suspect`.
//! Checking costs a few atomic loads; nothing is allocated. Tune or turn it off
//! with [`HealthConfig`].
//!
//! One type a file: [`ProviderId`] (`id.rs`), [`CircuitState`] (`circuit.rs`),
//! [`PeakEwma`] (`ewma.rs`), [`QuotaGroup`] (`quota.rs`), [`HealthConfig`]
//! (`config.rs`), [`Health`] and [`WeakHealth`] (`handle.rs`) and [`InFlight`]
//! (`in_flight.rs`).

mod circuit;
mod config;
mod ewma;
mod handle;
mod id;
mod in_flight;
mod quota;
#[cfg(test)]
mod tests;

pub use circuit::CircuitState;
pub use config::HealthConfig;
pub use ewma::PeakEwma;
pub use handle::{FULL_SHARE_PPM, Health, WeakHealth};
pub use id::ProviderId;
pub use in_flight::InFlight;
pub use quota::QuotaGroup;
