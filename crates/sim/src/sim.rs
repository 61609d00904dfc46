//! The simulator: builder, running sim, and its live-control handle.

use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tower_failover_core::Wire;

use crate::counters::{CounterSet, Counters};
use crate::error::SimError;
use crate::fault::{Fault, FaultKind, FaultSpec};
use crate::quota::{Quota, QuotaState, QuotaView};
use crate::received::{Received, ReceivedLog};
use crate::server::{self, Acceptor};
use tower_failover_core::rng::Rng;

/// Which provider's wire format a sim speaks: core's one [`Wire`] enum under the
/// name this crate has always used.
pub type Flavor = Wire;

/// The models a sim of `flavor` lists when none are configured.
pub(crate) fn default_models(flavor: Flavor) -> Vec<String> {
    match flavor {
        Wire::OpenAi => vec!["gpt-4o-mini".into(), "gpt-4o".into(), "gpt-4.1".into()],
        Wire::Anthropic => vec![
            "claude-sonnet-4-5".into(),
            "claude-haiku-4-5".into(),
            "claude-opus-4-1".into(),
        ],
    }
}

/// Everything that defines a sim's behaviour (the builder's state).
#[derive(Clone)]
pub(crate) struct SimConfig {
    pub(crate) name: String,
    pub(crate) flavor: Flavor,
    pub(crate) seed: u64,
    pub(crate) ttft: Duration,
    pub(crate) token_interval: Duration,
    pub(crate) jitter: f64,
    pub(crate) min_words: u32,
    pub(crate) max_words: u32,
    pub(crate) models: Option<Vec<String>>,
    pub(crate) api_key: Option<String>,
    pub(crate) echo: bool,
    pub(crate) tag: Option<String>,
    /// Tokens a reasoning model thinks before its answer (0: a chat model).
    pub(crate) reasoning_tokens: u32,
    /// OpenAI wire: `content` as a list of parts, not a string.
    pub(crate) content_parts: bool,
    /// OpenAI wire: a request with `max_tokens` is a 400 (OpenAI's reasoning models).
    pub(crate) refuses_max_tokens: bool,
    pub(crate) refuses_fields: Vec<String>,
    pub(crate) quota: Quota,
    pub(crate) faults: Vec<FaultSpec>,
    pub(crate) max_body: usize,
}

impl fmt::Debug for SimConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimConfig")
            .field("name", &self.name)
            .field("flavor", &self.flavor)
            .field("seed", &self.seed)
            .field("ttft", &self.ttft)
            .field("token_interval", &self.token_interval)
            .field("jitter", &self.jitter)
            .field("reply_words", &(self.min_words..=self.max_words))
            .field("models", &self.models)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("echo", &self.echo)
            .field("tag", &self.tag)
            .field("quota", &self.quota)
            .field("faults", &self.faults)
            .finish()
    }
}

impl SimConfig {
    fn validate(&self) -> Result<(), SimError> {
        if !(self.jitter.is_finite() && (0.0..=1.0).contains(&self.jitter)) {
            return Err(SimError::config(
                "jitter",
                format!("{} is not in [0, 1]", self.jitter),
            ));
        }
        if self.max_words == 0 || self.min_words > self.max_words {
            return Err(SimError::config(
                "reply_words",
                format!("{}..={} is empty", self.min_words, self.max_words),
            ));
        }
        if self.ttft > Duration::from_secs(86_400) {
            return Err(SimError::config("ttft", "longer than a day"));
        }
        if self.token_interval > Duration::from_secs(3600) {
            return Err(SimError::config("token_interval", "longer than an hour"));
        }
        if let Some(m) = &self.models
            && m.is_empty()
        {
            return Err(SimError::config(
                "models",
                "an empty list would refuse every model",
            ));
        }
        if let Some(tag) = &self.tag
            && (tag.is_empty() || tag.len() > 32 || !tag.bytes().all(|b| b.is_ascii_alphanumeric()))
        {
            return Err(SimError::config(
                "tag",
                format!("{tag:?} must be 1 to 32 ASCII letters or digits"),
            ));
        }
        self.quota.validate()?;
        for f in &self.faults {
            f.validate()?;
        }
        Ok(())
    }
}

/// Builds and starts a [`Sim`]. From [`Sim::builder`].
#[derive(Debug)]
pub struct SimBuilder {
    config: SimConfig,
    bind: SocketAddr,
    #[cfg(feature = "tls")]
    tls: Option<Arc<rustls::ServerConfig>>,
}

