//! Federation: regional learners, identical watch streams, nodes joining
//! during traffic, and quorum arithmetic that follows membership changes.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use quorate_e2e::{Cluster, ClusterOpts, POLICY, cli, connect, is_allow, metric_value, request};
use quorate_proto::v1;
use tokio_stream::StreamExt;

/// Runs a CLI command until it succeeds (a node may still be starting).
async fn cli_ok(args: &[&str]) -> anyhow::Result<serde_json::Value> {
    let start = Instant::now();
    loop {
        let (code, out, err) = cli(args);
        if code == 0 {
            return Ok(serde_json::from_str(&out)?);
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("`quorate {}` failed: {err}", args.join(" "));
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// Authorizes through `addr` until the request is committed (same id on
/// every retry, so at most one record).
async fn decide_at(addr: &str, req: v1::AuthorizeRequest) -> anyhow::Result<v1::AuthorizeResponse> {
    let start = Instant::now();
    loop {
        if let Ok(mut c) = connect(addr).await
            && let Ok(r) = c.authorize(req.clone()).await
        {
            let r = r.into_inner();
            if r.record.is_some() {
                return Ok(r);
            }
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!(
                "{} not committed through {addr} within 60 s",
                req.request_id
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The first `n` records a node streams from index 1: (index, hash). A
/// broken stream is resumed after the last record received.
async fn watch(addr: String, n: u64) -> anyhow::Result<Vec<(u64, String)>> {
    let mut out: Vec<(u64, String)> = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(240);
    while (out.len() as u64) < n {
        if Instant::now() > deadline {
            bail!("watch on {addr} got {} of {n} records", out.len());
        }
        let next = out.last().map_or(1, |r| r.0 + 1);
        let stream = async {
            let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
                .connect()
                .await?;
            let mut c = v1::governance_client::GovernanceClient::new(ch);
            anyhow::Ok(
                c.watch_decisions(v1::WatchDecisionsRequest {
                    from_index: next,
                    domain: None,
                })
                .await?
                .into_inner(),
            )
        };
        let Ok(mut s) = stream.await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        while let Some(Ok(rec)) = s.next().await {
            out.push((rec.index, rec.hash));
            if out.len() as u64 >= n {
                break;
            }
        }
    }
    Ok(out)
}

/// Adds spare nodes `idx` (0-based, already started) as learners with the
/// CLI, through node 1.
async fn add_learners(c: &Cluster, idx: &[usize]) -> anyhow::Result<()> {
    let ep = c.nodes[0].grpc.clone();
    for &i in idx {
        let (id, addr) = ((i + 1).to_string(), c.nodes[i].grpc.clone());
        cli_ok(&[
            "cluster",
            "add-learner",
            "--endpoint",
            &ep,
            "--id",
            &id,
            "--addr",
            &addr,
        ])
        .await?;
    }
    Ok(())
}

async fn wait_role(c: &Cluster, i: usize, role: &str) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        if let Ok(s) = c.status(i).await
            && s.role == role
            && s.quorate
        {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(30) {
            bail!("node {} did not become a quorate {role}", i + 1);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the leader reports every member at most `lag` entries behind.
async fn wait_caught_up(c: &Cluster, lag: u64) -> anyhow::Result<()> {
    let start = Instant::now();
    loop {
        let l = c.wait_leader(Duration::from_secs(10)).await?;
        let s = c.status(l).await?;
        if s.members.iter().all(|m| m.lag.is_some_and(|x| x <= lag)) {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(60) {
            bail!("members did not catch up: {:?}", s.members);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn learners_and_watch_streams_are_identical_across_a_leader_kill() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        spares: 2,
        regions: ["a", "b", "c", "a", "b"].map(String::from).to_vec(),
        ..Default::default()
    })
    .await?;
    c.publish("fed", POLICY).await?;
    c.start_node(3)?;
    c.start_node(4)?;
    add_learners(&c, &[3, 4]).await?;
    wait_role(&c, 3, "learner").await?;
    wait_role(&c, 4, "learner").await?;
    let members = cli_ok(&["cluster", "members", "--endpoint", &c.nodes[1].grpc]).await?;
    assert_eq!(members["voters"], 3, "{members}");
    assert_eq!(members["learners"], 2, "{members}");
    assert_eq!(members["tolerates_failures"], 1, "{members}");
    assert_eq!(
        members["regions"]["a"]["voters"][0]["node_id"], 1,
        "{members}"
    );
    assert_eq!(
        members["regions"]["a"]["learners"][0]["node_id"], 4,
        "{members}"
    );
    assert_eq!(
        members["regions"]["b"]["learners"][0]["node_id"], 5,
        "{members}"
    );

    // A learner serves: it forwards an authorization and answers a
    // linearizable read through the leader's read index.
    let r = decide_at(
        &c.nodes[3].grpc,
        request("fed", "via-learner", "alice", "read"),
    )
    .await?;
    assert!(is_allow(&r), "{r:?}");
    assert_eq!(r.served_by, 4);
    let p = c
        .client(4)
        .await?
        .get_policy(v1::GetPolicyRequest {
            domain: "fed".into(),
            version: 0,
        })
        .await?
        .into_inner();
    assert_eq!(p.version, 1);

    // Two watchers, on a follower voter and on a learner, from index 1.
    const N: u64 = 10_000;
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let follower = (0..3).find(|i| *i != leader).context("a follower")?;
    let w1 = tokio::spawn(watch(c.nodes[follower].grpc.clone(), N));
    let w2 = tokio::spawn(watch(c.nodes[3].grpc.clone(), N));

    // Traffic through every node but the leader (which is killed midway).
    let targets: Vec<String> = (0..5)
        .filter(|i| *i != leader)
        .map(|i| c.nodes[i].grpc.clone())
        .collect();
    let next = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for k in 0..24 {
        let (targets, next) = (targets.clone(), next.clone());
        clients.push(tokio::spawn(async move {
            loop {
                let n = next.fetch_add(1, Ordering::Relaxed);
                // One record already exists ("via-learner").
                if n >= N - 1 {
                    return anyhow::Ok(());
                }
                let who = if n % 3 == 0 { "bob" } else { "alice" };
                let req = request("fed", &format!("w{n}"), who, "read");
                decide_at(&targets[k % targets.len()], req).await?;
            }
        }));
    }
    // Kill the leader once about a third of the decisions are in.
    let start = Instant::now();
    loop {
        let s = c.status(follower).await?;
        if s.decision_count >= N / 3 {
            break;
        }
        if start.elapsed() > Duration::from_secs(120) {
            bail!("traffic stalled at {} decisions", s.decision_count);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    c.kill9(leader);
    for t in clients {
        t.await??;
    }
    let (a, b) = (w1.await??, w2.await??);
    assert_eq!(a.len() as u64, N);
    assert!(
        a.iter().enumerate().all(|(i, r)| r.0 == i as u64 + 1),
        "indexes are dense from 1"
    );
    assert_eq!(a, b, "the follower's and the learner's streams differ");

    // The stream resumes from any index on any node with the same records.
    let tail = watch(c.nodes[4].grpc.clone(), 10).await?;
    assert_eq!(tail[..], a[..10]);
    // So does `quorate log watch`, one JSON line per record.
    let (code, out, err) = cli(&[
        "log",
        "watch",
        "--endpoint",
        &c.nodes[4].grpc,
        "--from",
        "3",
        "--limit",
        "5",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<(u64, String)> = out
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap_or_default();
            (
                v["index"].as_u64().unwrap_or(0),
                v["hash"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(lines[..], a[2..7]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_join_during_traffic_and_quorum_follows_membership() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        spares: 2,
        // Compaction during the test: joining nodes need snapshot + log.
        snapshot_after_entries: 200,
        ..Default::default()
    })
    .await?;
    c.publish("fed", POLICY).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let addrs: Vec<String> = (0..3).map(|i| c.nodes[i].grpc.clone()).collect();
    let mut traffic = Vec::new();
    for k in 0..6usize {
        let (stop, addrs) = (stop.clone(), addrs.clone());
        traffic.push(tokio::spawn(async move {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let req = request("fed", &format!("t{k}-{n}"), "alice", "read");
                decide_at(&addrs[k % 3], req).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    // Let the log grow past a few snapshots, and the decision log past a
    // few MiB (a snapshot of several chunks), before anyone joins.
    let start = Instant::now();
    while {
        let s = c.status(0).await?;
        s.last_log_index < 600 || s.decision_count < 6000
    } {
        if start.elapsed() > Duration::from_secs(120) {
            bail!("traffic too slow");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    c.start_node(3)?;
    c.start_node(4)?;
    let ep = c.nodes[0].grpc.clone();
    add_learners(&c, &[3, 4]).await?;
    wait_caught_up(&c, 200).await?;
    // They caught up from a snapshot streamed in several checked chunks.
    for i in [3, 4] {
        let got = metric_value(&c.nodes[i].http, "quorate_snapshot_received_bytes_total").await?;
        assert!(
            got > 2.0 * 1024.0 * 1024.0,
            "node {} received {got} snapshot bytes",
            i + 1
        );
    }
    for id in ["4", "5"] {
        cli_ok(&["cluster", "promote", "--endpoint", &ep, "--id", id]).await?;
    }
    // Traffic continues for a while with five voters.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.store(true, Ordering::Relaxed);
    let mut sent = 0;
    for t in traffic {
        sent += t.await??;
    }
    assert!(sent > 100, "only {sent} decisions during the test");
    let l = c.wait_leader(Duration::from_secs(10)).await?;
    let count = c.status(l).await?.decision_count;
    let head = c.wait_converged(count, Duration::from_secs(60)).await?;
    // Byte-identical decision logs on all five, joiners included.
    let reference = c.export(0).await?;
    for i in 1..5 {
        assert_eq!(c.export(i).await?, reference, "node {} differs", i + 1);
        assert_eq!(c.status(i).await?.chain_head_hash, head);
    }
    let members = cli_ok(&["cluster", "members", "--endpoint", &ep]).await?;
    assert_eq!(members["voters"], 5, "{members}");
    assert_eq!(members["tolerates_failures"], 2, "{members}");
    // Checkpoints from the three-voter and the five-voter eras both verify
    // offline, each under the voter set that judged it.
    verify_offline(&ep).await?;

    // Five voters tolerate two failures...
    c.kill9(0);
    c.kill9(1);
    let r = decide_at(&c.nodes[2].grpc, request("fed", "q-5-2", "alice", "read")).await?;
    assert!(is_allow(&r), "3 of 5 voters still decide: {r:?}");
    // ...and contain at three.
    c.kill9(2);
    assert_contained(&c.nodes[3].grpc, "q-5-3").await?;

    // Removing a voter changes the arithmetic: with 4 voters, two failures
    // are one too many.
    for i in 0..3 {
        c.start_node(i)?;
    }
    c.wait_leader(Duration::from_secs(30)).await?;
    cli_ok(&["cluster", "remove", "--endpoint", &ep, "--id", "5"]).await?;
    // The removed node is part of no quorum: it contains once it learns of
    // its removal (or stops hearing from the leader). Until then it may
    // still forward a request, which the quorum then commits: allowed, but
    // only with its committed record.
    assert_contained_eventually(&c.nodes[4].grpc, "removed-5").await?;
    c.kill9(4);
    let members = cli_ok(&["cluster", "members", "--endpoint", &ep]).await?;
    assert_eq!(members["voters"], 4, "{members}");
    assert_eq!(members["tolerates_failures"], 1, "{members}");
    let r = decide_at(&c.nodes[0].grpc, request("fed", "q-4-0", "alice", "read")).await?;
    assert!(is_allow(&r));
    verify_offline(&ep).await?;
    c.kill9(0);
    c.kill9(1);
    assert_contained(&c.nodes[2].grpc, "q-4-2").await?;
    Ok(())
}

/// Exports the log and the trust file through `ep` and verifies the export
/// offline (every checkpoint under the voter set that judged it).
async fn verify_offline(ep: &str) -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (trust, export) = (dir.path().join("trust.json"), dir.path().join("log.jsonl"));
    // Wait until the latest decisions are under a final checkpoint.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (code, t, err) = cli(&["keys", "export", "--endpoint", ep]);
    anyhow::ensure!(code == 0, "keys export: {err}");
    std::fs::write(&trust, t)?;
    let export_s = export.to_str().unwrap_or_default();
    let (code, _, err) = cli(&["log", "export", "--endpoint", ep, "--out", export_s]);
    anyhow::ensure!(code == 0, "log export: {err}");
    let trust_s = trust.to_str().unwrap_or_default();
    let (code, out, err) = cli(&["verify", "--trust", trust_s, "--log", export_s]);
    anyhow::ensure!(code == 0, "verify: {out}{err}");
    Ok(())
}

/// A node without a quorum answers DENY NO_QUORUM and commits nothing.
async fn assert_contained(addr: &str, rid: &str) -> anyhow::Result<()> {
    contained(addr, rid, true).await
}

/// Like `assert_contained`, but committed answers (each a fresh request)
/// are allowed before containment sets in.
async fn assert_contained_eventually(addr: &str, rid: &str) -> anyhow::Result<()> {
    contained(addr, rid, false).await
}

async fn contained(addr: &str, rid: &str, strict: bool) -> anyhow::Result<()> {
    let start = Instant::now();
    let mut n = 0;
    loop {
        n += 1;
        let mut c = connect(addr).await?;
        let r = c
            .authorize(request("fed", &format!("{rid}-{n}"), "alice", "read"))
            .await?
            .into_inner();
        if !strict && r.record.is_some() {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        assert!(r.record.is_none(), "committed without a quorum: {r:?}");
        assert!(!is_allow(&r), "ALLOW without a quorum: {r:?}");
        if r.reason == "NO_QUORUM" {
            return Ok(());
        }
        if start.elapsed() > Duration::from_secs(15) {
            bail!("expected NO_QUORUM, last answer {r:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
