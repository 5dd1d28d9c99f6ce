//! One running node: storage, openraft, the batcher, containment, and the
//! operations the API exposes. Every path that can answer ALLOW goes through
//! `Node::authorize`, which answers ALLOW only with a record that came back
//! from the state machine after commit and apply (invariant 1).
//!
//! Split along its seams, each an `impl Node` of its own:
//! - `start`: open, verify, start openraft and the tasks, bootstrap, TLS reload;
//! - `contain`: the facts containment is decided from (rules in
//!   `crate::containment`), recorded evidence, the leadership task;
//! - `authorize`: the governed path, forwarding, relayed-answer checks;
//! - `admin`: policy writes, checkpoint persistence, linearizable reads;
//! - `backup`: verified online backups;
//! - `probe`: commit probes, entries that change nothing on the same path;
//! - `lineage`: ancestors, descendants and traces of decisions;
//! - `access`: client roles; `peer`: what peers may ask; `status`: reports.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{InitializeError, RaftError};
use openraft::raft::linearizable_read::{Linearizer, ReadLogId};
use openraft::{Instant as _, ReadPolicy, ServerState};
use quorate_core::proof::{RECEIPT_FORMAT, verify_receipt_inclusion};
use quorate_core::validate::Limits;
use quorate_core::{
    Attestation, AuthorizeOutcome, AuthorizeRequest, Checkpoint, Command, CommandResponse,
    Decision, DecisionRecord, DenyReason, ErrorCode, PolicyActivated, PolicyPublished,
    PolicySignature, PolicyVersion, Receipt, SecretKey,
};
use quorate_policy::CompiledPolicy;
use quorate_proto::FORWARDED_METADATA_KEY;
use quorate_proto::internal::raft_transport_server::RaftTransportServer;
use quorate_proto::v1::governance_client::GovernanceClient;
use quorate_proto::v1::governance_server::GovernanceServer;
use quorate_raft::network::{Channels, MAX_RAFT_MESSAGE_BYTES, Network, fetch_read_index};
use quorate_raft::service::{Identity, LeaderContact, PeerHandler, RaftService};
use quorate_raft::{NodeInfo, TypeConfig};
use quorate_store::{ChainHead, DecisionLookup, LogStore, StateMachine, Store};
use tokio::sync::{mpsc, oneshot, watch};

use crate::attest::Attestations;
use crate::batcher::{self, Decisions, Kind, Pending, Probes, ProposeError};
use crate::config::{AnswerMode, NodeConfig};
use crate::error::{ApiError, from_status};

mod access;
mod admin;
mod authorize;
mod backup;
mod contain;
mod lineage;
mod peer;
mod probe;
mod start;
mod status;
#[cfg(test)]
mod tests;

pub use access::Access;
pub use authorize::Door;
pub use backup::{BACKUP_FORMAT, BackupManifest};
pub use lineage::{Lineage, MAX_LINEAGE};
pub use probe::ProbeAnswer;
pub use status::{MemberStatus, NodeStatus};

/// The openraft instance of a quorate node.
pub type QRaft = openraft::Raft<TypeConfig, StateMachine>;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot create data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the store in {path}: {source}")]
    Store {
        path: PathBuf,
        source: quorate_store::StoreError,
    },
    #[error("invalid Raft settings: {0}")]
    RaftConfig(String),
    #[error("cannot start Raft: {0}")]
    Raft(String),
    #[error("node identity key: {0}")]
    Key(#[from] crate::identity::KeyError),
    #[error("TLS: {0}")]
    Tls(#[from] quorate_raft::tls::TlsError),
    #[error(
        "the TLS certificate names {found}, but this node is quorate://{cluster}/node/{node}; use this node's certificate"
    )]
    TlsIdentity {
        found: String,
        cluster: String,
        node: u64,
    },
    #[error("cannot listen on {addr}: {source} (is another node already running there?)")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The answer to an authorization request. `Decision::Allow` only ever
