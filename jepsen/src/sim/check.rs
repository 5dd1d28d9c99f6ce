//! The invariants a run is judged by, over the client history and every
//! replica's final disk. Each check counts what it examined, so a report
//! says how much was checked, not only that nothing failed.

use std::collections::BTreeMap;

use quorate_core::proof::{verify_cosignatures, verify_receipt_inclusion};
use quorate_core::{Decision, DecisionRecord, Digest, PublicKey};

use super::disk::SmImage;
use super::node::Answer;
use super::store::lock;
use super::{Cluster, Op, SimConfig, SimReport, fnv};

pub(super) fn empty_report(seed: u64, config: SimConfig) -> SimReport {
    SimReport {
        seed,
        config,
        requests: 0,
        allowed: 0,
        denied: BTreeMap::new(),
        policy_ops: 0,
        faults: BTreeMap::new(),
        checks: BTreeMap::new(),
        messages_delivered: 0,
        messages_dropped: 0,
        messages_duplicated: 0,
        terms_seen: 0,
        final_log_len: 0,
        final_records: 0,
        violations: Vec::new(),
        schedule: Vec::new(),
        state_digest: 0,
        digest: 0,
    }
}

/// Computes the report's digest over everything else in it.
pub(super) fn seal(r: &mut SimReport) {
    r.digest = 0;
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    fnv(&mut h, &serde_json::to_vec(r).unwrap_or_default());
    r.digest = h;
}

struct Replica {
    id: u64,
    sm: SmImage,
    /// Its stored state is known damaged (detected at start-up, or an apply
    /// failed on it): its records are not evidence of the history.
    damaged: bool,
    running: bool,
    /// What it was doing at the end, for a report.
    state: String,
}

fn tally(checks: &mut BTreeMap<String, u64>, name: &str, n: u64) {
    *checks.entry(name.to_string()).or_default() += n;
}

