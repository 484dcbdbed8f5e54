//! The KV engine's configuration and the RocksDB options derived from it.
//!
//! Owns: [`KvConfig`] (what an operator may tune, with its defaults and its validation), the one
//! block cache a node shares between its shards ([`SharedBlockCache`]), and the translation of
//! both into RocksDB `Options`, each option with the reason it is set.
//!
//! Must not: open anything or touch the disk. Everything here is a pure function of the config.

use rocksdb::{BlockBasedOptions, Cache, DBCompressionType, Options};
use serde::Deserialize;

use super::Cf;
use crate::{Error, Result};

const KIB: usize = 1024;
const MIB: usize = 1024 * KIB;

/// Levels of the LSM tree: RocksDB's default, spelled out because the per-level compression
/// table below has one entry per level.
const LEVEL_COUNT: usize = 7;

/// Upper bound on `max_background_jobs`: far beyond what any core count here needs, low enough
/// that a typo in a config file cannot ask RocksDB for thousands of threads.
const BACKGROUND_JOBS_MAX: u32 = 64;

/// Size of a write-batch record beyond its key and value: a tag byte, a column family id and two
/// lengths, each a varint32 of at most 5 bytes.
pub(super) const BATCH_RECORD_OVERHEAD_BYTES_MAX: usize = 1 + 3 * 5;

/// Tunables of one shard's KV engine. Every field has a default, so a TOML section may name only
/// the fields it changes.
#[derive(Clone, Debug, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KvConfig {
    /// Memtable size of the data column families (`default`, `write`). A full memtable is
    /// flushed into one L0 file, so this is also the size of a fresh L0 file. Default 64 MiB.
    pub write_buffer_bytes: usize,
    /// Memtable size of the small column families (`lock`, `meta`). Default 16 MiB.
    pub small_cf_write_buffer_bytes: usize,
    /// Flushes plus compactions one engine may run at once (RocksDB reserves about a quarter for
    /// flushes). Default 4.
    pub max_background_jobs: u32,
    /// Threads one compaction job may split its key range across. Default 2.
    pub max_subcompactions: u32,
    /// Bloom filter size. 10 bits per key gives about a 1% false-positive rate. Default 10.
    pub bloom_bits_per_key: f64,
    /// Store large values of the `default` column family in blob files. Default off.
    pub enable_blob_files: bool,
    /// Values of at least this size go to blob files when they are enabled. Default 32 KiB.
    pub blob_min_bytes: u64,
    /// Largest key a write batch accepts. Default 4 KiB.
    pub key_bytes_max: usize,
    /// Largest value a write batch accepts. Default 8 MiB.
    pub value_bytes_max: usize,
    /// Largest encoded write batch. Default 128 MiB.
    pub batch_bytes_max: usize,
}

impl Default for KvConfig {
    fn default() -> KvConfig {
        KvConfig {
            write_buffer_bytes: 64 * MIB,
            small_cf_write_buffer_bytes: 16 * MIB,
            max_background_jobs: 4,
            max_subcompactions: 2,
            bloom_bits_per_key: 10.0,
            enable_blob_files: false,
            blob_min_bytes: 32 * KIB as u64,
            key_bytes_max: 4 * KIB,
            value_bytes_max: 8 * MIB,
            batch_bytes_max: 128 * MIB,
        }
    }
}

impl KvConfig {
    /// Rejects settings that can never work, so that `open` fails instead of a later write.
    pub fn validate(&self) -> Result<()> {
        ensure(
            self.write_buffer_bytes >= MIB,
            "write_buffer_bytes must be at least 1 MiB",
        )?;
        ensure(
            self.small_cf_write_buffer_bytes >= MIB,
            "small_cf_write_buffer_bytes must be at least 1 MiB",
        )?;
        ensure(
            (1..=BACKGROUND_JOBS_MAX).contains(&self.max_background_jobs),
            "max_background_jobs must be in 1..=64",
        )?;
        ensure(
            (1..=self.max_background_jobs).contains(&self.max_subcompactions),
            "max_subcompactions must be in 1..=max_background_jobs",
        )?;
        ensure(
            self.bloom_bits_per_key > 0.0 && self.bloom_bits_per_key <= 64.0,
            "bloom_bits_per_key must be in (0, 64]",
        )?;
        ensure(self.blob_min_bytes > 0, "blob_min_bytes must be positive")?;
        ensure(self.key_bytes_max > 0, "key_bytes_max must be positive")?;
        // A put of the largest key and value must fit in a batch, or the limits contradict.
        let record_bytes_max = self.key_bytes_max + self.value_bytes_max + BATCH_RECORD_OVERHEAD_BYTES_MAX;
        ensure(
            self.batch_bytes_max >= record_bytes_max,
            "batch_bytes_max must hold one put of key_bytes_max + value_bytes_max",
        )
    }
}

