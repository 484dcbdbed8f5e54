//! Every key encoding of a shard's two engines, in one place (as TiKV's `components/keys`).
//!
//! KV engine, `default` CF: `z` + user key (the data of user regions); `s` + system key (the
//! system region's data: the placement service's durable state). `s` sorts below `z`, so the
//! system key space lies below every user key, and one region's data is one contiguous range.
//! KV engine, `meta` CF: `r` + region id (u64 big endian) + `a` (applied index) or `d` (region
//! state). Raft log engine, per region: `hs` (raft hard state), `tr` (truncation point).
//! Later: txn keys (user key memcomparable-encoded + descending timestamp) in `lock`/`write`.
//!
//! Owns: the prefixes and the mapping between a region's keys and engine keys. Must not: read
//! or write an engine; decide which region a key belongs to (`region` does).

use corekv_storage::kv::KeyRange;

use crate::error::Result;
use crate::region::Region;

/// Prefix of user data in the `default` CF.
const DATA_PREFIX: u8 = b'z';
/// Prefix of the system region's data in the `default` CF (below every user key).
const SYSTEM_PREFIX: u8 = b's';
/// Prefix of per-region metadata in the `meta` CF.
const REGION_META_PREFIX: u8 = b'r';
const APPLIED_SUFFIX: u8 = b'a';
const REGION_SUFFIX: u8 = b'd';
const TOMBSTONE_SUFFIX: u8 = b't';

/// System key: the TSO's durable window end (ms, u64 big endian).
pub const TSO_WINDOW_KEY: &[u8] = b"tso/window_end_ms";
/// System key: the id allocator's durable end (u64 big endian; ids below it may be taken).
pub const IDS_END_KEY: &[u8] = b"ids/end";

/// System keys: `stores/` + store id (u64 big endian) -> the store's record
/// (`placement::stores::StoreMeta`).
pub const STORES_PREFIX: &[u8] = b"stores/";

/// System key of store `id`'s record.
pub fn store_key(id: u64) -> Vec<u8> {
    [STORES_PREFIX, &id.to_be_bytes()].concat()
}

/// Raft log engine state key: the region's raft hard state.
pub const HARD_STATE_KEY: &[u8] = b"hs";
/// Raft log engine state key: the index and term the region's log was truncated at.
pub const TRUNCATED_KEY: &[u8] = b"tr";

const _: () = assert!(SYSTEM_PREFIX < DATA_PREFIX, "the system key space lies below user keys");

fn prefix(region: &Region) -> u8 {
    if region.is_system() {
        SYSTEM_PREFIX
    } else {
        DATA_PREFIX
    }
}

/// The engine key of `key` in `region`'s key space.
pub fn data_key(region: &Region, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(key.len() + 1);
    k.push(prefix(region));
    k.extend_from_slice(key);
    k
}

/// The region key of engine key `data_key` (its key space's prefix removed).
pub fn origin_key(data_key: &[u8]) -> &[u8] {
    debug_assert!(matches!(data_key.first(), Some(&DATA_PREFIX | &SYSTEM_PREFIX)));
    &data_key[1..]
}

/// The region's data in the KV engine, as a key range.
pub fn data_range(region: &Region) -> Result<KeyRange> {
    data_range_between(region, &region.start, &region.end)
}

/// Keys `[start, end)` of `region`'s key space (empty `end`: unbounded) as engine keys.
pub fn data_range_between(region: &Region, start: &[u8], end: &[u8]) -> Result<KeyRange> {
    let end = if end.is_empty() {
        vec![prefix(region) + 1]
    } else {
        data_key(region, end)
    };
    Ok(KeyRange::new(data_key(region, start), end)?)
}

/// `meta` CF key of the region's applied index.
pub fn applied_key(region_id: u64) -> Vec<u8> {
    meta_key(region_id, APPLIED_SUFFIX)
}

/// `meta` CF key of the region's state (its range, epoch and peers).
pub fn region_state_key(region_id: u64) -> Vec<u8> {
    meta_key(region_id, REGION_SUFFIX)
}

/// `meta` CF key of the tombstone a removed replica leaves (the region's epoch at its removal).
pub fn tombstone_key(region_id: u64) -> Vec<u8> {
    meta_key(region_id, TOMBSTONE_SUFFIX)
}

/// What a `meta` CF key of a region holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetaKind {
    Applied,
    RegionState,
    Tombstone,
}

/// The `meta` CF keys of every region, as a range.
pub fn region_metas() -> Result<KeyRange> {
    Ok(KeyRange::new(vec![REGION_META_PREFIX], vec![REGION_META_PREFIX + 1])?)
}

/// The region and kind of a `meta` CF key; `None` for a key this layout does not have.
pub fn parse_meta_key(key: &[u8]) -> Option<(u64, MetaKind)> {
    if key.len() != 10 || key[0] != REGION_META_PREFIX {
        return None;
    }
    let id = u64::from_be_bytes(key[1..9].try_into().ok()?);
    match key[9] {
        APPLIED_SUFFIX => Some((id, MetaKind::Applied)),
        REGION_SUFFIX => Some((id, MetaKind::RegionState)),
        TOMBSTONE_SUFFIX => Some((id, MetaKind::Tombstone)),
        _ => None,
    }
}

fn meta_key(region_id: u64, suffix: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(10);
    k.push(REGION_META_PREFIX);
    k.extend_from_slice(&region_id.to_be_bytes());
    k.push(suffix);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{Epoch, SYSTEM_REGION_ID};

    fn region(id: u64, start: &[u8], end: &[u8]) -> Region {
        Region {
            id,
            start: start.to_vec(),
            end: end.to_vec(),
            epoch: Epoch::default(),
            peers: vec![],
        }
    }

    // Proves the system region's whole key space sorts below the lowest user key (the empty
    // key's range start) and that both round-trip through `origin_key`.
    #[test]
    fn system_keys_sort_below_every_user_key() {
        let system = region(SYSTEM_REGION_ID, b"", b"");
        let user = region(2, b"", b"");
        let sys = data_range(&system).unwrap();
        let data = data_range(&user).unwrap();
        assert!(
            sys.end().is_some_and(|end| end <= data.start()),
            "{sys:?} overlaps {data:?}"
        );
        assert!(data_key(&system, b"\xff\xff") < data_key(&user, b""));
        assert_eq!(origin_key(&data_key(&system, b"tso")), b"tso");
        assert_eq!(origin_key(&data_key(&user, b"k")), b"k");
        let bounded = data_range_between(&user, b"a", b"c").unwrap();
        assert_eq!((bounded.start(), bounded.end()), (&b"za"[..], Some(&b"zc"[..])));
    }

    // Proves meta keys parse back to their region and kind, and nothing else parses.
    #[test]
    fn meta_keys_round_trip() {
        for id in [1, 7, u64::MAX] {
            assert_eq!(parse_meta_key(&region_state_key(id)), Some((id, MetaKind::RegionState)));
            assert_eq!(parse_meta_key(&applied_key(id)), Some((id, MetaKind::Applied)));
            assert_eq!(parse_meta_key(&tombstone_key(id)), Some((id, MetaKind::Tombstone)));
        }
        let mut odd = applied_key(3);
        *odd.last_mut().unwrap() = b'x';
        assert_eq!(parse_meta_key(&odd), None);
        assert_eq!(parse_meta_key(&applied_key(3)[..9]), None);
    }
}
