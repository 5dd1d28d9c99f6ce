//! Opening the RocksDB database and the column families quorate uses.
//! `docs/FORMATS.md` §6 lists every key layout.

use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamilyDescriptor, DB, Options};
use thiserror::Error;

pub(crate) const CF_LOG: &str = "raft_log";
pub(crate) const CF_RAFT_META: &str = "raft_meta";
pub(crate) const CF_SM_META: &str = "sm_meta";
pub(crate) const CF_DECISIONS: &str = "decisions";
pub(crate) const CF_REQUEST_IDS: &str = "request_ids";
pub(crate) const CF_POLICIES: &str = "policies";
pub(crate) const CF_DOMAINS: &str = "domains";
pub(crate) const CF_SNAPSHOT: &str = "snapshot";
pub(crate) const CF_MERKLE: &str = "merkle";
pub(crate) const CF_CHECKPOINTS: &str = "checkpoints";
pub(crate) const CF_ACTIVATIONS: &str = "activations";
pub(crate) const CF_ROLLOUTS: &str = "rollouts";
pub(crate) const CF_LINEAGE: &str = "lineage";

/// `raft_meta/format`: the encoding of every stored row (FORMATS.md §6.0).
/// A database without it that holds anything was written by a build that
/// stored JSON.
const FORMAT_KEY: &[u8] = b"format";
pub(crate) const FORMAT: &str = "quorate-store/2 msgpack";

const ALL_CFS: [&str; 13] = [
    CF_LOG,
    CF_RAFT_META,
    CF_SM_META,
    CF_DECISIONS,
    CF_REQUEST_IDS,
    CF_POLICIES,
    CF_DOMAINS,
    CF_SNAPSHOT,
    CF_MERKLE,
    CF_CHECKPOINTS,
    CF_ACTIVATIONS,
    CF_ROLLOUTS,
    CF_LINEAGE,
];

/// The block cache all column families share (data, index and filter blocks).
const BLOCK_CACHE_BYTES: usize = 64 << 20;
/// All column families' memtables together; reaching it flushes the largest.
const MEMTABLE_BUDGET: usize = 32 << 20;
/// One column family's memtable before it is flushed.
const CF_WRITE_BUFFER: usize = 8 << 20;

/// Errors from opening or reading the store.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("RocksDB: {0}")]
    Rocks(#[from] rocksdb::Error),
    #[error("stored value under {what} cannot be decoded: {message}")]
    Corrupt { what: String, message: String },
    #[error("decision log divergence at index {index}: {message}")]
    Diverged { index: u64, message: String },
    #[error("refusing the peer's snapshot: {0}")]
    Unvouched(String),
    #[error("snapshot refused: {0}")]
    BadSnapshot(String),
    #[error(
        "the database in {dir} holds rows in storage format {found}, and this build reads {expected}; \
         there is no in-place conversion: move the directory aside and start the node with an empty \
         one, and it catches up from its peers by snapshot"
    )]
    Format {
        dir: std::path::PathBuf,
        found: String,
        expected: &'static str,
    },
    #[error("{path}: {message}")]
    Io {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("policy version {domain} v{version} is stored but does not compile: {message}")]
    PolicyCompile {
        domain: String,
        version: u64,
        message: String,
    },
}

impl From<StoreError> for std::io::Error {
    fn from(e: StoreError) -> std::io::Error {
        std::io::Error::other(e.to_string())
    }
}

/// The node's database. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    pub(crate) db: Arc<DB>,
    /// Where snapshot files live (`<db>/snapshots`): beside the database,
    /// never inside a RocksDB value or the WAL.
    snapshot_dir: std::path::PathBuf,
    /// Held for writing while a snapshot is installed in several batches,
    /// and for reading by a full verification, which must never see a
    /// half-installed state and call it corrupt.
    pub(crate) install_lock: Arc<std::sync::RwLock<()>>,
    /// Recently read and written Merkle nodes, for receipts (see
    /// [`crate::proofs::NodeCache`]).
    pub(crate) node_cache: Arc<crate::proofs::NodeCache>,
}

