//! The governed path (invariant 1): decide on the leader (batched, committed,
//! applied, attested) or forward to it, and check what a leader relays.

use super::*;

/// Which door a request came in by: what `quorate_authorize_answers_total`
/// counts it under (`telemetry::DOORS`). `Forwarded` is a follower's relay
/// to this node as leader, whatever door the follower took it in by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Grpc,
    Rest,
    Envoy,
    Admission,
    Forwarded,
}

impl Door {
    pub fn label(self) -> &'static str {
        match self {
            Door::Grpc => "grpc",
            Door::Rest => "rest",
            Door::Envoy => "envoy",
            Door::Admission => "admission",
            Door::Forwarded => "forwarded",
        }
    }
}

impl Node {
    /// Decides a request: validates it, then either DENY at once
    /// (containment) or proposes it (forwarding to the leader if needed) and
    /// answers with the committed decision.
    pub async fn authorize(&self, req: AuthorizeRequest, door: Door) -> Result<Answer, ApiError> {
        quorate_policy::check_request(&req, &self.inner.limits)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let started = std::time::Instant::now();
        let answer = self.authorize_checked(req, door == Door::Forwarded).await;
        metrics::histogram!("quorate_authorize_seconds").record(started.elapsed().as_secs_f64());
        let label = match (&answer.decision, answer.reason) {
            (Decision::Allow, _) => "ALLOW".to_string(),
            (Decision::Deny, Some(r)) => r.code().to_string(),
            (Decision::Deny, None) => "DENY".to_string(),
        };
        metrics::counter!(
            "quorate_authorize_answers_total",
            "answer" => label,
            "door" => door.label()
        )
        .increment(1);
        Ok(answer)
    }

    async fn authorize_checked(&self, req: AuthorizeRequest, forwarded: bool) -> Answer {
        // Fail closed before doing any work: a contained node proposes nothing.
        if let Some((reason, msg)) = self.containment() {
            return Answer::deny(reason, msg);
        }
        let started = std::time::Instant::now();
        let deadline = self.commit_timeout();
        if let Some(leader) = self.route() {
            if forwarded {
                // Never forward twice: the sender thought we led; we do not.
                return Answer::deny(
                    DenyReason::NoQuorum,
                    "forwarded to a node that is not the leader; retry",
                );
            }
            let Some((leader, addr)) = leader else {
                return Answer::deny(DenyReason::NoQuorum, "no known leader");
            };
            return match tokio::time::timeout(deadline, self.forward(leader, &addr, req)).await {
                Ok(a) => a,
                Err(_) => Answer::deny(
                    DenyReason::CommitTimeout,
                    format!(
                        "leader {leader} did not answer within {} ms; outcome unknown",
                        deadline.as_millis()
                    ),
                ),
            };
        }
        match propose(&self.inner.batcher, req.clone(), deadline).await {
            Err(_) => Answer::deny(
                DenyReason::CommitTimeout,
                format!(
                    "not committed within {} ms; outcome unknown (it may still commit): retry with the same request id",
                    deadline.as_millis()
                ),
            ),
            Ok(None) => Answer::deny(
                DenyReason::Unavailable,
                "node is shutting down; outcome unknown",
            ),
            Ok(Some(Err(ProposeError::NotLeader(msg)))) => Answer::deny(DenyReason::NoQuorum, msg),
            Ok(Some(Err(ProposeError::Unknown(msg)))) => {
                Answer::deny(DenyReason::Unavailable, format!("{msg}; outcome unknown"))
            }
            // Invariant 1: the only ALLOW path. The outcome came from the
            // state machine after the entry was committed and applied, and
            // it answers this very request (a reused id answers another).
            // In attested mode an ALLOW waits, within the same deadline,
            // for a majority of voters to attest it.
            Ok(Some(Ok(outcome))) => {
                let answer = answer_for(&req, outcome);
                if answer.decision != Decision::Allow
                    || self.inner.cfg.answer == AnswerMode::Committed
                {
                    return answer;
                }
                self.attest_answer(answer, deadline.saturating_sub(started.elapsed()))
                    .await
            }
        }
    }

    /// Invariant 1, attested: turns a committed ALLOW into an answer only
    /// once a majority of voters has signed a checkpoint covering it, and
    /// only if this node's record is the one under that checkpoint's root
    /// (a record altered on this disk fails the inclusion check). Anything
    /// else is DENY.
    async fn attest_answer(&self, answer: Answer, left: Duration) -> Answer {
        let Some(record) = answer.record.as_ref() else {
            return Answer::deny(DenyReason::IntegrityFailure, "ALLOW without a record");
        };
        let index = record.index;
        let waited = std::time::Instant::now();
        let covering = self.inner.attestations.covering(index, left).await;
        metrics::histogram!("quorate_attest_wait_seconds").record(waited.elapsed().as_secs_f64());
        let Some(cp) = covering else {
            metrics::counter!("quorate_unattested_total").increment(1);
            self.set_unattested(index);
            return Answer::deny(
                DenyReason::Unattested,
                format!(
                    "decision {index} is committed, but no majority of voters attested it within \
                     {} ms; it is not confirmed and this node contains. Retry with the same \
                     request id once the cluster is healthy: the committed decision is then \
                     answered with its attestation",
                    self.commit_timeout().as_millis()
                ),
            );
        };
        let proof = match self.inner.lookup.inclusion_proof(index, cp.size) {
            Ok(p) => p,
            Err(e) => {
                self.set_integrity_failure(format!("inclusion proof of decision {index}: {e}"));
                return Answer::deny(DenyReason::IntegrityFailure, e.to_string());
            }
        };
        let receipt = Receipt {
            format: RECEIPT_FORMAT.into(),
            record: record.clone(),
            inclusion_proof: proof,
            checkpoint: (*cp).clone(),
        };
        // Invariant 6: serve only what the quorum attested. The majority
        // signed roots of records they computed themselves; a record that
        // is not under that root was altered here.
        if let Err(e) = verify_receipt_inclusion(&receipt) {
            self.set_integrity_failure(format!(
                "stored decision {index} is not the one a majority attested: {e}"
            ));
            return Answer::deny(
                DenyReason::IntegrityFailure,
                format!("decision {index} does not match the attested checkpoint: {e}"),
            );
        }
        Answer {
            message: format!(
                "allowed by a committed decision attested by {} of {} voters",
                cp.cosignatures.len(),
                cp.voters.len()
            ),
            receipt_json: serde_json::to_string(&receipt).ok(),
            receipt: Some(Box::new(receipt)),
            ..answer
        }
    }

