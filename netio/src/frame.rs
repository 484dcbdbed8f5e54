//! The frame: a fixed 24-byte header, then an rkyv archive of `header.body_bytes` bytes.
//!
//! ```text
//! offset size field
//!      0    4 magic        b"CKVF"
//!      4    1 version      PROTOCOL_VERSION
//!      5    1 kind         FrameKind (what the archive is)
//!      6    2 reserved     zero
//!      8    8 request_id   u64 LE: answers carry the id of their request (pipelining)
//!     16    4 body_bytes   u32 LE, at most the receiver's configured maximum
//!     20    4 crc32c       u32 LE, of the body
//! ```
//!
//! A receiver checks the header before reading the body (so an oversized length is refused
//! without allocating it), the checksum before validating, and validates the archive
//! (bytecheck) once; after that it is read in place.
//!
//! Owns: the header layout and its checks, encoding a value as a frame, and validated access to
//! a body (`access`). Must not: panic on bytes from the wire: every fault is a typed
//! `FrameError`, the length checked against the receiver's limit before a body is read.

use rkyv::api::high::{HighSerializer, HighValidator};
use rkyv::bytecheck::CheckBytes;
use rkyv::rancor;
use rkyv::ser::allocator::ArenaHandle;
use rkyv::util::AlignedVec;
use rkyv::Portable;

use crate::error::FrameError;

pub const MAGIC: [u8; 4] = *b"CKVF";
pub const PROTOCOL_VERSION: u8 = 1;
pub const HEADER_BYTES: usize = 24;
/// Default largest body a receiver accepts (a 1 MiB value or snapshot chunk fits many times).
pub const BODY_BYTES_MAX_DEFAULT: u32 = 8 << 20;

/// Archives are read in place from buffers with this alignment.
pub type Body = AlignedVec<16>;

/// What a frame's body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// Client -> shard: `msg::Request`.
    Request = 1,
    /// Shard -> client: `msg::Reply`, carrying the request's id.
    Reply = 2,
    /// Shard -> shard: `msg::RaftBatch`.
    RaftBatch = 3,
    /// Shard -> shard: `msg::SnapshotChunk`.
    SnapshotChunk = 4,
    /// Receiving shard -> sending shard: `msg::SnapshotAck`.
    SnapshotAck = 5,
    /// Either way, just before the sender closes the connection: `msg::WireError`.
    Error = 6,
    /// Shard -> shard, first frame each way on a peer connection: `msg::PeerHello`.
    PeerHello = 7,
    /// Shard -> the placement leader's shard 0: `msg::Heartbeat`.
    Heartbeat = 8,
}

