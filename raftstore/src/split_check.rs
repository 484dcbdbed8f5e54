//! Size-based split checks (TiKV's split checker): how much data a region holds, and where to
//! split it so that each side holds about half.
//!
//! Owns: the scan that measures a region's data from one consistent view of the KV engine (key
//! and value bytes, keys) and picks the split key. Must not: decide when to check (the shard
//! does, from the bytes written to the region since its last check) or propose the split.

use corekv_storage::kv::{Cf, Direction, KvEngine, KvRead};

use crate::error::Result;
use crate::keys;
use crate::region::{Region, SPLITS_MAX};

/// Samples of the running byte count kept per `max_bytes` of data: each split key lands within
/// 1/64 of the limit of where it should be.
const SAMPLES_PER_MAX: u64 = 64;

/// What a check of one region found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitCheck {
    /// Key and value bytes of the region's data.
    pub bytes: u64,
    pub keys: u64,
    /// Where to split it (ascending): none while the region holds at most `max_bytes` and
    /// `max_keys`; else keys that cut it into as many parts of equal bytes as it takes for each
    /// to hold at most that (two at least, `SPLITS_MAX + 1` at most).
    pub split_keys: Vec<Vec<u8>>,
}

/// Measures `region`'s data and, when it holds more than `max_bytes` bytes or `max_keys` keys,
/// picks the keys that cut it into parts of about equal bytes (`SplitCheck::split_keys`):
/// data keys strictly inside the region, so every part keeps data. Reads the whole region
/// (off the shard's thread).
pub fn check(kv: &KvEngine, region: &Region, max_bytes: u64, max_keys: u64) -> Result<SplitCheck> {
    let step = (max_bytes / SAMPLES_PER_MAX).max(1);
    // One iterator: one consistent view of the region (RocksDB pins it).
    let mut iter = kv.iter(Cf::Default, &keys::data_range(region)?, Direction::Forward, None);
    let (mut bytes, mut count, mut next_sample) = (0u64, 0u64, 0u64);
    // (bytes below the key, key): the key where each `step` of data begins.
    let mut samples: Vec<(u64, Vec<u8>)> = Vec::new();
    while let Some((k, v)) = iter.next_entry()? {
        let key = keys::origin_key(k);
        if bytes >= next_sample && key != region.start.as_slice() {
            samples.push((bytes, key.to_vec()));
            next_sample = bytes + step;
        }
        bytes += (key.len() + v.len()) as u64;
        count += 1;
    }
    let parts = bytes
        .div_ceil(max_bytes)
        .max(count.div_ceil(max_keys))
        .clamp(1, SPLITS_MAX as u64 + 1);
    let mut split_keys: Vec<Vec<u8>> = Vec::new();
    for part in 1..parts {
        let target = bytes * part / parts;
        let nearest = (samples.iter().filter(|(below, _)| *below > 0)).min_by_key(|(below, _)| below.abs_diff(target));
        // Samples are in key order: a key no greater than the last chosen one adds nothing.
        if let Some((_, key)) = nearest.filter(|(_, k)| split_keys.last().is_none_or(|last| k > last)) {
            split_keys.push(key.clone());
        }
    }
    Ok(SplitCheck {
        bytes,
        keys: count,
        split_keys,
    })
}
