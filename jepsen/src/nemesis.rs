//! Nemeses: faults switched on and off on a jittered schedule. Each action
//! is recorded in the history as `installed`, `skipped` (this environment
//! cannot do it) or `indeterminate` (it was attempted and failed), with the
//! nodes it affected, so checkers know which nodes were cut off when.

use std::time::Duration;

use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::{Mutex, watch};

use crate::cluster::{Cluster, find_leader};
use crate::history::{F, Kind, NEMESIS_PROCESS, Recorder};

/// Every nemesis the harness knows, by the name `--nemesis` takes.
pub const ALL: [&str; 15] = [
    "partition-halves",
    "partition-leader",
    "partition-ring",
    "partition-bridge",
    "kill-one",
    "kill-minority",
    "kill-leader",
    "kill-all",
    "pause",
    "loss",
    "bitflip",
    "wipe",
    "delay",
    "duplicate",
    "membership",
];

/// Expands `--nemesis` groups (`partition`, `kill`, `all`, `none`).
pub fn expand(list: &str) -> Vec<String> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let add: Vec<&str> = match item {
            "none" => vec![],
            "all" => ALL.to_vec(),
            "partition" => ALL
                .iter()
                .copied()
                .filter(|n| n.starts_with("partition"))
                .collect(),
            "kill" => ALL
                .iter()
                .copied()
                .filter(|n| n.starts_with("kill"))
                .collect(),
            other => vec![other],
        };
        for a in add {
            if !out.iter().any(|o| o == a) {
                out.push(a.to_string());
            }
        }
    }
    out
}

/// What an installed fault did, to undo it and to tell the checkers.
#[derive(Debug, Clone, Default)]
struct Active {
    name: String,
    /// Nodes cut off from a majority while this fault is on.
    minority: Vec<usize>,
    killed: Vec<usize>,
    paused: Vec<usize>,
    /// A node whose store was damaged: repaired, then restarted, at heal.
    tampered: Option<usize>,
    net: bool,
    /// The shims' stats when the fault went on (delay, duplicate).
    shim: Option<crate::shim::Stats>,
    /// A voter removed from the membership: re-added and promoted at heal.
    removed: Option<usize>,
    /// A follower whose database was deleted and which restarted empty,
    /// with the decision count the cluster had then: at heal it must hold
    /// at least that many, repaired by the leader.
    wiped: Option<(usize, u64)>,
}

fn record(rec: &Recorder, kind: &str, name: &str, detail: serde_json::Value) {
    let k = if kind == "indeterminate" {
        Kind::Info
    } else {
        Kind::Ok
    };
    rec.record(
        NEMESIS_PROCESS,
        k,
        F::Nemesis,
        0,
        json!({"nemesis": name, "action": kind, "detail": detail}),
    );
}

