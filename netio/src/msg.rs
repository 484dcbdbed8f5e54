//! What frames carry: rkyv archives, validated once per frame and read in place.
//!
//! Owns: the client request/reply set, the typed errors a shard answers with (each with a
//! stable code and the hint a client needs to re-route), and the shard-to-shard messages of
//! the raft transport. Raft messages travel as opaque protobuf bytes (`RaftEnvelope::message`):
//! netio does not know raft; the node runtime converts at the edge.
//! Must not: renumber or rename a `WireError` (codes and names are stable: clients and metrics
//! key on them).

use rkyv::{Archive, Deserialize, Serialize};

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireEpoch {
    pub conf_ver: u64,
    pub version: u64,
}

/// A replica of a region and where it lives: (node, shard).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WirePeer {
    pub id: u64,
    pub node: u64,
    pub shard: u32,
    /// 0 voter, 1 learner, 2 incoming voter, 3 demoting voter (a joint membership).
    pub role: u8,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct WireRegion {
    pub id: u64,
    pub start: Vec<u8>,
    /// Empty: unbounded.
    pub end: Vec<u8>,
    pub epoch: WireEpoch,
    pub peers: Vec<WirePeer>,
}

impl WireRegion {
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && (self.end.is_empty() || key < self.end.as_slice())
    }
}

/// A client request for one region, checked against the epoch the client saw.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub region_id: u64,
    pub epoch: WireEpoch,
    pub op: Op,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Get {
        key: Vec<u8>,
    },
    BatchGet {
        keys: Vec<Vec<u8>>,
    },
    /// Keys in `[start, end)` (empty `end`: to the region's end), at most `limit`, descending
    /// when `reverse`.
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
        reverse: bool,
    },
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    BatchPut {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    Delete {
        key: Vec<u8>,
    },
    DeleteRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
    /// Sets `key` to `new` (None: deletes) if its value is `expected` (None: absent).
    CompareAndSwap {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// The node's view of the cluster (any shard answers; `region_id` is ignored).
    ClusterInfo,
    /// The node's health and load (any shard answers; `region_id` is ignored).
    NodeStatus,
    /// `count` consecutive timestamps from the TSO (shard 0 of the placement leader's node
    /// answers; any other node's shard 0 says where it is; `region_id` is ignored).
    GetTs {
        count: u32,
    },
    /// The region directory's record of the region holding `key` (the placement leader's
    /// shard 0 answers, like `GetTs`).
    GetRegion {
        key: Vec<u8>,
    },
    GetRegionById {
        id: u64,
    },
    /// Up to `limit` directory records of regions holding keys of `[start, end)` (empty
    /// `end`: to the end of the key space), in key order.
    ScanRegions {
        start: Vec<u8>,
        end: Vec<u8>,
        limit: u32,
    },
    GetStore {
        id: u64,
    },
    GetAllStores,
    /// `count` new ids from the cluster's id allocator (never handed out twice).
    AllocIds {
        count: u32,
    },
    /// Registers a store that joins (its id from `AllocIds`); answered `Done` once recorded.
    PutStore {
        id: u64,
        client_addr: String,
        peer_addr: String,
        shards: u32,
    },
    /// Hands the region's leadership to its replica on store `to_store` (the region's leader
    /// answers `Done` once the handover has started; raft completes it within an election
    /// timeout, or abandons it).
    TransferLeader {
        to_store: u64,
    },
    /// Splits the region at `split_key` (strictly inside it): the region keeps the keys below,
    /// a new region (its ids from the placement service) takes the rest. `Done` once applied.
    Split {
        split_key: Vec<u8>,
    },
    /// One step of a membership change of the region (`corekv-ctl region add-peer` and
    /// `remove-peer` compose them). `Done` once applied.
    ChangePeer {
        change: WirePeerChange,
    },
    /// The region directory's record of the region holding the keys just below `bound`
    /// (empty: the last region), as `GetRegion` (a reverse scan's next region).
    GetRegionBelow {
        bound: Vec<u8>,
    },
}

/// One step of a membership change: adding a voter is add learner, then promote; removing
/// one is demote, then remove.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub enum WirePeerChange {
    /// A new replica on `store`'s shard `shard`, as a learner (its peer id from the placement
    /// service).
    AddLearner { store: u64, shard: u32 },
    /// A learner becomes a voter (refused while it lags).
    Promote { peer_id: u64 },
    /// A voter (not the leader) becomes a learner.
    Demote { peer_id: u64 },
    /// A learner leaves the region; its replica is destroyed.
    Remove { peer_id: u64 },
}

