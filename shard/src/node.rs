//! Starting and stopping a node: config and data-dir checks, the bootstrap layout, one pinned
//! executor per shard, the status server, and an orderly stop (the `stop` flag: SIGTERM in
//! the server binary), or a stop of every shard when one of them fails.
//!
//! Owns: the node's life: the data dir's checks, `LOCK` and `IDENTITY`, the shards' executors,
//! and the stop of all when one fails. Must not: handle a request or a raft message (the shards
//! do), or open a data dir that another server holds or that was made for another identity.

use std::fs::File;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use corekv_netio::tls::Tls;
use corekv_storage::kv::SharedBlockCache;
use serde::{Deserialize, Serialize};

use crate::admission::Admission;
use corekv_raftstore::Region;

use crate::config::{Member, NodeConfig};
use crate::error::{Error, Result};
use crate::layout;
use crate::metrics::{NodeMetrics, StatusServer};
use crate::routing::{Identity, Routing};
use crate::runtime::{Shard, ShardArgs};

/// Who a data dir belongs to; a restart with other arguments is refused, not "recovered".
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DirIdentity {
    /// Hex: TOML integers stop at i64::MAX.
    cluster_id: String,
    pub(crate) node_id: u64,
    shards: u32,
    /// `id=peer address` of every initial member; empty for a node that joined (`--join`).
    members: Vec<String>,
    /// The data layout (`LAYOUT_VERSION`): a dir of another layout is refused, never misread.
    layout: u32,
}

/// 2: the system region (id 1) and the `s` key space beside user data. 3: peers with roles
/// (voter, learner, joint) in region states; tombstones of removed replicas.
const LAYOUT_VERSION: u32 = 3;

impl DirIdentity {
    /// A node that joined cluster `cluster_id` as store `node_id`.
    pub(crate) fn joined(cluster_id: u64, node_id: u64, shards: u32) -> DirIdentity {
        DirIdentity {
            cluster_id: format!("{cluster_id:#018x}"),
            node_id,
            shards,
            members: Vec::new(),
            layout: LAYOUT_VERSION,
        }
    }
}

impl std::fmt::Display for DirIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "node {} of cluster {}, {} shards, members {}, data layout {}",
            self.node_id,
            self.cluster_id,
            self.shards,
            self.members.join(","),
            self.layout
        )
    }
}

const IDENTITY_FILE: &str = "IDENTITY";
const LOCK_FILE: &str = "LOCK";

