//! `quorate dev`: the local 3-node cluster. The node configs and the demo
//! policy are compiled into the binary, so the command works from any
//! directory; they are written into the data directory on each start.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use quorate_proto::v1;
use tokio::process::{Child, Command};

use crate::client::{connect, status_error, status_json};

const NODE_CONFIGS: [&str; 3] = [
    include_str!("../../../config/dev/node1.toml"),
    include_str!("../../../config/dev/node2.toml"),
    include_str!("../../../config/dev/node3.toml"),
];
const ENDPOINTS: [&str; 3] = ["127.0.0.1:7101", "127.0.0.1:7102", "127.0.0.1:7103"];
pub(crate) const DEMO_POLICY: &str = include_str!("../../../config/dev/demo.cedar");
/// The admission policy of domain "k8s" (`[admission] domain` in the dev
/// configs; docs/INTEGRATIONS.md).
pub(crate) const K8S_POLICY: &str = include_str!("../../../config/dev/k8s.cedar");
/// The mesh policy of domain "mesh" (`[envoy]` in the dev configs).
pub(crate) const MESH_POLICY: &str = include_str!("../../../config/dev/mesh.cedar");
/// The payment-approval policy of domain "payments".
pub(crate) const PAYMENTS_POLICY: &str = include_str!("../../../config/dev/payments.cedar");
/// The agent policy of domain "mcp" (`quorate mcp-gate --domain mcp`).
pub(crate) const MCP_POLICY: &str = include_str!("../../../config/dev/mcp.cedar");
/// The `cluster_id` of config/dev/node*.toml.
const DEV_CLUSTER_ID: &str = "quorate-dev";
/// Where `quorate dev` keeps its data (and certificates) by default; the
/// CLI looks for dev certificates there.
pub(crate) const DEFAULT_DATA_DIR: &str = ".quorate/dev";

