//! Federation: membership changes (learners, voters, removal), the
//! decision watch stream, and staged cross-domain rollouts. Every state
//! change here is a Raft entry (a membership entry or a `Command`), so
//! every node, voter or learner, sees it at the same log index.

use std::collections::BTreeSet;
use std::time::Duration;

use openraft::ChangeMembers;
use openraft::ServerState;
use quorate_core::rollout::{Rollout, RolloutPlan};
use quorate_core::{Command, CommandResponse, DecisionRecord, ErrorCode};
use quorate_policy::CompiledPolicy;
use quorate_raft::NodeInfo;
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::node::{Node, now_ms};

/// Learners further behind than this are not promoted unless asked.
pub(crate) const DEFAULT_MAX_LAG: u64 = 1000;

/// How often an idle watch stream checks that its node may still stream.
const WATCH_CONTAINMENT_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Records per read while a watch catches up.
const WATCH_PAGE: usize = 512;

impl Node {
    /// Refuses unless this node leads; the message names the leader so the
    /// client can retry there (the CLI does).
    fn require_leader(&self) -> Result<(), ApiError> {
        // A contained node changes nothing, except that the suspicions only
        // a majority's signatures clear do not stop it from replacing voters
        // that can no longer sign (`Facts::may_change_membership`; removals
        // are narrowed further in `remove_node`).
        if !self.may_change_membership()
            && let Some((reason, msg)) = self.containment()
        {
            return Err(ApiError::new(
                ErrorCode::Contained,
                format!("node is contained ({reason}): {msg}"),
            ));
        }
        let m = self.metrics();
        if m.state == ServerState::Leader {
            return Ok(());
        }
        let hint = m
            .current_leader
            .and_then(|l| {
                m.membership_config
                    .membership()
                    .get_node(&l)
                    .map(|n| format!("the leader is node {l} at {}", n.addr))
            })
            .unwrap_or_else(|| "no leader is known".into());
        Err(ApiError::new(
            ErrorCode::Unavailable,
            format!("not the leader; {hint}; retry there"),
        ))
    }

    fn membership_error(e: impl std::fmt::Display) -> ApiError {
        ApiError::new(
            ErrorCode::FailedPrecondition,
            format!("membership change refused: {e}"),
        )
    }

