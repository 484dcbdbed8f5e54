//! One shard's engines and the loop iteration that drives its `RaftCore` over them: the ONE
//! code path shared by the node runtime and the simulator.
//!
//! Owns: the order of a loop iteration, which is where durability is established:
//! 1. `RaftCore::ready` -> messages a leader may send before its own append go out at once;
//! 2. snapshots to install are staged durably, snapshots to send are generated (off the
//!    shard's core, `KvEngine::offload`);
//! 3. ONE log append for every region's entries and hard states (group commit); once it
//!    returns, they are durable (O_DSYNC) -- only then:
//! 4. received snapshots are installed, `on_persisted` tells raft, and the messages that
//!    promise durability (votes, append acks) go out.
//!
//! Committed entries are applied (applied index in the same KV write batch) BEFORE step 3:
//! raft-rs only hands out entries this replica made durable in an earlier iteration, so a
//! write is answered without waiting for the next group commit.
//!
//! The core sits in a `RefCell` and is never borrowed across an await: other tasks of the
//! shard (connections, the ticker) step and propose while the append is in flight, and their
//! work joins the next iteration's group.
//!
//! Must not: open sockets or know about time; the caller ticks the core and moves messages.

use std::cell::RefCell;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use corekv_storage::kv::{Cf, KvEngine};
use corekv_storage::raftlog::{Disk, LogBatch, LogEngine};

use crate::error::{Error, Result};
use crate::keys::TRUNCATED_KEY;
use crate::raft_core::{encode_truncated, ApplyTask, RaftCore, RaftMessage};
use crate::{apply, snapshot};

/// How long a shard waits before retrying work its disk refused for lack of space.
pub const NO_SPACE_RETRY_MS: u64 = 200;
/// RocksDB resumes writes within seconds of its disk having room again (its SstFileManager
/// polls every 5 s), except after failures it never recovers from without a reopen (a
/// memtable switch that could not create its WAL, say). Refused this long after the disk had
/// room, the shard stops instead of waiting forever: a restart recovers from both engines.
pub const NO_SPACE_STUCK_MS: u64 = 15_000;
/// Free bytes from which the KV engine's disk counts as having room again.
const DISK_ROOM_BYTES_MIN: u64 = 64 << 20;

/// A shard's raft core and the engines under it.
pub struct Engines<D: Disk> {
    pub core: RefCell<RaftCore>,
    pub log: LogEngine<D>,
    pub kv: KvEngine,
    /// Snapshot files being built, sent or installed (and staged installs).
    pub snap_dir: PathBuf,
}

/// What one iteration did and where its time went.
#[derive(Debug, Clone, Copy, Default)]
pub struct LoopStats {
    /// In `RaftCore`: ready, persisted and applied bookkeeping.
    pub core: Duration,
    /// In the log append (the group commit), retries included.
    pub log: Duration,
    /// Applying committed entries into the KV engine.
    pub apply: Duration,
    /// Regions with entries or hard states in this iteration's log batch.
    pub regions_in_batch: usize,
    pub log_appends: u64,
    /// Log appends, applies and snapshot installs refused for lack of space and retried.
    pub no_space_waits: u64,
    pub entries_applied: u64,
    pub snapshots_generated: u64,
    pub snapshots_installed: u64,
    /// Entries read back from the log engine for followers behind the caches.
    pub entries_fetched: u64,
    /// Region states this iteration changed (splits applied, snapshots installed): the node's
    /// routing learns them now rather than at its next tick.
    pub region_changes: u64,
}

impl<D: Disk> Engines<D> {
    /// Restores every peer the KV engine records from both engines (finishing a snapshot
    /// install a crash cut short) into `core`, and the tombstones of removed ones (finishing a
    /// destroy a crash cut short). A region whose data is corrupt is stopped (the others
    /// start); any other failure fails the whole restore.
    pub async fn restore(mut core: RaftCore, log: LogEngine<D>, kv: KvEngine, snap_dir: PathBuf) -> Result<Engines<D>> {
        snapshot::clear_unfinished(&snap_dir);
        let recorded = apply::load_regions(&kv)?;
        for (region_id, epoch, peer_id) in recorded.tombstones {
            core.add_tombstone(region_id, epoch, peer_id);
        }
        for region in recorded.regions {
            let restored = match region {
                // Its removal applied here, the crash came before its destroy: finished now.
                Ok(region) if !core.hosts(&region) => {
                    apply::destroy(&kv, &region, 0)?;
                    core.add_tombstone(region.id, region.epoch, 0);
                    Ok(())
                }
                Ok(region) => Self::restore_peer(&mut core, &log, &kv, &snap_dir, region).await,
                Err(e) => Err(e),
            };
            match restored {
                Err(Error::Corruption { region_id, reason }) => core.stop_region(region_id, reason),
                other => other?,
            }
        }
        Ok(Engines {
            core: RefCell::new(core),
            log,
            kv,
            snap_dir,
        })
    }

