use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response, StatusCode};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower::BoxError;
use tower::util::ServiceExt;
use tower_failover_core::error::{BodyTooLarge, Elapsed, TimeoutKind};
use tower_failover_core::{ErrorClass, error_class, metrics};
use tower_service::Service;

use super::job::Why;
use super::{DeferredConfig, DeferredFull, JobId, JobStatus};

enum Entry {
    Pending {
        since: Instant,
        /// Kept so that dropping the store aborts the job.
        task: JoinHandle<()>,
        /// The request's size, counted against `max_total_bytes`.
        bytes: usize,
    },
    Finished {
        at: Instant,
        status: JobStatus,
        bytes: usize,
    },
    /// A tombstone: the answer is gone, the id answers "expired" for a while.
    Expired { at: Instant },
}

/// The jobs and the bytes they hold, under one lock.
struct Jobs {
    map: HashMap<JobId, Entry>,
    bytes: usize,
    last_sweep: Option<Instant>,
}

impl Jobs {
    /// Jobs that count against `capacity`: waiting, running or answered.
    fn live(&self) -> usize {
        self.map
            .values()
            .filter(|e| !matches!(e, Entry::Expired { .. }))
            .count()
    }

    /// Turns answers older than `keep_results` into tombstones and forgets
    /// tombstones older than `keep_results` (and the oldest past `capacity` of
    /// them). At most once a second unless `force`.
    fn sweep(&mut self, now: Instant, config: &DeferredConfig, force: bool) {
        if !force
            && self
                .last_sweep
                .is_some_and(|t| now.saturating_duration_since(t) < SWEEP_EVERY)
        {
            return;
        }
        self.last_sweep = Some(now);
        let keep = config.keep_results;
        let mut freed = 0;
        for entry in self.map.values_mut() {
            if let Entry::Finished { at, bytes, .. } = entry
                && now.saturating_duration_since(*at) >= keep
            {
                freed += *bytes;
                *entry = Entry::Expired { at: *at + keep };
            }
        }
        self.bytes = self.bytes.saturating_sub(freed);
        self.map.retain(|_, e| match e {
            Entry::Expired { at } => now.saturating_duration_since(*at) < keep,
            _ => true,
        });
        let mut tombs: Vec<(Instant, JobId)> = self
            .map
            .iter()
            .filter_map(|(id, e)| match e {
                Entry::Expired { at } => Some((*at, id.clone())),
                _ => None,
            })
            .collect();
        if tombs.len() > config.capacity {
            tombs.sort_unstable_by_key(|(at, _)| *at);
            for (_, id) in &tombs[..tombs.len() - config.capacity] {
                self.map.remove(id);
            }
        }
    }

    /// Expires the oldest kept answer before its time; false when none is left.
    fn expire_oldest_answer(&mut self, now: Instant) -> bool {
        let oldest = self
            .map
            .iter()
            .filter_map(|(id, e)| match e {
                Entry::Finished { at, .. } => Some((*at, id.clone())),
                _ => None,
            })
            .min_by_key(|(at, _)| *at);
        let Some((_, id)) = oldest else {
            return false;
        };
        if let Some(entry) = self.map.get_mut(&id)
            && let Entry::Finished { bytes, .. } = entry
        {
            self.bytes = self.bytes.saturating_sub(*bytes);
            *entry = Entry::Expired { at: now };
        }
        true
    }
}

/// How often reads sweep expired answers.
const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// What a finished job holds, counted against `max_total_bytes`.
fn size_of(status: &JobStatus) -> usize {
    match status {
        JobStatus::Done { headers, body, .. } => {
            body.len()
                + headers
                    .iter()
                    .map(|(k, v)| k.as_str().len() + v.len())
                    .sum::<usize>()
        }
        JobStatus::Failed { error, .. } => error.len(),
        _ => 0,
    }
}

