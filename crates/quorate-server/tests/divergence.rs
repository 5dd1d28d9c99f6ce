//! Faults that need test-only switches, on real nodes run as tasks.
//!
//! Divergence (invariant 3): a replica made to evaluate differently (the
//! `fault-injection` switch inverts every decision it records) contains
//! with DIVERGENCE instead of cosigning a different root, while the honest
//! majority keeps deciding and finalising checkpoints.
//!
//! Tamper at rest while running (invariant 6): the periodic re-verification
//! finds a record changed under a live node.
//!
//! Real nodes as tasks: real TCP on loopback, real RocksDB in temp dirs.

use std::time::{Duration, Instant};

use quorate_core::{AuthorizeRequest, Decision, DenyReason};
use quorate_server::config::{MemberConfig, NodeConfig};
use quorate_server::{Node, RunningNode};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

fn config(id: u64, ports: &[(u16, u16)]) -> NodeConfig {
    let members = ports
        .iter()
        .enumerate()
        .map(|(i, (g, _))| MemberConfig {
            id: i as u64 + 1,
            addr: format!("127.0.0.1:{g}"),
            public_key: None,
            region: None,
        })
        .collect();
    let (g, h) = ports[(id - 1) as usize];
    let text = format!(
        "cluster_id = \"div\"\nnode_id = {id}\ngrpc_addr = \"127.0.0.1:{g}\"\n\
         http_addr = \"127.0.0.1:{h}\"\ncommit_timeout_ms = 3000\nmembers = []\n"
    );
    let mut cfg: NodeConfig = toml::from_str(&text).unwrap_or_else(|e| panic!("config: {e}"));
    cfg.members = members;
    cfg.raft.election_timeout_min_ms = 500;
    cfg.raft.election_timeout_max_ms = 1000;
    cfg
}

fn request(id: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        domain: "docs".into(),
        request_id: id.into(),
        principal: r#"User::"alice""#.into(),
        action: r#"Action::"read""#.into(),
        resource: r#"Doc::"1""#.into(),
        context: "{}".into(),
        entities: None,
        parent: None,
        trace_id: None,
    }
}

async fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Three data directories and (gRPC, HTTP) port pairs.
fn places() -> (Vec<tempfile::TempDir>, Vec<(u16, u16)>) {
    let dirs = (0..3)
        .map(|_| tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}")))
        .collect();
    let ports = (0..3).map(|_| (free_port(), free_port())).collect();
    (dirs, ports)
}

/// Starts nodes 1..=3 with `tweak` applied to each config; the nodes in
/// `not_electable` never lead. A node that must not lead must also not
/// bootstrap (openraft campaigns at once after `initialize`, before
/// `set_electable(false)` could apply): the tweak sees to that.
async fn start_three(
    dirs: &[tempfile::TempDir],
    ports: &[(u16, u16)],
    tweak: impl Fn(u64, &mut NodeConfig),
    not_electable: &[u64],
) -> Vec<RunningNode> {
    let mut running = Vec::new();
    for id in 1..=3u64 {
        let mut cfg = config(id, ports);
        tweak(id, &mut cfg);
        let n = Node::start(cfg, dirs[(id - 1) as usize].path())
            .await
            .unwrap_or_else(|e| panic!("start node {id}: {e}"));
        if not_electable.contains(&id) {
            n.node.set_electable(false);
        }
        running.push(n);
    }
    running
}

