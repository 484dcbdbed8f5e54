//! Reads: point gets, bounded iterators and scans, for the engine and for snapshots alike.
//!
//! Owns: [`KeyRange`] (a validated `[start, end)`), [`KvIter`] (a streaming iterator whose range
//! is enforced by RocksDB itself through `iterate_lower_bound` / `iterate_upper_bound`, not by
//! comparing keys afterwards), [`RangeDigest`], and `Reader`, the one implementation behind the
//! read methods of [`super::KvEngine`] and [`super::KvSnapshot`].
//!
//! Must not: write, or allocate per key while streaming.
//!
//! Performance-critical: `get` and `KvIter::next_entry` are on every read's path.

use rocksdb::{DBRawIteratorWithThreadMode, ReadOptions, SnapshotWithThreadMode, DB};

use super::{check_range, Cf, KvEngine};
use crate::Result;

/// The keys `k` with `start <= k < end`, or `start <= k` when `end` is `None`.
///
/// Invariant: `start < end`; an empty range is rejected when built, never scanned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyRange {
    start: Vec<u8>,
    end: Option<Vec<u8>>,
}

impl KeyRange {
    /// `[start, end)`. Fails with `InvalidArgument` unless `start < end`.
    pub fn new(start: impl Into<Vec<u8>>, end: impl Into<Vec<u8>>) -> Result<KeyRange> {
        let (start, end) = (start.into(), end.into());
        check_range(&start, &end)?;
        Ok(KeyRange { start, end: Some(end) })
    }

    /// `[start, +inf)`.
    pub fn from_start(start: impl Into<Vec<u8>>) -> KeyRange {
        KeyRange {
            start: start.into(),
            end: None,
        }
    }

    /// Every key.
    pub fn all() -> KeyRange {
        KeyRange::from_start(Vec::new())
    }

    /// The keys that start with `prefix`: `[prefix, prefix_successor(prefix))`.
    pub fn prefix(prefix: &[u8]) -> KeyRange {
        KeyRange {
            start: prefix.to_vec(),
            end: prefix_successor(prefix),
        }
    }

    pub fn start(&self) -> &[u8] {
        &self.start
    }

    /// `None` when the range is unbounded above.
    pub fn end(&self) -> Option<&[u8]> {
        self.end.as_deref()
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end().is_none_or(|end| key < end)
    }
}

/// The smallest key greater than every key that starts with `prefix`, or `None` if there is none
/// (`prefix` is empty or all `0xff`).
fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let last = prefix.iter().rposition(|&byte| byte != 0xff)?;
    let mut successor = prefix[..=last].to_vec();
    successor[last] += 1;
    debug_assert!(successor.as_slice() > prefix);
    Some(successor)
}

/// Iteration order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    /// Ascending keys, from the range's start.
    Forward,
    /// Descending keys, from the range's last key.
    Reverse,
}

/// A streaming iterator over one column family and one [`KeyRange`], at most `limit` entries.
///
/// RocksDB stops at the range's bounds itself, rather than the iterator checking keys after the
/// fact: otherwise stepping past the range's last live key would wade through every tombstone
/// beyond it, however far, to reach the next live key.
pub struct KvIter<'a> {
    raw: DBRawIteratorWithThreadMode<'a, DB>,
    direction: Direction,
    /// Entries the limit still allows.
    remaining: usize,
    /// False until the first `next_entry`: a fresh iterator already sits on its first entry.
    started: bool,
    /// Kept only to assert that RocksDB honoured the bounds.
    range: KeyRange,
}

impl KvIter<'_> {
    /// The next entry, or `None` once the range or the limit is exhausted. The slices are valid
    /// until the next call; copy what must outlive it.
    pub fn next_entry(&mut self) -> Result<Option<(&[u8], &[u8])>> {
        if self.remaining == 0 {
            return Ok(None);
        }
        if self.started {
            match self.direction {
                Direction::Forward => self.raw.next(),
                Direction::Reverse => self.raw.prev(),
            }
        }
        self.started = true;
        if !self.raw.valid() {
            self.remaining = 0;
            self.raw.status()?;
            return Ok(None);
        }
        self.remaining -= 1;
        let (key, value) = self.raw.item().expect("a valid iterator has an entry");
        debug_assert!(self.range.contains(key), "iterator left its bounds: {key:?}");
        Ok(Some((key, value)))
    }
}

/// Count and crc32c of a sequence of entries, in iteration order. Two ranges with equal digests
/// hold the same entries, but for crc collisions; used to check an export against its source.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RangeDigest {
    pub keys: u64,
    pub crc32c: u32,
}

impl RangeDigest {
    /// Adds one entry, lengths included so that `("ab", "c")` and `("a", "bc")` differ.
    pub(super) fn add(&mut self, key: &[u8], value: &[u8]) {
        for part in [key, value] {
            let len = u64::try_from(part.len()).expect("usize fits in u64");
            self.crc32c = crc32c::crc32c_append(self.crc32c, &len.to_le_bytes());
            self.crc32c = crc32c::crc32c_append(self.crc32c, part);
        }
        self.keys += 1;
    }
}

/// Read-ahead of bulk iterators (`Reader::bulk_iter`).
const BULK_READAHEAD_BYTES: usize = 2 << 20;