pub(super) fn judge(
    c: &Cluster,
    seed: u64,
    history: &[Op],
    mut checks: BTreeMap<String, u64>,
    faults: BTreeMap<String, usize>,
    schedule: Vec<String>,
) -> SimReport {
    let mut v: Vec<String> =
        std::mem::take(&mut *c.violations.lock().unwrap_or_else(|p| p.into_inner()));
    let wrong = c.cfg.wrong_evaluator;
    let replicas: Vec<Replica> = c
        .ids
        .iter()
        .map(|id| {
            let inst = c.net.instance(*id);
            let damaged = inst
                .as_ref()
                .is_none_or(|i| i.integrity_failure().is_some());
            let running = inst.as_ref().is_some_and(|i| {
                use openraft::async_runtime::WatchReceiver;
                i.raft.metrics().borrow_watched().running_state.is_ok()
            });
            let state = inst.as_ref().map_or("down".to_string(), |i| {
                use openraft::async_runtime::WatchReceiver;
                let m = i.raft.metrics().borrow_watched().clone();
                format!(
                    "{:?} term {}, last log {:?}, applied {:?}, snapshot {:?}, contained {:?}",
                    m.state,
                    m.current_term,
                    m.last_log_index,
                    m.last_applied.map(|l| l.index),
                    m.snapshot.map(|l| l.index),
                    i.containment()
                )
            });
            let sm = c
                .disks
                .get(id)
                .map(|d| lock(d).volatile.sm.clone())
                .unwrap_or_default();
            Replica {
                id: *id,
                sm,
                damaged,
                running,
                state,
            }
        })
        .collect();

    // One history: every applied log is a prefix of the longest, and every
    // running replica converged to it after the heal.
    let longest = replicas
        .iter()
        .map(|r| &r.sm.applied)
        .max_by_key(|l| l.len())
        .cloned()
        .unwrap_or_default();
    let states: Vec<String> = replicas
        .iter()
        .map(|r| format!("node {}: {}", r.id, r.state))
        .collect();
    // Liveness is owed only while a majority is healthy: with more damaged
    // or wrong replicas than a minority (nothing here repairs them, as an
    // operator would), only safety is judged.
    let faulty = replicas
        .iter()
        .filter(|r| r.damaged || !r.running || Some(r.id) == wrong)
        .count();
    let live = faulty <= (replicas.len() - 1) / 2;
    if live {
        tally(
            &mut checks,
            "converged after the heal (runs with a healthy majority)",
            1,
        );
    }
    for r in &replicas {
        tally(
            &mut checks,
            "log matching (entries compared)",
            r.sm.applied.len() as u64,
        );
        if longest[..r.sm.applied.len()] != r.sm.applied[..] {
            v.push(format!(
                "node {}'s applied log is not a prefix of the longest (log matching)",
                r.id
            ));
        }
        if live && r.running && r.sm.applied.len() != longest.len() {
            v.push(format!(
                "node {} did not converge: {} of {} entries applied; {}",
                r.id,
                r.sm.applied.len(),
                longest.len(),
                states.join("; ")
            ));
        }
    }

    // Identical roots at every size on every replica that evaluates
    // honestly (the wrong one is judged below).
    let mut roots: BTreeMap<u64, (Digest, u64)> = BTreeMap::new();
    for r in replicas.iter().filter(|r| Some(r.id) != wrong) {
        for (size, root) in &r.sm.roots {
            tally(
                &mut checks,
                "identical roots at each size (roots compared)",
                1,
            );
            match roots.get(size) {
                Some((other, by)) if other != root => v.push(format!(
                    "two histories: nodes {by} and {} computed different roots at size {size}",
                    r.id
                )),
                Some(_) => {}
                None => {
                    roots.insert(*size, (*root, r.id));
                }
            }
        }
    }
    // Identical records on every honest, undamaged replica.
    let witnesses: Vec<&Replica> = replicas
        .iter()
        .filter(|r| Some(r.id) != wrong && !r.damaged)
        .collect();
    let mut records: BTreeMap<u64, (&Vec<u8>, u64)> = BTreeMap::new();
    for r in &witnesses {
        for (index, bytes) in &r.sm.decision_bytes {
            tally(&mut checks, "identical records (records compared)", 1);
            match records.get(index) {
                Some((other, by)) if *other != bytes => v.push(format!(
                    "nodes {by} and {} hold different records at index {index}",
                    r.id
                )),
                Some(_) => {}
                None => {
                    records.insert(*index, (bytes, r.id));
                }
            }
        }
    }
    let committed = |index: u64| -> Option<DecisionRecord> {
        records
            .get(&index)
            .and_then(|(b, _)| quorate_core::codec::decode::<DecisionRecord>(b).ok())
    };

    // Every acknowledged decision survives; every ALLOW was committed and
    // attested by a majority of the voters it names, under the one
    // history's root.
    let mut allowed = 0;
    let mut denied: BTreeMap<String, usize> = BTreeMap::new();
    for op in history {
        let record = match &op.answer {
            Answer::Allow {
                record,
                receipt,
                voters,
            } => {
                allowed += 1;
                tally(
                    &mut checks,
                    "ALLOW attested by a majority (answers checked)",
                    1,
                );
                let id = &op.request.request_id;
                match receipt {
                    None => v.push(format!("ALLOW of {id} with no attestation at all")),
                    Some(receipt) => {
                        let cp = &receipt.checkpoint;
                        let keys: Vec<(u64, Option<&PublicKey>)> =
                            voters.iter().map(|id| (*id, c.keys.get(id))).collect();
                        if let Err(e) = verify_cosignatures(cp, &keys) {
                            v.push(format!(
                                "ALLOW of {id} without a majority's attestation: {e}"
                            ));
                        }
                        if let Err(e) = verify_receipt_inclusion(receipt) {
                            v.push(format!(
                                "ALLOW of {id} with a receipt that does not verify: {e}"
                            ));
                        }
                        if receipt.record != **record {
                            v.push(format!("ALLOW of {id} whose receipt is for another record"));
                        }
                        match roots.get(&cp.size) {
                            Some((root, _)) if *root == cp.root => {}
                            _ => v.push(format!(
                                "ALLOW of {id} under root {} at size {}, which is not the history's",
                                cp.root, cp.size
                            )),
                        }
                    }
                }
                if let Some(rec) = committed(record.index)
                    && rec.decision != Decision::Allow
                {
                    v.push(format!(
                        "ALLOW of {id} answered, but the history decided DENY at record {}",
                        rec.index
                    ));
                }
                Some((**record).clone())
            }
            Answer::Deny {
                reason,
                record,
                decided_by,
                ..
            } => {
                *denied.entry(reason.code().to_string()).or_default() += 1;
                // A DENY is answered at commit, unattested: the wrong
                // evaluator's DENYs are its own records, not the history's
                // (and refusing is always safe).
                if Some(*decided_by) == wrong {
                    continue;
                }
                record.as_deref().cloned()
            }
        };
        let Some(record) = record else { continue };
        tally(
            &mut checks,
            "acknowledged decisions survive (records checked)",
            1,
        );
        match committed(record.index) {
            Some(rec) if rec == record => {}
            Some(_) => v.push(format!(
                "acknowledged decision {} at record {} was replaced in the history",
                op.request.request_id, record.index
            )),
            None if witnesses.is_empty() => {}
            None => v.push(format!(
                "acknowledged decision {} at record {} is missing from the history",
                op.request.request_id, record.index
            )),
        }
    }

    // Real-time order: a decision acknowledged before another was first
    // asked for is earlier in the log. Per request id (a retry answers the
    // first decision): when it was first asked, when a decision for it was
    // first acknowledged, and its record.
    let mut per_id: BTreeMap<&str, (u64, Option<u64>, u64)> = BTreeMap::new();
    for op in history {
        let index = match &op.answer {
            Answer::Allow { record, .. } => Some(record.index),
            Answer::Deny { record, .. } => record.as_ref().map(|r| r.index),
        };
        let e = per_id
            .entry(op.request.request_id.as_str())
            .or_insert((op.issued_us, None, 0));
        e.0 = e.0.min(op.issued_us);
        if let Some(i) = index {
            e.1 = Some(e.1.map_or(op.answered_us, |a| a.min(op.answered_us)));
            e.2 = i;
        }
    }
    let mut by_answer: Vec<(u64, u64, &str)> = per_id
        .iter()
        .filter_map(|(id, (_, answered, index))| answered.map(|a| (a, *index, *id)))
        .collect();
    by_answer.sort();
    let mut by_issue: Vec<(u64, u64, &str)> = per_id
        .iter()
        .filter(|(_, (_, answered, _))| answered.is_some())
        .map(|(id, (issued, _, index))| (*issued, *index, *id))
        .collect();
    by_issue.sort();
    let (mut k, mut latest) = (0usize, None::<(u64, &str)>);
    for (issued, index, id) in &by_issue {
        while k < by_answer.len() && by_answer[k].0 < *issued {
            let (_, i, rid) = by_answer[k];
            if latest.is_none_or(|(l, _)| i > l) {
                latest = Some((i, rid));
            }
            k += 1;
        }
        tally(&mut checks, "real-time order (decisions checked)", 1);
        if let Some((l, rid)) = latest
            && l >= *index
        {
            v.push(format!(
                "real-time order: {id} was first asked for after {rid} was acknowledged at record {l}, yet it is record {index}"
            ));
        }
    }

    // Final checkpoints are the history's, on every replica: the wrong
    // replica's root is never final.
    for r in &replicas {
        for (size, cp) in &r.sm.rows.checkpoints {
            if !cp.is_final() {
                continue;
            }
            tally(&mut checks, "final checkpoints on the history's roots", 1);
            if roots
                .get(size)
                .is_some_and(|(root, _)| *root != cp.checkpoint.root)
            {
                v.push(format!(
                    "node {} holds a final checkpoint at size {size} whose root is not the history's",
                    r.id
                ));
            }
        }
    }
    // The wrong replica is detected: once it applied a checkpoint entry at
    // or beyond its first wrong root, it holds divergence evidence.
    if let Some(w) = wrong.and_then(|w| replicas.iter().find(|r| r.id == w)) {
        let first_bad =
            w.sm.roots
                .iter()
                .find(|(size, root)| roots.get(size).is_some_and(|(h, _)| h != *root))
                .map(|(size, _)| *size);
        tally(&mut checks, "wrong evaluator detected", 1);
        if let Some(bad) = first_bad
            && w.sm.checkpoint_entries_up_to >= bad
            && w.sm.gov.divergence.is_none()
            && !w.damaged
        {
            v.push(format!(
                "node {} evaluated wrongly from size {bad}, applied a checkpoint up to {}, and holds no divergence evidence",
                w.id, w.sm.checkpoint_entries_up_to
            ));
        }
    }
    // Every damaged stored record was detected when its node started.
    for d in c.damage.lock().unwrap_or_else(|p| p.into_inner()).iter() {
        tally(&mut checks, "damaged records detected at start-up", 1);
        if d.detected == Some(false) {
            v.push(format!(
                "{} of record {} on node {} went undetected at start-up",
                d.kind, d.record, d.node
            ));
        }
    }

    let mut state = 0xcbf2_9ce4_8422_2325u64;
    for r in &replicas {
        for (i, d) in &r.sm.applied {
            fnv(&mut state, &i.to_le_bytes());
            fnv(&mut state, &d.to_le_bytes());
        }
        for (s, root) in &r.sm.roots {
            fnv(&mut state, &s.to_le_bytes());
            fnv(&mut state, &root.0);
        }
    }
    let net = c.net.lock();
    v.dedup();
    SimReport {
        seed,
        config: c.cfg,
        requests: history.len(),
        allowed,
        denied,
        policy_ops: 0,
        faults,
        checks,
        messages_delivered: net.delivered,
        messages_dropped: net.dropped,
        messages_duplicated: net.duplicated,
        terms_seen: 0,
        final_log_len: longest.len(),
        final_records: records.keys().next_back().copied().unwrap_or(0),
        violations: v,
        schedule,
        state_digest: state,
        digest: 0,
    }
}
