//! The console's views of the log, lineage, proofs and policies, and its
//! admin actions. Each route admits its caller as the RPC it mirrors does.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Json, Response};
use quorate_core::{Decision, DecisionRecord, Digest};
use quorate_policy::{ActivePolicy, CompiledPolicy, DomainState, Position};

use super::{Caller, HttpError, admit, caller};
use crate::http::HttpPeer;
use crate::node::{Access, Lineage, Node};

/// Most records one log query reads before it answers with a cursor.
const SCAN_LIMIT: usize = 20_000;
const PAGE: usize = 512;
const MAX_LIMIT: usize = 500;
const MAX_WHATIF: usize = 1000;

type Answer = Result<Json<serde_json::Value>, HttpError>;

fn audited(
    node: &Node,
    peer: &HttpPeer,
    headers: &HeaderMap,
    rpc: &'static str,
) -> Result<Caller, HttpError> {
    let c = caller(node, peer, headers)?;
    admit(node, &c, rpc, Access::Audit)?;
    Ok(c)
}

/// Reads are from this node's applied state; first confirmed with the
/// leader to hold everything committed before the call, except on a
/// contained node, which shows what it has and says so.
async fn freshen(node: &Node) -> bool {
    node.containment().is_none() && node.linearize().await.is_ok()
}

fn internal(e: impl std::fmt::Display) -> HttpError {
    HttpError::from(crate::error::ApiError::internal(e.to_string()))
}

/// The log explorer's filters (docs/CONSOLE.md).
#[derive(Debug, Default, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filters {
    domain: Option<String>,
    decision: Option<String>,
    reason: Option<String>,
    policy_version: Option<u64>,
    principal: Option<String>,
    action: Option<String>,
    resource: Option<String>,
    request_id: Option<String>,
    trace_id: Option<String>,
    since_ms: Option<u64>,
    until_ms: Option<u64>,
    before: Option<u64>,
    limit: Option<usize>,
}

impl Filters {
    /// Empty query values mean "no filter" (an empty form field).
    fn normalised(mut self) -> Result<Filters, HttpError> {
        for f in [
            &mut self.domain,
            &mut self.decision,
            &mut self.reason,
            &mut self.principal,
            &mut self.action,
            &mut self.resource,
            &mut self.request_id,
            &mut self.trace_id,
        ] {
            if f.as_deref().is_some_and(|v| v.trim().is_empty()) {
                *f = None;
            }
        }
        if let Some(d) = &self.decision
            && d != "ALLOW"
            && d != "DENY"
        {
            return Err(HttpError::invalid(format!(
                "decision must be ALLOW or DENY, not {d:?}"
            )));
        }
        if let Some(r) = &self.reason
            && !quorate_core::DenyReason::ALL.iter().any(|x| x.code() == r)
        {
            return Err(HttpError::invalid(format!(
                "reason {r:?} is not a deny reason code (POLICY, NO_QUORUM, ...)"
            )));
        }
        Ok(self)
    }

    fn matches(&self, r: &DecisionRecord) -> bool {
        let q = &r.request;
        let contains = |f: &Option<String>, v: &str| f.as_deref().is_none_or(|f| v.contains(f));
        let equals =
            |f: &Option<String>, v: Option<&str>| f.as_deref().is_none_or(|f| v == Some(f));
        let decision = match r.decision {
            Decision::Allow => "ALLOW",
            Decision::Deny => "DENY",
        };
        equals(&self.domain, Some(&q.domain))
            && equals(&self.decision, Some(decision))
            && equals(&self.reason, r.reason.map(|x| x.code()))
            && self
                .policy_version
                .is_none_or(|v| r.policy_version == Some(v))
            && contains(&self.principal, &q.principal)
            && contains(&self.action, &q.action)
            && contains(&self.resource, &q.resource)
            && equals(&self.request_id, Some(&q.request_id))
            && equals(&self.trace_id, q.trace_id.as_deref())
            && self.since_ms.is_none_or(|t| r.timestamp_ms >= t)
            && self.until_ms.is_none_or(|t| r.timestamp_ms <= t)
    }
}

