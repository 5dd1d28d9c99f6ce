//! Hand-made histories for the checkers' own tests.

use quorate_core::export::{Activation, EXPORT_FORMAT, ExportHeader, ExportLine};
use quorate_core::{
    AuthorizeRequest, Decision, DecisionRecord, GENESIS_HASH, PolicyVersion, policy_content_hash,
};
use serde_json::{Value, json};

use super::RunData;
use crate::history::{Event, F, Kind, NEMESIS_PROCESS, Op};

const MS: u64 = 1_000_000;

fn policy(version: u64, log_index: u64) -> PolicyVersion {
    let text = crate::workload::POLICIES[(version as usize + 1) % 2].to_string();
    PolicyVersion {
        domain: crate::workload::DOMAIN.into(),
        version,
        hash: policy_content_hash(&text, None),
        policy_text: text,
        schema: None,
        log_index,
        published_at_ms: 0,
        signature: None,
    }
}

/// Five records (log indexes 3..=7), policy v1 active from log index 2 and
/// v2 from log index 9.
pub(crate) fn log() -> Vec<ExportLine> {
    let mut lines = vec![
        ExportLine::Policy(policy(1, 2)),
        ExportLine::Activation(Activation {
            domain: crate::workload::DOMAIN.into(),
            version: 1,
            log_index: 2,
        }),
    ];
    let mut prev = GENESIS_HASH;
    for i in 1..=5u64 {
        let r = DecisionRecord {
            index: i,
            log_index: i + 2,
            request: AuthorizeRequest {
                domain: crate::workload::DOMAIN.into(),
                request_id: format!("r{i}"),
                principal: "User::\"alice\"".into(),
                action: "Action::\"read\"".into(),
                resource: "Doc::\"1\"".into(),
                context: "{}".into(),
                entities: None,
                parent: None,
                trace_id: None,
            },
            decision: Decision::Allow,
            reason: None,
            determining_policies: vec!["policy0".into()],
            errors: vec![],
            policy_version: Some(1),
            policy_hash: Some(policy(1, 2).hash),
            timestamp_ms: 1000 + i,
            prev_hash: prev,
            hash: GENESIS_HASH,
            shadow: None,
        }
        .seal();
        prev = r.hash;
        lines.push(ExportLine::Record(r));
    }
    lines.push(ExportLine::Policy(policy(2, 9)));
    lines.push(ExportLine::Activation(Activation {
        domain: crate::workload::DOMAIN.into(),
        version: 2,
        log_index: 9,
    }));
    let head = match &lines[6] {
        ExportLine::Record(r) => r.hash,
        _ => GENESIS_HASH,
    };
    let mut out = vec![ExportLine::Header(ExportHeader {
        format: EXPORT_FORMAT.into(),
        cluster_id: "jepsen".into(),
        records: 5,
        head,
        node_id: 1,
    })];
    out.extend(lines);
    out
}

pub(crate) fn record_hash(log: &[ExportLine], index: u64) -> String {
    log.iter()
        .find_map(|l| match l {
            ExportLine::Record(r) if r.index == index => Some(r.hash.to_hex()),
            _ => None,
        })
        .unwrap_or_default()
}

#[allow(clippy::too_many_arguments)]
pub(crate) fn op(
    process: u64,
    f: F,
    node: u64,
    invoke_ms: u64,
    complete_ms: u64,
    kind: Kind,
    input: Value,
    output: Value,
) -> Op {
    Op {
        process,
        f,
        node,
        invoke_ns: invoke_ms * MS,
        complete_ns: Some(complete_ms * MS),
        kind,
        input,
        output,
    }
}

/// An ok ALLOW of record `index` as the client saw it.
pub(crate) fn allow(
    log: &[ExportLine],
    index: u64,
    node: u64,
    invoke_ms: u64,
    complete_ms: u64,
) -> Op {
    op(
        index,
        F::Authorize,
        node,
        invoke_ms,
        complete_ms,
        Kind::Ok,
        json!({"request_id": format!("r{index}")}),
        json!({"decision": "ALLOW", "index": index, "hash": record_hash(log, index)}),
    )
}

/// An honest run: three nodes with identical logs, five acknowledged
/// ALLOWs in order, the activation of v2 acknowledged, then a fresh read.
pub(crate) fn honest() -> RunData {
    let log = log();
    let ops = vec![
        allow(&log, 1, 1, 0, 10),
        allow(&log, 2, 2, 11, 20),
        allow(&log, 3, 3, 21, 30),
        allow(&log, 4, 1, 31, 40),
        allow(&log, 5, 2, 41, 50),
        op(
            9,
            F::Activate,
            1,
            51,
            60,
            Kind::Ok,
            json!({"version": 2}),
            json!({"version": 2, "log_index": 9}),
        ),
        op(
            10,
            F::ReadPolicy,
            2,
            61,
            70,
            Kind::Ok,
            json!({}),
            json!({"version": 2}),
        ),
    ];
    RunData {
        nodes: 3,
        events: vec![],
        ops,
        exports: (1..=3).map(|n| (n, Ok(log.clone()))).collect(),
        trust: None,
        recovery_ms: vec![(1, Some(100)), (2, Some(120)), (3, Some(90))],
    }
}

