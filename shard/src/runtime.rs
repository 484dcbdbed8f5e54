//! One shard at run time: its engines and raft core, its listener, its transport, and the
//! tasks of its executor. HOT PATH: requests, raft messages and the loop iteration.
//!
//! Tasks (all on the shard's own executor, no locks between them):
//! - the loop (`run`): waits until something changed, then runs loop iterations
//!   (`Engines::run_ready`) until raft has nothing ready, answering what completed;
//! - the ticker: advances raft's clock from the monotonic clock (catching up after a pause,
//!   so a leader that was stopped never serves reads on a lease it no longer holds), publishes
//!   leader changes to the node's routing table, runs log GC now and then;
//! - the listener and one reader + writer per connection (`server`), one sender per peer
//!   shard (`transport`).
//!
//! Owns: the shard's requests in flight (each answered once; at stop, reads `ShuttingDown` and
//! writes `OutcomeUnknown`), raft's clock, bootstrap campaigns, leader publishing and when log GC
//! runs. Must not: keep the raft core borrowed across an await, hold raft logic (the core
//! decides), or take a request for a region of another shard (`WrongShard`).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use corekv_netio::frame::{self, Body, FrameKind};
use corekv_netio::io::Frame;
use corekv_netio::msg::{
    ArchivedOp, ArchivedPeerHello, ArchivedRaftBatch, ArchivedRequest, ArchivedSnapshotChunk, NodeStatus, PeerHello,
    Reply, SnapshotAck, WireError,
};
use corekv_netio::tls::Tls;
use corekv_netio::FrameError;
use corekv_raftstore::cmd::{self, BATCH_PAIRS_MAX};
use corekv_raftstore::driver::{Engines, LoopStats};
use corekv_raftstore::placement::directory::Flow;
use corekv_raftstore::placement::report::Reporter;
use corekv_raftstore::placement::stores::StoreMeta;
use corekv_raftstore::placement::{self, Ask, Given, Placement, PlacementConfig};
use corekv_raftstore::snapshot;
use corekv_raftstore::snapshot_chunks::{Accepted, Receiver, SnapshotChunk};
use corekv_raftstore::{
    apply, Command, Epoch, Outcome, RaftConfig, RaftCore, Region, RequestId, Response, SYSTEM_REGION_ID,
};
use corekv_storage::kv::{KvEngine, SharedBlockCache};
use corekv_storage::raftlog::{LogEngine, UringDisk};

use crate::admission::Admission;
use crate::config::{Member, NodeConfig};
use crate::error::{Error, Result};
use crate::layout;
use crate::metrics::ShardMetrics;
use crate::reads::{Read, REPLY_BYTES_MAX, REPLY_BYTES_MIN, SCAN_ROWS_MAX};
use crate::routing::Routing;
use crate::server::{self, Connection, Port};
use crate::transport::Transport;

pub mod directory;
mod membership;
mod split;

/// Ticks replayed at most after the executor was stopped for a while: enough to expire any
/// lease and time out any election, few enough not to stall the shard.
const CATCH_UP_TICKS_MAX: u64 = 64;
/// Ticks after start before a fresh region's first leader campaigns (its peers start too).
const CAMPAIGN_AFTER_TICKS: u64 = 2;
/// How often the engines' disk use is measured for the metrics (200 ticks: 10 s by default).
const DISK_USE_EVERY_TICKS: u64 = 200;

/// What a shard is started with.
pub struct ShardArgs {
    pub index: u32,
    /// Client and peer addresses of shard 0 (this shard listens on their ports + `index`).
    pub listen: (std::net::SocketAddr, std::net::SocketAddr),
    pub cfg: Rc<NodeConfig>,
    pub members: Vec<Member>,
    pub regions: Vec<Region>,
    pub routing: Arc<Routing>,
    pub metrics: ShardMetrics,
    /// The node's metrics, for `NodeStatus` answers.
    pub node_metrics: Arc<crate::metrics::NodeMetrics>,
    /// Mutual TLS on both ports and on outgoing peer connections, when configured.
    pub tls: Option<Tls>,
    /// The node's connection limits, shared by its shards.
    pub admission: Arc<Admission>,
    /// Region heartbeats from the node's shards to its shard 0.
    pub inbox: Arc<directory::HeartbeatInbox>,
    pub cache: SharedBlockCache,
    pub stop: Arc<AtomicBool>,
}

struct Pending {
    out: Rc<Connection>,
    client_id: u64,
    op: usize,
    /// Whether it changes data (its outcome is unknown if it is not answered).
    is_write: bool,
    read: Option<Read>,
    /// Reply bytes held on `out`'s budget until this is answered.
    reserved: usize,
    started: Instant,
}

/// What a request asks of the raft core, or its answer when it needs nothing of it.
enum Action {
    Write(Command),
    Read(Read),
    Answer(Reply),
    /// Hand the region's leadership to its replica on this store.
    Transfer {
        to_store: u64,
    },
    /// Split the region at this key (ids from the placement service first).
    Split(Vec<u8>),
    /// Add a learner on (store, shard) (its peer id from the placement service first).
    AddLearner(u64, u32),
}

/// What a shard last told the node's routing about one of its regions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Published {
    leader: Option<u64>,
    term: u64,
    epoch: Epoch,
}

pub struct Shard {
    index: u32,
    cfg: Rc<NodeConfig>,
    engines: Engines<UringDisk>,
    transport: Transport,
    routing: Arc<Routing>,
    metrics: Rc<ShardMetrics>,
    node_metrics: Arc<crate::metrics::NodeMetrics>,
    tls: Option<Tls>,
    admission: Arc<Admission>,
    pending: RefCell<HashMap<RequestId, Pending>>,
    next_request: Cell<RequestId>,
    dirty: Cell<bool>,
    wake: event_listener::Event,
    started: Instant,
    ticks: Cell<u64>,
    stop: Arc<AtomicBool>,
    stopping: Cell<bool>,
    /// What was last published to the routing table per region (leader, term, epoch).
    published: RefCell<HashMap<u64, Published>>,
    /// Regions this shard's replica should campaign for once the cluster had time to start.
    campaign: RefCell<Vec<u64>>,
    gc_running: Cell<bool>,
    /// Snapshot streams being reassembled on this shard's peer connections.
    snapshot_streams: Cell<usize>,
    /// The placement service, serving while this shard leads the system region.
    placement: RefCell<Placement>,
    /// What this shard heartbeats the placement leader with, and when (`directory`).
    reporter: RefCell<Reporter>,
    /// When shard 0 last sent its node's store heartbeat (wall clock, ms).
    store_reported_ms: Cell<u64>,
    inbox: Arc<directory::HeartbeatInbox>,
    /// The sizes of this shard's due heartbeats are being measured (off its thread).
    measuring: Cell<bool>,
    /// The system region's applied index when its store registry was last read here.
    registry_read_at: Cell<u64>,
    /// Shard 0 is asking the placement service for the registered stores (`learn_stores`).
    learning_stores: Cell<bool>,
    /// Asks the placement service for ids (`placement_client`).
    placement_client: RefCell<Option<corekv_netio::Client>>,
    /// Bytes written to each region this shard leads since its size was last checked.
    written_since_check: RefCell<HashMap<u64, u64>>,
    /// A split check is reading a region (one at a time per shard).
    split_checking: Cell<bool>,
}

