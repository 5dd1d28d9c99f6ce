//! One running simulated replica: openraft over the simulated disk and
//! network, the governance machine applying entries, and around them what
//! a real node adds: signing its own tree heads, the leader collecting
//! attestations into checkpoints and persisting them, containment decided
//! by the product's own pure function (`quorate_machine::containment`),
//! the handover of leadership by a node in doubt, and the governed path:
//! an ALLOW leaves only with a receipt under a checkpoint a majority of
//! voters attested; a follower relays one only after checking it itself.
//!
//! Mirrors `quorate-server`'s `node` and `attest` modules; the rules that
//! decide (containment, the majority, receipt and cosignature checks, the
//! machine) are the same functions, not copies.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::Instant as _;
use openraft::ServerState;
use openraft::async_runtime::WatchReceiver;
use quorate_core::proof::{RECEIPT_FORMAT, verify_receipt_inclusion};
use quorate_core::{
    Attestation, AuthorizeRequest, Checkpoint, Command, CommandResponse, Cosignature, Decision,
    DecisionRecord, DenyReason, Digest, PublicKey, Receipt, SecretKey, Signature, majority,
};
use quorate_machine::CheckpointVoter;
use quorate_machine::containment::{Facts, Role, containment};
use tokio::time::Instant;

use super::SimRaft;
use super::net::Net;
use super::store::{MemSm, lock, voters_of};

/// The node's timings (the real node's config keys of the same names).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    /// `raft.election_timeout_max_ms`: openraft's leader lease.
    pub lease: Duration,
    /// `commit_timeout_ms`: how long an answer waits to commit and attest.
    pub commit_timeout: Duration,
    /// `checkpoint.finality_timeout_ms`.
    pub finality_timeout: Duration,
    /// `checkpoint.interval_ms`.
    pub checkpoint_interval: Duration,
    /// `answer = "committed"`: ALLOW at commit, before any attestation
    /// (what that mode gives up is what the simulation then catches).
    pub answer_committed: bool,
}

/// What a client got back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The committed record; with its receipt and the voters its
    /// checkpoint was attested under (none in `committed` answer mode).
    Allow {
        record: Box<DecisionRecord>,
        receipt: Option<Box<Receipt>>,
        voters: Vec<u64>,
    },
    Deny {
        reason: DenyReason,
        /// The committed record, when the DENY was decided in the log.
        record: Option<Box<DecisionRecord>>,
        /// The replica that decided it (DENY is answered at commit, not
        /// attested: a wrong evaluator's DENY is its own).
        decided_by: u64,
    },
}

impl Answer {
    fn deny(reason: DenyReason) -> Answer {
        Answer::Deny {
            reason,
            record: None,
            decided_by: 0,
        }
    }
}

#[derive(Debug, Default)]
struct NodeState {
    integrity: Option<String>,
    unattested: Option<u64>,
    unconfirmed: Option<(u64, Instant)>,
    contact: Option<Instant>,
    /// Verified attestations by size: signer → (root, signature).
    slots: BTreeMap<u64, BTreeMap<u64, (Digest, Signature)>>,
    /// The latest checkpoint a majority attested.
    best: Option<Checkpoint>,
    checkpoint_proposed: u64,
}

/// What every replica of a run shares: the voters' keys, the cluster id,
/// the timings.
#[derive(Debug, Clone)]
pub struct Env {
    pub keys: Arc<BTreeMap<u64, PublicKey>>,
    pub cluster: String,
    pub timing: Timing,
}

/// One incarnation of a replica: from a start to its crash.
pub struct Instance {
    pub id: u64,
    pub raft: SimRaft,
    pub sm: MemSm,
    key: SecretKey,
    keys: Arc<BTreeMap<u64, PublicKey>>,
    cluster: String,
    timing: Timing,
    st: Mutex<NodeState>,
    alive: AtomicBool,
}

