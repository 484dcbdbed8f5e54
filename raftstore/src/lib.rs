//! corekv-raftstore: Multi-Raft for one shard. Owns every raft group of a shard, the apply of
//! its committed entries, and the deterministic simulator that runs whole clusters of them.
//!
//! Map (start with `raft_core`):
//! - `raft_core`: [`RaftCore`], the sans-I/O state machine of all the shard's peers: events in
//!   (`tick`, `step`, `propose`, `read`, `on_persisted`, `on_applied`), actions out (one
//!   [`ShardReady`] per loop: one log batch for every region, messages, entries to apply;
//!   [`Response`]s). No I/O, no clock.
//! - `storage`: [`PeerStorage`], raft-rs's `Storage` served from memory.
//! - `driver`: [`driver::Engines`], a shard's core and engines, and the one loop iteration
//!   (ready -> group commit -> apply) that the node runtime and the simulator both run.
//! - `apply`: the apply step into the KV engine (applied index in the same write batch),
//!   region metadata in the `meta` CF, restoring a peer from the two engines. An I/O edge.
//! - `cmd`: raw KV commands, their limits and their encoding in raft entries.
//! - `region`: region metadata, key ranges and epochs; `keys`: every key encoding of both engines.
//! - `membership`: membership changes as raft-rs sees them (joint for voters, simple for
//!   learners), the checks before proposing one, and the "am I still a replica" questions.
//! - `guard`: the checks every raft message from the network passes before raft-rs sees it.
//! - `placement`: the placement service the system region's leader runs (the TSO, ids, stores,
//!   the region directory).
//! - `sim`: a deterministic simulator of whole clusters of real cores and real engines.
//! - `linearizability`: the checker the simulator's (and later the chaos harness's) histories
//!   must pass.
//!
//! Must not: open sockets, spawn threads, or depend on `shard`/`tools`. The shard runtime and
//! the simulator drive the same `RaftCore`.
//!
//! - `snapshot`: region snapshots as files (generated, received, staged, installed; never whole
//!   in memory); `snapshot_chunks`: their stream on the wire, planned and checked (sans-I/O);
//!   the transport moves the chunks and reports the outcome (`RaftCore::report_snapshot`).
//! - `split_check`: how much data a region holds and where to split it (the shard decides when).
//!
//! Not yet (next steps of this crate): merges, proposal batching per region.

pub mod apply;
pub mod cmd;
pub mod driver;
pub mod error;
pub mod guard;
pub mod keys;
pub mod linearizability;
pub mod membership;
pub mod placement;
pub mod raft_core;
pub mod region;
pub mod sim;
pub mod snapshot;
pub mod snapshot_chunks;
pub mod split_check;
pub mod storage;

pub use cmd::{Command, Outcome};
pub use error::{Error, Result};
pub use membership::MemberCheck;
pub use raft_core::{
    batch_by_destination, Destination, RaftConfig, RaftCore, RaftMessage, ReadStats, RequestId, Response, ShardReady,
    TRANSFER_LAG_ENTRIES_MAX,
};
pub use region::{
    Epoch, EpochCheck, PeerChange, PeerMeta, PeerRole, Region, SplitAt, FIRST_USER_REGION_ID, PEER_CHANGES_MAX,
    SPLITS_MAX, SYSTEM_REGION_ID,
};
pub use storage::{Fetch, PeerStorage, RestoredLog};
