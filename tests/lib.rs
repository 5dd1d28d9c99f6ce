//! quorate-e2e: a harness that starts real `quorate node` processes on
//! loopback with their own RocksDB directories, and the helpers the
//! end-to-end tests use to talk to them, kill them and restart them.
//!
//! It must not reach into a node's internals: everything goes through the
//! binary, the gRPC API or the files a stopped node leaves behind.

pub mod browser;

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use quorate_core::DecisionRecord;
use quorate_proto::record_from_wire;
use quorate_proto::v1::{self, governance_client::GovernanceClient};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

/// The `quorate` binary: `$QUORATE_BIN`, or next to the test executable's
/// `deps/` directory (where `cargo test --workspace` builds it).
/// Runs the `quorate` CLI; returns (exit code, stdout, stderr).
/// Runs the `quorate` CLI. Without `--ca` it talks plaintext
/// (`QUORATE_INSECURE`), as the test clusters do unless built with TLS.
pub fn cli(args: &[&str]) -> (i32, String, String) {
    let mut cmd = Command::new(quorate_bin());
    cmd.args(args);
    if !args.contains(&"--ca") {
        cmd.env("QUORATE_INSECURE", "1");
    }
    match cmd.output() {
        Ok(out) => (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ),
        Err(e) => (-1, String::new(), format!("cannot run quorate: {e}")),
    }
}

pub fn quorate_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("QUORATE_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().unwrap_or_default();
    let dir = exe
        .parent()
        .and_then(Path::parent)
        .map(Path::to_path_buf)
        .unwrap_or_default();
    dir.join("quorate")
}

pub fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// One node process of a test cluster.
pub struct NodeProc {
    pub id: u64,
    pub grpc: String,
    pub http: String,
    pub config: PathBuf,
    pub data_dir: PathBuf,
    child: Option<Child>,
}

impl NodeProc {
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The running process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The process's peak resident memory (VmHWM), in KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()?)).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
    }
}

