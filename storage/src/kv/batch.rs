//! Atomic write batches across column families.
//!
//! Owns: [`WriteBatch`], and the key, value and batch size limits, checked when an operation is
//! added so that a batch that exists is a batch that can be written.
//!
//! Must not: write anything itself — [`super::KvEngine::write`] does, atomically, or not at all.
//!
//! Performance-critical: every applied Raft entry goes through a batch. No allocation per
//! operation beyond RocksDB's own buffer growth.

use super::options::BATCH_RECORD_OVERHEAD_BYTES_MAX;
use super::{check_range, Cf, KvConfig, KvEngine};
use crate::{Error, Result};

/// The size limits of one engine, copied from its [`KvConfig`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Limits {
    pub(super) key_bytes_max: usize,
    pub(super) value_bytes_max: usize,
    pub(super) batch_bytes_max: usize,
}

impl Limits {
    pub(super) fn new(config: &KvConfig) -> Limits {
        Limits {
            key_bytes_max: config.key_bytes_max,
            value_bytes_max: config.value_bytes_max,
            batch_bytes_max: config.batch_bytes_max,
        }
    }

    pub(super) fn check_key(&self, key: &[u8]) -> Result<()> {
        check_size("key", key.len(), self.key_bytes_max)
    }
}

fn check_size(what: &'static str, size: usize, max: usize) -> Result<()> {
    if size > max {
        return Err(Error::TooLarge { what, size, max });
    }
    Ok(())
}

/// Puts and deletes over any column families, written all together or not at all by
/// [`KvEngine::write`]. Built by [`KvEngine::write_batch`] and bound to that engine.
///
/// A rejected operation leaves the batch as it was.
pub struct WriteBatch {
    inner: rocksdb::WriteBatch,
    engine: KvEngine,
}

impl WriteBatch {
    pub(super) fn new(engine: KvEngine) -> WriteBatch {
        WriteBatch {
            inner: rocksdb::WriteBatch::default(),
            engine,
        }
    }

    /// Fails with `TooLarge` if the key, the value or the grown batch exceeds its limit.
    pub fn put(&mut self, cf: Cf, key: &[u8], value: &[u8]) -> Result<()> {
        let limits = self.engine.limits();
        limits.check_key(key)?;
        check_size("value", value.len(), limits.value_bytes_max)?;
        self.add(key.len() + value.len(), |batch, engine| {
            batch.put_cf(engine.cf_handle(cf), key, value);
        })
    }

    /// Deletes `key`; deleting a key that does not exist is not an error.
    pub fn delete(&mut self, cf: Cf, key: &[u8]) -> Result<()> {
        self.engine.limits().check_key(key)?;
        self.add(key.len(), |batch, engine| batch.delete_cf(engine.cf_handle(cf), key))
    }

    /// Deletes every key in `[start, end)` with one range tombstone. Fails with
    /// `InvalidArgument` unless `start < end`.
    pub fn delete_range(&mut self, cf: Cf, start: &[u8], end: &[u8]) -> Result<()> {
        let limits = self.engine.limits();
        limits.check_key(start)?;
        limits.check_key(end)?;
        check_range(start, end)?;
        self.add(start.len() + end.len(), |batch, engine| {
            batch.delete_range_cf(engine.cf_handle(cf), start, end);
        })
    }

    /// Operations in the batch.
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// Encoded size of the batch: keys and values plus a few bytes per operation and a 12-byte
    /// header. This is what `batch_bytes_max` bounds.
    pub fn data_bytes(&self) -> usize {
        self.inner.size_in_bytes()
    }

    /// Checks that an operation of `payload_bytes` keys and values fits, then adds it.
    fn add(&mut self, payload_bytes: usize, push: impl FnOnce(&mut rocksdb::WriteBatch, &KvEngine)) -> Result<()> {
        let bytes_after_max = self.data_bytes() + payload_bytes + BATCH_RECORD_OVERHEAD_BYTES_MAX;
        check_size("write batch", bytes_after_max, self.engine.limits().batch_bytes_max)?;
        let len_before = self.len();
        push(&mut self.inner, &self.engine);
        assert_eq!(self.len(), len_before + 1);
        // The overhead bound is what makes the check above keep the limit.
        assert!(self.data_bytes() <= bytes_after_max);
        Ok(())
    }

    pub(super) fn into_parts(self) -> (rocksdb::WriteBatch, KvEngine) {
        (self.inner, self.engine)
    }
}

impl std::fmt::Debug for WriteBatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriteBatch")
            .field("len", &self.len())
            .field("data_bytes", &self.data_bytes())
            .finish()
    }
}
