//! A snapshot on the wire: its files in bounded chunks, in order, each carrying the raft
//! `MsgSnapshot` (whose data is the snapshot's metadata, `snapshot::SnapshotMeta`).
//!
//! Owns: the stream's plan (which bytes of which file each chunk carries) and the receiver's
//! rules (`Receiver`): a stream starts with chunk 0; chunks come in order, each continuing the
//! files exactly where the last one ended, none over `SNAPSHOT_CHUNK_BYTES_MAX`; every file's
//! bytes must match the size and crc32c the metadata announces; at most `streams_max` streams
//! at once per receiver. The transport moves the chunks (reading them
//! from the sender's files, writing them to the receiver's: `snapshot`) and tells the sender's
//! `RaftCore` whether the stream got through (`report_snapshot`), so raft-rs retries a lost one.
//! Must not: do I/O, or hold a snapshot's bytes (a chunk passes through).
//!
//! A stream that breaks gets one verdict (an error at the chunk that broke it); its later
//! chunks are dropped without a word. A chunk of a newer snapshot (higher index) from the same
//! peer replaces an unfinished older stream; a chunk of an older one is ignored.

use std::collections::BTreeMap;

use crate::raft_core::RaftMessage;
use crate::snapshot::SnapshotMeta;

/// Bytes of snapshot data in one chunk.
pub const SNAPSHOT_CHUNK_BYTES_MAX: usize = crate::snapshot::CHUNK_BYTES_MAX;
/// A snapshot announcing more bytes than this is refused (a forged size; disk, not memory).
pub const SNAPSHOT_BYTES_MAX: u64 = 1 << 40;

/// One piece of a snapshot stream on the wire.
#[derive(Debug, Clone)]
pub struct SnapshotChunk {
    /// The `MsgSnapshot`: its data is the snapshot's metadata.
    pub header: RaftMessage,
    /// The chunk's place in the stream, from 0.
    pub seq: u32,
    /// The file and offset its bytes belong at.
    pub file: u32,
    pub offset: u64,
    pub bytes: Vec<u8>,
}

/// A piece of a stream: `len` bytes of file `file` from `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub file: u32,
    pub offset: u64,
    pub len: usize,
}

