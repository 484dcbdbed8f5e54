//! The region directory and the store registry's live half: what the placement leader knows
//! of every region (from its leader's heartbeats) and of every store (from each node's).
//! Soft state, as in PD: a new placement leader starts empty and is filled by the next round
//! of heartbeats; until a full interval has passed, a lookup that misses says "not yet known"
//! rather than "no such region". Times (`now_ms`) are a monotonic clock's: a wall clock
//! stepped back must not stop the ages.
//!
//! Stale heartbeats are refused (PD's rule): a region's heartbeat with a lower epoch `version`
//! or `conf_ver` than the directory holds, or the same epoch from an older term; and one that
//! overlaps another region of a newer `version` (a region the directory knows was split or
//! merged since). A heartbeat that overlaps only older regions replaces them.
//!
//! Owns: the records, their key order and those two rules. Must not: read a clock (time comes
//! in as `now_ms`) or hold anything unbounded by the cluster's own size.

use std::collections::BTreeMap;

use crate::region::{PeerMeta, Region};

/// What a region's leader reports about it, every heartbeat interval and when it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionHeartbeat {
    pub region: Region,
    pub leader: PeerMeta,
    pub term: u64,
    /// RocksDB's estimate of the region's data on the leader's shard.
    pub approximate_bytes: u64,
    pub approximate_keys: u64,
    /// Traffic the leader served since its previous heartbeat for this region.
    pub flow: Flow,
}

/// Traffic of one region over one heartbeat interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flow {
    pub written_bytes: u64,
    pub written_keys: u64,
    pub read_bytes: u64,
    pub read_keys: u64,
    pub queries: u64,
}

impl Flow {
    /// One write request of `(bytes, keys)`.
    pub fn write((bytes, keys): (u64, u64)) -> Flow {
        Flow {
            written_bytes: bytes,
            written_keys: keys,
            queries: 1,
            ..Flow::default()
        }
    }

    /// One read request that returned `(bytes, keys)`.
    pub fn read((bytes, keys): (u64, u64)) -> Flow {
        Flow {
            read_bytes: bytes,
            read_keys: keys,
            queries: 1,
            ..Flow::default()
        }
    }
    pub fn add(&mut self, other: &Flow) {
        self.written_bytes += other.written_bytes;
        self.written_keys += other.written_keys;
        self.read_bytes += other.read_bytes;
        self.read_keys += other.read_keys;
        self.queries += other.queries;
    }
}

/// What a node reports about itself (a store is a node).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHeartbeat {
    pub store_id: u64,
    /// Client address of its shard 0 (shard i listens on that port + i).
    pub client_addr: String,
    /// Peer address of its shard 0 (shard i on that port + i).
    pub peer_addr: String,
    pub shards: u32,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub regions: u64,
    pub leaders: u64,
}

/// A store's liveness, judged by the age of its last heartbeat (PD's thresholds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreState {
    Up,
    /// No heartbeat for `DISCONNECTED_MS`: a pause, a partition or a crash, maybe brief.
    Disconnected,
    /// No heartbeat for `DOWN_MS`: its replicas are to be made again elsewhere.
    Down,
}

impl StoreState {
    pub const DISCONNECTED_MS: u64 = 20_000;
    pub const DOWN_MS: u64 = 30 * 60_000;

    /// From the age of its last heartbeat (None: none since the placement leader took over,
    /// which is `Disconnected` once the directory is complete, else not known yet).
    pub fn from_age(age_ms: Option<u64>, complete: bool) -> Option<StoreState> {
        match age_ms {
            Some(a) if a >= Self::DOWN_MS => Some(StoreState::Down),
            Some(a) if a >= Self::DISCONNECTED_MS => Some(StoreState::Disconnected),
            Some(_) => Some(StoreState::Up),
            None => complete.then_some(StoreState::Disconnected),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StoreState::Up => "Up",
            StoreState::Disconnected => "Disconnected",
            StoreState::Down => "Down",
        }
    }
}

/// A region as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegionRecord {
    pub heartbeat: RegionHeartbeat,
    pub last_heartbeat_ms: u64,
}

/// A store as the directory knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreRecord {
    pub heartbeat: StoreHeartbeat,
    /// None: registered, but not heard from since this placement leader took over.
    pub last_heartbeat_ms: Option<u64>,
}

/// Why a heartbeat was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Stale {
    #[error("region {region_id}: epoch {got:?} is older than the directory's {have:?}")]
    Epoch {
        region_id: u64,
        got: (u64, u64),
        have: (u64, u64),
    },
    #[error("region {region_id}: term {got} is older than the directory's {have}")]
    Term { region_id: u64, got: u64, have: u64 },
    #[error("region {region_id} overlaps region {other}, which is newer")]
    Overlap { region_id: u64, other: u64 },
    /// Not a region this cluster can have (an empty range, keys or peers past their limits):
    /// a forgery or a bug.
    #[error("region {region_id}: {why}")]
    Invalid { region_id: u64, why: &'static str },
    /// A region the directory does not know, and it holds `REGIONS_MAX` already.
    #[error("region {region_id}: the directory holds {REGIONS_MAX} regions already")]
    Full { region_id: u64 },
}

