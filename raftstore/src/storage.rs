//! `PeerStorage`: the raft-rs `Storage` of one peer, served from memory within a byte budget.
//!
//! Owns: the peer's view of its log, its hard state and its configuration, as raft-rs reads
//! them. The durable copy is the shard's Raft log engine; the shard writes there what `Ready`
//! hands it and restores this from there on restart. In memory: the entry cache, every entry
//! not yet applied plus applied ones while the cache is within `cache_bytes_max`; of older
//! applied entries only their terms (runs). raft-rs reads those older entries only to send
//! them to a follower that is behind, which it can wait for: `entries` then answers
//! `LogTemporarilyUnavailable` and records a `Fetch`, the driver reads the log engine and
//! hands the entries back (`set_fetched`), and raft-rs asks again (`on_entries_fetched`).
//! A follower behind the compacted log gets a snapshot, which the shard generates from the KV
//! engine when raft-rs asks (`take_snapshot_request`, then `set_snapshot`).
//! Must not: do I/O or build a snapshot, evict an entry not applied (raft-rs reads those
//! synchronously), or hold a gap: entries are contiguous after the truncation point.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use crate::region::{PeerRole, Region};

/// `region`'s membership as raft-rs holds it: voters of the incoming (or only) configuration,
/// of the outgoing one while joint (left automatically), learners, and the demoted voters that
/// become learners when the joint configuration is left.
pub fn conf_state(region: &Region) -> ConfState {
    let ids = |roles: &[PeerRole]| -> Vec<u64> {
        (region.peers.iter().filter(|p| roles.contains(&p.role)))
            .map(|p| p.id)
            .collect()
    };
    let joint = region.is_joint();
    ConfState {
        voters: ids(&[PeerRole::Voter, PeerRole::IncomingVoter]),
        voters_outgoing: if joint {
            ids(&[PeerRole::Voter, PeerRole::DemotingVoter])
        } else {
            Vec::new()
        },
        learners: ids(&[PeerRole::Learner]),
        learners_next: ids(&[PeerRole::DemotingVoter]),
        auto_leave: joint,
        ..Default::default()
    }
}

/// Bytes an entry counts for in the cache: its payload and a fixed allowance for the rest.
fn cost(e: &Entry) -> usize {
    e.data.len() + e.context.len() + 32
}

/// A read raft-rs asked for below the cache, for the driver to serve from the log engine.
pub struct Fetch {
    /// Entries `[low, high)`, at most `max_bytes` of them (at least one).
    pub low: u64,
    pub high: u64,
    pub max_bytes: u64,
    /// raft-rs's context: handed back with `RawNode::on_entries_fetched`.
    pub context: GetEntriesContext,
}

/// Where the log of every region starts, at bootstrap or made by a split (TiKV's
/// `RAFT_INIT_LOG_INDEX` and term): above any index a replica without the region's state
/// has, so the region's entries never reach a replica that has not applied the split or been
/// added since; it is caught up by a snapshot instead.
pub const SPLIT_INIT_INDEX: u64 = 5;
pub const SPLIT_INIT_TERM: u64 = 5;

/// What the log engine held for a peer at restart: its hard state, truncation point, the
/// terms of the entries not loaded, and the entries loaded (the tail).
pub struct RestoredLog {
    pub hard_state: HardState,
    /// Index and term of the entry just before the log ((0, 0) for a new log).
    pub truncated: (u64, u64),
    /// Runs of (first index, term) covering the entries after `truncated` not loaded.
    pub older_terms: Vec<(u64, u64)>,
    /// The last entry not loaded (`truncated.0` if all are).
    pub last_unloaded: u64,
    /// Contiguous, from `last_unloaded + 1`.
    pub entries: Vec<Entry>,
}

pub struct PeerStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry just before the log ((0, 0) for a new log).
    truncated: (u64, u64),
    /// Entries `(truncated.0, last_evicted]` are only in the log engine; their terms are in
    /// `evicted_terms`, as runs of (first index, term).
    last_evicted: u64,
    evicted_terms: Vec<(u64, u64)>,
    /// The cache: entries from `last_evicted + 1` on, contiguous.
    entries: VecDeque<Entry>,
    cache_bytes: usize,
    cache_bytes_max: usize,
    /// Reads below the cache raft-rs is waiting for (it reads storage through `&self`).
    fetches: RefCell<Vec<Fetch>>,
    /// Entries the driver fetched, served to raft-rs when it asks again.
    fetched: RefCell<Vec<Entry>>,
    /// raft-rs asked for a snapshot.
    snapshot_wanted: Cell<bool>,
    /// The latest snapshot the shard generated for this region, served to raft-rs.
    snapshot: RefCell<Option<Snapshot>>,
    /// A region a split made, whose starting state is not in the log engine yet.
    unlogged: bool,
}

