//! The placement service, run by the leader of the system region (`SYSTEM_REGION_ID`) on
//! whichever shard hosts it: today the timestamp oracle (`tso`); the id allocator, the store
//! registry and the region directory come next. Its durable state lives in the system
//! region's keys and changes only through that region's Raft log, as compare-and-swaps (a
//! deposed leader's late write fails instead of going back).
//!
//! `Placement` drives it against a shard's `RaftCore`: the node runtime and the simulator call
//! the same three entry points (`get_ts`, `on_response`, `tick`). Leadership: the service
//! loads its state with a linearizable read of the system region once per term (so it sees
//! everything its predecessors committed), and serves each batch of timestamps after a read
//! of that region too, within the leader lease or after a ReadIndex round: a deposed leader
//! that has not noticed yet never hands out a timestamp after its successor has.
//!
//! Owns: which requests wait (bounded), which of the raft core's requests are its own, and
//! the TSO's window. Must not: read a clock (time comes in as `now_ms`), or write the system
//! region but through the raft log.

pub mod history;
pub mod tso;

use std::collections::{BTreeMap, VecDeque};

use corekv_storage::kv::KvEngine;

use crate::apply;
use crate::cmd::{Command, Outcome};
use crate::error::{Error, Result};
use crate::keys::TSO_WINDOW_KEY;
use crate::raft_core::{RaftCore, RequestId, Response};
use crate::region::{PeerMeta, SYSTEM_REGION_ID};
use tso::{Tso, Wait};

/// Request ids with this bit set are the placement service's own (client ids never reach it).
const OWN_BIT: RequestId = 1 << 63;

#[derive(Debug, Clone, Copy)]
pub struct PlacementConfig {
    /// How far ahead of the clock the TSO's durable window reaches (PD: 3 s).
    pub tso_save_interval_ms: u64,
    /// Timestamp requests waiting for a load or a window save; more get `ServerBusy`.
    pub waiting_requests_max: usize,
}

impl Default for PlacementConfig {
    fn default() -> Self {
        PlacementConfig {
            tso_save_interval_ms: 3000,
            waiting_requests_max: 4096,
        }
    }
}

/// The answer to a client's request: (the first of its timestamps, how many), or why not.
pub type Answer = (RequestId, Result<(u64, u64)>);

enum Own {
    Load { term: u64 },
    Save { end: u64 },
    Serve { client: RequestId, count: u64 },
}

enum State {
    Follower,
    Loading { term: u64 },
    Leading { term: u64, tso: Tso },
}

pub struct Placement {
    cfg: PlacementConfig,
    state: State,
    /// (client request, timestamps asked) waiting for a load or a save.
    waiting: VecDeque<(RequestId, u64)>,
    own: BTreeMap<RequestId, Own>,
    next_own: RequestId,
}

impl Placement {
    pub fn new(cfg: PlacementConfig) -> Placement {
        assert!(cfg.tso_save_interval_ms >= 2 && cfg.waiting_requests_max > 0);
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
        matches!(self.state, State::Leading { .. })
    }

    /// A client asks for `count` timestamps; the answer comes now or from a later call.
    pub fn get_ts(&mut self, core: &mut RaftCore, client: RequestId, count: u64) -> Vec<Answer> {
        debug_assert!(!Self::owns(client));
        if !core.is_leader(SYSTEM_REGION_ID) {
            return vec![(client, Err(not_leader(core)))];
        }
        if count == 0 || count >= tso::LOGICAL_MAX {
            return vec![(
                client,
                Err(Error::InvalidArgument("timestamps asked at once: 1..262143")),
            )];
        }
        if self.is_leading() {
            return self.serve(core, client, count);
        }
        self.wait(client, count)
    }

    /// Watches the system region's leadership and saves the TSO window ahead of the clock.
    pub fn tick(&mut self, core: &mut RaftCore, now_ms: u64) -> Vec<Answer> {
        let term = core.term(SYSTEM_REGION_ID).filter(|_| core.is_leader(SYSTEM_REGION_ID));
        let Some(term) = term else {
            self.state = State::Follower;
            let error = not_leader(core);
            return self.waiting.drain(..).map(|(id, _)| (id, Err(error.clone()))).collect();
        };
        match &mut self.state {
            State::Leading { term: t, tso } if *t == term => {
                if let Some((old, end)) = tso.to_save(now_ms) {
                    self.save(core, old, end);
                }
            }
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
            (Some(Own::Save { end }), Ok(outcome)) => {
                let ok = matches!(outcome, Some(Outcome::Cas { succeeded: true, .. }));
                self.saved(core, end, ok)
            }
            (Some(Own::Serve { client, count }), Ok(_)) => self.take(core, client, count, now_ms),
            (Some(Own::Serve { client, .. }), Err(e)) => vec![(client, Err(e))],
            (Some(Own::Save { end }), Err(_)) => self.saved(core, end, false),
            (Some(Own::Load { .. }), Err(_)) => {
                self.state = State::Follower;
                Vec::new()
            }
            (None, _) => Vec::new(),
        }
    }

