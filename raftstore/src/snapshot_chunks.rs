//! Snapshot transfer in bounded chunks: splitting a `MsgSnapshot` on the sender and
//! reassembling it, checked, on the receiver.
//!
//! Owns: the chunk format and the reassembly rules. The transport (the simulator's network
//! today, netio's raft transport next) moves the chunks and tells the sender's `RaftCore`
//! whether the stream got through (`report_snapshot`), so raft-rs retries a lost snapshot.
//! Must not: do I/O.
//!
//! Rules: chunks of one snapshot share its header (the raft message without the data), its
//! total size and its crc32c; they may arrive in any order and more than once, but a stream
//! starts with chunk 0: a later chunk of a stream not started (refused, or broken) is dropped
//! without a word (its sender was told once, when the stream was refused). A chunk of a newer
//! snapshot (higher index) from the same peer replaces an unfinished older one; a chunk of an
//! older one is ignored. At most `streams_max` streams are reassembled at once. The
//! reassembled data must match the size and checksum, or the whole snapshot is dropped (raft-rs
//! sends another after the failure report).

use std::collections::BTreeMap;

use crate::raft_core::RaftMessage;

/// Bytes of snapshot data in one chunk.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = 1 << 20;
/// A reassembled snapshot larger than this is refused (bounded memory per sender).
pub const SNAPSHOT_BYTES_MAX: u64 = 4 << 30;

/// One piece of a snapshot on the wire.
#[derive(Debug, Clone)]
pub struct SnapshotChunk {
    /// The `MsgSnapshot` with its data taken out.
    pub header: RaftMessage,
    pub seq: u32,
    pub count: u32,
    pub total_bytes: u64,
    pub crc32c: u32,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("snapshot chunk {seq} of {count} is inconsistent with its stream")]
    Inconsistent { seq: u32, count: u32 },
    #[error("snapshot of {bytes} bytes exceeds the maximum of {max}")]
    TooLarge { bytes: u64, max: u64 },
    #[error("reassembled snapshot fails its checksum")]
    Checksum,
    #[error("{max} snapshot streams are being received already")]
    TooManyStreams { max: usize },
}

fn snapshot_index(msg: &RaftMessage) -> u64 {
    msg.msg.get_snapshot().get_metadata().index
}

/// Splits a `MsgSnapshot` into chunks of at most `chunk_bytes` of data (at least one chunk).
pub fn split(mut msg: RaftMessage, chunk_bytes: usize) -> Vec<SnapshotChunk> {
    assert!(chunk_bytes > 0);
    let data = std::mem::take(&mut msg.msg.mut_snapshot().data).to_vec();
    let crc32c = crc32c::crc32c(&data);
    let count = data.len().div_ceil(chunk_bytes).max(1);
    let count = u32::try_from(count).expect("fewer than 4G chunks");
    let total_bytes = data.len() as u64;
    let pieces: Vec<Vec<u8>> = if data.is_empty() {
        vec![Vec::new()]
    } else {
        data.chunks(chunk_bytes).map(<[u8]>::to_vec).collect()
    };
    pieces
        .into_iter()
        .enumerate()
        .map(|(seq, bytes)| SnapshotChunk {
            header: msg.clone(),
            seq: seq as u32,
            count,
            total_bytes,
            crc32c,
            bytes,
        })
        .collect()
}

struct Partial {
    header: RaftMessage,
    count: u32,
    total_bytes: u64,
    crc32c: u32,
    pieces: BTreeMap<u32, Vec<u8>>,
    received_bytes: u64,
}

/// Reassembles snapshots per (region, sending peer), at most `streams_max` at once.
pub struct Reassembler {
    partial: BTreeMap<(u64, u64), Partial>,
    streams_max: usize,
}

impl Reassembler {
    pub fn new(streams_max: usize) -> Reassembler {
        assert!(streams_max > 0);
        Reassembler {
            partial: BTreeMap::new(),
            streams_max,
        }
    }

