//! The node's side of the proofs: signing checkpoints, re-verifying stored
//! state at rest, and serving receipts, checkpoints, consistency proofs,
//! the trust file and the log export.
//!
//! Signing rule (invariants 3 and 4): a voter signs only the root it
//! computed itself, after applying (`crate::attest`). The leader persists
//! a checkpoint a majority attested; the state machine accepts each of its
//! cosignatures only when that root equals the applying node's own. A
//! mismatch never yields a cosignature: the node contains instead.

use std::time::{Duration, Instant};

use openraft::ServerState;
use quorate_core::export::{EXPORT_FORMAT, ExportHeader, ExportLine};
use quorate_core::proof::{
    CONSISTENCY_FORMAT, ConsistencyBundle, RECEIPT_FORMAT, TRUST_FORMAT, TrustedNode,
    TrustedPublisher, VoterSet,
};
use quorate_core::{Checkpoint, Command, CommandResponse, ErrorCode, Receipt, TrustFile};
use quorate_store::CheckpointState;
use tokio::sync::{mpsc, watch};

use crate::error::ApiError;
use crate::node::Node;

/// Runs on every node; only the leader persists. At most every
/// `checkpoint.interval_ms`, or at once after `checkpoint.max_entries` new
/// records, the leader writes the latest attested checkpoint (a majority of
/// voters' signatures over the root each computed itself, collected by
/// `crate::attest`) into the log as one `Command::Checkpoint` entry. Every
/// replica applies each signature exactly as a cosignature: checked against
/// the signer's key and against its own root, so a replica whose history
/// differs contains (DIVERGENCE) instead of accepting it.
pub(crate) async fn checkpoint_task(node: Node, mut shutdown: watch::Receiver<bool>) {
    let cfg = node.config().checkpoint.clone();
    let interval = Duration::from_millis(cfg.interval_ms);
    let mut best = node.attestations().subscribe();
    let mut last_proposal = Instant::now();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            r = best.changed() => if r.is_err() { return },
            _ = shutdown.wait_for(|s| *s) => return,
        }
        if node.metrics().state != ServerState::Leader {
            continue;
        }
        let Some(cp) = node.attestations().best() else {
            continue;
        };
        let last_final = node.lookup().last_final();
        let due = last_proposal.elapsed() >= interval
            || cp.size.saturating_sub(last_final) >= cfg.max_entries;
        if cp.size <= last_final || !due {
            continue;
        }
        last_proposal = Instant::now();
        let cmd = Command::Checkpoint {
            size: cp.size,
            root: cp.root,
            cosignatures: cp.cosignatures.clone(),
        };
        match node.write_checkpoint(cmd).await {
            Ok(CommandResponse::Cosigned(c))
                if c.cosigners >= quorate_core::majority(cp.voters.len()) => {}
            Ok(CommandResponse::Cosigned(c)) => tracing::warn!(
                size = cp.size,
                cosigners = c.cosigners,
                "persisted checkpoint is not final on apply"
            ),
            Ok(CommandResponse::Rejected(r)) => {
                tracing::warn!(size = cp.size, "checkpoint refused on apply: {}", r.message)
            }
            Ok(other) => tracing::warn!(size = cp.size, "unexpected response {other:?}"),
            Err(e) => tracing::debug!(size = cp.size, "checkpoint not persisted: {}", e.message),
        }
    }
}

