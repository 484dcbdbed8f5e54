//! The edge between the wire (netio's archives) and the raftstore's types: regions, peers,
//! errors, raft messages (protobuf inside an envelope), snapshot chunks, heartbeats and the
//! directory's records.
//!
//! Owns: the mapping both ways, one function per type (which `WireError` a raftstore error
//! becomes). Must not: hold state or decide anything, or panic on what a peer sent: a malformed
//! protobuf is an `Err`.

use corekv_netio::msg::{
    self as wire, ArchivedRaftEnvelope, ArchivedSnapshotChunk, ArchivedWireRegion, RaftEnvelope,
    SnapshotChunk as WireChunk, WireEpoch, WireError, WireFlow, WirePeer, WireRegion,
};
use corekv_raftstore::placement::directory::{Flow, RegionHeartbeat, RegionRecord, StoreHeartbeat, StoreRecord};
use corekv_raftstore::snapshot_chunks::SnapshotChunk;
use corekv_raftstore::{Epoch, Error, MemberCheck, PeerMeta, PeerRole, RaftMessage, Region};
use protobuf::Message as _;
use raft::eraftpb::Message;

pub fn peer(p: &PeerMeta) -> WirePeer {
    WirePeer {
        id: p.id,
        node: p.node,
        shard: p.shard,
        role: p.role.code(),
    }
}

/// A peer as a peer or client sent it (an unknown role code reads as a learner's: the role
/// that grants nothing).
fn peer_from(p: &corekv_netio::msg::ArchivedWirePeer) -> PeerMeta {
    PeerMeta {
        id: p.id.to_native(),
        node: p.node.to_native(),
        shard: p.shard.to_native(),
        role: PeerRole::from_code(p.role).unwrap_or(PeerRole::Learner),
    }
}

fn epoch(e: Epoch) -> WireEpoch {
    WireEpoch {
        conf_ver: e.conf_ver,
        version: e.version,
    }
}

fn epoch_from(e: &corekv_netio::msg::ArchivedWireEpoch) -> Epoch {
    Epoch {
        conf_ver: e.conf_ver.to_native(),
        version: e.version.to_native(),
    }
}

pub fn region(r: &Region) -> WireRegion {
    WireRegion {
        id: r.id,
        start: r.start.clone(),
        end: r.end.clone(),
        epoch: epoch(r.epoch),
        peers: r.peers.iter().map(peer).collect(),
    }
}

fn region_from(r: &ArchivedWireRegion) -> Region {
    Region {
        id: r.id.to_native(),
        start: r.start.to_vec(),
        end: r.end.to_vec(),
        epoch: epoch_from(&r.epoch),
        peers: r.peers.iter().map(peer_from).collect(),
    }
}

pub fn region_heartbeat(h: &RegionHeartbeat) -> wire::RegionHeartbeat {
    let f = &h.flow;
    wire::RegionHeartbeat {
        region: region(&h.region),
        leader: peer(&h.leader),
        term: h.term,
        approximate_bytes: h.approximate_bytes,
        approximate_keys: h.approximate_keys,
        flow: WireFlow {
            written_bytes: f.written_bytes,
            written_keys: f.written_keys,
            read_bytes: f.read_bytes,
            read_keys: f.read_keys,
            queries: f.queries,
        },
    }
}

pub fn region_heartbeat_from(h: &wire::ArchivedRegionHeartbeat) -> RegionHeartbeat {
    let f = &h.flow;
    RegionHeartbeat {
        region: region_from(&h.region),
        leader: peer_from(&h.leader),
        term: h.term.to_native(),
        approximate_bytes: h.approximate_bytes.to_native(),
        approximate_keys: h.approximate_keys.to_native(),
        flow: Flow {
            written_bytes: f.written_bytes.to_native(),
            written_keys: f.written_keys.to_native(),
            read_bytes: f.read_bytes.to_native(),
            read_keys: f.read_keys.to_native(),
            queries: f.queries.to_native(),
        },
    }
}

pub fn store_heartbeat(h: &StoreHeartbeat) -> wire::StoreHeartbeat {
    wire::StoreHeartbeat {
        store_id: h.store_id,
        client_addr: h.client_addr.clone(),
        peer_addr: h.peer_addr.clone(),
        shards: h.shards,
        capacity_bytes: h.capacity_bytes,
        available_bytes: h.available_bytes,
        used_bytes: h.used_bytes,
        regions: h.regions,
        leaders: h.leaders,
    }
}

