//! Applying committed entries to the KV engine, and the per-region state kept there.
//!
//! Owns: the key layout of applied data (`z` + user key in the `default` CF) and of region
//! metadata in the `meta` CF, and the apply step itself. This is an I/O edge: the shard (or
//! the simulator) runs it with the entries a `ShardReady` hands out, then reports the result
//! to `RaftCore::on_applied`.
//! Must not: skip a committed entry, or turn a failure of the engine into an entry's outcome: the
//! apply stops there (`ApplyFailure`) and resumes later.
//!
//! Durability: the applied index is written in the SAME write batch as the data it covers, so
//! after a crash the KV engine's applied index always matches its data, and raft replays
//! exactly the entries after it. The batch is not synced: the Raft log holds every applied
//! entry until log GC, which must flush the KV engine first.

use std::path::Path;

use corekv_storage::kv::{Cf, KeyRange, KvEngine, KvRead, WriteBatch};
use corekv_storage::raftlog::{Disk, LogEngine, LogEntry};
use corekv_storage::Error as StorageError;
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, HardState};

use crate::cmd::{Command, Outcome};
use crate::error::{Error, Result};
use crate::raft_core::{HARD_STATE_KEY, TRUNCATED_KEY};
use crate::region::{Epoch, PeerMeta, Region};
use crate::storage::{PeerStorage, RestoredLog};

/// Prefix of user data in the `default` CF (room for other key spaces beside it).
const DATA_PREFIX: &[u8] = b"z";
/// Prefix of per-region metadata in the `meta` CF: `r` + region id (big endian) + kind.
const REGION_META_PREFIX: &[u8] = b"r";
const APPLIED_SUFFIX: u8 = b'a';
const REGION_SUFFIX: u8 = b'd';

pub fn data_key(key: &[u8]) -> Vec<u8> {
    [DATA_PREFIX, key].concat()
}

fn meta_key(region_id: u64, suffix: u8) -> Vec<u8> {
    let mut k = REGION_META_PREFIX.to_vec();
    k.extend_from_slice(&region_id.to_be_bytes());
    k.push(suffix);
    k
}

/// One applied entry: its index, term and (for commands) what it produced.
pub type Applied = (u64, u64, Option<Result<Outcome>>);

/// Applies `entries` (committed, durable, in order) of `region` to the KV engine. Returns the
/// new applied index and one item per entry.
///
/// An entry's own rejection (stale epoch, a key or value over its limit: the same on every
/// replica) is that entry's outcome. A failure of the engine itself (a write or a read, e.g.
/// a full disk), or an entry this version cannot decode, stops the apply: the region must not
/// skip an entry, and a replica must never decide an outcome its peers could decide otherwise.
/// The `ApplyFailure` then says how far the KV engine got; the caller answers those entries
/// and applies the rest again later.
pub fn apply(
    kv: &KvEngine,
    region: &Region,
    entries: &[Entry],
) -> std::result::Result<(u64, Vec<Applied>), ApplyFailure> {
    let mut results = Vec::with_capacity(entries.len());
    let mut batch = kv.write_batch();
    // The first `written.0` results are in the KV engine, which has applied up to `written.1`.
    let mut written = (0, 0);
    let mut last = 0;
    for entry in entries {
        assert!(
            last == 0 || entry.index == last + 1,
            "committed entries arrive in order"
        );
        last = entry.index;
        if entry.data.is_empty() || entry.get_entry_type() != EntryType::EntryNormal {
            // A new leader's empty entry, or a membership change (none are proposed yet).
            results.push((entry.index, entry.term, None));
            continue;
        }
        let (epoch, cmd) = match Command::decode(&entry.data) {
            Ok(decoded) => decoded,
            Err(error) => {
                let error = corrupt(region.id, format!("entry {}: {error}", entry.index));
                return Err(ApplyFailure::new(results, written, error));
            }
        };
        if let Err(e) = region.check_epoch(epoch) {
            results.push((entry.index, entry.term, Some(Err(e))));
            continue;
        }
        // A compare-and-swap reads what the entries before it wrote: they are written first,
        // with the applied index they bring the region to.
        let current = match &cmd {
            Command::CompareAndSwap { key, .. } => {
                let done = std::mem::replace(&mut batch, kv.write_batch());
                if let Err(error) = finish(kv, done, region.id, entry.index - 1) {
                    return Err(ApplyFailure::new(results, written, error));
                }
                written = (results.len(), entry.index - 1);
                match kv.get(Cf::Default, &data_key(key)) {
                    Ok(value) => value,
                    Err(error) => return Err(ApplyFailure::new(results, written, error.into())),
                }
            }
            _ => None,
        };
        let outcome = execute(&mut batch, cmd, current);
        results.push((entry.index, entry.term, Some(outcome)));
    }
    if last > 0 {
        if let Err(error) = finish(kv, batch, region.id, last) {
            return Err(ApplyFailure::new(results, written, error));
        }
    }
    Ok((last, results))
}

