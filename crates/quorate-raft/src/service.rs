//! The server half of the Raft transport: decodes a peer's message, hands it
//! to the local openraft instance and encodes the answer. It also records
//! when this node last heard from a legitimate leader, which the containment
//! check uses on followers.

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use openraft::Raft;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use openraft::storage::RaftStateMachine;
use quorate_proto::internal::RaftMessage;
use quorate_proto::internal::raft_transport_server::RaftTransport;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::network::{ChunkReply, FetchChunk, Fetched, WireChunk};
use crate::{Snapshot, SnapshotData, TypeConfig};

/// When this node last accepted entries or a heartbeat from a leader.
/// Monotonic milliseconds since `origin`; 0 means never.
#[derive(Debug, Clone)]
pub struct LeaderContact {
    origin: Instant,
    last_ms: Arc<AtomicU64>,
}

impl Default for LeaderContact {
    fn default() -> LeaderContact {
        LeaderContact {
            origin: Instant::now(),
            last_ms: Arc::new(AtomicU64::new(0)),
        }
    }
}

impl LeaderContact {
    pub fn touch(&self) {
        self.set_ago(0);
    }

    /// Records contact from a leader whose quorum last acknowledged it
    /// `ago_ms` before this message: the contact is dated then (it may move
    /// back: the leader's lease is running out).
    pub fn set_ago(&self, ago_ms: u64) {
        let ms = (self.origin.elapsed().as_millis() as u64).saturating_sub(ago_ms);
        self.last_ms.store(ms.max(1), Ordering::Release);
    }

    /// Time since the last contact, or None if there was none.
    pub fn since(&self) -> Option<std::time::Duration> {
        let last = self.last_ms.load(Ordering::Acquire);
        if last == 0 {
            return None;
        }
        let now = self.origin.elapsed().as_millis() as u64;
        Some(std::time::Duration::from_millis(now.saturating_sub(last)))
    }
}

/// Who a node is: what a bootstrapping peer records in the membership.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Identity {
    pub node_id: u64,
    pub cluster_id: String,
    pub public_key: quorate_core::PublicKey,
    pub region: String,
    /// `public_key`'s signature over `identity_message(cluster_id,
    /// node_id, nonce)` for the asker's nonce: proof that the node holds
    /// the key it reports.
    pub proof: quorate_core::Signature,
    /// Whether this node holds Raft state (a log, a snapshot or a
    /// membership). A node starting empty never bootstraps a new cluster
    /// while a member says true: it waits to be repaired by that member's
    /// leader instead of forking the history beside it. Not covered by
    /// `proof`; the channel (mTLS) vouches for it. Absent from older
    /// nodes' replies: false.
    #[serde(default)]
    pub has_state: bool,
}

/// What an Identity call asks: a fresh nonce to sign.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct IdentityRequest {
    pub nonce: [u8; 32],
}

impl Identity {
    /// Checks the proof of possession for `nonce`.
    pub fn verify(&self, nonce: &[u8; 32]) -> Result<(), String> {
        self.public_key.verify(
            &quorate_core::proof::identity_message(&self.cluster_id, self.node_id, nonce),
            &self.proof,
        )
    }
}

/// The node-level peer RPCs, implemented by the server crate (this crate
/// must not know about storage or signing).
#[tonic::async_trait]
pub trait PeerHandler: Send + Sync + 'static {
    /// Who this node is, with its proof of possession over `nonce`.
    fn identity(&self, nonce: &[u8; 32]) -> Identity;
    /// Takes a voter's attestations if this node leads. `peer` is the
    /// connection's verified identity (None without TLS): the handler must
    /// check that it is the signer.
    async fn attest(
        &self,
        peer: Option<&crate::tls::PeerInfo>,
        batch: Vec<quorate_core::Attestation>,
    ) -> Result<(), String>;
    /// A fresh snapshot of this node's current state, which it vouches
    /// for (refused while it is contained).
    async fn fetch_snapshot(&self) -> Result<Snapshot, String>;
    /// Whether the peer on this connection may call `rpc` (a member node
    /// of this cluster, when TLS is on). The message says why not.
    fn admit_peer(
        &self,
        peer: Option<&crate::tls::PeerInfo>,
        rpc: &'static str,
    ) -> Result<(), String>;
}

