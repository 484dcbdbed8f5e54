//! The shard crate's one error type: what stops a node from starting or running.
//!
//! Owns: `Error`, each saying what the operator can do where that is known. Must not: be what a
//! request is told: requests are answered with netio's `WireError` (`convert::error`).

/// Result alias of `corekv-shard`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "locked-memory limit is {have_bytes} bytes but glommio needs at least {need_bytes}; \
         raise it with `ulimit -l {need_kib}` (or `ulimit -l unlimited`), or set memlock in \
         /etc/security/limits.conf, then start again"
    )]
    MemlockTooLow {
        have_bytes: u64,
        need_bytes: u64,
        need_kib: u64,
    },
    #[error("CPU {cpu} is not available to this process (available: {available:?}); pick another with --cpu")]
    NoSuchCpu { cpu: usize, available: Vec<usize> },
    #[error("cannot start the executor for shard {shard} on CPU {cpu}: {reason}")]
    Spawn { shard: usize, cpu: usize, reason: String },
    #[error("shard {shard} panicked: {reason}")]
    Panicked { shard: usize, reason: String },
    #[error("configuration: {0}")]
    Config(String),
    /// Joining a running cluster failed (`--join`).
    #[error("--join {endpoints}: {reason}")]
    Join { endpoints: String, reason: String },
    /// A listener could not bind: `flag` names the setting to change.
    #[error("cannot listen on {addr}: {error} (another process uses the port? pick another {flag})")]
    Bind {
        flag: &'static str,
        addr: String,
        error: std::io::Error,
    },
    #[error("{what}: {error}")]
    Io { what: String, error: std::io::Error },
    #[error("data dir {dir} belongs to another node or cluster: {reason}; start it with the arguments it was created with, or use another --data-dir")]
    DataDirMismatch { dir: String, reason: String },
    #[error("storage: {0}")]
    Storage(#[from] corekv_storage::Error),
    #[error("raftstore: {0}")]
    Raft(#[from] corekv_raftstore::Error),
    #[error("shard {shard}: {reason}")]
    Shard { shard: u32, reason: String },
}

impl Error {
    pub fn io(what: impl Into<String>, error: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            error,
        }
    }
}
