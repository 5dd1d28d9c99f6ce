//! Invariant 6 (tamper evident): every bit flipped in a stopped node's
//! stored record was detected when the node restarted (it contained with
//! INTEGRITY_FAILURE instead of serving), and `quorate node repair`
//! restored it at heal. ALLOWs from the damaged node before its repair are
//! judged by `no-fail-open` (the victim counts as cut off).

use serde_json::json;

use super::{CheckResult, RunData};
use crate::history::NEMESIS_PROCESS;

pub fn check(d: &RunData) -> CheckResult {
    const NAME: &str = "tamper-detected";
    const INV: &str = "6: tamper evident";
    let mut bad = Vec::new();
    let mut flips = 0;
    let mut repairs = 0;
    for e in d.events.iter().filter(|e| e.process == NEMESIS_PROCESS) {
        if e.value["nemesis"] != "bitflip" {
            continue;
        }
        let detail = &e.value["detail"];
        match e.value["action"].as_str() {
            Some("installed") => {
                flips += 1;
                if detail["detected"] != true {
                    bad.push(json!({"why": "a flipped bit was not detected on restart",
                        "victim": detail["victim"], "index": detail["index"], "status": detail["status"]}));
                }
            }
            Some("healed") => {
                if detail["repair"]["repaired"] == true && detail["repair"]["verified"] == true {
                    repairs += 1;
                } else {
                    bad.push(json!({"why": "repair did not restore verified state", "repair": detail["repair"]}));
                }
            }
            Some("indeterminate") => {
                bad.push(
                    json!({"why": "the bit-flip nemesis or its repair failed", "detail": detail}),
                );
            }
            _ => {}
        }
    }
    CheckResult::new(NAME, INV, bad, json!({"flips": flips, "repairs": repairs}))
}
