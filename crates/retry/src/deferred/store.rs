use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http::{Request, Response};
use http_body::Body;
use http_body_util::{BodyExt, Limited};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::BoxError;
use tower::util::ServiceExt;
use tower_failover_core::metrics;
use tower_service::Service;

use super::{DeferredConfig, DeferredFull, JobId, JobStatus};

enum Entry {
    Pending {
        since: Instant,
        task: JoinHandle<()>,
    },
    Finished {
        at: Instant,
        status: JobStatus,
    },
}

struct Inner {
    config: DeferredConfig,
    jobs: Mutex<HashMap<JobId, Entry>>,
    counter: AtomicU64,
    salt: u64,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let jobs = self.jobs.get_mut().unwrap_or_else(PoisonError::into_inner);
        for entry in jobs.values() {
            if let Entry::Pending { task, .. } = entry {
                task.abort();
            }
        }
    }
}

/// A bounded store of deferred jobs run through a service (normally the full stack
/// with a [`WaitQueueLayer`](crate::WaitQueueLayer) whose `max_wait` is long).
///
/// ```
/// use std::time::Duration;
/// use http::{Request, Response};
/// use tower::service_fn;
/// use tower_failover_retry::{Deferred, DeferredConfig, JobStatus};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() {
/// let stack = service_fn(|_req: Request<String>| async {
///     tokio::time::sleep(Duration::from_secs(5)).await; // until a provider recovers
///     Ok::<_, tower::BoxError>(Response::new(String::from("{\"ok\":true}")))
/// });
/// let jobs = Deferred::new(stack, DeferredConfig::default());
/// let id = jobs.submit(Request::new(String::from("{}"))).unwrap(); // the gateway answers 202 with this id
/// assert!(matches!(jobs.status(&id), JobStatus::Pending { .. }));
/// tokio::time::sleep(Duration::from_secs(6)).await;
/// match jobs.status(&id) {
///     JobStatus::Done { status, body, .. } => { assert_eq!(status, 200); assert_eq!(body, "{\"ok\":true}"); }
///     other => panic!("{other:?}"),
/// }
/// # }
/// ```
pub struct Deferred<S> {
    svc: S,
    inner: Arc<Inner>,
}

impl<S: Clone> Clone for Deferred<S> {
    fn clone(&self) -> Self {
        Deferred {
            svc: self.svc.clone(),
            inner: self.inner.clone(),
        }
    }
}

impl<S> fmt::Debug for Deferred<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Deferred")
            .field("config", &self.inner.config)
            .field("pending", &self.pending())
            .finish()
    }
}

impl<S> Deferred<S> {
    /// A job store running jobs through `svc`.
    pub fn new(svc: S, config: DeferredConfig) -> Self {
        Deferred {
            svc,
            inner: Arc::new(Inner {
                config,
                jobs: Mutex::new(HashMap::new()),
                counter: AtomicU64::new(0),
                salt: tower_failover_core::rng::entropy_seed(),
            }),
        }
    }

    /// The service jobs run through.
    pub fn get_ref(&self) -> &S {
        &self.svc
    }

    /// The service jobs run through, mutably.
    pub fn get_mut(&mut self) -> &mut S {
        &mut self.svc
    }

    /// Unwraps the service jobs run through (jobs still running keep running while
    /// another clone of this store lives).
    pub fn into_inner(self) -> S {
        self.svc
    }

    /// How many jobs are waiting or running.
    pub fn pending(&self) -> usize {
        self.inner
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .values()
            .filter(|e| matches!(e, Entry::Pending { .. }))
            .count()
    }

    /// Where job `id` is.
    pub fn status(&self, id: &JobId) -> JobStatus {
        let jobs = self
            .inner
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match jobs.get(id) {
            Some(Entry::Pending { since, .. }) => JobStatus::Pending {
                waited: since.elapsed(),
            },
            Some(Entry::Finished { status, .. }) => status.clone(),
            None => JobStatus::Unknown,
        }
    }

    fn next_id(&self) -> JobId {
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed);
        let mut rng = tower_failover_core::rng::Rng::seeded(self.inner.salt ^ n.rotate_left(17));
        JobId(format!("job_{n:x}{:016x}", rng.next_u64()))
    }
}

impl<S> Deferred<S> {
    /// Accepts `req` as a job and starts it; returns its id, or [`DeferredFull`] when
    /// the store holds `capacity` jobs (expired answers are dropped first).
    pub fn submit<B, RB>(&self, req: Request<B>) -> Result<JobId, DeferredFull>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Send + 'static,
        RB: Body + Send + 'static,
        RB::Data: Send,
        RB::Error: Into<BoxError>,
    {
        let now = Instant::now();
        let mut jobs = self
            .inner
            .jobs
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let keep = self.inner.config.keep_results;
        jobs.retain(|_, e| match e {
            Entry::Finished { at, .. } => now.saturating_duration_since(*at) < keep,
            Entry::Pending { .. } => true,
        });
        if jobs.len() >= self.inner.config.capacity {
            return Err(DeferredFull {
                capacity: self.inner.config.capacity,
            });
        }
        let id = self.next_id();
        let svc = self.svc.clone();
        let weak = Arc::downgrade(&self.inner);
        let config = self.inner.config;
        let job = id.clone();
        let task = tokio::spawn(async move {
            let run = async {
                let res = svc.oneshot(req).await.map_err(Into::into)?;
                let (parts, body) = res.into_parts();
                let body = Limited::new(body, config.max_body_bytes)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, BoxError>(JobStatus::Done {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            };
            let status = match tokio::time::timeout(config.max_wait, run).await {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => JobStatus::Failed {
                    error: e.to_string(),
                },
                Err(_) => JobStatus::Failed {
                    error: format!(
                        "no provider answered within {} ms",
                        config.max_wait.as_millis()
                    ),
                },
            };
            if let Some(inner) = weak.upgrade() {
                let ok = matches!(status, JobStatus::Done { .. });
                tracing::info!(job = %job, ok, "deferred job finished");
                metrics::count_result(metrics::names::DEFERRED, if ok { "done" } else { "failed" });
                inner
                    .jobs
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .insert(
                        job,
                        Entry::Finished {
                            at: Instant::now(),
                            status,
                        },
                    );
            }
        });
        jobs.insert(id.clone(), Entry::Pending { since: now, task });
        let waiting = jobs
            .values()
            .filter(|e| matches!(e, Entry::Pending { .. }))
            .count();
        drop(jobs);
        tracing::warn!(job = %id, waiting, "request deferred: jobs are waiting for a provider");
        metrics::count_result(metrics::names::DEFERRED, "accepted");
        Ok(id)
    }
}
