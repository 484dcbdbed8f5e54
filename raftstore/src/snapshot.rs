//! Region snapshots as files, never whole in memory: the leader exports its region's SST files
//! from one consistent view of the KV engine; the transport streams them in bounded chunks
//! (`snapshot_chunks`); the receiver writes the chunks to files of its own, syncs them, and
//! only then hands raft the snapshot; the install stages those files durably and ingests them.
//!
//! Owns: the snapshot's format (`SnapshotMeta`, what raft's `MsgSnapshot` carries: the applied
//! index, the region's state at it (adopted by the install), and, per file, its CF, size,
//! checksum, key count and key-value digest), where its files
//! live in a shard's snapshot dir (`gen-R-I/`, `recv-R-I/`, `staged-R/`, `install-R-I/`, files
//! `N.sst`), and the blocking file work (the shard runs it off its thread; the simulator inline).
//! Must not: hold more of a snapshot in memory than one chunk, or ingest a file whose bytes,
//! CF or keys differ from what its sender announced.
//!
//! Durability: a received snapshot is synced (files and directory) before raft sees it; it is
//! staged (renamed, directory synced) before the log records the install; a crash anywhere
//! after is finished on restart from the staged copy (`finish_staged`).

use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use corekv_storage::kv::{Cf, KvEngine};
use corekv_storage::Error as StorageError;

use crate::apply;
use crate::error::{Error, Result};
use crate::keys::data_range;
use crate::region::Region;

/// Column families a region snapshot carries.
const SNAPSHOT_CFS: [Cf; 3] = [Cf::Default, Cf::Lock, Cf::Write];
/// Bytes read from or written to a snapshot file at a time (and a chunk's most).
pub const CHUNK_BYTES_MAX: usize = 1 << 20;
/// The name of the metadata file in a staged snapshot.
const META_FILE: &str = "meta";

/// One file of a snapshot: an SST of one CF.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotFile {
    pub cf: u8,
    pub bytes: u64,
    /// Of the file's bytes (the transfer's check).
    pub crc32c: u32,
    /// Keys and the digest of its key-values (the install's check, after ingest).
    pub keys: u64,
    pub digest: u32,
}

/// What raft's `MsgSnapshot` carries as its data.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct SnapshotMeta {
    pub applied: u64,
    /// The region's state at `applied` (as `apply` stores it): the installing replica adopts
    /// it, so one that missed a split in the log learns its region's new range and epoch.
    pub region: Vec<u8>,
    pub files: Vec<SnapshotFile>,
}

impl SnapshotMeta {
    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rkyv::rancor::Error>(self)
            .expect("in memory")
            .into_vec()
    }

    /// The metadata `data` of a snapshot of `region_id` announced at `index`, checked: it
    /// decodes, it is at that index, its files are one non-empty file per snapshot CF.
    pub fn decode(region_id: u64, index: u64, data: &[u8]) -> Result<SnapshotMeta> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(data.len());
        aligned.extend_from_slice(data);
        let meta = rkyv::from_bytes::<SnapshotMeta, rkyv::rancor::Error>(&aligned)
            .map_err(|e| corrupt(region_id, format!("undecodable snapshot: {e}")))?;
        if meta.applied != index {
            return Err(corrupt(
                region_id,
                format!("snapshot data at {} announced at {index}", meta.applied),
            ));
        }
        meta.region(region_id)?;
        // Files come one per CF, in CF order, none empty: what `generate` makes, and what
        // `install`'s per-CF check after each ingest relies on.
        let cfs_ascend = meta.files.windows(2).all(|w| w[0].cf < w[1].cf);
        if !cfs_ascend
            || meta
                .files
                .iter()
                .any(|f| usize::from(f.cf) >= SNAPSHOT_CFS.len() || f.bytes == 0)
        {
            return Err(corrupt(
                region_id,
                "snapshot files are not one non-empty file per known CF",
            ));
        }
        Ok(meta)
    }

    /// The region's state the snapshot carries (`Corruption` of `region_id` if it is not one).
    pub fn region(&self, region_id: u64) -> Result<Region> {
        apply::decode_region(region_id, &self.region)
    }

    /// The files' sizes, in order.
    pub fn sizes(&self) -> Vec<u64> {
        self.files.iter().map(|f| f.bytes).collect()
    }
}

fn corrupt(region_id: u64, reason: impl Into<String>) -> Error {
    Error::Corruption {
        region_id,
        reason: reason.into(),
    }
}

fn io(what: &'static str) -> impl Fn(std::io::Error) -> Error {
    move |e| StorageError::io(what, e).into()
}

/// Where the leader keeps the files of its snapshot of `region_id` at `index` while sending.
pub fn gen_dir(snap_dir: &Path, region_id: u64, index: u64) -> PathBuf {
    snap_dir.join(format!("gen-{region_id}-{index}"))
}