impl Shard {
    /// Opens the shard's engines (bootstrapping its regions on first start), restores its
    /// peers and binds its ports. Runs on the shard's executor.
    pub async fn open(args: ShardArgs) -> Result<(Rc<Shard>, Listeners)> {
        let listeners = Listeners::bind(args.listen, args.index)?;
        let cfg = Rc::clone(&args.cfg);
        let dir = shard_dir(&cfg.data_dir, args.index);
        std::fs::create_dir_all(dir.join("raftlog")).map_err(|e| Error::io(format!("{}", dir.display()), e))?;
        let kv = KvEngine::open(&dir.join("kv"), &cfg.kv, &args.cache)?;
        let snap_dir = dir.join("snap");
        let here: Vec<&Region> = args
            .regions
            .iter()
            .filter(|r| r.peer_on(cfg.node_id, args.index).is_some())
            .collect();
        if apply::load_regions(&kv)?.is_empty() {
            for region in &here {
                apply::bootstrap_region(&kv, region)?;
            }
        }
        let disk = UringDisk::open(&dir.join("raftlog"), cfg.log.sync_mode)
            .await
            .map_err(|e| Error::io("open the raft log", e))?;
        args.metrics.log_durability(disk.durability());
        let (log, _) = LogEngine::open(disk, cfg.log.clone()).await?;
        let raft = RaftConfig {
            election_tick: cfg.raft.election_ticks,
            heartbeat_tick: cfg.raft.heartbeat_ticks,
            lease_ticks: cfg.raft.lease_ticks,
            pending_requests_max: cfg.raft.pending_requests_max,
            entry_cache_bytes_max: cfg.raft.entry_cache_bytes_max,
            uncommitted_bytes_max: cfg.raft.uncommitted_bytes_max,
            ..RaftConfig::default()
        };
        let seed = cfg.node_id << 32 | u64::from(args.index) | now_nanos() << 40;
        let core = RaftCore::new(cfg.node_id, args.index, raft, seed);
        let engines = Engines::restore(core, log, kv, snap_dir.clone()).await?;
        let campaign = here
            .iter()
            .filter(|r| layout::first_leader(r).node == cfg.node_id)
            .filter(|r| engines.core.borrow().never_elected(r.id))
            .map(|r| r.id)
            .collect();
        let metrics = Rc::new(args.metrics);
        // Outgoing peer connections leave from this node's own peer address.
        let source = Some(args.listen.1.ip());
        let hello = PeerHello {
            cluster_id: args.routing.cluster_id(),
            node_id: cfg.node_id,
            shard: args.index,
            client_addr: args.routing.client_addr(),
        };
        let shard = Rc::new_cyclic(|weak: &std::rc::Weak<Shard>| {
            let weak = weak.clone();
            let report = Rc::new(move |region: u64, to: u64, delivered: bool| {
                if let Some(shard) = weak.upgrade() {
                    shard.engines.core.borrow_mut().report_snapshot(region, to, delivered);
                    shard.kick();
                }
            });
            Shard {
                index: args.index,
                transport: Transport::new(
                    source,
                    args.tls.clone(),
                    hello,
                    Arc::clone(&args.routing),
                    cfg.net.clone(),
                    Rc::clone(&metrics),
                    report,
                    snap_dir,
                ),
                cfg: Rc::clone(&cfg),
                engines,
                routing: args.routing,
                metrics,
                node_metrics: args.node_metrics,
                tls: args.tls.clone(),
                admission: Arc::clone(&args.admission),
                pending: RefCell::new(HashMap::new()),
                next_request: Cell::new(1),
                dirty: Cell::new(true),
                wake: event_listener::Event::new(),
                started: Instant::now(),
                ticks: Cell::new(0),
                stop: args.stop,
                stopping: Cell::new(false),
                published: RefCell::new(HashMap::new()),
                campaign: RefCell::new(campaign),
                gc_running: Cell::new(false),
                snapshot_streams: Cell::new(0),
                placement: RefCell::new(Placement::new(PlacementConfig {
                    heartbeat_interval_ms: cfg.placement.heartbeat_interval_ms,
                    ..PlacementConfig::default()
                })),
                reporter: RefCell::new(Reporter::new(cfg.placement.heartbeat_interval_ms)),
                store_reported_ms: Cell::new(0),
                inbox: args.inbox,
                measuring: Cell::new(false),
                registry_read_at: Cell::new(0),
                learning_stores: Cell::new(false),
                placement_client: RefCell::new(None),
                written_since_check: RefCell::new(HashMap::new()),
                split_checking: Cell::new(false),
            }
        });
        tracing::info!(
            shard = args.index,
            client = %listeners.client_addr,
            peer = %listeners.peer_addr,
            regions = here.len(),
            "shard listening"
        );
        // The node's routing table learns this shard's regions as they are now, before the
        // node says it is ready.
        shard.publish();
        Ok((shard, listeners))
    }

    pub fn config(&self) -> &NodeConfig {
        &self.cfg
    }

    pub fn metrics(&self) -> &ShardMetrics {
        &self.metrics
    }

    /// The node's connection limits.
    pub fn admission(&self) -> &Arc<Admission> {
        &self.admission
    }

    /// TLS for this shard's connections, if configured.
    pub fn tls(&self) -> Option<&Tls> {
        self.tls.as_ref()
    }

    pub fn is_stopping(&self) -> bool {
        self.stopping.get()
    }