    /// Adds `node_id` at `addr` as a learner, after asking it who it is.
    pub async fn add_learner(&self, node_id: u64, addr: String) -> Result<u64, ApiError> {
        self.require_leader()?;
        if node_id == 0 || addr.is_empty() {
            return Err(ApiError::invalid("node_id must be >= 1 and addr non-empty"));
        }
        let m = self.metrics();
        if m.membership_config
            .membership()
            .get_node(&node_id)
            .is_some()
        {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                format!(
                    "node {node_id} is already a member; `quorate cluster remove {node_id}` first to re-add it"
                ),
            ));
        }
        // Bound to node_id: with TLS its certificate must name it, and the
        // reply must prove it holds the key it reports.
        let id = quorate_raft::network::fetch_identity(
            &self.inner.channels,
            self.inner.id,
            node_id,
            &addr,
            Duration::from_secs(3),
        )
        .await
        .map_err(|e| {
            ApiError::unavailable(format!(
                "cannot reach the new node at {addr} to learn its identity: {e}; start it first \
                 (bootstrap = false) and check the address"
            ))
        })?;
        if id.node_id != node_id || id.cluster_id != self.inner.cfg.cluster_id {
            return Err(ApiError::invalid(format!(
                "{addr} answers as node {} of cluster {:?}, not node {node_id} of {:?}",
                id.node_id, id.cluster_id, self.inner.cfg.cluster_id
            )));
        }
        let info = NodeInfo {
            addr,
            public_key: id.public_key,
            region: id.region,
        };
        let r = self
            .inner
            .raft
            .add_learner(node_id, info, false)
            .await
            .map_err(Self::membership_error)?;
        metrics::counter!("quorate_membership_changes_total", "change" => "add_learner")
            .increment(1);
        Ok(r.log_id.index)
    }

    /// Makes learner `node_id` a voter, unless it lags by more than
    /// `max_lag` entries.
    pub async fn promote_voter(&self, node_id: u64, max_lag: u64) -> Result<u64, ApiError> {
        self.require_leader()?;
        let max_lag = if max_lag == 0 {
            DEFAULT_MAX_LAG
        } else {
            max_lag
        };
        let status = self.status();
        let Some(member) = status.members.iter().find(|m| m.node_id == node_id) else {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!(
                    "node {node_id} is not a member; add it with `quorate cluster add-learner` first"
                ),
            ));
        };
        if member.voter {
            return Err(ApiError::new(
                ErrorCode::FailedPrecondition,
                format!("node {node_id} is already a voter"),
            ));
        }
        match member.lag {
            Some(lag) if lag <= max_lag => {}
            lag => {
                return Err(ApiError::new(
                    ErrorCode::FailedPrecondition,
                    format!(
                        "learner {node_id} is {} entries behind the leader (limit {max_lag}); \
                         wait until `quorate cluster members` shows it caught up",
                        lag.map_or("an unknown number of".to_string(), |l| l.to_string())
                    ),
                ));
            }
        }
        let r = self
            .inner
            .raft
            .change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([node_id])), false)
            .await
            .map_err(Self::membership_error)?;
        metrics::counter!("quorate_membership_changes_total", "change" => "promote").increment(1);
        Ok(r.log_id.index)
    }

    /// Removes `node_id` (voter or learner) from the membership.
    pub async fn remove_node(&self, node_id: u64) -> Result<u64, ApiError> {
        self.require_leader()?;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        if membership.get_node(&node_id).is_none() {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("node {node_id} is not a member"),
            ));
        }
        let voters: BTreeSet<u64> = membership.voter_ids().collect();
        // A leader in doubt (its answers unattested, its root unconfirmed)
        // removes only a voter that cannot sign for its seat: one that
        // proves a key other than the membership's. A voter signing validly
        // may be the one that caught this leader out; removing it could
        // make a wrong leader its own majority.
        if voters.contains(&node_id)
            && let Some((reason, msg)) = self.containment()
        {
            let signs = self.signs_for_its_seat(node_id).await;
            if signs != Some(false) {
                return Err(ApiError::new(
                    ErrorCode::Contained,
                    format!(
                        "node is contained ({reason}): {msg}; while it is, it removes only a voter \
                         that proves a key other than the membership's, and voter {node_id} {}",
                        if signs.is_some() {
                            "signs with its listed key"
                        } else {
                            "did not answer who it is"
                        }
                    ),
                ));
            }
        }
        let change = if voters.contains(&node_id) {
            if voters.len() == 1 {
                return Err(ApiError::new(
                    ErrorCode::FailedPrecondition,
                    "refusing to remove the last voter",
                ));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([node_id]))
        } else {
            ChangeMembers::RemoveNodes(BTreeSet::from([node_id]))
        };
        let r = self
            .inner
            .raft
            .change_membership(change, false)
            .await
            .map_err(Self::membership_error)?;
        metrics::counter!("quorate_membership_changes_total", "change" => "remove").increment(1);
        Ok(r.log_id.index)
    }

    /// Streams decisions from `from` (1 = the first) on, forever: what is
    /// in the log now, then every record as this node applies it. Records
    /// are read from the applied decision log, which is identical on every
    /// node, so every node streams the same sequence.
    pub fn watch(
        &self,
        from: u64,
        domain: Option<String>,
    ) -> Result<mpsc::Receiver<Result<DecisionRecord, ApiError>>, ApiError> {
        // A node that cannot vouch for its own records must not stream
        // them: not when the stream opens, and not once it contains later.
        let contained = |(reason, msg): (quorate_core::DenyReason, String)| {
            ApiError::new(
                ErrorCode::Contained,
                format!("node is contained ({reason}): {msg}; watch another node"),
            )
        };
        if let Some(c) = self.state_in_doubt() {
            return Err(contained(c));
        }
        let node = self.clone();
        let lookup = self.inner.lookup.clone();
        let mut applied = lookup.subscribe();
        let (tx, rx) = mpsc::channel(256);
        tokio::spawn(async move {
            let mut next = from.max(1);
            loop {
                if let Some(c) = node.state_in_doubt() {
                    let _ = tx.send(Err(contained(c))).await;
                    return;
                }
                // Mark the current value seen before reading, so a record
                // applied after this read wakes the wait below.
                applied.borrow_and_update();
                let page = match lookup.decisions(next, WATCH_PAGE, None) {
                    Ok(p) => p,
                    Err(e) => {
                        let _ = tx.send(Err(ApiError::internal(e.to_string()))).await;
                        return;
                    }
                };
                let full = page.len() == WATCH_PAGE;
                for rec in page {
                    next = rec.index + 1;
                    if domain.as_deref().is_some_and(|d| d != rec.request.domain) {
                        continue;
                    }
                    if tx.send(Ok(rec)).await.is_err() {
                        return; // the client went away
                    }
                }
                if full {
                    continue;
                }
                tokio::select! {
                    changed = applied.changed() => if changed.is_err() { return },
                    _ = tx.closed() => return,
                    // Containment can come without an apply (the periodic
                    // re-verification, an unconfirmed root): look again.
                    _ = tokio::time::sleep(WATCH_CONTAINMENT_CHECK) => {}
                }
            }
        });
        Ok(rx)
    }

    /// Starts a rollout. The plan's shape, every candidate's Cedar text and
    /// signatures are checked here, before anything is proposed; the state
    /// machine checks them again, identically on every replica.
    pub async fn start_rollout(&self, plan_json: &str) -> Result<Rollout, ApiError> {
        let plan: RolloutPlan = serde_json::from_str(plan_json)
            .map_err(|e| ApiError::invalid(format!("rollout plan: {e}")))?;
        plan.check(&self.inner.limits)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        for c in &plan.candidates {
            CompiledPolicy::compile(&c.policy_text, c.schema.as_deref(), &self.inner.limits)
                .map_err(|e| {
                    ApiError::new(
                        ErrorCode::InvalidPolicy,
                        format!("candidate for {:?}: {e}; nothing was changed", c.domain),
                    )
                })?;
            self.check_policy_signature(&c.policy_text, c.schema.as_deref(), c.signature.as_ref())
                .map_err(|e| {
                    ApiError::new(
                        e.code,
                        format!("candidate for {:?}: {}", c.domain, e.message),
                    )
                })?;
        }
        self.rollout_write(Command::StartRollout {
            plan,
            timestamp_ms: now_ms(),
        })
        .await
    }

    pub async fn promote_rollout(&self, id: String, force: bool) -> Result<Rollout, ApiError> {
        self.rollout_write(Command::PromoteRollout {
            id,
            force,
            timestamp_ms: now_ms(),
        })
        .await
    }

    pub async fn rollback_rollout(&self, id: String) -> Result<Rollout, ApiError> {
        self.rollout_write(Command::RollbackRollout {
            id,
            timestamp_ms: now_ms(),
        })
        .await
    }

    async fn rollout_write(&self, cmd: Command) -> Result<Rollout, ApiError> {
        match self.write(cmd).await? {
            CommandResponse::Rollout(r) => Ok(*r),
            CommandResponse::Rejected(r) => Err(ApiError::new(r.code, r.message)),
            other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
        }
    }

    /// A rollout's state (the latest when `id` is empty). Linearizable.
    pub async fn get_rollout(&self, id: &str) -> Result<Rollout, ApiError> {
        self.linearize().await?;
        self.inner
            .lookup
            .rollout(id)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    if id.is_empty() {
                        "no rollout has been started".to_string()
                    } else {
                        format!("no rollout with id {id:?}")
                    },
                )
            })
    }
}
