//! `quorate mcp-gate` between a scripted agent (this test, on the gate's
//! stdin/stdout) and a real MCP server process
//! (examples/mcp-agent/files_server.py), against a real TLS cluster:
//! protocol messages pass unchanged, an allowed tools/call reaches the server, a denied one is a
//! JSON-RPC error with the reason and decision index and never reaches the
//! server (its call log proves it), the session's decisions form one
//! lineage, a contained cluster refuses every call, and an agent the
//! policy does not know cannot open a session at all.

use std::process::Stdio;
use std::time::Duration;

use quorate_e2e::{Cluster, ClusterOpts, cert_args, children, quorate_bin};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout};

struct Agent {
    child: Child,
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Agent {
    async fn send(&mut self, line: &str) -> anyhow::Result<()> {
        self.stdin.write_all(line.as_bytes()).await?;
        self.stdin.write_all(b"\n").await?;
        self.stdin.flush().await?;
        Ok(())
    }

    async fn ask(&mut self, msg: Value) -> anyhow::Result<Value> {
        self.send(&msg.to_string()).await?;
        self.read().await
    }

    async fn read(&mut self) -> anyhow::Result<Value> {
        let line = tokio::time::timeout(Duration::from_secs(30), self.stdout.next_line())
            .await??
            .ok_or_else(|| anyhow::anyhow!("the gate closed its output"))?;
        Ok(serde_json::from_str(&line)?)
    }
}

fn gate(c: &Cluster, agent: &str, log: &std::path::Path) -> anyhow::Result<Child> {
    let certs = c.certs.clone().ok_or_else(|| anyhow::anyhow!("no certs"))?;
    let endpoints: Vec<String> = c.nodes.iter().map(|n| n.grpc.clone()).collect();
    let server = format!(
        "{}/../examples/mcp-agent/files_server.py",
        env!("CARGO_MANIFEST_DIR")
    );
    Ok(tokio::process::Command::new(quorate_bin())
        .args(cert_args(&certs, "agent"))
        .args([
            "mcp-gate",
            "--endpoint",
            &endpoints.join(","),
            "--domain",
            "mcp",
        ])
        .args([
            "--agent",
            agent,
            "--retry-for",
            "1",
            "--",
            "python3",
            &server,
        ])
        .env("MCP_CALL_LOG", log)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

fn call(id: u64, tool: &str, args: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": "tools/call",
           "params": {"name": tool, "arguments": args}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn t102_the_mcp_gate_forwards_only_allowed_tool_calls() -> anyhow::Result<()> {
    let mut c = Cluster::start(ClusterOpts {
        tls: true,
        ..Default::default()
    })
    .await?;
    let policy = std::fs::read_to_string(format!(
        "{}/../config/dev/mcp.cedar",
        env!("CARGO_MANIFEST_DIR")
    ))?;
    c.publish("mcp", &policy).await?;
    let work = tempfile::tempdir()?;
    let log = work.path().join("calls.jsonl");

    // An identity the policy does not know opens no session: the server
    // never starts.
    let refused = gate(&c, r#"User::"intruder""#, &log)?
        .wait_with_output()
        .await?;
    assert_ne!(refused.status.code(), Some(0));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("refused this session"), "{err}");
    assert!(!log.exists(), "the server saw something");

    let mut child = gate(&c, r#"Agent::"a1""#, &log)?;
    let mut a = Agent {
        stdin: child.stdin.take().ok_or_else(|| anyhow::anyhow!("stdin"))?,
        stdout: BufReader::new(
            child
                .stdout
                .take()
                .ok_or_else(|| anyhow::anyhow!("stdout"))?,
        )
        .lines(),
        child,
    };
    // The protocol passes unchanged.
    let init = a
        .ask(json!({"jsonrpc": "2.0", "id": 1, "method": "initialize",
                    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                               "clientInfo": {"name": "t102", "version": "1"}}}))
        .await?;
    assert_eq!(
        init["result"]["serverInfo"]["name"], "fixture-files",
        "{init}"
    );
    a.send(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#)
        .await?;
    let tools = a
        .ask(json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}))
        .await?;
    assert_eq!(tools["result"]["tools"].as_array().map(Vec::len), Some(3));

    // Allowed: the server answers.
    let r = a
        .ask(call(3, "read_file", json!({"path": "/notes/todo.txt"})))
        .await?;
    assert_eq!(r["result"]["content"][0]["text"], "buy milk", "{r}");
    // Denied: a JSON-RPC error with the reason and the decision; the
    // server never sees it.
    let r = a
        .ask(call(4, "delete_file", json!({"path": "/notes/todo.txt"})))
        .await?;
    assert_eq!(r["id"], 4);
    assert_eq!(r["error"]["code"], -32001, "{r}");
    assert_eq!(r["error"]["data"]["reason"], "POLICY");
    let denied_index = r["error"]["data"]["decision_index"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no decision index: {r}"))?;
    let r = a
        .ask(call(
            5,
            "read_file",
            json!({"path": "/etc/passwd", "ratio": 0.5, "x": null}),
        ))
        .await?;
    assert_eq!(r["error"]["data"]["reason"], "POLICY", "{r}");
    // Unreadable input is answered, never forwarded.
    a.send("{not json").await?;
    let r = a.read().await?;
    assert_eq!(r["error"]["code"], -32700, "{r}");
    let seen = std::fs::read_to_string(&log)?;
    assert_eq!(seen.lines().count(), 1, "{seen}");
    assert!(seen.contains("/notes/todo.txt") && !seen.contains("delete_file"));

    // The session and its calls are one lineage.
    let lin = c.lineage(0, denied_index).await?;
    let root = lin.root.ok_or_else(|| anyhow::anyhow!("no root"))?;
    let session = lin
        .records
        .iter()
        .find(|r| r.index == root)
        .ok_or_else(|| anyhow::anyhow!("root not among the records"))?;
    assert_eq!(session.action, "Action::\"session\"");
    assert_eq!(session.principal, "Agent::\"a1\"");
    let tree = c.lineage(0, root).await?;
    assert_eq!(
        children(&tree, root),
        3,
        "three calls under the session: {:?}",
        tree.edges
    );

    // A contained cluster: every call refused, none reaches the server.
    c.kill9(0);
    c.kill9(2);
    let r = a
        .ask(call(6, "read_file", json!({"path": "/notes/todo.txt"})))
        .await?;
    assert_eq!(
        r["error"]["code"], -32001,
        "a contained cluster let a call through: {r}"
    );
    assert_eq!(std::fs::read_to_string(&log)?.lines().count(), 1);

    // The agent is done: the gate closes the server and exits with it.
    drop(a.stdin);
    let status = tokio::time::timeout(Duration::from_secs(10), a.child.wait()).await??;
    assert_eq!(status.code(), Some(0));
    Ok(())
}
