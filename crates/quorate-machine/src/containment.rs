//! Containment (invariant 2: fail closed) as one pure function: from what a
//! node knows about itself and the cluster (`Facts`) to the reason it must
//! DENY everything right now, or `None`. The server's `Node::containment`
//! gathers the facts from a live node, the simulation from a simulated one;
//! every rule lives here, in priority order, with a table test of
//! every row below.
//!
//! The order matters only for which reason is reported: any row that
//! matches contains. Evidence about this node's own state comes first (it
//! outlives any quorum), then membership, then quorum contact, then the
//! suspicion of an unconfirmed root.

use std::time::Duration;

use quorate_core::{DenyReason, PublicKey};

/// What this node is in Raft right now, with the timings that prove (or
/// fail to prove) it is part of a quorum.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// Leading; how long ago a quorum last acknowledged it (`None`: never).
    /// The only voter of its membership is its own quorum: openraft does
    /// not refresh `quorum_acked` while it idles, and nothing else can
    /// ever be elected.
    Leader {
        quorum_acked: Option<Duration>,
        sole_voter: bool,
    },
    /// Following (voter or learner): the leader it knows, and how long ago
    /// that leader last reached it (`None`: never).
    Follower {
        leader: Option<u64>,
        contact: Option<Duration>,
    },
    /// Candidate, shutting down, or anything else: part of no quorum.
    Other(String),
}

/// Everything containment is decided from. A fact that could not be read
/// (a poisoned lock) is reported as the worst case by whoever gathers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// Stored state failed verification (start-up, periodic, a replay).
    pub integrity_failure: Option<String>,
    /// Recorded evidence that a validly signed root differs from ours.
    pub divergence: Option<String>,
    /// The first record this node's answers left unattested by a majority,
    /// still not covered by a final or attested checkpoint.
    pub unattested: Option<u64>,
    /// The membership lists another key for this node: (listed, own).
    pub key_mismatch: Option<(PublicKey, PublicKey)>,
    /// openraft stopped with a fatal error.
    pub raft_stopped: Option<String>,
    /// This node is in the effective membership.
    pub member: bool,
    pub role: Role,
    /// How long quorum contact stays valid (openraft's leader lease,
    /// `raft.election_timeout_max_ms`).
    pub lease: Duration,
    /// This node's oldest signed root that no final checkpoint covers yet,
    /// and how long ago it signed it.
    pub unconfirmed: Option<(u64, Duration)>,
    /// `checkpoint.finality_timeout_ms`.
    pub finality_timeout: Duration,
}

impl Facts {
    /// Evidence, not suspicion, that this node's own state is wrong: a
    /// failed verification, a recorded divergence, a key the cluster does
    /// not know it by. Such a node does not campaign (and, like any node in
    /// doubt, hands leadership over).
    ///
    /// Suspicion is not evidence, because only a leader clears it: an
    /// unconfirmed root is cleared by a final checkpoint, an unattested
    /// answer by a checkpoint a majority attested, and only a leader
    /// collects and persists those. An unattested leader may simply have
    /// had too few attesting voters in reach (the whole-product simulation,
    /// seed 8: one voter failed verification, another was partitioned and
    /// behind; the unattested one was the only voter both electable and up
    /// to date, and the cluster never recovered while it refused to
    /// campaign). A wrong one is caught anyway: it hands over, the honest
    /// majority's checkpoint gives it a recorded divergence, and that is
    /// evidence.
    pub fn evidence_against_itself(&self) -> bool {
        self.integrity_failure.is_some() || self.divergence.is_some() || self.key_mismatch.is_some()
    }

    /// Whether a leader hands leadership over: on evidence against itself,
    /// and when its own answers went unattested (it may be the wrong one;
    /// if it is not, it may win again, since unattested is no bar to
    /// campaigning). The suspicion of an unconfirmed root is no reason: the
    /// leader's own checkpoint is what clears it.
    pub fn hands_over(&self) -> bool {
        self.evidence_against_itself() || self.unattested.is_some()
    }