    /// Sends the request to the leader and relays its answer. A leader's
    /// ALLOW is accepted only with a record whose hash verifies.
    async fn forward(&self, leader: u64, addr: &str, req: AuthorizeRequest) -> Answer {
        let channel = match self.inner.channels.get(addr, leader) {
            Ok(c) => c,
            Err(e) => return Answer::deny(DenyReason::NoQuorum, format!("leader {leader}: {e}")),
        };
        metrics::counter!("quorate_authorize_forwarded_total").increment(1);
        let sent = std::time::Instant::now();
        let relayed = send_forward(
            channel,
            quorate_proto::request_to_wire(&req),
            self.commit_timeout(),
        )
        .await;
        metrics::histogram!("quorate_forward_seconds").record(sent.elapsed().as_secs_f64());
        match relayed {
            Ok(resp) => self.check_relayed(crate::api::answer_from_wire(&resp, &req)),
            Err(ForwardFailure::NotSent(e)) => Answer::deny(
                DenyReason::NoQuorum,
                format!("leader {leader} unreachable: {e}"),
            ),
            Err(ForwardFailure::Unknown(e)) => Answer::deny(
                DenyReason::Unavailable,
                format!("leader {leader}: {e}; outcome unknown"),
            ),
        }
    }

    /// Fail closed on what a leader sends back: in attested mode a relayed
    /// ALLOW must carry a receipt for this very record whose checkpoint a
    /// majority of this node's applied voters cosigned.
    fn check_relayed(&self, answer: Answer) -> Answer {
        if answer.decision != Decision::Allow || self.inner.cfg.answer == AnswerMode::Committed {
            return answer;
        }
        let refuse = |why: String| {
            metrics::counter!("quorate_relay_refused_total").increment(1);
            Answer::deny(
                DenyReason::Unattested,
                format!("the leader's ALLOW is not attested: {why}; refusing to relay it"),
            )
        };
        let (Some(record), Some(receipt)) = (answer.record.as_ref(), answer.receipt.as_ref())
        else {
            return refuse("it carries no receipt".into());
        };
        if receipt.record != *record {
            return refuse("its receipt is for another record".into());
        }
        if let Err(e) = verify_receipt_inclusion(receipt) {
            return refuse(e.to_string());
        }
        let cp = &receipt.checkpoint;
        let cached = self
            .inner
            .relayed_checkpoint
            .lock()
            .ok()
            .is_some_and(|g| g.as_ref() == Some(cp));
        if !cached {
            if cp.cluster_id != self.inner.cfg.cluster_id {
                return refuse(format!("its checkpoint is of cluster {:?}", cp.cluster_id));
            }
            let voters = self.inner.lookup.applied_voters();
            let judges: Vec<(u64, Option<&quorate_core::PublicKey>)> = voters
                .iter()
                .map(|v| (v.node_id, Some(&v.public_key)))
                .collect();
            if let Err(e) = quorate_core::proof::verify_cosignatures(cp, &judges) {
                return refuse(e.to_string());
            }
            if let Ok(mut g) = self.inner.relayed_checkpoint.lock() {
                *g = Some(cp.clone());
            }
        }
        answer
    }
}

/// How a forwarded request failed, by what is known of its fate.
#[derive(Debug)]
pub(crate) enum ForwardFailure {
    /// No connection to the leader could be made: nothing was sent, so
    /// nothing was proposed on our behalf (NO_QUORUM).
    NotSent(String),
    /// The connection was up and the request may have reached the leader:
    /// it may commit (UNAVAILABLE, outcome unknown). A reset after sending
    /// is this, whatever its error text says.
    Unknown(String),
}

/// Sends one forwarded Authorize over `channel`. The failure is classified
/// by the stage it happened in (connecting, or after), never by the text
/// of an error message.
pub(crate) async fn send_forward(
    channel: tonic::transport::Channel,
    req: quorate_proto::v1::AuthorizeRequest,
    timeout: Duration,
) -> Result<quorate_proto::v1::AuthorizeResponse, ForwardFailure> {
    let mut client = GovernanceClient::new(channel);
    let mut request = tonic::Request::new(req);
    request.set_timeout(timeout);
    request.metadata_mut().insert(
        FORWARDED_METADATA_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    client
        .authorize(request)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| {
            let message = from_status(&s).message;
            if never_connected(&s) {
                ForwardFailure::NotSent(message)
            } else {
                ForwardFailure::Unknown(message)
            }
        })
}

/// True only when the status's cause is an I/O error of a kind that can
/// happen solely while connecting (refused, unreachable, or the server's
/// certificate refused by our connector), so nothing was sent. Any other
/// failure, a reset or a broken pipe included, may have reached the
/// leader. Decided by the error's kind, never its text.
pub(super) fn never_connected(s: &tonic::Status) -> bool {
    use std::error::Error as _;
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = s.source();
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::PermissionDenied
            );
        }
        cause = e.source();
    }
    false
}
