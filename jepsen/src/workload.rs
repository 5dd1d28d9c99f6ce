//! The workload: concurrent clients sending Authorize with varied
//! principals and resources, policy publishes and activations that flip
//! outcomes, and linearizable policy reads. Every operation is recorded
//! invoke → ok / fail / info (`jepsen/CONTRACT.md`).

use std::time::Duration;

use quorate_core::DenyReason;
use quorate_proto::{CODE_METADATA_KEY, v1};
use rand::{Rng, SeedableRng};
use serde_json::json;
use tokio::sync::watch;

use crate::cluster::connect;
use crate::history::{F, Kind, Recorder};

/// The domain every operation uses.
pub const DOMAIN: &str = "jepsen";

/// Two policies that disagree: publishing or activating one flips who may
/// read, so a stale policy read or a decision under the wrong version shows.
pub const POLICIES: [&str; 2] = [
    "permit(principal, action == Action::\"read\", resource) when { principal in [User::\"alice\", User::\"bob\"] };",
    "permit(principal, action == Action::\"read\", resource) when { principal in [User::\"carol\", User::\"dave\"] };",
];

const USERS: [&str; 4] = ["alice", "bob", "carol", "dave"];
const ACTIONS: [&str; 2] = ["read", "write"];

/// How a gRPC error reads in the history: `fail` only when the operation
/// certainly did not happen.
fn error_kind(s: &tonic::Status) -> (Kind, serde_json::Value) {
    let code = s
        .metadata()
        .get(CODE_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    // Certainly not applied: refused by the node, or never reached it
    // (the connection could not be made, so nothing was sent).
    let certain = matches!(
        code.as_str(),
        "INVALID_ARGUMENT" | "INVALID_POLICY" | "NOT_FOUND" | "CONTAINED"
    ) || (code == "UNAVAILABLE" && s.message().contains("not the leader"))
        || (code.is_empty() && s.message().contains("tcp connect error"));
    let kind = if certain { Kind::Fail } else { Kind::Info };
    (
        kind,
        json!({"error": code, "grpc": format!("{:?}", s.code()), "message": s.message()}),
    )
}

/// One client: `ops_per_s` operations per second until `stop`.
pub async fn client(
    process: u64,
    addrs: Vec<String>,
    rec: Recorder,
    seed: u64,
    ops_per_s: f64,
    mut stop: watch::Receiver<bool>,
) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ (process.wrapping_mul(0x9e37_79b9)));
    let pause = Duration::from_secs_f64(1.0 / ops_per_s.max(0.1));
    let mut n = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        let node = rng.gen_range(0..addrs.len());
        let addr = &addrs[node];
        let node_no = node as u64 + 1;
        let r: f64 = rng.r#gen();
        n += 1;
        if r < 0.85 {
            let req = v1::AuthorizeRequest {
                domain: DOMAIN.into(),
                principal: format!("User::\"{}\"", USERS[rng.gen_range(0..USERS.len())]),
                action: format!("Action::\"{}\"", ACTIONS[rng.gen_range(0..ACTIONS.len())]),
                resource: format!("Doc::\"{}\"", rng.gen_range(0..8)),
                context_json: "{}".into(),
                request_id: format!("c{process}-{n}"),
                ..Default::default()
            };
            authorize(&rec, process, node_no, addr, req).await;
        } else if r < 0.90 {
            let text = POLICIES[rng.gen_range(0..2)];
            publish(&rec, process, node_no, addr, text).await;
        } else if r < 0.93 {
            let version = rng.gen_range(1..=4);
            activate(&rec, process, node_no, addr, version).await;
        } else {
            read_policy(&rec, process, node_no, addr).await;
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.changed() => {}
        }
    }
}

