//! Reads once their region has caught up (`ReadReady`): what a read asks, where it runs, and
//! how much reply it may make. HOT PATH: point gets.
//!
//! Owns: the read kinds, the rule that keeps a shard's thread free (a get, and batch gets and
//! scans up to a small bound, run on it; larger ones on the blocking pool through
//! `KvEngine::offload`), and the reply bound of each read: at most `REPLY_BYTES_MAX`, and never
//! more than its connection's reply budget has room for (`Connection::reply_room`): a client
//! that asks much and reads slowly gets `ServerBusy`, not the shard's memory. Must not: decide
//! linearizability (the raft core did: a read runs only after `ReadReady`).

use corekv_netio::msg::{Reply, WireError};
use corekv_raftstore::{apply, Region};
use corekv_storage::kv::KvEngine;

/// Most rows one scan request returns (the client continues from the last key).
pub const SCAN_ROWS_MAX: u32 = 10_000;
/// Most key and value bytes one read reply carries: far below the frame limit.
pub const REPLY_BYTES_MAX: usize = 4 << 20;
/// A read whose connection has less reply room than this is answered `ServerBusy` at once.
pub const REPLY_BYTES_MIN: usize = 64 << 10;
/// Scans of at most this many rows run on the shard's thread; larger ones off it.
const ON_EXECUTOR_ROWS_MAX: u32 = 256;
/// Batch gets of at most this many keys run on the shard's thread; larger ones off it.
const ON_EXECUTOR_KEYS_MAX: usize = 64;

/// A read waiting for its region to catch up (lease or ReadIndex).
pub enum Read {
    Get(Vec<u8>),
    BatchGet(Vec<Vec<u8>>),
    Scan {
        start: Vec<u8>,
        end: Vec<u8>,
        /// The request's limit, capped at `SCAN_ROWS_MAX`...
        limit: u32,
        /// ...and as asked.
        asked: u32,
        reverse: bool,
    },
}

impl Read {
    /// (bytes, keys) a read's reply carries: the region's read traffic.
    pub fn served(reply: &Reply) -> (u64, u64) {
        let (bytes, keys) = match reply {
            Reply::Value(v) => (v.as_ref().map_or(0, Vec::len), 1),
            Reply::Values(vs) => (vs.iter().flatten().map(Vec::len).sum(), vs.len()),
            Reply::Rows { rows, .. } => (rows.iter().map(|(k, v)| k.len() + v.len()).sum(), rows.len()),
            _ => (0, 0),
        };
        (bytes as u64, keys as u64)
    }

    /// Whether it may run on the shard's thread (bounded, usually cached work).
    pub fn is_small(&self) -> bool {
        match self {
            Read::Get(_) => true,
            Read::BatchGet(keys) => keys.len() <= ON_EXECUTOR_KEYS_MAX,
            Read::Scan { limit, .. } => *limit <= ON_EXECUTOR_ROWS_MAX,
        }
    }

    /// Runs the read on `kv` (as applied) within `region`, making at most `bytes_max` bytes of
    /// reply: a scan stops there (`more`), a get or batch get over it is `ServerBusy` (its
    /// connection's budget is spent) or `TooLarge` (over `REPLY_BYTES_MAX` whatever the budget).
    pub fn run(&self, kv: &KvEngine, region: &Region, bytes_max: usize) -> Result<Reply, WireError> {
        debug_assert!(bytes_max <= REPLY_BYTES_MAX);
        match self {
            Read::Get(key) => {
                let value = apply::read(kv, region, key).map_err(crate::convert::error)?;
                fits(value.as_ref().map_or(0, Vec::len), bytes_max)?;
                Ok(Reply::Value(value))
            }
            Read::BatchGet(keys) => {
                let (mut values, mut bytes) = (Vec::with_capacity(keys.len()), 0);
                for key in keys {
                    let value = apply::read(kv, region, key).map_err(crate::convert::error)?;
                    bytes += value.as_ref().map_or(0, Vec::len);
                    fits(bytes, bytes_max)?;
                    values.push(value);
                }
                Ok(Reply::Values(values))
            }
            Read::Scan {
                start,
                end,
                limit,
                asked,
                reverse,
            } => {
                let (rows, cut) = apply::scan(kv, region, (start, end), *limit as usize, *reverse, bytes_max)
                    .map_err(crate::convert::error)?;
                let more = cut || (rows.len() as u32 == *limit && limit < asked);
                Ok(Reply::Rows { rows, more })
            }
        }
    }
}

/// `Ok` if a reply of `bytes` fits in `bytes_max`; otherwise why not.
fn fits(bytes: usize, bytes_max: usize) -> Result<(), WireError> {
    if bytes <= bytes_max {
        return Ok(());
    }
    if bytes_max < REPLY_BYTES_MAX {
        return Err(WireError::ServerBusy {
            reason: format!(
                "a reply of {bytes} bytes does not fit this connection's reply budget now ({bytes_max} bytes left); read the answers already sent"
            ),
        });
    }
    Err(WireError::TooLarge {
        reason: format!("a reply of {bytes} bytes exceeds {REPLY_BYTES_MAX} bytes; ask for fewer keys"),
    })
}
