//! Consistent snapshots and SST export.
//!
//! Owns: [`KvSnapshot`], a point-in-time view of every column family that owns a handle on the
//! engine (so it is `'static` and `Send`, and can move into [`super::KvEngine::offload`]), and the
//! export of a key range into SST files, which reads from a snapshot so that all column families
//! are exported as of one moment.
//!
//! Must not: write to the engine. Ingesting exported files is [`super::KvEngine::ingest`].

use std::path::{Path, PathBuf};

use rocksdb::{ReadOptions, SnapshotWithThreadMode, SstFileWriter, DB};

use super::read::sealed::{self, Sealed as _};
use super::read::{KeyRange, KvRead, RangeDigest, Reader};
use super::{Cf, KvEngine};
use crate::{Error, Result};

/// A consistent view of the engine as of [`KvEngine::snapshot`]: later writes are invisible to it.
///
/// Holding a snapshot keeps RocksDB from dropping the versions it sees during compaction, so
/// hold it for as long as a read needs it, not longer.
pub struct KvSnapshot {
    /// Point-get options pinned to `snapshot` (they hold a raw pointer to it).
    get_options: ReadOptions,
    // Declared before `engine` so that it is dropped first: releasing the snapshot calls into
    // the DB that `engine` keeps alive.
    snapshot: SnapshotWithThreadMode<'static, DB>,
    engine: KvEngine,
}

/// One exported SST file: the entries of one column family in the exported range.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SstExport {
    pub cf: Cf,
    pub path: PathBuf,
    /// Entries written, and their crc32c, to compare with [`KvSnapshot::digest`] of the source
    /// or of the engine the file is ingested into.
    pub digest: RangeDigest,
}

impl KvSnapshot {
    pub(super) fn new(engine: &KvEngine) -> KvSnapshot {
        let engine = engine.clone();
        let snapshot = engine.db().snapshot();
        // SAFETY: only the lifetime changes; the reference inside `snapshot` stays valid for as
        // long as `KvSnapshot` uses it:
        // - It points at the `DB` inside the `Arc` that `engine` holds. The `DB` lives in the
        //   Arc's heap allocation, so moving `engine` (an Arc pointer) into the struct below does
        //   not move it, and the allocation lives while `engine` does.
        // - `engine` is a private field that is never replaced, and `snapshot` is declared before
        //   it, so the snapshot is dropped (and released through that reference) first.
        // - The `'static` reference never escapes: `snapshot` is private, and is only ever passed
        //   to `ReadOptions::set_snapshot`, for `get_options` (a field of the same struct) and
        //   inside `Reader`, whose results borrow `&self`. The snapshot's own methods that
        //   return `'static`-bound iterators are never called.
        let snapshot = unsafe {
            std::mem::transmute::<SnapshotWithThreadMode<'_, DB>, SnapshotWithThreadMode<'static, DB>>(snapshot)
        };
        let mut get_options = ReadOptions::default();
        get_options.set_snapshot(&snapshot);
        KvSnapshot {
            get_options,
            snapshot,
            engine,
        }
    }

    /// RocksDB sequence number the snapshot was taken at.
    pub fn sequence_number(&self) -> u64 {
        self.snapshot.sequence_number()
    }

    /// Count and checksum of every entry of `cf` in `range`. Slow: reads the whole range; call
    /// through `offload`.
    pub fn digest(&self, cf: Cf, range: &KeyRange) -> Result<RangeDigest> {
        self.reader().digest(cf, range)
    }

    /// Writes the entries of `range` into one SST file per column family, `<dir>/<cf>.sst`,
    /// skipping column families with no entry in the range. Refuses to overwrite a file; on an
    /// error, files already written stay in `dir` for the caller to remove with it.
    ///
    /// Slow: reads the whole range and writes files; call through `offload`.
    pub fn export_ssts(&self, dir: &Path, cfs: &[Cf], range: &KeyRange) -> Result<Vec<SstExport>> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io("creating the SST export dir", e))?;
        let mut exports = Vec::with_capacity(cfs.len());
        for &cf in cfs {
            if let Some(export) = self.export_cf(dir, cf, range)? {
                exports.push(export);
            }
        }
        Ok(exports)
    }

    fn export_cf(&self, dir: &Path, cf: Cf, range: &KeyRange) -> Result<Option<SstExport>> {
        let path = dir.join(format!("{}.sst", cf.name()));
        if path.exists() {
            return Err(Error::InvalidArgument(format!("{} exists", path.display())));
        }
        // The column family's own options, so the file is built (compression, filters) like
        // one its engine would have written.
        let mut writer = SstFileWriter::create(self.engine.cf_options(cf));
        let mut digest = RangeDigest::default();
        let mut iter = self.reader().bulk_iter(cf, range);
        while let Some((key, value)) = iter.next_entry()? {
            // Opened (which creates the file) only once there is an entry: RocksDB cannot
            // finish an SST file without one.
            if digest.keys == 0 {
                writer.open(&path)?;
            }
            writer.put(key, value)?;
            digest.add(key, value);
        }
        if digest.keys == 0 {
            return Ok(None);
        }
        writer.finish()?;
        Ok(Some(SstExport { cf, path, digest }))
    }
}

impl std::fmt::Debug for KvSnapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KvSnapshot")
            .field("sequence_number", &self.sequence_number())
            .finish()
    }
}

impl sealed::Sealed for KvSnapshot {
    fn reader(&self) -> Reader<'_> {
        Reader::new(&self.engine, Some(&self.snapshot), &self.get_options)
    }
}

impl KvRead for KvSnapshot {}
