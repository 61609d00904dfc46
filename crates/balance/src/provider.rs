//! What the routers know about each provider besides its health: weight, price,
//! priority and capabilities.

use serde::{Deserialize, Serialize};
use tower_failover_core::ProviderId;

use crate::error::ConfigError;

/// Options of one provider in a [`Balance`](crate::Balance) or
/// [`Fallback`](crate::Fallback).
///
/// The capability fields decide, per request, whether the provider is a candidate
/// (see [`RequestAttrs`](crate::RequestAttrs)):
///
/// | request says | provider is a candidate when |
/// | --- | --- |
/// | model `m` | `models` is empty (serves any model) or contains `m` |
/// | tier `t` | `tiers` contains `t` |
/// | tools present | `tools` is true |
/// | about `n` prompt tokens | `context_window` is unknown or at least `n` |
///
/// ```
/// use tower_failover_balance::ProviderOptions;
///
/// let strong = ProviderOptions::default()
///     .price_per_million(10.0)
///     .models(["gpt-4.1", "strong"])
///     .tier("strong")
///     .context_window(1_000_000);
/// assert_eq!(strong.context_window, Some(1_000_000));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProviderOptions {
    /// Relative weight (default 1): a provider of weight 2 carries twice the load of
    /// one of weight 1 at equal latency, and gets twice the turns in round-robin.
    pub weight: f64,
    /// Blended price in currency units per million tokens, used by
    /// [`Weighting::Cost`](crate::Weighting::Cost) and
    /// [`Policy::Cheapest`](crate::Policy::Cheapest). Unknown prices count as the
    /// most expensive.
    pub price_per_million: Option<f64>,
    /// Position in a [`Fallback`](crate::Fallback) chain: lower goes first. Providers
    /// without one follow those with one, in the order they were added.
    pub priority: Option<u32>,
    /// Model names (or aliases) this provider serves; empty means any.
    pub models: Vec<String>,
    /// Tiers this provider belongs to (for example `"cheap"`, `"strong"`), selected
    /// by a request header. A request naming a tier only goes to its members.
    pub tiers: Vec<String>,
    /// The model's context window in tokens, if known.
    pub context_window: Option<u64>,
    /// Whether the model accepts tool (function) definitions. Default true.
    pub tools: bool,
}

impl Default for ProviderOptions {
    fn default() -> Self {
        ProviderOptions {
            weight: 1.0,
            price_per_million: None,
            priority: None,
            models: Vec::new(),
            tiers: Vec::new(),
            context_window: None,
            tools: true,
        }
    }
}

impl ProviderOptions {
    /// Sets the [`weight`](ProviderOptions::weight).
    pub fn weight(mut self, weight: f64) -> Self {
        self.weight = weight;
        self
    }

    /// Sets the [`price_per_million`](ProviderOptions::price_per_million).
    pub fn price_per_million(mut self, price: f64) -> Self {
        self.price_per_million = Some(price);
        self
    }

    /// Sets the [`priority`](ProviderOptions::priority).
    pub fn priority(mut self, priority: u32) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Adds a model name this provider serves.
    pub fn model(mut self, model: impl Into<String>) -> Self {
        self.models.push(model.into());
        self
    }

    /// Adds model names this provider serves.
    pub fn models<I, M>(mut self, models: I) -> Self
    where
        I: IntoIterator<Item = M>,
        M: Into<String>,
    {
        self.models.extend(models.into_iter().map(Into::into));
        self
    }

    /// Adds a tier this provider belongs to.
    pub fn tier(mut self, tier: impl Into<String>) -> Self {
        self.tiers.push(tier.into());
        self
    }

    /// Sets the [`context_window`](ProviderOptions::context_window) in tokens.
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// Sets whether the model accepts tool definitions.
    pub fn tools(mut self, tools: bool) -> Self {
        self.tools = tools;
        self
    }

    /// Refuses invalid values, naming the field as `providers[<id>].<field>`.
    pub fn validate(&self, id: &ProviderId) -> Result<(), ConfigError> {
        let field = |f: &str| format!("providers[{id}].{f}");
        if !(self.weight.is_finite() && self.weight > 0.0 && self.weight <= 1e9) {
            return Err(ConfigError::new(
                field("weight"),
                format!("{} is not a number in (0, 1e9]", self.weight),
            ));
        }
        if let Some(p) = self.price_per_million
            && !(p.is_finite() && (0.0..=1e9).contains(&p))
        {
            return Err(ConfigError::new(
                field("price_per_million"),
                format!("{p} is not a price in [0, 1e9]"),
            ));
        }
        if self.context_window == Some(0) {
            return Err(ConfigError::new(
                field("context_window"),
                "must be above zero",
            ));
        }
        if self.models.iter().chain(&self.tiers).any(|s| s.is_empty()) {
            return Err(ConfigError::new(
                field(if self.models.iter().any(|s| s.is_empty()) {
                    "models"
                } else {
                    "tiers"
                }),
                "empty name",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_provider_and_field() {
        let id = ProviderId::new("openai", "gpt-4o");
        ProviderOptions::default().validate(&id).unwrap();
        let err = ProviderOptions::default()
            .weight(0.0)
            .validate(&id)
            .unwrap_err();
        assert_eq!(err.field(), "providers[openai/gpt-4o].weight");
        let err = ProviderOptions::default()
            .price_per_million(f64::INFINITY)
            .validate(&id)
            .unwrap_err();
        assert_eq!(err.field(), "providers[openai/gpt-4o].price_per_million");
        let err = ProviderOptions::default()
            .context_window(0)
            .validate(&id)
            .unwrap_err();
        assert!(err.to_string().contains("context_window"));
        let err = ProviderOptions::default()
            .tier("")
            .validate(&id)
            .unwrap_err();
        assert!(err.field().ends_with("tiers"));
        let opts: ProviderOptions =
            serde_json::from_str(r#"{"weight": 2, "models": ["a"], "tools": false}"#).unwrap();
        assert_eq!(opts.weight, 2.0);
        assert!(!opts.tools);
    }
}
