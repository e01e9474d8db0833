//! Task files (secrets, configs) on an in-memory filesystem, never on the node's disk.
//!
//! Each task that mounts secrets or configs gets a directory of its own under a root on a tmpfs
//! (by default `/dev/shm/shoal/<node id>`, checked to be a tmpfs before anything is written);
//! its files are written there with their owner and mode and bind-mounted read-only into the
//! container at their targets, so the engine's inspect output shows only the path. The
//! directory is removed when the task's container stops or is removed, and at start-up for
//! tasks that no longer have a container.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bollard::models::{Mount, MountType};
use shoal_consensus::sealed::TaskFile;
use shoal_scheduler::{NodeId, TaskId};

use crate::executor::{ExecutorError, Result, parse_task_id};

/// Where the tmpfs roots of task files are made by default (a tmpfs on every Linux machine).
pub const DEFAULT_FILES_BASE: &str = "/dev/shm/shoal";

/// The directory of every task's files on this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskFilesRoot {
    root: PathBuf,
}

impl TaskFilesRoot {
    /// The default root of node `node`: `/dev/shm/shoal/<node>`.
    pub fn default_for(node: &NodeId) -> TaskFilesRoot {
        TaskFilesRoot::at(Path::new(DEFAULT_FILES_BASE).join(node.as_str()))
    }

    /// The root at `root` (made, mode 0700, when first needed).
    pub fn at(root: impl Into<PathBuf>) -> TaskFilesRoot {
        TaskFilesRoot { root: root.into() }
    }

    /// The root's path.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The directory of `task`'s files.
    fn task_dir(&self, task: TaskId) -> PathBuf {
        self.root.join(task.to_string())
    }

    /// Writes `task`'s files and returns the read-only bind mounts that put them at their
    /// targets. Rewrites files already there (a container adopted after a restart of the
    /// machine finds them again). Refuses a root that is not on a tmpfs.
    pub fn write(&self, task: TaskId, files: &[TaskFile]) -> Result<Vec<Mount>> {
        let dir = self.task_dir(task);
        self.make_task_dir(&dir)?;
        let mut mounts = Vec::with_capacity(files.len());
        for (index, file) in files.iter().enumerate() {
            if !file.target.starts_with('/') {
                return Err(ExecutorError::InvalidSpec(format!(
                    "{} {}: target {:?} is not an absolute path",
                    file.kind, file.source, file.target
                )));
            }
            let path = dir.join(format!("{index}-{}", file.kind));
            write_file(&path, file)?;
            mounts.push(Mount {
                typ: Some(MountType::BIND),
                source: Some(path.to_string_lossy().into_owned()),
                target: Some(file.target.clone()),
                read_only: Some(true),
                ..Default::default()
            });
        }
        Ok(mounts)
    }

    /// Makes `task`'s directory (owner-only) in the root, made and checked first. The root of a
    /// node that holds no task's files is removed ([`TaskFilesRoot::forget`]): made again when
    /// it went between the check and the directory.
    fn make_task_dir(&self, dir: &Path) -> Result<()> {
        for _ in 0..3 {
            self.ensure_root()?;
            match fs::create_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_error(dir, e)),
            }
            return fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .map_err(|e| io_error(dir, e));
        }
        Err(io_error(
            dir,
            std::io::Error::other("its root keeps disappearing"),
        ))
    }

    /// Forgets `task`'s files (nothing to do when it has none), and the root once no task has
    /// files in it.
    pub fn forget(&self, task: TaskId) {
        let dir = self.task_dir(task);
        match fs::remove_dir_all(&dir) {
            Ok(()) => tracing::debug!(%task, "task files forgotten"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                tracing::warn!(%task, dir = %dir.display(), %error, "task files not removed")
            }
        }
        // Fails, as it should, while another task's files are there.
        let _ = fs::remove_dir(&self.root);
    }

    /// Forgets the files of every task not in `keep` (tasks whose container is gone).
    pub fn prune(&self, keep: &HashSet<TaskId>) {
        let Ok(entries) = fs::read_dir(&self.root) else {
            return;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let task = name.to_str().and_then(parse_task_id);
            if let Some(task) = task.filter(|t| !keep.contains(t)) {
                self.forget(task);
            }
        }
    }

    /// Makes the root (mode 0700) and checks that it is on a tmpfs.
    fn ensure_root(&self) -> Result<()> {
        make_private_dir(&self.root).map_err(|e| io_error(&self.root, e))?;
        let on_tmpfs = nix::sys::statfs::statfs(&self.root)
            .map(|s| s.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC)
            .map_err(|e| io_error(&self.root, e.into()))?;
        if !on_tmpfs {
            return Err(ExecutorError::InvalidSpec(format!(
                "{} is not on a tmpfs: secrets and configs would reach the node's disk, so \
                 tasks that mount them are refused here",
                self.root.display()
            )));
        }
        Ok(())
    }
}

