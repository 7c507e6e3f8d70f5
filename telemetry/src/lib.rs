//! What the three programs report about themselves. [`registry`] holds
//! counters, gauges and histograms under Dapr's metric names and writes them
//! as Prometheus text; each program declares its own families.

pub mod registry;