pub(crate) fn spawn_node(exe: &Path, data_dir: &Path, n: usize) -> anyhow::Result<Child> {
    let cfg_path = data_dir.join(format!("node{n}.toml"));
    std::fs::write(&cfg_path, NODE_CONFIGS[n - 1])
        .with_context(|| format!("cannot write {}", cfg_path.display()))?;
    let node_dir = data_dir.join(format!("node{n}"));
    std::fs::create_dir_all(&node_dir)?;
    let log_path = node_dir.join("node.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_path)
        .with_context(|| format!("cannot open {}", log_path.display()))?;
    let child = Command::new(exe)
        .arg("node")
        .arg("--config")
        .arg(&cfg_path)
        .arg("--data-dir")
        .arg(&node_dir)
        .stdout(log.try_clone()?)
        .stderr(log)
        .stdin(std::process::Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    Ok(child)
}

fn port_free(addr: &str) -> bool {
    std::net::TcpListener::bind(addr).is_ok()
}

/// Waits until some node reports itself leader and quorate.
async fn wait_quorate(timeout: Duration) -> anyhow::Result<v1::StatusResponse> {
    let start = Instant::now();
    loop {
        for ep in ENDPOINTS {
            if let Ok(mut c) = connect(ep).await
                && let Ok(s) = c.status(v1::StatusRequest {}).await
            {
                let s = s.into_inner();
                if s.role == "leader" && s.quorate {
                    return Ok(s);
                }
            }
        }
        if start.elapsed() > timeout {
            bail!(
                "the cluster did not become quorate within {} s; see the node logs",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn ensure_demo_policy(leader_addr: &str) -> anyhow::Result<&'static str> {
    let mut c = connect(leader_addr).await?;
    let k8s = ensure_policy(&mut c, "k8s", K8S_POLICY).await?;
    let mesh = ensure_policy(&mut c, "mesh", MESH_POLICY).await?;
    let mcp = ensure_policy(&mut c, "mcp", MCP_POLICY).await?;
    let payments = ensure_policy(&mut c, "payments", PAYMENTS_POLICY).await?;
    Ok(
        if ensure_policy(&mut c, "demo", DEMO_POLICY).await? | k8s | mesh | mcp | payments {
            "published and activated the demo policies (domain `demo`; `k8s`, `mesh`, `mcp` and `payments` for admission, Envoy, agents and examples/)"
        } else {
            "demo policy already active (resumed)"
        },
    )
}

/// Publishes and activates `text` in `domain` through `c` (the leader)
/// unless the domain has an active version. Returns whether it published.
pub(crate) async fn ensure_policy(
    c: &mut quorate_proto::v1::governance_client::GovernanceClient<tonic::transport::Channel>,
    domain: &str,
    text: &str,
) -> anyhow::Result<bool> {
    match c
        .get_policy(v1::GetPolicyRequest {
            domain: domain.into(),
            version: 0,
        })
        .await
    {
        Ok(_) => return Ok(false),
        Err(s) if s.code() == tonic::Code::NotFound => {}
        Err(s) => return Err(status_error(&s)),
    }
    c.publish_policy(v1::PublishPolicyRequest {
        domain: domain.into(),
        policy_text: text.into(),
        schema: None,
        activate: true,
        publisher_key: None,
        signature: None,
    })
    .await
    .map_err(|s| status_error(&s))?;
    Ok(true)
}

fn tracing_note(e: &anyhow::Error) {
    eprintln!("quorate dev: cluster still settling ({e}); retrying");
}

fn stop(children: &mut [(usize, Child)]) {
    for (_, c) in children.iter() {
        if let Some(pid) = c.id() {
            // SIGTERM lets each node shut down cleanly.
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
}

pub(crate) async fn run(data_dir: PathBuf, detach: bool) -> anyhow::Result<ExitCode> {
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create {}", data_dir.display()))?;
    let data_dir = data_dir.canonicalize()?;
    for ep in ENDPOINTS {
        if !port_free(ep) {
            bail!(
                "port {ep} is in use: is a dev cluster already running? Stop it (Ctrl-C, or \
                 `pkill -f 'quorate node'`) or use it as it is (`quorate status`)"
            );
        }
    }
    // Mutual TLS from the first start: a CA, node and client certificates
    // in the data dir (kept across restarts; delete the dir to start over).
    let certs = data_dir.join("certs");
    if !certs.join("ca.pem").exists() {
        crate::certs::init(&certs, DEV_CLUSTER_ID, 3, &[], &[], true)?;
        eprintln!("quorate dev: made TLS certificates in {}", certs.display());
    }
    crate::client::use_certs(&certs, "admin")?;
    let exe = std::env::current_exe().context("cannot find the quorate binary")?;
    let mut children = Vec::new();
    for n in 1..=3 {
        children.push((n, spawn_node(&exe, &data_dir, n)?));
    }
    eprintln!("quorate dev: starting 3 nodes in {}", data_dir.display());
    // The first seconds of a fresh cluster can see a leadership change or
    // two (all three nodes start campaigning at once); retry the set-up
    // until it lands or the deadline passes.
    let started = Instant::now();
    let (leader, what) = loop {
        let attempt = async {
            let leader = wait_quorate(Duration::from_secs(60)).await?;
            let addr = leader
                .members
                .iter()
                .find(|m| m.node_id == leader.node_id)
                .map(|m| m.addr.clone())
                .ok_or_else(|| anyhow!("leader is not in its own membership"))?;
            let what = ensure_demo_policy(&addr).await?;
            anyhow::Ok((leader, what))
        };
        match attempt.await {
            Ok(v) => break v,
            Err(e) if started.elapsed() < Duration::from_secs(60) => {
                tracing_note(&e);
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Err(e) => {
                stop(&mut children);
                return Err(e);
            }
        }
    };
    crate::client::print_json(&status_json(&leader))?;
    let pids: Vec<String> = children
        .iter()
        .map(|(n, c)| format!("node{n}={}", c.id().unwrap_or(0)))
        .collect();
    // The console, signed in as admin for as long as the dev nodes accept
    // (console.token_max_ttl_s in config/dev).
    let console =
        match crate::console::token(&certs.join("admin.pem"), &certs.join("admin.key"), 8 * 3600) {
            Ok(t) => crate::console::login_url(crate::console::DEFAULT_CONSOLE_URL, &t),
            Err(e) => format!(
                "{} (no sign-in link: {e:#})",
                crate::console::DEFAULT_CONSOLE_URL
            ),
        };
    eprintln!(
        "\nquorate dev: the governance console (every node serves it; this link signs you in \
         as admin for 8 h):\n  {console}\n  The dev CA is made here, so the browser warns once: \
         accept, or import {}/ca.pem. `quorate console login --role auditor` signs in as an \
         auditor.",
        certs.display()
    );
    eprintln!(
        "\nquorate dev: cluster quorate; node {} leads (term {}). {what}.\n\
         nodes: {} (logs in {}/nodeN/node.log)\n\n\
         TLS is on: the CLI finds the dev certificates in {} when run from here.\n\n\
         Try:\n  \
         quorate authorize --domain demo --principal 'User::\"alice\"' --action 'Action::\"read\"' --resource 'Doc::\"1\"'    # ALLOW, exit 0\n  \
         quorate authorize --domain demo --principal 'User::\"bob\"' --action 'Action::\"read\"' --resource 'Doc::\"1\"'      # DENY, exit 1\n  \
         quorate log list                                 # the committed decision log\n  \
         quorate status --endpoint 127.0.0.1:7102        # any node answers; followers forward\n  \
         kill -9 <pid of a node>                          # decisions continue on the other two\n",
        leader.node_id,
        leader.term,
        pids.join(" "),
        data_dir.display(),
        certs.display()
    );
    if detach {
        let pid_file = data_dir.join("pids");
        std::fs::write(&pid_file, pids.join("\n") + "\n")?;
        eprintln!(
            "detached; stop with: kill $(cut -d= -f2 {})",
            pid_file.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("Ctrl-C stops all three nodes.");
    let mut exited = vec![false; children.len()];
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {
                for (i, (n, c)) in children.iter_mut().enumerate() {
                    if !exited[i] && let Ok(Some(status)) = c.try_wait() {
                        exited[i] = true;
                        eprintln!("quorate dev: node{n} exited ({status}); the others carry on. Rerun `quorate dev` to bring it back.");
                    }
                }
            }
        }
    }
    eprintln!("\nquorate dev: stopping the nodes");
    stop(&mut children);
    for (_, c) in children.iter_mut() {
        let _ = tokio::time::timeout(Duration::from_secs(10), c.wait()).await;
        let _ = c.start_kill();
    }
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every policy `quorate dev` and `quorate demo` publish compiles.
    #[test]
    fn the_dev_and_demo_policies_compile() {
        let limits = quorate_core::validate::Limits::default();
        for (name, text) in [
            ("demo", DEMO_POLICY),
            ("k8s", K8S_POLICY),
            ("mesh", MESH_POLICY),
            ("mcp", MCP_POLICY),
            ("agents", crate::demo::AGENTS_POLICY),
            ("agents v2", crate::demo::AGENTS_POLICY_V2),
            ("payments", PAYMENTS_POLICY),
        ] {
            if let Err(e) = quorate_policy::CompiledPolicy::compile(text, None, &limits) {
                panic!("the {name} policy does not compile: {e}");
            }
        }
    }
}
