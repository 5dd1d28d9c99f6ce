//! The governed state machine. Applying a committed entry is deterministic:
//! it reads only the entry, the stored state and the entry's leader-chosen
//! timestamp (invariant 3), and every replica writes identical records.

use std::collections::BTreeMap;
use std::io;
use std::sync::{Arc, Mutex, RwLock};

use futures::StreamExt;
use openraft::EntryPayload;
use openraft::storage::{EntryResponder, RaftStateMachine};
use quorate_core::export::Activation;
use quorate_core::merkle;
use quorate_core::rollout::Rollout;
use quorate_core::validate::Limits;
use quorate_core::{
    Chain, ChainError, CommandResponse, DecisionRecord, Digest, PolicyVersion, policy_content_hash,
};
use quorate_machine::{Context, GovernanceState, Machine, MachineError, StateRead, Write};
use quorate_raft::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};
use rocksdb::{IteratorMode, WriteBatch};
use serde::Serialize;
use tokio::sync::watch;

use crate::db::{
    CF_ACTIVATIONS, CF_CHECKPOINTS, CF_DECISIONS, CF_DOMAINS, CF_MERKLE, CF_POLICIES,
    CF_REQUEST_IDS, CF_ROLLOUTS, CF_SM_META, Store, StoreError, decode, encode, key_u64, u64_key,
};
use crate::proofs::{
    CachedNodes, CheckpointProgress, CheckpointState, CheckpointVoter, Divergence, ProofState,
    StoredNodes, TreeHeads, merkle_key, proof_err, voters_of,
};
use crate::snapshot::{self, SnapshotBuilder};

pub(crate) const KEY_LAST_APPLIED: &[u8] = b"last_applied";

pub(crate) type View<'a> = rocksdb::SnapshotWithThreadMode<'a, rocksdb::DB>;
pub(crate) const KEY_MEMBERSHIP: &[u8] = b"membership";
pub(crate) const KEY_HEAD: &[u8] = b"chain_head";
/// Node-local: the size of a final checkpoint up to which this node last
/// verified its stored chain in full (a hint that start-up verification
/// resumes from; never in a snapshot).
pub(crate) const KEY_VERIFIED: &[u8] = b"verified_upto";
pub(crate) const KEY_PROOF: &[u8] = b"proof";
/// The cluster's voter sets over time (`proofs::VoterEpoch`).
pub(crate) const KEY_VOTER_HISTORY: &[u8] = b"voter_history";
/// The id of the most recently started rollout (its state is in
/// `rollouts`).
pub(crate) const KEY_ROLLOUT_LATEST: &[u8] = b"rollout_latest";
/// Node-local: this node's divergence evidence. Never in a snapshot.
pub(crate) const KEY_DIVERGENCE: &[u8] = b"divergence";

pub use quorate_machine::ChainHead;
pub(crate) use quorate_machine::DomainMeta;

/// What the state machine has applied, shared with readers: the governance
/// state the pure machine keeps (`gov`, reachable through `Deref`), plus
/// what openraft and the trust file need.
#[derive(Debug, Clone, Default)]
pub struct MachineState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub gov: GovernanceState,
    /// Every voter set the cluster has had, oldest first.
    pub voter_history: Vec<crate::proofs::VoterEpoch>,
}

impl std::ops::Deref for MachineState {
    type Target = GovernanceState;
    fn deref(&self) -> &GovernanceState {
        &self.gov
    }
}

impl std::ops::DerefMut for MachineState {
    fn deref_mut(&mut self) -> &mut GovernanceState {
        &mut self.gov
    }
}

pub(crate) fn request_key(domain: &str, request_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(domain.len() + request_id.len() + 1);
    k.extend_from_slice(domain.as_bytes());
    k.push(0);
    k.extend_from_slice(request_id.as_bytes());
    k
}

/// One Raft entry can activate several domains (a rollout's promote or
/// rollback), so the key is the log index, then the domain: scans return
/// activations in log order, and within an entry by domain.
pub(crate) fn activation_key(log_index: u64, domain: &str) -> Vec<u8> {
    let mut k = u64_key(log_index).to_vec();
    k.extend_from_slice(domain.as_bytes());
    k
}

pub(crate) fn policy_key(domain: &str, version: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(domain.len() + 9);
    k.extend_from_slice(domain.as_bytes());
    k.push(0);
    k.extend_from_slice(&version.to_be_bytes());
    k
}

/// Read access to applied state, for the API. Cheap to clone.
#[derive(Clone)]
pub struct DecisionLookup {
    store: Store,
    state: Arc<RwLock<MachineState>>,
    applied: watch::Receiver<u64>,
    checkpoints: watch::Receiver<CheckpointProgress>,
    heads: Arc<Mutex<TreeHeads>>,
}

impl std::fmt::Debug for DecisionLookup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecisionLookup").finish_non_exhaustive()
    }
}

impl DecisionLookup {
    /// A copy of the applied state.
    pub fn state(&self) -> MachineState {
        self.state.read().map(|s| s.clone()).unwrap_or_default()
    }

    pub fn head(&self) -> ChainHead {
        self.state.read().map(|s| s.head).unwrap_or_default()
    }

    #[cfg(feature = "fault-injection")]
    pub(crate) fn store(&self) -> &Store {
        &self.store
    }

