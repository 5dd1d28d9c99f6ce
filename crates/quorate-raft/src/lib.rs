//! quorate-raft owns consensus wiring: the openraft type configuration shared
//! by storage and server, and the gRPC transport that carries Raft RPCs
//! between nodes (client side in `network`, server side in `service`).
//!
//! Architecture invariant: no RocksDB and no decision logic here; this crate
//! moves openraft messages and nothing else. Transport security (mTLS) slots
//! in where channels and the server are built.

use std::path::{Path, PathBuf};
use std::sync::Arc;

pub mod network;
pub mod service;
pub mod tls;
pub mod token;

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

/// A snapshot as it moves between state machine and transport: an open,
/// complete snapshot file (the frame container of `quorate_core::frames`).
/// Never held in memory whole: the transport reads it a chunk at a time at
/// an offset, the store reads it a frame at a time. The file stays open, so
/// a newer snapshot replacing it on disk does not cut a transfer short.
#[derive(Debug, Clone)]
pub struct SnapshotData {
    path: PathBuf,
    file: Arc<std::fs::File>,
}

impl SnapshotData {
    /// Opens the snapshot file at `path` for reading.
    pub fn open(path: &Path) -> std::io::Result<SnapshotData> {
        let file = std::fs::File::open(path)?;
        Ok(SnapshotData {
            path: path.to_path_buf(),
            file: Arc::new(file),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn len(&self) -> std::io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }

    pub fn is_empty(&self) -> std::io::Result<bool> {
        Ok(self.len()? == 0)
    }

    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end.
    pub fn read_at(&self, offset: u64, buf: &mut [u8]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let mut done = 0;
        while done < buf.len() {
            match self.file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

pub type LogId = openraft::type_config::alias::LogIdOf<TypeConfig>;
pub type Entry = openraft::type_config::alias::EntryOf<TypeConfig>;
pub type Vote = openraft::type_config::alias::VoteOf<TypeConfig>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<TypeConfig>;
pub type Membership = openraft::Membership<u64, NodeInfo>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<TypeConfig, SnapshotData>;