/// A voter attests at most this many tree heads in one call (it keeps no
/// more than the store's recent heads).
pub const MAX_ATTESTATIONS_PER_CALL: usize = 2048;

/// Serves the Raft RPCs of one node.
pub struct RaftService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    raft: Raft<TypeConfig, SM>,
    contact: LeaderContact,
    handler: Arc<dyn PeerHandler>,
    /// The snapshot being received, a chunk at a time.
    receiver: SnapshotReceiver,
    /// The snapshot being fetched by a repairing node.
    served: Mutex<Option<(String, Snapshot)>>,
}

/// Receives snapshots a chunk at a time into files in one directory.
pub struct SnapshotReceiver {
    dir: PathBuf,
    incoming: Mutex<Option<Incoming>>,
}

/// A snapshot being received: every byte of `file` is whole, checked
/// frames.
pub struct Incoming {
    from: u64,
    id: String,
    path: PathBuf,
    file: std::fs::File,
    len: u64,
}

impl<SM> RaftService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    /// `snapshot_dir` is where snapshots being received are written: the
    /// store's snapshot directory, so that installing one is a rename.
    pub fn new(
        raft: Raft<TypeConfig, SM>,
        contact: LeaderContact,
        handler: Arc<dyn PeerHandler>,
        snapshot_dir: PathBuf,
    ) -> RaftService<SM> {
        RaftService {
            raft,
            contact,
            handler,
            receiver: SnapshotReceiver::new(snapshot_dir),
            served: Mutex::new(None),
        }
    }
}

impl Incoming {
    /// Where the complete snapshot was written.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}

impl SnapshotReceiver {
    pub fn new(dir: PathBuf) -> SnapshotReceiver {
        SnapshotReceiver {
            dir,
            incoming: Mutex::new(None),
        }
    }

    /// Takes one chunk of a snapshot being received. Every chunk is checked
    /// (whole frames, each matching its digest) before it is kept, and the
    /// answer says where the sender must go on from, so a transfer broken
    /// off anywhere resumes where it stopped. Memory: one chunk.
    ///
    /// Returns `Ok(Ok(offset))` to go on from, `Ok(Err(complete))` when the
    /// last byte arrived (the file is synced), or `Err(why)` for a chunk it
    /// refused (nothing of it is kept).
    pub fn take(
        &self,
        from: u64,
        wire: &WireChunk,
        data: &[u8],
    ) -> Result<Result<u64, Incoming>, String> {
        let mut guard = self.incoming.lock().unwrap_or_else(|p| p.into_inner());
        let same = guard
            .as_ref()
            .is_some_and(|i| i.from == from && i.id == wire.id);
        if wire.probe {
            return Ok(Ok(guard.as_ref().filter(|_| same).map_or(0, |i| i.len)));
        }
        if !same {
            if wire.offset != 0 {
                return Ok(Ok(0));
            }
            // A new snapshot replaces any other being received.
            let path = self.dir.join(format!("incoming-{from}.part"));
            let file = std::fs::File::create(&path)
                .map_err(|e| format!("cannot receive a snapshot into {}: {e}", path.display()))?;
            *guard = Some(Incoming {
                from,
                id: wire.id.clone(),
                path,
                file,
                len: 0,
            });
        }
        let Some(inc) = guard.as_mut() else {
            return Ok(Ok(0));
        };
        if wire.offset != inc.len {
            return Ok(Ok(inc.len));
        }
        if inc.len + data.len() as u64 > wire.total {
            return Err(format!(
                "a chunk of {} bytes at {} overruns the {}-byte snapshot",
                data.len(),
                inc.len,
                wire.total
            ));
        }
        quorate_core::frames::check_chunk(data, wire.offset)
            .map_err(|e| format!("snapshot chunk at byte {} refused: {e}", wire.offset))?;
        inc.file
            .write_all(data)
            .map_err(|e| format!("writing {}: {e}", inc.path.display()))?;
        inc.len += data.len() as u64;
        metrics::counter!("quorate_snapshot_received_bytes_total").increment(data.len() as u64);
        if inc.len < wire.total {
            return Ok(Ok(inc.len));
        }
        let Some(done) = guard.take() else {
            return Ok(Ok(0));
        };
        done.file
            .sync_all()
            .map_err(|e| format!("syncing {}: {e}", done.path.display()))?;
        Ok(Err(done))
    }
}

impl<SM> RaftService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    /// Refuses a caller that is not a member node of this cluster.
    fn admit(&self, req: &Request<RaftMessage>, rpc: &'static str) -> Result<(), Status> {
        self.handler
            .admit_peer(req.extensions().get::<crate::tls::PeerInfo>(), rpc)
            .map_err(|why| {
                metrics::counter!("quorate_permission_denied_total", "rpc" => rpc).increment(1);
                Status::permission_denied(why)
            })
    }
}

