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

/// One replica of a region: its raft id, where it lives, and its part in the raft group.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerMeta {
    pub id: u64,
    pub node: u64,
    pub shard: u32,
    pub role: PeerRole,
}

impl PeerMeta {
    /// A voter (every replica of a region made at bootstrap or by a split of a voters' region).
    pub fn voter(id: u64, node: u64, shard: u32) -> PeerMeta {
        PeerMeta {
            id,
            node,
            shard,
            role: PeerRole::Voter,
        }
    }

    /// Whether `other` names this replica at the same place (roles aside: a sender's view of
    /// a role may be a membership change behind or ahead of the receiver's).
    pub fn same_replica(&self, other: &PeerMeta) -> bool {
        (self.id, self.node, self.shard) == (other.id, other.node, other.shard)
    }
}

/// A replica's part in its region's raft group, as TiKV's roles: a joint configuration (after
/// a promotion or demotion, until it is left) has voters of the incoming configuration only
/// and voters of the outgoing one only.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum PeerRole {
    #[default]
    Voter,
    /// Receives the log, votes in nothing, counts for no quorum.
    Learner,
    /// A learner being promoted: a voter of the incoming configuration.
    IncomingVoter,
    /// A voter being demoted: a voter of the outgoing configuration, a learner once it is left.
    DemotingVoter,
}

impl PeerRole {
    /// A voter of the incoming (or only) configuration.
    pub fn votes_in_incoming(self) -> bool {
        matches!(self, PeerRole::Voter | PeerRole::IncomingVoter)
    }

    /// Its stable code in stored region states and on the wire.
    pub fn code(self) -> u8 {
        match self {
            PeerRole::Voter => 0,
            PeerRole::Learner => 1,
            PeerRole::IncomingVoter => 2,
            PeerRole::DemotingVoter => 3,
        }
    }

    pub fn from_code(code: u8) -> Option<PeerRole> {
        [
            PeerRole::Voter,
            PeerRole::Learner,
            PeerRole::IncomingVoter,
            PeerRole::DemotingVoter,
        ]
        .into_iter()
        .find(|r| r.code() == code)
    }
}

/// One step of a membership change (`Region::change_peers`). Adding a voter is add learner,
/// then promote; removing one is demote, then remove (PD's steps with joint consensus).
#[derive(Debug, Clone, Copy, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum PeerChange {
    /// A new replica at (node, shard), as a learner.
    AddLearner { id: u64, node: u64, shard: u32 },
    /// A learner becomes a voter (through a joint configuration).
    Promote { id: u64 },
    /// A voter becomes a learner (through a joint configuration).
    Demote { id: u64 },
    /// A learner leaves the region.
    Remove { id: u64 },
}

impl PeerChange {
    /// The replica it changes.
    pub fn peer_id(&self) -> u64 {
        match *self {
            PeerChange::AddLearner { id, .. }
            | PeerChange::Promote { id }
            | PeerChange::Demote { id }
            | PeerChange::Remove { id } => id,
        }
    }

    /// Whether it changes who votes (and so goes through a joint configuration).
    pub fn is_joint(&self) -> bool {
        matches!(self, PeerChange::Promote { .. } | PeerChange::Demote { .. })
    }
}

/// Steps one membership change makes at most (a move: promote one, demote another).
pub const PEER_CHANGES_MAX: usize = 8;

