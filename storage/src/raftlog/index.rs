//! The in-memory index of the Raft log ("memtable"): region -> entries' locations and states.
//!
//! Owns: where every live entry lives on disk, each region's state values, and the rules for
//! how operations change a region's log (`Span`). Must not do I/O. It holds only what is
//! durable: the engine applies a write's operations after its fdatasync returned.

use std::collections::{BTreeMap, HashMap, VecDeque};

use super::batch::Op;
use crate::{Error, Result};

/// Where one entry's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EntryLoc {
    pub term: u64,
    pub segment: u64,
    /// Byte offset of the entry's data in the segment file.
    pub offset: u64,
    pub len: u32,
    /// crc32c of the data: a read is checked again against it (the record CRC is not read
    /// back when a single entry is fetched).
    pub crc: u32,
}

/// The index range of a region's log: `first..=last`, empty when `last + 1 == first`.
/// The one place that says how appends and compactions change a log; the index and the
/// engine's admission check both use it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub first: u64,
    pub last: u64,
}

impl Span {
    pub fn is_empty(&self) -> bool {
        self.last + 1 == self.first
    }

    /// The span after appending `count` entries at `first_index` to `self` (None = a region
    /// the log does not know). Raft truncates on conflict, so `first_index` may be anywhere
    /// in `first..=last + 1`; below `first` or past `last + 1` would leave a hole.
    pub fn append(this: Option<Span>, region_id: u64, first_index: u64, count: u64) -> Result<Span> {
        assert!(
            first_index > 0 && count > 0,
            "the batch codec admits no empty or zero-based appends"
        );
        let new_last = first_index + count - 1;
        match this {
            None => Ok(Span {
                first: first_index,
                last: new_last,
            }),
            // An empty log (all compacted) may restart at or after its compaction point.
            Some(s) if s.is_empty() && first_index >= s.first => Ok(Span {
                first: first_index,
                last: new_last,
            }),
            Some(s) if first_index >= s.first && first_index <= s.last + 1 => Ok(Span {
                first: s.first,
                last: new_last,
            }),
            Some(s) => Err(Error::NonContiguous {
                region_id,
                first_index,
                log_first: s.first,
                log_last: s.last,
            }),
        }
    }

    /// Replay's version of [`Span::append`]: an append below `first` restarts the log there.
    /// Live admission never allows it, but after purge the replay starts mid-history: the
    /// records that once put `first` lower are gone, and every entry they covered was dead
    /// (truncated, compacted or cleaned later), so restarting converges on the live log.
    pub fn replay_append(this: Option<Span>, region_id: u64, first_index: u64, count: u64) -> Result<Span> {
        match this {
            Some(s) if first_index < s.first => Span::append(None, region_id, first_index, count),
            other => Span::append(other, region_id, first_index, count),
        }
    }

