//! The Raft log engine: one per shard, the write-ahead log of every region the shard owns.
//!
//! Modelled on the idea of tikv/raft-engine — an append-only log of batches plus an in-memory
//! index, instead of RocksDB as a log — but written with O_DIRECT through io_uring and
//! group-committed: one fdatasync covers every region's entries admitted meanwhile.
//!
//! Start with [`LogEngine::open`], [`LogBatch`] and [`LogEngine::append`]. Module map:
//! - `format`: segment header and record framing (byte layout; see docs/format.md);
//! - `batch`: what one append carries, and the payload codec;
//! - `index`: region -> entry locations and states (only what is durable);
//! - `engine`: admission, group commit, reads, purge and rewrite;
//! - `recovery`: opening a directory, torn tails, corruption (`window`: how it reads a segment);
//! - `disk`: the disk trait, the io_uring disk and the fault-injecting in-memory disk.
//!
//! Must not: know what an entry means (data is opaque bytes with an index and a term), or
//! block its executor (all file I/O is io_uring; nothing here calls a blocking syscall after
//! open, which lists the directory once).

mod batch;
mod disk;
mod engine;
mod format;
mod index;
mod recovery;
mod window;

use serde::Deserialize;

pub use batch::LogBatch;
pub use disk::{Disk, DiskFile, Durability, Fault, MemDisk, MemDiskFile, SyncMode, UringDisk, UringFile};
pub use engine::{Appended, LogEngine, LogEntry, LogStats, PurgeReport};
pub use format::{BLOCK_BYTES, RECORD_HEADER_BYTES};
pub use recovery::RecoveryReport;

use crate::{Error, Result};

/// Settings of a log engine; every field has a default fit for a server.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogConfig {
    /// Size of every segment file. Larger: fewer rotations; smaller: finer-grained purge.
    pub segment_bytes: u64,
    /// Largest entry accepted (a raft proposal plus its framing).
    pub entry_bytes_max: usize,
    /// A group stops taking records once its buffer reaches this size: bounds one write.
    pub group_bytes_max: usize,
    /// `purge` rewrites regions that keep more than this many segments alive.
    pub purge_segments_threshold: usize,
    /// Purged segments kept as spares for reuse (no allocation, no file growth).
    pub recycle_segments_max: usize,
    /// How a group commit is made durable on the real disk: "auto" (by the filesystem),
    /// "o_dsync" or "fdatasync" (see `disk`).
    pub sync_mode: SyncMode,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 64 << 20,
            entry_bytes_max: 8 << 20,
            group_bytes_max: 4 << 20,
            purge_segments_threshold: 16,
            recycle_segments_max: 4,
            sync_mode: SyncMode::Auto,
        }
    }
}

impl LogConfig {
    /// Largest framed record: a whole segment minus its header.
    pub fn batch_bytes_max(&self) -> usize {
        (self.segment_bytes as usize) - format::SEGMENT_HEADER_BYTES
    }

    fn validate(&self) -> Result<()> {
        let fail = |what: &str| Err(Error::InvalidArgument(format!("log config: {what}")));
        if !self.segment_bytes.is_multiple_of(BLOCK_BYTES as u64) || self.segment_bytes < 4 * BLOCK_BYTES as u64 {
            return fail("segment_bytes must be a multiple of 4096 and at least 16384");
        }
        if self.segment_bytes > u64::from(u32::MAX) {
            return fail("segment_bytes must fit record offsets in 32 bits (at most 4 GiB)");
        }
        if self.entry_bytes_max + 64 > self.batch_bytes_max() {
            return fail("entry_bytes_max must fit in one segment");
        }
        if self.purge_segments_threshold < 2 {
            return fail("purge_segments_threshold must be at least 2");
        }
        Ok(())
    }
}

impl<D: Disk> LogEngine<D> {
    /// Opens (recovering) or creates the log on `disk`. Must run inside a glommio executor.
    pub async fn open(disk: D, cfg: LogConfig) -> Result<(LogEngine<D>, RecoveryReport)> {
        recovery::open(disk, cfg).await
    }
}

impl LogEngine<UringDisk> {
    /// Opens the log in directory `dir` on the real disk (O_DIRECT through io_uring).
    pub async fn open_dir(dir: &std::path::Path, cfg: LogConfig) -> Result<(Self, RecoveryReport)> {
        let disk = UringDisk::open(dir, cfg.sync_mode)
            .await
            .map_err(|e| Error::io("opening the log directory", e))?;
        Self::open(disk, cfg).await
    }
}