impl Op {
    /// Whether the request changes data (its outcome is unknown if its answer is lost).
    pub fn is_write(&self) -> bool {
        !matches!(
            self,
            Op::Get { .. }
                | Op::BatchGet { .. }
                | Op::Scan { .. }
                | Op::ClusterInfo
                | Op::NodeStatus
                | Op::GetTs { .. }
                | Op::GetRegion { .. }
                | Op::GetRegionById { .. }
                | Op::GetRegionBelow { .. }
                | Op::ScanRegions { .. }
                | Op::GetStore { .. }
                | Op::GetAllStores
                | Op::AllocIds { .. }
                | Op::TransferLeader { .. }
        )
    }
}

/// Request kinds, in `ArchivedOp::index` order: the label of per-command metrics.
pub const OP_NAMES: [&str; 22] = [
    "get",
    "batch_get",
    "scan",
    "put",
    "batch_put",
    "delete",
    "delete_range",
    "compare_and_swap",
    "cluster_info",
    "node_status",
    "get_ts",
    "get_region",
    "get_region_by_id",
    "scan_regions",
    "get_store",
    "get_all_stores",
    "alloc_ids",
    "put_store",
    "transfer_leader",
    "split",
    "change_peer",
    "get_region_below",
];

impl ArchivedOp {
    /// Position of this kind in [`OP_NAMES`].
    pub fn index(&self) -> usize {
        match self {
            ArchivedOp::Get { .. } => 0,
            ArchivedOp::BatchGet { .. } => 1,
            ArchivedOp::Scan { .. } => 2,
            ArchivedOp::Put { .. } => 3,
            ArchivedOp::BatchPut { .. } => 4,
            ArchivedOp::Delete { .. } => 5,
            ArchivedOp::DeleteRange { .. } => 6,
            ArchivedOp::CompareAndSwap { .. } => 7,
            ArchivedOp::ClusterInfo => 8,
            ArchivedOp::NodeStatus => 9,
            ArchivedOp::GetTs { .. } => 10,
            ArchivedOp::GetRegion { .. } => 11,
            ArchivedOp::GetRegionById { .. } => 12,
            ArchivedOp::ScanRegions { .. } => 13,
            ArchivedOp::GetStore { .. } => 14,
            ArchivedOp::GetAllStores => 15,
            ArchivedOp::AllocIds { .. } => 16,
            ArchivedOp::PutStore { .. } => 17,
            ArchivedOp::TransferLeader { .. } => 18,
            ArchivedOp::Split { .. } => 19,
            ArchivedOp::ChangePeer { .. } => 20,
            ArchivedOp::GetRegionBelow { .. } => 21,
        }
    }
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Value(Option<Vec<u8>>),
    Values(Vec<Option<Vec<u8>>>),
    /// `more`: the shard stopped at its own bound (rows or bytes), before the request's
    /// limit and range were exhausted; ask again from the last key.
    Rows {
        rows: Vec<(Vec<u8>, Vec<u8>)>,
        more: bool,
    },
    Done,
    Cas {
        succeeded: bool,
        previous: Option<Vec<u8>>,
    },
    Cluster(ClusterInfo),
    Status(NodeStatus),
    /// `count` consecutive timestamps from `first`.
    Timestamps {
        first: u64,
        count: u32,
    },
    Failed(WireError),
    // Added after the first release's kinds: appended, so that their tags stay.
    /// `count` consecutive ids from `first`.
    Ids {
        first: u64,
        count: u32,
    },
    /// Directory records. `complete`: every region's leader has had time to report to this
    /// placement leader, so a region missing here does not exist; otherwise it may not have
    /// reported yet (ask again, or ask the nodes).
    Regions {
        regions: Vec<DirectoryRegion>,
        complete: bool,
    },
    /// Store records; `complete` as for `Regions`.
    Stores {
        stores: Vec<DirectoryStore>,
        complete: bool,
    },
}

