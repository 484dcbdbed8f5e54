//! A deterministic simulator: whole clusters of real `RaftCore`s over real storage engines,
//! in one thread, with simulated time and a simulated network.
//!
//! Owns: the cluster layout (N nodes x M shards, regions pre-split, 3 replicas each, leaders
//! spread), simulated ticks, a network that drops, delays, reorders and partitions (each a
//! named option), node crashes (un-synced log data is lost: `MemDisk::crash`) and restarts,
//! and clients whose operations are recorded as a history for the linearizability checker.
//! Every node's shard 0 also holds a replica of the system region and runs the production
//! placement service beside its core, on a wall clock of its own (`timestamps`).
//!
//! Determinism: every random choice comes from one ChaCha8 stream seeded by `SimConfig::seed`;
//! every collection the loop walks is ordered. A failing test prints its seed; the same seed
//! replays the same run. Runs inside a glommio executor (the log engine's home).
//!
//! Must not: be used by the node runtime; it is test support that ships with the crate so that
//! tests of later crates (txn, the client) can use it too.

mod heartbeats;
mod timestamps;

pub use heartbeats::DirectoryView;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use corekv_storage::kv::{KvConfig, KvEngine, SharedBlockCache};
use corekv_storage::raftlog::{LogConfig, LogEngine, MemDisk};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::apply;
use crate::cmd::{Command, Outcome};
use crate::driver::Engines;
use crate::error::Error;
use crate::linearizability::{Op, OpKind};
use crate::placement::Placement;
use crate::raft_core::{batch_by_destination, RaftConfig, RaftCore, RaftMessage, RequestId, Response};
use crate::region::{Epoch, PeerMeta, Region, FIRST_USER_REGION_ID, SYSTEM_REGION_ID};
use crate::snapshot::{self, SnapshotMeta};
use crate::snapshot_chunks::{self, Receiver, SnapshotChunk};
use timestamps::TsClientOp;
pub use timestamps::TICK_MS;

/// Snapshot streams a simulated shard reassembles at once: more than its regions, so the bound
/// is never what a simulated run tests.
const SIM_SNAPSHOT_STREAMS_MAX: usize = 64;

/// Where a shard lives: (node, shard index).
pub type ShardAddr = (u64, u32);

/// How the simulated network misbehaves. Probabilities are per message, in parts per million.
#[derive(Debug, Clone, Default)]
pub struct NetConfig {
    pub drop_ppm: u32,
    pub duplicate_ppm: u32,
    /// Each message is delayed by a uniform number of ticks in `0..=delay_ticks_max`;
    /// different delays reorder messages.
    pub delay_ticks_max: u64,
    /// Extra loss for snapshot chunks only (long streams break more often than messages).
    pub snapshot_chunk_drop_ppm: u32,
}

#[derive(Debug, Clone)]
pub struct SimConfig {
    pub seed: u64,
    pub nodes: u64,
    pub shards: u32,
    pub regions_per_shard: u32,
    pub net: NetConfig,
    pub raft: RaftConfig,
    /// A client gives up on an attempt after this many ticks without an answer; a write
    /// given up on has an unknown outcome and is not retried.
    pub attempt_ticks_max: u64,
    /// A client operation ends (unknown outcome) after this many ticks.
    pub op_ticks_max: u64,
    /// Log GC keeps this many applied entries per region...
    pub gc_keep_entries: u64,
    /// ...and runs once a region has this many more (so GC batches its work).
    pub gc_slack_entries: u64,
    /// Snapshot data per chunk on the simulated network.
    pub snapshot_chunk_bytes: usize,
}

impl SimConfig {
    pub fn new(seed: u64) -> SimConfig {
        SimConfig {
            seed,
            nodes: 3,
            shards: 2,
            regions_per_shard: 2,
            net: NetConfig::default(),
            raft: RaftConfig::default(),
            attempt_ticks_max: 30,
            op_ticks_max: 200,
            gc_keep_entries: 4,
            gc_slack_entries: 16,
            snapshot_chunk_bytes: snapshot_chunks::SNAPSHOT_CHUNK_BYTES_MAX,
        }
    }
}

/// Where the simulated shards spent their time (wall time, single thread: CPU time). Measured
/// only, never used for a decision, so runs stay replayable.
#[derive(Debug, Clone, Copy, Default)]
pub struct SimTiming {
    /// In `RaftCore`: ready, step, persisted/applied bookkeeping.
    pub core: Duration,
    /// In the log engine's `append` (on `MemDisk`: its CPU cost alone).
    pub log: Duration,
    /// In the apply step (RocksDB writes).
    pub apply: Duration,
    /// Writes answered.
    pub writes: u64,
    /// Snapshots installed by followers.
    pub snapshots_installed: u64,
    /// Snapshot chunks put on the network (lost ones included).
    pub snapshot_chunks_sent: u64,
    /// Entries read back from the log engines for followers behind the caches.
    pub entries_fetched: u64,
}

