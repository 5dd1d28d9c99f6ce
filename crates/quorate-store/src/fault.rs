//! Test-only fault switches, compiled only with the `fault-injection`
//! feature (enabled by test builds, never by the `quorate` binary).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use quorate_core::DecisionRecord;

use crate::db::Store;

static DIVERGE: Mutex<Option<HashSet<PathBuf>>> = Mutex::new(None);

/// Makes the state machine on the store at `db_dir` evaluate differently
/// from its peers: every decision it records is inverted. Simulates a
/// nondeterministic or tampered evaluator on one replica.
pub fn set_diverge(db_dir: &Path, on: bool) {
    let mut g = DIVERGE.lock().unwrap_or_else(|p| p.into_inner());
    let set = g.get_or_insert_with(HashSet::new);
    if on {
        set.insert(db_dir.to_path_buf());
    } else {
        set.remove(db_dir);
    }
}

/// Whether the store at its path was switched to evaluate differently.
pub(crate) fn diverging(store: &Store) -> bool {
    DIVERGE
        .lock()
        .map(|g| g.as_ref().is_some_and(|s| s.contains(store.db.path())))
        .unwrap_or(false)
}

/// Rewrites the stored decision record at `index` in the (stopped) node's
/// database at `db_dir` through `edit`, without fixing its hash: what a
/// flipped byte on disk or a tampering operator would leave behind.
pub fn tamper_record(
    db_dir: &Path,
    index: u64,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<(), crate::StoreError> {
    let store = Store::open(db_dir)?;
    edit_record(&store, index, edit)?;
    store.db.flush_wal(true)?;
    Ok(())
}

/// Like `tamper_record`, on a running node's open database (through its
/// read handle): what a bit flip under a live node leaves behind.
pub fn tamper_record_live(
    lookup: &crate::DecisionLookup,
    index: u64,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<(), crate::StoreError> {
    edit_record(lookup.store(), index, edit)
}

fn edit_record(
    store: &Store,
    index: u64,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<(), crate::StoreError> {
    let cf = store.cf(crate::db::CF_DECISIONS)?;
    let key = index.to_be_bytes();
    let missing = || crate::StoreError::Corrupt {
        what: format!("decisions/{index}"),
        message: "no such record".into(),
    };
    let bytes = store.db.get_cf(&cf, key)?.ok_or_else(missing)?;
    let edited =
        quorate_core::codec::edit(&bytes, edit).map_err(|e| crate::StoreError::Corrupt {
            what: format!("decisions/{index}"),
            message: e.to_string(),
        })?;
    store.db.put_cf(&cf, key, edited)?;
    Ok(())
}

/// Rewrites domain `domain`'s stored metadata row through `edit` (JSON):
/// what a tampered `active_version` leaves behind.
pub fn tamper_domain(
    store: &Store,
    domain: &str,
    edit: impl FnOnce(&mut serde_json::Value),
) -> Result<(), crate::StoreError> {
    let cf = store.cf(crate::db::CF_DOMAINS)?;
    let bytes =
        store
            .db
            .get_cf(&cf, domain.as_bytes())?
            .ok_or_else(|| crate::StoreError::Corrupt {
                what: format!("domains/{domain}"),
                message: "no such domain".into(),
            })?;
    let edited =
        quorate_core::codec::edit(&bytes, edit).map_err(|e| crate::StoreError::Corrupt {
            what: format!("domains/{domain}"),
            message: e.to_string(),
        })?;
    store.db.put_cf(&cf, domain.as_bytes(), edited)?;
    store.db.flush_wal(true)?;
    Ok(())
}

/// Rewrites the record at `index` under a running node through `edit` and
/// seals it again (a valid hash over the altered contents): what someone
/// who knows the record format, but holds no voter's key, can forge. Its
/// chain link and Merkle leaf no longer match.
pub fn reseal_record_live(
    lookup: &crate::DecisionLookup,
    index: u64,
    edit: impl FnOnce(&mut DecisionRecord),
) -> Result<(), crate::StoreError> {
    let store = lookup.store();
    let cf = store.cf(crate::db::CF_DECISIONS)?;
    let key = index.to_be_bytes();
    let bytes = store
        .db
        .get_cf(&cf, key)?
        .ok_or_else(|| crate::StoreError::Corrupt {
            what: format!("decisions/{index}"),
            message: "no such record".into(),
        })?;
    let mut rec: DecisionRecord = crate::db::decode(crate::db::CF_DECISIONS, &key, &bytes)?;
    edit(&mut rec);
    store.db.put_cf(&cf, key, crate::db::encode(&rec.seal()))?;
    Ok(())
}

/// Adds a lineage row to a running node's open database saying that the
/// decision at `index`, of `domain`, names `parent` as its parent, whatever
/// the record says: a forged child beside the honest rows.
pub fn forge_lineage_child_live(
    lookup: &crate::DecisionLookup,
    domain: &str,
    parent: &str,
    index: u64,
) -> Result<(), crate::StoreError> {
    let store = lookup.store();
    let mut k = crate::lineage::child_prefix(domain, parent);
    k.extend_from_slice(&index.to_be_bytes());
    store.db.put_cf(&store.cf(crate::db::CF_LINEAGE)?, k, [])?;
    Ok(())
}

/// Overwrites the stored perfect Merkle node `(level, index)` of a running
/// node's open database with `hash`, behind its caches: what a bit flip in
/// the `merkle` column family leaves behind.
pub fn tamper_merkle_live(
    lookup: &crate::DecisionLookup,
    level: u32,
    index: u64,
    hash: quorate_core::Digest,
) -> Result<(), crate::StoreError> {
    let store = lookup.store();
    let cf = store.cf(crate::db::CF_MERKLE)?;
    store
        .db
        .put_cf(&cf, crate::proofs::merkle_key(level, index), hash.0)?;
    Ok(())
}