pub fn store_heartbeat_from(h: &wire::ArchivedStoreHeartbeat) -> StoreHeartbeat {
    StoreHeartbeat {
        store_id: h.store_id.to_native(),
        client_addr: h.client_addr.to_string(),
        peer_addr: h.peer_addr.to_string(),
        shards: h.shards.to_native(),
        capacity_bytes: h.capacity_bytes.to_native(),
        available_bytes: h.available_bytes.to_native(),
        used_bytes: h.used_bytes.to_native(),
        regions: h.regions.to_native(),
        leaders: h.leaders.to_native(),
    }
}

pub fn directory_region(r: &RegionRecord, now_ms: u64) -> wire::DirectoryRegion {
    wire::DirectoryRegion {
        heartbeat: region_heartbeat(&r.heartbeat),
        age_ms: now_ms.saturating_sub(r.last_heartbeat_ms),
    }
}

pub fn directory_store(s: &StoreRecord, now_ms: u64) -> wire::DirectoryStore {
    wire::DirectoryStore {
        heartbeat: store_heartbeat(&s.heartbeat),
        age_ms: s.last_heartbeat_ms.map(|at| now_ms.saturating_sub(at)),
    }
}

/// What a client is told for a raftstore error.
pub fn error(e: Error) -> WireError {
    match e {
        Error::NotLeader { region_id, leader } => WireError::NotLeader {
            region_id,
            leader: leader.as_ref().map(peer),
        },
        Error::EpochNotMatch { current, .. } => WireError::EpochNotMatch {
            region_id: current.id,
            current: Some(region(&current)),
        },
        Error::RegionNotFound(region_id) => WireError::RegionNotFound { region_id },
        Error::KeyNotInRegion { region_id, .. } => WireError::KeyNotInRegion { region_id },
        Error::ProposalDropped { region_id, reason } => WireError::ProposalDropped {
            region_id,
            reason: reason.to_string(),
        },
        e @ Error::TooLarge { .. } => WireError::TooLarge { reason: e.to_string() },
        Error::ServerBusy(reason) => WireError::ServerBusy {
            reason: reason.to_string(),
        },
        Error::Storage(reason) => WireError::Storage { reason },
        // Nothing was written: the client backs off and retries.
        Error::NoSpace(reason) => WireError::ServerBusy { reason },
        Error::OutcomeUnknown { region_id } => WireError::OutcomeUnknown { region_id },
        Error::InvalidArgument(reason) => WireError::InvalidArgument {
            reason: reason.to_string(),
        },
        Error::RegionUnavailable { region_id, reason } => WireError::RegionUnavailable { region_id, reason },
        Error::AdminRefused { region_id, reason } => WireError::AdminRefused { region_id, reason },
        e @ Error::Corruption { .. } => WireError::Storage { reason: e.to_string() },
        // Raft traffic's, never a request's: said as it is.
        e @ Error::Refused { .. } => WireError::Malformed {
            code: e.code(),
            reason: e.to_string(),
        },
    }
}

pub fn envelope(m: &RaftMessage) -> RaftEnvelope {
    RaftEnvelope {
        region_id: m.region_id,
        from: peer(&m.from),
        to: peer(&m.to),
        message: m.msg.write_to_bytes().expect("encoding into memory cannot fail"),
        epoch: epoch(m.epoch),
        check: m.check.code(),
    }
}

/// A raft message from a peer; `Err` when its protobuf is malformed or its membership check
/// is not one this version knows.
pub fn message(e: &ArchivedRaftEnvelope) -> Result<RaftMessage, protobuf::ProtobufError> {
    let check =
        MemberCheck::from_code(e.check).ok_or(protobuf::ProtobufError::WireError(protobuf::error::WireError::Other))?;
    Ok(RaftMessage {
        region_id: e.region_id.to_native(),
        from: peer_from(&e.from),
        to: peer_from(&e.to),
        msg: Message::parse_from_bytes(e.message.as_slice())?,
        epoch: epoch_from(&e.epoch),
        check,
    })
}

pub fn chunk(c: &SnapshotChunk) -> WireChunk {
    WireChunk {
        header: envelope(&c.header),
        seq: c.seq,
        file: c.file,
        offset: c.offset,
        bytes: c.bytes.clone(),
    }
}

pub fn chunk_from(c: &ArchivedSnapshotChunk) -> Result<SnapshotChunk, protobuf::ProtobufError> {
    Ok(SnapshotChunk {
        header: message(&c.header)?,
        seq: c.seq.to_native(),
        file: c.file.to_native(),
        offset: c.offset.to_native(),
        bytes: c.bytes.as_slice().to_vec(),
    })
}