fn ensure(condition: bool, message: &str) -> Result<()> {
    if condition {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!("kv config: {message}")))
    }
}

/// The block cache of a whole node: created once, cloned into every shard's [`super::KvEngine`].
///
/// One cache rather than one per shard, so the node's memory budget for cached blocks is a single
/// number and a busy shard can use the share an idle one does not need. Clones share the cache.
#[derive(Clone)]
pub struct SharedBlockCache {
    cache: Cache,
    capacity_bytes: usize,
}

impl SharedBlockCache {
    /// An LRU cache holding at most `capacity_bytes` of data, index and filter blocks.
    ///
    /// LRU with a soft limit: a read never fails because the cache is full (RocksDB's
    /// `strict_capacity_limit` stays off); pinned blocks may briefly push usage past capacity.
    pub fn new(capacity_bytes: usize) -> SharedBlockCache {
        SharedBlockCache {
            cache: Cache::new_lru_cache(capacity_bytes),
            capacity_bytes,
        }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    /// Bytes of blocks currently held, summed over every engine sharing the cache.
    pub fn usage_bytes(&self) -> usize {
        self.cache.get_usage()
    }
}

impl std::fmt::Debug for SharedBlockCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedBlockCache")
            .field("capacity_bytes", &self.capacity_bytes)
            .field("usage_bytes", &self.usage_bytes())
            .finish()
    }
}

/// Options of the database as a whole (not of one column family).
pub(super) fn db_options(config: &KvConfig) -> Options {
    let mut options = Options::default();
    options.create_if_missing(true);
    // A shard created by a newer build may add a column family; creating missing ones on open
    // is what makes that an upgrade rather than an open failure.
    options.create_missing_column_families(true);
    // Flushes and compactions run on RocksDB's own threads, never on the shard's. The thread
    // pools belong to the process-wide default Env and grow to the largest count any engine asks
    // for, so N shards share one pool instead of owning N x jobs threads.
    options.set_max_background_jobs(background_jobs(config));
    // Sub-compactions split one large compaction (above all L0 -> base level, which blocks
    // every later L0 compaction) across threads, so write stalls clear sooner.
    options.set_max_subcompactions(config.max_subcompactions);
    // Tickers and histograms for `KvEngine::statistics`; about 1-2% of CPU, worth the insight.
    options.enable_statistics();
    // Dropping the last reference to an obsolete file set (an iterator, a snapshot, a finished
    // get) would otherwise delete those files on the dropping thread, which may be the shard's.
    // With this set, RocksDB hands the deletions to its background purge.
    options.set_avoid_unnecessary_blocking_io(true);
    options
}

fn background_jobs(config: &KvConfig) -> i32 {
    assert!(config.max_background_jobs <= BACKGROUND_JOBS_MAX);
    i32::try_from(config.max_background_jobs).expect("bounded by BACKGROUND_JOBS_MAX")
}

