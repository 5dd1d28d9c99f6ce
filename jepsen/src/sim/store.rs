//! openraft's storage traits over a simulated [`Disk`]: the Raft log and
//! the governance state machine (`quorate-machine`, the code every real
//! replica runs), with the real store's durability: an append is reported
//! durable by a flusher after a sync, a vote and a truncation are synced
//! before they return, an applied batch is made durable by the next sync.

use std::collections::BTreeMap;
use std::io;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt as _;
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder,
    RaftStateMachine,
};
use openraft::{EntryPayload, OptionalSend};
use quorate_core::{CommandResponse, DecisionRecord, Digest, PublicKey, codec};
use quorate_machine::{CheckpointVoter, Context, GovernanceState, Machine};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::disk::{ApplyDelta, Disk, Op, SmImage};
use super::{Entry, LogId, SimTypes, Snapshot, SnapshotMeta, StoredMembership, Vote};

/// A replica's disk, shared by its log, its state machine and the harness.
pub type SharedDisk = Arc<Mutex<Disk>>;

pub fn lock(disk: &SharedDisk) -> std::sync::MutexGuard<'_, Disk> {
    disk.lock().unwrap_or_else(|p| p.into_inner())
}

fn fnv(bytes: &[u8]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x100_0000_01b3);
    }
    h
}

/// The digest of an entry's payload, for log matching.
pub fn payload_digest(e: &Entry) -> u64 {
    match &e.payload {
        EntryPayload::Blank => fnv(b"blank"),
        EntryPayload::Normal(cmd) => fnv(&codec::encode(cmd)),
        EntryPayload::Membership(m) => fnv(format!("{m:?}").as_bytes()),
    }
}

/// The voters of `m`, with the keys the simulation gave them.
pub fn voters_of(
    m: &openraft::Membership<u64, openraft::EmptyNode>,
    keys: &BTreeMap<u64, PublicKey>,
) -> Vec<CheckpointVoter> {
    m.voter_ids()
        .filter_map(|id| {
            keys.get(&id).map(|k| CheckpointVoter {
                node_id: id,
                public_key: *k,
            })
        })
        .collect()
}

/// One replica's Raft log. Clones share it.
#[derive(Clone)]
pub struct MemLog {
    pub disk: SharedDisk,
    rng: Arc<Mutex<StdRng>>,
    /// A broken disk (for the checkers' own test): appends are reported
    /// durable before any sync.
    lossy: bool,
}

impl MemLog {
    pub fn new(disk: SharedDisk, seed: u64, lossy: bool) -> MemLog {
        MemLog {
            disk,
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
            lossy,
        }
    }
}

impl RaftLogReader<SimTypes> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let d = lock(&self.disk);
        Ok(d.volatile
            .log
            .entries
            .range(range)
            .map(|(_, e)| e.clone())
            .collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(lock(&self.disk).volatile.log.vote)
    }
}

impl RaftLogStorage<SimTypes> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<SimTypes>, io::Error> {
        let d = lock(&self.disk);
        let l = &d.volatile.log;
        let last = l
            .entries
            .values()
            .next_back()
            .map(|e| e.log_id)
            .or(l.purged);
        Ok(LogState {
            last_purged_log_id: l.purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> MemLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let mut d = lock(&self.disk);
        d.write(Op::Vote(*vote));
        d.sync();
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        lock(&self.disk).write(Op::Committed(committed));
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(lock(&self.disk).volatile.log.committed)
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<SimTypes>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if self.lossy {
            lock(&self.disk).write(Op::Append(entries));
            callback.io_completed(Ok(()));
            return Ok(());
        }
        let start_flusher = {
            let mut d = lock(&self.disk);
            d.write(Op::Append(entries));
            d.flush_queue.push_back(callback);
            !std::mem::replace(&mut d.flusher_scheduled, true)
        };
        if start_flusher {
            // The real store's flusher: one sync covers every append queued
            // before it, and their callbacks complete in order.
            let wait = {
                let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
                Duration::from_micros(rng.gen_range(100..1500))
            };
            let disk = self.disk.clone();
            let generation = lock(&disk).generation;
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let done = {
                    let mut d = lock(&disk);
                    if d.generation != generation {
                        return;
                    }
                    d.sync();
                    d.flusher_scheduled = false;
                    std::mem::take(&mut d.flush_queue)
                };
                for cb in done {
                    cb.io_completed(Ok(()));
                }
            });
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map(|l| l.index + 1).unwrap_or(0);
        let mut d = lock(&self.disk);
        d.write(Op::Truncate { from });
        d.sync();
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        lock(&self.disk).write(Op::Purge(log_id));
        Ok(())
    }
}