    /// Runs the shard until the node stops: listeners, ticker and the loop.
    pub async fn run(self: Rc<Self>, listeners: Listeners) -> Result<()> {
        glommio::spawn_local(server::listen(Rc::clone(&self), listeners.client, Port::Client)).detach();
        glommio::spawn_local(server::listen(Rc::clone(&self), listeners.peer, Port::Peer)).detach();
        glommio::spawn_local(Rc::clone(&self).tick_loop()).detach();
        let result = Rc::clone(&self).run_loop().await;
        self.stopping.set(true);
        // Whatever is still waiting will not be answered by this process: a read may be
        // retried elsewhere, a write may have committed already.
        let pending: Vec<(RequestId, bool)> = self.pending.borrow().iter().map(|(&id, p)| (id, !p.is_write)).collect();
        for (id, is_read) in pending {
            let error = match is_read {
                true => WireError::ShuttingDown,
                false => WireError::OutcomeUnknown { region_id: 0 },
            };
            self.answer(id, Err(error));
        }
        result
    }

    /// Something changed: the loop runs an iteration.
    fn kick(&self) {
        self.dirty.set(true);
        self.wake.notify(1);
    }

    async fn run_loop(self: Rc<Self>) -> Result<()> {
        loop {
            let listener = self.wake.listen();
            if self.stopping.get() {
                return Ok(());
            }
            if !self.dirty.replace(false) {
                listener.await;
                continue;
            }
            loop {
                let stats = self
                    .engines
                    .run_ready(&mut |msgs| self.transport.send(msgs), &mut || self.serve_responses())
                    .await?;
                match stats {
                    Some(stats) => self.record(&stats),
                    None => break,
                }
            }
        }
    }

    fn record(&self, s: &LoopStats) {
        let m = &self.metrics;
        if s.log_appends > 0 {
            m.log_syncs.inc_by(s.log_appends);
            m.log_sync_seconds.observe(s.log.as_secs_f64());
            m.log_batch_regions.observe(s.regions_in_batch as f64);
        }
        m.disk_full_waits.inc_by(s.no_space_waits);
        if s.entries_applied > 0 {
            m.applied_entries.inc_by(s.entries_applied);
            m.apply_seconds.observe(s.apply.as_secs_f64());
        }
        if s.region_changes > 0 {
            self.publish();
        }
    }

    async fn tick_loop(self: Rc<Self>) {
        let tick = Duration::from_millis(self.cfg.raft.tick_ms);
        loop {
            let asleep = Instant::now();
            glommio::timer::sleep(tick).await;
            let late = asleep.elapsed().saturating_sub(tick);
            self.metrics.tick_lateness_seconds.observe(late.as_secs_f64());
            if late > tick {
                self.metrics.executor_stalls.inc();
            }
            if self.stop.load(Ordering::Relaxed) {
                self.stopping.set(true);
                self.kick();
                return;
            }
            self.catch_up();
            let answers = (self.placement.borrow_mut()).tick(&mut self.engines.core.borrow_mut(), wall_clock_ms());
            self.placement_answers(answers);
            if self.ticks.get() >= CAMPAIGN_AFTER_TICKS {
                for region in self.campaign.borrow_mut().drain(..) {
                    if let Err(e) = self.engines.core.borrow_mut().campaign(region) {
                        tracing::warn!(region, error = %e, "bootstrap campaign failed");
                    }
                }
            }
            self.publish();
            self.heartbeat();
            self.take_inbox();
            self.admit_registered();
            self.housekeeping();
            self.kick();
        }
    }

    /// Now and then, off the loop's way: log GC, split checks, and the disk use and peer links
    /// of the metrics.
    fn housekeeping(self: &Rc<Self>) {
        self.check_split();
        let ticks = self.ticks.get();
        if ticks.is_multiple_of(self.cfg.raft.gc_interval_ticks) && !self.gc_running.replace(true) {
            let shard = Rc::clone(self);
            glommio::spawn_local(async move {
                let (keep, slack) = (shard.cfg.raft.gc_keep_entries, shard.cfg.raft.gc_slack_entries);
                match shard.engines.gc(keep, slack).await {
                    // The apply path reports the full disk; GC tries again next round.
                    Err(e @ corekv_raftstore::Error::NoSpace(_)) => {
                        tracing::debug!(shard = shard.index, error = %e, "log GC skipped")
                    }
                    Err(e) => tracing::error!(shard = shard.index, error = %e, "log GC failed"),
                    Ok(_) => {}
                }
                shard.gc_running.set(false);
            })
            .detach();
        }
        if ticks.is_multiple_of(DISK_USE_EVERY_TICKS) {
            let shard = Rc::clone(self);
            glommio::spawn_local(async move {
                let dir = shard_dir(&shard.cfg.data_dir, shard.index);
                let sizes = glommio::executor()
                    .spawn_blocking(move || (disk_use(&dir.join("kv")), disk_use(&dir.join("raftlog"))))
                    .await;
                shard.metrics.kv_disk_bytes.set(sizes.0 as i64);
                shard.metrics.raft_log_disk_bytes.set(sizes.1 as i64);
            })
            .detach();
        }
        self.metrics.peer_links_down.set(self.transport.links_down() as i64);
    }

    /// Advances raft's clock to the monotonic clock: ticks missed while the process was
    /// paused are replayed (up to a bound), so leases expire in real time.
    fn catch_up(&self) {
        let due = (self.started.elapsed().as_millis() / u128::from(self.cfg.raft.tick_ms)) as u64;
        let missed = due.saturating_sub(self.ticks.get());
        if missed == 0 {
            return;
        }
        let mut core = self.engines.core.borrow_mut();
        for _ in 0..missed.min(CATCH_UP_TICKS_MAX) {
            core.tick();
        }
        self.ticks.set(due);
    }