struct InFlight {
    deliver_at: u64,
    seq: u64,
    packet: Packet,
}

/// What the simulated network carries: a batch of raft messages for one (node, shard), or one
/// chunk of a snapshot stream.
#[derive(Clone)]
enum Packet {
    Batch(Vec<RaftMessage>),
    Chunk(Box<SnapshotChunk>),
}

/// A client operation in progress.
struct ClientOp {
    op: Op,
    command: Option<Command>,
    deadline: u64,
    /// The request in flight: its id, where it went, when.
    attempt: Option<(RequestId, ShardAddr, u64)>,
    /// A write attempt was abandoned without an answer: its outcome is unknown.
    ambiguous: bool,
    /// Always ask this node's replica, leader or not (tests of stale leaders).
    pinned: Option<u64>,
    done: bool,
}

pub struct Sim {
    cfg: SimConfig,
    rng: ChaCha8Rng,
    now: u64,
    dir: tempfile::TempDir,
    cache: SharedBlockCache,
    regions: Vec<Region>,
    /// The system region: a replica on shard 0 of every node.
    system: Region,
    placements: BTreeMap<ShardAddr, Placement>,
    reporters: BTreeMap<ShardAddr, crate::placement::report::Reporter>,
    clock_skew_ms: BTreeMap<u64, i64>,
    ts_ops: Vec<TsClientOp>,
    ts_by_request: BTreeMap<RequestId, usize>,
    disks: BTreeMap<ShardAddr, MemDisk>,
    shards: BTreeMap<ShardAddr, Engines<MemDisk>>,
    net: Vec<InFlight>,
    net_seq: u64,
    /// Per receiving shard: snapshot streams being received (lost with a crash).
    receivers: BTreeMap<ShardAddr, Receiver>,
    /// Node pairs that cannot talk (both directions).
    cut: BTreeSet<(u64, u64)>,
    ops: Vec<ClientOp>,
    by_request: BTreeMap<RequestId, usize>,
    next_request: RequestId,
    timing: SimTiming,
}

impl Sim {
    /// Bootstraps a cluster: regions pre-split over the first key byte, replica r of region
    /// i on node r+1 (shard i mod shards), leaders spread across nodes. User region ids start
    /// after the system region's, as in a node's layout.
    pub async fn new(cfg: SimConfig) -> Sim {
        let dir = tempfile::tempdir().expect("temp dir for the simulated engines");
        let count = u64::from(cfg.shards * cfg.regions_per_shard);
        let regions: Vec<Region> = (0..count)
            .map(|i| {
                let bound = |j: u64| {
                    if j == 0 || j == count {
                        Vec::new()
                    } else {
                        vec![(j * 256 / count) as u8]
                    }
                };
                Region {
                    id: FIRST_USER_REGION_ID + i,
                    start: bound(i),
                    end: bound(i + 1),
                    epoch: Epoch {
                        conf_ver: 1,
                        version: 1,
                    },
                    peers: (1..=cfg.nodes)
                        .map(|node| {
                            PeerMeta::voter(
                                (FIRST_USER_REGION_ID + i) * 100 + node,
                                node,
                                (i % u64::from(cfg.shards)) as u32,
                            )
                        })
                        .collect(),
                }
            })
            .collect();
        let system = Region {
            id: SYSTEM_REGION_ID,
            start: Vec::new(),
            end: Vec::new(),
            epoch: Epoch {
                conf_ver: 1,
                version: 1,
            },
            peers: (1..=cfg.nodes)
                .map(|node| PeerMeta::voter(SYSTEM_REGION_ID * 100 + node, node, 0))
                .collect(),
        };
        let mut sim = Sim {
            rng: ChaCha8Rng::seed_from_u64(cfg.seed),
            cfg,
            now: 0,
            dir,
            cache: SharedBlockCache::new(64 << 20),
            regions,
            system,
            placements: BTreeMap::new(),
            reporters: BTreeMap::new(),
            clock_skew_ms: BTreeMap::new(),
            ts_ops: Vec::new(),
            ts_by_request: BTreeMap::new(),
            disks: BTreeMap::new(),
            shards: BTreeMap::new(),
            net: Vec::new(),
            net_seq: 0,
            receivers: BTreeMap::new(),
            cut: BTreeSet::new(),
            ops: Vec::new(),
            by_request: BTreeMap::new(),
            next_request: 1,
            timing: SimTiming::default(),
        };
        for node in 1..=sim.cfg.nodes {
            for shard in 0..sim.cfg.shards {
                sim.disks.insert((node, shard), MemDisk::new());
                let kv = sim.open_kv((node, shard));
                let all = sim.regions.iter().chain([&sim.system]);
                for region in all.filter(|r| r.peer_on(node, shard).is_some()) {
                    apply::bootstrap_region(&kv, region).expect("bootstrap region state");
                }
                drop(kv);
                sim.start_shard((node, shard)).await;
            }
        }
        (sim.shards.get_mut(&(1, 0)).expect("started").core.borrow_mut())
            .campaign(SYSTEM_REGION_ID)
            .expect("bootstrap campaign");
        for region in sim.regions.clone() {
            let i = region.id - FIRST_USER_REGION_ID;
            let node = 1 + i % sim.cfg.nodes;
            let shard = region
                .peer_on(node, (i % u64::from(sim.cfg.shards)) as u32)
                .map(|p| (p.node, p.shard));
            if let Some(addr) = shard {
                sim.shards
                    .get_mut(&addr)
                    .expect("started")
                    .core
                    .borrow_mut()
                    .campaign(region.id)
                    .expect("bootstrap campaign");
            }
        }
        sim.settle().await;
        sim
    }