fn decode<T: DeserializeOwned>(msg: &RaftMessage) -> Result<T, Status> {
    quorate_core::codec::decode(&msg.payload)
        .map_err(|e| Status::invalid_argument(format!("undecodable Raft message: {e}")))
}

fn reply<T: Serialize, E: std::fmt::Display>(
    from: u64,
    r: Result<T, E>,
) -> Result<Response<RaftMessage>, Status> {
    let r: Result<T, String> = r.map_err(|e| e.to_string());
    let payload = quorate_core::codec::encode(&r);
    Ok(Response::new(RaftMessage {
        from,
        payload,
        data: Vec::new(),
        quorum_age_ms: 0,
    }))
}

#[tonic::async_trait]
impl<SM> RaftTransport for RaftService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    async fn append_entries(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req, "AppendEntries")?;
        let msg = req.into_inner();
        let rpc: AppendEntriesRequest<TypeConfig> = decode(&msg)?;
        let r = self.raft.append_entries(rpc).await;
        // Any answer but "your vote is stale" means the sender is the leader
        // this node currently follows.
        // The contact is dated back to the leader's last quorum
        // acknowledgement: a leader cut off from its quorum keeps sending
        // heartbeats, and they must not keep its followers serving.
        if let Ok(resp) = &r
            && !matches!(resp, AppendEntriesResponse::HigherVote(_))
        {
            match msg.quorum_age_ms {
                0 => self.contact.touch(),
                age => self.contact.set_ago(age - 1),
            }
        }
        reply(msg.from, r)
    }

    async fn vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req, "Vote")?;
        let msg = req.into_inner();
        let rpc: VoteRequest<TypeConfig> = decode(&msg)?;
        reply(msg.from, self.raft.vote(rpc).await)
    }

    async fn pre_vote(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req, "PreVote")?;
        let msg = req.into_inner();
        let rpc: VoteRequest<TypeConfig> = decode(&msg)?;
        reply(msg.from, self.raft.pre_vote(rpc).await)
    }

    async fn read_index(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req, "ReadIndex")?;
        let msg = req.into_inner();
        // ReadIndex: confirm leadership with a fresh quorum round, then name
        // the log id a reader must have applied. Never a lease read.
        let r = self
            .raft
            .get_read_linearizer(openraft::ReadPolicy::ReadIndex)
            .await
            .map(|l| *l.read_log_id().log_id());
        reply(msg.from, r)
    }

    async fn install_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req, "InstallSnapshot")?;
        let msg = req.into_inner();
        let wire: WireChunk = decode(&msg)?;
        let complete = match self.receiver.take(msg.from, &wire, &msg.data) {
            Err(why) => return reply::<ChunkReply, _>(msg.from, Err(why)),
            Ok(Ok(offset)) => {
                return reply::<_, String>(msg.from, Ok(ChunkReply::Continue { offset }));
            }
            Ok(Err(complete)) => complete,
        };
        let data = match SnapshotData::open(&complete.path) {
            Ok(d) => d,
            Err(e) => return reply::<ChunkReply, _>(msg.from, Err(e)),
        };
        let snapshot = Snapshot {
            meta: wire.meta,
            snapshot: data,
        };
        // The store verifies the whole snapshot before it changes anything,
        // and moves the file into place when it installs it.
        let r = self.raft.install_full_snapshot(wire.vote, snapshot).await;
        let _ = std::fs::remove_file(&complete.path);
        if r.is_ok() {
            self.contact.touch();
        }
        reply(msg.from, r.map(ChunkReply::Installed))
    }

    async fn identity(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req, "Identity")?;
        let msg = req.into_inner();
        let ask: IdentityRequest = decode(&msg)?;
        reply::<_, String>(msg.from, Ok(self.handler.identity(&ask.nonce)))
    }

    async fn attest(&self, req: Request<RaftMessage>) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req, "Attest")?;
        let peer = req.extensions().get::<crate::tls::PeerInfo>().cloned();
        let msg = req.into_inner();
        let batch: Vec<quorate_core::Attestation> = decode(&msg)?;
        if batch.len() > MAX_ATTESTATIONS_PER_CALL {
            return Err(Status::invalid_argument(format!(
                "{} attestations in one call; at most {MAX_ATTESTATIONS_PER_CALL}",
                batch.len()
            )));
        }
        reply(msg.from, self.handler.attest(peer.as_ref(), batch).await)
    }

    async fn fetch_snapshot(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req, "FetchSnapshot")?;
        let msg = req.into_inner();
        let ask: FetchChunk = decode(&msg)?;
        // The first ask builds a fresh snapshot; the rest read chunks of it.
        let cached = {
            let served = self.served.lock().unwrap_or_else(|p| p.into_inner());
            served
                .as_ref()
                .filter(|(id, _)| ask.id.as_ref() == Some(id))
                .map(|(id, s)| (id.clone(), s.clone()))
        };
        let (id, snap) = match (cached, &ask.id) {
            (Some(c), _) => c,
            (None, Some(id)) => {
                return reply::<Fetched, _>(
                    msg.from,
                    Err(format!(
                        "snapshot {id} is no longer served here (another fetch replaced it); \
                         start the fetch again"
                    )),
                );
            }
            (None, None) => match self.handler.fetch_snapshot().await {
                Ok(s) => {
                    let total = s.snapshot.len().unwrap_or(0);
                    let id = crate::network::snapshot_id(&s.meta, total);
                    *self.served.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((id.clone(), s.clone()));
                    (id, s)
                }
                Err(e) => return reply::<Fetched, _>(msg.from, Err(e)),
            },
        };
        let total = match snap.snapshot.len() {
            Ok(t) => t,
            Err(e) => return reply::<Fetched, _>(msg.from, Err(e)),
        };
        let data = match crate::network::read_chunk(&snap.snapshot, ask.offset.min(total)) {
            Ok(d) => d,
            Err(e) => return reply::<Fetched, _>(msg.from, Err(e)),
        };
        let fetched = Fetched {
            meta: snap.meta,
            id,
            total,
            offset: ask.offset,
        };
        let mut resp = reply::<_, String>(msg.from, Ok(fetched))?;
        resp.get_mut().data = data;
        Ok(resp)
    }

    async fn transfer_leader(
        &self,
        req: Request<RaftMessage>,
    ) -> Result<Response<RaftMessage>, Status> {
        self.admit(&req, "TransferLeader")?;
        let msg = req.into_inner();
        let rpc: openraft::raft::TransferLeaderRequest<TypeConfig> = decode(&msg)?;
        // openraft acts on it only if it names the leader this node
        // currently votes for; anything else is ignored.
        reply(msg.from, self.raft.handle_transfer_leader(rpc).await)
    }
}

