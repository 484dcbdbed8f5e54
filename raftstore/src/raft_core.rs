//! `RaftCore`: the sans-I/O Multi-Raft of one shard.
//!
//! Owns: every peer (raft-rs `RawNode`) of the shard, their pending proposals and reads, and
//! the turning of events into actions. Events in: `tick`, `step` (a raft message), `propose`,
//! `read`, `on_persisted`, `on_applied`. Actions out: one [`ShardReady`] per loop iteration —
//! ONE log batch for all regions (group commit), messages to send now and after the batch is
//! durable, committed entries to apply — and [`Response`]s to requests.
//!
//! Must not: do I/O, read a clock or draw randomness of its own: election timeouts are drawn
//! from a generator seeded by the caller (overriding raft-rs's thread-local draws), so the
//! simulator replays a run from its seed. The shard runtime and the simulator drive this code.
//!
//! Invariants asserted here: a response is sent only after its entry was applied; entries are
//! applied only after they are durable in the log (raft-rs hands out committed entries only up
//! to the persisted index, and the driver applies after `on_persisted`); `applied <= committed`.

use std::collections::{BTreeMap, VecDeque};

use corekv_storage::raftlog::LogBatch;
use protobuf::Message as _;
use raft::eraftpb::{ConfState, Entry, Message, MessageType, Snapshot, SnapshotMetadata};
use raft::{RawNode, StateRole};

use crate::cmd::{Command, Outcome};
use crate::error::{Error, Result};
use crate::guard;
use crate::keys::{HARD_STATE_KEY, TRUNCATED_KEY};
use crate::membership::{self, MemberCheck};
use crate::region::{Epoch, EpochCheck, PeerMeta, PeerRole, Region};
use crate::snapshot::SnapshotMeta;
use crate::storage::{conf_state, Fetch, PeerStorage, SPLIT_INIT_INDEX, SPLIT_INIT_TERM};

/// Encodes a truncation point for `TRUNCATED_KEY`.
pub fn encode_truncated(index: u64, term: u64) -> [u8; 16] {
    let mut out = [0u8; 16];
    out[..8].copy_from_slice(&index.to_be_bytes());
    out[8..].copy_from_slice(&term.to_be_bytes());
    out
}

/// How far a leader transfer's target may be behind the leader's log (TiKV's warm transfer):
/// a target this close takes over at once, while one further behind would keep the region
/// from taking writes until it caught up.
pub const TRANSFER_LAG_ENTRIES_MAX: u64 = 128;

/// Uninitialized replicas (started by a leader's message, waiting for its snapshot) a shard
/// holds at once; more leaders' messages for unknown regions are dropped until some install.
pub const UNINITIALIZED_PEERS_MAX: usize = 256;
/// Election timeouts an uninitialized replica may wait for its snapshot before it goes.
const UNINITIALIZED_TIMEOUTS: u64 = 10;

/// Vote requests a shard keeps for regions a split is about to make here (`hold_early_vote`).
const EARLY_VOTES_MAX: usize = 64;

/// Election timeouts a replica hears from no leader before it asks the others whether it is
/// still one (a replica removed while cut off learns it so, and is destroyed).
const STALE_TIMEOUTS: u64 = 10;
/// Membership answers (`MemberCheck`) queued at once; more wait for the asker's next question.
const NOTICES_MAX: usize = 256;

/// Senders an uninitialized replica remembers (to answer them) until its snapshot arrives.
const UNINITIALIZED_SENDERS_MAX: usize = 8;

/// Identifies a client request within the shard; chosen by the driver.
pub type RequestId = u64;

/// Raft timing, in ticks; the driver decides how long a tick is.
#[derive(Debug, Clone)]
pub struct RaftConfig {
    pub election_tick: usize,
    pub heartbeat_tick: usize,
    pub max_size_per_msg_bytes: u64,
    pub max_inflight_msgs: usize,
    /// Requests waiting in one region (proposed or reading) before `ServerBusy`.
    pub pending_requests_max: usize,
    /// How long a confirmed leadership lets the leader serve reads alone, counted from when
    /// the confirming round (a proposal or a ReadIndex heartbeat) was SENT. Strictly shorter
    /// than `election_tick`: no other leader can be elected before that many ticks pass
    /// after a quorum heard from this one (check-quorum and pre-vote make followers refuse
    /// votes until then). The margin covers tick skew between nodes.
    pub lease_ticks: usize,
    /// Bytes of raft entries one region keeps in memory: every entry not applied, and applied
    /// ones up to this (older ones are read back from the log engine when a follower needs them).
    pub entry_cache_bytes_max: usize,
    /// Bytes of entries a leader may have appended and not yet committed; proposals past it are
    /// dropped (retryable), so a region cannot outrun its followers without bound.
    pub uncommitted_bytes_max: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        RaftConfig {
            election_tick: 10,
            heartbeat_tick: 2,
            max_size_per_msg_bytes: 1 << 20,
            max_inflight_msgs: 256,
            pending_requests_max: 4096,
            lease_ticks: 8,
            entry_cache_bytes_max: 16 << 20,
            uncommitted_bytes_max: 64 << 20,
        }
    }
}

/// A raft message between two peers of a region, addressed by where they live.
#[derive(Debug, Clone)]
pub struct RaftMessage {
    pub region_id: u64,
    pub from: PeerMeta,
    pub to: PeerMeta,
    pub msg: Message,
    /// The sender's region epoch (a stale replica is told apart by it).
    pub epoch: Epoch,
    /// Not `None`: a membership question or answer instead of a raft message.
    pub check: MemberCheck,
}

/// The answer to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// The write was applied, with what it produced.
    Written {
        id: RequestId,
        outcome: Outcome,
    },
    /// The region's state machine has caught up with the read's ReadIndex: the driver reads
    /// the KV engine now, and the read is linearizable.
    ReadReady {
        id: RequestId,
        region_id: u64,
    },
    Failed {
        id: RequestId,
        error: Error,
    },
}

impl Response {
    pub fn id(&self) -> RequestId {
        match self {
            Response::Written { id, .. } | Response::ReadReady { id, .. } | Response::Failed { id, .. } => *id,
        }
    }
}

/// Committed entries of one region, to apply in order.
#[derive(Debug)]
pub struct ApplyTask {
    pub region: Region,
    /// The replica applying them (this shard's peer id).
    pub me: u64,
    pub entries: Vec<Entry>,
}

/// Everything one loop iteration must do, for all regions of the shard at once.
#[derive(Debug, Default)]
pub struct ShardReady {
    /// New entries and hard states of every region: ONE log append (group commit).
    pub log_batch: LogBatch,
    /// Send now (a leader may send before its own append is durable).
    pub messages: Vec<RaftMessage>,
    /// Send only after `log_batch` is durable (votes, append responses).
    pub after_persist: Vec<RaftMessage>,
    /// Pass back to [`RaftCore::on_persisted`] once `log_batch` is durable.
    pub persisted: Vec<(u64, u64)>,
    pub apply: Vec<ApplyTask>,
    /// Regions whose leader must send a snapshot: generate one from the KV engine and hand
    /// it to [`RaftCore::on_snapshot_generated`].
    pub generate_snapshots: Vec<u64>,
    /// Snapshots received from leaders: install into the KV engine BEFORE `log_batch` is
    /// written (it already holds the log's side of the install), then report the applied
    /// index with `on_applied(region, index, vec![])` after `on_persisted`.
    pub install_snapshots: Vec<(Region, Snapshot)>,
    /// Replicas removed from their regions (the region, this shard's peer id): destroy each
    /// in the KV engine (`apply::destroy`) BEFORE `log_batch` is written (it cleans their logs).
    pub destroy_regions: Vec<(Region, u64)>,
}

