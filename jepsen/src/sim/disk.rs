//! One simulated replica's disk: the Raft log and the governance state as
//! one write-ahead journal, the way the real store keeps both in one
//! RocksDB (one WAL).
//!
//! Every write lands in the *volatile* image at once (readable, as a write
//! to the page cache is) and is queued; a sync makes every queued write
//! durable, in order. A process crash keeps everything (the OS writes the
//! page cache out); a power loss keeps only what was synced, so it loses a
//! suffix of the journal: unsynced log appends and the state-machine
//! batches after them together, never a later write without an earlier one.
//! A power loss can also tear the first unsynced write, and a disk at rest
//! can flip a bit in a stored record: start-up verification must catch both.

use std::collections::{BTreeMap, VecDeque};

use openraft::storage::IOFlushed;
use quorate_core::{Chain, DecisionRecord, Digest, codec};
use quorate_machine::{GovernanceState, MemoryRows, StateRead, Write};
use serde::{Deserialize, Serialize};

use super::{Entry, LogId, SimTypes, StoredMembership, Vote};

/// The Raft log's part of the disk.
#[derive(Debug, Clone, Default)]
pub struct LogImage {
    pub vote: Option<Vote>,
    pub committed: Option<LogId>,
    pub purged: Option<LogId>,
    pub entries: BTreeMap<u64, Entry>,
}

/// The governance state's part: the rows the machine wrote, decision
/// records as the canonical bytes the store keeps (so that a bit can be
/// flipped in them), and the in-memory state the store would rebuild.
#[derive(Debug, Clone, Default)]
pub struct SmImage {
    pub rows: MemoryRows,
    pub decision_bytes: BTreeMap<u64, Vec<u8>>,
    pub gov: GovernanceState,
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    /// Every applied entry: (log index, digest of its payload), for the
    /// log-matching check.
    pub applied: Vec<(u64, u64)>,
    /// This replica's own Merkle root at every size it reached.
    pub roots: BTreeMap<u64, Digest>,
    /// The largest size named by a checkpoint entry this replica applied.
    pub checkpoint_entries_up_to: u64,
}

impl SmImage {
    /// Applies one entry's writes as the store's batch does.
    pub fn write(&mut self, writes: &[Write]) {
        for w in writes {
            if let Write::Decision(r) = w {
                self.decision_bytes.insert(r.index, codec::encode(r));
            }
        }
        self.rows.write(writes);
    }

    /// The stored record at `index`, decoded from its bytes.
    pub fn record(&self, index: u64) -> Option<Result<DecisionRecord, String>> {
        self.decision_bytes.get(&index).map(|b| {
            codec::decode_canonical::<DecisionRecord>(b)
                .map_err(|e| format!("decision {index}: {e}"))
        })
    }

    /// Start-up verification, as the store's: every stored record decodes
    /// canonically and chains (the one chain verifier), the chain ends at
    /// the head the state claims, its root is the state's root, and every
    /// stored checkpoint holds against it.
    pub fn verify(
        &self,
        cluster_id: &str,
        voters: &[quorate_machine::CheckpointVoter],
    ) -> Result<(), String> {
        let mut chain = Chain::new();
        let mut checkpoints = self.rows.checkpoints.values().peekable();
        for (index, bytes) in &self.decision_bytes {
            let r: DecisionRecord = codec::decode_canonical(bytes)
                .map_err(|e| format!("decision {index} does not decode: {e}"))?;
            if r.index != *index {
                return Err(format!("decision row {index} holds record {}", r.index));
            }
            chain.push(&r).map_err(|e| e.to_string())?;
            while let Some(c) = checkpoints.next_if(|c| c.checkpoint.size == chain.records()) {
                c.check(&chain, voters, Some(cluster_id))
                    .map_err(|e| e.to_string())?;
            }
        }
        chain
            .finish(self.gov.head.count, self.gov.head.hash)
            .map_err(|e| e.to_string())?;
        if chain.root() != self.gov.proof.frontier.root() {
            return Err("the stored Merkle frontier is not the records' tree".into());
        }
        if let Some(c) = checkpoints.next() {
            return Err(format!(
                "checkpoint at size {} is beyond the {} stored records",
                c.checkpoint.size,
                chain.records()
            ));
        }
        Ok(())
    }
}

/// Reads the machine's rows from the image, records from their bytes.
impl StateRead for SmImage {
    type Error = String;

    fn request_index(&self, domain: &str, request_id: &str) -> Result<Option<u64>, String> {
        Ok(self
            .rows
            .request_ids
            .get(&(domain.to_string(), request_id.to_string()))
            .copied())
    }

    fn decision(&self, index: u64) -> Result<Option<DecisionRecord>, String> {
        self.record(index).transpose()
    }

    fn policy(
        &self,
        domain: &str,
        version: u64,
    ) -> Result<Option<quorate_core::PolicyVersion>, String> {
        Ok(self
            .rows
            .policies
            .get(&(domain.to_string(), version))
            .cloned())
    }

    fn checkpoint(&self, size: u64) -> Result<Option<quorate_machine::CheckpointState>, String> {
        Ok(self.rows.checkpoints.get(&size).cloned())
    }

    fn rollout_exists(&self, id: &str) -> Result<bool, String> {
        Ok(self.rows.rollouts.contains_key(id))
    }

    fn merkle_node(&self, level: u32, index: u64) -> Result<Option<Digest>, String> {
        Ok(self.rows.merkle.get(&(level, index)).copied())
    }
}

/// Perfect Merkle nodes for inclusion proofs.
impl quorate_core::merkle::NodeSource for SmImage {
    type Error = String;