/// The Raft transport's RPC names, as the admission check knows them.
const RPC_NAMES: [&str; 9] = [
    "AppendEntries",
    "Vote",
    "PreVote",
    "ReadIndex",
    "InstallSnapshot",
    "Identity",
    "Attest",
    "FetchSnapshot",
    "TransferLeader",
];

/// Admission before decoding: wraps the generated Raft transport server so
/// that a caller the handler does not admit (not a node of this cluster,
/// or not a member) is refused from the request's headers and connection
/// alone, before a byte of its message body is read. Messages may be up to
/// `MAX_RAFT_MESSAGE_BYTES` (snapshots travel whole); only members may make
/// a node buffer that much.
#[derive(Clone)]
pub struct Admitted<S> {
    inner: S,
    handler: Arc<dyn PeerHandler>,
}

impl<S> Admitted<S> {
    pub fn new(inner: S, handler: Arc<dyn PeerHandler>) -> Admitted<S> {
        Admitted { inner, handler }
    }
}

impl<S: tonic::server::NamedService> tonic::server::NamedService for Admitted<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<tonic::codegen::http::Request<B>> for Admitted<S>
where
    S: tower::Service<
            tonic::codegen::http::Request<B>,
            Response = tonic::codegen::http::Response<tonic::body::Body>,
        >,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = tonic::codegen::http::Response<tonic::body::Body>;
    type Error = S::Error;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: tonic::codegen::http::Request<B>) -> Self::Future {
        let method = req.uri().path().rsplit('/').next().unwrap_or("");
        let rpc = RPC_NAMES
            .iter()
            .find(|n| **n == method)
            .copied()
            .unwrap_or("unknown");
        let peer = req.extensions().get::<crate::tls::PeerInfo>();
        if let Err(why) = self.handler.admit_peer(peer, rpc) {
            metrics::counter!("quorate_permission_denied_total", "rpc" => rpc).increment(1);
            let refusal = Status::permission_denied(why).into_http();
            return Box::pin(async move { Ok(refusal) });
        }
        Box::pin(self.inner.call(req))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use quorate_core::SecretKey;

    fn identity(key: &SecretKey, claimed: u64, nonce: &[u8; 32]) -> Identity {
        Identity {
            node_id: claimed,
            cluster_id: "c".into(),
            public_key: key.public(),
            region: "r".into(),
            proof: key.sign(&quorate_core::proof::identity_message("c", claimed, nonce)),
            has_state: false,
        }
    }

    #[test]
    fn an_older_nodes_identity_without_has_state_decodes_as_empty() {
        #[derive(serde::Serialize)]
        struct Older {
            node_id: u64,
            cluster_id: String,
            public_key: quorate_core::PublicKey,
            region: String,
            proof: quorate_core::Signature,
        }
        let id = identity(&SecretKey::from_seed([2; 32]), 2, &[7; 32]);
        let older = Older {
            node_id: id.node_id,
            cluster_id: id.cluster_id.clone(),
            public_key: id.public_key,
            region: id.region.clone(),
            proof: id.proof,
        };
        let back: Identity = quorate_core::codec::decode(&quorate_core::codec::encode(&older))
            .expect("an older identity decodes");
        assert_eq!(back, id);
        let with = Identity {
            has_state: true,
            ..id
        };
        let back: Identity = quorate_core::codec::decode(&quorate_core::codec::encode(&with))
            .expect("an identity decodes");
        assert!(back.has_state);
    }

    #[test]
    fn an_identity_proves_its_key_for_its_own_id_and_this_nonce_only() {
        let k2 = SecretKey::from_seed([2; 32]);
        let k3 = SecretKey::from_seed([3; 32]);
        let nonce = [7u8; 32];
        assert!(identity(&k2, 2, &nonce).verify(&nonce).is_ok());
        // A replayed proof (another nonce) does not verify.
        assert!(identity(&k2, 2, &[8; 32]).verify(&nonce).is_err());
        // Node 2 presenting node 3's key: it can relay node 3's proof, but
        // that proof is for id 3, not 2.
        let relayed = Identity {
            node_id: 2,
            ..identity(&k3, 3, &nonce)
        };
        assert!(relayed.verify(&nonce).is_err());
        // Nor can it sign for key 3 with its own key.
        let forged = Identity {
            public_key: k3.public(),
            ..identity(&k2, 2, &nonce)
        };
        assert!(forged.verify(&nonce).is_err());
        // Another cluster's proof does not verify here.
        let other = Identity {
            cluster_id: "d".into(),
            ..identity(&k2, 2, &nonce)
        };
        assert!(other.verify(&nonce).is_err());
    }
}

