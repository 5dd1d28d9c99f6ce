//! One running node: storage, openraft, the batcher, containment, and the
//! operations the API exposes. Every path that can answer ALLOW goes through
//! `Node::authorize`, which answers ALLOW only with a record that came back
//! from the state machine after commit and apply (invariant 1).

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
use crate::batcher::{self, Pending, ProposeError};
use crate::config::{AnswerMode, NodeConfig};
use crate::error::{ApiError, from_status};

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
    pub last_log_index: u64,
    pub last_applied_index: u64,
    pub decision_count: u64,
    pub chain_head_hash: String,
    pub public_key: String,
    /// Records covered by the largest final (quorum-cosigned) checkpoint.
    pub last_final_checkpoint: u64,
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

pub(crate) struct Inner {
    pub(crate) id: u64,
    pub(crate) cfg: NodeConfig,
    pub(crate) raft: QRaft,
    pub(crate) lookup: DecisionLookup,
    pub(crate) contact: LeaderContact,
    pub(crate) channels: Channels,
    pub(crate) batcher: mpsc::Sender<Pending>,
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
    /// Opens the store in `data_dir`, starts Raft and serves gRPC and HTTP.
    pub async fn start(cfg: NodeConfig, data_dir: &Path) -> Result<RunningNode, NodeError> {
        std::fs::create_dir_all(data_dir).map_err(|source| NodeError::DataDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let key_path = cfg
            .key_file
            .clone()
            .unwrap_or_else(|| data_dir.join("node.key"));
        let key = crate::identity::load_or_create_key(&key_path)?;
        let db_dir = data_dir.join("db");
        let store = Store::open(&db_dir).map_err(|source| NodeError::Store {
            path: db_dir.clone(),
            source,
        })?;
        let limits = Limits::default();
        let sm = StateMachine::open(store.clone(), limits)
            .map_err(|source| NodeError::Store {
                path: db_dir.clone(),
                source,
            })?
            .with_cluster_id(&cfg.cluster_id);
        let lookup = sm.lookup();
        // Verify the stored decision log before serving anything from it.
        let integrity = match lookup.verify_state() {
            Ok(head) => {
                tracing::info!(records = head.count, head = %head.hash, "decision log verified");
                None
            }
            Err(e) => {
                tracing::error!("{e}; this node contains (DENY INTEGRITY_FAILURE) until repaired");
                Some(e.to_string())
            }
        };
        let log_store = LogStore::new(store);
        let r = &cfg.raft;
        let raft_config = openraft::Config {
            cluster_name: cfg.cluster_id.clone(),
            heartbeat_interval: r.heartbeat_interval_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            install_snapshot_timeout: 60_000,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(r.snapshot_after_entries),
            max_in_snapshot_log_to_keep: r.keep_entries_after_snapshot,
            // Pre-vote keeps a node that was cut off from disrupting a healthy
            // leader with inflated terms when it comes back.
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| NodeError::RaftConfig(e.to_string()))?;
        // Mutual TLS, unless the config explicitly asks for plaintext.
        let tls = match &cfg.tls {
            None => {
                tracing::warn!(
                    "insecure = true: serving plaintext with no authentication; anyone who \
                     can reach {} may do anything",
                    cfg.grpc_addr
                );
                None
            }
            Some(t) => {
                let ctx = quorate_raft::tls::TlsContext::load(t.files())?;
                check_own_identity(&ctx.own_identity(), &cfg)?;
                Some(ctx)
            }
        };
        let channels = Channels::with_tls(tls.clone());
        let raft = QRaft::new(
            cfg.node_id,
            Arc::new(raft_config),
            Network::new(cfg.node_id, channels.clone()),
            log_store,
            sm,
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        let contact = LeaderContact::default();
        let batcher = batcher::spawn(raft.clone(), cfg.batch.clone());
        let node = Node {
            inner: Arc::new(Inner {
                id: cfg.node_id,
                cfg: cfg.clone(),
                raft: raft.clone(),
                lookup,
                contact: contact.clone(),
                channels,
                batcher,
                integrity: RwLock::new(integrity),
                unconfirmed: std::sync::Mutex::new(None),
                limits,
                key,
                tls: tls.clone(),
                limiter: crate::ratelimit::RateLimiter::new(
                    cfg.limits.client_requests_per_second,
                    cfg.limits.client_burst,
                ),
                attestations: Attestations::new(&cfg.cluster_id),
                unattested: std::sync::Mutex::new(None),
                electable: std::sync::atomic::AtomicBool::new(true),
                relayed_checkpoint: std::sync::Mutex::new(None),
            }),
        };

        let (shutdown, shutdown_rx) = watch::channel(false);
        let grpc_listener =
            tokio::net::TcpListener::bind(cfg.grpc_addr)
                .await
                .map_err(|source| NodeError::Bind {
                    addr: cfg.grpc_addr,
                    source,
                })?;
        let http_listener =
            tokio::net::TcpListener::bind(cfg.http_addr)
                .await
                .map_err(|source| NodeError::Bind {
                    addr: cfg.http_addr,
                    source,
                })?;
        let grpc_addr = grpc_listener.local_addr().unwrap_or(cfg.grpc_addr);
        let http_addr = http_listener.local_addr().unwrap_or(cfg.http_addr);

        let mut tasks = Vec::new();
        let tls_for_server = tls.clone();
        if let Some(t) = tls.clone() {
            tasks.push(tokio::spawn(tls_reload_task(
                t,
                node.inner.channels.clone(),
                shutdown_rx.clone(),
            )));
        }
        let api = crate::api::GovernanceApi::new(node.clone());
        let handler: Arc<dyn PeerHandler> = Arc::new(node.clone());
        // Admitted before decoding: a caller that is not a member node is
        // refused from its certificate alone, before its message is read.
        let raft_svc = quorate_raft::service::Admitted::new(
            RaftTransportServer::new(RaftService::new(raft.clone(), contact, handler.clone()))
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
            handler,
        );
        let gov_svc = GovernanceServer::new(api)
            .max_decoding_message_size(4 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        let mut rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            // Our own accept loop: TCP_NODELAY per connection (small Raft
            // and API messages must not wait for Nagle plus delayed ACKs),
            // and mutual TLS with the certificate identity of each peer in
            // its requests' extensions.
            let incoming = quorate_raft::tls::incoming(grpc_listener, tls_for_server);
            let r = tonic::transport::Server::builder()
                .tcp_nodelay(true)
                .add_service(raft_svc)
                .add_service(gov_svc)
                .serve_with_incoming_shutdown(incoming, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!("gRPC server stopped: {e}");
            }
        }));
        let mut rx = shutdown_rx.clone();
        let http_node = node.clone();
        tasks.push(tokio::spawn(async move {
            let app =
                crate::http::router(http_node).into_make_service_with_connect_info::<SocketAddr>();
            let r = axum::serve(http_listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            if let Err(e) = r {
                tracing::error!("HTTP server stopped: {e}");
            }
        }));
        tasks.push(tokio::spawn(crate::proofs::checkpoint_task(
            node.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::proofs::integrity_task(
            node.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(crate::attest::attest_task(
            node.clone(),
            shutdown_rx.clone(),
        )));
        tasks.push(tokio::spawn(leadership_task(
            node.clone(),
            shutdown_rx.clone(),
        )));
        let metrics_node = node.clone();
        let mut rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                metrics_node.publish_gauges();
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = rx.wait_for(|s| *s) => break,
                }
            }
        }));