/// An apply stopped by `error` after the KV engine had applied the region up to `applied`
/// (0: nothing of this call): `results` are the outcomes of the entries up to there.
#[derive(Debug)]
pub struct ApplyFailure {
    pub applied: u64,
    pub results: Vec<Applied>,
    pub error: Error,
}

impl ApplyFailure {
    fn new(mut results: Vec<Applied>, (count, applied): (usize, u64), error: Error) -> ApplyFailure {
        results.truncate(count);
        debug_assert!(results.last().is_none_or(|r| r.0 == applied));
        ApplyFailure {
            applied,
            results,
            error,
        }
    }
}

/// Adds `cmd` to `batch`; `current` is the key's applied value for a compare-and-swap.
fn execute(batch: &mut WriteBatch, cmd: Command, current: Option<Vec<u8>>) -> Result<Outcome> {
    match cmd {
        Command::Put { key, value } => batch.put(Cf::Default, &data_key(&key), &value)?,
        Command::Delete { key } => batch.delete(Cf::Default, &data_key(&key))?,
        Command::DeleteRange { start, end } => {
            let range = data_range_between(&start, &end)?;
            let end = range.end().expect("data ranges are bounded by the prefix");
            batch.delete_range(Cf::Default, range.start(), end)?
        }
        Command::BatchPut { pairs } => {
            for (k, v) in pairs {
                batch.put(Cf::Default, &data_key(&k), &v)?;
            }
        }
        Command::CompareAndSwap { key, expected, new } => {
            let succeeded = current == expected;
            if succeeded {
                match new {
                    Some(v) => batch.put(Cf::Default, &data_key(&key), &v)?,
                    None => batch.delete(Cf::Default, &data_key(&key))?,
                }
            }
            return Ok(Outcome::Cas {
                succeeded,
                previous: current,
            });
        }
    }
    Ok(Outcome::Done)
}

/// Writes `batch` with the applied index it brings the region to.
fn finish(kv: &KvEngine, mut batch: WriteBatch, region_id: u64, applied: u64) -> Result<()> {
    batch.put(Cf::Meta, &meta_key(region_id, APPLIED_SUFFIX), &applied.to_be_bytes())?;
    kv.write(batch, false)?;
    Ok(())
}

/// The index the KV engine has applied `region_id` up to (0 for a new region).
pub fn applied_index(kv: &KvEngine, region_id: u64) -> Result<u64> {
    match kv.get(Cf::Meta, &meta_key(region_id, APPLIED_SUFFIX))? {
        None => Ok(0),
        Some(v) => {
            Ok(u64::from_be_bytes(v.as_slice().try_into().map_err(|_| {
                corrupt(region_id, "an applied index of the wrong size")
            })?))
        }
    }
}

/// Reads a user key as applied (the driver calls this on `ReadReady`).
pub fn read(kv: &KvEngine, key: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(kv.get(Cf::Default, &data_key(key))?)
}

/// Key-value pairs in key order (or reverse), as a scan returns them.
pub type Rows = Vec<(Vec<u8>, Vec<u8>)>;

