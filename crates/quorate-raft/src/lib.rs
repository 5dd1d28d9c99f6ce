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
pub mod tls;

openraft::declare_raft_types!(
    /// quorate's Raft types: commands in, command responses out, u64 node
    /// ids, members described by `NodeInfo`.
    pub TypeConfig:
        D = quorate_core::Command,
        R = quorate_core::CommandResponse,
        NodeId = u64,
        Node = NodeInfo,
);

/// A member as the cluster membership records it: where to reach it and the
/// ed25519 key its checkpoint cosignatures must verify under. Because keys
/// are part of membership, every replica checks a cosignature against the
/// same key at the same log position.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub struct NodeInfo {
    /// gRPC address of the node (API and Raft transport).
    pub addr: String,
    pub public_key: quorate_core::PublicKey,
    #[serde(default)]
    pub region: String,
}

impl std::fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (key {}, region {})",
            self.addr, self.public_key, self.region
        )
    }
}

/// Snapshot bytes as they move between state machine and transport.
pub type SnapshotData = Cursor<Vec<u8>>;

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<u64, NodeInfo>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
