//! Group commit at the Raft level: requests that arrive while earlier
//! entries are in flight ride together in one Raft entry (one append, one
//! fsync, one round of replication). The batch's timestamp is chosen here,
//! on the leader, and carried in the entry so that applying it never reads
//! a clock (invariant 3).
//!
//! Two kinds of batch take this one path: authorization requests, and
//! commit probes (entries that change nothing). Both draw on the same
//! in-flight budget, so probes measure the very pipeline decisions use and
//! cannot bypass its backpressure.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use openraft::error::ClientWriteError;
use quorate_core::{AuthorizeOutcome, AuthorizeRequest, Command, CommandResponse};
use tokio::sync::{Semaphore, mpsc, oneshot};

use crate::config::BatchConfig;
use crate::node::QRaft;

/// Why a proposal produced no committed outcome.
#[derive(Debug, Clone)]
pub(crate) enum ProposeError {
    /// Refused before it was appended (this node is not the leader): the
    /// request is certainly not in the log.
    NotLeader(String),
    /// Appended but the result is unknown (leader changed, node stopping):
    /// the request may still commit.
    Unknown(String),
}

/// What one kind of batch puts in its entry and reads back from the state
/// machine's response.
pub(crate) trait Kind: Send + 'static {
    /// The `kind` label of this batcher's metrics.
    const LABEL: &'static str;
    type Item: Send + 'static;
    type Outcome: Send + 'static;
    fn command(items: Vec<Self::Item>, timestamp_ms: u64) -> Command;
    /// One outcome per item, in order, or why the response cannot be one.
    fn outcomes(
        response: CommandResponse,
        log_index: u64,
        n: usize,
    ) -> Result<Vec<Self::Outcome>, CommandResponse>;
}

/// Authorization requests: one `Command::Authorize` per batch, decided in
/// order at apply time.
pub(crate) struct Decisions;

impl Kind for Decisions {
    const LABEL: &'static str = "decisions";
    type Item = AuthorizeRequest;
    type Outcome = AuthorizeOutcome;
    fn command(requests: Vec<AuthorizeRequest>, timestamp_ms: u64) -> Command {
        Command::Authorize {
            requests,
            timestamp_ms,
        }
    }
    fn outcomes(
        response: CommandResponse,
        _: u64,
        n: usize,
    ) -> Result<Vec<AuthorizeOutcome>, CommandResponse> {
        match response {
            CommandResponse::Authorized(outcomes) if outcomes.len() == n => Ok(outcomes),
            other => Err(other),
        }
    }
}

/// Commit probes: one `Command::Probe` per batch; each probe's outcome is
/// the log index of the entry that carried it.
pub(crate) struct Probes;

impl Kind for Probes {
    const LABEL: &'static str = "probes";
    type Item = ();
    type Outcome = u64;
    fn command(items: Vec<()>, timestamp_ms: u64) -> Command {
        Command::Probe {
            probes: u32::try_from(items.len()).unwrap_or(u32::MAX),
            timestamp_ms,
        }
    }
    fn outcomes(
        response: CommandResponse,
        log_index: u64,
        n: usize,
    ) -> Result<Vec<u64>, CommandResponse> {
        match response {
            CommandResponse::Probed(p) if p as usize == n => Ok(vec![log_index; n]),
            other => Err(other),
        }
    }
}

pub(crate) type Reply<K> = oneshot::Sender<Result<<K as Kind>::Outcome, ProposeError>>;

pub(crate) struct Pending<K: Kind> {
    pub(crate) item: K::Item,
    pub(crate) reply: Reply<K>,
}

/// The in-flight budget the batchers of one node share.
pub(crate) fn in_flight(cfg: &BatchConfig) -> Arc<Semaphore> {
    Arc::new(Semaphore::new(cfg.max_in_flight))
}

/// Starts a batcher; items sent to the returned channel are proposed.
pub(crate) fn spawn<K: Kind>(
    raft: QRaft,
    cfg: BatchConfig,
    in_flight: Arc<Semaphore>,
) -> mpsc::Sender<Pending<K>> {
    let (tx, mut rx) = mpsc::channel::<Pending<K>>(cfg.max_requests * cfg.max_in_flight * 4);
    tokio::spawn(async move {
        let mut last_ts = 0u64;
        while let Some(first) = rx.recv().await {
            // Wait for an in-flight slot first: requests keep queueing
            // meanwhile, so a busy leader sends fuller batches.
            let Ok(permit) = in_flight.clone().acquire_owned().await else {
                break;
            };
            let mut batch = vec![first];
            while batch.len() < cfg.max_requests {
                match rx.try_recv() {
                    Ok(p) => batch.push(p),
                    Err(_) => break,
                }
            }
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            // Timestamps never go backwards under one batcher, even if the
            // wall clock steps back.
            last_ts = last_ts.max(now);
            let timestamp_ms = last_ts;
            let raft = raft.clone();
            metrics::histogram!("quorate_batch_size", "kind" => K::LABEL)
                .record(batch.len() as f64);
            tokio::spawn(async move {
                let (items, replies): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|p| (p.item, p.reply)).unzip();
                let n = items.len();
                let proposed = std::time::Instant::now();
                let result = raft.client_write(K::command(items, timestamp_ms)).await;
                drop(permit);
                let resp = match result {
                    Ok(resp) => {
                        // Proposal to applied on this leader: append,
                        // replication to a quorum, commit, apply (the
                        // latency profile's Raft part); failures not timed.
                        metrics::histogram!("quorate_propose_seconds", "kind" => K::LABEL)
                            .record(proposed.elapsed().as_secs_f64());
                        resp
                    }
                    Err(e) => {
                        let err = match e.api_error() {
                            Some(ClientWriteError::ForwardToLeader(f)) => {
                                ProposeError::NotLeader(format!("not the leader: {f}"))
                            }
                            _ => ProposeError::Unknown(e.to_string()),
                        };
                        for reply in replies {
                            let _ = reply.send(Err(err.clone()));
                        }
                        return;
                    }
                };
                match K::outcomes(resp.data, resp.log_id.index, n) {
                    Ok(outcomes) => {
                        for (reply, outcome) in replies.into_iter().zip(outcomes) {
                            let _ = reply.send(Ok(outcome));
                        }
                    }
                    Err(other) => {
                        let msg = format!("state machine answered {other:?} to a batch of {n}");
                        tracing::error!("{msg}");
                        for reply in replies {
                            let _ = reply.send(Err(ProposeError::Unknown(msg.clone())));
                        }
                    }
                }
            });
        }
    });
    tx
}