/// What a request for a region without a live peer here is told (`stopped`: the core's).
fn missing(stopped: &BTreeMap<u64, String>, region_id: u64) -> Error {
    match stopped.get(&region_id) {
        Some(why) => Error::RegionUnavailable {
            region_id,
            reason: why.clone(),
        },
        None => Error::RegionNotFound(region_id),
    }
}

/// Where a message goes: (node, shard).
pub type Destination = (u64, u32);

/// Groups messages by destination, in first-seen order: one transport batch per destination
/// per loop iteration.
pub fn batch_by_destination(msgs: Vec<RaftMessage>) -> Vec<(Destination, Vec<RaftMessage>)> {
    let mut batches: Vec<(Destination, Vec<RaftMessage>)> = Vec::new();
    for msg in msgs {
        let to = (msg.to.node, msg.to.shard);
        match batches.iter_mut().find(|(d, _)| *d == to) {
            Some((_, batch)) => batch.push(msg),
            None => batches.push((to, vec![msg])),
        }
    }
    batches
}

impl ShardReady {
    pub fn is_empty(&self) -> bool {
        self.log_batch.is_empty()
            && self.messages.is_empty()
            && self.after_persist.is_empty()
            && self.persisted.is_empty()
            && self.apply.is_empty()
            && self.generate_snapshots.is_empty()
            && self.install_snapshots.is_empty()
            && self.destroy_regions.is_empty()
    }
}

struct PendingWrite {
    index: u64,
    term: u64,
    id: RequestId,
    /// Tick it was proposed at: once applied in its term, a quorum heard from us after it.
    proposed_at: u64,
}

struct Peer {
    region: Region,
    me: PeerMeta,
    raw: RawNode<PeerStorage>,
    writes: VecDeque<PendingWrite>,
    /// Reads whose ReadIndex is known, waiting for apply to reach it.
    reads: VecDeque<(u64, RequestId)>,
    /// ReadIndex requests sent, with the tick their heartbeat round went out.
    reads_in_flight: BTreeMap<RequestId, u64>,
    /// The leader lease: valid while `now < lease_until` in term `lease_term`.
    lease_until: u64,
    lease_term: u64,
    /// A term in which this leader started handing over its leadership: the transferee
    /// campaigns without waiting out anyone's lease, so no lease holds for the rest of that
    /// term (reads take the ReadIndex path).
    lease_void_term: u64,
    applied: u64,
    /// (term, role, leader) when the election timeout was last drawn.
    timeout_key: Option<(u64, StateRole, u64)>,
    /// The tick this peer started on this shard, or (uninitialized) last heard from a leader:
    /// an uninitialized one that hears nothing for long goes.
    alive_at: u64,
}

impl Peer {
    fn leader(&self) -> Option<PeerMeta> {
        self.region.peer(self.raw.raft.leader_id).copied()
    }

    fn check_leader(&self) -> Result<()> {
        if self.raw.raft.state == StateRole::Leader {
            Ok(())
        } else {
            Err(Error::NotLeader {
                region_id: self.region.id,
                leader: self.leader(),
            })
        }
    }

    fn check_busy(&self, limit: usize) -> Result<()> {
        if self.writes.len() + self.reads.len() + self.reads_in_flight.len() >= limit {
            return Err(Error::ServerBusy("too many requests waiting in this region"));
        }
        Ok(())
    }

    /// Extends the lease: a quorum acknowledged a round we sent at tick `sent_at`.
    fn renew_lease(&mut self, sent_at: u64, lease_ticks: usize) {
        if self.raw.raft.state != StateRole::Leader {
            return;
        }
        let term = self.raw.raft.term;
        let until = sent_at + lease_ticks as u64;
        if self.lease_term != term {
            self.lease_term = term;
            self.lease_until = until;
        } else {
            self.lease_until = self.lease_until.max(until);
        }
    }

    /// Whether this leader may serve a read alone at tick `now`.
    fn in_lease(&self, now: u64) -> bool {
        let raft = &self.raw.raft;
        raft.state == StateRole::Leader
            && self.lease_term == raft.term
            && now < self.lease_until
            && self.lease_void_term != raft.term
            // Its commit index is only known to be current once it committed in its term.
            && raft.commit_to_current_term()
    }

    /// Fails ReadIndex requests raft-rs will never answer: it drops them silently when the
    /// leader has not committed in its term yet or steps down. A read is safe to retry.
    fn expire_reads(&mut self, now: u64, timeout_ticks: u64, responses: &mut Vec<Response>) {
        let leader = self.raw.raft.state == StateRole::Leader;
        let expired: Vec<RequestId> = self
            .reads_in_flight
            .iter()
            .filter(|(_, &sent)| !leader || now >= sent + timeout_ticks)
            .map(|(&id, _)| id)
            .collect();
        for id in expired {
            self.reads_in_flight.remove(&id);
            let error = if leader {
                Error::ProposalDropped {
                    region_id: self.region.id,
                    reason: "read index not confirmed in time",
                }
            } else {
                Error::NotLeader {
                    region_id: self.region.id,
                    leader: self.leader(),
                }
            };
            responses.push(Response::Failed { id, error });
        }
    }

    /// The region changed under the reads waiting here (a split): their keys may belong to
    /// another region now, whose replica here may lag. They fail, to be sent again.
    fn fail_reads(&mut self, responses: &mut Vec<Response>) {
        let error = Error::EpochNotMatch {
            request: Epoch::default(),
            current: Box::new(self.region.clone()),
        };
        let ids = (self.reads.drain(..).map(|r| r.1)).chain(std::mem::take(&mut self.reads_in_flight).into_keys());
        responses.extend(ids.map(|id| Response::Failed {
            id,
            error: error.clone(),
        }));
    }

    /// A confirmed ReadIndex: the read it answers waits for apply to reach `index`. Only reads
    /// this replica asked for count (raft-rs echoes the context it was given), and never past
    /// the commit index: anything else would hold every read behind it forever.
    fn take_read_state(&mut self, index: u64, ctx: &[u8], lease_ticks: usize) {
        let id = <[u8; 8]>::try_from(ctx).map(RequestId::from_be_bytes);
        let sent_at = id.ok().and_then(|id| Some((id, self.reads_in_flight.remove(&id)?)));
        let Some((id, sent_at)) = sent_at.filter(|_| index <= self.raw.raft.raft_log.committed) else {
            tracing::warn!(
                region = self.region.id,
                index,
                "a read index this replica did not ask for; dropped"
            );
            return;
        };
        self.renew_lease(sent_at, lease_ticks);
        debug_assert!(
            self.reads.back().is_none_or(|(i, _)| *i <= index),
            "read indexes in order"
        );
        self.reads.push_back((index, id));
    }

    /// Answers the reads whose ReadIndex the state machine has reached.
    fn serve_reads(&mut self, responses: &mut Vec<Response>) {
        while self.reads.front().is_some_and(|(index, _)| *index <= self.applied) {
            let (_, id) = self.reads.pop_front().expect("front exists");
            responses.push(Response::ReadReady {
                id,
                region_id: self.region.id,
            });
        }
    }

