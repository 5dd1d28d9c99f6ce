//! Invariants 3 and 6 (deterministic; tamper evident): the final export
//! verifies offline (`quorate_core::verify`): every record hash and link,
//! the Merkle root at every checkpoint, every cosignature under the trust
//! file's keys, and every decision equal to its re-evaluation under the
//! policy version active at its log position.

use quorate_core::verify::ExportVerifier;
use serde_json::json;

use super::{CheckResult, RunData};

pub fn check(d: &RunData) -> CheckResult {
    const NAME: &str = "export-verifies";
    const INV: &str = "3: deterministic; 4: one history (checkpoints); 6: tamper evident";
    let (Some(log), Some(trust)) = (d.final_log(), d.trust.as_ref()) else {
        return CheckResult::unknown(NAME, INV, "no final log or trust file");
    };
    let mut v = ExportVerifier::new(
        trust,
        Some(Box::new(quorate_policy::CedarReevaluator::new(
            Default::default(),
        ))),
    );
    let mut bad = Vec::new();
    for line in log {
        let text = serde_json::to_string(line).unwrap_or_default();
        if let Err(e) = v.feed_line(&text) {
            bad.push(json!(e.to_string()));
            break;
        }
    }
    let summary = if bad.is_empty() {
        match v.finish() {
            Ok(s) => serde_json::to_value(&s).unwrap_or_default(),
            Err(e) => {
                bad.push(json!(e.to_string()));
                json!({})
            }
        }
    } else {
        json!({})
    };
    CheckResult::new(NAME, INV, bad, json!({"summary": summary}))
}
