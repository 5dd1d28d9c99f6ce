//! What a node reports about itself and the cluster: `Status`, and the
//! gauges it publishes.

use super::*;

/// This node's view of itself and the cluster.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NodeStatus {
    pub node_id: u64,
    pub cluster_id: String,
    pub region: String,
    pub role: String,
    pub term: u64,
    pub leader_id: Option<u64>,
    pub quorate: bool,
    pub containment_reason: Option<DenyReason>,
    pub containment_message: String,
    /// Since when (ms since the epoch) this node has been contained for
    /// `containment_reason`, as this node observed it (to about half a
    /// second).
    pub contained_since_ms: Option<u64>,
    pub last_log_index: u64,
    /// The last log index this node knows to be committed.
    pub commit_index: u64,
    pub last_applied_index: u64,
    pub decision_count: u64,
    pub chain_head_hash: String,
    pub public_key: String,
    /// Records covered by the largest final (quorum-cosigned) checkpoint.
    pub last_final_checkpoint: u64,
    /// The voters whose cosignatures that checkpoint carries.
    pub last_final_cosigners: Vec<u64>,
    /// When this node's TLS certificate expires (ms since the epoch).
    pub tls_cert_expiry_ms: Option<u64>,
    /// Where browsers reach this node's console (empty when it is off).
    pub console_url: String,
    pub members: Vec<MemberStatus>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct MemberStatus {
    pub node_id: u64,
    pub addr: String,
    pub voter: bool,
    pub public_key: String,
    pub region: String,
    /// On the leader: the last log index replicated to the member, and how
    /// many entries it is behind the leader's last log index.
    pub matched_index: Option<u64>,
    pub lag: Option<u64>,
}

impl Node {
    pub fn head(&self) -> ChainHead {
        self.inner.lookup.head()
    }

    pub fn status(&self) -> NodeStatus {
        let m = self.metrics();
        let containment = self.containment();
        let head = self.inner.lookup.head();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let last = m.last_log_index.unwrap_or(0);
        let matched = |id: &u64| -> Option<u64> {
            if *id == self.inner.id && m.state == ServerState::Leader {
                return Some(last);
            }
            let r = m.replication.as_ref()?;
            Some(r.get(id)?.as_ref().map(|l| l.index).unwrap_or(0))
        };
        let members: Vec<MemberStatus> = membership
            .nodes()
            .map(|(id, n)| {
                let matched_index = matched(id);
                MemberStatus {
                    node_id: *id,
                    addr: n.addr.clone(),
                    voter: voters.contains(id),
                    public_key: n.public_key.to_hex(),
                    region: n.region.clone(),
                    matched_index,
                    lag: matched_index.map(|i| last.saturating_sub(i)),
                }
            })
            .collect();
        NodeStatus {
            node_id: self.inner.id,
            cluster_id: self.inner.cfg.cluster_id.clone(),
            region: self.inner.cfg.region.clone(),
            role: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .to_string(),
            term: m.current_term,
            leader_id: m.current_leader,
            quorate: containment.is_none(),
            contained_since_ms: self.contained_since(containment.as_ref().map(|c| c.0)),
            containment_reason: containment.as_ref().map(|c| c.0),
            containment_message: containment.map(|c| c.1).unwrap_or_default(),
            last_log_index: m.last_log_index.unwrap_or(0),
            commit_index: m.local_committed.map(|l| l.index).unwrap_or(0),
            last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            decision_count: head.count,
            chain_head_hash: head.hash.to_hex(),
            public_key: self.inner.key.public().to_hex(),
            last_final_checkpoint: self.inner.lookup.last_final(),
            last_final_cosigners: self
                .inner
                .lookup
                .latest_final_checkpoint()
                .ok()
                .flatten()
                .map(|c| {
                    c.checkpoint
                        .cosignatures
                        .iter()
                        .map(|s| s.node_id)
                        .collect()
                })
                .unwrap_or_default(),
            tls_cert_expiry_ms: self.inner.tls.as_ref().and_then(|t| t.not_after_ms()),
            console_url: self.console_url(&members),
            members,
        }
    }

    /// `[console] public_url`, or the scheme this node serves, the host of
    /// its advertised gRPC address (as the membership, then the config,
    /// lists it) and the port of `http_addr`.
    fn console_url(&self, members: &[MemberStatus]) -> String {
        let cfg = &self.inner.cfg;
        if !cfg.console.enabled {
            return String::new();
        }
        if let Some(u) = &cfg.console.public_url {
            return u.clone();
        }
        let advertised = members
            .iter()
            .find(|m| m.node_id == self.inner.id)
            .map(|m| m.addr.clone())
            .or_else(|| {
                cfg.members
                    .iter()
                    .find(|m| m.id == self.inner.id)
                    .map(|m| m.addr.clone())
            })
            .unwrap_or_else(|| cfg.grpc_addr.to_string());
        let host = advertised
            .rsplit_once(':')
            .map(|(h, _)| h.to_string())
            .unwrap_or(advertised);
        let scheme = if self.inner.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{host}:{}/", cfg.http_addr.port())
    }

    /// Since when this node has been contained for `reason`: the first
    /// time a report saw this reason with nothing else in between (the
    /// gauges task reports every 500 ms).
    fn contained_since(&self, reason: Option<DenyReason>) -> Option<u64> {
        let mut g = self
            .inner
            .contained_since
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        match (reason, *g) {
            (None, _) => {
                *g = None;
                None
            }
            (Some(r), Some((was, since))) if was == r => Some(since),
            (Some(r), _) => {
                let now = now_ms();
                *g = Some((r, now));
                Some(now)
            }
        }
    }

    pub(super) fn publish_gauges(&self) {
        let s = self.status();
        metrics::gauge!("quorate_quorate").set(if s.quorate { 1.0 } else { 0.0 });
        metrics::gauge!("quorate_is_leader").set(if s.role == "leader" { 1.0 } else { 0.0 });
        metrics::gauge!("quorate_raft_term").set(s.term as f64);
        metrics::gauge!("quorate_raft_last_log_index").set(s.last_log_index as f64);
        metrics::gauge!("quorate_raft_last_applied_index").set(s.last_applied_index as f64);
        metrics::gauge!("quorate_decision_log_records").set(s.decision_count as f64);
        // On the leader: how far each member is behind, by region and role.
        for m in &s.members {
            if let Some(lag) = m.lag {
                metrics::gauge!(
                    "quorate_member_lag_entries",
                    "node" => m.node_id.to_string(),
                    "region" => m.region.clone(),
                    "role" => if m.voter { "voter" } else { "learner" },
                )
                .set(lag as f64);
            }
        }
        for reason in DenyReason::ALL {
            let on = s.containment_reason == Some(reason);
            metrics::gauge!("quorate_contained", "reason" => reason.code()).set(if on {
                1.0
            } else {
                0.0
            });
        }
    }
}