    /// Whether this node may sign the tree heads it computed (invariant 3:
    /// a node whose stored state failed verification, or that holds a
    /// validly signed root other than its own, vouches for nothing).
    ///
    /// An unattested or unconfirmed node does attest: its signature says
    /// only what it computed, and a majority agreeing with it is exactly
    /// what clears those suspicions. Refusing would make them permanent.
    pub fn may_attest(&self) -> bool {
        self.integrity_failure.is_none() && self.divergence.is_none() && self.key_mismatch.is_none()
    }

    /// Whether this node, leading, may change the membership: when nothing
    /// but the two suspicions (an unattested answer, an unconfirmed root)
    /// contains it. Those are cleared only by a majority of voters'
    /// signatures; when the voters can no longer sign (their keys lost with
    /// their disks), replacing them is the only way back, and refusing it
    /// would leave the cluster contained for good (t24). Every other reason
    /// refuses it: evidence against this node's own state, not a member,
    /// no quorum (which could not commit it anyway). The server narrows
    /// removals further: a leader in doubt removes only a voter that
    /// proves a key other than the membership's (`Node::remove_node`).
    pub fn may_change_membership(&self) -> bool {
        containment(&Facts {
            unattested: None,
            unconfirmed: None,
            ..self.clone()
        })
        .is_none()
    }
}

