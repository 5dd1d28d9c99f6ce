//! The client half of the Raft transport: openraft calls these to reach a
//! peer. Each message is openraft's own type serialised as JSON inside a
//! `quorate.internal.v1.RaftMessage`, sent over a lazily connected tonic
//! channel.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::NodeInfo;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use quorate_proto::internal::RaftMessage;
use quorate_proto::internal::raft_transport_client::RaftTransportClient;
use serde::{Serialize, de::DeserializeOwned};
use tonic::transport::{Channel, Endpoint};

use crate::{Snapshot, SnapshotData, TypeConfig, Vote};

/// The largest Raft message accepted or sent: a batch of entries at the
/// request limits. Snapshots travel in chunks of about a MiB.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 1024 * 1024 * 1024;

/// A failure of one RPC, before it is mapped to openraft's error types.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    #[error("peer {0} unreachable: {1}")]
    Unreachable(u64, String),
    #[error("peer {0}: {1}")]
    Failed(u64, String),
}

/// Channels by (address, the node expected there: `None` for any node).
type ChannelMap = HashMap<(String, Option<u64>), Channel>;

/// Lazily connected channels to peers, one per address, shared by the Raft
/// transport, leader forwarding and read-index calls. With TLS, every
/// connection is mutual TLS with this node's certificate, made with the
/// material current at connect time (so a rotated certificate is used by
/// every reconnect).
#[derive(Clone, Debug, Default)]
pub struct Channels {
    inner: Arc<Mutex<ChannelMap>>,
    tls: Option<Arc<crate::tls::TlsContext>>,
}

impl Channels {
    pub fn with_tls(tls: Option<Arc<crate::tls::TlsContext>>) -> Channels {
        Channels {
            inner: Arc::default(),
            tls,
        }
    }

    /// The channel to node `node` at `addr`, created (not yet connected)
    /// on first use. With TLS, the connection is refused unless the
    /// server's certificate names that node of this cluster.
    pub fn get(&self, addr: &str, node: u64) -> Result<Channel, tonic::transport::Error> {
        self.get_checked(addr, Some(node))
    }

    /// The channel to whichever node of this cluster serves `addr` (the
    /// certificate must still name a node of this cluster).
    pub fn get_any(&self, addr: &str) -> Result<Channel, tonic::transport::Error> {
        self.get_checked(addr, None)
    }

    fn get_checked(
        &self,
        addr: &str,
        node: Option<u64>,
    ) -> Result<Channel, tonic::transport::Error> {
        let mut map = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let key = (addr.to_string(), node);
        if let Some(c) = map.get(&key) {
            return Ok(c.clone());
        }
        let c = channel(addr, self.tls.clone(), node)?;
        map.insert(key, c.clone());
        Ok(c)
    }

    /// Forgets every channel: the next call reconnects (after a
    /// certificate rotation, so that no connection keeps the old one).
    pub fn reset(&self) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

/// A lazily connected channel to `addr`, over mutual TLS when `tls` is set:
/// then the server must present a node certificate of this party's own
/// cluster, and of node `node` when given (`tls::connect_tls`).
pub fn channel(
    addr: &str,
    tls: Option<Arc<crate::tls::TlsContext>>,
    node: Option<u64>,
) -> Result<Channel, tonic::transport::Error> {
    Ok(connect_lazy(endpoint(addr)?, addr, tls, node))
}

/// `channel` with the caller's own endpoint settings (timeouts).
pub fn connect_lazy(
    ep: Endpoint,
    addr: &str,
    tls: Option<Arc<crate::tls::TlsContext>>,
    node: Option<u64>,
) -> Channel {
    match tls {
        None => ep.connect_lazy(),
        Some(tls) => {
            let addr = addr.to_string();
            ep.connect_with_connector_lazy(tower::service_fn(move |_: tonic::transport::Uri| {
                let (tls, addr) = (tls.clone(), addr.clone());
                async move { crate::tls::connect_tls(&tls, &addr, node).await }
            }))
        }
    }
}

/// Makes one client per peer.
#[derive(Clone, Debug)]
pub struct Network {
    from: u64,
    channels: Channels,
    quorum: QuorumClock,
}

impl Network {
    pub fn new(from: u64, channels: Channels, quorum: QuorumClock) -> Network {
        Network {
            from,
            channels,
            quorum,
        }
    }
}

type Metrics =
    openraft::type_config::alias::WatchReceiverOf<TypeConfig, openraft::RaftMetrics<TypeConfig>>;

/// How long ago this node's quorum last acknowledged it as leader, read
/// from openraft's metrics when each AppendEntries is sent
/// (`RaftMessage.quorum_age_ms`). Set once the Raft exists (it is created
/// with its network); until then, and while not leading, unknown.
#[derive(Clone, Default)]
pub struct QuorumClock {
    metrics: Arc<std::sync::OnceLock<Metrics>>,
}

impl std::fmt::Debug for QuorumClock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QuorumClock").finish_non_exhaustive()
    }
}