        if cfg.bootstrap {
            let n = node.clone();
            let mut rx = shutdown_rx;
            tasks.push(tokio::spawn(async move {
                tokio::select! {
                    _ = n.bootstrap() => {}
                    _ = rx.wait_for(|s| *s) => {}
                }
            }));
        }
        if node
            .inner
            .integrity
            .read()
            .ok()
            .is_some_and(|g| g.is_some())
        {
            // A node that cannot verify its own state must not lead: every
            // follower would forward to it and relay its DENYs. It keeps
            // replicating so that it can be repaired.
            node.inner.raft.runtime_config().elect(false);
        }
        tracing::info!(node = cfg.node_id, %grpc_addr, %http_addr, "node started");
        Ok(RunningNode {
            node,
            grpc_addr,
            http_addr,
            shutdown,
            tasks,
        })
    }

    /// Initialises the cluster from the configured members, once every
    /// member's public key is known (from the config or asked from the
    /// member itself). A no-op when this node already has state; retried in
    /// the background until the members answer.
    async fn bootstrap(&self) {
        if self.inner.raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        let members = loop {
            match self.member_identities().await {
                Ok(m) => break m,
                Err(e) => {
                    tracing::info!("bootstrap waits for members: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
            if self.inner.raft.is_initialized().await.unwrap_or(true) {
                return;
            }
        };
        match self.inner.raft.initialize(members).await {
            Ok(()) => tracing::info!("initialised a new cluster from the configured members"),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => {}
            Err(e) => tracing::error!("cannot initialise the cluster: {e}"),
        }
    }

    /// Every configured member with its public key and region.
    async fn member_identities(&self) -> Result<BTreeMap<u64, NodeInfo>, String> {
        let cfg = &self.inner.cfg;
        let mut out = BTreeMap::new();
        for m in &cfg.members {
            let (public_key, region) = if m.id == self.inner.id {
                (self.inner.key.public(), cfg.region.clone())
            } else if let (Some(k), Some(r)) = (m.public_key, m.region.clone()) {
                (k, r)
            } else {
                // The reply is bound to member m.id twice over: with TLS the
                // certificate must name it, and the reply must prove it
                // holds the key it reports (over a fresh nonce, for m.id).
                let id = quorate_raft::network::fetch_identity(
                    &self.inner.channels,
                    self.inner.id,
                    m.id,
                    &m.addr,
                    Duration::from_secs(2),
                )
                .await
                .map_err(|e| format!("member {} at {}: {e}", m.id, m.addr))?;
                if id.node_id != m.id || id.cluster_id != cfg.cluster_id {
                    return Err(format!(
                        "{} answers as node {} of cluster {:?}, but [[members]] says node {} of {:?}; fix the config",
                        m.addr, id.node_id, id.cluster_id, m.id, cfg.cluster_id
                    ));
                }
                if m.public_key.is_some_and(|k| k != id.public_key) {
                    return Err(format!(
                        "member {} presents key {}, not the configured one",
                        m.id, id.public_key
                    ));
                }
                (id.public_key, m.region.clone().unwrap_or(id.region))
            };
            out.insert(
                m.id,
                NodeInfo {
                    addr: m.addr.clone(),
                    public_key,
                    region,
                },
            );
        }
        Ok(out)
    }

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

    /// Why this node must not answer ALLOW right now, if it must not.
    ///
    /// Invariant 2 (fail closed): any doubt, whether about our own stored
    /// state or about being part of a quorum, is a reason to deny. This is
    /// a fast path that avoids proposing when we know it cannot commit;
    /// safety itself comes from `authorize` answering only committed
    /// records.
    pub fn containment(&self) -> Option<(DenyReason, String)> {
        crate::containment::containment(&self.containment_facts())
    }

    /// What containment is decided from, read now. A fact behind a lock
    /// poisoned by a panic reads as an integrity failure (fail closed).
    fn containment_facts(&self) -> crate::containment::Facts {
        use crate::containment::{Facts, Role};
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
    /// verification, a recorded divergence, an unattested answer. Such a
    /// node does not campaign.
    fn evidence_against_itself(&self) -> bool {
        self.containment_facts().evidence_against_itself()
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

    fn leader_addr(&self, m: &openraft::RaftMetrics<TypeConfig>) -> Option<(u64, String)> {
        let leader = m.current_leader?;
        let node = m.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    fn commit_timeout(&self) -> Duration {
        Duration::from_millis(self.inner.cfg.commit_timeout_ms)
    }

    /// Decides a request: validates it, then either DENY at once
    /// (containment) or proposes it (forwarding to the leader if needed) and
    /// answers with the committed decision.
    pub async fn authorize(
        &self,
        req: AuthorizeRequest,
        forwarded: bool,
    ) -> Result<Answer, ApiError> {
        quorate_policy::check_request(&req, &self.inner.limits)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        let started = std::time::Instant::now();
        let answer = self.authorize_checked(req, forwarded).await;
        metrics::histogram!("quorate_authorize_seconds").record(started.elapsed().as_secs_f64());
        let label = match (&answer.decision, answer.reason) {
            (Decision::Allow, _) => "ALLOW".to_string(),
            (Decision::Deny, Some(r)) => r.code().to_string(),
            (Decision::Deny, None) => "DENY".to_string(),
        };
        metrics::counter!("quorate_authorize_answers_total", "answer" => label).increment(1);
        Ok(answer)
    }

    async fn authorize_checked(&self, req: AuthorizeRequest, forwarded: bool) -> Answer {
        // Fail closed before doing any work: a contained node proposes nothing.
        if let Some((reason, msg)) = self.containment() {
            return Answer::deny(reason, msg);
        }
        let started = std::time::Instant::now();
        let deadline = self.commit_timeout();
        let m = self.metrics();
        if m.state != ServerState::Leader {
            if forwarded {
                // Never forward twice: the sender thought we led; we do not.
                return Answer::deny(
                    DenyReason::NoQuorum,
                    "forwarded to a node that is not the leader; retry",
                );
            }
            let Some((leader, addr)) = self.leader_addr(&m) else {
                return Answer::deny(DenyReason::NoQuorum, "no known leader");
            };
            return match tokio::time::timeout(deadline, self.forward(leader, &addr, req)).await {
                Ok(a) => a,
                Err(_) => Answer::deny(
                    DenyReason::CommitTimeout,
                    format!(
                        "leader {leader} did not answer within {} ms; outcome unknown",
                        deadline.as_millis()
                    ),
                ),
            };
        }
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            request: req.clone(),
            reply: tx,
        };
        // One deadline covers queueing and commit: a full queue behind a
        // stalled leader must time out, not hang.
        let outcome = tokio::time::timeout(deadline, async {
            if self.inner.batcher.send(pending).await.is_err() {
                return None;
            }
            rx.await.ok()
        })
        .await;
        match outcome {
            Err(_) => Answer::deny(
                DenyReason::CommitTimeout,
                format!(
                    "not committed within {} ms; outcome unknown (it may still commit): retry with the same request id",
                    deadline.as_millis()
                ),
            ),
            Ok(None) => Answer::deny(
                DenyReason::Unavailable,
                "node is shutting down; outcome unknown",
            ),
            Ok(Some(Err(ProposeError::NotLeader(msg)))) => Answer::deny(DenyReason::NoQuorum, msg),
            Ok(Some(Err(ProposeError::Unknown(msg)))) => {
                Answer::deny(DenyReason::Unavailable, format!("{msg}; outcome unknown"))
            }
            // Invariant 1: the only ALLOW path. The outcome came from the
            // state machine after the entry was committed and applied, and
            // it answers this very request (a reused id answers another).
            // In attested mode an ALLOW waits, within the same deadline,
            // for a majority of voters to attest it.
            Ok(Some(Ok(outcome))) => {
                let answer = answer_for(&req, outcome);
                if answer.decision != Decision::Allow
                    || self.inner.cfg.answer == AnswerMode::Committed
                {
                    return answer;
                }
                self.attest_answer(answer, deadline.saturating_sub(started.elapsed()))
                    .await
            }
        }
    }

    /// Invariant 1, attested: turns a committed ALLOW into an answer only
    /// once a majority of voters has signed a checkpoint covering it, and
    /// only if this node's record is the one under that checkpoint's root
    /// (a record altered on this disk fails the inclusion check). Anything
    /// else is DENY.
    async fn attest_answer(&self, answer: Answer, left: Duration) -> Answer {
        let Some(record) = answer.record.as_ref() else {
            return Answer::deny(DenyReason::IntegrityFailure, "ALLOW without a record");
        };
        let index = record.index;
        let Some(cp) = self.inner.attestations.covering(index, left).await else {
            metrics::counter!("quorate_unattested_total").increment(1);
            self.set_unattested(index);
            return Answer::deny(
                DenyReason::Unattested,
                format!(
                    "decision {index} is committed, but no majority of voters attested it within \
                     {} ms; it is not confirmed and this node contains. Retry with the same \
                     request id once the cluster is healthy: the committed decision is then \
                     answered with its attestation",
                    self.commit_timeout().as_millis()
                ),
            );
        };
        let proof = match self.inner.lookup.inclusion_proof(index, cp.size) {
            Ok(p) => p,
            Err(e) => {
                self.set_integrity_failure(format!("inclusion proof of decision {index}: {e}"));
                return Answer::deny(DenyReason::IntegrityFailure, e.to_string());
            }
        };
        let receipt = Receipt {
            format: RECEIPT_FORMAT.into(),
            record: record.clone(),
            inclusion_proof: proof,
            checkpoint: (*cp).clone(),
        };
        // Invariant 6: serve only what the quorum attested. The majority
        // signed roots of records they computed themselves; a record that
        // is not under that root was altered here.
        if let Err(e) = verify_receipt_inclusion(&receipt) {
            self.set_integrity_failure(format!(
                "stored decision {index} is not the one a majority attested: {e}"
            ));
            return Answer::deny(
                DenyReason::IntegrityFailure,
                format!("decision {index} does not match the attested checkpoint: {e}"),
            );
        }
        Answer {
            message: format!(
                "allowed by a committed decision attested by {} of {} voters",
                cp.cosignatures.len(),
                cp.voters.len()
            ),
            receipt_json: serde_json::to_string(&receipt).ok(),
            receipt: Some(Box::new(receipt)),
            ..answer
        }
    }

    /// Sends the request to the leader and relays its answer. A leader's
    /// ALLOW is accepted only with a record whose hash verifies.
    async fn forward(&self, leader: u64, addr: &str, req: AuthorizeRequest) -> Answer {
        let channel = match self.inner.channels.get(addr, leader) {
            Ok(c) => c,
            Err(e) => return Answer::deny(DenyReason::NoQuorum, format!("leader {leader}: {e}")),
        };
        metrics::counter!("quorate_authorize_forwarded_total").increment(1);
        match send_forward(
            channel,
            crate::api::request_to_wire(&req),
            self.commit_timeout(),
        )
        .await
        {
            Ok(resp) => self.check_relayed(crate::api::answer_from_wire(&resp, &req)),
            Err(ForwardFailure::NotSent(e)) => Answer::deny(
                DenyReason::NoQuorum,
                format!("leader {leader} unreachable: {e}"),
            ),
            Err(ForwardFailure::Unknown(e)) => Answer::deny(
                DenyReason::Unavailable,
                format!("leader {leader}: {e}; outcome unknown"),
            ),
        }
    }

    /// Fail closed on what a leader sends back: in attested mode a relayed
    /// ALLOW must carry a receipt for this very record whose checkpoint a
    /// majority of this node's applied voters cosigned.
    fn check_relayed(&self, answer: Answer) -> Answer {
        if answer.decision != Decision::Allow || self.inner.cfg.answer == AnswerMode::Committed {
            return answer;
        }
        let refuse = |why: String| {
            metrics::counter!("quorate_relay_refused_total").increment(1);
            Answer::deny(
                DenyReason::Unattested,
                format!("the leader's ALLOW is not attested: {why}; refusing to relay it"),
            )
        };
        let (Some(record), Some(receipt)) = (answer.record.as_ref(), answer.receipt.as_ref())
        else {
            return refuse("it carries no receipt".into());
        };
        if receipt.record != *record {
            return refuse("its receipt is for another record".into());
        }
        if let Err(e) = verify_receipt_inclusion(receipt) {
            return refuse(e.to_string());
        }
        let cp = &receipt.checkpoint;
        let cached = self
            .inner
            .relayed_checkpoint
            .lock()
            .ok()
            .is_some_and(|g| g.as_ref() == Some(cp));
        if !cached {
            if cp.cluster_id != self.inner.cfg.cluster_id {
                return refuse(format!("its checkpoint is of cluster {:?}", cp.cluster_id));
            }
            let voters = self.inner.lookup.applied_voters();
            let judges: Vec<(u64, Option<&quorate_core::PublicKey>)> = voters
                .iter()
                .map(|v| (v.node_id, Some(&v.public_key)))
                .collect();
            if let Err(e) = quorate_core::proof::verify_cosignatures(cp, &judges) {
                return refuse(e.to_string());
            }
            if let Ok(mut g) = self.inner.relayed_checkpoint.lock() {
                *g = Some(cp.clone());
            }
        }
        answer
    }

    /// Publishes a policy version after checking it compiles. Invalid Cedar
    /// is refused here, before anything is proposed (invariant 7).
    pub async fn publish_policy(
        &self,
        domain: String,
        policy_text: String,
        schema: Option<String>,
        activate: bool,
        signature: Option<PolicySignature>,
    ) -> Result<PolicyPublished, ApiError> {
        quorate_core::validate::domain(&domain, &self.inner.limits)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        CompiledPolicy::compile(&policy_text, schema.as_deref(), &self.inner.limits)
            .map_err(|e| ApiError::new(ErrorCode::InvalidPolicy, e.to_string()))?;
        self.check_policy_signature(&policy_text, schema.as_deref(), signature.as_ref())?;
        let cmd = Command::PublishPolicy {
            domain,
            policy_text,
            schema,
            activate,
            signature,
            timestamp_ms: now_ms(),
        };
        match self.write(cmd).await? {
            CommandResponse::Published(p) => Ok(p),
            CommandResponse::Rejected(r) => Err(ApiError::new(r.code, r.message)),
            other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Invariant 7: with `require_signed_policies`, a policy without a valid
    /// signature by a trusted publisher is refused before anything is
    /// proposed. A signature that is present is always checked.
    pub(crate) fn check_policy_signature(
        &self,
        policy_text: &str,
        schema: Option<&str>,
        signature: Option<&PolicySignature>,
    ) -> Result<(), ApiError> {
        let sec = &self.inner.cfg.security;
        let Some(sig) = signature else {
            if sec.require_signed_policies {
                return Err(ApiError::invalid(
                    "this cluster requires signed policies: sign the exact policy bytes with \
                     `quorate policy sign --key KEY` and publish with --signature",
                ));
            }
            return Ok(());
        };
        sig.verify(policy_text, schema)
            .map_err(|e| ApiError::invalid(format!("{e} over these exact policy bytes")))?;
        let trusted = sec
            .trusted_publishers
            .iter()
            .any(|p| p.public_key == sig.publisher_key);
        if sec.require_signed_policies && !trusted {
            return Err(ApiError::invalid(format!(
                "policy is signed by {}, which is not in security.trusted_publishers",
                sig.publisher_key
            )));
        }
        Ok(())
    }

    pub async fn activate_policy(
        &self,
        domain: String,
        version: u64,
    ) -> Result<PolicyActivated, ApiError> {
        quorate_core::validate::domain(&domain, &self.inner.limits)
            .map_err(|e| ApiError::invalid(e.to_string()))?;
        if version == 0 {
            return Err(ApiError::invalid("version must be >= 1"));
        }
        let cmd = Command::ActivatePolicy {
            domain,
            version,
            timestamp_ms: now_ms(),
        };
        match self.write(cmd).await? {
            CommandResponse::Activated(a) => Ok(a),
            CommandResponse::Rejected(r) => Err(ApiError::new(r.code, r.message)),
            other => Err(ApiError::internal(format!("unexpected response {other:?}"))),
        }
    }

    /// Proposes an administrative command on the leader (admin writes are
    /// rare; they are not batched). Followers refuse with the leader's
    /// address so the client can retry there; the CLI does that itself.
    pub(crate) async fn write(&self, cmd: Command) -> Result<CommandResponse, ApiError> {
        // Invariant 2: a contained node changes nothing.
        if let Some((reason, msg)) = self.containment() {
            return Err(ApiError::new(
                ErrorCode::Contained,
                format!("node is contained ({reason}): {msg}"),
            ));
        }
        self.propose(cmd).await
    }

    /// Persists a checkpoint a majority attested (`Command::Checkpoint`).
    ///
    /// Not gated like answers and admin writes: a checkpoint is what clears
    /// an unconfirmed root or an unattested answer, so a leader contained
    /// for either must still persist one, or it stays contained for good
    /// (found by the Jepsen delay run). It is safe: every replica checks
    /// each cosignature in it against its own root, and a wrong one
    /// finalises nothing. Only a node with evidence against its own state
    /// (`may_attest` false) proposes nothing.
    pub(crate) async fn write_checkpoint(&self, cmd: Command) -> Result<CommandResponse, ApiError> {
        if !self.may_attest() {
            return Err(ApiError::new(
                ErrorCode::Contained,
                "this node's own state is in doubt; it persists no checkpoint",
            ));
        }
        self.propose(cmd).await
    }

    /// Proposes `cmd` on the leader and waits for it to apply, within the
    /// commit deadline.
    async fn propose(&self, cmd: Command) -> Result<CommandResponse, ApiError> {
        let m = self.metrics();
        if m.state != ServerState::Leader {
            let hint = self
                .leader_addr(&m)
                .map(|(id, addr)| format!("the leader is node {id} at {addr}"))
                .unwrap_or_else(|| "no leader is known".into());
            return Err(ApiError::new(
                ErrorCode::Unavailable,
                format!("not the leader; {hint}; retry there"),
            ));
        }
        let deadline = self.commit_timeout();
        let started = std::time::Instant::now();
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            match tokio::time::timeout(left, self.inner.raft.client_write(cmd.clone())).await {
                Err(_) => {
                    return Err(ApiError::new(
                        ErrorCode::CommitTimeout,
                        format!(
                            "not committed within {} ms; outcome unknown: read back before retrying",
                            deadline.as_millis()
                        ),
                    ));
                }
                // A leader refreshing its lease (just elected, or after a
                // slow round) refuses writes before appending them; retrying
                // within the deadline cannot duplicate anything.
                Ok(Err(e))
                    if matches!(
                        e.api_error(),
                        Some(openraft::error::ClientWriteError::ForwardToLeader(f))
                            if f.leader_id.is_none()
                    ) && started.elapsed() + Duration::from_millis(50) < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(Err(e)) => return Err(ApiError::unavailable(e.to_string())),
                Ok(Ok(resp)) => return Ok(resp.data),
            }
        }
    }

    /// Waits until this node has applied everything committed before the
    /// call: ReadIndex on the leader, or the leader's read index fetched and
    /// awaited on a follower. Never `is_leader()`, never a lease.
    pub async fn linearize(&self) -> Result<(), ApiError> {
        let deadline = self.commit_timeout();
        let m = self.metrics();
        if m.state == ServerState::Leader {
            return match tokio::time::timeout(
                deadline,
                self.inner.raft.ensure_linearizable(ReadPolicy::ReadIndex),
            )
            .await
            {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(ApiError::unavailable(format!("read index failed: {e}"))),
                Err(_) => Err(ApiError::unavailable("read index timed out")),
            };
        }
        let Some((leader, addr)) = self.leader_addr(&m) else {
            return Err(ApiError::unavailable(
                "no known leader to take a read index from",
            ));
        };
        let log_id = fetch_read_index(&self.inner.channels, self.inner.id, leader, &addr, deadline)
            .await
            .map_err(|e| ApiError::unavailable(format!("read index from leader {leader}: {e}")))?;
        let lin = Linearizer::new(self.inner.id, ReadLogId::from_log_id(log_id), None);
        match lin.try_await_ready(&self.inner.raft, Some(deadline)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(_)) => Err(ApiError::unavailable(
                "this node did not catch up to the leader's read index in time",
            )),
            Err(e) => Err(ApiError::unavailable(e.to_string())),
        }
    }

    pub async fn get_policy(
        &self,
        domain: &str,
        version: Option<u64>,
    ) -> Result<(PolicyVersion, bool), ApiError> {
        self.linearize().await?;
        self.inner
            .lookup
            .policy(domain, version)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| match version {
                Some(v) => ApiError::new(
                    ErrorCode::NotFound,
                    format!("domain {domain:?} has no version {v}"),
                ),
                None => ApiError::new(
                    ErrorCode::NotFound,
                    format!("domain {domain:?} has no active policy version"),
                ),
            })
    }

    pub async fn get_decision_by_index(&self, index: u64) -> Result<DecisionRecord, ApiError> {
        self.linearize().await?;
        self.inner
            .lookup
            .decision(index)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| {
                ApiError::new(ErrorCode::NotFound, format!("no decision at index {index}"))
            })
    }

    pub async fn get_decision_by_request(
        &self,
        domain: &str,
        request_id: &str,
    ) -> Result<DecisionRecord, ApiError> {
        self.linearize().await?;
        self.inner
            .lookup
            .decision_by_request(domain, request_id)
            .map_err(|e| ApiError::internal(e.to_string()))?
            .ok_or_else(|| {
                ApiError::new(
                    ErrorCode::NotFound,
                    format!("no decision for request id {request_id:?} in domain {domain:?}"),
                )
            })
    }

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
        let members = membership
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
            containment_reason: containment.as_ref().map(|c| c.0),
            containment_message: containment.map(|c| c.1).unwrap_or_default(),
            last_log_index: m.last_log_index.unwrap_or(0),
            last_applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
            decision_count: head.count,
            chain_head_hash: head.hash.to_hex(),
            public_key: self.inner.key.public().to_hex(),
            last_final_checkpoint: self.inner.lookup.last_final(),
            members,
        }
    }

    fn publish_gauges(&self) {
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

/// A node's certificate must name this node of this cluster.
fn check_own_identity(
    id: &quorate_raft::tls::PeerIdentity,
    cfg: &NodeConfig,
) -> Result<(), NodeError> {
    let ok = id.cluster_id == cfg.cluster_id
        && id.principal == quorate_raft::tls::Principal::Node(cfg.node_id);
    if ok {
        Ok(())
    } else {
        Err(NodeError::TlsIdentity {
            found: id.to_string(),
            cluster: cfg.cluster_id.clone(),
            node: cfg.node_id,
        })
    }
}

/// Reloads the TLS files on SIGHUP and when they change (checked every 2 s).
/// New connections, in and out, use the new certificates at once; a
/// rotation that does not load (half-written, wrong identity) is logged and
/// the old certificates stay in use.
async fn tls_reload_task(
    tls: Arc<quorate_raft::tls::TlsContext>,
    channels: Channels,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!("no SIGHUP handler ({e}); TLS files are still reloaded on change");
            None
        }
    };
    let mut stamp = quorate_raft::tls::files_stamp(tls.files());
    loop {
        let signalled = tokio::select! {
            _ = async {
                match hup.as_mut() {
                    Some(h) => { h.recv().await; }
                    None => std::future::pending::<()>().await,
                }
            } => true,
            _ = tokio::time::sleep(Duration::from_secs(2)) => false,
            _ = shutdown.wait_for(|s| *s) => return,
        };
        let now = quorate_raft::tls::files_stamp(tls.files());
        if !signalled && now == stamp {
            continue;
        }
        stamp = now;
        match tls.reload() {
            Ok(()) => {
                channels.reset();
                metrics::counter!("quorate_tls_reloads_total", "result" => "ok").increment(1);
                tracing::info!("TLS certificates reloaded");
            }
            Err(e) => {
                metrics::counter!("quorate_tls_reloads_total", "result" => "error").increment(1);
                tracing::error!("TLS reload refused, keeping the previous certificates: {e}");
            }
        }
    }
}

