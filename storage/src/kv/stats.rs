//! Size estimates and statistics.
//!
//! Owns: what the engine can say about its own size without reading the data — per-range size
//! and key-count estimates for split and balance decisions, RocksDB's counters, and a few
//! properties — and an honest account of what each estimate counts.
//!
//! Must not: scan data to count it. An exact count is a scan ([`super::KvSnapshot::digest`]).

use rocksdb::properties::{self, PropName};
use rocksdb::{LiveFile, Range};

use super::{check_range, Cf, KvEngine};
use crate::Result;

/// A few of one column family's RocksDB properties.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KvProperties {
    /// `rocksdb.estimate-num-keys`: keys in memtables and SST files, counting every version of
    /// an overwritten key until compaction merges them.
    pub estimate_num_keys: u64,
    /// `rocksdb.cur-size-all-mem-tables`: bytes in the active and the unflushed immutable
    /// memtables.
    pub mem_tables_bytes: u64,
    /// `rocksdb.block-cache-usage`: bytes in the block cache, which every engine of the node
    /// shares, so the same for every column family and every engine.
    pub block_cache_usage_bytes: u64,
}

impl KvEngine {
    /// On-disk bytes of the SST files' data in `[start, end)` of `cf`, compressed as stored.
    ///
    /// Counts SST files only: the rocksdb crate calls RocksDB's size approximation without
    /// `include_memtables`, so data not yet flushed counts as zero. Partially covered files are
    /// interpolated from their index blocks. Slow (reads index blocks): call through `offload`.
    pub fn approximate_size(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<u64> {
        check_range(start, end)?;
        let sizes = self
            .db()
            .get_approximate_sizes_cf(self.cf_handle(cf), &[Range::new(start, end)]);
        assert_eq!(sizes.len(), 1);
        Ok(sizes[0])
    }

    /// Estimated number of keys of `cf` in `[start, end)`.
    ///
    /// RocksDB cannot count keys in a range without reading them, so this scales: it takes the
    /// SST files overlapping the range, their entry counts from their table properties (puts
    /// minus point deletions, per file), and multiplies by the share of those files' bytes that
    /// `approximate_size` places in the range. That assumes entries of similar size. Like
    /// `approximate_size` it ignores memtables, and it counts every version of a key that has
    /// not been compacted away, and a put hidden by a deletion in another file.
    ///
    /// Slow (lists every live file): call through `offload`.
    pub fn approximate_keys(&self, cf: Cf, start: &[u8], end: &[u8]) -> Result<u64> {
        check_range(start, end)?;
        let files = self.db().live_files()?;
        let (mut keys, mut bytes) = (0u64, 0u64);
        for file in files.iter().filter(|file| overlaps(file, cf, start, end)) {
            keys += file.num_entries.saturating_sub(file.num_deletions);
            bytes += u64::try_from(file.size).expect("usize fits in u64");
        }
        if bytes == 0 {
            return Ok(0);
        }
        // The range's bytes all lie in the overlapping files, up to estimation error.
        let range_bytes = self.approximate_size(cf, start, end)?.min(bytes);
        let estimate = u128::from(keys) * u128::from(range_bytes) / u128::from(bytes);
        let estimate = u64::try_from(estimate).expect("at most `keys`");
        assert!(estimate <= keys);
        Ok(estimate)
    }

    /// A few integer properties of `cf`.
    pub fn properties(&self, cf: Cf) -> Result<KvProperties> {
        Ok(KvProperties {
            estimate_num_keys: self.int_property(cf, properties::ESTIMATE_NUM_KEYS)?,
            mem_tables_bytes: self.int_property(cf, properties::CUR_SIZE_ALL_MEM_TABLES)?,
            block_cache_usage_bytes: self.int_property(cf, properties::BLOCK_CACHE_USAGE)?,
        })
    }

    fn int_property(&self, cf: Cf, name: &PropName) -> Result<u64> {
        let value = self.db().property_int_value_cf(self.cf_handle(cf), name)?;
        // RocksDB answers `None` only for a name it does not know; ours are constants.
        Ok(value.unwrap_or_else(|| panic!("RocksDB does not know property {name:?}")))
    }

    /// RocksDB's tickers and histograms since open, as RocksDB formats them.
    /// Slow (formats a few hundred counters): call through `offload`.
    pub fn statistics(&self) -> Option<String> {
        self.inner.db_options.get_statistics()
    }
}

/// Whether `file` belongs to `cf` and holds a key in `[start, end)`, going by its key bounds.
fn overlaps(file: &LiveFile, cf: Cf, start: &[u8], end: &[u8]) -> bool {
    if file.column_family_name != cf.name() {
        return false;
    }
    match (&file.start_key, &file.end_key) {
        (Some(first), Some(last)) => first.as_slice() < end && start <= last.as_slice(),
        _ => false,
    }
}
