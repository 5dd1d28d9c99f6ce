//! The public gRPC service, `quorate.v1.Governance`. It translates wire
//! messages to core types and back; the decisions are made in `Node`.

use std::pin::Pin;

use futures::Stream;
use quorate_core::validate;
use quorate_core::{AuthorizeRequest, Decision, DenyReason};
use quorate_proto::v1::{self, governance_server::Governance};
use quorate_proto::{FORWARDED_METADATA_KEY, record_from_wire, record_to_wire};
use tonic::{Request, Response, Status};

use crate::error::ApiError;
use crate::node::{Access, Answer, Door, Node};

pub struct GovernanceApi {
    node: Node,
}

impl GovernanceApi {
    pub fn new(node: Node) -> GovernanceApi {
        GovernanceApi { node }
    }
}

/// Turns a wire request into a core request, canonicalising its JSON.
/// Malformed input is INVALID_ARGUMENT and nothing is proposed.
pub fn request_from_wire(
    w: v1::AuthorizeRequest,
    limits: &validate::Limits,
) -> Result<AuthorizeRequest, ApiError> {
    quorate_proto::request_from_wire(w, limits).map_err(|e| ApiError::invalid(e.to_string()))
}

fn answer_to_wire(a: &Answer, served_by: u64) -> v1::AuthorizeResponse {
    v1::AuthorizeResponse {
        decision: match a.decision {
            Decision::Allow => v1::Decision::Allow as i32,
            Decision::Deny => v1::Decision::Deny as i32,
        },
        reason: a.reason.map(|r| r.code().to_string()).unwrap_or_default(),
        message: a.message.clone(),
        record: a.record.as_ref().map(record_to_wire),
        replayed: a.replayed,
        served_by,
        receipt_json: a.receipt_json.clone().or_else(|| {
            a.receipt
                .as_ref()
                .and_then(|r| serde_json::to_string(r).ok())
        }),
    }
}

/// Reads another node's answer to `req`. Fail closed: an ALLOW is believed
/// only if it carries a well-formed record that says ALLOW, decides this very
/// request and whose hash verifies.
pub fn answer_from_wire(w: &v1::AuthorizeResponse, req: &AuthorizeRequest) -> Answer {
    let record = match w.record.as_ref().map(record_from_wire).transpose() {
        Ok(r) => r,
        Err(e) => {
            return Answer::deny(
                DenyReason::Unavailable,
                format!("leader sent a malformed record ({e}); outcome unknown"),
            );
        }
    };
    let wants_allow = w.decision == v1::Decision::Allow as i32;
    let receipt = match w.receipt_json.as_deref().map(serde_json::from_str) {
        None => None,
        Some(Ok(r)) => Some(Box::new(r)),
        Some(Err(e)) => {
            return Answer::deny(
                DenyReason::Unavailable,
                format!("leader sent a malformed receipt ({e}); outcome unknown"),
            );
        }
    };
    match record {
        Some(rec) if rec.hash_is_valid() => {
            let a = crate::node::answer_for(
                req,
                quorate_core::AuthorizeOutcome {
                    record: rec,
                    replayed: w.replayed,
                },
            );
            let allow = a.decision == Decision::Allow;
            Answer {
                receipt: receipt.filter(|_| allow),
                receipt_json: w.receipt_json.clone().filter(|_| allow),
                ..a
            }
        }
        Some(_) => Answer::deny(
            DenyReason::IntegrityFailure,
            "leader's record does not verify; refusing to relay it",
        ),
        None if wants_allow => Answer::deny(
            DenyReason::IntegrityFailure,
            "leader answered ALLOW without a committed record; refusing it",
        ),
        None => Answer::deny(
            DenyReason::from_code(&w.reason).unwrap_or(DenyReason::Unavailable),
            w.message.clone(),
        ),
    }
}

fn policy_to_wire(p: &quorate_core::PolicyVersion, active: bool) -> v1::PolicyVersion {
    v1::PolicyVersion {
        domain: p.domain.clone(),
        version: p.version,
        policy_text: p.policy_text.clone(),
        schema: p.schema.clone(),
        hash: p.hash.to_hex(),
        active,
        log_index: p.log_index,
        published_at_ms: p.published_at_ms,
        publisher_key: p.signature.map(|s| s.publisher_key.to_hex()),
        signature: p.signature.map(|s| s.signature.to_hex()),
    }
}

