//! A node's configuration: a TOML file, overridden by command-line flags, with defaults for
//! everything except who the node is (`node_id`, `addr`, `data_dir`, `initial_cluster`).
//!
//! Owns: the fields, their defaults, and every check that can be made before anything is
//! opened (addresses resolve, port ranges fit, raft timing is consistent). Must not: open
//! files or sockets.

use std::net::{SocketAddr, ToSocketAddrs};
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
    /// This node's id (1..=999), one of `initial_cluster`'s; a node that joins (`join`) gets
    /// its id from the cluster (2^32 and up) instead.
    pub node_id: u64,
    /// Client address of shard 0 (`host:port`); shard i serves clients on this port + i.
    pub addr: String,
    /// Peer address of shard 0: raft traffic between nodes, never clients; shard i on this
    /// port + i. Empty: this node's entry in `initial_cluster`.
    pub peer_addr: String,
    pub data_dir: PathBuf,
    /// Every member as `id=host:port` (the PEER address of its shard 0), comma-separated; the
    /// same on every node.
    pub initial_cluster: String,
    /// Client addresses of running nodes (`host:port`, comma-separated): instead of
    /// `initial_cluster`, join that cluster as a new store (its id comes from the cluster;
    /// `peer_addr` is required). Given again on every start: it is how the node finds the
    /// cluster.
    pub join: String,
    /// Names the cluster: nodes of two clusters never talk to each other, nor do clients mix
    /// them, even with the same members (the cluster id is derived from it, the members and
    /// the shard count). The same on every node.
    pub initial_cluster_token: String,
    /// Shards (pinned executors) of this node; 0: one per available CPU. Every node of a
    /// cluster must run the same number.
    pub shards: usize,
    /// Where `/metrics` is served (Prometheus text); empty: not served.
    pub status_addr: String,
    pub raft: RaftSection,
    pub net: NetSection,
    /// The placement service (run by the system region's leader) and what nodes send it.
    pub placement: PlacementSection,
    /// When regions split by size.
    pub split: SplitSection,
    /// Mutual TLS on client and peer ports (off unless the files are named).
    pub security: SecuritySection,
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
    /// Raft entries one region keeps in memory: all not yet applied, applied ones up to
    /// this (older ones are read back from the raft log when a follower needs them).
    pub entry_cache_bytes_max: usize,
    /// Entries a leader may hold appended but not committed; past it, proposals are refused
    /// (retryable) until followers catch up.
    pub uncommitted_bytes_max: u64,
}

/// `[placement]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PlacementSection {
    /// How often each region leader and each node heartbeat the placement leader (a region
    /// whose leader or epoch changed is reported at once). The same on every node.
    pub heartbeat_interval_ms: u64,
}

impl Default for PlacementSection {
    fn default() -> Self {
        PlacementSection {
            heartbeat_interval_ms: 2000,
        }
    }
}

/// `[split]`: a region splits into equal parts when its data grows past a size or a key count
/// (TiKV's split checker; its defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SplitSection {
    /// Key and value bytes a region holds at most before it splits.
    pub region_max_bytes: u64,
    /// Keys a region holds at most before it splits.
    pub region_max_keys: u64,
    /// A region's leader measures it once this many bytes were written to it since it last
    /// did (a check reads the whole region, off the shard's thread; one at a time per shard).
    pub check_after_written_bytes: u64,
}

impl Default for SplitSection {
    fn default() -> Self {
        SplitSection {
            region_max_bytes: 96 << 20,
            region_max_keys: 960_000,
            check_after_written_bytes: 6 << 20,
        }
    }
}

/// `[security]`: all three paths set turn mutual TLS on for client and peer ports alike.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SecuritySection {
    /// The CA that signs every node's and client's certificate (PEM).
    pub ca_path: PathBuf,
    /// This node's certificate and key (PEM); clients and peers must trust `ca_path`.
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    /// Subject CNs a client's or peer's certificate may have; empty: any the CA signed.
    pub cert_allowed_cn: Vec<String>,
}

