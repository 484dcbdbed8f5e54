//! Region metadata: a key range, its epoch and its peers.
//!
//! Owns: the rules for "is this key mine" and "is this request's view current". Must not
//! know about raft or storage.

use crate::error::{Error, Result};

/// Bumped by membership changes (`conf_ver`) and by splits and merges (`version`). A request
/// carries the epoch its client saw; a different one means the client must refresh.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Epoch {
    pub conf_ver: u64,
    pub version: u64,
}

/// One replica of a region: its raft id and where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerMeta {
    pub id: u64,
    pub node: u64,
    pub shard: u32,
}

/// The system region: the placement service's durable state, in a key space of its own below
/// every user key (`keys`). Never split, never addressed by a client's key.
pub const SYSTEM_REGION_ID: u64 = 1;
/// User regions of a fresh cluster are numbered from here.
pub const FIRST_USER_REGION_ID: u64 = 2;

/// A contiguous key range `[start, end)` (empty `end` = unbounded), replicated by `peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Region {
    pub id: u64,
    pub start: Vec<u8>,
    pub end: Vec<u8>,
    pub epoch: Epoch,
    pub peers: Vec<PeerMeta>,
}

impl Region {
    pub fn is_system(&self) -> bool {
        self.id == SYSTEM_REGION_ID
    }

    /// Whether this is a region's real state, not a replica's placeholder while it waits for
    /// its first snapshot (every real state has a version: bootstrap starts at 1).
    pub fn is_initialized(&self) -> bool {
        self.epoch.version > 0
    }

    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }

    /// Whether the two ranges share a key.
    pub fn overlaps(&self, other: &Region) -> bool {
        let below = |end: &[u8], start: &[u8]| !end.is_empty() && end <= start;
        !(below(&self.end, &other.start) || below(&other.end, &self.start))
    }

    pub fn check_key(&self, key: &[u8]) -> Result<()> {
        if self.contains(key) {
            Ok(())
        } else {
            Err(Error::KeyNotInRegion {
                region_id: self.id,
                key: key.to_vec(),
            })
        }
    }

    /// A range request `[start, end)` must lie inside the region; an empty `end` means
    /// unbounded, which only the last region contains.
    pub fn check_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        self.check_key(start)?;
        let end_inside = if self.end.is_empty() {
            true
        } else {
            !end.is_empty() && end <= self.end.as_slice()
        };
        if end_inside && (end.is_empty() || start < end) {
            Ok(())
        } else {
            Err(Error::KeyNotInRegion {
                region_id: self.id,
                key: end.to_vec(),
            })
        }
    }

    pub fn check_epoch(&self, request: Epoch) -> Result<()> {
        if request == self.epoch {
            Ok(())
        } else {
            Err(Error::EpochNotMatch {
                request,
                current: Box::new(self.clone()),
            })
        }
    }

    pub fn peer(&self, peer_id: u64) -> Option<&PeerMeta> {
        self.peers.iter().find(|p| p.id == peer_id)
    }

    /// The replica of this region on (node, shard), if any.
    pub fn peer_on(&self, node: u64, shard: u32) -> Option<&PeerMeta> {
        self.peers.iter().find(|p| p.node == node && p.shard == shard)
    }

    /// Whether this region can split at `key`: it is not the system region, and the key lies
    /// strictly inside it (not at its start: both sides must hold keys).
    pub fn check_split_key(&self, key: &[u8]) -> Result<()> {
        if self.is_system() {
            return Err(Error::InvalidArgument("the system region does not split"));
        }
        if key.is_empty() || !self.contains(key) || key == self.start.as_slice() {
            return Err(Error::InvalidArgument(
                "a split key must lie strictly inside the region",
            ));
        }
        Ok(())
    }

    /// The regions a split at `at`'s keys (ascending) makes: this one keeps `[start, first
    /// key)`; each new region takes the keys from its key to the next one's (the last: to this
    /// one's end), with a replica on each (node, shard) of this one's. All at this epoch's
    /// version + 1, so a request made against the old range is refused (`EpochNotMatch`) by
    /// every one of them.
    pub fn split(&self, at: &[SplitAt]) -> Result<Vec<Region>> {
        let bad = |why| Err(Error::InvalidArgument(why));
        if at.is_empty() || at.len() > SPLITS_MAX {
            return bad("a split makes 1 to 64 regions");
        }
        at.iter().try_for_each(|a| self.check_split_key(&a.key))?;
        if !at.windows(2).all(|w| w[0].key < w[1].key) {
            return bad("split keys must ascend");
        }
        let named = |a: &SplitAt| std::iter::once(a.new_region_id).chain(a.new_peer_ids.clone());
        let mut ids: Vec<u64> = at.iter().flat_map(named).collect();
        let count = ids.len();
        ids.sort_unstable();
        ids.dedup();
        let fresh = |id: &u64| ![0, SYSTEM_REGION_ID, self.id].contains(id) && self.peer(*id).is_none();
        if at.iter().any(|a| a.new_peer_ids.len() != self.peers.len()) || ids.len() != count || !ids.iter().all(fresh) {
            return bad("a split needs a new region id and one new peer id per replica, all distinct");
        }
        let epoch = Epoch {
            conf_ver: self.epoch.conf_ver,
            version: self.epoch.version + 1,
        };
        let ends = at.iter().skip(1).map(|a| a.key.clone()).chain([self.end.clone()]);
        let made = at.iter().zip(ends).map(|(a, end)| Region {
            id: a.new_region_id,
            start: a.key.clone(),
            end,
            epoch,
            peers: (self.peers.iter().zip(&a.new_peer_ids))
                .map(|(p, &id)| PeerMeta { id, ..*p })
                .collect(),
        });
        let left = Region {
            end: at[0].key.clone(),
            epoch,
            ..self.clone()
        };
        Ok(std::iter::once(left).chain(made).collect())
    }
}

