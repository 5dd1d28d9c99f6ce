//! quorate-machine owns the governance state machine as a pure function:
//! (the state it reads, a command, its log index) → (a response, the rows
//! it writes). Evaluation, the hash chain, Merkle appends, checkpoints and
//! cosignature acceptance, policy publication and activation, rollouts, and
//! checkpoint judging under the voter set of the era they began in. Also the
//! one home of containment (`containment`): the pure rules by which a node,
//! real or simulated, denies everything, signs, campaigns and hands over.
//!
//! Architecture invariant: no IO, no clock, no async, no randomness. It
//! reads through [`StateRead`] and returns [`Write`]s as data; it must not
//! depend on RocksDB, openraft, tonic or tokio. `quorate-store` implements
//! `StateRead` on RocksDB and writes an entry's writes as one batch;
//! [`MemoryRows`] implements it in memory for tests and the simulation.
//! Metrics and logs are the caller's: it derives them from the writes.

pub mod containment;
mod machine;
mod memory;
mod state;

pub use machine::{Applied, Context, Machine, MachineError, StateRead, Write};
pub use memory::MemoryRows;
pub use state::{
    ChainHead, CheckpointProgress, CheckpointState, CheckpointVoter, Divergence, DomainMeta,
    GovernanceState, ProofState,
};

#[cfg(test)]
mod tests;