struct Inner {
    config: DeferredConfig,
    jobs: Mutex<Jobs>,
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Jobs> {
        self.jobs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a job's end: its request's bytes are released, its answer's
    /// counted (older answers expire early to make room; an answer that cannot
    /// fit fails the job).
    fn finish(&self, job: JobId, status: JobStatus) {
        let config = &self.config;
        let now = Instant::now();
        let mut jobs = self.lock();
        match jobs.map.remove(&job) {
            Some(Entry::Pending { bytes, .. }) => jobs.bytes = jobs.bytes.saturating_sub(bytes),
            // Removed (cancelled) while it finished: its answer is not kept.
            None => return,
            Some(other) => {
                jobs.map.insert(job, other);
                return;
            }
        }
        jobs.sweep(now, config, true);
        let mut size = size_of(&status);
        while jobs.bytes + size > config.max_total_bytes && jobs.expire_oldest_answer(now) {}
        let status = if jobs.bytes + size > config.max_total_bytes {
            let error = format!(
                "the answer ({size} bytes) did not fit in the deferred store ({} bytes)",
                config.max_total_bytes
            );
            size = error.len();
            JobStatus::Failed {
                error,
                class: ErrorClass {
                    status: StatusCode::SERVICE_UNAVAILABLE,
                    kind: "deferred_store_full",
                    retry_after: None,
                },
            }
        } else {
            status
        };
        jobs.bytes += size;
        jobs.map.insert(
            job,
            Entry::Finished {
                at: now,
                status,
                bytes: size,
            },
        );
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let jobs = self.jobs.get_mut().unwrap_or_else(PoisonError::into_inner);
        for entry in jobs.map.values() {
            if let Entry::Pending { task, .. } = entry {
                task.abort();
            }
        }
    }
}

/// A bounded store of deferred jobs run through a service (normally the full stack
/// behind a [`WaitQueue`](crate::WaitQueue) that waits for a recovery: see
/// [`WaitQueue::wait_for_recovery`](crate::WaitQueue::wait_for_recovery)).
///
/// Ids are 128 bits from the operating system's random source. The store holds at
/// most `capacity` jobs and `max_total_bytes` bytes (requests waiting, by their
/// body's size hint, and answers kept); each job runs for at most `max_wait`; its
/// answer is kept `keep_results`, after which its id reads
/// [`JobStatus::Expired`] for as long again.
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
/// assert_eq!(id.as_str().len(), 32);
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
                jobs: Mutex::new(Jobs {
                    map: HashMap::new(),
                    bytes: 0,
                    last_sweep: None,
                }),
            }),
        }
    }

    /// The store's settings.
    pub fn config(&self) -> &DeferredConfig {
        &self.inner.config
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
            .lock()
            .map
            .values()
            .filter(|e| matches!(e, Entry::Pending { .. }))
            .count()
    }

    /// How many bytes the store holds: requests waiting and answers kept.
    pub fn held_bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    /// Where job `id` is.
    pub fn status(&self, id: &JobId) -> JobStatus {
        let now = Instant::now();
        let mut jobs = self.inner.lock();
        jobs.sweep(now, &self.inner.config, false);
        match jobs.map.get(id) {
            Some(Entry::Pending { since, .. }) => JobStatus::Pending {
                waited: now.saturating_duration_since(*since),
            },
            Some(Entry::Finished { at, .. })
                if now.saturating_duration_since(*at) >= self.inner.config.keep_results =>
            {
                JobStatus::Expired
            }
            Some(Entry::Finished { status, .. }) => status.clone(),
            Some(Entry::Expired { .. }) => JobStatus::Expired,
            None => JobStatus::Unknown,
        }
    }
}

impl<S> Deferred<S> {
    /// Forgets job `id`: a job still waiting or running is cancelled (its request
    /// to a provider, if one is under way, is dropped), an answer kept is dropped,
    /// and the id reads [`JobStatus::Unknown`] from now on. Returns whether there
    /// was such a job (waiting, running, answered or expired).
    pub fn remove(&self, id: &JobId) -> bool {
        let mut jobs = self.inner.lock();
        let Some(entry) = jobs.map.remove(id) else {
            return false;
        };
        match entry {
            Entry::Pending { task, bytes, .. } => {
                task.abort();
                jobs.bytes = jobs.bytes.saturating_sub(bytes);
                drop(jobs);
                tracing::info!(job = id.short(), "deferred job cancelled");
                metrics::count_result(metrics::names::DEFERRED, "cancelled");
            }
            Entry::Finished { bytes, .. } => {
                jobs.bytes = jobs.bytes.saturating_sub(bytes);
            }
            Entry::Expired { .. } => {}
        }
        true
    }