impl SimBuilder {
    fn new(flavor: Flavor) -> Self {
        SimBuilder {
            config: SimConfig {
                name: flavor.as_str().to_string(),
                flavor,
                seed: 0,
                ttft: Duration::ZERO,
                token_interval: Duration::ZERO,
                jitter: 0.1,
                min_words: 8,
                max_words: 24,
                models: None,
                api_key: None,
                echo: false,
                tag: None,
                reasoning_tokens: 0,
                content_parts: false,
                refuses_max_tokens: false,
                refuses_fields: Vec::new(),
                quota: Quota::default(),
                faults: Vec::new(),
                max_body: 32 << 20,
            },
            bind: SocketAddr::from(([127, 0, 0, 1], 0)),
            #[cfg(feature = "tls")]
            tls: None,
        }
    }

    /// A name for logs, the `x-sim-name` header and the binary's output
    /// (default: the flavor).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Seed of every random choice: reply text, ids, jitter, fault fractions
    /// (default 0). Same seed and same request order: same answers.
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// Time to first token (default 0): the delay before the response headers.
    pub fn ttft(mut self, ttft: Duration) -> Self {
        self.config.ttft = ttft;
        self
    }

    /// Interval between streamed tokens (default 0). A non-streaming reply waits
    /// `ttft + tokens × interval` before answering.
    pub fn token_interval(mut self, interval: Duration) -> Self {
        self.config.token_interval = interval;
        self
    }

    /// Relative jitter of every delay, in `[0, 1]` (default 0.1: ±10 %, uniform).
    pub fn jitter(mut self, jitter: f64) -> Self {
        self.config.jitter = jitter;
        self
    }

    /// Length of generated replies in words (default 8 to 24), before `max_tokens`.
    pub fn reply_words(mut self, min: u32, max: u32) -> Self {
        self.config.min_words = min;
        self.config.max_words = max;
        self
    }