impl FrameKind {
    fn from_u8(v: u8) -> Option<FrameKind> {
        Some(match v {
            1 => FrameKind::Request,
            2 => FrameKind::Reply,
            3 => FrameKind::RaftBatch,
            4 => FrameKind::SnapshotChunk,
            5 => FrameKind::SnapshotAck,
            6 => FrameKind::Error,
            7 => FrameKind::PeerHello,
            8 => FrameKind::Heartbeat,
            _ => return None,
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub kind: FrameKind,
    pub request_id: u64,
    pub body_bytes: u32,
    pub crc32c: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut out = [0u8; HEADER_BYTES];
        out[0..4].copy_from_slice(&MAGIC);
        out[4] = PROTOCOL_VERSION;
        out[5] = self.kind as u8;
        out[8..16].copy_from_slice(&self.request_id.to_le_bytes());
        out[16..20].copy_from_slice(&self.body_bytes.to_le_bytes());
        out[20..24].copy_from_slice(&self.crc32c.to_le_bytes());
        out
    }

    /// Parses and checks a header; `body_bytes_max` is the receiver's limit.
    pub fn decode(bytes: &[u8; HEADER_BYTES], body_bytes_max: u32) -> Result<Header, FrameError> {
        if bytes[0..4] != MAGIC {
            return Err(FrameError::BadMagic);
        }
        if bytes[4] != PROTOCOL_VERSION {
            return Err(FrameError::BadVersion { version: bytes[4] });
        }
        let kind = FrameKind::from_u8(bytes[5]).ok_or(FrameError::UnknownKind { kind: bytes[5] })?;
        if bytes[6..8] != [0, 0] {
            return Err(FrameError::Reserved);
        }
        let le32 = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let header = Header {
            kind,
            request_id: u64::from_le_bytes(bytes[8..16].try_into().expect("8 bytes")),
            body_bytes: le32(16),
            crc32c: le32(20),
        };
        if header.body_bytes > body_bytes_max {
            return Err(FrameError::TooLarge {
                bytes: header.body_bytes,
                max: body_bytes_max,
            });
        }
        Ok(header)
    }

    /// Checks a body read for this header against its checksum.
    pub fn check_body(&self, body: &[u8]) -> Result<(), FrameError> {
        assert_eq!(body.len(), self.body_bytes as usize, "caller reads exactly body_bytes");
        if crc32c::crc32c(body) != self.crc32c {
            return Err(FrameError::Checksum);
        }
        Ok(())
    }
}

/// What a frame can carry: any type rkyv serializes with its default serializer.
pub trait Message: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>> {}

impl<T> Message for T where T: for<'a> rkyv::Serialize<HighSerializer<AlignedVec, ArenaHandle<'a>, rancor::Error>> {}

/// Serializes `value` as a frame of `kind`: header and body, ready to write.
pub fn encode<T: Message>(kind: FrameKind, request_id: u64, value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, kind, request_id, value);
    out
}

/// Appends the frame of `value` to `out` (a connection's send buffer): no frame of its own.
pub fn encode_into<T: Message>(out: &mut Vec<u8>, kind: FrameKind, request_id: u64, value: &T) {
    let body = rkyv::to_bytes::<rancor::Error>(value).expect("serializing into memory cannot fail");
    append(out, kind, request_id, &body);
}

/// A frame around `body` as it is (whatever it holds): header with length and checksum.
pub fn frame_of(kind: FrameKind, request_id: u64, body: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(HEADER_BYTES + body.len());
    append(&mut out, kind, request_id, body);
    out
}

fn append(out: &mut Vec<u8>, kind: FrameKind, request_id: u64, body: &[u8]) {
    let header = Header {
        kind,
        request_id,
        body_bytes: u32::try_from(body.len()).expect("frames are far below 4 GiB"),
        crc32c: crc32c::crc32c(body),
    };
    out.reserve(HEADER_BYTES + body.len());
    out.extend_from_slice(&header.encode());
    out.extend_from_slice(body);
}

/// Validates a checked body as an archive of `T` and gives access to it in place.
pub fn access<T>(body: &[u8]) -> Result<&T, FrameError>
where
    T: Portable + for<'a> CheckBytes<HighValidator<'a, rancor::Error>>,
{
    rkyv::access::<T, rancor::Error>(body).map_err(|e| FrameError::Invalid { reason: e.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::msg::{ArchivedRequest, Op, Request, WireEpoch};
    use proptest::prelude::*;

    fn request() -> Request {
        Request {
            region_id: 7,
            epoch: WireEpoch {
                conf_ver: 1,
                version: 2,
            },
            op: Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
        }
    }

    /// Decodes a whole frame as a receiver does: header, body, checksum, archive.
    fn decode(bytes: &[u8]) -> Result<Request, FrameError> {
        let head: &[u8; HEADER_BYTES] = bytes
            .get(..HEADER_BYTES)
            .and_then(|h| h.try_into().ok())
            .ok_or(FrameError::Truncated)?;
        let header = Header::decode(head, 1 << 16)?;
        let raw = bytes
            .get(HEADER_BYTES..HEADER_BYTES + header.body_bytes as usize)
            .ok_or(FrameError::Truncated)?;
        let mut body = Body::with_capacity(raw.len());
        body.extend_from_slice(raw);
        header.check_body(&body)?;
        let archived = access::<ArchivedRequest>(&body)?;
        Ok(rkyv::deserialize::<Request, rancor::Error>(archived).expect("validated"))
    }

    // Proves a frame round-trips through encode and the receiver's checks.
    #[test]
    fn frame_round_trips() {
        let bytes = encode(FrameKind::Request, 42, &request());
        assert_eq!(decode(&bytes).unwrap(), request());
        let head: [u8; HEADER_BYTES] = bytes[..HEADER_BYTES].try_into().unwrap();
        let header = Header::decode(&head, u32::MAX).unwrap();
        assert_eq!((header.kind, header.request_id), (FrameKind::Request, 42));
    }

    // Proves each header check refuses what it guards, with its own error.
    #[test]
    fn header_checks_are_typed() {
        let good = encode(FrameKind::Request, 1, &request());
        let check = |at: usize, byte: u8| {
            let mut bad = good.clone();
            bad[at] = byte;
            decode(&bad).unwrap_err()
        };
        assert_eq!(check(0, b'X'), FrameError::BadMagic);
        assert_eq!(check(4, 9), FrameError::BadVersion { version: 9 });
        assert_eq!(check(5, 0), FrameError::UnknownKind { kind: 0 });
        assert_eq!(check(6, 1), FrameError::Reserved);
        assert!(matches!(check(19, 0xff), FrameError::TooLarge { .. }));
        assert_eq!(
            check(HEADER_BYTES + 1, good[HEADER_BYTES + 1] ^ 1),
            FrameError::Checksum
        );
    }

    // Proves a body with a valid checksum that is not a valid archive is refused, not read.
    #[test]
    fn invalid_archive_is_refused() {
        let bytes = frame_of(FrameKind::Request, 1, &[0xffu8; 64]);
        assert!(matches!(decode(&bytes), Err(FrameError::Invalid { .. })));
    }

    proptest! {
        // The frame decoder's fuzz target: arbitrary bytes never panic, and anything accepted
        // re-encodes to a valid frame.
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(req) = decode(&bytes) {
                prop_assert_eq!(decode(&encode(FrameKind::Request, 0, &req)).unwrap(), req);
            }
        }

        // Arbitrary bytes behind a VALID header and checksum (so they reach the validator).
        #[test]
        fn arbitrary_bodies_never_panic(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = decode(&frame_of(FrameKind::Request, 3, &body));
        }

        // Single-byte corruption of a real frame is caught or harmless, never a panic.
        #[test]
        fn corrupted_frames_never_panic(at in 0usize..64, byte in any::<u8>()) {
            let mut bytes = encode(FrameKind::Request, 5, &request());
            let at = at % bytes.len();
            bytes[at] = byte;
            let _ = decode(&bytes);
        }
    }
}
