//! State-machine snapshots: the whole governed state (decision log, policy
//! versions, domains, checkpoints) at one applied log id, as a file of
//! self-checking frames (`quorate_core::frames`, `docs/FORMATS.md` §6.1).
//!
//! A snapshot is never one value in memory: it is built by streaming a
//! consistent RocksDB view into a file, sent and received a chunk of whole
//! frames at a time, verified by streaming it through the one chain
//! verifier, and installed in batches. Memory is bounded by one batch
//! (about a MiB) on every side, whatever the length of the history.
//!
//! The decision log is carried in full, so a node restored from a snapshot
//! has every decision ever made even though the Raft log before the
//! snapshot may have been compacted.

use std::path::{Path, PathBuf};

use openraft::storage::RaftSnapshotBuilder;
use quorate_core::export::Activation;
use quorate_core::frames;
use quorate_core::merkle::Frontier;
use quorate_core::proof::record_leaf;
use quorate_core::{Chain, ChainError, DecisionRecord, PolicyVersion};
use quorate_raft::{LogId, Snapshot, SnapshotData, SnapshotMeta, StoredMembership, TypeConfig};
use rocksdb::{IteratorMode, ReadOptions, WriteBatch, WriteOptions};
use serde::{Deserialize, Serialize};

use crate::db::{
    CF_ACTIVATIONS, CF_CHECKPOINTS, CF_DECISIONS, CF_DOMAINS, CF_LINEAGE, CF_LOG, CF_MERKLE,
    CF_POLICIES, CF_RAFT_META, CF_REQUEST_IDS, CF_ROLLOUTS, CF_SM_META, CF_SNAPSHOT, Store,
    StoreError, decode, encode, u64_key,
};
use crate::log_store::KEY_PURGED;
use crate::machine::{
    ChainHead, DomainMeta, KEY_DIVERGENCE, KEY_HEAD, KEY_LAST_APPLIED, KEY_MEMBERSHIP, KEY_PROOF,
    KEY_ROLLOUT_LATEST, KEY_VOTER_HISTORY, activation_key, policy_key, request_key,
};
use crate::proofs::{CheckpointState, CheckpointVoter, ProofState, merkle_key};

const KEY_CURRENT_META: &[u8] = b"current_meta";
/// Where snapshots were kept whole before the container format; removed
/// when a snapshot file is first saved.
const KEY_LEGACY_DATA: &[u8] = b"current_data";
/// In `sm_meta`: a snapshot install is under way (its log id). Set, synced,
/// before the first of its batches; cleared by the last, synced. Found at
/// start-up, it means the install was interrupted: it is redone from the
/// saved snapshot file before anything is served.
pub(crate) const KEY_INSTALLING: &[u8] = b"installing";

/// Frame kinds of the snapshot container (`docs/FORMATS.md` §6.1).
const KIND_HEADER: u8 = 1;
const KIND_RECORDS: u8 = 2;
const KIND_CHECKPOINT: u8 = 3;
const KIND_END: u8 = 4;

/// A records frame holds at most this many records or about this many
/// bytes, whichever comes first, and ends where a checkpoint falls.
const BATCH_RECORDS: usize = 1024;
const BATCH_BYTES: usize = 1024 * 1024;

/// Serialises writers of the current snapshot, so a slow build can never
/// overwrite a newer snapshot installed meanwhile.
static SAVE_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

type KeyValue = (Vec<u8>, Vec<u8>);

/// The first frame: everything but the records and checkpoints, and how
/// many of each follow.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SnapshotHeader {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub head: ChainHead,
    /// Records that follow (equal to `head.count`).
    pub records: u64,
    /// Checkpoint frames that follow.
    pub checkpoints: u64,
    /// The size of the largest final checkpoint among them (0: none).
    pub last_final: u64,
    pub domains: Vec<(String, DomainMeta)>,
    pub policies: Vec<PolicyVersion>,
    pub activations: Vec<Activation>,
    pub rollouts: Vec<quorate_core::rollout::Rollout>,
    pub rollout_latest: Option<String>,
    pub voter_history: Vec<crate::proofs::VoterEpoch>,
}

/// A records frame: consecutive records starting at index `first`.
#[derive(Debug, Serialize, Deserialize)]
struct RecordBatch {
    first: u64,
    records: Vec<DecisionRecord>,
}

/// The last frame, so that a file cut at a frame boundary is still found
/// to be incomplete.
#[derive(Debug, Serialize, Deserialize, PartialEq, Eq)]
struct SnapshotEnd {
    records: u64,
    checkpoints: u64,
}

