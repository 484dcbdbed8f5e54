//! Operations on whole SST files: flush, manual compaction, destroying a range, ingesting
//! exported files, checkpoints.
//!
//! Owns: the rules for when RocksDB may drop or add files wholesale — above all that file
//! deletion never touches the `lock` column family and never reaches past a range's end.
//!
//! Must not: run on a shard's thread. Every operation here is slow; call through
//! [`KvEngine::offload`].

use std::path::{Path, PathBuf};

use rocksdb::checkpoint::Checkpoint;
use rocksdb::{BottommostLevelCompaction, CompactOptions, IngestExternalFileOptions, LiveFile};

use super::{check_range, Cf, KvEngine};
use crate::Result;

impl KvEngine {
    /// Writes the memtables of `cf` to an SST file and waits for it. Slow: call through `offload`.
    pub fn flush(&self, cf: Cf) -> Result<()> {
        self.db().flush_cf(self.cf_handle(cf))?;
        Ok(())
    }

    /// Compacts `[start, end)` of `cf` down to the bottommost level and waits for it.
    ///
    /// Slow: call through `offload`.
    pub fn compact_range(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<()> {
        check_range(start, end)?;
        let mut options = CompactOptions::default();
        // Automatic compactions keep running alongside; a manual one must not stall writes.
        options.set_exclusive_manual_compaction(false);
        // Range tombstones (from `delete_range` / `destroy_range`) and the keys they cover are
        // dropped only when a compaction reaches the bottommost level, so rewrite it too;
        // "optimized" skips the files the same manual compaction has just written there.
        options.set_bottommost_level_compaction(BottommostLevelCompaction::ForceOptimized);
        self.db()
            .compact_range_cf_opt(self.cf_handle(cf), Some(start), Some(end), &options);
        Ok(())
    }

    /// Deletes every key in `[start, end)` of every column family, quickly, for a range nobody
    /// will read again (a destroyed or moved-away region).
    ///
    /// Unsafe in RocksDB's sense, not Rust's: SST files entirely inside the range are dropped
    /// without tombstones, so a snapshot or iterator opened earlier may see keys of the range
    /// vanish — except in `lock`, see below. Then a range tombstone per column family, written
    /// atomically and synced, removes what the files did not hold.
    ///
    /// Slow: call through `offload`.
    pub fn destroy_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        check_range(start, end)?;
        let files = self.db().live_files()?;
        for cf in Cf::ALL {
            // Never drop files of the lock CF. A lock must disappear only through a delete the
            // transaction layer decided on (commit or rollback): a reader that stops seeing a
            // lock concludes the key is unlocked, so a lock vanishing under an open snapshot is
            // a wrong answer, not a stale one. Tombstones keep older snapshots consistent. There
            // is also nothing to gain: locks live in the memtable and L0, which file deletion
            // skips anyway.
            if cf == Cf::Lock {
                continue;
            }
            // RocksDB's end bound here is inclusive (it compares user keys): passing `end`
            // would drop a file whose last key is `end` itself, a key outside the range. Pass
            // instead the last key of the last file lying wholly inside the range. A file that
            // a compaction creates meanwhile is dropped only if it lies inside
            // `[start, that key]`, so inside the range too.
            if let Some(last_key) = last_key_of_files_inside(&files, cf, start, end) {
                assert!(start <= last_key.as_slice() && last_key.as_slice() < end);
                self.db()
                    .delete_file_in_range_cf(self.cf_handle(cf), start, &last_key)?;
            }
        }
        let mut batch = self.write_batch();
        for cf in Cf::ALL {
            batch.delete_range(cf, start, end)?;
        }
        self.write(batch, true)
    }

    /// Adds the SST files at `paths` (built by [`super::KvSnapshot::export_ssts`]) to `cf`.
    /// Ingested keys overwrite existing ones; snapshots opened before do not see them.
    ///
    /// On success the files are gone from `paths`: hard-linked into the engine, or copied when
    /// on another file system, then unlinked. On failure they are left in place.
    ///
    /// Slow: call through `offload`.
    pub fn ingest(&self, cf: Cf, paths: &[PathBuf]) -> Result<()> {
        if paths.is_empty() {
            return Ok(());
        }
        let mut options = IngestExternalFileOptions::default();
        // A hard link instead of a copy: exported snapshots can be gigabytes.
        options.set_move_files(true);
        self.db()
            .ingest_external_file_cf_opts(self.cf_handle(cf), &options, paths.to_vec())?;
        Ok(())
    }

    /// Writes a consistent copy of the engine to `dir`, which must not exist, hard-linking SST
    /// files where possible. [`KvEngine::open`] opens the copy as an engine.
    ///
    /// Slow: flushes memtables first; call through `offload`.
    pub fn checkpoint(&self, dir: &Path) -> Result<()> {
        Checkpoint::new(self.db())?.create_checkpoint(dir)?;
        Ok(())
    }
}

/// The largest last key among `cf`'s files whose keys all lie in `[start, end)`, if any.
fn last_key_of_files_inside(files: &[LiveFile], cf: Cf, start: &[u8], end: &[u8]) -> Option<Vec<u8>> {
    files
        .iter()
        .filter(|file| file.column_family_name == cf.name())
        .filter_map(|file| match (&file.start_key, &file.end_key) {
            (Some(first), Some(last)) if start <= first.as_slice() && last.as_slice() < end => Some(last),
            _ => None,
        })
        .max()
        .cloned()
}
