//! quorate-server owns a running node: it opens the store, starts openraft,
//! serves the public gRPC API (`quorate.v1.Governance`), the Raft transport
//! and the HTTP endpoints (/metrics, /healthz, /readyz, /status) with the
//! table of every metric it exports (`telemetry`), batches
//! authorization requests into Raft entries, and gathers the facts from
//! which `quorate_machine::containment` decides when the node must contain.
//!
//! Architecture invariant: this crate wires parts together; it makes no
//! decisions of its own. What a request decides is `quorate_policy::decide`
//! run by the state machine at apply time; this crate only chooses between
//! "propose and wait for the committed answer" and "DENY now" (containment).
//! It must not touch RocksDB directly (only through `quorate-store`).

pub mod admission;
pub mod api;
mod attest;
mod batcher;
pub mod config;
mod console;
pub mod envoy;
pub mod error;
mod federation;
pub mod http;
pub mod identity;
pub mod node;
mod proofs;
mod ratelimit;
pub mod rest;
pub mod telemetry;

pub use config::{ConfigError, NodeConfig};
pub use error::ApiError;
pub use node::{Node, NodeError, RunningNode};
