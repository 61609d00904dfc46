//! The last requests a sim received, for tests that check what a client sent.

use std::collections::VecDeque;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use bytes::Bytes;
use http::{HeaderMap, Method, Uri};

/// How many requests a sim remembers (the oldest are forgotten first).
pub(crate) const KEPT: usize = 64;

/// One request as a sim received it: method, target, headers and, once the sim has
/// read it, the body.
///
/// Admin requests (`/_sim/…`) are not recorded. `Debug` shows header names only:
/// a request's headers may carry credentials.
#[derive(Clone)]
#[non_exhaustive]
pub struct Received {
    /// The request method.
    pub method: Method,
    /// The request target as sent: path and query.
    pub uri: Uri,
    /// Every header the request carried.
    pub headers: HeaderMap,
    /// The body, set when the sim has read it.
    pub(crate) body: Arc<OnceLock<Bytes>>,
}

impl Received {
    /// The request body exactly as it arrived, once the sim has read it (`None` for
    /// a request answered before its body was read, by an outage fault).
    pub fn body(&self) -> Option<&Bytes> {
        self.body.get()
    }

    /// The first value of header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl fmt::Debug for Received {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Received")
            .field("method", &self.method)
            .field("path", &self.uri.path())
            .field("headers", &self.headers.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The bounded log behind [`SimHandle::received`](crate::SimHandle::received).
#[derive(Default)]
pub(crate) struct ReceivedLog(Mutex<VecDeque<Received>>);

impl ReceivedLog {
    pub(crate) fn push(&self, r: Received) {
        let mut log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == KEPT {
            log.pop_front();
        }
        log.push_back(r);
    }

    pub(crate) fn snapshot(&self) -> Vec<Received> {
        let log = self.0.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect()
    }

    pub(crate) fn clear(&self) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_last_requests_only() {
        let log = ReceivedLog::default();
        for i in 0..KEPT + 3 {
            log.push(Received {
                method: Method::POST,
                uri: format!("/v1/chat/completions?n={i}").parse().unwrap(),
                headers: HeaderMap::new(),
                body: Arc::default(),
            });
        }
        let kept = log.snapshot();
        assert_eq!(kept.len(), KEPT);
        assert_eq!(kept[0].uri.query(), Some("n=3"));
        log.clear();
        assert!(log.snapshot().is_empty());
    }
}
