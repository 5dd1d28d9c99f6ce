//! Who may call what: a client's role from its certificate (or none, on an
//! insecure dev node), checked before a request is decoded.

use super::*;

/// Who may call what on the Governance API, by certificate role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Authorize: agents, and nodes forwarding for their clients.
    Decide,
    /// Commit probes: agents (who may already write decisions, which cost
    /// more), admins (operators checking the write path) and nodes.
    Probe,
    /// Publish, activate, rollouts, membership: admins.
    Administer,
    /// Logs, receipts, exports, the watch stream, rollout status:
    /// auditors, admins and nodes.
    Audit,
    /// A receipt by (domain, request id): the agent that chose the id, and
    /// auditors, admins and nodes.
    OwnReceipt,
    /// Status, policy reads, the trust file, checkpoints: any authenticated
    /// party.
    Read,
}

impl Node {
    /// Invariant 7 at the door: with TLS, every Governance call names a
    /// verified identity of this cluster whose role allows it; without TLS
    /// (`insecure = true`, explicit in the config) everything is allowed.
    pub(crate) fn admit_client(
        &self,
        peer: Option<&quorate_raft::tls::PeerInfo>,
        rpc: &'static str,
        access: Access,
    ) -> Result<(), ApiError> {
        let client = self.check_role(peer, rpc, access)?;
        // Per-client rate limit, before anything else happens: a refused
        // call changes nothing (invariant 7).
        if let Some(client) = client
            && !self.inner.limiter.allow(&client)
        {
            metrics::counter!("quorate_rate_limited_total", "rpc" => rpc).increment(1);
            return Err(ApiError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "{client} is over its limit of {} requests/s (burst {}); slow down and retry",
                    self.inner.cfg.limits.client_requests_per_second,
                    self.inner.cfg.limits.client_burst
                ),
            ));
        }
        Ok(())
    }

    /// The role check; returns the key the caller is rate-limited under
    /// (`None` for nodes forwarding for their clients).
    fn check_role(
        &self,
        peer: Option<&quorate_raft::tls::PeerInfo>,
        rpc: &'static str,
        access: Access,
    ) -> Result<Option<String>, ApiError> {
        use quorate_raft::tls::{Principal, Role};
        if self.inner.tls.is_none() {
            let addr = peer.and_then(|p| p.remote).map(|a| a.ip().to_string());
            return Ok(Some(addr.unwrap_or_else(|| "unknown".into())));
        }
        let deny = |why: String| {
            metrics::counter!("quorate_permission_denied_total", "rpc" => rpc).increment(1);
            Err(ApiError::new(ErrorCode::PermissionDenied, why))
        };
        let Some(id) = peer.and_then(|p| p.identity.as_ref()) else {
            return deny(format!("{rpc} needs a client certificate of this cluster"));
        };
        if id.cluster_id != self.inner.cfg.cluster_id {
            return deny(format!("{id} belongs to another cluster"));
        }
        let allowed = match (&id.principal, access) {
            (_, Access::Read | Access::OwnReceipt) => true,
            (Principal::Node(_), Access::Decide | Access::Probe | Access::Audit) => true,
            (Principal::Node(_), Access::Administer) => false,
            (Principal::Client { role, .. }, a) => matches!(
                (role, a),
                (Role::Agent, Access::Decide | Access::Probe)
                    | (
                        Role::Admin,
                        Access::Administer | Access::Audit | Access::Probe
                    )
                    | (Role::Auditor, Access::Audit)
            ),
        };
        if !allowed {
            let needs = match access {
                Access::Decide => "an agent certificate",
                Access::Probe => "an agent or admin certificate",
                Access::Administer => "an admin certificate",
                Access::Audit => {
                    "an auditor or admin certificate (agents may fetch receipts of \
                                   their own requests by domain and request id)"
                }
                Access::OwnReceipt | Access::Read => "a certificate",
            };
            return deny(format!("{id} may not call {rpc}: it needs {needs}"));
        }
        Ok(match id.principal {
            Principal::Node(_) => None,
            Principal::Client { .. } => Some(id.to_string()),
        })
    }
}
