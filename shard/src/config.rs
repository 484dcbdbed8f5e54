//! A node's configuration: a TOML file, overridden by command-line flags, with defaults for
//! everything except who the node is (`node_id`, `addr`, `data_dir`, `initial_cluster`).

use std::path::PathBuf;

use corekv_storage::kv::KvConfig;
use corekv_storage::raftlog::LogConfig;
use serde::Deserialize;

use crate::error::{Error, Result};

/// Raft peer ids are `region_id * PEER_ID_STRIDE + node_id`, so node ids stay below it.
pub const NODE_ID_MAX: u64 = 999;
/// Shard i listens on port + i; more shards than this per node are refused.
pub const SHARDS_MAX: usize = 64;

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeConfig {
    /// This node's id (1..=999), one of `initial_cluster`'s.
    pub node_id: u64,
    /// Client and peer address of shard 0; shard i listens on this port + i.
    pub addr: String,
    pub data_dir: PathBuf,
    /// Every member as `id=host:port` (its shard 0), comma-separated; the same on every node.
    pub initial_cluster: String,
    /// Shards (pinned executors) of this node; 0: one per available CPU. Every node of a
    /// cluster must run the same number.
    pub shards: usize,
    /// Where `/metrics` is served (Prometheus text); empty: not served.
    pub status_addr: String,
    pub raft: RaftSection,
    pub net: NetSection,
    /// The raft log engine (one per shard).
    pub log: LogConfig,
    /// The KV engine (one RocksDB per shard).
    pub kv: KvConfig,
    /// Block cache shared by all shards' KV engines.
    pub block_cache_bytes: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RaftSection {
    /// Length of one raft tick.
    pub tick_ms: u64,
    /// Election timeout (randomized in [election_ticks, 2 * election_ticks)).
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    /// Leader lease for reads; must be below `election_ticks`.
    pub lease_ticks: usize,
    /// Requests waiting in one region before `ServerBusy`.
    pub pending_requests_max: usize,
    /// Log GC keeps this many applied entries per region...
    pub gc_keep_entries: u64,
    /// ...and runs once a region has this many more.
    pub gc_slack_entries: u64,
    /// How often log GC is considered.
    pub gc_interval_ticks: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetSection {
    /// Largest frame body accepted from a client or peer.
    pub frame_bytes_max: u32,
    /// Requests in flight on one client connection before `ServerBusy`.
    pub inflight_per_connection_max: usize,
    /// Bytes queued for one destination shard before raft messages to it are dropped (raft
    /// resends) and snapshots reported as failed.
    pub peer_queue_bytes_max: usize,
    pub connect_timeout_ms: u64,
    /// Reconnect backoff to a peer shard.
    pub reconnect_ms_max: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 0,
            addr: String::new(),
            data_dir: PathBuf::new(),
            initial_cluster: String::new(),
            shards: 0,
            status_addr: String::new(),
            raft: RaftSection::default(),
            net: NetSection::default(),
            log: LogConfig::default(),
            kv: KvConfig::default(),
            block_cache_bytes: 256 << 20,
        }
    }
}

impl Default for RaftSection {
    fn default() -> Self {
        RaftSection {
            tick_ms: 50,
            election_ticks: 10,
            heartbeat_ticks: 2,
            lease_ticks: 8,
            pending_requests_max: 4096,
            gc_keep_entries: 1024,
            gc_slack_entries: 4096,
            gc_interval_ticks: 20,
        }
    }
}

impl Default for NetSection {
    fn default() -> Self {
        NetSection {
            frame_bytes_max: corekv_netio::frame::BODY_BYTES_MAX_DEFAULT,
            inflight_per_connection_max: 4096,
            peer_queue_bytes_max: 256 << 20,
            connect_timeout_ms: 500,
            reconnect_ms_max: 1000,
        }
    }
}

/// A member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    pub addr: String,
}

