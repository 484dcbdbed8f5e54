//! The initial layout of a cluster: which regions exist, where their replicas live and who
//! leads first. A pure function of the member list and the shard count, so every node
//! computes the same layout on its own.
//!
//! Rules: the system region (id 1, the placement service's; its own key space) lives on shard
//! 0 of the first `system_replicas(members)` members (5 from 5 members, else 3 from 3, else
//! all) and the first member leads it. Then `members * shards` user regions (ids from 2) split the key space at first bytes spread evenly over
//! printable ASCII (`!`..`~`, where text keys start; until regions split by size, binary keys
//! below `!` or above `~` land in the first or last region);
//! region i lives on shard `i % shards` of `min(3, members)` consecutive members starting
//! at member `(i / shards) % members`, the first of which campaigns at bootstrap. With three
//! nodes every (node, shard) hosts replicas, and each leads one region.
//!
//! Owns: the bootstrap regions (ranges, epoch 1/1, replicas), peer ids (`peer_id`) and first
//! leaders. Must not: read anything but its arguments (no clock, disk or randomness): every node
//! must compute the same layout.

use corekv_raftstore::{Epoch, PeerMeta, Region, FIRST_USER_REGION_ID, SYSTEM_REGION_ID};

use crate::config::{Member, NODE_ID_MAX};

pub const REPLICAS_MAX: usize = 3;
const FIRST_PRINTABLE: u8 = b'!';
const PRINTABLE_SPAN: u8 = b'~' - b'!' + 1;

/// Raft peer id of `node`'s replica of `region_id`.
pub fn peer_id(region_id: u64, node: u64) -> u64 {
    debug_assert!(node <= NODE_ID_MAX);
    region_id * (NODE_ID_MAX + 1) + node
}

/// The `j`-th of `count` split keys: one byte while the span allows, two bytes beyond.
fn split_key(j: u64, count: u64) -> Vec<u8> {
    let span = u64::from(PRINTABLE_SPAN);
    if count <= span {
        return vec![FIRST_PRINTABLE + (j * span / count) as u8];
    }
    let at = j * span * 256 / count;
    vec![FIRST_PRINTABLE + (at / 256) as u8, (at % 256) as u8]
}

/// Replicas of the system region: an odd count, at most 5.
fn system_replicas(members: usize) -> usize {
    match members {
        5.. => 5,
        3.. => 3,
        n => n,
    }
}

const BOOTSTRAP_EPOCH: Epoch = Epoch {
    conf_ver: 1,
    version: 1,
};

/// Every region of a fresh cluster: the system region, then the user regions in key order.
pub fn bootstrap(members: &[Member], shards: u32) -> Vec<Region> {
    let system = Region {
        id: SYSTEM_REGION_ID,
        start: Vec::new(),
        end: Vec::new(),
        epoch: BOOTSTRAP_EPOCH,
        peers: (members.iter().take(system_replicas(members.len())))
            .map(|m| PeerMeta::voter(peer_id(SYSTEM_REGION_ID, m.id), m.id, 0))
            .collect(),
    };
    std::iter::once(system).chain(user_regions(members, shards)).collect()
}

fn user_regions(members: &[Member], shards: u32) -> Vec<Region> {
    assert!(!members.is_empty() && shards > 0);
    let n = members.len() as u64;
    let count = n * u64::from(shards);
    let bound = |j: u64| {
        if j == 0 || j == count {
            Vec::new()
        } else {
            split_key(j, count)
        }
    };
    (0..count)
        .map(|i| {
            let id = FIRST_USER_REGION_ID + i;
            let shard = (i % u64::from(shards)) as u32;
            let first = (i / u64::from(shards)) % n;
            let replicas = (n as usize).min(REPLICAS_MAX) as u64;
            Region {
                id,
                start: bound(i),
                end: bound(i + 1),
                epoch: BOOTSTRAP_EPOCH,
                peers: (0..replicas)
                    .map(|k| {
                        let node = members[((first + k) % n) as usize].id;
                        PeerMeta::voter(peer_id(id, node), node, shard)
                    })
                    .collect(),
            }
        })
        .collect()
}

/// The peer that campaigns at bootstrap (spreads leaders over nodes and shards).
pub fn first_leader(region: &Region) -> PeerMeta {
    region.peers[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn members(n: u64) -> Vec<Member> {
        (1..=n)
            .map(|id| {
                let addr = format!("127.0.0.1:{}", 20000 + id);
                Member {
                    id,
                    peer: addr.parse().unwrap(),
                    addr,
                }
            })
            .collect()
    }

    // Proves the layout covers the key space without gaps, gives every (node, shard) of a
    // 3 x 2 cluster replicas and exactly one first leader, and puts each region's replicas on
    // one shard index of distinct nodes.
    #[test]
    fn three_nodes_two_shards() {
        let all = bootstrap(&members(3), 2);
        assert!(all[0].is_system() && !all[1..].iter().any(Region::is_system));
        let regions = &all[1..];
        assert_eq!(regions.len(), 6);
        assert_eq!(regions[0].id, FIRST_USER_REGION_ID);
        assert!(regions[0].start.is_empty() && regions[5].end.is_empty());
        for w in regions.windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert!(w[0].start < w[0].end || w[0].start.is_empty());
        }
        let mut leads = std::collections::BTreeMap::new();
        for r in regions {
            let nodes: std::collections::BTreeSet<u64> = r.peers.iter().map(|p| p.node).collect();
            assert_eq!(nodes.len(), 3);
            assert!(r.peers.iter().all(|p| p.shard == r.peers[0].shard));
            let l = first_leader(r);
            *leads.entry((l.node, l.shard)).or_insert(0) += 1;
        }
        assert_eq!(leads.len(), 6);
        assert!(leads.values().all(|&c| c == 1));
    }

    // Proves split keys stay strictly increasing for many regions (two-byte keys).
    #[test]
    fn many_regions_have_distinct_bounds() {
        let regions = bootstrap(&members(5), 64);
        assert_eq!(regions.len(), 321);
        for w in regions[1..].windows(2) {
            assert_eq!(w[0].end, w[1].start);
            assert!(w[0].start < w[0].end || w[0].start.is_empty());
        }
    }

    // Proves a one-node cluster gets single-replica regions, five nodes get three replicas of
    // user regions, and the system region gets an odd count up to five, all on shard 0.
    #[test]
    fn replica_count_follows_members() {
        assert!(bootstrap(&members(1), 2).iter().all(|r| r.peers.len() == 1));
        assert!(bootstrap(&members(5), 1)[1..].iter().all(|r| r.peers.len() == 3));
        for (n, replicas) in [(1, 1), (2, 2), (3, 3), (4, 3), (5, 5), (7, 5)] {
            let system = bootstrap(&members(n), 2).remove(0);
            assert_eq!(system.peers.len(), replicas, "{n} members");
            assert!(system.peers.iter().all(|p| p.shard == 0) && first_leader(&system).node == 1);
        }
    }
}