    /// Streams being reassembled now.
    pub fn streams(&self) -> usize {
        self.partial.len()
    }

    /// Takes one chunk; returns the complete `MsgSnapshot` once its last missing chunk arrived.
    /// `Err` is the stream's one verdict of failure (its later chunks are dropped silently).
    pub fn push(&mut self, chunk: SnapshotChunk) -> Result<Option<RaftMessage>, ChunkError> {
        if chunk.seq >= chunk.count {
            return Err(ChunkError::Inconsistent {
                seq: chunk.seq,
                count: chunk.count,
            });
        }
        if chunk.total_bytes > SNAPSHOT_BYTES_MAX {
            return Err(ChunkError::TooLarge {
                bytes: chunk.total_bytes,
                max: SNAPSHOT_BYTES_MAX,
            });
        }
        let key = (chunk.header.region_id, chunk.header.from.id);
        let index = snapshot_index(&chunk.header);
        let stale = self.partial.get(&key).map(|p| snapshot_index(&p.header));
        match stale {
            Some(current) if index < current => return Ok(None), // an older snapshot's chunk
            Some(current) if index == current => {}
            // The middle of a stream that never started here (refused or broken): dropped.
            _ if chunk.seq != 0 => return Ok(None),
            None if self.partial.len() >= self.streams_max => {
                return Err(ChunkError::TooManyStreams { max: self.streams_max })
            }
            _ => {
                let fresh = Partial {
                    header: chunk.header.clone(),
                    count: chunk.count,
                    total_bytes: chunk.total_bytes,
                    crc32c: chunk.crc32c,
                    pieces: BTreeMap::new(),
                    received_bytes: 0,
                };
                self.partial.insert(key, fresh);
            }
        }
        let p = self.partial.get_mut(&key).expect("inserted above");
        if (p.count, p.total_bytes, p.crc32c) != (chunk.count, chunk.total_bytes, chunk.crc32c) {
            self.partial.remove(&key);
            return Err(ChunkError::Inconsistent {
                seq: chunk.seq,
                count: chunk.count,
            });
        }
        // Memory held for a stream never exceeds the size it announced.
        let replaced = p.pieces.get(&chunk.seq).map_or(0, |b| b.len() as u64);
        let received = p.received_bytes - replaced + chunk.bytes.len() as u64;
        if received > p.total_bytes {
            self.partial.remove(&key);
            return Err(ChunkError::Inconsistent {
                seq: chunk.seq,
                count: chunk.count,
            });
        }
        p.received_bytes = received;
        p.pieces.insert(chunk.seq, chunk.bytes);
        if p.pieces.len() < p.count as usize {
            return Ok(None);
        }
        let p = self.partial.remove(&key).expect("present");
        let data: Vec<u8> = p.pieces.into_values().flatten().collect();
        if data.len() as u64 != p.total_bytes || crc32c::crc32c(&data) != p.crc32c {
            return Err(ChunkError::Checksum);
        }
        let mut msg = p.header;
        msg.msg.mut_snapshot().data = data.into();
        Ok(Some(msg))
    }
}

#[cfg(test)]
mod tests {
    // Proves the stream bound and the start rule: a third stream is refused while two are
    // open, a stream's later chunks without its first are dropped without a verdict, and a
    // finished stream frees its place.
    #[test]
    fn streams_are_bounded_and_start_at_their_first_chunk() {
        let mut r = Reassembler::new(2);
        let stream = |region: u64, from: u64| {
            let mut msg = snapshot_msg(3, data(2048));
            msg.region_id = region;
            msg.from.id = from;
            split(msg, 1024)
        };
        let (a, b, c) = (stream(1, 1), stream(2, 1), stream(3, 1));
        assert!(r.push(a[0].clone()).unwrap().is_none());
        assert!(r.push(b[0].clone()).unwrap().is_none());
        assert_eq!(r.push(c[0].clone()).unwrap_err(), ChunkError::TooManyStreams { max: 2 });
        assert!(
            r.push(c[1].clone()).unwrap().is_none(),
            "dropped: its stream never started"
        );
        assert_eq!(r.streams(), 2);
        assert!(r.push(a[1].clone()).unwrap().is_some());
        assert!(r.push(c[0].clone()).unwrap().is_none(), "a place is free again");
    }