    /// Notified with the last applied Raft log index after every apply.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.applied.clone()
    }

    /// Notified with each checkpoint that gained a cosignature.
    pub fn subscribe_checkpoints(&self) -> watch::Receiver<CheckpointProgress> {
        self.checkpoints.clone()
    }

    pub fn proof_state(&self) -> ProofState {
        self.state
            .read()
            .map(|s| s.proof.clone())
            .unwrap_or_default()
    }

    /// Records covered by the largest final checkpoint (cheap: no clone
    /// of the frontier; containment checks it on every request).
    pub fn last_final(&self) -> u64 {
        self.state.read().map(|s| s.proof.last_final).unwrap_or(0)
    }

    pub fn divergence(&self) -> Option<Divergence> {
        self.state.read().ok().and_then(|s| s.divergence.clone())
    }

    /// The Merkle root of the first `size` records, from stored nodes.
    pub fn root_at(&self, size: u64) -> Result<Digest, StoreError> {
        merkle::root_at(&CachedNodes { store: &self.store }, size).map_err(proof_err)
    }

    /// Audit path of record `index` (1-based) in the tree of `size` records.
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Digest>, StoreError> {
        merkle::inclusion_proof(
            &CachedNodes { store: &self.store },
            index.saturating_sub(1),
            size,
        )
        .map_err(proof_err)
    }

    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Digest>, StoreError> {
        merkle::consistency_proof(&CachedNodes { store: &self.store }, old, new).map_err(proof_err)
    }

    pub fn checkpoint(&self, size: u64) -> Result<Option<CheckpointState>, StoreError> {
        self.store.get_json(CF_CHECKPOINTS, &u64_key(size))
    }

    /// The smallest final checkpoint whose tree holds record `index`.
    pub fn final_checkpoint_covering(
        &self,
        index: u64,
    ) -> Result<Option<CheckpointState>, StoreError> {
        let cf = self.store.cf(CF_CHECKPOINTS)?;
        let key = u64_key(index);
        let it = self
            .store
            .db
            .iterator_cf(&cf, IteratorMode::From(&key, rocksdb::Direction::Forward));
        for kv in it {
            let (k, v) = kv?;
            let cp: CheckpointState = decode(CF_CHECKPOINTS, &k, &v)?;
            if cp.is_final() {
                return Ok(Some(cp));
            }
        }
        Ok(None)
    }

    /// The largest final checkpoint, if any.
    pub fn latest_final_checkpoint(&self) -> Result<Option<CheckpointState>, StoreError> {
        let size = self.last_final();
        if size == 0 {
            return Ok(None);
        }
        self.checkpoint(size)
    }

    /// Builds a snapshot of the current state from a consistent view (for
    /// `quorate node repair` on a peer).
    pub fn build_snapshot(&self) -> Result<Snapshot, StoreError> {
        SnapshotBuilder::new(self.store.clone()).build()
    }

    /// The tree heads (size, root) this node reached at the end of each
    /// recently applied entry that appended records, after `size`, oldest
    /// first. Every replica reaches the same heads (entries are the same
    /// everywhere), which is what lets voters attest one size together.
    pub fn tree_heads_after(&self, size: u64) -> Vec<(u64, Digest)> {
        self.heads.lock().map(|h| h.after(size)).unwrap_or_default()
    }

    /// The voters of the applied membership, with their keys, sorted by id.
    pub fn applied_voters(&self) -> Vec<CheckpointVoter> {
        self.state
            .read()
            .map(|s| voters_of(s.membership.membership()))
            .unwrap_or_default()
    }

    /// The tree size and root as last applied, read together.
    pub fn tree_head(&self) -> (u64, Digest) {
        self.state
            .read()
            .map(|s| (s.proof.frontier.size(), s.proof.frontier.root()))
            .unwrap_or((0, merkle::empty_root()))
    }

    /// Every stored checkpoint, in size order.
    pub fn checkpoints(&self) -> Result<Vec<CheckpointState>, StoreError> {
        scan_all(&self.store, CF_CHECKPOINTS)
    }

    /// Every activation (and publish-with-activate), in log order.
    pub fn activations(&self) -> Result<Vec<Activation>, StoreError> {
        scan_all(&self.store, CF_ACTIVATIONS)
    }

    /// Every voter set the cluster has had, oldest first.
    pub fn voter_history(&self) -> Vec<crate::proofs::VoterEpoch> {
        self.state
            .read()
            .map(|s| s.voter_history.clone())
            .unwrap_or_default()
    }

    /// A rollout by id, or the latest one when `id` is empty.
    pub fn rollout(&self, id: &str) -> Result<Option<Rollout>, StoreError> {
        if id.is_empty() {
            return Ok(self.state().gov.rollout);
        }
        self.store.get_json(CF_ROLLOUTS, id.as_bytes())
    }

    /// Every policy version of every domain.
    pub fn policies(&self) -> Result<Vec<PolicyVersion>, StoreError> {
        scan_all(&self.store, CF_POLICIES)
    }

    pub fn decision(&self, index: u64) -> Result<Option<DecisionRecord>, StoreError> {
        self.store.get_json(CF_DECISIONS, &u64_key(index))
    }

    /// The decision of (domain, request id), if one was decided. The
    /// request-id row is derived data: the record it points at must be that
    /// request's, or the row is corrupt (invariant 6), never answered.
    pub fn decision_by_request(
        &self,
        domain: &str,
        request_id: &str,
    ) -> Result<Option<DecisionRecord>, StoreError> {
        let key = request_key(domain, request_id);
        let idx: Option<u64> = self.store.get_json(CF_REQUEST_IDS, &key)?;
        let Some(i) = idx else {
            return Ok(None);
        };
        match self.decision(i)? {
            Some(r) if r.request.domain == domain && r.request.request_id == request_id => {
                Ok(Some(r))
            }
            other => Err(StoreError::Corrupt {
                what: format!("{CF_REQUEST_IDS}/{domain}/{request_id}"),
                message: format!(
                    "the request-id index row points at decision {i}, which {}",
                    if other.is_some() {
                        "is another request's"
                    } else {
                        "does not exist"
                    }
                ),
            }),
        }
    }

    /// Checks that each of `indexes`, found by a lineage row, is a record
    /// that `matches` (the row's parent or trace id): a forged row is
    /// corrupt (invariant 6), never answered as a child.
    fn lineage_checked(
        &self,
        indexes: Vec<u64>,
        row: &str,
        matches: impl Fn(&DecisionRecord) -> bool,
    ) -> Result<Vec<u64>, StoreError> {
        for &i in &indexes {
            if !self.decision(i)?.is_some_and(|r| matches(&r)) {
                return Err(StoreError::Corrupt {
                    what: format!("lineage/{row}"),
                    message: format!(
                        "a lineage index row names decision {i}, whose record does not say so"
                    ),
                });
            }
        }
        Ok(indexes)
    }

    /// Indexes of the decisions of `domain` naming request id `parent` as
    /// their parent, above `after`, in log order, at most `limit`.
    pub fn children(
        &self,
        domain: &str,
        parent: &str,
        after: u64,
        limit: usize,
    ) -> Result<Vec<u64>, StoreError> {
        let found = crate::lineage::children(&self.store, domain, parent, after, limit)?;
        self.lineage_checked(found, &format!("{domain}/{parent}"), |r| {
            r.request.domain == domain && r.request.parent.as_deref() == Some(parent)
        })
    }

    /// Indexes of the decisions carrying `trace_id`, above `after`, in log
    /// order, at most `limit`.
    pub fn trace(&self, trace_id: &str, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
        let found = crate::lineage::trace(&self.store, trace_id, after, limit)?;
        self.lineage_checked(found, trace_id, |r| {
            r.request.trace_id.as_deref() == Some(trace_id)
        })
    }

    /// The decision index of (domain, request id), if one was decided
    /// (checked as `decision_by_request` checks it).
    pub fn index_of_request(
        &self,
        domain: &str,
        request_id: &str,
    ) -> Result<Option<u64>, StoreError> {
        Ok(self
            .decision_by_request(domain, request_id)?
            .map(|r| r.index))
    }

    /// A consistent RocksDB checkpoint of this database in `dir` (which
    /// must not exist): see `crate::backup`.
    pub fn checkpoint_to(&self, dir: &std::path::Path) -> Result<(), StoreError> {
        crate::backup::checkpoint_to(&self.store, dir)
    }

    /// Every rollout, in id order.
    pub fn rollouts(&self) -> Result<Vec<Rollout>, StoreError> {
        scan_all(&self.store, CF_ROLLOUTS)
    }

    /// Records with index < `before` (0 = the newest), newest first, at
    /// most `limit`.
    pub fn decisions_before(
        &self,
        before: u64,
        limit: usize,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let cf = self.store.cf(CF_DECISIONS)?;
        let start = if before == 0 {
            u64::MAX >> 1
        } else {
            before - 1
        };
        let key = u64_key(start);
        let it = self
            .store
            .db
            .iterator_cf(&cf, IteratorMode::From(&key, rocksdb::Direction::Reverse));
        let mut out = Vec::new();
        for kv in it.take(limit) {
            let (k, v) = kv?;
            out.push(decode(CF_DECISIONS, &k, &v)?);
        }
        Ok(out)
    }

    /// Records with index >= `from`, in order, at most `limit` (0 = all),
    /// only of `domain` when given.
    pub fn decisions(
        &self,
        from: u64,
        limit: usize,
        domain: Option<&str>,
    ) -> Result<Vec<DecisionRecord>, StoreError> {
        let cf = self.store.cf(CF_DECISIONS)?;
        let key = u64_key(from.max(1));
        let it = self
            .store
            .db
            .iterator_cf(&cf, IteratorMode::From(&key, rocksdb::Direction::Forward));
        let mut out = Vec::new();
        for kv in it {
            let (k, v) = kv?;
            let rec: DecisionRecord = decode(CF_DECISIONS, &k, &v)?;
            if domain.is_some_and(|d| d != rec.request.domain) {
                continue;
            }
            out.push(rec);
            if limit != 0 && out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// A policy version (the active one when `version` is None) and whether it is active.
    pub fn policy(
        &self,
        domain: &str,
        version: Option<u64>,
    ) -> Result<Option<(PolicyVersion, bool)>, StoreError> {
        let meta = self
            .state
            .read()
            .ok()
            .and_then(|s| s.domains.get(domain).copied());
        let Some(meta) = meta else { return Ok(None) };
        let Some(v) = version.or(meta.active_version) else {
            return Ok(None);
        };
        let pv: Option<PolicyVersion> = self.store.get_json(CF_POLICIES, &policy_key(domain, v))?;
        Ok(pv.map(|p| (p, meta.active_version == Some(v))))
    }

    /// Verifies everything a decision rests on: every policy version
    /// against its content hash, every domain's metadata against the stored
    /// versions, then the whole decision chain (invariant 6).
    ///
    /// Everything is read from one RocksDB snapshot, so a check running
    /// beside live applies sees one consistent state, never a half-applied
    /// entry.
    pub fn verify_state(&self) -> Result<ChainHead, IntegrityError> {
        let view = self.consistent_view();
        self.verify_policies_in(&view)?;
        self.verify_chain_in(&view)
    }

    fn view_json<T: serde::de::DeserializeOwned>(
        &self,
        view: &View<'_>,
        cf: &str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let h = self.store.cf(cf)?;
        match view.get_cf(&h, key)? {
            None => Ok(None),
            Some(b) => decode(cf, key, &b).map(Some),
        }
    }

    /// Every value of `cf`, each required to be stored byte for byte as
    /// its canonical encoding (see `canonical_decode`).
    fn view_scan<T: serde::de::DeserializeOwned + Serialize>(
        &self,
        view: &View<'_>,
        cf: &str,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let h = self.store.cf(cf)?;
        let mut out = Vec::new();
        for kv in view.iterator_cf(&h, IteratorMode::Start) {
            let (k, v) = kv?;
            let t = crate::db::decode_canonical(cf, &k, &v)?;
            out.push((k.to_vec(), t));
        }
        Ok(out)
    }

    /// Checks every stored policy version against its content hash and every
    /// domain's metadata against the versions present.
    pub fn verify_policies(&self) -> Result<(), IntegrityError> {
        self.verify_policies_in(&self.store.db.snapshot())
    }

    fn verify_policies_in(&self, view: &View<'_>) -> Result<(), IntegrityError> {
        let bad = |message: String| IntegrityError { index: 0, message };
        let mut latest: BTreeMap<String, u64> = BTreeMap::new();
        let policies: Vec<(Vec<u8>, PolicyVersion)> = self
            .view_scan(view, CF_POLICIES)
            .map_err(|e| bad(e.to_string()))?;
        for (k, pv) in policies {
            if policy_key(&pv.domain, pv.version) != k.as_slice() {
                return Err(bad(format!(
                    "policy {} v{} is stored under another key",
                    pv.domain, pv.version
                )));
            }
            if policy_content_hash(&pv.policy_text, pv.schema.as_deref()) != pv.hash {
                return Err(bad(format!(
                    "policy {} v{}: text does not match its content hash",
                    pv.domain, pv.version
                )));
            }
            let l = latest.entry(pv.domain.clone()).or_default();
            *l = (*l).max(pv.version);
        }
        let domains: BTreeMap<String, DomainMeta> = self
            .view_scan::<DomainMeta>(view, CF_DOMAINS)
            .map_err(|e| bad(e.to_string()))?
            .into_iter()
            .map(|(k, m)| (String::from_utf8_lossy(&k).into_owned(), m))
            .collect();
        for (d, meta) in &domains {
            let stored = latest.get(d).copied().unwrap_or(0);
            if stored != meta.latest_version
                || meta.active_version.is_some_and(|a| a == 0 || a > stored)
            {
                return Err(bad(format!(
                    "domain {d}: metadata (latest {}, active {:?}) does not match the {stored} stored versions",
                    meta.latest_version, meta.active_version
                )));
            }
        }
        if latest.keys().any(|d| !domains.contains_key(d)) {
            return Err(bad(
                "policy versions stored for a domain with no metadata".into()
            ));
        }
        // The active version is what the recorded activations make it, not
        // what the domain row says: replaying them in log order must land
        // on the stored `active_version` of every domain (a tampered row would
        // otherwise switch the policy this one replica evaluates against).
        let activations: Vec<(Vec<u8>, Activation)> = self
            .view_scan(view, CF_ACTIVATIONS)
            .map_err(|e| bad(e.to_string()))?;
        let mut replayed: BTreeMap<&str, u64> = BTreeMap::new();
        for (k, a) in &activations {
            if activation_key(a.log_index, &a.domain) != k.as_slice() {
                return Err(bad(format!(
                    "activation of {} v{} is stored under another key",
                    a.domain, a.version
                )));
            }
            if a.version == 0 || a.version > latest.get(&a.domain).copied().unwrap_or(0) {
                return Err(bad(format!(
                    "activation at log index {} names {} v{}, which is not stored",
                    a.log_index, a.domain, a.version
                )));
            }
            replayed.insert(a.domain.as_str(), a.version);
        }
        for (d, meta) in &domains {
            let expected = replayed.get(d.as_str()).copied();
            if meta.active_version != expected {
                return Err(bad(format!(
                    "domain {d}: the stored active version {:?} is not the one its recorded \
                     activations make active ({expected:?})",
                    meta.active_version
                )));
            }
        }
        // Rollouts: stored canonically under their own id, and every
        // candidate they name is a stored version with that content hash.
        let rollouts: Vec<(Vec<u8>, Rollout)> = self
            .view_scan(view, CF_ROLLOUTS)
            .map_err(|e| bad(e.to_string()))?;
        for (k, r) in &rollouts {
            if r.id.as_bytes() != k.as_slice() {
                return Err(bad(format!(
                    "rollout {:?} is stored under another key",
                    r.id
                )));
            }
            for d in r.domains() {
                let stored: Option<PolicyVersion> = self
                    .view_json(
                        view,
                        CF_POLICIES,
                        &policy_key(&d.domain, d.candidate_version),
                    )
                    .map_err(|e| bad(e.to_string()))?;
                if stored.map(|p| p.hash) != Some(d.candidate_hash) {
                    return Err(bad(format!(
                        "rollout {:?}: candidate {} v{} is not stored with its hash",
                        r.id, d.domain, d.candidate_version
                    )));
                }
            }
        }
        Ok(())
    }

    /// Walks the whole decision log and checks every record's hash, its
    /// link to the one before, every stored Merkle node it completes, the
    /// stored frontier, and every stored checkpoint root. Returns the first
    /// bad index (invariant 6).
    pub fn verify_chain(&self) -> Result<ChainHead, IntegrityError> {
        self.verify_chain_in(&self.consistent_view())
    }

    /// A RocksDB view that is never inside a snapshot install (which
    /// writes several batches): it is taken while no install runs.
    fn consistent_view(&self) -> View<'_> {
        let _no_install = self
            .store
            .install_lock
            .read()
            .unwrap_or_else(|p| p.into_inner());
        self.store.db.snapshot()
    }

    fn verify_chain_in(&self, view: &View<'_>) -> Result<ChainHead, IntegrityError> {
        self.verify_range_in(view, 0, None)
    }

    /// Verifies records `from + 1 ..= to` (to the head when `to` is
    /// `None`) exactly as a full verification does, with the chain resumed
    /// at `from` from the stored record and Merkle nodes. Only a check that
    /// runs to the head checks the stored frontier and head.
    fn verify_range_in(
        &self,
        view: &View<'_>,
        from: u64,
        to: Option<u64>,
    ) -> Result<ChainHead, IntegrityError> {
        let early = |message: String| IntegrityError { index: 0, message };
        let installing: Option<(Option<LogId>, bool)> = self
            .view_json(view, CF_SM_META, crate::snapshot::KEY_INSTALLING)
            .map_err(|e| early(e.to_string()))?;
        if let Some((at, _)) = installing {
            return Err(early(format!(
                "the install of the snapshot at {at:?} was interrupted and could not be \
                 completed; repair this node (`quorate node repair`)"
            )));
        }
        let cf = self
            .store
            .cf(CF_DECISIONS)
            .map_err(|e| early(e.to_string()))?;
        let checkpoints: Vec<(Vec<u8>, CheckpointState)> = self
            .view_scan_from(view, CF_CHECKPOINTS, from + 1)
            .map_err(|e| early(format!("checkpoints: {e}")))?;
        let head: ChainHead = self
            .view_json(view, CF_SM_META, KEY_HEAD)
            .map_err(|e| early(e.to_string()))?
            .unwrap_or_default();
        let stored_proof: ProofState = self
            .view_json(view, CF_SM_META, KEY_PROOF)
            .map_err(|e| early(e.to_string()))?
            .unwrap_or_default();
        let membership: StoredMembership = self
            .view_json(view, CF_SM_META, KEY_MEMBERSHIP)
            .map_err(|e| early(e.to_string()))?
            .unwrap_or_default();
        let mut pending = checkpoints
            .iter()
            .map(|(_, c)| c)
            .filter(|c| to.is_none_or(|t| c.checkpoint.size <= t))
            .peekable();
        let nodes = StoredNodes { store: &self.store };
        // The one chain verifier (quorate_core::chain); this adds only what
        // a store holds beside the records: its Merkle nodes, frontier and
        // head, which must be exactly what the records produce.
        let voters = voters_of(membership.membership());
        let mut chain = self.resume_chain_in(view, from)?;
        let mut lineage_rows = 0u64;
        let start = u64_key(from + 1);
        let iter = view.iterator_cf(&cf, IteratorMode::From(&start, rocksdb::Direction::Forward));
        for kv in iter {
            if to.is_some_and(|t| chain.records() >= t) {
                break;
            }
            let expected = chain.records() + 1;
            let bad = |message: String| IntegrityError {
                index: expected,
                message,
            };
            let (k, v) = kv.map_err(|e| bad(e.to_string()))?;
            if key_u64(&k) != Some(expected) {
                return Err(bad(format!("record key {:?} out of sequence", k)));
            }
            let rec: DecisionRecord = crate::db::decode_canonical(CF_DECISIONS, &k, &v)
                .map_err(|e| bad(e.to_string()))?;
            for (level, i, h) in chain.push(&rec).map_err(|e| bad(e.to_string()))? {
                match merkle::NodeSource::node(&nodes, level, i) {
                    Ok(stored) if stored == h => {}
                    Ok(_) => {
                        return Err(bad(format!(
                            "stored Merkle node (level {level}, index {i}) does not match the records"
                        )));
                    }
                    Err(e) => return Err(bad(format!("Merkle node: {e}"))),
                }
            }
            lineage_rows += self.check_rows_in(view, &rec).map_err(bad)?;
            while let Some(cp) = pending.next_if(|c| c.checkpoint.size == expected) {
                cp.check(&chain, &voters, None)
                    .map_err(|e| bad(format!("stored checkpoint: {e}")))?;
            }
        }
        if from == 0 && to.is_none() {
            // The whole log was read: the derived rows are exactly the ones
            // its records make, so a row forged beside them is found too.
            self.count_rows_in(view, chain.records(), lineage_rows)
                .map_err(|message| IntegrityError { index: 0, message })?;
        }
        let found = ChainHead {
            count: chain.records(),
            hash: chain.head(),
        };
        if let Some(t) = to {
            if chain.records() < t.min(head.count) {
                return Err(IntegrityError {
                    index: chain.records() + 1,
                    message: "record missing".into(),
                });
            }
            return Ok(found);
        }
        let end = chain.records() + 1;
        if let Some(cp) = pending.next() {
            return Err(IntegrityError {
                index: end,
                message: ChainError::CheckpointBeyondLog {
                    size: cp.checkpoint.size,
                    records: chain.records(),
                }
                .to_string(),
            });
        }
        if stored_proof.frontier != *chain.frontier() {
            return Err(IntegrityError {
                index: end,
                message: "stored Merkle frontier does not match the records".into(),
            });
        }
        chain
            .finish(head.count, head.hash)
            .map_err(|e| IntegrityError {
                index: head.count.min(chain.records()) + 1,
                message: format!("stored chain head: {e}"),
            })?;
        Ok(found)
    }

    /// The rows derived from `rec`, checked in `view`: its request-id row
    /// maps its (domain, request id) to its index, and its lineage rows are
    /// there. Returns how many lineage rows it has.
    fn check_rows_in(&self, view: &View<'_>, rec: &DecisionRecord) -> Result<u64, String> {
        let req = &rec.request;
        let at: Option<u64> = self
            .view_json(
                view,
                CF_REQUEST_IDS,
                &request_key(&req.domain, &req.request_id),
            )
            .map_err(|e| format!("the request-id index row: {e}"))?;
        if at != Some(rec.index) {
            return Err(match at {
                None => "the request-id index row of its request is missing".to_string(),
                Some(i) => {
                    format!("the request-id index row of its request points at decision {i}")
                }
            });
        }
        crate::lineage::check_rows(&self.store, view, rec)
    }

    /// After a full verification: the request-id index holds one row per
    /// record and the lineage index exactly the rows the records make.
    fn count_rows_in(&self, view: &View<'_>, records: u64, lineage: u64) -> Result<(), String> {
        let count = |name: &str| -> Result<u64, String> {
            let cf = self.store.cf(name).map_err(|e| e.to_string())?;
            let mut n = 0u64;
            for kv in view.iterator_cf(&cf, IteratorMode::Start) {
                kv.map_err(|e| e.to_string())?;
                n += 1;
            }
            Ok(n)
        };
        let ids = count(CF_REQUEST_IDS)?;
        if ids != records {
            return Err(format!(
                "the request-id index holds {ids} rows for {records} records"
            ));
        }
        let stored = count(crate::db::CF_LINEAGE)?;
        if stored != lineage {
            return Err(format!(
                "the lineage index holds {stored} rows where the records make {lineage}"
            ));
        }
        Ok(())
    }

    /// The chain as verified up to record `from`, resumed from what is
    /// stored: record `from` (its own hash checked) and the Merkle
    /// frontier of `from` leaves read from the stored perfect nodes. What
    /// the nodes give is checked later: by every node the following records
    /// complete, and by every checkpoint root.
    fn resume_chain_in(&self, view: &View<'_>, from: u64) -> Result<Chain, IntegrityError> {
        if from == 0 {
            return Ok(Chain::new());
        }
        let bad = |message: String| IntegrityError {
            index: from,
            message,
        };
        let nodes = StoredNodes { store: &self.store };
        let mut hashes = Vec::new();
        let mut offset = 0u64;
        for level in (0..64u32).rev() {
            if from & (1u64 << level) != 0 {
                let h = merkle::NodeSource::node(&nodes, level, offset >> level)
                    .map_err(|e| bad(format!("Merkle node: {e}")))?;
                hashes.push(h);
                offset += 1u64 << level;
            }
        }
        let frontier =
            merkle::Frontier::from_parts(from, hashes).map_err(|e| bad(e.to_string()))?;
        let rec = self.view_record(view, from)?;
        Chain::resume(from, rec.hash, frontier).map_err(|e| bad(e.to_string()))
    }

    /// Record `index` from `view`, canonically stored and hashing to its
    /// own hash.
    fn view_record(&self, view: &View<'_>, index: u64) -> Result<DecisionRecord, IntegrityError> {
        let bad = |message: String| IntegrityError { index, message };
        let cf = self
            .store
            .cf(CF_DECISIONS)
            .map_err(|e| bad(e.to_string()))?;
        let key = u64_key(index);
        let v = view
            .get_cf(&cf, key)
            .map_err(|e| bad(e.to_string()))?
            .ok_or_else(|| bad("record missing".into()))?;
        let rec: DecisionRecord =
            crate::db::decode_canonical(CF_DECISIONS, &key, &v).map_err(|e| bad(e.to_string()))?;
        if rec.index != index {
            return Err(bad(format!(
                "stored under index {index} but says {}",
                rec.index
            )));
        }
        let computed = rec.compute_hash();
        if computed != rec.hash {
            return Err(bad(ChainError::RecordHash {
                found: rec.hash,
                computed,
            }
            .to_string()));
        }
        Ok(rec)
    }

    /// Every value of `cf` from key `u64(from)` on, canonically stored.
    fn view_scan_from<T: serde::de::DeserializeOwned + Serialize>(
        &self,
        view: &View<'_>,
        cf: &str,
        from: u64,
    ) -> Result<Vec<(Vec<u8>, T)>, StoreError> {
        let h = self.store.cf(cf)?;
        let start = u64_key(from);
        let mut out = Vec::new();
        for kv in view.iterator_cf(&h, IteratorMode::From(&start, rocksdb::Direction::Forward)) {
            let (k, v) = kv?;
            let t = crate::db::decode_canonical(cf, &k, &v)?;
            out.push((k.to_vec(), t));
        }
        Ok(out)
    }

    /// Start-up and periodic verification whose cost does not grow with
    /// the history: everything a full verification checks about policies,
    /// then the chain in full from the verified-up-to mark to the head, and
    /// `sample` records below the mark chosen at random.
    ///
    /// The mark is the size of a final checkpoint up to which an earlier
    /// run verified everything. It is trusted only as far as it is covered:
    /// the checkpoint at the mark must be stored, final, and its root and
    /// a majority of cosignatures must verify against the chain resumed
    /// from the stored Merkle nodes. Otherwise, or when fewer than
    /// `full_below` records lie below it, everything is verified. Each
    /// sampled record must hash to itself, link to its predecessor, be the
    /// stored leaf, and be proved into the mark's cosigned root by the
    /// stored nodes. On success the mark moves to the newest final
    /// checkpoint (invariant 6: what is not re-read here is re-read by the
    /// periodic sweep, [`DecisionLookup::verify_slice`]).
    pub fn verify_state_incremental(
        &self,
        full_below: u64,
        sample: u64,
    ) -> Result<IncrementalCheck, IntegrityError> {
        let view = self.consistent_view();
        self.verify_policies_in(&view)?;
        let early = |message: String| IntegrityError { index: 0, message };
        let mark: u64 = self
            .view_json(&view, CF_SM_META, KEY_VERIFIED)
            .map_err(|e| early(e.to_string()))?
            .unwrap_or(0);
        let mut from = 0;
        if mark >= full_below.max(1) {
            let cp: Option<CheckpointState> = self
                .view_json(&view, CF_CHECKPOINTS, &u64_key(mark))
                .map_err(|e| early(e.to_string()))?;
            match cp {
                Some(cp) if cp.is_final() => {
                    let membership: StoredMembership = self
                        .view_json(&view, CF_SM_META, KEY_MEMBERSHIP)
                        .map_err(|e| early(e.to_string()))?
                        .unwrap_or_default();
                    let chain = self.resume_chain_in(&view, mark)?;
                    cp.check(&chain, &voters_of(membership.membership()), None)
                        .map_err(|e| IntegrityError {
                            index: mark,
                            message: format!("the checkpoint at the verified-up-to mark: {e}"),
                        })?;
                    self.sample_in(&view, mark, &chain.root(), sample)?;
                    from = mark;
                }
                _ => tracing::warn!(
                    mark,
                    "the verified-up-to mark is not a final checkpoint; verifying everything"
                ),
            }
        }
        let head = self.verify_range_in(&view, from, None)?;
        let last_final = self
            .view_json::<ProofState>(&view, CF_SM_META, KEY_PROOF)
            .map_err(|e| early(e.to_string()))?
            .unwrap_or_default()
            .last_final;
        if last_final > mark
            && let Ok(cf) = self.store.cf(CF_SM_META)
        {
            // A hint, not state: losing it costs one full verification.
            let _ = self.store.db.put_cf(&cf, KEY_VERIFIED, encode(&last_final));
        }
        Ok(IncrementalCheck {
            head,
            resumed_at: from,
            sampled: if from == 0 { 0 } else { sample.min(from) },
            mark: last_final.max(mark),
        })
    }

    /// Checks `n` records below `size` chosen at random (every one when
    /// `n >= size`) against their own hash, their predecessor's, their
    /// stored leaf and, by an inclusion proof from the stored nodes, the
    /// root `root` of `size` records.
    fn sample_in(
        &self,
        view: &View<'_>,
        size: u64,
        root: &Digest,
        n: u64,
    ) -> Result<(), IntegrityError> {
        let nodes = StoredNodes { store: &self.store };
        let mut rng = Rng::seeded();
        let picks: Vec<u64> = if n >= size {
            (1..=size).collect()
        } else {
            (0..n).map(|_| 1 + rng.below(size)).collect()
        };
        for i in picks {
            let bad = |message: String| IntegrityError { index: i, message };
            let rec = self.view_record(view, i)?;
            let prev = if i == 1 {
                quorate_core::GENESIS_HASH
            } else {
                self.view_record(view, i - 1)?.hash
            };
            if rec.prev_hash != prev {
                return Err(bad("does not link to the record before it".into()));
            }
            self.check_rows_in(view, &rec).map_err(bad)?;
            let leaf = quorate_core::proof::record_leaf(&rec);
            let stored = merkle::NodeSource::node(&nodes, 0, i - 1)
                .map_err(|e| bad(format!("Merkle node: {e}")))?;
            if stored != leaf {
                return Err(bad("stored Merkle leaf does not match the record".into()));
            }
            let path = merkle::inclusion_proof(&nodes, i - 1, size)
                .map_err(|e| bad(format!("inclusion proof: {e}")))?;
            merkle::verify_inclusion(&leaf, i - 1, size, &path, root).map_err(|e| {
                bad(format!(
                    "the stored Merkle nodes do not prove it into the checkpoint at size {size}: {e}"
                ))
            })?;
        }
        Ok(())
    }

    /// One slice of the periodic sweep: records `from + 1 ..= from + count`
    /// verified as a full verification does (links, hashes, Merkle nodes,
    /// checkpoints), the chain resumed at `from`. Returns where the next
    /// slice starts: 0 after the last record below the verified-up-to mark,
    /// so that the sweep covers the whole history again and again while no
    /// run costs more than `count` records.
    pub fn verify_slice(&self, from: u64, count: u64) -> Result<u64, IntegrityError> {
        let view = self.consistent_view();
        let mark: u64 = self
            .view_json(&view, CF_SM_META, KEY_VERIFIED)
            .map_err(|e| IntegrityError {
                index: 0,
                message: e.to_string(),
            })?
            .unwrap_or(0);
        if from >= mark {
            return Ok(0);
        }
        let to = (from + count.max(1)).min(mark);
        self.verify_range_in(&view, from, Some(to))?;
        Ok(if to >= mark { 0 } else { to })
    }
}