/// Runs a node until `stop` is set (or a shard fails, which stops them all).
pub fn run_node(mut cfg: NodeConfig, stop: Arc<AtomicBool>) -> Result<()> {
    cfg.validate()?;
    crate::ensure_memlock()?;
    let cpus = crate::available_cpus();
    let tls = match cfg.security.files()? {
        Some(files) => Some(Tls::load(&files).map_err(|e| Error::Config(e.to_string()))?),
        None => None,
    };
    let planned = (!cfg.joins()).then(|| bootstrap_plan(&cfg, cpus.len())).transpose()?;
    create_private_dir(&cfg.data_dir)?;
    let _lock = lock_data_dir(&cfg.data_dir)?;
    let start = match planned {
        Some((start, identity)) => {
            check_identity(&cfg.data_dir, &identity)?;
            start
        }
        None => match join_start(&mut cfg, cpus[0], tls.clone(), Arc::clone(&stop)) {
            // Told to stop while joining: a stop as asked, not a failure.
            Err(_) if stop.load(Ordering::Relaxed) => return Ok(()),
            joined => joined?,
        },
    };
    let Start {
        cluster_id,
        shards,
        members,
        regions,
        peer_addr_text,
        placement_nodes,
    } = start;
    let (client_addr, peer_addr) = cfg.listen_addrs(shards)?;
    warn_about_shape(shards, cpus.len(), members.len());
    let me = Identity {
        cluster_id,
        node_id: cfg.node_id,
        shards,
        client_addr: cfg.addr.clone(),
        peer_addr: peer_addr_text,
    };
    let routing = Arc::new(Routing::new(me, &members, placement_nodes));
    let metrics = Arc::new(NodeMetrics::new(cfg.node_id));
    let _status = match cfg.status_addr.as_str() {
        "" => None,
        addr => Some(StatusServer::start(addr, Arc::clone(&metrics))?),
    };
    let cache = SharedBlockCache::new(cfg.block_cache_bytes);
    let admission = Admission::new(cfg.net.connections_max, cfg.net.connections_per_client_ip_max);
    let inbox = Arc::new(crate::runtime::directory::HeartbeatInbox::default());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<(u32, Result<()>)>();
    let mut handles = Vec::new();
    let mut failure: Option<Error> = None;
    for index in 0..shards {
        let (cfg, members, regions, routing, cache, stop, ready) = (
            cfg.clone(),
            members.clone(),
            regions.clone(),
            Arc::clone(&routing),
            cache.clone(),
            Arc::clone(&stop),
            ready_tx.clone(),
        );
        let shard_metrics = metrics.shard(index);
        let node_metrics = Arc::clone(&metrics);
        let tls = tls.clone();
        let admission = Arc::clone(&admission);
        let inbox = Arc::clone(&inbox);
        let cpu = cpus[index as usize % cpus.len()];
        let started = crate::start_pinned(index as usize, cpu, move || async move {
            let args = ShardArgs {
                index,
                listen: (client_addr, peer_addr),
                cfg: Rc::new(cfg),
                members,
                regions,
                routing,
                metrics: shard_metrics,
                node_metrics,
                tls,
                admission,
                inbox,
                cache,
                stop: Arc::clone(&stop),
            };
            let (shard, listeners) = match Shard::open(args).await {
                Ok(opened) => opened,
                Err(e) => {
                    let _ = ready.send((index, Err(e)));
                    return Ok(());
                }
            };
            let _ = ready.send((index, Ok(())));
            let result = shard.run(listeners).await;
            if result.is_err() {
                stop.store(true, Ordering::Relaxed); // one failed shard takes the node down
            }
            result
        });
        match started {
            Ok(h) => handles.push(h),
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(ready_tx);
    for _ in 0..handles.len() {
        match ready_rx.recv() {
            Ok((_, Ok(()))) => {}
            Ok((index, Err(e))) => {
                failure.get_or_insert(Error::Shard {
                    shard: index,
                    reason: e.to_string(),
                });
            }
            Err(_) => break, // a shard died before reporting: its join says why
        }
    }
    metrics.ready().store(failure.is_none(), Ordering::Relaxed);
    match &failure {
        Some(_) => stop.store(true, Ordering::Relaxed),
        None => tracing::info!(
            node = cfg.node_id,
            cluster_id = format!("{cluster_id:#x}"),
            shards,
            regions = routing.cluster_info().regions.len(),
            %client_addr,
            %peer_addr,
            "node ready"
        ),
    }
    for (index, h) in handles.into_iter().enumerate() {
        let shard = index as u32;
        let joined = h.join();
        metrics.ready().store(false, Ordering::Relaxed); // stopping, or a shard failed
        let error = match joined {
            Ok(Ok(())) => continue,
            Ok(Err(e)) => Error::Shard {
                shard,
                reason: e.to_string(),
            },
            Err(e) => Error::Panicked {
                shard: index,
                reason: format!("{e:?}"),
            },
        };
        tracing::error!(shard, error = %error, "shard stopped with an error");
        stop.store(true, Ordering::Relaxed);
        failure.get_or_insert(error);
    }
    failure.map_or(Ok(()), Err)
}

/// What a node starts with, bootstrapped or joined.
struct Start {
    cluster_id: u64,
    shards: u32,
    members: Vec<Member>,
    /// The regions this node bootstraps (on a fresh data dir) or knows of at start.
    regions: Vec<Region>,
    /// This node's peer address as the cluster knows it.
    peer_addr_text: String,
    /// The nodes holding a replica of the system region: from the layout (a bootstrap member)
    /// or from the cluster (a node that joined).
    placement_nodes: Vec<u64>,
}

/// A bootstrap member's start (`--initial-cluster`), and the identity its data dir must hold;
/// checked before anything is created.
fn bootstrap_plan(cfg: &NodeConfig, cpus: usize) -> Result<(Start, DirIdentity)> {
    let members = cfg.members()?;
    let shards = cfg.shard_count(cpus);
    cfg.listen_addrs(shards)?;
    let cluster_id = cfg.cluster_id(&members, shards);
    let identity = DirIdentity {
        cluster_id: format!("{cluster_id:#018x}"),
        node_id: cfg.node_id,
        shards,
        members: members.iter().map(|m| format!("{}={}", m.id, m.addr)).collect(),
        layout: LAYOUT_VERSION,
    };
    let me = members.iter().find(|m| m.id == cfg.node_id).map(|m| m.addr.clone());
    let regions = layout::bootstrap(&members, shards);
    let system = regions.iter().find(|r| r.is_system());
    let start = Start {
        cluster_id,
        shards,
        placement_nodes: system.map_or_else(Vec::new, |r| r.peers.iter().map(|p| p.node).collect()),
        regions,
        members,
        peer_addr_text: me.unwrap_or_default(),
    };
    Ok((start, identity))
}

/// A joined node's start (`--join`): its id, given by the cluster, becomes `cfg.node_id`.
fn join_start(cfg: &mut NodeConfig, cpu: usize, tls: Option<Tls>, stop: Arc<AtomicBool>) -> Result<Start> {
    let joined = crate::join::join(cfg, cpu, tls, stop)?;
    cfg.node_id = joined.node_id;
    cfg.shards = joined.shards as usize;
    Ok(Start {
        cluster_id: joined.cluster_id,
        shards: joined.shards,
        members: joined.members,
        regions: Vec::new(),
        peer_addr_text: cfg.peer_addr.clone(),
        placement_nodes: joined.placement_nodes,
    })
}

/// Says so when the node's shape works but is probably not what was meant.
fn warn_about_shape(shards: u32, cpus: usize, members: usize) {
    if shards as usize > cpus {
        tracing::warn!(
            shards,
            cpus,
            "more shards than CPUs: shards share cores (shard i runs on CPU i mod {cpus}); fine for trying out, slower than one shard per core"
        );
    }
    if members == 2 {
        tracing::warn!(
            "a 2-node cluster keeps 2 replicas of every region: losing either node stops all writes; use 1 node, or 3 or more"
        );
    }
}

/// Creates the data dir (0700) or checks an existing one: the node refuses a data dir that
/// others may write to (they could replace its files under it).
fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    let io = |e| Error::io(dir.display().to_string(), e);
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(io)?;
    let mode = std::fs::metadata(dir).map_err(io)?.permissions().mode();
    if mode & 0o022 != 0 {
        return Err(Error::Config(format!(
            "data dir {} is writable by others (mode {:o}); `chmod go-w {}` (or 700), then start again",
            dir.display(),
            mode & 0o777,
            dir.display()
        )));
    }
    Ok(())
}

/// Holds an exclusive lock on the data dir for the node's life: two servers on one data dir
/// would corrupt both engines.
fn lock_data_dir(dir: &Path) -> Result<File> {
    use std::os::fd::AsRawFd;
    let path = dir.join(LOCK_FILE);
    let file = File::create(&path).map_err(|e| Error::io(path.display().to_string(), e))?;
    // SAFETY: flock on a descriptor we own; no memory is involved.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        return Err(Error::Config(format!(
            "data dir {} is in use by another corekv-server",
            dir.display()
        )));
    }
    Ok(file)
}