/// Scans user keys in `[start, end)` (empty `end`: to the region's end) as applied (after
/// `ReadReady`), at most `limit` pairs, forward or in reverse, and stops after the row that
/// brings the key and value bytes past `bytes_max` (the second value is then `true`: more may
/// follow). The range must lie inside the region.
pub fn scan(
    kv: &KvEngine,
    region: &Region,
    (start, end): (&[u8], &[u8]),
    limit: usize,
    reverse: bool,
    bytes_max: usize,
) -> Result<(Rows, bool)> {
    region.check_key(start)?;
    let end = if end.is_empty() { region.end.as_slice() } else { end };
    if !end.is_empty() {
        region.check_range(start, end)?;
    }
    let range = data_range_between(start, end)?;
    let direction = if reverse {
        corekv_storage::kv::Direction::Reverse
    } else {
        corekv_storage::kv::Direction::Forward
    };
    let mut iter = kv.iter(Cf::Default, &range, direction, Some(limit));
    let (mut rows, mut bytes) = (Vec::new(), 0);
    while let Some((k, v)) = iter.next_entry()? {
        let key = &k[DATA_PREFIX.len()..];
        bytes += key.len() + v.len();
        rows.push((key.to_vec(), v.to_vec()));
        if bytes > bytes_max {
            return Ok((rows, true));
        }
    }
    Ok((rows, false))
}

/// Records a region this shard hosts (bootstrap, later splits and membership changes), synced.
pub fn save_region(kv: &KvEngine, region: &Region) -> Result<()> {
    let mut batch = kv.write_batch();
    batch.put(Cf::Meta, &meta_key(region.id, REGION_SUFFIX), &encode_region(region))?;
    kv.write(batch, true)?;
    Ok(())
}

/// A region's data read back is not what was written: the region (only) must stop.
fn corrupt(region_id: u64, reason: impl Into<String>) -> Error {
    Error::Corruption {
        region_id,
        reason: reason.into(),
    }
}

/// Every region recorded on this shard's KV engine, each decoded on its own: a corrupt record
/// is that region's `Corruption`, not the shard's failure.
pub fn load_regions(kv: &KvEngine) -> Result<Vec<Result<Region>>> {
    let rows = kv.scan(
        Cf::Meta,
        &KeyRange::prefix(REGION_META_PREFIX),
        corekv_storage::kv::Direction::Forward,
        usize::MAX,
    )?;
    let mut regions = Vec::new();
    for (key, value) in rows {
        let id = key
            .get(REGION_META_PREFIX.len()..REGION_META_PREFIX.len() + 8)
            .map(|b| u64::from_be_bytes(b.try_into().expect("8 bytes")));
        match (id, key.last()) {
            (Some(id), Some(&REGION_SUFFIX)) if key.len() == REGION_META_PREFIX.len() + 9 => {
                regions.push(decode_region(id, &value))
            }
            (_, Some(&APPLIED_SUFFIX)) => {}
            _ => return Err(Error::Storage(format!("unknown key {key:?} among region states"))),
        }
    }
    Ok(regions)
}