    /// The models this sim serves. When set, requests for other models get the
    /// provider's 404 "model not found"; when not set (default) any model name is
    /// accepted and `/v1/models` lists a few typical names.
    pub fn models<I, S>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.models = Some(models.into_iter().map(Into::into).collect());
        self
    }

    /// Require this API key (`Authorization: Bearer` for OpenAI, `x-api-key` for
    /// Anthropic); others get the provider's 401. Default: any key or none.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.config.api_key = Some(key.into());
        self
    }

    /// Start replies with `You said: "<first 60 chars of the last user message>". `
    /// (default off), so tests can see the prompt arrived.
    pub fn echo(mut self, echo: bool) -> Self {
        self.config.echo = echo;
        self
    }

    /// Answer as a reasoning model (default 0: a chat model): think `tokens` hidden
    /// tokens before the answer, as OpenAI's o-series and GPT-5 do. They count in
    /// the answer's completion tokens (and `completion_tokens_details.
    /// reasoning_tokens`) and in its `max_tokens`, and delay its first token by
    /// `tokens × token_interval`: a caller whose `max_tokens` is all spent thinking
    /// gets an empty answer with `finish_reason: "length"` (Anthropic:
    /// `stop_reason: "max_tokens"`), as from the real models.
    pub fn reasoning(mut self, tokens: u32) -> Self {
        self.config.reasoning_tokens = tokens;
        self
    }

    /// On the OpenAI wire, answer with `content` as a list of parts instead of a
    /// string (default off), as Mistral's reasoning models do: each streamed delta
    /// `{"content": [{"type": "text", "text": …}]}`, a non-streamed answer one text
    /// part; a reasoning model ([`reasoning`](Self::reasoning)) first sends its
    /// thinking as a `{"type": "thinking", "thinking": [{"type": "text", …}]}` part.
    pub fn content_parts(mut self, parts: bool) -> Self {
        self.config.content_parts = parts;
        self
    }

    /// On the OpenAI wire, refuse a request that sets `max_tokens` with OpenAI's
    /// `400 unsupported_parameter` (default off), as its reasoning models (o1, o3,
    /// o4-mini, GPT-5) do: they take `max_completion_tokens` only.
    pub fn refuses_max_tokens(mut self, refuses: bool) -> Self {
        self.config.refuses_max_tokens = refuses;
        self
    }

    /// On the OpenAI wire, refuse a request that sets any of these top-level fields
    /// with Mistral's `422` (`extra_forbidden`, "Extra inputs are not permitted"),
    /// as providers that validate strictly do for fields they do not know
    /// (`store`, `metadata`, `service_tier`, ...). Default: none.
    pub fn refuses_fields<I, S>(mut self, fields: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.config.refuses_fields = fields.into_iter().map(Into::into).collect();
        self
    }

    /// Mark every generated word with this tag (`word_<tag>`; default: none), so
    /// a test in front of several sims can tell which one wrote each piece of an
    /// answer, and that no answer mixes two. 1 to 32 ASCII letters or digits.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.config.tag = Some(tag.into());
        self
    }

    /// Enforce these per-minute limits (default: generous, see [`Quota`]).
    pub fn quota(mut self, quota: Quota) -> Self {
        self.config.quota = quota;
        self
    }

    /// Add a fault spec to the initial list.
    pub fn fault(mut self, spec: impl Into<FaultSpec>) -> Self {
        self.config.faults.push(spec.into());
        self
    }

    /// Replace the initial fault list.
    pub fn faults(mut self, specs: impl IntoIterator<Item = FaultSpec>) -> Self {
        self.config.faults = specs.into_iter().collect();
        self
    }

    /// Largest request body accepted (default 32 MiB); larger ones get a 413.
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// Listen on this address (default `127.0.0.1:0`: a free port on loopback).
    pub fn bind(mut self, addr: SocketAddr) -> Self {
        self.bind = addr;
        self
    }

    /// Serve HTTPS (HTTP/1.1 and HTTP/2 by ALPN) with this TLS configuration,
    /// e.g. from [`tls::self_signed`](crate::tls::self_signed).
    #[cfg(feature = "tls")]
    #[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
    pub fn tls(mut self, config: Arc<rustls::ServerConfig>) -> Self {
        self.tls = Some(config);
        self
    }

    /// Check every value, naming the offending field (also done by
    /// [`start`](SimBuilder::start)).
    pub fn validate(&self) -> Result<(), SimError> {
        self.config.validate()
    }

    /// Validate the configuration, bind the listener and start serving. Needs a
    /// tokio runtime (any flavor; a current-thread runtime is enough).
    pub async fn start(self) -> Result<Sim, SimError> {
        self.config.validate()?;
        let listener = TcpListener::bind(self.bind).await?;
        let addr = listener.local_addr()?;
        #[cfg(feature = "tls")]
        let acceptor = match self.tls {
            Some(cfg) => Acceptor::Tls(tokio_rustls::TlsAcceptor::from(cfg)),
            None => Acceptor::Plain,
        };
        #[cfg(not(feature = "tls"))]
        let acceptor = Acceptor::Plain;
        let scheme = if acceptor.is_tls() { "https" } else { "http" };
        let now = Instant::now();
        let faults = FaultTable::new(self.config.faults.clone());
        let (changed, _) = watch::channel(0u64);
        let shared = Arc::new(Shared {
            quota: Mutex::new(QuotaState::new(self.config.quota, now)),
            cfg: self.config,
            start: now,
            addr,
            base_url: format!("{scheme}://{addr}"),
            faults: RwLock::new(Arc::new(faults)),
            changed,
            counters: CounterSet::new(),
            received: ReceivedLog::default(),
            seq: AtomicU64::new(0),
            prompt_cache: Mutex::new(std::collections::HashSet::new()),
        });
        tracing::debug!(name = %shared.cfg.name, flavor = %shared.cfg.flavor, %addr, "sim started");
        let task = tokio::spawn(server::run(listener, Arc::clone(&shared), acceptor));
        Ok(Sim {
            handle: SimHandle { shared },
            task: Some(task),
        })
    }
}

/// A running simulated provider.
///
/// Dropping it stops it: the accept loop and every connection task are aborted.
/// Control it live through [`Sim::handle`] (or the shortcuts here).
pub struct Sim {
    handle: SimHandle,
    task: Option<JoinHandle<()>>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("name", &self.handle.name())
            .field("flavor", &self.handle.flavor())
            .field("addr", &self.handle.addr())
            .finish()
    }
}

impl Sim {
    /// A builder for a sim speaking `flavor`.
    pub fn builder(flavor: Flavor) -> SimBuilder {
        SimBuilder::new(flavor)
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.addr()
    }

    /// `http://127.0.0.1:PORT` (or `https://...` with TLS), no trailing slash.
    pub fn base_url(&self) -> &str {
        self.handle.base_url()
    }

    /// The full URL of the completion route (`.../v1/chat/completions` or `.../v1/messages`).
    pub fn completion_url(&self) -> String {
        format!(
            "{}{}",
            self.base_url(),
            self.handle.flavor().completion_path()
        )
    }

    /// A cloneable handle for live control and counters.
    pub fn handle(&self) -> SimHandle {
        self.handle.clone()
    }