/// What a snapshot carries: the replica's rows and state, as the store's
/// snapshot carries its column families (divergence evidence excepted: it
/// is node-local).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct SnapshotData {
    decisions: Vec<Vec<u8>>,
    request_ids: Vec<(String, String, u64)>,
    merkle: Vec<(u32, u64, Digest)>,
    policies: Vec<quorate_core::PolicyVersion>,
    activations: Vec<quorate_core::export::Activation>,
    checkpoints: Vec<quorate_machine::CheckpointState>,
    rollouts: Vec<quorate_core::rollout::Rollout>,
    rollout_latest: Option<String>,
    head: quorate_machine::ChainHead,
    domains: BTreeMap<String, quorate_machine::DomainMeta>,
    proof: quorate_machine::ProofState,
    rollout: Option<quorate_core::rollout::Rollout>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
    applied: Vec<(u64, u64)>,
    roots: Vec<(u64, Digest)>,
    checkpoint_entries_up_to: u64,
}

impl SnapshotData {
    fn of(sm: &SmImage) -> SnapshotData {
        let r = &sm.rows;
        SnapshotData {
            decisions: sm.decision_bytes.values().cloned().collect(),
            request_ids: r
                .request_ids
                .iter()
                .map(|((d, id), i)| (d.clone(), id.clone(), *i))
                .collect(),
            merkle: r.merkle.iter().map(|((l, i), h)| (*l, *i, *h)).collect(),
            policies: r.policies.values().cloned().collect(),
            activations: r.activations.values().cloned().collect(),
            checkpoints: r.checkpoints.values().cloned().collect(),
            rollouts: r.rollouts.values().cloned().collect(),
            rollout_latest: r.rollout_latest.clone(),
            head: sm.gov.head,
            domains: sm.gov.domains.clone(),
            proof: sm.gov.proof.clone(),
            rollout: sm.gov.rollout.clone(),
            last_applied: sm.last_applied,
            membership: sm.membership.clone(),
            applied: sm.applied.clone(),
            roots: sm.roots.iter().map(|(s, r)| (*s, *r)).collect(),
            checkpoint_entries_up_to: sm.checkpoint_entries_up_to,
        }
    }

    /// The image, unchecked: the install runs `SmImage::verify` on it (the
    /// one chain verifier) before it replaces anything.
    fn into_image(self) -> Result<SmImage, String> {
        let mut sm = SmImage::default();
        for bytes in self.decisions {
            let rec: DecisionRecord = codec::decode_canonical(&bytes).map_err(|e| e.to_string())?;
            sm.decision_bytes.insert(rec.index, bytes);
        }
        let r = &mut sm.rows;
        r.request_ids = self
            .request_ids
            .into_iter()
            .map(|(d, id, i)| ((d, id), i))
            .collect();
        r.merkle = self
            .merkle
            .into_iter()
            .map(|(l, i, h)| ((l, i), h))
            .collect();
        r.policies = self
            .policies
            .into_iter()
            .map(|p| ((p.domain.clone(), p.version), p))
            .collect();
        r.activations = self
            .activations
            .into_iter()
            .map(|a| ((a.log_index, a.domain.clone()), a))
            .collect();
        r.checkpoints = self
            .checkpoints
            .into_iter()
            .map(|c| (c.checkpoint.size, c))
            .collect();
        r.rollouts = self
            .rollouts
            .into_iter()
            .map(|x| (x.id.clone(), x))
            .collect();
        r.rollout_latest = self.rollout_latest;
        r.domains = self.domains.clone();
        sm.gov = GovernanceState {
            head: self.head,
            domains: self.domains,
            proof: self.proof,
            divergence: None,
            rollout: self.rollout,
        };
        sm.last_applied = self.last_applied;
        sm.membership = self.membership;
        sm.applied = self.applied;
        sm.roots = self.roots.into_iter().collect();
        sm.checkpoint_entries_up_to = self.checkpoint_entries_up_to;
        Ok(sm)
    }
}

/// The last snapshot built or installed: its metadata and bytes.
type SavedSnapshot = (SnapshotMeta, Vec<u8>);

/// One replica's governance state machine. Clones share it.
#[derive(Clone)]
pub struct MemSm {
    pub disk: SharedDisk,
    machine: Arc<Mutex<Machine>>,
    keys: Arc<BTreeMap<u64, PublicKey>>,
    snapshot: Arc<Mutex<Option<SavedSnapshot>>>,
    /// Tree heads (size, root) this replica reached, for its signing task.
    pub heads: Arc<Mutex<Vec<(u64, Digest)>>>,
    /// Why applying an entry failed here (a local fault: the node stops).
    pub apply_failed: Arc<Mutex<Option<String>>>,
}

impl MemSm {
    pub fn new(disk: SharedDisk, machine: Machine, keys: Arc<BTreeMap<u64, PublicKey>>) -> MemSm {
        MemSm {
            disk,
            machine: Arc::new(Mutex::new(machine)),
            keys,
            snapshot: Arc::new(Mutex::new(None)),
            heads: Arc::new(Mutex::new(Vec::new())),
            apply_failed: Arc::new(Mutex::new(None)),
        }
    }

