//! The stored side of the proofs: the Merkle tree's perfect nodes, the
//! frontier, checkpoints with their cosignatures, and this node's own
//! divergence evidence. Layouts are in `docs/FORMATS.md` §6.

use quorate_core::Digest;
use quorate_core::merkle::{self, NodeSource};
use serde::{Deserialize, Serialize};

use crate::db::{CF_MERKLE, Store, StoreError};

/// Key of a perfect Merkle node: level (1 byte) then index (u64 BE).
pub(crate) fn merkle_key(level: u32, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = u8::try_from(level).unwrap_or(u8::MAX);
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

pub use quorate_machine::{
    CheckpointProgress, CheckpointState, CheckpointVoter, Divergence, ProofState,
};

/// One voter set of the cluster's history, with keys, and the decision-log
/// size at which a later set replaced it (`None` while current). The trust
/// file lists these so that checkpoints judged under a former voter set
/// still verify offline, and only for sizes that set could have judged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoterEpoch {
    pub voters: Vec<CheckpointVoter>,
    pub until_size: Option<u64>,
}

impl VoterEpoch {
    pub fn ids(&self) -> Vec<u64> {
        self.voters.iter().map(|v| v.node_id).collect()
    }
}

/// Records `membership`'s voters as a new epoch when they differ from the
/// current one, closing the current one at `size`.
pub(crate) fn record_voters(
    history: &mut Vec<VoterEpoch>,
    membership: &quorate_raft::Membership,
    size: u64,
) -> bool {
    let voters = voters_of(membership);
    let ids: Vec<u64> = voters.iter().map(|v| v.node_id).collect();
    if history.last().is_some_and(|e| e.ids() == ids) {
        return false;
    }
    if let Some(last) = history.last_mut() {
        last.until_size = Some(size);
    }
    history.push(VoterEpoch {
        voters,
        until_size: None,
    });
    true
}

/// The voters of `membership`, with their keys.
pub(crate) fn voters_of(membership: &quorate_raft::Membership) -> Vec<CheckpointVoter> {
    // BTreeSet order: sorted by node id.
    membership
        .voter_ids()
        .filter_map(|id| {
            membership.get_node(&id).map(|n| CheckpointVoter {
                node_id: id,
                public_key: n.public_key,
            })
        })
        .collect()
}

/// How many recent tree heads are kept for the attestation task.
const RECENT_HEADS: usize = 1024;

/// The tree heads (size, root) at the end of recently applied entries that
/// appended records, oldest first, at most `RECENT_HEADS`. In memory only:
/// after a restart a voter attests its current head.
#[derive(Debug, Default)]
pub(crate) struct TreeHeads {
    heads: std::collections::VecDeque<(u64, Digest)>,
}

impl TreeHeads {
    pub(crate) fn push(&mut self, head: (u64, Digest)) {
        if self.heads.len() == RECENT_HEADS {
            self.heads.pop_front();
        }
        self.heads.push_back(head);
    }

    pub(crate) fn after(&self, size: u64) -> Vec<(u64, Digest)> {
        self.heads
            .iter()
            .filter(|(s, _)| *s > size)
            .copied()
            .collect()
    }
}

/// Reads perfect nodes from the `merkle` column family.
pub(crate) struct StoredNodes<'a> {
    pub(crate) store: &'a Store,
}

impl NodeSource for StoredNodes<'_> {
    type Error = StoreError;

    fn node(&self, level: u32, index: u64) -> Result<Digest, StoreError> {
        let cf = self.store.cf(CF_MERKLE)?;
        let key = merkle_key(level, index);
        let v = self
            .store
            .db
            .get_pinned_cf(&cf, key)?
            .ok_or_else(|| StoreError::Corrupt {
                what: format!("merkle/{level}/{index}"),
                message: "perfect node missing".into(),
            })?;
        let bytes: [u8; 32] = v.as_ref().try_into().map_err(|_| StoreError::Corrupt {
            what: format!("merkle/{level}/{index}"),
            message: format!("{} bytes, expected 32", v.len()),
        })?;
        Ok(Digest(bytes))
    }
}

