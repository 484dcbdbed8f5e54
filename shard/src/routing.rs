//! The node's routing table: every region, where its replicas live, and the leader this
//! node last saw. Shared by the node's shards; written only when a leader changes (rare),
//! read to answer `ClusterInfo` and to redirect misrouted requests (`WrongShard`).

use std::collections::BTreeMap;
use std::sync::RwLock;

use corekv_netio::msg::{ClusterInfo, RegionInfo};
use corekv_raftstore::{PeerMeta, Region};

use crate::config::Member;
use crate::convert;

pub struct Routing {
    node_id: u64,
    shards: u32,
    members: Vec<Member>,
    table: RwLock<BTreeMap<u64, Route>>,
}

struct Route {
    region: Region,
    leader: Option<PeerMeta>,
    term: u64,
}

impl Routing {
    pub fn new(node_id: u64, shards: u32, members: Vec<Member>, regions: Vec<Region>) -> Routing {
        let table = regions
            .into_iter()
            .map(|region| {
                (
                    region.id,
                    Route {
                        region,
                        leader: None,
                        term: 0,
                    },
                )
            })
            .collect();
        Routing {
            node_id,
            shards,
            members,
            table: RwLock::new(table),
        }
    }

    /// The shard of this node that hosts `region_id`, if any.
    pub fn shard_of(&self, region_id: u64) -> Option<u32> {
        let table = self.table.read().expect("routing lock");
        let route = table.get(&region_id)?;
        route
            .region
            .peers
            .iter()
            .find(|p| p.node == self.node_id)
            .map(|p| p.shard)
    }

    /// A shard's replica saw `leader` at `term`.
    pub fn set_leader(&self, region_id: u64, leader: Option<PeerMeta>, term: u64) {
        let mut table = self.table.write().expect("routing lock");
        if let Some(route) = table.get_mut(&region_id) {
            if term >= route.term {
                route.leader = leader;
                route.term = term;
            }
        }
    }

    pub fn cluster_info(&self) -> ClusterInfo {
        let table = self.table.read().expect("routing lock");
        ClusterInfo {
            node_id: self.node_id,
            shards: self.shards,
            nodes: self.members.iter().map(|m| (m.id, m.addr.clone())).collect(),
            regions: table
                .values()
                .map(|r| RegionInfo {
                    region: convert::region(&r.region),
                    leader: r.leader.as_ref().map(convert::peer),
                    term: r.term,
                })
                .collect(),
        }
    }
}