    fn node(&self, level: u32, index: u64) -> Result<Digest, String> {
        self.rows
            .merkle
            .get(&(level, index))
            .copied()
            .ok_or_else(|| format!("no Merkle node ({level}, {index})"))
    }
}

/// The whole disk image.
#[derive(Debug, Clone, Default)]
pub struct Image {
    pub log: LogImage,
    pub sm: SmImage,
}

/// One journalled write.
#[derive(Debug, Clone)]
pub enum Op {
    Append(Vec<Entry>),
    Truncate {
        from: u64,
    },
    Purge(LogId),
    Vote(Vote),
    Committed(Option<LogId>),
    /// One applied entry's state-machine batch.
    Apply(Box<SmImage>),
    /// A state-machine batch, as a delta: the image after it.
    ApplyDelta(Box<ApplyDelta>),
}

/// What one applied entry changed (the store's one batch).
#[derive(Debug, Clone)]
pub struct ApplyDelta {
    pub writes: Vec<Write>,
    pub gov: GovernanceState,
    pub last_applied: Option<LogId>,
    pub membership: Option<StoredMembership>,
    pub applied: (u64, u64),
    pub root: Option<(u64, Digest)>,
    pub checkpoint_size: u64,
}

impl ApplyDelta {
    pub fn apply_to(&self, sm: &mut SmImage) {
        sm.write(&self.writes);
        sm.gov = self.gov.clone();
        sm.last_applied = self.last_applied;
        if let Some(m) = &self.membership {
            sm.membership = m.clone();
        }
        sm.applied.push(self.applied);
        if let Some((size, root)) = self.root {
            sm.roots.insert(size, root);
        }
        sm.checkpoint_entries_up_to = sm.checkpoint_entries_up_to.max(self.checkpoint_size);
    }
}

fn apply_op(img: &mut Image, op: &Op) {
    match op {
        Op::Append(entries) => {
            for e in entries {
                img.log.entries.insert(e.log_id.index, e.clone());
            }
        }
        Op::Truncate { from } => {
            img.log.entries.split_off(from);
        }
        Op::Purge(id) => {
            img.log.purged = Some(*id);
            img.log.entries = img.log.entries.split_off(&(id.index + 1));
        }
        Op::Vote(v) => img.log.vote = Some(*v),
        Op::Committed(c) => img.log.committed = *c,
        Op::Apply(sm) => img.sm = (**sm).clone(),
        Op::ApplyDelta(d) => d.apply_to(&mut img.sm),
    }
}

/// What a power loss did to the journal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PowerLoss {
    pub lost_writes: usize,
    pub lost_log_entries: usize,
    /// A decision row the first lost write left half-written.
    pub torn_record: Option<u64>,
}

/// A replica's disk.
#[derive(Default)]
pub struct Disk {
    pub volatile: Image,
    durable: Image,
    pending: VecDeque<Op>,
    /// Append callbacks waiting for the flusher's next sync, in order.
    pub flush_queue: VecDeque<IOFlushed<SimTypes>>,
    pub flusher_scheduled: bool,
    /// Bumped by every crash: a flush scheduled before it must not report
    /// durable what the crash lost.
    pub generation: u64,
}

impl Disk {
    /// Journals `op`: visible now, durable at the next sync.
    pub fn write(&mut self, op: Op) {
        apply_op(&mut self.volatile, &op);
        self.pending.push_back(op);
    }

    /// Makes every journalled write durable, in order.
    pub fn sync(&mut self) {
        while let Some(op) = self.pending.pop_front() {
            apply_op(&mut self.durable, &op);
        }
    }

    /// A process crash: the page cache survives, so everything written is
    /// kept. Pending flushes are abandoned (their callbacks belong to the
    /// dead process).
    pub fn crash(&mut self) {
        self.sync();
        self.flush_queue.clear();
        self.flusher_scheduled = false;
        self.generation += 1;
    }

    /// A power loss: only synced writes survive. With `tear`, the first
    /// unsynced state-machine batch that wrote a record leaves that record
    /// half-written (a torn sector), and nothing else of it.
    pub fn power_loss(&mut self, tear: bool) -> PowerLoss {
        let lost_log_entries = self
            .pending
            .iter()
            .map(|op| match op {
                Op::Append(e) => e.len(),
                _ => 0,
            })
            .sum();
        let lost_writes = self.pending.len();
        let mut torn_record = None;
        if tear {
            let first_record = self.pending.iter().find_map(|op| match op {
                Op::ApplyDelta(d) => d.writes.iter().find_map(|w| match w {
                    Write::Decision(r) => Some(r.clone()),
                    _ => None,
                }),
                _ => None,
            });
            if let Some(r) = first_record {
                let bytes = codec::encode(&r);
                let half = bytes[..bytes.len() / 2].to_vec();
                self.durable.sm.decision_bytes.insert(r.index, half);
                torn_record = Some(r.index);
            }
        }
        self.pending.clear();
        self.volatile = self.durable.clone();
        self.flush_queue.clear();
        self.flusher_scheduled = false;
        self.generation += 1;
        PowerLoss {
            lost_writes,
            lost_log_entries,
            torn_record,
        }
    }

    /// Flips bit `bit` of stored record `index` (on the durable image: the
    /// disk rotted while the node was down). Returns false if there is no
    /// such record.
    pub fn flip_bit(&mut self, index: u64, bit: usize) -> bool {
        self.sync();
        let Some(bytes) = self.durable.sm.decision_bytes.get_mut(&index) else {
            return false;
        };
        if bytes.is_empty() {
            return false;
        }
        let at = (bit / 8) % bytes.len();
        bytes[at] ^= 1 << (bit % 8);
        self.volatile = self.durable.clone();
        true
    }
}