/// Refuses a database whose rows are in another encoding than this build's
/// before anything reads them (what would otherwise look like corruption
/// of every row), and marks a new one with this build's.
fn check_format(db: &DB, dir: &Path) -> Result<(), StoreError> {
    let handle = |name| {
        db.cf_handle(name).ok_or_else(|| StoreError::Corrupt {
            what: format!("column family {name}"),
            message: "missing".into(),
        })
    };
    let meta = handle(CF_RAFT_META)?;
    let refuse = |found: String| StoreError::Format {
        dir: dir.to_path_buf(),
        found,
        expected: FORMAT,
    };
    match db.get_cf(&meta, FORMAT_KEY)? {
        Some(found) if found == FORMAT.as_bytes() => Ok(()),
        Some(found) => Err(refuse(String::from_utf8_lossy(&found).into_owned())),
        None => {
            for name in ALL_CFS {
                let cf = handle(name)?;
                if db
                    .iterator_cf(&cf, rocksdb::IteratorMode::Start)
                    .next()
                    .is_some()
                {
                    return Err(refuse(
                        "JSON (written before the format was recorded)".into(),
                    ));
                }
            }
            let mut w = rocksdb::WriteOptions::default();
            w.set_sync(true);
            db.put_cf_opt(&meta, FORMAT_KEY, FORMAT.as_bytes(), &w)?;
            Ok(())
        }
    }
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.db.path())
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the database under `dir`.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        let mut opts = Options::default();
        opts.create_if_missing(true);
        opts.create_missing_column_families(true);
        // Verify block checksums on every read: a flipped byte in an SST is
        // reported rather than silently returned (invariant 6).
        opts.set_paranoid_checks(true);
        // A torn record at the WAL's tail (a crash mid-write, never acked) is
        // dropped; corruption anywhere else refuses to open instead of
        // silently truncating acknowledged entries or a granted vote.
        opts.set_wal_recovery_mode(rocksdb::DBRecoveryMode::TolerateCorruptedTailRecords);
        // Memory is bounded whatever the history's length (a node holding
        // 10 M decisions stays within its RSS budget, docs/BENCHMARKS.md):
        // all column families share one block cache, and the SSTs' index and
        // filter blocks live in it too (by default they are held outside any
        // cache and grow with the data). They are partitioned, so only the
        // partitions a lookup needs are loaded, and only the small top level
        // is pinned. Bloom filters let a lookup of an absent key (every new
        // request id) skip the data blocks. Memtables together are flushed
        // at MEMTABLE_BUDGET instead of up to 2 × 64 MiB per column family.
        // (A follower installing a snapshot peaks near 150 MB with these;
        // docs/BENCHMARKS.md, the 10 M-decision run.)
        opts.set_db_write_buffer_size(MEMTABLE_BUDGET);
        let cache = rocksdb::Cache::new_lru_cache(BLOCK_CACHE_BYTES);
        let mut table = rocksdb::BlockBasedOptions::default();
        table.set_block_cache(&cache);
        table.set_bloom_filter(10.0, false);
        table.set_index_type(rocksdb::BlockBasedIndexType::TwoLevelIndexSearch);
        table.set_partition_filters(true);
        table.set_metadata_block_size(4096);
        table.set_cache_index_and_filter_blocks(true);
        table.set_cache_index_and_filter_blocks_with_high_priority(true);
        table.set_pin_top_level_index_and_filter(true);
        table.set_pin_l0_filter_and_index_blocks_in_cache(true);
        let cfs = ALL_CFS.iter().map(|name| {
            let mut cf = Options::default();
            cf.set_block_based_table_factory(&table);
            cf.set_write_buffer_size(CF_WRITE_BUFFER);
            ColumnFamilyDescriptor::new(*name, cf)
        });
        let db = DB::open_cf_descriptors(&opts, dir, cfs)?;
        check_format(&db, dir)?;
        let snapshot_dir = dir.join("snapshots");
        std::fs::create_dir_all(&snapshot_dir).map_err(|e| StoreError::Io {
            path: snapshot_dir.clone(),
            message: e.to_string(),
        })?;
        Ok(Store {
            db: Arc::new(db),
            snapshot_dir,
            install_lock: Arc::default(),
            node_cache: Arc::default(),
        })
    }

    /// The directory holding this store's snapshot files, and where a
    /// snapshot being received is written.
    pub fn snapshot_dir(&self) -> &Path {
        &self.snapshot_dir
    }

    pub(crate) fn cf(&self, name: &str) -> Result<Arc<rocksdb::BoundColumnFamily<'_>>, StoreError> {
        self.db.cf_handle(name).ok_or_else(|| StoreError::Corrupt {
            what: format!("column family {name}"),
            message: "missing".into(),
        })
    }

    pub(crate) fn get_json<T: serde::de::DeserializeOwned>(
        &self,
        cf: &str,
        key: &[u8],
    ) -> Result<Option<T>, StoreError> {
        let handle = self.cf(cf)?;
        match self.db.get_pinned_cf(&handle, key)? {
            None => Ok(None),
            Some(bytes) => decode(cf, key, &bytes).map(Some),
        }
    }
}

pub(crate) fn decode<T: serde::de::DeserializeOwned>(
    cf: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    quorate_core::codec::decode(bytes).map_err(|e| corrupt(cf, key, e))
}

/// Decodes a stored row whose bytes must be exactly the encoding of its
/// value (`quorate_core::codec::decode_canonical`).
pub(crate) fn decode_canonical<T: serde::de::DeserializeOwned + serde::Serialize>(
    cf: &str,
    key: &[u8],
    bytes: &[u8],
) -> Result<T, StoreError> {
    quorate_core::codec::decode_canonical(bytes).map_err(|e| corrupt(cf, key, e))
}

fn corrupt(cf: &str, key: &[u8], e: quorate_core::codec::CodecError) -> StoreError {
    StoreError::Corrupt {
        what: format!("{cf}/{}", hex_key(key)),
        message: e.to_string(),
    }
}

/// Every stored row goes through the one codec (`quorate_core::codec`).
pub(crate) fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    quorate_core::codec::encode(v)
}

fn hex_key(key: &[u8]) -> String {
    if key.iter().all(|b| b.is_ascii_graphic()) {
        String::from_utf8_lossy(key).into_owned()
    } else {
        key.iter().map(|b| format!("{b:02x}")).collect()
    }
}

pub(crate) fn u64_key(v: u64) -> [u8; 8] {
    v.to_be_bytes()
}

pub(crate) fn key_u64(k: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(k.try_into().ok()?))
}