/// What [`DecisionLookup::verify_state_incremental`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IncrementalCheck {
    /// The verified head.
    pub head: ChainHead,
    /// Where the full check started (0: everything was verified).
    pub resumed_at: u64,
    /// Records below it checked at random.
    pub sampled: u64,
    /// The verified-up-to mark now.
    pub mark: u64,
}

/// splitmix64, seeded from the clock and the OS: which records a sample
/// picks must not be predictable, but need not be cryptographic.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let mut seed = [0u8; 8];
        let _ = std::fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut seed));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        Rng(u64::from_le_bytes(seed) ^ now)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        (z ^ (z >> 31)) % n.max(1)
    }
}

/// The first record that failed verification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decision log integrity failure at index {index}: {message}")]
pub struct IntegrityError {
    pub index: u64,
    pub message: String,
}

/// The state machine openraft drives.
pub struct StateMachine {
    pub(crate) store: Store,
    pub(crate) state: Arc<RwLock<MachineState>>,
    /// The pure governance machine (quorate-machine): evaluation,
    /// chaining, checkpoints, rollouts, with its compiled-policy cache. This
    /// store only reads for it and writes what it returns.
    machine: Machine,
    applied_tx: watch::Sender<u64>,
    applied_rx: watch::Receiver<u64>,
    checkpoints_tx: watch::Sender<CheckpointProgress>,
    checkpoints_rx: watch::Receiver<CheckpointProgress>,
    heads: Arc<Mutex<TreeHeads>>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine").finish_non_exhaustive()
    }
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl StateMachine {
    /// Loads the applied state from `store`.
    pub fn open(store: Store, limits: Limits) -> Result<StateMachine, StoreError> {
        let state = load_state(&store)?;
        // A database from before the lineage index gets it once, before
        // anything is applied or read.
        crate::lineage::backfill(&store)?;
        let applied = state.last_applied.map(|l| l.index).unwrap_or(0);
        let (applied_tx, applied_rx) = watch::channel(applied);
        let (checkpoints_tx, checkpoints_rx) = watch::channel(CheckpointProgress::default());
        Ok(StateMachine {
            store,
            state: Arc::new(RwLock::new(state)),
            machine: Machine::new(limits, ""),
            applied_tx,
            applied_rx,
            checkpoints_tx,
            checkpoints_rx,
            heads: Arc::default(),
        })
    }

    /// Completes a snapshot install that a crash interrupted (from the
    /// snapshot file it saved before writing), before anything is read from
    /// the store. Returns whether there was one. Call it after
    /// [`StateMachine::with_cluster_id`]: the snapshot's cosignatures are
    /// checked for that cluster.
    pub fn resume_interrupted_install(&mut self) -> Result<bool, StoreError> {
        let done = snapshot::resume_interrupted_install(&self.store, self.machine.cluster_id())?;
        if done {
            self.reload()?;
        }
        Ok(done)
    }

    /// Sets the cluster id that checkpoint cosignatures are checked against.
    pub fn with_cluster_id(mut self, cluster_id: &str) -> StateMachine {
        self.machine = Machine::new(*self.machine.limits(), cluster_id);
        self
    }

    /// A read handle that stays valid after the machine moves into openraft.
    pub fn lookup(&self) -> DecisionLookup {
        DecisionLookup {
            store: self.store.clone(),
            state: self.state.clone(),
            applied: self.applied_rx.clone(),
            checkpoints: self.checkpoints_rx.clone(),
            heads: self.heads.clone(),
        }
    }

    /// The applied state. A poisoned lock means an earlier apply panicked
    /// half-way; continuing from a default state would restart the chain at
    /// genesis, so it is an error instead.
    fn read_state(&self) -> Result<MachineState, io::Error> {
        self.state
            .read()
            .map(|s| s.clone())
            .map_err(|_| io_err("state machine lock poisoned by an earlier panic"))
    }

    pub(crate) fn reload(&mut self) -> Result<(), StoreError> {
        let st = load_state(&self.store)?;
        let applied = st.last_applied.map(|l| l.index).unwrap_or(0);
        if let Ok(mut s) = self.state.write() {
            *s = st;
        }
        self.machine.clear_cache();
        if let Ok(mut h) = self.heads.lock() {
            *h = TreeHeads::default();
        }
        self.applied_tx.send_replace(applied);
        Ok(())
    }

    /// Turns one entry's writes into puts on `batch` (the layouts of
    /// `docs/FORMATS.md` §6), with the metrics and logs they stand for.
    fn put_writes(
        &self,
        batch: &mut WriteBatch,
        writes: &[Write],
        log_index: u64,
    ) -> Result<(), StoreError> {
        let mut finalised = std::collections::BTreeSet::new();
        for w in writes {
            match w {
                Write::Decision(r) => {
                    if r.reason == Some(quorate_core::DenyReason::UnverifiablePolicy) {
                        tracing::error!(
                            index = r.index,
                            domain = %r.request.domain,
                            version = ?r.policy_version,
                            "the active policy does not compile here; decided UNVERIFIABLE_POLICY"
                        );
                    }
                    batch.put_cf(&self.store.cf(CF_DECISIONS)?, u64_key(r.index), encode(r));
                    crate::lineage::put_rows(&self.store, batch, r)?;
                    metrics::counter!(
                        "quorate_decisions_total",
                        "decision" => match r.decision {
                            quorate_core::Decision::Allow => "allow",
                            quorate_core::Decision::Deny => "deny",
                        }
                    )
                    .increment(1);
                }
                Write::RequestId {
                    domain,
                    request_id,
                    index,
                } => batch.put_cf(
                    &self.store.cf(CF_REQUEST_IDS)?,
                    request_key(domain, request_id),
                    encode(index),
                ),
                Write::MerkleNode { level, index, hash } => batch.put_cf(
                    &self.store.cf(CF_MERKLE)?,
                    merkle_key(*level, *index),
                    hash.0,
                ),
                Write::Policy(pv) => {
                    batch.put_cf(
                        &self.store.cf(CF_POLICIES)?,
                        policy_key(&pv.domain, pv.version),
                        encode(pv),
                    );
                    metrics::counter!("quorate_policy_versions_published_total").increment(1);
                }
                Write::Domain { domain, meta } => {
                    batch.put_cf(&self.store.cf(CF_DOMAINS)?, domain.as_bytes(), encode(meta))
                }
                Write::Activation(a) => batch.put_cf(
                    &self.store.cf(CF_ACTIVATIONS)?,
                    activation_key(a.log_index, &a.domain),
                    encode(a),
                ),
                Write::Checkpoint(cp) => {
                    batch.put_cf(
                        &self.store.cf(CF_CHECKPOINTS)?,
                        u64_key(cp.checkpoint.size),
                        encode(cp),
                    );
                    if cp.finalized_at == Some(log_index) {
                        finalised.insert(cp.checkpoint.size);
                    }
                }
                Write::Rollout(r) => {
                    batch.put_cf(&self.store.cf(CF_ROLLOUTS)?, r.id.as_bytes(), encode(r))
                }
                Write::RolloutLatest(id) => {
                    batch.put_cf(&self.store.cf(CF_SM_META)?, KEY_ROLLOUT_LATEST, encode(id))
                }
                Write::Divergence(d) => {
                    tracing::error!("divergence: {d}; this node contains (DENY DIVERGENCE)");
                    metrics::counter!("quorate_divergences_total").increment(1);
                    batch.put_cf(&self.store.cf(CF_SM_META)?, KEY_DIVERGENCE, encode(d));
                }
            }
        }
        if !finalised.is_empty() {
            metrics::counter!("quorate_checkpoints_final_total").increment(finalised.len() as u64);
        }
        Ok(())
    }
}

