//! Deterministic simulation: openraft nodes in one single-threaded tokio
//! runtime with virtual time (`start_paused`), openraft's deterministic RNG
//! (`DeterministicRng`) seeded per run, in-memory storage behind the same
//! storage traits the real store implements, and a simulated network that
//! drops, partitions and delays messages from a seeded RNG. Nodes crash
//! (their `Raft` is shut down; storage survives, as a disk would) and
//! restart. A run is a pure function of its seed: a failing seed is printed
//! and `cargo xtask sim --seed N` replays it exactly.
//!
//! Exactly needs one more seed than openraft's: tokio's own RNG, which
//! (among other things) picks which of a watch channel's notifiers a waiter
//! parks on, and so the order tasks wake in. Seeding it is an unstable tokio
//! API, so exact replay needs `--cfg tokio_unstable`; `cargo xtask sim` and
//! `cargo xtask test` build the simulation that way (in their own target
//! directory). Built without it, a replay applies the same schedule but
//! Raft's interleaving can differ (measured: 1 replay in 12 differed).
//!
//! Checked on every run: at most one leader per term (observed every tick),
//! log matching (every node's applied log is a prefix of every longer one,
//! and all are equal after healing), no acknowledged write lost (every
//! client write acknowledged as committed is at its index on every node),
//! and fail-closed acknowledgement: a client counts a write as allowed only
//! when `client_write` returned it committed and applied; every such write
//! must then be in every node's log.

pub mod store;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::async_runtime::WatchReceiver;
use openraft::error::{NetworkError, RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory, v2::RaftNetworkV2};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{EmptyNode, ServerState};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use store::{MemLog, MemSm};

/// The simulation's runtime: tokio, with openraft's RNG made deterministic.
pub type SimRt = openraft::rt::deterministic_rng::DeterministicRng<openraft::impls::TokioRuntime>;

openraft::declare_raft_types!(
    /// Raft types of the simulation: a client operation is a u64; applying
    /// it answers its log index.
    pub SimTypes:
        D = u64,
        R = u64,
        NodeId = u64,
        Node = EmptyNode,
        AsyncRuntime = SimRt,
);

pub type LogId = openraft::type_config::alias::LogIdOf<SimTypes>;
pub type Entry = openraft::type_config::alias::EntryOf<SimTypes>;
pub type Vote = openraft::type_config::alias::VoteOf<SimTypes>;
pub type StoredMembership = openraft::type_config::alias::StoredMembershipOf<SimTypes>;
pub type SnapshotMeta = openraft::type_config::alias::SnapshotMetaOf<SimTypes>;
pub type Snapshot = openraft::type_config::alias::SnapshotOf<SimTypes, std::io::Cursor<Vec<u8>>>;
type SimRaft = openraft::Raft<SimTypes, MemSm>;

/// Shape of one simulated run.
#[derive(Debug, Clone, Copy)]
pub struct SimConfig {
    pub nodes: u64,
    /// Virtual seconds of traffic under faults.
    pub seconds: u64,
    /// A deliberately broken disk for the checkers' own test: a crash loses
    /// the last appended entries although they were reported durable.
    pub lossy_disk: bool,
}

impl Default for SimConfig {
    fn default() -> SimConfig {
        SimConfig {
            nodes: 5,
            seconds: 20,
            lossy_disk: false,
        }
    }
}

/// What a run found. `violations` empty means every check held.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SimReport {
    pub seed: u64,
    pub acknowledged: usize,
    pub faults: usize,
    pub crashes: usize,
    pub messages_dropped: u64,
    pub terms_seen: usize,
    pub final_log_len: usize,
    pub violations: Vec<String>,
    /// The fault schedule, as applied.
    pub schedule: Vec<String>,
    /// A digest of the fault schedule: equal on every replay of a seed.
    pub trace: u64,
    /// A digest of the final log (every entry's index and payload): with
    /// tokio's RNG seeded (`--cfg tokio_unstable`), equal on every replay.
    pub log_digest: u64,
}

#[derive(Default)]
struct NetState {
    nodes: BTreeMap<u64, SimRaft>,
    blocked: BTreeSet<(u64, u64)>,
    loss: f64,
    dropped: u64,
}

/// The simulated network shared by every node.
#[derive(Clone)]
struct Net {
    state: Arc<Mutex<NetState>>,
    rng: Arc<Mutex<StdRng>>,
}

