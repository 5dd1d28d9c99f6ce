//! openraft's own storage test suite, run against our RocksDB backend in a
//! temp dir. Every backend must pass it.

use openraft::StorageError;
use openraft::errors::ErrorSource;
use openraft::testing::log::{StoreBuilder, Suite};
use quorate_core::validate::Limits;
use quorate_raft::TypeConfig;
use quorate_store::{LogStore, StateMachine, Store};
use tempfile::TempDir;

struct RocksBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for RocksBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir =
            tempfile::tempdir().map_err(|e| StorageError::write(ErrorSource::from_error(&e)))?;
        let store = Store::open(dir.path())
            .map_err(|e| StorageError::write(ErrorSource::from_error(&e)))?;
        let sm = StateMachine::open(store.clone(), Limits::default())
            .map_err(|e| StorageError::write(ErrorSource::from_error(&e)))?;
        Ok((dir, LogStore::new(store), sm))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openraft_storage_suite_passes_on_rocksdb() -> Result<(), StorageError<TypeConfig>> {
    Suite::test_all(RocksBuilder).await
}
