//! Opening a log directory: scan the segments, rebuild the index, cut a torn tail.
//!
//! Owns: the rules that decide what on disk is the log. Must not repair anything silently:
//! a bad record that is not the torn tail of the last write is `Error::Corruption`.
//!
//! The rules, in order:
//! 1. Files named `<seq>.log` are segments; `spare-*` are recycled files; others are ignored.
//! 2. A segment is *activated* when its header block is valid and names its own seq.
//!    Unactivated segments may only trail the activated ones (prepared ahead of need); they
//!    become spares (full size) or are removed (half-made).
//! 3. Segment S followed by activated T: T's header must say it follows S, and S's records
//!    must parse without a gap up to exactly `T.prev_end`. Anything else is corruption.
//! 4. The last activated segment ends at its first bad record X. That is a torn tail — the
//!    crash cut the last group-commit write — only if no valid record of a *later* write
//!    exists after X (every valid record after X has `flush_start <= X`). Otherwise an
//!    earlier, synced write is damaged: corruption.
//! 5. `flush_seq` never decreases along the log.
//!
//! A recovered segment is never appended to: the first append opens a new segment whose
//! header seals the recovered one at its valid end. Recovery reads each segment through a
//! forward-only window of a few MiB, never a whole segment.

use std::collections::BTreeMap;
use std::rc::Rc;

use super::batch;
use super::disk::{Disk, DiskFile};
use super::engine::{Cursor, LogEngine, State};
use super::format::{
    framed_len, parse_segment_name, read_u64, segment_name, SegmentHeader, BLOCK_BYTES, RECORD_ALIGN,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use super::index::Index;
use super::window::Window;
use super::LogConfig;
use crate::{Error, Result};

/// What recovery found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    pub segments: u64,
    pub records: u64,
    pub regions: u64,
    /// `(segment, offset)` where a torn last write was cut off, if one was.
    pub torn_tail: Option<(u64, u64)>,
}

struct Scanned<F> {
    seq: u64,
    file: F,
    header: Option<SegmentHeader>,
}

pub(super) async fn open<D: Disk>(disk: D, cfg: LogConfig) -> Result<(LogEngine<D>, RecoveryReport)> {
    cfg.validate()?;
    let names = disk.list().map_err(|e| Error::io("listing the log directory", e))?;
    let mut spares: Vec<String> = names.iter().filter(|n| n.starts_with("spare-")).cloned().collect();
    spares.sort();
    let mut seqs: Vec<u64> = names.iter().filter_map(|n| parse_segment_name(n)).collect();
    seqs.sort_unstable();

    let mut scanned = Vec::with_capacity(seqs.len());
    for seq in seqs {
        scanned.push(read_segment(&disk, seq).await?);
    }
    let activated = scanned.iter().take_while(|s| s.header.is_some()).count();
    if let Some(bad) = scanned[activated..].iter().find(|s| s.header.is_some()) {
        let reason = format!(
            "segment {} follows segment {} whose header is invalid",
            bad.seq, scanned[activated].seq
        );
        return Err(corruption(scanned[activated].seq, 0, reason));
    } // Trailing, never-activated segments: prepared ahead of need, or opened by a write whose
      // header block never reached the disk. The latter may hold records stamped with the very
      // seq a new segment would get, so none is reused: all are removed.
    for s in scanned.drain(activated..) {
        let name = segment_name(s.seq);
        disk.remove(&name)
            .await
            .map_err(|e| Error::io("removing an unactivated log segment", e))?;
    }
    disk.sync_dir()
        .await
        .map_err(|e| Error::io("syncing the log directory", e))?;

    let mut index = Index::default();
    let mut report = RecoveryReport {
        segments: scanned.len() as u64,
        ..Default::default()
    };
    let mut flush_seq = 0u64;
    let mut cursor = Cursor {
        segment: 0,
        pos: 0,
        tail: Vec::new(),
        sealed: true,
    };
    for i in 0..scanned.len() {
        let seg = &scanned[i];
        let header = seg.header.expect("activated");
        assert_eq!(header.seq, seg.seq);
        let end = match scanned.get(i + 1).map(|n| n.header.expect("activated")) {
            Some(next) if next.prev_seq == seg.seq => Some(next.prev_end),
            Some(next) => {
                let reason = format!("segment {} says it follows segment {}", next.seq, next.prev_seq);
                return Err(corruption(next.seq, 0, reason));
            }
            None => None,
        };
        let mut window = Window::open(&seg.file).await?;
        let valid_end = replay_segment(&mut window, seg.seq, end, &mut index, &mut flush_seq, &mut report).await?;
        cursor = Cursor {
            segment: seg.seq,
            pos: valid_end,
            tail: Vec::new(),
            sealed: true,
        };
    }
    report.regions = index.region_ids().count() as u64;
    if let Some((seq, at)) = report.torn_tail {
        tracing::warn!(segment = seq, offset = at, "raft log: cut a torn tail left by a crash");
    }

    let segments: BTreeMap<u64, Rc<D::File>> = scanned.into_iter().map(|s| (s.seq, Rc::new(s.file))).collect();
    let next = cursor.segment + 1;
    let state = State::new(index, segments, spares, cursor, flush_seq + 1);
    let engine = LogEngine::from_parts(disk, cfg, state);
    // Best effort: on a full disk the log must still open so that what was acknowledged can
    // be read; the first append prepares the segment again and reports NoSpace if it must.
    if let Err(e) = engine.install_prepared(next).await {
        tracing::warn!(segment = next, error = %e, "could not prepare the next raft log segment at open");
    }
    Ok((engine, report))
}

