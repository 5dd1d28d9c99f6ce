//! Starting a node: open the store, verify it, start openraft, the batcher,
//! the servers and the background tasks; bootstrap a new cluster; reload
//! TLS certificates.

use super::contain::leadership_task;
use super::*;

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
        let mut sm = StateMachine::open(store.clone(), limits)
            .map_err(|source| NodeError::Store {
                path: db_dir.clone(),
                source,
            })?
            .with_cluster_id(&cfg.cluster_id);
        // A snapshot install cut short by a crash is completed from its
        // saved file first; if it cannot be, verification below fails and
        // the node contains.
        if let Err(e) = sm.resume_interrupted_install() {
            tracing::error!("{e}");
        }
        let lookup = sm.lookup();
        // Verify the stored decision log before serving anything from it.
        let started = std::time::Instant::now();
        let iv = &cfg.integrity;
        let integrity = match lookup
            .verify_state_incremental(iv.full_verify_below, iv.sample_records)
        {
            Ok(c) => {
                tracing::info!(
                    records = c.head.count,
                    head = %c.head.hash,
                    from = c.resumed_at,
                    sampled = c.sampled,
                    ms = started.elapsed().as_millis() as u64,
                    "decision log verified"
                );
                None
            }
            Err(e) => {
                tracing::error!("{e}; this node contains (DENY INTEGRITY_FAILURE) until repaired");
                Some(e.to_string())
            }
        };
        let snapshot_dir = store.snapshot_dir().to_path_buf();
        let log_store = LogStore::new(store);
        let r = &cfg.raft;
        let raft_config = openraft::Config {
            cluster_name: cfg.cluster_id.clone(),
            heartbeat_interval: r.heartbeat_interval_ms,
            election_timeout_min: r.election_timeout_min_ms,
            election_timeout_max: r.election_timeout_max_ms,
            install_snapshot_timeout: 60_000,
            // Snapshots are triggered by `snapshot_task` (entries and growth).
            snapshot_policy: openraft::SnapshotPolicy::Never,
            max_in_snapshot_log_to_keep: r.keep_entries_after_snapshot,
            // Pre-vote keeps a node that was cut off from disrupting a healthy
            // leader with inflated terms when it comes back.
            enable_pre_vote: Some(true),
            // Off (openraft's default is on): a leader that loses power and
            // its unsynced log suffix must not resume leadership in the same
            // term without an election. Our applied state and committed
            // index are not synced before `apply` returns, which is exactly
            // when openraft documents this option as unsafe; the
            // whole-product simulation forks the Raft log with it on
            // (ARCHITECTURE.md, "Leader restore").
            enable_leader_restore: Some(false),
            // On: a follower whose database was lost comes back empty, below
            // what the leader had recorded as replicated to it. With this off
            // openraft asserts (debug builds: the leader's Raft core panics
            // and the node denies everything) or keeps that stale position
            // and never repairs it (release). On, the leader searches the
            // follower's log again and re-sends it, without lowering the
            // committed index (t23).
            allow_log_reversion: Some(true),
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
        // What each AppendEntries tells followers about this leader's lease.
        let quorum_clock = quorate_raft::network::QuorumClock::default();
        let raft = QRaft::new(
            cfg.node_id,
            Arc::new(raft_config),
            Network::new(cfg.node_id, channels.clone(), quorum_clock.clone()),
            log_store,
            sm,
        )
        .await
        .map_err(|e| NodeError::Raft(e.to_string()))?;
        quorum_clock.set(raft.metrics());
        let contact = LeaderContact::default();
        let in_flight = batcher::in_flight(&cfg.batch);
        let batcher = batcher::spawn(raft.clone(), cfg.batch.clone(), in_flight.clone());
        let probes = batcher::spawn(raft.clone(), cfg.batch.clone(), in_flight);
        let node = Node {
            inner: Arc::new(Inner {
                id: cfg.node_id,
                cfg: cfg.clone(),
                raft: raft.clone(),
                lookup,
                contact: contact.clone(),
                channels,
                batcher,
                probes,
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
                contained_since: std::sync::Mutex::new(None),
                timeline: std::sync::Mutex::new(std::collections::VecDeque::new()),
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
        let tls_for_http = tls.clone();
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
            RaftTransportServer::new(RaftService::new(
                raft.clone(),
                contact,
                handler.clone(),
                snapshot_dir,
            ))
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
            handler,
        );
        let gov_svc = GovernanceServer::new(api)
            .max_decoding_message_size(4 * 1024 * 1024)
            .max_encoding_message_size(64 * 1024 * 1024);
        // Envoy's ext_authz (crate::envoy): the same node, the same roles.
        let envoy_svc = quorate_proto::envoy_api::envoy::service::auth::v3::authorization_server::AuthorizationServer::new(
            crate::envoy::EnvoyAuthz::new(node.clone()),
        )
        .max_decoding_message_size(4 * 1024 * 1024);
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
                .add_service(envoy_svc)
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
            let app = crate::http::router(http_node)
                .into_make_service_with_connect_info::<crate::http::HttpPeer>();
            let listener = crate::http::HttpListener::new(http_listener, tls_for_http);
            let r = axum::serve(listener, app)
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
        tasks.push(tokio::spawn(snapshot_task(
            node.clone(),
            shutdown_rx.clone(),
        )));
        let metrics_node = node.clone();
        let mut rx = shutdown_rx.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = 0u64;
            loop {
                metrics_node.publish_gauges();
                tick += 1;
                if tick % 2 == 0 {
                    metrics_node.sample_timeline();
                }
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
    /// member has answered who it is (its key checked against the config's
    /// when given) and none of them holds state. A no-op when this node
    /// already has state; retried in the background until the members
    /// answer.
    ///
    /// Invariants 4 and 5: a node whose database was lost starts empty, like
    /// a new one. If it initialised beside a member that still holds the
    /// cluster's log, two such nodes would be a majority of the
    /// configuration and could commit and attest a second history at the
    /// same indexes. So an empty node never initialises while any member
    /// holds state; it waits for that member's leader to repair it.
    async fn bootstrap(&self) {
        if self.inner.raft.is_initialized().await.unwrap_or(true) {
            return;
        }
        let members = loop {
            match self.member_identities().await {
                Ok((_, Some(holder))) => {
                    tracing::warn!(
                        "not initialising a new cluster: member {holder} already holds this \
                         cluster's state and this node has none (new, or its database was \
                         lost); it joins when the cluster's leader reaches it"
                    );
                    return;
                }
                Ok((m, None)) => break m,
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

    /// Every configured member with its public key and region, each asked
    /// (a configured key must match the one it proves), and the first
    /// other member that says it already holds Raft state, if any.
    async fn member_identities(&self) -> Result<(BTreeMap<u64, NodeInfo>, Option<u64>), String> {
        let cfg = &self.inner.cfg;
        let mut out = BTreeMap::new();
        let mut holder = None;
        for m in &cfg.members {
            let (public_key, region) = if m.id == self.inner.id {
                (self.inner.key.public(), cfg.region.clone())
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
                if id.has_state && holder.is_none() {
                    holder = Some(m.id);
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
        Ok((out, holder))
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

/// When to build a snapshot: at least `snapshot_after_entries` entries
/// applied since the last one, and the decision log grown by at least
/// `snapshot_after_growth_percent` of the size it had then.
pub(crate) fn snapshot_due(
    r: &crate::config::RaftConfig,
    entries_since: u64,
    records_now: u64,
    records_at_last: u64,
) -> bool {
    let grown = records_now.saturating_sub(records_at_last);
    let needed = records_at_last.saturating_mul(r.snapshot_after_growth_percent) / 100;
    entries_since >= r.snapshot_after_entries && grown >= needed
}

/// Builds snapshots by `snapshot_due` (openraft's own policy is off): one at
/// a time; the next is considered once the last is in the metrics (or ten
/// minutes after asking, if it never came).
async fn snapshot_task(node: Node, mut shutdown: watch::Receiver<bool>) {
    const GIVE_UP: Duration = Duration::from_secs(600);
    let r = node.config().raft.clone();
    let raft = node.inner.raft.clone();
    let snapshot_index = |raft: &QRaft| {
        let m = raft.metrics();
        let m = m.borrow_watched();
        (
            m.last_applied.map(|l| l.index).unwrap_or(0),
            m.snapshot.map(|l| l.index),
        )
    };
    // The decision log's size at the last snapshot is not stored: after a
    // restart, the size now if there is a snapshot (none is due until the
    // log grows from here), nothing otherwise.
    let mut seen = snapshot_index(&raft).1;
    let mut records_at_last = if seen.is_some() {
        node.lookup().tree_head().0
    } else {
        0
    };
    let mut asked: Option<std::time::Instant> = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = shutdown.wait_for(|s| *s) => return,
        }
        let (applied, snapshot) = snapshot_index(&raft);
        let records = node.lookup().tree_head().0;
        if snapshot != seen {
            // Built here or installed from the leader.
            seen = snapshot;
            records_at_last = records;
            asked = None;
        }
        if asked.is_some_and(|t| t.elapsed() < GIVE_UP) {
            continue;
        }
        let since = applied.saturating_sub(snapshot.unwrap_or(0));
        if !snapshot_due(&r, since, records, records_at_last) {
            continue;
        }
        tracing::info!(applied, records, records_at_last, "building a snapshot");
        if raft.trigger().snapshot().await.is_err() {
            return;
        }
        asked = Some(std::time::Instant::now());
    }
}