/// Reads, the same for the engine (latest data) and a [`KvSnapshot`](super::KvSnapshot) (data as
/// of the snapshot). Sealed: implemented only by those two.
pub trait KvRead: sealed::Sealed {
    /// The latest value of `key` (as of the snapshot, for a snapshot), if any.
    fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        self.reader().get(cf, key)
    }

    /// A streaming iterator over `range` of `cf` in `direction`, at most `limit` entries. On the
    /// engine it sees the data as of its creation (RocksDB pins an implicit snapshot per
    /// iterator).
    fn iter(&self, cf: Cf, range: &KeyRange, direction: Direction, limit: Option<usize>) -> KvIter<'_> {
        self.reader().iter(cf, range, direction, limit)
    }

    /// The first `limit` entries of `range` of `cf` in `direction`, copied out.
    fn scan(&self, cf: Cf, range: &KeyRange, direction: Direction, limit: usize) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        self.reader().scan(cf, range, direction, limit)
    }
}

pub(super) mod sealed {
    /// Keeps [`super::KvRead`] to the engine and its snapshots, and hands it their reader.
    pub trait Sealed {
        fn reader(&self) -> super::Reader<'_>;
    }
}

/// The read path shared by the engine (latest data) and snapshots (data as of the snapshot).
pub struct Reader<'a> {
    engine: &'a KvEngine,
    /// The snapshot to read at; `None` reads the latest data.
    snapshot: Option<&'a SnapshotWithThreadMode<'static, DB>>,
    /// Point-get options, made once by the owner: creating `ReadOptions` allocates, and a get
    /// is too frequent for that. Pinned to `snapshot` when there is one.
    get_options: &'a ReadOptions,
}

impl<'a> Reader<'a> {
    pub(super) fn new(
        engine: &'a KvEngine,
        snapshot: Option<&'a SnapshotWithThreadMode<'static, DB>>,
        get_options: &'a ReadOptions,
    ) -> Reader<'a> {
        Reader {
            engine,
            snapshot,
            get_options,
        }
    }

    /// Fresh options pinned to the snapshot, if any, for an iterator to own. They hold a raw
    /// pointer to the snapshot, so they must not outlive `'a`: every user ties its result to it.
    fn iter_options(&self) -> ReadOptions {
        let mut options = ReadOptions::default();
        if let Some(snapshot) = self.snapshot {
            options.set_snapshot(snapshot);
        }
        options
    }

    pub(super) fn get(&self, cf: Cf, key: &[u8]) -> Result<Option<Vec<u8>>> {
        // A pinned get copies the value once, straight out of the block cache or memtable.
        let value = self
            .engine
            .db()
            .get_pinned_cf_opt(self.engine.cf_handle(cf), key, self.get_options)?;
        Ok(value.map(|value| value.to_vec()))
    }

    pub(super) fn iter(&self, cf: Cf, range: &KeyRange, direction: Direction, limit: Option<usize>) -> KvIter<'a> {
        self.iter_with(self.iter_options(), cf, range, direction, limit)
    }

    /// A forward iterator over all of `range` for bulk work (a digest, an export): it reads
    /// ahead and leaves the block cache alone, so a region's worth of blocks neither evicts the
    /// working set nor counts against memory.
    pub(super) fn bulk_iter(&self, cf: Cf, range: &KeyRange) -> KvIter<'a> {
        let mut options = self.iter_options();
        options.fill_cache(false);
        options.set_readahead_size(BULK_READAHEAD_BYTES);
        self.iter_with(options, cf, range, Direction::Forward, None)
    }

    fn iter_with(
        &self,
        mut options: ReadOptions,
        cf: Cf,
        range: &KeyRange,
        direction: Direction,
        limit: Option<usize>,
    ) -> KvIter<'a> {
        options.set_iterate_lower_bound(range.start.clone());
        if let Some(end) = &range.end {
            options.set_iterate_upper_bound(end.clone());
        }
        let engine: &'a KvEngine = self.engine;
        let mut raw = engine.db().raw_iterator_cf_opt(engine.cf_handle(cf), options);
        // With bounds set, "first" and "last" mean the first and last keys inside the range.
        match direction {
            Direction::Forward => raw.seek_to_first(),
            Direction::Reverse => raw.seek_to_last(),
        }
        KvIter {
            raw,
            direction,
            remaining: limit.unwrap_or(usize::MAX),
            started: false,
            range: range.clone(),
        }
    }

    pub(super) fn scan(
        &self,
        cf: Cf,
        range: &KeyRange,
        direction: Direction,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut iter = self.iter(cf, range, direction, Some(limit));
        let mut entries = Vec::new();
        while let Some((key, value)) = iter.next_entry()? {
            entries.push((key.to_vec(), value.to_vec()));
        }
        assert!(entries.len() <= limit);
        Ok(entries)
    }

    pub(super) fn digest(&self, cf: Cf, range: &KeyRange) -> Result<RangeDigest> {
        let mut iter = self.bulk_iter(cf, range);
        let mut digest = RangeDigest::default();
        while let Some((key, value)) = iter.next_entry()? {
            digest.add(key, value);
        }
        Ok(digest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_successor_cases() {
        // The successor is the least key above every extension of the prefix.
        let check = |prefix: &[u8], expected: Option<&[u8]>| {
            assert_eq!(prefix_successor(prefix).as_deref(), expected, "prefix {prefix:?}");
        };
        check(b"", None);
        check(b"\xff\xff", None);
        check(b"a", Some(b"b"));
        check(b"a\xff", Some(b"b"));
        check(b"a\x00\xff\xff", Some(b"a\x01"));
        check(b"\x00", Some(b"\x01"));
    }
}
