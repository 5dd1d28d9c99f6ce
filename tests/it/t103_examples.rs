//! The examples in examples/ run as their READMEs say, against a real TLS
//! cluster with the dev cluster's policies: the payment approval flow ends
//! executed with its approvals as children of the payment, and the agent
//! behind the MCP gate gets every answer its policy gives.

use std::process::Command;

use quorate_e2e::{Cluster, ClusterOpts, children, quorate_bin};

fn policy(name: &str) -> anyhow::Result<String> {
    Ok(std::fs::read_to_string(format!(
        "{}/../config/dev/{name}.cedar",
        env!("CARGO_MANIFEST_DIR")
    ))?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t103_the_examples_run_against_a_cluster() -> anyhow::Result<()> {
    let c = Cluster::start(ClusterOpts {
        tls: true,
        ..Default::default()
    })
    .await?;
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    c.publish("payments", &policy("payments")?).await?;
    c.publish("mcp", &policy("mcp")?).await?;
    let endpoints: Vec<String> = c.nodes.iter().map(|n| n.grpc.clone()).collect();
    let endpoints = endpoints.join(",");

    // The payment approval flow.
    let bin = quorate_bin().with_file_name("payment-approval");
    let out = Command::new(&bin)
        .args(["--endpoint", &endpoints, "--certs"])
        .arg(&certs)
        .arg("--json")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{}: {stderr}", bin.display());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["executed"], true, "{v}");
    assert_eq!(v["approvals"], 2);
    let steps = v["steps"].as_array().cloned().unwrap_or_default();
    let erin = steps
        .iter()
        .find(|s| s["principal"] == "User::\"erin\"")
        .ok_or_else(|| anyhow::anyhow!("no erin step: {v}"))?;
    assert_eq!(erin["decision"], "DENY");
    assert_eq!(erin["reason"], "POLICY");
    let root = v["root_index"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no root: {v}"))?;
    let tree = c.lineage(0, root).await?;
    assert_eq!(
        children(&tree, root),
        4,
        "three approvals and the execution under the payment: {:?}",
        tree.edges
    );
    // Over the limit: initiation refused, nothing executed.
    let out = Command::new(&bin)
        .args([
            "--endpoint",
            &endpoints,
            "--amount",
            "50000",
            "--json",
            "--certs",
        ])
        .arg(&certs)
        .output()?;
    assert_eq!(out.status.code(), Some(1));

    // The agent behind the MCP gate.
    let agent = format!(
        "{}/../examples/mcp-agent/agent.py",
        env!("CARGO_MANIFEST_DIR")
    );
    let out = Command::new("python3")
        .arg(&agent)
        .env("QUORATE_BIN", quorate_bin())
        .env("QUORATE_ENDPOINT", &endpoints)
        .env("QUORATE_CA", certs.join("ca.pem"))
        .env("QUORATE_CERT", certs.join("agent.pem"))
        .env("QUORATE_KEY", certs.join("agent.key"))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("every answer as the policy says"),
        "{stdout}"
    );
    assert_eq!(
        stdout.matches("the server never saw it").count(),
        3,
        "{stdout}"
    );
    Ok(())
}
