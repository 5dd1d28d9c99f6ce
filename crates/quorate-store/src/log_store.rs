//! The Raft log and vote on RocksDB, with group commit.
//!
//! An append writes its entries to RocksDB without sync and hands the
//! openraft callback to one flusher thread. The flusher drains every callback
//! queued so far, syncs the WAL once, and only then reports them persisted:
//! openraft never counts an entry towards a quorum before it is on disk.

use std::io;
use std::ops::RangeBounds;
use std::sync::mpsc;

use openraft::storage::{IOFlushed, LogState, RaftLogReader, RaftLogStorage};
use quorate_raft::{Entry, LogId, TypeConfig, Vote};
use rocksdb::{IteratorMode, WriteBatch, WriteOptions};

use crate::db::{CF_LOG, CF_RAFT_META, Store, decode, encode, key_u64, u64_key};

pub(crate) const KEY_VOTE: &[u8] = b"vote";
pub(crate) const KEY_COMMITTED: &[u8] = b"committed";
pub(crate) const KEY_PURGED: &[u8] = b"last_purged";

/// The Raft log storage of one node.
pub struct LogStore {
    store: Store,
    flusher: mpsc::Sender<IOFlushed<TypeConfig>>,
}

impl std::fmt::Debug for LogStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogStore").finish_non_exhaustive()
    }
}

/// Reads the log; cheap to clone.
#[derive(Clone, Debug)]
pub struct LogReader {
    store: Store,
}

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn synced() -> WriteOptions {
    let mut o = WriteOptions::default();
    o.set_sync(true);
    o
}

impl LogStore {
    /// Opens the log over `store` and starts its flusher thread.
    pub fn new(store: Store) -> LogStore {
        let (tx, rx) = mpsc::channel::<IOFlushed<TypeConfig>>();
        // A weak handle: the thread must not keep the database open after the
        // last Store is dropped (RocksDB must close before process exit, or its
        // static destructors abort with "pthread lock: Invalid argument").
        let db = std::sync::Arc::downgrade(&store.db);
        std::thread::Builder::new()
            .name("quorate-wal-sync".into())
            .spawn(move || {
                while let Ok(first) = rx.recv() {
                    let mut batch = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        batch.push(more);
                    }
                    let started = std::time::Instant::now();
                    // One sync covers every write issued before it, so every
                    // queued callback may now report its entries durable.
                    let result = match db.upgrade() {
                        Some(db) => db.flush_wal(true).map_err(io_err),
                        None => Err(io_err("database closed before the WAL sync")),
                    };
                    metrics::histogram!("quorate_wal_sync_seconds")
                        .record(started.elapsed().as_secs_f64());
                    metrics::histogram!("quorate_wal_sync_batch_appends")
                        .record(batch.len() as f64);
                    for cb in batch {
                        let r = match &result {
                            Ok(()) => Ok(()),
                            Err(e) => Err(io_err(e)),
                        };
                        cb.io_completed(r);
                    }
                }
            })
            .map(|_| ())
            .unwrap_or_else(|e| tracing::error!("cannot start WAL sync thread: {e}"));
        LogStore { store, flusher: tx }
    }

    fn last_log_id(&self) -> Result<Option<LogId>, io::Error> {
        let cf = self.store.cf(CF_LOG).map_err(io_err)?;
        let mut it = self.store.db.iterator_cf(&cf, IteratorMode::End);
        match it.next() {
            None => Ok(None),
            Some(kv) => {
                let (k, v) = kv.map_err(io_err)?;
                let entry: Entry = decode(CF_LOG, &k, &v).map_err(io_err)?;
                Ok(Some(entry.log_id))
            }
        }
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        use std::ops::Bound;
        let start = match range.start_bound() {
            Bound::Included(&s) => s,
            Bound::Excluded(&s) => s.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let cf = self.store.cf(CF_LOG).map_err(io_err)?;
        let key = u64_key(start);
        let it = self
            .store
            .db
            .iterator_cf(&cf, IteratorMode::From(&key, rocksdb::Direction::Forward));
        let mut out = Vec::new();
        for kv in it {
            let (k, v) = kv.map_err(io_err)?;
            let Some(idx) = key_u64(&k) else {
                return Err(io_err("raft log key is not 8 bytes"));
            };
            if !range.contains(&idx) {
                break;
            }
            // The log has no holes; a gap means lost entries, not a short read.
            if let Some(prev) = out.last().map(|e: &Entry| e.log_id.index)
                && idx != prev + 1
            {
                return Err(io_err(format!(
                    "raft log has a gap between {prev} and {idx}"
                )));
            }
            out.push(decode(CF_LOG, &k, &v).map_err(io_err)?);
        }
        Ok(out)
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.store.get_json(CF_RAFT_META, KEY_VOTE).map_err(io_err)
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + std::fmt::Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        LogReader {
            store: self.store.clone(),
        }
        .try_get_log_entries(range)
        .await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.store.get_json(CF_RAFT_META, KEY_VOTE).map_err(io_err)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let purged: Option<LogId> = self
            .store
            .get_json(CF_RAFT_META, KEY_PURGED)
            .map_err(io_err)?;
        let last = self.last_log_id()?.or(purged);
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            store: self.store.clone(),
        }
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        // A vote must be durable before it is acted on: granting two votes in
        // one term after a crash would allow two leaders.
        let cf = self.store.cf(CF_RAFT_META).map_err(io_err)?;
        self.store
            .db
            .put_cf_opt(&cf, KEY_VOTE, encode(vote), &synced())
            .map_err(io_err)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let cf = self.store.cf(CF_RAFT_META).map_err(io_err)?;
        self.store
            .db
            .put_cf(&cf, KEY_COMMITTED, encode(&committed))
            .map_err(io_err)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        Ok(self
            .store
            .get_json::<Option<LogId>>(CF_RAFT_META, KEY_COMMITTED)
            .map_err(io_err)?
            .flatten())
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let cf = self.store.cf(CF_LOG).map_err(io_err)?;
        let mut batch = WriteBatch::default();
        let mut n = 0u64;
        for entry in entries {
            batch.put_cf(&cf, u64_key(entry.log_id.index), encode(&entry));
            n += 1;
        }
        // Written (readable) now; durable when the flusher's sync completes.
        self.store.db.write(batch).map_err(io_err)?;
        metrics::counter!("quorate_raft_log_appended_entries_total").increment(n);
        if let Err(mpsc::SendError(cb)) = self.flusher.send(callback) {
            // The flusher is gone: sync inline rather than acknowledge unsynced.
            let r = self.store.db.flush_wal(true).map_err(io_err);
            cb.io_completed(r);
        }
        Ok(())
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let from = last_log_id.map(|l| l.index + 1).unwrap_or(0);
        let cf = self.store.cf(CF_LOG).map_err(io_err)?;
        let mut batch = WriteBatch::default();
        batch.delete_range_cf(&cf, u64_key(from), u64_key(u64::MAX));
        self.store.db.write_opt(batch, &synced()).map_err(io_err)
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        // Only the Raft log is compacted; the decision log lives in the state
        // machine's column families and is kept forever.
        let cf_log = self.store.cf(CF_LOG).map_err(io_err)?;
        let cf_meta = self.store.cf(CF_RAFT_META).map_err(io_err)?;
        let mut batch = WriteBatch::default();
        batch.put_cf(&cf_meta, KEY_PURGED, encode(&log_id));
        batch.delete_range_cf(&cf_log, u64_key(0), u64_key(log_id.index + 1));
        self.store.db.write_opt(batch, &synced()).map_err(io_err)
    }
}
