//! State-machine snapshots: the whole governed state (decision log, policy
//! versions, domains) at one applied log id. The decision log is carried in
//! full, so a node restored from a snapshot has every decision ever made
//! even though the Raft log before the snapshot may have been compacted.

use std::io::Cursor;

use openraft::storage::RaftSnapshotBuilder;
use quorate_core::export::Activation;
use quorate_core::merkle::Frontier;
use quorate_core::proof::record_leaf;
use quorate_core::{Chain, ChainError, DecisionRecord, PolicyVersion};
use quorate_raft::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};
use rocksdb::{IteratorMode, ReadOptions, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::db::{
    CF_ACTIVATIONS, CF_CHECKPOINTS, CF_DECISIONS, CF_DOMAINS, CF_LOG, CF_MERKLE, CF_POLICIES,
    CF_RAFT_META, CF_REQUEST_IDS, CF_ROLLOUTS, CF_SM_META, CF_SNAPSHOT, Store, StoreError, decode,
    encode, u64_key,
};
use crate::log_store::KEY_PURGED;
use crate::machine::{
    ChainHead, DomainMeta, IntegrityError, KEY_DIVERGENCE, KEY_HEAD, KEY_LAST_APPLIED,
    KEY_MEMBERSHIP, KEY_PROOF, KEY_ROLLOUT_LATEST, KEY_VOTER_HISTORY, activation_key, policy_key,
    request_key,
};
use crate::proofs::{CheckpointState, CheckpointVoter, ProofState, merkle_key};

const KEY_CURRENT_META: &[u8] = b"current_meta";
const KEY_CURRENT_DATA: &[u8] = b"current_data";

/// Serialises writers of the current snapshot, so a slow build can never
/// overwrite a newer snapshot installed meanwhile.
static SAVE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

type KeyValue = (Vec<u8>, Vec<u8>);

/// Everything a snapshot carries.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotPayload {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub head: ChainHead,
    pub domains: Vec<(String, DomainMeta)>,
    pub policies: Vec<PolicyVersion>,
    pub decisions: Vec<DecisionRecord>,
    #[serde(default)]
    pub checkpoints: Vec<CheckpointState>,
    #[serde(default)]
    pub activations: Vec<Activation>,
    /// Every rollout, and which one is the latest.
    #[serde(default)]
    pub rollouts: Vec<quorate_core::rollout::Rollout>,
    #[serde(default)]
    pub rollout_latest: Option<String>,
    #[serde(default)]
    pub voter_history: Vec<crate::proofs::VoterEpoch>,
}

impl SnapshotPayload {
    pub fn decode(bytes: &[u8]) -> Result<SnapshotPayload, StoreError> {
        quorate_core::codec::decode(bytes).map_err(|e| StoreError::Corrupt {
            what: "snapshot".into(),
            message: e.to_string(),
        })
    }

