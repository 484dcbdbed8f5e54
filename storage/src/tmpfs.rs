//! A real full disk on demand: a size-limited tmpfs (mounted with mount(8), so root only) that
//! can be filled to ENOSPC and freed again. The engines' full-disk tests and the chaos
//! harness use it; the engines themselves never do.
//!
//! Owns: mounting, filling, freeing and (on drop) unmounting one tmpfs. Must not: be mounted
//! anywhere but a directory its caller owns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

/// Bytes written per step while filling.
const FILL_CHUNK_BYTES: usize = 1 << 20;
const FILL_FILE: &str = "tmpfs-fill";

/// A mounted tmpfs; unmounted on drop.
pub struct Tmpfs {
    path: PathBuf,
}

/// Whether this process may mount one (it runs as root).
pub fn can_mount() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

impl Tmpfs {
    /// Mounts a tmpfs of `bytes` on `path` (created if missing), private to its owner (0700).
    pub fn mount(path: &Path, bytes: u64) -> Result<Tmpfs> {
        std::fs::create_dir_all(path).map_err(|e| Error::io("creating a mount point", e))?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={bytes},mode=0700"), "corekv-tmpfs"])
            .arg(path)
            .output()
            .map_err(|e| Error::io("running mount", e))?;
        if !out.status.success() {
            return Err(Error::InvalidArgument(format!(
                "mount a tmpfs on {}: {}",
                path.display(),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(Tmpfs {
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Fills the file system until a write fails with ENOSPC, then frees `leave_bytes` of it
    /// again (in whole chunks); returns the bytes it holds.
    pub fn fill(&self, leave_bytes: u64) -> Result<u64> {
        let path = self.path.join(FILL_FILE);
        let mut file = std::fs::File::create(&path).map_err(|e| Error::io("creating the fill file", e))?;
        let chunk = vec![0xa5u8; FILL_CHUNK_BYTES];
        let mut written = 0u64;
        loop {
            match file.write(&chunk) {
                Ok(0) => break,
                Ok(n) => written += n as u64,
                Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => break,
                Err(e) => return Err(Error::io("filling a tmpfs", e)),
            }
        }
        let keep = written.saturating_sub(leave_bytes.div_ceil(FILL_CHUNK_BYTES as u64) * FILL_CHUNK_BYTES as u64);
        file.set_len(keep).map_err(|e| Error::io("trimming the fill file", e))?;
        Ok(keep)
    }

    /// Frees what `fill` took.
    pub fn free(&self) -> Result<()> {
        match std::fs::remove_file(self.path.join(FILL_FILE)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(Error::io("freeing a filled tmpfs", e)),
            _ => Ok(()),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.path).output();
    }
}