    /// Publishes region changes (a split, a snapshot that changed a range) and leader changes
    /// to the node's routing table, and refreshes the gauges.
    fn publish(&self) {
        let core = self.engines.core.borrow();
        let mut published = self.published.borrow_mut();
        let mut leaders = 0;
        let ids = core.region_ids();
        for &id in &ids {
            // An uninitialized replica (waiting for its first snapshot) has nothing to say.
            let Some(region) = core.region(id).filter(|r| r.is_initialized()) else {
                continue;
            };
            let leader = core.leader_of(id);
            let term = core.term(id).unwrap_or(0);
            let leads = core.is_leader(id);
            leaders += i64::from(leads);
            let now = Published {
                leader: leader.map(|l| l.id),
                term,
                epoch: region.epoch,
            };
            let was = published.get(&id).copied();
            if was == Some(now) {
                continue;
            }
            if leads && was.is_none_or(|w| (w.leader, w.term) != (now.leader, now.term)) {
                tracing::info!(region = id, term, "became leader");
            }
            if was.is_some_and(|w| w.leader != now.leader) {
                self.metrics.leader_changes.inc();
            }
            if was.is_none_or(|w| w.epoch != now.epoch) {
                self.routing.upsert_region(region);
            }
            // A region new or changed here since the shard opened (a split made it or cut it,
            // a snapshot brought it) may be over the size limits still.
            if was.is_none_or(|w| w.epoch != now.epoch) && self.ticks.get() > 0 {
                self.due_for_split_check(id);
            }
            published.insert(id, now);
            self.routing.set_leader(id, leader, term);
        }
        // Replicas destroyed here (removed from their regions) leave the routing table.
        let gone = |id: &&u64| core.region(**id).is_none() && core.stopped(**id).is_none();
        let gone: Vec<u64> = published.keys().filter(gone).copied().collect();
        for id in gone {
            published.remove(&id);
            self.routing.drop_replica(id, self.index);
        }
        let stopped = core.stopped_regions();
        if stopped.len() as i64 != self.metrics.stopped_regions.get() {
            for (id, why) in stopped {
                self.routing.set_stopped(*id, why);
            }
            self.metrics.stopped_regions.set(stopped.len() as i64);
        }
        self.metrics.regions.set(ids.len() as i64);
        self.metrics.leaders.set(leaders);
        self.metrics.apply_lag_entries.set(core.apply_lag() as i64);
        self.metrics.raft_log_entries.set(core.log_entries() as i64);
        let placement = self.placement.borrow();
        (self.metrics.placement_leader).set(i64::from(placement.is_leading()));
        if !placement.is_leading() {
            self.metrics.directory_regions.set(0);
            self.metrics.directory_stores.set(0);
        }
    }

    /// A frame from a client or a peer shard. `Err`: what the other end is told before the
    /// connection closes (a malformed frame, one that does not belong on this port, a refused
    /// handshake).
    pub async fn handle_frame(self: &Rc<Self>, out: &Rc<Connection>, f: Frame) -> std::result::Result<(), WireError> {
        let kind = f.header.kind;
        let result = match (out.port, kind, out.peer_node.get()) {
            (Port::Client, FrameKind::Request, _) => self.handle_request(out, f.header.request_id, &f.body),
            (Port::Peer, FrameKind::PeerHello, None) => return self.handle_hello(out, &f.body),
            (Port::Peer, FrameKind::RaftBatch, Some(node)) => self.handle_raft(node, &f.body),
            (Port::Peer, FrameKind::SnapshotChunk, Some(node)) => self.handle_chunk(out, node, &f.body).await,
            (Port::Peer, FrameKind::Heartbeat, Some(node)) => self.handle_heartbeat(node, &f.body),
            _ => Err(FrameError::UnexpectedKind { kind: kind as u8 }),
        };
        result.map_err(|e| match e {
            FrameError::UnexpectedKind { .. } if out.port == Port::Peer && out.peer_node.get().is_none() => {
                WireError::PeerRefused {
                    reason: "a peer connection starts with a PeerHello".into(),
                }
            }
            FrameError::UnexpectedKind { kind } => WireError::Malformed {
                code: e.code(),
                reason: format!("frame kind {kind} is not accepted on a {:?} port", out.port),
            },
            e => server::malformed(&e),
        })
    }

    /// A peer introduces itself: it must belong to this cluster, be a member (this node's other
    /// shards too: a region moving between them has replicas on both), and name a shard that
    /// exists. Answered with this shard's own hello.
    fn handle_hello(&self, out: &Connection, body: &Body) -> std::result::Result<(), WireError> {
        let hello = frame::access::<ArchivedPeerHello>(body).map_err(|e| server::malformed(&e))?;
        let (cluster_id, node_id) = (hello.cluster_id.to_native(), hello.node_id.to_native());
        let routing = &self.routing;
        let refused = if cluster_id != routing.cluster_id() {
            Some(format!(
                "cluster {cluster_id:#x} is not this node's cluster {:#x} (another cluster on these addresses? check initial_cluster_token)",
                routing.cluster_id()
            ))
        } else if !routing.is_member(node_id) || (node_id, hello.shard.to_native()) == (routing.node_id(), self.index) {
            Some(format!(
                "node {node_id} is not a member of this cluster, or is this very shard"
            ))
        } else if out.remote.is_some_and(|ip| routing.member_ip(node_id) != Some(ip)) {
            Some(format!(
                "node {node_id} connects from its own peer address, not {:?}",
                out.remote
            ))
        } else if hello.shard.to_native() >= routing.shards() {
            Some(format!("shard {} does not exist on this cluster's nodes", hello.shard))
        } else {
            None
        };
        if let Some(reason) = refused {
            return Err(WireError::PeerRefused { reason });
        }
        out.peer_node.set(Some(node_id));
        out.push(FrameKind::PeerHello, 0, self.transport.hello());
        Ok(())
    }

    /// Raft messages from `node` (the connection's peer): any that claims another sender is a
    /// forgery, and refuses the whole frame.
    fn handle_raft(&self, node: u64, body: &Body) -> std::result::Result<(), FrameError> {
        let batch = frame::access::<ArchivedRaftBatch>(body)?;
        let mut core = self.engines.core.borrow_mut();
        for env in batch.messages.iter() {
            if env.from.node.to_native() != node {
                return Err(FrameError::Invalid {
                    reason: format!("a message from node {} on node {node}'s connection", env.from.node),
                });
            }
            let msg = crate::convert::message(env).map_err(|e| FrameError::Invalid { reason: e.to_string() })?;
            self.metrics.raft_messages_received.inc();
            // A message for a region not here (yet) is dropped; its sender retries. A forged
            // or corrupt one is refused at raft's edge, counted, and logged.
            if let Err(e @ corekv_raftstore::Error::Refused { .. }) = core.step(msg) {
                self.metrics.raft_messages_refused.inc();
                tracing::warn!(peer_node = node, error = %e, "raft message refused");
            }
        }
        drop(core);
        self.kick();
        Ok(())
    }