/// A nemesis window during which `node` was in a minority.
pub(crate) fn minority_window(node: u64, from_ms: u64, to_ms: u64) -> Vec<Event> {
    vec![
        Event {
            time_ns: from_ms * MS,
            process: NEMESIS_PROCESS,
            kind: Kind::Ok,
            f: F::Nemesis,
            node: 0,
            value: json!({"nemesis": "partition-leader", "action": "installed",
                          "detail": {"minority": [node]}}),
        },
        Event {
            time_ns: to_ms * MS,
            process: NEMESIS_PROCESS,
            kind: Kind::Ok,
            f: F::Nemesis,
            node: 0,
            value: json!({"nemesis": "partition-leader", "action": "healed", "detail": {}}),
        },
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkers::{
        Validity, check_all, durability, fail_open, log_agreement, policy_reads, realtime, recovery,
    };

    #[test]
    fn an_honest_history_is_valid() {
        let d = honest();
        for r in check_all(&d) {
            if r.name == "export-verifies" {
                assert_eq!(r.valid, Validity::Unknown, "no trust file in this fixture");
                continue;
            }
            assert_eq!(r.valid, Validity::Valid, "{}: {}", r.name, r.details);
        }
    }

    #[test]
    fn a_lost_write_is_invalid() {
        let mut d = honest();
        // The client was told record 6 committed; no node has it.
        let mut lost = allow(&log(), 5, 1, 80, 90);
        lost.output["index"] = json!(6);
        lost.output["hash"] = json!("ab".repeat(32));
        lost.input["request_id"] = json!("r6");
        d.ops.push(lost);
        assert_eq!(durability::check(&d).valid, Validity::Invalid);
        assert_eq!(log_agreement::check(&d).valid, Validity::Invalid);
    }

    #[test]
    fn a_fail_open_allow_is_invalid() {
        let mut d = honest();
        d.events = minority_window(3, 100, 200);
        // Node 3 was cut off from 100 ms to 200 ms and still said ALLOW.
        d.ops.push(allow(&log(), 3, 3, 120, 150));
        let r = fail_open::check(&d);
        assert_eq!(r.valid, Validity::Invalid, "{}", r.details);
        // The same answer outside the window is fine.
        let mut d = honest();
        d.events = minority_window(3, 100, 200);
        d.ops.push(allow(&log(), 3, 3, 90, 150));
        assert_eq!(fail_open::check(&d).valid, Validity::Valid);
        // An ALLOW the final log does not hold as ALLOW is invalid.
        let mut d = honest();
        d.ops[0].output["hash"] = json!("00".repeat(32));
        assert_eq!(fail_open::check(&d).valid, Validity::Invalid);
    }

    #[test]
    fn a_divergent_log_is_invalid() {
        let mut d = honest();
        let mut other = log();
        if let ExportLine::Record(r) = &mut other[5] {
            r.decision = Decision::Deny;
            *r = r.clone().seal();
        }
        d.exports[2] = (3, Ok(other));
        let r = log_agreement::check(&d);
        assert_eq!(r.valid, Validity::Invalid, "{}", r.details);
        assert_eq!(r.details["counterexamples"][0]["node"], 3);
    }

    #[test]
    fn a_stale_read_is_invalid() {
        let mut d = honest();
        // Invoked after the activation of v2 (log index 9) completed, yet
        // returns v1, which was active only before it.
        d.ops.push(op(
            11,
            F::ReadPolicy,
            3,
            65,
            75,
            Kind::Ok,
            json!({}),
            json!({"version": 1}),
        ));
        let r = policy_reads::check(&d);
        assert_eq!(r.valid, Validity::Invalid, "{}", r.details);
        // A read concurrent with the write may return either version.
        let mut d = honest();
        d.ops.push(op(
            11,
            F::ReadPolicy,
            3,
            55,
            75,
            Kind::Ok,
            json!({}),
            json!({"version": 1}),
        ));
        assert_eq!(policy_reads::check(&d).valid, Validity::Valid);
    }

    #[test]
    fn an_order_inversion_is_invalid() {
        let mut d = honest();
        // Record 2 was acknowledged (t=20) before record 1's request began.
        d.ops[0].invoke_ns = 25 * MS;
        d.ops[0].complete_ns = Some(28 * MS);
        let r = realtime::check(&d);
        assert_eq!(r.valid, Validity::Invalid, "{}", r.details);
    }

    #[test]
    fn a_duplicate_request_id_is_invalid() {
        let mut d = honest();
        let mut l = log();
        if let ExportLine::Record(r) = &mut l[5] {
            r.request.request_id = "r1".into();
        }
        d.exports = (1..=3).map(|n| (n, Ok(l.clone()))).collect();
        assert_eq!(durability::check(&d).valid, Validity::Invalid);
    }

    #[test]
    fn an_undetected_bit_flip_is_invalid() {
        let flip = |detected: bool| Event {
            time_ns: 10 * MS,
            process: NEMESIS_PROCESS,
            kind: Kind::Ok,
            f: F::Nemesis,
            node: 0,
            value: json!({"nemesis": "bitflip", "action": "installed",
                          "detail": {"victim": 2, "index": 3, "detected": detected}}),
        };
        let mut d = honest();
        d.events = vec![flip(true)];
        assert_eq!(crate::checkers::tamper::check(&d).valid, Validity::Valid);
        d.events = vec![flip(false)];
        assert_eq!(crate::checkers::tamper::check(&d).valid, Validity::Invalid);
    }

    #[test]
    fn slow_or_missing_recovery_is_invalid() {
        let mut d = honest();
        d.recovery_ms[1].1 = None;
        assert_eq!(recovery::check(&d).valid, Validity::Invalid);
        d.recovery_ms[1].1 = Some(recovery::BOUND_MS + 1);
        assert_eq!(recovery::check(&d).valid, Validity::Invalid);
    }
}
