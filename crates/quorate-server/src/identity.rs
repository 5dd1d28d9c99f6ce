//! The node's ed25519 identity key: loaded from its file, or created (mode
//! 0600) on first start. Its public half is in the cluster membership, so
//! every replica checks this node's checkpoint cosignatures against it.

use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use quorate_core::SecretKey;
use rand::RngCore as _;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read key file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot create key file {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} is not 64 hex characters (an ed25519 seed)")]
    Format { path: PathBuf },
    #[error("key file {path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    Permissions { path: PathBuf, mode: u32 },
}

/// Reads the secret key at `path`. A key readable by group or others is
/// refused: a leaked node key lets anyone forge that node's cosignatures.
pub fn load_key(path: &Path) -> Result<SecretKey, KeyError> {
    let meta = std::fs::metadata(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(KeyError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(text.trim(), &mut seed).map_err(|_| KeyError::Format {
        path: path.to_path_buf(),
    })?;
    Ok(SecretKey::from_seed(seed))
}

/// Writes a fresh random key to `path` with mode 0600, refusing to
/// overwrite an existing file.
pub fn create_key(path: &Path) -> Result<SecretKey, KeyError> {
    let mut seed = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut seed);
    let key = SecretKey::from_seed(seed);
    let err = |source| KeyError::Create {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(err)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(err)?;
    writeln!(f, "{}", hex::encode(key.seed())).map_err(err)?;
    f.sync_all().map_err(err)?;
    Ok(key)
}

/// The key at `path`, created on first use.
pub fn load_or_create_key(path: &Path) -> Result<SecretKey, KeyError> {
    if path.exists() {
        load_key(path)
    } else {
        let key = create_key(path)?;
        tracing::info!(path = %path.display(), public_key = %key.public(), "created node identity key");
        Ok(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_then_load_round_trips_and_is_private() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("k/node.key");
        let k = load_or_create_key(&path).expect("create");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(load_key(&path).expect("load").public(), k.public());
        assert!(create_key(&path).is_err(), "never overwrites a key");
    }

    #[test]
    fn refuses_world_readable_and_malformed_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("node.key");
        create_key(&path).expect("create");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        assert!(matches!(load_key(&path), Err(KeyError::Permissions { .. })));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        std::fs::write(&path, "not hex").expect("write");
        assert!(matches!(load_key(&path), Err(KeyError::Format { .. })));
    }
}
