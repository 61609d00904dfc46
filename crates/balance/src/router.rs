//! The engine behind [`Balance`](crate::Balance) and [`Fallback`](crate::Fallback):
//! the shared provider table, its runtime [`RouterHandle`], and the per-clone router that
//! starts each request.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::task::{Context, Poll};

use http::Request;
use tokio::time::Instant;
use tower::BoxError;
use tower_failover_core::health::FULL_SHARE_PPM;
use tower_failover_core::rng::{Rng, SharedRng, entropy_seed};
use tower_failover_core::{Deadline, Health, ProviderId};

use crate::attrs::{Attributes, RequestAttrs};
use crate::config::Strategy;
use crate::error::ConfigError;
use crate::future::ResponseFuture;
use crate::pick::{LazyNow, Pick, available, select};
use crate::provider::ProviderOptions;
use crate::table::{Admitted, Entry, Route, Spec, Table, Tried, is_ramping};

/// State shared by every clone of a router and its handles.
pub(crate) struct Shared<S> {
    spec: Mutex<Spec<S>>,
    table: RwLock<Arc<Table<S>>>,
    version: AtomicU64,
    seeder: SharedRng,
}

impl<S: Clone> Shared<S> {
    pub(crate) fn new(spec: Spec<S>, seed: Option<u64>) -> Arc<Shared<S>> {
        let table = Arc::new(spec.build(1));
        Arc::new(Shared {
            spec: Mutex::new(spec),
            table: RwLock::new(table),
            version: AtomicU64::new(1),
            seeder: SharedRng::seeded(seed.unwrap_or_else(entropy_seed)),
        })
    }

    fn edit<T>(
        &self,
        f: impl FnOnce(&mut Spec<S>) -> Result<T, ConfigError>,
    ) -> Result<T, ConfigError> {
        let mut spec = self.spec.lock().unwrap_or_else(PoisonError::into_inner);
        let out = f(&mut spec)?;
        let version = self.version.load(Ordering::Acquire) + 1;
        let table = Arc::new(spec.build(version));
        *self.table.write().unwrap_or_else(PoisonError::into_inner) = table;
        self.version.store(version, Ordering::Release);
        Ok(out)
    }
}

impl<S> Shared<S> {
    fn current(&self) -> Arc<Table<S>> {
        self.table
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// Adds and removes providers of a running [`Balance`](crate::Balance) or
/// [`Fallback`](crate::Fallback). Cheap to clone.
///
/// Changes take effect for requests that start after them; a request in flight
/// keeps the set of providers it started with. Removing the target of a typed
/// fallback disables that fallback until a provider with its id is added again.
///
/// ```
/// use http::{Request, Response};
/// use tower::service_fn;
/// use tower_failover_balance::{Balance, ProviderOptions};
/// use tower_failover_core::Health;
///
/// let svc = || service_fn(|_req: Request<String>| async {
///     Ok::<_, tower::BoxError>(Response::new(String::new()))
/// });
/// let balance = Balance::new([(Health::standalone("a", "m"), svc())]);
/// let handle = balance.handle();
/// handle.add(Health::standalone("b", "m"), svc()).unwrap();
/// handle
///     .add_with(Health::standalone("c", "m"), svc(), ProviderOptions::default().weight(3.0))
///     .unwrap();
/// assert_eq!(handle.len(), 3);
/// assert!(handle.remove(&"a/m".parse().unwrap()));
/// assert_eq!(handle.ids().len(), 2);
/// ```
pub struct RouterHandle<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for RouterHandle<S> {
    fn clone(&self) -> Self {
        RouterHandle {
            shared: self.shared.clone(),
        }
    }
}

impl<S> fmt::Debug for RouterHandle<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterHandle")
            .field("providers", &self.ids())
            .finish()
    }
}

