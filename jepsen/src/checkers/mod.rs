//! Checkers: one file per invariant of `../shared/BRIEF.md`, each judging
//! the recorded history and the final state of every node. A checker says
//! `true` (valid), `false` (with counterexamples) or `unknown` (it could not
//! judge, e.g. no node answered the final reads).

use quorate_core::TrustFile;
use quorate_core::export::ExportLine;
use serde::Serialize;

use crate::history::{Event, F, Kind, NEMESIS_PROCESS, Op};

pub mod determinism;
pub mod durability;
pub mod fail_open;
pub mod log_agreement;
pub mod policy_reads;
pub mod realtime;
pub mod recovery;
pub mod tamper;

/// Everything a run produced, as the checkers see it.
#[derive(Debug, Default)]
pub struct RunData {
    pub nodes: usize,
    pub events: Vec<Event>,
    pub ops: Vec<Op>,
    /// Each node's final export (node number, lines or why none).
    pub exports: Vec<(u64, Result<Vec<ExportLine>, String>)>,
    pub trust: Option<TrustFile>,
    /// Milliseconds from the final heal until each node served an ALLOW
    /// through itself, or `None` if it did not within the bound.
    pub recovery_ms: Vec<(u64, Option<u64>)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Validity {
    Valid,
    Invalid,
    Unknown,
}

impl Serialize for Validity {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Validity::Valid => s.serialize_bool(true),
            Validity::Invalid => s.serialize_bool(false),
            Validity::Unknown => s.serialize_str("unknown"),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CheckResult {
    pub name: &'static str,
    /// The invariant of the brief this checker hunts for violations of.
    pub invariant: &'static str,
    pub valid: Validity,
    pub details: serde_json::Value,
}

impl CheckResult {
    pub fn new(
        name: &'static str,
        invariant: &'static str,
        counterexamples: Vec<serde_json::Value>,
        mut details: serde_json::Value,
    ) -> CheckResult {
        let valid = if counterexamples.is_empty() {
            Validity::Valid
        } else {
            Validity::Invalid
        };
        if let Some(o) = details.as_object_mut() {
            o.insert("counterexample_count".into(), counterexamples.len().into());
            // Keep results.json readable: the first 20 are enough to debug.
            o.insert(
                "counterexamples".into(),
                counterexamples.into_iter().take(20).collect(),
            );
        }
        CheckResult {
            name,
            invariant,
            valid,
            details,
        }
    }

    pub fn unknown(name: &'static str, invariant: &'static str, why: &str) -> CheckResult {
        CheckResult {
            name,
            invariant,
            valid: Validity::Unknown,
            details: serde_json::json!({ "why": why }),
        }
    }
}

impl RunData {
    /// The first node's export that answered: the final log.
    pub fn final_log(&self) -> Option<&[ExportLine]> {
        self.exports
            .iter()
            .find_map(|(_, e)| e.as_ref().ok().map(Vec::as_slice))
    }

    /// Final records by index (index 1 at position 0).
    pub fn final_records(&self) -> Option<Vec<&quorate_core::DecisionRecord>> {
        let log = self.final_log()?;
        Some(
            log.iter()
                .filter_map(|l| match l {
                    ExportLine::Record(r) => Some(r),
                    _ => None,
                })
                .collect(),
        )
    }

    /// Completed ok authorizations with a committed record.
    pub fn ok_authorizations(&self) -> impl Iterator<Item = &Op> {
        self.ops
            .iter()
            .filter(|o| o.f == F::Authorize && o.kind == Kind::Ok)
    }

    /// Windows during which nodes were cut off from a majority:
    /// (installed_ns, healed_ns, nodes).
    pub fn minority_windows(&self) -> Vec<(u64, u64, Vec<u64>)> {
        let mut open: Vec<(u64, Vec<u64>, String)> = Vec::new();
        let mut out = Vec::new();
        let end = self.events.last().map(|e| e.time_ns).unwrap_or(u64::MAX);
        for e in self.events.iter().filter(|e| e.process == NEMESIS_PROCESS) {
            let name = e.value["nemesis"].as_str().unwrap_or("").to_string();
            let action = e.value["action"].as_str().unwrap_or("");
            let minority: Vec<u64> = e.value["detail"]["minority"]
                .as_array()
                .map(|a| a.iter().filter_map(|v| v.as_u64()).collect())
                .unwrap_or_default();
            let paused: Vec<u64> = e.value["detail"]["paused"].as_u64().into_iter().collect();
            match action {
                "installed" => {
                    let nodes: Vec<u64> = minority.into_iter().chain(paused).collect();
                    if !nodes.is_empty() {
                        open.push((e.time_ns, nodes, name));
                    }
                }
                "healed" | "indeterminate" => {
                    if let Some(i) = open.iter().position(|o| o.2 == name) {
                        let (start, nodes, _) = open.remove(i);
                        out.push((start, e.time_ns, nodes));
                    }
                }
                _ => {}
            }
        }
        out.extend(open.into_iter().map(|(s, n, _)| (s, end, n)));
        out
    }
}

/// Runs every checker.
pub fn check_all(d: &RunData) -> Vec<CheckResult> {
    vec![
        log_agreement::check(d),
        fail_open::check(d),
        durability::check(d),
        realtime::check(d),
        determinism::check(d),
        policy_reads::check(d),
        recovery::check(d),
        tamper::check(d),
    ]
}

#[cfg(test)]
pub(crate) mod fixtures;
