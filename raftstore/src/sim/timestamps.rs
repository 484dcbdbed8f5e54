//! The placement service in the simulator: each node's shard 0 runs the production
//! `Placement` beside its raft core, with a wall clock of its own (simulated ticks plus a skew
//! tests set), and clients ask for timestamps as real clients do: at the system region's
//! leader, again on any refusal, until their deadline; clients of the id allocator too. Their
//! answers form `TsOp` histories (ids obey the same rules: unique, increasing in real time).
//!
//! Owns: the per-node clocks and the placement service's clients. Must not: serve timestamps itself
//! (`Placement` does), or break the simulator's determinism.

use crate::error::{Error, Result};
use crate::placement::history::TsOp;
use crate::placement::{Answer, Ask, Given, Placement, PlacementConfig};
use crate::raft_core::{RequestId, Response};
use crate::region::SYSTEM_REGION_ID;

use super::{ShardAddr, Sim};

/// Simulated milliseconds per tick (the node runtime's default `raft.tick_ms`).
pub const TICK_MS: u64 = 50;
/// Where the simulated wall clocks start (a plausible Unix time, in ms).
const CLOCK_START_MS: u64 = 1_800_000_000_000;

/// A timestamp request in progress.
pub(super) struct TsClientOp {
    op: TsOp,
    /// What it asks for (its count is `op.count`).
    ask: Ask,
    deadline: u64,
    /// The request in flight: its id and when it was sent.
    attempt: Option<(RequestId, u64)>,
    /// Always ask this node (a client with a stale idea of the leader).
    pinned: Option<u64>,
    done: bool,
}

impl Sim {
    pub(super) fn new_placement(addr: ShardAddr) -> Option<Placement> {
        (addr.1 == 0).then(|| Placement::new(PlacementConfig::default()))
    }

    /// `node`'s wall clock now, in ms.
    pub fn wall_ms(&self, node: u64) -> u64 {
        let skew = self.clock_skew_ms.get(&node).copied().unwrap_or(0);
        (CLOCK_START_MS + self.now * TICK_MS).saturating_add_signed(skew)
    }

    /// Sets `node`'s clock `skew_ms` away from simulated time (negative: behind); a smaller
    /// skew than before is a clock stepped back.
    pub fn set_clock_skew(&mut self, node: u64, skew_ms: i64) {
        self.clock_skew_ms.insert(node, skew_ms);
    }

    /// Asks for `count` timestamps at whichever node leads the system region.
    pub fn submit_get_ts(&mut self, client: u64, count: u64) {
        self.submit_ask(None, client, Ask::Timestamps(count));
    }

    /// Like `submit_get_ts`, but always asks `node`, leader or not.
    pub fn submit_get_ts_to(&mut self, node: u64, client: u64, count: u64) {
        self.submit_ask(Some(node), client, Ask::Timestamps(count));
    }

    /// Asks the id allocator for `count` ids at whichever node leads the system region.
    pub fn submit_alloc_ids(&mut self, client: u64, count: u64) {
        self.submit_ask(None, client, Ask::Ids(count));
    }

    fn submit_ask(&mut self, pinned: Option<u64>, client: u64, ask: Ask) {
        let (Ask::Timestamps(count) | Ask::Ids(count)) = ask;
        let call_ns = self.time_ns();
        let op = TsOp {
            client,
            count,
            call_ns,
            return_ns: None,
            first: None,
        };
        let deadline = self.now + self.cfg.op_ticks_max;
        (self.ts_ops).push(TsClientOp {
            op,
            ask,
            deadline,
            attempt: None,
            pinned,
            done: false,
        });
    }

    /// The timestamp requests finished so far.
    pub fn ts_history(&self) -> Vec<TsOp> {
        self.placement_history(false)
    }

    /// The id requests finished so far.
    pub fn id_history(&self) -> Vec<TsOp> {
        self.placement_history(true)
    }