/// Which parts of an epoch a command depends on (`Region::check_epoch_parts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EpochCheck {
    /// The range: reads and writes.
    Version,
    /// The replicas: membership changes.
    ConfVer,
    /// Both: splits, leader transfers.
    Both,
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
        self.check_epoch_parts(request, EpochCheck::Both)
    }

    /// Checks the parts of `request`'s epoch a command depends on (TiKV's
    /// `admin_cmd_epoch_lookup`): reads and writes depend on the range only, so they survive a
    /// membership change; a membership change depends on the replicas.
    pub fn check_epoch_parts(&self, request: Epoch, check: EpochCheck) -> Result<()> {
        let version = request.version == self.epoch.version || check == EpochCheck::ConfVer;
        let conf_ver = request.conf_ver == self.epoch.conf_ver || check == EpochCheck::Version;
        if version && conf_ver {
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

    /// Whether its membership is joint (a promotion or demotion not yet finished).
    pub fn is_joint(&self) -> bool {
        (self.peers.iter()).any(|p| matches!(p.role, PeerRole::IncomingVoter | PeerRole::DemotingVoter))
    }

    /// The region after `changes` (one conf_ver up): either one learner added or removed (a
    /// simple change), or voters promoted and demoted together (entering a joint
    /// configuration, left by `leave_joint`). Refused: anything while joint, a replica added
    /// twice or where one of this region lives, a voter removed without its demotion, a role
    /// that is not the change's starting role, and a change leaving no voter.
    pub fn change_peers(&self, changes: &[PeerChange]) -> Result<Region> {
        let bad = |why| Err(Error::InvalidArgument(why));
        if changes.is_empty() || changes.len() > PEER_CHANGES_MAX {
            return bad("a membership change has 1 to 8 steps");
        }
        if self.is_joint() {
            return bad("the region is in a joint membership: it must be left first");
        }
        let joint = changes.iter().filter(|c| c.is_joint()).count();
        if joint != changes.len() && changes.len() != 1 {
            return bad("a learner is added or removed alone");
        }
        let mut ids: Vec<u64> = changes.iter().map(PeerChange::peer_id).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() != changes.len() {
            return bad("a replica changes once per membership change");
        }
        let mut next = self.clone();
        changes.iter().try_for_each(|c| next.change_peer(*c))?;
        if !next.peers.iter().any(|p| p.role.votes_in_incoming()) {
            return bad("a membership change must leave a voter");
        }
        next.epoch.conf_ver += 1;
        Ok(next)
    }

    fn change_peer(&mut self, change: PeerChange) -> Result<()> {
        let bad = |why| Err(Error::InvalidArgument(why));
        let id = change.peer_id();
        if let PeerChange::AddLearner { id, node, shard } = change {
            if [0, SYSTEM_REGION_ID, self.id].contains(&id) || self.peer(id).is_some() {
                return bad("a new replica needs a new peer id");
            }
            if self.peer_on(node, shard).is_some() {
                return bad("a replica of the region lives on that (store, shard) already");
            }
            self.peers.push(PeerMeta {
                id,
                node,
                shard,
                role: PeerRole::Learner,
            });
            return Ok(());
        }
        let Some(at) = self.peers.iter().position(|p| p.id == id) else {
            return bad("no replica of the region has that peer id");
        };
        let (from, to) = match change {
            PeerChange::Promote { .. } => (PeerRole::Learner, Some(PeerRole::IncomingVoter)),
            PeerChange::Demote { .. } => (PeerRole::Voter, Some(PeerRole::DemotingVoter)),
            _ => (PeerRole::Learner, None),
        };
        if self.peers[at].role != from {
            return bad("promote a learner, demote a voter, remove a learner (demote a voter first)");
        }
        match to {
            Some(role) => self.peers[at].role = role,
            None => {
                self.peers.remove(at);
            }
        }
        Ok(())
    }

    /// The region once its joint membership is left (one conf_ver up): incoming voters vote,
    /// demoted ones are learners.
    pub fn leave_joint(&self) -> Region {
        let mut next = self.clone();
        for p in &mut next.peers {
            p.role = match p.role {
                PeerRole::IncomingVoter => PeerRole::Voter,
                PeerRole::DemotingVoter => PeerRole::Learner,
                role => role,
            };
        }
        next.epoch.conf_ver += 1;
        next
    }

    /// Whether this region can split at `key`: it is not the system region, and the key lies
    /// strictly inside it (not at its start: both sides must hold keys).
    pub fn check_split_key(&self, key: &[u8]) -> Result<()> {
        if self.is_system() {
            return Err(Error::InvalidArgument("the system region does not split"));
        }
        if self.is_joint() {
            return Err(Error::InvalidArgument("a region in a joint membership does not split"));
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
        r.peers = vec![PeerMeta::voter(11, 1, 0), PeerMeta::voter(12, 2, 1)];
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
            vec![PeerMeta::voter(31, 1, 0), PeerMeta::voter(32, 2, 1)]
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

    // Proves membership changes go learner -> voter and voter -> learner through a joint
    // state (each step one conf_ver up), and that every unsafe or malformed step is refused.
    #[test]
    fn membership_changes_step_through_joint_states() {
        let mut r = region(b"", b"");
        r.id = 5;
        r.peers = (1..=3).map(|n| PeerMeta::voter(10 + n, n, 0)).collect();
        let add = PeerChange::AddLearner {
            id: 20,
            node: 2,
            shard: 1,
        };
        let with_learner = r.change_peers(&[add]).unwrap();
        assert_eq!(with_learner.peer(20).map(|p| p.role), Some(PeerRole::Learner));
        assert_eq!(with_learner.epoch.conf_ver, 1);
        let moving = with_learner
            .change_peers(&[PeerChange::Promote { id: 20 }, PeerChange::Demote { id: 12 }])
            .unwrap();
        assert!(moving.is_joint());
        assert_eq!(moving.peer(20).map(|p| p.role), Some(PeerRole::IncomingVoter));
        assert_eq!(moving.peer(12).map(|p| p.role), Some(PeerRole::DemotingVoter));
        assert!(
            moving.change_peers(&[PeerChange::Remove { id: 12 }]).is_err(),
            "joint: leave first"
        );
        assert!(moving.check_split_key(b"k").is_err(), "no split while joint");
        let left = moving.leave_joint();
        assert_eq!(
            (left.peer(20).map(|p| p.role), left.peer(12).map(|p| p.role)),
            (Some(PeerRole::Voter), Some(PeerRole::Learner))
        );
        assert_eq!(left.epoch.conf_ver, 3);
        let removed = left.change_peers(&[PeerChange::Remove { id: 12 }]).unwrap();
        assert!(removed.peer(12).is_none() && removed.peers.len() == 3);
        for bad in [
            vec![PeerChange::Remove { id: 11 }],
            vec![PeerChange::Promote { id: 11 }],
            vec![PeerChange::Demote { id: 99 }],
            vec![PeerChange::AddLearner {
                id: 11,
                node: 9,
                shard: 0,
            }],
            vec![PeerChange::AddLearner {
                id: 30,
                node: 1,
                shard: 0,
            }],
            vec![add, PeerChange::Demote { id: 12 }],
            vec![PeerChange::Demote { id: 11 }, PeerChange::Demote { id: 11 }],
            vec![],
        ] {
            assert!(
                matches!(r.change_peers(&bad), Err(Error::InvalidArgument(_))),
                "{bad:?}"
            );
        }
        let mut lone = r.clone();
        lone.peers.truncate(1);
        assert!(
            lone.change_peers(&[PeerChange::Demote { id: 11 }]).is_err(),
            "no voter left"
        );
    }

    // Proves reads and writes check only the range's version, membership changes only conf_ver.
    #[test]
    fn epoch_parts_by_command() {
        let epoch = |conf_ver, version| Epoch { conf_ver, version };
        let mut r = region(b"", b"");
        r.epoch = epoch(4, 2);
        let old_conf = epoch(3, 2);
        assert!(r.check_epoch_parts(old_conf, EpochCheck::Version).is_ok());
        assert!(r.check_epoch_parts(old_conf, EpochCheck::ConfVer).is_err());
        assert!(r.check_epoch_parts(epoch(4, 1), EpochCheck::ConfVer).is_ok());
        assert!(r.check_epoch_parts(old_conf, EpochCheck::Both).is_err());
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
