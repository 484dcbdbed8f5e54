//! Applying committed entries to the KV engine, and the per-region state kept there.
//!
//! Owns: the apply step itself, and the region metadata it keeps in the `meta` CF (keys from
//! `keys`). This is an I/O edge: the shard (or
//! the simulator) runs it with the entries a `ShardReady` hands out, then reports the result
//! to `RaftCore::on_applied`.
//! Must not: skip a committed entry, or turn a failure of the engine into an entry's outcome: the
//! apply stops there (`ApplyFailure`) and resumes later.
//!
//! Durability: the applied index is written in the SAME write batch as the data it covers, so
//! after a crash the KV engine's applied index always matches its data, and raft replays
//! exactly the entries after it. The batch is not synced: the Raft log holds every applied
//! entry until log GC, which must flush the KV engine first.

use corekv_storage::kv::{Cf, KvEngine, KvRead, WriteBatch};
use corekv_storage::raftlog::{Disk, LogEngine, LogEntry};
use corekv_storage::Error as StorageError;
use protobuf::Message as _;
use raft::eraftpb::{Entry, EntryType, HardState};

use crate::cmd::{Command, Outcome};
use crate::error::{Error, Result};
use crate::keys::{self, data_key, MetaKind, HARD_STATE_KEY, TRUNCATED_KEY};
use crate::region::{Epoch, PeerMeta, PeerRole, Region};
use crate::storage::{conf_state, PeerStorage, RestoredLog, SPLIT_INIT_INDEX};

/// One applied entry: its index, term and (for commands) what it produced.
pub type Applied = (u64, u64, Option<Result<Outcome>>);