    use raft::eraftpb::{Message, MessageType};

    use super::*;
    use crate::region::PeerMeta;

    fn snapshot_msg(index: u64, data: Vec<u8>) -> RaftMessage {
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgSnapshot);
        msg.mut_snapshot().mut_metadata().index = index;
        msg.mut_snapshot().data = data.into();
        let peer = |id| PeerMeta { id, node: id, shard: 0 };
        RaftMessage {
            region_id: 7,
            from: peer(1),
            to: peer(2),
            msg,
        }
    }

    fn data(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 31 % 251) as u8).collect()
    }

    // Proves chunks arriving out of order and duplicated reassemble into the original message.
    #[test]
    fn out_of_order_and_duplicates_reassemble() {
        let chunks = split(snapshot_msg(9, data(10_000)), 1024);
        assert_eq!(chunks.len(), 10);
        let mut r = Reassembler::new(2);
        let mut order: Vec<usize> = (1..10).rev().collect();
        order.insert(0, 0); // a stream starts with its first chunk
        order.insert(3, 5); // a duplicate
        let mut done = None;
        for i in order {
            if let Some(msg) = r.push(chunks[i].clone()).unwrap() {
                done = Some(msg);
            }
        }
        let msg = done.expect("complete");
        assert_eq!(msg.msg.get_snapshot().data.to_vec(), data(10_000));
        assert_eq!(snapshot_index(&msg), 9);
    }

    // Proves a missing chunk keeps the snapshot incomplete and a newer snapshot replaces it.
    #[test]
    fn newer_snapshot_replaces_an_unfinished_one() {
        let old = split(snapshot_msg(5, data(3000)), 1000);
        let new = split(snapshot_msg(8, data(2000)), 1000);
        let mut r = Reassembler::new(1);
        assert!(r.push(old[0].clone()).unwrap().is_none());
        assert!(r.push(new[0].clone()).unwrap().is_none());
        assert!(r.push(old[1].clone()).unwrap().is_none(), "older chunks are ignored");
        let msg = r.push(new[1].clone()).unwrap().expect("the newer one completes");
        assert_eq!(snapshot_index(&msg), 8);
    }

    // Proves corrupted data fails the checksum and inconsistent chunks are refused.
    #[test]
    fn corruption_and_inconsistency_are_errors() {
        let mut chunks = split(snapshot_msg(3, data(2048)), 1024);
        chunks[1].bytes[7] ^= 1;
        let mut r = Reassembler::new(2);
        r.push(chunks[0].clone()).unwrap();
        assert!(matches!(r.push(chunks[1].clone()), Err(ChunkError::Checksum)));
        let mut bad = chunks[0].clone();
        bad.seq = 5;
        assert!(matches!(r.push(bad), Err(ChunkError::Inconsistent { .. })));
        let empty = split(snapshot_msg(4, Vec::new()), 1024);
        assert_eq!(empty.len(), 1);
        assert!(r.push(empty[0].clone()).unwrap().is_some());
    }

    // Proves a stream cannot hold more memory than the size it announced: chunks whose bytes
    // exceed it are refused (a forged huge `count` with a small total cannot grow the map).
    #[test]
    fn chunks_beyond_the_announced_size_are_refused() {
        let chunks = split(snapshot_msg(3, data(2048)), 1024);
        let mut r = Reassembler::new(2);
        let mut liar = chunks[0].clone();
        liar.count = u32::MAX;
        liar.total_bytes = 1500;
        r.push(liar.clone()).unwrap();
        liar.seq = 1;
        assert!(matches!(r.push(liar), Err(ChunkError::Inconsistent { .. })));
    }
}
