//! The shard crate's one error type: what stops a node from starting or running.

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
    #[error("cannot listen on {addr}: {source} (is another process using the port? pick another --addr)")]
    Bind { addr: String, source: std::io::Error },
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("data dir {dir} belongs to another layout: {reason}")]
    DataDirMismatch { dir: String, reason: String },
    #[error("storage: {0}")]
    Storage(#[from] corekv_storage::Error),
    #[error("raftstore: {0}")]
    Raft(#[from] corekv_raftstore::Error),
    #[error("shard {shard}: {reason}")]
    Shard { shard: u32, reason: String },
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}