#[cfg(test)]
mod snapshot_tests {
    use super::*;
    use crate::network::{WireChunk, read_chunk};
    use quorate_core::frames;

    /// A container of `n` frames of `size` payload bytes each.
    fn container(dir: &std::path::Path, n: usize, size: usize) -> SnapshotData {
        let mut bytes = frames::MAGIC.to_vec();
        for i in 0..n {
            bytes.extend(frames::encode(2, &vec![i as u8; size]));
        }
        let path = dir.join("snap-test.qsnap");
        std::fs::write(&path, bytes).expect("write");
        SnapshotData::open(&path).expect("open")
    }

    fn wire(id: &str, total: u64, offset: u64, probe: bool) -> WireChunk {
        WireChunk {
            vote: openraft::Vote::new(1, 1),
            meta: Default::default(),
            id: id.into(),
            total,
            offset,
            probe,
        }
    }

    /// Sends `data` from `offset` as the sender would, until done; returns
    /// the complete file.
    fn send_from(rx: &SnapshotReceiver, data: &SnapshotData, id: &str) -> Incoming {
        let total = data.len().expect("len");
        let mut offset = match rx.take(1, &wire(id, total, 0, true), &[]) {
            Ok(Ok(o)) => o,
            _ => panic!("probe answered"),
        };
        loop {
            let chunk = read_chunk(data, offset).expect("chunk");
            match rx.take(1, &wire(id, total, offset, false), &chunk) {
                Ok(Ok(o)) => offset = o,
                Ok(Err(done)) => return done,
                Err(e) => panic!("refused: {e}"),
            }
        }
    }

