//! `LogEngine`: admission, group commit, reads, and space reclamation.
//!
//! Performance-critical: `append` is on every shard's write path. No blocking syscalls, no
//! locks (the engine lives on one executor: `Rc`/`RefCell`), one fdatasync per group.
//!
//! Owns: admission, the open group and its tickets, the one writer, segment preparation, the
//! index updates once durable, reads and purge. Must not: let the index, a read or a ticket see
//! what is not durable yet, or admit a write after a failed data write or sync (`Poisoned`).
//!
//! # The write path
//! 1. `append` admits a batch synchronously: size limits, and contiguity against the
//!    *projected* log (durable index + everything admitted but not yet durable). The batch is
//!    framed as a record straight into the open, not-yet-written group, and gets a ticket.
//! 2. Whoever finds no writer running becomes the writer and writes groups, each with ONE
//!    `write_at` and ONE fdatasync, until its own ticket is durable; then it hands over.
//!    Appenders that arrive meanwhile join the next group: they share its sync.
//! 3. **Durability is established when a group's fdatasync returns.** Only then are its
//!    operations applied to the index (so reads never see what a crash could take back) and
//!    its tickets acknowledged. Assertion: `durable_ticket <= admitted_ticket`, always.
//!
//! # Failures
//! - Preparing the next segment fails (ENOSPC, ...): the groups that needed it fail with a
//!   typed error, nothing of them reached the disk, the engine goes on and retries later.
//! - A data write or fdatasync fails: what reached the disk is unknown, so the engine stops
//!   admitting writes (`Error::Poisoned`); reads go on; reopening recovers exactly what is
//!   on disk. Everything acknowledged before stays readable.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::Rc;

use event_listener::Event;

use super::batch::{self, LogBatch, Op};
use super::disk::{Disk, DiskFile};
use super::format::{
    align_down, align_up, framed_len, segment_name, RecordHeader, SegmentHeader, BLOCK_BYTES, KIND_BATCH,
    RECORD_HEADER_BYTES, SEGMENT_HEADER_BYTES,
};
use super::index::{EntryLoc, Index, Span};
use super::LogConfig;
use crate::{Error, Result};

/// Zero-filling a new segment is done in writes of this size.
const ZERO_FILL_BYTES: usize = 1 << 20;
/// Times a rewrite retries when the region changes while its log is being read.
const REWRITE_ATTEMPTS_MAX: usize = 4;
/// Largest single read `fetch` issues.
const FETCH_READ_BYTES_MAX: usize = 1 << 20;

/// One raft entry as stored: opaque data with its index and term.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub index: u64,
    pub term: u64,
    pub data: Vec<u8>,
}

/// The next step of an appender waiting for its ticket.
enum Turn {
    Done(Result<()>),
    Write,
    Wait,
}

/// What an acknowledged append reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// Admission order of this batch among all batches of this engine instance.
    pub ticket: u64,
}

/// Counters since open.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    pub appends: u64,
    pub groups_written: u64,
    pub bytes_written: u64,
    /// Durable writes (one per group); each stands for what was a write plus an fdatasync.
    pub syncs: u64,
    pub segments_live: u64,
    pub segments_prepared: u64,
    pub segments_purged: u64,
    pub regions_rewritten: u64,
}

/// What `purge` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgeReport {
    pub regions_rewritten: u64,
    pub segments_purged: u64,
}

/// Where the next admitted record goes.
#[derive(Debug, Clone)]
pub(super) struct Cursor {
    pub segment: u64,
    pub pos: u64,
    /// Bytes from `align_down(pos)` to `pos`: the partial block the next write must rewrite.
    pub tail: Vec<u8>,
    /// A recovered segment is never appended to again: the next record opens a new one.
    pub sealed: bool,
}

/// What became of the group that carries a batch: set once, when it is durable or failed.
/// Each waiter reads its own group's outcome, never a ticket comparison: after a failure,
/// later tickets may be durable while earlier ones are not.
type Outcome = Rc<RefCell<Option<Result<(), Error>>>>;

/// A run of records made durable by one write.
struct Group {
    segment: u64,
    /// Block-aligned file offset `buf[0]` is written at.
    file_start: u64,
    buf: Vec<u8>,
    /// Offsets in `buf` of this group's records.
    records: Vec<usize>,
    flush_seq: u64,
    last_ticket: u64,
    outcome: Outcome,
}
impl Group {
    fn end(&self) -> u64 {
        self.file_start + self.buf.len() as u64
    }
}

