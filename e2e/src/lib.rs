//! End-to-end tests of daprs against a real cluster (kind in CI).
//!
//! They live in `tests/` and run only where a cluster is reachable.
