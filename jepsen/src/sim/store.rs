//! In-memory Raft log and state machine behind openraft's storage traits,
//! for the deterministic simulation. They survive a simulated crash (the
//! node's `Raft` is dropped; these stay), as a disk would; an append is
//! durable at once.

use std::collections::BTreeMap;
use std::io;
use std::io::Cursor;
use std::ops::RangeBounds;
use std::sync::{Arc, Mutex};

use futures::StreamExt as _;
use openraft::storage::{
    EntryResponder, IOFlushed, LogState, RaftLogReader, RaftLogStorage, RaftSnapshotBuilder,
    RaftStateMachine,
};
use openraft::{EntryPayload, OptionalSend};
use serde::{Deserialize, Serialize};

use super::{Entry, LogId, SimTypes, Snapshot, SnapshotMeta, StoredMembership, Vote};

#[derive(Debug, Default)]
struct LogInner {
    vote: Option<Vote>,
    committed: Option<LogId>,
    purged: Option<LogId>,
    log: BTreeMap<u64, Entry>,
}

/// One node's Raft log. Cheap to clone; clones share the log.
#[derive(Debug, Clone, Default)]
pub struct MemLog {
    inner: Arc<Mutex<LogInner>>,
}

impl MemLog {
    /// Forgets the last `n` entries: what a disk that acknowledged writes
    /// before they were durable leaves after a crash. Only for testing
    /// that the simulation's checks catch it.
    pub fn lose_tail(&self, n: usize) {
        self.with(|l| {
            for _ in 0..n {
                let Some(last) = l.log.keys().next_back().copied() else {
                    break;
                };
                l.log.remove(&last);
                let prev = l.log.values().next_back().map(|e| e.log_id);
                if l.committed.is_some_and(|c| c.index >= last) {
                    l.committed = prev;
                }
            }
        });
    }

    fn with<T>(&self, f: impl FnOnce(&mut LogInner) -> T) -> T {
        let mut g = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

impl RaftLogReader<SimTypes> for MemLog {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        Ok(self.with(|l| l.log.range(range).map(|(_, e)| e.clone()).collect()))
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        Ok(self.with(|l| l.vote))
    }
}

impl RaftLogStorage<SimTypes> for MemLog {
    type LogReader = MemLog;

    async fn get_log_state(&mut self) -> Result<LogState<SimTypes>, io::Error> {
        Ok(self.with(|l| {
            let last = l.log.values().next_back().map(|e| e.log_id).or(l.purged);
            LogState {
                last_purged_log_id: l.purged,
                last_log_id: last,
            }
        }))
    }

    async fn get_log_reader(&mut self) -> MemLog {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        self.with(|l| l.vote = Some(*vote));
        Ok(())
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        self.with(|l| l.committed = committed);
        Ok(())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self.with(|l| l.committed))
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
        self.with(|l| {
            for e in entries {
                l.log.insert(e.log_id.index, e);
            }
        });
        callback.io_completed(Ok(()));
        Ok(())
    }

    async fn truncate_after(&mut self, last: Option<LogId>) -> Result<(), io::Error> {
        let from = last.map(|l| l.index + 1).unwrap_or(0);
        self.with(|l| {
            l.log.split_off(&from);
        });
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        self.with(|l| {
            l.purged = Some(log_id);
            l.log = l.log.split_off(&(log_id.index + 1));
        });
        Ok(())
    }
}

/// What the simulated state machine holds: every applied client operation
/// with the log index that carried it.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SmState {
    pub last_applied: Option<LogId>,
    pub membership: StoredMembership,
    pub applied: Vec<(u64, u64)>,
}

/// The last snapshot built or installed: its metadata and bytes.
type SavedSnapshot = (SnapshotMeta, Vec<u8>);

/// One node's state machine. Clones share it.
#[derive(Debug, Clone, Default)]
pub struct MemSm {
    pub state: Arc<Mutex<SmState>>,
    snapshot: Arc<Mutex<Option<SavedSnapshot>>>,
}

impl MemSm {
    pub fn read(&self) -> SmState {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

impl RaftSnapshotBuilder<SimTypes> for MemSm {
    type SnapshotData = Cursor<Vec<u8>>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let st = self.read();
        let data = serde_json::to_vec(&st).map_err(io::Error::other)?;
        let meta = SnapshotMeta {
            last_log_id: st.last_applied,
            last_membership: st.membership.clone(),
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
        let st = self.read();
        Ok((st.last_applied, st.membership))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures::Stream<Item = Result<EntryResponder<SimTypes>, io::Error>>
            + Unpin
            + OptionalSend,
    {
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let index = entry.log_id.index;
            {
                let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
                match &entry.payload {
                    EntryPayload::Normal(op) => st.applied.push((index, *op)),
                    EntryPayload::Membership(m) => {
                        st.membership = StoredMembership::new(Some(entry.log_id), m.clone());
                    }
                    EntryPayload::Blank => {}
                }
                st.last_applied = Some(entry.log_id);
            }
            if let Some(r) = responder {
                r.send(index);
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
        let st: SmState = serde_json::from_slice(&data).map_err(io::Error::other)?;
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = st;
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
