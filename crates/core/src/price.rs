//! The price of a model and the cost of a response: one `Price` for the provider
//! adapters (which turn token counts into a [`Cost`]) and the facade's configuration
//! (whose balancer weighs providers by [`Price::blended`]).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The price of a model, per million tokens, in whatever currency the table uses.
///
/// ```
/// use tower_failover_core::Price;
///
/// let gpt_4o_mini = Price::per_million(0.15, 0.60);
/// // 10 000 prompt tokens and 1 000 completion tokens:
/// assert_eq!(gpt_4o_mini.cost(10_000, 1_000).micros(), 2_100);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Price of one million prompt (input) tokens.
    pub input_per_million: f64,
    /// Price of one million completion (output) tokens.
    pub output_per_million: f64,
    /// Price of one million prompt tokens read from the provider's prompt cache.
    /// Default ([`None`]): a tenth of the input price, as Anthropic bills them (the
    /// OpenAI-compatible provider service defaults to half, OpenAI's smallest
    /// discount).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_read_per_million: Option<f64>,
    /// Price of one million prompt tokens written to the provider's prompt cache.
    /// Default ([`None`]): 1.25 times the input price, as Anthropic bills writes to
    /// its default five-minute cache.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache_write_per_million: Option<f64>,
}

/// How Anthropic prices a cache read and a (five-minute) cache write, against the
/// input price: [`Price`]'s defaults.
const CACHE_READ_FACTOR: f64 = 0.1;
const CACHE_WRITE_FACTOR: f64 = 1.25;

impl Price {
    /// A price per million input and output tokens (cached prompt tokens at the
    /// default rates).
    pub const fn per_million(input: f64, output: f64) -> Self {
        Price {
            input_per_million: input,
            output_per_million: output,
            cache_read_per_million: None,
            cache_write_per_million: None,
        }
    }

    /// The same, with prices of its own per million prompt tokens read from and
    /// written to the prompt cache.
    pub const fn with_cache(mut self, read: f64, write: f64) -> Self {
        self.cache_read_per_million = Some(read);
        self.cache_write_per_million = Some(write);
        self
    }

    /// The cost of a response whose prompt tokens include `cache_read` read from
    /// and `cache_write` written to the prompt cache (each priced at its own rate;
    /// the rest of the prompt at the input price).
    ///
    /// ```
    /// use tower_failover_core::Price;
    ///
    /// let sonnet = Price::per_million(3.0, 15.0);
    /// // 1,010 prompt tokens of which 1,000 read from the cache, 100 output:
    /// // 10 × 3 + 1,000 × 0.3 + 100 × 15 millionths.
    /// assert_eq!(sonnet.cost_cached(1_010, 100, 1_000, 0).micros(), 1_830);
    /// assert_eq!(sonnet.cost(1_010, 100).micros(), 4_530);
    /// ```
    pub fn cost_cached(
        &self,
        prompt_tokens: u64,
        completion_tokens: u64,
        cache_read: u64,
        cache_write: u64,
    ) -> Cost {
        let read = self
            .cache_read_per_million
            .unwrap_or(self.input_per_million * CACHE_READ_FACTOR);
        let write = self
            .cache_write_per_million
            .unwrap_or(self.input_per_million * CACHE_WRITE_FACTOR);
        // The cached counts are parts of the prompt count (never more than it).
        let cache_read = cache_read.min(prompt_tokens);
        let cache_write = cache_write.min(prompt_tokens - cache_read);
        let plain = prompt_tokens - cache_read - cache_write;
        let micros = plain as f64 * self.input_per_million
            + cache_read as f64 * read
            + cache_write as f64 * write
            + completion_tokens as f64 * self.output_per_million;
        Cost::from_micros(micros.round() as u64)
    }

    /// The cost of a response with these token counts.
    ///
    /// A price per million tokens times a token count is exactly a cost in
    /// millionths of the currency unit, which is what [`Cost`] stores.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> Cost {
        let micros = prompt_tokens as f64 * self.input_per_million
            + completion_tokens as f64 * self.output_per_million;
        // `as` saturates: a negative or NaN product (refused at build time anyway)
        // becomes 0, never a panic.
        Cost::from_micros(micros.round() as u64)
    }

    /// The blended price a balancer weighs providers by: three input tokens for one
    /// output token, a typical chat mix.
    ///
    /// ```
    /// use tower_failover_core::Price;
    ///
    /// assert_eq!(Price::per_million(1.0, 5.0).blended(), 2.0);
    /// ```
    pub fn blended(&self) -> f64 {
        (3.0 * self.input_per_million + self.output_per_million) / 4.0
    }

    /// Whether both prices are finite and not negative (what every configuration
    /// that takes a price checks).
    pub fn is_valid(&self) -> bool {
        let ok = |p: f64| p.is_finite() && p >= 0.0;
        ok(self.input_per_million)
            && ok(self.output_per_million)
            && self.cache_read_per_million.is_none_or(ok)
            && self.cache_write_per_million.is_none_or(ok)
    }
}

/// The cost of one response, in millionths of the price table's currency unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct Cost {
    micros: u64,
}

impl Cost {
    /// A cost of `micros` millionths of a currency unit.
    pub const fn from_micros(micros: u64) -> Self {
        Cost { micros }
    }

    /// In millionths of a currency unit (what [`Health::record_usage`](crate::Health::record_usage) takes).
    pub const fn micros(&self) -> u64 {
        self.micros
    }

    /// In currency units.
    pub fn as_f64(&self) -> f64 {
        self.micros as f64 / 1e6
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:06}",
            self.micros / 1_000_000,
            self.micros % 1_000_000
        )
    }
}