/// comes with `record: Some(..)` of a committed, applied decision and, in
/// attested mode, with the receipt a majority of voters signed for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub decision: Decision,
    pub reason: Option<DenyReason>,
    pub message: String,
    pub record: Option<DecisionRecord>,
    pub replayed: bool,
    /// The record's receipt under an attested checkpoint (attested ALLOWs).
    pub receipt: Option<Box<Receipt>>,
    /// `receipt` as the JSON it travels as, made once (or received from
    /// the leader) and passed on as is.
    pub receipt_json: Option<String>,
}

impl Answer {
    /// A DENY without a committed record: containment or an unknown outcome.
    pub fn deny(reason: DenyReason, message: impl Into<String>) -> Answer {
        Answer {
            decision: Decision::Deny,
            reason: Some(reason),
            message: message.into(),
            record: None,
            replayed: false,
            receipt: None,
            receipt_json: None,
        }
    }

    /// The receipt of an attested ALLOW whose record is this answer's
    /// record; None on a DENY, in committed mode, or when the two disagree.
    /// The integrations (Kubernetes admission, Envoy) pass a request only
    /// when this is Some.
    pub fn attested_receipt(&self) -> Option<std::borrow::Cow<'_, Receipt>> {
        if self.decision != Decision::Allow {
            return None;
        }
        let receipt = match (&self.receipt, &self.receipt_json) {
            (Some(r), _) => std::borrow::Cow::Borrowed(r.as_ref()),
            (None, Some(j)) => std::borrow::Cow::Owned(serde_json::from_str(j).ok()?),
            (None, None) => return None,
        };
        (Some(&receipt.record) == self.record.as_ref()).then_some(receipt)
    }

    fn committed(outcome: AuthorizeOutcome) -> Answer {
        let r = outcome.record;
        Answer {
            decision: r.decision,
            reason: r.reason,
            message: match r.reason {
                None => "allowed by committed decision".into(),
                Some(reason) => format!("denied: {reason}"),
            },
            replayed: outcome.replayed,
            record: Some(r),
            receipt: None,
            receipt_json: None,
        }
    }
}

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) cfg: NodeConfig,
    pub(crate) raft: QRaft,
    pub(crate) lookup: DecisionLookup,
    pub(crate) contact: LeaderContact,
    pub(crate) channels: Channels,
    pub(crate) batcher: mpsc::Sender<Pending<Decisions>>,
    /// Commit probes: the same path as `batcher`, with entries that change
    /// nothing.
    pub(crate) probes: mpsc::Sender<Pending<Probes>>,
    /// Set when this node's stored state failed verification; it then denies
    /// everything until repaired (invariant 6).
    pub(crate) integrity: RwLock<Option<String>>,
    /// The oldest checkpoint size this node signed that no final checkpoint
    /// covers yet, and when it signed it (see `checkpoint_unconfirmed`).
    pub(crate) unconfirmed: std::sync::Mutex<Option<(u64, std::time::Instant)>>,
    pub(crate) limits: Limits,
    /// This node's identity: signs its checkpoint cosignatures.
    pub(crate) key: SecretKey,
    /// Mutual TLS material; `None` only with `insecure = true`.
    pub(crate) tls: Option<Arc<quorate_raft::tls::TlsContext>>,
    pub(crate) limiter: crate::ratelimit::RateLimiter,
    /// Voters' attestations (on the leader) and the latest attested
    /// checkpoint.
    pub(crate) attestations: Attestations,
    /// The first record this node answered UNATTESTED for: it contains
    /// until a checkpoint of at least that size is final or attested.
    pub(crate) unattested: std::sync::Mutex<Option<u64>>,
    /// Whether the operator (or a test) allows this node to lead; the
    /// leadership task never lets a contained node lead either way.
    pub(crate) electable: std::sync::atomic::AtomicBool,
    /// The last checkpoint whose cosignatures this node verified on a
    /// relayed answer: an entry's answers share one, so it is checked once.
    pub(crate) relayed_checkpoint: std::sync::Mutex<Option<Checkpoint>>,
    /// The containment reason this node last reported, and since when.
    pub(crate) contained_since: std::sync::Mutex<Option<(DenyReason, u64)>>,
    /// The console's health timeline: one sample a second.
    pub(crate) timeline: std::sync::Mutex<std::collections::VecDeque<crate::console::Sample>>,
}