pub(super) struct State<F> {
    pub index: Index,
    /// Live segments, oldest first, with their files open.
    pub segments: BTreeMap<u64, Rc<F>>,
    /// Recycled files ready to become segments (already full size and written).
    pub spares: Vec<String>,
    /// Admission cursor (may be ahead of the disk) and the durable one.
    pub cursor: Cursor,
    pub durable: Cursor,
    /// Spans of regions touched by admitted, not yet durable batches (`None` = cleaned).
    /// With each: the ticket of the last admitted batch that touched the region; the entry
    /// expires once that ticket is durable.
    projected: HashMap<u64, (Option<Span>, u64)>,
    /// Bumped for every admitted op on a region: lets a rewrite detect concurrent changes.
    region_mods: HashMap<u64, u64>,
    pending: VecDeque<Group>,
    writing: bool,
    pub next_flush_seq: u64,
    admitted_ticket: u64,
    durable_ticket: u64,
    /// Outcome of the group the writer is writing now (no longer in `pending`).
    in_flight: Option<Outcome>,
    poisoned: Option<String>,
    /// A segment file made ready ahead of need, and whether a task is making one.
    prepared: Option<(u64, Rc<F>)>,
    preparing: bool,
    /// A purge is running: a second one would only repeat its reads and rewrites.
    purging: bool,
    stats: LogStats,
}

impl<F> State<F> {
    pub(super) fn new(
        index: Index,
        segments: BTreeMap<u64, Rc<F>>,
        spares: Vec<String>,
        cursor: Cursor,
        next_flush_seq: u64,
    ) -> Self {
        State {
            index,
            segments,
            spares,
            durable: cursor.clone(),
            cursor,
            projected: HashMap::new(),
            region_mods: HashMap::new(),
            pending: VecDeque::new(),
            writing: false,
            next_flush_seq,
            admitted_ticket: 0,
            durable_ticket: 0,
            in_flight: None,
            poisoned: None,
            prepared: None,
            preparing: false,
            purging: false,
            stats: LogStats::default(),
        }
    }

    fn projected_span(&self, region_id: u64) -> Option<Span> {
        match self.projected.get(&region_id) {
            Some((span, _)) => *span,
            None => self.index.span(region_id),
        }
    }
}

struct Shared<D: Disk> {
    disk: D,
    cfg: LogConfig,
    state: RefCell<State<D::File>>,
    /// Notified whenever a group completes (or fails) and whenever the writer hands over.
    progress: Event,
    /// Notified when a background segment preparation ends.
    prepared: Event,
}

/// The Raft log engine of one shard. Cheap to clone (shared handle); not `Send`.
pub struct LogEngine<D: Disk> {
    shared: Rc<Shared<D>>,
    /// Held by the user's handles only, never by the engine's own background task: when the
    /// last user handle is dropped, the background work it owns is cancelled, so a closed
    /// engine never touches its directory again (a reopened one may already own it).
    owner: Rc<Owner>,
}

#[derive(Default)]
struct Owner {
    /// The background preparation of the next segment; dropping a glommio task cancels it.
    prepare_task: RefCell<Option<glommio::Task<()>>>,
}

impl<D: Disk> Clone for LogEngine<D> {
    fn clone(&self) -> Self {
        LogEngine {
            shared: self.shared.clone(),
            owner: self.owner.clone(),
        }
    }
}

impl<D: Disk> LogEngine<D> {
    pub(super) fn from_parts(disk: D, cfg: LogConfig, state: State<D::File>) -> Self {
        let shared = Shared {
            disk,
            cfg,
            state: RefCell::new(state),
            progress: Event::new(),
            prepared: Event::new(),
        };
        LogEngine {
            shared: Rc::new(shared),
            owner: Rc::default(),
        }
    }

    /// The disk under the engine.
    pub fn disk(&self) -> &D {
        &self.shared.disk
    }

    pub fn config(&self) -> &LogConfig {
        &self.shared.cfg
    }

    /// Where the durable log ends: `(segment, offset)`. Everything acknowledged lies before.
    pub fn end_position(&self) -> (u64, u64) {
        let st = self.shared.state.borrow();
        (st.durable.segment, st.durable.pos)
    }

    /// Makes `batch` durable, sharing one fdatasync with every batch admitted meanwhile.
    /// Returns once it is durable; on error nothing of it is acknowledged (it may or may not
    /// survive a crash, like any unacknowledged write).
    pub async fn append(&self, batch: &LogBatch) -> Result<Appended> {
        let (ticket, outcome) = self.admit(batch, |_| true)?.expect("unconditional admission");
        self.wait_durable(ticket, &outcome).await
    }

