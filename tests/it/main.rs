//! End-to-end tests against real multi-node clusters: real `quorate node`
//! processes, real TCP on loopback, real RocksDB in temp dirs.
//!
//! Named by priority, as openraft's tests are: t10 the basic decision path,
//! t20 crashes and quorum loss, t30 determinism, t40 the CLI contract, t50
//! proofs (receipts, exports, consistency, signed policies), t60 tamper
//! evidence and repair, t70 federation (learners, watch, membership), t80
//! transport security, t90 what operators scrape, t95 what people see
//! (the console's API; its pages in a real browser).

mod t100_envoy;
mod t101_client;
mod t102_mcp;
mod t103_examples;
mod t10_decision_path;
mod t20_crashes;
mod t30_determinism;
mod t40_cli;
mod t50_proofs;
mod t60_tamper;
mod t61_backup;
mod t70_federation;
mod t71_rollout;
mod t80_tls;
mod t90_operations;
mod t95_console;
mod t96_browser;
mod t97_demo;
mod t98_rest;
mod t99_admission;