/// Records who this data dir belongs to on first start; refuses a mismatch afterwards.
fn check_identity(dir: &Path, me: &DirIdentity) -> Result<()> {
    match read_identity(dir)? {
        Some(found) if &found != me => Err(Error::DataDirMismatch {
            dir: dir.display().to_string(),
            reason: format!("it holds {found}, but this start asks for {me}"),
        }),
        Some(_) => Ok(()),
        None => write_identity(dir, me),
    }
}

/// The identity a data dir records (None: a fresh dir).
pub(crate) fn read_identity(dir: &Path) -> Result<Option<DirIdentity>> {
    let path = dir.join(IDENTITY_FILE);
    match std::fs::read_to_string(&path) {
        Ok(text) => toml::from_str(&text).map(Some).map_err(|_| Error::DataDirMismatch {
            dir: dir.display().to_string(),
            reason: format!(
                "its {IDENTITY_FILE} file is not one this version of corekv writes (an older version, or not corekv's)"
            ),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(path.display().to_string(), e)),
    }
}

/// Records `me` as the data dir's identity, durably (synced, renamed into place, dir synced).
pub(crate) fn write_identity(dir: &Path, me: &DirIdentity) -> Result<()> {
    let path = dir.join(IDENTITY_FILE);
    let text = toml::to_string(me).expect("an identity of strings and small integers serializes");
    let tmp = dir.join(format!("{IDENTITY_FILE}.tmp"));
    let io = |e| Error::io(path.display().to_string(), e);
    let file = File::create(&tmp).map_err(io)?;
    std::io::Write::write_all(&mut &file, text.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, &path).map_err(io)?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io)
}