/// Where a receiver writes a snapshot of `region_id` at `index` as it arrives.
pub fn recv_dir(snap_dir: &Path, region_id: u64, index: u64) -> PathBuf {
    snap_dir.join(format!("recv-{region_id}-{index}"))
}

fn staged_dir(snap_dir: &Path, region_id: u64) -> PathBuf {
    snap_dir.join(format!("staged-{region_id}"))
}

/// File `n` of a snapshot directory.
pub fn file_path(dir: &Path, n: u32) -> PathBuf {
    dir.join(format!("{n}.sst"))
}

/// Removes every directory of `snap_dir` named `{kind}-{region_id}-{index}` with an index
/// below `below` (older snapshots of the region, sent or received).
fn clear_older(snap_dir: &Path, kind: &str, region_id: u64, below: u64) {
    let prefix = format!("{kind}-{region_id}-");
    let Ok(entries) = std::fs::read_dir(snap_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let index = name.strip_prefix(&prefix).and_then(|i| i.parse::<u64>().ok());
        if index.is_some_and(|i| i < below) {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// On start: what no stream will finish any more (files being sent or received by a process
/// that stopped). Staged snapshots stay: `finish_staged` needs them.
pub fn clear_unfinished(snap_dir: &Path) {
    let Ok(entries) = std::fs::read_dir(snap_dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("gen-") || name.starts_with("recv-") || name.starts_with("install-") {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// Builds a snapshot of region `region_id` from ONE consistent view of the KV engine: SST files
/// of its range for every data CF in `gen_dir`, the applied index and the region's state read
/// from that same view (so data, index and range agree). Returns the applied index and the metadata raft carries. The region's
/// older snapshot files are removed (a stream still sending one fails: its snapshot was stale,
/// which is why this one is made). Slow (scans and checksums the region): off the shard.
pub fn generate(kv: &KvEngine, region_id: u64, snap_dir: &Path) -> Result<(u64, Vec<u8>)> {
    let view = kv.snapshot();
    let applied = apply::applied_index_in(&view, region_id)?;
    let state = apply::region_state_in(&view, region_id)?;
    let region = &apply::decode_region(region_id, &state)?;
    clear_older(snap_dir, "gen", region.id, applied.saturating_add(1));
    let dir = gen_dir(snap_dir, region.id, applied);
    let exports = view.export_ssts(&dir, &SNAPSHOT_CFS, &data_range(region)?)?;
    let mut files = Vec::with_capacity(exports.len());
    for (n, e) in exports.into_iter().enumerate() {
        let path = file_path(&dir, n as u32);
        std::fs::rename(&e.path, &path).map_err(io("naming a snapshot file"))?;
        let (bytes, crc32c) = checksum(&path)?;
        let cf = SNAPSHOT_CFS.iter().position(|&c| c == e.cf).expect("a snapshot CF") as u8;
        files.push(SnapshotFile {
            cf,
            bytes,
            crc32c,
            keys: e.digest.keys,
            digest: e.digest.crc32c,
        });
    }
    let meta = SnapshotMeta {
        applied,
        region: state,
        files,
    };
    Ok((applied, meta.encode()))
}

/// A file's size and crc32c, read a chunk at a time.
fn checksum(path: &Path) -> Result<(u64, u32)> {
    let mut file = std::fs::File::open(path).map_err(io("reading a snapshot file"))?;
    let (mut bytes, mut crc, mut buf) = (0u64, 0u32, vec![0u8; CHUNK_BYTES_MAX]);
    loop {
        let n = file.read(&mut buf).map_err(io("reading a snapshot file"))?;
        if n == 0 {
            return Ok((bytes, crc));
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        bytes += n as u64;
    }
}

/// `len` bytes of file `n` of `dir` from `offset` (a chunk to send).
pub fn read_chunk(dir: &Path, n: u32, offset: u64, len: usize) -> std::io::Result<Vec<u8>> {
    if len == 0 {
        return Ok(Vec::new()); // the one piece of a snapshot of no data (no file to open)
    }
    let mut file = std::fs::File::open(file_path(dir, n))?;
    file.seek(SeekFrom::Start(offset))?;
    let mut buf = vec![0u8; len];
    file.read_exact(&mut buf)?;
    Ok(buf)
}

/// Writes a received chunk at `offset` of file `n` of its reception's dir (made afresh by a
/// stream's first chunk: a retried stream never finds an earlier attempt's bytes).
pub fn write_chunk(snap_dir: &Path, (region_id, index): (u64, u64), n: u32, offset: u64, bytes: &[u8]) -> Result<()> {
    let dir = recv_dir(snap_dir, region_id, index);
    if n == 0 && offset == 0 {
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(io("creating a snapshot dir"))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(file_path(&dir, n))
        .map_err(io("writing a snapshot file"))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io("writing a snapshot file"))?;
    file.write_all(bytes).map_err(io("writing a snapshot file"))
}

/// A received snapshot is whole (its chunks checked): its files and directory are synced, so
/// that what raft is about to take survives a crash.
pub fn seal(snap_dir: &Path, (region_id, index): (u64, u64), files: u32) -> Result<()> {
    let dir = recv_dir(snap_dir, region_id, index);
    std::fs::create_dir_all(&dir).map_err(io("creating a snapshot dir"))?;
    for n in 0..files {
        let file = std::fs::File::open(file_path(&dir, n)).map_err(io("syncing a snapshot file"))?;
        file.sync_all().map_err(io("syncing a snapshot file"))?;
    }
    sync_dir(&dir)?;
    sync_dir(snap_dir)
}

fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io("syncing a snapshot dir"))
}

/// Makes the received snapshot of `region_id` at `index` the region's staged one (with its
/// metadata), durably, before the log records its install; older receptions of the region are
/// dropped (raft will not take them now). Not there: `Corruption` (raft took a snapshot this
/// shard never received whole).
pub fn stage(snap_dir: &Path, region_id: u64, index: u64, meta: &[u8]) -> Result<()> {
    let received = recv_dir(snap_dir, region_id, index);
    if !received.is_dir() {
        return Err(corrupt(
            region_id,
            format!("snapshot at {index} was never received whole"),
        ));
    }
    let mut file = std::fs::File::create(received.join(META_FILE)).map_err(io("staging a snapshot"))?;
    file.write_all(meta)
        .and_then(|()| file.sync_all())
        .map_err(io("staging a snapshot"))?;
    let staged = staged_dir(snap_dir, region_id);
    let _ = std::fs::remove_dir_all(&staged);
    std::fs::rename(&received, &staged).map_err(io("staging a snapshot"))?;
    sync_dir(snap_dir)?;
    clear_older(snap_dir, "recv", region_id, index);
    Ok(())
}

/// Installs the staged snapshot of `region_id` at `index`: clears the data of the region as the
/// snapshot carries it, ingests the files (hard links: the staged copy stays until the install
/// is complete), checks every CF against the sender's key count and digest, records `index` as
/// applied with that region state (one synced batch), and drops the staged copy. Returns the
/// region. A mismatch is an error: a region must never run on half a snapshot.
pub fn install(kv: &KvEngine, region_id: u64, index: u64, snap_dir: &Path) -> Result<Region> {
    let staged = staged_dir(snap_dir, region_id);
    let meta =
        std::fs::read(staged.join(META_FILE)).map_err(|e| corrupt(region_id, format!("no staged snapshot: {e}")))?;
    let meta = SnapshotMeta::decode(region_id, index, &meta)?;
    let region = meta.region(region_id)?;
    let range = data_range(&region)?;
    let end = range.end().expect("a region's data range is bounded").to_vec();
    let mut clear_batch = kv.write_batch();
    for cf in SNAPSHOT_CFS {
        clear_batch.delete_range(cf, range.start(), &end)?;
    }
    kv.write(clear_batch, false)?;
    let work = snap_dir.join(format!("install-{region_id}-{index}"));
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work).map_err(io("creating a snapshot dir"))?;
    for (n, file) in meta.files.iter().enumerate() {
        let cf = SNAPSHOT_CFS[usize::from(file.cf)]; // checked by `decode`
        let (from, to) = (file_path(&staged, n as u32), file_path(&work, n as u32));
        if std::fs::hard_link(&from, &to).is_err() {
            std::fs::copy(&from, &to).map_err(io("linking a snapshot file"))?;
        }
        kv.ingest(cf, std::slice::from_ref(&to))?;
        let got = kv.snapshot().digest(cf, &range)?;
        if (got.keys, got.crc32c) != (file.keys, file.digest) {
            return Err(corrupt(region_id, format!("snapshot CF {cf:?} fails its checksum")));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    apply::record_installed(kv, &region, index)?;
    let _ = std::fs::remove_dir_all(&staged);
    Ok(region)
}

/// On restart: if the log says the region was truncated at `truncated` (by a snapshot) but the
/// KV engine has applied less, the install was cut short: finish it from the staged copy.
/// Returns the applied index to start from and the region (the snapshot's, if installed now).
pub fn finish_staged(kv: &KvEngine, region: Region, truncated: u64, snap_dir: &Path) -> Result<(u64, Region)> {
    let applied = apply::applied_index(kv, region.id)?;
    if applied >= truncated {
        let _ = std::fs::remove_dir_all(staged_dir(snap_dir, region.id));
        return Ok((applied, region));
    }
    if !staged_dir(snap_dir, region.id).is_dir() {
        return Err(corrupt(
            region.id,
            format!("applied {applied} is behind the log's truncation at {truncated} and no staged snapshot remains"),
        ));
    }
    let region = install(kv, region.id, truncated, snap_dir)?;
    Ok((truncated, region))
}
