//! Invariants 1 and 2 (decide before execute; fail closed): every ALLOW a
//! client received is in the final log at the stated index with the stated
//! hash and an ALLOW decision; and no node answered ALLOW to a request
//! invoked after it was cut off from a majority (partitioned into a
//! minority, or paused) and answered before that was healed.

use serde_json::json;

use super::{CheckResult, RunData};

pub fn check(d: &RunData) -> CheckResult {
    const NAME: &str = "no-fail-open";
    const INV: &str = "1: decide before execute; 2: fail closed";
    let Some(records) = d.final_records() else {
        return CheckResult::unknown(NAME, INV, "no final log");
    };
    let windows = d.minority_windows();
    let mut bad = Vec::new();
    let mut allows = 0;
    for op in d.ok_authorizations() {
        if op.output["decision"] != "ALLOW" {
            continue;
        }
        allows += 1;
        match (op.output["index"].as_u64(), op.output["hash"].as_str()) {
            (Some(i), Some(h)) => match records.get((i as usize).wrapping_sub(1)) {
                Some(r) if r.hash.to_hex() == h && r.decision == quorate_core::Decision::Allow => {}
                other => bad.push(json!({"why": "ALLOW not in the final log as answered",
                    "op": op.input, "answer": op.output, "final": other.map(|r| json!({"hash": r.hash, "decision": r.decision}))})),
            },
            _ => bad.push(json!({"why": "ALLOW without a committed record", "op": op.input, "answer": op.output})),
        }
        let Some(done) = op.complete_ns else { continue };
        for (start, end, nodes) in &windows {
            if nodes.contains(&op.node) && op.invoke_ns > *start && done < *end {
                bad.push(json!({"why": "ALLOW from a node cut off from a majority",
                    "node": op.node, "op": op.input, "answer": op.output,
                    "window_ms": [start / 1_000_000, end / 1_000_000],
                    "invoked_ms": op.invoke_ns / 1_000_000}));
            }
        }
    }
    CheckResult::new(
        NAME,
        INV,
        bad,
        json!({"allows_checked": allows, "minority_windows": windows.len()}),
    )
}
