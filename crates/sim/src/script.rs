//! Script files: several named providers with their latency, quota and fault timeline.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::SimError;
use crate::fault::FaultSpec;
use crate::quota::Quota;
use crate::sim::{Flavor, Sim, SimBuilder};

/// A script: the providers to simulate. Load it from TOML or JSON.
///
/// See the crate docs (and `tower-failover-sim --help`) for the full format.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Script {
    /// The providers (`[[providers]]` tables in TOML).
    #[serde(alias = "provider", default)]
    pub providers: Vec<ProviderScript>,
}

/// One simulated provider in a [`Script`].
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderScript {
    /// Name (printed by the binary, sent as `x-sim-name`).
    pub name: String,
    /// `"openai"` or `"anthropic"`.
    pub flavor: Flavor,
    /// Address to listen on (default `127.0.0.1`).
    #[serde(default = "loopback")]
    pub host: IpAddr,
    /// Port (default 0: any free port).
    #[serde(default)]
    pub port: u16,
    /// Seed of every random choice (default 0).
    #[serde(default)]
    pub seed: u64,
    /// Time to first token (default 0).
    #[serde(default, with = "tower_failover_core::duration_serde")]
    pub ttft: Duration,
    /// Interval between tokens (default 0).
    #[serde(default, with = "tower_failover_core::duration_serde")]
    pub token_interval: Duration,
    /// Relative jitter of delays in `[0, 1]` (default 0.1).
    #[serde(default = "default_jitter")]
    pub jitter: f64,
    /// Reply length in words, `[min, max]` (default `[8, 24]`).
    #[serde(default = "default_words")]
    pub reply_words: [u32; 2],
    /// Models served; others get 404 (default: any model accepted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<String>>,
    /// Required API key (default: none required).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<String>,
    /// Start replies with an echo of the prompt (default false).
    #[serde(default)]
    pub echo: bool,
    /// Mark every generated word with this tag (`word_<tag>`; default: none).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tag: Option<String>,
    /// RPM/TPM quota (default: generous).
    #[serde(default)]
    pub quota: Quota,
    /// Serve HTTPS with a generated self-signed certificate (binary) or the TLS
    /// configuration given to [`Script::start_with_tls`] (default false).
    #[serde(default)]
    pub tls: bool,
    /// The fault timeline.
    #[serde(default)]
    pub faults: Vec<FaultSpec>,
}

fn loopback() -> IpAddr {
    IpAddr::V4(Ipv4Addr::LOCALHOST)
}

fn default_jitter() -> f64 {
    0.1
}

fn default_words() -> [u32; 2] {
    [8, 24]
}

impl fmt::Debug for ProviderScript {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProviderScript")
            .field("name", &self.name)
            .field("flavor", &self.flavor)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("seed", &self.seed)
            .field("ttft", &self.ttft)
            .field("token_interval", &self.token_interval)
            .field("jitter", &self.jitter)
            .field("reply_words", &self.reply_words)
            .field("models", &self.models)
            .field("api_key", &self.api_key.as_ref().map(|_| "<redacted>"))
            .field("echo", &self.echo)
            .field("tag", &self.tag)
            .field("quota", &self.quota)
            .field("tls", &self.tls)
            .field("faults", &self.faults)
            .finish()
    }
}

impl ProviderScript {
    /// A builder configured from this entry (without TLS).
    pub fn builder(&self) -> SimBuilder {
        let mut b = Sim::builder(self.flavor)
            .name(self.name.clone())
            .seed(self.seed)
            .ttft(self.ttft)
            .token_interval(self.token_interval)
            .jitter(self.jitter)
            .reply_words(self.reply_words[0], self.reply_words[1])
            .echo(self.echo)
            .quota(self.quota)
            .faults(self.faults.clone())
            .bind(SocketAddr::new(self.host, self.port));
        if let Some(m) = &self.models {
            b = b.models(m.clone());
        }
        if let Some(k) = &self.api_key {
            b = b.api_key(k.clone());
        }
        if let Some(t) = &self.tag {
            b = b.tag(t.clone());
        }
        b
    }
}

impl Script {
    /// Parse a TOML script.
    pub fn from_toml(s: &str) -> Result<Script, SimError> {
        let script: Script = toml::from_str(s).map_err(|e| SimError::Script(e.to_string()))?;
        script.validate()?;
        Ok(script)
    }

    /// Parse a JSON script.
    pub fn from_json(s: &str) -> Result<Script, SimError> {
        let script: Script =
            serde_json::from_str(s).map_err(|e| SimError::Script(e.to_string()))?;
        script.validate()?;
        Ok(script)
    }

    /// Read a script file: JSON if its name ends in `.json`, TOML otherwise.
    pub fn load(path: impl AsRef<Path>) -> Result<Script, SimError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Script(format!("cannot read {}: {e}", path.display())))?;
        if path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("json"))
        {
            Self::from_json(&text)
        } else {
            Self::from_toml(&text)
        }
    }

    /// Check names are unique and non-empty, fixed ports are unique, and every
    /// value is valid.
    pub fn validate(&self) -> Result<(), SimError> {
        if self.providers.is_empty() {
            return Err(SimError::Script(
                "no providers: add a [[providers]] table".into(),
            ));
        }
        for (i, p) in self.providers.iter().enumerate() {
            if p.name.trim().is_empty() {
                return Err(SimError::config(
                    "name",
                    format!("provider #{} has an empty name", i + 1),
                ));
            }
            if self.providers[..i].iter().any(|q| q.name == p.name) {
                return Err(SimError::config(
                    "name",
                    format!("{:?} is used twice", p.name),
                ));
            }
            if p.port != 0
                && self.providers[..i]
                    .iter()
                    .any(|q| q.port == p.port && q.host == p.host)
            {
                return Err(SimError::config(
                    "port",
                    format!("{} is used twice", p.port),
                ));
            }
            p.builder()
                .validate()
                .map_err(|e| SimError::Script(format!("provider {:?}: {e}", p.name)))?;
        }
        Ok(())
    }

    /// Start every provider (in order). Fails if one asks for TLS: use
    /// [`Script::start_with_tls`] for those.
    pub async fn start(&self) -> Result<Vec<Sim>, SimError> {
        let mut sims = Vec::with_capacity(self.providers.len());
        for p in &self.providers {
            if p.tls {
                return Err(SimError::config(
                    "tls",
                    format!(
                        "provider {:?} wants TLS: start the script with a TLS config",
                        p.name
                    ),
                ));
            }
            sims.push(p.builder().start().await?);
        }
        Ok(sims)
    }

    /// Start every provider; those with `tls = true` serve HTTPS with `tls`.
    #[cfg(feature = "tls")]
    pub async fn start_with_tls(
        &self,
        tls: std::sync::Arc<rustls::ServerConfig>,
    ) -> Result<Vec<Sim>, SimError> {
        let mut sims = Vec::with_capacity(self.providers.len());
        for p in &self.providers {
            let mut b = p.builder();
            if p.tls {
                b = b.tls(tls.clone());
            }
            sims.push(b.start().await?);
        }
        Ok(sims)
    }

    /// Whether any provider asks for TLS.
    pub fn wants_tls(&self) -> bool {
        self.providers.iter().any(|p| p.tls)
    }
}
