//! The state the governance machine keeps in memory between commands, and
//! the stored types it reads and writes. Layouts are in `docs/FORMATS.md`
//! §6; the store persists them, the machine only describes them.

use std::collections::BTreeMap;

use quorate_core::merkle::Frontier;
use quorate_core::proof::Checkpoint;
use quorate_core::rollout::Rollout;
use quorate_core::{Cosignature, Digest};
use serde::{Deserialize, Serialize};

/// The end of the decision log: how many records and the last one's hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ChainHead {
    pub count: u64,
    pub hash: Digest,
}

/// Per-domain policy state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DomainMeta {
    pub latest_version: u64,
    pub active_version: Option<u64>,
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

impl CheckpointState {
    /// The voters this checkpoint is judged under (see `voters`); `current`
    /// are the applied membership's voters.
    pub fn judges(&self, current: &[CheckpointVoter]) -> Vec<CheckpointVoter> {
        if self.voters.is_empty() {
            current.to_vec()
        } else {
            self.voters.clone()
        }
    }

    pub fn is_final(&self) -> bool {
        self.finalized_at.is_some()
    }

    /// Checks this stored checkpoint against `chain` (verified up to its
    /// size) with the one chain verifier: its root, and every cosignature
    /// under its judges; one marked final must carry a majority of them,
    /// not merely say so. `current` are the applied membership's voters.
    pub fn check(
        &self,
        chain: &quorate_core::Chain,
        current: &[CheckpointVoter],
        cluster_id: Option<&str>,
    ) -> Result<(), quorate_core::ChainError> {
        let judges = self.judges(current);
        let keyed: Vec<(u64, Option<&quorate_core::PublicKey>)> = judges
            .iter()
            .map(|v| (v.node_id, Some(&v.public_key)))
            .collect();
        let finality = if self.is_final() {
            quorate_core::Finality::Final
        } else {
            quorate_core::Finality::Partial
        };
        chain.checkpoint(&self.checkpoint, cluster_id, &keyed, finality)
    }

    /// Adds a cosignature, keeping them sorted by node and unique.
    /// Returns false when `signer` had already cosigned.
    pub fn add(&mut self, signer: u64, signature: quorate_core::Signature) -> bool {
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

/// What the machine keeps in memory between commands: everything a command
/// needs besides the rows it reads through [`crate::StateRead`]. Every
/// replica holds the same value after the same commands (divergence
/// evidence excepted: it is node-local).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GovernanceState {
    pub head: ChainHead,
    pub domains: BTreeMap<String, DomainMeta>,
    pub proof: ProofState,
    /// Set when a validly signed checkpoint root differed from ours: this
    /// node's history is not the quorum's, and it contains (invariant 3).
    pub divergence: Option<Divergence>,
    /// The most recently started rollout, active or ended.
    pub rollout: Option<Rollout>,
}
