//! Real-time order (invariants 1 and 4): if decision A was acknowledged
//! before decision B was requested, A's log index is smaller than B's. A
//! replayed answer (same request id) is excluded: it returns an earlier
//! decision by design.

use serde_json::json;

use super::{CheckResult, RunData};

pub fn check(d: &RunData) -> CheckResult {
    const NAME: &str = "real-time-order";
    const INV: &str = "1 and 4: a committed decision precedes every later request";
    // Sweep over invocations and completions in time order; remember the
    // largest index acknowledged so far.
    let ops: Vec<_> = d
        .ok_authorizations()
        .filter(|o| o.output["replayed"] != true)
        .filter_map(|o| Some((o, o.output["index"].as_u64()?, o.complete_ns?)))
        .collect();
    let mut points: Vec<(u64, bool, usize)> = Vec::new();
    for (k, (o, _, done)) in ops.iter().enumerate() {
        points.push((o.invoke_ns, true, k));
        points.push((*done, false, k));
    }
    // Completions before invocations at the same instant: strictly before.
    points.sort_by_key(|p| (p.0, p.1));
    let mut max_done: Option<(u64, usize)> = None;
    let mut floor = vec![None; ops.len()];
    let mut bad = Vec::new();
    for (_, is_invoke, k) in points {
        if is_invoke {
            floor[k] = max_done;
        } else {
            let index = ops[k].1;
            if let Some((before, j)) = floor[k]
                && index <= before
            {
                bad.push(json!({"earlier": ops[j].0.input, "earlier_index": before,
                    "later": ops[k].0.input, "later_index": index}));
            }
            if max_done.is_none_or(|(m, _)| index > m) {
                max_done = Some((index, k));
            }
        }
    }
    CheckResult::new(NAME, INV, bad, json!({"decisions": ops.len()}))
}