/// Restores a peer's raft storage from the log engine: its hard state, its truncation point,
/// the entries after `applied` (which raft-rs will apply, and may read at any time) and only
/// the terms of those at or below it (read back from the log engine if a follower needs them).
pub async fn restore_storage<D: Disk>(log: &LogEngine<D>, region: &Region, applied: u64) -> Result<PeerStorage> {
    let voters = region.peers.iter().map(|p| p.id).collect();
    let bad = |what: &str| corrupt(region.id, what.to_string());
    let hard_state = match log.state(region.id, HARD_STATE_KEY) {
        Some(bytes) => HardState::parse_from_bytes(&bytes).map_err(|e| bad(&format!("hard state: {e}")))?,
        None => HardState::default(),
    };
    let empty = |truncated: (u64, u64)| RestoredLog {
        hard_state: hard_state.clone(),
        truncated,
        older_terms: Vec::new(),
        last_unloaded: truncated.0,
        entries: Vec::new(),
    };
    let Some((first, last)) = log.span(region.id) else {
        return Ok(PeerStorage::restore(voters, empty((0, 0))));
    };
    let truncated = match log.state(region.id, TRUNCATED_KEY) {
        Some(v) if v.len() == 16 => {
            let index = u64::from_be_bytes(v[..8].try_into().expect("8 bytes"));
            (index, u64::from_be_bytes(v[8..].try_into().expect("8 bytes")))
        }
        Some(_) => return Err(bad("truncation state of the wrong size")),
        None => (0, 0),
    };
    if truncated.0 + 1 != first {
        return Err(bad(&format!("log starts at {first}, truncated at {}", truncated.0)));
    }
    if hard_state.commit > last.max(truncated.0) {
        return Err(bad("the hard state commits past the log"));
    }
    let mut restored = empty(truncated);
    // Applied entries stay on disk: only their terms, as runs.
    let unloaded_to = applied.min(last);
    for index in first..=unloaded_to {
        let term = log
            .term(region.id, index)
            .ok_or_else(|| bad(&format!("no term for entry {index}")))?;
        if restored.older_terms.last().is_none_or(|r| r.1 != term) {
            restored.older_terms.push((index, term));
        }
    }
    restored.last_unloaded = unloaded_to.max(truncated.0);
    if last > restored.last_unloaded {
        let fetched = log
            .fetch(region.id, restored.last_unloaded + 1, last + 1, usize::MAX)
            .await
            .map_err(|e| match e {
                e @ StorageError::Corruption { .. } => bad(&e.to_string()),
                e => e.into(),
            })?;
        restored.entries = decode_entries(region.id, fetched)?;
    }
    Ok(PeerStorage::restore(voters, restored))
}

/// Log engine entries as raft entries, each checked against the index and term the engine
/// holds it under (`Corruption` of `region_id` otherwise).
pub fn decode_entries(region_id: u64, fetched: Vec<LogEntry>) -> Result<Vec<Entry>> {
    fetched
        .into_iter()
        .map(|e| {
            let entry = Entry::parse_from_bytes(&e.data)
                .map_err(|err| corrupt(region_id, format!("entry {}: {err}", e.index)))?;
            if (entry.index, entry.term) != (e.index, e.term) {
                return Err(corrupt(
                    region_id,
                    format!(
                        "the log holds entry ({}, {}) where the engine indexed ({}, {})",
                        entry.index, entry.term, e.index, e.term
                    ),
                ));
            }
            Ok(entry)
        })
        .collect()
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct StoredRegion {
    id: u64,
    start: Vec<u8>,
    end: Vec<u8>,
    conf_ver: u64,
    version: u64,
    peers: Vec<(u64, u64, u32)>,
}

fn encode_region(r: &Region) -> Vec<u8> {
    let stored = StoredRegion {
        id: r.id,
        start: r.start.clone(),
        end: r.end.clone(),
        conf_ver: r.epoch.conf_ver,
        version: r.epoch.version,
        peers: r.peers.iter().map(|p| (p.id, p.node, p.shard)).collect(),
    };
    rkyv::to_bytes::<rkyv::rancor::Error>(&stored)
        .expect("in memory")
        .into_vec()
}

/// Region `id`'s stored state (`Corruption` of that region if it is not one corekv wrote).
fn decode_region(id: u64, bytes: &[u8]) -> Result<Region> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
    aligned.extend_from_slice(bytes);
    let s = rkyv::from_bytes::<StoredRegion, rkyv::rancor::Error>(&aligned)
        .map_err(|e| corrupt(id, format!("undecodable region state: {e}")))?;
    if s.id != id || s.peers.is_empty() {
        return Err(corrupt(
            id,
            format!("a state of region {} with {} peers", s.id, s.peers.len()),
        ));
    }
    Ok(Region {
        id: s.id,
        start: s.start,
        end: s.end,
        epoch: Epoch {
            conf_ver: s.conf_ver,
            version: s.version,
        },
        peers: s
            .peers
            .into_iter()
            .map(|(id, node, shard)| PeerMeta { id, node, shard })
            .collect(),
    })
}

