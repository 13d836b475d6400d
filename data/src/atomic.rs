//! Writing a file (or a dataset directory) whole or not at all: every writer of recursa
//! goes through here.
//!
//! The bytes go to a uniquely named temporary file beside the target (`tempfile`),
//! are synced, and the file is renamed onto the target; on any error (a full disk)
//! the temporary file is removed and the target is untouched.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::DataError;

fn temp_beside(path: &Path) -> Result<tempfile::NamedTempFile, DataError> {
    let name = path
        .file_name()
        .ok_or_else(|| DataError::InvalidOptions(format!("{}: not a file path", path.display())))?;
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    tempfile::Builder::new()
        .prefix(&format!(".{}.", name.to_string_lossy()))
        .suffix(".tmp")
        .tempfile_in(dir)
        .map_err(|e| DataError::io(path, e))
}

fn write_synced(
    tmp: &mut tempfile::NamedTempFile,
    path: &Path,
    bytes: &[u8],
) -> Result<(), DataError> {
    let file = tmp.as_file_mut();
    file.write_all(bytes)
        .and_then(|_| file.sync_all())
        .map_err(|e| DataError::io(path, e))
}

/// Writes `bytes` to `path`, replacing what is there.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    let mut tmp = temp_beside(path)?;
    write_synced(&mut tmp, path, bytes)?;
    tmp.persist(path)
        .map_err(|e| DataError::io(path, e.error))?;
    Ok(())
}

/// Writes `bytes` to `path`, which must not exist ([`DataError::OutputExists`]
/// otherwise; an existing file is never replaced).
pub fn write_new_atomic(path: &Path, bytes: &[u8]) -> Result<(), DataError> {
    if path.symlink_metadata().is_ok() {
        return Err(DataError::OutputExists {
            path: path.to_path_buf(),
        });
    }
    let mut tmp = temp_beside(path)?;
    write_synced(&mut tmp, path, bytes)?;
    match tmp.persist_noclobber(path) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::AlreadyExists => {
            Err(DataError::OutputExists {
                path: path.to_path_buf(),
            })
        }
        Err(e) => Err(DataError::io(path, e.error)),
    }
}

/// Fails with [`DataError::OutputExists`] if `out` exists (file, directory or link).
pub(crate) fn check_output_free(out: &Path) -> Result<(), DataError> {
    if out.symlink_metadata().is_ok() {
        return Err(DataError::OutputExists {
            path: out.to_path_buf(),
        });
    }
    Ok(())
}

/// Removes `.{name}.{pid}.*.tmp` directories in `parent` left by a build whose
/// process is gone (killed before it could clean up). Linux only: elsewhere
/// liveness is unknown and nothing is removed.
fn remove_stale_temps(parent: &Path, name: &str) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name().to_string_lossy().to_string();
        let Some(rest) = file
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".tmp"))
        else {
            continue;
        };
        let Some(pid) = rest.split('.').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// A temporary directory removed on drop unless [`TempDir::commit`] renamed it.
pub(crate) struct TempDir {
    pub(crate) path: PathBuf,
    committed: bool,
}

impl TempDir {
    /// Creates `.{name}.{pid}.{n}.tmp` next to `out` (creating `out`'s parent if needed).
    pub(crate) fn next_to(out: &Path) -> Result<TempDir, DataError> {
        let name = out.file_name().ok_or_else(|| {
            DataError::InvalidOptions(format!("output {} has no file name", out.display()))
        })?;
        let parent = match out.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        std::fs::create_dir_all(&parent).map_err(|e| DataError::io(&parent, e))?;
        remove_stale_temps(&parent, &name.to_string_lossy());
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = parent.join(format!(
            ".{}.{}.{n}.tmp",
            name.to_string_lossy(),
            std::process::id()
        ));
        std::fs::create_dir(&path).map_err(|e| DataError::io(&path, e))?;
        Ok(TempDir {
            path,
            committed: false,
        })
    }

    /// Renames the directory to `out`, unless `out` appeared meanwhile.
    pub(crate) fn commit(mut self, out: &Path) -> Result<(), DataError> {
        check_output_free(out)?;
        std::fs::rename(&self.path, out).map_err(|e| DataError::io(out, e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_whole_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.json");
        write_atomic(&path, b"one").unwrap();
        write_atomic(&path, b"two").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
        assert_eq!(names.len(), 1);
        assert!(matches!(
            write_new_atomic(&path, b"three"),
            Err(DataError::OutputExists { .. })
        ));
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        // A directory that does not exist: an error naming the file, nothing written.
        let missing = dir.path().join("no/such/dir/b.json");
        let e = write_atomic(&missing, b"x").unwrap_err().to_string();
        assert!(e.contains("b.json"), "{e}");
    }
}
