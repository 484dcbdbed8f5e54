//! Size-based split checks (TiKV's split checker): how much data a region holds, and where to
//! split it so that each side holds about half.
//!
//! Owns: the scan that measures a region's data from one consistent view of the KV engine (key
//! and value bytes, keys) and picks the split key. Must not: decide when to check (the shard
//! does, from the bytes written to the region since its last check) or propose the split.

use corekv_storage::kv::{Cf, Direction, KvEngine, KvRead};

use crate::error::Result;
use crate::keys;
use crate::region::Region;

/// Samples of the running byte count kept per `max_bytes` of data: the split key lands within
/// 1/64 of the region's size of its middle.
const SAMPLES_PER_MAX: u64 = 64;

/// What a check of one region found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SplitCheck {
    /// Key and value bytes of the region's data.
    pub bytes: u64,
    pub keys: u64,
    /// Where to split it: set when the region holds more than `max_bytes` or `max_keys`.
    pub split_key: Option<Vec<u8>>,
}

/// Measures `region`'s data and, when it holds more than `max_bytes` bytes or `max_keys` keys,
/// picks the key below which about half of its bytes lie: a data key strictly inside the
/// region, so both sides keep data. Reads the whole region (off the shard's thread).
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
    let over = bytes > max_bytes || count > max_keys;
    let split_key = over
        .then(|| samples.into_iter().filter(|(below, _)| *below > 0))
        .and_then(|s| s.min_by_key(|(below, _)| below.abs_diff(bytes / 2)))
        .map(|(_, key)| key);
    Ok(SplitCheck {
        bytes,
        keys: count,
        split_key,
    })
}
