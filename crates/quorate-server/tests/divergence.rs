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

use quorate_core::ErrorCode;
use quorate_core::{AuthorizeRequest, Decision, DenyReason};
use quorate_server::config::{MemberConfig, NodeConfig};
use quorate_server::node::Door;
use quorate_server::{Node, RunningNode};

/// A port for a node to listen on. Taken below the kernel's ephemeral range
/// (32768 and up), from a counter shared by this binary's tests: a port the
/// kernel picked for `bind(0)` and released could be handed out again as
/// the source port of another test's outgoing connection before the node
/// binds it (it happened in CI: "Address already in use").
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    // Processes start apart (by pid) so that two test binaries rarely
    // probe the same ports; every port stays in 20000..32000.
    let start = (std::process::id() % 400) as u16 * 30;
    loop {
        let port = 20_000 + (start + NEXT.fetch_add(1, Ordering::Relaxed) % 12_000) % 12_000;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
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
            .authorize(request(&format!("r{k}")), Door::Grpc)
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
        .authorize(request("to-node-3"), Door::Grpc)
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
    stop(running).await;
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
    for a in decide_n(&leader, "r", 10).await {
        assert_eq!(a.decision, Decision::Allow);
    }
    let victim = applied_follower(&nodes, &leader, 10).await;
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
        .authorize(request("after"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(a.decision, Decision::Allow);
    drop(nodes);
    drop(leader);
    drop(victim);
    stop(running).await;
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
        let _ = leader
            .authorize(request(&format!("r{k}")), Door::Grpc)
            .await;
    }
    // The followers see the leader's root differ from theirs and contain.
    for n in &nodes[1..] {
        wait_for("a follower to contain", Duration::from_secs(10), || {
            n.containment().map(|c| c.0) == Some(DenyReason::Divergence)
        })
        .await;
    }
    // Nobody confirms the leader's root: once no majority attests its head
    // within the commit deadline (or, at the latest, after the finality
    // timeout) the divergent leader contains too, and stops answering from
    // its records.
    let doubt =
        |c: Option<DenyReason>| matches!(c, Some(DenyReason::Divergence | DenyReason::Unattested));
    wait_for(
        "the divergent leader to contain",
        Duration::from_secs(10),
        || doubt(leader.containment().map(|c| c.0)),
    )
    .await;
    let msg = leader.status().containment_message;
    assert!(
        msg.contains("no quorum has cosigned") || msg.contains("no majority of voters attested"),
        "{msg}"
    );
    let a = leader
        .authorize(request("late"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(a.decision, Decision::Deny);
    assert!(doubt(a.reason), "{a:?}");
    assert_eq!(
        leader.lookup().proof_state().last_final,
        0,
        "no root was ever final"
    );
    drop(nodes);
    drop(leader);
    stop(running).await;
    quorate_store::fault::set_diverge(&dirs[0].path().join("db"), false);
}

// ---- Attested answers (issue 11) ------------------------------------------

fn bob(id: &str) -> AuthorizeRequest {
    AuthorizeRequest {
        principal: r#"User::"bob""#.into(),
        ..request(id)
    }
}

const ALICE_ONLY: &str = "permit(principal == User::\"alice\", action, resource);";

/// Node 1 evaluates wrongly (every decision inverted) and is the only node
/// that may lead; the others are honest. Returns the running nodes.
async fn faulty_leader(
    dirs: &[tempfile::TempDir],
    ports: &[(u16, u16)],
    answer: quorate_server::config::AnswerMode,
) -> (Vec<RunningNode>, Vec<Node>) {
    quorate_store::fault::set_diverge(&dirs[0].path().join("db"), true);
    let tweak = move |id: u64, cfg: &mut NodeConfig| {
        cfg.bootstrap = id == 1;
        cfg.answer = answer;
    };
    let running = start_three(dirs, ports, tweak, &[2, 3]).await;
    let nodes: Vec<Node> = running.iter().map(|r| r.node.clone()).collect();
    let leader = leader_with_policy(&nodes, ALICE_ONLY).await;
    assert_eq!(leader.id(), 1);
    (running, nodes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attested_answer_never_carries_a_wrong_leaders_allow() {
    let (dirs, ports) = places();
    let (running, nodes) =
        faulty_leader(&dirs, &ports, quorate_server::config::AnswerMode::Attested).await;
    // Bob is not permitted. The leader's broken evaluator says ALLOW; the
    // followers, each recomputing it, say DENY and will not sign its root.
    let a = nodes[0]
        .authorize(bob("bob-1"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(a.decision, Decision::Deny, "{a:?}");
    assert_eq!(a.reason, Some(DenyReason::Unattested), "{a:?}");
    assert!(a.record.is_none() && a.receipt.is_none());
    // The leader now contains and hands leadership to an honest voter as
    // soon as one may lead.
    assert_eq!(
        nodes[0].containment().map(|c| c.0),
        Some(DenyReason::Unattested)
    );
    let again = nodes[0]
        .authorize(bob("bob-2"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(again.reason, Some(DenyReason::Unattested));
    // A leader in doubt does not remove the voters that caught it out: they
    // sign validly, with the keys the membership lists for them (were they
    // removed, it would be its own majority and attest its own ALLOWs).
    let voters_before = nodes[0].status().members.len();
    let removal = nodes[0].remove_node(nodes[1].id()).await;
    let code = removal.as_ref().err().map(|e| e.code);
    assert_eq!(code, Some(ErrorCode::Contained), "{removal:?}");
    assert_eq!(nodes[0].status().members.len(), voters_before);
    for n in &nodes[1..] {
        n.set_electable(true);
    }
    wait_for("an honest leader", Duration::from_secs(10), || {
        nodes[1..].iter().any(|n| n.status().role == "leader")
    })
    .await;
    let honest = nodes[1..]
        .iter()
        .find(|n| n.status().role == "leader")
        .cloned()
        .unwrap_or_else(|| panic!("no honest leader"));
    // Under the honest majority bob is denied by policy; alice is allowed,
    // and her answer carries a receipt that verifies offline.
    let mut allowed = None;
    for k in 0..50 {
        let b = honest
            .authorize(bob(&format!("bob-h{k}")), Door::Grpc)
            .await
            .unwrap_or_else(|e| panic!("authorize: {e}"));
        assert_ne!(b.decision, Decision::Allow, "bob allowed: {b:?}");
        let a = honest
            .authorize(request(&format!("alice-h{k}")), Door::Grpc)
            .await
            .unwrap_or_else(|e| panic!("authorize: {e}"));
        if a.decision == Decision::Allow {
            allowed = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let a = allowed.unwrap_or_else(|| panic!("alice was never allowed by the honest leader"));
    let receipt = a
        .receipt
        .unwrap_or_else(|| panic!("an attested ALLOW carries its receipt"));
    assert_eq!(Some(&receipt.record), a.record.as_ref());
    let trust = honest
        .trust_file()
        .await
        .unwrap_or_else(|e| panic!("trust: {e}"));
    quorate_core::proof::verify_receipt(&trust, &receipt)
        .unwrap_or_else(|e| panic!("the answer's receipt does not verify: {e}"));
    assert!(
        !receipt
            .checkpoint
            .cosignatures
            .iter()
            .any(|c| c.node_id == 1),
        "the wrong evaluator's signature counted"
    );
    // The wrong node, following now, applies the honest majority's
    // checkpoints, finds its roots differ and contains for good.
    wait_for(
        "node 1 to find its divergence",
        Duration::from_secs(15),
        || nodes[0].containment().map(|c| c.0) == Some(DenyReason::Divergence),
    )
    .await;
    drop(nodes);
    stop(running).await;
    quorate_store::fault::set_diverge(&dirs[0].path().join("db"), false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_committed_mode_a_wrong_leaders_allow_goes_out() {
    // What `answer = "committed"` gives up, shown: the same fault as above,
    // and the leader's own (wrong) evaluation is answered.
    let (dirs, ports) = places();
    let (running, nodes) =
        faulty_leader(&dirs, &ports, quorate_server::config::AnswerMode::Committed).await;
    let a = nodes[0]
        .authorize(bob("bob-1"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(
        a.decision,
        Decision::Allow,
        "committed mode answers from the leader's evaluation alone"
    );
    assert!(a.receipt.is_none());
    drop(nodes);
    stop(running).await;
    quorate_store::fault::set_diverge(&dirs[0].path().join("db"), false);
}

/// Shuts every node down.
async fn stop(running: Vec<RunningNode>) {
    for r in running {
        r.shutdown().await;
    }
}

/// Decides `request(prefix + k)` for k in 0..n on `node`.
async fn decide_n(node: &Node, prefix: &str, n: usize) -> Vec<quorate_server::node::Answer> {
    let mut out = Vec::new();
    for k in 0..n {
        out.push(
            node.authorize(request(&format!("{prefix}{k}")), Door::Grpc)
                .await
                .unwrap_or_else(|e| panic!("authorize: {e}")),
        );
    }
    out
}

/// Every node but `leader`.
fn all_but(nodes: &[Node], leader: &Node) -> Vec<Node> {
    nodes
        .iter()
        .filter(|n| n.id() != leader.id())
        .cloned()
        .collect()
}

/// A follower of `leader` once it has applied `count` records.
async fn applied_follower(nodes: &[Node], leader: &Node, count: u64) -> Node {
    let follower = all_but(nodes, leader)
        .into_iter()
        .next()
        .unwrap_or_else(|| panic!("a follower"));
    wait_for("the follower to apply", Duration::from_secs(10), || {
        follower.head().count == count
    })
    .await;
    follower
}

async fn wait_for_a_leader_among(nodes: &[Node]) {
    wait_for("another node to lead", Duration::from_secs(10), || {
        nodes.iter().any(|n| n.status().role == "leader")
    })
    .await;
}

/// Three healthy nodes (attested answers), a policy, and the leader.
async fn healthy(
    dirs: &[tempfile::TempDir],
    ports: &[(u16, u16)],
    tweak: impl Fn(u64, &mut NodeConfig),
) -> (Vec<RunningNode>, Vec<Node>, Node) {
    let running = start_three(dirs, ports, tweak, &[]).await;
    let nodes: Vec<Node> = running.iter().map(|r| r.node.clone()).collect();
    let leader = leader_with_policy(&nodes, ALICE_ONLY).await;
    (running, nodes, leader)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_never_serves_a_record_resealed_on_the_leader() {
    let (dirs, ports) = places();
    let (running, nodes, leader) = healthy(&dirs, &ports, |_, _| {}).await;
    let d = leader
        .authorize(bob("bob-1"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(d.reason, Some(DenyReason::Policy));
    let index = d.record.as_ref().map_or(0, |r| r.index);
    // Someone who knows the format edits the stored DENY into an ALLOW and
    // gives it a valid hash. Only its chain link and Merkle leaf betray it.
    quorate_store::fault::reseal_record_live(leader.lookup(), index, |r| {
        r.decision = Decision::Allow;
        r.reason = None;
    })
    .unwrap_or_else(|e| panic!("tamper: {e}"));
    let again = leader
        .authorize(bob("bob-1"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(
        again.decision,
        Decision::Deny,
        "served the altered record: {again:?}"
    );
    assert_eq!(
        again.reason,
        Some(DenyReason::IntegrityFailure),
        "{again:?}"
    );
    assert_eq!(
        leader.containment().map(|c| c.0),
        Some(DenyReason::IntegrityFailure)
    );
    drop((nodes, leader));
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_never_serves_a_record_edited_on_the_leader() {
    let (dirs, ports) = places();
    let (running, nodes, leader) = healthy(&dirs, &ports, |_, _| {}).await;
    let d = leader
        .authorize(bob("bob-1"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    let index = d.record.as_ref().map_or(0, |r| r.index);
    // A flipped byte: the hash no longer matches.
    quorate_store::fault::tamper_record_live(leader.lookup(), index, |r| {
        r["decision"] = "ALLOW".into();
        r["reason"] = serde_json::Value::Null;
    })
    .unwrap_or_else(|e| panic!("tamper: {e}"));
    let again = leader
        .authorize(bob("bob-1"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    assert_eq!(
        again.decision,
        Decision::Deny,
        "served the altered record: {again:?}"
    );
    // The replaying apply failed on the leader alone: it contains, its
    // peers carry on under a new leader.
    wait_for("the leader to contain", Duration::from_secs(5), || {
        leader.containment().is_some()
    })
    .await;
    let others = all_but(&nodes, &leader);
    wait_for_a_leader_among(&others).await;
    drop((nodes, leader, others));
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_fails_its_integrity_check_hands_leadership_over() {
    let (dirs, ports) = places();
    let (running, nodes, leader) =
        healthy(&dirs, &ports, |_, cfg| cfg.integrity.verify_interval_s = 1).await;
    for a in decide_n(&leader, "r", 5).await {
        assert_eq!(a.decision, Decision::Allow, "{a:?}");
    }
    quorate_store::fault::tamper_record_live(leader.lookup(), 2, |r| {
        r["decision"] = "DENY".into();
    })
    .unwrap_or_else(|e| panic!("tamper: {e}"));
    wait_for("the leader to contain", Duration::from_secs(10), || {
        leader.containment().map(|c| c.0) == Some(DenyReason::IntegrityFailure)
    })
    .await;
    // Within two election timeouts another node leads, and ALLOWs resume
    // through any node, the contained one excepted.
    let contained_at = Instant::now();
    let others = all_but(&nodes, &leader);
    wait_for_a_leader_among(&others).await;
    let took = contained_at.elapsed();
    let bound = Duration::from_millis(2 * leader.config().raft.election_timeout_max_ms);
    assert!(took <= bound, "handover took {took:?}, more than {bound:?}");
    let mut resumed = false;
    for k in 0..40 {
        let a = others[k % 2]
            .authorize(request(&format!("after{k}")), Door::Grpc)
            .await
            .unwrap_or_else(|e| panic!("authorize: {e}"));
        if a.decision == Decision::Allow {
            resumed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(resumed, "ALLOWs did not resume after the handover");
    assert_ne!(leader.status().role, "leader");
    drop((nodes, leader, others));
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_stream_ends_when_its_node_contains() {
    let (dirs, ports) = places();
    let (running, nodes, leader) =
        healthy(&dirs, &ports, |_, cfg| cfg.integrity.verify_interval_s = 1).await;
    decide_n(&leader, "r", 3).await;
    let follower = applied_follower(&nodes, &leader, 3).await;
    let mut rx = follower
        .watch(1, None)
        .unwrap_or_else(|e| panic!("watch: {e}"));
    for _ in 0..3 {
        let r = tokio::time::timeout(Duration::from_secs(5), rx.recv()).await;
        assert!(matches!(r, Ok(Some(Ok(_)))), "{r:?}");
    }
    quorate_store::fault::tamper_record_live(follower.lookup(), 1, |r| {
        r["decision"] = "DENY".into();
    })
    .unwrap_or_else(|e| panic!("tamper: {e}"));
    // The open stream ends with the containment, not silence.
    let end = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match rx.recv().await {
                Some(Ok(_)) => continue,
                other => return other,
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the stream outlived the containment"));
    let msg = match end {
        Some(Err(e)) => e.to_string(),
        other => panic!("expected a containment error, got {other:?}"),
    };
    assert!(msg.contains("contained"), "{msg}");
    assert!(
        tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .ok()
            .flatten()
            .is_none(),
        "the stream goes on after its containment"
    );
    drop((nodes, leader, follower));
    stop(running).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_forged_lineage_row_read_by_a_query_contains_the_node() {
    // Invariant 6 on the read path: the lineage index is derived data, and a
    // row that names a decision its record does not name as a child is
    // corrupt state. The query that reads it answers an error, never the
    // forged child, and the node contains as verification would have.
    let (dirs, ports) = places();
    let (running, nodes, leader) = healthy(&dirs, &ports, |_, _| {}).await;
    let root = leader
        .authorize(request("root"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    let child = AuthorizeRequest {
        parent: Some("root".into()),
        ..request("child")
    };
    leader
        .authorize(child, Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    let other = leader
        .authorize(request("other"), Door::Grpc)
        .await
        .unwrap_or_else(|e| panic!("authorize: {e}"));
    let (root, other) = (
        root.record.map(|r| r.index).unwrap_or_default(),
        other.record.map(|r| r.index).unwrap_or_default(),
    );
    let victim = applied_follower(&nodes, &leader, 3).await;
    let honest = victim
        .lineage_of(root, 100)
        .unwrap_or_else(|e| panic!("lineage: {e}"));
    assert_eq!(honest.records.len(), 2);
    assert!(victim.containment().is_none());

    quorate_store::fault::forge_lineage_child_live(victim.lookup(), "docs", "root", other)
        .unwrap_or_else(|e| panic!("forge: {e}"));
    let forged = victim.lineage_of(root, 100);
    assert!(forged.is_err(), "the forged child was answered: {forged:?}");
    let (reason, msg) = victim
        .containment()
        .unwrap_or_else(|| panic!("the victim did not contain"));
    assert_eq!(reason, DenyReason::IntegrityFailure);
    assert!(msg.contains("lineage"), "{msg}");
    // The others answer the honest lineage.
    let l = leader
        .lineage_of(root, 100)
        .unwrap_or_else(|e| panic!("lineage: {e}"));
    assert_eq!(l.records.len(), 2);
    drop(nodes);
    drop(leader);
    drop(victim);
    stop(running).await;
}
