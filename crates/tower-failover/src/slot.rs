//! What goes in each position of a provider's stack: the built-in layer with its
//! configuration, your own layer, or nothing.

use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use tower::BoxError;
use tower_failover_core::replay::ReplayBody;
use tower_failover_core::{Health, duration_serde};
use tower_layer::Layer;
use tower_service::Service;

use crate::service::{ProviderService, boxed};

/// A layer of your own for one position of every provider's stack (or an extra one
/// on top of it).
///
/// It receives the provider's [`Health`] handle (so it can read or write the state
/// the other layers share) and the service below it, and returns the service to put
/// in its place. Both are type-erased [`ProviderService`]s.
///
/// ```
/// use std::time::Duration;
/// use tower::timeout::TimeoutLayer;
/// use tower_failover::CustomLayer;
///
/// // Any tower layer, made once per provider:
/// let timeout = CustomLayer::from_layer(|_health| TimeoutLayer::new(Duration::from_secs(30)));
/// // Or a plain function of the service below:
/// let same = CustomLayer::new(|_health, inner| inner);
/// # let _ = (timeout, same);
/// ```
#[derive(Clone)]
pub struct CustomLayer {
    make: Arc<MakeService>,
}

type MakeService = dyn Fn(&Health, ProviderService) -> ProviderService + Send + Sync;

impl CustomLayer {
    /// A layer from a function of the provider's health and the service below.
    pub fn new<F>(make: F) -> Self
    where
        F: Fn(&Health, ProviderService) -> ProviderService + Send + Sync + 'static,
    {
        CustomLayer {
            make: Arc::new(make),
        }
    }

    /// A layer from any tower [`Layer`], made per provider by `make`. Its service must
    /// be `Clone + Send + Sync`, fail with anything that converts into a
    /// [`BoxError`], and answer with a body of [`Bytes`].
    pub fn from_layer<F, L, B>(make: F) -> Self
    where
        F: Fn(&Health) -> L + Send + Sync + 'static,
        L: Layer<ProviderService>,
        L::Service:
            Service<Request<ReplayBody>, Response = Response<B>> + Clone + Send + Sync + 'static,
        <L::Service as Service<Request<ReplayBody>>>::Error: Into<BoxError>,
        <L::Service as Service<Request<ReplayBody>>>::Future: Send + 'static,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        CustomLayer::new(move |health, inner| boxed(make(health).layer(inner)))
    }

    /// Applies the layer for `health`'s provider.
    pub fn apply(&self, health: &Health, inner: ProviderService) -> ProviderService {
        (self.make)(health, inner)
    }
}

impl fmt::Debug for CustomLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("CustomLayer")
    }
}

/// One position of a provider's stack.
///
/// Every builder method of [`StackBuilder`](crate::StackBuilder) that sets a
/// position takes `impl Into<Slot<C>>`: pass the built-in layer's configuration, a
/// [`CustomLayer`], or [`Slot::Off`].
#[derive(Debug, Clone)]
pub enum Slot<C> {
    /// The built-in layer with this configuration.
    Builtin(C),
    /// Your own layer in its place.
    Custom(CustomLayer),
    /// Nothing in this position.
    Off,
}

impl<C> Slot<C> {
    /// Your own layer in this position (same as `CustomLayer::into()`).
    pub fn custom(layer: CustomLayer) -> Self {
        Slot::Custom(layer)
    }

    /// Whether the position is empty.
    pub fn is_off(&self) -> bool {
        matches!(self, Slot::Off)
    }
}

impl<C: Default> Default for Slot<C> {
    fn default() -> Self {
        Slot::Builtin(C::default())
    }
}

impl<C> From<Toggle<C>> for Slot<C> {
    fn from(t: Toggle<C>) -> Self {
        match t {
            Toggle::On(c) => Slot::Builtin(c),
            Toggle::Off => Slot::Off,
        }
    }
}

macro_rules! slot_from {
    ($($(#[$m:meta])* $ty:ty),* $(,)?) => {$(
        $(#[$m])*
        impl From<$ty> for Slot<$ty> {
            fn from(c: $ty) -> Self {
                Slot::Builtin(c)
            }
        }
        $(#[$m])*
        impl From<CustomLayer> for Slot<$ty> {
            fn from(l: CustomLayer) -> Self {
                Slot::Custom(l)
            }
        }
    )*};
}

slot_from!(
    ObserveConfig,
    #[cfg(feature = "circuit")]
    tower_failover_circuit::CircuitConfig,
    #[cfg(feature = "ramp")]
    tower_failover_ramp::RampConfig,
    #[cfg(feature = "validate")]
    tower_failover_validate::ValidateConfig,
    #[cfg(feature = "overflow")]
    tower_failover_overflow::QuotaConfig,
);

/// Settings of the built-in [`ObserveLayer`](tower_failover_core::observe::ObserveLayer).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ObserveConfig {
    /// How long a 429 that names no wait keeps the provider's quota group limited.
    /// Default: the provider's quota `limits.default_retry_after` (1 s unless
    /// configured), so that the observer and the quota layer agree; waits a 429
    /// names are capped by the same `limits.max_wait` (5 min unless configured).
    #[serde(with = "duration_serde::option")]
    pub default_retry_after: Option<Duration>,
}

/// A layer that is on (with its configuration) or off, as written in a
/// configuration file: `circuit = false` turns it off, `circuit = true` or an
/// absent key uses its defaults, and a table configures it.
///
/// ```
/// # use tower_failover::Toggle;
/// # #[derive(serde::Deserialize)] struct File { queue: Toggle<tower_failover::ObserveConfig> }
/// let off: File = toml::from_str("queue = false").unwrap();
/// assert!(off.queue.is_off());
/// let on: File = toml::from_str("[queue]\ndefault_retry_after = \"5s\"").unwrap();
/// assert!(on.queue.get().is_some());
/// ```
#[derive(Debug, Clone, PartialEq)]
pub enum Toggle<C> {
    /// On, with this configuration.
    On(C),
    /// Off.
    Off,
}

impl<C> Toggle<C> {
    /// The configuration, when on.
    pub fn get(&self) -> Option<&C> {
        match self {
            Toggle::On(c) => Some(c),
            Toggle::Off => None,
        }
    }

    /// Whether it is off.
    pub fn is_off(&self) -> bool {
        matches!(self, Toggle::Off)
    }
}

impl<C: Default> Default for Toggle<C> {
    fn default() -> Self {
        Toggle::On(C::default())
    }
}

impl<'de, C> Deserialize<'de> for Toggle<C>
where
    C: Deserialize<'de> + Default,
{
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V<C>(PhantomData<C>);

        impl<'de, C: Deserialize<'de> + Default> Visitor<'de> for V<C> {
            type Value = Toggle<C>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("true, false or a table of settings")
            }

            fn visit_bool<E: de::Error>(self, on: bool) -> Result<Toggle<C>, E> {
                Ok(if on {
                    Toggle::On(C::default())
                } else {
                    Toggle::Off
                })
            }

            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Toggle<C>, A::Error> {
                C::deserialize(de::value::MapAccessDeserializer::new(map)).map(Toggle::On)
            }
        }

        deserializer.deserialize_any(V(PhantomData))
    }
}
