//! Recovery: after the final heal every node serves (answers a committed
//! ALLOW through itself) within 10 s. Also reports, not judges, how fast a
//! cut-off node contained (cut → its first NO_QUORUM answer).

use serde_json::json;

use super::{CheckResult, RunData};
use crate::history::{F, Kind};

pub const BOUND_MS: u64 = 10_000;

pub fn check(d: &RunData) -> CheckResult {
    const NAME: &str = "recovery";
    const INV: &str = "2: fail closed, and recover once healed";
    if d.recovery_ms.is_empty() {
        return CheckResult::unknown(NAME, INV, "no recovery measurements");
    }
    let bad: Vec<_> = d
        .recovery_ms
        .iter()
        .filter(|(_, ms)| ms.is_none_or(|m| m > BOUND_MS))
        .map(|(n, ms)| json!({"node": n, "served_after_ms": ms}))
        .collect();
    let mut onsets = Vec::new();
    for (start, end, nodes) in d.minority_windows() {
        for n in nodes {
            let first = d
                .ops
                .iter()
                .filter(|o| {
                    o.f == F::Authorize && o.node == n && o.invoke_ns >= start && o.invoke_ns < end
                })
                .filter(|o| o.kind == Kind::Fail && o.output["reason"] == "NO_QUORUM")
                .filter_map(|o| o.complete_ns)
                .min();
            onsets.push(json!({"node": n, "cut_ms": start / 1_000_000,
                "containment_onset_ms": first.map(|f| (f - start) / 1_000_000)}));
        }
    }
    CheckResult::new(
        NAME,
        INV,
        bad,
        json!({"bound_ms": BOUND_MS, "served_after_heal_ms": d.recovery_ms, "containment_onsets": onsets}),
    )
}