    /// Checks everything the snapshot carries before it may replace local
    /// state: the payload matches `meta`, every policy version matches its
    /// content hash, domain metadata matches the versions, and the decision
    /// log is dense, linked and correctly hashed up to the claimed head,
    /// every checkpoint root is the root of its records, and every
    /// cosignature by a current member verifies under its key for
    /// `cluster_id`. Returns the proof state the records produce.
    pub fn verify(
        &self,
        meta: &SnapshotMeta,
        cluster_id: &str,
    ) -> Result<ProofState, IntegrityError> {
        let bad = |message: String| IntegrityError { index: 0, message };
        if self.last_applied != meta.last_log_id || self.membership != meta.last_membership {
            return Err(bad("snapshot: payload does not match its metadata".into()));
        }
        if let Some(id) = &self.rollout_latest
            && !self.rollouts.iter().any(|r| &r.id == id)
        {
            return Err(bad(format!(
                "snapshot: the latest rollout {id:?} is not in it"
            )));
        }
        let mut latest: std::collections::BTreeMap<&str, u64> = Default::default();
        for p in &self.policies {
            if quorate_core::policy_content_hash(&p.policy_text, p.schema.as_deref()) != p.hash {
                return Err(bad(format!(
                    "snapshot: policy {} v{} does not match its content hash",
                    p.domain, p.version
                )));
            }
            let l = latest.entry(p.domain.as_str()).or_default();
            *l = (*l).max(p.version);
        }
        // The active version of every domain is the one its recorded
        // activations, replayed in log order, make active.
        let mut active: std::collections::BTreeMap<&str, u64> = Default::default();
        let mut last_key: Option<Vec<u8>> = None;
        for a in &self.activations {
            let key = activation_key(a.log_index, &a.domain);
            if last_key.as_ref().is_some_and(|k| *k >= key)
                || a.version == 0
                || a.version > latest.get(a.domain.as_str()).copied().unwrap_or(0)
            {
                return Err(bad(format!(
                    "snapshot: activation of {} v{} at log index {} is out of order or names \
                     no stored version",
                    a.domain, a.version, a.log_index
                )));
            }
            last_key = Some(key);
            active.insert(a.domain.as_str(), a.version);
        }
        for (d, m) in &self.domains {
            let stored = latest.get(d.as_str()).copied().unwrap_or(0);
            if stored != m.latest_version || m.active_version != active.get(d.as_str()).copied() {
                return Err(bad(format!(
                    "snapshot: domain {d} metadata does not match its versions and activations"
                )));
            }
        }
        let membership = self.membership.membership();
        let mut proof = ProofState::default();
        let mut last_size = 0;
        for cp in &self.checkpoints {
            if cp.checkpoint.size <= last_size {
                return Err(bad(format!(
                    "snapshot: checkpoint at size {} is out of order",
                    cp.checkpoint.size
                )));
            }
            last_size = cp.checkpoint.size;
            if cp.is_final() {
                proof.last_final = last_size;
            }
            proof.last_checkpoint = last_size;
        }
        // The one chain verifier (quorate_core::chain): links, hashes,
        // checkpoint roots, and every checkpoint's cosignatures under its
        // own recorded voters, a majority for one marked final.
        let voters = crate::proofs::voters_of(membership);
        let mut pending = self.checkpoints.iter().peekable();
        let mut chain = Chain::new();
        for rec in &self.decisions {
            let index = chain.records() + 1;
            let bad = |e: ChainError| IntegrityError {
                index,
                message: format!("snapshot: {e}"),
            };
            chain.push(rec).map_err(bad)?;
            while let Some(cp) = pending.next_if(|c| c.checkpoint.size == index) {
                cp.check(&chain, &voters, Some(cluster_id)).map_err(bad)?;
            }
        }
        let n = chain.records();
        let bad_head = |e: ChainError| IntegrityError {
            index: n + 1,
            message: format!("snapshot: {e}"),
        };
        if let Some(cp) = pending.next() {
            return Err(bad_head(ChainError::CheckpointBeyondLog {
                size: cp.checkpoint.size,
                records: n,
            }));
        }
        chain
            .finish(self.head.count, self.head.hash)
            .map_err(bad_head)?;
        let frontier = chain.frontier().clone();
        proof.frontier = frontier;
        Ok(proof)
    }
}

/// Builds a snapshot from a consistent RocksDB view.
pub struct SnapshotBuilder {
    store: Store,
}

impl SnapshotBuilder {
    pub(crate) fn new(store: Store) -> SnapshotBuilder {
        SnapshotBuilder { store }
    }

