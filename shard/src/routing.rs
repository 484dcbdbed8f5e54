//! The node's routing table: every region, where its replicas live, and the leader this
//! node last saw; and the client address of every node it has talked to. Shared by the
//! node's shards; written only when a leader or a region changes (a split, a snapshot) or a
//! peer introduces itself (rare),
//! read to answer `ClusterInfo` and to redirect misrouted requests (`WrongShard`).
//!
//! Owns: the region table (with the leader last seen and its term), members' peer IPs, the
//! learned client addresses and the stopped regions. Must not: be written per request, or take a
//! client address from an inbound hello (any dialer could claim one).

use std::collections::BTreeMap;
use std::sync::RwLock;

use corekv_netio::msg::{ClusterInfo, RegionInfo};
use corekv_raftstore::{PeerMeta, Region};

use crate::config::Member;
use crate::convert;

/// Longest client address a peer may announce (`host:port`; a DNS name is at most 253).
pub const CLIENT_ADDR_BYTES_MAX: usize = 300;

pub struct Routing {
    cluster_id: u64,
    node_id: u64,
    shards: u32,
    peer_addr: String,
    /// Each member's peer address (its shard 0's; its IP is where its connections come
    /// from). The initial members, as configured, and the stores registered since
    /// (`add_stores`).
    members: RwLock<BTreeMap<u64, std::net::SocketAddr>>,
    table: RwLock<BTreeMap<u64, Route>>,
    /// Node id -> client address of its shard 0: this node's own, and every peer's from its
    /// `PeerHello`.
    client_addrs: RwLock<BTreeMap<u64, String>>,
    /// Regions whose replica here was stopped by corrupt data, with why.
    stopped: RwLock<BTreeMap<u64, String>>,
    /// The nodes holding a replica of the system region.
    placement_nodes: RwLock<Vec<u64>>,
}

struct Route {
    region: Region,
    leader: Option<PeerMeta>,
    term: u64,
}

/// Who this node is, as its routing table reports it.
pub struct Identity {
    pub cluster_id: u64,
    pub node_id: u64,
    pub shards: u32,
    pub client_addr: String,
    /// Peer address of shard 0, as the cluster knows it.
    pub peer_addr: String,
}

impl Routing {
    /// An empty table: each shard publishes the state of the regions it hosts as it opens, and
    /// whenever one changes (`upsert_region`). `placement_nodes`: the nodes holding a replica of
    /// the system region.
    pub fn new(me: Identity, members: &[Member], placement_nodes: Vec<u64>) -> Routing {
        Routing {
            cluster_id: me.cluster_id,
            node_id: me.node_id,
            shards: me.shards,
            peer_addr: me.peer_addr,
            members: RwLock::new(members.iter().map(|m| (m.id, m.peer)).collect()),
            table: RwLock::new(BTreeMap::new()),
            client_addrs: RwLock::new([(me.node_id, me.client_addr)].into()),
            stopped: RwLock::new(BTreeMap::new()),
            placement_nodes: RwLock::new(placement_nodes),
        }
    }