    pub fn seed(&self) -> u64 {
        self.cfg.seed
    }

    pub fn now(&self) -> u64 {
        self.now
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub fn net_mut(&mut self) -> &mut NetConfig {
        &mut self.cfg.net
    }

    fn open_kv(&self, (node, shard): ShardAddr) -> KvEngine {
        let path = self.dir.path().join(format!("n{node}-s{shard}"));
        KvEngine::open(&path, &KvConfig::default(), &self.cache).expect("open the simulated KV engine")
    }

    /// Opens a shard's engines and restores its peers from them (bootstrap and restart).
    async fn start_shard(&mut self, addr: ShardAddr) {
        let disk = self.disks[&addr].clone();
        let (log, _) = LogEngine::open(
            disk,
            LogConfig {
                segment_bytes: 1 << 20,
                entry_bytes_max: 256 << 10,
                ..LogConfig::default()
            },
        )
        .await
        .expect("open the simulated log engine");
        let kv = self.open_kv(addr);
        let core = RaftCore::new(addr.0, addr.1, self.cfg.raft.clone(), self.cfg.seed);
        let snap_dir = self.dir.path().join(format!("snap-n{}-s{}", addr.0, addr.1));
        let engines = Engines::restore(core, log, kv, snap_dir)
            .await
            .expect("restore the shard's peers");
        self.shards.insert(addr, engines);
        self.reporters.insert(addr, Self::new_reporter());
        if let Some(placement) = Self::new_placement(addr) {
            self.placements.insert(addr, placement);
        }
    }

    /// Power loss on `node`: its engines close and whatever the log had not synced is gone.
    pub fn crash(&mut self, node: u64) {
        for shard in 0..self.cfg.shards {
            self.shards.remove(&(node, shard));
            self.placements.remove(&(node, shard));
            self.reporters.remove(&(node, shard));
            self.receivers.remove(&(node, shard));
            self.disks[&(node, shard)].crash();
        }
    }

    pub async fn restart(&mut self, node: u64) {
        for shard in 0..self.cfg.shards {
            if !self.shards.contains_key(&(node, shard)) {
                self.start_shard((node, shard)).await;
            }
        }
    }

    /// The index `node`'s replica of `region_id` has applied (None if the node is down).
    pub fn applied(&self, node: u64, region_id: u64) -> Option<u64> {
        let region = self.regions.iter().find(|r| r.id == region_id)?;
        let peer = region.peer_on(node, region.peers.iter().find(|p| p.node == node)?.shard)?;
        let shard = self.shards.get(&(peer.node, peer.shard))?;
        apply::applied_index(&shard.kv, region_id).ok()
    }

    /// Bytes of raft entries `node`'s shards hold in memory (0 if it is down).
    pub fn entry_cache_bytes(&self, node: u64) -> usize {
        self.shards
            .iter()
            .filter(|((n, _), _)| *n == node)
            .map(|(_, s)| s.core.borrow().entry_cache_bytes())
            .sum()
    }

    /// How the live shards served reads so far (summed).
    pub fn read_stats(&self) -> crate::ReadStats {
        self.shards.values().fold(crate::ReadStats::default(), |mut sum, s| {
            let r = s.core.borrow().read_stats();
            sum.lease += r.lease;
            sum.read_index += r.read_index;
            sum
        })
    }

    /// Whether shard (node, shard) has a replica of `region_id` (an uninitialized one counts).
    pub fn hosts(&self, (node, shard): (u64, u32), region_id: u64) -> bool {
        (self.shards.get(&(node, shard))).is_some_and(|s| s.core.borrow().region(region_id).is_some())
    }

    pub fn config(&self) -> &SimConfig {
        &self.cfg
    }

    pub fn is_up(&self, node: u64) -> bool {
        self.shards.contains_key(&(node, 0))
    }

    /// Delivers `msg` to the shard it names, as a forger on the network would (no delay, no
    /// loss): through `RaftCore::step`, the edge checks included. `Err`: refused or dropped
    /// (the target is down, the region or the peers unknown, the guard said no).
    pub fn inject(&mut self, msg: RaftMessage) -> Result<(), Error> {
        let shard = self
            .shards
            .get(&(msg.to.node, msg.to.shard))
            .ok_or(Error::RegionNotFound(msg.region_id))?;
        let result = shard.core.borrow_mut().step(msg);
        result
    }

    /// Cuts `node` off from every other node (both directions).
    pub fn isolate(&mut self, node: u64) {
        for other in 1..=self.cfg.nodes {
            if other != node {
                self.cut.insert((node.min(other), node.max(other)));
            }
        }
    }

    pub fn heal(&mut self) {
        self.cut.clear();
    }

    /// The node whose replica of `region_id` leads: of the live replicas that believe they
    /// do, the one with the highest term (a cut-off old leader may still believe it).
    pub fn leader(&self, region_id: u64) -> Option<u64> {
        self.leader_addr(region_id).map(|(node, _)| node)
    }

    /// The term of `region_id`'s current leader.
    pub fn leader_term(&self, region_id: u64) -> Option<u64> {
        let addr = self.leader_addr(region_id)?;
        let term = self.shards[&addr].core.borrow().term(region_id);
        term
    }

    fn leader_addr(&self, region_id: u64) -> Option<ShardAddr> {
        self.shards
            .iter()
            .filter(|(_, s)| s.core.borrow().is_leader(region_id))
            .max_by_key(|(_, s)| s.core.borrow().term(region_id))
            .map(|(addr, _)| *addr)
    }

    /// Asks `region_id`'s leader to split it at `key`, the new region's id being `first_id` and
    /// its peers' the ids after it (as `corekv-ctl region split` takes them from the id
    /// allocator). The split applies in later ticks; `regions()` shows it from then on.
    pub fn split(&mut self, region_id: u64, key: &[u8], first_id: u64) -> Result<(), Error> {
        let addr = self.leader_addr(region_id).ok_or(Error::RegionNotFound(region_id))?;
        let id = self.next_request;
        self.next_request += 1;
        let mut core = self.shards[&addr].core.borrow_mut();
        let region = core.region(region_id).ok_or(Error::RegionNotFound(region_id))?.clone();
        let split = Command::Split {
            splits: vec![crate::region::SplitAt {
                key: key.to_vec(),
                new_region_id: first_id,
                new_peer_ids: (1..=region.peers.len() as u64).map(|k| first_id + k).collect(),
            }],
        };
        split.check(&region)?;
        core.propose(id, region_id, region.epoch, split);
        Ok(())
    }

    /// Asks `region_id`'s leader to change its membership (as `corekv-ctl region add-peer` and
    /// `remove-peer` do, step by step); refused at once if the leader's checks refuse it. The
    /// change applies in later ticks.
    pub fn change_peers(&mut self, region_id: u64, changes: Vec<crate::region::PeerChange>) -> Result<(), Error> {
        let addr = self.leader_addr(region_id).ok_or(Error::RegionNotFound(region_id))?;
        let id = self.next_request;
        self.next_request += 1;
        let mut core = self.shards[&addr].core.borrow_mut();
        let epoch = core.region(region_id).ok_or(Error::RegionNotFound(region_id))?.epoch;
        core.try_propose(id, region_id, epoch, Command::ChangePeers { changes })
    }

    /// `region_id`'s state on the live shard `addr`, if it has a replica there.
    pub fn region_on(&self, addr: ShardAddr, region_id: u64) -> Option<Region> {
        let shard = self.shards.get(&addr)?;
        let region = shard.core.borrow().region(region_id).cloned();
        region
    }

    /// `region_id`'s state as its current leader has it, and the leader's peer id.
    pub fn leader_region(&self, region_id: u64) -> Option<(Region, u64)> {
        let addr = self.leader_addr(region_id)?;
        let region = self.region_on(addr, region_id)?;
        let me = region.peer_on(addr.0, addr.1)?.id;
        Some((region, me))
    }

    /// Keys of `region`'s range in the KV engine of the live shard `addr` (none once a
    /// replica removed from there was destroyed).
    pub fn data_keys(&self, addr: ShardAddr, region: &Region) -> usize {
        let Some(shard) = self.shards.get(&addr) else { return 0 };
        use corekv_storage::kv::KvRead as _;
        let range = crate::keys::data_range(region).expect("data ranges are bounded");
        let rows = (shard.kv).scan(
            corekv_storage::kv::Cf::Default,
            &range,
            corekv_storage::kv::Direction::Forward,
            usize::MAX,
        );
        rows.map_or(0, |rows| rows.len())
    }

    /// Takes the newest state of every user region some live replica has (a split's two
    /// regions once one replica applied it), as a client's region cache would learn it.
    fn learn_regions(&mut self) {
        let mut newest: BTreeMap<u64, Region> = self.regions.iter().map(|r| (r.id, r.clone())).collect();
        for shard in self.shards.values() {
            let core = shard.core.borrow();
            for id in core.region_ids() {
                let Some(r) = core.region(id).filter(|r| !r.is_system() && r.is_initialized()) else {
                    continue;
                };
                let older =
                    |have: &Region| (have.epoch.version, have.epoch.conf_ver) < (r.epoch.version, r.epoch.conf_ver);
                if newest.get(&id).is_none_or(older) {
                    newest.insert(id, r.clone());
                }
            }
        }
        self.regions = newest.into_values().collect();
        self.regions.sort_by(|a, b| a.start.cmp(&b.start));
    }

    /// Asks `region_id`'s current leader to hand its leadership to the replica on `to_node`
    /// (as `corekv-ctl region transfer-leader` does); the handover runs in later ticks.
    pub fn transfer_leader(&mut self, region_id: u64, to_node: u64) -> Result<(), Error> {
        let addr = self.leader_addr(region_id).ok_or(Error::RegionNotFound(region_id))?;
        let shard = &self.shards[&addr];
        let mut core = shard.core.borrow_mut();
        let epoch = core.region(region_id).ok_or(Error::RegionNotFound(region_id))?.epoch;
        core.transfer_leader(region_id, epoch, to_node).map(|_| ())
    }

    fn region_of(&self, key: &[u8]) -> &Region {
        self.regions
            .iter()
            .find(|r| r.contains(key))
            .expect("regions cover the key space")
    }

    /// One tick of simulated time: every live core ticks, then the cluster runs until quiet.
    pub async fn tick(&mut self) {
        self.now += 1;
        for shard in self.shards.values() {
            shard.core.borrow_mut().tick();
        }
        self.tick_placements();
        self.heartbeat();
        self.gc().await;
        self.drive_clients();
        self.drive_ts_clients();
        self.settle().await;
    }

    pub async fn ticks(&mut self, n: u64) {
        for _ in 0..n {
            self.tick().await;
        }
    }

    /// Log GC on every live shard, as the shard runtime does it.
    async fn gc(&mut self) {
        let (keep, slack) = (self.cfg.gc_keep_entries, self.cfg.gc_slack_entries);
        for shard in self.shards.values() {
            shard.gc(keep, slack).await.expect("log GC on the simulated engines");
        }
    }

    /// Delivers due messages and runs every shard's ready loop until nothing moves.
    async fn settle(&mut self) {
        loop {
            let mut moved = self.deliver();
            let addrs: Vec<ShardAddr> = self.shards.keys().copied().collect();
            for addr in addrs {
                moved |= self.run_ready(addr).await;
            }
            if !moved {
                self.learn_regions();
                return;
            }
        }
    }

    fn deliver(&mut self) -> bool {
        let now = self.now;
        let (due, later): (Vec<InFlight>, Vec<InFlight>) = self.net.drain(..).partition(|m| m.deliver_at <= now);
        self.net = later;
        let mut due = due;
        due.sort_by_key(|m| (m.deliver_at, m.seq));
        let moved = !due.is_empty();
        let t0 = Instant::now();
        for m in due {
            let msgs = match m.packet {
                Packet::Batch(batch) => batch,
                Packet::Chunk(chunk) => self.receive_chunk(&chunk).into_iter().collect(),
            };
            for msg in msgs {
                if let Some(shard) = self.shards.get(&(msg.to.node, msg.to.shard)) {
                    let _ = shard.core.borrow_mut().step(msg);
                }
            }
        }
        self.timing.core += t0.elapsed();
        moved
    }

    /// A snapshot chunk arrives at its shard: written to that shard's snapshot dir as the node
    /// does it (`snapshot::write_chunk`, then `seal` once whole); the message for raft once the
    /// stream is complete.
    fn receive_chunk(&mut self, chunk: &SnapshotChunk) -> Option<RaftMessage> {
        let to = (chunk.header.to.node, chunk.header.to.shard);
        let snap_dir = self.shards.get(&to)?.snap_dir.clone();
        let receiver = self
            .receivers
            .entry(to)
            .or_insert_with(|| Receiver::new(SIM_SNAPSHOT_STREAMS_MAX));
        let accepted = match receiver.push(chunk) {
            Ok(accepted) => accepted?,
            Err(e) => panic!(
                "seed {}: the simulator's snapshot chunks are never corrupt: {e}",
                self.cfg.seed
            ),
        };
        let w = accepted.write;
        let written = snapshot::write_chunk(&snap_dir, accepted.stream, w.file, w.offset, &chunk.bytes);
        written.unwrap_or_else(|e| panic!("seed {}: writing a snapshot chunk: {e}", self.cfg.seed));
        let (files, msg) = accepted.done?;
        snapshot::seal(&snap_dir, accepted.stream, files)
            .unwrap_or_else(|e| panic!("seed {}: sealing a snapshot: {e}", self.cfg.seed));
        Some(msg)
    }

    /// The chunks of `msg`'s snapshot, read from the sending shard's files as the transport
    /// does; `None` if the sender is down or its files are gone (a newer snapshot replaced them).
    fn snapshot_chunks(&self, msg: &RaftMessage) -> Option<Vec<SnapshotChunk>> {
        let sender = self.shards.get(&(msg.from.node, msg.from.shard))?;
        let snap = msg.msg.get_snapshot();
        let index = snap.get_metadata().index;
        let meta = SnapshotMeta::decode(msg.region_id, index, &snap.data).ok()?;
        let dir = snapshot::gen_dir(&sender.snap_dir, msg.region_id, index);
        let plan = snapshot_chunks::plan(&meta.sizes(), self.cfg.snapshot_chunk_bytes);
        let mut missing = false;
        let chunks = snapshot_chunks::chunks(msg, &plan, |p| {
            snapshot::read_chunk(&dir, p.file, p.offset, p.len).unwrap_or_else(|_| {
                missing = true;
                Vec::new()
            })
        });
        (!missing).then_some(chunks)
    }

    /// Sends one loop iteration's messages, one batch per destination as the transport will:
    /// a batch is lost, delayed or duplicated as a whole (one network packet). Snapshots go as
    /// streams of bounded chunks; the sender learns whether a stream got through.
    fn send(&mut self, msgs: Vec<RaftMessage>) {
        let (snapshots, msgs): (Vec<RaftMessage>, Vec<RaftMessage>) = msgs
            .into_iter()
            .partition(|m| m.msg.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot);
        for ((node, _), batch) in batch_by_destination(msgs) {
            if self.lost(batch[0].from.node, node) {
                continue;
            }
            self.transmit(Packet::Batch(batch));
        }
        for msg in snapshots {
            let (from, to, region_id) = ((msg.from.node, msg.from.shard), msg.to, msg.region_id);
            let chunks = self.snapshot_chunks(&msg).unwrap_or_default();
            let mut delivered = !chunks.is_empty() && self.shards.contains_key(&(to.node, to.shard));
            for chunk in chunks {
                self.timing.snapshot_chunks_sent += 1;
                let lost = self.lost(from.0, to.node) || self.chance(self.cfg.net.snapshot_chunk_drop_ppm);
                if !delivered || lost {
                    delivered = false;
                    break;
                }
                self.transmit(Packet::Chunk(Box::new(chunk)));
            }

            if let Some(shard) = self.shards.get(&from) {
                shard.core.borrow_mut().report_snapshot(region_id, to.id, delivered);
            }
        }
    }

    /// Whether the network loses a packet from node `a` to node `b`.
    fn lost(&mut self, a: u64, b: u64) -> bool {
        self.cut.contains(&(a.min(b), a.max(b))) || self.chance(self.cfg.net.drop_ppm)
    }

    /// Puts a packet on the network, sometimes twice, each copy with its own delay.
    fn transmit(&mut self, packet: Packet) {
        if self.chance(self.cfg.net.duplicate_ppm) {
            self.enqueue(packet.clone());
        }
        self.enqueue(packet);
    }

    fn enqueue(&mut self, packet: Packet) {
        let delay = self.rng.next_u64() % (self.cfg.net.delay_ticks_max + 1);
        self.net_seq += 1;
        self.net.push(InFlight {
            deliver_at: self.now + delay,
            seq: self.net_seq,
            packet,
        });
    }

    fn chance(&mut self, ppm: u32) -> bool {
        ppm > 0 && (self.rng.next_u32() % 1_000_000) < ppm
    }

    /// One iteration of a shard's loop, through the driver the shard runtime uses. Messages
    /// are put on the network after the iteration (simulated time does not pass within it).
    async fn run_ready(&mut self, addr: ShardAddr) -> bool {
        let Some(shard) = self.shards.get(&addr) else {
            return false;
        };
        let mut groups = Vec::new();
        let stats = shard
            .run_ready(&mut |msgs| groups.push(msgs), &mut || {})
            .await
            .unwrap_or_else(|e| panic!("seed {}: shard loop failed: {e}", self.cfg.seed));
        let Some(stats) = stats else {
            return self.take_responses(addr);
        };
        self.timing.core += stats.core;
        self.timing.log += stats.log;
        self.timing.apply += stats.apply;
        self.timing.snapshots_installed += stats.snapshots_installed;
        self.timing.entries_fetched += stats.entries_fetched;
        for msgs in groups {
            self.send(msgs);
        }
        self.take_responses(addr);
        true
    }

    fn take_responses(&mut self, addr: ShardAddr) -> bool {
        let Some(shard) = self.shards.get(&addr) else {
            return false;
        };
        let responses = shard.core.borrow_mut().take_responses();
        let moved = !responses.is_empty();
        for response in responses {
            if Placement::owns(response.id()) {
                self.placement_response(addr, response);
                continue;
            }
            let (id, result) = match response {
                Response::Written { id, outcome } => {
                    self.timing.writes += 1;
                    (id, Ok(Answer::Written(outcome)))
                }
                Response::ReadReady { id, region_id } => {
                    let key = self.by_request.get(&id).map(|&i| self.ops[i].op.key.clone());
                    let shard = self.shards.get(&addr).expect("present");
                    let region = shard.core.borrow().region(region_id).cloned();
                    match key.zip(region).map(|(k, r)| apply::read(&shard.kv, &r, &k)) {
                        Some(Ok(v)) => (id, Ok(Answer::Read(v))),
                        Some(Err(e)) => (id, Err(e)),
                        None => continue,
                    }
                }
                Response::Failed { id, error } => (id, Err(error)),
            };
            self.answer(id, result);
        }
        moved
    }

    // ---- clients ----

    /// Starts a client operation; its result lands in the history.
    pub fn submit(&mut self, client: u64, key: Vec<u8>, kind: OpKind) {
        self.submit_on(None, client, key, kind);
    }

    /// Like `submit`, but always sent to `node`'s replica, whatever it believes about
    /// leadership: what a client with a stale leader cache does.
    pub fn submit_to(&mut self, node: u64, client: u64, key: Vec<u8>, kind: OpKind) {
        self.submit_on(Some(node), client, key, kind);
    }

    fn submit_on(&mut self, pinned: Option<u64>, client: u64, key: Vec<u8>, kind: OpKind) {
        let command = match &kind {
            OpKind::Put { value } => Some(Command::Put {
                key: key.clone(),
                value: value.clone(),
            }),
            OpKind::Delete => Some(Command::Delete { key: key.clone() }),
            OpKind::Cas { expected, new, .. } => Some(Command::CompareAndSwap {
                key: key.clone(),
                expected: expected.clone(),
                new: new.clone(),
            }),
            OpKind::Get { .. } => None,
        };
        let call_ns = self.time_ns();
        let op = Op {
            client,
            key,
            kind,
            call_ns,
            return_ns: None,
        };
        let deadline = self.now + self.cfg.op_ticks_max;
        self.ops.push(ClientOp {
            op,
            command,
            deadline,
            attempt: None,
            ambiguous: false,
            pinned,
            done: false,
        });
    }

    /// Simulated time in ns for the history: ticks, with room to order events within one.
    fn time_ns(&mut self) -> i64 {
        self.net_seq += 1;
        (self.now * 1_000_000 + self.net_seq % 1_000_000) as i64
    }

    pub fn pending_ops(&self) -> usize {
        self.ops.iter().filter(|o| !o.done).count() + self.pending_ts_ops()
    }

    /// Runs ticks until every submitted operation has finished (each has a deadline).
    pub async fn run_until_done(&mut self) {
        while self.pending_ops() > 0 {
            self.tick().await;
        }
    }

    pub fn snapshots_installed(&self) -> u64 {
        self.timing.snapshots_installed
    }

    pub fn snapshot_chunks_sent(&self) -> u64 {
        self.timing.snapshot_chunks_sent
    }

    pub fn timing(&self) -> SimTiming {
        self.timing
    }

    /// Forgets finished operations (long benchmark runs); only when none is pending.
    pub fn clear_history(&mut self) {
        assert_eq!(self.pending_ops(), 0, "operations still pending");
        self.ops.clear();
        self.by_request.clear();
        self.ts_ops.clear();
    }

    /// The history so far (finished operations; unknown outcomes have no return time).
    pub fn history(&self) -> Vec<Op> {
        self.ops.iter().filter(|o| o.done).map(|o| o.op.clone()).collect()
    }

    fn drive_clients(&mut self) {
        for i in 0..self.ops.len() {
            if self.ops[i].done {
                continue;
            }
            if let Some((id, _, sent)) = self.ops[i].attempt {
                if self.now < sent + self.cfg.attempt_ticks_max {
                    continue;
                }
                // No answer in time: a write may or may not have happened.
                self.by_request.remove(&id);
                self.ops[i].attempt = None;
                if self.ops[i].command.is_some() {
                    self.ops[i].ambiguous = true;
                    self.finish(i, None);
                    continue;
                }
            }
            if self.now >= self.ops[i].deadline {
                self.finish(i, None);
                continue;
            }
            self.attempt(i);
        }
    }

    /// Sends op `i` to the shard whose replica leads its region (the client's region cache
    /// and leader hints are the routing layer's job; here every live replica is asked).
    fn attempt(&mut self, i: usize) {
        let region = self.region_of(&self.ops[i].op.key).clone();
        let target = match self.ops[i].pinned {
            Some(node) => region.peers.iter().find(|p| p.node == node).map(|p| (p.node, p.shard)),
            None => self.leader_addr(region.id),
        };
        let Some(addr) = target.filter(|a| self.shards.contains_key(a)) else {
            return; // no leader known (or the pinned node is down): try again next tick
        };
        let id = self.next_request;
        self.next_request += 1;
        self.by_request.insert(id, i);
        self.ops[i].attempt = Some((id, addr, self.now));
        let mut core = self.shards[&addr].core.borrow_mut();
        match self.ops[i].command.clone() {
            Some(cmd) => core.propose(id, region.id, region.epoch, cmd),
            None => core.read(id, region.id, region.epoch),
        }
    }

    fn answer(&mut self, id: RequestId, result: Result<Answer, Error>) {
        let Some(i) = self.by_request.remove(&id) else { return };
        self.ops[i].attempt = None;
        match result {
            Ok(answer) => self.finish(i, Some(answer)),
            // Definitely not applied: the client may try again.
            Err(
                Error::NotLeader { .. }
                | Error::ServerBusy(_)
                | Error::EpochNotMatch { .. }
                | Error::RegionUnavailable { .. },
            ) => {}
            Err(Error::ProposalDropped { .. }) if !self.ops[i].ambiguous => {}
            Err(Error::OutcomeUnknown { .. }) => {
                self.ops[i].ambiguous = true;
                self.finish(i, None);
            }
            Err(e) => panic!("seed {}: request failed for good: {e}", self.cfg.seed),
        }
    }

    fn finish(&mut self, i: usize, answer: Option<Answer>) {
        let now = self.time_ns();
        let op = &mut self.ops[i];
        op.done = true;
        match answer {
            None => op.op.return_ns = None,
            Some(answer) => {
                op.op.return_ns = Some(now);
                match (&mut op.op.kind, answer) {
                    (OpKind::Get { observed }, Answer::Read(v)) => *observed = v,
                    (OpKind::Cas { succeeded, .. }, Answer::Written(Outcome::Cas { succeeded: s, .. })) => {
                        *succeeded = s
                    }
                    (OpKind::Put { .. } | OpKind::Delete, Answer::Written(Outcome::Done)) => {}
                    (kind, answer) => panic!("seed {}: answer {answer:?} does not fit {kind:?}", self.cfg.seed),
                }
            }
        }
    }
}

#[derive(Debug)]
enum Answer {
    Written(Outcome),
    Read(Option<Vec<u8>>),
}

/// Runs `f` on a fresh glommio executor (the engines' home) and returns its output.
pub fn run<F, Fut, T>(f: F) -> T
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = T> + 'static,
    T: Send + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(f)
        .expect("spawn a glommio executor")
        .join()
        .expect("simulation panicked")
}