/// The signature fields of a publish request: both or neither.
fn signature_from_wire(
    key: Option<String>,
    sig: Option<String>,
) -> Result<Option<quorate_core::PolicySignature>, ApiError> {
    let key = key.filter(|k| !k.trim().is_empty());
    let sig = sig.filter(|s| !s.trim().is_empty());
    match (key, sig) {
        (None, None) => Ok(None),
        (Some(k), Some(s)) => Ok(Some(quorate_core::PolicySignature {
            publisher_key: quorate_core::PublicKey::from_hex(&k)
                .map_err(|e| ApiError::invalid(e.to_string()))?,
            signature: quorate_core::Signature::from_hex(&s)
                .map_err(|e| ApiError::invalid(e.to_string()))?,
        })),
        _ => Err(ApiError::invalid(
            "give both publisher_key and signature, or neither",
        )),
    }
}

fn document<T: serde::Serialize>(v: &T) -> Result<Response<v1::ProofDocument>, Status> {
    let json = serde_json::to_string(v).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(v1::ProofDocument { json }))
}

type ExportStream = Pin<Box<dyn Stream<Item = Result<v1::ExportLine, Status>> + Send>>;

type RecordStream = Pin<Box<dyn Stream<Item = Result<v1::DecisionRecord, Status>> + Send>>;

#[tonic::async_trait]
impl Governance for GovernanceApi {
    async fn authorize(
        &self,
        req: Request<v1::AuthorizeRequest>,
    ) -> Result<Response<v1::AuthorizeResponse>, Status> {
        self.admit(&req, "Authorize", Access::Decide)?;
        let forwarded = req.metadata().contains_key(FORWARDED_METADATA_KEY);
        let r = request_from_wire(req.into_inner(), self.node.limits())?;
        let door = if forwarded {
            Door::Forwarded
        } else {
            Door::Grpc
        };
        let answer = self.node.authorize(r, door).await?;
        Ok(Response::new(answer_to_wire(&answer, self.node.id())))
    }

    async fn probe(
        &self,
        req: Request<v1::ProbeRequest>,
    ) -> Result<Response<v1::ProbeResponse>, Status> {
        self.admit(&req, "Probe", Access::Probe)?;
        let forwarded = req.metadata().contains_key(FORWARDED_METADATA_KEY);
        let p = self.node.probe(forwarded).await?;
        Ok(Response::new(v1::ProbeResponse {
            log_index: p.log_index,
            leader_id: p.leader,
            served_by: self.node.id(),
        }))
    }

    async fn publish_policy(
        &self,
        req: Request<v1::PublishPolicyRequest>,
    ) -> Result<Response<v1::PublishPolicyResponse>, Status> {
        self.admit(&req, "PublishPolicy", Access::Administer)?;
        let r = req.into_inner();
        let signature = signature_from_wire(r.publisher_key, r.signature)?;
        let p = self
            .node
            .publish_policy(
                r.domain,
                r.policy_text,
                r.schema.filter(|s| !s.trim().is_empty()),
                r.activate,
                signature,
            )
            .await?;
        Ok(Response::new(v1::PublishPolicyResponse {
            domain: p.domain,
            version: p.version,
            hash: p.hash.to_hex(),
            activated: p.activated,
            log_index: p.log_index,
        }))
    }

    async fn activate_policy(
        &self,
        req: Request<v1::ActivatePolicyRequest>,
    ) -> Result<Response<v1::ActivatePolicyResponse>, Status> {
        self.admit(&req, "ActivatePolicy", Access::Administer)?;
        let r = req.into_inner();
        let a = self.node.activate_policy(r.domain, r.version).await?;
        Ok(Response::new(v1::ActivatePolicyResponse {
            domain: a.domain,
            version: a.version,
            previous: a.previous,
            log_index: a.log_index,
        }))
    }

