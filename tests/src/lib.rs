//! Shared fixtures for the cross-crate scenario tests in `tests/tests/`.