/// A cluster of real node processes in a temp dir.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<NodeProc>,
    /// The certificates directory of a TLS cluster.
    pub certs: Option<PathBuf>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for n in &mut self.nodes {
            if let Some(mut c) = n.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// Options for a test cluster.
#[derive(Debug, Clone)]
pub struct ClusterOpts {
    pub nodes: u64,
    pub commit_timeout_ms: u64,
    pub snapshot_after_entries: u64,
    /// TOML appended to every node's config (e.g. a `[security]` table).
    pub extra_config: String,
    /// Extra nodes configured to join later (`bootstrap = false`, not in
    /// the initial membership) and not started: `start_node` them, then add
    /// them with `quorate cluster add-learner`.
    pub spares: u64,
    /// Region label of node i+1; default "r{id}".
    pub regions: Vec<String>,
    /// Mutual TLS (certificates from `quorate certs init` in the cluster's
    /// dir); plaintext (`insecure = true`) otherwise.
    pub tls: bool,
    /// Extra DNS names on the node certificates (`certs init --dns`).
    pub dns: Vec<String>,
}

impl Default for ClusterOpts {
    fn default() -> ClusterOpts {
        ClusterOpts {
            nodes: 3,
            // Generous: debug builds of three nodes share two cores with the
            // test itself. Tests of the timeout path set their own.
            commit_timeout_ms: 3000,
            snapshot_after_entries: 20_000,
            extra_config: String::new(),
            spares: 0,
            regions: Vec::new(),
            tls: false,
            dns: Vec::new(),
        }
    }
}

impl Cluster {
    /// Starts `opts.nodes` nodes and waits until the cluster is quorate.
    pub async fn start(opts: ClusterOpts) -> anyhow::Result<Cluster> {
        let dir = tempfile::tempdir()?;
        let mut ports = Vec::new();
        for _ in 0..opts.nodes + opts.spares {
            ports.push((free_port()?, free_port()?));
        }
        let member = |i: usize, g: &u16| {
            format!("[[members]]\nid = {}\naddr = \"127.0.0.1:{g}\"\n\n", i + 1)
        };
        let members: String = ports
            .iter()
            .take(opts.nodes as usize)
            .enumerate()
            .map(|(i, (g, _))| member(i, g))
            .collect();
        let certs = if opts.tls {
            let out = dir.path().join("certs");
            let total = (opts.nodes + opts.spares).to_string();
            let out_s = out.to_string_lossy().into_owned();
            let mut args = vec![
                "certs",
                "init",
                "--out",
                &out_s,
                "--nodes",
                &total,
                "--cluster",
                "test",
            ];
            for d in &opts.dns {
                args.extend(["--dns", d.as_str()]);
            }
            let (code, _, err) = cli(&args);
            anyhow::ensure!(code == 0, "certs init: {err}");
            Some(out)
        } else {
            None
        };
        let mut nodes = Vec::new();
        for (i, (g, h)) in ports.iter().enumerate() {
            let id = i as u64 + 1;
            let spare = id > opts.nodes;
            let data_dir = dir.path().join(format!("node{id}"));
            let config = dir.path().join(format!("node{id}.toml"));
            let region = opts
                .regions
                .get(i)
                .cloned()
                .unwrap_or_else(|| format!("r{id}"));
            // A spare lists only itself and does not bootstrap: it waits to
            // be added by the cluster's leader.
            // Mutual TLS with certificates from `quorate certs init`, or an
            // explicitly insecure plaintext cluster.
            let (insecure, tls) = match &certs {
                Some(c) => (
                    "",
                    format!(
                        "[tls]\nca_file = \"{0}/ca.pem\"\ncert_file = \"{0}/node-{id}.pem\"\nkey_file = \"{0}/node-{id}.key\"\n",
                        c.display()
                    ),
                ),
                None => ("insecure = true", String::new()),
            };
            let (bootstrap, members) = if spare {
                ("false", member(i, g))
            } else {
                ("true", members.clone())
            };
            let text = format!(
                "cluster_id = \"test\"\nnode_id = {id}\nregion = \"{region}\"\n\
                 bootstrap = {bootstrap}\n{insecure}\n\
                 grpc_addr = \"127.0.0.1:{g}\"\nhttp_addr = \"127.0.0.1:{h}\"\n\
                 commit_timeout_ms = {}\n\n{members}\
                 [raft]\nheartbeat_interval_ms = 100\nelection_timeout_min_ms = 500\n\
                 election_timeout_max_ms = 1000\nsnapshot_after_entries = {}\n\
                 keep_entries_after_snapshot = 100\n\n{}\n{tls}",
                opts.commit_timeout_ms, opts.snapshot_after_entries, opts.extra_config
            );
            std::fs::write(&config, text)?;
            nodes.push(NodeProc {
                id,
                grpc: format!("127.0.0.1:{g}"),
                http: format!("127.0.0.1:{h}"),
                config,
                data_dir,
                child: None,
            });
        }
        let mut cluster = Cluster { dir, nodes, certs };
        for i in 0..opts.nodes as usize {
            cluster.spawn(i)?;
        }
        cluster.wait_leader(Duration::from_secs(30)).await?;
        Ok(cluster)
    }

    fn spawn(&mut self, i: usize) -> anyhow::Result<()> {
        let n = &mut self.nodes[i];
        std::fs::create_dir_all(&n.data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(n.data_dir.join("node.log"))?;
        let child = Command::new(quorate_bin())
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
            .with_context(|| format!("cannot start {}", quorate_bin().display()))?;
        n.child = Some(child);
        Ok(())
    }

    /// SIGKILL node `i` (0-based) and reap it.
    pub fn kill9(&mut self, i: usize) {
        if let Some(mut c) = self.nodes[i].child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts node `i` again after `kill9`, on its data directory.
    pub fn start_node(&mut self, i: usize) -> anyhow::Result<()> {
        self.spawn(i)
    }

    /// Restarts node `i` on its data directory.
    pub fn restart(&mut self, i: usize) -> anyhow::Result<()> {
        self.kill9(i);
        self.spawn(i)
    }

    /// A client of node `i`: plaintext, or on a TLS cluster with the
    /// certificate of the role the call needs (`client_as`). Reads and
    /// status use the auditor, writes the admin, decisions the agent.
    pub async fn client(&self, i: usize) -> anyhow::Result<GovernanceClient<Channel>> {
        self.client_as(i, "auditor").await
    }

    /// A client of node `i` presenting `role`'s certificate (`admin`,
    /// `agent`, `auditor`) on a TLS cluster.
    pub async fn client_as(
        &self,
        i: usize,
        role: &str,
    ) -> anyhow::Result<GovernanceClient<Channel>> {
        match &self.certs {
            None => connect(&self.nodes[i].grpc).await,
            Some(dir) => connect_tls(&self.nodes[i].grpc, dir, role),
        }
    }

    /// A `quorate_client::Client` of every node's gRPC endpoint, as `role`
    /// (plaintext on an insecure cluster).
    pub fn governed(&self, role: &str) -> anyhow::Result<quorate_client::Client> {
        let b = quorate_client::Client::builder(self.nodes.iter().map(|n| n.grpc.clone()));
        let b = match &self.certs {
            Some(dir) => b.certs_dir(dir, role)?,
            None => b.insecure(),
        };
        Ok(b.build()?)
    }

    pub async fn status(&self, i: usize) -> anyhow::Result<v1::StatusResponse> {
        let mut c = self.client(i).await?;
        Ok(c.status(v1::StatusRequest {}).await?.into_inner())
    }

    /// Waits until a running node is a quorate leader; returns its index.
    pub async fn wait_leader(&self, timeout: Duration) -> anyhow::Result<usize> {
        let start = Instant::now();
        loop {
            for (i, n) in self.nodes.iter().enumerate() {
                if !n.is_running() {
                    continue;
                }
                if let Ok(s) = self.status(i).await
                    && s.role == "leader"
                    && s.quorate
                {
                    return Ok(i);
                }
            }
            if start.elapsed() > timeout {
                bail!("no quorate leader within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Each running node's decision count and chain head, when all answer.
    async fn heads(&self) -> Option<Vec<(u64, String)>> {
        let mut heads = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            if n.is_running() {
                let s = self.status(i).await.ok()?;
                heads.push((s.decision_count, s.chain_head_hash));
            }
        }
        Some(heads)
    }

    /// Waits until every running node has applied `count` decisions and
    /// agrees on the chain head.
    pub async fn wait_converged(&self, count: u64, timeout: Duration) -> anyhow::Result<String> {
        let start = Instant::now();
        loop {
            let (n, head) = self
                .settled(timeout.saturating_sub(start.elapsed()))
                .await?;
            if n == count {
                return Ok(head);
            }
            if start.elapsed() > timeout {
                bail!("nodes did not converge on {count} decisions within {timeout:?}: all at {n}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Waits until every running node has applied the same decisions (the
    /// most any of them holds) and returns that count and chain head. A
    /// follower answers as soon as the leader's quorum has committed, so one
    /// node's count read right after an answer may still lag; tests that
    /// check "nothing was committed" compare settled logs, not one node.
    pub async fn settled(&self, timeout: Duration) -> anyhow::Result<(u64, String)> {
        let start = Instant::now();
        loop {
            let heads = self.heads().await;
            if let Some(h) = &heads
                && h.first().is_some_and(|first| h.iter().all(|x| x == first))
            {
                return Ok(h[0].clone());
            }
            if start.elapsed() > timeout {
                bail!("nodes did not settle on one log within {timeout:?}: {heads:?}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The lineage of decision `index` as node `i` serves it to an auditor
    /// (the first 50 records).
    pub async fn lineage(&self, i: usize, index: u64) -> anyhow::Result<v1::LineageResponse> {
        Ok(self
            .client_as(i, "auditor")
            .await?
            .get_lineage(v1::GetLineageRequest {
                of: Some(v1::get_lineage_request::Of::Index(index)),
                limit: 50,
                after: 0,
            })
            .await?
            .into_inner())
    }

    /// Loses the databases of `nodes` (and their identity keys when
    /// `keys`), as a replaced disk would, and starts them again empty.
    pub fn wipe(&mut self, nodes: &[usize], keys: bool) -> anyhow::Result<()> {
        for &w in nodes {
            self.kill9(w);
            std::fs::remove_dir_all(self.nodes[w].data_dir.join("db"))?;
            if keys {
                std::fs::remove_file(self.nodes[w].data_dir.join("node.key"))?;
            }
        }
        for &w in nodes {
            self.start_node(w)?;
        }
        Ok(())
    }

    /// Sends `n` requests `<prefix>-<k>` (alice reads, allowed by `POLICY`)
    /// through the nodes in turn and returns their records, each checked to
    /// be an ALLOW.
    pub async fn allowed(
        &self,
        domain: &str,
        prefix: &str,
        n: usize,
    ) -> anyhow::Result<Vec<v1::DecisionRecord>> {
        let mut out = Vec::new();
        for k in 0..n {
            let r = self
                .decide(
                    k % self.nodes.len(),
                    request(domain, &format!("{prefix}-{k}"), "alice", "read"),
                )
                .await?;
            anyhow::ensure!(is_allow(&r), "not allowed: {r:?}");
            out.extend(r.record);
        }
        Ok(out)
    }

    /// Publishes `policy` to `domain` through the current leader and
    /// activates it, retrying while leadership settles.
    pub async fn publish(
        &self,
        domain: &str,
        policy: &str,
    ) -> anyhow::Result<v1::PublishPolicyResponse> {
        let start = Instant::now();
        loop {
            let l = self.wait_leader(Duration::from_secs(10)).await?;
            let mut c = self.client_as(l, "admin").await?;
            let r = c
                .publish_policy(v1::PublishPolicyRequest {
                    domain: domain.into(),
                    policy_text: policy.into(),
                    schema: None,
                    activate: true,
                    publisher_key: None,
                    signature: None,
                })
                .await;
            match r {
                Ok(r) => return Ok(r.into_inner()),
                Err(e)
                    if e.code() == tonic::Code::Unavailable
                        && start.elapsed() < Duration::from_secs(20) =>
                {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `req` through node `i` until it is committed (an answer with a
    /// record), retrying with the same request id, which cannot create a
    /// second record. Returns the committed answer.
    pub async fn decide(
        &self,
        i: usize,
        req: v1::AuthorizeRequest,
    ) -> anyhow::Result<v1::AuthorizeResponse> {
        let start = Instant::now();
        loop {
            let r = self
                .client_as(i, "agent")
                .await?
                .authorize(req.clone())
                .await?
                .into_inner();
            if r.record.is_some() {
                return Ok(r);
            }
            if start.elapsed() > Duration::from_secs(30) {
                bail!(
                    "request {} not committed within 30 s: {r:?}",
                    req.request_id
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// The whole decision log as node `i` serves it, as JSON lines.
    pub async fn export(&self, i: usize) -> anyhow::Result<String> {
        let recs = list(&mut self.client(i).await?, 1).await?;
        let mut out = String::new();
        for r in recs {
            out.push_str(&serde_json::to_string(&r)?);
            out.push('\n');
        }
        Ok(out)
    }
}

/// A mutual-TLS client presenting `dir/ROLE.pem` (certs from `quorate
/// certs init`), connected lazily.
pub fn connect_tls(
    addr: &str,
    dir: &Path,
    role: &str,
) -> anyhow::Result<GovernanceClient<Channel>> {
    Ok(GovernanceClient::new(tls_channel(addr, dir, role)?))
}

/// A lazily connected mutual-TLS gRPC channel to a node, presenting
/// `dir/ROLE.pem`, for any service the node serves.
pub fn tls_channel(addr: &str, dir: &Path, role: &str) -> anyhow::Result<Channel> {
    let tls = quorate_raft::tls::TlsContext::load(quorate_raft::tls::TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join(format!("{role}.pem")),
        key: dir.join(format!("{role}.key")),
    })?;
    Ok(quorate_raft::network::channel(addr, Some(tls), None)?)
}

pub async fn connect(addr: &str) -> anyhow::Result<GovernanceClient<Channel>> {
    let ch = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    Ok(GovernanceClient::new(ch))
}

pub async fn list(
    c: &mut GovernanceClient<Channel>,
    from: u64,
) -> anyhow::Result<Vec<DecisionRecord>> {
    let mut s = c
        .list_decisions(v1::ListDecisionsRequest {
            from_index: from,
            domain: None,
            limit: 0,
        })
        .await?
        .into_inner();
    let mut out = Vec::new();
    while let Some(w) = s.next().await {
        out.push(record_from_wire(&w?).map_err(|e| anyhow!("{e}"))?);
    }
    Ok(out)
}

/// Arguments of `quorate policy publish` of `file` to `domain` at `endpoint`,
/// then `extra` (`--activate`, `--sign-with KEY`, ...).
pub fn publish_args<'a>(
    endpoint: &'a str,
    domain: &'a str,
    file: &'a str,
    extra: &[&'a str],
) -> Vec<&'a str> {
    let mut args = vec![
        "policy",
        "publish",
        "--endpoint",
        endpoint,
        "--domain",
        domain,
        "--file",
        file,
    ];
    args.extend_from_slice(extra);
    args
}

/// A request in the test policy's vocabulary.
pub fn request(domain: &str, rid: &str, principal: &str, action: &str) -> v1::AuthorizeRequest {
    v1::AuthorizeRequest {
        domain: domain.into(),
        principal: format!("User::\"{principal}\""),
        action: format!("Action::\"{action}\""),
        resource: "Doc::\"1\"".into(),
        context_json: String::new(),
        entities_json: None,
        request_id: rid.into(),
        parent: None,
        trace_id: None,
    }
}

pub const POLICY: &str = r#"
permit(principal == User::"alice", action == Action::"read", resource);
permit(principal, action == Action::"list", resource);
"#;

pub fn is_allow(r: &v1::AuthorizeResponse) -> bool {
    r.decision == v1::Decision::Allow as i32
}

/// How many decisions of a lineage are direct children of `parent`.
pub fn children(tree: &v1::LineageResponse, parent: u64) -> usize {
    tree.edges.iter().filter(|e| e.parent == parent).count()
}

/// A minimal HTTP/1.0 GET (a node's metrics and health endpoints).
pub async fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await?;
    let mut out = String::new();
    s.read_to_string(&mut out).await?;
    Ok(out)
}

/// The value of the counter or gauge `name` (with its labels, as
/// exported: `name{a="x",b="y"}`) in a node's
/// `/metrics`, 0 when absent.
pub async fn metric_value(http: &str, name: &str) -> anyhow::Result<f64> {
    let text = http_get(http, "/metrics").await?;
    Ok(text
        .lines()
        .filter_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .filter_map(|v| v.trim().parse::<f64>().ok())
        .sum())
}

/// An HTTP answer: status code and body.
#[derive(Debug, Clone)]
pub struct HttpAnswer {
    pub status: u16,
    pub head: String,
    pub body: String,
}

impl HttpAnswer {
    /// The body as JSON (Null when it is not JSON).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// How a test reaches a node's HTTP port.
#[derive(Debug, Clone, Default)]
pub struct HttpCall<'a> {
    /// TLS against `certs/ca.pem`, presenting `certs/ROLE.pem` when `role`
    /// is set; plaintext when `certs` is None.
    pub certs: Option<&'a Path>,
    pub role: Option<&'a str>,
    /// `Authorization: Bearer` token.
    pub token: Option<&'a str>,
    /// POST this JSON body (GET when None).
    pub post: Option<&'a str>,
    /// The TLS server name to verify the node's certificate for
    /// (default `localhost`).
    pub server_name: Option<&'a str>,
}

/// One HTTP/1.0 request to `addr` (TLS with the cluster's CA when
/// `call.certs` is set), read to the end.
pub async fn http(addr: &str, path: &str, call: HttpCall<'_>) -> anyhow::Result<HttpAnswer> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
    let mut req = match call.post {
        Some(body) => format!(
            "POST {path} HTTP/1.0\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            body.len()
        ),
        None => format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n"),
    };
    if let Some(t) = call.token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(call.post.unwrap_or(""));
    async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
        mut s: S,
        req: &str,
    ) -> anyhow::Result<Vec<u8>> {
        s.write_all(req.as_bytes()).await?;
        s.flush().await?;
        let mut out = Vec::new();
        // A TLS peer may close without close_notify once it has answered.
        let _ = s.read_to_end(&mut out).await;
        Ok(out)
    }
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let raw = match call.certs {
        None => exchange(tcp, &req).await?,
        Some(dir) => {
            let mut roots = rustls::RootCertStore::empty();
            for c in rustls::pki_types::CertificateDer::pem_file_iter(dir.join("ca.pem"))? {
                roots.add(c?)?;
            }
            let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
            let builder = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots);
            let mut cfg = match call.role {
                Some(role) => {
                    let chain: Vec<_> = rustls::pki_types::CertificateDer::pem_file_iter(
                        dir.join(format!("{role}.pem")),
                    )?
                    .collect::<Result<_, _>>()?;
                    let key = rustls::pki_types::PrivateKeyDer::from_pem_file(
                        dir.join(format!("{role}.key")),
                    )?;
                    builder.with_client_auth_cert(chain, key)?
                }
                None => builder.with_no_client_auth(),
            };
            cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
            let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg));
            let name = rustls::pki_types::ServerName::try_from(
                call.server_name.unwrap_or("localhost").to_string(),
            )?;
            let tls = connector.connect(name, tcp).await?;
            exchange(tls, &req).await?
        }
    };
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .map(|(h, b)| (h.to_string(), b.to_string()))
        .unwrap_or((text.clone(), String::new()));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("no HTTP status in {head:?}"))?;
    Ok(HttpAnswer { status, head, body })
}

/// `--ca CA --cert ROLE.pem --key ROLE.key` for the CLI, from a
/// `quorate certs init` directory.
pub fn cert_args(certs: &Path, role: &str) -> Vec<String> {
    let d = certs.display();
    vec![
        "--ca".into(),
        format!("{d}/ca.pem"),
        "--cert".into(),
        format!("{d}/{role}.pem"),
        "--key".into(),
        format!("{d}/{role}.key"),
    ]
}

/// A console token for `role` from `quorate console login`, valid
/// `minutes`; the printed sign-in URL must carry it in its fragment.
pub fn console_token(certs: &Path, role: &str, minutes: &str) -> anyhow::Result<String> {
    let tls = cert_args(certs, role);
    let mut args = vec![
        "console",
        "login",
        "--role",
        role,
        "--ttl-minutes",
        minutes,
        "--json",
    ];
    args.extend(tls.iter().map(String::as_str));
    let (code, out, err) = cli(&args);
    anyhow::ensure!(code == 0, "console login: {err}");
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let token = v["token"]
        .as_str()
        .ok_or_else(|| anyhow!("no token in {v}"))?
        .to_string();
    anyhow::ensure!(
        v["url"]
            .as_str()
            .is_some_and(|u| u.ends_with(&format!("/#token={token}"))),
        "{v}"
    );
    Ok(token)
}

/// Decisions in domain `pay` (with `POLICY` published there): a payment,
/// two approvals naming it as their parent (the second, bob's, a DENY), a
/// child of the first approval, all in trace "t-pay"; then one unrelated
/// decision. Indexes 1 to 5 in that order.
pub async fn payment_tree(c: &Cluster) -> anyhow::Result<()> {
    let with = |rid: &str, who: &str, parent: Option<&str>| {
        let mut r = request("pay", rid, who, "read");
        r.parent = parent.map(Into::into);
        r.trace_id = Some("t-pay".into());
        r
    };
    c.decide(0, with("payment", "alice", None)).await?;
    c.decide(1, with("approve-a", "alice", Some("payment")))
        .await?;
    c.decide(2, with("approve-b", "bob", Some("payment")))
        .await?;
    c.decide(0, with("notify", "alice", Some("approve-a")))
        .await?;
    c.decide(1, request("pay", "unrelated", "alice", "read"))
        .await?;
    Ok(())
}
