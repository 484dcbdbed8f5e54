//! The placement service, run by the leader of the system region (`SYSTEM_REGION_ID`) on
//! whichever shard hosts it: the timestamp oracle (`tso`) and the id allocator (`ids`), each
//! below a durable end (`window`), and the region directory with the stores' live state
//! (`directory`, soft state rebuilt from heartbeats after a leader change). Its durable state
//! lives in the system region's keys and changes only through that region's
//! Raft log, as compare-and-swaps (a deposed leader's late write fails instead of going back).
//!
//! `Placement` drives it against a shard's `RaftCore`: the node runtime and the simulator call
//! the same three entry points (`ask`, `on_response`, `tick`). Leadership: the service loads
//! its state with a linearizable read of the system region once per term (so it sees
//! everything its predecessors committed), and serves each batch after a read of that region
//! too, within the leader lease or after a ReadIndex round: a deposed leader that has not
//! noticed yet never hands out a timestamp after its successor has.
//!
//! Owns: which requests wait (bounded), which of the raft core's requests are its own, the
//! TSO, the id allocator and the directory. Must not: read a clock (time comes in as `now_ms`), or write the
//! system region but through the raft log.

pub mod directory;
pub mod history;
pub mod ids;
pub mod report;
pub mod stores;
pub mod tso;
pub mod window;

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use corekv_storage::kv::KvEngine;

use crate::apply;
use crate::cmd::{Command, Outcome};
use crate::error::{Error, Result};
use crate::keys::{self, IDS_END_KEY, TSO_WINDOW_KEY};
use crate::raft_core::{RaftCore, RequestId, Response};
use crate::region::{PeerMeta, SYSTEM_REGION_ID};
use directory::{Directory, RegionHeartbeat, Stale, StoreHeartbeat};
use ids::Ids;
use stores::StoreMeta;
use tso::Tso;
use window::Wait;

/// Request ids with this bit set are the placement service's own (client ids never reach it).
const OWN_BIT: RequestId = 1 << 63;

#[derive(Debug, Clone, Copy)]
pub struct PlacementConfig {
    /// How far ahead of the clock the TSO's durable window reaches (PD: 3 s).
    pub tso_save_interval_ms: u64,
    /// Requests waiting for a load or a save; more get `ServerBusy`.
    pub waiting_requests_max: usize,
    /// How often region leaders and nodes heartbeat the placement leader. A new leader's
    /// directory counts as complete two intervals after it took over.
    pub heartbeat_interval_ms: u64,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            tso_save_interval_ms: 3000,
            waiting_requests_max: 4096,
            heartbeat_interval_ms: 2000,
        }
    }
}

/// What a client asks for, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ask {
    Timestamps(u64),
    Ids(u64),
}

/// The answer to a client's request: (the first of its timestamps or ids, how many), or why not.
pub type Answer = (RequestId, Result<Given>);

/// What the service gave a client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Given {
    /// `count` consecutive timestamps from `first`.
    Timestamps { first: u64, count: u64 },
    /// `count` consecutive ids from `first`.
    Ids { first: u64, count: u64 },
    /// Store `id` is registered.
    Stored { id: u64 },
}

/// Which durable end a save is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Which {
    Tso,
    Ids,
}

impl Which {
    fn key(self) -> &'static [u8] {
        match self {
            Which::Tso => TSO_WINDOW_KEY,
            Which::Ids => IDS_END_KEY,
        }
    }
}

enum Own {
    Load {
        term: u64,
    },
    Save {
        which: Which,
        end: u64,
    },
    Serve {
        client: RequestId,
        ask: Ask,
    },
    /// A store record's write, for a client's `put_store` or for a heartbeat (`None`).
    SaveStore {
        meta: StoreMeta,
        client: Option<RequestId>,
    },
}

enum State {
    Follower,
    Loading { term: u64 },
    Leading(Box<Leading>),
}