    #[test]
    fn a_snapshot_arrives_in_checked_chunks_and_resumes_where_it_stopped() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        // 5 MiB in frames of 300 KiB: several chunks of whole frames.
        let data = container(src.path(), 17, 300 * 1024);
        let total = data.len().expect("len");
        let rx = SnapshotReceiver::new(dst.path().to_path_buf());

        // The first two chunks arrive, then the sender goes away.
        let c0 = read_chunk(&data, 0).expect("chunk");
        assert!(c0.len() <= crate::network::SNAPSHOT_CHUNK_BYTES);
        assert!(frames::check_chunk(&c0, 0).is_ok());
        let o1 = match rx.take(1, &wire("a", total, 0, false), &c0) {
            Ok(Ok(o)) => o,
            _ => panic!("first chunk kept"),
        };
        assert_eq!(o1, c0.len() as u64);
        let c1 = read_chunk(&data, o1).expect("chunk");
        let o2 = match rx.take(1, &wire("a", total, o1, false), &c1) {
            Ok(Ok(o)) => o,
            _ => panic!("second chunk kept"),
        };

        // A damaged chunk is refused and nothing of it is kept.
        let mut bad = read_chunk(&data, o2).expect("chunk");
        bad[100] ^= 1;
        assert!(rx.take(1, &wire("a", total, o2, false), &bad).is_err());
        // A chunk at the wrong offset is answered with where to go on.
        let c3 = read_chunk(&data, o1).expect("chunk");
        assert!(matches!(
            rx.take(1, &wire("a", total, o1, false), &c3),
            Ok(Ok(o)) if o == o2
        ));

        // The sender comes back: its probe learns the offset, and it sends
        // only the rest.
        let done = send_from(&rx, &data, "a");
        let got = std::fs::read(done.path()).expect("read");
        assert_eq!(got, std::fs::read(data.path()).expect("read"));

        // Another snapshot starts over; a chunk of it that does not start
        // at 0 is told to.
        assert!(matches!(
            rx.take(1, &wire("b", total, o1, false), &c1),
            Ok(Ok(0))
        ));
        let done = send_from(&rx, &data, "b");
        assert_eq!(
            std::fs::read(done.path()).expect("read"),
            std::fs::read(data.path()).expect("read")
        );
    }

    #[test]
    fn a_chunk_that_overruns_the_snapshot_or_is_not_frames_is_refused() {
        let src = tempfile::tempdir().expect("tempdir");
        let dst = tempfile::tempdir().expect("tempdir");
        let data = container(src.path(), 3, 1000);
        let total = data.len().expect("len");
        let rx = SnapshotReceiver::new(dst.path().to_path_buf());
        let c0 = read_chunk(&data, 0).expect("chunk");
        assert_eq!(c0.len() as u64, total, "small: one chunk");
        let e = rx
            .take(1, &wire("a", total - 1, 0, false), &c0)
            .err()
            .unwrap_or_default();
        assert!(e.contains("overruns"), "{e}");
        let e = rx
            .take(1, &wire("c", total, 0, false), &c0[..c0.len() - 1])
            .err()
            .unwrap_or_default();
        assert!(e.contains("cut short"), "{e}");
        assert!(matches!(
            rx.take(1, &wire("c", total, 0, true), &[]),
            Ok(Ok(0))
        ));
    }
}
