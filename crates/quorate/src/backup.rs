//! `quorate backup` (a verified checkpoint of a running node, written on
//! its machine) and `quorate restore` (seed a new one-voter cluster from a
//! backup, offline). See docs/OPERATIONS.md, "Backup and restore".

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, anyhow, bail};
use quorate_proto::v1;
use quorate_server::node::{BACKUP_FORMAT, BackupManifest};

use crate::client::{connect, print_json, status_error};

pub(crate) async fn backup(endpoint: &str, out: &str) -> anyhow::Result<ExitCode> {
    let mut c = connect(endpoint).await?;
    let r = c
        .backup(v1::BackupRequest { dir: out.into() })
        .await
        .map_err(|s| status_error(&s))?
        .into_inner();
    let m: BackupManifest = serde_json::from_str(&r.manifest_json)
        .map_err(|e| anyhow!("the node answered a malformed manifest: {e}"))?;
    print_json(&m)?;
    Ok(ExitCode::SUCCESS)
}

/// Copies the files of `from` (a RocksDB checkpoint: flat) into `to`.
fn copy_db(from: &Path, to: &Path) -> anyhow::Result<u64> {
    std::fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let mut bytes = 0;
    for e in std::fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))? {
        let e = e?;
        if e.file_type()?.is_file() {
            bytes += std::fs::copy(e.path(), to.join(e.file_name()))
                .with_context(|| format!("cannot copy {}", e.path().display()))?;
        }
    }
    Ok(bytes)
}

pub(crate) fn restore(
    from: &Path,
    config: &Path,
    data_dir: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    let (cfg, dir) = crate::proofs::offline_node(config, data_dir)?;
    let manifest_path = from.join("backup.json");
    let text = std::fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "{} is not a backup (no backup.json); make one with `quorate backup`",
            from.display()
        )
    })?;
    let m: BackupManifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is malformed", manifest_path.display()))?;
    if m.format != BACKUP_FORMAT {
        bail!(
            "{} is format {:?}, not {BACKUP_FORMAT}",
            manifest_path.display(),
            m.format
        );
    }
    if m.cluster_id != cfg.cluster_id {
        bail!(
            "the backup is of cluster {:?}, the config is for {:?}: a restored log keeps its \
             cluster id (every checkpoint signature names it)",
            m.cluster_id,
            cfg.cluster_id
        );
    }
    let db = dir.join("db");
    if db.exists() && std::fs::read_dir(&db)?.next().is_some() {
        bail!(
            "{} already holds a database; restore into an empty data directory",
            db.display()
        );
    }
    let key_path = cfg.key_file.clone().unwrap_or_else(|| dir.join("node.key"));
    let key = quorate_server::identity::load_key(&key_path).with_context(|| {
        format!(
            "restore needs node {}'s own identity key ({}): backups hold no secrets; put the \
             key file there (or set key_file) and run again",
            cfg.node_id,
            key_path.display()
        )
    })?;
    let addr = cfg
        .members
        .iter()
        .find(|mm| mm.id == cfg.node_id)
        .map(|mm| mm.addr.clone())
        .unwrap_or_else(|| cfg.grpc_addr.to_string());
    let bytes = copy_db(&from.join("db"), &db)?;
    let result = (|| -> anyhow::Result<(quorate_store::backup::Seeded, u64)> {
        let store = quorate_store::Store::open(&db)
            .with_context(|| format!("cannot open the restored copy in {}", db.display()))?;
        {
            let sm = quorate_store::StateMachine::open(store.clone(), Default::default())?
                .with_cluster_id(&cfg.cluster_id);
            let head = sm
                .lookup()
                .verify_state()
                .map_err(|e| anyhow!("the backup does not verify: {e}"))?;
            if head.count != m.records || head.hash.to_hex() != m.head_hash {
                bail!(
                    "the backup holds {} records ending in {}, its manifest says {} ending in {}",
                    head.count,
                    head.hash,
                    m.records,
                    m.head_hash
                );
            }
        }
        let me = quorate_raft::NodeInfo {
            addr,
            public_key: key.public(),
            region: cfg.region.clone(),
        };
        let seeded = quorate_store::backup::seed_new_cluster(&store, cfg.node_id, me)?;
        Ok((seeded, bytes))
    })();
    let (seeded, bytes) = match result {
        Ok(v) => v,
        Err(e) => {
            // Leave the data directory as it was found.
            let _ = std::fs::remove_dir_all(&db);
            return Err(e);
        }
    };
    print_json(&serde_json::json!({
        "restored": true,
        "from": from.display().to_string(),
        "data_dir": dir.display().to_string(),
        "node_id": cfg.node_id,
        "records": seeded.records,
        "last_applied_index": seeded.last_applied.map(|l| l.index),
        "bytes": bytes,
        "next": format!(
            "start this node (`quorate node --config {}`): it is the only voter of the restored \
             cluster and leads it; add the other members with `quorate cluster add-learner` and \
             `promote`. Decisions after the backup ({} records) are not in it: this is a new \
             history from there on.",
            config.display(),
            seeded.records
        ),
    }))?;
    Ok(ExitCode::SUCCESS)
}