/// What the service holds while it leads (the state of one term).
struct Leading {
    term: u64,
    tso: Tso,
    ids: Ids,
    directory: Directory,
    /// When the first heartbeat came after this replica took over (the directory's clock,
    /// monotonic): the directory counts as complete two heartbeat intervals later.
    since_ms: Option<u64>,
    /// The durable store registry, and the stores whose record is being written.
    stores: BTreeMap<u64, StoreMeta>,
    saving_stores: BTreeSet<u64>,
}

/// Why a heartbeat was not taken.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("this replica does not run the placement service")]
    NotLeading,
    #[error(transparent)]
    Stale(#[from] Stale),
}

pub struct Placement {
    cfg: PlacementConfig,
    state: State,
    /// Client requests waiting for a load or a save.
    waiting: VecDeque<(RequestId, Ask)>,
    own: BTreeMap<RequestId, Own>,
    next_own: RequestId,
}

impl Placement {
    pub fn new(cfg: PlacementConfig) -> Placement {
        assert!(cfg.tso_save_interval_ms >= 2 && cfg.waiting_requests_max > 0 && cfg.heartbeat_interval_ms > 0);
        Placement {
            cfg,
            state: State::Follower,
            waiting: VecDeque::new(),
            own: BTreeMap::new(),
            next_own: OWN_BIT,
        }
    }

    /// Whether a raft core's response belongs to the service (hand it to `on_response`).
    pub fn owns(id: RequestId) -> bool {
        id & OWN_BIT != 0
    }

    /// Whether this replica serves the placement service now.
    pub fn is_leading(&self) -> bool {
        matches!(self.state, State::Leading(_))
    }

    /// The directory while this replica leads, and whether it is complete (every region's
    /// leader has had time to report since this replica took over): a miss in an incomplete
    /// directory means "not yet known", in a complete one "no such region".
    pub fn directory(&self, now_ms: u64) -> Option<(&Directory, bool)> {
        let State::Leading(l) = &self.state else {
            return None;
        };
        let complete = l
            .since_ms
            .is_some_and(|s| now_ms.saturating_sub(s) >= 2 * self.cfg.heartbeat_interval_ms);
        Some((&l.directory, complete))
    }

    pub fn region_heartbeat(&mut self, heartbeat: RegionHeartbeat, now_ms: u64) -> Result<(), Refused> {
        let State::Leading(l) = &mut self.state else {
            return Err(Refused::NotLeading);
        };
        l.since_ms.get_or_insert(now_ms);
        Ok(l.directory.region_heartbeat(heartbeat, now_ms)?)
    }

    /// Takes a store's heartbeat; a store reporting for the first time, or from a new
    /// address, gets its record written to the system region.
    pub fn store_heartbeat(
        &mut self,
        core: &mut RaftCore,
        heartbeat: StoreHeartbeat,
        now_ms: u64,
    ) -> Result<(), Refused> {
        let State::Leading(l) = &mut self.state else {
            return Err(Refused::NotLeading);
        };
        l.since_ms.get_or_insert(now_ms);
        let meta = StoreMeta {
            id: heartbeat.store_id,
            client_addr: heartbeat.client_addr.clone(),
            peer_addr: heartbeat.peer_addr.clone(),
            shards: heartbeat.shards,
        };
        l.directory.store_heartbeat(heartbeat, now_ms);
        if l.stores.get(&meta.id) != Some(&meta) {
            self.save_store(core, meta, None);
        }
        Ok(())
    }

