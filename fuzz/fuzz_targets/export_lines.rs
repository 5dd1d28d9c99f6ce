//! Log records and export lines as an auditor's verifier reads them: any
//! bytes fed line by line to the streaming verifier, and any JSON decoded
//! as a decision record. Must never panic; a decoded record re-encodes to
//! a record with the same hash.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quorate_core::export::ExportLine;
use quorate_core::verify::ExportVerifier;
use quorate_core::{DecisionRecord, TrustFile};

fn trust() -> TrustFile {
    let v: serde_json::Value =
        serde_json::from_str(include_str!("../../docs/vectors/proof-v1.json")).unwrap_or_default();
    serde_json::from_value(v["trust"].clone()).unwrap_or_else(|_| TrustFile {
        format: "quorate-trust/v1".into(),
        cluster_id: "vectors".into(),
        nodes: vec![],
        publishers: vec![],
        voter_sets: vec![],
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(r) = serde_json::from_str::<DecisionRecord>(text) {
        let again: DecisionRecord =
            serde_json::from_str(&serde_json::to_string(&r).unwrap_or_default())
                .unwrap_or(r.clone());
        assert_eq!(again.compute_hash(), r.compute_hash());
    }
    let _ = serde_json::from_str::<ExportLine>(text);
    let trust = trust();
    let reevaluator = quorate_policy::CedarReevaluator::new(Default::default());
    let mut v = ExportVerifier::new(&trust, Some(Box::new(reevaluator)));
    for line in text.lines() {
        if v.feed_line(line).is_err() {
            return;
        }
    }
    let _ = v.finish();
});