    /// Admits `batch` if `precondition` holds on the state at admission; `None` if not.
    fn admit(
        &self,
        batch: &LogBatch,
        precondition: impl FnOnce(&State<D::File>) -> bool,
    ) -> Result<Option<(u64, Outcome)>> {
        let cfg = &self.shared.cfg;
        let mut st = self.shared.state.borrow_mut();
        if let Some(why) = &st.poisoned {
            return Err(Error::Poisoned(why.clone()));
        }
        if batch.is_empty() {
            return Err(Error::InvalidArgument("empty log batch".into()));
        }
        let framed = framed_len(batch.payload_bytes());
        if framed > cfg.batch_bytes_max() {
            return Err(Error::BatchTooLarge {
                size: framed,
                max: cfg.batch_bytes_max(),
            });
        }
        if !precondition(&st) {
            return Ok(None);
        }
        let spans = self.check_ops(&st, batch)?;
        for (region_id, span) in spans {
            let ticket = st.admitted_ticket + 1; // the ticket `frame` assigns below
            st.projected.insert(region_id, (span, ticket));
            *st.region_mods.entry(region_id).or_default() += 1;
        }
        let admitted = self.frame(&mut st, batch);
        st.stats.appends += 1;
        Ok(Some(admitted))
    }

    /// Validates every op of `batch` against the projected log; returns the new spans of the
    /// regions it touches. Nothing is changed on error.
    fn check_ops(&self, st: &State<D::File>, batch: &LogBatch) -> Result<HashMap<u64, Option<Span>>> {
        let max = self.shared.cfg.entry_bytes_max;
        let mut spans: HashMap<u64, Option<Span>> = HashMap::new();
        batch::decode(batch.payload(), |op| {
            match op {
                Op::EntriesBegin {
                    region_id,
                    first_index,
                    count,
                } => {
                    if first_index.checked_add(u64::from(count)).is_none() {
                        return Err(Error::InvalidArgument(format!(
                            "region {region_id}: index {first_index} overflows"
                        )));
                    }
                    let cur = *spans.entry(region_id).or_insert_with(|| st.projected_span(region_id));
                    let span = Span::append(cur, region_id, first_index, u64::from(count))?;
                    spans.insert(region_id, Some(span));
                }
                Op::Entry { data_len, .. } if data_len as usize > max => {
                    return Err(Error::EntryTooLarge {
                        size: data_len as usize,
                        max,
                    });
                }
                Op::CompactTo { region_id, index } => {
                    if index == 0 {
                        return Err(Error::InvalidArgument(format!("region {region_id}: compact_to(0)")));
                    }
                    let cur = *spans.entry(region_id).or_insert_with(|| st.projected_span(region_id));
                    spans.insert(region_id, Some(Span::compact(cur, index)));
                }
                // A state change is a change of the region too: a rewrite that read the old
                // value must not land after it (see `rewrite_region`).
                Op::PutState { region_id, .. } | Op::DeleteState { region_id, .. } => {
                    spans.entry(region_id).or_insert_with(|| st.projected_span(region_id));
                }
                Op::Clean { region_id } => {
                    spans.insert(region_id, None);
                }
                Op::Entry { .. } => {}
            }
            Ok(())
        })?;
        Ok(spans)
    }

    /// Frames `batch` as a record at the admission cursor, opening a new group or segment
    /// when needed. Returns the batch's ticket.
    fn frame(&self, st: &mut State<D::File>, batch: &LogBatch) -> (u64, Outcome) {
        let cfg = &self.shared.cfg;
        let framed = framed_len(batch.payload_bytes()) as u64;
        if st.cursor.sealed || st.cursor.pos + framed > cfg.segment_bytes {
            self.open_segment(st);
        }
        let open_group = st.pending.back().is_some_and(|g| {
            g.segment == st.cursor.segment && g.end() == st.cursor.pos && g.buf.len() < cfg.group_bytes_max
        });
        if !open_group {
            let file_start = align_down(st.cursor.pos as usize, BLOCK_BYTES) as u64;
            let flush_seq = st.next_flush_seq;
            st.next_flush_seq += 1;
            let group = Group {
                segment: st.cursor.segment,
                file_start,
                buf: st.cursor.tail.clone(),
                records: Vec::new(),
                flush_seq,
                last_ticket: 0,
                outcome: Outcome::default(),
            };
            debug_assert_eq!(group.end(), st.cursor.pos);
            st.pending.push_back(group);
        }
        let group = st.pending.back_mut().expect("a group is open");
        // The write that carries this record starts at its group's first record.
        let flush_start = group
            .records
            .first()
            .map_or(st.cursor.pos, |&r| group.file_start + r as u64);
        let header = RecordHeader {
            payload_len: batch.payload_bytes() as u32,
            kind: KIND_BATCH,
            flush_start: flush_start as u32,
            segment_seq: group.segment,
            flush_seq: group.flush_seq,
        };
        let at = group.buf.len();
        group.buf.resize(at + framed as usize, 0);
        header.encode(batch.payload(), &mut group.buf[at..]);
        group.records.push(at);
        st.admitted_ticket += 1;
        group.last_ticket = st.admitted_ticket;
        let end = group.end();
        let tail_from = align_down(group.buf.len(), BLOCK_BYTES);
        // Reuses the tail buffer: this runs for every append.
        st.cursor.tail.clear();
        st.cursor.tail.extend_from_slice(&group.buf[tail_from..]);
        st.cursor.pos = end;
        assert!(
            st.cursor.pos <= cfg.segment_bytes,
            "a record never crosses a segment's end"
        );
        let outcome = st.pending.back().expect("the group just framed into").outcome.clone();
        (st.admitted_ticket, outcome)
    }

