//! The raftstore's one error type: what a request can be told, and whether to retry.
//!
//! Owns: the variants, their stable codes (200..=213 and 215; 214 is netio's; never reused) and `is_retryable`.
//! Must not: depend on netio: `shard::convert` says what a client is told for each variant.

/// Result alias of `corekv-raftstore`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// This replica does not lead its region; `leader` is the peer believed to (if known).
    #[error("region {region_id}: not leader (leader: {leader:?})")]
    NotLeader {
        region_id: u64,
        leader: Option<crate::region::PeerMeta>,
    },
    /// The request's region epoch is not the region's current one: the client's view is
    /// stale. `current` is the region as this replica knows it.
    #[error("region {}: epoch not match (request {request:?}, current {:?})", current.id, current.epoch)]
    EpochNotMatch {
        request: crate::region::Epoch,
        current: Box<crate::region::Region>,
    },
    /// No replica of this region lives on this shard.
    #[error("region {0} not found on this shard")]
    RegionNotFound(u64),
    /// The key lies outside the region's range.
    #[error("key {key:?} is not in region {region_id}")]
    KeyNotInRegion { region_id: u64, key: Vec<u8> },
    /// The proposal was dropped or superseded (leader change before it committed): its effect
    /// is unknown only if it was appended; the client retries with the same request.
    #[error("region {region_id}: proposal dropped ({reason}); retry")]
    ProposalDropped { region_id: u64, reason: &'static str },
    /// A key or value exceeds its limit.
    #[error("{what} of {size} bytes exceeds the maximum of {max} bytes")]
    TooLarge {
        what: &'static str,
        size: usize,
        max: usize,
    },
    /// The shard is at its bound of in-flight work.
    #[error("server busy: {0}")]
    ServerBusy(&'static str),
    /// The write may or may not have been applied (its entry was covered by a snapshot, or
    /// the node stopped before it knew): the client must not blindly retry it.
    #[error("region {region_id}: the write's outcome is unknown")]
    OutcomeUnknown { region_id: u64 },
    /// A storage engine failed; the message is the storage error.
    #[error("storage: {0}")]
    Storage(String),
    /// A storage engine found its disk full; nothing was written, retry once space is freed.
    #[error("disk full: {0}")]
    NoSpace(String),
    /// The request asks for something no server does (an empty key): never retried.
    #[error("invalid argument: {0}")]
    InvalidArgument(&'static str),
    /// Data read back for a region (a log entry, its stored state, a snapshot it received) is
    /// not what a corekv wrote: the region stops on this shard (marked unavailable, reported),
    /// the rest of the shard serves on, and its other replicas keep the region alive.
    #[error("region {region_id}: corrupt data: {reason}")]
    Corruption { region_id: u64, reason: String },
    /// This shard's replica of the region was stopped by corrupt data; ask another replica.
    #[error("region {region_id} is stopped on this shard ({reason}); its other replicas serve it")]
    RegionUnavailable { region_id: u64, reason: String },
    /// A raft message from peer `from` failed the edge checks (`guard`): forged or corrupt.
    #[error("region {region_id}: message from peer {from} refused: {reason}")]
    Refused {
        region_id: u64,
        from: u64,
        reason: &'static str,
    },
    /// The region's leader refused an admin command (a leader transfer; later membership
    /// changes, splits, merges) for the reason given: retrying as it is would be refused again.
    #[error("region {region_id}: refused: {reason}")]
    AdminRefused { region_id: u64, reason: String },
}

impl Error {
    /// Stable wire code; never reused.
    pub fn code(&self) -> u16 {
        match self {
            Error::NotLeader { .. } => 200,
            Error::EpochNotMatch { .. } => 201,
            Error::RegionNotFound(_) => 202,
            Error::KeyNotInRegion { .. } => 203,
            Error::ProposalDropped { .. } => 204,
            Error::TooLarge { .. } => 205,
            Error::ServerBusy(_) => 206,
            Error::Storage(_) => 207,
            Error::OutcomeUnknown { .. } => 208,
            Error::NoSpace(_) => 209,
            Error::InvalidArgument(_) => 210,
            Error::Refused { .. } => 211,
            Error::Corruption { .. } => 212,
            Error::RegionUnavailable { .. } => 213,
            Error::AdminRefused { .. } => 215,
        }
    }

    /// Whether the client should retry (after refreshing its routing for the first three).
    pub fn is_retryable(&self) -> bool {
        !matches!(
            self,
            Error::TooLarge { .. }
                | Error::Storage(_)
                | Error::KeyNotInRegion { .. }
                | Error::OutcomeUnknown { .. }
                | Error::InvalidArgument(_)
                | Error::Refused { .. }
                | Error::Corruption { .. }
                | Error::AdminRefused { .. }
        )
    }
}

impl From<corekv_storage::Error> for Error {
    fn from(e: corekv_storage::Error) -> Error {
        if e.is_no_space() {
            return Error::NoSpace(e.to_string());
        }
        Error::Storage(e.to_string())
    }
}
