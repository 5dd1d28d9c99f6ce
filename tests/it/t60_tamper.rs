//! Tamper evidence at rest (invariant 6): a byte changed in a stopped
//! node's stored record is found on restart; that node contains and says
//! where; its peers are unaffected; `quorate node repair` restores it from a
//! peer's verified snapshot.

use std::time::{Duration, Instant};

use quorate_e2e::{Cluster, ClusterOpts, POLICY, cli, is_allow, request};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t60_a_corrupted_record_contains_its_node_until_repaired() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    c.publish("docs", POLICY).await?;
    for k in 0..20 {
        c.decide(k % 3, request("docs", &format!("r{k}"), "alice", "read"))
            .await?;
    }
    c.wait_converged(20, Duration::from_secs(10)).await?;
    // Repair needs a quorum-cosigned checkpoint to vouch for the peer's state.
    let deadline = Instant::now() + Duration::from_secs(10);
    while c.status(0).await?.last_final_checkpoint < 20 {
        assert!(
            Instant::now() < deadline,
            "no final checkpoint covers the log"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = c.wait_leader(Duration::from_secs(10)).await?;
    let victim = (leader + 1) % 3;
    let other = (leader + 2) % 3;
    c.kill9(victim);
    let db = c.nodes[victim].data_dir.join("db");
    quorate_store::fault::tamper_record(&db, 5, |rec| {
        rec["request"]["principal"] = "User::\"mallory\"".into();
    })?;
    c.start_node(victim)?;

    // The victim contains with INTEGRITY_FAILURE and names record 5.
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        if let Ok(s) = c.status(victim).await {
            break s;
        }
        assert!(Instant::now() < deadline, "victim did not come up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(s.containment_reason, "INTEGRITY_FAILURE", "{s:?}");
    assert!(
        s.containment_message.contains("index 5"),
        "{}",
        s.containment_message
    );
    let r = c
        .client(victim)
        .await?
        .authorize(request("docs", "via-victim", "alice", "read"))
        .await?
        .into_inner();
    assert!(!is_allow(&r), "a node with a damaged log must never ALLOW");
    assert_eq!(r.reason, "INTEGRITY_FAILURE");
    // The others are unaffected.
    let r = c
        .decide(other, request("docs", "healthy", "alice", "read"))
        .await?;
    assert!(is_allow(&r));

    // Repair: stop it, restore from a peer, start it again.
    c.kill9(victim);
    let cfg = c.nodes[victim].config.to_str().unwrap_or("").to_string();
    let dir = c.nodes[victim].data_dir.to_str().unwrap_or("").to_string();
    let (code, out, err) = cli(&["node", "repair", "--config", &cfg, "--data-dir", &dir]);
    assert_eq!(code, 0, "{out} {err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["repaired"], true, "{v}");
    assert_eq!(v["verified"], true, "{v}");
    assert!(
        v["error_before"].as_str().unwrap_or("").contains("index 5"),
        "{v}"
    );
    // Repairing healthy state is a no-op.
    let (code, out, _) = cli(&["node", "repair", "--config", &cfg, "--data-dir", &dir]);
    assert_eq!(code, 0);
    assert!(out.contains("\"repaired\": false"), "{out}");
    c.start_node(victim)?;
    let head = c.wait_converged(21, Duration::from_secs(30)).await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let s = c.status(victim).await?;
        if s.quorate {
            assert_eq!(s.chain_head_hash, head);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "repaired node still contained: {s:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = c
        .decide(victim, request("docs", "after-repair", "alice", "read"))
        .await?;
    assert!(is_allow(&r));
    Ok(())
}