    /// A snapshot chunk from `node`: checked (its sender, a replica hosted here, the shard's
    /// bound on streams, the stream's own rules), then written to its file off the shard's
    /// thread; the last chunk's files are synced before raft takes the snapshot. The stream's
    /// verdict (refused, or raft took it or not) is acked on the connection.
    async fn handle_chunk(&self, out: &Connection, node: u64, body: &Body) -> std::result::Result<(), FrameError> {
        let archived = frame::access::<ArchivedSnapshotChunk>(body)?;
        let chunk = crate::convert::chunk_from(archived).map_err(|e| FrameError::Invalid { reason: e.to_string() })?;
        if chunk.header.from.node != node {
            return Err(FrameError::Invalid {
                reason: format!(
                    "a snapshot from node {} on node {node}'s connection",
                    chunk.header.from.node
                ),
            });
        }
        let (region_id, from, to_peer) = (chunk.header.region_id, chunk.header.from.id, chunk.header.to.id);
        let verdict = match self.snapshot_refusal(&chunk) {
            Some(_) if chunk.seq != 0 => return Ok(()), // its refusal was sent with chunk 0
            Some(why) => Err(why),
            None => match self.streams_of(out, |r| r.push(&chunk)) {
                Ok(None) => return Ok(()),
                Ok(Some(accepted)) => match self.receive(accepted, chunk.bytes).await {
                    Ok(None) => return Ok(()),
                    Ok(Some(stepped)) => Ok(stepped),
                    Err(e) => {
                        self.streams_of(out, |r| r.abandon(region_id, from));
                        Err(e.to_string())
                    }
                },
                Err(e) => Err(e.to_string()),
            },
        };
        let accepted = verdict.unwrap_or_else(|why| {
            tracing::warn!(region_id, why, "snapshot stream refused");
            false
        });
        if accepted {
            self.metrics.snapshots_received.inc();
        }
        let ack = SnapshotAck {
            region_id,
            to_peer,
            accepted,
        };
        out.push(FrameKind::SnapshotAck, 0, &ack);
        Ok(())
    }

    /// `f` on the connection's snapshot receiver, keeping the shard's count of streams (which
    /// holds every connection's) in step with it.
    fn streams_of<R>(&self, out: &Connection, f: impl FnOnce(&mut Receiver) -> R) -> R {
        let mut streams = out.snapshots.borrow_mut();
        let before = streams.streams();
        let result = f(&mut streams);
        let total = self.snapshot_streams.get() + streams.streams();
        debug_assert!(total >= before, "the shard counts every connection's streams");
        self.snapshot_streams.set(total - before);
        result
    }

    /// Writes an accepted chunk's `bytes` where the stream puts them (off the shard's thread);
    /// when it completed the stream, syncs the files, then hands raft the snapshot (durable
    /// before raft sees it). `Some(whether raft took it)` once done.
    async fn receive(&self, accepted: Accepted, bytes: Vec<u8>) -> corekv_raftstore::Result<Option<bool>> {
        let Accepted { stream, write, done } = accepted;
        let dir = self.engines.snap_dir.clone();
        let files = done.as_ref().map(|(files, _)| *files);
        glommio::executor()
            .spawn_blocking(move || {
                snapshot::write_chunk(&dir, stream, write.file, write.offset, &bytes)?;
                files.map_or(Ok(()), |files| snapshot::seal(&dir, stream, files))
            })
            .await?;
        let Some((_, msg)) = done else { return Ok(None) };
        let stepped = self.engines.core.borrow_mut().step(msg);
        self.kick();
        Ok(Some(stepped.is_ok()))
    }

    /// Why a snapshot chunk is refused before it is taken: its region's replica is not on
    /// this shard, or a new stream would pass the shard's bound.
    fn snapshot_refusal(&self, chunk: &SnapshotChunk) -> Option<String> {
        let core = self.engines.core.borrow();
        let hosted = core
            .region(chunk.header.region_id)
            .and_then(|r| r.peer_on(self.routing.node_id(), self.index))
            .is_some_and(|me| me.id == chunk.header.to.id);
        if !hosted {
            return Some("the snapshot is for a replica this shard does not host".into());
        }
        let max = self.cfg.net.snapshot_streams_per_shard_max;
        (chunk.seq == 0 && self.snapshot_streams.get() >= max)
            .then(|| format!("{max} snapshot streams are being received by this shard already"))
    }

    /// A peer connection closed with `streams` snapshot streams unfinished: their places free.
    pub fn snapshot_streams_closed(&self, streams: usize) {
        self.snapshot_streams
            .set(self.snapshot_streams.get().saturating_sub(streams));
    }

