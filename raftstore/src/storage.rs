//! `PeerStorage`: the raft-rs `Storage` of one peer, served from memory.
//!
//! Owns: the peer's view of its log (entries since the truncation point), its hard state and
//! its configuration, as raft-rs reads them — synchronously, without I/O. The durable copy is
//! the shard's Raft log engine; the shard writes there what `Ready` hands it and restores
//! this from there on restart. Log GC bounds what is kept here; a follower that needs older
//! entries gets a snapshot, which the shard generates from the KV engine when raft-rs asks
//! (`take_snapshot_request`, then `set_snapshot`).
//! Must not: touch an engine or build a snapshot (it raises `take_snapshot_request` and serves
//! what `set_snapshot` gave it), or hold a gap: entries are contiguous after the truncation point.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

pub struct PeerStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry just before `entries[0]` ((0, 0) for a new log).
    truncated: (u64, u64),
    entries: VecDeque<Entry>,
    /// raft-rs asked for a snapshot (it reads storage through `&self`).
    snapshot_wanted: Cell<bool>,
    /// The latest snapshot the shard generated for this region, served to raft-rs.
    snapshot: RefCell<Option<Snapshot>>,
}

impl PeerStorage {
    /// The storage of a new replica of a region whose voters are `voters`.
    pub fn new(voters: Vec<u64>) -> PeerStorage {
        PeerStorage::restore(HardState::default(), voters, (0, 0), Vec::new())
    }

    /// The storage of a restarted replica, from what the log engine holds.
    pub fn restore(hard_state: HardState, voters: Vec<u64>, truncated: (u64, u64), entries: Vec<Entry>) -> PeerStorage {
        let conf_state = ConfState {
            voters,
            ..Default::default()
        };
        let s = PeerStorage {
            hard_state,
            conf_state,
            truncated,
            entries: entries.into(),
            snapshot_wanted: Cell::new(false),
            snapshot: RefCell::new(None),
        };
        s.check_contiguous();
        s
    }

    fn check_contiguous(&self) {
        for (i, e) in self.entries.iter().enumerate() {
            assert_eq!(
                e.index,
                self.truncated.0 + 1 + i as u64,
                "entries are contiguous after the truncation point"
            );
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
        self.truncated.0 + self.entries.len() as u64
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
        self.entries.drain(..(index - self.truncated.0 - 1) as usize);
        self.truncated = (index - 1, term);
        self.check_contiguous();
    }

    /// Whether raft-rs asked for a snapshot since the last call (clears the request).
    pub fn take_snapshot_request(&self) -> bool {
        self.snapshot_wanted.replace(false)
    }

    /// A snapshot the shard generated: served to raft-rs from now on.
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
        self.truncated = (meta.index, meta.term);
        self.conf_state = meta.get_conf_state().clone();
        if self.hard_state.commit < meta.index {
            self.hard_state.commit = meta.index;
        }
        self.hard_state.term = self.hard_state.term.max(meta.term);
    }

    /// Appends what a `Ready` carries; entries from `ents[0].index` on replace what was there.
    pub fn append(&mut self, ents: &[Entry]) {
        let Some(first) = ents.first() else { return };
        assert!(
            first.index > self.truncated.0,
            "never append below the truncation point"
        );
        assert!(first.index <= self.last_index() + 1, "no holes in the log");
        self.entries.truncate((first.index - self.truncated.0 - 1) as usize);
        self.entries.extend(ents.iter().cloned());
        debug_assert!(self
            .entries
            .iter()
            .zip(self.entries.iter().skip(1))
            .all(|(a, b)| a.index + 1 == b.index));
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
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        assert!(high <= self.last_index() + 1, "raft asked past the last index");
        let from = (low - self.truncated.0 - 1) as usize;
        let to = (high - self.truncated.0 - 1) as usize;
        let mut out: Vec<Entry> = self.entries.range(from..to).cloned().collect();
        raft::util::limit_size(&mut out, max_size.into());
        Ok(out)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if idx < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((idx - self.truncated.0 - 1) as usize) {
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
