//! A shard's part in the placement service's directory: it heartbeats the placement leader
//! (on the peer port) with the regions it leads and, on shard 0, its node's own state; the
//! shard that runs the placement service takes heartbeats and answers directory requests.
//!
//! Owns: when this shard's heartbeats go and where (the peer port, or the node's
//! `HeartbeatInbox` when the placement leader is this node's shard 0), the traffic counted for
//! them, and the forgery check on heartbeats received (a node reports only what it leads and
//! itself).
//! Must not: decide what the directory keeps (`placement::directory` does).

use corekv_netio::frame::{self, Body, FrameKind};
use corekv_netio::msg::{self as wire, ArchivedHeartbeat, ArchivedOp, Heartbeat, Reply, WireError};
use corekv_netio::FrameError;
use corekv_raftstore::placement::directory::{Directory, Flow, RegionHeartbeat, StoreHeartbeat};
use corekv_raftstore::placement::stores;
use corekv_raftstore::placement::{report, Refused};
use corekv_raftstore::SYSTEM_REGION_ID;

use std::rc::Rc;
use std::sync::Mutex;

use super::Shard;
use crate::config::Member;
use crate::convert;
use crate::routing::CLIENT_ADDR_BYTES_MAX;

/// One heartbeat as frames of at most `REGIONS_PER_FRAME` regions each (the store's state in
/// the last), with the count of regions in each.
pub fn heartbeat_frames(regions: &[RegionHeartbeat], mut store: Option<wire::StoreHeartbeat>) -> Vec<(u64, Vec<u8>)> {
    let mut frames = Vec::new();
    let mut parts = regions.chunks(REGIONS_PER_FRAME).peekable();
    while parts.peek().is_some() || store.is_some() {
        let part = parts.next().unwrap_or_default();
        let last = parts.peek().is_none();
        let heartbeat = Heartbeat {
            regions: part.iter().map(convert::region_heartbeat).collect(),
            store: if last { store.take() } else { None },
        };
        frames.push((part.len() as u64, frame::encode(FrameKind::Heartbeat, 0, &heartbeat)));
    }
    frames
}

/// Batches of heartbeats the inbox holds; more are dropped (the next interval's follow).
const INBOX_BATCHES_MAX: usize = 64;

/// Region heartbeats from the other shards of a node to its shard 0, when that runs the
/// placement service: the one channel between a node's shards for this, bounded, drained
/// by shard 0 every tick.
#[derive(Default)]
pub struct HeartbeatInbox {
    batches: Mutex<Vec<Vec<RegionHeartbeat>>>,
}

impl HeartbeatInbox {
    fn push(&self, batch: Vec<RegionHeartbeat>) -> bool {
        let mut batches = self.batches.lock().expect("inbox lock");
        let room = batches.len() < INBOX_BATCHES_MAX;
        if room {
            batches.push(batch);
        }
        room
    }

    fn take(&self) -> Vec<Vec<RegionHeartbeat>> {
        std::mem::take(&mut *self.batches.lock().expect("inbox lock"))
    }
}

/// Region heartbeats in one frame (each well under 10 KiB: keys are at most 4 KiB).
const REGIONS_PER_FRAME: usize = 256;
/// Directory records in one reply (each under 9 KiB: a page stays far below a frame's limit).
pub const DIRECTORY_SCAN_LIMIT_MAX: u32 = 256;

impl Shard {
    /// Sends the heartbeats due now to the placement leader (called every tick). Their
    /// regions' sizes are measured off the shard's thread first, one round at a time.
    pub(super) fn heartbeat(self: &Rc<Self>) {
        if self.measuring.get() {
            return;
        }
        let now_ms = self.mono_ms();
        let regions = (self.reporter.borrow_mut()).due(&self.engines.core.borrow(), now_ms);
        let interval = self.cfg.placement.heartbeat_interval_ms;
        let store = (self.index == 0 && now_ms >= self.store_reported_ms.get() + interval).then(|| {
            self.store_reported_ms.set(now_ms);
            self.learn_stores();
            self.store_heartbeat()
        });
        if regions.is_empty() && store.is_none() {
            return;
        }
        self.measuring.set(true);
        let shard = Rc::clone(self);
        glommio::spawn_local(async move {
            let regions = (shard.engines.kv)
                .offload(move |kv| {
                    let mut regions = regions;
                    report::measure(kv, &mut regions);
                    regions
                })
                .await;
            shard.measuring.set(false);
            shard.deliver(regions, store);
        })
        .detach();
    }