    fn handle_request(
        self: &Rc<Self>,
        out: &Rc<Connection>,
        client_id: u64,
        body: &Body,
    ) -> std::result::Result<(), FrameError> {
        let req = frame::access::<ArchivedRequest>(body)?;
        let op = req.op.index();
        self.metrics.requests[op].inc();
        let started = Instant::now();
        let reply_now = |reply: Reply| self.reply(out, client_id, op, started, reply);
        if self.stopping.get() {
            reply_now(Reply::Failed(WireError::ShuttingDown));
            return Ok(());
        }
        match req.op {
            ArchivedOp::ClusterInfo => {
                reply_now(Reply::Cluster(self.routing.cluster_info()));
                return Ok(());
            }
            ArchivedOp::NodeStatus => {
                reply_now(Reply::Status(self.node_status()));
                return Ok(());
            }
            _ => {}
        }
        if let Some(reply) = self.directory_reply(&req.op) {
            reply_now(reply.unwrap_or_else(Reply::Failed));
            return Ok(());
        }
        let limit = self.cfg.net.inflight_per_connection_max;
        if out.inflight.get() >= limit {
            reply_now(Reply::Failed(WireError::ServerBusy {
                reason: format!("{limit} requests in flight on this connection"),
            }));
            return Ok(());
        }
        if let Some(call) = placement_call(&req.op) {
            if let Some(reason) = foreign_join(&call, out.remote) {
                reply_now(Reply::Failed(WireError::InvalidArgument { reason }));
                return Ok(());
            }
            let id = self.track(out, (client_id, op, started), None, false, 0);
            self.catch_up(); // the leader lease it is served under is judged by the real clock
            let mut core = self.engines.core.borrow_mut();
            let mut placement = self.placement.borrow_mut();
            let answers = match call {
                PlacementCall::Ask(ask) => placement.ask(&mut core, id, ask),
                PlacementCall::PutStore(meta) => placement.put_store(&mut core, id, meta),
            };
            drop((core, placement));
            self.placement_answers(answers);
            self.kick();
            return Ok(());
        }
        let region_id = req.region_id.to_native();
        if region_id == SYSTEM_REGION_ID {
            reply_now(Reply::Failed(WireError::InvalidArgument {
                reason: "the system region takes no client requests".into(),
            }));
            return Ok(());
        }
        let epoch = Epoch {
            conf_ver: req.epoch.conf_ver.to_native(),
            version: req.epoch.version.to_native(),
        };
        let action = {
            let core = self.engines.core.borrow();
            match (core.region(region_id), core.stopped(region_id)) {
                (Some(region), _) => stale_first(region, epoch, action(&req.op, region)),
                (None, Some(why)) => Err(WireError::RegionUnavailable {
                    region_id,
                    reason: why.to_string(),
                }),
                (None, None) => Err(self.not_here(region_id)),
            }
        };
        let id = self.next_request.get();
        // A compare-and-swap answers with the value it found: its room is held from now on.
        let hold = match &action {
            Ok(Action::Write(Command::CompareAndSwap { .. })) => cmd::VALUE_BYTES_MAX,
            _ => 0,
        };
        if hold > out.reply_room() {
            reply_now(Reply::Failed(budget_spent()));
            return Ok(());
        }
        let read = match action {
            Err(e) => {
                reply_now(Reply::Failed(e));
                return Ok(());
            }
            Ok(Action::Answer(reply)) => {
                reply_now(reply);
                return Ok(());
            }
            Ok(Action::Transfer { to_store }) => {
                let started = self
                    .engines
                    .core
                    .borrow_mut()
                    .transfer_leader(region_id, epoch, to_store);
                if let Ok(target) = started {
                    tracing::info!(
                        region = region_id,
                        to_store,
                        to_peer = target.id,
                        "leader transfer started"
                    );
                }
                reply_now(started.map_or_else(|e| Reply::Failed(crate::convert::error(e)), |_| Reply::Done));
                self.kick();
                return Ok(());
            }
            Ok(Action::Split(key)) => {
                let id = self.track(out, (client_id, op, started), None, true, 0);
                glommio::spawn_local(Rc::clone(self).split(id, (region_id, epoch), vec![key])).detach();
                return Ok(());
            }
            Ok(Action::AddLearner(store, shard)) => {
                let id = self.track(out, (client_id, op, started), None, true, 0);
                let add = Rc::clone(self).add_learner(id, (region_id, epoch), (store, shard));
                glommio::spawn_local(add).detach();
                return Ok(());
            }
            Ok(Action::Write(cmd)) => {
                self.metrics.proposals.inc();
                self.count(region_id, Flow::write(cmd.written()));
                self.note_written(region_id, cmd.written().0);
                self.engines.core.borrow_mut().propose(id, region_id, epoch, cmd);
                None
            }
            Ok(Action::Read(read)) => {
                // A lease is judged by the real clock, even if the ticker has not run yet.
                self.catch_up();
                self.engines.core.borrow_mut().read(id, region_id, epoch);
                Some(read)
            }
        };
        let is_write = read.is_none();
        let tracked = self.track(out, (client_id, op, started), read, is_write, hold);
        debug_assert_eq!(tracked, id, "the id the core was given");
        out.reserve(hold);
        self.kick();
        Ok(())
    }

    /// A fresh request id (the node's own proposals take one too: nobody waits for them).
    fn next_request_id(&self) -> RequestId {
        let id = self.next_request.get();
        self.next_request.set(id + 1);
        id
    }

    /// Registers a request in flight on `out` under the next request id, holding `reserved`
    /// reply bytes of its budget, and returns the id.
    fn track(
        &self,
        out: &Rc<Connection>,
        (client_id, op, started): (u64, usize, Instant),
        read: Option<Read>,
        is_write: bool,
        reserved: usize,
    ) -> RequestId {
        let id = self.next_request_id();
        out.inflight.set(out.inflight.get() + 1);
        let pending = Pending {
            out: Rc::clone(out),
            client_id,
            op,
            is_write,
            read,
            reserved,
            started,
        };
        self.pending.borrow_mut().insert(id, pending);
        id
    }

    /// Answers what the placement service settled.
    fn placement_answers(&self, answers: Vec<placement::Answer>) {
        for (id, result) in answers {
            let reply = match result {
                Ok(Given::Timestamps { first, count }) => {
                    self.metrics.tso_request_timestamps.observe(count as f64);
                    Ok(Reply::Timestamps {
                        first,
                        count: count as u32,
                    })
                }
                Ok(Given::Ids { first, count }) => Ok(Reply::Ids {
                    first,
                    count: count as u32,
                }),
                Ok(Given::Stored { .. }) => Ok(Reply::Done),
                Err(corekv_raftstore::Error::NotLeader { .. }) => Err(self.not_placement_leader()),
                Err(e) => Err(crate::convert::error(e)),
            };
            self.answer(id, reply);
        }
    }

    /// Where the placement service runs, as far as this node knows. A node without a replica
    /// of the system region does not know its leader: it names the nodes that have one, in
    /// turn (tick by tick), each of which knows. One with a replica that knows no leader (an
    /// election) names none: the client backs off.
    fn not_placement_leader(&self) -> WireError {
        let routing = &self.routing;
        let leader = routing.leader_node(SYSTEM_REGION_ID);
        let outside = routing.shard_of(SYSTEM_REGION_ID).is_none();
        let known: Vec<String> = match leader {
            Some(node) => routing.client_addr_of(node).into_iter().collect(),
            None if !outside => Vec::new(),
            None => (routing.placement_nodes().into_iter())
                .filter(|&n| n != routing.node_id())
                .filter_map(|n| routing.client_addr_of(n))
                .collect(),
        };
        let turn = self.ticks.get() as usize % known.len().max(1);
        WireError::NotPlacementLeader {
            leader,
            addr: known.get(turn).cloned(),
        }
    }