/// Column families a region snapshot carries.
const SNAPSHOT_CFS: [Cf; 3] = [Cf::Default, Cf::Lock, Cf::Write];

/// The region's user data in the KV engine, as a key range.
fn data_range(region: &Region) -> Result<KeyRange> {
    data_range_between(&region.start, &region.end)
}

/// User keys `[start, end)` (empty `end`: unbounded) as a range of data keys.
fn data_range_between(start: &[u8], end: &[u8]) -> Result<KeyRange> {
    let end = if end.is_empty() {
        vec![DATA_PREFIX[0] + 1]
    } else {
        data_key(end)
    };
    Ok(KeyRange::new(data_key(start), end)?)
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotFile {
    cf: u8,
    sst: Vec<u8>,
    keys: u64,
    crc32c: u32,
}

#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct SnapshotData {
    applied: u64,
    files: Vec<SnapshotFile>,
}

fn cf_code(cf: Cf) -> u8 {
    SNAPSHOT_CFS.iter().position(|&c| c == cf).expect("a snapshot CF") as u8
}

/// Builds a snapshot of `region` from ONE consistent view of the KV engine: SST files of its
/// range for every data CF, each with its key count and checksum, and the applied index read
/// from that same view (so data and index agree). `dir` holds the files while they are read.
/// Slow (scans the region): the shard runs it through `KvEngine::offload`.
pub fn generate_snapshot(kv: &KvEngine, region: &Region, dir: &Path) -> Result<(u64, Vec<u8>)> {
    let view = kv.snapshot();
    let applied = match view.get(Cf::Meta, &meta_key(region.id, APPLIED_SUFFIX))? {
        Some(v) => u64::from_be_bytes(
            v.as_slice()
                .try_into()
                .map_err(|_| corrupt(region.id, "an applied index of the wrong size"))?,
        ),
        None => 0,
    };
    let dir = dir.join(format!("gen-{}-{applied}", region.id));
    let exports = view.export_ssts(&dir, &SNAPSHOT_CFS, &data_range(region)?)?;
    let mut files = Vec::with_capacity(exports.len());
    for e in exports {
        let sst =
            std::fs::read(&e.path).map_err(|err| Error::Storage(format!("reading {}: {err}", e.path.display())))?;
        files.push(SnapshotFile {
            cf: cf_code(e.cf),
            sst,
            keys: e.digest.keys,
            crc32c: e.digest.crc32c,
        });
    }
    let _ = std::fs::remove_dir_all(&dir);
    let data = SnapshotData { applied, files };
    Ok((
        applied,
        rkyv::to_bytes::<rkyv::rancor::Error>(&data)
            .expect("in memory")
            .into_vec(),
    ))
}