    fn wait(&mut self, client: RequestId, count: u64) -> Vec<Answer> {
        if self.waiting.len() >= self.cfg.waiting_requests_max {
            return vec![(client, Err(Error::ServerBusy("timestamp requests waiting")))];
        }
        self.waiting.push_back((client, count));
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
    /// durable window end is final for this term.
    fn loaded(&mut self, core: &mut RaftCore, kv: &KvEngine, term: u64, now_ms: u64) -> Vec<Answer> {
        if !matches!(self.state, State::Loading { term: t } if t == term) {
            return Vec::new();
        }
        let saved = core
            .region(SYSTEM_REGION_ID)
            .cloned()
            .ok_or(Error::RegionNotFound(SYSTEM_REGION_ID))
            .and_then(|r| apply::read(kv, &r, TSO_WINDOW_KEY))
            .and_then(|v| v.map_or(Ok(0), |b| decode_ms(&b)));
        let saved = match saved {
            Ok(saved) => saved,
            Err(e) => {
                tracing::warn!(error = %e, "placement: could not load the TSO window");
                self.state = State::Follower;
                return Vec::new();
            }
        };
        let mut tso = Tso::load(saved, now_ms, self.cfg.tso_save_interval_ms);
        let first_save = tso.to_save(now_ms);
        self.state = State::Leading { term, tso };
        tracing::info!(term, saved_ms = saved, "placement: leading");
        if let Some((old, end)) = first_save {
            self.save(core, old, end);
        }
        Vec::new()
    }

    fn save(&mut self, core: &mut RaftCore, old: u64, end: u64) {
        let id = self.own(Own::Save { end });
        let cmd = Command::CompareAndSwap {
            key: TSO_WINDOW_KEY.to_vec(),
            expected: (old > 0).then(|| old.to_be_bytes().to_vec()),
            new: Some(end.to_be_bytes().to_vec()),
        };
        core.propose(id, SYSTEM_REGION_ID, Self::epoch(core), cmd);
    }

    fn saved(&mut self, core: &mut RaftCore, end: u64, ok: bool) -> Vec<Answer> {
        let State::Leading { tso, .. } = &mut self.state else {
            return Vec::new();
        };
        tso.on_saved(end, ok);
        if !ok {
            // Another leader's write, or none at all: load again before serving anything.
            self.state = State::Follower;
            return Vec::new();
        }
        let waiting: Vec<_> = self.waiting.drain(..).collect();
        waiting.into_iter().flat_map(|(c, n)| self.serve(core, c, n)).collect()
    }

    fn serve(&mut self, core: &mut RaftCore, client: RequestId, count: u64) -> Vec<Answer> {
        let id = self.own(Own::Serve { client, count });
        core.read(id, SYSTEM_REGION_ID, Self::epoch(core));
        Vec::new()
    }

    /// Leadership confirmed after the request arrived: hand out the timestamps.
    fn take(&mut self, core: &mut RaftCore, client: RequestId, count: u64, now_ms: u64) -> Vec<Answer> {
        let State::Leading { tso, .. } = &mut self.state else {
            return vec![(client, Err(not_leader(core)))];
        };
        match tso.take(count, now_ms) {
            Ok(first) => vec![(client, Ok((first, count)))],
            Err(Wait::TooMany) => vec![(client, Err(Error::InvalidArgument("too many timestamps at once")))],
            Err(Wait::Window) => {
                if let Some((old, end)) = tso.to_save(now_ms) {
                    self.save(core, old, end);
                }
                self.wait(client, count)
            }
        }
    }
}

fn not_leader(core: &RaftCore) -> Error {
    Error::NotLeader {
        region_id: SYSTEM_REGION_ID,
        leader: core.leader_of(SYSTEM_REGION_ID).filter(|l: &PeerMeta| l.id != 0),
    }
}

fn decode_ms(bytes: &[u8]) -> Result<u64> {
    let b: [u8; 8] = bytes.try_into().map_err(|_| Error::Corruption {
        region_id: SYSTEM_REGION_ID,
        reason: format!("a TSO window of {} bytes", bytes.len()),
    })?;
    Ok(u64::from_be_bytes(b))
}