    pub(crate) fn build(&self) -> Result<Snapshot, StoreError> {
        let view = self.store.db.snapshot();
        let read = |cf: &str, key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
            let h = self.store.cf(cf)?;
            Ok(view.get_cf(&h, key)?)
        };
        let last_applied: Option<LogId> = match read(CF_SM_META, KEY_LAST_APPLIED)? {
            Some(b) => decode(CF_SM_META, KEY_LAST_APPLIED, &b)?,
            None => None,
        };
        let membership: StoredMembership = match read(CF_SM_META, KEY_MEMBERSHIP)? {
            Some(b) => decode(CF_SM_META, KEY_MEMBERSHIP, &b)?,
            None => StoredMembership::default(),
        };
        let head: ChainHead = match read(CF_SM_META, KEY_HEAD)? {
            Some(b) => decode(CF_SM_META, KEY_HEAD, &b)?,
            None => ChainHead::default(),
        };
        let scan = |cf: &str| -> Result<Vec<KeyValue>, StoreError> {
            let h = self.store.cf(cf)?;
            let mut opts = ReadOptions::default();
            opts.set_snapshot(&view);
            let mut out = Vec::new();
            for kv in self.store.db.iterator_cf_opt(&h, opts, IteratorMode::Start) {
                let (k, v) = kv?;
                out.push((k.to_vec(), v.to_vec()));
            }
            Ok(out)
        };
        let mut domains = Vec::new();
        for (k, v) in scan(CF_DOMAINS)? {
            domains.push((
                String::from_utf8_lossy(&k).into_owned(),
                decode(CF_DOMAINS, &k, &v)?,
            ));
        }
        let mut policies = Vec::new();
        for (k, v) in scan(CF_POLICIES)? {
            policies.push(decode(CF_POLICIES, &k, &v)?);
        }
        let mut decisions = Vec::new();
        for (k, v) in scan(CF_DECISIONS)? {
            decisions.push(decode(CF_DECISIONS, &k, &v)?);
        }
        let mut checkpoints = Vec::new();
        for (k, v) in scan(CF_CHECKPOINTS)? {
            checkpoints.push(decode(CF_CHECKPOINTS, &k, &v)?);
        }
        let mut activations = Vec::new();
        for (k, v) in scan(CF_ACTIVATIONS)? {
            activations.push(decode(CF_ACTIVATIONS, &k, &v)?);
        }
        let mut rollouts = Vec::new();
        for (k, v) in scan(CF_ROLLOUTS)? {
            rollouts.push(decode(CF_ROLLOUTS, &k, &v)?);
        }
        let rollout_latest: Option<String> = match read(CF_SM_META, KEY_ROLLOUT_LATEST)? {
            Some(b) => Some(decode(CF_SM_META, KEY_ROLLOUT_LATEST, &b)?),
            None => None,
        };
        let voter_history = match read(CF_SM_META, KEY_VOTER_HISTORY)? {
            Some(b) => decode(CF_SM_META, KEY_VOTER_HISTORY, &b)?,
            None => Vec::new(),
        };
        let payload = SnapshotPayload {
            last_applied,
            membership: membership.clone(),
            head,
            domains,
            policies,
            decisions,
            checkpoints,
            activations,
            rollouts,
            rollout_latest,
            voter_history,
        };
        let data = encode(&payload);
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership,
        };
        save_current(&self.store, &meta, &data)?;
        metrics::counter!("quorate_snapshots_built_total").increment(1);
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, std::io::Error> {
        // A full scan and encode: keep it off the async workers so that
        // heartbeats are not delayed.
        let builder = SnapshotBuilder {
            store: self.store.clone(),
        };
        tokio::task::spawn_blocking(move || builder.build())
            .await
            .map_err(std::io::Error::other)?
            .map_err(Into::into)
    }
}

