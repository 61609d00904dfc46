//! Deferred mode: accept now, answer later.
//!
//! For callers that can wait longer than one HTTP request (batch jobs, offline
//! enrichment), a gateway can answer `202 Accepted` with a job id when every provider
//! is down, run the request as soon as one recovers, and let the caller fetch the
//! result by id. [`Deferred`] is that job store: bounded in the number of jobs, in the
//! bytes they hold (requests waiting and answers kept), in how long each waits, in the
//! size of a stored answer, and in how long an answer is kept (then its id reads
//! [`JobStatus::Expired`] for a while). Ids are 128 bits from the operating system's
//! random source. Each job runs in a task owned by the store and aborted when the
//! store is dropped. The gateway (`tower-failover-gateway`) serves it as
//! `202 Accepted` and `GET /v1/jobs/{id}`.

mod config;
mod job;
mod store;
#[cfg(test)]
mod tests;

pub use config::DeferredConfig;
pub use job::{DeferredFull, JobId, JobStatus};
pub use store::Deferred;