    async fn restore_peer(
        core: &mut RaftCore,
        log: &LogEngine<D>,
        kv: &KvEngine,
        snap_dir: &std::path::Path,
        region: crate::Region,
    ) -> Result<()> {
        let applied = apply::applied_index(kv, region.id)?;
        let mut storage = apply::restore_storage(log, &region, applied).await?;
        let truncated = storage.truncated().0;
        let (applied, region) = snapshot::finish_staged(kv, region, truncated, snap_dir)?;
        // A snapshot finished now brings its region's membership: raft-rs starts from it.
        storage.set_conf_state(crate::storage::conf_state(&region));
        core.add_peer(region, storage, applied)
    }

    /// One loop iteration (see the module doc). `send` transmits a group of messages;
    /// `answer` is called whenever the core may hold new responses (`take_responses`): once
    /// before the log append (writes applied from earlier, already durable entries; reads)
    /// and once at the end. `None`: there was nothing to do.
    pub async fn run_ready(
        &self,
        send: &mut impl FnMut(Vec<RaftMessage>),
        answer: &mut impl FnMut(),
    ) -> Result<Option<LoopStats>> {
        let mut stats = LoopStats::default();
        let t0 = Instant::now();
        let rd = self.core.borrow_mut().ready();
        stats.core += t0.elapsed();
        if rd.is_empty() {
            answer(); // reads served within the lease need no iteration
            return Ok(None);
        }
        send(rd.messages);
        stats.entries_fetched = self.fetch_entries().await?;
        for region_id in rd.generate_snapshots {
            let dir = self.snap_dir.clone();
            match self.kv.offload(move |kv| snapshot::generate(kv, region_id, &dir)).await {
                Ok((applied, data)) => {
                    self.core.borrow_mut().on_snapshot_generated(region_id, applied, data);
                    stats.snapshots_generated += 1;
                }
                // raft-rs asks again at its next attempt to catch the follower up.
                Err(e @ Error::NoSpace(_)) => {
                    tracing::warn!(region_id, error = %e, "snapshot not generated: disk full")
                }
                Err(e) => return Err(e),
            }
        }
        // A received snapshot (its files synced before raft took it) is staged durably, then
        // the log records it (in `log_batch`), then the KV engine installs it: a crash
        // anywhere in between is finished on restart. (File work: off the shard's thread.)
        let mut staged = Vec::new();
        for (region, snap) in &rd.install_snapshots {
            let index = snap.get_metadata().index;
            let result = until_space(&self.kv, &mut stats, "staging a snapshot", || {
                let (id, meta, dir) = (region.id, snap.data.to_vec(), self.snap_dir.clone());
                self.kv.offload(move |_| snapshot::stage(&dir, id, index, &meta))
            })
            .await;
            match result {
                Err(Error::Corruption { region_id, reason }) => self.core.borrow_mut().stop_region(region_id, reason),
                other => {
                    other?;
                    staged.push(region.id);
                }
            }
        }
        // Removed replicas: their data and state leave the KV engine (a tombstone stays) before
        // the log batch cleans their logs.
        for (region, peer_id) in &rd.destroy_regions {
            until_space(&self.kv, &mut stats, "destroying a replica", || {
                std::future::ready(apply::destroy(&self.kv, region, *peer_id))
            })
            .await?;
            stats.region_changes += 1;
        }
        // Committed entries are ones this replica made durable in EARLIER iterations
        // (raft-rs hands out min(committed, persisted)): they are applied, and their clients
        // answered, without waiting for this iteration's append. Regions installing a
        // snapshot now apply after it.
        let (late, early): (Vec<ApplyTask>, Vec<ApplyTask>) = rd
            .apply
            .into_iter()
            .partition(|t| rd.install_snapshots.iter().any(|(r, _)| r.id == t.region.id));
        self.apply_all(early, &mut stats).await?;
        answer();
        if !rd.log_batch.is_empty() {
            stats.regions_in_batch = rd.persisted.len();
            let t0 = Instant::now();
            self.append(&rd.log_batch, &mut stats).await?;
            stats.log += t0.elapsed();
        }
        // Durable from here on: the batch's entries and hard states survive a crash.
        for (region, snap) in rd.install_snapshots.iter().filter(|(r, _)| staged.contains(&r.id)) {
            let index = snap.get_metadata().index;
            let installed = until_space(&self.kv, &mut stats, "installing a snapshot", || {
                let (id, dir) = (region.id, self.snap_dir.clone());
                self.kv.offload(move |kv| snapshot::install(kv, id, index, &dir))
            })
            .await;
            match installed {
                // The staged copy stays: a restart tries the install again, and stops the
                // region again if the snapshot is bad.
                Err(Error::Corruption { region_id, reason }) => self.core.borrow_mut().stop_region(region_id, reason),
                other => {
                    other?;
                    stats.snapshots_installed += 1;
                    stats.region_changes += 1;
                }
            }
        }
        let t0 = Instant::now();
        {
            let mut core = self.core.borrow_mut();
            core.on_persisted(&rd.persisted);
            for (region, snap) in &rd.install_snapshots {
                core.on_applied(region.id, snap.get_metadata().index, Vec::new());
            }
        }
        stats.core += t0.elapsed();
        self.apply_all(late, &mut stats).await?;
        send(rd.after_persist);
        answer();
        Ok(Some(stats))
    }