    /// A membership change applied (`changes`; none: a joint membership left): raft-rs's
    /// configuration follows the region's, entry by entry.
    /// `Err` (why) if raft-rs refuses it: its configuration and the region's would differ
    /// from then on, so the region must stop here.
    fn change_membership(
        &mut self,
        region: &Region,
        changes: &[crate::region::PeerChange],
    ) -> std::result::Result<(), String> {
        debug_assert!(succeeds(&self.region, region), "epochs only grow");
        let cc = membership::conf_change(changes);
        self.raw.apply_conf_change(&cc).map_err(|e| {
            format!("raft refused an applied membership change ({e}): its configuration and the region's differ")
        })?;
        self.region = region.clone();
        if let Some(me) = region.peer(self.me.id) {
            self.me = *me;
        }
        self.raw.mut_store().drop_snapshot();
        Ok(())
    }

    /// A membership question or answer from this replica to `to`.
    fn notice(&self, to: PeerMeta, check: MemberCheck) -> RaftMessage {
        RaftMessage {
            region_id: self.region.id,
            from: self.me,
            to,
            msg: Message::default(),
            epoch: self.region.epoch,
            check,
        }
    }

    /// Tells `msg`'s sender it was removed, if it was: it is no replica of this region, whose
    /// state is newer than the one it sent from (a newer sender may be a replica added since
    /// this one applied its own state: it is not answered).
    fn answer_if_removed(&self, msg: &RaftMessage, out: &mut Vec<RaftMessage>) {
        let removed = self.region.is_initialized()
            && self.region.peer(msg.from.id).is_none()
            && msg.epoch.conf_ver < self.region.epoch.conf_ver;
        if removed && out.len() < NOTICES_MAX {
            out.push(self.notice(msg.from, MemberCheck::Removed));
        }
    }

    fn wrap(&self, msgs: Vec<Message>, out: &mut Vec<RaftMessage>) {
        for msg in msgs {
            match self.region.peer(msg.to) {
                Some(to) => out.push(RaftMessage {
                    region_id: self.region.id,
                    from: self.me,
                    to: *to,
                    msg,
                    epoch: self.region.epoch,
                    check: MemberCheck::None,
                }),
                None => tracing::warn!(
                    region = self.region.id,
                    to = msg.to,
                    "message to an unknown peer dropped"
                ),
            }
        }
    }
}

/// Writes the starting log state of a region a split made (`PeerStorage::split_born`).
fn log_split_born(batch: &mut LogBatch, region_id: u64) {
    let hs = PeerStorage::split_born_hard_state();
    // Whatever an uninitialized replica of it logged before goes first.
    batch.clean(region_id);
    batch.compact_to(region_id, SPLIT_INIT_INDEX + 1);
    batch.put_state(
        region_id,
        TRUNCATED_KEY,
        &encode_truncated(SPLIT_INIT_INDEX, SPLIT_INIT_TERM),
    );
    batch.put_state(region_id, HARD_STATE_KEY, &hs.write_to_bytes().expect("in memory"));
}

/// Whether a message of this kind comes only from a leader.
fn from_leader(kind: MessageType) -> bool {
    matches!(
        kind,
        MessageType::MsgAppend | MessageType::MsgHeartbeat | MessageType::MsgSnapshot
    )
}

/// Whether `next` is `current` or a later state of the same region (epochs never go back).
fn succeeds(current: &Region, next: &Region) -> bool {
    next.id == current.id
        && next.epoch.version >= current.epoch.version
        && next.epoch.conf_ver >= current.epoch.conf_ver
}

/// Why the leader `raft` must not hand its leadership to peer `to` now, if it must not.
fn transfer_refusal(raft: &raft::Raft<PeerStorage>, to: u64) -> Option<String> {
    if raft.has_pending_conf() {
        return Some("a membership change is pending".into());
    }
    if raft.prs().conf().learners().contains(&to) {
        return Some("the target is a learner".into());
    }
    let Some(progress) = raft.prs().get(to) else {
        return Some("the target is not a voter of this region".into());
    };
    if !progress.recent_active {
        return Some("the target has not answered the leader within an election timeout".into());
    }
    if progress.state == raft::ProgressState::Snapshot {
        return Some("the target is being sent a snapshot".into());
    }
    let lag = raft.raft_log.last_index().saturating_sub(progress.matched);
    (lag > TRANSFER_LAG_ENTRIES_MAX)
        .then(|| format!("the target is {lag} entries behind the leader (at most {TRANSFER_LAG_ENTRIES_MAX})"))
}

/// The Multi-Raft state machine of one shard.
pub struct RaftCore {
    node: u64,
    shard: u32,
    cfg: RaftConfig,
    /// Ordered, so every loop visits regions in the same order: runs replay from a seed.
    peers: BTreeMap<u64, Peer>,
    responses: Vec<Response>,
    logger: slog::Logger,
    /// Randomness comes from outside: a generator seeded by the caller draws every election
    /// timeout, so a run replays exactly from its seed.
    rng: u64,
    /// Ticks seen: the core's only notion of time (leases are measured in it).
    now: u64,
    stats: ReadStats,
    /// Regions stopped on this shard by corrupt data, with why: their messages are dropped and
    /// their requests answered `RegionUnavailable`; the rest of the shard serves on.
    stopped: BTreeMap<u64, String>,
    /// Vote requests for regions not here yet (`hold_early_vote`), oldest first.
    early_votes: VecDeque<RaftMessage>,
    /// Regions whose uninitialized replica expired, or whose replica was destroyed: their raft
    /// state leaves the log engine with the next log batch.
    cleanups: Vec<u64>,
    /// Regions whose replica here was removed, with their epoch then and its peer id (0:
    /// unknown): messages of that epoch or older, or to that peer or an older one, cannot start
    /// a replica again.
    tombstones: BTreeMap<u64, (Epoch, u64)>,
    /// Replicas removed since the last `ready` (region, peer id), for the driver to destroy.
    destroys: Vec<(Region, u64)>,
    /// Membership questions and answers to send with the next `ready`.
    notices: Vec<RaftMessage>,
}

/// How reads were served.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// By the leader alone, within its lease.
    pub lease: u64,
    /// After a ReadIndex round (no lease, or it ran out).
    pub read_index: u64,
}

impl RaftCore {
    /// `seed` is the only randomness the core uses: it seeds the draws of election timeouts.
    pub fn new(node: u64, shard: u32, cfg: RaftConfig, seed: u64) -> RaftCore {
        // raft-rs logs through slog; its messages are not needed (our tracing covers roles).
        let logger = slog::Logger::root(slog::Discard, slog::o!());
        assert!(
            cfg.lease_ticks < cfg.election_tick,
            "the lease must be strictly shorter than the election timeout"
        );
        let rng = seed ^ ((node << 32) | u64::from(shard));
        let (peers, responses, stats) = (BTreeMap::new(), Vec::new(), ReadStats::default());
        RaftCore {
            node,
            shard,
            cfg,
            peers,
            responses,
            logger,
            rng,
            now: 0,
            stats,
            stopped: BTreeMap::new(),
            early_votes: VecDeque::new(),
            cleanups: Vec::new(),
            tombstones: BTreeMap::new(),
            destroys: Vec::new(),
            notices: Vec::new(),
        }
    }

    /// Whether `region` has a replica on this shard.
    pub fn hosts(&self, region: &Region) -> bool {
        region.peer_on(self.node, self.shard).is_some()
    }