/// Re-verifies the stored chain, Merkle tree and checkpoints periodically
/// (invariant 6): everything after the verified-up-to mark, a random
/// sample below it, and the next slice of a rolling sweep over the whole
/// history, so that every record is re-read in turn while no run costs more
/// than `sweep_records` records (serving is never stalled behind a pass
/// over years of history). A failure contains the node until it is
/// repaired.
pub(crate) async fn integrity_task(node: Node, mut shutdown: watch::Receiver<bool>) {
    let cfg = node.config().integrity.clone();
    if cfg.verify_interval_s == 0 {
        return;
    }
    let mut cursor = 0u64;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(cfg.verify_interval_s)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let lookup = node.lookup().clone();
        let started = Instant::now();
        let (full_below, sample, sweep) =
            (cfg.full_verify_below, cfg.sample_records, cfg.sweep_records);
        let from = cursor;
        let r = tokio::task::spawn_blocking(move || {
            let check = lookup.verify_state_incremental(full_below, sample)?;
            let next = lookup.verify_slice(from, sweep)?;
            Ok::<_, quorate_store::IntegrityError>((check, next))
        })
        .await;
        metrics::histogram!("quorate_integrity_verify_seconds")
            .record(started.elapsed().as_secs_f64());
        match r {
            Ok(Ok((check, next))) => {
                tracing::debug!(
                    records = check.head.count,
                    from = check.resumed_at,
                    swept = from,
                    "stored state re-verified"
                );
                cursor = next;
            }
            Ok(Err(e)) => {
                metrics::counter!("quorate_integrity_failures_total").increment(1);
                node.set_integrity_failure(e.to_string());
            }
            Err(e) => tracing::error!("integrity check task failed: {e}"),
        }
    }
}

fn internal(e: impl std::fmt::Display) -> ApiError {
    ApiError::internal(e.to_string())
}