    /// Reads from the log engine the entries raft-rs is waiting for (older than the regions'
    /// caches, to send to followers that are behind) and hands them back to raft-rs, which
    /// sends them in the next iteration. Corrupt entries stop their region.
    async fn fetch_entries(&self) -> Result<u64> {
        let fetches = self.core.borrow_mut().take_fetches();
        let mut fetched = 0;
        for (region_id, fetch) in fetches {
            let max_bytes = usize::try_from(fetch.max_bytes).unwrap_or(usize::MAX);
            let read = self.log.fetch(region_id, fetch.low, fetch.high, max_bytes).await;
            let entries = match read {
                Ok(got) => apply::decode_entries(region_id, got),
                // Compacted meanwhile: raft-rs asks again and gets a snapshot.
                Err(corekv_storage::Error::IndexOutOfRange { .. }) => Ok(Vec::new()),
                Err(e @ corekv_storage::Error::Corruption { .. }) => Err(Error::Corruption {
                    region_id,
                    reason: e.to_string(),
                }),
                Err(e) => return Err(e.into()),
            };
            match entries {
                Ok(entries) => {
                    fetched += entries.len() as u64;
                    self.core.borrow_mut().on_fetched(region_id, entries, fetch.context)
                }
                Err(Error::Corruption { region_id, reason }) => self.core.borrow_mut().stop_region(region_id, reason),
                Err(e) => return Err(e),
            }
        }
        Ok(fetched)
    }

