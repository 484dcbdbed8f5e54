//! On-disk format of the Raft log: segment headers and record framing.
//!
//! Owns: the byte layout, and nothing else — no I/O, no index. `docs/format.md` is the same
//! format in prose; keep the two in step. All integers are little-endian with explicit widths.
//! Must not: panic on bytes read back: anything that is not a valid header, or a valid record
//! of this segment, decodes to `None`.
//!
//! A segment file is `segment_bytes` long, preallocated and pre-written before use:
//!
//! ```text
//! [ header block: BLOCK_BYTES ][ record ][ record ] ... [ zeroes or stale bytes ]
//! ```
//!
//! Records are packed, each starting on a `RECORD_ALIGN` boundary. Every record carries the
//! sequence number of its segment, so bytes left from a recycled file's previous life never
//! parse as records of its new life.

/// Unit of every write and of file preallocation: one page, the O_DIRECT alignment we use.
pub const BLOCK_BYTES: usize = 4096;
/// The segment header occupies the whole first block.
pub const SEGMENT_HEADER_BYTES: usize = BLOCK_BYTES;
/// Records start at multiples of this, so a forward scan for a valid record after a bad one
/// (recovery's torn-tail test) has a bounded number of candidate positions.
pub const RECORD_ALIGN: usize = 8;
pub const RECORD_HEADER_BYTES: usize = 32;

pub const SEGMENT_MAGIC: u64 = u64::from_le_bytes(*b"CKVLOG01");
pub const FORMAT_VERSION: u32 = 1;

/// Record kinds. Only log batches exist today; the byte is there so later kinds can be added
/// without a format bump for readers that reject unknown kinds.
pub const KIND_BATCH: u8 = 1;

const _: () = assert!(BLOCK_BYTES.is_power_of_two());
const _: () = assert!(RECORD_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(RECORD_ALIGN));
const _: () = assert!(SEGMENT_HEADER_LEN <= SEGMENT_HEADER_BYTES);

/// Bytes of the header block that carry meaning; the rest of the block is zero.
const SEGMENT_HEADER_LEN: usize = 48;

/// First block of every activated segment.
///
/// `prev_seq`/`prev_end` seal the previous segment: its valid records end exactly at
/// `prev_end`. Recovery uses this to tell the clean end of a sealed segment from corruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentHeader {
    pub seq: u64,
    /// Sequence of the segment this one follows, 0 if none.
    pub prev_seq: u64,
    /// Offset one past the last valid record of `prev_seq`.
    pub prev_end: u64,
}

impl SegmentHeader {
    /// Layout: magic u64 | version u32 | crc32c u32 (of bytes 0..12 and 16..48) | seq u64 |
    /// prev_seq u64 | prev_end u64 | reserved u64 (zero).
    pub fn encode(&self, block: &mut [u8]) {
        assert!(block.len() >= SEGMENT_HEADER_BYTES);
        block[..SEGMENT_HEADER_BYTES].fill(0);
        block[0..8].copy_from_slice(&SEGMENT_MAGIC.to_le_bytes());
        block[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        block[16..24].copy_from_slice(&self.seq.to_le_bytes());
        block[24..32].copy_from_slice(&self.prev_seq.to_le_bytes());
        block[32..40].copy_from_slice(&self.prev_end.to_le_bytes());
        let crc = header_crc(block);
        block[12..16].copy_from_slice(&crc.to_le_bytes());
        debug_assert_eq!(SegmentHeader::decode(block), Some(*self));
    }

    /// `None` for anything that is not a valid header: zeroes of a never-activated segment,
    /// a torn header write, or another format.
    pub fn decode(block: &[u8]) -> Option<SegmentHeader> {
        if block.len() < SEGMENT_HEADER_LEN || read_u64(block, 0) != SEGMENT_MAGIC {
            return None;
        }
        if read_u32(block, 8) != FORMAT_VERSION || read_u32(block, 12) != header_crc(block) {
            return None;
        }
        Some(SegmentHeader {
            seq: read_u64(block, 16),
            prev_seq: read_u64(block, 24),
            prev_end: read_u64(block, 32),
        })
    }
}

fn header_crc(block: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(&block[0..12]), &block[16..SEGMENT_HEADER_LEN])
}

/// Header of one record. Layout (32 bytes):
/// crc32c u32 (of bytes 4..32 and the payload) | payload_len u32 | kind u8 | reserved [u8; 3] |
/// flush_start u32 | segment_seq u64 | flush_seq u64.
///
/// `flush_seq` numbers the group-commit writes of the engine's lifetime (monotonic across
/// segments and restarts); `flush_start` is the offset in the segment where the write that
/// carried this record began. Together they let recovery prove that a bad record lies inside
/// the last, never-acknowledged write (a torn tail) rather than inside an earlier, synced one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordHeader {
    pub payload_len: u32,
    pub kind: u8,
    pub flush_start: u32,
    pub segment_seq: u64,
    pub flush_seq: u64,
}