    /// Hands heartbeats to the placement leader: through the peer port, the node's inbox, or
    /// straight to this shard's own placement service. A node without a replica of the system
    /// region does not see its leader: it sends to every node that has one (those that do not
    /// lead count it refused).
    fn deliver(&self, regions: Vec<RegionHeartbeat>, store: Option<StoreHeartbeat>) {
        let count = regions.len() as u64;
        let targets = match self.routing.shard_of(SYSTEM_REGION_ID) {
            Some(_) => self.routing.leader_node(SYSTEM_REGION_ID).into_iter().collect(),
            None => self.routing.placement_nodes(),
        };
        if targets.is_empty() {
            self.metrics.heartbeats_dropped.inc_by(count);
            return;
        }
        if targets == [self.routing.node_id()] {
            let sent = match self.index {
                0 => {
                    self.take_heartbeats(regions, store);
                    true
                }
                _ => self.inbox.push(regions),
            };
            self.count_sent(sent, count);
            return;
        }
        let store = store.as_ref().map(convert::store_heartbeat);
        let frames = heartbeat_frames(&regions, store);
        for node in targets {
            for (n, frame) in &frames {
                let sent = self.transport.send_to_shard_0(node, frame.clone());
                self.count_sent(sent, *n);
            }
        }
    }

    fn count_sent(&self, sent: bool, regions: u64) {
        let counter = if sent {
            &self.metrics.heartbeats_sent
        } else {
            &self.metrics.heartbeats_dropped
        };
        counter.inc_by(regions);
    }

    /// Shard 0 of a node with a replica of the system region: the stores registered in it
    /// (as applied here) become members, so a node that joined is let in. Called every tick;
    /// reads the registry only when the system region applied something since.
    pub(super) fn admit_registered(&self) {
        let core = self.engines.core.borrow();
        let (Some(system), Some(applied)) = (core.region(SYSTEM_REGION_ID), core.applied(SYSTEM_REGION_ID)) else {
            return;
        };
        if self.registry_read_at.replace(applied) == applied {
            return;
        }
        match stores::load(&self.engines.kv, system) {
            Ok(registered) => self.admit(registered.iter().map(|s| (s.id, s.peer_addr.as_str()))),
            Err(e) => tracing::warn!(error = %e, "the store registry could not be read"),
        }
    }

    /// Shard 0 of a node without a replica of the system region: asks the placement service
    /// for the registered stores (one request at a time, every store heartbeat), so that a
    /// store that joined after this node did is let in here too.
    fn learn_stores(self: &Rc<Self>) {
        if self.routing.shard_of(SYSTEM_REGION_ID).is_some() || self.learning_stores.replace(true) {
            return;
        }
        let shard = Rc::clone(self);
        glommio::spawn_local(async move {
            match shard.placement_client().get_all_stores().await {
                Ok(listed) => {
                    let stores = listed.records.iter().map(|s| &s.heartbeat);
                    shard.admit(stores.map(|s| (s.store_id, s.peer_addr.as_str())));
                }
                Err(e) => tracing::debug!(error = %e, "the registered stores could not be listed"),
            }
            shard.learning_stores.set(false);
        })
        .detach();
    }