/// A handle to the node's operations. Cheap to clone.
#[derive(Clone)]
pub struct Node {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Node {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Node").field("id", &self.inner.id).finish()
    }
}

/// A started node and the tasks that serve it.
pub struct RunningNode {
    pub node: Node,
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl RunningNode {
    /// Stops serving and shuts Raft down.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for t in self.tasks {
            let _ = t.await;
        }
        let _ = self.node.inner.raft.shutdown().await;
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The answer for `req` from a state-machine outcome. A replayed record is
/// returned only for the request it decided; the same id with another body
/// is a conflict and gets DENY (fail closed), never the earlier ALLOW.
pub(crate) fn answer_for(req: &AuthorizeRequest, outcome: AuthorizeOutcome) -> Answer {
    if outcome.record.request != *req {
        return Answer::deny(
            DenyReason::RequestIdConflict,
            format!(
                "request id {:?} was already decided at index {} for a different request; use a new id",
                req.request_id, outcome.record.index
            ),
        );
    }
    Answer::committed(outcome)
}

impl Node {
    /// Allows or forbids this node to become leader (it keeps voting and
    /// replicating either way). A contained node never campaigns, whatever
    /// this says (see `leadership_task`).
    pub fn set_electable(&self, on: bool) {
        self.inner
            .electable
            .store(on, std::sync::atomic::Ordering::Release);
        self.inner.raft.runtime_config().elect(on);
    }

    pub(crate) fn attestations(&self) -> &Attestations {
        &self.inner.attestations
    }

    pub fn public_key(&self) -> quorate_core::PublicKey {
        self.inner.key.public()
    }

    pub(crate) fn key(&self) -> &SecretKey {
        &self.inner.key
    }

    pub(crate) fn channels(&self) -> &Channels {
        &self.inner.channels
    }

    pub fn id(&self) -> u64 {
        self.inner.id
    }

    pub fn config(&self) -> &NodeConfig {
        &self.inner.cfg
    }

    pub fn limits(&self) -> &Limits {
        &self.inner.limits
    }

    pub fn lookup(&self) -> &DecisionLookup {
        &self.inner.lookup
    }

    pub(crate) fn metrics(&self) -> openraft::RaftMetrics<TypeConfig> {
        self.inner.raft.metrics().borrow_watched().clone()
    }

    /// Whether this node holds any Raft state: a log entry, a snapshot or
    /// a membership. An empty node (new, or its database lost) has none.
    pub(crate) fn has_raft_state(&self) -> bool {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        m.last_log_index.is_some()
            || m.snapshot.is_some()
            || m.purged.is_some()
            || m.membership_config.log_id().is_some()
    }

    fn leader_addr(&self, m: &openraft::RaftMetrics<TypeConfig>) -> Option<(u64, String)> {
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// `None` on the leader; otherwise the leader to forward to, if one is
    /// known. Reads only what routing needs under the metrics borrow,
    /// instead of cloning the whole RaftMetrics (membership maps included)
    /// per request.
    fn route(&self) -> Option<Option<(u64, String)>> {
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        (m.state != ServerState::Leader).then(|| self.leader_addr(&m))
    }

    fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.cfg.commit_timeout_ms)
    }
}

/// Hands `item` to a batcher and waits for its outcome. One deadline covers
/// queueing and commit: a full queue behind a stalled leader must time out,
/// not hang. `Err` on the deadline, `Ok(None)` when the batcher is gone
/// (the node is stopping).
async fn propose<K: Kind>(
    batcher: &mpsc::Sender<Pending<K>>,
    item: K::Item,
    deadline: Duration,
) -> Result<Option<Result<K::Outcome, ProposeError>>, tokio::time::error::Elapsed> {
    let (reply, rx) = oneshot::channel();
    tokio::time::timeout(deadline, async {
        batcher.send(Pending { item, reply }).await.ok()?;
        rx.await.ok()
    })
    .await
}