impl QuorumClock {
    pub fn set(&self, metrics: Metrics) {
        let _ = self.metrics.set(metrics);
    }

    /// The age in ms plus one; 0 when not known. A sole voter is its own
    /// quorum, always fresh (openraft does not refresh its
    /// `last_quorum_acked` while it idles), so its learners keep serving.
    fn age_plus_one(&self) -> u64 {
        use openraft::Instant as _;
        use openraft::async_runtime::WatchReceiver;
        let Some(m) = self.metrics.get() else {
            return 0;
        };
        let m = m.borrow_watched();
        if m.membership_config.membership().voter_ids().eq([m.id]) {
            return 1;
        }
        m.last_quorum_acked
            .map_or(0, |t| (t.elapsed().as_millis() as u64).saturating_add(1))
    }
}

/// One peer's client.
pub struct PeerClient {
    from: u64,
    target: u64,
    client: Option<RaftTransportClient<Channel>>,
    addr: String,
    quorum: QuorumClock,
}

pub fn endpoint(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    let uri = if addr.starts_with("http://") || addr.starts_with("https://") {
        addr.to_string()
    } else {
        format!("http://{addr}")
    };
    Ok(Endpoint::from_shared(uri)?
        .connect_timeout(Duration::from_millis(500))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(5)))
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &NodeInfo) -> PeerClient {
        let client = self.channels.get(&node.addr, target).ok().map(|c| {
            RaftTransportClient::new(c)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        });
        PeerClient {
            from: self.from,
            target,
            client,
            addr: node.addr.clone(),
            quorum: self.quorum.clone(),
        }
    }
}

impl PeerClient {
    async fn call<Req, Resp, F, Fut>(
        &mut self,
        req: &Req,
        data: Vec<u8>,
        quorum_age_ms: u64,
        ttl: Duration,
        f: F,
    ) -> Result<Resp, TransportError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftTransportClient<Channel>, RaftMessage) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        self.call_raw(req, data, quorum_age_ms, ttl, f)
            .await
            .map(|(r, _)| r)
    }

    /// [`PeerClient::call`], also handing back the answer's `data` in `out`.
    async fn call_with_data<Req, Resp, F, Fut>(
        &mut self,
        req: &Req,
        ttl: Duration,
        out: &mut Vec<u8>,
        f: F,
    ) -> Result<Resp, TransportError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftTransportClient<Channel>, RaftMessage) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let (r, data) = self.call_raw(req, Vec::new(), 0, ttl, f).await?;
        *out = data;
        Ok(r)
    }

    async fn call_raw<Req, Resp, F, Fut>(
        &mut self,
        req: &Req,
        data: Vec<u8>,
        quorum_age_ms: u64,
        ttl: Duration,
        f: F,
    ) -> Result<(Resp, Vec<u8>), TransportError>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        F: FnOnce(RaftTransportClient<Channel>, RaftMessage) -> Fut,
        Fut: Future<Output = Result<tonic::Response<RaftMessage>, tonic::Status>>,
    {
        let target = self.target;
        let Some(client) = self.client.clone() else {
            return Err(TransportError::Unreachable(
                target,
                format!("bad peer address {:?}", self.addr),
            ));
        };
        let payload = quorate_core::codec::encode(req);
        let msg = RaftMessage {
            from: self.from,
            payload,
            data,
            quorum_age_ms,
        };
        let resp = match tokio::time::timeout(ttl, f(client, msg)).await {
            Err(_) => return Err(TransportError::Unreachable(target, "timed out".into())),
            Ok(Err(status)) => {
                return Err(match status.code() {
                    tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                        TransportError::Unreachable(target, status.message().to_string())
                    }
                    _ => TransportError::Failed(target, status.message().to_string()),
                });
            }
            Ok(Ok(r)) => r.into_inner(),
        };
        let out: Result<Resp, String> = quorate_core::codec::decode(&resp.payload)
            .map_err(|e| TransportError::Failed(target, format!("decode: {e}")))?;
        out.map(|r| (r, resp.data))
            .map_err(|e| TransportError::Failed(target, e))
    }
}

