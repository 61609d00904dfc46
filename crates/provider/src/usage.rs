//! Token usage and cost of one response.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use serde::Serialize;
use tower_failover_core::Health;

pub use tower_failover_core::price::{Cost, Price};

/// Token usage of one response, and its cost when the model has a price.
///
/// Found in the response extensions: directly for JSON responses, and through the
/// [`UsageHandle`] (filled when the stream ends) for both JSON and streamed ones.
/// Prompt tokens include cached prompt tokens (Anthropic's cache reads and writes
/// are added in, as OpenAI counts them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Usage {
    /// Prompt (input) tokens.
    pub prompt_tokens: u64,
    /// Completion (output) tokens.
    pub completion_tokens: u64,
    /// The cost, if the price table knows the model.
    pub cost: Option<Cost>,
}

impl Usage {
    /// Prompt plus completion tokens.
    pub fn total_tokens(&self) -> u64 {
        self.prompt_tokens.saturating_add(self.completion_tokens)
    }
}

/// A response extension through which the [`Usage`] of a response becomes known:
/// at once for JSON responses, when the last event has passed for streamed ones (or,
/// for a stream dropped or broken midway, with what had been counted by then).
///
/// Cheap to clone; every clone sees the same value.
///
/// ```
/// use tower_failover_provider::UsageHandle;
///
/// let handle = UsageHandle::default();
/// assert!(handle.get().is_none()); // the stream has not finished yet
/// ```
#[derive(Debug, Clone, Default)]
pub struct UsageHandle {
    cell: Arc<OnceLock<Usage>>,
}

impl UsageHandle {
    /// The usage, once known.
    pub fn get(&self) -> Option<Usage> {
        self.cell.get().copied()
    }

    pub(crate) fn set(&self, usage: Usage) {
        let _ = self.cell.set(usage);
    }
}

/// Prices per model for one provider, with `"*"` as the price of any model not
/// listed.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct PriceTable {
    prices: BTreeMap<String, Price>,
}

impl PriceTable {
    pub(crate) fn new(prices: BTreeMap<String, Price>) -> Self {
        PriceTable { prices }
    }

    /// The price of the first of `models` that has one, else the `"*"` price.
    pub(crate) fn lookup(&self, models: &[&str]) -> Option<Price> {
        models
            .iter()
            .find_map(|m| self.prices.get(*m))
            .or_else(|| self.prices.get("*"))
            .copied()
    }
}

/// Where a response's usage goes once it is known: the response's handle, and the
/// provider's health record if there is one.
#[derive(Debug, Clone)]
pub(crate) struct UsageSink {
    pub(crate) handle: UsageHandle,
    pub(crate) price: Option<Price>,
    pub(crate) health: Option<Health>,
    /// The attempt's span, given the usage.
    pub(crate) span: tracing::Span,
}

impl UsageSink {
    /// Prices and records the token counts (of the prompt tokens, `cache_read`
    /// read from and `cache_write` written to the provider's prompt cache, priced
    /// at their own rates); returns the resulting usage.
    pub(crate) fn record(
        &self,
        prompt_tokens: u64,
        completion_tokens: u64,
        cache_read: u64,
        cache_write: u64,
    ) -> Usage {
        let cost = self
            .price
            .map(|p| p.cost_cached(prompt_tokens, completion_tokens, cache_read, cache_write));
        let usage = Usage {
            prompt_tokens,
            completion_tokens,
            cost,
        };
        if self.handle.get().is_none() {
            self.handle.set(usage);
            if let Some(health) = &self.health {
                health.record_usage(
                    prompt_tokens,
                    completion_tokens,
                    cost.map_or(0, |c| c.micros()),
                );
            }
            tower_failover_core::trace::record_usage(
                &self.span,
                prompt_tokens,
                completion_tokens,
                cost.map(|c| c.micros()),
            );
            tracing::debug!(
                prompt_tokens,
                completion_tokens,
                cost_micros = cost.map(|c| c.micros()),
                "usage"
            );
        }
        usage
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_exact_in_micros() {
        let p = Price::per_million(2.5, 10.0);
        assert_eq!(p.cost(1_000, 0).micros(), 2_500);
        assert_eq!(p.cost(1_000_000, 1_000_000).as_f64(), 12.5);
        assert_eq!(p.cost(0, 0), Cost::default());
        assert_eq!(Cost::from_micros(1_234_567).to_string(), "1.234567");
    }

    #[test]
    fn invalid_prices_do_not_panic() {
        let p = Price::per_million(f64::NAN, -1.0);
        assert!(!p.is_valid());
        assert_eq!(p.cost(10, 10).micros(), 0);
    }

    #[test]
    fn table_falls_back_to_star() {
        let mut m = BTreeMap::new();
        m.insert("gpt-4o".to_string(), Price::per_million(2.5, 10.0));
        m.insert("*".to_string(), Price::per_million(1.0, 1.0));
        let t = PriceTable::new(m);
        assert_eq!(t.lookup(&["x", "gpt-4o"]).unwrap().input_per_million, 2.5);
        assert_eq!(t.lookup(&["other"]).unwrap().input_per_million, 1.0);
        assert!(PriceTable::default().lookup(&["gpt-4o"]).is_none());
    }

    #[test]
    fn sink_records_once_into_health() {
        let health = Health::standalone("openai", "gpt-4o");
        let sink = UsageSink {
            handle: UsageHandle::default(),
            price: Some(Price::per_million(1.0, 2.0)),
            health: Some(health.clone()),
            span: tracing::Span::none(),
        };
        let u = sink.record(100, 10, 0, 0);
        assert_eq!(u.cost.unwrap().micros(), 120);
        sink.record(100, 10, 0, 0);
        assert_eq!(health.usage().prompt_tokens, 100);
        assert_eq!(health.usage().completion_tokens, 10);
        assert_eq!(sink.handle.get(), Some(u));
    }
}