/// Runs the schedule until `stop`: healthy for a jittered `interval`, then
/// one fault from `names` for a jittered `interval`, healed, and so on.
pub async fn run(
    cluster: &Mutex<Cluster>,
    names: &[String],
    interval: Duration,
    seed: u64,
    rec: &Recorder,
    mut stop: watch::Receiver<bool>,
) {
    if names.is_empty() {
        return;
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    loop {
        let jitter = |rng: &mut rand::rngs::StdRng| interval.mul_f64(rng.gen_range(0.7..1.3));
        tokio::select! {
            _ = tokio::time::sleep(jitter(&mut rng)) => {}
            _ = stop.changed() => return,
        }
        let Some(name) = names.choose(&mut rng).cloned() else {
            return;
        };
        let active = install(cluster, &name, &mut rng, rec).await;
        let on = jitter(&mut rng);
        let stopped = tokio::select! {
            _ = tokio::time::sleep(on) => false,
            _ = stop.changed() => true,
        };
        if let Some(a) = active {
            heal(cluster, &a, rec).await;
        }
        if stopped {
            return;
        }
    }
}

async fn install(
    cluster: &Mutex<Cluster>,
    name: &str,
    rng: &mut rand::rngs::StdRng,
    rec: &Recorder,
) -> Option<Active> {
    let mut c = cluster.lock().await;
    let n = c.nodes.len();
    let all: Vec<usize> = (1..=n).collect();
    let addrs: Vec<String> = c.nodes.iter().map(|x| x.addr.clone()).collect();
    let leader = find_leader(&addrs).await;
    let mut a = Active {
        name: name.to_string(),
        ..Default::default()
    };
    let result: Result<serde_json::Value, String> = match name {
        "partition-halves" | "partition-leader" | "partition-bridge" | "partition-ring" => {
            let groups: Vec<Vec<usize>> = match name {
                "partition-halves" => {
                    let mut s = all.clone();
                    s.shuffle(rng);
                    let k = n / 2;
                    vec![s[..k].to_vec(), s[k..].to_vec()]
                }
                "partition-leader" => match leader {
                    Some(l) => vec![vec![l], all.iter().copied().filter(|x| *x != l).collect()],
                    None => return skip(rec, name, "no leader to isolate"),
                },
                "partition-bridge" if n >= 5 => {
                    // Two halves that each see a bridge node in the middle.
                    let mut s = all.clone();
                    s.shuffle(rng);
                    let (b, rest) = (s[0], &s[1..]);
                    let h = rest.len() / 2;
                    let mut g1 = rest[..h].to_vec();
                    let mut g2 = rest[h..].to_vec();
                    g1.push(b);
                    g2.push(b);
                    return bridge(&mut c, rec, name, g1, g2, a);
                }
                "partition-ring" if n >= 5 => return ring(&mut c, rec, name, a),
                _ => return skip(rec, name, "needs 5 nodes"),
            };
            a.net = true;
            a.minority = groups
                .iter()
                .filter(|g| g.len() * 2 <= n)
                .flatten()
                .copied()
                .collect();
            c.net
                .partition(&groups)
                .map(|()| json!({"groups": groups, "minority": a.minority}))
                .map_err(|e| e.to_string())
        }
        "kill-one" | "kill-minority" | "kill-leader" | "kill-all" => {
            let mut s = all.clone();
            s.shuffle(rng);
            let victims: Vec<usize> = match name {
                "kill-one" => s[..1].to_vec(),
                "kill-minority" => s[..(n - 1) / 2].to_vec(),
                "kill-leader" => match leader {
                    Some(l) => vec![l],
                    None => return skip(rec, name, "no leader to kill"),
                },
                _ => all.clone(),
            };
            for &v in &victims {
                c.kill9(v);
            }
            a.killed = victims.clone();
            Ok(json!({"killed": victims}))
        }
        "pause" => {
            let v = leader.unwrap_or_else(|| rng.gen_range(1..=n));
            if c.pause(v) {
                a.paused = vec![v];
                a.minority = vec![v];
                Ok(json!({"paused": v}))
            } else {
                Err(format!("could not pause node {v}"))
            }
        }
        "bitflip" => {
            // A follower, so the cluster keeps its leader while one replica
            // is damaged.
            let mut candidates: Vec<usize> =
                all.iter().copied().filter(|n| Some(*n) != leader).collect();
            candidates.shuffle(rng);
            let Some(&victim) = candidates.first() else {
                return skip(rec, name, "no follower");
            };
            c.kill9(victim);
            let db = c.nodes[victim - 1].data_dir.join("db");
            match crate::tamper::flip_record_bit(&db, rng) {
                Ok(Some(index)) => {
                    a.tampered = Some(victim);
                    // Until repaired, the victim must not answer ALLOW.
                    a.minority = vec![victim];
                    let spawned = c.spawn(victim).map_err(|e| e.to_string());
                    let addr = c.nodes[victim - 1].addr.clone();
                    drop(c);
                    let seen = match spawned {
                        Ok(()) => wait_contained(&addr).await,
                        Err(e) => Some(format!("restart failed: {e}")),
                    };
                    let detected = seen
                        .as_deref()
                        .is_some_and(|r| r.starts_with("INTEGRITY_FAILURE"));
                    let detail = json!({"victim": victim, "index": index, "minority": [victim],
                        "detected": detected, "status": seen});
                    record(rec, "installed", name, detail);
                    return Some(a);
                }
                Ok(None) => {
                    let _ = c.spawn(victim);
                    return skip(rec, name, "no records yet");
                }
                Err(e) => {
                    let _ = c.spawn(victim);
                    Err(e.to_string())
                }
            }
        }
        // A follower loses its database (a replaced disk; the key kept) and
        // restarts empty. It must not start a cluster of its own; the
        // leader re-sends it the log. It is not cut off: once it has the
        // membership it forwards, and what it answers was committed and
        // attested by the quorum, which the other checkers hold it to.
        "wipe" => {
            let mut candidates: Vec<usize> =
                all.iter().copied().filter(|n| Some(*n) != leader).collect();
            candidates.shuffle(rng);
            let Some(&victim) = candidates.first() else {
                return skip(rec, name, "no follower");
            };
            let Some(l) = leader else {
                return skip(rec, name, "no leader to repair the wiped node");
            };
            let before = decision_count(&addrs[l - 1]).await;
            c.kill9(victim);
            let db = c.nodes[victim - 1].data_dir.join("db");
            let removed = std::fs::remove_dir_all(&db);
            let spawned = c.spawn(victim);
            match (removed, spawned, before) {
                (Ok(()), Ok(()), Some(count)) => {
                    a.wiped = Some((victim, count));
                    Ok(json!({"wiped": victim, "decisions_before": count}))
                }
                (Err(e), _, _) => Err(format!("could not delete {}: {e}", db.display())),
                (_, Err(e), _) => Err(format!("restart failed: {e}")),
                (_, _, None) => Err("the leader did not report its decision count".into()),
            }
        }
        "loss" => {
            a.net = true;
            c.net
                .loss(0.2)
                .map(|()| json!({"probability": 0.2}))
                .map_err(|e| e.to_string())
        }
        // This kernel has no netem: delay (with the reordering it causes)
        // and duplication are done to whole RPCs by the message shim.
        "delay" | "duplicate" => {
            if !c.has_shims() {
                return skip(rec, name, "the run was started without message shims");
            }
            let rules = if name == "delay" {
                crate::shim::Rules {
                    delay_ms: rng.gen_range(50..=300),
                    duplicate: 0.0,
                }
            } else {
                crate::shim::Rules {
                    delay_ms: 0,
                    duplicate: 0.3,
                }
            };
            a.shim = Some(c.shim_stats());
            c.shim_rules(rules)
                .map(|()| json!({"rules": rules}))
                .map_err(|e| e.to_string())
        }
        // A follower voter leaves the membership (a Raft membership change
        // through the leader); at heal it rejoins as a learner and is
        // promoted back. It is not cut off: until it learns of its removal
        // it may still forward requests, and what it answers then was
        // committed by the quorum (the other checkers hold it to that);
        // once it knows, it contains.
        "membership" => {
            let Some(l) = leader else {
                return skip(rec, name, "no leader to change the membership through");
            };
            let mut others: Vec<usize> = all.iter().copied().filter(|x| *x != l).collect();
            others.shuffle(rng);
            let Some(&v) = others.first() else {
                return skip(rec, name, "no follower");
            };
            let change = crate::cluster::remove_member(&addrs[l - 1], v).await;
            match change {
                Ok(log_index) => {
                    a.removed = Some(v);
                    Ok(json!({"removed": v, "log_index": log_index}))
                }
                Err(e) => Err(e.to_string()),
            }
        }
        other => return skip(rec, other, "unknown nemesis"),
    };
    match result {
        Ok(detail) => {
            record(rec, "installed", name, detail);
            Some(a)
        }
        Err(e) => {
            record(rec, "indeterminate", name, json!({"error": e}));
            Some(a)
        }
    }
}

fn skip(rec: &Recorder, name: &str, why: &str) -> Option<Active> {
    record(rec, "skipped", name, json!({"why": why}));
    None
}

fn bridge(
    c: &mut Cluster,
    rec: &Recorder,
    name: &str,
    g1: Vec<usize>,
    g2: Vec<usize>,
    mut a: Active,
) -> Option<Active> {
    a.net = true;
    // Nobody is in a minority by reachability, but neither half has a
    // majority on its own; the bridge node has.
    let groups = vec![g1, g2];
    match c.net.partition(&groups) {
        Ok(()) => record(rec, "installed", name, json!({"groups": groups})),
        Err(e) => record(rec, "indeterminate", name, json!({"error": e.to_string()})),
    }
    Some(a)
}

fn ring(c: &mut Cluster, rec: &Recorder, name: &str, mut a: Active) -> Option<Active> {
    let n = c.nodes.len();
    a.net = true;
    // Majorities ring: node i sees only its two neighbours, so each node
    // has a majority of 5 (itself and two) but no two agree on which.
    let views: Vec<(usize, Vec<usize>)> = (1..=n)
        .map(|i| (i, vec![(i + n - 2) % n + 1, i % n + 1]))
        .collect();
    match c.net.views(&views) {
        Ok(()) => record(rec, "installed", name, json!({"views": views})),
        Err(e) => record(rec, "indeterminate", name, json!({"error": e.to_string()})),
    }
    Some(a)
}

async fn heal(cluster: &Mutex<Cluster>, a: &Active, rec: &Recorder) {
    let mut c = cluster.lock().await;
    let mut errors = Vec::new();
    if a.net
        && let Err(e) = c.net.heal()
    {
        errors.push(e.to_string());
    }
    for &p in &a.paused {
        c.resume(p);
    }
    for &k in &a.killed {
        if let Err(e) = c.spawn(k) {
            errors.push(e.to_string());
        }
    }
    let mut effect = serde_json::Value::Null;
    if let Some(v) = a.removed {
        let addrs: Vec<String> = c.nodes.iter().map(|x| x.addr.clone()).collect();
        match crate::cluster::rejoin_member(&addrs, v).await {
            Ok(log_index) => effect = json!({"rejoined": v, "log_index": log_index}),
            Err(e) => errors.push(format!("node {v} did not rejoin: {e}")),
        }
    }
    if let Some(before) = a.shim {
        if let Err(e) = c.shim_rules(crate::shim::Rules::default()) {
            errors.push(e.to_string());
        }
        // The shims write their stats every 100 ms.
        tokio::time::sleep(Duration::from_millis(250)).await;
        let after = c.shim_stats();
        let (delayed, duplicated) = (
            after.delayed - before.delayed,
            after.duplicated - before.duplicated,
        );
        effect = json!({"delayed": delayed, "duplicated": duplicated,
            "forwarded": after.forwarded - before.forwarded});
        if delayed + duplicated == 0 {
            errors.push("the shims saw no peer request while the fault was on".into());
        }
    }
    if let Some((v, count)) = a.wiped {
        let addr = c.nodes[v - 1].addr.clone();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut held = None;
        while tokio::time::Instant::now() < deadline {
            held = decision_count(&addr).await;
            if held.is_some_and(|h| h >= count) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        effect = json!({"victim": v, "decisions_before": count, "decisions_held": held});
        if held.is_none_or(|h| h < count) {
            errors.push(format!(
                "wiped node {v} holds {held:?} decisions 20 s on, not the {count} the cluster had"
            ));
        }
    }
    let mut repaired = serde_json::Value::Null;
    if let Some(v) = a.tampered {
        c.kill9(v);
        match c.repair(v) {
            Ok(out) => repaired = out,
            Err(e) => errors.push(format!("repair of node {v}: {e}")),
        }
        if let Err(e) = c.spawn(v) {
            errors.push(e.to_string());
        }
    }
    if errors.is_empty() {
        record(
            rec,
            "healed",
            &a.name,
            json!({"minority": a.minority, "repair": repaired, "effect": effect}),
        );
    } else {
        record(
            rec,
            "indeterminate",
            &a.name,
            json!({"heal_errors": errors, "effect": effect}),
        );
    }
}

/// A node's decision count from its status, if it answers.
async fn decision_count(addr: &str) -> Option<u64> {
    let mut c = crate::cluster::connect(addr).await.ok()?;
    let s = c.status(quorate_proto::v1::StatusRequest {}).await.ok()?;
    Some(s.into_inner().decision_count)
}

/// Polls a restarted node's status for up to 10 s; returns its containment
/// reason and message once it reports one.
async fn wait_contained(addr: &str) -> Option<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if let Ok(mut c) = crate::cluster::connect(addr).await
            && let Ok(s) = c.status(quorate_proto::v1::StatusRequest {}).await
        {
            let s = s.into_inner();
            if !s.containment_reason.is_empty() && s.containment_reason != "NO_QUORUM" {
                return Some(format!(
                    "{}: {}",
                    s.containment_reason, s.containment_message
                ));
            }
            if s.quorate {
                return Some("QUORATE: served without noticing".into());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

/// Heals everything: network rules, paused and dead nodes.
pub async fn heal_all(cluster: &Mutex<Cluster>) -> anyhow::Result<()> {
    let mut c = cluster.lock().await;
    c.net.heal()?;
    if c.has_shims() {
        c.shim_rules(crate::shim::Rules::default())?;
    }
    for i in 1..=c.nodes.len() {
        c.resume(i);
        if !c.is_running(i) {
            c.spawn(i)?;
        }
    }
    // A membership fault whose own heal failed: every node a voter again.
    let addrs: Vec<String> = c.nodes.iter().map(|x| x.addr.clone()).collect();
    drop(c);
    for i in 1..=addrs.len() {
        let voter = match crate::cluster::find_leader(&addrs).await {
            Some(l) => match crate::cluster::connect(&addrs[l - 1]).await {
                Ok(mut cl) => cl
                    .status(quorate_proto::v1::StatusRequest {})
                    .await
                    .map(|s| {
                        s.into_inner()
                            .members
                            .iter()
                            .any(|m| m.node_id == i as u64 && m.voter)
                    })
                    .unwrap_or(true),
                Err(_) => true,
            },
            None => true,
        };
        if !voter {
            crate::cluster::rejoin_member(&addrs, i).await?;
        }
    }
    Ok(())
}
