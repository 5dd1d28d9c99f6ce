//! Backups and the restore that keeps Raft safe: `quorate backup` writes a
//! verified checkpoint of a running node (bad input refused, nothing
//! written), and after the whole cluster is lost `quorate restore` seeds a
//! new one-voter cluster from it that continues the backed-up history:
//! the same records, a lineage index that answers, new ALLOWs, and an
//! export that verifies across the change of voter sets.

use std::time::Duration;

use quorate_e2e::{Cluster, ClusterOpts, POLICY, cli, request};
use quorate_proto::v1;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t61_backup_then_seed_a_new_cluster_from_it() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts::default()).await?;
    c.publish("pay", POLICY).await?;
    let mut child = request("pay", "approve", "alice", "read");
    child.parent = Some("payment".into());
    c.decide(0, request("pay", "payment", "alice", "read"))
        .await?; // 1
    c.decide(1, child).await?; // 2
    c.decide(2, request("pay", "no", "bob", "read")).await?; // 3 DENY
    c.decide(0, request("pay", "more", "alice", "read")).await?; // 4
    c.wait_converged(4, Duration::from_secs(10)).await?;

    let work = tempfile::tempdir()?;
    let out = work.path().join("b1");
    let out_s = out.to_string_lossy().into_owned();
    let ep = c.nodes[0].grpc.clone();
    let (code, stdout, err) = cli(&["backup", "--endpoint", &ep, "--out", &out_s]);
    assert_eq!(code, 0, "{err}");
    let m: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(m["format"], "quorate-backup/v1");
    assert_eq!(
        (m["records"].as_u64(), m["verified"].as_bool()),
        (Some(4), Some(true)),
        "{m}"
    );
    assert!(out.join("db").is_dir() && out.join("backup.json").is_file());
    let manifest = std::fs::read(out.join("backup.json"))?;

    // Bad input is refused and writes nothing.
    let (code, _, err) = cli(&["backup", "--endpoint", &ep, "--out", &out_s]);
    assert_eq!(code, 2);
    assert!(err.contains("exists"), "{err}");
    assert_eq!(
        std::fs::read(out.join("backup.json"))?,
        manifest,
        "the backup is untouched"
    );
    let (code, _, err) = cli(&["backup", "--endpoint", &ep, "--out", "relative/b"]);
    assert_eq!(code, 2);
    assert!(err.contains("absolute"), "{err}");
    assert!(!std::path::Path::new("relative").exists());
    let nowhere = work.path().join("missing/b");
    let (code, _, err) = cli(&[
        "backup",
        "--endpoint",
        &ep,
        "--out",
        &nowhere.to_string_lossy(),
    ]);
    assert_eq!(code, 2, "{err}");
    assert!(!work.path().join("missing").exists());

    // Two more decisions after the backup, then the whole cluster is lost.
    c.decide(1, request("pay", "late-1", "alice", "read"))
        .await?; // 5
    c.decide(2, request("pay", "late-2", "alice", "read"))
        .await?; // 6
    for i in 0..3 {
        c.kill9(i);
    }

    // Restore node 1 into a new data directory with its own key.
    let seed = work.path().join("seed");
    std::fs::create_dir_all(&seed)?;
    let config = c.nodes[0].config.clone();
    let config_s = config.to_string_lossy().into_owned();
    let seed_s = seed.to_string_lossy().into_owned();
    let restore = |from: &str| {
        cli(&[
            "restore",
            "--from",
            from,
            "--config",
            &config_s,
            "--data-dir",
            &seed_s,
        ])
    };
    // Without the node's key: refused, and the data directory stays empty.
    let (code, _, err) = restore(&out_s);
    assert_eq!(code, 2);
    assert!(err.contains("identity key"), "{err}");
    assert!(!seed.join("db").exists(), "nothing left behind");
    std::fs::copy(c.nodes[0].data_dir.join("node.key"), seed.join("node.key"))?;
    // A backup whose manifest does not describe its contents: refused.
    let edited = work.path().join("b-edited");
    std::fs::create_dir_all(edited.join("db"))?;
    for e in std::fs::read_dir(out.join("db"))? {
        let e = e?;
        if e.file_type()?.is_file() {
            std::fs::copy(e.path(), edited.join("db").join(e.file_name()))?;
        }
    }
    let text = String::from_utf8(manifest.clone())?.replace("\"records\": 4", "\"records\": 6");
    std::fs::write(edited.join("backup.json"), text)?;
    let (code, _, err) = restore(&edited.to_string_lossy());
    assert_eq!(code, 2);
    assert!(err.contains("manifest says"), "{err}");
    assert!(!seed.join("db").exists(), "nothing left behind");

    let (code, stdout, err) = restore(&out_s);
    assert_eq!(code, 0, "{err}");
    let r: serde_json::Value = serde_json::from_str(&stdout)?;
    assert_eq!(r["records"], 4, "{r}");
    // A second restore into the same directory is refused.
    let (code, _, err) = restore(&out_s);
    assert_eq!(code, 2);
    assert!(err.contains("already holds"), "{err}");

    // Node 1 starts on the restored data as the only voter and leads.
    c.nodes[0].data_dir = seed.clone();
    c.start_node(0)?;
    let s = {
        let start = std::time::Instant::now();
        loop {
            if let Ok(s) = c.status(0).await
                && s.role == "leader"
                && s.quorate
            {
                break s;
            }
            anyhow::ensure!(
                start.elapsed() < Duration::from_secs(30),
                "the restored node did not lead"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    assert_eq!(
        s.decision_count, 4,
        "the backed-up history, not what came after"
    );
    assert_eq!(s.members.len(), 1);
    let r = c
        .decide(0, request("pay", "after-restore", "alice", "read"))
        .await?;
    assert_eq!(r.record.as_ref().map(|r| r.index), Some(5), "{r:?}");
    assert!(quorate_e2e::is_allow(&r), "{r:?}");
    let mut client = c.client(0).await?;
    let l = client
        .get_lineage(v1::GetLineageRequest {
            of: Some(v1::get_lineage_request::Of::Index(2)),
            limit: 0,
            after: 0,
        })
        .await?
        .into_inner();
    let edges: Vec<(u64, u64)> = l.edges.iter().map(|e| (e.parent, e.child)).collect();
    assert_eq!(
        edges,
        vec![(1, 2)],
        "the lineage index came with the backup"
    );

    // The whole log, both voter sets, verifies offline.
    let trust = work.path().join("trust.json");
    let export = work.path().join("log.jsonl");
    let (code, t, err) = cli(&["keys", "export", "--endpoint", &ep]);
    assert_eq!(code, 0, "{err}");
    std::fs::write(&trust, t)?;
    // Wait for a final checkpoint over the new record.
    let start = std::time::Instant::now();
    while c.status(0).await?.last_final_checkpoint < 5 {
        anyhow::ensure!(start.elapsed() < Duration::from_secs(20), "no checkpoint");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, _, err) = cli(&[
        "log",
        "export",
        "--endpoint",
        &ep,
        "--out",
        &export.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{err}");
    let (code, v, err) = cli(&[
        "verify",
        "--trust",
        &trust.to_string_lossy(),
        "--log",
        &export.to_string_lossy(),
    ]);
    assert_eq!(code, 0, "{v}{err}");
    assert!(v.contains("\"valid\": true"), "{v}");
    Ok(())
}
