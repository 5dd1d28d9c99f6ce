//! The lineage index: which decisions name a given request id as their
//! `parent`, and which decisions carry a given `trace_id`.
//!
//! It is derived, not replicated: every row is a function of one decision
//! record (`put_rows`), written in the same batch as the record, whether the
//! record is applied or arrives in a snapshot, and rebuilt from the decision
//! log when a database written before the index existed is opened
//! (`backfill`). Keys only, empty values (docs/FORMATS.md §6):
//!
//! - `0x01 ‖ u32(len) domain ‖ u32(len) parent ‖ u64(index)`: the decision at
//!   `index`, of `domain`, names request id `parent` as its parent;
//! - `0x02 ‖ u32(len) trace_id ‖ u64(index)`: the decision at `index`
//!   carries `trace_id`.
//!
//! Lengths make every prefix unambiguous whatever bytes the strings hold.

use quorate_core::DecisionRecord;
use rocksdb::{IteratorMode, WriteBatch};

use crate::db::{CF_DECISIONS, CF_LINEAGE, CF_SM_META, Store, StoreError, decode, encode};

const CHILD: u8 = 1;
const TRACE: u8 = 2;

/// Set in `sm_meta` once every stored record has its lineage rows.
pub(crate) const KEY_LINEAGE: &[u8] = b"lineage_index";
const LINEAGE_VERSION: u64 = 1;

fn push_str(k: &mut Vec<u8>, s: &str) {
    // Domains, request ids and trace ids are bounded far below 4 GiB
    // (validate.rs), so the length always fits.
    k.extend_from_slice(&u32::try_from(s.len()).unwrap_or(u32::MAX).to_be_bytes());
    k.extend_from_slice(s.as_bytes());
}

pub(crate) fn child_prefix(domain: &str, parent: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(domain.len() + parent.len() + 17);
    k.push(CHILD);
    push_str(&mut k, domain);
    push_str(&mut k, parent);
    k
}

fn trace_prefix(trace_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(trace_id.len() + 13);
    k.push(TRACE);
    push_str(&mut k, trace_id);
    k
}

/// The lineage rows of one record, on `batch`. The one place they are made.
pub(crate) fn put_rows(
    store: &Store,
    batch: &mut WriteBatch,
    rec: &DecisionRecord,
) -> Result<(), StoreError> {
    let req = &rec.request;
    if req.parent.is_none() && req.trace_id.is_none() {
        return Ok(());
    }
    let cf = store.cf(CF_LINEAGE)?;
    if let Some(parent) = &req.parent {
        let mut k = child_prefix(&req.domain, parent);
        k.extend_from_slice(&rec.index.to_be_bytes());
        batch.put_cf(&cf, k, []);
    }
    if let Some(trace) = &req.trace_id {
        let mut k = trace_prefix(trace);
        k.extend_from_slice(&rec.index.to_be_bytes());
        batch.put_cf(&cf, k, []);
    }
    Ok(())
}

/// How many lineage rows `rec` has, each checked to be stored in `view`
/// with its empty value: invariant 6 for the derived rows (a deleted or
/// changed row is found like a flipped record). The message names the row.
pub(crate) fn check_rows(
    store: &Store,
    view: &crate::machine::View<'_>,
    rec: &DecisionRecord,
) -> Result<u64, String> {
    let req = &rec.request;
    let mut keys = Vec::new();
    if let Some(parent) = &req.parent {
        let mut k = child_prefix(&req.domain, parent);
        k.extend_from_slice(&rec.index.to_be_bytes());
        keys.push(("parent", k));
    }
    if let Some(trace) = &req.trace_id {
        let mut k = trace_prefix(trace);
        k.extend_from_slice(&rec.index.to_be_bytes());
        keys.push(("trace id", k));
    }
    if keys.is_empty() {
        return Ok(0);
    }
    let cf = store.cf(CF_LINEAGE).map_err(|e| e.to_string())?;
    for (what, k) in &keys {
        match view.get_cf(&cf, k).map_err(|e| e.to_string())? {
            Some(v) if v.is_empty() => {}
            Some(_) => {
                return Err(format!(
                    "the lineage index row of its {what} holds a value; rows are keys only"
                ));
            }
            None => return Err(format!("the lineage index row of its {what} is missing")),
        }
    }
    Ok(keys.len() as u64)
}

/// Indexes under `prefix` above `after`, in order, at most `limit`.
fn scan(store: &Store, prefix: Vec<u8>, after: u64, limit: usize) -> Result<Vec<u64>, StoreError> {
    let cf = store.cf(CF_LINEAGE)?;
    let mut from = prefix.clone();
    from.extend_from_slice(&after.saturating_add(1).to_be_bytes());
    let mut out = Vec::new();
    let it = store
        .db
        .iterator_cf(&cf, IteratorMode::From(&from, rocksdb::Direction::Forward));
    for kv in it {
        let (k, _) = kv?;
        let Some(rest) = k.strip_prefix(prefix.as_slice()) else {
            break;
        };
        let index: [u8; 8] = rest.try_into().map_err(|_| StoreError::Corrupt {
            what: format!("{CF_LINEAGE}/{}", hex::encode(&k)),
            message: "a lineage key ends in something other than an 8-byte index".into(),
        })?;
        out.push(u64::from_be_bytes(index));
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// Indexes of the decisions of `domain` whose parent is `parent`, above
/// `after`, in log order, at most `limit`.
pub(crate) fn children(
    store: &Store,
    domain: &str,
    parent: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<u64>, StoreError> {
    scan(store, child_prefix(domain, parent), after, limit)
}

/// Indexes of the decisions carrying `trace_id`, above `after`, in log
/// order, at most `limit`.
pub(crate) fn trace(
    store: &Store,
    trace_id: &str,
    after: u64,
    limit: usize,
) -> Result<Vec<u64>, StoreError> {
    scan(store, trace_prefix(trace_id), after, limit)
}

/// Marks the index complete (in `batch`): a fresh database, or one whose
/// decisions were all replaced together with their rows.
pub(crate) fn mark_complete(store: &Store, batch: &mut WriteBatch) -> Result<(), StoreError> {
    batch.put_cf(
        &store.cf(CF_SM_META)?,
        KEY_LINEAGE,
        encode(&LINEAGE_VERSION),
    );
    Ok(())
}

/// Builds the rows of every stored record once, for a database written
/// before the index existed; a no-op afterwards. Returns how many records
/// it read.
pub(crate) fn backfill(store: &Store) -> Result<u64, StoreError> {
    if store.get_json::<u64>(CF_SM_META, KEY_LINEAGE)? == Some(LINEAGE_VERSION) {
        return Ok(0);
    }
    let cf = store.cf(CF_DECISIONS)?;
    let mut batch = WriteBatch::default();
    let mut read = 0u64;
    for kv in store.db.iterator_cf(&cf, IteratorMode::Start) {
        let (k, v) = kv?;
        let rec: DecisionRecord = decode(CF_DECISIONS, &k, &v)?;
        put_rows(store, &mut batch, &rec)?;
        read += 1;
        if batch.len() >= 10_000 {
            store.db.write(std::mem::take(&mut batch))?;
        }
        if read % 1_000_000 == 0 {
            tracing::info!(records = read, "building the lineage index");
        }
    }
    mark_complete(store, &mut batch)?;
    store.db.write(batch)?;
    if read > 0 {
        tracing::info!(records = read, "lineage index built");
    }
    Ok(read)
}
