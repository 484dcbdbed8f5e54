//! corekv-raftstore: Multi-Raft. Nothing here yet; this crate will own:
//!
//! - the sans-I/O core: one raft-rs `RawNode` per region replica (Peer); events in (tick,
//!   raft message, persisted up to N, applied up to N, snapshot ingested), actions out
//!   (persist, send, apply, snapshot). Time and randomness come from the caller;
//! - the per-shard Ready loop: every region's entries and hard states in ONE
//!   `storage::raftlog` append (group commit), messages batched per destination;
//! - the apply loop: committed entries into `storage::kv` with the applied index in the same
//!   write batch; region metadata, epochs, log GC and snapshots;
//! - the deterministic simulator that runs a whole cluster in one thread from a seed.
//!
//! Must not: do I/O itself, read clocks, or depend on `shard`/`tools`.