    fn node_status(&self) -> NodeStatus {
        let load = self.node_metrics.load();
        NodeStatus {
            cluster_id: self.routing.cluster_id(),
            node_id: self.routing.node_id(),
            version: crate::VERSION.to_string(),
            shards: self.routing.shards(),
            uptime_secs: load.uptime_secs,
            regions: load.regions,
            leaders: load.leaders,
            stopped_regions: load.stopped_regions,
            apply_lag_entries: load.apply_lag_entries,
            kv_disk_bytes: load.kv_disk_bytes,
            raft_log_disk_bytes: load.raft_log_disk_bytes,
        }
    }

    /// The answer for a region this shard does not host: where it is, if this node knows.
    fn not_here(&self, region_id: u64) -> WireError {
        match self.routing.shard_of(region_id) {
            Some(shard) if shard != self.index => WireError::WrongShard { region_id, shard },
            _ => WireError::RegionNotFound { region_id },
        }
    }

    fn serve_responses(self: &Rc<Self>) {
        let responses = self.engines.core.borrow_mut().take_responses();
        for response in responses {
            if Placement::owns(response.id()) {
                let answers = self.placement.borrow_mut().on_response(
                    &mut self.engines.core.borrow_mut(),
                    &self.engines.kv,
                    response,
                    wall_clock_ms(),
                );
                self.placement_answers(answers);
                continue;
            }
            let (id, result) = match response {
                Response::Written { id, outcome } => (
                    id,
                    Ok(match outcome {
                        Outcome::Done | Outcome::Split { .. } | Outcome::Membership { .. } => Reply::Done,
                        Outcome::Cas { succeeded, previous } => Reply::Cas { succeeded, previous },
                    }),
                ),
                Response::Failed { id, error } => (id, Err(crate::convert::error(error))),
                Response::ReadReady { id, region_id } => {
                    self.start_read(id, region_id);
                    continue;
                }
            };
            self.answer(id, result);
        }
    }

    /// Runs a read whose region caught up, within its connection's reply room: on this thread
    /// when small, off it (its room held until answered) when not.
    fn start_read(self: &Rc<Self>, id: RequestId, region_id: u64) {
        let taken = self
            .pending
            .borrow_mut()
            .get_mut(&id)
            .and_then(|p| Some((p.read.take()?, p.out.reply_room())));
        let Some((read, room)) = taken else {
            return self.answer(id, Err(storage_error("read state lost")));
        };
        let room = room.min(REPLY_BYTES_MAX);
        if room < REPLY_BYTES_MIN {
            return self.answer(id, Err(budget_spent()));
        }
        let core = self.engines.core.borrow();
        let Some(region) = core.region(region_id) else {
            drop(core);
            return self.answer(id, Err(WireError::RegionNotFound { region_id }));
        };
        if read.is_small() {
            let result = read.run(&self.engines.kv, region, room);
            drop(core);
            self.count(region_id, Flow::read(result.as_ref().map_or((0, 0), Read::served)));
            return self.answer(id, result);
        }
        let region = region.clone();
        drop(core);
        self.hold(id, room);
        let shard = Rc::clone(self);
        glommio::spawn_local(async move {
            let result = shard.engines.kv.offload(move |kv| read.run(kv, &region, room)).await;
            shard.count(region_id, Flow::read(result.as_ref().map_or((0, 0), Read::served)));
            shard.answer(id, result);
        })
        .detach();
    }

    /// Holds `bytes` of request `id`'s connection's reply budget until it is answered.
    fn hold(&self, id: RequestId, bytes: usize) {
        if let Some(p) = self.pending.borrow_mut().get_mut(&id) {
            p.out.reserve(bytes);
            p.reserved += bytes;
        }
    }

    fn answer(&self, id: RequestId, result: std::result::Result<Reply, WireError>) {
        let Some(p) = self.pending.borrow_mut().remove(&id) else {
            return;
        };
        p.out.inflight.set(p.out.inflight.get() - 1);
        p.out.release(p.reserved);
        let reply = result.unwrap_or_else(Reply::Failed);
        self.reply(&p.out, p.client_id, p.op, p.started, reply);
    }

    fn reply(&self, out: &Connection, client_id: u64, op: usize, started: Instant, reply: Reply) {
        if let Reply::Failed(e) = &reply {
            self.metrics.error(e.name());
        }
        self.metrics.request_seconds[op].observe(started.elapsed().as_secs_f64());
        out.push(FrameKind::Reply, client_id, &reply);
    }
}

/// A key outside the region, asked at an older version of it: the epoch is what is wrong
/// (TiKV checks it first), and the answer carries the current region for the client to follow.
fn stale_first(
    region: &Region,
    epoch: Epoch,
    action: std::result::Result<Action, WireError>,
) -> std::result::Result<Action, WireError> {
    match action {
        Err(e @ WireError::KeyNotInRegion { .. }) => {
            match region.check_epoch_parts(epoch, corekv_raftstore::EpochCheck::Version) {
                Err(stale) => Err(crate::convert::error(stale)),
                Ok(()) => Err(e),
            }
        }
        other => other,
    }
}