/// What `current_meta` holds: the snapshot's metadata and its file's name
/// in the store's snapshot directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CurrentSnapshot {
    meta: SnapshotMeta,
    file: String,
}

fn bad(message: impl std::fmt::Display) -> StoreError {
    StoreError::BadSnapshot(message.to_string())
}

fn io_at(path: &Path) -> impl Fn(std::io::Error) -> StoreError + '_ {
    move |e| StoreError::Io {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A fresh file name in the snapshot directory for the snapshot at `meta`.
fn fresh_name(meta: &SnapshotMeta) -> String {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let index = meta.last_log_id.map(|l| l.index).unwrap_or(0);
    format!("snap-{index:020}-{}-{seq}.qsnap", std::process::id())
}

/// Writes frames to a file, fsyncing it before it is named.
struct FrameFile {
    path: PathBuf,
    out: std::io::BufWriter<std::fs::File>,
}

impl FrameFile {
    fn create(path: PathBuf) -> Result<FrameFile, StoreError> {
        let f = std::fs::File::create(&path).map_err(io_at(&path))?;
        let mut ff = FrameFile {
            out: std::io::BufWriter::with_capacity(BATCH_BYTES, f),
            path,
        };
        ff.write_raw(&frames::MAGIC)?;
        Ok(ff)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> Result<(), StoreError> {
        use std::io::Write;
        self.out.write_all(bytes).map_err(io_at(&self.path))
    }

    fn frame<T: Serialize>(&mut self, kind: u8, value: &T) -> Result<(), StoreError> {
        let payload = encode(value);
        if payload.len() > frames::MAX_PAYLOAD {
            return Err(StoreError::Corrupt {
                what: "snapshot".into(),
                message: format!(
                    "a frame of {} bytes is larger than the container allows",
                    payload.len()
                ),
            });
        }
        self.write_raw(&frames::encode(kind, &payload))
    }

    /// Flushes and fsyncs the file, and renames it to `to` (fsyncing the
    /// directory), so that a named snapshot file is always complete.
    fn finish(self, to: &Path) -> Result<(), StoreError> {
        let path = self.path.clone();
        let f = self
            .out
            .into_inner()
            .map_err(|e| io_at(&path)(e.into_error()))?;
        f.sync_all().map_err(io_at(&path))?;
        std::fs::rename(&path, to).map_err(io_at(to))?;
        sync_dir(to)
    }
}

fn sync_dir(file: &Path) -> Result<(), StoreError> {
    if let Some(dir) = file.parent() {
        std::fs::File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(io_at(dir))?;
    }
    Ok(())
}

/// Reads a snapshot file a frame at a time, checking every frame's digest.
pub(crate) struct FrameReader<'a> {
    data: &'a SnapshotData,
    offset: u64,
    len: u64,
    buf: Vec<u8>,
}

impl<'a> FrameReader<'a> {
    pub(crate) fn new(data: &'a SnapshotData) -> Result<FrameReader<'a>, StoreError> {
        let path = data.path();
        let len = data.len().map_err(io_at(path))?;
        let mut magic = [0u8; 8];
        let n = data.read_at(0, &mut magic).map_err(io_at(path))?;
        frames::check_magic(&magic[..n]).map_err(bad)?;
        Ok(FrameReader {
            data,
            offset: magic.len() as u64,
            len,
            buf: Vec::new(),
        })
    }

    /// The next frame's kind and payload, `None` at the end of the file.
    fn next_frame(&mut self) -> Result<Option<(u8, &[u8])>, StoreError> {
        if self.offset >= self.len {
            return Ok(None);
        }
        let path = self.data.path();
        let at = self.offset;
        let cut = || bad(format!("the file ends inside a frame at byte {at}"));
        let mut header = [0u8; 5];
        let n = self
            .data
            .read_at(self.offset, &mut header)
            .map_err(io_at(path))?;
        let total = frames::frame_len(&header[..n], self.offset)
            .map_err(bad)?
            .ok_or_else(cut)?;
        self.buf.resize(total, 0);
        let n = self
            .data
            .read_at(self.offset, &mut self.buf)
            .map_err(io_at(path))?;
        let (frame, used) = frames::parse(&self.buf[..n], self.offset)
            .map_err(bad)?
            .ok_or_else(cut)?;
        self.offset += used as u64;
        Ok(Some((frame.kind, frame.payload)))
    }

    fn next_item(&mut self) -> Result<Option<Item>, StoreError> {
        let Some((kind, payload)) = self.next_frame()? else {
            return Ok(None);
        };
        let what = |e: quorate_core::codec::CodecError| bad(format!("undecodable frame: {e}"));
        Ok(Some(match kind {
            KIND_HEADER => Item::Header(Box::new(
                quorate_core::codec::decode(payload).map_err(what)?,
            )),
            KIND_RECORDS => Item::Records(quorate_core::codec::decode(payload).map_err(what)?),
            KIND_CHECKPOINT => Item::Checkpoint(Box::new(
                quorate_core::codec::decode(payload).map_err(what)?,
            )),
            KIND_END => Item::End(quorate_core::codec::decode(payload).map_err(what)?),
            k => return Err(bad(format!("unknown frame kind {k}"))),
        }))
    }
}

enum Item {
    Header(Box<SnapshotHeader>),
    Records(RecordBatch),
    Checkpoint(Box<CheckpointState>),
    End(SnapshotEnd),
}

/// Builds a snapshot from a consistent RocksDB view.
pub struct SnapshotBuilder {
    store: Store,
}

impl SnapshotBuilder {
    pub(crate) fn new(store: Store) -> SnapshotBuilder {
        SnapshotBuilder { store }
    }

    /// Streams the state of one RocksDB view into a new snapshot file and
    /// makes it the current snapshot. Memory: one batch of records.
    pub(crate) fn build(&self) -> Result<Snapshot, StoreError> {
        let store = &self.store;
        let view = store.db.snapshot();
        let read = |cf: &str, key: &[u8]| -> Result<Option<Vec<u8>>, StoreError> {
            let h = store.cf(cf)?;
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
        let proof: ProofState = match read(CF_SM_META, KEY_PROOF)? {
            Some(b) => decode(CF_SM_META, KEY_PROOF, &b)?,
            None => ProofState::default(),
        };
        let iter = |cf: &str| -> Result<_, StoreError> {
            let h = store.cf(cf)?;
            let mut opts = ReadOptions::default();
            opts.set_snapshot(&view);
            Ok(store.db.iterator_cf_opt(&h, opts, IteratorMode::Start))
        };
        let scan = |cf: &str| -> Result<Vec<KeyValue>, StoreError> {
            let mut out = Vec::new();
            for kv in iter(cf)? {
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
        // Checkpoint sizes first (small: a key each), so the header can say
        // how many follow and record batches can end where each falls.
        let mut checkpoint_sizes = Vec::new();
        for kv in iter(CF_CHECKPOINTS)? {
            let (k, _) = kv?;
            checkpoint_sizes.push(crate::db::key_u64(&k).ok_or_else(|| StoreError::Corrupt {
                what: "checkpoints".into(),
                message: "a key that is not a size".into(),
            })?);
        }
        let meta = SnapshotMeta {
            last_log_id: last_applied,
            last_membership: membership.clone(),
        };
        let header = SnapshotHeader {
            last_applied,
            membership,
            head,
            records: head.count,
            checkpoints: checkpoint_sizes.len() as u64,
            last_final: proof.last_final,
            domains,
            policies,
            activations,
            rollouts,
            rollout_latest,
            voter_history,
        };
        let name = fresh_name(&meta);
        let tmp = store.snapshot_dir().join(format!("{name}.tmp"));
        let mut out = FrameFile::create(tmp.clone())?;
        let written = (|| -> Result<FrameFile, StoreError> {
            out.frame(KIND_HEADER, &header)?;
            let mut checkpoints = iter(CF_CHECKPOINTS)?;
            let mut next_cp = checkpoint_sizes.iter().copied().peekable();
            let mut batch = RecordBatch {
                first: 1,
                records: Vec::new(),
            };
            let mut bytes = 0usize;
            let mut count = 0u64;
            let mut cps = 0u64;
            // Ends the pending records frame at `count` records, then writes
            // the checkpoints that fall there.
            let mut flush = |out: &mut FrameFile, batch: &mut RecordBatch, count: u64| {
                flush_batch(out, batch, count, &mut cps, &mut checkpoints, &mut next_cp)
            };
            flush(&mut out, &mut batch, 0)?;
            for kv in iter(CF_DECISIONS)? {
                let (k, v) = kv?;
                let rec: DecisionRecord = decode(CF_DECISIONS, &k, &v)?;
                bytes += v.len();
                count += 1;
                batch.records.push(rec);
                if batch.records.len() >= BATCH_RECORDS
                    || bytes >= BATCH_BYTES
                    || checkpoint_sizes.binary_search(&count).is_ok()
                {
                    flush(&mut out, &mut batch, count)?;
                    bytes = 0;
                }
            }
            flush(&mut out, &mut batch, count)?;
            if count != header.records || cps != header.checkpoints {
                return Err(StoreError::Corrupt {
                    what: "snapshot".into(),
                    message: format!(
                        "the view holds {count} records and {cps} checkpoints at or below them, \
                         but its head says {} records and {} checkpoints are stored",
                        header.records, header.checkpoints
                    ),
                });
            }
            out.frame(
                KIND_END,
                &SnapshotEnd {
                    records: count,
                    checkpoints: cps,
                },
            )?;
            Ok(out)
        })();
        let out = match written {
            Ok(out) => out,
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                return Err(e);
            }
        };
        let path = store.snapshot_dir().join(&name);
        out.finish(&path)?;
        let data = SnapshotData::open(&path).map_err(io_at(&path))?;
        if !save_current(store, &meta, &name)? {
            // A newer snapshot was installed meanwhile; this one is still
            // whole and served from its open file, then forgotten.
            let _ = std::fs::remove_file(&path);
        }
        metrics::counter!("quorate_snapshots_built_total").increment(1);
        Ok(Snapshot {
            meta,
            snapshot: data,
        })
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = SnapshotData;

    async fn build_snapshot(&mut self) -> Result<Snapshot, std::io::Error> {
        // A full scan and a file write: keep it off the async workers so
        // that heartbeats are not delayed.
        let builder = SnapshotBuilder {
            store: self.store.clone(),
        };
        tokio::task::spawn_blocking(move || builder.build())
            .await
            .map_err(std::io::Error::other)?
            .map_err(Into::into)
    }
}

/// Writes the pending records frame, then the frames of the checkpoints
/// that fall at `count` records.
fn flush_batch<I, S>(
    out: &mut FrameFile,
    batch: &mut RecordBatch,
    count: u64,
    cps: &mut u64,
    checkpoints: &mut I,
    next_cp: &mut std::iter::Peekable<S>,
) -> Result<(), StoreError>
where
    I: Iterator<Item = Result<(Box<[u8]>, Box<[u8]>), rocksdb::Error>>,
    S: Iterator<Item = u64>,
{
    if !batch.records.is_empty() {
        out.frame(KIND_RECORDS, &*batch)?;
        batch.records.clear();
    }
    batch.first = count + 1;
    while next_cp.next_if(|s| *s == count).is_some() {
        let (k, v) = checkpoints.next().ok_or_else(|| StoreError::Corrupt {
            what: "checkpoints".into(),
            message: "changed during the snapshot".into(),
        })??;
        let cp: CheckpointState = decode(CF_CHECKPOINTS, &k, &v)?;
        out.frame(KIND_CHECKPOINT, &cp)?;
        *cps += 1;
    }
    Ok(())
}

/// Saves `meta` and the name of its file as the current snapshot unless a
/// newer one is already saved, then removes every other snapshot file (an
/// open `SnapshotData` keeps reading its file after it is removed).
/// Returns false, changing nothing, when a newer one is saved.
fn save_current(store: &Store, meta: &SnapshotMeta, file: &str) -> Result<bool, StoreError> {
    let _guard = SAVE_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let existing: Option<CurrentSnapshot> =
        store.get_json(CF_SNAPSHOT, KEY_CURRENT_META).ok().flatten();
    let dir = store.snapshot_dir();
    if let Some(e) = &existing
        && e.meta.last_log_id > meta.last_log_id
        && dir.join(&e.file).exists()
    {
        return Ok(false);
    }
    let cf = store.cf(CF_SNAPSHOT)?;
    let mut batch = WriteBatch::default();
    batch.put_cf(
        &cf,
        KEY_CURRENT_META,
        encode(&CurrentSnapshot {
            meta: meta.clone(),
            file: file.to_string(),
        }),
    );
    batch.delete_cf(&cf, KEY_LEGACY_DATA);
    let mut o = WriteOptions::default();
    o.set_sync(true);
    store.db.write_opt(batch, &o)?;
    // Older snapshot files and leftovers of interrupted builds.
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name();
            let name = name.to_string_lossy();
            if name != file && name.starts_with("snap-") {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(true)
}

/// The last snapshot built or installed, `None` if there is none or its
/// file is gone (openraft then builds a new one).
pub(crate) fn current(store: &Store) -> Result<Option<Snapshot>, StoreError> {
    let cur: Option<CurrentSnapshot> = match store.get_json(CF_SNAPSHOT, KEY_CURRENT_META) {
        Ok(c) => c,
        // The whole-value layout of earlier versions: no file to serve.
        Err(StoreError::Corrupt { .. }) => None,
        Err(e) => return Err(e),
    };
    let Some(cur) = cur else { return Ok(None) };
    let path = store.snapshot_dir().join(&cur.file);
    match SnapshotData::open(&path) {
        Ok(data) => Ok(Some(Snapshot {
            meta: cur.meta,
            snapshot: data,
        })),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_at(&path)(e)),
    }
}

/// What a verified snapshot gives.
#[derive(Debug)]
pub struct VerifiedSnapshot {
    pub header: SnapshotHeader,
    /// The proof state its records and checkpoints produce.
    pub proof: ProofState,
    /// The largest final checkpoint it carries.
    pub last_final: Option<CheckpointState>,
    /// The Merkle frontier after the first `keep` records (see
    /// [`verify_stream`]).
    frontier_at_keep: Frontier,
}

/// The header of the snapshot in `data` (its first frame), unverified:
/// what it claims to hold.
pub fn read_header(data: &SnapshotData) -> Result<SnapshotHeader, StoreError> {
    match FrameReader::new(data)?.next_item()? {
        Some(Item::Header(h)) => Ok(*h),
        _ => Err(bad("the first frame is not the header")),
    }
}

/// Reads the snapshot in `data` frame by frame and checks everything it
/// carries before it may replace local state: its header matches `meta`,
/// every policy version matches its content hash, domain metadata matches
/// the versions and activations, the decision log is dense, linked and
/// correctly hashed up to the claimed head, every checkpoint root is the
/// root of the records before it and every cosignature by its voters
/// verifies for `cluster_id`, and nothing is missing at the end.
///
/// `keep` is this node's own chain head, when the snapshot must extend it
/// (invariant 4: one history): the snapshot's record at that index must be
/// the one this node holds. Memory: one frame.
pub fn verify_stream(
    data: &SnapshotData,
    meta: &SnapshotMeta,
    cluster_id: &str,
    keep: ChainHead,
) -> Result<VerifiedSnapshot, StoreError> {
    let mut r = FrameReader::new(data)?;
    let header = match r.next_item()? {
        Some(Item::Header(h)) => *h,
        _ => return Err(bad("the first frame is not the header")),
    };
    check_header(&header, meta)?;
    let voters = crate::proofs::voters_of(header.membership.membership());
    let mut chain = Chain::new();
    let mut proof = ProofState::default();
    let mut cps = 0u64;
    let mut last_final = None;
    let mut frontier_at_keep = (keep.count == 0).then(Frontier::new);
    let diverged = |index: u64| StoreError::Diverged {
        index,
        message: "the snapshot's decision log does not extend this node's".into(),
    };
    loop {
        let at = chain.records() + 1;
        let chain_err = |e: ChainError| bad(format!("record {at}: {e}"));
        match r.next_item()? {
            Some(Item::Records(batch)) => {
                if batch.first != at || batch.records.is_empty() {
                    return Err(bad(format!(
                        "a records frame starts at {} where {at} was due",
                        batch.first
                    )));
                }
                for rec in &batch.records {
                    chain
                        .push(rec)
                        .map_err(|e| bad(format!("record {}: {e}", chain.records() + 1)))?;
                    if chain.records() == keep.count {
                        if chain.head() != keep.hash {
                            return Err(diverged(keep.count));
                        }
                        frontier_at_keep = Some(chain.frontier().clone());
                    }
                }
            }
            Some(Item::Checkpoint(cp)) => {
                if cp.checkpoint.size != chain.records()
                    || cp.checkpoint.size <= proof.last_checkpoint
                {
                    return Err(bad(format!(
                        "the checkpoint at size {} is out of place (after record {})",
                        cp.checkpoint.size,
                        chain.records()
                    )));
                }
                // The one chain verifier (quorate_core::chain): the root,
                // and every cosignature under the checkpoint's own voters,
                // a majority for one marked final.
                cp.check(&chain, &voters, Some(cluster_id))
                    .map_err(chain_err)?;
                proof.last_checkpoint = cp.checkpoint.size;
                if cp.is_final() {
                    proof.last_final = cp.checkpoint.size;
                    last_final = Some(*cp);
                }
                cps += 1;
            }
            Some(Item::End(end)) => {
                let want = SnapshotEnd {
                    records: header.records,
                    checkpoints: header.checkpoints,
                };
                if end != want || chain.records() != header.records || cps != header.checkpoints {
                    return Err(bad(format!(
                        "it ends after {} records and {cps} checkpoints; its header promised {} \
                         and {}",
                        chain.records(),
                        header.records,
                        header.checkpoints
                    )));
                }
                if r.next_frame()?.is_some() {
                    return Err(bad("frames follow its end"));
                }
                break;
            }
            Some(Item::Header(_)) => return Err(bad("a second header")),
            None => {
                return Err(bad(format!(
                    "the file ends after record {} without its end frame",
                    chain.records()
                )));
            }
        }
    }
    chain
        .finish(header.head.count, header.head.hash)
        .map_err(|e| bad(format!("its head: {e}")))?;
    if proof.last_final != header.last_final {
        return Err(bad(format!(
            "its header names a final checkpoint at size {} but its checkpoints make {}",
            header.last_final, proof.last_final
        )));
    }
    let Some(frontier_at_keep) = frontier_at_keep else {
        return Err(diverged(keep.count));
    };
    proof.frontier = chain.frontier().clone();
    Ok(VerifiedSnapshot {
        header,
        proof,
        last_final,
        frontier_at_keep,
    })
}

/// The header's own consistency, before any record is read.
fn check_header(h: &SnapshotHeader, meta: &SnapshotMeta) -> Result<(), StoreError> {
    if h.last_applied != meta.last_log_id || h.membership != meta.last_membership {
        return Err(bad("its header does not match its metadata"));
    }
    if h.records != h.head.count {
        return Err(bad("its header's record count is not its head's"));
    }
    if let Some(id) = &h.rollout_latest
        && !h.rollouts.iter().any(|r| &r.id == id)
    {
        return Err(bad(format!("the latest rollout {id:?} is not in it")));
    }
    let mut latest: std::collections::BTreeMap<&str, u64> = Default::default();
    for p in &h.policies {
        if quorate_core::policy_content_hash(&p.policy_text, p.schema.as_deref()) != p.hash {
            return Err(bad(format!(
                "policy {} v{} does not match its content hash",
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
    for a in &h.activations {
        let key = activation_key(a.log_index, &a.domain);
        if last_key.as_ref().is_some_and(|k| *k >= key)
            || a.version == 0
            || a.version > latest.get(a.domain.as_str()).copied().unwrap_or(0)
        {
            return Err(bad(format!(
                "activation of {} v{} at log index {} is out of order or names no stored version",
                a.domain, a.version, a.log_index
            )));
        }
        last_key = Some(key);
        active.insert(a.domain.as_str(), a.version);
    }
    for (d, m) in &h.domains {
        let stored = latest.get(d.as_str()).copied().unwrap_or(0);
        if stored != m.latest_version || m.active_version != active.get(d.as_str()).copied() {
            return Err(bad(format!(
                "domain {d} metadata does not match its versions and activations"
            )));
        }
    }
    Ok(())
}

/// Verifies the snapshot in `data` and installs it (openraft's install, and
/// an interrupted install redone at start-up).
pub(crate) fn install(
    store: &Store,
    meta: &SnapshotMeta,
    data: &SnapshotData,
    cluster_id: &str,
) -> Result<ChainHead, StoreError> {
    let local: ChainHead = store.get_json(CF_SM_META, KEY_HEAD)?.unwrap_or_default();
    // An install interrupted earlier leaves our head where it was: the
    // rows it had written beyond it are rewritten alike.
    let verified = verify_stream(data, meta, cluster_id, local)?;
    apply_verified(store, meta, data, &verified, local, false)?;
    Ok(verified.header.head)
}

/// Clears the node cache when dropped.
struct ForgetNodes<'a>(&'a crate::proofs::NodeCache);

impl Drop for ForgetNodes<'_> {
    fn drop(&mut self) {
        self.0.clear();
    }
}

/// Writes a verified snapshot into the store, in batches of about a MiB.
///
/// Records up to `keep` (this node's own head, which the snapshot was
/// checked to extend) are this node's already and are left as they are;
/// only what follows is written. Everything else the snapshot carries
/// replaces what is stored. Crash-safe: the snapshot file is saved as the
/// current snapshot first, then the install marker is set (synced), and
/// the last batch, synced, clears it and moves the head; an interrupted
/// install is redone from the file on start-up
/// ([`resume_interrupted_install`]).
fn apply_verified(
    store: &Store,
    meta: &SnapshotMeta,
    data: &SnapshotData,
    v: &VerifiedSnapshot,
    keep: ChainHead,
    repair: bool,
) -> Result<(), StoreError> {
    let _installing = store
        .install_lock
        .write()
        .unwrap_or_else(|p| p.into_inner());
    // History is being replaced: no receipt may be built from a cached
    // node of the old one, now or after (cleared again on every way out,
    // before the lock is released).
    store.node_cache.clear();
    let _forget = ForgetNodes(&store.node_cache);
    let file = keep_as_current(store, meta, data)?;
    let data = &SnapshotData::open(&store.snapshot_dir().join(&file))
        .map_err(io_at(store.snapshot_dir()))?;
    let cf_meta = store.cf(CF_SM_META)?;
    let synced = |batch: WriteBatch| -> Result<(), StoreError> {
        let mut o = WriteOptions::default();
        o.set_sync(true);
        Ok(store.db.write_opt(batch, &o)?)
    };
    let mut batch = WriteBatch::default();
    batch.put_cf(
        &cf_meta,
        KEY_INSTALLING,
        encode(&(meta.last_log_id, repair)),
    );
    synced(batch)?;

    let h = &v.header;
    let mut batch = WriteBatch::default();
    let mut replaced = vec![
        CF_POLICIES,
        CF_DOMAINS,
        CF_CHECKPOINTS,
        CF_ACTIVATIONS,
        CF_ROLLOUTS,
    ];
    if keep.count == 0 {
        replaced.extend([CF_DECISIONS, CF_REQUEST_IDS, CF_MERKLE, CF_LINEAGE]);
    }
    for cf in replaced {
        let handle = store.cf(cf)?;
        // The empty key is the smallest key; keys are at most a few hundred
        // bytes and never start with 0xff (UTF-8 never contains it; index
        // keys are below 2^63), so this range covers every key.
        batch.delete_range_cf(&handle, [].as_slice(), [0xffu8; 1024].as_slice());
    }
    let (cf_d, cf_r, cf_p, cf_m) = (
        store.cf(CF_DECISIONS)?,
        store.cf(CF_REQUEST_IDS)?,
        store.cf(CF_POLICIES)?,
        store.cf(CF_DOMAINS)?,
    );
    let (cf_merkle, cf_c, cf_a, cf_ro) = (
        store.cf(CF_MERKLE)?,
        store.cf(CF_CHECKPOINTS)?,
        store.cf(CF_ACTIVATIONS)?,
        store.cf(CF_ROLLOUTS)?,
    );
    for p in &h.policies {
        batch.put_cf(&cf_p, policy_key(&p.domain, p.version), encode(p));
    }
    for (d, m) in &h.domains {
        batch.put_cf(&cf_m, d.as_bytes(), encode(m));
    }
    for a in &h.activations {
        batch.put_cf(&cf_a, activation_key(a.log_index, &a.domain), encode(a));
    }
    for r in &h.rollouts {
        batch.put_cf(&cf_ro, r.id.as_bytes(), encode(r));
    }
    // Unsynced batches: the WAL orders them before the last, synced one.
    let plain = |batch: WriteBatch| -> Result<(), StoreError> { Ok(store.db.write(batch)?) };
    let mut frontier = v.frontier_at_keep.clone();
    let mut r = FrameReader::new(data)?;
    let mut pending = 0usize;
    while let Some(item) = r.next_item()? {
        match item {
            Item::Records(b) => {
                for rec in &b.records {
                    if rec.index <= keep.count {
                        continue;
                    }
                    for (level, i, node) in frontier.append(record_leaf(rec)) {
                        batch.put_cf(&cf_merkle, merkle_key(level, i), node.0);
                    }
                    let row = encode(rec);
                    pending += row.len();
                    batch.put_cf(&cf_d, u64_key(rec.index), row);
                    batch.put_cf(
                        &cf_r,
                        request_key(&rec.request.domain, &rec.request.request_id),
                        encode(&rec.index),
                    );
                    crate::lineage::put_rows(store, &mut batch, rec)?;
                }
            }
            Item::Checkpoint(c) => {
                batch.put_cf(&cf_c, u64_key(c.checkpoint.size), encode(&*c));
            }
            Item::Header(_) | Item::End(_) => {}
        }
        if pending >= BATCH_BYTES {
            plain(std::mem::take(&mut batch))?;
            pending = 0;
        }
    }
    if frontier != v.proof.frontier {
        // The file changed between verification and install.
        return Err(bad("its records changed while it was being installed"));
    }
    batch.put_cf(&cf_meta, KEY_VOTER_HISTORY, encode(&h.voter_history));
    match &h.rollout_latest {
        Some(id) => batch.put_cf(&cf_meta, KEY_ROLLOUT_LATEST, encode(id)),
        None => batch.delete_cf(&cf_meta, KEY_ROLLOUT_LATEST),
    }
    batch.put_cf(&cf_meta, KEY_PROOF, encode(&v.proof));
    if repair {
        batch.delete_cf(&cf_meta, KEY_DIVERGENCE);
    }
    batch.put_cf(&cf_meta, KEY_LAST_APPLIED, encode(&meta.last_log_id));
    batch.put_cf(&cf_meta, KEY_MEMBERSHIP, encode(&meta.last_membership));
    batch.put_cf(&cf_meta, KEY_HEAD, encode(&h.head));
    // Every record written here was verified on its way in: the file was
    // checked whole (chain, Merkle, checkpoints) and re-read for the
    // install, whose recomputed frontier matched. So the verified-up-to
    // mark moves to the snapshot's newest final checkpoint, and a node
    // that caught up on a long history restarts by checking only what came
    // after it (plus the sample and the sweep below it), as after any
    // verification. Without a final checkpoint the next verification
    // starts over.
    if v.proof.last_final > 0 {
        batch.put_cf(
            &cf_meta,
            crate::machine::KEY_VERIFIED,
            encode(&v.proof.last_final),
        );
    } else if keep.count == 0 {
        batch.delete_cf(&cf_meta, crate::machine::KEY_VERIFIED);
    }
    batch.delete_cf(&cf_meta, KEY_INSTALLING);
    synced(batch)?;
    metrics::counter!("quorate_snapshots_installed_total").increment(1);
    Ok(())
}

/// Makes the file of `data` the current snapshot (moved into the snapshot
/// directory, or copied when it is elsewhere), returning its name there.
fn keep_as_current(
    store: &Store,
    meta: &SnapshotMeta,
    data: &SnapshotData,
) -> Result<String, StoreError> {
    let dir = store.snapshot_dir();
    if let Some(name) = data.path().file_name().and_then(|n| n.to_str())
        && data.path().parent() == Some(dir)
        && name.starts_with("snap-")
    {
        save_current(store, meta, name)?;
        return Ok(name.to_string());
    }
    let name = fresh_name(meta);
    let to = dir.join(&name);
    // A file received or fetched into this directory is moved; one from
    // elsewhere is copied and left where it is.
    let moved = data.path().parent() == Some(dir) && std::fs::rename(data.path(), &to).is_ok();
    if !moved {
        let tmp = dir.join(format!("{name}.tmp"));
        std::fs::copy(data.path(), &tmp).map_err(io_at(&tmp))?;
        std::fs::File::open(&tmp)
            .and_then(|f| f.sync_all())
            .map_err(io_at(&tmp))?;
        std::fs::rename(&tmp, &to).map_err(io_at(&to))?;
    }
    sync_dir(&to)?;
    save_current(store, meta, &name)?;
    Ok(name)
}

/// Redoes a snapshot install that a crash interrupted, from the snapshot
/// file it saved first. Returns whether there was one. Called before the
/// stored state is read or verified.
pub(crate) fn resume_interrupted_install(
    store: &Store,
    cluster_id: &str,
) -> Result<bool, StoreError> {
    let marker: Option<(Option<LogId>, bool)> = store.get_json(CF_SM_META, KEY_INSTALLING)?;
    let Some((log_id, repair)) = marker else {
        return Ok(false);
    };
    let Some(snap) = current(store)? else {
        return Err(bad(format!(
            "an install of the snapshot at {log_id:?} was interrupted and its file is gone; \
             repair this node (`quorate node repair`)"
        )));
    };
    if snap.meta.last_log_id != log_id {
        return Err(bad(format!(
            "an install of the snapshot at {log_id:?} was interrupted but the saved snapshot is \
             at {:?}; repair this node (`quorate node repair`)",
            snap.meta.last_log_id
        )));
    }
    let keep = if repair {
        ChainHead::default()
    } else {
        store.get_json(CF_SM_META, KEY_HEAD)?.unwrap_or_default()
    };
    let v = verify_stream(&snap.snapshot, &snap.meta, cluster_id, keep)?;
    apply_verified(store, &snap.meta, &snap.snapshot, &v, keep, repair)?;
    tracing::warn!(log_id = ?log_id, "an interrupted snapshot install was completed");
    Ok(true)
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
    data: &SnapshotData,
    cluster_id: &str,
    trusted: &[CheckpointVoter],
    extension: Option<&quorate_core::proof::ConsistencyBundle>,
) -> Result<ChainHead, StoreError> {
    let refuse = StoreError::Unvouched;
    let v = verify_stream(data, meta, cluster_id, ChainHead::default())
        .map_err(|e| refuse(e.to_string()))?;
    let records = v.header.records;
    if records > 0 {
        if v.proof.last_final >= records {
            let Some(cp) = &v.last_final else {
                return Err(refuse("its final checkpoint is missing".into()));
            };
            vouched_by_trusted(cp, trusted).map_err(refuse)?;
        } else {
            let Some(ext) = extension else {
                return Err(refuse(format!(
                    "it holds {records} records but its newest final checkpoint covers {}, \
                     and no later checkpoint vouches for the rest; retry in a moment",
                    v.proof.last_final
                )));
            };
            extended_by_trusted(records, &v.proof.frontier.root(), ext, cluster_id, trusted)
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
    apply_verified(store, meta, data, &v, ChainHead::default(), true)?;
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
    Ok(v.header.head)
}
