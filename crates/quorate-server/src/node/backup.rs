//! Online backups: a consistent checkpoint of this node's database, written
//! into a new directory on this node's machine and verified whole (chain,
//! Merkle tree, checkpoints and their cosignatures, policy hashes) before
//! it is reported as a backup. Restoring is `quorate restore`
//! (`quorate_store::backup::seed_new_cluster`).

use super::*;

/// The format name of `backup.json`.
pub const BACKUP_FORMAT: &str = "quorate-backup/v1";

/// `backup.json`, written beside the checkpoint's `db/`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BackupManifest {
    pub format: String,
    pub cluster_id: String,
    /// The node the backup was taken on.
    pub node_id: u64,
    pub created_ms: u64,
    pub dir: String,
    /// Decision records in the backup, and the hash of the last.
    pub records: u64,
    pub head_hash: String,
    pub last_final_checkpoint: u64,
    pub last_applied_index: u64,
    /// The backup was opened and verified in full after it was written.
    pub verified: bool,
    pub verify_seconds: f64,
}

impl Node {
    /// Writes a verified backup into `dir`, an absolute path that must not
    /// exist yet (its parent must). A backup that does not verify is
    /// removed and the call fails: nothing half-made is left to trust.
    pub async fn backup(&self, dir: String) -> Result<BackupManifest, ApiError> {
        let path = PathBuf::from(&dir);
        if !path.is_absolute() {
            return Err(ApiError::invalid(format!(
                "{dir:?} is not an absolute path; give the directory on the node's machine to \
                 create, e.g. /var/backups/quorate/2026-12-04"
            )));
        }
        if path.exists() {
            return Err(ApiError::invalid(format!(
                "{dir} exists; a backup goes into a new directory"
            )));
        }
        if !path.parent().is_some_and(Path::is_dir) {
            return Err(ApiError::invalid(format!(
                "the parent of {dir} is not a directory on this node"
            )));
        }
        let lookup = self.inner.lookup.clone();
        let cluster_id = self.inner.cfg.cluster_id.clone();
        let node_id = self.inner.id;
        let limits = self.inner.limits;
        let made = tokio::task::spawn_blocking(move || -> Result<BackupManifest, String> {
            std::fs::create_dir(&path)
                .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
            let db = path.join("db");
            let result = (|| {
                lookup
                    .checkpoint_to(&db)
                    .map_err(|e| format!("checkpoint: {e}"))?;
                let started = std::time::Instant::now();
                let store = Store::open(&db).map_err(|e| format!("cannot open the backup: {e}"))?;
                let sm = StateMachine::open(store, limits)
                    .map_err(|e| format!("cannot open the backup: {e}"))?
                    .with_cluster_id(&cluster_id);
                let copy = sm.lookup();
                let head = copy
                    .verify_state()
                    .map_err(|e| format!("the backup does not verify: {e}"))?;
                let applied = copy.state().last_applied.map(|l| l.index).unwrap_or(0);
                let manifest = BackupManifest {
                    format: BACKUP_FORMAT.into(),
                    cluster_id: cluster_id.clone(),
                    node_id,
                    created_ms: now_ms(),
                    dir: path.display().to_string(),
                    records: head.count,
                    head_hash: head.hash.to_hex(),
                    last_final_checkpoint: copy.last_final(),
                    last_applied_index: applied,
                    verified: true,
                    verify_seconds: started.elapsed().as_secs_f64(),
                };
                let text = serde_json::to_string_pretty(&manifest).map_err(|e| e.to_string())?;
                std::fs::write(path.join("backup.json"), text + "\n")
                    .map_err(|e| format!("cannot write backup.json: {e}"))?;
                Ok(manifest)
            })();
            if result.is_err() {
                // Not a backup: leave nothing that looks like one.
                let _ = std::fs::remove_dir_all(&path);
            }
            result
        })
        .await
        .map_err(|e| ApiError::internal(format!("the backup task failed: {e}")))?;
        match made {
            Ok(m) => {
                tracing::info!(dir = %m.dir, records = m.records, "backup written and verified");
                Ok(m)
            }
            Err(e) => Err(ApiError::internal(e)),
        }
    }
}
