//! A forward-only window over one segment's bytes, so that recovery holds a few MiB of a
//! segment in memory rather than all of it (a segment is 64 MiB by default, once per shard).
//!
//! Owns: which bytes of the segment are held. Must not: interpret them beyond a record
//! header's claimed length (recovery decides what is valid), or move backwards.

use super::disk::DiskFile;
use super::format::{align_down, RecordHeader, BLOCK_BYTES, RECORD_HEADER_BYTES};
use crate::{Error, Result};

/// Bytes read from the segment at a time.
const READ_BYTES: usize = 4 << 20;

pub(super) struct Window<'f, F> {
    file: &'f F,
    /// The segment's length in whole blocks: what recovery may read.
    len: usize,
    /// Offset in the segment of `bytes[0]`; always block-aligned.
    base: usize,
    bytes: Vec<u8>,
}

impl<'f, F: DiskFile> Window<'f, F> {
    pub(super) async fn open(file: &'f F) -> Result<Self> {
        let size = file
            .size_bytes()
            .await
            .map_err(|e| Error::io("sizing a log segment", e))?;
        let size = usize::try_from(size).unwrap_or(usize::MAX);
        Ok(Window {
            file,
            len: align_down(size, BLOCK_BYTES),
            base: 0,
            bytes: Vec::new(),
        })
    }

    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The bytes `[pos, pos + n)`, fewer at the segment's end. Forgets what lies before `pos`:
    /// positions asked for never go back.
    pub(super) async fn get(&mut self, pos: usize, n: usize) -> Result<&[u8]> {
        debug_assert!(pos >= self.base, "a recovery window only moves forward");
        if pos >= self.len {
            return Ok(&[]);
        }
        let end = pos.saturating_add(n).min(self.len);
        let keep_from = align_down(pos, BLOCK_BYTES);
        let forget = keep_from.saturating_sub(self.base).min(self.bytes.len());
        self.bytes.drain(..forget);
        self.base = if self.bytes.is_empty() {
            keep_from
        } else {
            self.base + forget
        };
        while self.base + self.bytes.len() < end {
            let at = self.base + self.bytes.len();
            let chunk = self
                .file
                .read_at(at as u64, READ_BYTES.min(self.len - at))
                .await
                .map_err(|e| Error::io("reading a log segment", e))?;
            self.bytes.extend_from_slice(&chunk);
        }
        Ok(&self.bytes[pos - self.base..end - self.base])
    }

    /// The valid record of segment `seq` at `pos` if one is there and ends by `limit`.
    pub(super) async fn record(&mut self, pos: usize, limit: usize, seq: u64) -> Result<Option<(RecordHeader, &[u8])>> {
        let head = self
            .get(pos, RECORD_HEADER_BYTES.min(limit.saturating_sub(pos)))
            .await?;
        let Some(len) = RecordHeader::claimed_len(head, seq) else {
            return Ok(None);
        };
        if len > limit.saturating_sub(pos) {
            return Ok(None);
        }
        let whole = self.get(pos, len).await?;
        Ok(RecordHeader::decode(whole, seq))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raftlog::{Disk, MemDisk};

    // Proves the window returns a segment's bytes exactly while holding at most one read
    // ahead of the position asked for, and nothing past the segment's last whole block.
    #[test]
    fn reads_forward_holding_one_chunk() {
        let out = glommio::LocalExecutorBuilder::default()
            .spawn(|| async {
                let disk = MemDisk::new();
                let file = disk.create("seg").await.unwrap();
                let len = 3 * READ_BYTES + 5 * BLOCK_BYTES + 100;
                let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
                file.write_at(data.clone(), 0).await.unwrap();
                let mut w = Window::open(&file).await.unwrap();
                assert_eq!(w.len(), len - 100);
                let mut held = 0;
                for pos in (0..len).step_by(100_003) {
                    let got = w.get(pos, 5000).await.unwrap().to_vec();
                    let end = (pos + 5000).min(w.len()).max(pos.min(w.len()));
                    assert_eq!(got, data[pos.min(end)..end], "at {pos}");
                    held = held.max(w.bytes.len());
                }
                held
            })
            .unwrap()
            .join()
            .unwrap();
        assert!(out <= READ_BYTES + 2 * BLOCK_BYTES, "held {out} bytes");
    }
}