/// Regions the directory holds at most (about 1 KiB each: 1 GiB at most).
pub const REGIONS_MAX: usize = 1 << 20;
/// Replicas a region has at most (a heartbeat claiming more is refused).
pub const PEERS_MAX: usize = 7;

#[derive(Debug, Default)]
pub struct Directory {
    regions: BTreeMap<u64, RegionRecord>,
    /// Start key -> region id, for lookups by key.
    by_start: BTreeMap<Vec<u8>, u64>,
    stores: BTreeMap<u64, StoreRecord>,
}

impl Directory {
    /// Takes a region's heartbeat, or says why it is stale (the directory is left unchanged).
    pub fn region_heartbeat(&mut self, heartbeat: RegionHeartbeat, now_ms: u64) -> Result<(), Stale> {
        let id = heartbeat.region.id;
        check_region(&heartbeat.region)?;
        if let Some(have) = self.regions.get(&id) {
            check_same(&have.heartbeat, &heartbeat)?;
        }
        let overlapped = self.overlapping(&heartbeat.region)?;
        if overlapped.is_empty() && !self.regions.contains_key(&id) && self.regions.len() >= REGIONS_MAX {
            return Err(Stale::Full { region_id: id });
        }
        for other in overlapped.into_iter().chain([id]) {
            self.remove(other);
        }
        self.by_start.insert(heartbeat.region.start.clone(), id);
        let record = RegionRecord {
            heartbeat,
            last_heartbeat_ms: now_ms,
        };
        self.regions.insert(id, record);
        debug_assert_eq!(self.by_start.len(), self.regions.len(), "one start key per region");
        Ok(())
    }

    pub fn store_heartbeat(&mut self, heartbeat: StoreHeartbeat, now_ms: u64) {
        let record = StoreRecord {
            heartbeat,
            last_heartbeat_ms: Some(now_ms),
        };
        self.stores.insert(record.heartbeat.store_id, record);
    }

    /// A store the registry holds but that has not reported to this placement leader yet:
    /// listed with no load and no heartbeat.
    pub fn registered_store(&mut self, meta: &super::stores::StoreMeta) {
        let heartbeat = StoreHeartbeat {
            store_id: meta.id,
            client_addr: meta.client_addr.clone(),
            peer_addr: meta.peer_addr.clone(),
            shards: meta.shards,
            capacity_bytes: 0,
            available_bytes: 0,
            used_bytes: 0,
            regions: 0,
            leaders: 0,
        };
        let record = StoreRecord {
            heartbeat,
            last_heartbeat_ms: None,
        };
        self.stores.insert(meta.id, record);
    }

    /// The region holding `key`, if its leader has reported it.
    pub fn region_by_key(&self, key: &[u8]) -> Option<&RegionRecord> {
        let (_, id) = self.by_start.range(..=key.to_vec()).next_back()?;
        let record = &self.regions[id];
        record.heartbeat.region.contains(key).then_some(record)
    }

    /// The region holding the keys just below `bound` (empty: the last region), if reported.
    pub fn region_below(&self, bound: &[u8]) -> Option<&RegionRecord> {
        let (_, id) = match bound {
            [] => self.by_start.iter().next_back(),
            bound => self.by_start.range(..bound.to_vec()).next_back(),
        }?;
        let record = &self.regions[id];
        let end = &record.heartbeat.region.end;
        let holds = end.is_empty() || (!bound.is_empty() && end.as_slice() >= bound);
        holds.then_some(record)
    }

    pub fn region_by_id(&self, id: u64) -> Option<&RegionRecord> {
        self.regions.get(&id)
    }

    /// Up to `limit` regions in key order that hold keys of `[start, end)` (empty `end`: to
    /// the end of the key space). Regions not yet reported leave gaps.
    pub fn scan(&self, start: &[u8], end: &[u8], limit: usize) -> Vec<&RegionRecord> {
        let first = self.region_by_key(start).map(|r| r.heartbeat.region.start.clone());
        let from = first.unwrap_or_else(|| start.to_vec());
        self.by_start
            .range(from..)
            .take_while(|(s, _)| end.is_empty() || s.as_slice() < end)
            .map(|(_, id)| &self.regions[id])
            .take(limit)
            .collect()
    }

    pub fn store(&self, id: u64) -> Option<&StoreRecord> {
        self.stores.get(&id)
    }

    pub fn stores(&self) -> impl Iterator<Item = &StoreRecord> {
        self.stores.values()
    }