    /// Moves the admission cursor to a new segment whose first group starts with its header.
    fn open_segment(&self, st: &mut State<D::File>) {
        let prev = &st.cursor;
        let header = SegmentHeader {
            seq: prev.segment + 1,
            prev_seq: prev.segment,
            prev_end: prev.pos,
        };
        let mut block = vec![0u8; SEGMENT_HEADER_BYTES];
        header.encode(&mut block);
        let flush_seq = st.next_flush_seq;
        st.next_flush_seq += 1;
        st.pending.push_back(Group {
            segment: header.seq,
            file_start: 0,
            buf: block,
            records: Vec::new(),
            flush_seq,
            last_ticket: st.admitted_ticket,
            outcome: Outcome::default(),
        });
        st.cursor = Cursor {
            segment: header.seq,
            pos: SEGMENT_HEADER_BYTES as u64,
            tail: Vec::new(),
            sealed: false,
        };
    }

    /// Waits until the group carrying `ticket` is durable or failed, writing groups itself
    /// when no one else is.
    async fn wait_durable(&self, ticket: u64, outcome: &Outcome) -> Result<Appended> {
        loop {
            let listener = self.shared.progress.listen();
            match self.turn(outcome) {
                Turn::Done(result) => return result.map(|()| Appended { ticket }),
                Turn::Write => {
                    // If this future is dropped mid-write, nobody knows what reached the disk:
                    // poison, fail every waiter, and free the writer's role.
                    let guard = scopeguard::guard((), |()| self.abandon_writing());
                    self.write_until(outcome).await;
                    scopeguard::ScopeGuard::into_inner(guard);
                    self.shared.state.borrow_mut().writing = false;
                    self.shared.progress.notify(usize::MAX);
                }
                Turn::Wait => listener.await,
            }
        }
    }

    /// What the holder of `outcome` does next; takes the writer's role when it is free.
    fn turn(&self, outcome: &Outcome) -> Turn {
        if let Some(result) = outcome.borrow().as_ref() {
            return Turn::Done(result.as_ref().map(|_| ()).map_err(Error::duplicate));
        }
        let mut st = self.shared.state.borrow_mut();
        if st.writing {
            return Turn::Wait;
        }
        st.writing = true;
        Turn::Write
    }

    /// The writer: writes pending groups in order until `outcome` is set.
    async fn write_until(&self, outcome: &Outcome) {
        while outcome.borrow().is_none() {
            let group = {
                let mut st = self.shared.state.borrow_mut();
                let group = st
                    .pending
                    .pop_front()
                    .expect("an unfinished outcome has a pending group");
                st.in_flight = Some(group.outcome.clone());
                group
            };
            let result = self.write_group(&group).await;
            let mut st = self.shared.state.borrow_mut();
            st.in_flight = None;
            match result {
                Ok(()) => self.complete(&mut st, group),
                Err(e) => self.fail(&mut st, &group, e),
            }
            drop(st);
            self.shared.progress.notify(usize::MAX);
        }
    }

    /// The writer was cancelled mid-write (its future dropped).
    fn abandon_writing(&self) {
        let mut st = self.shared.state.borrow_mut();
        let why = "a log writer was cancelled during a write".to_string();
        tracing::error!("{why}; the log engine stops accepting writes");
        st.poisoned = Some(why.clone());
        let failed = Error::Poisoned(why);
        for outcome in st
            .in_flight
            .take()
            .into_iter()
            .chain(st.pending.drain(..).map(|g| g.outcome))
        {
            *outcome.borrow_mut() = Some(Err(failed.duplicate()));
        }
        st.projected.clear();
        st.writing = false;
        drop(st);
        self.shared.progress.notify(usize::MAX);
    }

