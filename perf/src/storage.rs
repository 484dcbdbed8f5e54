//! `corekv-bench storage`: both storage engines against the disk's floor and against the
//! design the log engine replaces, side by side in one run on one disk.
//!
//! Owns: the workloads and their order. Rows:
//! - the floor (raw io_uring O_DIRECT 4 KiB write + fdatasync), overwrite and file-growing;
//! - the log engine, one appender, batches of 1, 16 and 256 entries of 1 KiB, plus many
//!   concurrent appenders (group commit), with the shard thread's CPU time per append;
//! - RocksDB with a synced WAL used as the raft log (TiKV's raftdb before raft-engine);
//! - the KV engine's write batches of 1 KiB values, with and without sync.
//!
//! Must not: write outside `--dir`: every row works in a subdirectory of it (wiped first) or in
//! the floor's two files.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use corekv_storage::kv::{Cf, KvConfig, KvEngine, SharedBlockCache};
use corekv_storage::raftlog::{LogBatch, LogConfig, LogEngine, UringDisk};
use glommio::{LocalExecutorBuilder, Placement};

use crate::floor;
use crate::report::{new_histogram, table, thread_cpu_time, Row};

const ENTRY_BYTES: usize = 1024;
const REGIONS: u64 = 16;
/// Appenders in the group-commit row: more than a shard would usually have at once.
const CONCURRENT_APPENDERS: u64 = 64;
/// Appenders of 256-entry batches in the bandwidth row: enough to keep a write in flight.
const BULK_APPENDERS: u64 = 8;
const KV_BATCH_VALUES: usize = 64;

#[derive(Debug, Clone, clap::Args)]
pub struct StorageArgs {
    /// Directory on the disk to measure (wiped of our files before and after).
    #[arg(long, default_value = "/var/tmp/corekv-bench")]
    pub dir: PathBuf,
    /// Seconds each row runs.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Synced writes measured for the floor.
    #[arg(long, default_value_t = 2000)]
    pub floor_iterations: u64,
    /// Only the log engine rows (for profiling it).
    #[arg(long)]
    pub log_only: bool,
    /// CPU the log engine's executor is pinned to.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
}

pub fn run(args: &StorageArgs) -> Result<()> {
    std::fs::create_dir_all(&args.dir).with_context(|| format!("create {}", args.dir.display()))?;
    let duration = Duration::from_secs_f64(args.seconds);
    eprintln!("measuring the floor in {} ...", args.dir.display());
    let floor = floor::measure(&args.dir, args.floor_iterations)?;
    let floor_p50 = floor.overwrite.value_at_quantile(0.5);
    let mut overwrite = floor_row("floor: 4 KiB write+fdatasync, overwrite", floor.overwrite.clone(), 4096);
    overwrite.cpu_us_per_op = Some(floor.overwrite_cpu_us);
    let mut dsync = floor_row(
        "floor: 4 KiB O_DSYNC write, overwrite",
        floor.dsync_overwrite.clone(),
        4096,
    );
    dsync.cpu_us_per_op = Some(floor.dsync_cpu_us);
    let mut rows = vec![
        overwrite,
        floor_row("floor: write only", floor.write_only.clone(), 4096),
        floor_row("floor: fdatasync only", floor.sync_only.clone(), 4096),
        dsync,
        floor_row(
            "floor: 4 KiB write+fdatasync, file grows",
            floor.extending.clone(),
            4096,
        ),
    ];

    eprintln!("log engine ...");
    let (log_rows, idle_cpu, appends_per_sync) = log_engine_rows(args.dir.join("raftlog"), duration, args.cpu)?;
    rows.extend(log_rows);
    if args.log_only {
        println!("{}", table(&rows, floor_p50));
        return Ok(());
    }
    eprintln!("RocksDB as the raft log ...");
    for batch in [1, 16, 256] {
        rows.push(rocksdb_log_row(&args.dir.join("rocksdb-log"), batch, duration)?);
    }
    rows.push(rocksdb_concurrent_row(&args.dir.join("rocksdb-log"), duration)?);
    eprintln!("KV engine ...");
    for sync in [false, true] {
        rows.push(kv_row(&args.dir.join("kv"), sync, duration)?);
    }

    println!("{}", table(&rows, floor_p50));
    println!(
        "sequential O_DIRECT write bandwidth (256 KiB writes): {:.0} MiB/s",
        floor.seq_write_mib_s
    );
    println!("log engine executor CPU while idle: {:.2}% of a core", idle_cpu * 100.0);
    println!("group commit with {CONCURRENT_APPENDERS} appenders: {appends_per_sync:.1} appends per durable write");
    let find = |prefix: &str, suffix: &str| {
        rows.iter()
            .find(|r| r.name.starts_with(prefix) && r.name.ends_with(suffix))
            .expect("row")
    };
    let pairs = [
        (
            "batch   1",
            find("log engine: batch 1 ", ""),
            find("RocksDB as raft log (sync WAL): batch 1 ", ""),
        ),
        (
            "batch  16",
            find("log engine: batch 16 ", ""),
            find("RocksDB as raft log (sync WAL): batch 16 ", ""),
        ),
        (
            "batch 256",
            find("log engine: batch 256 ", ""),
            find("RocksDB as raft log (sync WAL): batch 256 ", ""),
        ),
        (
            "64 concurrent x batch 1",
            find("log engine: 64 appenders", ""),
            find("RocksDB as raft log (sync WAL): 64 writers", ""),
        ),
    ];
    for (what, ours, theirs) in pairs {
        println!(
            "{what}: log engine / RocksDB-as-log: throughput x{:.2}, p50 x{:.2}",
            ours.ops_per_sec() / theirs.ops_per_sec(),
            ours.latency.value_at_quantile(0.5) as f64 / theirs.latency.value_at_quantile(0.5) as f64,
        );
    }
    Ok(())
}

