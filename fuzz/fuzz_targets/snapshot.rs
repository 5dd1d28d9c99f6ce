//! A snapshot file as a joining or repairing node receives it from a peer:
//! its chunks checked frame by frame as the receiver checks them, then the
//! whole file read and verified by streaming, as `install_snapshot` does.
//! Must never panic and never allocate what a frame merely claims,
//! whatever the bytes. Seeds: `corpus/snapshot/seed-*`, written by the
//! ignored store test `write_snapshot_fuzz_seeds` (cluster id `"c"`).
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorate_store::{ChainHead, read_header, verify_stream};

fuzz_target!(|data: &[u8]| {
    // The receiver's check of one chunk (after the 8-byte magic).
    if data.len() > 8 {
        let _ = quorate_core::frames::check_chunk(&data[8..], 8);
    }
    // The whole file, verified as an installing node verifies it; and the
    // same frames with their digests recomputed, as a forger who knows the
    // container would write them, so mutations reach the decoders and the
    // chain checks behind the digests.
    verify_file(data);
    verify_file(&redigest(data));
});

fn verify_file(data: &[u8]) {
    let path = std::env::temp_dir().join(format!("quorate-fuzz-snapshot-{}", std::process::id()));
    if std::fs::write(&path, data).is_err() {
        return;
    }
    let Ok(file) = quorate_raft::SnapshotData::open(&path) else {
        return;
    };
    if let Ok(header) = read_header(&file) {
        // The metadata a well-behaved sender would claim for it.
        let meta = quorate_raft::SnapshotMeta {
            last_log_id: header.last_applied,
            last_membership: header.membership.clone(),
        };
        let _ = verify_stream(&file, &meta, "c", ChainHead::default());
        // And as the extension of a one-record history it may not extend.
        let keep = ChainHead {
            count: 1,
            hash: quorate_core::Digest::default(),
        };
        let _ = verify_stream(&file, &meta, "c", keep);
    }
}

/// `data` re-framed: each frame's kind and declared length kept (the
/// payload cut at the end of the input), its digest recomputed.
fn redigest(data: &[u8]) -> Vec<u8> {
    let mut out = quorate_core::frames::MAGIC.to_vec();
    let mut at = 8;
    while at + 5 <= data.len() {
        let kind = data[at];
        let len = u32::from_be_bytes([data[at + 1], data[at + 2], data[at + 3], data[at + 4]]);
        let end = (at + 5).saturating_add(len as usize).min(data.len());
        out.extend(quorate_core::frames::encode(kind, &data[at + 5..end]));
        at = end.saturating_add(32);
    }
    out
}