    pub fn region_count(&self) -> usize {
        self.regions.len()
    }

    pub fn store_count(&self) -> usize {
        self.stores.len()
    }

    /// The regions whose ranges share a key with `region`'s.
    /// The ids of the regions sharing a key with `region`; `Err` at the first other one whose
    /// version is not below `region`'s (it is newer: `region`'s heartbeat is stale).
    fn overlapping(&self, region: &Region) -> Result<Vec<u64>, Stale> {
        let below_end = |s: &Vec<u8>| region.end.is_empty() || s.as_slice() < region.end.as_slice();
        let first = self
            .region_by_key(&region.start)
            .map(|r| r.heartbeat.region.start.clone());
        let from = first.unwrap_or_else(|| region.start.clone());
        let mut ids = Vec::new();
        for (_, &id) in self.by_start.range(from..).take_while(|(s, _)| below_end(s)) {
            let other = &self.regions[&id].heartbeat.region;
            if id != region.id && other.epoch.version >= region.epoch.version {
                return Err(Stale::Overlap {
                    region_id: region.id,
                    other: id,
                });
            }
            ids.push(id);
        }
        Ok(ids)
    }

    fn remove(&mut self, id: u64) {
        if let Some(old) = self.regions.remove(&id) {
            self.by_start.remove(&old.heartbeat.region.start);
        }
    }
}

/// A region's shape as this cluster allows it.
fn check_region(region: &Region) -> Result<(), Stale> {
    let why = if !region.end.is_empty() && region.start >= region.end {
        "its range is empty"
    } else if region.start.len().max(region.end.len()) > crate::cmd::KEY_BYTES_MAX {
        "a bound is longer than a key may be"
    } else if region.peers.is_empty() || region.peers.len() > PEERS_MAX {
        "it has no peers, or more than a region has"
    } else {
        return Ok(());
    };
    Err(Stale::Invalid {
        region_id: region.id,
        why,
    })
}