    /// Shortcut for [`SimHandle::counters`].
    pub fn counters(&self) -> Counters {
        self.handle.counters()
    }

    /// Shortcut for [`SimHandle::received`].
    pub fn received(&self) -> Vec<Received> {
        self.handle.received()
    }

    /// Shortcut for [`SimHandle::set_faults`].
    pub fn set_faults(&self, specs: impl IntoIterator<Item = FaultSpec>) -> Result<(), SimError> {
        self.handle.set_faults(specs)
    }

    /// Shortcut for [`SimHandle::add_fault`].
    pub fn add_fault(&self, spec: impl Into<FaultSpec>) -> Result<(), SimError> {
        self.handle.add_fault(spec)
    }

    /// Shortcut for [`SimHandle::clear_faults`].
    pub fn clear_faults(&self) {
        self.handle.clear_faults()
    }

    /// Stop serving: close the listener and every connection, and wait for it.
    pub async fn shutdown(mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Live control of a running [`Sim`]: faults, counters, quota. Cheap to clone,
/// `Send + Sync`; it keeps working (reading counters) after the sim stopped.
#[derive(Clone)]
pub struct SimHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for SimHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimHandle")
            .field("name", &self.name())
            .field("addr", &self.addr())
            .finish()
    }
}

impl SimHandle {
    pub(crate) fn from_shared(shared: Arc<Shared>) -> Self {
        SimHandle { shared }
    }

    /// The sim's name.
    pub fn name(&self) -> &str {
        &self.shared.cfg.name
    }

    /// The sim's flavor.
    pub fn flavor(&self) -> Flavor {
        self.shared.cfg.flavor
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.shared.addr
    }

    /// `http://127.0.0.1:PORT` (or `https://...`), no trailing slash.
    pub fn base_url(&self) -> &str {
        &self.shared.base_url
    }

    /// Time on the sim's clock (since it started): fault windows are on this clock.
    pub fn elapsed(&self) -> Duration {
        self.shared.elapsed()
    }

    /// Replace the fault list. Windows are on the sim's clock; use
    /// [`elapsed`](SimHandle::elapsed) to place one relative to now.
    pub fn set_faults(&self, specs: impl IntoIterator<Item = FaultSpec>) -> Result<(), SimError> {
        let specs: Vec<FaultSpec> = specs.into_iter().collect();
        for s in &specs {
            s.validate()?;
        }
        self.shared.replace_faults(|_| specs);
        Ok(())
    }

    /// Append a fault spec (a bare [`Fault`] means "always").
    pub fn add_fault(&self, spec: impl Into<FaultSpec>) -> Result<(), SimError> {
        let spec = spec.into();
        spec.validate()?;
        self.shared.replace_faults(|mut v| {
            v.push(spec);
            v
        });
        Ok(())
    }

    /// Remove every fault: the sim answers normally again.
    pub fn clear_faults(&self) {
        self.shared.replace_faults(|_| Vec::new());
    }

    /// The current fault list.
    pub fn faults(&self) -> Vec<FaultSpec> {
        self.shared
            .fault_table()
            .specs
            .iter()
            .map(|s| s.spec.clone())
            .collect()
    }

    /// A snapshot of the counters.
    pub fn counters(&self) -> Counters {
        self.shared.counters.snapshot()
    }

    /// Zero every counter.
    pub fn reset_counters(&self) {
        self.shared.counters.reset();
    }

    /// The last requests this sim received (up to 64, oldest first; admin
    /// requests excepted): method, target and headers, for tests that check what
    /// reached the provider.
    pub fn received(&self) -> Vec<Received> {
        self.shared.received.snapshot()
    }

    /// Forget the requests recorded so far.
    pub fn clear_received(&self) {
        self.shared.received.clear();
    }

    /// Replace the quota; both buckets start full.
    pub fn set_quota(&self, quota: Quota) -> Result<(), SimError> {
        quota.validate()?;
        *self.shared.quota.lock().unwrap_or_else(|e| e.into_inner()) =
            QuotaState::new(quota, Instant::now());
        Ok(())
    }
}

/// One spec in the live table, with how often it matched.
pub(crate) struct LiveSpec {
    pub(crate) spec: FaultSpec,
    pub(crate) hits: AtomicU64,
}

pub(crate) struct FaultTable {
    pub(crate) specs: Vec<LiveSpec>,
}

impl FaultTable {
    fn new(specs: Vec<FaultSpec>) -> Self {
        FaultTable {
            specs: specs
                .into_iter()
                .map(|spec| LiveSpec {
                    spec,
                    hits: AtomicU64::new(0),
                })
                .collect(),
        }
    }
}

