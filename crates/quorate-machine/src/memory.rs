//! The governance state held in memory: a [`StateRead`] over maps, and the
//! writes applied to them. For unit tests of the machine and for the
//! simulation, which runs whole replicas without RocksDB.

use std::collections::BTreeMap;
use std::convert::Infallible;

use quorate_core::export::Activation;
use quorate_core::rollout::Rollout;
use quorate_core::{DecisionRecord, Digest, PolicyVersion};

use crate::machine::{StateRead, Write};
use crate::state::{CheckpointState, Divergence, DomainMeta};

/// Every row the machine writes, in maps keyed as the store keys them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemoryRows {
    pub decisions: BTreeMap<u64, DecisionRecord>,
    pub request_ids: BTreeMap<(String, String), u64>,
    pub merkle: BTreeMap<(u32, u64), Digest>,
    pub policies: BTreeMap<(String, u64), PolicyVersion>,
    pub domains: BTreeMap<String, DomainMeta>,
    /// By (log index, domain), the store's activation order.
    pub activations: BTreeMap<(u64, String), Activation>,
    pub checkpoints: BTreeMap<u64, CheckpointState>,
    pub rollouts: BTreeMap<String, Rollout>,
    pub rollout_latest: Option<String>,
    pub divergence: Option<Divergence>,
}

impl MemoryRows {
    /// Applies one entry's writes (all of them: the store writes them as
    /// one batch).
    pub fn write(&mut self, writes: &[Write]) {
        for w in writes {
            match w {
                Write::Decision(r) => {
                    self.decisions.insert(r.index, r.clone());
                }
                Write::RequestId {
                    domain,
                    request_id,
                    index,
                } => {
                    self.request_ids
                        .insert((domain.clone(), request_id.clone()), *index);
                }
                Write::MerkleNode { level, index, hash } => {
                    self.merkle.insert((*level, *index), *hash);
                }
                Write::Policy(p) => {
                    self.policies
                        .insert((p.domain.clone(), p.version), p.clone());
                }
                Write::Domain { domain, meta } => {
                    self.domains.insert(domain.clone(), *meta);
                }
                Write::Activation(a) => {
                    self.activations
                        .insert((a.log_index, a.domain.clone()), a.clone());
                }
                Write::Checkpoint(c) => {
                    self.checkpoints.insert(c.checkpoint.size, c.clone());
                }
                Write::Rollout(r) => {
                    self.rollouts.insert(r.id.clone(), r.clone());
                }
                Write::RolloutLatest(id) => self.rollout_latest = Some(id.clone()),
                Write::Divergence(d) => self.divergence = Some(d.clone()),
            }
        }
    }
}

impl StateRead for MemoryRows {
    type Error = Infallible;

    fn request_index(&self, domain: &str, request_id: &str) -> Result<Option<u64>, Infallible> {
        Ok(self
            .request_ids
            .get(&(domain.to_string(), request_id.to_string()))
            .copied())
    }

    fn decision(&self, index: u64) -> Result<Option<DecisionRecord>, Infallible> {
        Ok(self.decisions.get(&index).cloned())
    }

    fn policy(&self, domain: &str, version: u64) -> Result<Option<PolicyVersion>, Infallible> {
        Ok(self.policies.get(&(domain.to_string(), version)).cloned())
    }

    fn checkpoint(&self, size: u64) -> Result<Option<CheckpointState>, Infallible> {
        Ok(self.checkpoints.get(&size).cloned())
    }

    fn rollout_exists(&self, id: &str) -> Result<bool, Infallible> {
        Ok(self.rollouts.contains_key(id))
    }

    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Digest>, Infallible> {
        Ok(self.merkle.get(&(level, index)).copied())
    }
}