/// PD's staleness rule for two heartbeats of one region.
fn check_same(have: &RegionHeartbeat, got: &RegionHeartbeat) -> Result<(), Stale> {
    let (h, g) = (have.region.epoch, got.region.epoch);
    if g.version < h.version || g.conf_ver < h.conf_ver {
        return Err(Stale::Epoch {
            region_id: got.region.id,
            got: (g.conf_ver, g.version),
            have: (h.conf_ver, h.version),
        });
    }
    if g == h && got.term < have.term {
        return Err(Stale::Term {
            region_id: got.region.id,
            got: got.term,
            have: have.term,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Epoch;

    fn heartbeat(id: u64, range: (&[u8], &[u8]), (conf_ver, version): (u64, u64), term: u64) -> RegionHeartbeat {
        let leader = PeerMeta::voter(id * 100 + 1, 1, 0);
        RegionHeartbeat {
            region: Region {
                id,
                start: range.0.to_vec(),
                end: range.1.to_vec(),
                epoch: Epoch { conf_ver, version },
                peers: vec![leader],
            },
            leader,
            term,
            approximate_bytes: 0,
            approximate_keys: 0,
            flow: Flow::default(),
        }
    }

    fn ids(records: Vec<&RegionRecord>) -> Vec<u64> {
        records.iter().map(|r| r.heartbeat.region.id).collect()
    }

    #[test]
    fn lookups_follow_key_order() {
        let mut d = Directory::default();
        d.region_heartbeat(heartbeat(3, (b"m", b""), (1, 1), 1), 0).unwrap();
        d.region_heartbeat(heartbeat(2, (b"", b"m"), (1, 1), 1), 0).unwrap();
        assert_eq!(d.region_by_key(b"").unwrap().heartbeat.region.id, 2);
        assert_eq!(d.region_by_key(b"l\xff").unwrap().heartbeat.region.id, 2);
        assert_eq!(d.region_by_key(b"m").unwrap().heartbeat.region.id, 3);
        assert_eq!(d.region_by_key(b"zzz").unwrap().heartbeat.region.id, 3);
        assert_eq!(ids(d.scan(b"c", b"", 10)), [2, 3]);
        assert_eq!(ids(d.scan(b"c", b"m", 10)), [2]);
        assert_eq!(ids(d.scan(b"c", b"", 1)), [2]);
        assert_eq!(ids(d.scan(b"n", b"", 10)), [3]);
        let below = |bound: &[u8]| d.region_below(bound).map(|r| r.heartbeat.region.id);
        assert_eq!(below(b""), Some(3), "the last region");
        assert_eq!(
            below(b"m"),
            Some(2),
            "the keys just below a region's start are its left neighbour's"
        );
        assert_eq!(below(b"m\0"), Some(3));
        assert_eq!(below(b"a"), Some(2));
    }

    #[test]
    fn a_gap_is_a_miss_not_a_neighbour() {
        let mut d = Directory::default();
        d.region_heartbeat(heartbeat(2, (b"", b"f"), (1, 1), 1), 0).unwrap();
        d.region_heartbeat(heartbeat(4, (b"t", b""), (1, 1), 1), 0).unwrap();
        assert!(d.region_by_key(b"g").is_none(), "region 3 has not reported");
        assert!(d.region_below(b"t").is_none(), "nor below region 4");
        assert!(d.region_below(b"f").is_some());
        assert_eq!(ids(d.scan(b"g", b"", 10)), [4]);
    }

    #[test]
    fn stale_heartbeats_are_refused_and_change_nothing() {
        let mut d = Directory::default();
        let current = heartbeat(2, (b"", b""), (2, 3), 5);
        d.region_heartbeat(current.clone(), 10).unwrap();
        let stale = [
            heartbeat(2, (b"", b""), (2, 2), 9), // older version
            heartbeat(2, (b"", b""), (1, 3), 9), // older conf_ver
            heartbeat(2, (b"", b""), (2, 3), 4), // same epoch, older term
        ];
        for s in stale {
            assert!(d.region_heartbeat(s, 20).is_err());
            let record = d.region_by_id(2).unwrap();
            assert_eq!((&record.heartbeat, record.last_heartbeat_ms), (&current, 10));
        }
        d.region_heartbeat(heartbeat(2, (b"", b""), (2, 3), 6), 30).unwrap();
        assert_eq!(d.region_by_id(2).unwrap().heartbeat.term, 6);
    }

    #[test]
    fn an_empty_range_is_refused() {
        let mut d = Directory::default();
        d.region_heartbeat(heartbeat(2, (b"", b"m"), (1, 1), 1), 0).unwrap();
        let refused = d.region_heartbeat(heartbeat(3, (b"", b""), (1, 1), 1), 0);
        assert_eq!(refused, Err(Stale::Overlap { region_id: 3, other: 2 }));
        for range in [(&b"q"[..], &b"q"[..]), (b"z", b"a")] {
            assert!(matches!(
                d.region_heartbeat(heartbeat(4, range, (9, 9), 1), 0),
                Err(Stale::Invalid { .. })
            ));
        }
        assert_eq!(ids(d.scan(b"", b"", 10)), [2]);
    }

    proptest::proptest! {
        // Any sequence of heartbeats (ids, ranges, epochs and terms drawn small so that they
        // collide) leaves the directory consistent: lookups never panic, regions in key order
        // never overlap, and every region is found by its own start key.
        #[test]
        fn any_heartbeats_leave_the_directory_consistent(
            beats in proptest::collection::vec((1..6u64, 0..6u8, 0..7u8, 1..4u64, 1..4u64), 0..60)
        ) {
            let mut d = Directory::default();
            for (id, start, end, version, term) in beats {
                let key = |b: u8| if b == 0 { Vec::new() } else { vec![b] };
                let (s, e) = (key(start), if end == 6 { Vec::new() } else { key(end) });
                let _ = d.region_heartbeat(heartbeat(id, (&s, &e), (1, version), term), 0);
            }
            let all = d.scan(b"", b"", usize::MAX);
            proptest::prop_assert_eq!(all.len(), d.region_count());
            for pair in all.windows(2) {
                let (a, b) = (&pair[0].heartbeat.region, &pair[1].heartbeat.region);
                proptest::prop_assert!(!a.end.is_empty() && a.end <= b.start, "{a:?} overlaps {b:?}");
            }
            for r in &all {
                let found = d.region_by_key(&r.heartbeat.region.start).map(|f| f.heartbeat.region.id);
                proptest::prop_assert_eq!(found, Some(r.heartbeat.region.id));
            }
        }
    }

    #[test]
    fn a_newer_region_replaces_the_older_ones_it_overlaps_and_not_the_reverse() {
        let mut d = Directory::default();
        d.region_heartbeat(heartbeat(2, (b"", b""), (1, 1), 1), 0).unwrap();
        // Region 2 split at "m" (version 2), region 3 took the right half.
        d.region_heartbeat(heartbeat(3, (b"m", b""), (1, 2), 1), 0).unwrap();
        assert!(d.region_by_id(2).is_none(), "the unsplit region 2 is gone");
        assert_eq!(
            d.region_heartbeat(heartbeat(2, (b"", b""), (1, 1), 2), 0),
            Err(Stale::Overlap { region_id: 2, other: 3 }),
            "a late heartbeat of the unsplit region"
        );
        d.region_heartbeat(heartbeat(2, (b"", b"m"), (1, 2), 1), 0).unwrap();
        assert_eq!(ids(d.scan(b"", b"", 10)), [2, 3]);
        assert_eq!(d.region_count(), 2);
    }
}