/// A region as its leader last reported it to the placement leader.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DirectoryRegion {
    pub heartbeat: RegionHeartbeat,
    /// Milliseconds since that report.
    pub age_ms: u64,
}

/// A store (a node) as it last reported itself to the placement leader.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct DirectoryStore {
    pub heartbeat: StoreHeartbeat,
    /// Milliseconds since that report; None: registered, but not heard from since this
    /// placement leader took over (its load fields are then zero).
    pub age_ms: Option<u64>,
}

/// Shard -> the placement leader's shard 0, on the peer port, every heartbeat interval: the
/// regions the sending shard leads, and (from a node's shard 0) the node itself.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub regions: Vec<RegionHeartbeat>,
    pub store: Option<StoreHeartbeat>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegionHeartbeat {
    pub region: WireRegion,
    pub leader: WirePeer,
    pub term: u64,
    pub approximate_bytes: u64,
    pub approximate_keys: u64,
    /// Traffic its leader served since its previous heartbeat.
    pub flow: WireFlow,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WireFlow {
    pub written_bytes: u64,
    pub written_keys: u64,
    pub read_bytes: u64,
    pub read_keys: u64,
    pub queries: u64,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct StoreHeartbeat {
    pub store_id: u64,
    /// Client and peer addresses of its shard 0.
    pub client_addr: String,
    pub peer_addr: String,
    pub shards: u32,
    pub capacity_bytes: u64,
    pub available_bytes: u64,
    pub used_bytes: u64,
    pub regions: u64,
    pub leaders: u64,
}

/// One node's health and load, summed over its shards (`corekv-ctl endpoint status`).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct NodeStatus {
    pub cluster_id: u64,
    pub node_id: u64,
    /// `<version> (<git commit>)`.
    pub version: String,
    pub shards: u32,
    pub uptime_secs: u64,
    pub regions: u64,
    pub leaders: u64,
    /// Regions whose replica here is stopped (corrupt data).
    pub stopped_regions: u64,
    /// Committed raft entries not yet applied, over all regions.
    pub apply_lag_entries: u64,
    pub kv_disk_bytes: u64,
    pub raft_log_disk_bytes: u64,
}

/// One node's view of the cluster: its members, and every region with the leader this node
/// knows of (from the replicas it hosts; `term` orders conflicting claims).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct ClusterInfo {
    /// Which cluster this node belongs to: a client never mixes answers of two clusters.
    pub cluster_id: u64,
    pub node_id: u64,
    pub shards: u32,
    /// (node id, client address of its shard 0; shard i listens on that port + i), for the
    /// nodes whose client address this node knows (its own, and every peer it has talked to).
    pub nodes: Vec<(u64, String)>,
    pub regions: Vec<RegionInfo>,
    /// Regions whose replica on this node is stopped (corrupt data), with why.
    pub stopped: Vec<(u64, String)>,
    /// The nodes holding a replica of the system region: one of them runs the placement
    /// service (clients ask any node; a node that joins sends its heartbeats to these).
    pub placement_nodes: Vec<u64>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegionInfo {
    pub region: WireRegion,
    pub leader: Option<WirePeer>,
    pub term: u64,
}

/// What a shard answers instead of a result. Codes are stable; the variants a client acts on
/// carry what it needs to re-route.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("region {region_id}: not leader (leader hint: {leader:?})")]
    NotLeader { region_id: u64, leader: Option<WirePeer> },
    #[error("region {region_id}: epoch not match (current: {current:?})")]
    EpochNotMatch {
        region_id: u64,
        current: Option<WireRegion>,
    },
    #[error("region {region_id} not found on this shard")]
    RegionNotFound { region_id: u64 },
    #[error("key is not in region {region_id}")]
    KeyNotInRegion { region_id: u64 },
    #[error("region {region_id}: proposal dropped ({reason}); not applied")]
    ProposalDropped { region_id: u64, reason: String },
    #[error("{reason}")]
    TooLarge { reason: String },
    #[error("server busy: {reason}")]
    ServerBusy { reason: String },
    #[error("storage: {reason}")]
    Storage { reason: String },
    /// Region `region_id` is served by shard `shard` of this node: reconnect to port + shard.
    #[error("region {region_id} lives on shard {shard} of this node")]
    WrongShard { region_id: u64, shard: u32 },
    /// The request itself is malformed (bad frame, failed validation, wrong kind).
    #[error("malformed request (code {code}): {reason}")]
    Malformed { code: u16, reason: String },
    #[error("node is shutting down")]
    ShuttingDown,
    /// The write may or may not have taken effect (the client reports `Undetermined`).
    #[error("region {region_id}: the write's outcome is unknown")]
    OutcomeUnknown { region_id: u64 },
    /// The request is well-formed but asks for something no server does (an empty key).
    #[error("invalid argument: {reason}")]
    InvalidArgument { reason: String },
    /// This shard's replica of the region is stopped (its data was found corrupt): the
    /// region's other replicas serve it; the client asks them.
    #[error("region {region_id} is stopped on this shard ({reason})")]
    RegionUnavailable { region_id: u64, reason: String },
    /// A peer connection's handshake was refused (another cluster, an unknown node, a shard
    /// this node does not run); the connection closes after it.
    #[error("peer refused: {reason}")]
    PeerRefused { reason: String },
    /// This node does not run the placement service: node `leader` (client address `addr`,
    /// when known) is believed to. With no `leader`, `addr` is a node that may know it.
    #[error("not the placement leader (leader hint: node {leader:?} at {addr:?})")]
    NotPlacementLeader { leader: Option<u64>, addr: Option<String> },
    /// The region's leader refused an admin command (a leader transfer) for the reason given.
    #[error("region {region_id}: refused: {reason}")]
    AdminRefused { region_id: u64, reason: String },
}