    /// Registers a store that joins (PD's PutStore): its id must have been handed out by the
    /// allocator, its addresses (`IP:port`) no other store's, and a registered store keeps
    /// its addresses (they change only through its own heartbeats, on the peer port). The
    /// caller checked that the request came from the peer address's IP. Answered `(id, 1)`
    /// once the record is committed.
    pub fn put_store(&mut self, core: &mut RaftCore, client: RequestId, meta: StoreMeta) -> Vec<Answer> {
        let State::Leading(l) = &mut self.state else {
            return vec![(client, Err(not_leader(core)))];
        };
        let known = l.stores.get(&meta.id);
        let refused = if !meta.has_ip_addresses() {
            Some("a joining store gives its client and peer addresses as IP:port")
        } else if known.is_some_and(|k| k != &meta) {
            Some("this store is registered with other addresses")
        } else if known.is_none() && !l.ids.issued(meta.id) {
            Some("a joining store's id comes from the id allocator")
        } else if known.is_none() && l.stores.len() + l.saving_stores.len() >= stores::STORES_MAX {
            Some("the cluster has the most stores it takes")
        } else if l.stores.values().any(|s| s.id != meta.id && s.shares_an_address(&meta)) {
            Some("another store has this client or peer address")
        } else {
            None
        };
        match refused {
            Some(why) => vec![(client, Err(Error::InvalidArgument(why)))],
            None if known == Some(&meta) => vec![(client, Ok(Given::Stored { id: meta.id }))],
            None if !self.save_store(core, meta, Some(client)) => {
                vec![(client, Err(Error::ServerBusy("this store's record is being written")))]
            }
            None => Vec::new(),
        }
    }

    /// Proposes `meta` as its store's record (compare-and-swap over the record this leader
    /// knows); false when a write of that store's record is in flight already.
    fn save_store(&mut self, core: &mut RaftCore, meta: StoreMeta, client: Option<RequestId>) -> bool {
        let State::Leading(l) = &mut self.state else {
            return false;
        };
        if !l.saving_stores.insert(meta.id) {
            return false;
        }
        let cmd = Command::CompareAndSwap {
            key: keys::store_key(meta.id),
            expected: l.stores.get(&meta.id).map(StoreMeta::encode),
            new: Some(meta.encode()),
        };
        let id = self.own(Own::SaveStore { meta, client });
        core.propose(id, SYSTEM_REGION_ID, Self::epoch(core), cmd);
        true
    }

    /// A client asks for timestamps or ids; the answer comes now or from a later call.
    pub fn ask(&mut self, core: &mut RaftCore, client: RequestId, ask: Ask) -> Vec<Answer> {
        debug_assert!(!Self::owns(client));
        if !core.is_leader(SYSTEM_REGION_ID) {
            return vec![(client, Err(not_leader(core)))];
        }
        let refused = match ask {
            Ask::Timestamps(n) => (n == 0 || n >= tso::LOGICAL_MAX).then_some("timestamps asked at once: 1..262143"),
            Ask::Ids(n) => (n == 0 || n > ids::ID_BATCH / 2).then_some("ids asked at once: 1..500"),
        };
        if let Some(why) = refused {
            return vec![(client, Err(Error::InvalidArgument(why)))];
        }
        if self.is_leading() {
            return self.serve(core, client, ask);
        }
        self.wait(client, ask)
    }

    /// Watches the system region's leadership and saves the durable ends ahead of use.
    pub fn tick(&mut self, core: &mut RaftCore, now_ms: u64) -> Vec<Answer> {
        let term = core.term(SYSTEM_REGION_ID).filter(|_| core.is_leader(SYSTEM_REGION_ID));
        let Some(term) = term else {
            self.state = State::Follower;
            let error = not_leader(core);
            return self.waiting.drain(..).map(|(id, _)| (id, Err(error.clone()))).collect();
        };
        match &self.state {
            State::Leading(l) if l.term == term => self.save_ahead(core, now_ms),
            State::Loading { term: t } if *t == term => {}
            _ => self.load(core, term),
        }
        Vec::new()
    }

