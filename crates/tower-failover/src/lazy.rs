//! A service whose clones are copied only when they are used.

use std::sync::Arc;
use std::task::{Context, Poll};

use tower_service::Service;

/// Wraps a service that is costly to clone (a type-erased stack: each boxed level
/// is one allocation to copy) so that a clone costs a reference count, and the
/// copy is made when the clone is first made ready.
///
/// For a service cloned but usually never called: `tower::retry::Retry` clones
/// itself (its inner service included) into every response future, for the retry
/// that most requests never make. Under it, the stack below is copied only when a
/// retry happens (issue 19: 7 allocations a request with the default stack).
///
/// Each clone still gets its own copy of the service before it is called, as a
/// plain clone would: readiness is never shared between clones.
pub(crate) struct LazyClone<S> {
    prototype: Arc<S>,
    own: Option<S>,
}

impl<S> LazyClone<S> {
    pub(crate) fn new(service: S) -> Self {
        LazyClone {
            prototype: Arc::new(service),
            own: None,
        }
    }
}

impl<S> Clone for LazyClone<S> {
    fn clone(&self) -> Self {
        LazyClone {
            prototype: self.prototype.clone(),
            own: None,
        }
    }
}

impl<S, R> Service<R> for LazyClone<S>
where
    S: Service<R> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        let prototype = &self.prototype;
        self.own
            .get_or_insert_with(|| S::clone(prototype))
            .poll_ready(cx)
    }

    fn call(&mut self, req: R) -> S::Future {
        // Called after `poll_ready`, so the copy exists; a caller that skips
        // `poll_ready` gets a fresh copy, as from a plain clone.
        let prototype = &self.prototype;
        self.own
            .get_or_insert_with(|| S::clone(prototype))
            .call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// Counts its clones; ready only once polled (so a shared readiness would
    /// show).
    struct Counted {
        clones: Arc<AtomicUsize>,
        ready: bool,
    }

    impl Clone for Counted {
        fn clone(&self) -> Self {
            self.clones.fetch_add(1, Ordering::Relaxed);
            Counted {
                clones: self.clones.clone(),
                ready: false,
            }
        }
    }

    impl Service<u32> for Counted {
        type Response = u32;
        type Error = &'static str;
        type Future = std::future::Ready<Result<u32, &'static str>>;

        fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            self.ready = true;
            Poll::Ready(Ok(()))
        }

        fn call(&mut self, req: u32) -> Self::Future {
            let ready = std::mem::replace(&mut self.ready, false);
            std::future::ready(if ready { Ok(req) } else { Err("not ready") })
        }
    }

    #[test]
    fn a_clone_is_copied_only_when_made_ready() {
        let clones = Arc::new(AtomicUsize::new(0));
        let lazy = LazyClone::new(Counted {
            clones: clones.clone(),
            ready: false,
        });
        let mut a = lazy.clone();
        let b = a.clone();
        assert_eq!(clones.load(Ordering::Relaxed), 0);
        let waker = std::task::Waker::noop();
        let mut cx = Context::from_waker(waker);
        assert!(a.poll_ready(&mut cx).is_ready());
        assert_eq!(clones.load(Ordering::Relaxed), 1);
        let answer = a.call(7).into_inner();
        assert_eq!(answer, Ok(7));
        // Its own copy, not the one `a` made ready.
        let mut b = b;
        assert_eq!(b.call(8).into_inner(), Err("not ready"));
        assert_eq!(clones.load(Ordering::Relaxed), 2);
        drop(lazy);
    }
}