impl WireError {
    /// Stable code; the raftstore's conditions keep the raftstore's codes (200..).
    pub fn code(&self) -> u16 {
        match self {
            WireError::NotLeader { .. } => 200,
            WireError::EpochNotMatch { .. } => 201,
            WireError::RegionNotFound { .. } => 202,
            WireError::KeyNotInRegion { .. } => 203,
            WireError::ProposalDropped { .. } => 204,
            WireError::TooLarge { .. } => 205,
            WireError::ServerBusy { .. } => 206,
            WireError::Storage { .. } => 207,
            WireError::WrongShard { .. } => 320,
            WireError::Malformed { code, .. } => *code,
            WireError::ShuttingDown => 321,
            WireError::OutcomeUnknown { .. } => 208,
            WireError::InvalidArgument { .. } => 210,
            WireError::RegionUnavailable { .. } => 213,
            WireError::PeerRefused { .. } => 322,
            WireError::NotPlacementLeader { .. } => 214,
            WireError::AdminRefused { .. } => 215,
        }
    }

    /// The error's name in metrics and logs (`not_leader`, ...): stable, like its code.
    pub fn name(&self) -> &'static str {
        match self {
            WireError::NotLeader { .. } => "not_leader",
            WireError::EpochNotMatch { .. } => "epoch_not_match",
            WireError::RegionNotFound { .. } => "region_not_found",
            WireError::KeyNotInRegion { .. } => "key_not_in_region",
            WireError::ProposalDropped { .. } => "proposal_dropped",
            WireError::TooLarge { .. } => "too_large",
            WireError::ServerBusy { .. } => "server_busy",
            WireError::Storage { .. } => "storage",
            WireError::WrongShard { .. } => "wrong_shard",
            WireError::Malformed { .. } => "malformed",
            WireError::ShuttingDown => "shutting_down",
            WireError::OutcomeUnknown { .. } => "outcome_unknown",
            WireError::InvalidArgument { .. } => "invalid_argument",
            WireError::RegionUnavailable { .. } => "region_unavailable",
            WireError::PeerRefused { .. } => "peer_refused",
            WireError::NotPlacementLeader { .. } => "not_placement_leader",
            WireError::AdminRefused { .. } => "admin_refused",
        }
    }

    /// Whether the request was certainly not applied and may be sent again (after re-routing).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            WireError::TooLarge { .. }
                | WireError::Storage { .. }
                | WireError::Malformed { .. }
                | WireError::OutcomeUnknown { .. }
                | WireError::InvalidArgument { .. }
                | WireError::PeerRefused { .. }
                | WireError::AdminRefused { .. }
        )
    }
}