    /// A response of the raft core to one of the service's own requests.
    pub fn on_response(&mut self, core: &mut RaftCore, kv: &KvEngine, response: Response, now_ms: u64) -> Vec<Answer> {
        let (id, result) = match response {
            Response::Written { id, outcome } => (id, Ok(Some(outcome))),
            Response::ReadReady { id, .. } => (id, Ok(None)),
            Response::Failed { id, error } => (id, Err(error)),
        };
        match (self.own.remove(&id), result) {
            (Some(Own::Load { term }), Ok(_)) => self.loaded(core, kv, term, now_ms),
            (Some(Own::Save { which, end }), Ok(outcome)) => {
                let ok = matches!(outcome, Some(Outcome::Cas { succeeded: true, .. }));
                self.saved(core, which, end, ok)
            }
            (Some(Own::Serve { client, ask }), Ok(_)) => self.take(core, client, ask, now_ms),
            (Some(Own::SaveStore { meta, client }), result) => {
                let ok = matches!(result, Ok(Some(Outcome::Cas { succeeded: true, .. })));
                let id = meta.id;
                self.store_saved(meta, ok, result.is_ok());
                let answer = match result {
                    Ok(_) if ok => Ok(Given::Stored { id }),
                    Ok(_) => Err(Error::ServerBusy("the placement leader changed; ask again")),
                    Err(e) => Err(e),
                };
                client.map(|c| (c, answer)).into_iter().collect()
            }
            (Some(Own::Serve { client, .. }), Err(e)) => vec![(client, Err(e))],
            (Some(Own::Save { which, end }), Err(_)) => self.saved(core, which, end, false),
            (Some(Own::Load { .. }), Err(_)) => {
                self.state = State::Follower;
                Vec::new()
            }
            (None, _) => Vec::new(),
        }
    }

    fn wait(&mut self, client: RequestId, ask: Ask) -> Vec<Answer> {
        if self.waiting.len() >= self.cfg.waiting_requests_max {
            return vec![(client, Err(Error::ServerBusy("placement requests waiting")))];
        }
        self.waiting.push_back((client, ask));
        Vec::new()
    }

    fn own(&mut self, what: Own) -> RequestId {
        let id = self.next_own;
        self.next_own += 1;
        self.own.insert(id, what);
        id
    }

    fn epoch(core: &RaftCore) -> crate::region::Epoch {
        core.region(SYSTEM_REGION_ID).map(|r| r.epoch).unwrap_or_default()
    }

    fn load(&mut self, core: &mut RaftCore, term: u64) {
        self.state = State::Loading { term };
        let id = self.own(Own::Load { term });
        core.read(id, SYSTEM_REGION_ID, Self::epoch(core));
    }

    /// The system region has applied everything committed before this term's read: its
    /// durable ends are final for this term.
    fn loaded(&mut self, core: &mut RaftCore, kv: &KvEngine, term: u64, now_ms: u64) -> Vec<Answer> {
        if !matches!(self.state, State::Loading { term: t } if t == term) {
            return Vec::new();
        }
        let loaded = load_end(core, kv, Which::Tso).and_then(|tso| {
            let system = core
                .region(SYSTEM_REGION_ID)
                .ok_or(Error::RegionNotFound(SYSTEM_REGION_ID))?;
            Ok((tso, load_end(core, kv, Which::Ids)?, stores::load(kv, system)?))
        });
        let (tso_end, ids_end, registered) = match loaded {
            Ok(ends) => ends,
            Err(e) => {
                tracing::warn!(error = %e, "placement: could not load its state");
                self.state = State::Follower;
                return Vec::new();
            }
        };
        let mut directory = Directory::default();
        for meta in &registered {
            directory.registered_store(meta);
        }
        tracing::info!(
            term,
            tso_saved_ms = tso_end,
            ids_saved = ids_end,
            stores = registered.len(),
            "placement: leading"
        );
        self.state = State::Leading(Box::new(Leading {
            term,
            tso: Tso::load(tso_end, now_ms, self.cfg.tso_save_interval_ms),
            ids: Ids::load(ids_end),
            directory,
            since_ms: None,
            stores: registered.into_iter().map(|m| (m.id, m)).collect(),
            saving_stores: BTreeSet::new(),
        }));
        self.save_ahead(core, now_ms);
        Vec::new()
    }

    /// Saves each durable end that runs low.
    fn save_ahead(&mut self, core: &mut RaftCore, now_ms: u64) {
        let State::Leading(l) = &mut self.state else {
            return;
        };
        let saves = [(Which::Tso, l.tso.to_save(now_ms)), (Which::Ids, l.ids.to_save())];
        for (which, save) in saves {
            if let Some((old, end)) = save {
                self.save(core, which, old, end);
            }
        }
    }

