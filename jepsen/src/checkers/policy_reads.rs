//! Linearizable policy-version reads. Writes (publish-with-activate and
//! activate) are totally ordered by their Raft log index, which the final
//! log shows as activation lines. A read invoked after a write W completed
//! must return a version that was active at or after W's log position: the
//! version of some activation at an index >= W's. Anything else is a stale
//! read. (Reads of unknown-outcome writes are allowed either way.)

use quorate_core::export::ExportLine;
use serde_json::json;

use super::{CheckResult, RunData};
use crate::history::{F, Kind};

pub fn check(d: &RunData) -> CheckResult {
    const NAME: &str = "linearizable-policy-reads";
    const INV: &str = "4: one history (reads see the committed order)";
    let Some(log) = d.final_log() else {
        return CheckResult::unknown(NAME, INV, "no final log");
    };
    let activations: Vec<(u64, u64)> = log
        .iter()
        .filter_map(|l| match l {
            ExportLine::Activation(a) if a.domain == crate::workload::DOMAIN => {
                Some((a.log_index, a.version))
            }
            _ => None,
        })
        .collect();
    let writes: Vec<(u64, u64)> = d
        .ops
        .iter()
        .filter(|o| matches!(o.f, F::Publish | F::Activate) && o.kind == Kind::Ok)
        .filter_map(|o| Some((o.complete_ns?, o.output["log_index"].as_u64()?)))
        .collect();
    let mut bad = Vec::new();
    let mut reads = 0;
    for r in d
        .ops
        .iter()
        .filter(|o| o.f == F::ReadPolicy && o.kind == Kind::Ok)
    {
        reads += 1;
        let v = r.output["version"].as_u64().unwrap_or(0);
        let floor = writes
            .iter()
            .filter(|(done, _)| *done < r.invoke_ns)
            .map(|(_, idx)| *idx)
            .max()
            .unwrap_or(0);
        let fresh = if v == 0 {
            floor == 0
        } else {
            activations
                .iter()
                .any(|(idx, ver)| *ver == v && *idx >= floor)
        };
        if !fresh {
            bad.push(
                json!({"read": r.output, "node": r.node, "invoked_ms": r.invoke_ns / 1_000_000,
                "latest_completed_write_log_index": floor}),
            );
        }
    }
    CheckResult::new(
        NAME,
        INV,
        bad,
        json!({"reads": reads, "writes": writes.len(), "activations": activations.len()}),
    )
}
