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

    /// The two regions a split at `key` makes: this one keeps `[start, key)`; region `new_id`
    /// takes `[key, end)`, with a replica on each (node, shard) of this one's (raft ids
    /// `new_peer_ids`, in this region's peer order). Both at this epoch's version + 1, so a
    /// request made against the old range is refused (`EpochNotMatch`) by either.
    pub fn split(&self, key: &[u8], new_id: u64, new_peer_ids: &[u64]) -> Result<(Region, Region)> {
        let bad = |why| Err(Error::InvalidArgument(why));
        self.check_split_key(key)?;
        if [0, SYSTEM_REGION_ID, self.id].contains(&new_id) {
            return bad("a split needs a new region id");
        }
        let mut ids: Vec<u64> = new_peer_ids.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let fresh = |id: &u64| *id != 0 && self.peer(*id).is_none();
        if new_peer_ids.len() != self.peers.len() || ids.len() != self.peers.len() || !ids.iter().all(fresh) {
            return bad("a split needs one new, distinct peer id per replica");
        }
        let epoch = Epoch {
            conf_ver: self.epoch.conf_ver,
            version: self.epoch.version + 1,
        };
        let right = Region {
            id: new_id,
            start: key.to_vec(),
            end: self.end.clone(),
            epoch,
            peers: (self.peers.iter().zip(new_peer_ids))
                .map(|(p, &id)| PeerMeta { id, ..*p })
                .collect(),
        };
        let left = Region {
            end: key.to_vec(),
            epoch,
            ..self.clone()
        };
        Ok((left, right))
    }
}

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