fn floor_row(name: &str, latency: hdrhistogram::Histogram<u64>, bytes: u64) -> Row {
    let elapsed = Duration::from_micros(latency.mean() as u64 * latency.len().max(1));
    Row::new(name, elapsed, bytes, latency, None)
}

fn log_row_name(batch: usize) -> String {
    format!("log engine: batch {batch} x 1 KiB")
}

fn rocks_row_name(batch: usize) -> String {
    format!("RocksDB as raft log (sync WAL): batch {batch} x 1 KiB")
}

fn fresh_dir(dir: &Path) -> Result<()> {
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("remove {}", dir.display()))?;
    }
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))
}

/// Runs the log engine rows on a pinned glommio executor, as a shard would.
fn log_engine_rows(dir: PathBuf, duration: Duration, cpu: usize) -> Result<(Vec<Row>, f64, f64)> {
    fresh_dir(&dir)?;
    let handle = LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name("bench-shard")
        .spawn(move || async move {
            let disk = UringDisk::open(&dir, corekv_storage::raftlog::SyncMode::Auto).await?;
            let (engine, _) = LogEngine::open(disk, LogConfig::default()).await?;
            let mut rows = Vec::new();
            let mut next_index = vec![1u64; REGIONS as usize + 1];
            for batch in [1, 16, 256] {
                rows.push(sequential_appends(&engine, batch, duration, &mut next_index).await?);
            }
            let before = engine.stats();
            rows.push(concurrent_appends(&engine, CONCURRENT_APPENDERS, 1, 1000, duration).await?);
            let after = engine.stats();
            rows.push(concurrent_appends(&engine, BULK_APPENDERS, 256, 2000, duration).await?);
            let appends_per_sync = (after.appends - before.appends) as f64 / (after.syncs - before.syncs).max(1) as f64;
            // Idle: nothing to write; the executor should sleep, not spin.
            let cpu0 = thread_cpu_time();
            let t0 = Instant::now();
            glommio::timer::sleep(Duration::from_secs(1)).await;
            let idle = (thread_cpu_time() - cpu0).as_secs_f64() / t0.elapsed().as_secs_f64();
            anyhow::Ok((rows, idle, appends_per_sync))
        })
        .map_err(|e| anyhow::anyhow!("start the bench executor: {e}"))?;
    handle.join().map_err(|e| anyhow::anyhow!("bench executor: {e:?}"))?
}

fn entries_batch(region: u64, first: u64, n: usize, data: &[u8]) -> LogBatch {
    let mut b = LogBatch::new();
    b.add_entries(region, first, (0..n).map(|_| (1u64, data)));
    b
}