impl RecordHeader {
    /// Writes header and payload into `out` (which must hold `framed_len(payload.len())`
    /// bytes) and zeroes the alignment padding.
    pub fn encode(&self, payload: &[u8], out: &mut [u8]) {
        assert_eq!(self.payload_len as usize, payload.len());
        let total = framed_len(payload.len());
        assert!(out.len() >= total);
        out[4..8].copy_from_slice(&self.payload_len.to_le_bytes());
        out[8] = self.kind;
        out[9..12].fill(0);
        out[12..16].copy_from_slice(&self.flush_start.to_le_bytes());
        out[16..24].copy_from_slice(&self.segment_seq.to_le_bytes());
        out[24..32].copy_from_slice(&self.flush_seq.to_le_bytes());
        out[RECORD_HEADER_BYTES..RECORD_HEADER_BYTES + payload.len()].copy_from_slice(payload);
        out[RECORD_HEADER_BYTES + payload.len()..total].fill(0);
        let crc = record_crc(&out[4..RECORD_HEADER_BYTES], payload);
        out[0..4].copy_from_slice(&crc.to_le_bytes());
    }

    /// Header and payload bytes the record header at `buf[0]` claims, after the cheap checks
    /// (this segment's, a batch, zero padding); its CRC is not checked. `None` when those fail.
    pub fn claimed_len(buf: &[u8], segment_seq: u64) -> Option<usize> {
        // Cheap rejections first: this runs at every aligned offset during a tail scan.
        if buf.len() < RECORD_HEADER_BYTES
            || read_u64(buf, 16) != segment_seq
            || buf[8] != KIND_BATCH
            || buf[9..12] != [0; 3]
        {
            return None;
        }
        RECORD_HEADER_BYTES.checked_add(read_u32(buf, 4) as usize)
    }

    /// Parses the record starting at `buf[0]`, checking its CRC and that it belongs to segment
    /// `segment_seq`. `None` when the bytes there are not a valid record of this segment.
    pub fn decode(buf: &[u8], segment_seq: u64) -> Option<(RecordHeader, &[u8])> {
        let end = Self::claimed_len(buf, segment_seq)?;
        let header = RecordHeader {
            payload_len: read_u32(buf, 4),
            kind: buf[8],
            flush_start: read_u32(buf, 12),
            segment_seq: read_u64(buf, 16),
            flush_seq: read_u64(buf, 24),
        };
        let payload = buf.get(RECORD_HEADER_BYTES..end)?;
        if read_u32(buf, 0) != record_crc(&buf[4..RECORD_HEADER_BYTES], payload) {
            return None;
        }
        Some((header, payload))
    }
}

fn record_crc(header_tail: &[u8], payload: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c(header_tail), payload)
}

/// Bytes a record with `payload_len` bytes of payload occupies, padding included.
pub fn framed_len(payload_len: usize) -> usize {
    align_up(RECORD_HEADER_BYTES + payload_len, RECORD_ALIGN)
}

pub fn align_up(v: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    (v + align - 1) & !(align - 1)
}

pub fn align_down(v: usize, align: usize) -> usize {
    debug_assert!(align.is_power_of_two());
    v & !(align - 1)
}

pub fn read_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(buf[at..at + 4].try_into().expect("4 bytes"))
}

pub fn read_u64(buf: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(buf[at..at + 8].try_into().expect("8 bytes"))
}

/// File name of segment `seq`: fixed width so that names sort as numbers.
pub fn segment_name(seq: u64) -> String {
    format!("{seq:016x}.log")
}

/// Inverse of [`segment_name`]; `None` for any other file.
pub fn parse_segment_name(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    if hex.len() != 16 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a header round-trips and that any flipped bit makes it invalid.
    #[test]
    fn segment_header_round_trip_and_bit_flips() {
        let h = SegmentHeader {
            seq: 7,
            prev_seq: 6,
            prev_end: 12345,
        };
        let mut block = vec![0u8; BLOCK_BYTES];
        h.encode(&mut block);
        assert_eq!(SegmentHeader::decode(&block), Some(h));
        for bit in 0..SEGMENT_HEADER_LEN * 8 {
            let mut b = block.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(SegmentHeader::decode(&b), None, "bit {bit}");
        }
        assert_eq!(SegmentHeader::decode(&vec![0u8; BLOCK_BYTES]), None);
    }

    // Proves a record round-trips, is bound to its segment, and fails on any flipped bit.
    #[test]
    fn record_round_trip_and_bit_flips() {
        let payload = b"hello raft".to_vec();
        let h = RecordHeader {
            payload_len: payload.len() as u32,
            kind: KIND_BATCH,
            flush_start: 4096,
            segment_seq: 3,
            flush_seq: 99,
        };
        let mut out = vec![0xAAu8; framed_len(payload.len())];
        h.encode(&payload, &mut out);
        assert_eq!(out.len() % RECORD_ALIGN, 0);
        let (got, got_payload) = RecordHeader::decode(&out, 3).expect("valid");
        assert_eq!((got, got_payload), (h, &payload[..]));
        assert!(RecordHeader::decode(&out, 4).is_none(), "bound to segment 3");
        for bit in 0..(RECORD_HEADER_BYTES + payload.len()) * 8 {
            let mut b = out.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(RecordHeader::decode(&b, 3).is_none(), "bit {bit}");
        }
    }

    // Proves segment names sort numerically and parse back; strangers are rejected.
    #[test]
    fn segment_names() {
        assert_eq!(parse_segment_name(&segment_name(0xabc)), Some(0xabc));
        assert!(segment_name(9) < segment_name(10));
        assert_eq!(parse_segment_name("LOCK"), None);
        assert_eq!(parse_segment_name("000000000000000g.log"), None);
        assert_eq!(parse_segment_name("+00000000000000a.log"), None);
    }
}
