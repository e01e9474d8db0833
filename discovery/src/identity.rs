//! The agent's ed25519 identity: created owner-only (0600) in the data dir on first start and
//! reused afterwards. Its PeerId is the node id.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use libp2p::identity::Keypair;

use crate::config::IDENTITY_FILE;
use crate::error::MeshError;

/// Loads the keypair from `data_dir`, or creates and stores a new one.
pub fn load_or_create(data_dir: &Path) -> Result<Keypair, MeshError> {
    let path = data_dir.join(IDENTITY_FILE);
    let io_err = |source| MeshError::IdentityIo {
        path: path.clone(),
        source,
    };
    match fs::read(&path) {
        Ok(bytes) => {
            let mode = fs::metadata(&path).map_err(io_err)?.permissions().mode();
            if mode & 0o077 != 0 {
                tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "mesh identity key is readable by others");
            }
            decode(&bytes).map_err(|reason| MeshError::IdentityDecode {
                path: path.clone(),
                reason,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(data_dir).map_err(io_err)?;
            let keypair = Keypair::generate_ed25519();
            let encoded =
                keypair
                    .to_protobuf_encoding()
                    .map_err(|e| MeshError::IdentityDecode {
                        path: path.clone(),
                        reason: e.to_string(),
                    })?;
            write_private(&path, &encoded).map_err(io_err)?;
            Ok(keypair)
        }
        Err(e) => Err(io_err(e)),
    }
}

fn decode(bytes: &[u8]) -> Result<Keypair, String> {
    let keypair = Keypair::from_protobuf_encoding(bytes).map_err(|e| e.to_string())?;
    if keypair.clone().try_into_ed25519().is_err() {
        return Err("not an ed25519 key".to_owned());
    }
    Ok(keypair)
}

/// Writes `bytes` to `path` with mode 0600 via a temporary file, fsync and rename.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let mut file = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn created_private_then_reused() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        let first = load_or_create(dir.path())?;
        let mode = fs::metadata(dir.path().join(IDENTITY_FILE))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        let second = load_or_create(dir.path())?;
        assert_eq!(first.public().to_peer_id(), second.public().to_peer_id());
        Ok(())
    }

    #[test]
    fn garbage_key_is_an_error() -> anyhow::Result<()> {
        let dir = tempfile::tempdir()?;
        fs::write(dir.path().join(IDENTITY_FILE), b"not a key")?;
        assert!(matches!(
            load_or_create(dir.path()),
            Err(MeshError::IdentityDecode { .. })
        ));
        Ok(())
    }
}
