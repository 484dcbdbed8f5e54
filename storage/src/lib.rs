//! corekv-storage: the two storage engines every shard owns.
//!
//! - [`kv`]: the KV engine, one RocksDB instance per shard with column families `default`,
//!   `lock`, `write` and `meta`; one block cache shared by every shard of a node.
//! - [`raftlog`]: the Raft log engine, one per shard: an append-only, group-committed WAL of all
//!   the shard's regions, written with O_DIRECT through io_uring (glommio `DmaFile`).
//!
//! - [`tmpfs`]: a size-limited tmpfs to fill to ENOSPC: a real full disk for tests and the
//!   chaos harness.
//!
//! Architecture invariant: this crate knows nothing of Raft messages, regions' key ranges,
//! transactions or the network. Raft entries are opaque bytes with an index and a term; region
//! ids are plain `u64`s. `raftstore` gives them meaning.
//! Must not: depend on another corekv crate: it is the bottom of the graph.
//!
//! Start reading at [`raftlog::LogEngine`] and [`kv::KvEngine`].

pub mod error;
pub mod kv;
pub mod raftlog;
pub mod tmpfs;

pub use error::{Error, Result};