impl Instance {
    pub fn new(
        id: u64,
        raft: SimRaft,
        sm: MemSm,
        key: SecretKey,
        env: &Env,
        integrity: Option<String>,
    ) -> Instance {
        Instance {
            id,
            raft,
            sm,
            key,
            keys: env.keys.clone(),
            cluster: env.cluster.clone(),
            timing: env.timing,
            st: Mutex::new(NodeState {
                integrity,
                ..NodeState::default()
            }),
            alive: AtomicBool::new(true),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, NodeState> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_alive(&self) -> bool {
        self.alive.load(Ordering::Relaxed)
    }

    pub fn kill(&self) {
        self.alive.store(false, Ordering::Relaxed);
    }

    /// Contact from the leader, dated back to its last quorum
    /// acknowledgement when it said (`quorum_age_ms` in the real transport).
    pub fn heard_from(&self, quorum_age: Option<Duration>) {
        let now = Instant::now();
        self.state().contact = Some(quorum_age.map_or(now, |a| now.checked_sub(a).unwrap_or(now)));
    }

    /// How long ago a quorum last acknowledged this node as leader.
    pub fn quorum_age(&self) -> Option<Duration> {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        m.last_quorum_acked.map(|t| t.elapsed())
    }

    /// Why this replica's stored state is known bad, if it is.
    pub fn integrity_failure(&self) -> Option<String> {
        let own = self.state().integrity.clone();
        own.or_else(|| {
            self.sm
                .apply_failed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone()
        })
    }

    fn last_final(&self) -> u64 {
        lock(&self.sm.disk).volatile.sm.gov.proof.last_final
    }

    /// The applied membership's voters, with their keys.
    pub fn voters(&self) -> Vec<CheckpointVoter> {
        let d = lock(&self.sm.disk);
        voters_of(d.volatile.sm.membership.membership(), &self.keys)
    }

    /// What containment is decided from, read now (as the real node's
    /// `containment_facts`).
    pub fn facts(&self) -> Facts {
        let last_final = self.last_final();
        let integrity_failure = self.integrity_failure();
        let divergence = lock(&self.sm.disk)
            .volatile
            .sm
            .gov
            .divergence
            .as_ref()
            .map(|d| d.to_string());
        let (unattested, unconfirmed, contact) = {
            let mut st = self.state();
            let attested = st.best.as_ref().map_or(0, |c| c.size);
            if st.unattested.is_some_and(|i| last_final.max(attested) >= i) {
                st.unattested = None;
            }
            if st.unconfirmed.is_some_and(|(s, _)| last_final >= s) {
                st.unconfirmed = None;
            }
            (
                st.unattested,
                st.unconfirmed.map(|(s, at)| (s, at.elapsed())),
                st.contact.map(|t| t.elapsed()),
            )
        };
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        let member = membership.get_node(&self.id).is_some();
        let sole_voter = membership.voter_ids().eq([self.id]);
        let role = match m.state {
            ServerState::Leader => Role::Leader {
                quorum_acked: m.last_quorum_acked.map(|t| t.elapsed()),
                sole_voter,
            },
            ServerState::Follower | ServerState::Learner => Role::Follower {
                leader: m.current_leader,
                contact,
            },
            other => Role::Other(format!("{other:?}")),
        };
        Facts {
            integrity_failure,
            divergence,
            unattested,
            key_mismatch: None,
            raft_stopped: m.running_state.as_ref().err().map(|e| e.to_string()),
            member,
            role,
            lease: self.timing.lease,
            unconfirmed,
            finality_timeout: self.timing.finality_timeout,
        }
    }

    pub fn containment(&self) -> Option<(DenyReason, String)> {
        containment(&self.facts())
    }

    fn leader(&self) -> (bool, Option<u64>) {
        let m = self.raft.metrics();
        let m = m.borrow_watched();
        (m.state == ServerState::Leader, m.current_leader)
    }

    /// Counts an attestation (the leader's collection): only a voter of
    /// the applied membership attests, under its own key; it counts
    /// towards a size only if its root is this node's own there.
    pub fn add_attestation(&self, a: &Attestation) -> Result<(), String> {
        let voters = self.voters();
        let Some(v) = voters.iter().find(|v| v.node_id == a.signer) else {
            return Err(format!("node {} is not a voter", a.signer));
        };
        a.verify(&self.cluster, &v.public_key)?;
        let own = lock(&self.sm.disk).volatile.sm.roots.get(&a.size).copied();
        let mut st = self.state();
        let slot = st.slots.entry(a.size).or_default();
        slot.insert(a.signer, (a.root, a.signature));
        let Some(own) = own else { return Ok(()) };
        let cosignatures: Vec<Cosignature> = slot
            .iter()
            .filter(|(id, (root, _))| *root == own && voters.iter().any(|v| v.node_id == **id))
            .map(|(id, (_, sig))| Cosignature {
                node_id: *id,
                signature: *sig,
            })
            .collect();
        let newer = st.best.as_ref().is_none_or(|b| b.size < a.size);
        if newer && cosignatures.len() >= majority(voters.len()) {
            st.best = Some(Checkpoint {
                cluster_id: self.cluster.clone(),
                size: a.size,
                root: own,
                cosignatures,
                voters: voters.iter().map(|v| v.node_id).collect(),
            });
            // Sizes at or below an attested one need no more counting.
            st.slots = st.slots.split_off(&(a.size + 1));
        }
        Ok(())
    }

    /// Signs every tree head this replica reached and sends the signature
    /// to the leader (its own collection when it leads).
    pub async fn attest_task(self: Arc<Self>, net: Net) {
        while self.is_alive() {
            tokio::time::sleep(Duration::from_millis(2)).await;
            let heads =
                std::mem::take(&mut *self.sm.heads.lock().unwrap_or_else(|p| p.into_inner()));
            if heads.is_empty() || !self.facts().may_attest() {
                continue;
            }
            let last_final = self.last_final();
            for (size, root) in heads {
                let a = Attestation::sign(&self.key, self.id, &self.cluster, size, root);
                {
                    let mut st = self.state();
                    match st.unconfirmed {
                        Some((pending, _)) if pending > last_final => {}
                        _ => st.unconfirmed = Some((size, Instant::now())),
                    }
                }
                match self.leader() {
                    (true, _) => {
                        let _ = self.add_attestation(&a);
                    }
                    (false, Some(l)) => {
                        let net2 = net.clone();
                        let from = self.id;
                        tokio::spawn(async move {
                            let _ = net2
                                .call(from, l, move |n| async move { n.add_attestation(&a) })
                                .await;
                        });
                    }
                    (false, None) => {}
                }
            }
        }
    }

    /// The leader persists its latest attested checkpoint as one entry,
    /// at most every `checkpoint_interval`; gated only on evidence against
    /// its own state (the checkpoint is what clears mere suspicion).
    pub async fn checkpoint_task(self: Arc<Self>) {
        while self.is_alive() {
            tokio::time::sleep(self.timing.checkpoint_interval).await;
            if !self.leader().0 || !self.facts().may_attest() {
                continue;
            }
            let best = {
                let st = self.state();
                st.best.clone().filter(|b| b.size > st.checkpoint_proposed)
            };
            let Some(cp) = best.filter(|b| b.size > self.last_final()) else {
                continue;
            };
            self.state().checkpoint_proposed = cp.size;
            let cmd = Command::Checkpoint {
                size: cp.size,
                root: cp.root,
                cosignatures: cp.cosignatures,
            };
            let _ =
                tokio::time::timeout(self.timing.commit_timeout, self.raft.client_write(cmd)).await;
        }
    }

    /// A node with evidence against itself does not campaign; a leader
    /// with evidence or an unattested answer hands leadership to the most
    /// up-to-date other voter (as the real node's `leadership_task`).
    pub async fn leadership_task(self: Arc<Self>) {
        let mut blocked = false;
        while self.is_alive() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            let facts = self.facts();
            let evidence = facts.evidence_against_itself();
            if evidence != blocked {
                self.raft.runtime_config().elect(!evidence);
                blocked = evidence;
            }
            if !facts.hands_over() || !self.leader().0 {
                continue;
            }
            let to = {
                let m = self.raft.metrics();
                let m = m.borrow_watched();
                let matched = |id: &u64| {
                    m.replication
                        .as_ref()
                        .and_then(|r| r.get(id).cloned().flatten())
                        .map_or(0, |l| l.index)
                };
                m.membership_config
                    .membership()
                    .voter_ids()
                    .filter(|v| *v != self.id)
                    .max_by_key(|v| (matched(v), std::cmp::Reverse(*v)))
            };
            if let Some(to) = to {
                let _ = self.raft.trigger().transfer_leader(to).await;
                tokio::time::sleep(self.timing.lease).await;
            }
        }
    }

    /// A client's request at this node: contained → DENY now; leader →
    /// decide; follower → forward to the leader and relay its answer only
    /// after checking the receipt under its own voters.
    pub async fn authorize(
        self: Arc<Self>,
        net: Net,
        req: AuthorizeRequest,
        now_ms: u64,
    ) -> Answer {
        if let Some((reason, _)) = self.containment() {
            return Answer::deny(reason);
        }
        match self.leader() {
            (true, _) => self.lead(req, now_ms).await,
            (false, Some(l)) => {
                let from = self.id;
                let relayed = net
                    .call(from, l, move |n| {
                        let req = req.clone();
                        async move { Ok(n.lead(req, now_ms).await) }
                    })
                    .await;
                match relayed {
                    Err(_) => Answer::deny(DenyReason::Unavailable),
                    Ok(Answer::Allow {
                        record,
                        receipt,
                        voters,
                    }) => {
                        let checked = match &receipt {
                            Some(r) => self.check_relayed(r),
                            None if self.timing.answer_committed => Ok(()),
                            None => Err("no receipt".to_string()),
                        };
                        match (checked, self.containment()) {
                            (Ok(()), None) => Answer::Allow {
                                record,
                                receipt,
                                voters,
                            },
                            (Ok(()), Some((reason, _))) => Answer::deny(reason),
                            (Err(_), _) => Answer::deny(DenyReason::Unattested),
                        }
                    }
                    Ok(deny) => deny,
                }
            }
            (false, None) => Answer::deny(DenyReason::NoQuorum),
        }
    }

    /// A follower relays an ALLOW only with a receipt for its record whose
    /// checkpoint a majority of its own applied voters cosigned.
    fn check_relayed(&self, receipt: &Receipt) -> Result<(), String> {
        verify_receipt_inclusion(receipt).map_err(|e| e.to_string())?;
        let voters = self.voters();
        let judges: Vec<(u64, Option<&PublicKey>)> = voters
            .iter()
            .map(|v| (v.node_id, Some(&v.public_key)))
            .collect();
        quorate_core::proof::verify_cosignatures(&receipt.checkpoint, &judges)
            .map_err(|e| e.to_string())
    }

    /// The leader's governed path (as `quorate-server`'s `authorize`).
    pub async fn lead(self: Arc<Self>, req: AuthorizeRequest, now_ms: u64) -> Answer {
        if let Some((reason, _)) = self.containment() {
            return Answer::deny(reason);
        }
        if !self.leader().0 {
            return Answer::deny(DenyReason::Unavailable);
        }
        let cmd = Command::Authorize {
            requests: vec![req],
            timestamp_ms: now_ms,
        };
        let started = Instant::now();
        let written =
            tokio::time::timeout(self.timing.commit_timeout, self.raft.client_write(cmd)).await;
        // An unknown outcome is a refusal, never a pass (invariant 2).
        let Ok(Ok(resp)) = written else {
            return Answer::deny(DenyReason::CommitTimeout);
        };
        let CommandResponse::Authorized(outcomes) = resp.data else {
            return Answer::deny(DenyReason::InvalidRequest);
        };
        let Some(outcome) = outcomes.into_iter().next() else {
            return Answer::deny(DenyReason::InvalidRequest);
        };
        let record = outcome.record;
        if record.decision != Decision::Allow {
            return Answer::Deny {
                reason: record.reason.unwrap_or(DenyReason::Policy),
                record: Some(Box::new(record)),
                decided_by: self.id,
            };
        }
        if self.timing.answer_committed {
            return Answer::Allow {
                record: Box::new(record),
                receipt: None,
                voters: Vec::new(),
            };
        }
        // Invariant 1: no ALLOW before a majority attested a checkpoint
        // covering it.
        let deadline = started + self.timing.commit_timeout;
        let cp = loop {
            let best = self.state().best.clone();
            if let Some(cp) = best.filter(|c| c.size >= record.index) {
                break cp;
            }
            if Instant::now() >= deadline || !self.is_alive() {
                let mut st = self.state();
                st.unattested.get_or_insert(record.index);
                return Answer::Deny {
                    reason: DenyReason::Unattested,
                    record: Some(Box::new(record)),
                    decided_by: self.id,
                };
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        // The receipt is built from this node's stored record: one altered
        // on its disk is never served as attested.
        let receipt = {
            let d = lock(&self.sm.disk);
            let sm = &d.volatile.sm;
            let stored = sm.record(record.index);
            let proof = quorate_core::merkle::inclusion_proof(sm, record.index - 1, cp.size);
            match (stored, proof) {
                (Some(Ok(stored)), Ok(proof)) => Receipt {
                    format: RECEIPT_FORMAT.to_string(),
                    record: stored,
                    inclusion_proof: proof,
                    checkpoint: cp.clone(),
                },
                _ => {
                    drop(d);
                    self.state().integrity = Some(format!(
                        "record {} cannot be proven under its checkpoint",
                        record.index
                    ));
                    return Answer::deny(DenyReason::IntegrityFailure);
                }
            }
        };
        if let Err(e) = verify_receipt_inclusion(&receipt) {
            self.state().integrity = Some(format!("record {}: {e}", record.index));
            return Answer::deny(DenyReason::IntegrityFailure);
        }
        if let Some((reason, _)) = self.containment() {
            return Answer::deny(reason);
        }
        Answer::Allow {
            record: Box::new(receipt.record.clone()),
            voters: cp.voters.clone(),
            receipt: Some(Box::new(receipt)),
        }
    }
}