impl Net {
    fn lock(&self) -> std::sync::MutexGuard<'_, NetState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The target if a message from `from` gets through now.
    fn route(&self, from: u64, to: u64) -> Option<SimRaft> {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        let mut st = self.lock();
        if st.blocked.contains(&(from, to)) || rng.r#gen::<f64>() < st.loss {
            st.dropped += 1;
            return None;
        }
        st.nodes.get(&to).cloned()
    }

    fn delay(&self) -> Duration {
        let mut rng = self.rng.lock().unwrap_or_else(|p| p.into_inner());
        Duration::from_micros(rng.gen_range(200..3000))
    }
}

struct NodeNet {
    from: u64,
    net: Net,
}

struct Client {
    from: u64,
    to: u64,
    net: Net,
}

fn unreachable<E: std::error::Error + 'static>(e: &E) -> RPCError<SimTypes> {
    RPCError::Unreachable(Unreachable::new(e))
}

#[derive(Debug, thiserror::Error)]
#[error("simulated network dropped the message")]
struct Dropped;

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

impl Client {
    /// Delivers one request and its response through the simulated links.
    async fn deliver<T, F, Fut>(&self, call: F) -> Result<T, RPCError<SimTypes>>
    where
        F: FnOnce(SimRaft) -> Fut,
        Fut: std::future::Future<Output = Result<T, String>>,
    {
        tokio::time::sleep(self.net.delay()).await;
        let target = self
            .net
            .route(self.from, self.to)
            .ok_or_else(|| unreachable(&Dropped))?;
        let resp = call(target)
            .await
            .map_err(|e| RPCError::Network(NetworkError::new(&std::io::Error::other(e))))?;
        tokio::time::sleep(self.net.delay()).await;
        // The response crosses the link the other way.
        self.net
            .route(self.to, self.from)
            .ok_or_else(|| unreachable(&Dropped))?;
        Ok(resp)
    }
}

impl RaftNetworkV2<SimTypes> for Client {
    type SnapshotData = std::io::Cursor<Vec<u8>>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<SimTypes>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<SimTypes>, RPCError<SimTypes>> {
        self.deliver(|r| async move { r.append_entries(rpc).await.map_err(|e| e.to_string()) })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<SimTypes>,
        _option: RPCOption,
    ) -> Result<VoteResponse<SimTypes>, RPCError<SimTypes>> {
        self.deliver(|r| async move { r.vote(rpc).await.map_err(|e| e.to_string()) })
            .await
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        _cancel: impl std::future::Future<Output = ReplicationClosed> + openraft::OptionalSend + 'static,
        _option: RPCOption,
    ) -> Result<SnapshotResponse<SimTypes>, StreamingError<SimTypes>> {
        self.deliver(|r| async move {
            r.install_full_snapshot(vote, snapshot)
                .await
                .map_err(|e| e.to_string())
        })
        .await
        .map_err(|e| match e {
            RPCError::Unreachable(u) => StreamingError::Unreachable(u),
            other => StreamingError::Network(NetworkError::new(&std::io::Error::other(
                other.to_string(),
            ))),
        })
    }
}

fn raft_config() -> Arc<openraft::Config> {
    let c = openraft::Config {
        heartbeat_interval: 50,
        election_timeout_min: 200,
        election_timeout_max: 400,
        snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(100),
        max_in_snapshot_log_to_keep: 20,
        ..Default::default()
    };
    Arc::new(c.validate().unwrap_or_default())
}

async fn start_node(id: u64, net: &Net, log: &MemLog, sm: &MemSm) -> Option<SimRaft> {
    let r = openraft::Raft::new(
        id,
        raft_config(),
        NodeNet {
            from: id,
            net: net.clone(),
        },
        log.clone(),
        sm.clone(),
    )
    .await
    .ok()?;
    net.lock().nodes.insert(id, r.clone());
    Some(r)
}

fn fnv(h: &mut u64, v: u64) {
    for b in v.to_le_bytes() {
        *h ^= u64::from(b);
        *h = h.wrapping_mul(0x100_0000_01b3);
    }
}

