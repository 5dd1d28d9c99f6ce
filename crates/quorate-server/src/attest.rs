//! Attested answers (invariant 1): no ALLOW leaves the cluster before a
//! majority of voters, each having applied the decision itself, has signed
//! a checkpoint that covers it.
//!
//! Every voter, after applying an entry that appended records, signs the
//! tree head (size, root) it computed itself: one signature per voter per
//! batch. Followers send theirs straight to the leader (`Attest`, not
//! through the log); the leader verifies each against the signer's key in
//! the applied membership and counts it only if the root equals its own at
//! that size. A size signed by a majority (the leader's own signature is
//! one) is an attested checkpoint: every ALLOW at or below it is answered,
//! with a receipt built from it. The checkpoint task persists the latest
//! one as a `Command::Checkpoint` entry afterwards.
//!
//! Entries are the same on every replica, so every voter reaches the same
//! sizes; signing every head (not only the latest) is what guarantees that
//! a majority signs one size together.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use quorate_core::{Attestation, Checkpoint, Cosignature, Digest, Signature, majority};
use quorate_store::CheckpointVoter;
use tokio::sync::{oneshot, watch};

use crate::node::Node;

/// Tree heads awaiting a majority are kept for at most this many sizes.
const MAX_PENDING_SIZES: usize = 4096;

/// Why an attestation was not counted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum AttestError {
    #[error("node {0} is not a voter of the applied membership")]
    NotVoter(u64),
    #[error("the attestation of node {signer} at size {size} does not verify: {message}")]
    BadSignature {
        signer: u64,
        size: u64,
        message: String,
    },
}

#[derive(Debug, Default)]
struct Slot {
    /// This node's own root at the size, once it has applied and signed it.
    own: Option<Digest>,
    /// When it did (or when it last became leader, if later).
    own_at: Option<std::time::Instant>,
    /// Verified signatures by voter, with the root each signed.
    votes: BTreeMap<u64, (Digest, Signature)>,
}

#[derive(Debug, Default)]
struct Tracker {
    slots: BTreeMap<u64, Slot>,
    /// Answers waiting for a checkpoint covering their record, by record
    /// index: released together when one is attested (no per-answer wake
    /// on every attestation).
    waiters: BTreeMap<u64, Vec<oneshot::Sender<Arc<Checkpoint>>>>,
}

/// The leader's collection of attestations and the latest attested
/// checkpoint. Followers keep one too; nothing sends to it while they
/// follow.
#[derive(Debug)]
pub(crate) struct Attestations {
    cluster_id: String,
    tracker: Mutex<Tracker>,
    best: watch::Sender<Option<Arc<Checkpoint>>>,
}

impl Attestations {
    pub(crate) fn new(cluster_id: &str) -> Attestations {
        Attestations {
            cluster_id: cluster_id.to_string(),
            tracker: Mutex::new(Tracker::default()),
            best: watch::Sender::new(None),
        }
    }

    /// The latest checkpoint a majority attested, if any.
    pub(crate) fn best(&self) -> Option<Arc<Checkpoint>> {
        self.best.borrow().clone()
    }

    /// Notified with each newly attested checkpoint.
    pub(crate) fn subscribe(&self) -> watch::Receiver<Option<Arc<Checkpoint>>> {
        self.best.subscribe()
    }

    /// Records covered by the latest attested checkpoint.
    pub(crate) fn attested_size(&self) -> u64 {
        self.best.borrow().as_ref().map_or(0, |c| c.size)
    }

    /// Counts this node's own signature over its own root.
    pub(crate) fn add_own(&self, a: &Attestation, voters: &[CheckpointVoter]) {
        self.insert(a, true, voters);
    }

    /// Checks a voter's attestation and counts it. `voters` is the applied
    /// membership's voters with their keys: only they attest, each under
    /// its own key.
    pub(crate) fn add_peer(
        &self,
        a: &Attestation,
        voters: &[CheckpointVoter],
    ) -> Result<(), AttestError> {
        let Some(v) = voters.iter().find(|v| v.node_id == a.signer) else {
            return Err(AttestError::NotVoter(a.signer));
        };
        a.verify(&self.cluster_id, &v.public_key)
            .map_err(|message| AttestError::BadSignature {
                signer: a.signer,
                size: a.size,
                message,
            })?;
        self.insert(a, false, voters);
        Ok(())
    }

