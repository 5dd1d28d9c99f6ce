//! The server half of the Raft transport: decodes a peer's message, hands it
//! to the local openraft instance and encodes the answer. It also records
//! when this node last heard from a legitimate leader, which the containment
//! check uses on followers.

use std::io::Cursor;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use openraft::Raft;
use openraft::raft::{AppendEntriesRequest, AppendEntriesResponse, VoteRequest};
use openraft::storage::RaftStateMachine;
use quorate_proto::internal::RaftMessage;
use quorate_proto::internal::raft_transport_server::RaftTransport;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tonic::{Request, Response, Status};

use crate::network::WireSnapshot;
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
    /// A verified snapshot of this node's current state.
    async fn fetch_snapshot(&self) -> Result<(crate::SnapshotMeta, Vec<u8>), String>;
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
}

impl<SM> RaftService<SM>
where
    SM: RaftStateMachine<TypeConfig, SnapshotData = SnapshotData>,
{
    pub fn new(
        raft: Raft<TypeConfig, SM>,
        contact: LeaderContact,
        handler: Arc<dyn PeerHandler>,
    ) -> RaftService<SM> {
        RaftService {
            raft,
            contact,
            handler,
        }
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
        let wire: WireSnapshot = decode(&msg)?;
        let snapshot = Snapshot {
            meta: wire.meta,
            snapshot: Cursor::new(msg.data),
        };
        let r = self.raft.install_full_snapshot(wire.vote, snapshot).await;
        if r.is_ok() {
            self.contact.touch();
        }
        reply(msg.from, r)
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
        match self.handler.fetch_snapshot().await {
            Ok((meta, data)) => {
                let mut resp = reply::<_, String>(msg.from, Ok(meta))?;
                resp.get_mut().data = data;
                Ok(resp)
            }
            Err(e) => reply::<crate::SnapshotMeta, _>(msg.from, Err(e)),
        }
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
        }
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