/// The first frame each way on a peer connection: who is talking, for which cluster. The
/// listener checks the dialer's before reading anything else and answers with its own; every
/// raft message on the connection must then come from `node_id`. Nodes learn each other's
/// client addresses from it.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct PeerHello {
    pub cluster_id: u64,
    pub node_id: u64,
    /// The dialer: the shard sending; the listener: the shard listening.
    pub shard: u32,
    /// Client address of the node's shard 0.
    pub client_addr: String,
}

/// Raft messages from one shard to one (node, shard), sent together.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftBatch {
    pub messages: Vec<RaftEnvelope>,
}

#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RaftEnvelope {
    pub region_id: u64,
    pub from: WirePeer,
    pub to: WirePeer,
    /// A raft-rs `eraftpb::Message` in its protobuf encoding.
    pub message: Vec<u8>,
    /// The sender's region epoch.
    pub epoch: WireEpoch,
    /// 0: a raft message; 1: "am I still a replica?"; 2: "you were removed" (then `message`
    /// is empty).
    pub check: u8,
}

/// One bounded piece of a snapshot stream (see raftstore's `snapshot_chunks`): `bytes` belong
/// at `offset` of file `file` of the snapshot the header's metadata describes.
#[derive(Archive, Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The `MsgSnapshot`; its data is the snapshot's metadata (files, sizes, checksums).
    pub header: RaftEnvelope,
    pub seq: u32,
    pub file: u32,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// The receiver's verdict on a snapshot stream for peer `to_peer` of `region_id`: reassembled
/// and handed to raft (`accepted`: the sender reports it delivered), or dropped (checksum,
/// size, or raft refused it: the sender reports it failed and raft sends another).
#[derive(Archive, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotAck {
    pub region_id: u64,
    pub to_peer: u64,
    pub accepted: bool,
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use rkyv::api::high::HighValidator;
    use rkyv::bytecheck::CheckBytes;
    use rkyv::rancor;

    use super::*;
    use crate::frame::{self, Body};

    /// Cases per target: 256 in `make test`; `COREKV_FUZZ_CASES` for `make fuzz`.
    fn fuzz_cases() -> u32 {
        std::env::var("COREKV_FUZZ_CASES")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(256)
    }

    /// Validates `bytes` as an archive of `T` the way a receiver does: never a panic; anything
    /// accepted deserializes, and its own encoding is accepted as the same value.
    fn decode<T>(bytes: &[u8])
    where
        T: rkyv::Archive + frame::Message + PartialEq + std::fmt::Debug,
        T::Archived: for<'a> CheckBytes<HighValidator<'a, rancor::Error>>
            + rkyv::Deserialize<T, rkyv::api::high::HighDeserializer<rancor::Error>>,
    {
        let mut body = Body::with_capacity(bytes.len());
        body.extend_from_slice(bytes);
        let Ok(archived) = frame::access::<T::Archived>(&body) else {
            return;
        };
        let value = rkyv::deserialize::<T, rancor::Error>(archived).expect("a validated archive deserializes");
        let again = rkyv::to_bytes::<rancor::Error>(&value).expect("in memory");
        let back =
            rkyv::deserialize::<T, rancor::Error>(frame::access::<T::Archived>(&again).expect("our own encoding"));
        assert_eq!(back.expect("deserializes"), value);
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: fuzz_cases(), ..ProptestConfig::default() })]

        // The wire messages' fuzz target: arbitrary bytes validated as every message a client or
        // a peer can send or receive never panic, and what is accepted round-trips.
        #[test]
        fn every_wire_message_survives_arbitrary_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            decode::<Request>(&bytes);
            decode::<Reply>(&bytes);
            decode::<WireError>(&bytes);
            decode::<PeerHello>(&bytes);
            decode::<RaftBatch>(&bytes);
            decode::<SnapshotChunk>(&bytes);
            decode::<SnapshotAck>(&bytes);
            decode::<ClusterInfo>(&bytes);
            decode::<NodeStatus>(&bytes);
            decode::<Heartbeat>(&bytes);
        }
    }
}
