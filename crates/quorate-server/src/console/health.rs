//! The health dashboard's data: every member's own report, gathered over
//! the cluster's node channels, and this node's one-a-second timeline.

use std::time::Duration;

use axum::extract::{ConnectInfo, State};
use axum::http::HeaderMap;
use axum::response::Json;
use quorate_proto::v1;

use super::{HttpError, admit, caller};
use crate::http::HttpPeer;
use crate::node::{Access, Node, NodeStatus};

/// How long a member has to answer before it is shown unreachable.
const MEMBER_TIMEOUT: Duration = Duration::from_secs(1);
/// Samples kept: ten minutes.
const TIMELINE_SAMPLES: usize = 600;

/// One second of this node's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub(crate) struct Sample {
    pub t_ms: u64,
    /// Applied decision count.
    pub decisions: u64,
    /// The containment reason code, if contained.
    pub contained: Option<&'static str>,
}

impl Node {
    /// Appends a timeline sample (the gauges task calls it every second).
    pub(crate) fn sample_timeline(&self) {
        let s = Sample {
            t_ms: crate::node::now_ms(),
            decisions: self.head().count,
            contained: self.containment().map(|(r, _)| r.code()),
        };
        let mut t = self
            .inner
            .timeline
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        t.push_back(s);
        while t.len() > TIMELINE_SAMPLES {
            t.pop_front();
        }
    }
}

/// Health is public when configured; otherwise any identity of the cluster
/// may see it (as `Status` over gRPC).
fn admit_health(node: &Node, peer: &HttpPeer, headers: &HeaderMap) -> Result<(), HttpError> {
    let c = caller(node, peer, headers)?;
    if node.config().console.public_health {
        return Ok(());
    }
    admit(node, &c, "Status", Access::Read)
}

pub(super) async fn timeline(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, HttpError> {
    admit_health(&node, &peer, &headers)?;
    let samples: Vec<Sample> = node
        .inner
        .timeline
        .lock()
        .map(|t| t.iter().copied().collect())
        .unwrap_or_default();
    Ok(Json(
        serde_json::json!({"interval_ms": 1000, "samples": samples}),
    ))
}

pub(super) async fn health(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
) -> Result<Json<serde_json::Value>, HttpError> {
    admit_health(&node, &peer, &headers)?;
    let own = node.status();
    // Every other member's own report, asked in parallel.
    let asks = own
        .members
        .iter()
        .filter(|m| m.node_id != own.node_id)
        .map(|m| {
            let node = node.clone();
            let (id, addr) = (m.node_id, m.addr.clone());
            async move {
                let r = async {
                    let channel = node
                        .channels()
                        .get(&addr, id)
                        .map_err(|e| format!("cannot reach {addr}: {e}"))?;
                    let mut c = v1::governance_client::GovernanceClient::new(channel);
                    let mut req = tonic::Request::new(v1::StatusRequest {});
                    req.set_timeout(MEMBER_TIMEOUT);
                    match tokio::time::timeout(MEMBER_TIMEOUT, c.status(req)).await {
                        Ok(Ok(r)) => Ok(r.into_inner()),
                        Ok(Err(s)) => Err(crate::error::from_status(&s).message),
                        Err(_) => Err(format!(
                            "no answer within {} ms",
                            MEMBER_TIMEOUT.as_millis()
                        )),
                    }
                }
                .await;
                (id, r)
            }
        });
    let answers: std::collections::BTreeMap<u64, Result<v1::StatusResponse, String>> =
        futures::future::join_all(asks).await.into_iter().collect();
    let nodes: Vec<serde_json::Value> = own
        .members
        .iter()
        .map(|m| {
            let known = serde_json::json!({
                "node_id": m.node_id, "addr": m.addr, "region": m.region, "voter": m.voter,
                "lag": m.lag,
            });
            if m.node_id == own.node_id {
                return merge(known, own_entry(&own));
            }
            match answers.get(&m.node_id) {
                Some(Ok(s)) => merge(known, member_entry(s)),
                Some(Err(e)) => merge(known, serde_json::json!({"reachable": false, "error": e})),
                None => merge(
                    known,
                    serde_json::json!({"reachable": false, "error": "not asked"}),
                ),
            }
        })
        .collect();
    Ok(Json(serde_json::json!({
        "served_by": own.node_id,
        "cluster_id": own.cluster_id,
        "as_of_ms": crate::node::now_ms(),
        "nodes": nodes,
    })))
}

/// `base` with `over`'s fields added (the member's report wins).
fn merge(mut base: serde_json::Value, over: serde_json::Value) -> serde_json::Value {
    if let (Some(b), serde_json::Value::Object(o)) = (base.as_object_mut(), over) {
        for (k, v) in o {
            // The leader's view of lag is kept when the member has none.
            if k == "lag" && v.is_null() {
                continue;
            }
            b.insert(k, v);
        }
    }
    base
}

fn containment(reason: Option<&str>, message: &str, since: Option<u64>) -> serde_json::Value {
    match reason {
        Some(r) => serde_json::json!({"reason": r, "message": message, "since_ms": since}),
        None => serde_json::Value::Null,
    }
}

fn checkpoint(size: u64, cosigners: &[u64]) -> serde_json::Value {
    if size == 0 {
        serde_json::Value::Null
    } else {
        serde_json::json!({"size": size, "cosigners": cosigners})
    }
}

fn own_entry(s: &NodeStatus) -> serde_json::Value {
    serde_json::json!({
        "reachable": true, "error": null, "role": s.role, "term": s.term,
        "leader_id": s.leader_id, "quorate": s.quorate,
        "containment": containment(
            s.containment_reason.map(|r| r.code()),
            &s.containment_message,
            s.contained_since_ms,
        ),
        "last_log_index": s.last_log_index, "commit_index": s.commit_index,
        "applied_index": s.last_applied_index, "decision_count": s.decision_count,
        "chain_head_hash": s.chain_head_hash, "public_key": s.public_key,
        "last_final_checkpoint": checkpoint(s.last_final_checkpoint, &s.last_final_cosigners),
        "tls_cert_expiry_ms": s.tls_cert_expiry_ms, "console_url": s.console_url,
    })
}

fn member_entry(s: &v1::StatusResponse) -> serde_json::Value {
    let reason = (!s.containment_reason.is_empty()).then_some(s.containment_reason.as_str());
    // The member's own lag is known only on the leader.
    let lag = if s.role == "leader" { Some(0) } else { None };
    serde_json::json!({
        "reachable": true, "error": null, "role": s.role, "term": s.term,
        "leader_id": s.leader_id, "quorate": s.quorate,
        "containment": containment(reason, &s.containment_message, s.contained_since_ms),
        "last_log_index": s.last_log_index, "commit_index": s.commit_index,
        "applied_index": s.last_applied_index, "decision_count": s.decision_count,
        "chain_head_hash": s.chain_head_hash, "public_key": s.public_key,
        "last_final_checkpoint": checkpoint(s.last_final_checkpoint, &s.last_final_cosigners),
        "tls_cert_expiry_ms": s.tls_cert_expiry_ms, "console_url": s.console_url,
        "lag": lag,
    })
}
