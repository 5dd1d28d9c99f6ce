//! The simulated network between replicas: every message (Raft RPCs,
//! attestations, forwarded requests, leadership handovers) crosses it, and
//! it drops, delays, reorders and duplicates them, and cuts links, from a
//! seeded RNG. Only virtual time passes.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{EmptyNode, OptionalSend};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::node::Instance;
use super::{SimTypes, Snapshot, Vote};

/// What the nemesis sets on the network.
#[derive(Default)]
pub struct NetState {
    pub nodes: BTreeMap<u64, Arc<Instance>>,
    /// Directed links that drop everything.
    pub blocked: BTreeSet<(u64, u64)>,
    /// Probability a message is dropped.
    pub loss: f64,
    /// Probability a message is delivered twice.
    pub duplicate: f64,
    /// Extra one-way delay, up to this many microseconds (reorders too).
    pub slow_us: u64,
    pub dropped: u64,
    pub duplicated: u64,
    pub delivered: u64,
}

/// The network, shared by every replica and the harness.
#[derive(Clone)]
pub struct Net {
    state: Arc<Mutex<NetState>>,
    rng: Arc<Mutex<StdRng>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct NetError(pub String);

impl Net {
    pub fn new(seed: u64) -> Net {
        Net {
            state: Arc::new(Mutex::new(NetState::default())),
            rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed))),
        }
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn instance(&self, id: u64) -> Option<Arc<Instance>> {
        self.lock().nodes.get(&id).cloned()
    }

    /// Whether a message from `from` to `to` gets through now, and whether
    /// it is delivered a second time.
    fn route(&self, from: u64, to: u64) -> Option<(Arc<Instance>, bool)> {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.lock();
        if st.blocked.contains(&(from, to)) || rng.r#gen::<f64>() < st.loss {
            st.dropped += 1;
            return None;
        }
        let target = st.nodes.get(&to).cloned()?;
        st.delivered += 1;
        let dup = rng.r#gen::<f64>() < st.duplicate;
        if dup {
            st.duplicated += 1;
        }
        Some((target, dup))
    }

    fn delay(&self) -> Duration {
        let slow = self.lock().slow_us;
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        Duration::from_micros(rng.gen_range(200..3000) + rng.gen_range(0..=slow))
    }

    /// Delivers one request from `from` to `to` and its response back, each
    /// way subject to the network's faults. A duplicated request is
    /// delivered again a little later, and that copy's answer is dropped.
    pub async fn call<T, F, Fut>(&self, from: u64, to: u64, call: F) -> Result<T, NetError>
    where
        F: Fn(Arc<Instance>) -> Fut,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
        T: Send + 'static,
    {
        tokio::time::sleep(self.delay()).await;
        let (target, dup) = self
            .route(from, to)
            .ok_or_else(|| NetError(format!("message {from} → {to} dropped")))?;
        if dup {
            let again = call(target.clone());
            let wait = self.delay();
            tokio::spawn(async move {
                tokio::time::sleep(wait).await;
                let _ = again.await;
            });
        }
        let resp = call(target).await.map_err(NetError)?;
        tokio::time::sleep(self.delay()).await;
        // The response crosses the link the other way.
        self.route(to, from)
            .ok_or_else(|| NetError(format!("response {to} → {from} dropped")))?;
        Ok(resp)
    }
}

/// One replica's view of the network.
pub struct NodeNet {
    pub from: u64,
    pub net: Net,
}

pub struct Client {
    from: u64,
    to: u64,
    net: Net,
}

fn unreachable(e: &NetError) -> RPCError<SimTypes> {
    RPCError::Unreachable(Unreachable::new(e))
}

impl RaftNetworkFactory<SimTypes> for NodeNet {
    type Network = Client;

    async fn new_client(&mut self, target: u64, _node: &EmptyNode) -> Client {
        Client {
            from: self.from,
            to: target,
            net: self.net.clone(),
        }
    }
}

impl RaftNetworkV2<SimTypes> for Client {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<SimTypes>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<SimTypes>, RPCError<SimTypes>> {
        // As the real transport's `quorum_age_ms`: the follower dates its
        // contact back to this leader's last quorum acknowledgement.
        let age = self.net.instance(self.from).and_then(|l| l.quorum_age());
        self.net
            .call(self.from, self.to, move |n| {
                let rpc = rpc.clone();
                async move {
                    let r = n
                        .raft
                        .append_entries(rpc)
                        .await
                        .map_err(|e| e.to_string())?;
                    if !matches!(r, AppendEntriesResponse::HigherVote(_)) {
                        n.heard_from(age);
                    }
                    Ok(r)
                }
            })
            .await
            .map_err(|e| unreachable(&e))
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<SimTypes>,
        _option: RPCOption,
    ) -> Result<VoteResponse<SimTypes>, RPCError<SimTypes>> {
        self.net
            .call(self.from, self.to, move |n| {
                let rpc = rpc.clone();
                async move { n.raft.vote(rpc).await.map_err(|e| e.to_string()) }
            })
            .await
            .map_err(|e| unreachable(&e))
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<SimTypes>,
        _option: RPCOption,
    ) -> Result<TransferLeaderResponse<SimTypes>, RPCError<SimTypes>> {
        self.net
            .call(self.from, self.to, move |n| {
                let req = req.clone();
                async move {
                    n.raft
                        .handle_transfer_leader(req)
                        .await
                        .map_err(|e| e.to_string())
                }
            })
            .await
            .map_err(|e| unreachable(&e))
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl Future<Output = ReplicationClosed> + OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<SimTypes>, StreamingError<SimTypes>> {
        let meta = snapshot.meta;
        let bytes = snapshot.snapshot.into_inner();
        self.net
            .call(self.from, self.to, move |n| {
                let snapshot = Snapshot {
                    meta: meta.clone(),
                    snapshot: std::io::Cursor::new(bytes.clone()),
                };
                async move {
                    let r = n
                        .raft
                        .install_full_snapshot(vote, snapshot)
                        .await
                        .map_err(|e| e.to_string())?;
                    n.heard_from(None);
                    Ok(r)
                }
            })
            .await
            .map_err(|e| {
                StreamingError::Network(NetworkError::new(&std::io::Error::other(e.to_string())))
            })
    }
}
