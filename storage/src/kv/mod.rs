//! The KV engine: one RocksDB instance per shard, holding the user data of the shard's regions
//! and their apply metadata.
//!
//! Owns: the RocksDB handle and its column families ([`Cf`]), atomic cross-CF write batches
//! ([`WriteBatch`]), consistent snapshots ([`KvSnapshot`]), bounded iteration ([`KvIter`]), and the
//! bulk operations region management needs: destroying a range, exporting and ingesting SST
//! files, checkpoints, size estimates, manual compaction.
//!
//! Must not: know what keys mean (no MVCC encoding, no region boundaries: a range is two byte
//! strings), hold the Raft log (that is `raftlog`), or block the shard's executor on slow work.
//!
//! # Blocking discipline
//!
//! Every RocksDB call blocks its thread, and a blocked shard thread stalls every region on that
//! core. So calls are split in two:
//!
//! - **On the shard's thread**: `write(.., sync: false)` (a memtable insert and a WAL append to
//!   the page cache), `get`, `snapshot`, `delete_range` (one tombstone), and short bounded
//!   `iter` / `scan` calls with a small limit, which usually hit the block cache. These still
//!   wait when RocksDB applies write-stall backpressure; that shows up as latency, on purpose.
//! - **Off it, through [`KvEngine::offload`]**: `write(.., sync: true)` (an fsync), `flush`,
//!   `compact_range`, `destroy_range`, `ingest`, SST export, `checkpoint`, `approximate_size`,
//!   `approximate_keys`, `statistics`, digests, large scans, and dropping the last clone of an
//!   engine (closing RocksDB waits for its background jobs). Their docs say "Slow".
//!
//! `offload` runs a closure on glommio's blocking thread pool, outside the executor, which keeps
//! serving other tasks until the result is ready.
//!
//! Start reading at [`KvEngine::open`]; options and their reasons are in `options.rs`.
//!
//! Performance-critical: `write`, `get` and [`KvIter::next_entry`] are on every request's path.

mod batch;
mod files;
mod options;
mod read;
mod snapshot;
mod stats;

use std::future::Future;
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::sync::Arc;

use rocksdb::{ColumnFamily, ColumnFamilyDescriptor, ErrorKind, Options, ReadOptions, WriteOptions, DB};

pub use self::batch::WriteBatch;
pub use self::options::{KvConfig, SharedBlockCache};
pub use self::read::{Direction, KeyRange, KvIter, KvRead, RangeDigest};
pub use self::snapshot::{KvSnapshot, SstExport};
pub use self::stats::KvProperties;

use self::batch::Limits;
use self::read::{sealed, Reader};
use crate::{Error, Result};

/// The engine's column families.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Cf {
    /// Values of committed and prewritten transactions (TiKV's data CF).
    Default,
    /// Percolator locks: small, short-lived, read by nearly every request.
    Lock,
    /// Commit records, pointing into `Default` or holding short values inline.
    Write,
    /// Per-region state: region descriptors and apply state.
    Meta,
}

impl Cf {
    pub const ALL: [Cf; 4] = [Cf::Default, Cf::Lock, Cf::Write, Cf::Meta];