    async fn write_group(&self, group: &Group) -> Result<(), (bool, Error)> {
        let file = self.segment_file(group).await.map_err(|e| (false, e))?;
        let len = align_up(group.buf.len(), BLOCK_BYTES);
        let mut buf = file.alloc(len);
        buf.as_mut()[..group.buf.len()].copy_from_slice(&group.buf);
        buf.as_mut()[group.buf.len()..].fill(0);
        // Durability of every record in this group is established here, by ONE durable write.
        file.write_durable(buf, group.file_start)
            .await
            .map_err(|e| (true, Error::io("writing the raft log", e)))?;
        if self.shared.state.borrow().stats.groups_written == 0 {
            self.shared.disk.after_first_write();
        }
        let mut st = self.shared.state.borrow_mut();
        st.stats.groups_written += 1;
        st.stats.syncs += 1;
        st.stats.bytes_written += len as u64;
        Ok(())
    }

    /// The file of `group`'s segment: an existing live one, or a prepared one activated now.
    async fn segment_file(&self, group: &Group) -> Result<Rc<D::File>> {
        if let Some(f) = self.shared.state.borrow().segments.get(&group.segment) {
            return Ok(f.clone());
        }
        assert_eq!(
            group.file_start, 0,
            "a segment is activated by the group carrying its header"
        );
        loop {
            let listener = self.shared.prepared.listen();
            match self.take_prepared(group.segment) {
                Some(Ok(file)) => {
                    self.spawn_prepare(group.segment + 1);
                    return Ok(file);
                }
                Some(Err(())) => {
                    let result = self.prepare_segment(group.segment).await;
                    let mut st = self.shared.state.borrow_mut();
                    st.preparing = false;
                    st.prepared = Some((group.segment, result?));
                }
                None => listener.await,
            }
        }
    }

    /// Activates the prepared segment `seq` (`Some(Ok)`), or claims the job of preparing it
    /// (`Some(Err)`), or says a background preparation is under way (`None`).
    fn take_prepared(&self, seq: u64) -> Option<Result<Rc<D::File>, ()>> {
        let mut st = self.shared.state.borrow_mut();
        if let Some((prepared, file)) = st.prepared.take() {
            assert_eq!(prepared, seq, "segments are activated in order");
            st.segments.insert(seq, file.clone());
            return Some(Ok(file));
        }
        if st.preparing {
            return None;
        }
        st.preparing = true;
        Some(Err(()))
    }

    /// Makes segment `seq` ready before the first append needs it (called at open).
    pub(super) async fn install_prepared(&self, seq: u64) -> Result<()> {
        let file = self.prepare_segment(seq).await?;
        self.shared.state.borrow_mut().prepared = Some((seq, file));
        Ok(())
    }

    /// Prepares segment `seq` in the background so the writer rarely waits for one.
    fn spawn_prepare(&self, seq: u64) {
        {
            let mut st = self.shared.state.borrow_mut();
            if st.preparing || st.prepared.is_some() {
                return;
            }
            st.preparing = true;
        }
        // The task's own handle has an owner of its own: it must not keep the user's alive.
        let engine = LogEngine {
            shared: self.shared.clone(),
            owner: Rc::default(),
        };
        let task = glommio::spawn_local(async move {
            let result = engine.prepare_segment(seq).await;
            let mut st = engine.shared.state.borrow_mut();
            st.preparing = false;
            match result {
                Ok(file) => st.prepared = Some((seq, file)),
                // The writer will try again inline and report the error to its callers.
                Err(e) => tracing::warn!(seq, error = %e, "preparing the next raft log segment failed"),
            }
            drop(st);
            engine.shared.prepared.notify(usize::MAX);
        });
        self.owner.prepare_task.replace(Some(task));
    }

    /// Makes segment file `seq` ready: full size, every block written (so writes into it never
    /// extend the file), its name durable. A recycled spare is renamed; else a new file is
    /// allocated and zero-filled.
    pub(super) async fn prepare_segment(&self, seq: u64) -> Result<Rc<D::File>> {
        let disk = &self.shared.disk;
        let name = segment_name(seq);
        let spare = self.shared.state.borrow_mut().spares.pop();
        match spare {
            Some(spare) => {
                if let Err(e) = disk.rename(&spare, &name).await {
                    self.shared.state.borrow_mut().spares.push(spare);
                    return Err(Error::io("recycling a log segment", e));
                }
            }
            None => {
                if let Err(e) = self.create_segment(&name).await {
                    // Leave no half-made segment behind: recovery would have to guess about it.
                    let _ = disk.remove(&name).await;
                    return Err(e);
                }
            }
        }
        // Reopened for durable writes (the handle that pre-wrote it does plain writes).
        let file = disk
            .open(&name)
            .await
            .map_err(|e| Error::io("opening a prepared log segment", e))?;
        disk.sync_dir()
            .await
            .map_err(|e| Error::io("syncing the log directory", e))?;
        self.shared.state.borrow_mut().stats.segments_prepared += 1;
        Ok(Rc::new(file))
    }