impl NodeConfig {
    /// Reads a TOML file (fields not named keep their defaults).
    pub fn from_file(path: &std::path::Path) -> Result<NodeConfig> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Config(format!("{}: {e}", path.display())))?;
        toml::from_str(&text).map_err(|e| Error::Config(format!("{}: {e}", path.display())))
    }

    /// The members of `initial_cluster`, checked: ids unique and in range, addresses parse,
    /// this node among them with this node's address.
    pub fn members(&self) -> Result<Vec<Member>> {
        let mut members = Vec::new();
        for part in self.initial_cluster.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (id, addr) = part
                .split_once('=')
                .ok_or_else(|| Error::Config(format!("initial-cluster entry `{part}` is not id=host:port")))?;
            let id: u64 = id
                .trim()
                .parse()
                .map_err(|_| Error::Config(format!("initial-cluster id `{id}` is not a number")))?;
            let addr = addr.trim().to_string();
            addr.parse::<std::net::SocketAddr>()
                .map_err(|e| Error::Config(format!("initial-cluster address `{addr}`: {e}")))?;
            if id == 0 || id > NODE_ID_MAX || members.iter().any(|m: &Member| m.id == id) {
                return Err(Error::Config(format!(
                    "initial-cluster ids must be unique and in 1..={NODE_ID_MAX}; `{id}` is not"
                )));
            }
            members.push(Member { id, addr });
        }
        members.sort_by_key(|m| m.id);
        match members.iter().find(|m| m.id == self.node_id) {
            None => Err(Error::Config(format!(
                "node id {} is not in --initial-cluster `{}`",
                self.node_id, self.initial_cluster
            ))),
            Some(me) if me.addr != self.addr => Err(Error::Config(format!(
                "--addr {} differs from this node's initial-cluster address {}",
                self.addr, me.addr
            ))),
            Some(_) => Ok(members),
        }
    }

    /// Everything else that can be checked before opening anything.
    pub fn validate(&self) -> Result<()> {
        let check = |ok: bool, what: &str| {
            if ok {
                Ok(())
            } else {
                Err(Error::Config(what.to_string()))
            }
        };
        check(self.data_dir != PathBuf::new(), "--data-dir is required")?;
        check(self.shards <= SHARDS_MAX, "at most 64 shards per node")?;
        let r = &self.raft;
        check(r.tick_ms > 0, "raft.tick_ms must be > 0")?;
        check(
            r.heartbeat_ticks > 0 && r.heartbeat_ticks < r.election_ticks,
            "raft.heartbeat_ticks must be in 1..election_ticks",
        )?;
        check(
            r.lease_ticks < r.election_ticks,
            "raft.lease_ticks must be below raft.election_ticks",
        )?;
        check(r.gc_keep_entries > 0, "raft.gc_keep_entries must be > 0")?;
        check(r.gc_interval_ticks > 0, "raft.gc_interval_ticks must be > 0")?;
        // A raft frame carries one command whole: the largest one plus room for its message.
        let frame_min = corekv_raftstore::cmd::COMMAND_BYTES_MAX + (1 << 20);
        check(
            self.net.frame_bytes_max as usize >= frame_min,
            "net.frame_bytes_max must be at least 5 MiB (the largest command + 1 MiB)",
        )?;
        self.kv.validate().map_err(|e| Error::Config(e.to_string()))?;
        self.members().map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(node_id: u64, addr: &str, cluster: &str) -> NodeConfig {
        NodeConfig {
            node_id,
            addr: addr.into(),
            data_dir: "/tmp/x".into(),
            initial_cluster: cluster.into(),
            ..NodeConfig::default()
        }
    }

    // Proves a well-formed cluster parses, sorted, and each malformed one is refused by name.
    #[test]
    fn initial_cluster_is_checked() {
        let ok = config(2, "127.0.0.1:2", "3=127.0.0.1:3, 1=127.0.0.1:1,2=127.0.0.1:2");
        let ids: Vec<u64> = ok.members().unwrap().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        for (cfg, needle) in [
            (config(1, "127.0.0.1:1", "1=127.0.0.1:1,1=127.0.0.1:2"), "unique"),
            (config(1, "127.0.0.1:1", "1=nowhere"), "address"),
            (config(1, "127.0.0.1:1", "x=127.0.0.1:1"), "not a number"),
            (config(4, "127.0.0.1:1", "1=127.0.0.1:1"), "not in"),
            (config(1, "127.0.0.1:9", "1=127.0.0.1:1"), "differs"),
        ] {
            let err = cfg.members().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    // Proves a TOML file may name only some fields and the rest keep their defaults, and
    // that an unknown field is refused.
    #[test]
    fn toml_sections_default_and_reject_unknown() {
        let cfg: NodeConfig =
            toml::from_str("node_id = 1\n[raft]\ntick_ms = 20\n[kv]\nmax_background_jobs = 2\n").unwrap();
        assert_eq!((cfg.node_id, cfg.raft.tick_ms, cfg.raft.election_ticks), (1, 20, 10));
        assert_eq!(cfg.kv.max_background_jobs, 2);
        assert!(toml::from_str::<NodeConfig>("[raft]\ntick = 1\n").is_err());
    }
}