impl SecuritySection {
    /// The TLS files, if TLS is on; an error if only some are named.
    pub fn files(&self) -> Result<Option<corekv_netio::tls::TlsFiles>> {
        let set = [&self.ca_path, &self.cert_path, &self.key_path].map(|p| !p.as_os_str().is_empty());
        match set {
            [false, false, false] if self.cert_allowed_cn.is_empty() => Ok(None),
            [true, true, true] => Ok(Some(corekv_netio::tls::TlsFiles {
                ca_path: self.ca_path.clone(),
                cert_path: self.cert_path.clone(),
                key_path: self.key_path.clone(),
                allowed_cn: self.cert_allowed_cn.clone(),
            })),
            _ => Err(Error::Config(
                "[security] needs ca_path, cert_path and key_path together (or none of them)".into(),
            )),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NetSection {
    /// Largest frame body accepted from a client or peer.
    pub frame_bytes_max: u32,
    /// Connections a node holds, client and peer ports together; more are refused.
    pub connections_max: usize,
    /// Client connections one remote address may hold on a node; more are refused.
    pub connections_per_client_ip_max: usize,
    /// Snapshot streams being received at once on one peer connection, and on one shard;
    /// more are refused (the sender retries).
    pub snapshot_streams_per_connection_max: usize,
    pub snapshot_streams_per_shard_max: usize,
    /// Requests in flight on one client connection before `ServerBusy`.
    pub inflight_per_connection_max: usize,
    /// Reply bytes one connection may have queued or promised (answers not yet read by the
    /// client, big reads and compare-and-swaps in flight); a read that would pass it is
    /// answered `ServerBusy`, and no new request is read while queued answers pass it.
    pub reply_bytes_per_connection_max: usize,
    /// Bytes queued for one destination shard before raft messages to it are dropped (raft
    /// resends) and snapshots reported as failed.
    pub peer_queue_bytes_max: usize,
    pub connect_timeout_ms: u64,
    /// Reconnect backoff to a peer shard.
    pub reconnect_ms_max: u64,
    /// A TLS handshake (either side) must finish within this, or the connection closes.
    pub handshake_timeout_ms: u64,
}

impl Default for NodeConfig {
    fn default() -> Self {
        NodeConfig {
            node_id: 0,
            addr: String::new(),
            peer_addr: String::new(),
            data_dir: PathBuf::new(),
            initial_cluster: String::new(),
            join: String::new(),
            initial_cluster_token: DEFAULT_CLUSTER_TOKEN.to_string(),
            shards: 0,
            status_addr: String::new(),
            raft: RaftSection::default(),
            net: NetSection::default(),
            placement: PlacementSection::default(),
            split: SplitSection::default(),
            security: SecuritySection::default(),
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
            entry_cache_bytes_max: 16 << 20,
            uncommitted_bytes_max: 64 << 20,
        }
    }
}

impl Default for NetSection {
    fn default() -> Self {
        NetSection {
            frame_bytes_max: corekv_netio::frame::BODY_BYTES_MAX_DEFAULT,
            connections_max: 16384,
            connections_per_client_ip_max: 1024,
            snapshot_streams_per_connection_max: 2,
            snapshot_streams_per_shard_max: 8,
            inflight_per_connection_max: 4096,
            reply_bytes_per_connection_max: 64 << 20,
            peer_queue_bytes_max: 256 << 20,
            connect_timeout_ms: 500,
            reconnect_ms_max: 1000,
            handshake_timeout_ms: 5000,
        }
    }
}

/// The token of a cluster started without `initial_cluster_token`.
pub const DEFAULT_CLUSTER_TOKEN: &str = "corekv";
/// The highest port any listener may take.
const PORT_MAX: u32 = u16::MAX as u32;

/// A member of the initial cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    pub id: u64,
    /// As written in `initial_cluster`.
    pub addr: String,
    /// Peer address of its shard 0, resolved.
    pub peer: SocketAddr,
}

impl Member {
    /// A registered store as a member, its peer address resolved (None, with a warning, when
    /// it does not resolve here).
    pub fn of_store(id: u64, peer_addr: &str) -> Option<Member> {
        let peer = resolve("a store's peer address", peer_addr)
            .inspect_err(|e| tracing::warn!(store = id, error = %e, "store left out"))
            .ok()?;
        Some(Member {
            id,
            addr: peer_addr.to_string(),
            peer,
        })
    }
}

/// `host:port` resolved to its first address; `what` names the flag in the error.
pub fn resolve(what: &str, addr: &str) -> Result<SocketAddr> {
    let mut found = addr
        .to_socket_addrs()
        .map_err(|e| Error::Config(format!("{what} `{addr}`: {e} (expected host:port, port in 1..=65535)")))?;
    found
        .next()
        .ok_or_else(|| Error::Config(format!("{what} `{addr}` resolves to no address")))
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
            let peer = resolve("initial-cluster address", &addr)?;
            if id == 0 || id > NODE_ID_MAX || members.iter().any(|m: &Member| m.id == id) {
                return Err(Error::Config(format!(
                    "initial-cluster ids must be unique and in 1..={NODE_ID_MAX}; `{id}` is not"
                )));
            }
            members.push(Member { id, addr, peer });
        }
        members.sort_by_key(|m| m.id);
        match members.iter().find(|m| m.id == self.node_id) {
            None => Err(Error::Config(format!(
                "node id {} is not in --initial-cluster `{}`",
                self.node_id, self.initial_cluster
            ))),
            Some(me) if !self.peer_addr.is_empty() && resolve("--peer-addr", &self.peer_addr)? != me.peer => {
                Err(Error::Config(format!(
                    "--peer-addr {} differs from this node's initial-cluster address {} (initial-cluster \
                     lists peer addresses)",
                    self.peer_addr, me.addr
                )))
            }
            Some(_) => Ok(members),
        }
    }