/// Where a split cuts a region, and the ids of the region it starts there.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct SplitAt {
    pub key: Vec<u8>,
    pub new_region_id: u64,
    /// Raft ids of the new region's replicas, in the split region's peer order.
    pub new_peer_ids: Vec<u64>,
}

/// Regions one split makes at most (a region far over its size limits splits into several).
pub const SPLITS_MAX: usize = 64;

#[cfg(test)]
mod tests {
    use super::*;

    fn region(start: &[u8], end: &[u8]) -> Region {
        Region {
            id: 1,
            start: start.to_vec(),
            end: end.to_vec(),
            epoch: Epoch::default(),
            peers: vec![],
        }
    }

    // Proves the half-open range rules, including the unbounded end.
    #[test]
    fn key_and_range_membership() {
        let r = region(b"b", b"d");
        assert!(r.contains(b"b") && r.contains(b"c\xff") && !r.contains(b"d") && !r.contains(b"a"));
        assert!(r.check_range(b"b", b"d").is_ok());
        assert!(r.check_range(b"b", b"e").is_err());
        assert!(r.check_range(b"c", b"c").is_err(), "empty range");
        let last = region(b"x", b"");
        assert!(last.contains(b"\xff\xff") && last.check_range(b"x", b"z").is_ok());
        assert!(
            last.check_range(b"x", b"").is_ok(),
            "unbounded end inside the last region"
        );
        assert!(
            r.check_range(b"b", b"").is_err(),
            "unbounded end outside a bounded region"
        );
    }

    // Proves a split at several keys makes regions that tile the old range in key order, all
    // one version up, each new one on the old one's (node, shard)s under its own ids; and that
    // keys out of order, at the start, or ids reused or missing are refused.
    #[test]
    fn a_split_tiles_the_range_or_is_refused() {
        let mut r = region(b"b", b"m");
        r.id = 5;
        r.peers = vec![
            PeerMeta {
                id: 11,
                node: 1,
                shard: 0,
            },
            PeerMeta {
                id: 12,
                node: 2,
                shard: 1,
            },
        ];
        let at = |key: &[u8], id: u64| SplitAt {
            key: key.to_vec(),
            new_region_id: id,
            new_peer_ids: vec![id + 1, id + 2],
        };
        let made = r.split(&[at(b"d", 20), at(b"h", 30)]).unwrap();
        let ranges: Vec<(&[u8], &[u8])> = made.iter().map(|m| (&m.start[..], &m.end[..])).collect();
        assert_eq!(ranges, vec![(&b"b"[..], &b"d"[..]), (b"d", b"h"), (b"h", b"m")]);
        assert!(made.iter().all(|m| m.epoch.version == r.epoch.version + 1));
        assert_eq!(
            made[2].peers,
            vec![
                PeerMeta {
                    id: 31,
                    node: 1,
                    shard: 0
                },
                PeerMeta {
                    id: 32,
                    node: 2,
                    shard: 1
                }
            ]
        );
        for bad in [
            vec![at(b"h", 20), at(b"d", 30)],
            vec![at(b"b", 20)],
            vec![at(b"d", 20), at(b"h", 20)],
            vec![at(b"d", 10)],
            vec![SplitAt {
                new_peer_ids: vec![21],
                ..at(b"d", 20)
            }],
            vec![],
        ] {
            assert!(matches!(r.split(&bad), Err(Error::InvalidArgument(_))), "{bad:?}");
        }
    }

    // Proves a stale epoch is refused with the current region attached.
    #[test]
    fn epoch_mismatch_carries_the_current_region() {
        let mut r = region(b"", b"");
        r.epoch = Epoch {
            conf_ver: 2,
            version: 3,
        };
        match r.check_epoch(Epoch {
            conf_ver: 2,
            version: 2,
        }) {
            Err(Error::EpochNotMatch { current, .. }) => assert_eq!(current.epoch.version, 3),
            other => panic!("{other:?}"),
        }
        assert!(r.check_epoch(r.epoch).is_ok());
    }
}
