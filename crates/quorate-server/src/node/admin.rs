//! Policy publication and activation, administrative writes (gated by
//! containment), checkpoint persistence, linearizable reads.

use super::*;

impl Node {
    /// Publishes a policy version after checking it compiles. Invalid Cedar
    /// is refused here, before anything is proposed (invariant 7).
    pub async fn publish_policy(
        &self,
        domain: String,
        policy_text: String,
        schema: Option<String>,
        activate: bool,
        signature: Option<PolicySignature>,
    ) -> Result<PolicyPublished, ApiError> {
        quorate_core::validate::domain(&domain, &self.inner.limits)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        CompiledPolicy::compile(&policy_text, schema.as_deref(), &self.inner.limits)
            .map_err(|e| ApiError::new(ErrorCode::InvalidPolicy, e.to_string()))?;
        self.check_policy_signature(&policy_text, schema.as_deref(), signature.as_ref())?;
        let cmd = Command::PublishPolicy {
            domain,
            policy_text,
            schema,
            activate,
            signature,
            timestamp_ms: now_ms(),
        };
        match self.write(cmd).await? {
            CommandResponse::Published(p) => Ok(p),
            CommandResponse::Rejected(r) => Err(ApiError::new(r.code, r.message)),
            other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Invariant 7: with `require_signed_policies`, a policy without a valid
    /// signature by a trusted publisher is refused before anything is
    /// proposed. A signature that is present is always checked.
    pub(crate) fn check_policy_signature(
        &self,
        policy_text: &str,
        schema: Option<&str>,
        signature: Option<&PolicySignature>,
    ) -> Result<(), ApiError> {
        let sec = &self.inner.cfg.security;
        let Some(sig) = signature else {
            if sec.require_signed_policies {
                return Err(ApiError::invalid(
                    "this cluster requires signed policies: sign the exact policy bytes with \
                     `quorate policy sign --key KEY` and publish with --signature",
                ));
            }
            return Ok(());
        };
        sig.verify(policy_text, schema)
            .map_err(|e| ApiError::invalid(format!("{e} over these exact policy bytes")))?;
        let trusted = sec
            .trusted_publishers
            .iter()
            .any(|p| p.public_key == sig.publisher_key);
        if sec.require_signed_policies && !trusted {
            return Err(ApiError::invalid(format!(
                "policy is signed by {}, which is not in security.trusted_publishers",
                sig.publisher_key
            )));
        }
        Ok(())
    }

    pub async fn activate_policy(
        &self,
        domain: String,
        version: u64,
    ) -> Result<PolicyActivated, ApiError> {
        quorate_core::validate::domain(&domain, &self.inner.limits)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        if version == 0 {
            return Err(ApiError::invalid("version must be >= 1"));
        }
        let cmd = Command::ActivatePolicy {
            domain,
            version,
            timestamp_ms: now_ms(),
        };
        match self.write(cmd).await? {
            CommandResponse::Activated(a) => Ok(a),
            CommandResponse::Rejected(r) => Err(ApiError::new(r.code, r.message)),
            other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Proposes an administrative command on the leader (admin writes are
    /// rare; they are not batched). Followers refuse with the leader's
    /// address so the client can retry there; the CLI does that itself.
    pub(crate) async fn write(&self, cmd: Command) -> Result<CommandResponse, ApiError> {
        // Invariant 2: a contained node changes nothing.
        if let Some((reason, msg)) = self.containment() {
            return Err(ApiError::new(
                ErrorCode::Contained,
                format!("node is contained ({reason}): {msg}"),
            ));
        }
        self.propose(cmd).await
    }

    /// Persists a checkpoint a majority attested (`Command::Checkpoint`).
    ///
    /// Not gated like answers and admin writes: a checkpoint is what clears
    /// an unconfirmed root or an unattested answer, so a leader contained
    /// for either must still persist one, or it stays contained for good
    /// (found by the Jepsen delay run). It is safe: every replica checks
    /// each cosignature in it against its own root, and a wrong one
    /// finalises nothing. Only a node with evidence against its own state
    /// (`may_attest` false) proposes nothing.
    pub(crate) async fn write_checkpoint(&self, cmd: Command) -> Result<CommandResponse, ApiError> {
        if !self.may_attest() {
            return Err(ApiError::new(
                ErrorCode::Contained,
                "this node's own state is in doubt; it persists no checkpoint",
            ));
        }
        self.propose(cmd).await
    }

    /// Proposes `cmd` on the leader and waits for it to apply, within the
    /// commit deadline.
    async fn propose(&self, cmd: Command) -> Result<CommandResponse, ApiError> {
        let m = self.metrics();
        if m.state != ServerState::Leader {
            let hint = self
                .leader_addr(&m)
                .map(|(id, addr)| format!("the leader is node {id} at {addr}"))
                .unwrap_or_else(|| "no leader is known".into());
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("not the leader; {hint}; retry there"),
            ));
        }
        let deadline = self.commit_timeout();
        let started = std::time::Instant::now();
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, self.inner.raft.client_write(cmd.clone())).await {
                Err(_) => {
                    return Err(ApiError::new(
                        ErrorCode::CommitTimeout,
                        format!(
                            "not committed within {} ms; outcome unknown: read back before retrying",
                            deadline.as_millis()
                        ),
                    ));
                }
                // A leader refreshing its lease (just elected, or after a
                // slow round) refuses writes before appending them; retrying
                // within the deadline cannot duplicate anything.
                Ok(Err(e))
                    if matches!(
                        e.api_error(),
                        Some(openraft::error::ClientWriteError::ForwardToLeader(f))
                            if f.leader_id.is_none()
                    ) && started.elapsed() + Duration::from_millis(50) < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(e)) => return Err(ApiError::unavailable(e.to_string())),
                Ok(Ok(resp)) => return Ok(resp.data),
            }
        }
    }