    /// Shards this node runs on a machine with `cpus` usable CPUs.
    pub fn shard_count(&self, cpus: usize) -> u32 {
        let shards = if self.shards == 0 { cpus.max(1) } else { self.shards };
        shards.min(SHARDS_MAX) as u32
    }

    /// The client and peer addresses of shard 0, checked: both resolve, shard i's port
    /// (port + i) fits for every shard, and the two ranges do not overlap.
    pub fn listen_addrs(&self, shards: u32) -> Result<(SocketAddr, SocketAddr)> {
        let client = resolve("--addr", &self.addr)?;
        let peer = match self.joins() {
            true => resolve("--peer-addr", &self.peer_addr)?,
            false => (self.members()?.into_iter().find(|m| m.id == self.node_id))
                .map(|m| m.peer)
                .ok_or_else(|| Error::Config("this node has no peer address".into()))?,
        };
        for (flag, a) in [("--addr", client), ("--peer-addr", peer)] {
            let last = u32::from(a.port()) + shards - 1;
            if a.port() == 0 || last > PORT_MAX {
                return Err(Error::Config(format!(
                    "{flag} {a}: {shards} shards listen on ports {}..={last}, past {PORT_MAX}; pick a lower port",
                    a.port()
                )));
            }
        }
        let overlap =
            |a: SocketAddr, b: SocketAddr| a.port() <= b.port() && u32::from(b.port()) < u32::from(a.port()) + shards;
        if client.ip() == peer.ip() && (overlap(client, peer) || overlap(peer, client)) {
            return Err(Error::Config(format!(
                "client ports {client}+{shards} and peer ports {peer}+{shards} overlap; pick ports at least {shards} apart"
            )));
        }
        Ok((client, peer))
    }

    /// The id of the cluster this node belongs to: a function of the token, the members and
    /// the shard count, so every node computes the same one on its own.
    pub fn cluster_id(&self, members: &[Member], shards: u32) -> u64 {
        let mut text = format!("{}|{shards}", self.initial_cluster_token);
        for m in members {
            text.push_str(&format!("|{}={}", m.id, m.addr));
        }
        // Two independent 32-bit checksums: stable across builds (unlike std's hasher), and
        // an identifier, not a secret.
        let high = u64::from(crc32c::crc32c(text.as_bytes()));
        let low = u64::from(crc32c::crc32c_append(0x5bd1_e995, text.as_bytes()));
        high << 32 | low
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
        check(
            !self.initial_cluster_token.is_empty(),
            "initial_cluster_token must not be empty",
        )?;
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
        check(
            r.uncommitted_bytes_max >= corekv_raftstore::cmd::COMMAND_BYTES_MAX as u64,
            "raft.uncommitted_bytes_max must hold the largest command (4 MiB)",
        )?;
        // A raft frame carries one command whole: the largest one plus room for its message.
        let frame_min = corekv_raftstore::cmd::COMMAND_BYTES_MAX + (1 << 20);
        check(
            self.net.frame_bytes_max as usize >= frame_min,
            "net.frame_bytes_max must be at least 5 MiB (the largest command + 1 MiB)",
        )?;
        check(
            (100..=600_000).contains(&self.placement.heartbeat_interval_ms),
            "placement.heartbeat_interval_ms must be in 100..=600000",
        )?;
        let s = &self.split;
        check(
            s.region_max_bytes > 0 && s.region_max_keys > 0 && s.check_after_written_bytes > 0,
            "split.region_max_bytes, split.region_max_keys and split.check_after_written_bytes must be > 0",
        )?;
        let n = &self.net;
        check(
            n.connections_max > 0
                && n.connections_per_client_ip_max > 0
                && n.snapshot_streams_per_connection_max > 0
                && n.snapshot_streams_per_shard_max > 0,
            "net limits (connections, snapshot streams) must be at least 1",
        )?;
        check(
            self.net.reply_bytes_per_connection_max >= 2 * corekv_raftstore::cmd::VALUE_BYTES_MAX,
            "net.reply_bytes_per_connection_max must be at least 2 MiB (a value and its key, twice)",
        )?;
        self.kv.validate().map_err(|e| Error::Config(e.to_string()))?;
        self.security.files()?;
        if !self.joins() {
            return self.members().map(|_| ());
        }
        check(
            self.initial_cluster.is_empty() && self.node_id == 0,
            "--join takes neither --initial-cluster nor --node-id: the cluster gives the node its id",
        )?;
        check(
            !self.peer_addr.is_empty(),
            "--join needs --peer-addr (where other nodes reach this one)",
        )?;
        self.join_endpoints().map(|_| ())
    }