async fn sequential_appends(
    engine: &LogEngine<UringDisk>,
    batch: usize,
    duration: Duration,
    next_index: &mut [u64],
) -> Result<Row> {
    let data = vec![0x42u8; ENTRY_BYTES];
    let mut latency = new_histogram();
    let (cpu0, t0) = (thread_cpu_time(), Instant::now());
    let mut ops = 0u64;
    while t0.elapsed() < duration {
        let region = 1 + ops % REGIONS;
        let first = next_index[region as usize];
        let b = entries_batch(region, first, batch, &data);
        let t = Instant::now();
        engine.append(&b).await?;
        latency.record(t.elapsed().as_micros() as u64)?;
        next_index[region as usize] += batch as u64;
        ops += 1;
        if ops.is_multiple_of(256) {
            gc(engine, next_index).await?;
        }
    }
    let (elapsed, cpu) = (t0.elapsed(), thread_cpu_time() - cpu0);
    Ok(Row::new(
        log_row_name(batch),
        elapsed,
        (batch * ENTRY_BYTES) as u64,
        latency,
        Some(cpu),
    ))
}

/// Log GC as raftstore will do it: keep a short tail per region, then purge.
async fn gc(engine: &LogEngine<UringDisk>, next_index: &[u64]) -> Result<()> {
    let mut b = LogBatch::new();
    for region in 1..=REGIONS {
        b.compact_to(region, next_index[region as usize].saturating_sub(64).max(1));
    }
    engine.append(&b).await?;
    engine.purge().await?;
    Ok(())
}

/// `appenders` concurrent appenders of `batch`-entry batches, each on a region of its own
/// numbered from `base`: they share fdatasyncs through group commit.
async fn concurrent_appends(
    engine: &LogEngine<UringDisk>,
    appenders: u64,
    batch: usize,
    base: u64,
    duration: Duration,
) -> Result<Row> {
    let t0 = Instant::now();
    let cpu0 = thread_cpu_time();
    let tasks: Vec<_> = (0..appenders)
        .map(|i| {
            let engine = engine.clone();
            glommio::spawn_local(async move {
                let data = vec![0x17u8; ENTRY_BYTES];
                let mut latency = new_histogram();
                let mut index = 1;
                while t0.elapsed() < duration {
                    let t = Instant::now();
                    engine.append(&entries_batch(base + i, index, batch, &data)).await?;
                    latency.record(t.elapsed().as_micros() as u64)?;
                    index += batch as u64;
                    if index % 4096 < batch as u64 {
                        engine.compact_to(base + i, index - 1).await?;
                        engine.purge().await?;
                    }
                }
                anyhow::Ok(latency)
            })
        })
        .collect();
    let mut latency = new_histogram();
    for t in tasks {
        latency.add(t.await?)?;
    }
    let (elapsed, cpu) = (t0.elapsed(), thread_cpu_time() - cpu0);
    // Log GC of this row's regions, so the next row does not pay for rewriting them.
    let mut gc = LogBatch::new();
    for region in base..base + appenders {
        if let Some((_, last)) = engine.span(region) {
            gc.compact_to(region, last + 1);
        }
    }
    engine.append(&gc).await?;
    engine.purge().await?;
    Ok(Row::new(
        format!("log engine: {appenders} appenders x batch {batch} x 1 KiB"),
        elapsed,
        (batch * ENTRY_BYTES) as u64,
        latency,
        Some(cpu),
    ))
}

/// RocksDB as the raft log: key = region ++ index, one WriteBatch per append, WAL synced.
fn rocksdb_log_row(dir: &Path, batch: usize, duration: Duration) -> Result<Row> {
    fresh_dir(dir)?;
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = rocksdb::DB::open(&opts, dir)?;
    let mut write_opts = rocksdb::WriteOptions::default();
    write_opts.set_sync(true);
    let data = vec![0x42u8; ENTRY_BYTES];
    let mut next_index = vec![1u64; REGIONS as usize + 1];
    let mut latency = new_histogram();
    let (cpu0, t0) = (thread_cpu_time(), Instant::now());
    let mut ops = 0u64;
    while t0.elapsed() < duration {
        let region = 1 + ops % REGIONS;
        let mut wb = rocksdb::WriteBatch::default();
        for _ in 0..batch {
            let index = next_index[region as usize];
            next_index[region as usize] += 1;
            let mut key = [0u8; 16];
            key[..8].copy_from_slice(&region.to_be_bytes());
            key[8..].copy_from_slice(&index.to_be_bytes());
            wb.put(key, &data);
        }
        let t = Instant::now();
        db.write_opt(wb, &write_opts)?;
        latency.record(t.elapsed().as_micros() as u64)?;
        ops += 1;
    }
    let (elapsed, cpu) = (t0.elapsed(), thread_cpu_time() - cpu0);
    drop(db);
    std::fs::remove_dir_all(dir)?;
    Ok(Row::new(
        rocks_row_name(batch),
        elapsed,
        (batch * ENTRY_BYTES) as u64,
        latency,
        Some(cpu),
    ))
}