    /// The column family's name in RocksDB; part of the on-disk format, never changed.
    pub fn name(self) -> &'static str {
        match self {
            Cf::Default => rocksdb::DEFAULT_COLUMN_FAMILY_NAME,
            Cf::Lock => "lock",
            Cf::Write => "write",
            Cf::Meta => "meta",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Fails with `InvalidArgument` unless `start < end`: an empty or reversed range is a caller bug
/// that RocksDB would silently treat as a no-op (or worse, for file deletion).
fn check_range(start: &[u8], end: &[u8]) -> Result<()> {
    if start < end {
        return Ok(());
    }
    Err(Error::InvalidArgument(format!(
        "range start {start:?} is not below its end {end:?}"
    )))
}

/// One shard's KV engine. Cheap to clone; clones share the database. `Send + Sync`.
#[derive(Clone)]
pub struct KvEngine {
    inner: Arc<Inner>,
}

// The engine and its snapshots move between the shard's executor and the blocking pool.
const _: () = {
    const fn send_sync<T: Send + Sync>() {}
    send_sync::<KvEngine>();
    send_sync::<KvSnapshot>();
};

struct Inner {
    db: DB,
    /// Kept for its statistics object, which RocksDB reaches only through the options.
    db_options: Options,
    /// Per column family, indexed by `Cf::index`; SST export builds files with them.
    cf_options: [Options; Cf::ALL.len()],
    /// Point-get options, made once: creating `ReadOptions` allocates.
    get_options: ReadOptions,
    limits: Limits,
}

/// A file system's size and the part of it free for the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskSpace {
    pub capacity_bytes: u64,
    pub available_bytes: u64,
}

impl KvEngine {
    /// Opens (creating if missing) the engine at `path`, creating missing column families.
    /// Reopening a path finds the data written before. Fails with `Error::Open` if another
    /// engine, in this process or another, has the path open.
    ///
    /// Slow: replays the WAL; call before the shard starts serving, or through `offload`.
    pub fn open(path: &Path, config: &KvConfig, cache: &SharedBlockCache) -> Result<KvEngine> {
        config.validate()?;
        let db_options = options::db_options(config);
        let cf_options = Cf::ALL.map(|cf| options::cf_options(cf, config, cache));
        let descriptors = Cf::ALL
            .iter()
            .map(|&cf| ColumnFamilyDescriptor::new(cf.name(), cf_options[cf.index()].clone()));
        let db = DB::open_cf_descriptors(&db_options, path, descriptors).map_err(|error| open_error(path, error))?;
        let engine = KvEngine {
            inner: Arc::new(Inner {
                db,
                db_options,
                cf_options,
                get_options: ReadOptions::default(),
                limits: Limits::new(config),
            }),
        };
        for cf in Cf::ALL {
            assert!(
                engine.db().cf_handle(cf.name()).is_some(),
                "column family {cf:?} not open"
            );
        }
        tracing::debug!(path = %path.display(), "kv engine opened");
        Ok(engine)
    }

    fn db(&self) -> &DB {
        &self.inner.db
    }

    /// Bytes the engine's file system has free for it (statvfs: a metadata call, no I/O).
    pub fn available_bytes(&self) -> Result<u64> {
        Ok(self.disk_space()?.available_bytes)
    }

    /// The size of the engine's file system and what it has free for it (statvfs).
    pub fn disk_space(&self) -> Result<DiskSpace> {
        let path = std::ffi::CString::new(self.db().path().as_os_str().as_encoded_bytes())
            .map_err(|_| Error::InvalidArgument("engine path holds a NUL byte".into()))?;
        // SAFETY: an all-zero statvfs is a valid value for statvfs(3) to overwrite.
        let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
        // SAFETY: `path` is NUL-terminated and `st` is a valid, writable statvfs.
        if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
            return Err(Error::io("reading free space", std::io::Error::last_os_error()));
        }
        Ok(DiskSpace {
            capacity_bytes: st.f_blocks as u64 * st.f_frsize as u64,
            available_bytes: st.f_bavail as u64 * st.f_frsize as u64,
        })
    }

    fn cf_handle(&self, cf: Cf) -> &ColumnFamily {
        self.db()
            .cf_handle(cf.name())
            .expect("open() checked that every Cf is open")
    }

    fn cf_options(&self, cf: Cf) -> &Options {
        &self.inner.cf_options[cf.index()]
    }

    fn limits(&self) -> Limits {
        self.inner.limits
    }

    /// An empty batch for this engine, checked against this engine's size limits.
    pub fn write_batch(&self) -> WriteBatch {
        WriteBatch::new(self.clone())
    }