/// Why this node must not answer ALLOW right now, if it must not.
pub fn containment(f: &Facts) -> Option<(DenyReason, String)> {
    // Invariant 6: this node cannot vouch for its own stored state.
    if let Some(msg) = &f.integrity_failure {
        return Some((DenyReason::IntegrityFailure, msg.clone()));
    }
    // Invariant 3: a voter cosigned a root this node did not compute.
    if let Some(d) = &f.divergence {
        return Some((DenyReason::Divergence, d.clone()));
    }
    // Invariant 1: no majority attested this node's decisions.
    if let Some(index) = f.unattested {
        return Some((
            DenyReason::Unattested,
            format!(
                "no majority of voters attested this node's decision log up to record {index}; \
                 its evaluation is unconfirmed until a checkpoint covering it is final"
            ),
        ));
    }
    // Its cosignatures could not verify under the key the cluster knows it
    // by: its identity is in doubt.
    if let Some((listed, own)) = &f.key_mismatch {
        return Some((
            DenyReason::IntegrityFailure,
            format!(
                "the membership lists key {listed} for this node, but its key file holds {own}"
            ),
        ));
    }
    if let Some(fatal) = &f.raft_stopped {
        return Some((
            DenyReason::IntegrityFailure,
            format!("Raft stopped: {fatal}"),
        ));
    }
    // A node removed from the membership (or not yet added) is part of no
    // quorum, whatever else it still believes.
    if !f.member {
        return Some((
            DenyReason::NoQuorum,
            "this node is not a member of the cluster (removed, or not added yet: \
             `quorate cluster add-learner`)"
                .into(),
        ));
    }
    let quorum = match &f.role {
        Role::Leader {
            sole_voter: true, ..
        } => None,
        Role::Leader {
            quorum_acked: Some(t),
            ..
        } if *t < f.lease => None,
        Role::Leader {
            quorum_acked: Some(t),
            ..
        } => Some(format!(
            "leader without a quorum acknowledgement for {} ms",
            t.as_millis()
        )),
        Role::Leader {
            quorum_acked: None, ..
        } => Some("leader has no quorum acknowledgement yet".into()),
        // A learner is judged as a follower: it serves while a leader keeps
        // replicating to it. A follower that has heard nothing from its
        // leader for a lease may already be outvoted.
        Role::Follower { leader: None, .. } => Some("no known leader".into()),
        Role::Follower {
            leader: Some(_),
            contact: Some(t),
        } if *t < f.lease => None,
        Role::Follower {
            leader: Some(l),
            contact,
        } => Some(format!(
            "no contact from leader {l} for {} ms",
            contact.map_or(u128::MAX, |d| d.as_millis())
        )),
        Role::Other(state) => Some(format!("node is {state}")),
    };
    if let Some(msg) = quorum {
        return Some((DenyReason::NoQuorum, msg));
    }
    // Invariant 3, the other direction: a node whose own signed root no
    // quorum confirms may be the one that diverged.
    match f.unconfirmed {
        Some((size, since)) if since > f.finality_timeout => Some((
            DenyReason::Divergence,
            format!(
                "no quorum has cosigned this node's root at size {size} for {} ms; its \
                 history may differ from the quorum's",
                since.as_millis()
            ),
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LEASE: Duration = Duration::from_millis(1000);

    fn healthy() -> Facts {
        Facts {
            integrity_failure: None,
            divergence: None,
            unattested: None,
            key_mismatch: None,
            raft_stopped: None,
            member: true,
            role: Role::Leader {
                quorum_acked: Some(Duration::from_millis(10)),
                sole_voter: false,
            },
            lease: LEASE,
            unconfirmed: None,
            finality_timeout: Duration::from_millis(5000),
        }
    }

    fn key(b: u8) -> PublicKey {
        quorate_core::SecretKey::from_seed([b; 32]).public()
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn every_row() {
        type Edit = fn(&mut Facts);
        let rows: Vec<(&str, Edit, Option<DenyReason>, &str)> = vec![
            ("healthy leader", |_| {}, None, ""),
            (
                "healthy follower",
                |f| {
                    f.role = Role::Follower {
                        leader: Some(2),
                        contact: Some(ms(50)),
                    }
                },
                None,
                "",
            ),
            (
                "integrity failure",
                |f| f.integrity_failure = Some("record 5".into()),
                Some(DenyReason::IntegrityFailure),
                "record 5",
            ),
            (
                "recorded divergence",
                |f| f.divergence = Some("node 2 cosigned".into()),
                Some(DenyReason::Divergence),
                "node 2 cosigned",
            ),
            (
                "unattested",
                |f| f.unattested = Some(7),
                Some(DenyReason::Unattested),
                "up to record 7",
            ),
            (
                "key mismatch",
                |f| f.key_mismatch = Some((key(1), key(2))),
                Some(DenyReason::IntegrityFailure),
                "membership lists key",
            ),
            (
                "raft stopped",
                |f| f.raft_stopped = Some("storage error".into()),
                Some(DenyReason::IntegrityFailure),
                "Raft stopped: storage error",
            ),
            (
                "not a member",
                |f| f.member = false,
                Some(DenyReason::NoQuorum),
                "not a member",
            ),
            (
                "leader, quorum ack too old",
                |f| {
                    f.role = Role::Leader {
                        quorum_acked: Some(ms(1500)),
                        sole_voter: false,
                    }
                },
                Some(DenyReason::NoQuorum),
                "for 1500 ms",
            ),
            (
                "sole voter, idle far longer than a lease",
                |f| {
                    f.role = Role::Leader {
                        quorum_acked: Some(ms(60_000)),
                        sole_voter: true,
                    }
                },
                None,
                "",
            ),
            (
                "leader, quorum ack exactly one lease old",
                |f| {
                    f.role = Role::Leader {
                        quorum_acked: Some(LEASE),
                        sole_voter: false,
                    }
                },
                Some(DenyReason::NoQuorum),
                "quorum acknowledgement",
            ),
            (
                "leader, never acknowledged",
                |f| {
                    f.role = Role::Leader {
                        quorum_acked: None,
                        sole_voter: false,
                    }
                },
                Some(DenyReason::NoQuorum),
                "no quorum acknowledgement yet",
            ),
            (
                "follower, no known leader",
                |f| {
                    f.role = Role::Follower {
                        leader: None,
                        contact: Some(ms(1)),
                    }
                },
                Some(DenyReason::NoQuorum),
                "no known leader",
            ),
            (
                "follower, leader silent too long",
                |f| {
                    f.role = Role::Follower {
                        leader: Some(3),
                        contact: Some(ms(1200)),
                    }
                },
                Some(DenyReason::NoQuorum),
                "leader 3 for 1200 ms",
            ),
            (
                "follower, never heard from its leader",
                |f| {
                    f.role = Role::Follower {
                        leader: Some(3),
                        contact: None,
                    }
                },
                Some(DenyReason::NoQuorum),
                "no contact from leader 3",
            ),
            (
                "candidate",
                |f| f.role = Role::Other("Candidate".into()),
                Some(DenyReason::NoQuorum),
                "node is Candidate",
            ),
            (
                "unconfirmed root within the finality timeout",
                |f| f.unconfirmed = Some((9, ms(4000))),
                None,
                "",
            ),
            (
                "unconfirmed root past the finality timeout",
                |f| f.unconfirmed = Some((9, ms(6000))),
                Some(DenyReason::Divergence),
                "root at size 9",
            ),
            (
                "evidence outranks quorum loss",
                |f| {
                    f.role = Role::Leader {
                        quorum_acked: None,
                        sole_voter: false,
                    };
                    f.integrity_failure = Some("record 1".into());
                },
                Some(DenyReason::IntegrityFailure),
                "record 1",
            ),
            (
                "quorum loss outranks an unconfirmed root",
                |f| {
                    f.role = Role::Other("Shutdown".into());
                    f.unconfirmed = Some((9, ms(9000)));
                },
                Some(DenyReason::NoQuorum),
                "Shutdown",
            ),
        ];
        for (name, edit, reason, says) in rows {
            let mut f = healthy();
            edit(&mut f);
            let got = containment(&f);
            assert_eq!(got.as_ref().map(|c| c.0), reason, "{name}: {got:?}");
            if let Some((_, msg)) = got {
                assert!(msg.contains(says), "{name}: {msg:?} lacks {says:?}");
            }
        }
    }

    /// Which facts stop a node from signing its tree heads or from leading.
    /// The suspicion of an unconfirmed root must do neither: only a leader
    /// that attests its own head and persists the checkpoint clears it
    /// (found by the Jepsen delay run, where every node ended unconfirmed or
    /// unattested and the cluster never served again).
    #[test]
    fn what_stops_attesting_and_leading() {
        type Edit = fn(&mut Facts);
        // (row, edit, may attest, evidence against itself (no campaign),
        // a leader hands over, may change the membership)
        let rows: Vec<(&str, Edit, bool, bool, bool, bool)> = vec![
            ("healthy", |_| {}, true, false, false, true),
            (
                "unconfirmed root past the finality timeout",
                |f| f.unconfirmed = Some((9, ms(60_000))),
                true,
                false,
                false,
                true,
            ),
            // Campaigns (it may be the only electable voter), but hands over.
            (
                "unattested",
                |f| f.unattested = Some(7),
                true,
                false,
                true,
                true,
            ),
            (
                "unattested and unconfirmed",
                |f| {
                    f.unattested = Some(7);
                    f.unconfirmed = Some((9, ms(60_000)));
                },
                true,
                false,
                true,
                true,
            ),
            (
                "integrity failure",
                |f| f.integrity_failure = Some("record 5".into()),
                false,
                true,
                true,
                false,
            ),
            (
                "recorded divergence",
                |f| f.divergence = Some("node 2 cosigned".into()),
                false,
                true,
                true,
                false,
            ),
            (
                "key mismatch",
                |f| f.key_mismatch = Some((key(1), key(2))),
                false,
                true,
                true,
                false,
            ),
            (
                "no quorum",
                |f| {
                    f.role = Role::Leader {
                        quorum_acked: None,
                        sole_voter: false,
                    }
                },
                true,
                false,
                false,
                false,
            ),
            (
                "not a member",
                |f| f.member = false,
                true,
                false,
                false,
                false,
            ),
        ];
        for (name, edit, attest, evidence, hands_over, membership) in rows {
            let mut f = healthy();
            edit(&mut f);
            assert_eq!(f.may_attest(), attest, "{name}: may attest");
            assert_eq!(f.evidence_against_itself(), evidence, "{name}: evidence");
            assert_eq!(f.hands_over(), hands_over, "{name}: hands over");
            assert_eq!(
                f.may_change_membership(),
                membership,
                "{name}: may change the membership"
            );
        }
    }
}
