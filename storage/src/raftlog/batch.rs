//! `LogBatch`: what one `append` makes durable, and its payload codec.
//!
//! Owns: encoding a batch of per-region operations into a record payload, and decoding a
//! payload back into [`Op`]s. The same decoder feeds the index after a live write and during
//! recovery, so the two can never disagree about what a record means.
//! Must not: do I/O or touch the index, or panic on a malformed payload: it is a typed
//! `Corruption`.
//!
//! Payload = a sequence of items, each `tag u8 | region_id u64 | body`:
//!
//! | tag | item        | body                                                        |
//! |-----|-------------|-------------------------------------------------------------|
//! | 1   | Entries     | first_index u64, count u32, count x (term u64, len u32, data) |
//! | 2   | PutState    | key_len u16, key, value_len u32, value                      |
//! | 3   | DeleteState | key_len u16, key                                            |
//! | 4   | CompactTo   | index u64 (entries below it are discarded)                  |
//! | 5   | Clean       | (none: the region's log and states are removed)             |

use super::format::{read_u32, read_u64};
use crate::{Error, Result};

const TAG_ENTRIES: u8 = 1;
const TAG_PUT_STATE: u8 = 2;
const TAG_DELETE_STATE: u8 = 3;
const TAG_COMPACT: u8 = 4;
const TAG_CLEAN: u8 = 5;

/// State keys are short names chosen by raftstore (`hs` for the hard state, ...).
pub const STATE_KEY_BYTES_MAX: usize = u16::MAX as usize;

/// One operation of a batch, as the index applies it. `data_offset` is relative to the start
/// of the payload; the engine adds the record's file position.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op<'a> {
    /// Entries from `first_index` on replace whatever the log held from there.
    EntriesBegin {
        region_id: u64,
        first_index: u64,
        count: u32,
    },
    Entry {
        region_id: u64,
        index: u64,
        term: u64,
        data_offset: u32,
        data_len: u32,
    },
    PutState {
        region_id: u64,
        key: &'a [u8],
        value: &'a [u8],
    },
    DeleteState {
        region_id: u64,
        key: &'a [u8],
    },
    CompactTo {
        region_id: u64,
        index: u64,
    },
    Clean {
        region_id: u64,
    },
}

/// A batch of operations on any number of regions, made durable together by one
/// [`LogEngine::append`](super::LogEngine::append).
#[derive(Debug, Default, Clone)]
pub struct LogBatch {
    payload: Vec<u8>,
    entry_count: usize,
}

impl LogBatch {
    pub fn new() -> LogBatch {
        LogBatch::default()
    }

    /// Appends raft entries `first_index..first_index + entries.len()` of `region_id`; each
    /// entry is `(term, data)` with opaque data. Entries already in the log from
    /// `first_index` on are replaced (raft's conflict truncation).
    pub fn add_entries<'d>(
        &mut self,
        region_id: u64,
        first_index: u64,
        entries: impl ExactSizeIterator<Item = (u64, &'d [u8])>,
    ) {
        let count = u32::try_from(entries.len()).expect("fewer than 4G entries in a batch");
        assert!(first_index > 0, "raft indexes start at 1");
        if count == 0 {
            return;
        }
        self.payload.push(TAG_ENTRIES);
        self.payload.extend_from_slice(&region_id.to_le_bytes());
        self.payload.extend_from_slice(&first_index.to_le_bytes());
        self.payload.extend_from_slice(&count.to_le_bytes());
        let mut written = 0u32;
        for (term, data) in entries {
            self.payload.extend_from_slice(&term.to_le_bytes());
            let len = u32::try_from(data.len()).expect("an entry under 4 GiB");
            self.payload.extend_from_slice(&len.to_le_bytes());
            self.payload.extend_from_slice(data);
            written += 1;
        }
        assert_eq!(written, count, "ExactSizeIterator lied about its length");
        self.entry_count += count as usize;
    }

    /// Sets a per-region state value (hard state, ...); the latest write of a key wins.
    pub fn put_state(&mut self, region_id: u64, key: &[u8], value: &[u8]) {
        assert!(key.len() <= STATE_KEY_BYTES_MAX, "state keys are short names");
        self.payload.push(TAG_PUT_STATE);
        self.payload.extend_from_slice(&region_id.to_le_bytes());
        self.payload.extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.payload.extend_from_slice(key);
        let len = u32::try_from(value.len()).expect("a state value under 4 GiB");
        self.payload.extend_from_slice(&len.to_le_bytes());
        self.payload.extend_from_slice(value);
    }

    pub fn delete_state(&mut self, region_id: u64, key: &[u8]) {
        assert!(key.len() <= STATE_KEY_BYTES_MAX, "state keys are short names");
        self.payload.push(TAG_DELETE_STATE);
        self.payload.extend_from_slice(&region_id.to_le_bytes());
        self.payload.extend_from_slice(&(key.len() as u16).to_le_bytes());
        self.payload.extend_from_slice(key);
    }

    /// Log GC: discards `region_id`'s entries with index < `index`.
    pub fn compact_to(&mut self, region_id: u64, index: u64) {
        self.payload.push(TAG_COMPACT);
        self.payload.extend_from_slice(&region_id.to_le_bytes());
        self.payload.extend_from_slice(&index.to_le_bytes());
    }