/// Installs a leader's snapshot of `region` at `index`: clears the region's data, ingests the
/// files, checks every CF against the sender's key count and checksum, and records `index` as
/// applied (synced). A mismatch is an error: a region must never run on half a snapshot.
pub fn install_snapshot(kv: &KvEngine, region: &Region, index: u64, data: &[u8], dir: &Path) -> Result<()> {
    let snap = decode_snapshot(region.id, index, data)?;
    let range = data_range(region)?;
    let end = range.end().expect("a region's data range is bounded").to_vec();
    let mut clear = kv.write_batch();
    for cf in SNAPSHOT_CFS {
        clear.delete_range(cf, range.start(), &end)?;
    }
    kv.write(clear, false)?;
    let dir = dir.join(format!("install-{}-{index}", region.id));
    std::fs::create_dir_all(&dir).map_err(|e| StorageError::io("creating a snapshot dir", e))?;
    for (i, file) in snap.files.iter().enumerate() {
        let cf = SNAPSHOT_CFS[usize::from(file.cf)]; // checked by `decode_snapshot`
        let path = dir.join(format!("{i}.sst"));
        std::fs::write(&path, &file.sst).map_err(|e| StorageError::io("writing a snapshot file", e))?;
        kv.ingest(cf, std::slice::from_ref(&path))?;
        let got = kv.snapshot().digest(cf, &range)?;
        if (got.keys, got.crc32c) != (file.keys, file.crc32c) {
            return Err(corrupt(region.id, format!("snapshot CF {cf:?} fails its checksum")));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let mut done = kv.write_batch();
    done.put(Cf::Meta, &meta_key(region.id, APPLIED_SUFFIX), &index.to_be_bytes())?;
    kv.write(done, true)?;
    Ok(())
}

/// A snapshot's data as its sender encoded it, checked: it decodes, it is at `index` (the index
/// its raft message announces), and every file is of a snapshot CF. The files' contents are
/// checked against their key counts and checksums at install.
fn decode_snapshot(region_id: u64, index: u64, data: &[u8]) -> Result<SnapshotData> {
    let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(data.len());
    aligned.extend_from_slice(data);
    let snap = rkyv::from_bytes::<SnapshotData, rkyv::rancor::Error>(&aligned)
        .map_err(|e| corrupt(region_id, format!("undecodable snapshot: {e}")))?;
    if snap.applied != index {
        return Err(corrupt(
            region_id,
            format!("snapshot data at {} announced at {index}", snap.applied),
        ));
    }
    if snap.files.iter().any(|f| usize::from(f.cf) >= SNAPSHOT_CFS.len()) {
        return Err(corrupt(region_id, "a snapshot file of an unknown CF"));
    }
    Ok(snap)
}

/// Checks a snapshot received for `region_id` before raft takes it (see `decode_snapshot`): a
/// malformed one is refused at the edge, and its sender sends another.
pub fn check_snapshot_data(region_id: u64, index: u64, data: &[u8]) -> Result<()> {
    decode_snapshot(region_id, index, data).map(|_| ())
}

fn staged_path(dir: &Path, region_id: u64) -> std::path::PathBuf {
    dir.join(format!("staged-{region_id}.snap"))
}

/// Makes a received snapshot durable before anything else of its install: if the shard
/// crashes after the log has recorded the snapshot but before the KV engine holds it,
/// `finish_staged_snapshot` completes the install from this copy on restart.
pub fn stage_snapshot(dir: &Path, region_id: u64, data: &[u8]) -> Result<()> {
    use std::io::Write as _;
    let staging = |e| StorageError::io("staging a snapshot", e);
    std::fs::create_dir_all(dir).map_err(staging)?;
    let path = staged_path(dir, region_id);
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp).map_err(staging)?;
    f.write_all(data).and_then(|()| f.sync_all()).map_err(staging)?;
    std::fs::rename(&tmp, &path).map_err(staging)?;
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(staging)?;
    Ok(())
}

/// The staged copy is no longer needed once the KV engine holds the snapshot.
pub fn drop_staged_snapshot(dir: &Path, region_id: u64) {
    let _ = std::fs::remove_file(staged_path(dir, region_id));
}

/// On restart: if the log says the region was truncated at `truncated` (by a snapshot) but
/// the KV engine has applied less, the install was cut short: finish it from the staged copy.
/// Returns the applied index to start from.
pub fn finish_staged_snapshot(kv: &KvEngine, region: &Region, truncated: u64, dir: &Path) -> Result<u64> {
    let applied = applied_index(kv, region.id)?;
    if applied >= truncated {
        drop_staged_snapshot(dir, region.id);
        return Ok(applied);
    }
    let data = std::fs::read(staged_path(dir, region.id)).map_err(|e| {
        corrupt(
            region.id,
            format!(
                "applied {applied} is behind the log's truncation at {truncated} and no staged snapshot remains: {e}"
            ),
        )
    })?;
    install_snapshot(kv, region, truncated, &data, dir)?;
    drop_staged_snapshot(dir, region.id);
    Ok(truncated)
}
