//! Real `quorate node` processes, one per namespace, each on its own
//! RocksDB directory; and the gRPC clients the workload uses.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow};
use quorate_proto::v1;
use quorate_proto::v1::governance_client::GovernanceClient;
use tonic::transport::Channel;

use crate::net::{self, Net};

/// The `quorate` binary next to this one (same target directory).
pub fn quorate_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for d in [dir.clone(), dir.join("..")] {
        let p = d.join("quorate");
        if p.exists() {
            return p;
        }
    }
    PathBuf::from("quorate")
}

#[derive(Debug)]
pub struct NodeProc {
    pub id: usize,
    pub addr: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    child: Option<Child>,
    pub paused: bool,
}

/// The cluster under test. Dropping it kills every node.
#[derive(Debug)]
pub struct Cluster {
    pub nodes: Vec<NodeProc>,
    pub net: Net,
    bin: PathBuf,
    /// The message shims (one per node), when the run uses them.
    shims: Vec<Child>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 1..=self.nodes.len() {
            self.resume(i);
            self.kill9(i);
        }
        for s in &mut self.shims {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

impl Cluster {
    /// Writes every node's config under `dir` and starts all nodes; with
    /// `shim`, first puts a message shim in front of every node for its
    /// peers' traffic (see `shim`).
    ///
    /// With `tls`, the nodes serve mutual TLS as users deploy them: a
    /// cluster CA and certificates are made with `quorate certs init`, and
    /// the harness's clients present the agent (authorize) or admin
    /// (everything else) certificate (see `connect`). The message shim
    /// speaks plaintext HTTP/2, so shim runs stay plaintext.
    pub fn start(
        net: Net,
        dir: &Path,
        shim: bool,
        seed: u64,
        tls: bool,
    ) -> anyhow::Result<Cluster> {
        let n = net.nodes;
        // Node configs resolve relative paths against their own directory.
        let certs = std::path::absolute(dir.join("certs"))?;
        let transport = |i: usize| -> String {
            if tls {
                format!(
                    "[tls]\nca_file = \"{}\"\ncert_file = \"{}\"\nkey_file = \"{}\"\n",
                    certs.join("ca.pem").display(),
                    certs.join(format!("node-{i}.pem")).display(),
                    certs.join(format!("node-{i}.key")).display()
                )
            } else {
                String::new()
            }
        };
        if tls {
            let mut cmd = Command::new(quorate_bin());
            cmd.args(["certs", "init", "--cluster", "jepsen", "--nodes"])
                .arg(n.to_string())
                .arg("--out")
                .arg(&certs);
            for i in 1..=n {
                cmd.arg("--ip").arg(net::node_addr(i));
            }
            let out = cmd.output().context("cannot run `quorate certs init`")?;
            if !out.status.success() {
                return Err(anyhow!(
                    "quorate certs init failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            set_client_certs(&certs)?;
        }
        let members: String = (1..=n)
            .map(|i| {
                format!(
                    "[[members]]\nid = {i}\naddr = \"{}:7101\"\n\n",
                    net::node_addr(i)
                )
            })
            .collect();
        let mut nodes = Vec::new();
        for i in 1..=n {
            let data_dir = dir.join(format!("n{i}"));
            std::fs::create_dir_all(&data_dir)?;
            let config = dir.join(format!("n{i}.toml"));
            let a = net::node_addr(i);
            std::fs::write(
                &config,
                format!(
                    "cluster_id = \"jepsen\"\nnode_id = {i}\nregion = \"r{i}\"\n\
                     insecure = {insecure}\n\
                     grpc_addr = \"{a}:7101\"\nhttp_addr = \"{a}:7201\"\n\
                     commit_timeout_ms = 1000\n\n{members}\
                     [raft]\nheartbeat_interval_ms = 100\nelection_timeout_min_ms = 500\n\
                     election_timeout_max_ms = 1000\nsnapshot_after_entries = 2000\n\
                     keep_entries_after_snapshot = 200\n\n{tls_table}",
                    insecure = !tls,
                    tls_table = transport(i),
                ),
            )?;
            nodes.push(NodeProc {
                id: i,
                addr: format!("{a}:7101"),
                config,
                data_dir,
                child: None,
                paused: false,
            });
        }
        let mut c = Cluster {
            nodes,
            net,
            bin: quorate_bin(),
            shims: Vec::new(),
        };
        if shim {
            for i in 1..=n {
                c.spawn_shim(i, seed)?;
            }
        }
        for i in 1..=n {
            c.spawn(i)?;
        }
        Ok(c)
    }

    fn node(&mut self, i: usize) -> &mut NodeProc {
        &mut self.nodes[i - 1]
    }

    /// Whether peers reach the nodes through message shims.
    pub fn has_shims(&self) -> bool {
        !self.shims.is_empty()
    }

    fn spawn_shim(&mut self, i: usize, seed: u64) -> anyhow::Result<()> {
        let exe = std::env::current_exe().context("cannot find the quorate-jepsen binary")?;
        let dir = self.nodes[i - 1].data_dir.clone();
        crate::shim::write_rules(&dir, crate::shim::Rules::default())?;
        let a = net::node_addr(i);
        let log = std::fs::File::create(dir.join("shim.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &net::ns(i)])
            .arg(exe)
            .arg("shim")
            .arg("--listen")
            .arg(format!("0.0.0.0:{}", crate::shim::SHIM_PORT))
            .arg("--upstream")
            .arg(format!("{a}:7101"))
            .arg("--dir")
            .arg(&dir)
            .arg("--seed")
            .arg((seed.wrapping_mul(31)).wrapping_add(i as u64).to_string())
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start the shim in namespace {}", net::ns(i)))?;
        self.shims.push(child);
        self.net.redirect_peers(i, 7101, crate::shim::SHIM_PORT)
    }

    /// Sets every shim's rules.
    pub fn shim_rules(&self, rules: crate::shim::Rules) -> anyhow::Result<()> {
        for n in &self.nodes {
            crate::shim::write_rules(&n.data_dir, rules)?;
        }
        Ok(())
    }

    /// Every shim's stats, summed.
    pub fn shim_stats(&self) -> crate::shim::Stats {
        let mut t = crate::shim::Stats::default();
        for n in &self.nodes {
            let s = crate::shim::read_stats(&n.data_dir);
            t.forwarded += s.forwarded;
            t.delayed += s.delayed;
            t.duplicated += s.duplicated;
            t.upstream_errors += s.upstream_errors;
        }
        t
    }

    pub fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let bin = self.bin.clone();
        let n = self.node(i);
        if n.child.is_some() {
            return Ok(());
        }
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.data_dir.join("node.log"))?;
        let child = Command::new("ip")
            .args(["netns", "exec", &net::ns(i)])
            .arg(&bin)
            .arg("node")
            .arg("--config")
            .arg(&n.config)
            .arg("--data-dir")
            .arg(&n.data_dir)
            .env("QUORATE_LOG", "info,openraft=warn")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| {
                format!("cannot start {} in namespace {}", bin.display(), net::ns(i))
            })?;
        n.child = Some(child);
        n.paused = false;
        Ok(())
    }

    /// Runs `quorate node repair` for stopped node `i` inside its namespace
    /// (it fetches a snapshot from a peer); returns the command's JSON.
    pub fn repair(&mut self, i: usize) -> anyhow::Result<serde_json::Value> {
        let bin = self.bin.clone();
        let n = self.node(i);
        let out = Command::new("ip")
            .args(["netns", "exec", &net::ns(i)])
            .arg(&bin)
            .args(["node", "repair", "--config"])
            .arg(&n.config)
            .arg("--data-dir")
            .arg(&n.data_dir)
            .output()?;
        if !out.status.success() {
            anyhow::bail!(
                "quorate node repair failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(serde_json::from_slice(&out.stdout)?)
    }

    pub fn is_running(&mut self, i: usize) -> bool {
        let n = self.node(i);
        match n.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(None)) => true,
            Some(_) => {
                n.child = None;
                false
            }
            None => false,
        }
    }

    pub fn kill9(&mut self, i: usize) {
        let n = self.node(i);
        if let Some(mut c) = n.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        n.paused = false;
    }

    fn signal(&mut self, i: usize, sig: &str) -> bool {
        let n = self.node(i);
        match &n.child {
            Some(c) => net::sh(&["kill", sig, &c.id().to_string()]).is_ok(),
            None => false,
        }
    }

    pub fn pause(&mut self, i: usize) -> bool {
        let ok = self.signal(i, "-STOP");
        self.node(i).paused = ok;
        ok
    }

    pub fn resume(&mut self, i: usize) {
        if self.node(i).paused {
            self.signal(i, "-CONT");
            self.node(i).paused = false;
        }
    }
}

/// The harness's client certificates, when the cluster runs mutual TLS:
/// (agent, admin).
type ClientCerts = (
    Arc<quorate_raft::tls::TlsContext>,
    Arc<quorate_raft::tls::TlsContext>,
);
static CLIENT_TLS: std::sync::OnceLock<ClientCerts> = std::sync::OnceLock::new();

fn set_client_certs(dir: &Path) -> anyhow::Result<()> {
    let load = |role: &str| {
        quorate_raft::tls::TlsContext::load(quorate_raft::tls::TlsFiles {
            ca: dir.join("ca.pem"),
            cert: dir.join(format!("{role}.pem")),
            key: dir.join(format!("{role}.key")),
        })
        .with_context(|| format!("the {role} certificate in {}", dir.display()))
    };
    let _ = CLIENT_TLS.set((load("agent")?, load("admin")?));
    Ok(())
}

/// A client for everything but Authorize: the admin certificate with TLS.
pub async fn connect(addr: &str) -> anyhow::Result<GovernanceClient<Channel>> {
    connect_with(addr, CLIENT_TLS.get().map(|c| c.1.clone()))
}

/// A client for Authorize: the agent certificate with TLS.
pub async fn connect_agent(addr: &str) -> anyhow::Result<GovernanceClient<Channel>> {
    connect_with(addr, CLIENT_TLS.get().map(|c| c.0.clone()))
}

fn connect_with(
    addr: &str,
    tls: Option<Arc<quorate_raft::tls::TlsContext>>,
) -> anyhow::Result<GovernanceClient<Channel>> {
    let ep = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| anyhow!("{e}"))?
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(3));
    let channel = quorate_raft::network::connect_lazy(ep, addr, tls, None);
    Ok(GovernanceClient::new(channel).max_decoding_message_size(256 * 1024 * 1024))
}

/// The current leader's node number, as any reachable node reports it.
pub async fn find_leader(addrs: &[String]) -> Option<usize> {
    for a in addrs {
        let Ok(mut c) = connect(a).await else {
            continue;
        };
        if let Ok(s) = c.status(v1::StatusRequest {}).await
            && let Some(l) = s.into_inner().leader_id
        {
            return usize::try_from(l).ok();
        }
    }
    None
}

/// Removes node `id` from the membership through the leader at `leader`.
pub async fn remove_member(leader: &str, id: usize) -> anyhow::Result<u64> {
    let mut c = connect(leader).await?;
    let r = c
        .remove_node(v1::MembershipChangeRequest {
            node_id: id as u64,
            max_lag: 0,
        })
        .await
        .map_err(|s| anyhow!("{}", s.message()))?;
    Ok(r.into_inner().log_index)
}

/// Adds removed node `id` back as a learner and promotes it once it has
/// caught up, through whichever node leads; retries for up to 60 s.
pub async fn rejoin_member(addrs: &[String], id: usize) -> anyhow::Result<u64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let addr = addrs[id - 1].clone();
    let mut last = String::new();
    while std::time::Instant::now() < deadline {
        if let Some(l) = find_leader(addrs).await
            && let Ok(mut c) = connect(&addrs[l - 1]).await
            && let Ok(s) = c.status(v1::StatusRequest {}).await
        {
            let s = s.into_inner();
            let member = s.members.iter().find(|m| m.node_id == id as u64);
            let step = match member {
                None => c
                    .add_learner(v1::AddLearnerRequest {
                        node_id: id as u64,
                        addr: addr.clone(),
                    })
                    .await
                    .map(|_| None),
                Some(m) if !m.voter => c
                    .promote_voter(v1::MembershipChangeRequest {
                        node_id: id as u64,
                        max_lag: 0,
                    })
                    .await
                    .map(|r| Some(r.into_inner().log_index)),
                Some(_) => return Ok(s.last_log_index),
            };
            match step {
                Ok(Some(log_index)) => return Ok(log_index),
                Ok(None) => {}
                Err(e) => last = e.message().to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    anyhow::bail!("gave up after 60 s: {last}")
}
