//! The client's view of the cluster: nodes, regions by start key, and leader hints.
//!
//! Owns: the node addresses, the region cache by start key (a region put in evicts those it
//! overlaps) and each region's leader hint with its term. Must not: do I/O (the client feeds it),
//! or let an older epoch of a region replace a newer one.

use std::collections::BTreeMap;

use crate::msg::{ClusterInfo, RegionInfo, WirePeer, WireRegion};

/// Where to look a region up.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Locate<'a> {
    /// The region holding this key.
    Key(&'a [u8]),
    /// The region holding the keys just below this bound (empty: the last region).
    Below(&'a [u8]),
    /// The region with this id.
    Id(u64),
}

#[derive(Default)]
pub(crate) struct Routes {
    /// Node id -> (host, port of its shard 0).
    nodes: BTreeMap<u64, (String, u16)>,
    /// Region start key -> region and leader hint (with the term it was seen at).
    regions: BTreeMap<Vec<u8>, RegionInfo>,
}

impl Routes {
    /// Folds a node's view in: newer region epochs win, and leader claims of higher terms.
    pub(crate) fn merge(&mut self, info: ClusterInfo) {
        for (id, addr) in info.nodes {
            self.add_node(id, &addr);
        }
        for new in info.regions {
            self.merge_region(new);
        }
    }

    /// Node `id`'s shard 0 takes clients at `addr` (`host:port`; anything else is ignored).
    pub(crate) fn add_node(&mut self, id: u64, addr: &str) {
        if let Some((host, port)) = addr
            .rsplit_once(':')
            .and_then(|(h, p)| Some((h.to_string(), p.parse().ok()?)))
        {
            self.nodes.insert(id, (host, port));
        }
    }

    pub(crate) fn knows_node(&self, id: u64) -> bool {
        self.nodes.contains_key(&id)
    }

    /// Folds one region in: a newer epoch wins, and a leader claim of a higher term.
    pub(crate) fn merge_region(&mut self, new: RegionInfo) {
        let stale = self
            .regions
            .values()
            .find(|r| r.region.id == new.region.id)
            .map(|old| (old.region.start.clone(), old.region.epoch.version, old.term, old.leader));
        match stale {
            Some((_, version, _, _)) if version > new.region.epoch.version => {}
            Some((start, version, term, leader)) => {
                let mut new = new;
                if version == new.region.epoch.version && (new.leader.is_none() || term > new.term) {
                    new.leader = leader;
                    new.term = term;
                }
                self.regions.remove(&start);
                self.insert(new);
            }
            None => self.insert(new),
        }
    }

    /// Forgets region `region_id`: the next request for its keys looks it up again.
    pub(crate) fn evict(&mut self, region_id: u64) {
        self.regions.retain(|_, r| r.region.id != region_id);
    }

    fn insert(&mut self, info: RegionInfo) {
        // A newer region replaces any older one overlapping it; an older one (a stale record
        // of a region since split) is not taken.
        let overlapping = || self.regions.values().filter(|r| overlaps(&r.region, &info.region));
        if overlapping().any(|r| r.region.epoch.version > info.region.epoch.version) {
            return;
        }
        let overlapping: Vec<Vec<u8>> = overlapping().map(|r| r.region.start.clone()).collect();
        for start in overlapping {
            self.regions.remove(&start);
        }
        self.regions.insert(info.region.start.clone(), info);
    }

    pub(crate) fn locate(&self, at: Locate<'_>) -> Option<&RegionInfo> {
        let found = match at {
            Locate::Key(key) => self.regions.range(..=key.to_vec()).next_back(),
            Locate::Below([]) => self.regions.iter().next_back(),
            Locate::Below(bound) => self.regions.range(..bound.to_vec()).next_back(),
            Locate::Id(id) => return self.regions.values().find(|r| r.region.id == id),
        };
        let (_, info) = found?;
        let ok = match at {
            Locate::Key(key) => info.region.contains(key),
            // The region must hold the keys right below `bound`: start below it, end at or
            // past it (a gap in the cache is a miss, not the region to its left).
            Locate::Below([]) => info.region.end.is_empty(),
            Locate::Below(bound) => {
                info.region.start.as_slice() < bound
                    && (info.region.end.is_empty() || info.region.end.as_slice() >= bound)
            }
            Locate::Id(_) => unreachable!("answered above"),
        };
        ok.then_some(info)
    }

    fn get_mut(&mut self, region_id: u64) -> Option<&mut RegionInfo> {
        self.regions.values_mut().find(|r| r.region.id == region_id)
    }

    pub(crate) fn set_leader(&mut self, region_id: u64, leader: Option<WirePeer>) {
        if let Some(info) = self.get_mut(region_id) {
            info.leader = leader;
        }
    }

    /// The region's replica on `node` lives on `shard` (a `WrongShard` redirect).
    pub(crate) fn set_shard(&mut self, region_id: u64, node: u64, shard: u32) {
        if let Some(info) = self.get_mut(region_id) {
            for p in info.region.peers.iter_mut().filter(|p| p.node == node) {
                p.shard = shard;
            }
            if let Some(l) = info.leader.as_mut().filter(|l| l.node == node) {
                l.shard = shard;
            }
        }
    }

    pub(crate) fn replace(&mut self, region: WireRegion) {
        if let Some(old) = self.regions.values().find(|r| r.region.id == region.id) {
            if old.region.epoch.version > region.epoch.version || old.region.epoch.conf_ver > region.epoch.conf_ver {
                return;
            }
        }
        self.insert(RegionInfo {
            region,
            leader: None,
            term: 0,
        });
    }

    /// Client address of `peer`'s shard.
    pub(crate) fn addr_of(&self, peer: &WirePeer) -> Option<String> {
        let (host, port) = self.nodes.get(&peer.node)?;
        let port = port.checked_add(u16::try_from(peer.shard).ok()?)?;
        Some(format!("{host}:{port}"))
    }

    pub(crate) fn node_addrs(&self) -> Vec<String> {
        self.nodes.values().map(|(h, p)| format!("{h}:{p}")).collect()
    }

    pub(crate) fn snapshot(&self) -> Vec<RegionInfo> {
        self.regions.values().cloned().collect()
    }
}

fn overlaps(a: &WireRegion, b: &WireRegion) -> bool {
    let below = |end: &[u8], start: &[u8]| !end.is_empty() && end <= start;
    !(below(&a.end, &b.start) || below(&b.end, &a.start))
}