    fn placement_history(&self, ids: bool) -> Vec<TsOp> {
        (self.ts_ops.iter())
            .filter(|o| o.done && matches!(o.ask, Ask::Ids(_)) == ids)
            .map(|o| o.op.clone())
            .collect()
    }

    pub(super) fn pending_ts_ops(&self) -> usize {
        self.ts_ops.iter().filter(|o| !o.done).count()
    }

    /// Every live placement service's tick, as the shard runtime's ticker does it.
    pub(super) fn tick_placements(&mut self) {
        let addrs: Vec<ShardAddr> = self.placements.keys().copied().collect();
        for addr in addrs {
            let now_ms = self.wall_ms(addr.0);
            let mut core = self.shards[&addr].core.borrow_mut();
            let answers = self.placements.get_mut(&addr).expect("listed").tick(&mut core, now_ms);
            drop(core);
            self.ts_answers(answers);
        }
    }

    /// A raft core's response to the placement service's own request.
    pub(super) fn placement_response(&mut self, addr: ShardAddr, response: Response) {
        let now_ms = self.wall_ms(addr.0);
        let (Some(placement), Some(shard)) = (self.placements.get_mut(&addr), self.shards.get(&addr)) else {
            return;
        };
        let answers = placement.on_response(&mut shard.core.borrow_mut(), &shard.kv, response, now_ms);
        self.ts_answers(answers);
    }

    pub(super) fn drive_ts_clients(&mut self) {
        for i in 0..self.ts_ops.len() {
            let op = &mut self.ts_ops[i];
            if op.done
                || op
                    .attempt
                    .is_some_and(|(_, sent)| self.now < sent + self.cfg.attempt_ticks_max)
            {
                continue;
            }
            // No answer in time: the timestamps (if any were handed out) are lost, which is
            // harmless; ask again.
            if let Some((id, _)) = op.attempt.take() {
                self.ts_by_request.remove(&id);
            }
            if self.now >= op.deadline {
                op.done = true;
                continue;
            }
            self.ts_attempt(i);
        }
    }

    fn ts_attempt(&mut self, i: usize) {
        let node = match self.ts_ops[i].pinned {
            Some(node) => Some(node),
            None => self.leader(SYSTEM_REGION_ID),
        };
        let Some(addr) = node.map(|n| (n, 0)).filter(|a| self.placements.contains_key(a)) else {
            return; // no leader known (or the node is down): try again next tick
        };
        let id = self.next_request;
        self.next_request += 1;
        self.ts_by_request.insert(id, i);
        self.ts_ops[i].attempt = Some((id, self.now));
        let ask = self.ts_ops[i].ask;
        let mut core = self.shards[&addr].core.borrow_mut();
        let answers = self.placements.get_mut(&addr).expect("checked").ask(&mut core, id, ask);
        drop(core);
        self.ts_answers(answers);
    }

    fn ts_answers(&mut self, answers: Vec<Answer>) {
        for (id, result) in answers {
            self.ts_answer(id, result);
        }
    }

    fn ts_answer(&mut self, id: RequestId, result: Result<Given>) {
        let Some(i) = self.ts_by_request.remove(&id) else {
            return;
        };
        self.ts_ops[i].attempt = None;
        match result {
            Ok(Given::Timestamps { first, count } | Given::Ids { first, count }) => {
                assert_eq!(count, self.ts_ops[i].op.count, "seed {}", self.cfg.seed);
                let now = self.time_ns();
                let op = &mut self.ts_ops[i];
                (op.op.first, op.op.return_ns, op.done) = (Some(first), Some(now), true);
            }
            // Asking for timestamps changes nothing a client sees: ask again next tick.
            Ok(Given::Stored { .. }) | Err(Error::InvalidArgument(_) | Error::Corruption { .. }) => {
                panic!(
                    "seed {}: a placement request failed for good or got another kind of answer: {result:?}",
                    self.cfg.seed
                )
            }
            Err(_) => {}
        }
    }
}