/// Options of one column family.
pub(super) fn cf_options(cf: Cf, config: &KvConfig, cache: &SharedBlockCache) -> Options {
    let mut options = Options::default();
    options.set_block_based_table_factory(&table_options(config, cache));
    // Size each level from the bottom up: the last level holds ~90% of the data and every level
    // above is a tenth of the one below, which bounds space amplification at ~1.1 however much
    // data the shard holds (static targets leave levels half-empty on a small shard).
    options.set_level_compaction_dynamic_level_bytes(true);
    options.set_num_levels(LEVEL_COUNT as i32);
    match cf {
        Cf::Default | Cf::Write => data_cf(&mut options, config),
        // The lock CF is small and hot: a lock lives from prewrite to commit, a few
        // milliseconds, so nearly all of it is in the memtable and L0 and is deleted before it
        // reaches a lower level. The meta CF holds one region state and one apply state per
        // region, rewritten on every apply. Compressing either would spend CPU on data that is
        // rewritten almost at once, and a large memtable would only lengthen WAL replay.
        Cf::Lock | Cf::Meta => small_cf(&mut options, config),
    }
    if cf == Cf::Lock {
        // Most reads find no lock, and the locks that exist are in the memtable: a memtable
        // bloom filter answers "no lock" without searching the skiplist. RocksDB builds it only
        // when given a size ratio (here 10% of the memtable), even for whole-key filtering.
        options.set_memtable_prefix_bloom_ratio(0.1);
        options.set_memtable_whole_key_filtering(true);
    }
    if cf == Cf::Default && config.enable_blob_files {
        blob_files(&mut options, config);
    }
    options
}

fn data_cf(options: &mut Options, config: &KvConfig) {
    options.set_write_buffer_size(config.write_buffer_bytes);
    // L0 and the level L0 compacts into are small and compacted again within minutes:
    // compressing them would cost flush and L0 compaction CPU, on the path that write stalls
    // depend on, for little space. The levels below use lz4, cheap to decompress on every read.
    // (With dynamic level sizes, entry i > 0 names the i-th level from L0's target level down,
    // not Li.)
    const PER_LEVEL: [DBCompressionType; LEVEL_COUNT] = [
        DBCompressionType::None,
        DBCompressionType::None,
        DBCompressionType::Lz4,
        DBCompressionType::Lz4,
        DBCompressionType::Lz4,
        DBCompressionType::Lz4,
        DBCompressionType::Zstd,
    ];
    options.set_compression_per_level(&PER_LEVEL);
    // The bottommost level holds ~90% of the data and changes least, so it pays for zstd's
    // better ratio, whichever level number it has while the shard is small.
    options.set_bottommost_compression_type(DBCompressionType::Zstd);
}

fn small_cf(options: &mut Options, config: &KvConfig) {
    options.set_write_buffer_size(config.small_cf_write_buffer_bytes);
    options.set_compression_type(DBCompressionType::None);
}

/// Value separation: values of at least `blob_min_bytes` are written to blob files and the LSM
/// tree keeps only a reference, so compactions rewrite small references instead of large values.
/// Only the `default` CF holds large values (the `write` CF keeps short values inline), so only it
/// gets blob files.
fn blob_files(options: &mut Options, config: &KvConfig) {
    options.set_enable_blob_files(true);
    options.set_min_blob_size(config.blob_min_bytes);
    // Blobs are written once and read whole: zstd's better ratio is worth its CPU here.
    options.set_blob_compression_type(DBCompressionType::Zstd);
    // Blob files are immutable, so overwritten and deleted values would stay on disk forever
    // without GC: compactions relocate the live blobs of the oldest quarter of blob files.
    options.set_enable_blob_gc(true);
    options.set_blob_gc_age_cutoff(0.25);
}

fn table_options(config: &KvConfig, cache: &SharedBlockCache) -> BlockBasedOptions {
    let mut table = BlockBasedOptions::default();
    table.set_block_cache(&cache.cache);
    // A full filter (one per file, not per block) over whole keys: a point get skips every file
    // that cannot hold the key without reading a data block. No prefix extractor: prefix
    // filters need to know where a key's prefix ends, and this crate does not know key layouts.
    table.set_bloom_filter(config.bloom_bits_per_key, false);
    table.set_whole_key_filtering(true);
    // Index and filter blocks live in the shared cache, so their memory counts against the
    // node's budget instead of growing with the number of open files outside it. L0's are
    // pinned because every read consults every L0 file, and high priority keeps the rest from
    // being evicted by a large scan's data blocks.
    table.set_cache_index_and_filter_blocks(true);
    table.set_cache_index_and_filter_blocks_with_high_priority(true);
    table.set_pin_l0_filter_and_index_blocks_in_cache(true);
    table
}