impl PeerStorage {
    /// The storage of a new replica of a region whose membership is `conf`.
    pub fn new(conf: ConfState) -> PeerStorage {
        let log = RestoredLog {
            hard_state: HardState::default(),
            truncated: (0, 0),
            older_terms: Vec::new(),
            last_unloaded: 0,
            entries: Vec::new(),
        };
        PeerStorage::restore(conf, log)
    }

    /// The storage of a replica a split made (or restarted before its first log write): an
    /// empty log truncated and committed at `SPLIT_INIT_INDEX`, which the split's apply
    /// recorded as the region's applied index. Its state goes to the log engine with the
    /// shard's next log batch (`take_unlogged`).
    pub fn split_born(conf: ConfState) -> PeerStorage {
        let log = RestoredLog {
            hard_state: Self::split_born_hard_state(),
            truncated: (SPLIT_INIT_INDEX, SPLIT_INIT_TERM),
            older_terms: Vec::new(),
            last_unloaded: SPLIT_INIT_INDEX,
            entries: Vec::new(),
        };
        PeerStorage {
            unlogged: true,
            ..PeerStorage::restore(conf, log)
        }
    }

    pub fn split_born_hard_state() -> HardState {
        HardState {
            term: SPLIT_INIT_TERM,
            commit: SPLIT_INIT_INDEX,
            ..Default::default()
        }
    }

    /// The membership raft-rs starts from (the region's as of the applied index).
    pub fn set_conf_state(&mut self, conf: ConfState) {
        self.conf_state = conf;
    }

    /// Whether this storage's starting state still has to be written to the log engine (once).
    pub fn take_unlogged(&mut self) -> bool {
        std::mem::take(&mut self.unlogged)
    }

    /// The storage of a restarted replica, from what the log engine holds. Its cache has no
    /// budget until `set_cache_bytes_max`.
    pub fn restore(conf_state: ConfState, log: RestoredLog) -> PeerStorage {
        let cache_bytes = log.entries.iter().map(cost).sum();
        let s = PeerStorage {
            hard_state: log.hard_state,
            conf_state,
            truncated: log.truncated,
            last_evicted: log.last_unloaded,
            evicted_terms: log.older_terms,
            entries: log.entries.into(),
            cache_bytes,
            cache_bytes_max: usize::MAX,
            fetches: RefCell::new(Vec::new()),
            fetched: RefCell::new(Vec::new()),
            snapshot_wanted: Cell::new(false),
            snapshot: RefCell::new(None),
            unlogged: false,
        };
        s.check();
        s
    }

    /// Invariants: the cache continues right after the evicted entries, which continue right
    /// after the truncation point, and the term runs cover exactly the evicted entries.
    fn check(&self) {
        assert!(
            self.last_evicted >= self.truncated.0,
            "nothing evicted below the truncation point"
        );
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(e.index, self.last_evicted + 1 + i as u64, "the cache is contiguous");
        }
        let covered = self.evicted_terms.first().map(|r| r.0);
        assert!(
            self.last_evicted == self.truncated.0 || covered == Some(self.truncated.0 + 1),
            "term runs cover every evicted entry"
        );
        debug_assert!(self
            .evicted_terms
            .windows(2)
            .all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
        debug_assert_eq!(self.cache_bytes, self.entries.iter().map(cost).sum::<usize>());
    }

    /// The cache's budget; applied entries past it are evicted as `applied` allows.
    pub fn set_cache_bytes_max(&mut self, bytes: usize, applied: u64) {
        self.cache_bytes_max = bytes;
        self.evict(applied);
    }

    /// Bytes the cache holds now.
    pub fn cache_bytes(&self) -> usize {
        self.cache_bytes
    }

    /// Leaves the oldest applied entries (up to `applied`) to the log engine while the cache
    /// is over its budget; entries not applied always stay.
    pub fn evict(&mut self, applied: u64) {
        while self.cache_bytes > self.cache_bytes_max {
            match self.entries.front() {
                Some(e) if e.index <= applied => {}
                _ => break,
            }
            let e = self.entries.pop_front().expect("front exists");
            self.cache_bytes -= cost(&e);
            if self.evicted_terms.last().is_none_or(|r| r.1 != e.term) {
                self.evicted_terms.push((e.index, e.term));
            }
            self.last_evicted = e.index;
        }
    }

    pub fn hard_state(&self) -> &HardState {
        &self.hard_state
    }

    pub fn set_hard_state(&mut self, hs: HardState) {
        assert!(
            hs.commit >= self.hard_state.commit || hs.term > self.hard_state.term,
            "commit never goes back"
        );
        self.hard_state = hs;
    }

    pub fn last_index(&self) -> u64 {
        self.last_evicted + self.entries.len() as u64
    }

    pub fn truncated(&self) -> (u64, u64) {
        self.truncated
    }

