//! quorate-store owns the bytes on disk: one RocksDB database per node
//! holding the Raft log, the vote, and the governed state machine (decision
//! log, request-id index, policy versions, domains, the Merkle tree's nodes,
//! checkpoints with their cosignatures, activations, snapshot).
//!
//! Architecture invariant: this is the only crate that knows RocksDB. It
//! implements openraft's storage traits for `quorate_raft::TypeConfig`; what
//! an entry does is decided by the pure governance machine
//! (`quorate_machine::Machine`), which reads through this crate's
//! `StateRead` and returns the rows to write, so what is stored is a pure
//! function of the committed log (invariant 3). This crate turns those rows
//! into one RocksDB batch per entry, derives metrics from them, and owns
//! verification, snapshots and repair. It must not depend on the policy
//! engine (`quorate-policy`), tonic or the server.
//!
//! Durability: a Raft log append is acknowledged to openraft only after the
//! WAL is synced (group commit: one sync serves every append queued behind
//! it). The vote is written with sync. State-machine writes share the same
//! WAL, so a synced log also carries every applied change before it.

pub mod backup;
mod db;
#[cfg(feature = "fault-injection")]
pub mod fault;
mod lineage;
mod log_store;
mod machine;
mod proofs;
mod snapshot;

pub use db::{Store, StoreError};
pub use log_store::LogStore;
pub use machine::{
    ChainHead, DecisionLookup, IncrementalCheck, IntegrityError, MachineState, StateMachine,
};
pub use proofs::{
    CheckpointProgress, CheckpointState, CheckpointVoter, Divergence, ProofState, VoterEpoch,
};
pub use snapshot::{
    SnapshotHeader, VerifiedSnapshot, read_header, repair_from_snapshot, trusted_voters,
    verify_stream,
};