    /// Registered stores (id, peer address) become members: only those new here, and only
    /// addresses that are IP:port (no name lookup on the shard's thread; a joining store
    /// registers with IP:port).
    fn admit<'a>(&self, registered: impl Iterator<Item = (u64, &'a str)>) {
        let new = registered.filter(|(id, _)| !self.routing.is_member(*id));
        let members: Vec<Member> = new
            .filter_map(|(id, addr)| {
                let peer = addr.parse().ok()?;
                Some(Member {
                    id,
                    addr: addr.to_string(),
                    peer,
                })
            })
            .collect();
        if !members.is_empty() {
            self.routing.add_stores(&members);
        }
    }

    /// Shard 0: takes what the node's other shards reported (called every tick).
    pub(super) fn take_inbox(&self) {
        if self.index == 0 {
            for batch in self.inbox.take() {
                self.take_heartbeats(batch, None);
            }
        }
    }

    /// The directory's and the heartbeats' clock: monotonic milliseconds since the shard
    /// started (a wall clock stepped back must not stall heartbeats or ages).
    fn mono_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// This node as its store record shows it.
    fn store_heartbeat(&self) -> StoreHeartbeat {
        let load = self.node_metrics.load();
        let space = self.engines.kv.disk_space();
        StoreHeartbeat {
            store_id: self.routing.node_id(),
            client_addr: self.routing.client_addr(),
            peer_addr: self.routing.peer_addr().to_string(),
            shards: self.routing.shards(),
            capacity_bytes: space.as_ref().map_or(0, |s| s.capacity_bytes),
            available_bytes: space.as_ref().map_or(0, |s| s.available_bytes),
            used_bytes: load.kv_disk_bytes + load.raft_log_disk_bytes,
            regions: load.regions,
            leaders: load.leaders,
        }
    }

    /// A heartbeat frame from `node` (the connection's peer): a node reports only regions it
    /// leads and only itself; anything else is a forgery and refuses the whole frame.
    pub(super) fn handle_heartbeat(&self, node: u64, body: &Body) -> Result<(), FrameError> {
        let archived = frame::access::<ArchivedHeartbeat>(body)?;
        let regions: Vec<RegionHeartbeat> = archived.regions.iter().map(convert::region_heartbeat_from).collect();
        let store = archived.store.as_ref().map(convert::store_heartbeat_from);
        let forged = regions
            .iter()
            .find(|h| h.leader.node != node || !h.region.peers.contains(&h.leader));
        if let Some(h) = forged {
            return Err(FrameError::Invalid {
                reason: format!("node {node} reported region {} led by {:?}", h.region.id, h.leader),
            });
        }
        if let Some(s) = store.as_ref().filter(|s| s.store_id != node) {
            return Err(FrameError::Invalid {
                reason: format!("node {node} reported store {}", s.store_id),
            });
        }
        let long = |a: &String| a.len() > CLIENT_ADDR_BYTES_MAX;
        if store
            .as_ref()
            .is_some_and(|s| long(&s.client_addr) || long(&s.peer_addr))
        {
            return Err(FrameError::Invalid {
                reason: format!("node {node} reported an address over {CLIENT_ADDR_BYTES_MAX} bytes"),
            });
        }
        self.take_heartbeats(regions, store);
        self.kick(); // a store's first report is written to the system region
        Ok(())
    }

    fn take_heartbeats(&self, regions: Vec<RegionHeartbeat>, store: Option<StoreHeartbeat>) {
        let now_ms = self.mono_ms();
        let mut placement = self.placement.borrow_mut();
        for heartbeat in regions {
            match placement.region_heartbeat(heartbeat, now_ms) {
                Ok(()) => self.metrics.heartbeats_accepted.inc(),
                Err(e) => {
                    self.metrics.heartbeats_refused.inc();
                    if let Refused::Stale(why) = e {
                        tracing::debug!(%why, "stale region heartbeat refused");
                    }
                }
            }
        }
        if let Some(store) = store {
            let _ = placement.store_heartbeat(&mut self.engines.core.borrow_mut(), store, now_ms);
        }
        if let Some((directory, _)) = placement.directory(now_ms) {
            self.metrics.directory_regions.set(directory.region_count() as i64);
            self.metrics.directory_stores.set(directory.store_count() as i64);
        }
    }

    /// The answer to a directory request (`op` is one), or `None` for any other request.
    pub(super) fn directory_reply(&self, op: &ArchivedOp) -> Option<Result<Reply, WireError>> {
        let is_directory = matches!(
            op,
            ArchivedOp::GetRegion { .. }
                | ArchivedOp::GetRegionById { .. }
                | ArchivedOp::GetRegionBelow { .. }
                | ArchivedOp::ScanRegions { .. }
                | ArchivedOp::GetStore { .. }
                | ArchivedOp::GetAllStores
        );
        if !is_directory {
            return None;
        }
        let now_ms = self.mono_ms();
        let placement = self.placement.borrow();
        let Some((directory, complete)) = placement.directory(now_ms) else {
            return Some(Err(self.not_placement_leader()));
        };
        let regions = |records: Vec<_>| Reply::Regions {
            regions: records
                .into_iter()
                .map(|r| convert::directory_region(r, now_ms))
                .collect(),
            complete,
        };
        let stores = |records: Vec<_>| Reply::Stores {
            stores: records
                .into_iter()
                .map(|s| convert::directory_store(s, now_ms))
                .collect(),
            complete,
        };
        Some(Ok(match op {
            ArchivedOp::GetRegion { key } => regions(directory.region_by_key(key).into_iter().collect()),
            ArchivedOp::GetRegionById { id } => regions(directory.region_by_id(id.to_native()).into_iter().collect()),
            ArchivedOp::GetRegionBelow { bound } => regions(directory.region_below(bound).into_iter().collect()),
            ArchivedOp::ScanRegions { start, end, limit } => {
                let limit = limit.to_native().min(DIRECTORY_SCAN_LIMIT_MAX) as usize;
                regions(directory.scan(start, end, limit))
            }
            ArchivedOp::GetStore { id } => stores(directory.store(id.to_native()).into_iter().collect()),
            ArchivedOp::GetAllStores => stores(Directory::stores(directory).collect()),
            _ => return None,
        }))
    }

    /// Counts traffic a request brought `region_id` (a write when proposed, a read when
    /// answered), for its next heartbeat.
    pub(super) fn count(&self, region_id: u64, flow: Flow) {
        self.reporter.borrow_mut().record(region_id, flow);
    }
}
