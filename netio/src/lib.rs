//! corekv-netio: the wire. Nothing here yet; this crate will own:
//!
//! - the frame: magic, protocol version, message type, request id, length, crc32c, followed
//!   by an rkyv archive that is validated once per frame (bytecheck) and then read in place;
//! - the typed error frames (`WrongShard`, `NotLeader`, `RegionNotFound`, `EpochNotMatch`,
//!   `ServerBusy`, ...) and their stable wire codes;
//! - the glommio io_uring TCP edges: one listener per shard (`port + shard`), pipelined
//!   requests with bounded queues, and the node-to-node raft transport batched per
//!   destination (node, shard).
//!
//! Must not: depend on `storage` or `raftstore` (it sits at the bottom with `storage`), or
//! panic on anything a peer sends.