/// Makes `dir` and its parents; `dir` itself owner-only.
fn make_private_dir(dir: &Path) -> std::io::Result<()> {
    fs::create_dir_all(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Writes one file through a temporary name (owner-only until its owner and mode are set) and
/// renames it into place.
fn write_file(path: &Path, file: &TaskFile) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let _ = fs::remove_file(&tmp);
    let write = || -> std::io::Result<()> {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        out.write_all(&file.bytes)?;
        let meta = out.metadata()?;
        if meta.uid() != file.uid || meta.gid() != file.gid {
            std::os::unix::fs::fchown(&out, Some(file.uid), Some(file.gid))?;
        }
        out.set_permissions(fs::Permissions::from_mode(file.mode & 0o7777))?;
        fs::rename(&tmp, path)
    };
    write().map_err(|error| {
        let _ = fs::remove_file(&tmp);
        ExecutorError::InvalidSpec(format!(
            "{} {} (to {}, owner {}:{}) could not be written on this node: {error}",
            file.kind, file.source, file.target, file.uid, file.gid
        ))
    })
}

fn io_error(path: &Path, error: std::io::Error) -> ExecutorError {
    ExecutorError::InvalidSpec(format!("task files directory {}: {error}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoal_scheduler::ObjectKind;
    use zeroize::Zeroizing;

    fn file(kind: ObjectKind, target: &str, mode: u32, bytes: &[u8]) -> TaskFile {
        TaskFile {
            kind,
            source: "s".into(),
            target: target.into(),
            uid: nix::unistd::geteuid().as_raw(),
            gid: nix::unistd::getegid().as_raw(),
            mode,
            bytes: Zeroizing::new(bytes.to_vec()),
        }
    }

    fn shm_root() -> TaskFilesRoot {
        let unique = format!("test-{}-{:x}", std::process::id(), rand_suffix());
        TaskFilesRoot::at(Path::new(DEFAULT_FILES_BASE).join(unique))
    }

    fn rand_suffix() -> u64 {
        let mut bytes = [0u8; 8];
        getrandom::getrandom(&mut bytes).expect("random");
        u64::from_le_bytes(bytes)
    }

    #[test]
    fn files_land_on_the_tmpfs_with_their_mode_and_become_read_only_binds() {
        let root = shm_root();
        let files = [
            file(ObjectKind::Secret, "/run/secrets/db", 0o400, b"hunter2"),
            file(ObjectKind::Config, "/etc/site.conf", 0o444, b"listen 80"),
        ];
        let mounts = root.write(TaskId(0x2a), &files).expect("written");
        assert_eq!(mounts.len(), 2);
        let source = PathBuf::from(mounts[0].source.clone().expect("source"));
        assert!(source.starts_with(root.path()));
        assert_eq!(fs::read(&source).expect("read"), b"hunter2");
        let mode = fs::metadata(&source).expect("meta").permissions().mode() & 0o7777;
        assert_eq!(mode, 0o400);
        assert_eq!(mounts[0].target.as_deref(), Some("/run/secrets/db"));
        assert_eq!(mounts[0].read_only, Some(true));
        let dir_mode = fs::metadata(root.path())
            .expect("meta")
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(dir_mode, 0o700);

        // Written again (an adopted container): the same content, no error.
        root.write(TaskId(0x2a), &files).expect("rewritten");
        root.write(TaskId(0x2b), &files[..1]).expect("written");
        root.prune(&HashSet::from([TaskId(0x2b)]));
        assert!(
            !source.exists(),
            "the files of a task without a container are pruned"
        );
        assert!(
            root.path().exists(),
            "the root stays while a task has files"
        );
        root.forget(TaskId(0x2b));
        root.forget(TaskId(0x2b));
        assert!(
            !root.path().exists(),
            "the root goes with the last task's files"
        );
    }

    #[test]
    fn a_root_on_disk_is_refused_and_nothing_is_written() {
        let dir = tempfile::Builder::new()
            .prefix(".test-task-files-")
            .tempdir_in(env!("CARGO_MANIFEST_DIR"))
            .expect("a directory on disk");
        let root = TaskFilesRoot::at(dir.path().join("files"));
        let files = [file(
            ObjectKind::Secret,
            "/run/secrets/db",
            0o400,
            b"hunter2",
        )];
        let error = root.write(TaskId(1), &files).expect_err("refused");
        assert!(error.rejects_task());
        assert!(error.to_string().contains("not on a tmpfs"), "{error}");
        assert!(!error.to_string().contains("hunter2"));
        assert!(!root.task_dir(TaskId(1)).exists());
    }

    #[test]
    fn a_relative_target_is_refused() {
        let root = shm_root();
        let files = [file(ObjectKind::Config, "etc/x", 0o444, b"x")];
        let error = root.write(TaskId(3), &files).expect_err("refused");
        assert!(error.to_string().contains("absolute"), "{error}");
        root.forget(TaskId(3));
        assert!(!root.path().exists());
    }
}
