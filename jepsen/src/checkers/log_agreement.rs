//! Invariant 4 (one history): every node's final log is identical, and
//! every committed record a client saw is the final log's record at that
//! index (committed prefixes agree at every observation).

use serde_json::json;

use super::{CheckResult, RunData};

pub fn check(d: &RunData) -> CheckResult {
    const NAME: &str = "log-agreement";
    const INV: &str = "4: one history";
    let answered: Vec<_> = d
        .exports
        .iter()
        .filter_map(|(n, e)| e.as_ref().ok().map(|l| (*n, l)))
        .collect();
    if answered.is_empty() {
        return CheckResult::unknown(NAME, INV, "no node answered the final export");
    }
    let mut bad = Vec::new();
    let (first_node, first) = answered[0];
    // Compare the log content, not the header (node id differs).
    let body =
        |l: &Vec<quorate_core::export::ExportLine>| l.iter().skip(1).cloned().collect::<Vec<_>>();
    let reference = body(first);
    for (n, l) in &answered[1..] {
        let b = body(l);
        if b != reference {
            let at = b
                .iter()
                .zip(reference.iter())
                .position(|(x, y)| x != y)
                .unwrap_or(b.len().min(reference.len()));
            bad.push(
                json!({"node": n, "differs_from_node": first_node, "first_differing_line": at + 2,
                            "lines": b.len() + 1, "reference_lines": reference.len() + 1}),
            );
        }
    }
    let records = d.final_records().unwrap_or_default();
    for op in d.ok_authorizations() {
        let (Some(index), Some(hash)) = (op.output["index"].as_u64(), op.output["hash"].as_str())
        else {
            continue;
        };
        match records.get((index as usize).wrapping_sub(1)) {
            Some(r) if r.hash.to_hex() == hash => {}
            Some(r) => {
                bad.push(json!({"op": op.input, "observed": op.output, "final_hash": r.hash}))
            }
            None => bad.push(
                json!({"op": op.input, "observed": op.output, "final_records": records.len()}),
            ),
        }
    }
    let missing: Vec<u64> = d
        .exports
        .iter()
        .filter(|(_, e)| e.is_err())
        .map(|(n, _)| *n)
        .collect();
    let mut r = CheckResult::new(
        NAME,
        INV,
        bad,
        json!({"nodes_compared": answered.len(), "nodes_without_export": missing, "records": records.len()}),
    );
    if r.valid == super::Validity::Valid && answered.len() < d.nodes {
        // Identical where seen, but not every node could be compared.
        r.valid = super::Validity::Unknown;
    }
    r
}