    fn insert(&self, a: &Attestation, own: bool, voters: &[CheckpointVoter]) {
        if a.size <= self.attested_size() {
            return;
        }
        let Ok(mut t) = self.tracker.lock() else {
            // A poisoned tracker attests nothing: answers time out as
            // UNATTESTED (fail closed).
            return;
        };
        let slot = t.slots.entry(a.size).or_default();
        if own {
            slot.own = Some(a.root);
            slot.own_at = Some(std::time::Instant::now());
        }
        slot.votes.insert(a.signer, (a.root, a.signature));
        if let Some(own_root) = slot.own {
            let mismatched = slot.votes.values().filter(|(r, _)| *r != own_root).count();
            if mismatched > 0 {
                metrics::counter!("quorate_attestation_mismatches_total").increment(1);
            }
            let agreeing: Vec<Cosignature> = slot
                .votes
                .iter()
                .filter(|(id, (r, _))| *r == own_root && voters.iter().any(|v| v.node_id == **id))
                .map(|(id, (_, sig))| Cosignature {
                    node_id: *id,
                    signature: *sig,
                })
                .collect();
            if agreeing.len() >= majority(voters.len()) {
                let cp = Checkpoint {
                    cluster_id: self.cluster_id.clone(),
                    size: a.size,
                    root: own_root,
                    cosignatures: agreeing,
                    voters: voters.iter().map(|v| v.node_id).collect(),
                };
                t.slots = t.slots.split_off(&(a.size + 1));
                let cp = Arc::new(cp);
                let mut released = t.waiters.split_off(&(a.size + 1));
                std::mem::swap(&mut released, &mut t.waiters);
                self.best.send_replace(Some(cp.clone()));
                drop(t);
                metrics::counter!("quorate_attested_checkpoints_total").increment(1);
                for tx in released.into_values().flatten() {
                    let _ = tx.send(cp.clone());
                }
                return;
            }
        }
        while t.slots.len() > MAX_PENDING_SIZES {
            t.slots.pop_first();
        }
    }

    /// The smallest size this node signed that no majority has attested
    /// yet, and since when: on a leader, evidence that its voters do not
    /// agree with it (or do not keep up).
    pub(crate) fn oldest_pending_own(&self) -> Option<(u64, std::time::Instant)> {
        let t = self.tracker.lock().ok()?;
        t.slots
            .iter()
            .find_map(|(size, s)| s.own_at.map(|at| (*size, at)))
    }

    /// Restarts the clocks of pending own heads (this node just became
    /// leader: its voters send to it from now on).
    pub(crate) fn restart_clocks(&self) {
        if let Ok(mut t) = self.tracker.lock() {
            let now = std::time::Instant::now();
            for s in t.slots.values_mut() {
                if s.own_at.is_some() {
                    s.own_at = Some(now);
                }
            }
        }
    }

    /// Waits until a checkpoint covering record `index` is attested, for
    /// at most `timeout`.
    pub(crate) async fn covering(&self, index: u64, timeout: Duration) -> Option<Arc<Checkpoint>> {
        let rx = {
            let mut t = self.tracker.lock().ok()?;
            // Checked under the lock that releases waiters, so an
            // attestation landing now is either seen here or releases us.
            if let Some(cp) = self.best().filter(|c| c.size >= index) {
                return Some(cp);
            }
            if t.waiters.len() > MAX_PENDING_SIZES {
                // Answers that timed out (their receivers are gone) while no
                // checkpoint was attested here, e.g. after losing leadership.
                t.waiters.retain(|_, w| {
                    w.retain(|tx| !tx.is_closed());
                    !w.is_empty()
                });
            }
            let (tx, rx) = oneshot::channel();
            t.waiters.entry(index).or_default().push(tx);
            rx
        };
        tokio::time::timeout(timeout, rx).await.ok()?.ok()
    }
}