    /// Applies each task's entries. A full disk is waited out: the entries the KV engine took
    /// before it filled are answered, the rest applied again once space is freed.
    async fn apply_all(&self, tasks: Vec<ApplyTask>, stats: &mut LoopStats) -> Result<()> {
        for task in tasks {
            if self.core.borrow().stopped(task.region.id).is_some() {
                continue; // stopped earlier in this iteration
            }
            let mut entries = &task.entries[..];
            // Since when the disk has had room while the engine still refused (see above).
            let mut roomy_since: Option<Instant> = None;
            // The region as the applied entries left it (a split changes it).
            let mut region = std::borrow::Cow::Borrowed(&task.region);
            while !entries.is_empty() {
                let t0 = Instant::now();
                let result = apply::apply(&self.kv, &region, task.me, entries);
                let t1 = Instant::now();
                stats.apply += t1 - t0;
                let (applied, outcomes, failure) = match result {
                    Ok((applied, outcomes)) => (applied, outcomes, None),
                    Err(f) => (f.applied, f.results, Some(f.error)),
                };
                let done = outcomes.len();
                stats.entries_applied += done as u64;
                if done > 0 {
                    debug_assert_eq!(applied, entries[done - 1].index);
                    let mut core = self.core.borrow_mut();
                    core.on_applied(task.region.id, applied, outcomes);
                    if core.region(task.region.id).is_none() {
                        break; // removed from the region and destroyed, or stopped
                    }
                    if let Some(now) = core.region(task.region.id).filter(|r| r.epoch != region.epoch) {
                        region = std::borrow::Cow::Owned(now.clone());
                        stats.region_changes += 1;
                    }
                }
                stats.core += t1.elapsed();
                entries = &entries[done..];
                match failure {
                    None => debug_assert!(entries.is_empty()),
                    Some(e @ Error::NoSpace(_)) => {
                        wait_for_space(&self.kv, stats, "applying", &e, &mut roomy_since).await?
                    }
                    // The region stops here; the others apply on.
                    Some(Error::Corruption { region_id, reason }) => {
                        self.core.borrow_mut().stop_region(region_id, reason);
                        break;
                    }
                    Some(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Appends `batch`, waiting out a full disk (the batch is kept and retried as it is:
    /// raft's view already includes it). Any other failure is fatal for the shard.
    async fn append(&self, batch: &LogBatch, stats: &mut LoopStats) -> Result<()> {
        until_space(&self.kv, stats, "appending to the raft log", || self.log.append(batch)).await?;
        stats.log_appends += 1;
        Ok(())
    }

    /// Log GC: for regions with more than `keep + slack` applied entries in the log, makes the
    /// KV engine durable (off the shard's core), then drops the log below the last `keep`.
    /// Returns how many regions were compacted.
    pub async fn gc(&self, keep_entries: u64, slack_entries: u64) -> Result<usize> {
        let candidates = self.core.borrow().gc_candidates(keep_entries, slack_entries);
        if candidates.is_empty() {
            return Ok(0);
        }
        // The KV engine holds everything applied only once flushed: the log may drop it then.
        self.kv
            .offload(|kv| Cf::ALL.into_iter().try_for_each(|cf| kv.flush(cf)))
            .await?;
        // A snapshot installed while the flush ran moved the log past some candidates: those
        // are left alone (their older truncation must not overwrite the snapshot's). From
        // here to the append's admission nothing yields.
        let candidates: Vec<(u64, u64, u64)> = {
            let core = self.core.borrow();
            candidates
                .into_iter()
                .filter(|&(region, index, _)| core.truncated(region).is_some_and(|t| t + 1 < index))
                .collect()
        };
        if candidates.is_empty() {
            return Ok(0);
        }
        let mut batch = LogBatch::new();
        for &(region, index, term) in &candidates {
            batch.compact_to(region, index);
            batch.put_state(region, TRUNCATED_KEY, &encode_truncated(index - 1, term));
        }
        // Not retried on a full disk: a retry could land after a snapshot's truncation and
        // undo it. The next GC round starts over from fresh candidates.
        match self.log.append(&batch).await {
            Ok(_) => {}
            Err(e @ corekv_storage::Error::NoSpace { .. }) => {
                tracing::warn!(error = %e, "log GC skipped: disk full");
                return Ok(0);
            }
            Err(e) => return Err(e.into()),
        }
        {
            let mut core = self.core.borrow_mut();
            for &(region, index, _) in &candidates {
                core.on_compacted(region, index);
            }
        }
        self.log.purge().await?;
        Ok(candidates.len())
    }
}

/// Runs `op` until it does not fail for lack of space, waiting between tries. Only for work
/// that writes nothing when it fails that way, so that trying again is safe.
async fn until_space<T, E, F, Fut>(kv: &KvEngine, stats: &mut LoopStats, what: &'static str, mut op: F) -> Result<T>
where
    E: Into<Error>,
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<T, E>>,
{
    let mut roomy_since = None;
    loop {
        match op().await.map_err(Into::into) {
            Err(e @ Error::NoSpace(_)) => wait_for_space(kv, stats, what, &e, &mut roomy_since).await?,
            other => return other,
        }
    }
}

/// Waits before `what` is tried again after `e` (a full disk). `Err` once the disk has had
/// room for `NO_SPACE_STUCK_MS` (tracked in `roomy_since`) and the work is still refused.
async fn wait_for_space(
    kv: &KvEngine,
    stats: &mut LoopStats,
    what: &'static str,
    e: &Error,
    roomy_since: &mut Option<Instant>,
) -> Result<()> {
    let room = kv.available_bytes().is_ok_and(|b| b >= DISK_ROOM_BYTES_MIN);
    let since = roomy_since.filter(|_| room).unwrap_or_else(Instant::now);
    *roomy_since = room.then_some(since);
    if since.elapsed() > Duration::from_millis(NO_SPACE_STUCK_MS) {
        return Err(Error::Storage(format!(
            "{what} is still refused ({e}) {NO_SPACE_STUCK_MS} ms after the disk had room again; restart the node to recover"
        )));
    }
    if stats.no_space_waits == 0 {
        tracing::warn!(error = %e, "{what} refused: disk full; retrying until space is freed");
    }
    stats.no_space_waits += 1;
    glommio::timer::sleep(Duration::from_millis(NO_SPACE_RETRY_MS)).await;
    Ok(())
}