fn rpc_err(e: TransportError) -> RPCError<TypeConfig> {
    match e {
        TransportError::Unreachable(..) => RPCError::Unreachable(Unreachable::new(&e)),
        TransportError::Failed(..) => RPCError::Network(NetworkError::new(&e)),
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = SnapshotData;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        let age = self.quorum.age_plus_one();
        self.call(
            &rpc,
            Vec::new(),
            age,
            option.hard_ttl(),
            |mut c, m| async move { c.append_entries(m).await },
        )
        .await
        .map_err(rpc_err)
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            &rpc,
            Vec::new(),
            0,
            option.hard_ttl(),
            |mut c, m| async move { c.vote(m).await },
        )
        .await
        .map_err(rpc_err)
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            &rpc,
            Vec::new(),
            0,
            option.hard_ttl(),
            |mut c, m| async move { c.pre_vote(m).await },
        )
        .await
        .map_err(rpc_err)
    }

    async fn transfer_leader(
        &mut self,
        rpc: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        self.call(
            &rpc,
            Vec::new(),
            0,
            option.hard_ttl(),
            |mut c, m| async move { c.transfer_leader(m).await },
        )
        .await
        .map_err(rpc_err)
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let stream_err = |e: TransportError| match e {
            TransportError::Unreachable(..) => StreamingError::Unreachable(Unreachable::new(&e)),
            TransportError::Failed(..) => StreamingError::Network(NetworkError::new(&e)),
        };
        let send = self.send_snapshot(vote, snapshot, option.hard_ttl());
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            r = send => r.map_err(stream_err),
        }
    }
}

/// The most snapshot bytes one InstallSnapshot message carries (whole
/// frames; a single larger frame travels alone).
pub const SNAPSHOT_CHUNK_BYTES: usize = 1024 * 1024;

/// How long the receiver may take to verify and install a complete
/// snapshot once its last chunk has arrived.
const SNAPSHOT_INSTALL_TTL: Duration = Duration::from_secs(600);

/// One InstallSnapshot message: a chunk of the snapshot file at `offset`
/// (in the message's `data`), or with `probe` set only a question: how much
/// of snapshot `id` do you hold?
#[derive(Serialize, serde::Deserialize)]
pub struct WireChunk {
    pub vote: Vote,
    pub meta: crate::SnapshotMeta,
    /// Names the snapshot file: its log id and length.
    pub id: String,
    pub total: u64,
    pub offset: u64,
    pub probe: bool,
}

/// The receiver's answer to a chunk.
#[derive(Serialize, serde::Deserialize)]
pub(crate) enum ChunkReply {
    /// Send from `offset` on (the receiver holds that many bytes of it).
    Continue { offset: u64 },
    /// The snapshot was received whole, verified and installed.
    Installed(SnapshotResponse<TypeConfig>),
}

/// The id a snapshot file travels under.
pub fn snapshot_id(meta: &crate::SnapshotMeta, total: u64) -> String {
    match meta.last_log_id {
        Some(l) => format!("{}-{}-{total}", l.committed_leader_id(), l.index),
        None => format!("empty-{total}"),
    }
}

