//! Gathering the facts containment is decided from (the rules are in
//! `quorate_machine::containment`), the evidence a node records against itself, and
//! the leadership task: a node with evidence against itself neither
//! campaigns nor keeps leading.

use super::*;

impl Node {
    /// Why this node must not answer ALLOW right now, if it must not.
    ///
    /// Invariant 2 (fail closed): any doubt, whether about our own stored
    /// state or about being part of a quorum, is a reason to deny. This is
    /// a fast path that avoids proposing when we know it cannot commit;
    /// safety itself comes from `authorize` answering only committed
    /// records.
    pub fn containment(&self) -> Option<(DenyReason, String)> {
        quorate_machine::containment::containment(&self.containment_facts())
    }

    /// What containment is decided from, read now. A fact behind a lock
    /// poisoned by a panic reads as an integrity failure (fail closed).
    fn containment_facts(&self) -> quorate_machine::containment::Facts {
        use quorate_machine::containment::{Facts, Role};
        let poisoned = "node state lock poisoned by an earlier panic".to_string();
        let mut integrity_failure = match self.inner.integrity.read() {
            Ok(g) => g.clone(),
            Err(_) => Some(poisoned.clone()),
        };
        let unattested = self.unattested_pending().unwrap_or_else(|()| {
            integrity_failure.get_or_insert_with(|| poisoned.clone());
            None
        });
        let unconfirmed = self.unconfirmed_pending().unwrap_or_else(|()| {
            integrity_failure.get_or_insert_with(|| poisoned.clone());
            None
        });
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        let own = self.inner.key.public();
        let listed = m
            .membership_config
            .membership()
            .get_node(&self.inner.id)
            .map(|n| n.public_key);
        let sole_voter = m
            .membership_config
            .membership()
            .voter_ids()
            .eq([self.inner.id]);
        let role = match m.state {
            ServerState::Leader => Role::Leader {
                quorum_acked: m.last_quorum_acked.map(|t| t.elapsed()),
                sole_voter,
            },
            ServerState::Follower | ServerState::Learner => Role::Follower {
                leader: m.current_leader,
                contact: self.inner.contact.since(),
            },
            other => Role::Other(format!("{other:?}")),
        };
        Facts {
            integrity_failure,
            divergence: self.inner.lookup.divergence().map(|d| d.to_string()),
            unattested,
            key_mismatch: listed.filter(|k| *k != own).map(|k| (k, own)),
            raft_stopped: m.running_state.as_ref().err().map(|e| e.to_string()),
            member: listed.is_some(),
            role,
            // openraft's leader lease is election_timeout_max; a follower
            // that has heard nothing from a leader that long may already be
            // outvoted.
            lease: Duration::from_millis(self.inner.cfg.raft.election_timeout_max_ms),
            unconfirmed,
            finality_timeout: Duration::from_millis(self.inner.cfg.checkpoint.finality_timeout_ms),
        }
    }

    /// This node's oldest signed root that no final checkpoint covers, and
    /// how long ago it signed it; cleared once one covers it (invariant 3,
    /// the other direction: a node whose own root no quorum confirms may
    /// be the one that diverged).
    fn unconfirmed_pending(&self) -> Result<Option<(u64, Duration)>, ()> {
        let mut g = self.inner.unconfirmed.lock().map_err(|_| ())?;
        let Some((size, since)) = *g else {
            return Ok(None);
        };
        if self.inner.lookup.last_final() >= size {
            *g = None;
            return Ok(None);
        }
        Ok(Some((size, since.elapsed())))
    }

    /// The first record answered UNATTESTED, until a checkpoint covering
    /// it is final or attested (a majority agreed with this node's root
    /// after all).
    fn unattested_pending(&self) -> Result<Option<u64>, ()> {
        let mut g = self.inner.unattested.lock().map_err(|_| ())?;
        let Some(index) = *g else {
            return Ok(None);
        };
        let confirmed = self
            .inner
            .lookup
            .last_final()
            .max(self.inner.attestations.attested_size());
        if confirmed >= index {
            *g = None;
            return Ok(None);
        }
        Ok(Some(index))
    }

    /// The containment of a node that cannot vouch for its own records
    /// (integrity failure, divergence, an unattested answer): it must not
    /// lead, stream or hand out state. `None` for other containments (no
    /// quorum) and for a healthy node.
    pub fn state_in_doubt(&self) -> Option<(DenyReason, String)> {
        self.containment().filter(|(r, _)| {
            matches!(
                r,
                DenyReason::IntegrityFailure | DenyReason::Divergence | DenyReason::Unattested
            )
        })
    }

    /// Evidence, not suspicion, that this node's state is wrong: a failed
    /// verification, a recorded divergence, a key mismatch. Such a node
    /// does not campaign; a leader hands over on it or on an unattested
    /// answer (`containment::Facts::{evidence_against_itself, hands_over}`).
    fn campaign_and_handover(&self) -> (bool, bool) {
        let f = self.containment_facts();
        (f.evidence_against_itself(), f.hands_over())
    }

    /// Whether voter `id` proves the key the membership lists for it: `None`
    /// when it does not answer (or is not a member), which is no proof
    /// either way.
    pub(crate) async fn signs_for_its_seat(&self, id: u64) -> Option<bool> {
        let (addr, listed) = {
            let m = self.inner.raft.metrics();
            let m = m.borrow_watched();
            let n = m.membership_config.membership().get_node(&id)?;
            (n.addr.clone(), n.public_key)
        };
        let proven = quorate_raft::network::fetch_identity(
            &self.inner.channels,
            self.inner.id,
            id,
            &addr,
            Duration::from_secs(2),
        )
        .await
        .ok()?;
        Some(proven.public_key == listed)
    }