    fn save(&mut self, core: &mut RaftCore, which: Which, old: u64, end: u64) {
        let id = self.own(Own::Save { which, end });
        let cmd = Command::CompareAndSwap {
            key: which.key().to_vec(),
            expected: (old > 0).then(|| old.to_be_bytes().to_vec()),
            new: Some(end.to_be_bytes().to_vec()),
        };
        core.propose(id, SYSTEM_REGION_ID, Self::epoch(core), cmd);
    }

    fn saved(&mut self, core: &mut RaftCore, which: Which, end: u64, ok: bool) -> Vec<Answer> {
        let State::Leading(l) = &mut self.state else {
            return Vec::new();
        };
        match which {
            Which::Tso => l.tso.on_saved(end, ok),
            Which::Ids => l.ids.on_saved(end, ok),
        }
        if !ok {
            // Another leader's write, or none at all: load again before serving anything.
            self.state = State::Follower;
            return Vec::new();
        }
        let waiting: Vec<_> = self.waiting.drain(..).collect();
        waiting
            .into_iter()
            .flat_map(|(c, ask)| self.serve(core, c, ask))
            .collect()
    }

    /// A store record's write finished: `ok`, it is the registry's; refused by the
    /// compare-and-swap (`applied` but not `ok`), another leader wrote since this one loaded:
    /// load again; failed, the next heartbeat tries again.
    fn store_saved(&mut self, meta: StoreMeta, ok: bool, applied: bool) {
        let State::Leading(l) = &mut self.state else {
            return;
        };
        l.saving_stores.remove(&meta.id);
        if ok {
            if l.directory.store(meta.id).is_none() {
                l.directory.registered_store(&meta); // listed before its first heartbeat
            }
            l.stores.insert(meta.id, meta);
        } else if applied {
            self.state = State::Follower;
        }
    }

    fn serve(&mut self, core: &mut RaftCore, client: RequestId, ask: Ask) -> Vec<Answer> {
        let id = self.own(Own::Serve { client, ask });
        core.read(id, SYSTEM_REGION_ID, Self::epoch(core));
        Vec::new()
    }

    /// Leadership confirmed after the request arrived: hand out what it asked for.
    fn take(&mut self, core: &mut RaftCore, client: RequestId, ask: Ask, now_ms: u64) -> Vec<Answer> {
        let State::Leading(l) = &mut self.state else {
            return vec![(client, Err(not_leader(core)))];
        };
        let (taken, count) = match ask {
            Ask::Timestamps(n) => (l.tso.take(n, now_ms), n),
            Ask::Ids(n) => (l.ids.take(n), n),
        };
        match taken {
            Ok(first) => {
                let given = match ask {
                    Ask::Timestamps(_) => Given::Timestamps { first, count },
                    Ask::Ids(_) => Given::Ids { first, count },
                };
                vec![(client, Ok(given))]
            }
            Err(Wait::TooMany) => vec![(client, Err(Error::InvalidArgument("too many asked at once")))],
            Err(Wait::Window) => {
                self.save_ahead(core, now_ms);
                self.wait(client, ask)
            }
        }
    }
}

/// The durable end of `which` as the system region holds it (0: never saved).
fn load_end(core: &RaftCore, kv: &KvEngine, which: Which) -> Result<u64> {
    let region = core
        .region(SYSTEM_REGION_ID)
        .ok_or(Error::RegionNotFound(SYSTEM_REGION_ID))?;
    apply::read(kv, region, which.key())?.map_or(Ok(0), |b| decode_end(&b))
}

fn not_leader(core: &RaftCore) -> Error {
    Error::NotLeader {
        region_id: SYSTEM_REGION_ID,
        leader: core.leader_of(SYSTEM_REGION_ID).filter(|l: &PeerMeta| l.id != 0),
    }
}

fn decode_end(bytes: &[u8]) -> Result<u64> {
    let b: [u8; 8] = bytes.try_into().map_err(|_| Error::Corruption {
        region_id: SYSTEM_REGION_ID,
        reason: format!("a durable end of {} bytes", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(b))
}