/// Perfect Merkle nodes the serving path has read or the apply path has
/// written, so that a receipt's inclusion proof costs hash-map lookups
/// rather than ~log2(n) RocksDB reads.
///
/// Only the serving path ([`CachedNodes`]: receipts, roots and consistency
/// proofs handed to callers) reads it. Verification at rest always reads
/// RocksDB ([`StoredNodes`]), so a node altered on disk is still found
/// (invariant 6) even while the cache holds its honest value.
///
/// A perfect node never changes once written (the log is append-only);
/// only replacing history (a snapshot install or a repair) does that, and
/// it calls [`NodeCache::clear`] before and after. A read that raced with a
/// clear is not kept: `generation` tells.
#[derive(Debug, Default)]
pub(crate) struct NodeCache {
    inner: std::sync::RwLock<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    nodes: std::collections::HashMap<(u32, u64), Digest>,
    generation: u64,
}

impl NodeCache {
    /// At most this many nodes (32 bytes each, about 4 MiB with the map's
    /// overhead); when full it starts over rather than tracking recency.
    const CAPACITY: usize = 1 << 16;

    fn get(&self, level: u32, index: u64) -> (Option<Digest>, u64) {
        match self.inner.read() {
            Ok(c) => (c.nodes.get(&(level, index)).copied(), c.generation),
            Err(_) => (None, u64::MAX),
        }
    }

    /// Keeps nodes read or written under `generation`; dropped if a clear
    /// came in between.
    pub(crate) fn insert(
        &self,
        generation: u64,
        nodes: impl IntoIterator<Item = (u32, u64, Digest)>,
    ) {
        let Ok(mut c) = self.inner.write() else {
            return;
        };
        if c.generation != generation {
            return;
        }
        for (level, index, hash) in nodes {
            if c.nodes.len() >= Self::CAPACITY {
                c.nodes.clear();
            }
            c.nodes.insert((level, index), hash);
        }
    }

    pub(crate) fn generation(&self) -> u64 {
        self.inner.read().map(|c| c.generation).unwrap_or(u64::MAX)
    }

    /// Forgets every node: history is being replaced.
    pub(crate) fn clear(&self) {
        let mut c = self.inner.write().unwrap_or_else(|p| p.into_inner());
        c.nodes.clear();
        c.generation = c.generation.wrapping_add(1);
    }
}

/// Perfect nodes for the serving path: the store's [`NodeCache`], then
/// RocksDB. Never used to verify stored state.
pub(crate) struct CachedNodes<'a> {
    pub(crate) store: &'a Store,
}

impl NodeSource for CachedNodes<'_> {
    type Error = StoreError;

    fn node(&self, level: u32, index: u64) -> Result<Digest, StoreError> {
        let cache = &self.store.node_cache;
        let (hit, generation) = cache.get(level, index);
        if let Some(d) = hit {
            return Ok(d);
        }
        let d = StoredNodes { store: self.store }.node(level, index)?;
        cache.insert(generation, [(level, index, d)]);
        Ok(d)
    }
}

/// Maps a proof failure over stored nodes to a store error.
pub(crate) fn proof_err(e: merkle::ProofError<StoreError>) -> StoreError {
    match e {
        merkle::ProofError::Source(s) => s,
        merkle::ProofError::Merkle(m) => StoreError::Corrupt {
            what: "merkle".into(),
            message: m.to_string(),
        },
    }
}

#[cfg(test)]
mod node_cache_tests {
    use super::*;

    #[test]
    fn a_read_that_raced_with_a_clear_is_not_kept_and_a_full_cache_starts_over() {
        let c = NodeCache::default();
        let g = c.generation();
        c.insert(g, [(0, 1, Digest([1; 32]))]);
        assert_eq!(c.get(0, 1).0, Some(Digest([1; 32])));
        // A reader saw generation g, history was replaced meanwhile: what it
        // read from the old history is dropped.
        c.clear();
        assert_eq!(c.get(0, 1).0, None);
        c.insert(g, [(0, 1, Digest([1; 32]))]);
        assert_eq!(c.get(0, 1).0, None);
        let g = c.generation();
        c.insert(
            g,
            (0..NodeCache::CAPACITY as u64 + 1).map(|i| (0, i, Digest([2; 32]))),
        );
        let held = c.inner.read().map(|c| c.nodes.len()).unwrap_or(0);
        assert!(held <= NodeCache::CAPACITY, "{held}");
        assert_eq!(
            c.get(0, NodeCache::CAPACITY as u64).0,
            Some(Digest([2; 32]))
        );
    }
}
