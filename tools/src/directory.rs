//! How `corekv-ctl` shows the placement service's directory: stores and regions, as text
//! tables or JSON.
//!
//! Owns: the columns and their formats. Must not: ask anything of the cluster.

use corekv_netio::msg::{DirectoryRegion, DirectoryStore, RegionHeartbeat, WirePeer, WireRegion};
use corekv_raftstore::placement::directory::StoreState;
use serde_json::{json, Value};

use crate::bytes::Encoding;

/// What a caller is told when the directory may still be filling.
pub const INCOMPLETE: &str =
    "note: the placement leader took over less than two heartbeat intervals ago; regions that have not reported yet are missing\n";

/// A store's state as `store list` shows it.
fn state(s: &DirectoryStore, complete: bool) -> &'static str {
    StoreState::from_age(s.age_ms, complete).map_or("Unknown", StoreState::name)
}

pub fn stores_text(stores: &[DirectoryStore], complete: bool) -> String {
    let mut t = format!(
        "{:<11} {:<22} {:<12} {:>6} {:>7} {:>7} {:>10} {:>10} {:>10} {:>9}\n",
        "STORE", "ADDRESS", "STATE", "SHARDS", "REGIONS", "LEADERS", "USED", "AVAILABLE", "CAPACITY", "HEARTBEAT"
    );
    for s in stores {
        let h = &s.heartbeat;
        t.push_str(&format!(
            "{:<11} {:<22} {:<12} {:>6} {:>7} {:>7} {:>10} {:>10} {:>10} {:>9}\n",
            h.store_id,
            h.client_addr,
            state(s, complete),
            h.shards,
            h.regions,
            h.leaders,
            size(h.used_bytes),
            size(h.available_bytes),
            size(h.capacity_bytes),
            s.age_ms.map_or("never".into(), age),
        ));
    }
    t
}

pub fn stores_json(stores: &[DirectoryStore], complete: bool) -> Value {
    let stores: Vec<Value> = stores
        .iter()
        .map(|s| {
            let h = &s.heartbeat;
            json!({
                "id": h.store_id, "address": h.client_addr, "peer_address": h.peer_addr, "state": state(s, complete),
                "shards": h.shards, "regions": h.regions, "leaders": h.leaders, "used_bytes": h.used_bytes,
                "available_bytes": h.available_bytes, "capacity_bytes": h.capacity_bytes,
                "last_heartbeat_ms_ago": s.age_ms,
            })
        })
        .collect();
    json!({ "stores": stores, "complete": complete })
}

/// Under every region table: what SIZE and KEYS count.
const SIZE_NOTE: &str =
    "SIZE and KEYS: RocksDB's estimate of flushed data (writes still in a memtable count from its flush)\n";

pub fn regions_text(regions: &[DirectoryRegion], enc: Encoding) -> String {
    let mut t = format!(
        "{:<7} {:<14} {:<14} {:<6} {:<8} {:>5} {:>9} {:>8} {:>10} {:>10} {:>9}\n",
        "REGION", "START", "END", "EPOCH", "LEADER", "TERM", "SIZE", "KEYS", "WRITTEN", "READ", "HEARTBEAT"
    );
    for r in regions {
        let h = &r.heartbeat;
        t.push_str(&format!(
            "{:<7} {:<14} {:<14} {:<6} {:<8} {:>5} {:>9} {:>8} {:>10} {:>10} {:>9}\n",
            h.region.id,
            quoted(&h.region.start, enc),
            quoted(&h.region.end, enc),
            format!("{}/{}", h.region.epoch.conf_ver, h.region.epoch.version),
            format!("n{}/s{}", h.leader.node, h.leader.shard),
            h.term,
            size(h.approximate_bytes),
            h.approximate_keys,
            size(h.flow.written_bytes),
            size(h.flow.read_bytes),
            age(r.age_ms),
        ));
    }
    t.push_str(SIZE_NOTE);
    t
}

/// A peer's role in its region's raft group (`leader`: the region's leader's peer id).
pub fn role(p: &WirePeer, leader: Option<u64>) -> &'static str {
    match p.role {
        _ if Some(p.id) == leader => "leader",
        0 => "voter",
        1 => "learner",
        2 => "incoming voter",
        3 => "demoting voter",
        _ => "unknown role",
    }
}

/// A region's membership, one line per peer.
pub fn peers_text(region: &WireRegion, leader: Option<u64>) -> String {
    (region.peers.iter())
        .map(|p| {
            format!(
                "    peer {} on node {} shard {} ({})\n",
                p.id,
                p.node,
                p.shard,
                role(p, leader)
            )
        })
        .collect()
}

/// One region in full: range, epoch, every peer with its role, size and last interval's flow.
pub fn region_detail(r: &DirectoryRegion, enc: Encoding) -> String {
    let h = &r.heartbeat;
    let peers = [peers_text(&h.region, Some(h.leader.id))];
    let f = &h.flow;
    format!(
        "region {}\n  range [{}, {})\n  epoch conf_ver {} version {}\n  term {}\n  peers:\n{}  size ~{} in ~{} keys (flushed data)\n  \
         last interval: written {} in {} keys, read {} in {} keys, {} requests\n  reported {}\n",
        h.region.id,
        quoted(&h.region.start, enc),
        quoted(&h.region.end, enc),
        h.region.epoch.conf_ver,
        h.region.epoch.version,
        h.term,
        peers.concat(),
        size(h.approximate_bytes),
        h.approximate_keys,
        size(f.written_bytes),
        f.written_keys,
        size(f.read_bytes),
        f.read_keys,
        f.queries,
        age(r.age_ms),
    )
}

pub fn region_json(r: &DirectoryRegion, enc: Encoding) -> Value {
    let RegionHeartbeat {
        region, leader, flow, ..
    } = &r.heartbeat;
    let peers: Vec<Value> = (region.peers.iter())
        .map(|p| json!({"id": p.id, "node": p.node, "shard": p.shard, "leader": p.id == leader.id, "role": role(p, None)}))
        .collect();
    json!({
        "id": region.id, "start": enc.show(&region.start), "end": enc.show(&region.end),
        "conf_ver": region.epoch.conf_ver, "version": region.epoch.version, "term": r.heartbeat.term,
        "peers": peers, "approximate_bytes": r.heartbeat.approximate_bytes,
        "approximate_keys": r.heartbeat.approximate_keys,
        "flow": {"written_bytes": flow.written_bytes, "written_keys": flow.written_keys,
                 "read_bytes": flow.read_bytes, "read_keys": flow.read_keys, "queries": flow.queries},
        "last_heartbeat_ms_ago": r.age_ms,
    })
}

pub fn quoted(key: &[u8], enc: Encoding) -> String {
    format!("\"{}\"", enc.show(key))
}

/// Bytes in a unit a person reads at a glance.
fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn age(ms: u64) -> String {
    format!("{:.1}s ago", ms as f64 / 1000.0)
}