    /// A region whose replica `peer_id` here was removed (a tombstone in the KV engine, at
    /// `epoch`). Its raft state leaves the log engine with the next log batch (a crash may have
    /// come before it did).
    pub fn add_tombstone(&mut self, region_id: u64, epoch: Epoch, peer_id: u64) {
        self.tombstones.insert(region_id, (epoch, peer_id));
        self.cleanups.push(region_id);
    }

    /// Re-draws `region_id`'s election timeout from this core's generator when raft-rs has
    /// just reset it (its term, role or leader changed). raft-rs draws from a thread-local RNG
    /// at every reset; overriding each draw before it is used keeps runs replayable while
    /// keeping a fresh random timeout per election (a fixed one can split votes forever).
    fn rearm(&mut self, region_id: u64) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let key = (peer.raw.raft.term, peer.raw.raft.state, peer.raw.raft.leader_id);
        if peer.timeout_key == Some(key) {
            return;
        }
        peer.timeout_key = Some(key);
        // splitmix64: small, well-distributed, and ours, so its sequence never changes.
        self.rng = self.rng.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        let election_tick = self.cfg.election_tick;
        peer.raw
            .raft
            .set_randomized_election_timeout(election_tick + (z % election_tick as u64) as usize);
    }

    /// Adds this shard's replica of `region`, with its storage as restored (or new) and the
    /// index the KV engine has applied up to.
    pub fn add_peer(&mut self, region: Region, mut storage: PeerStorage, applied: u64) -> Result<()> {
        storage.set_cache_bytes_max(self.cfg.entry_cache_bytes_max, applied);
        let me = *region
            .peer_on(self.node, self.shard)
            .ok_or(Error::RegionNotFound(region.id))?;
        let config = raft::Config {
            id: me.id,
            election_tick: self.cfg.election_tick,
            heartbeat_tick: self.cfg.heartbeat_tick,
            applied,
            max_size_per_msg: self.cfg.max_size_per_msg_bytes,
            max_inflight_msgs: self.cfg.max_inflight_msgs,
            check_quorum: true,
            pre_vote: true,
            max_uncommitted_size: self.cfg.uncommitted_bytes_max,
            ..raft::Config::default()
        };
        let raw = RawNode::new(&config, storage, &self.logger).map_err(|e| Error::Storage(e.to_string()))?;
        let region_id = region.id;
        let peer = Peer {
            region,
            me,
            raw,
            writes: VecDeque::new(),
            reads: VecDeque::new(),
            reads_in_flight: BTreeMap::new(),
            lease_until: 0,
            lease_term: 0,
            lease_void_term: 0,
            applied,
            timeout_key: None,
            alive_at: self.now,
        };
        self.peers.insert(region_id, peer);
        self.rearm(region_id);
        Ok(())
    }

    pub fn region(&self, region_id: u64) -> Option<&Region> {
        self.peers.get(&region_id).map(|p| &p.region)
    }

    /// Stops this shard's replica of `region_id` after its data was found corrupt (`why`): its
    /// waiting requests fail (writes with an unknown outcome: they may have committed), it
    /// takes no more messages, and other replicas lead the region on. Never resumed in this
    /// process: the operator looks first.
    pub fn stop_region(&mut self, region_id: u64, why: String) {
        tracing::error!(region_id, why, "region stopped on this shard: its data is corrupt");
        let unavailable = Error::RegionUnavailable {
            region_id,
            reason: why.clone(),
        };
        self.stopped.insert(region_id, why);
        if let Some(peer) = self.peers.remove(&region_id) {
            self.fail_waiting(&peer, &unavailable);
        }
    }

    /// Fails every request waiting on `peer`, which leaves this shard: writes with an unknown
    /// outcome (they may have committed), reads with `error`.
    fn fail_waiting(&mut self, peer: &Peer, error: &Error) {
        let region_id = peer.region.id;
        let writes = peer.writes.iter().map(|w| (w.id, Error::OutcomeUnknown { region_id }));
        let reads = peer
            .reads
            .iter()
            .map(|r| r.1)
            .chain(peer.reads_in_flight.keys().copied());
        let failed: Vec<(RequestId, Error)> = writes.chain(reads.map(|id| (id, error.clone()))).collect();
        for (id, error) in failed {
            self.responses.push(Response::Failed { id, error });
        }
    }

    /// Destroys this shard's replica of `region_id`, removed from the region: its requests
    /// fail, a tombstone keeps its epoch, and the driver clears its data and log.
    fn destroy(&mut self, region_id: u64) {
        let Some(peer) = self.peers.remove(&region_id) else {
            return;
        };
        tracing::info!(
            region_id,
            peer = peer.me.id,
            "replica removed from its region: destroyed"
        );
        self.fail_waiting(&peer, &Error::RegionNotFound(region_id));
        self.tombstones.insert(region_id, (peer.region.epoch, peer.me.id));
        self.cleanups.push(region_id);
        self.destroys.push((peer.region, peer.me.id));
    }

    /// Why `region_id` is stopped on this shard, if it is.
    pub fn stopped(&self, region_id: u64) -> Option<&str> {
        self.stopped.get(&region_id).map(String::as_str)
    }

    /// Every region stopped on this shard, with why.
    pub fn stopped_regions(&self) -> &BTreeMap<u64, String> {
        &self.stopped
    }

    /// The index this shard's replica of `region_id` has applied up to.
    pub fn applied(&self, region_id: u64) -> Option<u64> {
        self.peers.get(&region_id).map(|p| p.applied)
    }

    pub fn region_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.peers.keys().copied().collect();
        ids.sort_unstable();
        ids
    }

    pub fn is_leader(&self, region_id: u64) -> bool {
        self.peers
            .get(&region_id)
            .is_some_and(|p| p.raw.raft.state == StateRole::Leader)
    }

    /// The raft term of this shard's replica of `region_id`.
    pub fn term(&self, region_id: u64) -> Option<u64> {
        self.peers.get(&region_id).map(|p| p.raw.raft.term)
    }

    /// Whether `region_id` has had no election yet (its log's starting term: a fresh region).
    pub fn never_elected(&self, region_id: u64) -> bool {
        self.term(region_id).is_some_and(|term| term <= SPLIT_INIT_TERM)
    }

    pub fn leader_of(&self, region_id: u64) -> Option<PeerMeta> {
        self.peers.get(&region_id).and_then(Peer::leader)
    }

    /// Starts an election for `region_id` now (bootstrap spreads leaders with it).
    pub fn campaign(&mut self, region_id: u64) -> Result<()> {
        let peer = self.peers.get_mut(&region_id).ok_or(Error::RegionNotFound(region_id))?;
        peer.raw.campaign().map_err(|e| Error::Storage(e.to_string()))?;
        self.rearm(region_id);
        Ok(())
    }

    /// Hands `region_id`'s leadership to its replica on `to_node` (TiKV's warm transfer): only
    /// a leader, at the request's epoch, to a voter that answered within an election timeout,
    /// whose log is within `TRANSFER_LAG_ENTRIES_MAX` of the leader's and which is not being
    /// sent a snapshot, with no membership change pending. Returns the target; raft-rs then
    /// completes the transfer, or abandons it after an election timeout.
    pub fn transfer_leader(&mut self, region_id: u64, epoch: Epoch, to_node: u64) -> Result<PeerMeta> {
        let peer = (self.peers.get_mut(&region_id)).ok_or_else(|| missing(&self.stopped, region_id))?;
        peer.check_leader()?;
        peer.region.check_epoch(epoch)?;
        let refused = |reason: String| Error::AdminRefused { region_id, reason };
        let target = *(peer.region.peers.iter().find(|p| p.node == to_node))
            .ok_or_else(|| refused(format!("store {to_node} holds no replica of this region")))?;
        if target.id == peer.me.id {
            return Ok(target);
        }
        transfer_refusal(&peer.raw.raft, target.id).map_or(Ok(()), |why| Err(refused(why)))?;
        peer.lease_void_term = peer.raw.raft.term;
        peer.raw.transfer_leader(target.id);
        self.rearm(region_id);
        Ok(target)
    }

    /// One logical clock tick for every peer.
    pub fn tick(&mut self) {
        self.now += 1;
        let ids: Vec<u64> = self.peers.keys().copied().collect();
        let timeout = self.cfg.election_tick as u64;
        for id in ids {
            let peer = self.peers.get_mut(&id).expect("listed");
            if !peer.region.is_initialized() && self.now - peer.alive_at > UNINITIALIZED_TIMEOUTS * timeout {
                // Its snapshot never came (a forgery, or a region gone since): it goes, and
                // whatever raft state it logged with it.
                self.peers.remove(&id);
                self.cleanups.push(id);
                continue;
            }
            peer.raw.tick();
            peer.expire_reads(self.now, timeout, &mut self.responses);
            self.tick_membership(id);
            self.rearm(id);
        }
    }

    /// A leader is alive to itself, finishes a joint membership raft-rs did not leave (its
    /// automatic leave is lost when the leader changes before applying the joint entry), and
    /// hands its leadership to a voter once it was demoted (by a change an earlier leader
    /// proposed). Any other replica that has heard from no leader for `STALE_TIMEOUTS`
    /// election timeouts asks the others whether it is still a replica (`MemberCheck::Probe`).
    fn tick_membership(&mut self, region_id: u64) {
        let peer = self.peers.get_mut(&region_id).expect("listed");
        if peer.raw.raft.state == StateRole::Leader {
            peer.alive_at = self.now;
            if peer.region.is_joint() && !peer.raw.raft.has_pending_conf() {
                let leave = raft::eraftpb::ConfChangeV2::default();
                if let Err(e) = peer.raw.propose_conf_change(Vec::new(), leave) {
                    tracing::warn!(region_id, error = %e, "leaving a joint membership not proposed");
                }
            }
            if !peer.region.is_joint() && !peer.me.role.votes_in_incoming() {
                let prs = peer.raw.raft.prs();
                let voters = (peer.region.peers.iter()).filter(|p| p.role == PeerRole::Voter);
                let best = voters.max_by_key(|p| prs.get(p.id).map_or(0, |pr| pr.matched));
                if let Some(to) = best.map(|p| p.id) {
                    peer.raw.transfer_leader(to);
                }
            }
            return;
        }
        let stale_after = STALE_TIMEOUTS * self.cfg.election_tick as u64;
        if !peer.region.is_initialized() || self.now - peer.alive_at <= stale_after {
            return;
        }
        peer.alive_at = self.now;
        let others = peer.region.peers.iter().filter(|p| p.id != peer.me.id);
        let probes: Vec<RaftMessage> = others.map(|p| peer.notice(*p, MemberCheck::Probe)).collect();
        self.notices.extend(probes);
    }

    /// A membership question or answer from another shard (`MemberCheck`). A `Removed` from
    /// no replica of the region is refused (no honest peer sends one).
    fn on_member_check(&mut self, msg: &RaftMessage) -> Result<()> {
        // (A replica destroyed here answers nothing: its tombstone does not say who else was
        // removed.)
        let peer = (self.peers.get(&msg.region_id)).ok_or(Error::RegionNotFound(msg.region_id))?;
        match msg.check {
            MemberCheck::Probe => peer.answer_if_removed(msg, &mut self.notices),
            MemberCheck::Removed => {
                let from_replica = (peer.region.peer(msg.from.id)).is_some_and(|p| p.same_replica(&msg.from));
                if !from_replica || peer.me.id != msg.to.id {
                    return Err(Error::Refused {
                        region_id: msg.region_id,
                        from: msg.from.id,
                        reason: "a membership notice from no replica of the region, or to another",
                    });
                }
                if peer.region.is_initialized() && msg.epoch.conf_ver > peer.region.epoch.conf_ver {
                    self.destroy(msg.region_id);
                }
            }
            MemberCheck::None => {}
        }
        Ok(())
    }

    /// A raft message from another shard. A leader's message for a region not here starts an
    /// uninitialized replica of it (`start_uninitialized`); other messages for regions not here
    /// are dropped; messages that fail the edge checks (`guard`) are refused before raft-rs
    /// sees them.
    pub fn step(&mut self, msg: RaftMessage) -> Result<()> {
        if msg.check != MemberCheck::None {
            return self.on_member_check(&msg);
        }
        if !self.peers.contains_key(&msg.region_id) {
            if self.hold_early_vote(&msg) {
                return Ok(());
            }
            self.start_uninitialized(&msg)?;
        }
        let refused = |reason| Error::Refused {
            region_id: msg.region_id,
            from: msg.from.id,
            reason,
        };
        let kind = msg.msg.get_msg_type();
        let carried = match kind {
            MessageType::MsgSnapshot => Some(self.snapshot_region(&msg).map_err(refused)?),
            _ => None,
        };
        let now = self.now;
        let peer = (self.peers.get_mut(&msg.region_id)).ok_or(Error::RegionNotFound(msg.region_id))?;
        let known_sender =
            !peer.region.is_initialized() || (peer.region.peer(msg.from.id)).is_some_and(|p| p.same_replica(&msg.from));
        if msg.to.id != peer.me.id || !known_sender {
            peer.answer_if_removed(&msg, &mut self.notices);
            return Err(Error::RegionNotFound(msg.region_id));
        }
        guard::check(&peer.raw.raft, carried.as_ref().unwrap_or(&peer.region), &msg).map_err(refused)?;
        if !peer.region.is_initialized() {
            if matches!(kind, MessageType::MsgRequestVote | MessageType::MsgRequestPreVote) {
                return Ok(()); // it knows neither the region nor its log: it votes for no one
            }
            // Its answers go to the peers it heard from (a few: a forger cannot grow it).
            if peer.region.peer(msg.from.id).is_none() && peer.region.peers.len() < UNINITIALIZED_SENDERS_MAX {
                peer.region.peers.push(msg.from);
            }
        }
        if from_leader(kind) {
            // A leader still talks to it: not stale; (uninitialized) its snapshot may be on the way.
            peer.alive_at = now;
        }
        // raft-rs rejects messages from stale terms itself; an error here is not the
        // sender's business.
        if let Err(e) = peer.raw.step(msg.msg) {
            tracing::debug!(region = msg.region_id, error = %e, "raft step refused a message");
        }
        self.rearm(msg.region_id);
        Ok(())
    }

    /// Keeps a vote request for a region not here yet (at most `EARLY_VOTES_MAX`, oldest
    /// dropped first): the leader of a region a split makes campaigns as soon as it applied the
    /// split, often before this shard has; the vote is stepped once the split makes the region
    /// here (`on_split`), instead of the candidate waiting out an election timeout.
    fn hold_early_vote(&mut self, msg: &RaftMessage) -> bool {
        let vote = matches!(
            msg.msg.get_msg_type(),
            MessageType::MsgRequestVote | MessageType::MsgRequestPreVote
        );
        // Only small ones: a vote carries no entries.
        let small = msg.msg.entries.is_empty() && msg.msg.context.len() <= 64;
        if !vote || !small || !self.may_be_new_region(msg) {
            return false;
        }
        if self.early_votes.len() >= EARLY_VOTES_MAX {
            self.early_votes.pop_front();
        }
        self.early_votes.push_back(msg.clone());
        true
    }

    /// Whether `msg`, for a region this shard does not have, may be from a region new to it: it
    /// is addressed to a replica on this shard, and neither its sender nor its addressee is a
    /// peer of a region here (peer ids are never reused across regions, so a message naming
    /// one under another region's id is forged).
    fn may_be_new_region(&self, msg: &RaftMessage) -> bool {
        let known = |id: u64| {
            self.peers
                .values()
                .any(|p| p.me.id == id || p.region.peer(id).is_some())
        };
        let tombstoned = (self.tombstones.get(&msg.region_id))
            .is_some_and(|(epoch, peer_id)| msg.epoch.conf_ver <= epoch.conf_ver || msg.to.id <= *peer_id);
        (msg.to.node, msg.to.shard) == (self.node, self.shard)
            && !self.stopped.contains_key(&msg.region_id)
            && !tombstoned
            && !known(msg.to.id)
            && !known(msg.from.id)
    }

    /// The region state a snapshot for a replica here carries, checked: it decodes, it
    /// succeeds the replica's own and holds the replica, and its range overlaps no other
    /// region on this shard (a replica that missed a split takes the new region's snapshot
    /// only once its part of the old one has been cut back, by the split or by a snapshot).
    fn snapshot_region(&self, msg: &RaftMessage) -> std::result::Result<Region, guard::Refusal> {
        let peer = self
            .peers
            .get(&msg.region_id)
            .ok_or("a snapshot for a region not here")?;
        let snap = msg.msg.get_snapshot();
        let region = SnapshotMeta::decode(msg.region_id, snap.get_metadata().index, &snap.data)
            .and_then(|meta| meta.region(msg.region_id))
            .map_err(|_| "snapshot data that is not a snapshot of this index")?;
        if !succeeds(&peer.region, &region) || !(region.peer(peer.me.id)).is_some_and(|p| p.same_replica(&peer.me)) {
            return Err("a snapshot of an older region state, or of one without this replica");
        }
        // (The system region's keys are a space of their own: it overlaps no user region.)
        let overlapped = (self.peers.values()).any(|p| {
            let other = &p.region;
            other.id != region.id && other.is_initialized() && !other.is_system() && other.overlaps(&region)
        });
        if overlapped {
            return Err("a snapshot of a range another region here still holds");
        }
        Ok(region)
    }

    /// Starts an uninitialized replica of `msg`'s region on this shard, as TiKV does, when the
    /// message is a leader's to a replica here of a region this shard does not have: a
    /// replica that missed the split which made the region (its parent caught up by a
    /// snapshot instead). It knows no range, no log and no voters until the leader's snapshot
    /// installs the region; it votes for no one and serves nothing. At most
    /// `UNINITIALIZED_PEERS_MAX` at once; never persisted (a restart forgets it, and the
    /// leader's next message starts it again).
    fn start_uninitialized(&mut self, msg: &RaftMessage) -> Result<()> {
        let region_id = msg.region_id;
        let leader_kind = from_leader(msg.msg.get_msg_type());
        let uninitialized = self.peers.values().filter(|p| !p.region.is_initialized()).count();
        if !leader_kind || !self.may_be_new_region(msg) || uninitialized >= UNINITIALIZED_PEERS_MAX {
            return Err(Error::RegionNotFound(region_id));
        }
        let region = Region {
            id: region_id,
            start: Vec::new(),
            end: Vec::new(),
            epoch: Epoch::default(),
            peers: vec![msg.to],
        };
        tracing::info!(
            region = region_id,
            from = msg.from.id,
            "a replica of a region new to this shard starts"
        );
        self.add_peer(region, PeerStorage::new(ConfState::default()), 0)
    }

    /// Proposes a write; the answer comes as a `Response` once it is applied (or dropped).
    pub fn propose(&mut self, id: RequestId, region_id: u64, epoch: Epoch, cmd: Command) {
        if let Err(error) = self.try_propose(id, region_id, epoch, cmd) {
            self.responses.push(Response::Failed { id, error });
        }
    }

    /// Proposes a write, or says at once why not (and then no `Response` follows).
    pub fn try_propose(&mut self, id: RequestId, region_id: u64, epoch: Epoch, cmd: Command) -> Result<()> {
        let limit = self.cfg.pending_requests_max;
        let peer = (self.peers.get_mut(&region_id)).ok_or_else(|| missing(&self.stopped, region_id))?;
        peer.check_leader()?;
        peer.region.check_epoch_parts(epoch, cmd.epoch_check())?;
        if let Command::ChangePeers { changes } = &cmd {
            // Refused for now (tried again later) before refused for good (`check`).
            if let Some(reason) = membership::refusal(&peer.raw.raft, &peer.region, changes) {
                return Err(Error::AdminRefused { region_id, reason });
            }
        }
        cmd.check(&peer.region)?;
        peer.check_busy(limit)?;
        let before = peer.raw.raft.raft_log.last_index();
        let proposed = match &cmd {
            // The command rides in the context; raft-rs reads the data.
            Command::ChangePeers { changes } => {
                (peer.raw).propose_conf_change(cmd.encode(epoch), membership::conf_change(changes))
            }
            _ => peer.raw.propose(Vec::new(), cmd.encode(epoch)),
        };
        proposed.map_err(|_| Error::ProposalDropped {
            region_id,
            reason: "raft refused the proposal",
        })?;
        let index = peer.raw.raft.raft_log.last_index();
        if index != before + 1 {
            return Err(Error::ProposalDropped {
                region_id,
                reason: "not appended",
            });
        }
        // Writes of an earlier term at this index or above were cut from this leader's log
        // when it appended here: they can never commit.
        while peer.writes.back().is_some_and(|w| w.index >= index) {
            let w = peer.writes.pop_back().expect("back exists");
            self.responses.push(Response::Failed {
                id: w.id,
                error: Error::ProposalDropped {
                    region_id,
                    reason: "superseded",
                },
            });
        }
        debug_assert!(
            peer.writes.back().is_none_or(|w| w.index < index),
            "pending writes in index order"
        );
        peer.writes.push_back(PendingWrite {
            index,
            term: peer.raw.raft.term,
            id,
            proposed_at: self.now,
        });
        Ok(())
    }

    /// A linearizable read, answered with `ReadReady` once the state machine has applied
    /// everything committed when the read arrived. Within the leader's lease that commit index
    /// is known at once; otherwise a ReadIndex round confirms leadership first (and renews the
    /// lease).
    pub fn read(&mut self, id: RequestId, region_id: u64, epoch: Epoch) {
        if let Err(error) = self.try_read(id, region_id, epoch) {
            self.responses.push(Response::Failed { id, error });
        }
    }

    fn try_read(&mut self, id: RequestId, region_id: u64, epoch: Epoch) -> Result<()> {
        let limit = self.cfg.pending_requests_max;
        let peer = (self.peers.get_mut(&region_id)).ok_or_else(|| missing(&self.stopped, region_id))?;
        peer.check_leader()?;
        peer.region.check_epoch_parts(epoch, EpochCheck::Version)?;
        peer.check_busy(limit)?;
        if peer.in_lease(self.now) {
            self.stats.lease += 1;
            peer.reads.push_back((peer.raw.raft.raft_log.committed, id));
            peer.serve_reads(&mut self.responses);
        } else {
            self.stats.read_index += 1;
            peer.raw.read_index(id.to_be_bytes().to_vec());
            peer.reads_in_flight.insert(id, self.now);
        }
        Ok(())
    }

    /// Collects the next iteration's work from every region with something ready.
    pub fn ready(&mut self) -> ShardReady {
        let mut out = ShardReady::default();
        for id in self.cleanups.drain(..) {
            out.log_batch.clean(id);
        }
        out.destroy_regions = std::mem::take(&mut self.destroys);
        out.messages = std::mem::take(&mut self.notices);
        for peer in self.peers.values_mut() {
            // One snapshot per applied index: another made at the same index would be other
            // files under the same name, under streams still reading the first.
            if peer.raw.store().take_snapshot_request() && peer.raw.store().snapshot_index() != Some(peer.applied) {
                out.generate_snapshots.push(peer.region.id);
            }
            if peer.raw.mut_store().take_unlogged() {
                log_split_born(&mut out.log_batch, peer.region.id);
            }
            if !peer.raw.has_ready() {
                continue;
            }
            let mut rd = peer.raw.ready();
            if !rd.snapshot().is_empty() {
                // The log restarts after the snapshot; its entries (if any) follow below.
                let snap = rd.snapshot().clone();
                let (index, term) = (snap.get_metadata().index, snap.get_metadata().term);
                let region_id = peer.region.id;
                // The region as of the snapshot (checked when it was stepped): installed with it.
                if let Ok(region) = SnapshotMeta::decode(region_id, index, &snap.data).and_then(|m| m.region(region_id))
                {
                    peer.region = region;
                }
                out.log_batch.clean(region_id);
                out.log_batch.compact_to(region_id, index + 1);
                out.log_batch
                    .put_state(region_id, TRUNCATED_KEY, &encode_truncated(index, term));
                peer.raw.mut_store().apply_snapshot(&snap);
                out.install_snapshots.push((peer.region.clone(), snap));
            }
            peer.wrap(rd.take_messages(), &mut out.messages);
            for rs in rd.take_read_states() {
                peer.take_read_state(rs.index, &rs.request_ctx, self.cfg.lease_ticks);
            }
            // Reads whose index is applied already are served now: nothing else may be
            // applied for a while.
            peer.serve_reads(&mut self.responses);
            let committed = rd.take_committed_entries();
            if !committed.is_empty() {
                out.apply.push(ApplyTask {
                    region: peer.region.clone(),
                    me: peer.me.id,
                    entries: committed,
                });
            }
            let region_id = peer.region.id;
            if let Some(first) = rd.entries().first() {
                let data: Vec<Vec<u8>> = rd
                    .entries()
                    .iter()
                    .map(|e| e.write_to_bytes().expect("in memory"))
                    .collect();
                let terms = rd.entries().iter().map(|e| e.term);
                out.log_batch
                    .add_entries(region_id, first.index, terms.zip(data.iter().map(Vec::as_slice)));
                peer.raw.mut_store().append(rd.entries());
                peer.raw.mut_store().evict(peer.applied);
            }
            if let Some(hs) = rd.hs() {
                out.log_batch
                    .put_state(region_id, HARD_STATE_KEY, &hs.write_to_bytes().expect("in memory"));
                peer.raw.mut_store().set_hard_state(hs.clone());
            }
            peer.wrap(rd.take_persisted_messages(), &mut out.after_persist);
            out.persisted.push((region_id, rd.number()));
            peer.raw.advance_append_async(rd);
        }
        out
    }

    /// `log_batch` of a `ShardReady` is durable: tell raft, per region.
    pub fn on_persisted(&mut self, persisted: &[(u64, u64)]) {
        for &(region_id, number) in persisted {
            if let Some(peer) = self.peers.get_mut(&region_id) {
                peer.raw.on_persist_ready(number);
            }
        }
    }

    /// `region_id` applied entries up to `applied`; `outcomes` has one item per applied entry
    /// (index, term, what it produced: `None` for entries that carry no command).
    pub fn on_applied(&mut self, region_id: u64, applied: u64, outcomes: Vec<(u64, u64, Option<Result<Outcome>>)>) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        assert!(applied >= peer.applied, "apply never goes back");
        assert!(applied <= peer.raw.raft.raft_log.committed, "applied <= committed");
        // Persisted before applied (and so before acknowledged): raft-rs hands out committed
        // entries only up to what this replica made durable; a snapshot is durable first.
        assert!(
            applied <= peer.raw.raft.raft_log.persisted.max(peer.raw.store().truncated().0),
            "applied <= persisted"
        );
        // The region's state follows its entries in order; the regions splits made start after.
        let mut made: Vec<Region> = Vec::new();
        let mut broken = None;
        for (index, term, outcome) in outcomes {
            match &outcome {
                Some(Ok(Outcome::Split { left, new })) => {
                    debug_assert!(succeeds(&peer.region, left), "epochs only grow");
                    peer.region = left.clone();
                    made.extend(new.iter().cloned());
                }
                Some(Ok(Outcome::Membership { region, changes })) => {
                    if let Err(why) = peer.change_membership(region, changes) {
                        broken.get_or_insert(why);
                    }
                }
                _ => {}
            }
            while let Some(w) = peer.writes.front() {
                if w.index > index {
                    break;
                }
                let w = peer.writes.pop_front().expect("front exists");
                if w.index == index && w.term == term {
                    peer.renew_lease(w.proposed_at, self.cfg.lease_ticks);
                }
                let response = match (&outcome, w.index == index && w.term == term) {
                    (Some(Ok(o)), true) => Response::Written {
                        id: w.id,
                        outcome: o.clone(),
                    },
                    (Some(Err(e)), true) => Response::Failed {
                        id: w.id,
                        error: e.clone(),
                    },
                    // Another leader's entry took this index: the proposal never committed.
                    (_, false) if w.index == index => Response::Failed {
                        id: w.id,
                        error: Error::ProposalDropped {
                            region_id,
                            reason: "superseded",
                        },
                    },
                    // Covered by a snapshot (no entry seen): it may be in it or not.
                    _ => Response::Failed {
                        id: w.id,
                        error: Error::OutcomeUnknown { region_id },
                    },
                };
                self.responses.push(response);
            }
        }
        // Writes at or below `applied` that no outcome matched were covered by a snapshot.
        while peer.writes.front().is_some_and(|w| w.index <= applied) {
            let w = peer.writes.pop_front().expect("front exists");
            self.responses.push(Response::Failed {
                id: w.id,
                error: Error::OutcomeUnknown { region_id },
            });
        }
        peer.applied = applied;
        peer.raw.advance_apply_to(applied);
        peer.raw.mut_store().evict(applied);
        if made.is_empty() {
            peer.serve_reads(&mut self.responses);
        } else {
            // A split fails the reads waiting on the old range (`Peer::fail_reads`).
            peer.fail_reads(&mut self.responses);
        }
        let leads = peer.raw.raft.state == StateRole::Leader;
        let removed = peer.region.peer(peer.me.id).is_none();
        // The new regions' replicas start here, campaigning at once where the split region's
        // leader is (as TiKV does): leaders without waiting out an election timeout.
        for region in made {
            self.start_split_born(region, leads);
        }
        if let Some(why) = broken {
            self.stop_region(region_id, why);
        } else if removed {
            self.destroy(region_id);
        }
    }

    /// Starts this shard's replica of `right`, a region a split made (campaigning if `leads`),
    /// and steps the votes held for it.
    fn start_split_born(&mut self, right: Region, leads: bool) {
        let id = right.id;
        if self.stopped.contains_key(&id) {
            return; // stopped by corrupt data here: never brought back in this process
        }
        match self.peers.get(&id).map(|p| p.region.is_initialized()) {
            // Installed from a snapshot already: ahead of this split.
            Some(true) => return,
            // Started by its leader's message before the split applied here: the split's
            // state replaces it (it never voted, so no promise is lost).
            Some(false) => {
                self.peers.remove(&id);
            }
            None => {}
        }
        let conf = conf_state(&right);
        let started = self.add_peer(right, PeerStorage::split_born(conf), SPLIT_INIT_INDEX);
        if let Err(e) = started.and_then(|()| if leads { self.campaign(id) } else { Ok(()) }) {
            tracing::error!(region = id, error = %e, "the region a split made did not start here");
            return;
        }
        let (votes, others) = std::mem::take(&mut self.early_votes)
            .into_iter()
            .partition(|m| m.region_id == id);
        self.early_votes = others;
        for vote in votes {
            let _ = self.step(vote); // stale ones are refused as any other stale message
        }
    }

    /// A snapshot of `region_id` generated from the KV engine at `applied` (its data as the
    /// driver encoded it): served to raft-rs from now on.
    pub fn on_snapshot_generated(&mut self, region_id: u64, applied: u64, data: Vec<u8>) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        let term = match raft::Storage::term(peer.raw.store(), applied) {
            Ok(term) => term,
            Err(e) => {
                tracing::warn!(region_id, applied, error = %e, "snapshot generated past the log; dropped");
                return;
            }
        };
        let mut meta = SnapshotMetadata {
            index: applied,
            term,
            ..Default::default()
        };
        // The membership as of the snapshot's index (the region may have changed since).
        let region = SnapshotMeta::decode(region_id, applied, &data).and_then(|m| m.region(region_id));
        let Ok(region) = region else {
            tracing::error!(region_id, applied, "a snapshot generated here does not decode; dropped");
            return;
        };
        meta.set_conf_state(conf_state(&region));
        let mut snap = Snapshot::default();
        snap.set_metadata(meta);
        snap.data = data.into();
        peer.raw.mut_store().set_snapshot(snap);
    }

    /// Log GC candidates: regions whose log holds more than `keep_entries + slack_entries`
    /// applied entries, with the index to compact to (keeping the last `keep_entries`). The
    /// driver must make the KV engine durable first, then compact the log engine, then call
    /// [`RaftCore::on_compacted`].
    pub fn gc_candidates(&self, keep_entries: u64, slack_entries: u64) -> Vec<(u64, u64, u64)> {
        let mut out = Vec::new();
        for (id, peer) in &self.peers {
            let (truncated, _) = peer.raw.store().truncated();
            if peer.applied > truncated + keep_entries + slack_entries {
                let index = peer.applied - keep_entries;
                let term = raft::Storage::term(peer.raw.store(), index - 1).expect("inside the log");
                out.push((*id, index, term));
            }
        }
        out
    }

    /// The transport delivered (`true`) or lost (`false`) the snapshot this shard's replica of
    /// `region_id` sent to peer `to`: raft-rs resumes replication to it, or sends another.
    pub fn report_snapshot(&mut self, region_id: u64, to: u64, delivered: bool) {
        if let Some(peer) = self.peers.get_mut(&region_id) {
            let status = if delivered {
                raft::SnapshotStatus::Finish
            } else {
                raft::SnapshotStatus::Failure
            };
            peer.raw.report_snapshot(to, status);
        }
    }

    /// The index raft's log of `region_id` is truncated at (a snapshot's or log GC's).
    pub fn truncated(&self, region_id: u64) -> Option<u64> {
        self.peers.get(&region_id).map(|p| p.raw.store().truncated().0)
    }

    /// The log engine dropped `region_id`'s entries below `index`.
    pub fn on_compacted(&mut self, region_id: u64, index: u64) {
        if let Some(peer) = self.peers.get_mut(&region_id) {
            assert!(index <= peer.applied + 1, "never compact what is not applied");
            peer.raw.mut_store().compact(index);
        }
    }

    /// The reads below their caches raft-rs is waiting for, by region (for the driver to serve
    /// from the log engine: `on_fetched`).
    pub fn take_fetches(&mut self) -> Vec<(u64, Fetch)> {
        let mut out = Vec::new();
        for (id, peer) in &self.peers {
            out.extend(peer.raw.store().take_fetches().into_iter().map(|f| (*id, f)));
        }
        out
    }

    /// The log engine's entries for a `Fetch` of `region_id`: raft-rs sends them now.
    pub fn on_fetched(&mut self, region_id: u64, entries: Vec<Entry>, context: raft::GetEntriesContext) {
        let Some(peer) = self.peers.get_mut(&region_id) else {
            return;
        };
        peer.raw.store().set_fetched(entries);
        peer.raw.on_entries_fetched(context);
        self.rearm(region_id);
    }

    /// Bytes of raft entries in memory, summed over the shard's regions.
    pub fn entry_cache_bytes(&self) -> usize {
        self.peers.values().map(|p| p.raw.store().cache_bytes()).sum()
    }

    /// Committed but not yet applied entries, summed over the shard's regions.
    pub fn apply_lag(&self) -> u64 {
        self.peers
            .values()
            .map(|p| p.raw.raft.raft_log.committed.saturating_sub(p.applied))
            .sum()
    }

    /// Entries kept in the logs (after the truncation, up to the last), summed over regions.
    pub fn log_entries(&self) -> u64 {
        self.peers
            .values()
            .map(|p| {
                p.raw
                    .raft
                    .raft_log
                    .last_index()
                    .saturating_sub(p.raw.store().truncated().0)
            })
            .sum()
    }

    pub fn read_stats(&self) -> ReadStats {
        self.stats
    }

    pub fn take_responses(&mut self) -> Vec<Response> {
        std::mem::take(&mut self.responses)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(node: u64, shard: u32) -> RaftMessage {
        let peer = |node, shard| PeerMeta::voter(node * 10 + u64::from(shard), node, shard);
        RaftMessage {
            region_id: 1,
            from: peer(9, 0),
            to: peer(node, shard),
            msg: Message::default(),
            epoch: Epoch::default(),
            check: MemberCheck::None,
        }
    }

    // Proves messages are grouped per (node, shard), keeping their order within a destination.
    #[test]
    fn messages_batch_per_destination() {
        let batches = batch_by_destination(vec![msg(1, 0), msg(2, 0), msg(1, 1), msg(1, 0)]);
        let shape: Vec<(Destination, usize)> = batches.iter().map(|(d, b)| (*d, b.len())).collect();
        assert_eq!(shape, vec![((1, 0), 2), ((2, 0), 1), ((1, 1), 1)]);
    }
}