/// Waits for a leader among `nodes` and publishes `policy` (active) to
/// domain `docs` through it.
async fn leader_with_policy(nodes: &[Node], policy: &str) -> Node {
    wait_for("a leader", Duration::from_secs(20), || {
        nodes.iter().any(|n| n.status().role == "leader")
    })
    .await;
    let leader = nodes
        .iter()
        .find(|n| n.status().role == "leader")
        .cloned()
        .unwrap_or_else(|| panic!("no leader"));
    for _ in 0..100 {
        let r = leader
            .publish_policy("docs".into(), policy.into(), None, true, None)
            .await;
        if r.is_ok() {
            return leader;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("could not publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_replica_contains_instead_of_cosigning() {
    let (dirs, ports) = places();
    // Node 3 evaluates wrongly; it must also never lead, or the honest
    // majority would see only its roots.
    quorate_store::fault::set_diverge(&dirs[2].path().join("db"), true);
    let mut running = start_three(&dirs, &ports, |id, cfg| cfg.bootstrap = id != 3, &[3]).await;
    let nodes: Vec<Node> = running.iter().map(|r| r.node.clone()).collect();
    let leader = leader_with_policy(
        &nodes,
        "permit(principal == User::\"alice\", action, resource);",
    )
    .await;
    assert_ne!(leader.id(), 3);

    let mut allowed = 0;
    for k in 0..40 {
        let a = leader
            .authorize(request(&format!("r{k}")), false)
            .await
            .unwrap_or_else(|e| panic!("authorize: {e}"));
        if a.decision == Decision::Allow {
            allowed += 1;
        }
    }
    assert!(
        allowed > 30,
        "the honest leader decides: {allowed}/40 ALLOW"
    );

    // Node 3 detects that a validly signed root differs from its own.
    wait_for("node 3 to contain", Duration::from_secs(15), || {
        nodes[2].containment().map(|c| c.0) == Some(DenyReason::Divergence)
    })
    .await;
    let s3 = nodes[2].status();
    assert_eq!(s3.containment_reason, Some(DenyReason::Divergence));
    assert!(
        s3.containment_message.contains("cosigned root"),
        "{}",
        s3.containment_message
    );
    // It answers DENY DIVERGENCE, never its own wrong ALLOW or DENY.
    let a = nodes[2]
        .authorize(request("to-node-3"), false)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(a.decision, Decision::Deny);
    assert_eq!(a.reason, Some(DenyReason::Divergence));

    // The honest majority finalises checkpoints; node 3 cosigned none of
    // them, and the honest nodes agree on every root.
    wait_for(
        "a final checkpoint on the leader",
        Duration::from_secs(15),
        || leader.lookup().proof_state().last_final >= 40,
    )
    .await;
    for n in &nodes[..2] {
        assert!(
            n.containment().is_none(),
            "an honest node contained: {:?}",
            n.containment()
        );
        for cp in n.lookup().checkpoints().unwrap_or_default() {
            assert!(
                !cp.cosigners().contains(&3),
                "the divergent node cosigned size {}",
                cp.checkpoint.size
            );
        }
    }
    wait_for(
        "the honest nodes to hold identical checkpoints",
        Duration::from_secs(10),
        || {
            nodes[0].lookup().checkpoints().unwrap_or_default()
                == nodes[1].lookup().checkpoints().unwrap_or_default()
        },
    )
    .await;
    // The containment survives a restart: the evidence is stored.
    drop(nodes);
    drop(leader);
    let r3 = running.pop().unwrap_or_else(|| panic!("node 3"));
    r3.shutdown().await;
    let mut cfg = config(3, &ports);
    cfg.bootstrap = false;
    // In one process, connection tasks of the stopped server may hold the
    // database for a moment after shutdown; a real restart is a new process.
    let mut tries = 0;
    let again = loop {
        match Node::start(cfg.clone(), dirs[2].path()).await {
            Ok(n) => break n,
            Err(e) if tries < 50 && e.to_string().contains("lock") => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(e) => panic!("restart node 3: {e}"),
        }
    };
    assert_eq!(
        again.node.containment().map(|c| c.0),
        Some(DenyReason::Divergence)
    );
    again.shutdown().await;
    for r in running {
        r.shutdown().await;
    }
    quorate_store::fault::set_diverge(&dirs[2].path().join("db"), false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_reverification_finds_a_record_changed_under_a_running_node() {
    let (dirs, ports) = places();
    let running = start_three(
        &dirs,
        &ports,
        |_, cfg| cfg.integrity.verify_interval_s = 1,
        &[],
    )
    .await;
    let nodes: Vec<Node> = running.iter().map(|r| r.node.clone()).collect();
    let leader = leader_with_policy(&nodes, "permit(principal, action, resource);").await;
    for k in 0..10 {
        let a = leader
            .authorize(request(&format!("r{k}")), false)
            .await
            .unwrap_or_else(|e| panic!("authorize: {e}"));
        assert_eq!(a.decision, Decision::Allow);
    }
    let victim = nodes
        .iter()
        .find(|n| n.id() != leader.id())
        .cloned()
        .unwrap_or_else(|| panic!("a follower"));
    wait_for("the follower to apply", Duration::from_secs(10), || {
        victim.head().count == 10
    })
    .await;
    assert!(victim.containment().is_none());
    quorate_store::fault::tamper_record_live(victim.lookup(), 4, |r| {
        r["decision"] = "DENY".into();
    })
    .unwrap_or_else(|e| panic!("tamper: {e}"));
    wait_for(
        "the re-verification to contain the victim",
        Duration::from_secs(10),
        || victim.containment().map(|c| c.0) == Some(DenyReason::IntegrityFailure),
    )
    .await;
    let msg = victim.status().containment_message;
    assert!(msg.contains("index 4"), "{msg}");
    // The others keep serving.
    let a = leader
        .authorize(request("after"), false)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(a.decision, Decision::Allow);
    drop(nodes);
    drop(leader);
    drop(victim);
    for r in running {
        r.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_divergent_leader_contains_when_no_quorum_confirms_its_root() {
    let (dirs, ports) = places();
    // Node 1 evaluates wrongly and is the only node that may lead.
    quorate_store::fault::set_diverge(&dirs[0].path().join("db"), true);
    let tweak = |id: u64, cfg: &mut NodeConfig| {
        cfg.bootstrap = id == 1;
        cfg.checkpoint.finality_timeout_ms = 1500;
    };
    let running = start_three(&dirs, &ports, tweak, &[2, 3]).await;
    let nodes: Vec<Node> = running.iter().map(|r| r.node.clone()).collect();
    let leader = leader_with_policy(
        &nodes,
        "permit(principal == User::\"alice\", action, resource);",
    )
    .await;
    assert_eq!(leader.id(), 1);
    for k in 0..10 {
        let _ = leader.authorize(request(&format!("r{k}")), false).await;
    }
    // The followers see the leader's root differ from theirs and contain.
    for n in &nodes[1..] {
        wait_for("a follower to contain", Duration::from_secs(10), || {
            n.containment().map(|c| c.0) == Some(DenyReason::Divergence)
        })
        .await;
    }
    // Nobody confirms the leader's root: after the finality timeout the
    // divergent leader contains too, and stops answering from its records.
    wait_for(
        "the divergent leader to contain",
        Duration::from_secs(10),
        || leader.containment().map(|c| c.0) == Some(DenyReason::Divergence),
    )
    .await;
    assert!(
        leader
            .status()
            .containment_message
            .contains("no quorum has cosigned")
    );
    let a = leader
        .authorize(request("late"), false)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(a.decision, Decision::Deny);
    assert_eq!(a.reason, Some(DenyReason::Divergence));
    assert_eq!(
        leader.lookup().proof_state().last_final,
        0,
        "no root was ever final"
    );
    drop(nodes);
    drop(leader);
    for r in running {
        r.shutdown().await;
    }
    quorate_store::fault::set_diverge(&dirs[0].path().join("db"), false);
}