    async fn get_policy(
        &self,
        req: Request<v1::GetPolicyRequest>,
    ) -> Result<Response<v1::PolicyVersion>, Status> {
        self.admit(&req, "GetPolicy", Access::Read)?;
        let r = req.into_inner();
        let version = (r.version != 0).then_some(r.version);
        let (p, active) = self.node.get_policy(&r.domain, version).await?;
        Ok(Response::new(policy_to_wire(&p, active)))
    }

    async fn get_decision(
        &self,
        req: Request<v1::GetDecisionRequest>,
    ) -> Result<Response<v1::DecisionRecord>, Status> {
        self.admit(&req, "GetDecision", Access::Audit)?;
        let rec = match req.into_inner().key {
            Some(v1::get_decision_request::Key::Index(i)) => {
                self.node.get_decision_by_index(i).await?
            }
            Some(v1::get_decision_request::Key::Request(k)) => {
                self.node
                    .get_decision_by_request(&k.domain, &k.request_id)
                    .await?
            }
            None => {
                return Err(ApiError::invalid("give an index or a (domain, request_id)").into());
            }
        };
        Ok(Response::new(record_to_wire(&rec)))
    }

    type ListDecisionsStream = RecordStream;

    async fn list_decisions(
        &self,
        req: Request<v1::ListDecisionsRequest>,
    ) -> Result<Response<RecordStream>, Status> {
        self.admit(&req, "ListDecisions", Access::Audit)?;
        let r = req.into_inner();
        // Everything committed before this call is included.
        self.node.linearize().await?;
        let end = self.node.head().count;
        let lookup = self.node.lookup().clone();
        let domain = r.domain.filter(|d| !d.is_empty());
        let limit = r.limit;
        let from = r.from_index.max(1);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut next = from;
            let mut sent = 0u64;
            const PAGE: usize = 512;
            while next <= end {
                let page = match lookup.decisions(next, PAGE, None) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(Status::internal(e.to_string()))).await;
                        return;
                    }
                };
                if page.is_empty() {
                    break;
                }
                for rec in page {
                    next = rec.index + 1;
                    if rec.index > end {
                        return;
                    }
                    if domain.as_deref().is_some_and(|d| d != rec.request.domain) {
                        continue;
                    }
                    if tx.send(Ok(record_to_wire(&rec))).await.is_err() {
                        return;
                    }
                    sent += 1;
                    if limit != 0 && sent >= limit {
                        return;
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn get_lineage(
        &self,
        req: Request<v1::GetLineageRequest>,
    ) -> Result<Response<v1::LineageResponse>, Status> {
        self.admit(&req, "GetLineage", Access::Audit)?;
        let r = req.into_inner();
        let limit = if r.limit == 0 { 200 } else { r.limit as usize };
        self.node.linearize().await?;
        let l = match r.of {
            Some(v1::get_lineage_request::Of::Index(i)) => self.node.lineage_of(i, limit)?,
            Some(v1::get_lineage_request::Of::TraceId(t)) if !t.is_empty() => {
                self.node.trace(&t, r.after, limit)?
            }
            _ => return Err(ApiError::invalid("give a decision index or a trace id").into()),
        };
        Ok(Response::new(v1::LineageResponse {
            records: l.records.iter().map(record_to_wire).collect(),
            edges: l
                .edges
                .iter()
                .map(|&(parent, child)| v1::LineageEdge { parent, child })
                .collect(),
            focus: l.focus,
            root: l.root,
            truncated: l.truncated,
            next_after: l.next_after,
        }))
    }

    async fn backup(
        &self,
        req: Request<v1::BackupRequest>,
    ) -> Result<Response<v1::BackupResponse>, Status> {
        self.admit(&req, "Backup", Access::Administer)?;
        let m = self.node.backup(req.into_inner().dir).await?;
        let manifest_json =
            serde_json::to_string(&m).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(v1::BackupResponse { manifest_json }))
    }

    async fn status(
        &self,
        req: Request<v1::StatusRequest>,
    ) -> Result<Response<v1::StatusResponse>, Status> {
        self.admit(&req, "Status", Access::Read)?;
        let s = self.node.status();
        Ok(Response::new(v1::StatusResponse {
            node_id: s.node_id,
            role: s.role,
            term: s.term,
            leader_id: s.leader_id,
            quorate: s.quorate,
            containment_reason: s
                .containment_reason
                .map(|r| r.code().to_string())
                .unwrap_or_default(),
            containment_message: s.containment_message,
            last_log_index: s.last_log_index,
            last_applied_index: s.last_applied_index,
            decision_count: s.decision_count,
            chain_head_hash: s.chain_head_hash,
            members: s.members.into_iter().map(member_to_wire).collect(),
            region: s.region,
            cluster_id: s.cluster_id,
            public_key: s.public_key,
            last_final_checkpoint: s.last_final_checkpoint,
            commit_index: s.commit_index,
            contained_since_ms: s.contained_since_ms,
            last_final_cosigners: s.last_final_cosigners,
            tls_cert_expiry_ms: s.tls_cert_expiry_ms,
            console_url: s.console_url,
        }))
    }

    async fn get_receipt(
        &self,
        req: Request<v1::GetDecisionRequest>,
    ) -> Result<Response<v1::ProofDocument>, Status> {
        // By index, a receipt discloses any decision (principal, resource,
        // context): auditors only. By (domain, request id), the id the caller
        // chose is its capability: agents get receipts of their own requests.
        let access = match &req.get_ref().key {
            Some(v1::get_decision_request::Key::Request(_)) => Access::OwnReceipt,
            _ => Access::Audit,
        };
        self.admit(&req, "GetReceipt", access)?;
        let index = match req.into_inner().key {
            Some(v1::get_decision_request::Key::Index(i)) => i,
            Some(v1::get_decision_request::Key::Request(k)) => {
                self.node
                    .get_decision_by_request(&k.domain, &k.request_id)
                    .await?
                    .index
            }
            None => {
                return Err(ApiError::invalid("give an index or a (domain, request_id)").into());
            }
        };
        document(&self.node.receipt(index).await?)
    }

    async fn get_checkpoint(
        &self,
        req: Request<v1::GetCheckpointRequest>,
    ) -> Result<Response<v1::ProofDocument>, Status> {
        self.admit(&req, "GetCheckpoint", Access::Read)?;
        let size = req.into_inner().size;
        document(
            &self
                .node
                .final_checkpoint((size != 0).then_some(size))
                .await?,
        )
    }

    async fn get_consistency_proof(
        &self,
        req: Request<v1::GetConsistencyProofRequest>,
    ) -> Result<Response<v1::ProofDocument>, Status> {
        self.admit(&req, "GetConsistencyProof", Access::Read)?;
        let r = req.into_inner();
        let new = (r.new_size != 0).then_some(r.new_size);
        document(&self.node.consistency(r.old_size, new).await?)
    }

    async fn get_trust(
        &self,
        req: Request<v1::GetTrustRequest>,
    ) -> Result<Response<v1::ProofDocument>, Status> {
        self.admit(&req, "GetTrust", Access::Read)?;
        document(&self.node.trust_file().await?)
    }

    type ExportLogStream = ExportStream;

    async fn export_log(
        &self,
        req: Request<v1::ExportLogRequest>,
    ) -> Result<Response<ExportStream>, Status> {
        self.admit(&req, "ExportLog", Access::Audit)?;
        let rx = self.node.export().await?;
        let stream =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |line| {
                line.map(|json| v1::ExportLine { json })
                    .map_err(Status::from)
            });
        Ok(Response::new(Box::pin(stream)))
    }
    type WatchDecisionsStream = RecordStream;

    async fn watch_decisions(
        &self,
        req: Request<v1::WatchDecisionsRequest>,
    ) -> Result<Response<RecordStream>, Status> {
        self.admit(&req, "WatchDecisions", Access::Audit)?;
        let r = req.into_inner();
        let domain = r.domain.filter(|d| !d.is_empty());
        if let Some(d) = &domain {
            quorate_core::validate::domain(d, self.node.limits())
                .map_err(|e| ApiError::invalid(e.to_string()))?;
        }
        let rx = self.node.watch(r.from_index, domain)?;
        let stream =
            tokio_stream::StreamExt::map(tokio_stream::wrappers::ReceiverStream::new(rx), |rec| {
                rec.map(|r| record_to_wire(&r)).map_err(Status::from)
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn add_learner(
        &self,
        req: Request<v1::AddLearnerRequest>,
    ) -> Result<Response<v1::MembershipResponse>, Status> {
        self.admit(&req, "AddLearner", Access::Administer)?;
        let r = req.into_inner();
        let log_index = self.node.add_learner(r.node_id, r.addr).await?;
        Ok(Response::new(self.membership_response(log_index)))
    }

    async fn promote_voter(
        &self,
        req: Request<v1::MembershipChangeRequest>,
    ) -> Result<Response<v1::MembershipResponse>, Status> {
        self.admit(&req, "PromoteVoter", Access::Administer)?;
        let r = req.into_inner();
        let log_index = self.node.promote_voter(r.node_id, r.max_lag).await?;
        Ok(Response::new(self.membership_response(log_index)))
    }

    async fn remove_node(
        &self,
        req: Request<v1::MembershipChangeRequest>,
    ) -> Result<Response<v1::MembershipResponse>, Status> {
        self.admit(&req, "RemoveNode", Access::Administer)?;
        let r = req.into_inner();
        let log_index = self.node.remove_node(r.node_id).await?;
        Ok(Response::new(self.membership_response(log_index)))
    }

    async fn start_rollout(
        &self,
        req: Request<v1::StartRolloutRequest>,
    ) -> Result<Response<v1::RolloutDocument>, Status> {
        self.admit(&req, "StartRollout", Access::Administer)?;
        let r = self.node.start_rollout(&req.into_inner().plan_json).await?;
        rollout_document(&r)
    }

    async fn promote_rollout(
        &self,
        req: Request<v1::RolloutRequest>,
    ) -> Result<Response<v1::RolloutDocument>, Status> {
        self.admit(&req, "PromoteRollout", Access::Administer)?;
        let r = req.into_inner();
        rollout_document(&self.node.promote_rollout(r.rollout_id, r.force).await?)
    }

    async fn rollback_rollout(
        &self,
        req: Request<v1::RolloutRequest>,
    ) -> Result<Response<v1::RolloutDocument>, Status> {
        self.admit(&req, "RollbackRollout", Access::Administer)?;
        let r = req.into_inner();
        rollout_document(&self.node.rollback_rollout(r.rollout_id).await?)
    }

    async fn get_rollout(
        &self,
        req: Request<v1::RolloutRequest>,
    ) -> Result<Response<v1::RolloutDocument>, Status> {
        self.admit(&req, "GetRollout", Access::Audit)?;
        rollout_document(&self.node.get_rollout(&req.into_inner().rollout_id).await?)
    }
}

fn rollout_document(
    r: &quorate_core::rollout::Rollout,
) -> Result<Response<v1::RolloutDocument>, Status> {
    let json = serde_json::to_string(r).map_err(|e| Status::internal(e.to_string()))?;
    Ok(Response::new(v1::RolloutDocument { json }))
}

fn member_to_wire(m: crate::node::MemberStatus) -> v1::Member {
    v1::Member {
        node_id: m.node_id,
        addr: m.addr,
        voter: m.voter,
        public_key: m.public_key,
        region: m.region,
        matched_index: m.matched_index,
        lag: m.lag,
    }
}

impl GovernanceApi {
    /// Refuses a caller whose certificate's role does not allow `rpc`.
    fn admit<T>(&self, req: &Request<T>, rpc: &'static str, access: Access) -> Result<(), Status> {
        self.node
            .admit_client(
                req.extensions().get::<quorate_raft::tls::PeerInfo>(),
                rpc,
                access,
            )
            .map_err(Status::from)
    }

    fn membership_response(&self, log_index: u64) -> v1::MembershipResponse {
        v1::MembershipResponse {
            log_index,
            members: self
                .node
                .status()
                .members
                .into_iter()
                .map(member_to_wire)
                .collect(),
        }
    }
}