    async fn create_segment(&self, name: &str) -> Result<()> {
        let size = self.shared.cfg.segment_bytes;
        let file = self
            .shared
            .disk
            .create(name)
            .await
            .map_err(|e| Error::io("creating a log segment", e))?;
        file.allocate(size)
            .await
            .map_err(|e| Error::io("allocating a log segment", e))?;
        let mut pos = 0;
        while pos < size {
            let len = ZERO_FILL_BYTES.min((size - pos) as usize);
            let mut buf = file.alloc(len);
            buf.as_mut().fill(0);
            file.write_at(buf, pos)
                .await
                .map_err(|e| Error::io("pre-writing a log segment", e))?;
            pos += len as u64;
        }
        file.sync()
            .await
            .map_err(|e| Error::io("syncing a new log segment", e))?;
        Ok(())
    }

    /// A group is durable: apply its records to the index, advance the durable cursor.
    fn complete(&self, st: &mut State<D::File>, group: Group) {
        for &at in &group.records {
            let (header, payload) = RecordHeader::decode(&group.buf[at..], group.segment).expect("we framed it");
            let payload_offset = group.file_start + (at + RECORD_HEADER_BYTES) as u64;
            batch::decode(payload, |op| st.index.apply(op, group.segment, payload_offset, payload))
                .expect("admission checked every op against the projected log");
            debug_assert_eq!(header.flush_seq, group.flush_seq);
        }
        assert!(
            group.last_ticket >= st.durable_ticket,
            "groups complete in admission order"
        );
        st.durable_ticket = group.last_ticket;
        assert!(
            st.durable_ticket <= st.admitted_ticket,
            "durable never runs ahead of admitted"
        );
        let tail_from = align_down(group.buf.len(), BLOCK_BYTES);
        st.durable = Cursor {
            segment: group.segment,
            pos: group.end(),
            tail: group.buf[tail_from..].to_vec(),
            sealed: false,
        };
        st.stats.segments_live = st.segments.len() as u64;
        let durable = group.last_ticket;
        st.projected.retain(|_, (_, ticket)| *ticket > durable);
        *group.outcome.borrow_mut() = Some(Ok(()));
    }

    /// A group failed: it and every group admitted after it fail; admission restarts from the
    /// durable cursor (a group that was to open a segment opens it again next time). A failed
    /// data write or sync (`wrote`) poisons the engine; a failed preparation does not.
    fn fail(&self, st: &mut State<D::File>, group: &Group, (wrote, err): (bool, Error)) {
        tracing::error!(segment = group.segment, error = %err, wrote, "raft log group failed");
        let err = if wrote {
            st.poisoned = Some(err.to_string());
            Error::Poisoned(err.to_string())
        } else {
            err
        };
        for outcome in std::iter::once(group.outcome.clone()).chain(st.pending.drain(..).map(|g| g.outcome)) {
            *outcome.borrow_mut() = Some(Err(err.duplicate()));
        }
        st.projected.clear();
        st.cursor = st.durable.clone();
    }

    // ---- reads ----

    /// `(first, last)` index of the region's log; `last < first` when it holds no entries.
    pub fn span(&self, region_id: u64) -> Option<(u64, u64)> {
        self.shared
            .state
            .borrow()
            .index
            .span(region_id)
            .map(|s| (s.first, s.last))
    }

    pub fn term(&self, region_id: u64, index: u64) -> Option<u64> {
        let st = self.shared.state.borrow();
        st.index.region(region_id)?.entry(index).map(|e| e.term)
    }

    pub fn state(&self, region_id: u64, key: &[u8]) -> Option<Vec<u8>> {
        let st = self.shared.state.borrow();
        st.index.region(region_id)?.state(key).map(<[u8]>::to_vec)
    }

    pub fn region_ids(&self) -> Vec<u64> {
        let mut ids: Vec<u64> = self.shared.state.borrow().index.region_ids().collect();
        ids.sort_unstable();
        ids
    }

    pub fn stats(&self) -> LogStats {
        let st = self.shared.state.borrow();
        LogStats {
            segments_live: st.segments.len() as u64,
            ..st.stats
        }
    }
    fn out_of_range(&self, region_id: u64, index: u64) -> Error {
        self.out_of_range_in(self.shared.state.borrow().index.span(region_id), region_id, index)
    }

    fn out_of_range_in(&self, span: Option<Span>, region_id: u64, index: u64) -> Error {
        let (log_first, log_last) = span.map_or((0, 0), |s| (s.first, s.last));
        Error::IndexOutOfRange {
            region_id,
            index,
            log_first,
            log_last,
        }
    }

