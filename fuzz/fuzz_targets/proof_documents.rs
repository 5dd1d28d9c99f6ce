//! Receipts, checkpoints, consistency bundles and trust files as a
//! verifier reads them from files. Must never panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorate_core::proof::{ConsistencyBundle, verify_consistency, verify_receipt};
use quorate_core::{Checkpoint, Receipt, TrustFile};

fuzz_target!(|data: &[u8]| {
    let vectors: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/vectors/proof-v1.json")).unwrap_or_default();
    let fixed: Option<TrustFile> = serde_json::from_value(vectors["trust"].clone()).ok();
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // A fuzzed trust file, checked and used.
    if let Ok(t) = serde_json::from_str::<TrustFile>(text) {
        let _ = t.check();
        if let Some(cp) = vectors["checkpoint"].as_object() {
            if let Ok(cp) =
                serde_json::from_value::<Checkpoint>(serde_json::Value::Object(cp.clone()))
            {
                let _ = t.verify_checkpoint(&cp);
            }
        }
    }
    let Some(trust) = fixed else { return };
    if let Ok(r) = serde_json::from_str::<Receipt>(text) {
        let _ = verify_receipt(&trust, &r);
    }
    if let Ok(cp) = serde_json::from_str::<Checkpoint>(text) {
        let _ = trust.verify_checkpoint(&cp);
    }
    if let Ok(b) = serde_json::from_str::<ConsistencyBundle>(text) {
        let _ = verify_consistency(&trust, &b.checkpoint, &b);
    }
});