    pub fn cluster_id(&self) -> u64 {
        self.cluster_id
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// This node's peer address (shard 0).
    pub fn peer_addr(&self) -> &str {
        &self.peer_addr
    }

    pub fn is_member(&self, node_id: u64) -> bool {
        self.members.read().expect("routing lock").contains_key(&node_id)
    }

    /// The IP member `node_id`'s connections come from (its configured peer address's).
    pub fn member_ip(&self, node_id: u64) -> Option<std::net::IpAddr> {
        self.peer_addr_of(node_id).map(|a| a.ip())
    }

    /// Where member `node_id`'s shard 0 takes peer connections (shard k: that port + k).
    pub fn peer_addr_of(&self, node_id: u64) -> Option<std::net::SocketAddr> {
        self.members.read().expect("routing lock").get(&node_id).copied()
    }

    /// Stores the cluster registered (a node that joined): members from now on, their
    /// connections expected from their registered peer address. A member's IP never changes
    /// here (a store that moved is a new member only after this node restarts).
    pub fn add_stores(&self, stores: &[Member]) {
        let mut members = self.members.write().expect("routing lock");
        for s in stores {
            if let std::collections::btree_map::Entry::Vacant(e) = members.entry(s.id) {
                tracing::info!(store = s.id, peer = %s.peer, "a registered store joins the members");
                e.insert(s.peer);
            }
        }
    }

    /// This node's own client address (shard 0).
    pub fn client_addr(&self) -> String {
        self.client_addrs.read().expect("routing lock")[&self.node_id].clone()
    }

    /// Client address of node `node_id`'s shard 0, if this node knows it.
    pub fn client_addr_of(&self, node_id: u64) -> Option<String> {
        self.client_addrs.read().expect("routing lock").get(&node_id).cloned()
    }

    /// A peer introduced itself with its client address, answering a connection this node
    /// dialled to its configured peer address (never from an inbound hello: any dialer could
    /// claim any client address there). This node's own (a connection between two of its
    /// shards) is known already.
    pub fn learn_client_addr(&self, node_id: u64, addr: &str) {
        debug_assert!(self.is_member(node_id));
        if node_id == self.node_id {
            return;
        }
        let mut addrs = self.client_addrs.write().expect("routing lock");
        if addrs.get(&node_id).map(String::as_str) != Some(addr) {
            tracing::info!(node = node_id, addr, "learned a peer's client address");
            addrs.insert(node_id, addr.to_string());
        }
    }

    /// The shard of this node that hosts `region_id`, if any: its leader's, when two shards
    /// host it (a replica moving between them).
    pub fn shard_of(&self, region_id: u64) -> Option<u32> {
        let table = self.table.read().expect("routing lock");
        let route = table.get(&region_id)?;
        let here = |p: &&PeerMeta| p.node == self.node_id;
        (route.leader.as_ref().filter(here))
            .or_else(|| route.region.peers.iter().find(here))
            .map(|p| p.shard)
    }

    /// Shard `shard`'s replica of `region_id` was destroyed (removed from the region): the
    /// region leaves the table unless another shard of this node holds it.
    pub fn drop_replica(&self, region_id: u64, shard: u32) {
        let mut table = self.table.write().expect("routing lock");
        let elsewhere = (table.get(&region_id))
            .is_some_and(|r| (r.region.peers.iter()).any(|p| p.node == self.node_id && p.shard != shard));
        if !elsewhere {
            table.remove(&region_id);
        }
    }

    /// The node leading `region_id`, as this node's replicas last saw it.
    pub fn leader_node(&self, region_id: u64) -> Option<u64> {
        let table = self.table.read().expect("routing lock");
        table.get(&region_id)?.leader.map(|l| l.node)
    }

    /// The nodes holding a replica of the system region.
    pub fn placement_nodes(&self) -> Vec<u64> {
        self.placement_nodes.read().expect("routing lock").clone()
    }

    /// A shard's replica holds this state of its region (a split made it or changed it, or a
    /// snapshot did): taken unless the table has a newer one (epochs never go back).
    pub fn upsert_region(&self, region: &Region) {
        let mut table = self.table.write().expect("routing lock");
        match table.get_mut(&region.id) {
            Some(route) => {
                let (have, new) = (route.region.epoch, region.epoch);
                if new.version >= have.version && new.conf_ver >= have.conf_ver {
                    route.region = region.clone();
                }
            }
            None => {
                let route = Route {
                    region: region.clone(),
                    leader: None,
                    term: 0,
                };
                table.insert(region.id, route);
            }
        }
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

    /// A shard stopped its replica of `region_id` (corrupt data).
    pub fn set_stopped(&self, region_id: u64, why: &str) {
        self.stopped
            .write()
            .expect("routing lock")
            .insert(region_id, why.to_string());
    }

    pub fn cluster_info(&self) -> ClusterInfo {
        let table = self.table.read().expect("routing lock");
        let addrs = self.client_addrs.read().expect("routing lock");
        ClusterInfo {
            cluster_id: self.cluster_id,
            node_id: self.node_id,
            shards: self.shards,
            nodes: addrs.iter().map(|(id, addr)| (*id, addr.clone())).collect(),
            placement_nodes: self.placement_nodes(),
            regions: table
                .values()
                .filter(|r| !r.region.is_system())
                .map(|r| RegionInfo {
                    region: convert::region(&r.region),
                    leader: r.leader.as_ref().map(convert::peer),
                    term: r.term,
                })
                .collect(),
            stopped: self
                .stopped
                .read()
                .expect("routing lock")
                .iter()
                .map(|(id, why)| (*id, why.clone()))
                .collect(),
        }
    }
}
