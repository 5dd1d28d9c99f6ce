//! A snapshot as a joining or repairing node receives it from a peer:
//! decoded and fully verified. Must never panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorate_store::SnapshotPayload;

fuzz_target!(|data: &[u8]| {
    let Ok(payload) = SnapshotPayload::decode(data) else {
        return;
    };
    let meta = claimed_meta(&payload);
    let _ = payload.verify(&meta, "vectors");
});

/// The metadata a well-behaved sender would claim for `p`.
fn claimed_meta(p: &SnapshotPayload) -> quorate_raft::SnapshotMeta {
    quorate_raft::SnapshotMeta {
        last_log_id: p.last_applied,
        last_membership: p.membership.clone(),
    }
}