    /// Whether entry `index` of the region still lives at `loc` in a live segment.
    fn still_there(&self, region_id: u64, index: u64, loc: &EntryLoc) -> bool {
        let st = self.shared.state.borrow();
        st.segments.contains_key(&loc.segment)
            && st
                .index
                .region(region_id)
                .and_then(|l| l.entry(index))
                .is_some_and(|e| e == loc)
    }

    /// Entries `lo..hi` of a region, stopping once `max_bytes` of data are gathered (at least
    /// one entry is returned). Every entry's data is checked against its CRC.
    pub async fn fetch(&self, region_id: u64, lo: u64, hi: u64, max_bytes: usize) -> Result<Vec<LogEntry>> {
        if lo >= hi {
            return Err(Error::InvalidArgument(format!("empty range {lo}..{hi}")));
        }
        let (locs, files) = {
            let st = self.shared.state.borrow();
            let log = st.index.region(region_id);
            let span = log.and_then(|l| l.span());
            let out_of_range = |index| self.out_of_range_in(span, region_id, index);
            let (log, span) = match (log, span) {
                (Some(l), Some(s)) if lo >= s.first && hi <= s.last + 1 => (l, s),
                (_, Some(s)) if lo < s.first => return Err(out_of_range(lo)),
                _ => return Err(out_of_range(hi - 1)),
            };
            debug_assert!(hi <= span.last + 1);
            let mut locs = Vec::new();
            let mut bytes = 0usize;
            for index in lo..hi {
                let loc = *log.entry(index).expect("inside the span");
                bytes += loc.len as usize;
                locs.push((index, loc));
                if bytes >= max_bytes {
                    break;
                }
            }
            let files: HashMap<u64, Rc<D::File>> = locs
                .iter()
                .map(|(_, l)| (l.segment, st.segments[&l.segment].clone()))
                .collect();
            (locs, files)
        };
        let mut out = Vec::with_capacity(locs.len());
        let mut i = 0;
        while i < locs.len() {
            // One read covers a run of entries that sit close together in one segment.
            let seg = locs[i].1.segment;
            let start = align_down(locs[i].1.offset as usize, BLOCK_BYTES);
            let mut j = i;
            while j + 1 < locs.len() {
                let next = &locs[j + 1].1;
                let end = (next.offset + u64::from(next.len)) as usize;
                if next.segment != seg || align_up(end, BLOCK_BYTES) - start > FETCH_READ_BYTES_MAX {
                    break;
                }
                j += 1;
            }
            let last = &locs[j].1;
            let end = align_up((last.offset + u64::from(last.len)) as usize, BLOCK_BYTES).max(start + BLOCK_BYTES);
            let buf = files[&seg]
                .read_at(start as u64, end - start)
                .await
                .map_err(|e| Error::io("reading the raft log", e))?;
            for (index, loc) in &locs[i..=j] {
                let from = loc.offset as usize - start;
                let data = &buf[from..from + loc.len as usize];
                if crc32c::crc32c(data) != loc.crc {
                    if !self.still_there(region_id, *index, loc) {
                        // Compacted (and its segment recycled) while we were reading.
                        return Err(self.out_of_range(region_id, *index));
                    }
                    return Err(Error::Corruption {
                        file: segment_name(seg),
                        offset: loc.offset,
                        reason: format!("region {region_id} entry {index} fails its checksum on read"),
                    });
                }
                out.push(LogEntry {
                    index: *index,
                    term: loc.term,
                    data: data.to_vec(),
                });
            }
            i = j + 1;
        }
        Ok(out)
    }

    // ---- space reclamation ----

    /// Log GC for one region: discards entries below `index`. Durable when it returns.
    pub async fn compact_to(&self, region_id: u64, index: u64) -> Result<Appended> {
        let mut b = LogBatch::new();
        b.compact_to(region_id, index);
        self.append(&b).await
    }

    /// Removes a region's log and states. Durable when it returns.
    pub async fn clean(&self, region_id: u64) -> Result<Appended> {
        let mut b = LogBatch::new();
        b.clean(region_id);
        self.append(&b).await
    }

    /// Reclaims space: when more than `purge_segments_threshold` segments are live, every
    /// region that still has data in the excess oldest segments is rewritten into the active
    /// one (its whole live log and states, as one record), then every segment older than
    /// the oldest live data is recycled or deleted. The owner calls this periodically.
    pub async fn purge(&self) -> Result<PurgeReport> {
        if std::mem::replace(&mut self.shared.state.borrow_mut().purging, true) {
            return Ok(PurgeReport::default());
        }
        let _reset = scopeguard::guard((), |()| self.shared.state.borrow_mut().purging = false);
        self.purge_once().await
    }