/// What `op` asks for, checked against the region: read keys by the same rules as written ones
/// (`cmd::check_key`), bounds and batches bounded. Writes are checked by the raft core.
fn action(op: &ArchivedOp, region: &Region) -> std::result::Result<Action, WireError> {
    let key_ok = |k: &[u8]| cmd::check_key(region, k).map_err(crate::convert::error);
    let too_many = |n: usize| {
        (n > BATCH_PAIRS_MAX).then(|| WireError::TooLarge {
            reason: format!("{n} keys in one request; the maximum is {BATCH_PAIRS_MAX}"),
        })
    };
    Ok(match op {
        ArchivedOp::Get { key } => {
            key_ok(key)?;
            Action::Read(Read::Get(key.to_vec()))
        }
        ArchivedOp::BatchGet { keys } => {
            if let Some(e) = too_many(keys.len()) {
                return Err(e);
            }
            keys.iter().try_for_each(|k| key_ok(k))?;
            Action::Read(Read::BatchGet(keys.iter().map(|k| k.to_vec()).collect()))
        }
        ArchivedOp::Scan {
            start,
            end,
            limit,
            reverse,
        } => scan_action(region, (start, end), limit.to_native(), *reverse)?,
        ArchivedOp::Put { key, value } => Action::Write(Command::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        }),
        ArchivedOp::BatchPut { pairs } => {
            if let Some(e) = too_many(pairs.len()) {
                return Err(e);
            }
            Action::Write(Command::BatchPut {
                pairs: pairs.iter().map(|p| (p.0.to_vec(), p.1.to_vec())).collect(),
            })
        }
        ArchivedOp::Delete { key } => Action::Write(Command::Delete { key: key.to_vec() }),
        ArchivedOp::DeleteRange { start, end } => Action::Write(Command::DeleteRange {
            start: start.to_vec(),
            end: end.to_vec(),
        }),
        ArchivedOp::CompareAndSwap { key, expected, new } => Action::Write(Command::CompareAndSwap {
            key: key.to_vec(),
            expected: expected.as_ref().map(|v| v.to_vec()),
            new: new.as_ref().map(|v| v.to_vec()),
        }),
        ArchivedOp::TransferLeader { to_store } => Action::Transfer {
            to_store: to_store.to_native(),
        },
        ArchivedOp::Split { split_key } => {
            let checked = cmd::check_bound(split_key).and_then(|()| region.check_split_key(split_key));
            checked.map_err(crate::convert::error)?;
            Action::Split(split_key.to_vec())
        }
        ArchivedOp::ChangePeer { change } => match membership::Step::from_wire(change) {
            membership::Step::AddLearner { store, shard } => Action::AddLearner(store, shard),
            membership::Step::Change(change) => Action::Write(Command::ChangePeers { changes: vec![change] }),
        },
        ArchivedOp::ClusterInfo
        | ArchivedOp::NodeStatus
        | ArchivedOp::GetTs { .. }
        | ArchivedOp::GetRegion { .. }
        | ArchivedOp::GetRegionById { .. }
        | ArchivedOp::GetRegionBelow { .. }
        | ArchivedOp::ScanRegions { .. }
        | ArchivedOp::GetStore { .. }
        | ArchivedOp::GetAllStores
        | ArchivedOp::AllocIds { .. }
        | ArchivedOp::PutStore { .. } => {
            return Err(WireError::Malformed {
                code: 308,
                reason: "a node request is not a region request".into(),
            })
        }
    })
}

/// A request the placement service answers through its raft core.
enum PlacementCall {
    Ask(Ask),
    PutStore(StoreMeta),
}

/// Why a store's registration is refused here: it must come from the IP of the peer address
/// it registers (the IP its peer connections will be accepted from afterwards).
fn foreign_join(call: &PlacementCall, remote: Option<std::net::IpAddr>) -> Option<String> {
    let PlacementCall::PutStore(meta) = call else {
        return None;
    };
    let peer_ip = meta.peer_addr.parse::<std::net::SocketAddr>().ok()?.ip();
    remote
        .filter(|ip| *ip != peer_ip)
        .map(|ip| format!("a store registers from its own peer address's IP ({peer_ip}); this request came from {ip}"))
}

fn placement_call(op: &ArchivedOp) -> Option<PlacementCall> {
    Some(match op {
        ArchivedOp::GetTs { count } => PlacementCall::Ask(Ask::Timestamps(count.to_native().into())),
        ArchivedOp::AllocIds { count } => PlacementCall::Ask(Ask::Ids(count.to_native().into())),
        ArchivedOp::PutStore {
            id,
            client_addr,
            peer_addr,
            shards,
        } => PlacementCall::PutStore(StoreMeta {
            id: id.to_native(),
            client_addr: client_addr.to_string(),
            peer_addr: peer_addr.to_string(),
            shards: shards.to_native(),
        }),
        _ => return None,
    })
}

/// A scan of `[start, end)` (empty `end`: to the region's end): an empty range is answered at
/// once with no rows; otherwise the range must lie in the region.
fn scan_action(
    region: &Region,
    (start, end): (&[u8], &[u8]),
    asked: u32,
    reverse: bool,
) -> std::result::Result<Action, WireError> {
    let check = |r: corekv_raftstore::Result<()>| r.map_err(crate::convert::error);
    check(cmd::check_bound(start))?;
    check(cmd::check_bound(end))?;
    if !end.is_empty() && start >= end {
        return Ok(Action::Answer(Reply::Rows {
            rows: Vec::new(),
            more: false,
        }));
    }
    check(region.check_key(start))?;
    if !end.is_empty() {
        check(region.check_range(start, end))?;
    }
    Ok(Action::Read(Read::Scan {
        start: start.to_vec(),
        end: end.to_vec(),
        limit: asked.min(SCAN_ROWS_MAX),
        asked,
        reverse,
    }))
}

/// The wall clock in ms since the Unix epoch: the TSO's physical time (it never goes back on
/// its own account: `placement::tso` keeps the current millisecond when the clock does).
fn wall_clock_ms() -> u64 {
    let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    since.map_or(0, |d| d.as_millis() as u64)
}

fn now_nanos() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos() as u64)
        .unwrap_or(0)
}

/// A shard's two listeners, bound before anything else opens so that a port in use fails the
/// start at once.
pub struct Listeners {
    client: glommio::net::TcpListener,
    peer: glommio::net::TcpListener,
    client_addr: std::net::SocketAddr,
    peer_addr: std::net::SocketAddr,
}

impl Listeners {
    fn bind((client, peer): (std::net::SocketAddr, std::net::SocketAddr), index: u32) -> Result<Listeners> {
        let at = |mut a: std::net::SocketAddr| {
            // `NodeConfig::listen_addrs` checked that every shard's port fits.
            a.set_port(a.port() + index as u16);
            a
        };
        let (client_addr, peer_addr) = (at(client), at(peer));
        Ok(Listeners {
            client: server::bind("--addr", client_addr)?,
            peer: server::bind("--peer-addr", peer_addr)?,
            client_addr,
            peer_addr,
        })
    }
}

/// Bytes the files under `dir` take (blocking: a directory walk).
fn disk_use(dir: &std::path::Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => disk_use(&e.path()),
            _ => e.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

fn storage_error(reason: &str) -> WireError {
    WireError::Storage {
        reason: reason.to_string(),
    }
}

/// What a request is told when its connection's reply budget has no room for its answer.
fn budget_spent() -> WireError {
    WireError::ServerBusy {
        reason: "this connection's reply budget is spent: read the answers already sent".into(),
    }
}

/// Where a shard keeps its engines.
pub fn shard_dir(data_dir: &std::path::Path, index: u32) -> PathBuf {
    data_dir.join(format!("shard-{index}"))
}
