//! The stored side of the proofs: the Merkle tree's perfect nodes, the
//! frontier, checkpoints with their cosignatures, and this node's own
//! divergence evidence. Layouts are in `docs/FORMATS.md` §6.

use quorate_core::merkle::{self, Frontier, NodeSource};
use quorate_core::proof::Checkpoint;
use quorate_core::{Cosignature, Digest};
use serde::{Deserialize, Serialize};

use crate::db::{CF_MERKLE, Store, StoreError};

/// Key of a perfect Merkle node: level (1 byte) then index (u64 BE).
pub(crate) fn merkle_key(level: u32, index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = u8::try_from(level).unwrap_or(u8::MAX);
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

/// The Merkle state every replica derives identically from the records.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ProofState {
    pub frontier: Frontier,
    /// Largest size any cosignature was accepted for.
    pub last_checkpoint: u64,
    /// Largest final checkpoint size.
    pub last_final: u64,
}

/// A checkpoint and where it became final.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointState {
    pub checkpoint: Checkpoint,
    /// Raft log index of the cosignature that completed a quorum.
    pub finalized_at: Option<u64>,
    /// The voters (with keys) of the membership applied when the first
    /// cosignature was: the checkpoint is judged under them for good, so a
    /// later membership change neither revokes nor grants its finality, and
    /// a node that joins later can check it without the old membership.
    /// Empty on checkpoints stored before voter sets were recorded; those
    /// are judged under the current membership.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<CheckpointVoter>,
}

/// A voter a checkpoint is judged under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckpointVoter {
    pub node_id: u64,
    pub public_key: quorate_core::PublicKey,
}

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

impl CheckpointState {
    /// The voters this checkpoint is judged under (see `voters`).
    pub fn judges(&self, current: &quorate_raft::Membership) -> Vec<CheckpointVoter> {
        if self.voters.is_empty() {
            voters_of(current)
        } else {
            self.voters.clone()
        }
    }

    pub fn is_final(&self) -> bool {
        self.finalized_at.is_some()
    }

    /// Adds a cosignature, keeping them sorted by node and unique.
    /// Returns false when `signer` had already cosigned.
    pub(crate) fn add(&mut self, signer: u64, signature: quorate_core::Signature) -> bool {
        let sigs = &mut self.checkpoint.cosignatures;
        match sigs.binary_search_by_key(&signer, |c| c.node_id) {
            Ok(_) => false,
            Err(at) => {
                sigs.insert(
                    at,
                    Cosignature {
                        node_id: signer,
                        signature,
                    },
                );
                true
            }
        }
    }

    pub fn cosigners(&self) -> Vec<u64> {
        self.checkpoint
            .cosignatures
            .iter()
            .map(|c| c.node_id)
            .collect()
    }
}

/// Evidence that a validly signed root differs from this node's own root at
/// the same size. Node-local: never part of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    pub size: u64,
    pub signer: u64,
    pub their_root: Digest,
    pub own_root: Digest,
    pub log_index: u64,
}

impl std::fmt::Display for Divergence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {} cosigned root {} at size {} (log index {}); this node computed {}",
            self.signer, self.their_root, self.size, self.log_index, self.own_root
        )
    }
}

/// The checkpoint most recently cosigned, for the node's signing task.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CheckpointProgress {
    pub size: u64,
    pub root: Digest,
    pub cosigners: Vec<u64>,
    pub is_final: bool,
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