    /// Whether this node joins a running cluster (`--join`) rather than bootstrapping one.
    pub fn joins(&self) -> bool {
        !self.join.trim().is_empty()
    }

    /// The `--join` addresses, each checked to resolve.
    pub fn join_endpoints(&self) -> Result<Vec<String>> {
        let endpoints: Vec<String> = (self.join.split(',').map(str::trim))
            .filter(|e| !e.is_empty())
            .map(String::from)
            .collect();
        for e in &endpoints {
            resolve("--join address", e)?;
        }
        Ok(endpoints)
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
        let ok = config(2, "127.0.0.1:2", "3=127.0.0.1:3, 1=127.0.0.1:1,2=localhost:2");
        let ids: Vec<u64> = ok.members().unwrap().iter().map(|m| m.id).collect();
        assert_eq!(ids, vec![1, 2, 3]);
        let mut other_peer = config(1, "127.0.0.1:5", "1=127.0.0.1:1");
        other_peer.peer_addr = "127.0.0.1:9".into();
        for (cfg, needle) in [
            (config(1, "127.0.0.1:1", "1=127.0.0.1:1,1=127.0.0.1:2"), "unique"),
            (config(1, "127.0.0.1:1", "1=nowhere"), "address"),
            (config(1, "127.0.0.1:1", "x=127.0.0.1:1"), "not a number"),
            (config(4, "127.0.0.1:1", "1=127.0.0.1:1"), "not in"),
            (other_peer, "differs"),
        ] {
            let err = cfg.members().unwrap_err().to_string();
            assert!(err.contains(needle), "{err}");
        }
    }

    // Proves every shard's client and peer port must fit below 65536 and the two ranges
    // must not overlap, each refused with the flag to change.
    #[test]
    fn port_ranges_are_checked() {
        let cfg = config(1, "127.0.0.1:65535", "1=127.0.0.1:20260");
        assert!(cfg.listen_addrs(1).is_ok());
        let err = cfg.listen_addrs(2).unwrap_err().to_string();
        assert!(err.contains("--addr") && err.contains("65536"), "{err}");
        let err = config(1, "127.0.0.1:65536", "1=127.0.0.1:1")
            .listen_addrs(1)
            .unwrap_err()
            .to_string();
        assert!(err.contains("--addr") && err.contains("invalid port"), "{err}");
        let err = config(1, "127.0.0.1:20160", "1=127.0.0.1:20161")
            .listen_addrs(2)
            .unwrap_err()
            .to_string();
        assert!(err.contains("overlap"), "{err}");
        let (client, peer) = config(1, "localhost:20160", "1=127.0.0.1:20162")
            .listen_addrs(2)
            .unwrap();
        assert_eq!((client.port(), peer.port()), (20160, 20162));
    }

    // Proves the cluster id is the same for the same token, members and shards, and differs
    // when any of them does.
    #[test]
    fn cluster_id_follows_token_members_and_shards() {
        let a = config(1, "127.0.0.1:1", "1=127.0.0.1:2,2=127.0.0.1:3");
        let id = |c: &NodeConfig, shards| c.cluster_id(&c.members().unwrap(), shards);
        assert_eq!(id(&a, 2), id(&a.clone(), 2));
        assert_ne!(id(&a, 2), id(&a, 3));
        let mut b = a.clone();
        b.initial_cluster_token = "other".into();
        assert_ne!(id(&a, 2), id(&b, 2));
        let mut c = a.clone();
        c.initial_cluster = "1=127.0.0.1:2,2=127.0.0.1:4".into();
        assert_ne!(id(&a, 2), id(&c, 2));
    }

    // Proves the example config shipped for deployments parses and passes every check (it
    // cannot rot unnoticed).
    #[test]
    fn the_deploy_example_is_a_valid_config() {
        let cfg: NodeConfig = toml::from_str(include_str!("../../tools/deploy/corekv.toml")).unwrap();
        cfg.validate().unwrap();
        assert_eq!((cfg.node_id, cfg.initial_cluster_token.as_str()), (1, "prod-east"));
        cfg.listen_addrs(cfg.shard_count(64)).unwrap();
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