/// What the faults decided for one request.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) fault: Option<Fault>,
    pub(crate) slowdown: f64,
}

/// State shared by the accept loop, the connections and the handles.
pub(crate) struct Shared {
    pub(crate) cfg: SimConfig,
    pub(crate) start: Instant,
    pub(crate) addr: SocketAddr,
    pub(crate) base_url: String,
    faults: RwLock<Arc<FaultTable>>,
    /// Bumped on every fault change (the accept loop watches it).
    pub(crate) changed: watch::Sender<u64>,
    pub(crate) counters: CounterSet,
    /// The last requests received (admin requests excepted).
    pub(crate) received: ReceivedLog,
    pub(crate) quota: Mutex<QuotaState>,
    seq: AtomicU64,
    /// The prompt prefixes cached so far (Anthropic prompt caching: a prefix is
    /// written the first time, read after; never evicted here).
    pub(crate) prompt_cache: Mutex<std::collections::HashSet<u64>>,
}

impl Shared {
    pub(crate) fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Relaxed)
    }

    pub(crate) fn fault_table(&self) -> Arc<FaultTable> {
        Arc::clone(&self.faults.read().unwrap_or_else(|e| e.into_inner()))
    }

    fn replace_faults(&self, f: impl FnOnce(Vec<FaultSpec>) -> Vec<FaultSpec>) {
        {
            let mut guard = self.faults.write().unwrap_or_else(|e| e.into_inner());
            let old: Vec<FaultSpec> = guard.specs.iter().map(|s| s.spec.clone()).collect();
            *guard = Arc::new(FaultTable::new(f(old)));
        }
        self.changed.send_modify(|v| *v += 1);
    }

    /// Pick the faults for request `seq` at sim time `now`.
    pub(crate) fn decide(&self, seq: u64, now: Duration, completion: bool) -> Decision {
        let mut d = Decision {
            fault: None,
            slowdown: 1.0,
        };
        let guard = self.faults.read().unwrap_or_else(|e| e.into_inner());
        for (i, live) in guard.specs.iter().enumerate() {
            let spec = &live.spec;
            let kind = spec.fault.kind();
            let is_slowdown = kind == FaultKind::Slowdown;
            if (!is_slowdown && d.fault.is_some())
                || (!completion && kind.completion_only())
                || !spec.in_window(now)
            {
                continue;
            }
            if spec.fraction < 1.0
                && Rng::derive(self.cfg.seed ^ seq.rotate_left(32), i as u64).f64() >= spec.fraction
            {
                continue;
            }
            match spec.limit {
                Some(limit) => {
                    if live
                        .hits
                        .fetch_update(Relaxed, Relaxed, |h| (h < limit).then_some(h + 1))
                        .is_err()
                    {
                        continue;
                    }
                }
                None => {
                    live.hits.fetch_add(1, Relaxed);
                }
            }
            match &spec.fault {
                Fault::Slowdown(f) => d.slowdown *= f,
                other => d.fault = Some(other.clone()),
            }
            self.counters.fault(kind);
        }
        d
    }

    /// Whether the listener must be closed now (a full, unlimited `Refuse` is
    /// active), and the next time that may change.
    pub(crate) fn refusing(&self, now: Duration) -> (bool, Option<Duration>) {
        let guard = self.faults.read().unwrap_or_else(|e| e.into_inner());
        let mut closed = false;
        let mut next: Option<Duration> = None;
        for live in &guard.specs {
            let s = &live.spec;
            if s.fault != Fault::Refuse || s.fraction < 1.0 || s.limit.is_some() {
                continue;
            }
            closed |= s.in_window(now);
            for t in [s.from, s.until].into_iter().flatten() {
                if t > now {
                    next = Some(next.map_or(t, |n: Duration| n.min(t)));
                }
            }
        }
        (closed, next)
    }

    pub(crate) fn quota_peek(&self) -> QuotaView {
        self.quota
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .peek(Instant::now())
    }

    pub(crate) fn quota_take(&self, tokens: u64) -> (Result<(), Duration>, QuotaView) {
        self.quota
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take(tokens, Instant::now())
    }
}

/// `d` scaled by a uniform factor in `[1 - jitter, 1 + jitter]`.
pub(crate) fn jittered(d: Duration, jitter: f64, rng: &mut Rng) -> Duration {
    if d.is_zero() || jitter == 0.0 {
        return d;
    }
    let f = 1.0 + jitter * (2.0 * rng.f64() - 1.0);
    d.mul_f64(f.max(0.0))
}