/// Applies `entries` (committed, durable, in order) of `region` to the KV engine, as its
/// replica `me`. Returns the new applied index and one item per entry applied: all of them, or
/// up to the membership change that removes `me` (the replica is destroyed next; nothing after
/// its removal is its business).
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
    me: u64,
    entries: &[Entry],
) -> std::result::Result<(u64, Vec<Applied>), ApplyFailure> {
    let mut results = Vec::with_capacity(entries.len());
    let mut batch = kv.write_batch();
    // Entries after a split are checked against (and write into) the region it left.
    let mut region = std::borrow::Cow::Borrowed(region);
    // A batch that changes a region's state is synced: a split must never be undone by a
    // crash (its new region may have logged entries of its own by then).
    let mut sync = false;
    // The first `written.0` results are in the KV engine, which has applied up to `written.1`.
    let mut written = (0, 0);
    let mut last = 0;
    for entry in entries {
        assert!(
            last == 0 || entry.index == last + 1,
            "committed entries arrive in order"
        );
        last = entry.index;
        let membership = entry.get_entry_type() == EntryType::EntryConfChangeV2;
        if membership && entry.context.is_empty() {
            // raft-rs leaving a joint membership on its own (an empty change).
            let outcome = leave_joint(&mut batch, &region);
            if let Some(Ok(Outcome::Membership { region: next, .. })) = &outcome {
                region = std::borrow::Cow::Owned(next.clone());
                sync = true;
            }
            results.push((entry.index, entry.term, outcome));
            continue;
        }
        if !membership && (entry.data.is_empty() || entry.get_entry_type() != EntryType::EntryNormal) {
            // A new leader's empty entry (or a change raft-rs refused, emptied).
            results.push((entry.index, entry.term, None));
            continue;
        }
        // A membership change carries its command in the entry's context (the data is raft's).
        let data = if membership { &entry.context } else { &entry.data };
        let (epoch, cmd) = match Command::decode(data) {
            Ok(decoded) => decoded,
            Err(error) => {
                let error = corrupt(region.id, format!("entry {}: {error}", entry.index));
                return Err(ApplyFailure::new(results, written, error));
            }
        };
        if let Err(e) = region.check_epoch_parts(epoch, cmd.epoch_check()) {
            results.push((entry.index, entry.term, Some(Err(e))));
            continue;
        }
        // A compare-and-swap reads what the entries before it wrote: they are written first,
        // with the applied index they bring the region to.
        let current = match &cmd {
            Command::CompareAndSwap { key, .. } => {
                let done = std::mem::replace(&mut batch, kv.write_batch());
                if let Err(error) = finish(kv, done, (region.id, entry.index - 1), sync) {
                    return Err(ApplyFailure::new(results, written, error));
                }
                written = (results.len(), entry.index - 1);
                match kv.get(Cf::Default, &data_key(&region, key)) {
                    Ok(value) => value,
                    Err(error) => return Err(ApplyFailure::new(results, written, error.into())),
                }
            }
            _ => None,
        };
        let outcome = execute(&mut batch, &region, cmd, current);
        if let Ok(Outcome::Split { left: next, .. } | Outcome::Membership { region: next, .. }) = &outcome {
            region = std::borrow::Cow::Owned(next.clone());
            sync = true;
        }
        results.push((entry.index, entry.term, Some(outcome)));
        if region.peer(me).is_none() {
            break; // removed from the region
        }
    }
    if last > 0 {
        if let Err(error) = finish(kv, batch, (region.id, last), sync) {
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
fn execute(batch: &mut WriteBatch, region: &Region, cmd: Command, current: Option<Vec<u8>>) -> Result<Outcome> {
    match cmd {
        Command::Put { key, value } => batch.put(Cf::Default, &data_key(region, &key), &value)?,
        Command::Delete { key } => batch.delete(Cf::Default, &data_key(region, &key))?,
        Command::DeleteRange { start, end } => {
            let range = keys::data_range_between(region, &start, &end)?;
            let end = range.end().expect("data ranges are bounded by the prefix");
            batch.delete_range(Cf::Default, range.start(), end)?
        }
        Command::BatchPut { pairs } => {
            for (k, v) in pairs {
                batch.put(Cf::Default, &data_key(region, &k), &v)?;
            }
        }
        Command::CompareAndSwap { key, expected, new } => {
            let succeeded = current == expected;
            if succeeded {
                match new {
                    Some(v) => batch.put(Cf::Default, &data_key(region, &key), &v)?,
                    None => batch.delete(Cf::Default, &data_key(region, &key))?,
                }
            }
            return Ok(Outcome::Cas {
                succeeded,
                previous: current,
            });
        }
        Command::Split { splits } => {
            let mut regions = region.split(&splits)?;
            for r in &regions {
                batch.put(Cf::Meta, &keys::region_state_key(r.id), &encode_region(r))?;
            }
            let new = regions.split_off(1);
            for r in &new {
                batch.put(Cf::Meta, &keys::applied_key(r.id), &SPLIT_INIT_INDEX.to_be_bytes())?;
            }
            let left = regions.pop().expect("the split region comes first");
            return Ok(Outcome::Split { left, new });
        }
        Command::ChangePeers { changes } => {
            let region = region.change_peers(&changes)?;
            batch.put(Cf::Meta, &keys::region_state_key(region.id), &encode_region(&region))?;
            return Ok(Outcome::Membership { region, changes });
        }
    }
    Ok(Outcome::Done)
}

/// Leaves `region`'s joint membership (nothing if it is not joint: the change that entered it
/// was refused here, so raft-rs did not enter it either).
fn leave_joint(batch: &mut WriteBatch, region: &Region) -> Option<Result<Outcome>> {
    if !region.is_joint() {
        return None;
    }
    let region = region.leave_joint();
    let written = batch.put(Cf::Meta, &keys::region_state_key(region.id), &encode_region(&region));
    Some(written.map_err(Error::from).map(|()| Outcome::Membership {
        region,
        changes: Vec::new(),
    }))
}

/// Writes `batch` with the applied index it brings the region to (synced if `sync`).
fn finish(kv: &KvEngine, mut batch: WriteBatch, (region_id, applied): (u64, u64), sync: bool) -> Result<()> {
    batch.put(Cf::Meta, &keys::applied_key(region_id), &applied.to_be_bytes())?;
    kv.write(batch, sync)?;
    Ok(())
}

/// The index the KV engine has applied `region_id` up to (0 for a new region).
pub fn applied_index(kv: &KvEngine, region_id: u64) -> Result<u64> {
    applied_index_in(kv, region_id)
}

/// The applied index of `region_id` as `view` (the engine, or one of its snapshots) holds it.
pub fn applied_index_in(view: &impl KvRead, region_id: u64) -> Result<u64> {
    match view.get(Cf::Meta, &keys::applied_key(region_id))? {
        None => Ok(0),
        Some(v) => {
            Ok(u64::from_be_bytes(v.as_slice().try_into().map_err(|_| {
                corrupt(region_id, "an applied index of the wrong size")
            })?))
        }
    }
}

/// Records that `region` (its state as a snapshot carried it) has applied up to `index` (the
/// snapshot installed), in one synced batch.
pub fn record_installed(kv: &KvEngine, region: &Region, index: u64) -> Result<()> {
    let mut batch = kv.write_batch();
    batch.put(Cf::Meta, &keys::applied_key(region.id), &index.to_be_bytes())?;
    batch.put(Cf::Meta, &keys::region_state_key(region.id), &encode_region(region))?;
    // A replica added again where it was removed once: its tombstone goes.
    batch.delete(Cf::Meta, &keys::tombstone_key(region.id))?;
    kv.write(batch, true)?;
    Ok(())
}

/// Reads a key of `region` as applied (the driver calls this on `ReadReady`).
pub fn read(kv: &KvEngine, region: &Region, key: &[u8]) -> Result<Option<Vec<u8>>> {
    Ok(kv.get(Cf::Default, &data_key(region, key))?)
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
    let range = keys::data_range_between(region, start, end)?;
    let direction = if reverse {
        corekv_storage::kv::Direction::Reverse
    } else {
        corekv_storage::kv::Direction::Forward
    };
    let mut iter = kv.iter(Cf::Default, &range, direction, Some(limit));
    let (mut rows, mut bytes) = (Vec::new(), 0);
    while let Some((k, v)) = iter.next_entry()? {
        let key = keys::origin_key(k);
        bytes += key.len() + v.len();
        rows.push((key.to_vec(), v.to_vec()));
        if bytes > bytes_max {
            return Ok((rows, true));
        }
    }
    Ok((rows, false))
}

/// Records a replica of a region made at bootstrap: its state, and its log's start as a
/// split's new regions have it (`SPLIT_INIT_INDEX`), so that the log of every region starts
/// after index 5 and a replica added later is always caught up by a snapshot, never handed
/// entries before it has the region's state. Synced.
pub fn bootstrap_region(kv: &KvEngine, region: &Region) -> Result<()> {
    let mut batch = kv.write_batch();
    batch.put(Cf::Meta, &keys::region_state_key(region.id), &encode_region(region))?;
    batch.put(Cf::Meta, &keys::applied_key(region.id), &SPLIT_INIT_INDEX.to_be_bytes())?;
    kv.write(batch, true)?;
    Ok(())
}

/// `region_id`'s stored state as `view` holds it (encoded; `Corruption` if there is none).
pub fn region_state_in(view: &impl KvRead, region_id: u64) -> Result<Vec<u8>> {
    view.get(Cf::Meta, &keys::region_state_key(region_id))?
        .ok_or_else(|| corrupt(region_id, "no stored region state"))
}

/// A region's data read back is not what was written: the region (only) must stop.
fn corrupt(region_id: u64, reason: impl Into<String>) -> Error {
    Error::Corruption {
        region_id,
        reason: reason.into(),
    }
}

/// What a shard's KV engine records of its regions.
#[derive(Debug, Default)]
pub struct Recorded {
    /// The replicas it holds, each decoded on its own: a corrupt record is that region's
    /// `Corruption`, not the shard's failure.
    pub regions: Vec<Result<Region>>,
    /// Regions whose replica here was removed: (region id, its epoch then, the replica's
    /// peer id; 0 when a restart finished the destroy) (`destroy`).
    pub tombstones: Vec<(u64, Epoch, u64)>,
}

impl Recorded {
    /// Nothing recorded: a shard that was never bootstrapped.
    pub fn is_empty(&self) -> bool {
        self.regions.is_empty() && self.tombstones.is_empty()
    }
}

/// Every region recorded on this shard's KV engine.
pub fn load_regions(kv: &KvEngine) -> Result<Recorded> {
    let rows = kv.scan(
        Cf::Meta,
        &keys::region_metas()?,
        corekv_storage::kv::Direction::Forward,
        usize::MAX,
    )?;
    let mut recorded = Recorded::default();
    for (key, value) in rows {
        match keys::parse_meta_key(&key) {
            Some((id, MetaKind::RegionState)) => recorded.regions.push(decode_region(id, &value)),
            Some((id, MetaKind::Tombstone)) => {
                let (epoch, peer_id) = decode_tombstone(id, &value)?;
                recorded.tombstones.push((id, epoch, peer_id));
            }
            Some((_, MetaKind::Applied)) => {}
            None => return Err(Error::Storage(format!("unknown key {key:?} among region states"))),
        }
    }
    Ok(recorded)
}

/// Destroys this shard's replica `peer_id` of `region`, removed from it: its data is cleared,
/// and its state and applied index give way to a tombstone holding its epoch and peer id, in
/// one synced batch (messages of that epoch or older, or to that peer or an older one, cannot
/// bring it back). Its raft log is cleaned AFTER this (`LogBatch::clean`): a crash in between
/// leaves a tombstone and a log the restart cleans.
pub fn destroy(kv: &KvEngine, region: &Region, peer_id: u64) -> Result<()> {
    let mut batch = kv.write_batch();
    if region.is_initialized() {
        let range = keys::data_range(region)?;
        let end = range.end().expect("data ranges are bounded by the prefix");
        for cf in [Cf::Default, Cf::Lock, Cf::Write] {
            batch.delete_range(cf, range.start(), end)?;
        }
    }
    batch.delete(Cf::Meta, &keys::applied_key(region.id))?;
    batch.delete(Cf::Meta, &keys::region_state_key(region.id))?;
    let fields = [region.epoch.conf_ver, region.epoch.version, peer_id];
    batch.put(
        Cf::Meta,
        &keys::tombstone_key(region.id),
        &fields.map(u64::to_be_bytes).concat(),
    )?;
    kv.write(batch, true)?;
    Ok(())
}

fn decode_tombstone(region_id: u64, bytes: &[u8]) -> Result<(Epoch, u64)> {
    let field = |at: usize| {
        bytes
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map(u64::from_be_bytes)
    };
    match (bytes.len(), field(0), field(8), field(16)) {
        (24, Some(conf_ver), Some(version), Some(peer_id)) => Ok((Epoch { conf_ver, version }, peer_id)),
        _ => Err(corrupt(region_id, "a tombstone of the wrong size")),
    }
}

/// Restores a peer's raft storage from the log engine: its hard state, its truncation point,
/// the entries after `applied` (which raft-rs will apply, and may read at any time) and only
/// the terms of those at or below it (read back from the log engine if a follower needs them).
pub async fn restore_storage<D: Disk>(log: &LogEngine<D>, region: &Region, applied: u64) -> Result<PeerStorage> {
    let conf = conf_state(region);
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
        // Nothing ever logged: a region made at bootstrap or by a split (applied at its log's
        // start, `SPLIT_INIT_INDEX`) before its first log write.
        // Its starting state may be logged (a vote cast, a term seen) with no entry yet: kept.
        let born_logged = log.state(region.id, TRUNCATED_KEY).is_some();
        return Ok(match applied {
            SPLIT_INIT_INDEX if born_logged => {
                PeerStorage::restore(conf, empty((SPLIT_INIT_INDEX, crate::storage::SPLIT_INIT_TERM)))
            }
            SPLIT_INIT_INDEX => PeerStorage::split_born(conf),
            _ => PeerStorage::restore(conf, empty((0, 0))),
        });
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
    // Applied entries were committed (raft-rs hands out no other), but the loop applies entries
    // committed in an earlier iteration BEFORE this iteration's log append, which carries the
    // hard state with that commit index: a crash in between leaves the KV engine applied past
    // the logged commit index (the entries themselves are in the log). The commit index is at
    // least what was applied.
    if applied > restored.hard_state.commit && applied <= last.max(truncated.0) {
        restored.hard_state.commit = applied;
    }
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
    Ok(PeerStorage::restore(conf, restored))
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
    /// (id, node, shard, role code).
    peers: Vec<(u64, u64, u32, u8)>,
}

/// `r` as its stored state (the `meta` CF's value, and what a snapshot carries).
pub fn encode_region(r: &Region) -> Vec<u8> {
    let stored = StoredRegion {
        id: r.id,
        start: r.start.clone(),
        end: r.end.clone(),
        conf_ver: r.epoch.conf_ver,
        version: r.epoch.version,
        peers: r.peers.iter().map(|p| (p.id, p.node, p.shard, p.role.code())).collect(),
    };
    rkyv::to_bytes::<rkyv::rancor::Error>(&stored)
        .expect("in memory")
        .into_vec()
}

/// Region `id`'s stored state (`Corruption` of that region if it is not one corekv wrote).
pub fn decode_region(id: u64, bytes: &[u8]) -> Result<Region> {
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
    let peer = |(peer_id, node, shard, role): (u64, u64, u32, u8)| {
        let role = PeerRole::from_code(role).ok_or_else(|| corrupt(id, format!("a peer of role {role}")))?;
        Ok(PeerMeta {
            id: peer_id,
            node,
            shard,
            role,
        })
    };
    Ok(Region {
        id: s.id,
        start: s.start,
        end: s.end,
        epoch: Epoch {
            conf_ver: s.conf_ver,
            version: s.version,
        },
        peers: s.peers.into_iter().map(peer).collect::<Result<_>>()?,
    })
}
