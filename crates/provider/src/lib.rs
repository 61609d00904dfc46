//! Per-provider hyper client services for tower-failover.
//!
//! (Documentation in progress.)

mod body;
mod builder;
mod client;
mod config;
mod error;
mod future;
mod headers;
mod hint;
mod secret;
mod service;
mod sse;
pub mod translate;
mod usage;

pub use body::ResponseBody;
pub use builder::Builder;
pub use config::{
    HttpVersion, ModelMap, PoolConfig, ProviderConfig, ProviderKind, RootStore, Timeouts, TlsConfig,
};
pub use error::{ConfigError, TranslateError};
pub use future::ResponseFuture;
pub use secret::Secret;
pub use service::{Anthropic, OpenAiCompatible, Provider};
pub use sse::{SseEvent, SseParser};
pub use usage::{Cost, Price, Usage, UsageHandle};
