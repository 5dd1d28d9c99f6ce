//! The bit-flip nemesis: flips one bit of one stored decision record in a
//! stopped node's RocksDB (through RocksDB itself, so its own block
//! checksums stay valid and only quorate's hash chain can notice). The node
//! is restarted and must contain with INTEGRITY_FAILURE; silently serving
//! the damaged record is a failure. At heal the harness runs
//! `quorate node repair` in the node's namespace and restarts it.

use std::path::Path;

use anyhow::{Context, anyhow};
use rand::Rng;

/// Flips one bit of a random record's stored bytes; returns its index.
pub fn flip_record_bit(db_dir: &Path, rng: &mut impl Rng) -> anyhow::Result<Option<u64>> {
    let opts = rocksdb::Options::default();
    let cfs = rocksdb::DB::list_cf(&opts, db_dir)
        .with_context(|| format!("cannot list column families in {}", db_dir.display()))?;
    let db = rocksdb::DB::open_cf(&opts, db_dir, &cfs)
        .with_context(|| format!("cannot open {} (is the node stopped?)", db_dir.display()))?;
    let cf = db
        .cf_handle("decisions")
        .ok_or_else(|| anyhow!("no decisions column family"))?;
    let count = db.iterator_cf(&cf, rocksdb::IteratorMode::Start).count();
    if count == 0 {
        return Ok(None);
    }
    let pick = rng.gen_range(0..count);
    let Some(Ok((key, value))) = db.iterator_cf(&cf, rocksdb::IteratorMode::Start).nth(pick) else {
        return Ok(None);
    };
    let mut bytes = value.to_vec();
    let at = rng.gen_range(0..bytes.len());
    bytes[at] ^= 1 << rng.gen_range(0..8);
    db.put_cf(&cf, &key, &bytes)?;
    db.flush_wal(true)?;
    let index = <[u8; 8]>::try_from(key.as_ref())
        .map(u64::from_be_bytes)
        .ok();
    Ok(index)
}