    /// The span after discarding entries below `index`. On a log without entries yet it
    /// declares where the log starts (after a snapshot, or when a rewrite carries it forward).
    pub fn compact(this: Option<Span>, index: u64) -> Span {
        assert!(index > 0, "raft indexes start at 1");
        match this {
            None => Span {
                first: index,
                last: index - 1,
            },
            Some(s) => {
                let first = s.first.max(index);
                Span {
                    first,
                    last: s.last.max(first - 1),
                }
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct RegionLog {
    /// Index of `entries[0]`; when `entries` is empty, the index the next append must reach.
    first_index: u64,
    entries: VecDeque<EntryLoc>,
    /// key -> (value, segment of the record that wrote it).
    states: BTreeMap<Vec<u8>, (Vec<u8>, u64)>,
}

impl RegionLog {
    /// `None` while the region has states but has never had an entry.
    pub fn span(&self) -> Option<Span> {
        (self.first_index != 0).then(|| Span {
            first: self.first_index,
            last: self.first_index + self.entries.len() as u64 - 1,
        })
    }

    pub fn entry(&self, index: u64) -> Option<&EntryLoc> {
        self.entries.get(index.checked_sub(self.first_index)? as usize)
    }

    pub fn state(&self, key: &[u8]) -> Option<&[u8]> {
        self.states.get(key).map(|(v, _)| v.as_slice())
    }

    pub fn states(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.states.iter().map(|(k, (v, _))| (k.as_slice(), v.as_slice()))
    }

    /// Oldest segment this region needs to keep: its first entry's or its oldest state's.
    fn oldest_segment(&self) -> Option<u64> {
        let entries = self.entries.front().map(|e| e.segment);
        let states = self.states.values().map(|(_, seg)| *seg).min();
        match (entries, states) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[derive(Debug, Default)]
pub struct Index {
    regions: HashMap<u64, RegionLog>,
}

impl Index {
    pub fn region(&self, region_id: u64) -> Option<&RegionLog> {
        self.regions.get(&region_id)
    }

    pub fn span(&self, region_id: u64) -> Option<Span> {
        self.regions.get(&region_id).and_then(RegionLog::span)
    }

    pub fn region_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.regions.keys().copied()
    }

    /// Applies one decoded operation of a record written to `segment`, whose payload starts
    /// at file offset `payload_offset`. `payload` is that record's payload (for entry CRCs).
    /// Appends follow replay's rules ([`Span::replay_append`]); live writes met the strict
    /// ones at admission, and replay's accept every log the strict ones do.
    pub fn apply(&mut self, op: Op<'_>, segment: u64, payload_offset: u64, payload: &[u8]) -> Result<()> {
        match op {
            Op::EntriesBegin {
                region_id,
                first_index,
                count,
            } => {
                let log = self.regions.entry(region_id).or_default();
                let known = log.span();
                let span = Span::replay_append(known, region_id, first_index, u64::from(count))?;
                if known.is_some_and(|s| !s.is_empty() && first_index > s.first) {
                    log.entries.truncate((first_index - log.first_index) as usize);
                } else {
                    log.entries.clear();
                    log.first_index = span.first;
                }
            }
            Op::Entry {
                region_id,
                index,
                term,
                data_offset,
                data_len,
            } => {
                let log = self
                    .regions
                    .get_mut(&region_id)
                    .expect("EntriesBegin precedes its entries");
                assert_eq!(
                    index,
                    log.first_index + log.entries.len() as u64,
                    "entries are contiguous"
                );
                let data = &payload[data_offset as usize..(data_offset + data_len) as usize];
                let offset = payload_offset + u64::from(data_offset);
                log.entries.push_back(EntryLoc {
                    term,
                    segment,
                    offset,
                    len: data_len,
                    crc: crc32c::crc32c(data),
                });
            }
            Op::PutState { region_id, key, value } => {
                let log = self.regions.entry(region_id).or_default();
                log.states.insert(key.to_vec(), (value.to_vec(), segment));
            }
            Op::DeleteState { region_id, key } => {
                if let Some(log) = self.regions.get_mut(&region_id) {
                    log.states.remove(key);
                }
            }
            Op::CompactTo { region_id, index } => {
                let log = self.regions.entry(region_id).or_default();
                let span = Span::compact(log.span(), index);
                if let Some(old) = log.span() {
                    let drop = (span.first - old.first).min(log.entries.len() as u64);
                    log.entries.drain(..drop as usize);
                }
                log.first_index = span.first;
                debug_assert_eq!(log.span(), Some(span));
            }
            Op::Clean { region_id } => {
                self.regions.remove(&region_id);
            }
        }
        Ok(())
    }

    /// Oldest segment any live entry or state lives in; segments before it are garbage.
    pub fn oldest_live_segment(&self) -> Option<u64> {
        self.regions.values().filter_map(RegionLog::oldest_segment).min()
    }

    /// Regions with an entry or a state in a segment older than `segment`: the ones a rewrite
    /// must move forward before those segments can be purged.
    pub fn regions_pinning(&self, segment: u64) -> Vec<u64> {
        let mut ids: Vec<u64> = self
            .regions
            .iter()
            .filter(|(_, log)| log.oldest_segment().is_some_and(|s| s < segment))
            .map(|(id, _)| *id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Test-only consistency walk (raft-engine's idea): every region's entries are contiguous
    /// and reference only segments that exist.
    #[cfg(any(test, debug_assertions))]
    pub fn check(&self, live_segments: &[u64]) {
        for (id, log) in &self.regions {
            for e in &log.entries {
                assert!(
                    live_segments.contains(&e.segment),
                    "region {id} points at purged segment {}",
                    e.segment
                );
            }
            for (_, seg) in log.states.values() {
                assert!(live_segments.contains(seg), "region {id} state in purged segment {seg}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(first: u64, last: u64) -> Option<Span> {
        Some(Span { first, last })
    }

    // Proves the append rules: truncation inside the log is allowed, holes are rejected.
    #[test]
    fn span_append_rules() {
        let check = |s, i, n| Span::append(s, 1, i, n).map(|s| (s.first, s.last)).ok();
        assert_eq!(check(None, 5, 3), Some((5, 7)));
        assert_eq!(check(span(5, 7), 8, 2), Some((5, 9)));
        assert_eq!(check(span(5, 7), 6, 1), Some((5, 6)), "conflict truncates");
        assert_eq!(check(span(5, 7), 9, 1), None, "hole");
        assert_eq!(check(span(5, 7), 4, 1), None, "below the compacted prefix");
        assert_eq!(
            check(span(10, 9), 10, 1),
            Some((10, 10)),
            "empty log restarts at its first"
        );
        assert_eq!(check(span(10, 9), 20, 1), Some((20, 20)), "after a snapshot");
        assert_eq!(check(span(10, 9), 9, 1), None);
    }

    // Proves replay restarts a log on an append below its start but still rejects holes.
    #[test]
    fn span_replay_append_rules() {
        let check = |s, i, n| Span::replay_append(s, 1, i, n).map(|s| (s.first, s.last)).ok();
        assert_eq!(check(span(2, 2), 1, 3), Some((1, 3)), "history before 2 was purged");
        assert_eq!(check(span(2, 2), 3, 1), Some((2, 3)));
        assert_eq!(check(span(2, 2), 4, 1), None, "a hole is never legal");
    }

    // Proves compaction moves the start, never past what is needed, and keeps empty logs sane.
    #[test]
    fn span_compact_rules() {
        let s = Some(Span { first: 5, last: 9 });
        assert_eq!(Span::compact(s, 3), Span { first: 5, last: 9 });
        assert_eq!(Span::compact(s, 7), Span { first: 7, last: 9 });
        assert_eq!(Span::compact(s, 10), Span { first: 10, last: 9 });
        assert!(Span::compact(s, 20).is_empty());
        assert_eq!(Span::compact(None, 8), Span { first: 8, last: 7 });
    }
}