    /// Log GC: drops entries below `index` (they are applied and durable in the KV engine).
    pub fn compact(&mut self, index: u64) {
        assert!(index <= self.last_index() + 1, "compact past the log's end");
        if index <= self.truncated.0 + 1 {
            return;
        }
        let term = raft::Storage::term(self, index - 1).expect("inside the log");
        let cached = index
            .saturating_sub(self.last_evicted + 1)
            .min(self.entries.len() as u64);
        for e in self.entries.drain(..cached as usize) {
            self.cache_bytes -= cost(&e);
        }
        self.last_evicted = self.last_evicted.max(index - 1);
        self.truncated = (index - 1, term);
        // Runs wholly below the new start go; the first one left starts at it.
        let keep_from = self.evicted_terms.iter().rposition(|r| r.0 <= index).unwrap_or(0);
        self.evicted_terms.drain(..keep_from);
        match self.evicted_terms.first_mut() {
            Some(first) if self.last_evicted >= index => first.0 = index,
            _ => self.evicted_terms.clear(),
        }
        self.fetched.borrow_mut().retain(|e| e.index >= index);
        self.check();
    }

    /// Whether raft-rs asked for a snapshot since the last call (clears the request).
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// A snapshot the shard generated: served to raft-rs from now on.
    /// The index of the snapshot generated for this region, if one is held.
    pub fn snapshot_index(&self) -> Option<u64> {
        self.snapshot.borrow().as_ref().map(|s| s.get_metadata().index)
    }

    /// Forgets the snapshot held: it predates a membership change (a replica added since is
    /// not in it, and would refuse it).
    pub fn drop_snapshot(&mut self) {
        self.snapshot.borrow_mut().take();
    }

    pub fn set_snapshot(&mut self, snapshot: Snapshot) {
        assert!(
            snapshot.get_metadata().index >= self.truncated.0,
            "a snapshot covers the compacted log"
        );
        *self.snapshot.borrow_mut() = Some(snapshot);
    }

    /// A follower installs a leader's snapshot: its log restarts after the snapshot.
    pub fn apply_snapshot(&mut self, snapshot: &Snapshot) {
        let meta = snapshot.get_metadata();
        assert!(meta.index > self.truncated.0, "snapshots only move forward");
        self.entries.clear();
        self.cache_bytes = 0;
        self.evicted_terms.clear();
        self.fetched.borrow_mut().clear();
        self.fetches.borrow_mut().clear();
        self.truncated = (meta.index, meta.term);
        self.last_evicted = meta.index;
        self.conf_state = meta.get_conf_state().clone();
        if self.hard_state.commit < meta.index {
            self.hard_state.commit = meta.index;
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
    }

    /// Appends what a `Ready` carries; entries from `ents[0].index` on replace what was there
    /// (never an evicted entry: those are applied, and only uncommitted ones are replaced).
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(first.index > self.last_evicted, "never replace an applied entry");
        assert!(first.index <= self.last_index() + 1, "no holes in the log");
        let keep = (first.index - self.last_evicted - 1) as usize;
        for e in self.entries.drain(keep..) {
            self.cache_bytes -= cost(&e);
        }
        for e in ents {
            self.cache_bytes += cost(e);
            self.entries.push_back(e.clone());
        }
        debug_assert!(self
            .entries
            .iter()
            .zip(self.entries.iter().skip(1))
            .all(|(a, b)| a.index + 1 == b.index));
    }

    /// The reads below the cache raft-rs is waiting for (cleared).
    pub fn take_fetches(&self) -> Vec<Fetch> {
        std::mem::take(&mut *self.fetches.borrow_mut())
    }

    /// Entries the driver read from the log engine for a `Fetch`: served when raft-rs asks again.
    pub fn set_fetched(&self, entries: Vec<Entry>) {
        debug_assert!(entries.windows(2).all(|w| w[0].index + 1 == w[1].index));
        *self.fetched.borrow_mut() = entries;
    }