/// Runs one simulation; a pure function of `seed` and `cfg`.
pub fn run(seed: u64, cfg: SimConfig) -> SimReport {
    let mut b = tokio::runtime::Builder::new_current_thread();
    b.enable_time().start_paused(true);
    // tokio's own RNG decides, among other things, which of a watch
    // channel's notifiers a waiter parks on, and so the order tasks wake
    // in; seeding it makes a run exactly replayable. It is an unstable
    // tokio API: `cargo xtask test` builds the simulation with
    // `--cfg tokio_unstable`.
    #[cfg(tokio_unstable)]
    b.rng_seed(tokio::runtime::RngSeed::from_bytes(&seed.to_le_bytes()));
    let rt = match b.build() {
        Ok(rt) => rt,
        Err(e) => {
            return SimReport {
                seed,
                acknowledged: 0,
                faults: 0,
                crashes: 0,
                messages_dropped: 0,
                terms_seen: 0,
                final_log_len: 0,
                violations: vec![format!("cannot build the runtime: {e}")],
                schedule: vec![],
                trace: 0,
                log_digest: 0,
            };
        }
    };
    rt.block_on(SimRt::scope(seed, simulate(seed, cfg)))
}

async fn simulate(seed: u64, cfg: SimConfig) -> SimReport {
    let net = Net {
        state: Arc::new(Mutex::new(NetState::default())),
        rng: Arc::new(Mutex::new(StdRng::seed_from_u64(seed ^ 0x5eed))),
    };
    let ids: Vec<u64> = (1..=cfg.nodes).collect();
    let stores: BTreeMap<u64, (MemLog, MemSm)> = ids
        .iter()
        .map(|i| (*i, (MemLog::default(), MemSm::default())))
        .collect();
    let mut violations = Vec::new();
    for (id, (log, sm)) in &stores {
        if start_node(*id, &net, log, sm).await.is_none() {
            violations.push(format!("node {id} did not start"));
        }
    }
    let members: BTreeMap<u64, EmptyNode> = ids.iter().map(|i| (*i, EmptyNode::new())).collect();
    let first = net.lock().nodes.get(&1).cloned();
    if let Some(r) = first {
        let _ = r.initialize(members).await;
    }

    // Three independent actors, each driven by its own RNG derived from the
    // seed and by virtual time only, so the client schedule and the fault
    // schedule of a seed are the same on every run, whatever Raft does.
    let start = tokio::time::Instant::now();
    let end = start + Duration::from_secs(cfg.seconds);
    let leaders: Mutex<BTreeMap<u64, u64>> = Mutex::new(BTreeMap::new());
    let observed: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let crashed: Mutex<BTreeSet<u64>> = Mutex::new(BTreeSet::new());
    let schedule: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let observer = async {
        while tokio::time::Instant::now() < end {
            let running: Vec<(u64, SimRaft)> = net
                .lock()
                .nodes
                .iter()
                .map(|(i, r)| (*i, r.clone()))
                .collect();
            for (id, r) in &running {
                let m = r.metrics().borrow_watched().clone();
                if m.state == ServerState::Leader {
                    let term = m.current_term;
                    let mut l = leaders.lock().unwrap_or_else(|p| p.into_inner());
                    match l.get(&term) {
                        Some(other) if other != id => observed
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .push(format!("two leaders in term {term}: {other} and {id}")),
                        _ => {
                            l.insert(term, *id);
                        }
                    }
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    let client = async {
        // Writes go to a node chosen by the seed; a write is acknowledged
        // (the simulation's ALLOW) only if it came back committed.
        let mut rng = StdRng::seed_from_u64(seed ^ 0xc11e);
        let mut acked = Vec::new();
        let mut op = 0u64;
        while tokio::time::Instant::now() < end {
            op += 1;
            let target = ids[rng.gen_range(0..ids.len())];
            let r = net.lock().nodes.get(&target).cloned();
            if let Some(r) = r {
                let w = tokio::time::timeout(Duration::from_millis(300), r.client_write(op)).await;
                if let Ok(Ok(resp)) = w {
                    acked.push((op, resp.data));
                }
            }
            tokio::time::sleep(Duration::from_millis(rng.gen_range(5..40))).await;
        }
        acked
    };
    let nemesis = async {
        let mut rng = StdRng::seed_from_u64(seed ^ 0xfa17);
        let (mut faults, mut crashes) = (0usize, 0usize);
        loop {
            let wait = Duration::from_millis(rng.gen_range(300..1000));
            if tokio::time::Instant::now() + wait >= end {
                break;
            }
            tokio::time::sleep(wait).await;
            faults += 1;
            let kind = rng.gen_range(0..4);
            let at = (tokio::time::Instant::now() - start).as_millis();
            let what = match kind {
                0 => {
                    let side: BTreeSet<u64> = ids
                        .iter()
                        .copied()
                        .filter(|_| rng.r#gen::<bool>())
                        .collect();
                    let mut st = net.lock();
                    for a in &ids {
                        for b in &ids {
                            if side.contains(a) != side.contains(b) {
                                st.blocked.insert((*a, *b));
                            }
                        }
                    }
                    format!("{at} ms: partition {side:?}")
                }
                1 => {
                    let k = rng.gen_range(1..=((cfg.nodes - 1) / 2));
                    let mut victims = Vec::new();
                    for _ in 0..k {
                        victims.push(ids[rng.gen_range(0..ids.len())]);
                    }
                    for victim in &victims {
                        let r = net.lock().nodes.remove(victim);
                        if let Some(r) = r {
                            let _ = r.shutdown().await;
                            if cfg.lossy_disk
                                && let Some((log, _)) = stores.get(victim)
                            {
                                log.lose_tail(3);
                            }
                            crashed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .insert(*victim);
                            crashes += 1;
                        }
                    }
                    format!("{at} ms: crash {victims:?}")
                }
                2 => {
                    let p = rng.gen_range(0.1..0.4);
                    net.lock().loss = p;
                    format!("{at} ms: loss {p:.2}")
                }
                _ => {
                    let victim = ids[rng.gen_range(0..ids.len())];
                    let mut st = net.lock();
                    for other in ids.iter().filter(|o| **o != victim) {
                        st.blocked.insert((victim, *other));
                        st.blocked.insert((*other, victim));
                    }
                    format!("{at} ms: isolate {victim}")
                }
            };
            schedule
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(what);
            let on = Duration::from_millis(rng.gen_range(300..1000));
            tokio::time::sleep(on.min(end.saturating_duration_since(tokio::time::Instant::now())))
                .await;
            let mut c = std::mem::take(&mut *crashed.lock().unwrap_or_else(|p| p.into_inner()));
            heal(&net, &stores, &mut c).await;
        }
        (faults, crashes)
    };
    let ((), acked, (faults, crashes)) = tokio::join!(observer, client, nemesis);
    violations.extend(observed.into_inner().unwrap_or_else(|p| p.into_inner()));
    let leaders = leaders.into_inner().unwrap_or_else(|p| p.into_inner());
    let schedule = schedule.into_inner().unwrap_or_else(|p| p.into_inner());
    let mut crashed = crashed.into_inner().unwrap_or_else(|p| p.into_inner());

    // Heal, let everything converge, then judge the logs.
    heal(&net, &stores, &mut crashed).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    let logs: BTreeMap<u64, Vec<(u64, u64)>> = stores
        .iter()
        .map(|(i, (_, sm))| (*i, sm.read().applied))
        .collect();
    let longest = logs
        .values()
        .max_by_key(|l| l.len())
        .cloned()
        .unwrap_or_default();
    for (id, l) in &logs {
        if longest[..l.len()] != l[..] {
            violations.push(format!(
                "node {id}'s log is not a prefix of the longest (log matching)"
            ));
        }
        if l.len() != longest.len() {
            violations.push(format!(
                "node {id} did not converge: {} of {} entries",
                l.len(),
                longest.len()
            ));
        }
    }
    for (o, index) in &acked {
        for (id, l) in &logs {
            if !l.contains(&(*index, *o)) {
                violations.push(format!(
                    "acknowledged write {o} at index {index} missing on node {id}"
                ));
            }
        }
    }
    let rafts: Vec<SimRaft> = net.lock().nodes.values().cloned().collect();
    for r in rafts {
        let _ = r.shutdown().await;
    }
    let mut trace = 0xcbf2_9ce4_8422_2325u64;
    for line in &schedule {
        for b in line.bytes() {
            fnv(&mut trace, u64::from(b));
        }
    }
    let mut log_digest = 0xcbf2_9ce4_8422_2325u64;
    for (index, op) in &longest {
        fnv(&mut log_digest, *index);
        fnv(&mut log_digest, *op);
    }
    let dropped = net.lock().dropped;
    violations.dedup();
    SimReport {
        seed,
        acknowledged: acked.len(),
        faults,
        crashes,
        messages_dropped: dropped,
        terms_seen: leaders.len(),
        final_log_len: longest.len(),
        violations,
        schedule,
        trace,
        log_digest,
    }
}

async fn heal(net: &Net, stores: &BTreeMap<u64, (MemLog, MemSm)>, crashed: &mut BTreeSet<u64>) {
    {
        let mut st = net.lock();
        st.blocked.clear();
        st.loss = 0.0;
    }
    for id in std::mem::take(crashed) {
        if let Some((log, sm)) = stores.get(&id) {
            start_node(id, net, log, sm).await;
        }
    }
}