pub async fn authorize(rec: &Recorder, p: u64, node: u64, addr: &str, req: v1::AuthorizeRequest) {
    rec.record(
        p,
        Kind::Invoke,
        F::Authorize,
        node,
        json!({"request_id": req.request_id, "principal": req.principal, "action": req.action, "resource": req.resource}),
    );
    let r = match crate::cluster::connect_agent(addr).await {
        Ok(mut c) => c.authorize(req).await,
        Err(e) => Err(tonic::Status::unavailable(e.to_string())),
    };
    match r {
        Ok(resp) => {
            let a = resp.into_inner();
            let allow = a.decision == v1::Decision::Allow as i32;
            match &a.record {
                // Committed: an ALLOW or a DENY with its record.
                Some(rec_w) => rec.record(
                    p,
                    Kind::Ok,
                    F::Authorize,
                    node,
                    json!({"decision": if allow {"ALLOW"} else {"DENY"}, "reason": a.reason,
                           "index": rec_w.index, "hash": rec_w.hash, "served_by": a.served_by,
                           "replayed": a.replayed}),
                ),
                None => {
                    // Contained or unknown. ALLOW without a record would be a
                    // contract violation; record it as ok so checkers see it.
                    let reason = DenyReason::from_code(&a.reason);
                    let kind = if allow {
                        Kind::Ok
                    } else if reason.is_some_and(|r| r.certainly_not_committed_by_this_call()) {
                        Kind::Fail
                    } else {
                        Kind::Info
                    };
                    rec.record(
                        p,
                        kind,
                        F::Authorize,
                        node,
                        json!({"decision": if allow {"ALLOW"} else {"DENY"}, "reason": a.reason,
                               "message": a.message, "served_by": a.served_by}),
                    );
                }
            }
        }
        Err(s) => {
            let (kind, v) = error_kind(&s);
            rec.record(p, kind, F::Authorize, node, v);
        }
    }
}

/// Records the outcome of a write: `ok` with `ok_value`, or the error's kind.
fn record_write<T>(
    rec: &Recorder,
    p: u64,
    f: F,
    node: u64,
    r: Result<tonic::Response<T>, tonic::Status>,
    ok_value: impl FnOnce(T) -> serde_json::Value,
) {
    match r {
        Ok(resp) => rec.record(p, Kind::Ok, f, node, ok_value(resp.into_inner())),
        Err(s) => {
            let (kind, v) = error_kind(&s);
            rec.record(p, kind, f, node, v);
        }
    }
}

async fn client_for(
    addr: &str,
) -> Result<v1::governance_client::GovernanceClient<tonic::transport::Channel>, tonic::Status> {
    connect(addr)
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))
}

pub async fn publish(rec: &Recorder, p: u64, node: u64, addr: &str, text: &str) {
    rec.record(p, Kind::Invoke, F::Publish, node, json!({"policy": text}));
    let r = match client_for(addr).await {
        Ok(mut c) => {
            c.publish_policy(v1::PublishPolicyRequest {
                domain: DOMAIN.into(),
                policy_text: text.into(),
                activate: true,
                ..Default::default()
            })
            .await
        }
        Err(s) => Err(s),
    };
    record_write(
        rec,
        p,
        F::Publish,
        node,
        r,
        |r| json!({"version": r.version, "hash": r.hash, "log_index": r.log_index}),
    );
}

async fn activate(rec: &Recorder, p: u64, node: u64, addr: &str, version: u64) {
    rec.record(
        p,
        Kind::Invoke,
        F::Activate,
        node,
        json!({"version": version}),
    );
    let r = match client_for(addr).await {
        Ok(mut c) => {
            c.activate_policy(v1::ActivatePolicyRequest {
                domain: DOMAIN.into(),
                version,
            })
            .await
        }
        Err(s) => Err(s),
    };
    record_write(
        rec,
        p,
        F::Activate,
        node,
        r,
        |r| json!({"version": r.version, "log_index": r.log_index}),
    );
}

async fn read_policy(rec: &Recorder, p: u64, node: u64, addr: &str) {
    rec.record(p, Kind::Invoke, F::ReadPolicy, node, json!({}));
    let r = match client_for(addr).await {
        Ok(mut c) => {
            c.get_policy(v1::GetPolicyRequest {
                domain: DOMAIN.into(),
                version: 0,
            })
            .await
        }
        Err(s) => Err(s),
    };
    match r {
        Ok(resp) => {
            let v = resp.into_inner();
            rec.record(
                p,
                Kind::Ok,
                F::ReadPolicy,
                node,
                json!({"version": v.version, "log_index": v.log_index}),
            );
        }
        // Linearizable "no active version yet" is a real read result.
        Err(s) if s.code() == tonic::Code::NotFound => {
            rec.record(p, Kind::Ok, F::ReadPolicy, node, json!({"version": 0}));
        }
        Err(s) => {
            let (kind, v) = error_kind(&s);
            // A failed read changes nothing either way.
            let kind = if kind == Kind::Info { Kind::Fail } else { kind };
            rec.record(p, kind, F::ReadPolicy, node, v);
        }
    }
}