/// Who may call what on the Governance API, by certificate role.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Authorize: agents, and nodes forwarding for their clients.
    Decide,
    /// Publish, activate, rollouts, membership: admins.
    Administer,
    /// Logs, receipts, exports, the watch stream, rollout status:
    /// auditors, admins and nodes.
    Audit,
    /// A receipt by (domain, request id): the agent that chose the id, and
    /// auditors, admins and nodes.
    OwnReceipt,
    /// Status, policy reads, the trust file, checkpoints: any authenticated
    /// party.
    Read,
}

impl Node {
    /// Invariant 7 at the door: with TLS, every Governance call names a
    /// verified identity of this cluster whose role allows it; without TLS
    /// (`insecure = true`, explicit in the config) everything is allowed.
    pub(crate) fn admit_client(
        &self,
        peer: Option<&quorate_raft::tls::PeerInfo>,
        rpc: &'static str,
        access: Access,
    ) -> Result<(), ApiError> {
        let client = self.check_role(peer, rpc, access)?;
        // Per-client rate limit, before anything else happens: a refused
        // call changes nothing (invariant 7).
        if let Some(client) = client
            && !self.inner.limiter.allow(&client)
        {
            metrics::counter!("quorate_rate_limited_total", "rpc" => rpc).increment(1);
            return Err(ApiError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "{client} is over its limit of {} requests/s (burst {}); slow down and retry",
                    self.inner.cfg.limits.client_requests_per_second,
                    self.inner.cfg.limits.client_burst
                ),
            ));
        }
        Ok(())
    }

    /// The role check; returns the key the caller is rate-limited under
    /// (`None` for nodes forwarding for their clients).
    fn check_role(
        &self,
        peer: Option<&quorate_raft::tls::PeerInfo>,
        rpc: &'static str,
        access: Access,
    ) -> Result<Option<String>, ApiError> {
        use quorate_raft::tls::{Principal, Role};
        if self.inner.tls.is_none() {
            let addr = peer.and_then(|p| p.remote).map(|a| a.ip().to_string());
            return Ok(Some(addr.unwrap_or_else(|| "unknown".into())));
        }
        let deny = |why: String| {
            metrics::counter!("quorate_permission_denied_total", "rpc" => rpc).increment(1);
            Err(ApiError::new(ErrorCode::PermissionDenied, why))
        };
        let Some(id) = peer.and_then(|p| p.identity.as_ref()) else {
            return deny(format!("{rpc} needs a client certificate of this cluster"));
        };
        if id.cluster_id != self.inner.cfg.cluster_id {
            return deny(format!("{id} belongs to another cluster"));
        }
        let allowed = match (&id.principal, access) {
            (_, Access::Read | Access::OwnReceipt) => true,
            (Principal::Node(_), Access::Decide | Access::Audit) => true,
            (Principal::Node(_), Access::Administer) => false,
            (Principal::Client { role, .. }, a) => matches!(
                (role, a),
                (Role::Agent, Access::Decide)
                    | (Role::Admin, Access::Administer | Access::Audit)
                    | (Role::Auditor, Access::Audit)
            ),
        };
        if !allowed {
            let needs = match access {
                Access::Decide => "an agent certificate",
                Access::Administer => "an admin certificate",
                Access::Audit => {
                    "an auditor or admin certificate (agents may fetch receipts of \
                                   their own requests by domain and request id)"
                }
                Access::OwnReceipt | Access::Read => "a certificate",
            };
            return deny(format!("{id} may not call {rpc}: it needs {needs}"));
        }
        Ok(match id.principal {
            Principal::Node(_) => None,
            Principal::Client { .. } => Some(id.to_string()),
        })
    }
}