impl<S: Clone> RouterHandle<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        RouterHandle { shared }
    }

    /// Adds a provider with default options (or replaces the one with the same id).
    pub fn add(&self, health: Health, service: S) -> Result<(), ConfigError> {
        self.add_with(health, service, ProviderOptions::default())
    }

    /// Adds a provider with options (or replaces the one with the same id).
    pub fn add_with(
        &self,
        health: Health,
        service: S,
        options: ProviderOptions,
    ) -> Result<(), ConfigError> {
        self.shared
            .edit(|spec| spec.insert(Entry::new(health, service, options)))
    }

    /// Removes a provider; whether it was there.
    pub fn remove(&self, id: &ProviderId) -> bool {
        self.shared
            .edit(|spec| Ok(spec.remove(id)))
            .unwrap_or(false)
    }
}

impl<S> RouterHandle<S> {
    /// The providers, in the order they were added.
    pub fn ids(&self) -> Vec<ProviderId> {
        self.shared
            .current()
            .endpoints
            .iter()
            .map(|e| e.health.id().clone())
            .collect()
    }

    /// The health handles of the providers, in the order they were added.
    pub fn healths(&self) -> Vec<Health> {
        self.shared
            .current()
            .endpoints
            .iter()
            .map(|e| e.health.clone())
            .collect()
    }

    /// How many providers there are.
    pub fn len(&self) -> usize {
        self.shared.current().len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// How many requests pass between two looks at the clock to decide whether the
/// ramp view is due for a refresh.
const REFRESH_CHECK_EVERY: u32 = 16;

/// Which providers are under a recovery ramp, refreshed every `ramp_refresh` (the
/// clock is looked at every 16 requests; a pass over the table, amortised over the
/// requests in between). A provider that starts ramping is left out of picks until
/// the next refresh (conservative: it gets less than its share, never more).
#[derive(Debug, Default)]
struct RampView {
    ramping: Vec<u32>,
    next: Option<Instant>,
    version: u64,
    calls: u32,
}

impl RampView {
    fn refresh<S>(&mut self, table: &Table<S>, now: &LazyNow) {
        let every = table.settings.failover.ramp_refresh;
        if self.version == table.version {
            self.calls = self.calls.wrapping_add(1);
            if !every.is_zero() && !self.calls.is_multiple_of(REFRESH_CHECK_EVERY) {
                return;
            }
            if self.next.is_some_and(|n| now.get() < n) {
                return;
            }
        }
        self.ramping.clear();
        for (i, ep) in table.endpoints.iter().enumerate() {
            if is_ramping(&ep.health) {
                self.ramping.push(i as u32);
            }
        }
        self.version = table.version;
        self.next = Some(now.get() + every);
    }

    /// Samples the request into ramping providers. The balancer admits at most one,
    /// with probability equal to its share of all requests; the ordered chain admits
    /// each with its own share.
    fn draw<S>(&self, table: &Table<S>, route: &Route, rng: &mut Rng, now: &LazyNow) -> Admitted {
        let mut admitted = Admitted::default();
        if self.ramping.is_empty() {
            return admitted;
        }
        let ordered = table.settings.strategy == Strategy::Ordered;
        let u = rng.below(u64::from(FULL_SHARE_PPM));
        let mut cumulative = 0u64;
        for &i in &self.ramping {
            let health = &table.endpoint(i).health;
            if !is_ramping(health) || !table.accepts(i, route) {
                continue;
            }
            let share = u64::from(health.ramp_share_ppm());
            if ordered {
                if rng.below(u64::from(FULL_SHARE_PPM)) < share {
                    admitted.push(i);
                }
            } else {
                cumulative += share;
                if u < cumulative {
                    if available(health, now) {
                        admitted.push(i);
                    }
                    break;
                }
            }
        }
        admitted
    }
}

/// One clone of a router: a cached table, its ramp view and its random generator.
pub(crate) struct RouterCore<S, C, A> {
    shared: Arc<Shared<S>>,
    table: Arc<Table<S>>,
    view: RampView,
    rng: Rng,
    classifier: C,
    attributes: A,
}

impl<S, C: Clone, A: Clone> Clone for RouterCore<S, C, A> {
    fn clone(&self) -> Self {
        RouterCore {
            shared: self.shared.clone(),
            table: self.table.clone(),
            view: RampView::default(),
            rng: Rng::seeded(self.shared.seeder.next_u64()),
            classifier: self.classifier.clone(),
            attributes: self.attributes.clone(),
        }
    }
}

impl<S, C, A> fmt::Debug for RouterCore<S, C, A> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RouterCore")
            .field(
                "providers",
                &self
                    .table
                    .endpoints
                    .iter()
                    .map(|e| e.health.id())
                    .collect::<Vec<_>>(),
            )
            .field("settings", &self.table.settings)
            .finish_non_exhaustive()
    }
}

