//! Joining a running cluster (`corekv-server --join`), as a TiKV store joins through PD: ask
//! any node where the cluster is (its id, shard count, the system region), take a store id
//! from the id allocator on first start (recorded in `IDENTITY` before anything else, so a
//! crash never takes two), register the store's addresses with the placement service, and
//! learn the other stores' peer addresses from its directory. A restart does the same with
//! the id `IDENTITY` holds.
//!
//! Owns: that conversation and its checks (another cluster, another shard count, a data dir
//! that is a bootstrap member's). Must not: start shards (`node` does) or host a region: a
//! joined store gets replicas only when the region lifecycle moves them there.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_netio::tls::Tls;
use corekv_netio::{Client, ClientConfig};

use crate::config::{resolve, Member, NodeConfig};
use crate::error::{Error, Result};
use crate::node::{self, DirIdentity};

/// How long each step of joining may take, its retries included.
const JOIN_TIMEOUT: Duration = Duration::from_secs(30);
/// How often a join in progress looks whether the node was told to stop.
const STOP_POLL: Duration = Duration::from_millis(50);

/// What a joined node starts with.
pub struct Joined {
    pub cluster_id: u64,
    pub node_id: u64,
    pub shards: u32,
    /// Every store the cluster's directory lists, this one included.
    pub members: Vec<Member>,
    /// The nodes holding a replica of the system region: where this node's heartbeats go.
    pub placement_nodes: Vec<u64>,
}

/// Joins the cluster `cfg.join` names (first start) or rejoins it (a restart); `cpu` runs the
/// conversation's executor. Given up as soon as `stop` is set (SIGTERM while joining).
pub fn join(cfg: &NodeConfig, cpu: usize, tls: Option<Tls>, stop: Arc<AtomicBool>) -> Result<Joined> {
    let endpoints = cfg.join_endpoints()?;
    let failed = |reason: String| Error::Join {
        endpoints: endpoints.join(","),
        reason,
    };
    let cfg = cfg.clone();
    let endpoints_ = endpoints.clone();
    let joined = crate::spawn_pinned(0, cpu, move || async move {
        let stopped = async {
            while !stop.load(Ordering::Relaxed) {
                glommio::timer::sleep(STOP_POLL).await;
            }
            Err(Error::Config("stopped while joining".into()))
        };
        futures_lite::future::or(converse(&cfg, endpoints_, tls), stopped).await
    })?;
    joined.map_err(|e| match e {
        e @ (Error::DataDirMismatch { .. } | Error::Io { .. }) => e,
        Error::Config(reason) => failed(reason),
        e => failed(e.to_string()),
    })
}

async fn converse(cfg: &NodeConfig, endpoints: Vec<String>, tls: Option<Tls>) -> Result<Joined> {
    let mut client_cfg = ClientConfig::new(endpoints);
    client_cfg.tls = tls;
    client_cfg.request_timeout = JOIN_TIMEOUT;
    let client = Client::with_view(client_cfg, Vec::new());
    let views = client.refresh().await.map_err(net)?;
    let view = views.first().ok_or_else(|| Error::Config("no node answered".into()))?;
    if !(1..=crate::config::SHARDS_MAX as u32).contains(&view.shards) {
        return Err(Error::Config(format!(
            "the cluster reports {} shards per node: not corekv's",
            view.shards
        )));
    }
    let shards = match cfg.shards as u32 {
        0 => view.shards,
        n if n == view.shards => n,
        n => {
            return Err(Error::Config(format!(
                "the cluster's nodes run {} shards; every node must run the same number (--shards {n})",
                view.shards
            )))
        }
    };
    tracing::info!(
        cluster_id = format!("{:#x}", view.cluster_id),
        shards,
        "joining: the cluster answered"
    );
    let node_id = store_id(cfg, &client, view.cluster_id, shards).await?;
    tracing::info!(node = node_id, "joining: registering this store");
    (client.put_store(node_id, &cfg.addr, &cfg.peer_addr, shards).await).map_err(net)?;
    tracing::info!(node = node_id, "joining: reading the other stores' addresses");
    let members = members(&client, node_id, cfg).await?;
    tracing::info!(
        node = node_id,
        cluster_id = format!("{:#x}", view.cluster_id),
        "joined the cluster"
    );
    Ok(Joined {
        cluster_id: view.cluster_id,
        node_id,
        shards,
        members,
        placement_nodes: view.placement_nodes.clone(),
    })
}

/// A client failure while joining, said as it is.
fn net(e: corekv_netio::Error) -> Error {
    Error::Config(e.to_string())
}

/// This node's store id: the one its data dir records, or a new one from the allocator,
/// recorded before it is used.
async fn store_id(cfg: &NodeConfig, client: &Client, cluster_id: u64, shards: u32) -> Result<u64> {
    let expected = |node_id| DirIdentity::joined(cluster_id, node_id, shards);
    if let Some(found) = node::read_identity(&cfg.data_dir)? {
        if found != expected(found.node_id) {
            return Err(Error::DataDirMismatch {
                dir: cfg.data_dir.display().to_string(),
                reason: format!("it holds {found}, but --join reaches {}", expected(found.node_id)),
            });
        }
        return Ok(found.node_id);
    }
    let id = client.alloc_ids(1).await.map_err(net)?;
    node::write_identity(&cfg.data_dir, &expected(id))?;
    Ok(id)
}

/// Every store the directory lists (waiting for a complete directory), and this one.
async fn members(client: &Client, node_id: u64, cfg: &NodeConfig) -> Result<Vec<Member>> {
    let deadline = Instant::now() + JOIN_TIMEOUT;
    let stores = loop {
        let listed = client.get_all_stores().await.map_err(net)?;
        if listed.complete || Instant::now() > deadline {
            break listed.records;
        }
        glommio::timer::sleep(Duration::from_millis(200)).await;
    };
    let me = Member {
        id: node_id,
        addr: cfg.peer_addr.clone(),
        peer: resolve("--peer-addr", &cfg.peer_addr)?,
    };
    let others = stores.iter().filter(|s| s.heartbeat.store_id != node_id);
    let mut members: Vec<Member> =
        (others.filter_map(|s| Member::of_store(s.heartbeat.store_id, &s.heartbeat.peer_addr))).collect();
    members.push(me);
    members.sort_by_key(|m| m.id);
    Ok(members)
}