/// RocksDB as the raft log with as many writer threads as the log engine had appenders: its
/// own group commit (one WAL sync per write group) is what it is compared with.
fn rocksdb_concurrent_row(dir: &Path, duration: Duration) -> Result<Row> {
    fresh_dir(dir)?;
    let mut opts = rocksdb::Options::default();
    opts.create_if_missing(true);
    let db = std::sync::Arc::new(rocksdb::DB::open(&opts, dir)?);
    let t0 = Instant::now();
    let threads: Vec<_> = (0..CONCURRENT_APPENDERS)
        .map(|region| {
            let db = db.clone();
            std::thread::spawn(move || -> Result<hdrhistogram::Histogram<u64>> {
                let mut write_opts = rocksdb::WriteOptions::default();
                write_opts.set_sync(true);
                let data = vec![0x42u8; ENTRY_BYTES];
                let mut latency = new_histogram();
                let mut index = 1u64;
                while t0.elapsed() < duration {
                    let mut key = [0u8; 16];
                    key[..8].copy_from_slice(&region.to_be_bytes());
                    key[8..].copy_from_slice(&index.to_be_bytes());
                    let mut wb = rocksdb::WriteBatch::default();
                    wb.put(key, &data);
                    let t = Instant::now();
                    db.write_opt(wb, &write_opts)?;
                    latency.record(t.elapsed().as_micros() as u64)?;
                    index += 1;
                }
                Ok(latency)
            })
        })
        .collect();
    let mut latency = new_histogram();
    for t in threads {
        latency.add(t.join().map_err(|_| anyhow::anyhow!("writer thread panicked"))??)?;
    }
    let elapsed = t0.elapsed();
    drop(db);
    std::fs::remove_dir_all(dir)?;
    let name = format!("RocksDB as raft log (sync WAL): {CONCURRENT_APPENDERS} writers x batch 1 x 1 KiB");
    Ok(Row::new(name, elapsed, ENTRY_BYTES as u64, latency, None))
}

/// The KV engine: write batches of `KV_BATCH_VALUES` 1 KiB values across the default CF.
fn kv_row(dir: &Path, sync: bool, duration: Duration) -> Result<Row> {
    fresh_dir(dir)?;
    let cache = SharedBlockCache::new(256 << 20);
    let engine = KvEngine::open(dir, &KvConfig::default(), &cache)?;
    let value = vec![0x33u8; ENTRY_BYTES];
    let mut latency = new_histogram();
    let (cpu0, t0) = (thread_cpu_time(), Instant::now());
    let mut key_no = 0u64;
    while t0.elapsed() < duration {
        let mut wb = engine.write_batch();
        for _ in 0..KV_BATCH_VALUES {
            // Scattered keys, as a hashed workload would write them.
            let key = key_no.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes();
            wb.put(Cf::Default, &key, &value)?;
            key_no += 1;
        }
        let t = Instant::now();
        engine.write(wb, sync)?;
        latency.record(t.elapsed().as_micros() as u64)?;
    }
    let (elapsed, cpu) = (t0.elapsed(), thread_cpu_time() - cpu0);
    drop(engine);
    std::fs::remove_dir_all(dir)?;
    let name = format!("KV engine: batch {KV_BATCH_VALUES} x 1 KiB, sync={sync}");
    Ok(Row::new(
        name,
        elapsed,
        (KV_BATCH_VALUES * ENTRY_BYTES) as u64,
        latency,
        Some(cpu),
    ))
}
