//! Invariant 5 (nothing acknowledged is lost): every decision a client saw
//! committed (ALLOW or DENY) and every policy version whose publication was
//! acknowledged is in the final log, at its index, with its hash; and no
//! request id was decided twice (no duplicates).

use std::collections::HashMap;

use quorate_core::export::ExportLine;
use serde_json::json;

use super::{CheckResult, RunData};
use crate::history::{F, Kind};

pub fn check(d: &RunData) -> CheckResult {
    const NAME: &str = "no-lost-or-duplicated";
    const INV: &str = "5: nothing acknowledged is lost";
    let (Some(log), Some(records)) = (d.final_log(), d.final_records()) else {
        return CheckResult::unknown(NAME, INV, "no final log");
    };
    let mut bad = Vec::new();
    let mut acked = 0;
    for op in d.ok_authorizations() {
        let Some(i) = op.output["index"].as_u64() else {
            continue;
        };
        acked += 1;
        let rid = op.input["request_id"].as_str().unwrap_or("");
        match records.get((i as usize).wrapping_sub(1)) {
            Some(r) if r.hash.to_hex() == op.output["hash"].as_str().unwrap_or("")
                && r.request.request_id == rid => {}
            other => bad.push(json!({"why": "acknowledged decision lost or changed", "request_id": rid,
                "index": i, "final": other.map(|r| json!({"request_id": r.request.request_id, "hash": r.hash}))})),
        }
    }
    let versions: HashMap<u64, String> = log
        .iter()
        .filter_map(|l| match l {
            ExportLine::Policy(p) => Some((p.version, p.hash.to_hex())),
            _ => None,
        })
        .collect();
    for op in d
        .ops
        .iter()
        .filter(|o| o.f == F::Publish && o.kind == Kind::Ok)
    {
        let v = op.output["version"].as_u64().unwrap_or(0);
        let h = op.output["hash"].as_str().unwrap_or("");
        if versions.get(&v).map(String::as_str) != Some(h) {
            bad.push(json!({"why": "acknowledged policy version lost or changed", "version": v, "hash": h}));
        }
    }
    let mut seen: HashMap<(&str, &str), u64> = HashMap::new();
    for r in &records {
        if let Some(first) = seen.insert((&r.request.domain, &r.request.request_id), r.index) {
            bad.push(
                json!({"why": "request id decided twice", "request_id": r.request.request_id,
                "indexes": [first, r.index]}),
            );
        }
    }
    CheckResult::new(
        NAME,
        INV,
        bad,
        json!({"acknowledged_decisions": acked, "policy_versions": versions.len()}),
    )
}
