//! One verdict per attempt: the outcome decided once, at the bottom of a provider's
//! stack, and read by the layers above instead of classifying the response again.
//!
//! The [`ObserveLayer`](crate::observe::ObserveLayer) classifies each response it
//! sees and leaves the outcome in the response's extensions as a [`Verdict`]. A
//! layer above that holds a [`FromVerdict`] classifier (the circuit breaker, the
//! recovery ramp, the routers and the retry policy, as the `tower-failover` facade
//! wires them) takes that outcome as it is, and classifies the response itself only
//! when no verdict is there (no observer below, or a response made above it).
//!
//! A classifier of your own keeps working: the observer consults it (once per
//! attempt) and carries its outcome up, and a layer given your classifier directly,
//! not wrapped in [`FromVerdict`], still consults it for every response.
//!
//! Carrying a verdict costs an allocation (an entry in the response's extensions),
//! so a classifier may say that some outcomes are cheaper to decide again than to
//! carry ([`Classify::carries`]): the default [`LlmClassifier`](crate::LlmClassifier)
//! does not carry a plain success, which it decides again from the status alone, so
//! the happy path stays free of allocations.
//!
//! Only the outcome at the response headers travels this way. An error has no
//! extensions, so each layer still classifies the errors it sees; a 2xx stream's
//! final verdict is still made at the end of its body (see
//! [`observe`](crate::observe)).
//!
//! ```
//! use http::Response;
//! use tower_failover_core::verdict::{FromVerdict, Verdict};
//! use tower_failover_core::{Classify, FailureKind, LlmClassifier, Outcome};
//!
//! let above = FromVerdict::new(LlmClassifier::default());
//! // A 200 that the observer below judged a failure (say, with a classifier of yours):
//! let mut res = Response::new(());
//! res.extensions_mut()
//!     .insert(Verdict(Outcome::failure(FailureKind::Overloaded)));
//! assert_eq!(above.classify_response(&res), Outcome::failure(FailureKind::Overloaded));
//! // No verdict: the wrapped classifier decides.
//! assert_eq!(above.classify_response(&Response::new(())), Outcome::Success);
//! ```

use std::error::Error;

use http::Response;

use crate::classify::Classify;
use crate::outcome::Outcome;

/// The outcome of one attempt, decided by the classifier at the bottom of a
/// provider's stack and carried in the response's
/// [extensions](http::Response::extensions) for the layers above (see the [module
/// documentation](self)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict(pub Outcome);

impl Verdict {
    /// The verdict a response carries, if a layer below left one.
    #[inline]
    pub fn of<B>(res: &Response<B>) -> Option<Outcome> {
        res.extensions().get::<Verdict>().map(|v| v.0)
    }

    /// Leaves `outcome` on `res` when `classifier` says it is worth carrying
    /// ([`Classify::carries`]).
    #[inline]
    pub fn carry<B, C: Classify>(classifier: &C, res: &mut Response<B>, outcome: Outcome) {
        if classifier.carries(&outcome) {
            res.extensions_mut().insert(Verdict(outcome));
        }
    }
}

/// A classifier for the layers above the one that decides: it takes the response's
/// [`Verdict`] when there is one, and asks `C` otherwise. Errors always go to `C`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FromVerdict<C>(C);

impl<C> FromVerdict<C> {
    /// Reads verdicts, and classifies with `inner` where there is none.
    pub fn new(inner: C) -> Self {
        FromVerdict(inner)
    }

    /// The classifier used where there is no verdict.
    pub fn get_ref(&self) -> &C {
        &self.0
    }
}

impl<C: Classify> Classify for FromVerdict<C> {
    #[inline]
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        match Verdict::of(response) {
            Some(outcome) => outcome,
            None => self.0.classify_response(response),
        }
    }

    #[inline]
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        self.0.classify_error(error)
    }

    /// Never: it reads verdicts, it does not make them.
    #[inline]
    fn carries(&self, _outcome: &Outcome) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::LlmClassifier;
    use crate::outcome::{FailureKind, RejectKind};

    #[test]
    fn the_default_classifier_carries_all_but_a_plain_success() {
        let c = LlmClassifier::default();
        assert!(!c.carries(&Outcome::Success));
        assert!(c.carries(&Outcome::failure(FailureKind::Status(503))));
        assert!(c.carries(&Outcome::RateLimited { retry_after: None }));
        let mut res = Response::new(());
        Verdict::carry(&c, &mut res, Outcome::Success);
        assert_eq!(
            Verdict::of(&res),
            None,
            "a success is decided again, not carried"
        );
        Verdict::carry(&c, &mut res, Outcome::rejected(RejectKind::Shed));
        assert_eq!(Verdict::of(&res), Some(Outcome::rejected(RejectKind::Shed)));
        assert!(!FromVerdict::new(c).carries(&Outcome::rejected(RejectKind::Shed)));
    }

    #[test]
    fn a_verdict_wins_over_the_status_and_errors_are_classified() {
        let above = FromVerdict::new(LlmClassifier::default());
        let mut res = Response::builder().status(503).body(()).unwrap();
        assert_eq!(
            above.classify_response(&res),
            Outcome::failure(FailureKind::Status(503))
        );
        res.extensions_mut().insert(Verdict(Outcome::Success));
        assert_eq!(above.classify_response(&res), Outcome::Success);
        let err = crate::error::TransportError::new(FailureKind::Reset, "reset");
        assert_eq!(
            above.classify_error(&err),
            Outcome::failure(FailureKind::Reset)
        );
    }
}
