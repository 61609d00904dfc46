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
}

impl Price {
    /// A price per million input and output tokens.
    pub const fn per_million(input: f64, output: f64) -> Self {
        Price {
            input_per_million: input,
            output_per_million: output,
        }
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
        self.input_per_million.is_finite()
            && self.output_per_million.is_finite()
            && self.input_per_million >= 0.0
            && self.output_per_million >= 0.0
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
