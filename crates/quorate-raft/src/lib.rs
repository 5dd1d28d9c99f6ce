//! quorate-raft owns consensus wiring: the openraft type configuration shared
//! by storage and server, and the gRPC transport that carries Raft RPCs
//! between nodes (client side in `network`, server side in `service`).
//!
//! Architecture invariant: no RocksDB and no decision logic here; this crate
//! moves openraft messages and nothing else. Transport security (mTLS) slots
//! in where channels and the server are built.

use std::io::Cursor;

pub mod network;
pub mod service;

openraft::declare_raft_types!(
    /// quorate's Raft types: commands in, command responses out, u64 node
    /// ids, nodes addressed by their gRPC address.
    pub TypeConfig:
        D = quorate_core::Command,
        R = quorate_core::CommandResponse,
        NodeId = u64,
        Node = openraft::BasicNode,
);

/// Snapshot bytes as they move between state machine and transport.
pub type SnapshotData = Cursor<Vec<u8>>;

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