impl<S, C, A> RouterCore<S, C, A> {
    pub(crate) fn new(shared: Arc<Shared<S>>, classifier: C, attributes: A) -> Self {
        let table = shared.current();
        let rng = Rng::seeded(shared.seeder.next_u64());
        RouterCore {
            shared,
            table,
            view: RampView::default(),
            rng,
            classifier,
            attributes,
        }
    }

    pub(crate) fn shared(&self) -> &Arc<Shared<S>> {
        &self.shared
    }

    /// Picks up a new table if the handle changed the providers.
    #[inline]
    fn sync(&mut self) {
        if self.shared.version.load(Ordering::Acquire) != self.table.version {
            self.table = self.shared.current();
        }
    }

    pub(crate) fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Readiness is decided per attempt, among the request's candidates, in the
        // response future: a router never holds a caller waiting here.
        self.sync();
        Poll::Ready(Ok(()))
    }

    pub(crate) fn ids(&self) -> Vec<ProviderId> {
        self.table
            .endpoints
            .iter()
            .map(|e| e.health.id().clone())
            .collect()
    }

    /// The provider the next request with these attributes would try first, ignoring
    /// readiness (a dry run: nothing is sent, nothing is reserved).
    pub(crate) fn pick(&mut self, attrs: &RequestAttrs<'_>) -> Option<&Health> {
        self.sync();
        let now = LazyNow::new();
        self.view.refresh(&self.table, &now);
        let route = self.table.route(attrs);
        let admitted = self.view.draw(&self.table, &route, &mut self.rng, &now);
        let first = match self.table.settings.strategy {
            Strategy::Ordered => None,
            _ => admitted.first(),
        };
        let i = match first {
            Some(i) => i,
            None => {
                let tried = Tried::new(self.table.len());
                let pick = Pick {
                    tried: &tried,
                    admitted: &admitted,
                    now: &now,
                    closed: false,
                };
                select(&self.table, &route, &mut self.rng, &pick)?
            }
        };
        Some(&self.table.endpoint(i).health)
    }

    #[inline]
    pub(crate) fn call<B>(&mut self, mut req: Request<B>) -> ResponseFuture<S, B, C>
    where
        S: tower_service::Service<Request<B>>,
        C: Clone,
        A: Attributes<B>,
    {
        self.sync();
        let now = LazyNow::new();
        self.view.refresh(&self.table, &now);
        let route = {
            let attrs = self.attributes.attributes(&req);
            self.table.route(&attrs)
        };
        if let Some(total) = self.table.settings.failover.total_timeout {
            Deadline::set_on(&mut req, now.get() + total);
        }
        // The deadline, and how long it gave this request (for the error).
        let deadline = Deadline::of(&req).map(|d| (d.0, d.0.saturating_duration_since(now.get())));
        if let Some(budget) = &self.table.budget {
            budget.deposit();
        }
        let mut rng = self.rng.fork();
        let admitted = self.view.draw(&self.table, &route, &mut rng, &now);
        let first = match self.table.settings.strategy {
            Strategy::Ordered => None,
            _ => admitted.first(),
        };
        ResponseFuture::new(
            self.table.clone(),
            req,
            self.classifier.clone(),
            rng,
            route,
            admitted,
            first,
            deadline,
        )
    }
}
