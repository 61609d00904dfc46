//! Simulated providers for the no-keys path: the binary without a configuration,
//! demos, tests.

use std::time::Duration;

use tower_failover::sim::{Flavor, Sim};
use tower_failover::{Config, ProviderEntry};

/// Simulated providers started in-process, and a configuration pointing at them.
#[derive(Debug)]
pub struct Simulated {
    /// The running sims (dropping them stops them).
    pub sims: Vec<Sim>,
    /// A configuration with one provider per sim.
    pub config: Config,
}

/// The embeddings model the simulated OpenAI provider also serves.
pub const SIMULATED_EMBEDDINGS_MODEL: &str = "text-embedding-3-small";

/// Starts three simulated providers on loopback (two OpenAI-compatible, one
/// Anthropic, no keys needed) and returns a configuration that balances across
/// them, for running the gateway on a fresh machine. The first OpenAI one also
/// serves [`SIMULATED_EMBEDDINGS_MODEL`] (an `embeddings = true` entry).
pub async fn simulated() -> Result<Simulated, tower::BoxError> {
    let specs = [
        ("openai", Flavor::OpenAi, "gpt-4o-mini", 1u64),
        ("anthropic", Flavor::Anthropic, "claude-haiku-4-5", 2),
        ("groq", Flavor::OpenAi, "llama-3.1-8b-instant", 3),
    ];
    let mut sims = Vec::new();
    let mut config = Config::default();
    config.deadline = Some(Duration::from_secs(60));
    for (i, (name, flavor, model, seed)) in specs.into_iter().enumerate() {
        let embeds = i == 0;
        let mut models = vec![model];
        if embeds {
            models.push(SIMULATED_EMBEDDINGS_MODEL);
        }
        let sim = Sim::builder(flavor)
            .name(name)
            .seed(seed)
            .models(models)
            .ttft(Duration::from_millis(40))
            .token_interval(Duration::from_millis(5))
            .start()
            .await?;
        let base_url = match flavor {
            Flavor::OpenAi => format!("{}/v1", sim.base_url()),
            Flavor::Anthropic => sim.base_url().to_owned(),
        };
        let kind = match flavor {
            Flavor::OpenAi => "openai",
            Flavor::Anthropic => "anthropic",
        };
        config.providers.push(
            ProviderEntry::new(name, model)
                .client("kind", kind)
                .client("base_url", base_url.clone()),
        );
        if embeds {
            let mut entry = ProviderEntry::new(name, SIMULATED_EMBEDDINGS_MODEL)
                .client("kind", kind)
                .client("base_url", base_url);
            entry.embeddings = true;
            config.providers.push(entry);
        }
        sims.push(sim);
    }
    // Each model is its own group; when it is down, the others answer for it.
    let models: Vec<String> = config
        .providers
        .iter()
        .filter(|p| !p.embeddings)
        .map(|p| p.model.clone())
        .collect();
    for m in &models {
        let mut group = tower_failover::ModelGroup::default();
        group.fallbacks = models.iter().filter(|o| *o != m).cloned().collect();
        config.models.insert(m.clone(), group);
    }
    config.validate()?;
    Ok(Simulated { sims, config })
}
