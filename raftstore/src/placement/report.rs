//! What a shard reports to the placement leader: a heartbeat for each region it leads, when
//! the region's interval is due or as soon as its leadership or epoch changed (a new leader
//! is known to the directory within one loop, not one interval), with the traffic it served
//! since the last one. The node runtime and the simulator both call `due`; `measure` fills in
//! the regions' sizes (slow: the node runs it off its shard's thread).
//!
//! Owns: when each region is reported next, and the traffic counted meanwhile. Must not: read
//! a clock (`now_ms` comes in), or keep anything for a region this shard does not lead.

use std::collections::{BTreeSet, HashMap};

use corekv_storage::kv::{Cf, KvEngine};

use super::directory::{Flow, RegionHeartbeat};
use crate::keys;
use crate::raft_core::RaftCore;
use crate::region::{Epoch, Region};

/// What a region's last heartbeat said, and when it went.
struct Sent {
    term: u64,
    epoch: Epoch,
    at_ms: u64,
}

pub struct Reporter {
    interval_ms: u64,
    sent: HashMap<u64, Sent>,
    flows: HashMap<u64, Flow>,
}

impl Reporter {
    pub fn new(interval_ms: u64) -> Reporter {
        Reporter {
            interval_ms,
            sent: HashMap::new(),
            flows: HashMap::new(),
        }
    }

    /// Counts traffic a leader served for `region_id`.
    pub fn record(&mut self, region_id: u64, flow: Flow) {
        self.flows.entry(region_id).or_default().add(&flow);
    }

    /// The heartbeats due now. The system region is not reported: it is not in the key space
    /// the directory maps.
    /// Their sizes are left at 0 for `measure`.
    pub fn due(&mut self, core: &RaftCore, now_ms: u64) -> Vec<RegionHeartbeat> {
        let led: BTreeSet<u64> = (core.region_ids().into_iter())
            .filter(|&id| core.is_leader(id) && id != crate::region::SYSTEM_REGION_ID)
            .collect();
        self.sent.retain(|id, _| led.contains(id));
        self.flows.retain(|id, _| led.contains(id));
        let mut due = Vec::new();
        for id in led {
            let (Some(region), Some(leader), Some(term)) = (core.region(id), core.leader_of(id), core.term(id)) else {
                continue;
            };
            let fresh = self
                .sent
                .get(&id)
                .is_some_and(|s| s.term == term && s.epoch == region.epoch && now_ms < s.at_ms + self.interval_ms);
            if fresh {
                continue;
            }
            let sent = Sent {
                term,
                epoch: region.epoch,
                at_ms: now_ms,
            };
            self.sent.insert(id, sent);
            due.push(RegionHeartbeat {
                region: region.clone(),
                leader,
                term,
                approximate_bytes: 0,
                approximate_keys: 0,
                flow: self.flows.remove(&id).unwrap_or_default(),
            });
        }
        due
    }
}

/// Fills in each region's size: RocksDB's estimate of its flushed data (data still in a
/// memtable is not counted). Reads index blocks: slow, so not on a shard's thread.
pub fn measure(kv: &KvEngine, heartbeats: &mut [RegionHeartbeat]) {
    for h in heartbeats {
        (h.approximate_bytes, h.approximate_keys) = size(kv, &h.region);
    }
}

/// RocksDB's estimate of a region's data (0 when it cannot tell: a heartbeat still goes).
fn size(kv: &KvEngine, region: &Region) -> (u64, u64) {
    let Ok(range) = keys::data_range(region) else {
        return (0, 0);
    };
    let (start, end) = (range.start(), range.end().unwrap_or(&[0xff]));
    let bytes = kv.approximate_size(Cf::Default, start, end).unwrap_or(0);
    let keys = kv.approximate_keys(Cf::Default, start, end).unwrap_or(0);
    (bytes, keys)
}