/// Newest first from `before`: the matching records, at most `limit`, and
/// where to continue if the scan stopped with more left to read.
fn scan(
    node: &Node,
    f: &Filters,
    limit: usize,
) -> Result<(Vec<DecisionRecord>, Option<u64>, usize), HttpError> {
    let mut out = Vec::new();
    let mut before = f.before.unwrap_or(0);
    let mut scanned = 0usize;
    loop {
        let page = node
            .lookup()
            .decisions_before(before, PAGE.min(SCAN_LIMIT - scanned))
            .map_err(internal)?;
        let Some(last) = page.last().map(|r| r.index) else {
            return Ok((out, None, scanned));
        };
        for r in page {
            scanned += 1;
            let index = r.index;
            if f.matches(&r) {
                out.push(r);
                if out.len() >= limit {
                    return Ok((out, (index > 1).then_some(index), scanned));
                }
            }
        }
        before = last;
        if last <= 1 {
            return Ok((out, None, scanned));
        }
        if scanned >= SCAN_LIMIT {
            return Ok((out, Some(last), scanned));
        }
    }
}

pub(super) async fn decisions(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Query(f): Query<Filters>,
) -> Answer {
    audited(&node, &peer, &headers, "ListDecisions")?;
    let f = f.normalised()?;
    let limit = f.limit.unwrap_or(50).clamp(1, MAX_LIMIT);
    let linearized = freshen(&node).await;
    let (records, next_before, scanned) = scan(&node, &f, limit)?;
    Ok(Json(serde_json::json!({
        "as_of": node.head().count,
        "linearized": linearized,
        "records": records,
        "next_before": next_before,
        "scanned": scanned,
    })))
}

/// The determining policies of an evaluation, with their text, and a
/// one-line reason.
fn why(
    decision: Decision,
    reason: Option<quorate_core::DenyReason>,
    determining: &[String],
    errors: &[String],
    text: Option<&str>,
) -> serde_json::Value {
    let statements: BTreeMap<String, quorate_policy::Statement> = text
        .and_then(|t| quorate_policy::statements(t).ok())
        .unwrap_or_default()
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let policies: Vec<serde_json::Value> = determining
        .iter()
        .map(|id| match statements.get(id) {
            Some(s) => serde_json::json!({"id": id, "effect": s.effect, "text": s.text}),
            None => serde_json::json!({"id": id, "effect": null, "text": null}),
        })
        .collect();
    let ids = determining.join(", ");
    let summary = match (decision, reason) {
        (Decision::Allow, _) => format!("ALLOW: permitted by {ids}"),
        (Decision::Deny, Some(quorate_core::DenyReason::Policy)) if determining.is_empty() => {
            "DENY: no policy permits this request (Cedar denies by default)".to_string()
        }
        (Decision::Deny, Some(quorate_core::DenyReason::Policy)) => {
            format!("DENY: forbidden by {ids}")
        }
        (Decision::Deny, Some(r)) => format!("DENY {}: {r}", r.code()),
        (Decision::Deny, None) => "DENY".to_string(),
    };
    serde_json::json!({"summary": summary, "policies": policies, "errors": errors})
}

