//! Client commands and `quorate node`. Every command prints JSON on stdout;
//! errors go to stderr with what to do about them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use quorate_core::{Decision, DecisionRecord};
use quorate_proto::v1::{self, governance_client::GovernanceClient};
use quorate_proto::{CODE_METADATA_KEY, record_from_wire};
use quorate_server::{Node, NodeConfig};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

use crate::{AuthorizeArgs, DecisionKeyArgs, LogArgs, LogCmd, PolicyCmd};

pub(crate) fn normalize(endpoint: &str) -> String {
    if endpoint.starts_with("http://") || endpoint.starts_with("https://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

/// How this process reaches nodes: mutual TLS with a client certificate,
/// or plaintext.
static TRANSPORT: std::sync::RwLock<Option<std::sync::Arc<quorate_raft::tls::TlsContext>>> =
    std::sync::RwLock::new(None);
/// Set by --insecure: plaintext, for a node configured `insecure = true`.
static INSECURE: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
/// Warn once per process about plaintext.
static WARNED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

fn load_client(ca: PathBuf, cert: PathBuf, key: PathBuf) -> anyhow::Result<()> {
    let tls = quorate_raft::tls::TlsContext::load(quorate_raft::tls::TlsFiles { ca, cert, key })
        .context("client certificate")?;
    if let Ok(mut t) = TRANSPORT.write() {
        *t = Some(tls);
    }
    Ok(())
}

/// Uses `dir/ROLE.pem` and `.key` with `dir/ca.pem` (certs from `quorate
/// certs init`).
pub(crate) fn use_certs(dir: &std::path::Path, role: &str) -> anyhow::Result<()> {
    load_client(
        dir.join("ca.pem"),
        dir.join(format!("{role}.pem")),
        dir.join(format!("{role}.key")),
    )
}

/// Chooses the transport from the global flags: the given certificate;
/// plaintext with --insecure; otherwise the dev cluster's certificates
/// (`.quorate/dev/certs`, with the role the command needs) when present.
/// With none of these, connecting fails with what to do: plaintext is
/// never chosen silently.
pub(crate) fn set_transport(
    ca: Option<PathBuf>,
    cert: Option<PathBuf>,
    key: Option<PathBuf>,
    insecure: bool,
    role: &str,
) -> anyhow::Result<()> {
    if let (Some(ca), Some(cert), Some(key)) = (ca, cert, key) {
        return load_client(ca, cert, key);
    }
    if insecure {
        INSECURE.store(true, std::sync::atomic::Ordering::Relaxed);
        return Ok(());
    }
    let dev = std::path::Path::new(crate::dev::DEFAULT_DATA_DIR).join("certs");
    if dev.join("ca.pem").exists() {
        return use_certs(&dev, role);
    }
    Ok(())
}

pub(crate) async fn connect(endpoint: &str) -> anyhow::Result<GovernanceClient<Channel>> {
    let tls = TRANSPORT.read().ok().and_then(|t| t.clone());
    if let Some(tls) = tls {
        let addr = endpoint
            .trim_start_matches("https://")
            .trim_start_matches("http://");
        // The server must present a node certificate of the cluster our
        // own certificate names (any node: a client may ask any of them).
        let ch =
            quorate_raft::network::channel(addr, Some(tls.clone()), None).with_context(|| {
                format!("{endpoint:?} is not a valid endpoint (expected host:port)")
            })?;
        return Ok(GovernanceClient::new(ch).max_decoding_message_size(64 * 1024 * 1024));
    }
    if !INSECURE.load(std::sync::atomic::Ordering::Relaxed) {
        bail!(
            "no client certificate: give --ca, --cert and --key (or QUORATE_CA, QUORATE_CERT, \
             QUORATE_KEY; `quorate certs init` makes them), run from the directory where \
             `quorate dev` keeps {}, or pass --insecure for a node configured with \
             insecure = true",
            crate::dev::DEFAULT_DATA_DIR
        );
    }
    if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
        eprintln!("warning: --insecure: plaintext, no authentication of either side");
    }
    let ep = tonic::transport::Endpoint::from_shared(normalize(endpoint))
        .with_context(|| format!("{endpoint:?} is not a valid endpoint (expected host:port)"))?
        .connect_timeout(Duration::from_secs(3))
        .timeout(Duration::from_secs(30));
    let ch = ep.connect().await.with_context(|| {
        format!("cannot connect to {endpoint}; is a node running there? (`quorate dev` starts one)")
    })?;
    Ok(GovernanceClient::new(ch).max_decoding_message_size(64 * 1024 * 1024))
}

/// Renders a gRPC error with its stable code.
pub(crate) fn status_error(s: &tonic::Status) -> anyhow::Error {
    let code = s
        .metadata()
        .get(CODE_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    // A plaintext client talking to a TLS node (or the reverse) sees only a
    // broken HTTP/2 stream; say what is likely wrong.
    let hint = if s.message().contains("h2 protocol error") || s.message().contains("tls") {
        "\nhint: the node and this client disagree about TLS: give --ca/--cert/--key (certificates \
         from `quorate certs init`; `quorate dev` makes them in .quorate/dev/certs), or --insecure \
         only for a node configured with insecure = true"
    } else {
        ""
    };
    if code.is_empty() {
        anyhow!("{:?}: {}{hint}", s.code(), s.message())
    } else {
        anyhow!("{code}: {}{hint}", s.message())
    }
}

/// Prints one compact JSON line to stdout and flushes it (for streams).
/// Returns false when stdout was closed (`| head`).
pub(crate) fn print_line(v: &impl serde::Serialize) -> anyhow::Result<bool> {
    use std::io::Write;
    let mut text = serde_json::to_string(v)?;
    text.push('\n');
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        other => other.map(|()| true).map_err(Into::into),
    }
}

/// Prints JSON to stdout. A closed pipe (`quorate ... | head`) ends output
/// quietly instead of panicking.
pub(crate) fn print_json(v: &impl serde::Serialize) -> anyhow::Result<()> {
    use std::io::Write;
    let text = serde_json::to_string_pretty(v)?;
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub(crate) async fn run_node(
    config: PathBuf,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let cfg = NodeConfig::load(&config)?;
    init_logging(&cfg.log_format);
    quorate_server::http::install_metrics_recorder();
    let dir = data_dir.or_else(|| cfg.data_dir.clone()).ok_or_else(|| {
        anyhow!(
            "no data directory: set data_dir in {} or pass --data-dir",
            config.display()
        )
    })?;
    let running = Node::start(cfg, &dir).await?;
    wait_for_signal().await;
    tracing::info!("shutting down");
    running.shutdown().await;
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn init_logging(format: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("QUORATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=warn"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

/// A `quorate_client::Client` for `endpoints` (comma-separated) with this
/// process's transport (the certificate chosen by the global flags, or
/// --insecure).
pub(crate) fn governed_client(
    endpoints: &str,
    retry_for: Duration,
    accept_committed: bool,
) -> anyhow::Result<quorate_client::Client> {
    let list: Vec<String> = endpoints
        .split(',')
        .map(|e| e.trim().to_string())
        .filter(|e| !e.is_empty())
        .collect();
    // Retries (same request id throughout) ride out a leader election;
    // a contained cluster's DENY comes after `retry_for`.
    let b = quorate_client::Client::builder(list)
        .retry_for(retry_for)
        .accept_committed(accept_committed);
    let b = match TRANSPORT.read().ok().and_then(|t| t.clone()) {
        Some(tls) => b.tls(tls),
        None if INSECURE.load(std::sync::atomic::Ordering::Relaxed) => {
            if !WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                eprintln!("warning: --insecure: plaintext, no authentication of either side");
            }
            b.insecure()
        }
        None => b,
    };
    b.build().map_err(|e| anyhow!("{e}"))
}

pub(crate) async fn authorize(a: AuthorizeArgs) -> anyhow::Result<ExitCode> {
    let entities = match &a.entities {
        None => None,
        Some(p) => {
            let text = std::fs::read_to_string(p)
                .with_context(|| format!("cannot read entities file {}", p.display()))?;
            Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("{} is not JSON", p.display()))?,
            )
        }
    };
    let context: serde_json::Value = serde_json::from_str(&a.context)
        .context("--context must be a JSON object, e.g. '{\"ip\": \"10.0.0.1\"}'")?;
    let mut req =
        quorate_client::Request::new(a.domain, a.principal, a.action, a.resource).context(context);
    req.entities = entities;
    if let Some(id) = a.request_id {
        req = req.request_id(id);
    }
    req.parent = a.parent;
    req.trace_id = a.trace_id;
    let retry_for = Duration::try_from_secs_f64(a.retry_for)
        .map_err(|_| anyhow!("--retry-for must be a number of seconds >= 0"))?;
    // The CLI prints what the node decided, attested or committed.
    let client = governed_client(&a.endpoint.endpoint, retry_for, true)?;
    let outcome = client.authorize(req).await.map_err(|e| anyhow!("{e}"))?;
    let out = match outcome {
        quorate_client::Outcome::Allow(ok) => {
            let receipt = match (ok.receipt, a.receipt) {
                (Some(r), true) => Some(r),
                (None, true) => {
                    let fetched = crate::proofs::fetch_receipt(
                        &a.endpoint.endpoint,
                        v1::get_decision_request::Key::Index(ok.record.index),
                        Duration::from_secs(10),
                    )
                    .await
                    .context("the decision is committed but its receipt is not available yet; fetch it later with `quorate log receipt`")?;
                    if fetched.record != ok.record {
                        bail!(
                            "the receipt is for a different record than the answer; do not trust this node"
                        );
                    }
                    Some(Box::new(fetched))
                }
                (_, false) => None,
            };
            print_json(&serde_json::json!({
                "decision": "ALLOW",
                "reason": "",
                "message": "allowed by committed decision",
                "replayed": ok.replayed,
                "served_by": ok.served_by,
                "record": ok.record,
                "receipt": receipt,
            }))?;
            ExitCode::SUCCESS
        }
        quorate_client::Outcome::Deny(d) => {
            print_json(&serde_json::json!({
                "decision": "DENY",
                "reason": d.reason,
                "message": d.message,
                "replayed": d.replayed,
                "served_by": d.served_by,
                "record": d.record,
                "receipt": null,
            }))?;
            ExitCode::from(1)
        }
    };
    Ok(out)
}

/// Finds the leader through `endpoint` and connects to it, for writes.
pub(crate) async fn connect_leader(endpoint: &str) -> anyhow::Result<GovernanceClient<Channel>> {
    let mut c = connect(endpoint).await?;
    for _ in 0..20 {
        let s = c
            .status(v1::StatusRequest {})
            .await
            .map_err(|s| status_error(&s))?
            .into_inner();
        if s.role == "leader" {
            return Ok(c);
        }
        if let Some(leader) = s.leader_id
            && let Some(m) = s.members.iter().find(|m| m.node_id == leader)
        {
            return connect(&m.addr).await;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    bail!("no leader is known to {endpoint}; is the cluster quorate? (`quorate status`)")
}

pub(crate) async fn policy(p: PolicyCmd) -> anyhow::Result<ExitCode> {
    match p {
        PolicyCmd::Publish {
            endpoint,
            domain,
            file,
            schema,
            activate,
            signature,
            sign_with,
        } => {
            let (policy_text, schema) = crate::proofs::read_policy(&file, schema.as_deref())?;
            let sig = crate::proofs::publish_signature(
                signature.as_deref(),
                sign_with.as_deref(),
                &policy_text,
                schema.as_deref(),
            )?;
            let mut c = connect_leader(&endpoint.endpoint).await?;
            let r = c
                .publish_policy(v1::PublishPolicyRequest {
                    domain,
                    policy_text,
                    schema,
                    activate,
                    publisher_key: sig.map(|s| s.publisher_key.to_hex()),
                    signature: sig.map(|s| s.signature.to_hex()),
                })
                .await
                .map_err(|s| status_error(&s))?
                .into_inner();
            print_json(&serde_json::json!({
                "domain": r.domain, "version": r.version, "hash": r.hash,
                "activated": r.activated, "log_index": r.log_index,
            }))?;
        }
        PolicyCmd::Activate {
            endpoint,
            domain,
            version,
        } => {
            let mut c = connect_leader(&endpoint.endpoint).await?;
            let r = c
                .activate_policy(v1::ActivatePolicyRequest { domain, version })
                .await
                .map_err(|s| status_error(&s))?
                .into_inner();
            print_json(&serde_json::json!({
                "domain": r.domain, "version": r.version, "previous": r.previous,
                "log_index": r.log_index,
            }))?;
        }
        PolicyCmd::Get {
            endpoint,
            domain,
            version,
        } => {
            let mut c = connect(&endpoint.endpoint).await?;
            let p = c
                .get_policy(v1::GetPolicyRequest {
                    domain,
                    version: version.unwrap_or(0),
                })
                .await
                .map_err(|s| status_error(&s))?
                .into_inner();
            print_json(&serde_json::json!({
                "domain": p.domain, "version": p.version, "hash": p.hash, "active": p.active,
                "log_index": p.log_index, "published_at_ms": p.published_at_ms,
                "policy_text": p.policy_text, "schema": p.schema,
                "publisher_key": p.publisher_key, "signature": p.signature,
            }))?;
        }
        PolicyCmd::Sign { key, file, schema } => {
            return crate::proofs::policy_sign(&key, &file, schema.as_deref());
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Streams decision records from `endpoint` to `out` as JSON lines.
pub(crate) async fn stream_records(
    endpoint: &str,
    from: u64,
    domain: Option<String>,
    limit: u64,
    mut out: impl FnMut(DecisionRecord) -> anyhow::Result<()>,
) -> anyhow::Result<u64> {
    let mut c = connect(endpoint).await?;
    let mut stream = c
        .list_decisions(v1::ListDecisionsRequest {
            from_index: from,
            domain,
            limit,
        })
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    let mut n = 0;
    while let Some(item) = stream.next().await {
        let w = item.map_err(|s| status_error(&s))?;
        let rec = record_from_wire(&w).map_err(|e| anyhow!("malformed record: {e}"))?;
        out(rec)?;
        n += 1;
    }
    Ok(n)
}

pub(crate) async fn log(l: LogCmd) -> anyhow::Result<ExitCode> {
    match l {
        LogCmd::Export { endpoint, out } => {
            return crate::proofs::export(&endpoint.endpoint, out.as_deref()).await;
        }
        LogCmd::Receipt {
            endpoint,
            key,
            wait,
        } => {
            let key = decision_key(key)?;
            let r =
                crate::proofs::fetch_receipt(&endpoint.endpoint, key, Duration::from_secs(wait))
                    .await?;
            print_json(&r)?;
        }
        LogCmd::Checkpoint { endpoint, size } => {
            return crate::proofs::checkpoint(&endpoint.endpoint, size).await;
        }
        LogCmd::Consistency {
            endpoint,
            old,
            old_size,
            new_size,
        } => {
            let old_size = match (old, old_size) {
                (Some(p), _) => crate::proofs::checkpoint_size(&p)?,
                (None, Some(n)) => n,
                (None, None) => bail!("give --old FILE or --old-size N"),
            };
            return crate::proofs::consistency(&endpoint.endpoint, old_size, new_size).await;
        }
        LogCmd::List(a) => {
            let LogArgs {
                endpoint,
                domain,
                from,
                limit,
            } = a;
            use std::io::Write;
            let stdout = std::io::stdout();
            let mut lock = std::io::BufWriter::new(stdout.lock());
            let r = stream_records(&endpoint.endpoint, from, domain, limit, |rec| {
                serde_json::to_writer(&mut lock, &rec)?;
                lock.write_all(b"\n")?;
                Ok(())
            })
            .await
            .and_then(|_| Ok(lock.flush()?));
            if let Err(e) = r {
                // `quorate log list | head` closes the pipe early: not an error.
                let broken = e
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
                    || e.downcast_ref::<serde_json::Error>()
                        .and_then(|j| j.io_error_kind())
                        == Some(std::io::ErrorKind::BrokenPipe);
                if !broken {
                    return Err(e);
                }
            }
        }
        LogCmd::Watch {
            endpoint,
            from,
            domain,
            limit,
        } => {
            return crate::federation::watch(&endpoint.endpoint, from, domain, limit).await;
        }
        LogCmd::Lineage {
            endpoint,
            index,
            trace_id,
            limit,
            after,
            json,
        } => {
            let of = match (index, trace_id) {
                (Some(i), _) => v1::get_lineage_request::Of::Index(i),
                (None, Some(t)) => v1::get_lineage_request::Of::TraceId(t),
                (None, None) => bail!("give --index N or --trace-id ID"),
            };
            let mut c = connect(&endpoint.endpoint).await?;
            let l = c
                .get_lineage(v1::GetLineageRequest {
                    of: Some(of),
                    limit,
                    after,
                })
                .await
                .map_err(|s| status_error(&s))?
                .into_inner();
            let mut records = Vec::with_capacity(l.records.len());
            for w in &l.records {
                records.push(record_from_wire(w).map_err(|e| anyhow!("malformed record: {e}"))?);
            }
            let edges: Vec<(u64, u64)> = l.edges.iter().map(|e| (e.parent, e.child)).collect();
            if json {
                print_json(&serde_json::json!({
                    "focus": l.focus,
                    "root": l.root,
                    "truncated": l.truncated,
                    "next_after": l.next_after,
                    "records": records,
                    "edges": edges.iter().map(|(p, c)| serde_json::json!({"parent": p, "child": c})).collect::<Vec<_>>(),
                }))?;
            } else {
                print!("{}", lineage_tree(&records, &edges, l.focus));
                if l.truncated {
                    println!("(more descendants than --limit {limit}; raise it, up to 1000)");
                }
                if let Some(n) = l.next_after {
                    println!("(more in this trace: add --after {n})");
                }
            }
        }
        LogCmd::Get { endpoint, key } => {
            let key = decision_key(key)?;
            let mut c = connect(&endpoint.endpoint).await?;
            let w = c
                .get_decision(v1::GetDecisionRequest { key: Some(key) })
                .await
                .map_err(|s| status_error(&s))?
                .into_inner();
            let rec = record_from_wire(&w).map_err(|e| anyhow!("malformed record: {e}"))?;
            print_json(&rec)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// The records as a forest: each root (a record whose parent is not among
/// them) in log order, its children indented below it.
pub(crate) fn lineage_tree(
    records: &[DecisionRecord],
    edges: &[(u64, u64)],
    focus: Option<u64>,
) -> String {
    use std::collections::{BTreeMap, BTreeSet};
    let by_index: BTreeMap<u64, &DecisionRecord> = records.iter().map(|r| (r.index, r)).collect();
    let mut children: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    let mut has_parent = BTreeSet::new();
    for &(p, c) in edges {
        children.entry(p).or_default().push(c);
        has_parent.insert(c);
    }
    let line = |r: &DecisionRecord| {
        let outcome = match (&r.decision, &r.reason) {
            (Decision::Allow, _) => "ALLOW".to_string(),
            (Decision::Deny, Some(reason)) => format!("DENY {}", reason.code()),
            (Decision::Deny, None) => "DENY".to_string(),
        };
        let mark = if Some(r.index) == focus { "  ◀" } else { "" };
        format!(
            "#{} {outcome} {} {} {} {} {}{mark}",
            r.index,
            r.request.domain,
            r.request.request_id,
            r.request.principal,
            r.request.action,
            r.request.resource
        )
    };
    let mut out = String::new();
    let mut seen = BTreeSet::new();
    // (index, prefix for its children, prefix of its own line)
    let mut stack: Vec<(u64, String, String)> = by_index
        .keys()
        .filter(|i| !has_parent.contains(i))
        .rev()
        .map(|i| (*i, String::new(), String::new()))
        .collect();
    // Records only on a cycle have a parent among them but no root: start
    // from the lowest of those as well, so nothing is left out.
    let mut pending: Vec<u64> = by_index.keys().rev().copied().collect();
    loop {
        let Some((i, indent, lead)) = stack.pop() else {
            match pending.pop() {
                Some(i) if !seen.contains(&i) => {
                    stack.push((i, String::new(), String::new()));
                    continue;
                }
                Some(_) => continue,
                None => break,
            }
        };
        if !seen.insert(i) {
            continue;
        }
        let Some(r) = by_index.get(&i) else { continue };
        out.push_str(&lead);
        out.push_str(&line(r));
        out.push('\n');
        let kids: Vec<u64> = children
            .get(&i)
            .map(|k| k.iter().copied().filter(|k| !seen.contains(k)).collect())
            .unwrap_or_default();
        for (n, k) in kids.iter().enumerate().rev() {
            let last = n + 1 == kids.len();
            let lead = format!("{indent}{}", if last { "└── " } else { "├── " });
            let next = format!("{indent}{}", if last { "    " } else { "│   " });
            stack.push((*k, next, lead));
        }
    }
    out
}

fn decision_key(k: DecisionKeyArgs) -> anyhow::Result<v1::get_decision_request::Key> {
    Ok(match (k.index, k.domain, k.request_id) {
        (Some(i), _, _) => v1::get_decision_request::Key::Index(i),
        (None, Some(domain), Some(request_id)) => {
            v1::get_decision_request::Key::Request(v1::DecisionKey { domain, request_id })
        }
        _ => bail!("give --index N, or --domain D --request-id ID"),
    })
}

pub(crate) fn status_json(s: &v1::StatusResponse) -> serde_json::Value {
    serde_json::json!({
        "node_id": s.node_id,
        "cluster_id": s.cluster_id,
        "region": s.region,
        "role": s.role,
        "term": s.term,
        "leader_id": s.leader_id,
        "quorate": s.quorate,
        "containment_reason": if s.containment_reason.is_empty() { None } else { Some(&s.containment_reason) },
        "containment_message": s.containment_message,
        "last_log_index": s.last_log_index,
        "last_applied_index": s.last_applied_index,
        "decision_count": s.decision_count,
        "chain_head_hash": s.chain_head_hash,
        "public_key": s.public_key,
        "last_final_checkpoint": s.last_final_checkpoint,
        "members": s.members.iter().map(|m| serde_json::json!({
            "node_id": m.node_id, "addr": m.addr, "voter": m.voter,
            "public_key": m.public_key, "region": m.region,
            "matched_index": m.matched_index, "lag": m.lag,
        })).collect::<Vec<_>>(),
    })
}

pub(crate) async fn status(endpoint: &str) -> anyhow::Result<ExitCode> {
    let mut c = connect(endpoint).await?;
    let s = c
        .status(v1::StatusRequest {})
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    print_json(&status_json(&s))?;
    Ok(ExitCode::SUCCESS)
}

/// `quorate probe`: `count` commit probes in sequence; stops at the first
/// that does not commit.
pub(crate) async fn probe(endpoint: &str, count: u32) -> anyhow::Result<ExitCode> {
    let mut c = connect(endpoint).await?;
    let mut probes = Vec::with_capacity(count as usize);
    for i in 0..count {
        let sent = std::time::Instant::now();
        let r = c.probe(v1::ProbeRequest {}).await.map_err(|s| {
            status_error(&s).context(format!("probe {} of {count} did not commit", i + 1))
        })?;
        let ms = sent.elapsed().as_secs_f64() * 1e3;
        let r = r.into_inner();
        probes.push(serde_json::json!({
            "log_index": r.log_index,
            "leader_id": r.leader_id,
            "served_by": r.served_by,
            "latency_ms": (ms * 1000.0).round() / 1000.0,
        }));
    }
    print_json(&serde_json::json!({ "committed": probes.len(), "probes": probes }))?;
    Ok(ExitCode::SUCCESS)
}
