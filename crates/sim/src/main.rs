//! `tower-failover-sim`: run simulated LLM providers from a script file.
fn main() {}