pub(super) async fn decision(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Path(index): Path<u64>,
) -> Answer {
    audited(&node, &peer, &headers, "GetDecision")?;
    freshen(&node).await;
    let lookup = node.lookup();
    let rec = lookup.decision(index).map_err(internal)?.ok_or_else(|| {
        HttpError::from(crate::error::ApiError::new(
            quorate_core::ErrorCode::NotFound,
            format!(
                "no decision at index {index} (the log holds {})",
                node.head().count
            ),
        ))
    })?;
    let domain = &rec.request.domain;
    let version =
        |v: Option<u64>| -> Result<Option<(quorate_core::PolicyVersion, bool)>, HttpError> {
            match v {
                Some(v) => lookup.policy(domain, Some(v)).map_err(internal),
                None => Ok(None),
            }
        };
    let policy = version(rec.policy_version)?;
    let why_main = why(
        rec.decision,
        rec.reason,
        &rec.determining_policies,
        &rec.errors,
        policy.as_ref().map(|(p, _)| p.policy_text.as_str()),
    );
    let shadow_why = match &rec.shadow {
        Some(s) => {
            let cand = version(Some(s.candidate_version))?;
            why(
                s.decision,
                s.reason,
                &s.determining_policies,
                &s.errors,
                cand.as_ref().map(|(p, _)| p.policy_text.as_str()),
            )
        }
        None => serde_json::Value::Null,
    };
    let parent_index = match &rec.request.parent {
        Some(p) => lookup
            .index_of_request(domain, p)
            .map_err(|e| HttpError::from(node.store_error(e)))?,
        None => None,
    };
    let children = lookup
        .children(
            domain,
            &rec.request.request_id,
            0,
            crate::node::MAX_LINEAGE + 1,
        )
        .map_err(|e| HttpError::from(node.store_error(e)))?
        .len();
    Ok(Json(serde_json::json!({
        "record": rec,
        "policy": policy.map(|(p, active)| serde_json::json!({
            "domain": p.domain, "version": p.version, "hash": p.hash, "active": active,
        })),
        "why": why_main,
        "shadow_why": shadow_why,
        "lineage": {"parent_index": parent_index, "children": children},
    })))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct TailQuery {
    #[serde(default)]
    after: u64,
}

/// NDJSON: every record above `after` as it is applied, and a heartbeat
/// every 10 s. Ends (the page reconnects) when this node contains.
pub(super) async fn tail(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Query(q): Query<TailQuery>,
) -> Result<Response, HttpError> {
    audited(&node, &peer, &headers, "WatchDecisions")?;
    let mut rx = node.watch(q.after.saturating_add(1), None)?;
    let head = node.clone();
    let (tx, body_rx) = tokio::sync::mpsc::channel::<Result<String, std::io::Error>>(64);
    tokio::spawn(async move {
        let beat = std::time::Duration::from_secs(10);
        loop {
            let line = tokio::select! {
                item = rx.recv() => match item {
                    Some(Ok(rec)) => match serde_json::to_string(&rec) {
                        Ok(s) => s,
                        Err(_) => return,
                    },
                    // Contained, or the store failed: end the stream.
                    Some(Err(_)) | None => return,
                },
                _ = tokio::time::sleep(beat) => {
                    serde_json::json!({"heartbeat": head.head().count}).to_string()
                }
            };
            if tx.send(Ok(line + "\n")).await.is_err() {
                return;
            }
        }
    });
    let body = Body::from_stream(tokio_stream::wrappers::ReceiverStream::new(body_rx));
    let mut r = Response::new(body);
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(r)
}

/// A lineage as the explorer draws it: a summary per decision and the
/// parent → child edges.
fn lineage_json(node: &Node, l: Lineage) -> serde_json::Value {
    let parent_index = |r: &DecisionRecord| {
        r.request.parent.as_ref().and_then(|p| {
            node.lookup()
                .index_of_request(&r.request.domain, p)
                .ok()
                .flatten()
        })
    };
    let nodes: Vec<serde_json::Value> = l
        .records
        .iter()
        .map(|r| {
            serde_json::json!({
                "index": r.index, "domain": r.request.domain, "request_id": r.request.request_id,
                "parent": r.request.parent, "parent_index": parent_index(r),
                "trace_id": r.request.trace_id, "principal": r.request.principal,
                "action": r.request.action, "resource": r.request.resource,
                "decision": r.decision, "reason": r.reason, "timestamp_ms": r.timestamp_ms,
            })
        })
        .collect();
    let edges: Vec<serde_json::Value> = l
        .edges
        .iter()
        .map(|(from, to)| serde_json::json!({"from": from, "to": to}))
        .collect();
    serde_json::json!({
        "focus": l.focus, "root": l.root, "truncated": l.truncated,
        "next_after": l.next_after, "nodes": nodes, "edges": edges,
    })
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LineageQuery {
    trace_id: Option<String>,
    #[serde(default)]
    after: u64,
    limit: Option<usize>,
}

pub(super) async fn lineage(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Path(index): Path<u64>,
    Query(q): Query<LineageQuery>,
) -> Answer {
    audited(&node, &peer, &headers, "GetLineage")?;
    freshen(&node).await;
    let l = node.lineage_of(index, q.limit.unwrap_or(200))?;
    Ok(Json(lineage_json(&node, l)))
}

pub(super) async fn trace(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Query(q): Query<LineageQuery>,
) -> Answer {
    audited(&node, &peer, &headers, "GetLineage")?;
    let Some(t) = q.trace_id.filter(|t| !t.is_empty()) else {
        return Err(HttpError::invalid(
            "give ?trace_id=..., or ask for /console/api/lineage/{index}",
        ));
    };
    freshen(&node).await;
    let l = node.trace(&t, q.after, q.limit.unwrap_or(200))?;
    let mut v = lineage_json(&node, l);
    v["trace_id"] = serde_json::Value::String(t);
    Ok(Json(v))
}

/// A document as the exact JSON text the gRPC API returns.
fn json_text<T: serde::Serialize>(v: &T) -> Result<Response, HttpError> {
    let text = serde_json::to_string(v).map_err(internal)?;
    let mut r = text.into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(r)
}

pub(super) async fn receipt(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Path(index): Path<u64>,
) -> Result<Response, HttpError> {
    audited(&node, &peer, &headers, "GetReceipt")?;
    json_text(&node.receipt(index).await?)
}

pub(super) async fn trust(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
) -> Result<Response, HttpError> {
    let c = caller(&node, &peer, &headers)?;
    admit(&node, &c, "GetTrust", Access::Read)?;
    json_text(&node.trust_file().await?)
}

pub(super) async fn policies(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
) -> Answer {
    audited(&node, &peer, &headers, "GetRollout")?;
    freshen(&node).await;
    let state = node.lookup().state();
    let mut by_domain: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for p in node.lookup().policies().map_err(internal)? {
        let active = state.domains.get(&p.domain).and_then(|d| d.active_version) == Some(p.version);
        let statements = quorate_policy::statements(&p.policy_text).unwrap_or_default();
        by_domain
            .entry(p.domain.clone())
            .or_default()
            .push(serde_json::json!({
                "version": p.version, "hash": p.hash, "log_index": p.log_index,
                "published_at_ms": p.published_at_ms,
                "signer": p.signature.as_ref().map(|s| s.publisher_key.to_hex()),
                "active": active, "policy_text": p.policy_text, "schema": p.schema,
                "policies": statements,
            }));
    }
    let domains: Vec<serde_json::Value> = by_domain
        .into_iter()
        .map(|(domain, versions)| {
            let active = state.domains.get(&domain).and_then(|d| d.active_version);
            serde_json::json!({"domain": domain, "active_version": active, "versions": versions})
        })
        .collect();
    let mut rollouts = node.lookup().rollouts().map_err(internal)?;
    rollouts.sort_by_key(|r| std::cmp::Reverse(r.started_log_index));
    Ok(Json(
        serde_json::json!({"domains": domains, "rollouts": rollouts}),
    ))
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WhatIfRequest {
    domain: String,
    version: u64,
    request: Option<WhatIfCall>,
    last: Option<usize>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct WhatIfCall {
    principal: String,
    action: String,
    resource: String,
    #[serde(default)]
    context: Option<serde_json::Value>,
    #[serde(default)]
    entities: Option<serde_json::Value>,
}

fn outcome(r: &DecisionRecord) -> serde_json::Value {
    serde_json::json!({
        "decision": r.decision, "reason": r.reason,
        "determining_policies": r.determining_policies, "errors": r.errors,
    })
}

/// Evaluates under a candidate version: `decide`, the function every
/// replica runs, on this node only. Nothing is proposed or written.
pub(super) async fn whatif(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Json(w): Json<WhatIfRequest>,
) -> Answer {
    audited(&node, &peer, &headers, "ListDecisions")?;
    freshen(&node).await;
    let lookup = node.lookup();
    let limits = *node.limits();
    let (candidate, _) = lookup
        .policy(&w.domain, Some(w.version))
        .map_err(internal)?
        .ok_or_else(|| {
            HttpError::from(crate::error::ApiError::new(
                quorate_core::ErrorCode::NotFound,
                format!("domain {:?} has no version {}", w.domain, w.version),
            ))
        })?;
    let compile = |p: &quorate_core::PolicyVersion| {
        CompiledPolicy::compile(&p.policy_text, p.schema.as_deref(), &limits)
            .map_err(|e| HttpError::invalid(format!("version {} does not compile: {e}", p.version)))
    };
    let compiled = compile(&candidate)?;
    let under = |req: &quorate_core::AuthorizeRequest, p: &CompiledPolicy, v: u64, h: Digest| {
        quorate_policy::decide(
            req,
            DomainState::Active(ActivePolicy {
                version: v,
                hash: h,
                compiled: p,
            }),
            Position {
                index: 0,
                log_index: 0,
                timestamp_ms: crate::node::now_ms(),
                prev_hash: quorate_core::GENESIS_HASH,
            },
        )
    };
    let mut results = Vec::new();
    match (w.request, w.last) {
        (Some(call), None) => {
            let wire = quorate_proto::v1::AuthorizeRequest {
                domain: w.domain.clone(),
                request_id: "what-if".into(),
                principal: call.principal,
                action: call.action,
                resource: call.resource,
                context_json: call
                    .context
                    .map(|c| c.to_string())
                    .unwrap_or_else(|| "{}".into()),
                entities_json: call.entities.map(|e| e.to_string()),
                ..Default::default()
            };
            let req = quorate_proto::request_from_wire(wire, &limits)
                .map_err(|e| HttpError::invalid(e.to_string()))?;
            quorate_policy::check_request(&req, &limits)
                .map_err(|e| HttpError::invalid(e.to_string()))?;
            let current = match lookup.policy(&w.domain, None).map_err(internal)? {
                Some((p, _)) => {
                    let c = compile(&p)?;
                    outcome(&under(&req, &c, p.version, p.hash))
                }
                None => serde_json::json!({"decision": "DENY", "reason": "NO_ACTIVE_POLICY",
                    "determining_policies": [], "errors": []}),
            };
            let cand = under(&req, &compiled, candidate.version, candidate.hash);
            let changed = current["decision"] != serde_json::json!(cand.decision);
            results.push(serde_json::json!({
                "index": null, "request": req, "current": current,
                "candidate": outcome(&cand), "changed": changed,
            }));
        }
        (None, Some(n)) => {
            let n = n.clamp(1, MAX_WHATIF);
            let f = Filters {
                domain: Some(w.domain.clone()),
                ..Filters::default()
            };
            let (records, _, _) = scan(&node, &f, n)?;
            for r in records {
                let cand = under(&r.request, &compiled, candidate.version, candidate.hash);
                results.push(serde_json::json!({
                    "index": r.index, "request": r.request, "current": outcome(&r),
                    "candidate": outcome(&cand), "changed": cand.decision != r.decision,
                }));
            }
        }
        _ => {
            return Err(HttpError::invalid(
                "give either \"request\" (one call to evaluate) or \"last\" (replay the domain's last N decisions)",
            ));
        }
    }
    let count = |d: &str| {
        results
            .iter()
            .filter(|r| r["candidate"]["decision"] == d)
            .count()
    };
    let summary = serde_json::json!({
        "evaluated": results.len(), "would_allow": count("ALLOW"), "would_deny": count("DENY"),
        "changed": results.iter().filter(|r| r["changed"] == true).count(),
    });
    Ok(Json(serde_json::json!({
        "domain": w.domain, "version": candidate.version, "hash": candidate.hash,
        "results": results, "summary": summary,
    })))
}

fn administered(
    node: &Node,
    peer: &HttpPeer,
    headers: &HeaderMap,
    rpc: &'static str,
) -> Result<(), HttpError> {
    let c = caller(node, peer, headers)?;
    admit(node, &c, rpc, Access::Administer)
}

pub(super) async fn activate(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Path((domain, version)): Path<(String, u64)>,
) -> Answer {
    administered(&node, &peer, &headers, "ActivatePolicy")?;
    let a = node.activate_policy(domain, version).await?;
    Ok(Json(serde_json::json!({
        "domain": a.domain, "version": a.version, "previous": a.previous, "log_index": a.log_index,
    })))
}

#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct PromoteBody {
    #[serde(default)]
    force: bool,
}

pub(super) async fn promote(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Path(id): Path<String>,
    body: Option<Json<PromoteBody>>,
) -> Answer {
    administered(&node, &peer, &headers, "PromoteRollout")?;
    let force = body.map(|b| b.0.force).unwrap_or(false);
    let r = node.promote_rollout(id, force).await?;
    Ok(Json(serde_json::to_value(r).map_err(internal)?))
}

pub(super) async fn rollback(
    State(node): State<Node>,
    ConnectInfo(peer): ConnectInfo<HttpPeer>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Answer {
    administered(&node, &peer, &headers, "RollbackRollout")?;
    let r = node.rollback_rollout(id).await?;
    Ok(Json(serde_json::to_value(r).map_err(internal)?))
}