/// Saves `meta` and `data` as the current snapshot unless a newer one is
/// already saved. Meta and data go in one synced batch.
fn save_current(store: &Store, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StoreError> {
    let _guard = SAVE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let existing: Option<SnapshotMeta> = store.get_json(CF_SNAPSHOT, KEY_CURRENT_META)?;
    if existing.is_some_and(|e| e.last_log_id > meta.last_log_id) {
        return Ok(());
    }
    let cf = store.cf(CF_SNAPSHOT)?;
    let mut batch = WriteBatch::default();
    batch.put_cf(&cf, KEY_CURRENT_META, encode(meta));
    batch.put_cf(&cf, KEY_CURRENT_DATA, data);
    let mut o = WriteOptions::default();
    o.set_sync(true);
    store.db.write_opt(batch, &o)?;
    Ok(())
}

/// The last snapshot built or installed.
pub(crate) fn current(store: &Store) -> Result<Option<Snapshot>, StoreError> {
    let meta: Option<SnapshotMeta> = store.get_json(CF_SNAPSHOT, KEY_CURRENT_META)?;
    let Some(meta) = meta else { return Ok(None) };
    let cf = store.cf(CF_SNAPSHOT)?;
    let data = store
        .db
        .get_cf(&cf, KEY_CURRENT_DATA)?
        .ok_or_else(|| StoreError::Corrupt {
            what: "snapshot/current_data".into(),
            message: "snapshot metadata without data".into(),
        })?;
    Ok(Some(Snapshot {
        meta,
        snapshot: Cursor::new(data),
    }))
}

/// Replaces the state machine's contents with `payload` (already verified,
/// giving `proof`), atomically.
pub(crate) fn install(
    store: &Store,
    meta: &SnapshotMeta,
    payload: &SnapshotPayload,
    proof: &ProofState,
    raw: &[u8],
) -> Result<(), StoreError> {
    install_inner(store, meta, payload, proof, raw, false)
}

fn install_inner(
    store: &Store,
    meta: &SnapshotMeta,
    payload: &SnapshotPayload,
    proof: &ProofState,
    raw: &[u8],
    repair: bool,
) -> Result<(), StoreError> {
    // One history (invariant 4): a snapshot may extend our decision log but
    // never rewrite it. If we hold records, the snapshot must hold the same
    // record at our head's index. A repair replaces state that failed
    // verification, so its own head is not evidence.
    let local_head: ChainHead = store.get_json(CF_SM_META, KEY_HEAD)?.unwrap_or_default();
    if local_head.count > 0 && !repair {
        let theirs = payload
            .decisions
            .get((local_head.count - 1) as usize)
            .map(|r| r.hash);
        if theirs != Some(local_head.hash) {
            return Err(StoreError::Diverged {
                index: local_head.count,
                message: "the snapshot's decision log does not extend this node's".into(),
            });
        }
    }
    let mut batch = WriteBatch::default();
    for cf in [
        CF_DECISIONS,
        CF_REQUEST_IDS,
        CF_POLICIES,
        CF_DOMAINS,
        CF_MERKLE,
        CF_CHECKPOINTS,
        CF_ACTIVATIONS,
        CF_ROLLOUTS,
    ] {
        let h = store.cf(cf)?;
        // The empty key is the smallest key; keys are at most a few hundred
        // bytes and never start with 0xff (UTF-8 never contains it; index
        // keys are below 2^63), so this range covers every key.
        batch.delete_range_cf(&h, [].as_slice(), [0xffu8; 1024].as_slice());
    }
    let (cf_d, cf_r, cf_p, cf_m, cf_meta) = (
        store.cf(CF_DECISIONS)?,
        store.cf(CF_REQUEST_IDS)?,
        store.cf(CF_POLICIES)?,
        store.cf(CF_DOMAINS)?,
        store.cf(CF_SM_META)?,
    );
    let cf_merkle = store.cf(CF_MERKLE)?;
    let mut frontier = Frontier::new();
    for rec in &payload.decisions {
        for (level, i, h) in frontier.append(record_leaf(rec)) {
            batch.put_cf(&cf_merkle, merkle_key(level, i), h.0);
        }
        batch.put_cf(&cf_d, u64_key(rec.index), encode(rec));
        batch.put_cf(
            &cf_r,
            request_key(&rec.request.domain, &rec.request.request_id),
            encode(&rec.index),
        );
    }
    for p in &payload.policies {
        batch.put_cf(&cf_p, policy_key(&p.domain, p.version), encode(p));
    }
    for (d, m) in &payload.domains {
        batch.put_cf(&cf_m, d.as_bytes(), encode(m));
    }
    let cf_c = store.cf(CF_CHECKPOINTS)?;
    for c in &payload.checkpoints {
        batch.put_cf(&cf_c, u64_key(c.checkpoint.size), encode(c));
    }
    let cf_a = store.cf(CF_ACTIVATIONS)?;
    for a in &payload.activations {
        batch.put_cf(&cf_a, activation_key(a.log_index, &a.domain), encode(a));
    }
    let cf_ro = store.cf(CF_ROLLOUTS)?;
    for r in &payload.rollouts {
        batch.put_cf(&cf_ro, r.id.as_bytes(), encode(r));
    }
    batch.put_cf(&cf_meta, KEY_VOTER_HISTORY, encode(&payload.voter_history));
    match &payload.rollout_latest {
        Some(id) => batch.put_cf(&cf_meta, KEY_ROLLOUT_LATEST, encode(id)),
        None => batch.delete_cf(&cf_meta, KEY_ROLLOUT_LATEST),
    }
    batch.put_cf(&cf_meta, KEY_PROOF, encode(proof));
    if repair {
        batch.delete_cf(&cf_meta, KEY_DIVERGENCE);
    }
    batch.put_cf(&cf_meta, KEY_LAST_APPLIED, encode(&meta.last_log_id));
    batch.put_cf(&cf_meta, KEY_MEMBERSHIP, encode(&meta.last_membership));
    batch.put_cf(&cf_meta, KEY_HEAD, encode(&payload.head));
    let mut o = WriteOptions::default();
    o.set_sync(true);
    store.db.write_opt(batch, &o)?;
    save_current(store, meta, raw)?;
    Ok(())
}

/// Whether a majority of `cp`'s voters, each one a trusted voter (same id,
/// same key), validly cosigned it.
fn vouched_by_trusted(cp: &CheckpointState, trusted: &[CheckpointVoter]) -> Result<(), String> {
    if trusted.is_empty() {
        return Err(
            "this node trusts no voter keys (its voter history is unreadable or empty); give \
             the cluster's trust file with --trust"
                .into(),
        );
    }
    // A checkpoint stored before voter sets were recorded names none: it
    // is then judged under the trusted voters themselves.
    let judges: Vec<CheckpointVoter> = if cp.voters.is_empty() {
        trusted.to_vec()
    } else {
        cp.voters.clone()
    };
    for j in &judges {
        if !trusted.contains(j) {
            return Err(format!(
                "its checkpoint at size {} is judged by node {} with key {}, which this node \
                 does not trust; refusing a history vouched for by keys of its own making",
                cp.checkpoint.size, j.node_id, j.public_key
            ));
        }
    }
    // The one quorum rule (quorate_core::proof): a majority of the judges,
    // and a cosignature that does not verify is evidence, not a miss.
    let keyed: Vec<(u64, Option<&quorate_core::PublicKey>)> = judges
        .iter()
        .map(|j| (j.node_id, Some(&j.public_key)))
        .collect();
    quorate_core::proof::verify_cosignatures(&cp.checkpoint, &keyed).map_err(|e| {
        format!(
            "its checkpoint at size {} lacks a majority of valid cosignatures of trusted voters: {e}",
            cp.checkpoint.size
        )
    })
}

/// Whether `ext` proves that the tree of `size` records with root `root`
/// is a prefix of a checkpoint final under `trusted`: the bundle starts at
/// `size`, its checkpoint is of this cluster, names only trusted voters (by
/// id; their keys are the trusted ones) and carries a majority of their
/// valid signatures, and the consistency proof links the two roots.
fn extended_by_trusted(
    size: u64,
    root: &quorate_core::Digest,
    ext: &quorate_core::proof::ConsistencyBundle,
    cluster_id: &str,
    trusted: &[CheckpointVoter],
) -> Result<(), String> {
    let cp = &ext.checkpoint;
    if ext.old_size != size || cp.cluster_id != cluster_id {
        return Err(format!(
            "the consistency proof starts at size {} of cluster {:?}, not at the snapshot's {size} \
             records of {cluster_id:?}",
            ext.old_size, cp.cluster_id
        ));
    }
    let mut judges = Vec::new();
    let named: Vec<u64> = if cp.voters.is_empty() {
        trusted.iter().map(|v| v.node_id).collect()
    } else {
        cp.voters.clone()
    };
    for id in named {
        let Some(v) = trusted.iter().find(|v| v.node_id == id) else {
            return Err(format!(
                "the checkpoint at size {} is judged by node {id}, which this node does not trust",
                cp.size
            ));
        };
        judges.push(*v);
    }
    let state = CheckpointState {
        checkpoint: cp.clone(),
        finalized_at: None,
        voters: judges,
    };
    vouched_by_trusted(&state, trusted)?;
    quorate_core::merkle::verify_consistency(size, cp.size, root, &cp.root, &ext.proof).map_err(
        |e| {
            format!(
                "the snapshot's records are not a prefix of the checkpoint at size {}: {e}",
                cp.size
            )
        },
    )
}

/// The voters (id and key) this node trusts from its own store: every
/// voter set it recorded and its applied membership's voters. Empty when
/// none can be read.
pub fn trusted_voters(store: &Store) -> Vec<CheckpointVoter> {
    let mut out: Vec<CheckpointVoter> = Vec::new();
    let history: Vec<crate::proofs::VoterEpoch> = store
        .get_json(CF_SM_META, crate::machine::KEY_VOTER_HISTORY)
        .ok()
        .flatten()
        .unwrap_or_default();
    for v in history.iter().flat_map(|e| e.voters.iter()) {
        if !out.contains(v) {
            out.push(*v);
        }
    }
    let membership: Option<StoredMembership> = store
        .get_json(CF_SM_META, crate::machine::KEY_MEMBERSHIP)
        .ok()
        .flatten();
    if let Some(m) = membership {
        for v in crate::proofs::voters_of(m.membership()) {
            if !out.contains(&v) {
                out.push(v);
            }
        }
    }
    out
}

/// Replaces this node's damaged state machine with a peer's snapshot
/// (`quorate node repair`). The node must be stopped. The snapshot is
/// verified in full (chain, Merkle roots, cosignatures) before anything is
/// written; the Raft log is kept, and purged up to the snapshot only when
/// the snapshot is ahead of it, exactly as a snapshot install would.
///
/// A snapshot is judged by its own checkpoints, so those must not be the
/// judges of themselves (invariant 4): it is accepted only if a final
/// checkpoint covers every record it holds and that checkpoint's voters
/// are, node id and key, voters this node already trusts (`trusted`: its
/// own recorded voter sets, or a trust file the operator gives), with a
/// majority of them cosigning. A peer with a divergent history, or keys of
/// its own making, is refused with the reason.
///
/// Under load a snapshot's newest records are usually not yet covered by a
/// checkpoint inside it. `extension` then vouches for them: a consistency
/// proof (RFC 9162) from the snapshot's own tree of all its records to a
/// later final checkpoint, cosigned by a majority of trusted voters (what
/// the peer's `GetConsistencyProof` returns for `old_size` = the
/// snapshot's record count).
pub fn repair_from_snapshot(
    store: &Store,
    meta: &SnapshotMeta,
    raw: &[u8],
    cluster_id: &str,
    trusted: &[CheckpointVoter],
    extension: Option<&quorate_core::proof::ConsistencyBundle>,
) -> Result<ChainHead, StoreError> {
    let refuse = StoreError::Unvouched;
    let payload = SnapshotPayload::decode(raw)?;
    let proof = payload
        .verify(meta, cluster_id)
        .map_err(|e| refuse(e.to_string()))?;
    let records = payload.decisions.len() as u64;
    if records > 0 {
        if proof.last_final >= records {
            let Some(cp) = payload
                .checkpoints
                .iter()
                .find(|c| c.checkpoint.size == proof.last_final)
            else {
                return Err(refuse("its final checkpoint is missing".into()));
            };
            vouched_by_trusted(cp, trusted).map_err(refuse)?;
        } else {
            let Some(ext) = extension else {
                return Err(refuse(format!(
                    "it holds {records} records but its newest final checkpoint covers {}, \
                     and no later checkpoint vouches for the rest; retry in a moment",
                    proof.last_final
                )));
            };
            extended_by_trusted(records, &proof.frontier.root(), ext, cluster_id, trusted)
                .map_err(refuse)?;
        }
    }
    let purged: Option<LogId> = store.get_json(CF_RAFT_META, KEY_PURGED)?;
    let snap_index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    if purged.is_some_and(|p| p.index > snap_index) {
        return Err(StoreError::Corrupt {
            what: "peer snapshot".into(),
            message: format!(
                "it ends at log index {snap_index} but this node's Raft log is compacted to {}; \
                 repair from a peer with a newer snapshot",
                purged.map(|p| p.index).unwrap_or(0)
            ),
        });
    }
    install_inner(store, meta, &payload, &proof, raw, true)?;
    // The state machine now starts at the snapshot. Log entries up to it are
    // no longer needed; if the log ends before it, openraft must see the
    // log as purged up to the snapshot (as after a normal install).
    if let Some(last) = meta.last_log_id {
        let cf_log = store.cf(CF_LOG)?;
        let cf_meta = store.cf(CF_RAFT_META)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(&cf_meta, KEY_PURGED, encode(&last));
        batch.delete_range_cf(&cf_log, u64_key(0), u64_key(last.index + 1));
        let mut o = WriteOptions::default();
        o.set_sync(true);
        store.db.write_opt(batch, &o)?;
    }
    Ok(payload.head)
}