    /// Writes the whole batch atomically: after a crash, all of it or none of it is there.
    ///
    /// `sync: false` returns once the batch is in the memtable and the WAL is in the page cache:
    /// it survives a process crash but not a machine crash. `sync: true` also fsyncs the WAL.
    /// Slow when `sync`: call through `offload`.
    ///
    /// Panics if the batch was built for another engine.
    pub fn write(&self, batch: WriteBatch, sync: bool) -> Result<()> {
        let (batch, engine) = batch.into_parts();
        // Column families are recorded in a batch by id; another engine's ids may differ.
        assert!(
            Arc::ptr_eq(&engine.inner, &self.inner),
            "write batch built for another engine"
        );
        let mut options = WriteOptions::default();
        options.set_sync(sync);
        self.db().write_opt(batch, &options)?;
        Ok(())
    }

    /// A consistent view of every column family as of now.
    pub fn snapshot(&self) -> KvSnapshot {
        KvSnapshot::new(self)
    }

    /// Deletes every key of `cf` in `[start, end)`, with one range tombstone (not synced).
    pub fn delete_range(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<()> {
        let mut batch = self.write_batch();
        batch.delete_range(cf, start, end)?;
        self.write(batch, false)
    }

    /// Runs `f` on glommio's blocking thread pool and returns its result, so that a slow RocksDB
    /// call does not stall the executor. A panic in `f` is resumed in the awaiting task.
    ///
    /// Must be called from a task of a glommio executor (the closure is handed to that
    /// executor's pool); called anywhere else it panics, naming the caller. The closure is
    /// queued when the returned future is first polled.
    ///
    /// glommio's pool defaults to one thread placed like its executor, so on a pinned shard
    /// offloaded calls would run one at a time on the shard's own core: the shard should give
    /// its executor a `blocking_thread_pool_placement` of its own.
    #[track_caller]
    pub fn offload<R, F>(&self, f: F) -> impl Future<Output = R> + 'static
    where
        R: Send + 'static,
        F: FnOnce(&KvEngine) -> R + Send + 'static,
    {
        assert!(
            on_glommio_executor(),
            "KvEngine::offload must be called from a glommio executor task"
        );
        let engine = self.clone();
        let result = glommio::executor().spawn_blocking(move || {
            // Caught here because a panic would kill the pool thread without ever answering,
            // leaving the awaiting task hung; it is resumed on the awaiting side instead. The
            // engine cannot be left broken by a panicking closure: RocksDB keeps its own state
            // consistent, and `f` is gone after the panic.
            panic::catch_unwind(AssertUnwindSafe(move || f(&engine)))
        });
        async move {
            match result.await {
                Ok(value) => value,
                Err(payload) => panic::resume_unwind(payload),
            }
        }
    }
}

/// glommio has no query for "is an executor running on this thread"; its executor proxy panics
/// when there is none. This probe turns that into a bool (the default panic hook still prints
/// glommio's message once before `offload`'s own).
fn on_glommio_executor() -> bool {
    panic::catch_unwind(|| glommio::executor().id()).is_ok()
}

/// Classifies an open failure: a held lock or contradicting settings become `Error::Open`, with
/// the path; anything else (I/O, corruption) stays a RocksDB error.
fn open_error(path: &Path, error: rocksdb::Error) -> Error {
    let message = error.as_ref();
    let reason = if error.kind() == ErrorKind::IOError && message.contains("/LOCK:") {
        format!("locked by another engine instance ({message})")
    } else if error.kind() == ErrorKind::InvalidArgument {
        message.to_owned()
    } else {
        return Error::Rocks(error);
    };
    Error::Open {
        path: path.display().to_string(),
        reason,
    }
}

impl std::fmt::Debug for KvEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvEngine").field("path", &self.db().path()).finish()
    }
}

impl sealed::Sealed for KvEngine {
    fn reader(&self) -> Reader<'_> {
        Reader::new(self, None, &self.inner.get_options)
    }
}

impl KvRead for KvEngine {}