    /// Waits until this node has applied everything committed before the
    /// call: ReadIndex on the leader, or the leader's read index fetched and
    /// awaited on a follower. Never `is_leader()`, never a lease.
    pub async fn linearize(&self) -> Result<(), ApiError> {
        let deadline = self.commit_timeout();
        let m = self.metrics();
        if m.state == ServerState::Leader {
            return match tokio::time::timeout(
                deadline,
                self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(ApiError::unavailable(format!("read index failed: {e}"))),
                Err(_) => Err(ApiError::unavailable("read index timed out")),
            };
        }
        let Some((leader, addr)) = self.leader_addr(&m) else {
            return Err(ApiError::unavailable(
                "no known leader to take a read index from",
            ));
        };
        let log_id = fetch_read_index(&self.inner.channels, self.inner.id, leader, &addr, deadline)
            .await
            .map_err(|e| ApiError::unavailable(format!("read index from leader {leader}: {e}")))?;
        let lin = Linearizer::new(self.inner.id, ReadLogId::from_log_id(log_id), None);
        match lin.try_await_ready(&self.inner.raft, Some(deadline)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ApiError::unavailable(
                "this node did not catch up to the leader's read index in time",
            )),
            Err(e) => Err(ApiError::unavailable(e.to_string())),
        }
    }

    pub async fn get_policy(
        &self,
        domain: &str,
        version: Option<u64>,
    ) -> Result<(PolicyVersion, bool), ApiError> {
        self.linearize().await?;
        self.inner
            .lookup
            .policy(domain, version)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| match version {
                Some(v) => ApiError::new(
                    ErrorCode::NotFound,
                    format!("domain {domain:?} has no version {v}"),
                ),
                None => ApiError::new(
                    ErrorCode::NotFound,
                    format!("domain {domain:?} has no active policy version"),
                ),
            })
    }

    pub async fn get_decision_by_index(&self, index: u64) -> Result<DecisionRecord, ApiError> {
        self.linearize().await?;
        self.inner
            .lookup
            .decision(index)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("no decision at index {index}"))
            })
    }

    pub async fn get_decision_by_request(
        &self,
        domain: &str,
        request_id: &str,
    ) -> Result<DecisionRecord, ApiError> {
        self.linearize().await?;
        self.inner
            .lookup
            .decision_by_request(domain, request_id)
            .map_err(|e| self.store_error(e))?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("no decision for request id {request_id:?} in domain {domain:?}"),
                )
            })
    }
}
