//! corekv-txn: transactions. Nothing here yet; this crate will own MVCC over the `default`,
//! `lock` and `write` column families and the Percolator protocol (prewrite/commit, async
//! commit and 1PC, pessimistic locks), as a sans-I/O layer between `raftstore` and clients.
//!
//! Must not: know about sockets or executors; timestamps come from outside (the TSO).