#[tonic::async_trait]
impl PeerHandler for Node {
    fn identity(&self, nonce: &[u8; 32]) -> Identity {
        let cluster_id = self.inner.cfg.cluster_id.clone();
        let proof = self.inner.key.sign(&quorate_core::proof::identity_message(
            &cluster_id,
            self.inner.id,
            nonce,
        ));
        Identity {
            node_id: self.inner.id,
            cluster_id,
            public_key: self.inner.key.public(),
            region: self.inner.cfg.region.clone(),
            proof,
        }
    }

    /// A voter's attestations. Each must be signed by the voter on this
    /// connection (with TLS: the certificate's node), be a voter of the
    /// applied membership and verify under its key; only then is it
    /// counted, and only on the leader. Bounded: one per voter per size.
    async fn attest(
        &self,
        peer: Option<&quorate_raft::tls::PeerInfo>,
        batch: Vec<Attestation>,
    ) -> Result<(), String> {
        if self.inner.tls.is_some() {
            let sender = peer
                .and_then(|p| p.identity.as_ref())
                .map(|i| i.principal.clone());
            let Some(quorate_raft::tls::Principal::Node(n)) = sender else {
                return Err("only nodes attest".into());
            };
            if let Some(a) = batch.iter().find(|a| a.signer != n) {
                metrics::counter!("quorate_attestations_refused_total", "why" => "not_own")
                    .increment(1);
                return Err(format!(
                    "node {n} sent an attestation signed as node {}; a voter attests only for itself",
                    a.signer
                ));
            }
        }
        if self.inner.raft.metrics().borrow_watched().state != ServerState::Leader {
            return Err(format!("node {} is not the leader", self.inner.id));
        }
        let voters = self.inner.lookup.applied_voters();
        let mut first_error = None;
        for a in &batch {
            match self.inner.attestations.add_peer(a, &voters) {
                Ok(()) => metrics::counter!("quorate_attestations_total").increment(1),
                Err(e) => {
                    metrics::counter!("quorate_attestations_refused_total", "why" => "invalid")
                        .increment(1);
                    first_error.get_or_insert(e.to_string());
                }
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// With TLS, the Raft transport serves only nodes of this cluster: any
    /// of them may ask who this node is (bootstrap, add-learner) and may
    /// replicate to a node that has no membership yet (one joining);
    /// otherwise the caller must be in this node's membership.
    fn admit_peer(
        &self,
        peer: Option<&quorate_raft::tls::PeerInfo>,
        rpc: &'static str,
    ) -> Result<(), String> {
        use quorate_raft::tls::Principal;
        if self.inner.tls.is_none() {
            return Ok(());
        }
        let Some(id) = peer.and_then(|p| p.identity.as_ref()) else {
            return Err(format!("{rpc} needs a node certificate of this cluster"));
        };
        let Principal::Node(n) = id.principal else {
            return Err(format!("{id} is a client; only nodes may call {rpc}"));
        };
        if id.cluster_id != self.inner.cfg.cluster_id {
            return Err(format!("{id} belongs to another cluster"));
        }
        if rpc == "Identity" {
            return Ok(());
        }
        let m = self.inner.raft.metrics();
        let m = m.borrow_watched();
        let membership = m.membership_config.membership();
        if membership.nodes().next().is_none() || membership.get_node(&n).is_some() {
            Ok(())
        } else {
            Err(format!("node {n} is not a member of this cluster"))
        }
    }

    async fn fetch_snapshot(&self) -> Result<(quorate_raft::SnapshotMeta, Vec<u8>), String> {
        // Never hand out state this node cannot vouch for.
        if let Some((reason, msg)) = self.state_in_doubt() {
            return Err(format!(
                "node {} is contained ({reason}): {msg}",
                self.inner.id
            ));
        }
        let lookup = self.inner.lookup.clone();
        tokio::task::spawn_blocking(move || lookup.build_snapshot())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())
    }
}

/// How a forwarded request failed, by what is known of its fate.
#[derive(Debug)]
pub(crate) enum ForwardFailure {
    /// No connection to the leader could be made: nothing was sent, so
    /// nothing was proposed on our behalf (NO_QUORUM).
    NotSent(String),
    /// The connection was up and the request may have reached the leader:
    /// it may commit (UNAVAILABLE, outcome unknown). A reset after sending
    /// is this, whatever its error text says.
    Unknown(String),
}

/// Sends one forwarded Authorize over `channel`. The failure is classified
/// by the stage it happened in (connecting, or after), never by the text
/// of an error message.
pub(crate) async fn send_forward(
    channel: tonic::transport::Channel,
    req: quorate_proto::v1::AuthorizeRequest,
    timeout: Duration,
) -> Result<quorate_proto::v1::AuthorizeResponse, ForwardFailure> {
    let mut client = GovernanceClient::new(channel);
    let mut request = tonic::Request::new(req);
    request.set_timeout(timeout);
    request.metadata_mut().insert(
        FORWARDED_METADATA_KEY,
        tonic::metadata::MetadataValue::from_static("1"),
    );
    client
        .authorize(request)
        .await
        .map(|r| r.into_inner())
        .map_err(|s| {
            let message = from_status(&s).message;
            if never_connected(&s) {
                ForwardFailure::NotSent(message)
            } else {
                ForwardFailure::Unknown(message)
            }
        })
}

/// True only when the status's cause is an I/O error of a kind that can
/// happen solely while connecting (refused, unreachable, or the server's
/// certificate refused by our connector), so nothing was sent. Any other
/// failure, a reset or a broken pipe included, may have reached the
/// leader. Decided by the error's kind, never its text.
fn never_connected(s: &tonic::Status) -> bool {
    use std::error::Error as _;
    use std::io::ErrorKind;
    let mut cause: Option<&(dyn std::error::Error + 'static)> = s.source();
    while let Some(e) = cause {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return matches!(
                io.kind(),
                ErrorKind::ConnectionRefused
                    | ErrorKind::AddrNotAvailable
                    | ErrorKind::HostUnreachable
                    | ErrorKind::NetworkUnreachable
                    | ErrorKind::PermissionDenied
            );
        }
        cause = e.source();
    }
    false
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
async fn leadership_task(node: Node, mut shutdown: watch::Receiver<bool>) {
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
        // Campaigning and leading need no evidence against this node. The
        // suspicion of an unconfirmed root alone stops neither: only a
        // leader persists checkpoints, and only checkpoints clear it. (A
        // leader merely suspected still denies everything while contained.)
        let in_doubt = node.evidence_against_itself();
        if in_doubt != blocked {
            blocked = in_doubt;
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
        let Some(to) = voters
            .iter()
            .filter(|v| **v != node.id())
            .max_by_key(|v| (matched(v), std::cmp::Reverse(**v)))
            .copied()
        else {
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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    fn wire() -> quorate_proto::v1::AuthorizeRequest {
        quorate_proto::v1::AuthorizeRequest {
            domain: "d".into(),
            principal: r#"User::"a""#.into(),
            action: r#"Action::"r""#.into(),
            resource: r#"Doc::"1""#.into(),
            context_json: "{}".into(),
            entities_json: None,
            request_id: "x".into(),
            parent: None,
            trace_id: None,
        }
    }

    /// A leader held only in suspicion (its root unconfirmed past the
    /// finality timeout) still persists the checkpoint that clears it. It
    /// used to refuse, because checkpoints went through the same
    /// containment gate as answers: the suspicion could then never clear,
    /// and a cluster in which every node was suspected or unattested after
    /// a long delay never served again (Jepsen membership,delay,duplicate).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_suspected_leader_persists_the_checkpoint_that_clears_it() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let port = |()| {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let (g, h) = (port(()), port(()));
        let text = format!(
            "cluster_id = \"c\"\nnode_id = 1\ngrpc_addr = \"127.0.0.1:{g}\"\n\
             http_addr = \"127.0.0.1:{h}\"\n\
             members = [{{ id = 1, addr = \"127.0.0.1:{g}\" }}]\n\
             [checkpoint]\ninterval_ms = 2000\nfinality_timeout_ms = 2500\n"
        );
        let cfg: NodeConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("{e}"));
        let running = Node::start(cfg, dir.path())
            .await
            .unwrap_or_else(|e| panic!("start: {e}"));
        let node = running.node.clone();
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while node
            .publish_policy(
                "docs".into(),
                "permit(principal, action, resource);".into(),
                None,
                true,
                None,
            )
            .await
            .is_err()
        {
            assert!(std::time::Instant::now() < deadline, "could not publish");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let ask = |id: &str| AuthorizeRequest {
            domain: "docs".into(),
            request_id: id.into(),
            principal: r#"User::"a""#.into(),
            action: r#"Action::"r""#.into(),
            resource: r#"Doc::"1""#.into(),
            context: "{}".into(),
            entities: None,
            parent: None,
            trace_id: None,
        };
        // A decision whose checkpoint is not final yet (checkpoints come
        // every 2 s), then the suspicion, as if it had waited far too long.
        let mut k = 0;
        let size = loop {
            k += 1;
            let a = node
                .authorize(ask(&format!("r{k}")), false)
                .await
                .unwrap_or_else(|e| panic!("authorize: {e}"));
            assert_eq!(a.decision, quorate_core::Decision::Allow, "{a:?}");
            let size = a.record.as_ref().map_or(0, |r| r.index);
            if node.lookup().last_final() < size {
                break size;
            }
        };
        *node
            .inner
            .unconfirmed
            .lock()
            .unwrap_or_else(|p| p.into_inner()) =
            Some((size, std::time::Instant::now() - Duration::from_secs(3600)));
        assert_eq!(
            node.containment().map(|c| c.0),
            Some(DenyReason::Divergence),
            "the suspicion contains"
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while node.lookup().last_final() < size
            || node.containment().map(|c| c.0) == Some(DenyReason::Divergence)
        {
            assert!(
                std::time::Instant::now() < deadline,
                "still contained: {:?}; last final {}",
                node.containment(),
                node.lookup().last_final()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let a = node
            .authorize(ask("after"), false)
            .await
            .unwrap_or_else(|e| panic!("authorize: {e}"));
        assert_eq!(a.decision, quorate_core::Decision::Allow, "{a:?}");
        drop(node);
        running.shutdown().await;
    }

    #[tokio::test]
    async fn a_reset_after_sending_is_an_unknown_outcome_not_no_quorum() {
        // A "leader" that takes the connection and the request, then resets.
        let l = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let addr = l.local_addr().unwrap_or_else(|e| panic!("{e}"));
        tokio::spawn(async move {
            if let Ok((mut s, _)) = l.accept().await {
                let mut buf = vec![0u8; 4096];
                let mut got = 0;
                let _ = tokio::time::timeout(Duration::from_secs(2), async {
                    while got < 150 {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => got += n,
                        }
                    }
                })
                .await;
                drop(s);
            }
        });
        let ch = quorate_raft::network::channel(&addr.to_string(), None, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let r = send_forward(ch, wire(), Duration::from_secs(3)).await;
        assert!(matches!(r, Err(ForwardFailure::Unknown(_))), "{r:?}");
    }

    #[test]
    fn a_status_is_classified_by_its_cause_not_its_text() {
        let with = |msg: &str, kind: std::io::ErrorKind| {
            let mut s = tonic::Status::unavailable(msg);
            s.set_source(std::sync::Arc::new(std::io::Error::new(
                kind,
                msg.to_string(),
            )));
            s
        };
        // A reset after the request went out, whose text says "connect":
        // the old text rule called this NO_QUORUM (certainly not logged).
        let reset = with(
            "error reading from connection: connection reset by peer",
            std::io::ErrorKind::ConnectionReset,
        );
        assert!(!never_connected(&reset));
        // A refused connection, whatever its text, sent nothing.
        assert!(never_connected(&with(
            "transport error",
            std::io::ErrorKind::ConnectionRefused
        )));
        // No cause known: the outcome is unknown.
        assert!(!never_connected(&tonic::Status::unavailable(
            "tcp connect error"
        )));
    }

    #[tokio::test]
    async fn a_leader_that_cannot_be_reached_was_sent_nothing() {
        // A port nobody listens on.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
            l.local_addr().unwrap_or_else(|e| panic!("{e}"))
        };
        let ch = quorate_raft::network::channel(&addr.to_string(), None, None)
            .unwrap_or_else(|e| panic!("{e}"));
        let r = send_forward(ch, wire(), Duration::from_secs(3)).await;
        assert!(matches!(r, Err(ForwardFailure::NotSent(_))), "{r:?}");
    }
}
