//! The classifier of a whole [`Stack`](crate::Stack): the default one, or yours.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

use http::Response;
use tower_failover_core::{Classify, HeaderLimits, LlmClassifier, Outcome};

/// The [`Classify`] every layer of a [`Stack`](crate::Stack) decides with, set by
/// [`StackBuilder::classifier`](crate::StackBuilder::classifier).
///
/// Each attempt is classified once, by the observer at the bottom of the
/// provider's stack; the layers above (circuit breaker, ramp, same-provider retry,
/// router) read the outcome it leaves on the response (see
/// [`verdict`](tower_failover_core::verdict)), and classify themselves only what
/// carries no verdict: errors, and answers when the observer is off or replaced.
///
/// A classifier of yours is type-erased here: it sees a copy of the response's
/// status, version, headers and extensions (a [`Response<()>`]; no classifier can
/// read a body anyway). The default classifier is called directly.
#[derive(Clone, Default)]
pub struct StackClassifier(Inner);

#[derive(Clone)]
enum Inner {
    Default(LlmClassifier),
    Custom(Arc<dyn ErasedClassify>),
}

impl Default for Inner {
    fn default() -> Self {
        Inner::Default(LlmClassifier::default())
    }
}

impl StackClassifier {
    /// Wraps a classifier of yours (a [`LlmClassifier`] is kept as it is).
    pub fn new<C: Classify>(classifier: C) -> Self {
        let any: &dyn std::any::Any = &classifier;
        match any.downcast_ref::<LlmClassifier>() {
            Some(c) => StackClassifier(Inner::Default(*c)),
            None => StackClassifier(Inner::Custom(Arc::new(classifier))),
        }
    }

    /// Whether it is the default classifier.
    pub fn is_default(&self) -> bool {
        matches!(self.0, Inner::Default(_))
    }

    /// The same classifier, clamping rate-limit waits with `limits` if it is the
    /// default one (a classifier of yours keeps its own): the observer's window
    /// for a 429 then keeps to the caps its quota layer was configured with.
    pub(crate) fn with_limits(&self, limits: HeaderLimits) -> Self {
        match &self.0 {
            Inner::Default(_) => StackClassifier(Inner::Default(LlmClassifier::new(limits))),
            Inner::Custom(_) => self.clone(),
        }
    }
}

impl fmt::Debug for StackClassifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Inner::Default(c) => f.debug_tuple("StackClassifier").field(c).finish(),
            Inner::Custom(_) => f.write_str("StackClassifier(custom)"),
        }
    }
}

/// [`Classify`] without its generic method, so it fits in an `Arc<dyn _>`.
trait ErasedClassify: Send + Sync {
    fn classify_head(&self, head: &Response<()>) -> Outcome;
    fn erased_error(&self, error: &(dyn Error + 'static)) -> Outcome;
    fn erased_carries(&self, outcome: &Outcome) -> bool;
}

impl<C: Classify> ErasedClassify for C {
    fn classify_head(&self, head: &Response<()>) -> Outcome {
        Classify::classify_response(self, head)
    }

    fn erased_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        Classify::classify_error(self, error)
    }

    fn erased_carries(&self, outcome: &Outcome) -> bool {
        Classify::carries(self, outcome)
    }
}

impl Classify for StackClassifier {
    #[inline]
    fn classify_response<B>(&self, response: &Response<B>) -> Outcome {
        match &self.0 {
            Inner::Default(c) => c.classify_response(response),
            Inner::Custom(c) => {
                let mut head = Response::new(());
                *head.status_mut() = response.status();
                *head.version_mut() = response.version();
                head.headers_mut().clone_from(response.headers());
                *head.extensions_mut() = response.extensions().clone();
                c.classify_head(&head)
            }
        }
    }

    #[inline]
    fn classify_error(&self, error: &(dyn Error + 'static)) -> Outcome {
        match &self.0 {
            Inner::Default(c) => Classify::classify_error(c, error),
            Inner::Custom(c) => c.erased_error(error),
        }
    }

    #[inline]
    fn carries(&self, outcome: &Outcome) -> bool {
        match &self.0 {
            Inner::Default(c) => Classify::carries(c, outcome),
            Inner::Custom(c) => c.erased_carries(outcome),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower_failover_core::{ClientErrorKind, FailureKind};

    #[derive(Clone)]
    struct Teapot;

    impl Classify for Teapot {
        fn classify_response<B>(&self, res: &Response<B>) -> Outcome {
            match res.status().as_u16() {
                418 => Outcome::failure(FailureKind::Overloaded),
                _ => LlmClassifier::default().classify_response(res),
            }
        }
        fn classify_error(&self, _: &(dyn Error + 'static)) -> Outcome {
            Outcome::failure(FailureKind::Connect)
        }
    }

    #[test]
    fn a_custom_classifier_decides_and_the_default_stays_direct() {
        let res = Response::builder().status(418).body(()).unwrap();
        let mine = StackClassifier::new(Teapot);
        assert!(!mine.is_default());
        assert_eq!(
            mine.classify_response(&res),
            Outcome::failure(FailureKind::Overloaded)
        );
        assert_eq!(
            mine.classify_error(&std::io::Error::other("x")),
            Outcome::failure(FailureKind::Connect)
        );
        assert!(
            mine.carries(&Outcome::Success),
            "a custom one carries everything"
        );
        let default = StackClassifier::new(LlmClassifier::default());
        assert!(default.is_default());
        assert_eq!(
            default.classify_response(&res),
            Outcome::ClientError {
                kind: ClientErrorKind::Status(418)
            }
        );
        assert!(!default.carries(&Outcome::Success));
        assert_eq!(format!("{mine:?}"), "StackClassifier(custom)");
    }
}