    /// Whether this node may change the membership while contained (see
    /// `containment::Facts::may_change_membership`).
    pub(crate) fn may_change_membership(&self) -> bool {
        self.containment_facts().may_change_membership()
    }

    /// Whether this node may sign the tree heads it computed (see
    /// `containment::Facts::may_attest`).
    pub(crate) fn may_attest(&self) -> bool {
        self.containment_facts().may_attest()
    }

    pub(crate) fn set_unattested(&self, index: u64) {
        match self.inner.unattested.lock() {
            Ok(mut g) => {
                if g.is_none() {
                    tracing::error!(
                        index,
                        "no majority attested this node's decisions; it contains (DENY UNATTESTED)"
                    );
                    *g = Some(index);
                }
            }
            // A poisoned lock cannot record the containment: treat the
            // node's state as unverifiable instead (fail closed).
            Err(_) => self.set_integrity_failure("the attestation state lock is poisoned".into()),
        }
    }

    /// Records that this node signed its root at `size` (the oldest such
    /// unconfirmed signature is the one that counts).
    pub(crate) fn signed_checkpoint(&self, size: u64) {
        let last_final = self.inner.lookup.last_final();
        if let Ok(mut g) = self.inner.unconfirmed.lock() {
            match *g {
                Some((pending, _)) if pending > last_final => {}
                _ => *g = Some((size, std::time::Instant::now())),
            }
        }
    }

    /// A store read's error as an API error. A `Corrupt` one (a record or
    /// index row that fails its check when read) is an integrity failure:
    /// the node contains as if verification had found it (invariant 6).
    pub(crate) fn store_error(&self, e: quorate_store::StoreError) -> ApiError {
        if let quorate_store::StoreError::Corrupt { what, message } = &e {
            self.set_integrity_failure(format!("stored state is corrupt at {what}: {message}"));
        }
        ApiError::internal(e.to_string())
    }

    /// Marks this node's stored state as failed verification: it contains
    /// (DENY INTEGRITY_FAILURE) and stops leading until repaired.
    pub(crate) fn set_integrity_failure(&self, message: String) {
        if let Ok(mut g) = self.inner.integrity.write()
            && g.is_none()
        {
            tracing::error!(
                "{message}; this node contains (DENY INTEGRITY_FAILURE) until repaired"
            );
            *g = Some(message);
        }
        // It must not lead; `leadership_task` also hands leadership over
        // if it leads now.
        self.inner.raft.runtime_config().elect(false);
    }
}

/// How often the leadership task looks at containment.
const LEADERSHIP_CHECK: Duration = Duration::from_millis(100);

/// A node that cannot vouch for its own state (integrity failure,
/// divergence, an unattested answer) must not lead: every follower would
/// forward to it and relay its DENYs, so one node would deny for the whole
/// cluster until someone restarted it. It stops campaigning, and a leader
/// hands leadership to the most up-to-date other voter (invariant 2 keeps
/// it denying meanwhile). A containment that clears gives the operator's
/// choice back.
pub(super) async fn leadership_task(node: Node, mut shutdown: watch::Receiver<bool>) {
    let mut blocked = false;
    let commit_timeout = node.commit_timeout();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LEADERSHIP_CHECK) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // A leader whose own signed head no majority attests within the
        // commit deadline is outvoted on its own history (or not kept up
        // with): UNATTESTED, whether or not an ALLOW was waiting on it.
        if node.metrics().state == ServerState::Leader
            && let Some((size, since)) = node.attestations().oldest_pending_own()
            && since.elapsed() > commit_timeout
        {
            node.set_unattested(size);
        }
        // Campaigning needs no evidence against this node; leading, also no
        // unattested answer. Suspicion (an unconfirmed root, an unattested
        // answer) does not stop campaigning: only a leader's checkpoint
        // clears it. (A node merely suspected still denies everything
        // while contained.)
        let (evidence, in_doubt) = node.campaign_and_handover();
        if evidence != blocked {
            blocked = evidence;
            let operator = node
                .inner
                .electable
                .load(std::sync::atomic::Ordering::Acquire);
            node.inner.raft.runtime_config().elect(operator && !blocked);
        }
        let m = node.metrics();
        if m.state != ServerState::Leader || !in_doubt {
            continue;
        }
        let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
        let matched = |id: &u64| {
            m.replication
                .as_ref()
                .and_then(|r| r.get(id).cloned().flatten())
                .map_or(0, |l| l.index)
        };
        let mut candidates: Vec<u64> = voters.into_iter().filter(|v| *v != node.id()).collect();
        candidates.sort_by_key(|v| (std::cmp::Reverse(matched(v)), *v));
        // Not to a voter that proves a key other than the membership's: it
        // cannot sign for its seat (its key was lost with its disk), it
        // contains as soon as it leads, and handing over to it would bounce
        // leadership between nodes that cannot lead while the one that
        // could replace them (t24) never holds it.
        let mut to = None;
        for v in candidates {
            if node.signs_for_its_seat(v).await != Some(false) {
                to = Some(v);
                break;
            }
        }
        let Some(to) = to else {
            // No voter may take over: ask again an election's time later,
            // not every check (each ask costs every voter a signature).
            tokio::time::sleep(Duration::from_millis(
                node.inner.cfg.raft.election_timeout_max_ms,
            ))
            .await;
            continue;
        };
        tracing::warn!(to, "contained leader hands leadership over");
        metrics::counter!("quorate_leadership_handovers_total").increment(1);
        if let Err(e) = node.inner.raft.trigger().transfer_leader(to).await {
            tracing::error!("leadership transfer to {to}: {e}");
        }
        // Give the transfer an election's time before trying again.
        tokio::time::sleep(Duration::from_millis(
            node.inner.cfg.raft.election_timeout_max_ms,
        ))
        .await;
    }
}