/// The pieces of a stream of files of `sizes`, in order, each at most `chunk_bytes`; one empty
/// piece when there is nothing to send (the stream still carries its message).
pub fn plan(sizes: &[u64], chunk_bytes: usize) -> Vec<Piece> {
    assert!(chunk_bytes > 0);
    let mut pieces = Vec::new();
    for (file, &size) in sizes.iter().enumerate() {
        let mut offset = 0;
        while offset < size {
            let len = (size - offset).min(chunk_bytes as u64) as usize;
            pieces.push(Piece {
                file: file as u32,
                offset,
                len,
            });
            offset += len as u64;
        }
    }
    if pieces.is_empty() {
        pieces.push(Piece {
            file: 0,
            offset: 0,
            len: 0,
        });
    }
    pieces
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChunkError {
    #[error("snapshot chunk {seq} is not where its stream's plan puts it")]
    Inconsistent { seq: u32 },
    #[error("the snapshot's metadata is not a snapshot's: {0}")]
    BadMeta(String),
    #[error("snapshot of {bytes} bytes exceeds the maximum of {max}")]
    TooLarge { bytes: u64, max: u64 },
    #[error("snapshot file {file} fails its checksum")]
    Checksum { file: u32 },
    #[error("{max} snapshot streams are being received already")]
    TooManyStreams { max: usize },
}

fn snapshot_index(msg: &RaftMessage) -> u64 {
    msg.msg.get_snapshot().get_metadata().index
}

/// What to do with an accepted chunk: write its bytes at (file, offset) of the reception of
/// (region, snapshot index); once `done`, sync the reception's `files` files and hand raft the
/// message.
#[derive(Debug)]
pub struct Accepted {
    pub stream: (u64, u64),
    pub write: Piece,
    /// Files the snapshot has, and its message, once this chunk completed the stream.
    pub done: Option<(u32, RaftMessage)>,
}

struct Incoming {
    header: RaftMessage,
    meta: SnapshotMeta,
    /// The next chunk's seq, and where its bytes must go.
    next_seq: u32,
    file: u32,
    offset: u64,
    /// crc32c of the current file's bytes so far.
    crc: u32,
}

impl Incoming {
    /// Whether every byte the metadata announces has arrived.
    fn complete(&self) -> bool {
        self.file as usize >= self.meta.files.len()
    }

    /// Takes `chunk` where the stream stands: its bytes continue the current file.
    fn take(&mut self, chunk: &SnapshotChunk) -> Result<Piece, ChunkError> {
        let piece = Piece {
            file: chunk.file,
            offset: chunk.offset,
            len: chunk.bytes.len(),
        };
        let inconsistent = ChunkError::Inconsistent { seq: chunk.seq };
        let empty_stream = self.complete() && self.next_seq == 0;
        if chunk.seq != self.next_seq || (piece.file, piece.offset) != (self.file, self.offset) {
            return Err(inconsistent);
        }
        if piece.len > SNAPSHOT_CHUNK_BYTES_MAX || (piece.len == 0) != empty_stream {
            return Err(inconsistent);
        }
        if !empty_stream && self.offset + piece.len as u64 > self.meta.files[self.file as usize].bytes {
            return Err(inconsistent);
        }
        self.next_seq += 1;
        self.offset += piece.len as u64;
        self.crc = crc32c::crc32c_append(self.crc, &chunk.bytes);
        self.close_files()?;
        Ok(piece)
    }

    /// Moves past every file now complete, each checked against its crc32c.
    fn close_files(&mut self) -> Result<(), ChunkError> {
        while let Some(f) = self.meta.files.get(self.file as usize) {
            if self.offset < f.bytes {
                return Ok(());
            }
            if self.crc != f.crc32c {
                return Err(ChunkError::Checksum { file: self.file });
            }
            (self.file, self.offset, self.crc) = (self.file + 1, 0, 0);
        }
        Ok(())
    }
}

/// The streams being received on one connection, per (region, sending peer).
pub struct Receiver {
    streams: BTreeMap<(u64, u64), Incoming>,
    streams_max: usize,
}

impl Receiver {
    pub fn new(streams_max: usize) -> Receiver {
        assert!(streams_max > 0);
        Receiver {
            streams: BTreeMap::new(),
            streams_max,
        }
    }

    /// Streams being received now.
    pub fn streams(&self) -> usize {
        self.streams.len()
    }

    /// Takes one chunk: `Ok(None)` when it is dropped (an older snapshot's, or of a stream that
    /// never started here); `Err` is the stream's one verdict of failure.
    pub fn push(&mut self, chunk: &SnapshotChunk) -> Result<Option<Accepted>, ChunkError> {
        let key = (chunk.header.region_id, chunk.header.from.id);
        let index = snapshot_index(&chunk.header);
        // Two snapshots generated at one index are not the same files (an SST records when it
        // was made): a stream is its index and its metadata.
        let of_stream = |s: &Incoming| s.header.msg.get_snapshot().data == chunk.header.msg.get_snapshot().data;
        match self
            .streams
            .get(&key)
            .map(|s| (snapshot_index(&s.header), of_stream(s)))
        {
            Some((current, _)) if index < current => return Ok(None),
            Some((current, true)) if index == current => {}
            _ if chunk.seq != 0 => return Ok(None), // a stream's middle without its start
            current => self.start(key, chunk, current.is_some())?,
        }
        let stream = self.streams.get_mut(&key).expect("started above");
        let piece = match stream.take(chunk) {
            Ok(piece) => piece,
            Err(e) => {
                self.streams.remove(&key);
                return Err(e);
            }
        };
        let done = stream.complete().then(|| {
            let s = self.streams.remove(&key).expect("present");
            (s.meta.files.len() as u32, s.header)
        });
        Ok(Some(Accepted {
            stream: (key.0, index),
            write: piece,
            done,
        }))
    }

    /// Drops the stream of `region_id` from `from_peer` (its chunk could not be written).
    pub fn abandon(&mut self, region_id: u64, from_peer: u64) {
        self.streams.remove(&(region_id, from_peer));
    }

    /// Starts the stream of `chunk` (its chunk 0), replacing an older one of the same key.
    fn start(&mut self, key: (u64, u64), chunk: &SnapshotChunk, replaces: bool) -> Result<(), ChunkError> {
        if !replaces && self.streams.len() >= self.streams_max {
            return Err(ChunkError::TooManyStreams { max: self.streams_max });
        }
        let snap = chunk.header.msg.get_snapshot();
        let meta = SnapshotMeta::decode(key.0, snap.get_metadata().index, &snap.data)
            .map_err(|e| ChunkError::BadMeta(e.to_string()))?;
        let bytes: u64 = meta.sizes().iter().sum();
        if bytes > SNAPSHOT_BYTES_MAX {
            return Err(ChunkError::TooLarge {
                bytes,
                max: SNAPSHOT_BYTES_MAX,
            });
        }
        let mut incoming = Incoming {
            header: chunk.header.clone(),
            meta,
            next_seq: 0,
            file: 0,
            offset: 0,
            crc: 0,
        };
        incoming.close_files()?; // files of no bytes
        self.streams.insert(key, incoming);
        Ok(())
    }
}

/// The chunks of a stream, for a sender that holds `bytes_of(piece)`: the simulator's way (it
/// reads each piece from the sender's files as it builds the chunk).
pub fn chunks(header: &RaftMessage, plan: &[Piece], mut bytes_of: impl FnMut(Piece) -> Vec<u8>) -> Vec<SnapshotChunk> {
    plan.iter()
        .enumerate()
        .map(|(seq, &piece)| SnapshotChunk {
            header: header.clone(),
            seq: seq as u32,
            file: piece.file,
            offset: piece.offset,
            bytes: bytes_of(piece),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::{Message, MessageType};

    use super::*;
    use crate::region::PeerMeta;
    use crate::snapshot::{SnapshotFile, SnapshotMeta};

    /// A `MsgSnapshot` of `region_id` at `index` whose files hold `files`.
    fn snapshot_msg(region_id: u64, index: u64, files: &[Vec<u8>]) -> RaftMessage {
        let peer = |id| PeerMeta::voter(id, id, 0);
        let region = crate::region::Region {
            id: region_id,
            start: Vec::new(),
            end: Vec::new(),
            epoch: crate::region::Epoch::default(),
            peers: vec![peer(1), peer(2)],
        };
        let meta = SnapshotMeta {
            applied: index,
            region: crate::apply::encode_region(&region),
            files: files
                .iter()
                .enumerate()
                .map(|(cf, f)| SnapshotFile {
                    cf: cf as u8,
                    bytes: f.len() as u64,
                    crc32c: crc32c::crc32c(f),
                    keys: 1,
                    digest: 0,
                })
                .collect(),
        };
        let mut msg = Message::default();
        msg.set_msg_type(MessageType::MsgSnapshot);
        msg.mut_snapshot().mut_metadata().index = index;
        msg.mut_snapshot().data = meta.encode().into();
        RaftMessage {
            region_id,
            from: peer(1),
            to: peer(2),
            msg,
            epoch: crate::region::Epoch::default(),
            check: crate::MemberCheck::None,
        }
    }

    fn data(n: usize, salt: usize) -> Vec<u8> {
        (0..n).map(|i| ((i + salt) * 31 % 251) as u8).collect()
    }

    /// The stream of region 7's `files` at `index`, in chunks of at most 1000 bytes.
    fn stream(index: u64, files: &[Vec<u8>]) -> Vec<SnapshotChunk> {
        stream_of(7, index, files)
    }

    fn stream_of(region_id: u64, index: u64, files: &[Vec<u8>]) -> Vec<SnapshotChunk> {
        let header = snapshot_msg(region_id, index, files);
        let sizes: Vec<u64> = files.iter().map(|f| f.len() as u64).collect();
        chunks(&header, &plan(&sizes, 1000), |p| {
            files[p.file as usize][p.offset as usize..p.offset as usize + p.len].to_vec()
        })
    }

    // Proves the plan covers every byte of every file once, in order, in bounded pieces, and
    // gives an empty snapshot one piece.
    #[test]
    fn plans_cover_files_in_bounded_pieces() {
        let pieces = plan(&[2500, 0, 1000], 1000); // an empty file: a plan allows it, decode not
        let shape: Vec<(u32, u64, usize)> = pieces.iter().map(|p| (p.file, p.offset, p.len)).collect();
        assert_eq!(shape, vec![(0, 0, 1000), (0, 1000, 1000), (0, 2000, 500), (2, 0, 1000)]);
        assert_eq!(
            plan(&[], 10),
            vec![Piece {
                file: 0,
                offset: 0,
                len: 0
            }]
        );
    }

    // Proves a whole stream is accepted chunk by chunk, each told where to write, and the
    // last one completes it with the message.
    #[test]
    fn a_stream_is_written_piece_by_piece_then_done() {
        let files = vec![data(1010, 1), data(5, 2)];
        let mut r = Receiver::new(2);
        let chunks = stream(9, &files);
        assert_eq!(chunks.len(), 3);
        for (i, c) in chunks.iter().enumerate() {
            let a = r.push(c).unwrap().expect("accepted");
            assert_eq!((a.stream, a.write.file, a.write.offset), ((7, 9), c.file, c.offset));
            assert_eq!(a.done.is_some(), i == 2);
        }
        assert_eq!(r.streams(), 0);
    }

    // Proves the receiver's rules: chunks out of order or out of place break the stream with
    // one verdict; later chunks of a broken or never started stream are dropped silently; a
    // corrupted file fails its checksum; a third stream is refused while two are open.
    #[test]
    fn broken_streams_get_one_verdict() {
        let files = vec![data(1010, 3)];
        let chunks = stream(9, &files);
        let mut r = Receiver::new(2);
        r.push(&chunks[0]).unwrap();
        let mut skipped = chunks[1].clone();
        skipped.seq = 5;
        assert_eq!(r.push(&skipped).unwrap_err(), ChunkError::Inconsistent { seq: 5 });
        assert!(r.push(&chunks[1]).unwrap().is_none(), "dropped: its stream broke");
        let mut corrupt = chunks.clone();
        corrupt[1].bytes[3] ^= 1;
        r.push(&corrupt[0]).unwrap();
        assert_eq!(r.push(&corrupt[1]).unwrap_err(), ChunkError::Checksum { file: 0 });
        let other = |region: u64| {
            stream_of(region, 4, &[data(2000, 4)]).remove(0) // two chunks: stays open
        };
        let mut r = Receiver::new(2);
        assert!(r.push(&chunks[0]).is_ok() && r.push(&other(1)).is_ok());
        assert_eq!(r.push(&other(2)).unwrap_err(), ChunkError::TooManyStreams { max: 2 });
    }

    // Proves a newer snapshot from the same peer replaces an unfinished older one, whose
    // chunks are then ignored.
    #[test]
    fn newer_snapshot_replaces_an_unfinished_one() {
        let old = stream(5, &[data(2000, 5)]);
        let new = stream(8, &[data(10, 6)]);
        let mut r = Receiver::new(1);
        assert!(r.push(&old[0]).unwrap().is_some());
        let done = r.push(&new[0]).unwrap().expect("accepted").done;
        assert_eq!(done.map(|(files, m)| (files, snapshot_index(&m))), Some((1, 8)));
        assert!(r.push(&old[1]).unwrap().is_none(), "an older snapshot's chunk");
    }

    // Proves another snapshot made at the same index (other files: the sender restarted) is
    // another stream: its first chunk replaces the unfinished one, whose later chunks are
    // ignored instead of being mixed into the new stream's files.
    #[test]
    fn another_snapshot_at_the_same_index_is_another_stream() {
        let first = stream(5, &[data(2000, 5)]);
        let second = stream(5, &[data(2000, 9)]);
        let mut r = Receiver::new(1);
        assert!(r.push(&first[0]).unwrap().is_some());
        assert!(r.push(&second[1]).unwrap().is_none(), "the middle of another stream");
        assert!(r.push(&second[0]).unwrap().is_some());
        assert!(r.push(&first[1]).unwrap().is_none(), "the replaced stream's chunk");
        let done = r.push(&second[1]).unwrap().expect("accepted").done;
        assert_eq!(done.map(|(files, _)| files), Some(1));
    }
}