impl Node {
    /// The receipt of the decision at `index`: the record, its inclusion
    /// proof and the smallest final checkpoint covering it.
    pub async fn receipt(&self, index: u64) -> Result<Receipt, ApiError> {
        let record = self.get_decision_by_index(index).await?;
        let Some(cp) = self
            .lookup()
            .final_checkpoint_covering(index)
            .map_err(internal)?
        else {
            let last = self.lookup().last_final();
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!(
                    "decision {index} is not yet covered by a final checkpoint (the latest covers \
                     {last} records); checkpoints are cosigned within about {} ms: retry",
                    self.config().checkpoint.interval_ms * 2
                ),
            ));
        };
        let inclusion_proof = self
            .lookup()
            .inclusion_proof(index, cp.checkpoint.size)
            .map_err(internal)?;
        Ok(Receipt {
            format: RECEIPT_FORMAT.into(),
            record,
            inclusion_proof,
            checkpoint: cp.checkpoint,
        })
    }

    /// The final checkpoint at `size`, or the latest final one.
    pub async fn final_checkpoint(&self, size: Option<u64>) -> Result<Checkpoint, ApiError> {
        self.linearize().await?;
        let cp: Option<CheckpointState> = match size {
            Some(s) => self.lookup().checkpoint(s).map_err(internal)?,
            None => self.lookup().latest_final_checkpoint().map_err(internal)?,
        };
        match cp {
            Some(c) if c.is_final() => Ok(c.checkpoint),
            Some(_) => Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("the checkpoint at size {size:?} is not final yet; retry"),
            )),
            None => Err(ApiError::new(
                ErrorCode::NotFound,
                match size {
                    Some(s) => format!("no checkpoint at size {s}"),
                    None => "no final checkpoint yet: the log is empty or not yet cosigned".into(),
                },
            )),
        }
    }

    /// Proof that the latest final checkpoint (or the one at `new_size`)
    /// extends the tree of `old_size` records.
    pub async fn consistency(
        &self,
        old_size: u64,
        new_size: Option<u64>,
    ) -> Result<ConsistencyBundle, ApiError> {
        let checkpoint = self.final_checkpoint(new_size).await?;
        if old_size == 0 || old_size > checkpoint.size {
            return Err(ApiError::invalid(format!(
                "old size must be in 1..={} (the newer checkpoint's size)",
                checkpoint.size
            )));
        }
        let proof = self
            .lookup()
            .consistency_proof(old_size, checkpoint.size)
            .map_err(internal)?;
        Ok(ConsistencyBundle {
            format: CONSISTENCY_FORMAT.into(),
            old_size,
            proof,
            checkpoint,
        })
    }

    /// What a verifier must trust: the cluster id, every member's key and
    /// role, and the trusted policy publishers.
    pub async fn trust_file(&self) -> Result<TrustFile, ApiError> {
        self.linearize().await?;
        let m = self.metrics();
        let membership = m.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        // Current members, then every former voter (its key still vouches
        // for the checkpoints its voter sets judged).
        let mut nodes: Vec<TrustedNode> = membership
            .nodes()
            .map(|(id, n)| TrustedNode {
                node_id: *id,
                public_key: n.public_key,
                voter: voters.contains(id),
                region: n.region.clone(),
            })
            .collect();
        let history = self.lookup().voter_history();
        for v in history.iter().flat_map(|e| e.voters.iter()) {
            if !nodes.iter().any(|n| n.node_id == v.node_id) {
                nodes.push(TrustedNode {
                    node_id: v.node_id,
                    public_key: v.public_key,
                    voter: false,
                    region: String::new(),
                });
            }
        }
        let voter_sets = history
            .iter()
            .map(|e| VoterSet {
                voters: e.ids(),
                until_size: e.until_size,
            })
            .collect();
        Ok(TrustFile {
            format: TRUST_FORMAT.into(),
            cluster_id: self.config().cluster_id.clone(),
            nodes,
            voter_sets,
            publishers: self
                .config()
                .security
                .trusted_publishers
                .iter()
                .map(|p| TrustedPublisher {
                    name: p.name.clone(),
                    public_key: p.public_key,
                })
                .collect(),
        })
    }

    /// Streams the whole log export (FORMATS.md §11) as JSON lines.
    pub async fn export(&self) -> Result<mpsc::Receiver<Result<String, ApiError>>, ApiError> {
        self.linearize().await?;
        let lookup = self.lookup().clone();
        let head = lookup.head();
        let header = ExportLine::Header(ExportHeader {
            format: EXPORT_FORMAT.into(),
            cluster_id: self.config().cluster_id.clone(),
            records: head.count,
            head: head.hash,
            node_id: self.id(),
        });
        let (tx, rx) = mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            let send = |line: &ExportLine| -> bool {
                let json = serde_json::to_string(line).map_err(internal);
                tx.blocking_send(json).is_ok()
            };
            let run = || -> Result<(), ApiError> {
                if !send(&header) {
                    return Ok(());
                }
                // Policy events in log order; checkpoints by size.
                let mut events: Vec<ExportLine> = lookup
                    .policies()
                    .map_err(internal)?
                    .into_iter()
                    .map(ExportLine::Policy)
                    .chain(
                        lookup
                            .activations()
                            .map_err(internal)?
                            .into_iter()
                            .map(ExportLine::Activation),
                    )
                    .collect();
                // A publish and its activation share a log index: the
                // publication comes first.
                events.sort_by_key(|e| (e.log_index(), matches!(e, ExportLine::Activation(_))));
                let mut events = events.into_iter().peekable();
                let checkpoints: Vec<Checkpoint> = lookup
                    .checkpoints()
                    .map_err(internal)?
                    .into_iter()
                    .filter(|c| c.is_final() && c.checkpoint.size <= head.count)
                    .map(|c| c.checkpoint)
                    .collect();
                let mut checkpoints = checkpoints.into_iter().peekable();
                let mut next = 1u64;
                while next <= head.count {
                    let chunk = lookup.decisions(next, 1024, None).map_err(internal)?;
                    if chunk.is_empty() {
                        break;
                    }
                    for rec in chunk {
                        if rec.index > head.count {
                            break;
                        }
                        while let Some(e) = events.next_if(|e| e.log_index() < rec.log_index) {
                            if !send(&e) {
                                return Ok(());
                            }
                        }
                        next = rec.index + 1;
                        let index = rec.index;
                        if !send(&ExportLine::Record(rec)) {
                            return Ok(());
                        }
                        while let Some(c) = checkpoints.next_if(|c| c.size == index) {
                            if !send(&ExportLine::Checkpoint(c)) {
                                return Ok(());
                            }
                        }
                    }
                }
                for e in events {
                    if !send(&e) {
                        return Ok(());
                    }
                }
                Ok(())
            };
            if let Err(e) = run() {
                let _ = tx.blocking_send(Err(e));
            }
        });
        Ok(rx)
    }
}
