//! Group commit at the Raft level: authorization requests that arrive while
//! earlier entries are in flight ride together in one Raft entry (one
//! append, one fsync, one round of replication). The batch's timestamp is
//! chosen here, on the leader, and carried in the entry so that applying it
//! never reads a clock (invariant 3).

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

pub(crate) type Reply = oneshot::Sender<Result<AuthorizeOutcome, ProposeError>>;

pub(crate) struct Pending {
    pub(crate) request: AuthorizeRequest,
    pub(crate) reply: Reply,
}

/// Starts the batcher; requests sent to the returned channel are proposed.
pub(crate) fn spawn(raft: QRaft, cfg: BatchConfig) -> mpsc::Sender<Pending> {
    let (tx, mut rx) = mpsc::channel::<Pending>(cfg.max_requests * cfg.max_in_flight * 4);
    let in_flight = Arc::new(Semaphore::new(cfg.max_in_flight));
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
            metrics::histogram!("quorate_batch_size").record(batch.len() as f64);
            tokio::spawn(async move {
                let (requests, replies): (Vec<_>, Vec<_>) =
                    batch.into_iter().map(|p| (p.request, p.reply)).unzip();
                let n = requests.len();
                let result = raft
                    .client_write(Command::Authorize {
                        requests,
                        timestamp_ms,
                    })
                    .await;
                drop(permit);
                match result {
                    Ok(resp) => match resp.data {
                        CommandResponse::Authorized(outcomes) if outcomes.len() == n => {
                            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                                let _ = reply.send(Ok(outcome));
                            }
                        }
                        other => {
                            let msg = format!("state machine answered {other:?} to a batch of {n}");
                            tracing::error!("{msg}");
                            for reply in replies {
                                let _ = reply.send(Err(ProposeError::Unknown(msg.clone())));
                            }
                        }
                    },
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
                    }
                }
            });
        }
    });
    tx
}
