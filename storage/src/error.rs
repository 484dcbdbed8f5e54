//! The storage crate's one error type.
//!
//! Owns: every failure either engine can report, and the split between what a caller may retry
//! (`NoSpace`, `Io`, `Busy`) and what it must not (`Corruption`, the `*TooLarge` / `Invalid*`
//! rejections of bad input). Wire error codes are assigned in `code()` and never reused.

use std::io;

/// Result alias used throughout `corekv-storage`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The disk is full. Nothing acknowledged was lost; retry once space is freed.
    #[error("no space left on device while {op}")]
    NoSpace { op: &'static str },

    /// An I/O error. Nothing acknowledged was lost; the failed batch was not acknowledged.
    /// (`error`, not `source`: the message says it once, and a chain printer would say it twice.)
    #[error("I/O error while {op}: {error}")]
    Io { op: &'static str, error: io::Error },

    /// On-disk data failed a checksum or a structural check somewhere other than the torn tail.
    /// Never retried and never skipped: the operator must look.
    #[error("corruption in {file} at offset {offset}: {reason}")]
    Corruption { file: String, offset: u64, reason: String },

    /// One entry is larger than the configured maximum.
    #[error("entry of {size} bytes exceeds the maximum of {max} bytes")]
    EntryTooLarge { size: usize, max: usize },

    /// A whole batch is larger than one segment can hold.
    #[error("batch of {size} bytes exceeds the maximum of {max} bytes")]
    BatchTooLarge { size: usize, max: usize },

    /// A key or value exceeds its configured limit.
    #[error("{what} of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },

    /// An append that would leave a hole in a region's log, or reach below its compacted prefix.
    #[error("region {region_id}: cannot append at index {first_index} (log holds {log_first}..={log_last})")]
    NonContiguous {
        region_id: u64,
        first_index: u64,
        log_first: u64,
        log_last: u64,
    },

    /// A read of log entries that the engine no longer (or never) held.
    #[error("region {region_id}: index {index} is not in the log (holds {log_first}..={log_last})")]
    IndexOutOfRange {
        region_id: u64,
        index: u64,
        log_first: u64,
        log_last: u64,
    },

    /// The caller passed an argument that can never succeed (empty range, reversed bounds...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The engine was opened with settings the data on disk contradicts, or locked by another.
    #[error("cannot open {path}: {reason}")]
    Open { path: String, reason: String },

    /// RocksDB reported an error (other than a full disk, which is `NoSpace`).
    #[error("rocksdb: {0}")]
    Rocks(rocksdb::Error),

    /// The log engine stopped accepting writes after a write or sync failed: what reached the
    /// disk is unknown, so nothing more is appended until the engine is reopened (recovery
    /// then establishes what is durable). Reads keep working.
    #[error("log engine stopped after an I/O failure ({0}); reopen it to recover")]
    Poisoned(String),

    /// A blocking task on the off-executor pool could not run or panicked.
    #[error("background task failed: {0}")]
    Background(String),
}

impl Error {
    /// Wire error code of this error; stable across releases, never reused.
    pub fn code(&self) -> u16 {
        match self {
            Error::NoSpace { .. } => 100,
            Error::Io { .. } => 101,
            Error::Corruption { .. } => 102,
            Error::EntryTooLarge { .. } => 103,
            Error::BatchTooLarge { .. } => 104,
            Error::TooLarge { .. } => 105,
            Error::NonContiguous { .. } => 106,
            Error::IndexOutOfRange { .. } => 107,
            Error::InvalidArgument(_) => 108,
            Error::Open { .. } => 109,
            Error::Rocks(_) => 110,
            Error::Background(_) => 111,
            Error::Poisoned(_) => 112,
        }
    }

    /// Whether the same request may succeed if retried later (after space is freed, a
    /// transient device error clears, ...). Bad input and corruption are never retryable.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::NoSpace { .. } | Error::Io { .. } | Error::Background(_))
    }

    /// A copy for every waiter of a failed group commit: `io::Error` is not `Clone`, so the
    /// source keeps its kind and message.
    pub(crate) fn duplicate(&self) -> Error {
        match self {
            Error::NoSpace { op } => Error::NoSpace { op },
            Error::Io { op, error } => Error::Io {
                op,
                error: io::Error::new(error.kind(), error.to_string()),
            },
            Error::Poisoned(why) => Error::Poisoned(why.clone()),
            other => Error::Background(other.to_string()),
        }
    }

    /// Whether this is a full disk (retry once space is freed).
    pub fn is_no_space(&self) -> bool {
        matches!(self, Error::NoSpace { .. })
    }

    /// Classifies an `io::Error` from operation `op`: ENOSPC/EDQUOT become `NoSpace`.
    pub fn io(op: &'static str, error: io::Error) -> Error {
        match error.raw_os_error() {
            Some(libc::ENOSPC) | Some(libc::EDQUOT) => Error::NoSpace { op },
            _ => Error::Io { op, error },
        }
    }
}

/// A full disk inside RocksDB (its `IOError` with ENOSPC's text, the only form it reports it
/// in) becomes `NoSpace`: RocksDB recovers from it by itself once space is freed (its
/// SstFileManager polls for space and resumes writes), so the caller may retry.
impl From<rocksdb::Error> for Error {
    fn from(error: rocksdb::Error) -> Error {
        if error.kind() == rocksdb::ErrorKind::IOError && error.as_ref().contains("No space left on device") {
            return Error::NoSpace {
                op: "writing the KV engine",
            };
        }
        Error::Rocks(error)
    }
}