    /// Accepts `req` as a job and starts it; returns its id, or [`DeferredFull`] when
    /// the store holds `capacity` jobs or the request would take it past
    /// `max_total_bytes` (expired answers are dropped first), or when the
    /// operating system gave no random bytes for an id.
    pub fn submit<B, RB>(&self, req: Request<B>) -> Result<JobId, DeferredFull>
    where
        S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
        B: Body + Send + 'static,
        RB: Body + Send + 'static,
        RB::Data: Send,
        RB::Error: Into<BoxError>,
    {
        let config = self.inner.config;
        let full = |why| DeferredFull {
            capacity: config.capacity,
            why,
        };
        let hint = req.body().size_hint();
        let size = usize::try_from(hint.exact().unwrap_or(hint.lower())).unwrap_or(usize::MAX);
        let now = Instant::now();
        let mut jobs = self.inner.lock();
        jobs.sweep(now, &config, true);
        if jobs.live() >= config.capacity {
            metrics::count_result(metrics::names::DEFERRED, "full");
            return Err(full(Why::Jobs));
        }
        if jobs.bytes.saturating_add(size) > config.max_total_bytes {
            metrics::count_result(metrics::names::DEFERRED, "full");
            return Err(full(Why::Bytes(config.max_total_bytes)));
        }
        // 128 random bits do not collide in practice; a duplicate is drawn again.
        let mut id = None;
        for _ in 0..4 {
            match JobId::random() {
                Ok(fresh) if !jobs.map.contains_key(&fresh) => {
                    id = Some(fresh);
                    break;
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::error!(error = %e, "no random bytes for a deferred job id");
                    break;
                }
            }
        }
        let Some(id) = id else {
            return Err(full(Why::NoRandom));
        };
        let svc = self.svc.clone();
        let weak = Arc::downgrade(&self.inner);
        let job = id.clone();
        let task = tokio::spawn(async move {
            let run = async {
                let res = svc.oneshot(req).await.map_err(Into::into)?;
                let (parts, body) = res.into_parts();
                let body = Limited::new(body, config.max_body_bytes)
                    .collect()
                    .await
                    .map_err(|e| -> BoxError {
                        if e.is::<LengthLimitError>() {
                            BodyTooLarge::response(config.max_body_bytes as u64).into()
                        } else {
                            e
                        }
                    })?
                    .to_bytes();
                Ok::<_, BoxError>(JobStatus::Done {
                    status: parts.status,
                    headers: parts.headers,
                    body,
                })
            };
            let failed = |e: BoxError| JobStatus::Failed {
                error: e.to_string(),
                class: error_class(&*e),
            };
            let status = match tokio::time::timeout(config.max_wait, run).await {
                Ok(Ok(done)) => done,
                Ok(Err(e)) => failed(e),
                Err(_) => JobStatus::Failed {
                    error: format!(
                        "no provider answered within {} ms",
                        config.max_wait.as_millis()
                    ),
                    class: error_class(&Elapsed::new(TimeoutKind::Queue, config.max_wait)),
                },
            };
            if let Some(inner) = weak.upgrade() {
                let ok = matches!(status, JobStatus::Done { .. });
                tracing::info!(job = job.short(), ok, "deferred job finished");
                metrics::count_result(metrics::names::DEFERRED, if ok { "done" } else { "failed" });
                inner.finish(job, status);
            }
        });
        jobs.bytes += size;
        jobs.map.insert(
            id.clone(),
            Entry::Pending {
                since: now,
                task,
                bytes: size,
            },
        );
        let waiting = jobs
            .map
            .values()
            .filter(|e| matches!(e, Entry::Pending { .. }))
            .count();
        drop(jobs);
        tracing::warn!(
            job = id.short(),
            waiting,
            "request deferred: jobs are waiting for a provider"
        );
        metrics::count_result(metrics::names::DEFERRED, "accepted");
        Ok(id)
    }
}