    /// `[low, high)` below the cache, from the fetched entries if they start at `low`.
    fn fetched_range(&self, low: u64, high: u64, max_size: Option<u64>) -> Option<Vec<Entry>> {
        let fetched = self.fetched.borrow();
        if fetched.first().map(|e| e.index) != Some(low) {
            return None;
        }
        let mut out: Vec<Entry> = fetched.iter().take_while(|e| e.index < high).cloned().collect();
        raft::util::limit_size(&mut out, max_size);
        Some(out)
    }
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
        })
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let max_size = max_size.into();
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= self.last_index() + 1, "raft asked past the last index");
        if low > self.last_evicted {
            let from = (low - self.last_evicted - 1) as usize;
            let to = (high - self.last_evicted - 1) as usize;
            let mut out: Vec<Entry> = self.entries.range(from..to).cloned().collect();
            raft::util::limit_size(&mut out, max_size);
            return Ok(out);
        }
        if let Some(out) = self.fetched_range(low, high.min(self.last_evicted + 1), max_size) {
            return Ok(out);
        }
        // Only applied entries were evicted, and raft-rs reads applied ones synchronously
        // never: only to send them to a follower, which can wait.
        assert!(
            context.can_async(),
            "a synchronous read of applied entries {low}..{high}"
        );
        let mut fetches = self.fetches.borrow_mut();
        if !fetches.iter().any(|f| f.low == low) {
            fetches.push(Fetch {
                low,
                high: high.min(self.last_evicted + 1),
                max_bytes: max_size.unwrap_or(u64::MAX),
                context,
            });
        }
        Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable))
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if idx <= self.last_evicted {
            let at = self.evicted_terms.partition_point(|r| r.0 <= idx);
            return Ok(self.evicted_terms[at - 1].1);
        }
        match self.entries.get((idx - self.last_evicted - 1) as usize) {
            Some(e) => Ok(e.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.truncated.0 + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last_index())
    }

    /// Serves the generated snapshot if it still covers what was compacted and is recent
    /// enough; otherwise asks the shard (through `take_snapshot_request`) to make one.
    fn snapshot(&self, request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        if let Some(snap) = self.snapshot.borrow().as_ref() {
            let index = snap.get_metadata().index;
            if index >= request_index && index >= self.truncated.0 {
                return Ok(snap.clone());
            }
        }
        self.snapshot_wanted.set(true);
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}

#[cfg(test)]
mod tests {
    use raft::Storage as _;

    use super::*;

    fn entry(index: u64, term: u64, bytes: usize) -> Entry {
        Entry {
            index,
            term,
            data: vec![7; bytes].into(),
            ..Default::default()
        }
    }

    fn storage(entries: Vec<Entry>) -> PeerStorage {
        PeerStorage::restore(
            ConfState {
                voters: vec![1, 2, 3],
                ..Default::default()
            },
            RestoredLog {
                hard_state: HardState::default(),
                truncated: (0, 0),
                older_terms: Vec::new(),
                last_unloaded: 0,
                entries,
            },
        )
    }

    // Proves the cache stays within its budget by evicting applied entries only, keeps their
    // terms, and serves an evicted range only asynchronously: first a fetch, then the fetched
    // entries.
    #[test]
    fn eviction_keeps_terms_and_fetches_what_left() {
        let entries = (1..=10).map(|i| entry(i, 1 + i / 4, 1000)).collect();
        let mut s = storage(entries);
        s.set_cache_bytes_max(3 * cost(&entry(0, 0, 1000)), 6);
        assert_eq!(
            (s.last_evicted, s.entries.len()),
            (6, 4),
            "applied 1..=6 out, 7..=10 stay"
        );
        assert!(
            (1..=10).all(|i| s.term(i).unwrap() == 1 + i / 4),
            "terms of evicted entries kept"
        );
        let ctx = || GetEntriesContext::empty(true);
        assert!(matches!(
            s.entries(2, 8, None, ctx()),
            Err(raft::Error::Store(StorageError::LogTemporarilyUnavailable))
        ));
        let fetch = s.take_fetches();
        assert_eq!((fetch.len(), fetch[0].low, fetch[0].high), (1, 2, 7));
        s.set_fetched((2..7).map(|i| entry(i, 1 + i / 4, 1000)).collect());
        let got: Vec<u64> = s.entries(2, 8, None, ctx()).unwrap().iter().map(|e| e.index).collect();
        assert_eq!(got, vec![2, 3, 4, 5, 6]);
        assert_eq!(
            s.entries(7, 9, None, ctx()).unwrap().len(),
            2,
            "the cache, synchronously"
        );
        s.evict(10);
        assert!(s.cache_bytes() <= 3 * cost(&entry(0, 0, 1000)));
    }

    // Proves log GC through evicted entries keeps terms right from the new start, and an
    // append after eviction replaces only cached entries.
    #[test]
    fn compaction_and_append_after_eviction() {
        let entries = (1..=8).map(|i| entry(i, if i < 5 { 1 } else { 2 }, 100)).collect();
        let mut s = storage(entries);
        s.set_cache_bytes_max(0, 6);
        assert_eq!(s.last_evicted, 6);
        s.compact(4);
        assert_eq!(s.truncated(), (3, 1));
        assert_eq!((s.term(4).unwrap(), s.term(5).unwrap(), s.term(7).unwrap()), (1, 2, 2));
        s.append(&[entry(8, 3, 100), entry(9, 3, 100)]);
        assert_eq!((s.last_index(), s.term(8).unwrap()), (9, 3));
        s.compact(8);
        assert_eq!((s.truncated(), s.last_evicted, s.evicted_terms.len()), ((7, 2), 7, 0));
    }
}
