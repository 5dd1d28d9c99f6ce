//! Keys, signatures, receipts, checkpoints, exports, the offline verifier
//! and node repair. The verifying logic is `quorate_core::verify` and
//! `quorate_core::proof`; this module only reads files and prints results.

use std::io::{BufRead as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use quorate_core::proof::{self, ConsistencyBundle};
use quorate_core::verify::ExportVerifier;
use quorate_core::{Checkpoint, PolicySignature, Receipt, TrustFile};
use quorate_proto::v1;
use quorate_server::NodeConfig;

use crate::client::{connect, print_json, status_error};

fn read_json<T: serde::de::DeserializeOwned>(path: &Path, what: &str) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} file {}", path.display()))?;
    serde_json::from_str(&text)
        .with_context(|| format!("{} is not a valid {what} (JSON)", path.display()))
}

/// `quorate keys gen`: a new ed25519 key, mode 0600.
pub(crate) fn keys_gen(out: &Path) -> anyhow::Result<ExitCode> {
    let key = quorate_server::identity::create_key(out)?;
    print_json(&serde_json::json!({
        "key_file": out.display().to_string(),
        "public_key": key.public(),
    }))?;
    eprintln!(
        "wrote a secret key to {} (mode 0600). Share only the public key; for a policy \
         publisher, add it to [[security.trusted_publishers]] on every node.",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `quorate keys export`: the trust file a verifier needs.
pub(crate) async fn keys_export(endpoint: &str) -> anyhow::Result<ExitCode> {
    let mut c = connect(endpoint).await?;
    let doc = c
        .get_trust(v1::GetTrustRequest {})
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    let trust: TrustFile = serde_json::from_str(&doc.json)?;
    print_json(&trust)?;
    eprintln!(
        "fingerprint: {} (SHA-256 of the trust file's canonical JSON; the console's proof viewer \
         shows the same for the same file)",
        trust_fingerprint(&trust)?
    );
    Ok(ExitCode::SUCCESS)
}

/// The SHA-256 (hex) of a trust file's canonical JSON (docs/FORMATS.md §1).
pub(crate) fn trust_fingerprint(trust: &TrustFile) -> anyhow::Result<String> {
    let value = serde_json::to_value(trust)?;
    let canon = quorate_core::canonical::canonical_json(&value);
    Ok(quorate_core::Digest(quorate_core::canonical::sha256(canon.as_bytes())).to_hex())
}

/// Reads a policy and optional schema the way `policy publish` sends them.
pub(crate) fn read_policy(
    file: &Path,
    schema: Option<&Path>,
) -> anyhow::Result<(String, Option<String>)> {
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read policy file {}", file.display()))?;
    let schema = match schema {
        None => None,
        Some(p) => Some(
            std::fs::read_to_string(p)
                .with_context(|| format!("cannot read schema file {}", p.display()))?,
        ),
    };
    Ok((text, schema))
}

/// `quorate policy sign`: a publisher signature over the exact bytes.
pub(crate) fn policy_sign(
    key: &Path,
    file: &Path,
    schema: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    let key = quorate_server::identity::load_key(key)?;
    let (text, schema) = read_policy(file, schema)?;
    print_json(&PolicySignature::sign(&key, &text, schema.as_deref()))?;
    Ok(ExitCode::SUCCESS)
}

/// The signature to publish with: from a signature file or signed now.
pub(crate) fn publish_signature(
    signature: Option<&Path>,
    sign_with: Option<&Path>,
    text: &str,
    schema: Option<&str>,
) -> anyhow::Result<Option<PolicySignature>> {
    match (signature, sign_with) {
        (Some(p), _) => {
            let sig: PolicySignature = read_json(p, "signature")?;
            sig.verify(text, schema).map_err(|e| {
                anyhow!(
                    "{e}: {} was not made for this policy file; sign it again",
                    p.display()
                )
            })?;
            Ok(Some(sig))
        }
        (None, Some(k)) => {
            let key = quorate_server::identity::load_key(k)?;
            Ok(Some(PolicySignature::sign(&key, text, schema)))
        }
        (None, None) => Ok(None),
    }
}

/// Fetches the receipt of `key`, retrying while no final checkpoint covers
/// it yet, for at most `wait`.
pub(crate) async fn fetch_receipt(
    endpoint: &str,
    key: v1::get_decision_request::Key,
    wait: Duration,
) -> anyhow::Result<Receipt> {
    let mut c = connect(endpoint).await?;
    let started = Instant::now();
    loop {
        match c
            .get_receipt(v1::GetDecisionRequest {
                key: Some(key.clone()),
            })
            .await
        {
            Ok(doc) => return Ok(serde_json::from_str(&doc.into_inner().json)?),
            Err(s) if s.code() == tonic::Code::Unavailable && started.elapsed() < wait => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => return Err(status_error(&s)),
        }
    }
}

pub(crate) async fn checkpoint(endpoint: &str, size: Option<u64>) -> anyhow::Result<ExitCode> {
    let mut c = connect(endpoint).await?;
    let doc = c
        .get_checkpoint(v1::GetCheckpointRequest {
            size: size.unwrap_or(0),
        })
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    let cp: Checkpoint = serde_json::from_str(&doc.json)?;
    print_json(&cp)?;
    Ok(ExitCode::SUCCESS)
}

/// The size of the checkpoint in `path`.
pub(crate) fn checkpoint_size(path: &Path) -> anyhow::Result<u64> {
    let cp: Checkpoint = read_json(path, "checkpoint")?;
    Ok(cp.size)
}

pub(crate) async fn consistency(
    endpoint: &str,
    old_size: u64,
    new_size: Option<u64>,
) -> anyhow::Result<ExitCode> {
    let mut c = connect(endpoint).await?;
    let doc = c
        .get_consistency_proof(v1::GetConsistencyProofRequest {
            old_size,
            new_size: new_size.unwrap_or(0),
        })
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    let b: ConsistencyBundle = serde_json::from_str(&doc.json)?;
    print_json(&b)?;
    Ok(ExitCode::SUCCESS)
}

/// `quorate log export`: the verifiable JSON-lines export.
pub(crate) async fn export(endpoint: &str, out: Option<&Path>) -> anyhow::Result<ExitCode> {
    use tokio_stream::StreamExt;
    let mut c = connect(endpoint).await?;
    let mut stream = c
        .export_log(v1::ExportLogRequest {})
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    let mut sink: Box<dyn std::io::Write> = match out {
        Some(p) => Box::new(std::io::BufWriter::new(
            std::fs::File::create(p).with_context(|| format!("cannot create {}", p.display()))?,
        )),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    while let Some(line) = stream.next().await {
        let line = line.map_err(|s| status_error(&s))?;
        let w = sink
            .write_all(line.json.as_bytes())
            .and_then(|()| sink.write_all(b"\n"));
        match w {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(ExitCode::SUCCESS),
            other => other?,
        }
    }
    sink.flush()?;
    Ok(ExitCode::SUCCESS)
}

/// What `quorate verify` checks.
#[derive(Debug)]
pub(crate) enum VerifyWhat {
    Receipt(PathBuf),
    Log {
        path: PathBuf,
        reevaluate: bool,
        /// Re-evaluation threads; 0: on the reading thread.
        jobs: usize,
    },
    Consistency {
        old: PathBuf,
        new: PathBuf,
    },
}

/// `quorate verify`: exit 0 when valid, 1 when not (naming what failed),
/// 2 when the inputs cannot be read.
pub(crate) fn verify(trust: &Path, what: VerifyWhat) -> anyhow::Result<ExitCode> {
    let trust: TrustFile = read_json(trust, "trust")?;
    trust
        .check()
        .map_err(|e| anyhow!("the trust file is not usable: {e}"))?;
    let result: Result<serde_json::Value, String> = match what {
        VerifyWhat::Receipt(p) => {
            let r: Receipt = read_json(&p, "receipt")?;
            proof::verify_receipt(&trust, &r)
                .map(|()| {
                    serde_json::json!({
                        "index": r.record.index,
                        "decision": r.record.decision,
                        "hash": r.record.hash,
                        "checkpoint_size": r.checkpoint.size,
                        "cosigners": r.checkpoint.cosignatures.iter().map(|c| c.node_id).collect::<Vec<_>>(),
                    })
                })
                .map_err(|e| e.to_string())
        }
        VerifyWhat::Consistency { old, new } => {
            let old: Checkpoint = read_json(&old, "checkpoint")?;
            let new: ConsistencyBundle = read_json(&new, "consistency bundle")?;
            proof::verify_consistency(&trust, &old, &new)
                .map(|()| {
                    serde_json::json!({
                        "old_size": old.size,
                        "new_size": new.checkpoint.size,
                        "old_root": old.root,
                        "new_root": new.checkpoint.root,
                    })
                })
                .map_err(|e| e.to_string())
        }
        VerifyWhat::Log {
            path,
            reevaluate,
            jobs,
        } => verify_log(&trust, &path, reevaluate, jobs)?,
    };
    match result {
        Ok(summary) => {
            let mut out = serde_json::json!({ "valid": true });
            if let (Some(o), serde_json::Value::Object(s)) = (out.as_object_mut(), summary) {
                o.extend(s);
            }
            print_json(&out)?;
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            print_json(&serde_json::json!({ "valid": false, "error": e }))?;
            eprintln!("verification FAILED: {e}");
            Ok(ExitCode::from(1))
        }
    }
}

fn verify_log(
    trust: &TrustFile,
    path: &Path,
    reevaluate: bool,
    jobs: usize,
) -> anyhow::Result<Result<serde_json::Value, String>> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let total = file.metadata().map(|m| m.len()).unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "verifying {bar:40} {bytes}/{total_bytes} {msg} ({eta} left)",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar.set_draw_target(indicatif::ProgressDrawTarget::stderr_with_hz(4));
    let cedar = || {
        Box::new(quorate_policy::CedarReevaluator::new(Default::default()))
            as Box<dyn quorate_core::verify::Reevaluator>
    };
    let mut v = match (reevaluate, jobs) {
        (false, _) => ExportVerifier::new(trust, None),
        (true, 0) => ExportVerifier::new(trust, Some(cedar())),
        (true, n) => ExportVerifier::with_pool(
            trust,
            quorate_core::verify::parallel::Pool::new(n, std::sync::Arc::new(cedar)),
        ),
    };
    let started = Instant::now();
    let mut reader = std::io::BufReader::with_capacity(1 << 20, file);
    let mut line = String::new();
    let mut read = 0u64;
    loop {
        line.clear();
        let n = reader
            .read_line(&mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        read += n as u64;
        if let Err(e) = v.feed_line(line.trim_end_matches(['\n', '\r'])) {
            bar.abandon();
            return Ok(Err(e.to_string()));
        }
        if v.records_seen() % 4096 == 0 {
            bar.set_position(read);
            bar.set_message(format!("{} records", v.records_seen()));
        }
    }
    bar.finish_and_clear();
    let secs = started.elapsed().as_secs_f64();
    Ok(match v.finish() {
        Ok(summary) => {
            let mut s = serde_json::to_value(&summary)?;
            if let Some(o) = s.as_object_mut() {
                o.insert("seconds".into(), serde_json::json!(secs));
                o.insert(
                    "reevaluation_threads".into(),
                    serde_json::json!(if reevaluate { jobs } else { 0 }),
                );
                o.insert(
                    "records_per_second".into(),
                    serde_json::json!((summary.records as f64 / secs.max(1e-9)).round()),
                );
            }
            Ok(s)
        }
        Err(e) => Err(e.to_string()),
    })
}

/// A consistency proof from the snapshot's tree of all its records to the
/// peer's latest final checkpoint, when the snapshot's own checkpoints do
/// not cover all of them (waiting up to 5 s for one that does).
async fn repair_extension(
    channels: &quorate_raft::network::Channels,
    addr: &str,
    data: &quorate_raft::SnapshotData,
) -> anyhow::Result<Option<ConsistencyBundle>> {
    // What the snapshot claims; the repair verifies it all before use.
    let header = quorate_store::read_header(data)?;
    let (records, last_final) = (header.records, header.last_final);
    if records == 0 || last_final >= records {
        return Ok(None);
    }
    let mut client = v1::governance_client::GovernanceClient::new(channels.get_any(addr)?)
        .max_decoding_message_size(64 * 1024 * 1024);
    let started = Instant::now();
    loop {
        match client
            .get_consistency_proof(v1::GetConsistencyProofRequest {
                old_size: records,
                new_size: 0,
            })
            .await
        {
            Ok(doc) => return Ok(Some(serde_json::from_str(&doc.into_inner().json)?)),
            // No final checkpoint covers the snapshot's size yet.
            Err(s)
                if matches!(
                    s.code(),
                    tonic::Code::InvalidArgument | tonic::Code::Unavailable
                ) && started.elapsed() < Duration::from_secs(5) =>
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(s) => return Err(status_error(&s)),
        }
    }
}

/// Rounds over the peers before repair gives up.
const REPAIR_ROUNDS: usize = 5;

/// `quorate node repair`: the node must be stopped. Verifies the local
/// state; if it is damaged (or diverged), replaces it with a verified
/// snapshot from a healthy peer.
/// A stopped node's config and data directory (`--data-dir` over the
/// config's `data_dir`), for the commands that open its store offline.
pub(crate) fn offline_node(
    config: &Path,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<(NodeConfig, PathBuf)> {
    let cfg = NodeConfig::load(config)?;
    let dir = data_dir.or_else(|| cfg.data_dir.clone()).ok_or_else(|| {
        anyhow!(
            "no data directory: set data_dir in {} or pass --data-dir",
            config.display()
        )
    })?;
    Ok((cfg, dir))
}

pub(crate) async fn repair(
    config: &Path,
    data_dir: Option<PathBuf>,
    from: Option<String>,
    force: bool,
    trust: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (cfg, dir) = offline_node(config, data_dir)?;
    let db_dir = dir.join("db");
    let store = quorate_store::Store::open(&db_dir).with_context(|| {
        format!(
            "cannot open {}; stop the node first (`quorate node repair` needs it stopped)",
            db_dir.display()
        )
    })?;
    let sm = quorate_store::StateMachine::open(store.clone(), Default::default())?
        .with_cluster_id(&cfg.cluster_id);
    let lookup = sm.lookup();
    let before = lookup.verify_state();
    let diverged = lookup.divergence();
    match (&before, &diverged) {
        (Ok(head), None) if !force => {
            print_json(&serde_json::json!({
                "repaired": false,
                "verified": true,
                "records": head.count,
                "message": "stored state verifies and no divergence is recorded; nothing to repair (--force repairs anyway)",
            }))?;
            return Ok(ExitCode::SUCCESS);
        }
        _ => {}
    }
    if let Err(e) = &before {
        eprintln!("local state is damaged: {e}");
    }
    if let Some(d) = &diverged {
        eprintln!("local state diverged: {d}");
    }
    let peers: Vec<(u64, String)> = match from {
        Some(a) => vec![(0, a)],
        None => cfg
            .members
            .iter()
            .filter(|m| m.id != cfg.node_id)
            .map(|m| (m.id, m.addr.clone()))
            .collect(),
    };
    // The node's own certificate: peers serve snapshots only to members.
    let tls = match &cfg.tls {
        Some(t) => Some(quorate_raft::tls::TlsContext::load(
            quorate_raft::tls::TlsFiles {
                ca: t.ca_file.clone(),
                cert: t.cert_file.clone(),
                key: t.key_file.clone(),
            },
        )?),
        None => None,
    };
    let channels = quorate_raft::network::Channels::with_tls(tls);
    // Whom this node trusts to vouch for a peer's history: its own recorded
    // voter sets, or the operator's trust file. Never the snapshot's.
    let trusted: Vec<quorate_store::CheckpointVoter> = match &trust {
        Some(p) => {
            let t: TrustFile = read_json(p, "trust file")?;
            t.check()?;
            if t.cluster_id != cfg.cluster_id {
                bail!(
                    "{} is the trust file of cluster {:?}, not {:?}",
                    p.display(),
                    t.cluster_id,
                    cfg.cluster_id
                );
            }
            t.nodes
                .iter()
                .map(|n| quorate_store::CheckpointVoter {
                    node_id: n.node_id,
                    public_key: n.public_key,
                })
                .collect()
        }
        None => quorate_store::trusted_voters(&store),
    };
    let mut errors = Vec::new();
    // A peer's newest records may not be cosigned yet (checkpoints are
    // persisted every checkpoint.interval_ms): try every peer a few times.
    let attempts: Vec<(u64, String)> = (0..REPAIR_ROUNDS).flat_map(|_| peers.clone()).collect();
    for (round, (id, addr)) in attempts.into_iter().enumerate() {
        if round >= peers.len() {
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        eprintln!("fetching a snapshot from {addr} ...");
        // Into a file beside the database, a checked chunk at a time; the
        // repair moves it into place as the node's current snapshot.
        let dest = store.snapshot_dir().join(format!("fetched-{id}.part"));
        let (meta, data) = match quorate_raft::network::fetch_snapshot(
            &channels,
            cfg.node_id,
            &addr,
            Duration::from_secs(120),
            &dest,
        )
        .await
        {
            Ok(s) => s,
            Err(e) => {
                errors.push(format!("{addr}: {e}"));
                continue;
            }
        };
        // Under load the snapshot's newest records are not yet covered by
        // a checkpoint in it: ask the same peer for a consistency proof
        // from the snapshot's tree to a later final checkpoint, which the
        // repair checks against the trusted voters like any other.
        let extension = match repair_extension(&channels, &addr, &data).await {
            Ok(e) => e,
            Err(e) => {
                errors.push(format!("{addr}: {e}"));
                continue;
            }
        };
        match quorate_store::repair_from_snapshot(
            &store,
            &meta,
            &data,
            &cfg.cluster_id,
            &trusted,
            extension.as_ref(),
        ) {
            Ok(head) => {
                // Check what was written, from the database, not the payload.
                let sm = quorate_store::StateMachine::open(store.clone(), Default::default())?
                    .with_cluster_id(&cfg.cluster_id);
                let after = sm.lookup().verify_state();
                print_json(&serde_json::json!({
                    "repaired": true,
                    "from_node": id,
                    "from": addr,
                    "records": head.count,
                    "head": head.hash,
                    "verified": after.is_ok(),
                    "error_before": before.as_ref().err().map(|e| e.to_string()),
                    "divergence_before": diverged.as_ref().map(|d| d.to_string()),
                }))?;
                if let Err(e) = after {
                    bail!("repaired state does not verify: {e}");
                }
                eprintln!("repaired; start the node again and it catches up from its peers");
                return Ok(ExitCode::SUCCESS);
            }
            Err(e) => {
                let _ = std::fs::remove_file(&dest);
                errors.push(format!("{addr}: {e}"));
            }
        }
    }
    bail!(
        "no peer could repair this node:\n  {}\nstart a healthy peer or pass --from ADDR",
        errors.join("\n  ")
    )
}