/// The machine's reads, from RocksDB (the state before the entry being
/// applied; the machine tracks the entry's own writes).
struct StoreRead<'a> {
    store: &'a Store,
}

impl StateRead for StoreRead<'_> {
    type Error = StoreError;

    fn request_index(&self, domain: &str, request_id: &str) -> Result<Option<u64>, StoreError> {
        self.store
            .get_json(CF_REQUEST_IDS, &request_key(domain, request_id))
    }

    fn decision(&self, index: u64) -> Result<Option<DecisionRecord>, StoreError> {
        self.store.get_json(CF_DECISIONS, &u64_key(index))
    }

    fn policy(&self, domain: &str, version: u64) -> Result<Option<PolicyVersion>, StoreError> {
        self.store
            .get_json(CF_POLICIES, &policy_key(domain, version))
    }

    fn checkpoint(&self, size: u64) -> Result<Option<CheckpointState>, StoreError> {
        self.store.get_json(CF_CHECKPOINTS, &u64_key(size))
    }

    fn rollout_exists(&self, id: &str) -> Result<bool, StoreError> {
        Ok(self
            .store
            .get_json::<Rollout>(CF_ROLLOUTS, id.as_bytes())?
            .is_some())
    }

    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Digest>, StoreError> {
        match merkle::NodeSource::node(&StoredNodes { store: self.store }, level, index) {
            Ok(d) => Ok(Some(d)),
            Err(StoreError::Corrupt { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// A machine failure as the store reports it (the apply fails: the node
/// stops and contains).
fn machine_err(e: MachineError) -> StoreError {
    match e {
        MachineError::Read(message) => StoreError::Corrupt {
            what: "state read during apply".into(),
            message,
        },
        MachineError::Corrupt { what, message } => StoreError::Corrupt { what, message },
    }
}

pub(crate) fn load_state(store: &Store) -> Result<MachineState, StoreError> {
    let last_applied: Option<LogId> = store
        .get_json::<Option<LogId>>(CF_SM_META, KEY_LAST_APPLIED)?
        .flatten();
    let membership: StoredMembership = store
        .get_json(CF_SM_META, KEY_MEMBERSHIP)?
        .unwrap_or_default();
    let head: ChainHead = store.get_json(CF_SM_META, KEY_HEAD)?.unwrap_or_default();
    let proof: ProofState = store.get_json(CF_SM_META, KEY_PROOF)?.unwrap_or_default();
    let divergence: Option<Divergence> = store.get_json(CF_SM_META, KEY_DIVERGENCE)?;
    let rollout: Option<Rollout> = match store.get_json::<String>(CF_SM_META, KEY_ROLLOUT_LATEST)? {
        None => None,
        Some(id) => Some(store.get_json(CF_ROLLOUTS, id.as_bytes())?.ok_or_else(|| {
            StoreError::Corrupt {
                what: format!("rollouts/{id}"),
                message: "the latest rollout is missing".into(),
            }
        })?),
    };
    let mut domains = BTreeMap::new();
    let cf = store.cf(CF_DOMAINS)?;
    for kv in store.db.iterator_cf(&cf, IteratorMode::Start) {
        let (k, v) = kv?;
        let meta: DomainMeta = decode(CF_DOMAINS, &k, &v)?;
        domains.insert(String::from_utf8_lossy(&k).into_owned(), meta);
    }
    let voter_history = store
        .get_json(CF_SM_META, KEY_VOTER_HISTORY)?
        .unwrap_or_default();
    Ok(MachineState {
        last_applied,
        membership,
        gov: GovernanceState {
            head,
            domains,
            proof,
            divergence,
            rollout,
        },
        voter_history,
    })
}

/// Decodes a stored value and requires its bytes to be exactly the
/// canonical encoding of what they decode to. A flipped byte that still
/// decodes to the same value (in a field name of an absent optional field,
/// say) is then found too, not only flips that change the value
/// (invariant 6).
fn scan_all<T: serde::de::DeserializeOwned>(store: &Store, cf: &str) -> Result<Vec<T>, StoreError> {
    let h = store.cf(cf)?;
    let mut out = Vec::new();
    for kv in store.db.iterator_cf(&h, IteratorMode::Start) {
        let (k, v) = kv?;
        out.push(decode(cf, &k, &v)?);
    }
    Ok(out)
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = SnapshotData;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let s = self.read_state()?;
        Ok((s.last_applied, s.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>> + Unpin + Send,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let mut st = self.read_state()?;
            let records_before = st.head.count;
            let mut batch = WriteBatch::default();
            let log_index = entry.log_id.index;
            let generation = self.store.node_cache.generation();
            let mut new_nodes = Vec::new();
            let response = match &entry.payload {
                EntryPayload::Blank => CommandResponse::None,
                EntryPayload::Normal(cmd) => {
                    let voters = voters_of(st.membership.membership());
                    #[cfg(feature = "fault-injection")]
                    {
                        self.machine.invert_decisions = crate::fault::diverging(&self.store);
                    }
                    let cx = Context {
                        log_index,
                        voters: &voters,
                    };
                    let read = StoreRead { store: &self.store };
                    let applied = self
                        .machine
                        .apply(&read, cmd, cx, &mut st.gov)
                        .map_err(|e| io_err(machine_err(e)))?;
                    self.put_writes(&mut batch, &applied.writes, log_index)
                        .map_err(io_err)?;
                    new_nodes.extend(applied.writes.iter().filter_map(|w| match w {
                        Write::MerkleNode { level, index, hash } => Some((*level, *index, *hash)),
                        _ => None,
                    }));
                    if let Some(p) = applied.progress {
                        self.checkpoints_tx.send_replace(p);
                    }
                    applied.response
                }
                EntryPayload::Membership(m) => {
                    st.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    let records = st.head.count;
                    if crate::proofs::record_voters(&mut st.voter_history, m, records) {
                        let meta = self.store.cf(CF_SM_META).map_err(io_err)?;
                        batch.put_cf(&meta, KEY_VOTER_HISTORY, encode(&st.voter_history));
                    }
                    CommandResponse::None
                }
            };
            st.last_applied = Some(entry.log_id);
            let meta = self.store.cf(CF_SM_META).map_err(io_err)?;
            batch.put_cf(&meta, KEY_LAST_APPLIED, encode(&st.last_applied));
            batch.put_cf(&meta, KEY_MEMBERSHIP, encode(&st.membership));
            batch.put_cf(&meta, KEY_HEAD, encode(&st.head));
            batch.put_cf(&meta, KEY_PROOF, encode(&st.proof));
            // Not synced on its own: the WAL sync of later log appends (or
            // replay of the synced Raft log after a crash) covers it.
            self.store.db.write(batch).map_err(io_err)?;
            // Written, so receipts for these records need no RocksDB read.
            self.store.node_cache.insert(generation, new_nodes);
            let head =
                (st.head.count > records_before).then(|| (st.head.count, st.proof.frontier.root()));
            *self
                .state
                .write()
                .map_err(|_| io_err("state machine lock poisoned by an earlier panic"))? = st;
            if let Some(h) = head
                && let Ok(mut heads) = self.heads.lock()
            {
                heads.push(h);
            }
            self.applied_tx.send_replace(log_index);
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> SnapshotBuilder {
        SnapshotBuilder::new(self.store.clone())
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: SnapshotData,
    ) -> Result<(), io::Error> {
        // Never install a snapshot whose decision log does not verify: the
        // node would otherwise adopt tampered history (invariant 6). The
        // install verifies the whole file first, then writes.
        let store = self.store.clone();
        let meta = meta.clone();
        let cluster_id = self.machine.cluster_id().to_string();
        let r = tokio::task::spawn_blocking(move || {
            snapshot::install(&store, &meta, &snapshot, &cluster_id)
        })
        .await
        .map_err(io_err)?;
        if let Err(e) = &r {
            metrics::counter!("quorate_snapshots_refused_total").increment(1);
            tracing::error!("refusing a snapshot: {e}");
        }
        r.map_err(io_err)?;
        self.reload().map_err(io_err)?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        snapshot::current(&self.store).map_err(io_err)
    }
}