    async fn purge_once(&self) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        let cutoff = {
            let st = self.shared.state.borrow();
            let live = st.segments.len();
            let newest = st.segments.keys().next_back().copied().unwrap_or(0);
            (live > self.shared.cfg.purge_segments_threshold)
                .then(|| newest + 1 - self.shared.cfg.purge_segments_threshold as u64)
        };
        if let Some(cutoff) = cutoff {
            let pinning = self.shared.state.borrow().index.regions_pinning(cutoff);
            for region_id in pinning {
                if self.rewrite_region(region_id).await? {
                    report.regions_rewritten += 1;
                }
            }
        }
        report.segments_purged = self.purge_dead_segments().await?;
        let mut st = self.shared.state.borrow_mut();
        st.stats.regions_rewritten += report.regions_rewritten;
        st.stats.segments_purged += report.segments_purged;
        Ok(report)
    }

    /// Re-appends a region's live log and states as one record (clean, then everything).
    /// Waits for the region's own in-flight writes first, and gives up (until the next purge)
    /// if the region keeps changing under it. Returns whether it was rewritten.
    async fn rewrite_region(&self, region_id: u64) -> Result<bool> {
        for _ in 0..REWRITE_ATTEMPTS_MAX {
            if self.try_rewrite_region(region_id).await? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    async fn try_rewrite_region(&self, region_id: u64) -> Result<bool> {
        loop {
            let listener = self.shared.progress.listen();
            if !self.shared.state.borrow().projected.contains_key(&region_id) {
                break;
            }
            listener.await; // a write of this region is in flight
        }
        let (span, states, mods) = {
            let st = self.shared.state.borrow();
            let Some(log) = st.index.region(region_id) else {
                return Ok(false);
            };
            let states: Vec<(Vec<u8>, Vec<u8>)> = log.states().map(|(k, v)| (k.to_vec(), v.to_vec())).collect();
            (log.span(), states, st.region_mods.get(&region_id).copied())
        };
        let mut batch = LogBatch::new();
        batch.clean(region_id);
        if let Some(span) = span {
            batch.compact_to(region_id, span.first);
            if !span.is_empty() {
                let entries = self.fetch(region_id, span.first, span.last + 1, usize::MAX).await?;
                batch.add_entries(
                    region_id,
                    span.first,
                    entries.iter().map(|e| (e.term, e.data.as_slice())),
                );
            }
        }
        for (k, v) in &states {
            batch.put_state(region_id, k, v);
        }
        if framed_len(batch.payload_bytes()) > self.shared.cfg.batch_bytes_max() {
            tracing::warn!(
                region_id,
                bytes = batch.payload_bytes(),
                "region's live log exceeds one segment; not rewritten"
            );
            return Ok(false);
        }
        let unchanged = |st: &State<D::File>| {
            st.region_mods.get(&region_id).copied() == mods && !st.projected.contains_key(&region_id)
        };
        match self.admit(&batch, unchanged)? {
            Some((ticket, outcome)) => self.wait_durable(ticket, &outcome).await.map(|_| true),
            None => Ok(false),
        }
    }

    /// Recycles (up to `recycle_segments_max` spares) or deletes segments holding no live data,
    /// oldest first, making each removal durable before the next: a crash in between leaves
    /// a log whose oldest segments are gone, never one with a hole. The segment the durable
    /// log ends in is never purged: the next group may still write into it.
    async fn purge_dead_segments(&self) -> Result<u64> {
        let dead: Vec<u64> = {
            let st = self.shared.state.borrow();
            let keep_from = st
                .index
                .oldest_live_segment()
                .unwrap_or(u64::MAX)
                .min(st.durable.segment);
            st.segments.keys().copied().filter(|&s| s < keep_from).collect()
        };
        let disk = &self.shared.disk;
        for &seq in &dead {
            let name = segment_name(seq);
            let recycle = {
                let mut st = self.shared.state.borrow_mut();
                st.segments.remove(&seq);
                st.spares.len() < self.shared.cfg.recycle_segments_max
            };
            if recycle {
                let spare = format!("spare-{seq:016x}");
                disk.rename(&name, &spare)
                    .await
                    .map_err(|e| Error::io("recycling a log segment", e))?;
                self.shared.state.borrow_mut().spares.push(spare);
            } else {
                disk.remove(&name)
                    .await
                    .map_err(|e| Error::io("removing a log segment", e))?;
            }
            disk.sync_dir()
                .await
                .map_err(|e| Error::io("syncing the log directory", e))?;
        }
        #[cfg(debug_assertions)]
        {
            let st = self.shared.state.borrow();
            let live: Vec<u64> = st.segments.keys().copied().collect();
            st.index.check(&live);
        }
        Ok(dead.len() as u64)
    }
}
