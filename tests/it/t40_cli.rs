//! The CLI contract scripts rely on: `quorate authorize` exits 0 on ALLOW,
//! 1 on DENY and 2 on bad input or error; output is JSON.

use std::time::Duration;

use quorate_e2e::{Cluster, ClusterOpts, POLICY};

fn quorate(args: &[&str]) -> (i32, String, String) {
    quorate_e2e::cli(args)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn t40_authorize_exit_codes_and_json_output() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts::default()).await?;
    let ep = c.nodes[1].grpc.clone();
    let policy = c.dir.path().join("p.cedar");
    std::fs::write(&policy, POLICY)?;
    let publish = |extra: &[&str]| {
        let mut args = vec![
            "policy",
            "publish",
            "--endpoint",
            &ep,
            "--domain",
            "docs",
            "--file",
            policy.to_str().unwrap_or_default(),
        ];
        args.extend_from_slice(extra);
        quorate(&args)
    };
    let (code, out, err) = publish(&["--activate"]);
    assert_eq!(code, 0, "{out}{err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["version"], 1);

    // Warm the path through node 2 (a committed decision), so the exit-code
    // checks below are not racing the cluster's first seconds.
    c.decide(1, quorate_e2e::request("docs", "warm", "alice", "read"))
        .await?;
    let authz = |who: &str, rid: &str| {
        quorate(&[
            "authorize",
            "--endpoint",
            &ep,
            "--domain",
            "docs",
            "--principal",
            &format!("User::\"{who}\""),
            "--action",
            "Action::\"read\"",
            "--resource",
            "Doc::\"1\"",
            "--request-id",
            rid,
        ])
    };
    let (code, out, _) = authz("alice", "cli-1");
    assert_eq!(code, 0, "ALLOW exits 0: {out}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["decision"], "ALLOW");
    assert_eq!(v["record"]["index"], 2);
    let (code, out, _) = authz("bob", "cli-2");
    assert_eq!(code, 1, "DENY exits 1: {out}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(
        (v["decision"].as_str(), v["reason"].as_str()),
        (Some("DENY"), Some("POLICY"))
    );

    // Bad input exits 2 and says what is wrong.
    let (code, _, err) = quorate(&[
        "authorize",
        "--endpoint",
        &ep,
        "--domain",
        "docs",
        "--principal",
        "alice",
        "--action",
        "Action::\"read\"",
        "--resource",
        "Doc::\"1\"",
    ]);
    assert_eq!(code, 2);
    assert!(
        err.contains("INVALID_ARGUMENT") && err.contains("principal"),
        "{err}"
    );
    // An unreachable endpoint is an error, never a decision.
    let (code, _, err) = quorate(&[
        "authorize",
        "--endpoint",
        "127.0.0.1:1",
        "--domain",
        "docs",
        "--principal",
        "User::\"alice\"",
        "--action",
        "Action::\"read\"",
        "--resource",
        "Doc::\"1\"",
    ]);
    assert_eq!(code, 2, "{err}");
    // An invalid policy file exits 2 with Cedar's message.
    std::fs::write(&policy, "permit(")?;
    let (code, _, err) = publish(&[]);
    assert_eq!(code, 2);
    assert!(err.contains("INVALID_POLICY"), "{err}");

    // Status and the log are JSON; the export is one record per line.
    let (code, out, _) = quorate(&["status", "--endpoint", &ep]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(v["quorate"], true);
    c.wait_converged(3, Duration::from_secs(10)).await?;
    let (code, out, _) = quorate(&["log", "export", "--endpoint", &ep]);
    assert_eq!(code, 0);
    // The export is typed JSON lines: a header, then policy events, records
    // and checkpoints. Its records are exactly the node's decision log.
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines[0]["type"], "header");
    assert_eq!(lines[0]["format"], "quorate-export/v1");
    let mut records: Vec<serde_json::Value> = lines
        .into_iter()
        .filter(|l| l["type"] == "record")
        .collect();
    for r in &mut records {
        r.as_object_mut().map(|o| o.remove("type"));
    }
    let listed: Vec<serde_json::Value> = c
        .export(1)
        .await?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(records, listed);
    Ok(())
}