    fn fail(&self, msg: String) -> io::Error {
        *self.apply_failed.lock().unwrap_or_else(|p| p.into_inner()) = Some(msg.clone());
        io::Error::other(msg)
    }

    /// Applies one entry as the store does: on a copy of the state, kept
    /// (with its writes, as one journalled batch) only on success.
    fn apply_entry(&self, entry: &Entry) -> Result<CommandResponse, io::Error> {
        let mut d = lock(&self.disk);
        let sm = &d.volatile.sm;
        let mut gov = sm.gov.clone();
        let records_before = gov.head.count;
        let mut membership = None;
        let mut checkpoint_size = 0;
        let (response, writes) = match &entry.payload {
            EntryPayload::Blank => (CommandResponse::None, Vec::new()),
            EntryPayload::Normal(cmd) => {
                let voters = voters_of(sm.membership.membership(), &self.keys);
                if let quorate_core::Command::Checkpoint { size, .. } = cmd {
                    checkpoint_size = *size;
                }
                let cx = Context {
                    log_index: entry.log_id.index,
                    voters: &voters,
                };
                let mut machine = self.machine.lock().unwrap_or_else(|p| p.into_inner());
                let applied = machine
                    .apply(sm, cmd, cx, &mut gov)
                    .map_err(|e| self.fail(format!("applying entry {}: {e}", entry.log_id)))?;
                (applied.response, applied.writes)
            }
            EntryPayload::Membership(m) => {
                membership = Some(StoredMembership::new(Some(entry.log_id), m.clone()));
                (CommandResponse::None, Vec::new())
            }
        };
        let root =
            (gov.head.count > records_before).then(|| (gov.head.count, gov.proof.frontier.root()));
        d.write(Op::ApplyDelta(Box::new(ApplyDelta {
            writes,
            gov,
            last_applied: Some(entry.log_id),
            membership,
            applied: (entry.log_id.index, payload_digest(entry)),
            root,
            checkpoint_size,
        })));
        drop(d);
        if let Some(h) = root {
            self.heads.lock().unwrap_or_else(|p| p.into_inner()).push(h);
        }
        Ok(response)
    }
}

impl RaftSnapshotBuilder<SimTypes> for MemSm {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let (data, meta) = {
            let d = lock(&self.disk);
            let sm = &d.volatile.sm;
            let data = serde_json::to_vec(&SnapshotData::of(sm)).map_err(io::Error::other)?;
            let meta = SnapshotMeta {
                last_log_id: sm.last_applied,
                last_membership: sm.membership.clone(),
            };
            (data, meta)
        };
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) =
            Some((meta.clone(), data.clone()));
        Ok(Snapshot {
            meta,
            snapshot: Cursor::new(data),
        })
    }
}

impl RaftStateMachine<SimTypes> for MemSm {
    type SnapshotData = Cursor<Vec<u8>>;
    type SnapshotBuilder = MemSm;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        let d = lock(&self.disk);
        Ok((d.volatile.sm.last_applied, d.volatile.sm.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<SimTypes>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let response = self.apply_entry(&entry)?;
            if let Some(r) = responder {
                r.send(response);
            }
        }
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> MemSm {
        self.clone()
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Cursor<Vec<u8>>,
    ) -> Result<(), io::Error> {
        let data = snapshot.into_inner();
        let parsed: SnapshotData = serde_json::from_slice(&data).map_err(io::Error::other)?;
        let sm = parsed
            .into_image()
            .map_err(|e| self.fail(format!("refused snapshot: {e}")))?;
        {
            let mut d = lock(&self.disk);
            // As the real store's install: every checkpoint in it holds
            // against its records, and it may extend this replica's
            // decision log but never rewrite it (invariant 4).
            let voters = voters_of(sm.membership.membership(), &self.keys);
            if let Err(e) = sm.verify(super::CLUSTER, &voters) {
                drop(d);
                return Err(self.fail(format!("refused snapshot: {e}")));
            }
            let ours = d.volatile.sm.gov.head;
            if ours.count > 0
                && sm
                    .decision_bytes
                    .get(&ours.count)
                    .map(|b| codec::decode::<DecisionRecord>(b).map(|r| r.hash))
                    .and_then(Result::ok)
                    != Some(ours.hash)
            {
                drop(d);
                return Err(self.fail(format!(
                    "refused snapshot: its decision log does not extend this replica's (record {})",
                    ours.count
                )));
            }
            d.write(Op::Apply(Box::new(sm)));
            d.sync();
        }
        self.machine
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear_cache();
        *self.snapshot.lock().unwrap_or_else(|p| p.into_inner()) = Some((meta.clone(), data));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .map(|(meta, data)| Snapshot {
                meta,
                snapshot: Cursor::new(data),
            }))
    }
}
