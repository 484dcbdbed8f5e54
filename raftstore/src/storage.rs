//! `PeerStorage`: the raft-rs `Storage` of one peer, served from memory.
//!
//! Owns: the peer's view of its log (entries since the truncation point), its hard state and
//! its configuration, as raft-rs reads them — synchronously, without I/O. The durable copy is
//! the shard's Raft log engine; the shard writes there what `Ready` hands it and restores
//! this from there on restart. Log GC bounds what is kept here; a follower that needs older
//! entries gets a snapshot (not implemented yet: see lib.rs).

use std::collections::VecDeque;

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

pub struct PeerStorage {
    hard_state: HardState,
    conf_state: ConfState,
    /// Index and term of the entry just before `entries[0]` ((0, 0) for a new log).
    truncated: (u64, u64),
    entries: VecDeque<Entry>,
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

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Snapshots arrive with the region lifecycle work; until then logs are not truncated
        // below what followers need, so raft never asks.
        Err(raft::Error::Store(StorageError::SnapshotTemporarilyUnavailable))
    }
}