/// Segment `seq`, opened, with its header (its records are read when it is replayed).
async fn read_segment<D: Disk>(disk: &D, seq: u64) -> Result<Scanned<D::File>> {
    let name = segment_name(seq);
    let file = disk
        .open(&name)
        .await
        .map_err(|e| Error::io("opening a log segment", e))?;
    let len = file
        .size_bytes()
        .await
        .map_err(|e| Error::io("sizing a log segment", e))?;
    let header = if len < BLOCK_BYTES as u64 {
        None
    } else {
        let block = file
            .read_at(0, BLOCK_BYTES)
            .await
            .map_err(|e| Error::io("reading a log segment", e))?;
        SegmentHeader::decode(&block[..]).filter(|h| h.seq == seq)
    };
    Ok(Scanned { seq, file, header })
}

/// Replays one activated segment into `index`; returns the offset its valid records end at.
/// `end` is where the next segment's header says this one ends (`None` for the last).
async fn replay_segment<F: DiskFile>(
    window: &mut Window<'_, F>,
    seq: u64,
    end: Option<u64>,
    index: &mut Index,
    flush_seq: &mut u64,
    report: &mut RecoveryReport,
) -> Result<u64> {
    let mut pos = SEGMENT_HEADER_BYTES;
    let limit = end.map_or(window.len(), |e| e as usize);
    if limit > window.len() || limit < SEGMENT_HEADER_BYTES {
        return Err(corruption(seq, limit as u64, "sealed beyond the segment's size".into()));
    }
    while pos < limit {
        let Some((header, payload)) = window.record(pos, limit, seq).await? else {
            if end.is_some() {
                return Err(corruption(seq, pos as u64, "bad record inside a sealed segment".into()));
            }
            // A record of this segment was begun here but did not survive whole: report it.
            // (Zeroes or a recycled file's stale bytes are just the clean end.)
            let head = window.get(pos, RECORD_HEADER_BYTES).await?;
            if head.len() == RECORD_HEADER_BYTES && read_u64(head, 16) == seq {
                report.torn_tail = Some((seq, pos as u64));
            }
            check_torn_tail(window, seq, pos).await?;
            break;
        };
        if header.flush_seq < *flush_seq {
            let reason = format!("write sequence goes back from {} to {}", flush_seq, header.flush_seq);
            return Err(corruption(seq, pos as u64, reason));
        }
        *flush_seq = header.flush_seq;
        let payload_offset = (pos + RECORD_HEADER_BYTES) as u64;
        batch::decode(payload, |op| index.apply(op, seq, payload_offset, payload))
            .map_err(|e| corruption(seq, pos as u64, format!("record does not replay: {e}")))?;
        report.records += 1;
        pos += framed_len(payload.len());
    }
    if end.is_some_and(|e| pos as u64 != e) {
        return Err(corruption(
            seq,
            pos as u64,
            format!("records end at {pos}, header of next segment says {limit}"),
        ));
    }
    Ok(pos as u64)
}

/// Rule 4: a bad record at `bad` in the last segment is a torn tail only if no valid record
/// of a later write follows it.
async fn check_torn_tail<F: DiskFile>(window: &mut Window<'_, F>, seq: u64, bad: usize) -> Result<()> {
    let mut at = bad + RECORD_ALIGN;
    while at + RECORD_HEADER_BYTES <= window.len() {
        if let Some((later, _)) = window.record(at, window.len(), seq).await? {
            if u64::from(later.flush_start) > bad as u64 {
                let reason = format!("bad record followed by a valid record of a later write at offset {at}");
                return Err(corruption(seq, bad as u64, reason));
            }
        }
        at += RECORD_ALIGN;
    }
    Ok(())
}

fn corruption(seq: u64, offset: u64, reason: String) -> Error {
    Error::Corruption {
        file: segment_name(seq),
        offset,
        reason,
    }
}