/// The chunk of `data` that starts at `offset`: whole frames, up to
/// [`SNAPSHOT_CHUNK_BYTES`] (at least one frame).
pub fn read_chunk(data: &SnapshotData, offset: u64) -> std::io::Result<Vec<u8>> {
    let total = data.len()?;
    let mut end = offset;
    if offset == 0 {
        end = quorate_core::frames::MAGIC.len() as u64;
    }
    while end < total {
        let mut header = [0u8; 5];
        let n = data.read_at(end, &mut header)?;
        let len = quorate_core::frames::frame_len(&header[..n], end)
            .map_err(std::io::Error::other)?
            .ok_or_else(|| std::io::Error::other("snapshot file ends inside a frame"))?
            as u64;
        if end > offset && end + len - offset > SNAPSHOT_CHUNK_BYTES as u64 {
            break;
        }
        end += len;
    }
    let end = end.min(total);
    let mut buf = vec![0u8; (end - offset) as usize];
    let n = data.read_at(offset, &mut buf)?;
    buf.truncate(n);
    Ok(buf)
}

impl PeerClient {
    /// Streams `snapshot` to the peer a chunk at a time, resuming where the
    /// peer says it stands: after a failed call, a reconnect, or a chunk it
    /// refused, only what it lacks is sent again.
    async fn send_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        ttl: Duration,
    ) -> Result<SnapshotResponse<TypeConfig>, TransportError> {
        let target = self.target;
        let data = snapshot.snapshot;
        let io = |e: std::io::Error| {
            TransportError::Failed(
                target,
                format!("reading snapshot {}: {e}", data.path().display()),
            )
        };
        let total = data.len().map_err(io)?;
        let id = snapshot_id(&snapshot.meta, total);
        let ttl = ttl.max(Duration::from_secs(30));
        let mut wire = WireChunk {
            vote,
            meta: snapshot.meta,
            id,
            total,
            offset: 0,
            probe: true,
        };
        // Refused chunks in a row before giving up (openraft retries the
        // whole call later, which resumes here again).
        let mut refused = 0;
        loop {
            let chunk = if wire.probe {
                Vec::new()
            } else {
                read_chunk(&data, wire.offset).map_err(io)?
            };
            let last = !wire.probe && wire.offset + chunk.len() as u64 >= total;
            let ttl = if last { SNAPSHOT_INSTALL_TTL } else { ttl };
            let sent = chunk.len() as u64;
            let r: Result<ChunkReply, TransportError> = self
                .call(&wire, chunk, 0, ttl, |mut c, m| async move {
                    c.install_snapshot(m).await
                })
                .await;
            match r {
                Ok(ChunkReply::Installed(resp)) => return Ok(resp),
                Ok(ChunkReply::Continue { offset }) => {
                    if !wire.probe {
                        metrics::counter!("quorate_snapshot_sent_bytes_total").increment(sent);
                    }
                    if offset > total {
                        return Err(TransportError::Failed(
                            target,
                            format!("peer claims {offset} bytes of a {total}-byte snapshot"),
                        ));
                    }
                    refused = 0;
                    wire.offset = offset;
                    wire.probe = false;
                }
                Err(TransportError::Failed(_, why)) if !wire.probe && refused < 3 => {
                    tracing::warn!(
                        target,
                        offset = wire.offset,
                        "snapshot chunk refused: {why}"
                    );
                    refused += 1;
                    wire.probe = true;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// A client for node `target` at `addr` (`None`: any node of this cluster).
fn peer(
    channels: &Channels,
    from: u64,
    target: Option<u64>,
    addr: &str,
) -> Result<PeerClient, TransportError> {
    let c = match target {
        Some(t) => channels.get(addr, t),
        None => channels.get_any(addr),
    }
    .map_err(|e| TransportError::Unreachable(target.unwrap_or(0), e.to_string()))?;
    let target = target.unwrap_or(0);
    Ok(PeerClient {
        from,
        target,
        client: Some(
            RaftTransportClient::new(c)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES),
        ),
        addr: addr.to_string(),
        quorum: QuorumClock::default(),
    })
}

/// Asks the node at `addr`, which must be node `expect` of this cluster
/// (with TLS, its certificate must say so), who it is. The answer must name
/// that node and prove, over a fresh nonce, that it holds the key it names.
pub async fn fetch_identity(
    channels: &Channels,
    from: u64,
    expect: u64,
    addr: &str,
    ttl: Duration,
) -> Result<crate::service::Identity, TransportError> {
    let mut p = peer(channels, from, Some(expect), addr)?;
    let ask = crate::service::IdentityRequest {
        nonce: fresh_nonce(),
    };
    let id: crate::service::Identity = p
        .call(&ask, Vec::new(), 0, ttl, |mut c, m| async move {
            c.identity(m).await
        })
        .await?;
    if id.node_id != expect {
        return Err(TransportError::Failed(
            expect,
            format!("{addr} answers as node {}, not node {expect}", id.node_id),
        ));
    }
    id.verify(&ask.nonce).map_err(|e| {
        TransportError::Failed(
            expect,
            format!(
                "node {expect} does not prove it holds key {}: {e}",
                id.public_key
            ),
        )
    })?;
    Ok(id)
}

/// 32 fresh bytes: from the OS, mixed with the time (freshness is what
/// the proof needs; a node never signs another node's id, whatever the
/// nonce).
fn fresh_nonce() -> [u8; 32] {
    let mut buf = [0u8; 32];
    let os = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf));
    let mut seed = buf.to_vec();
    seed.extend_from_slice(format!("{os:?}{:?}", std::time::SystemTime::now()).as_bytes());
    quorate_core::canonical::sha256(&seed)
}

/// Sends this voter's attestations to the leader at `addr`.
pub async fn attest(
    channels: &Channels,
    from: u64,
    target: u64,
    addr: &str,
    batch: &[quorate_core::Attestation],
    ttl: Duration,
) -> Result<(), TransportError> {
    let mut p = peer(channels, from, Some(target), addr)?;
    p.call(&batch, Vec::new(), 0, ttl, |mut c, m| async move {
        c.attest(m).await
    })
    .await
}

/// One FetchSnapshot ask: the chunk at `offset` of snapshot `id` (`None`:
/// build a fresh snapshot and start it).
#[derive(Serialize, serde::Deserialize)]
pub(crate) struct FetchChunk {
    pub(crate) id: Option<String>,
    pub(crate) offset: u64,
}

/// One FetchSnapshot answer; the chunk is in the message's `data`.
#[derive(Serialize, serde::Deserialize)]
pub(crate) struct Fetched {
    pub(crate) meta: crate::SnapshotMeta,
    pub(crate) id: String,
    pub(crate) total: u64,
    pub(crate) offset: u64,
}

/// Fetches a fresh snapshot of the node at `addr` into the file `dest`, a
/// checked chunk at a time (memory: one chunk). `ttl` bounds each call.
pub async fn fetch_snapshot(
    channels: &Channels,
    from: u64,
    addr: &str,
    ttl: Duration,
    dest: &std::path::Path,
) -> Result<(crate::SnapshotMeta, SnapshotData), TransportError> {
    use std::io::Write as _;
    let mut p = peer(channels, from, None, addr)?;
    let failed = |e: String| TransportError::Failed(0, e);
    let mut file = std::fs::File::create(dest)
        .map_err(|e| failed(format!("cannot write {}: {e}", dest.display())))?;
    let mut ask = FetchChunk {
        id: None,
        offset: 0,
    };
    loop {
        let mut chunk = Vec::new();
        let got: Fetched = p
            .call_with_data(&ask, ttl, &mut chunk, |mut c, m| async move {
                c.fetch_snapshot(m).await
            })
            .await?;
        if got.offset != ask.offset || got.offset + chunk.len() as u64 > got.total {
            return Err(failed(format!(
                "the peer sent {} bytes at {} of a {}-byte snapshot when {} was asked",
                chunk.len(),
                got.offset,
                got.total,
                ask.offset
            )));
        }
        quorate_core::frames::check_chunk(&chunk, got.offset)
            .map_err(|e| failed(format!("snapshot chunk at byte {}: {e}", got.offset)))?;
        file.write_all(&chunk)
            .map_err(|e| failed(format!("writing {}: {e}", dest.display())))?;
        ask.offset += chunk.len() as u64;
        ask.id = Some(got.id);
        if ask.offset == got.total {
            file.sync_all()
                .map_err(|e| failed(format!("syncing {}: {e}", dest.display())))?;
            let data = SnapshotData::open(dest)
                .map_err(|e| failed(format!("reading {}: {e}", dest.display())))?;
            return Ok((got.meta, data));
        }
        if chunk.is_empty() {
            return Err(failed("the peer sent an empty chunk before the end".into()));
        }
    }
}

/// Asks the node at `addr` (the leader) for a read index. The caller then
/// waits until its own state machine has applied that log id.
pub async fn fetch_read_index(
    channels: &Channels,
    from: u64,
    target: u64,
    addr: &str,
    ttl: Duration,
) -> Result<crate::LogId, TransportError> {
    let mut p = peer(channels, from, Some(target), addr)?;
    p.call(&(), Vec::new(), 0, ttl, |mut c, m| async move {
        c.read_index(m).await
    })
    .await
}

#[cfg(test)]
mod quorum_clock_tests {
    use std::collections::{BTreeMap, BTreeSet};
    use std::sync::Arc;
    use std::time::Duration;

    use openraft::async_runtime::WatchSender as _;
    use openraft::metrics::SerdeInstant;
    use openraft::type_config::TypeConfigExt as _;
    use openraft::{Membership, RaftMetrics, StoredMembership};

    use super::QuorumClock;
    use crate::{NodeInfo, TypeConfig};

    fn node() -> NodeInfo {
        NodeInfo {
            addr: "127.0.0.1:1".into(),
            public_key: quorate_core::SecretKey::from_seed([1; 32]).public(),
            region: String::new(),
        }
    }

    fn metrics(voters: &[u64], learners: &[u64]) -> RaftMetrics<TypeConfig> {
        let mut m = RaftMetrics::<TypeConfig>::new_initial(1);
        let nodes: BTreeMap<u64, NodeInfo> = voters
            .iter()
            .chain(learners)
            .map(|id| (*id, node()))
            .collect();
        let config = vec![voters.iter().copied().collect::<BTreeSet<u64>>()];
        let membership = Membership::new(config, nodes).unwrap_or_else(|e| panic!("{e}"));
        m.membership_config = Arc::new(StoredMembership::new(None, membership));
        m
    }

    #[test]
    fn the_age_is_the_leaders_last_quorum_acknowledgement_and_a_sole_voter_is_fresh() {
        let clock = QuorumClock::default();
        // Before the Raft exists: unknown (the follower counts the message).
        assert_eq!(clock.age_plus_one(), 0);
        let mut m = metrics(&[1, 2, 3], &[]);
        let (tx, rx) = TypeConfig::watch_channel(m.clone());
        clock.set(rx);
        // Never acknowledged by a quorum: unknown.
        assert_eq!(clock.age_plus_one(), 0);
        // Acknowledged 3 s ago: the follower must date its contact that far
        // back (and so contain, the lease being shorter).
        let acked = TypeConfig::now() - Duration::from_secs(3);
        m.last_quorum_acked = Some(SerdeInstant::new(acked));
        let _ = tx.send(m);
        assert!(clock.age_plus_one() > 3000, "{}", clock.age_plus_one());
        // A sole voter is its own quorum: its learners are told it is fresh
        // even though openraft does not refresh its acknowledgement.
        let mut sole = metrics(&[1], &[2]);
        sole.last_quorum_acked = Some(SerdeInstant::new(acked));
        let _ = tx.send(sole);
        assert_eq!(clock.age_plus_one(), 1);
    }
}