    /// Removes the region's whole log and every state it has (region destroyed).
    pub fn clean(&mut self, region_id: u64) {
        self.payload.push(TAG_CLEAN);
        self.payload.extend_from_slice(&region_id.to_le_bytes());
    }

    pub fn is_empty(&self) -> bool {
        self.payload.is_empty()
    }

    pub fn entry_count(&self) -> usize {
        self.entry_count
    }

    /// Encoded size; a record adds a 32-byte header and up to 7 bytes of padding.
    pub fn payload_bytes(&self) -> usize {
        self.payload.len()
    }

    pub fn clear(&mut self) {
        self.payload.clear();
        self.entry_count = 0;
    }

    pub(crate) fn payload(&self) -> &[u8] {
        &self.payload
    }
}

/// Decodes a payload, calling `visit` for every operation in order. A malformed payload (only
/// possible for a record whose CRC matched, i.e. a bug or a different format) is an error
/// naming the offset; `visit` may reject an operation the same way.
pub fn decode(payload: &[u8], mut visit: impl FnMut(Op<'_>) -> Result<()>) -> Result<()> {
    let mut r = Reader { buf: payload, pos: 0 };
    while r.pos < payload.len() {
        let tag = r.u8()?;
        let region_id = r.u64()?;
        match tag {
            TAG_ENTRIES => {
                let first_index = r.u64()?;
                let count = r.u32()?;
                if first_index == 0 || count == 0 {
                    return Err(malformed(
                        r.pos - 12,
                        format!("entries item with first_index {first_index}, count {count}"),
                    ));
                }
                visit(Op::EntriesBegin {
                    region_id,
                    first_index,
                    count,
                })?;
                for i in 0..u64::from(count) {
                    let term = r.u64()?;
                    let len = r.u32()?;
                    let data_offset = r.pos as u32;
                    r.skip(len as usize)?;
                    visit(Op::Entry {
                        region_id,
                        index: first_index + i,
                        term,
                        data_offset,
                        data_len: len,
                    })?;
                }
            }
            TAG_PUT_STATE => {
                let key_len = r.u16()? as usize;
                let key = r.bytes(key_len)?;
                let value_len = r.u32()? as usize;
                let value = r.bytes(value_len)?;
                visit(Op::PutState { region_id, key, value })?;
            }
            TAG_DELETE_STATE => {
                let key_len = r.u16()? as usize;
                let key = r.bytes(key_len)?;
                visit(Op::DeleteState { region_id, key })?;
            }
            TAG_COMPACT => {
                let index = r.u64()?;
                visit(Op::CompactTo { region_id, index })?;
            }
            TAG_CLEAN => visit(Op::Clean { region_id })?,
            _ => return Err(malformed(r.pos - 9, format!("unknown item tag {tag}"))),
        }
    }
    Ok(())
}

fn malformed(offset: usize, reason: String) -> Error {
    Error::Corruption {
        file: "<record payload>".into(),
        offset: offset as u64,
        reason,
    }
}

struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(n).filter(|&e| e <= self.buf.len());
        let end = end.ok_or_else(|| malformed(self.pos, format!("item runs past the payload ({n} bytes)")))?;
        let out = &self.buf[self.pos..end];
        self.pos = end;
        Ok(out)
    }
    fn skip(&mut self, n: usize) -> Result<()> {
        self.bytes(n).map(|_| ())
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.bytes(1)?[0])
    }
    fn u16(&mut self) -> Result<u16> {
        Ok(u16::from_le_bytes(self.bytes(2)?.try_into().expect("2 bytes")))
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(read_u32(self.bytes(4)?, 0))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(read_u64(self.bytes(8)?, 0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(b: &LogBatch) -> Vec<String> {
        let mut out = Vec::new();
        decode(b.payload(), |op| {
            out.push(format!("{op:?}"));
            Ok(())
        })
        .unwrap();
        out
    }

    // Proves every item kind decodes to what was added, in order, with correct data offsets.
    #[test]
    fn encode_decode_all_items() {
        let mut b = LogBatch::new();
        b.add_entries(7, 10, [(2u64, &b"ab"[..]), (3, &b"xyz"[..])].into_iter());
        b.put_state(7, b"hs", b"state");
        b.delete_state(8, b"k");
        b.compact_to(7, 9);
        b.clean(9);
        assert_eq!(b.entry_count(), 2);
        let mut datas = Vec::new();
        decode(b.payload(), |op| {
            if let Op::Entry {
                data_offset, data_len, ..
            } = op
            {
                datas.push(b.payload()[data_offset as usize..(data_offset + data_len) as usize].to_vec());
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(datas, vec![b"ab".to_vec(), b"xyz".to_vec()]);
        let got = ops(&b);
        assert_eq!(got.len(), 7);
        assert!(got[0].starts_with("EntriesBegin { region_id: 7, first_index: 10, count: 2"));
        assert!(got[2].contains("index: 11, term: 3"));
        assert_eq!(got[6], "Clean { region_id: 9 }");
    }

    // Proves a truncated or garbage payload is a typed error, never a panic.
    #[test]
    fn malformed_payloads_are_errors() {
        let mut b = LogBatch::new();
        b.add_entries(1, 1, [(1u64, &b"data"[..])].into_iter());
        let p = b.payload();
        for cut in 1..p.len() {
            assert!(decode(&p[..cut], |_| Ok(())).is_err(), "cut at {cut}");
        }
        assert!(decode(&[42u8; 9], |_| Ok(())).is_err());
    }
}
