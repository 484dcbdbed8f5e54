//! Heartbeats in the simulator, as the node runtime sends them: every live shard runs the
//! production `Reporter` and hands what is due to the node its own shard 0 believes leads the
//! system region (lost across a cut or to the network's drop rate, like any packet), and each
//! node's shard 0 reports its store every interval. Delivery is immediate.
//!
//! Owns: the shards' reporters. Must not: build a directory itself (`Placement` does).

use crate::placement::directory::{RegionRecord, StoreHeartbeat, StoreRecord};
use crate::placement::report::{self, Reporter};
use crate::placement::PlacementConfig;
use crate::region::SYSTEM_REGION_ID;

use super::timestamps::TICK_MS;
use super::{ShardAddr, Sim};

/// The placement leader's directory at one moment.
pub struct DirectoryView {
    /// The node whose placement service holds it.
    pub node: u64,
    pub regions: Vec<RegionRecord>,
    pub stores: Vec<StoreRecord>,
}

impl Sim {
    pub(super) fn new_reporter() -> Reporter {
        Reporter::new(PlacementConfig::default().heartbeat_interval_ms)
    }

    /// The heartbeats' and the directory's clock, as a node's: monotonic (simulated time).
    fn mono_ms(&self) -> u64 {
        self.now * TICK_MS
    }

    /// Every live shard's heartbeats due now, delivered.
    pub(super) fn heartbeat(&mut self) {
        let store_due = self
            .now
            .is_multiple_of(PlacementConfig::default().heartbeat_interval_ms / TICK_MS);
        let addrs: Vec<ShardAddr> = self.shards.keys().copied().collect();
        for addr in addrs {
            let shard = &self.shards[&addr];
            let now_ms = self.mono_ms();
            let reporter = self.reporters.get_mut(&addr).expect("every live shard has one");
            let mut due = reporter.due(&shard.core.borrow(), now_ms);
            report::measure(&shard.kv, &mut due);
            let store = (addr.1 == 0 && store_due).then(|| StoreHeartbeat {
                store_id: addr.0,
                client_addr: format!("node-{}:20160", addr.0),
                peer_addr: format!("node-{}:20200", addr.0),
                shards: self.cfg.shards,
                capacity_bytes: 0,
                available_bytes: 0,
                used_bytes: 0,
                regions: 0,
                leaders: 0,
            });
            let believed = self.shards.get(&(addr.0, 0));
            let leader = believed.and_then(|s| s.core.borrow().leader_of(SYSTEM_REGION_ID));
            let Some(leader) = leader.map(|p| p.node) else { continue };
            if leader != addr.0 && self.lost(addr.0, leader) {
                continue;
            }
            let (Some(placement), Some(target)) =
                (self.placements.get_mut(&(leader, 0)), self.shards.get(&(leader, 0)))
            else {
                continue;
            };
            for heartbeat in due {
                let _ = placement.region_heartbeat(heartbeat, now_ms);
            }
            if let Some(store) = store {
                let _ = placement.store_heartbeat(&mut target.core.borrow_mut(), store, now_ms);
            }
        }
    }

    /// The directory of the placement service that leads now, if one does.
    pub fn directory(&self) -> Option<DirectoryView> {
        let ((node, _), placement) = self.placements.iter().find(|(_, p)| p.is_leading())?;
        let (directory, _) = placement.directory(self.mono_ms())?;
        let regions = directory.scan(&[], &[], usize::MAX).into_iter().cloned().collect();
        Some(DirectoryView {
            node: *node,
            regions,
            stores: directory.stores().cloned().collect(),
        })
    }
}