/// How long an attestation task sleeps when nothing is applied: it then
/// retries what it could not send and notices a new leader.
const IDLE_RETRY: Duration = Duration::from_millis(200);
/// Unsent attestations kept for the next try (the newest ones).
const MAX_UNSENT: usize = 1024;

/// Runs on every node; only voters attest. Signs every tree head this node
/// applied, once, and hands the signatures to the leader: its own tracker
/// when it leads, the `Attest` RPC otherwise. When the leader changes, the
/// current head is signed again for the new one.
pub(crate) async fn attest_task(node: Node, mut shutdown: watch::Receiver<bool>) {
    let lookup = node.lookup().clone();
    let mut applied = lookup.subscribe();
    let cluster = node.config().cluster_id.clone();
    let ttl = Duration::from_millis(node.config().commit_timeout_ms);
    let mut last_signed = 0u64;
    let mut last_leader: Option<(u64, u64)> = None;
    let mut unsent: Vec<Attestation> = Vec::new();
    loop {
        tokio::select! {
            r = applied.changed() => if r.is_err() { return },
            _ = tokio::time::sleep(IDLE_RETRY) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        // Invariant 3: a node with evidence against its own state vouches
        // for nothing (suspicion alone does not stop it: see may_attest).
        if !node.may_attest() {
            unsent.clear();
            continue;
        }
        let voters = lookup.applied_voters();
        if !voters.iter().any(|v| v.node_id == node.id()) {
            unsent.clear();
            continue;
        }
        let (leader, term) = {
            let m = node.inner.raft.metrics();
            let m = m.borrow_watched();
            (m.current_leader, m.current_term)
        };
        let Some(leader) = leader else { continue };
        let mut heads = lookup.tree_heads_after(last_signed);
        if last_leader != Some((leader, term)) {
            last_leader = Some((leader, term));
            if leader == node.id() {
                node.attestations().restart_clocks();
            }
            let (size, root) = lookup.tree_head();
            if size > 0 && !heads.iter().any(|(s, _)| *s == size) {
                heads.push((size, root));
            }
        }
        for (size, root) in heads {
            unsent.push(Attestation::sign(
                node.key(),
                node.id(),
                &cluster,
                size,
                root,
            ));
            last_signed = last_signed.max(size);
            node.signed_checkpoint(size);
        }
        if unsent.is_empty() {
            continue;
        }
        if leader == node.id() {
            for a in unsent.drain(..) {
                node.attestations().add_own(&a, &voters);
            }
            continue;
        }
        let Some(addr) = voters_addr(&node, leader) else {
            continue;
        };
        let r =
            quorate_raft::network::attest(node.channels(), node.id(), leader, &addr, &unsent, ttl)
                .await;
        match r {
            Ok(()) => unsent.clear(),
            Err(e) => {
                tracing::debug!(leader, "attestations not delivered: {e}");
                metrics::counter!("quorate_attestations_undelivered_total").increment(1);
                if unsent.len() > MAX_UNSENT {
                    unsent.drain(..unsent.len() - MAX_UNSENT);
                }
            }
        }
    }
}

/// The address of member `id` in the effective membership.
fn voters_addr(node: &Node, id: u64) -> Option<String> {
    let m = node.inner.raft.metrics();
    let m = m.borrow_watched();
    m.membership_config
        .membership()
        .get_node(&id)
        .map(|n| n.addr.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_core::SecretKey;

    fn keys(n: u64) -> Vec<(SecretKey, CheckpointVoter)> {
        (1..=n)
            .map(|id| {
                let k = SecretKey::from_seed([id as u8; 32]);
                let v = CheckpointVoter {
                    node_id: id,
                    public_key: k.public(),
                };
                (k, v)
            })
            .collect()
    }

    fn root(b: u8) -> Digest {
        Digest([b; 32])
    }

    #[test]
    fn a_majority_on_one_root_attests_and_a_minority_does_not() {
        let ks = keys(3);
        let voters: Vec<CheckpointVoter> = ks.iter().map(|(_, v)| *v).collect();
        let a = Attestations::new("c");
        a.add_own(&Attestation::sign(&ks[0].0, 1, "c", 5, root(1)), &voters);
        assert_eq!(a.attested_size(), 0, "the leader alone is not a majority");
        // A voter that signed another root does not count.
        a.add_peer(&Attestation::sign(&ks[1].0, 2, "c", 5, root(2)), &voters)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.attested_size(), 0);
        a.add_peer(&Attestation::sign(&ks[2].0, 3, "c", 5, root(1)), &voters)
            .unwrap_or_else(|e| panic!("{e}"));
        let cp = a.best().unwrap_or_else(|| panic!("attested"));
        assert_eq!((cp.size, cp.root), (5, root(1)));
        assert_eq!(
            cp.cosignatures
                .iter()
                .map(|c| c.node_id)
                .collect::<Vec<_>>(),
            vec![1, 3]
        );
        assert_eq!(cp.voters, vec![1, 2, 3]);
        // What it produced verifies as a checkpoint under those voters.
        let judges: Vec<(u64, Option<&quorate_core::PublicKey>)> = voters
            .iter()
            .map(|v| (v.node_id, Some(&v.public_key)))
            .collect();
        quorate_core::proof::verify_cosignatures(&cp, &judges).unwrap_or_else(|e| panic!("{e}"));
    }

    #[test]
    fn peers_before_the_leader_count_once_the_leader_has_its_own_root() {
        let ks = keys(3);
        let voters: Vec<CheckpointVoter> = ks.iter().map(|(_, v)| *v).collect();
        let a = Attestations::new("c");
        a.add_peer(&Attestation::sign(&ks[1].0, 2, "c", 9, root(7)), &voters)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.attested_size(), 0, "no own root yet");
        a.add_own(&Attestation::sign(&ks[0].0, 1, "c", 9, root(7)), &voters);
        assert_eq!(a.attested_size(), 9);
    }

    #[test]
    fn forged_foreign_and_non_voter_attestations_are_refused() {
        let ks = keys(3);
        let voters: Vec<CheckpointVoter> = ks.iter().map(|(_, v)| *v).collect();
        let a = Attestations::new("c");
        // Signed by node 3's key but claiming node 2.
        let forged = Attestation {
            signer: 2,
            ..Attestation::sign(&ks[2].0, 3, "c", 4, root(1))
        };
        assert!(matches!(
            a.add_peer(&forged, &voters),
            Err(AttestError::BadSignature { .. })
        ));
        // Signed for another cluster.
        let other = Attestation::sign(&ks[1].0, 2, "other", 4, root(1));
        assert!(a.add_peer(&other, &voters).is_err());
        // A learner (not a voter) cannot attest.
        let learner = SecretKey::from_seed([9; 32]);
        assert_eq!(
            a.add_peer(&Attestation::sign(&learner, 9, "c", 4, root(1)), &voters),
            Err(AttestError::NotVoter(9))
        );
        a.add_own(&Attestation::sign(&ks[0].0, 1, "c", 4, root(1)), &voters);
        assert_eq!(a.attested_size(), 0, "none of the refused ones counted");
    }

    #[tokio::test]
    async fn waiters_are_released_by_a_later_size_and_time_out_otherwise() {
        let ks = keys(1);
        let voters: Vec<CheckpointVoter> = ks.iter().map(|(_, v)| *v).collect();
        let a = Arc::new(Attestations::new("c"));
        assert!(a.covering(1, Duration::from_millis(20)).await.is_none());
        let waiter = {
            let a = a.clone();
            tokio::spawn(async move { a.covering(3, Duration::from_secs(5)).await })
        };
        a.add_own(&Attestation::sign(&ks[0].0, 1, "c", 2, root(1)), &voters);
        a.add_own(&Attestation::sign(&ks[0].0, 1, "c", 6, root(2)), &voters);
        let cp = waiter
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("released"));
        assert_eq!(cp.size, 6);
    }
}
