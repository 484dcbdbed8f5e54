//! corekv-storage-demo: both storage engines of one shard at work, with real figures.
//!
//! What `make run` shows until the cluster exists. One shard (a glommio executor pinned to a
//! core) does what raftstore will do with them:
//! 1. proposers append raft entries for many regions to the Raft log engine; concurrent
//!    appends share fdatasyncs (group commit);
//! 2. once an entry is durable it is applied to the KV engine, with the region's applied
//!    index in the `meta` CF in the same write batch;
//! 3. log GC: the KV engine is flushed (off the executor), then every region's log is
//!    compacted up to its applied index and dead segments are purged;
//! 4. restart: both engines are reopened and every value and applied index is checked.
//!
//! Owns: its workload, figures and restart check. Must not: go through raftstore or the
//! network: it plays raftstore's part with an entry format of its own (its data dir is no node's).

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use clap::Parser;
use corekv_storage::kv::{Cf, Direction, KeyRange, KvConfig, KvEngine, KvRead, SharedBlockCache};
use corekv_storage::raftlog::{LogBatch, LogConfig, LogEngine, RecoveryReport, UringDisk};
use hdrhistogram::Histogram;

#[derive(Parser, Debug, Clone)]
#[command(
    name = "corekv-storage-demo",
    version = corekv_shard::VERSION,
    about = "Runs one shard's two storage engines and prints what they did"
)]
struct Args {
    /// Where the shard keeps its engines (created if missing).
    #[arg(long)]
    data_dir: PathBuf,
    /// Regions owned by the shard.
    #[arg(long, default_value_t = 16)]
    regions: u64,
    /// Raft proposals to make.
    #[arg(long, default_value_t = 20_000)]
    proposals: u64,
    /// Proposals in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 256)]
    value_bytes: usize,
    /// Size of a Raft log segment, MiB: small by default so that the demo rotates, purges and
    /// recycles segments (a server keeps LogConfig's 64 MiB).
    #[arg(long, default_value_t = 2)]
    segment_mib: u64,
    /// CPU the shard is pinned to.
    #[arg(long, default_value_t = 0)]
    cpu: usize,
    /// Node-wide block cache budget, MiB (shared by every shard's KV engine).
    #[arg(long, default_value_t = 256)]
    block_cache_mib: usize,
}

fn main() -> std::process::ExitCode {
    corekv_tools::run_main("corekv-storage-demo", run)
}

fn run() -> Result<()> {
    corekv_tools::init_logging("warn", None)?;
    let args = Args::parse();
    let cache = SharedBlockCache::new(args.block_cache_mib << 20);
    println!(
        "corekv storage demo: shard 0 pinned to CPU {}, data in {}",
        args.cpu,
        args.data_dir.display()
    );

    let (a, c) = (args.clone(), cache.clone());
    let run = corekv_shard::spawn_pinned(0, args.cpu, move || async move { workload(&a, &c).await })??;
    run.print(&args);

    let (a, c) = (args.clone(), cache);
    let restart = corekv_shard::spawn_pinned(0, args.cpu, move || async move { verify_after_restart(&a, &c).await })??;
    println!(
        "restart: both engines reopened in {:.1} ms; the log recovered {} records of {} regions \
         (torn tail: {}); every region's applied index equals its last log index; {} of {} values \
         read back intact",
        restart.open_time.as_secs_f64() * 1e3,
        restart.log.records,
        restart.log.regions,
        restart
            .log
            .torn_tail
            .map_or("none".into(), |(s, o)| format!("segment {s} at {o}")),
        restart.values_ok,
        args.proposals,
    );
    Ok(())
}

fn key(region: u64, proposal: u64) -> Vec<u8> {
    format!("r{region:03}/k{proposal:010}").into_bytes()
}

fn value(proposal: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (proposal.wrapping_mul(131).wrapping_add(i as u64) % 251) as u8)
        .collect()
}

fn applied_key(region: u64) -> Vec<u8> {
    format!("applied/{region:010}").into_bytes()
}

/// An entry's data: the key and value it carries, as raftstore's proposals will.
fn encode_entry(key: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + key.len() + value.len());
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
    out.extend_from_slice(value);
    out
}

async fn open_engines(
    args: &Args,
    cache: &SharedBlockCache,
) -> Result<(LogEngine<UringDisk>, RecoveryReport, KvEngine)> {
    // The log engine first: its directory's device must be probed by a write-only file
    // before any other DmaFile (see storage::raftlog::disk).
    let segment_bytes = args.segment_mib << 20;
    let cfg = LogConfig {
        segment_bytes,
        entry_bytes_max: (segment_bytes / 2) as usize,
        ..LogConfig::default()
    };
    let (log, report) = LogEngine::open_dir(&args.data_dir.join("raftlog"), cfg)
        .await
        .context("open the Raft log engine")?;
    let kv = KvEngine::open(&args.data_dir.join("kv"), &KvConfig::default(), cache).context("open the KV engine")?;
    Ok((log, report, kv))
}

struct Run {
    elapsed: Duration,
    durable: Histogram<u64>,
    applied: Histogram<u64>,
    syncs: u64,
    bytes_written: u64,
    approx_bytes: u64,
    approx_keys: u64,
    sample: Vec<(Vec<u8>, Vec<u8>)>,
    segments_purged: u64,
    segments_before_gc: u64,
}

impl Run {
    fn print(&self, args: &Args) {
        let q = |h: &Histogram<u64>, p: f64| h.value_at_quantile(p);
        println!("raft log engine (io_uring, O_DIRECT, group commit):");
        println!(
            "  {} proposals from {} concurrent proposers over {} regions in {:.2} s = {:.0} proposals/s",
            args.proposals,
            args.concurrency,
            args.regions,
            self.elapsed.as_secs_f64(),
            args.proposals as f64 / self.elapsed.as_secs_f64()
        );
        println!(
            "  {} durable writes, one per group commit ({:.1} proposals each), {:.1} MiB written",
            self.syncs,
            args.proposals as f64 / self.syncs.max(1) as f64,
            self.bytes_written as f64 / (1 << 20) as f64
        );
        println!(
            "  propose -> durable: p50 {} µs, p99 {} µs, p99.9 {} µs, max {} µs",
            q(&self.durable, 0.5),
            q(&self.durable, 0.99),
            q(&self.durable, 0.999),
            self.durable.max()
        );
        println!("KV engine (RocksDB; CFs default, lock, write, meta):");
        println!(
            "  durable -> applied: p50 {} µs, p99 {} µs; after flush: ~{:.1} MiB, ~{} keys in the default CF",
            q(&self.applied, 0.5),
            q(&self.applied, 0.99),
            self.approx_bytes as f64 / (1 << 20) as f64,
            self.approx_keys
        );
        for (k, v) in &self.sample {
            println!(
                "  scan r003, reverse: {} = {} bytes",
                String::from_utf8_lossy(k),
                v.len()
            );
        }
        println!(
                    "log GC: KV flushed off the executor, every log compacted to its applied index; purge freed {} of {} segments",
            self.segments_purged, self.segments_before_gc
        );
    }
}

async fn workload(args: &Args, cache: &SharedBlockCache) -> Result<Run> {
    let (log, _, kv) = open_engines(args, cache).await?;
    let next_proposal = Rc::new(Cell::new(0u64));
    let next_index = Rc::new(RefCell::new(vec![1u64; args.regions as usize]));
    // Proposers finish in any order; the meta CF records the highest applied index. (The
    // apply loop of raftstore applies strictly in index order; this demo has no raft.)
    let applied_max = Rc::new(RefCell::new(vec![0u64; args.regions as usize]));
    let start = Instant::now();
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            let (log, kv, args) = (log.clone(), kv.clone(), args.clone());
            let (next_proposal, next_index, applied_max) =
                (next_proposal.clone(), next_index.clone(), applied_max.clone());
            glommio::spawn_local(async move {
                let (mut durable, mut applied) = (histogram(), histogram());
                loop {
                    let p = next_proposal.get();
                    if p >= args.proposals {
                        return anyhow::Ok((durable, applied));
                    }
                    next_proposal.set(p + 1);
                    let region = p % args.regions;
                    // Index assignment and admission happen without an await in between, so a
                    // region's entries are admitted in index order.
                    let index = {
                        let mut next = next_index.borrow_mut();
                        let i = next[region as usize];
                        next[region as usize] += 1;
                        i
                    };
                    let (k, v) = (key(region, p), value(p, args.value_bytes));
                    let data = encode_entry(&k, &v);
                    let mut batch = LogBatch::new();
                    batch.add_entries(region, index, std::iter::once((1u64, data.as_slice())));
                    let t0 = Instant::now();
                    log.append(&batch).await?;
                    let t1 = Instant::now();
                    // Durable in the log: now apply. The KV write need not sync: the log
                    // replays it after a crash, until GC (below) flushes the KV engine first.
                    let applied_index = {
                        let mut max = applied_max.borrow_mut();
                        max[region as usize] = max[region as usize].max(index);
                        max[region as usize]
                    };
                    let mut wb = kv.write_batch();
                    wb.put(Cf::Default, &k, &v)?;
                    wb.put(Cf::Meta, &applied_key(region), &applied_index.to_be_bytes())?;
                    kv.write(wb, false)?;
                    durable.record((t1 - t0).as_micros() as u64)?;
                    applied.record(t1.elapsed().as_micros() as u64)?;
                }
            })
        })
        .collect();
    let (mut durable, mut applied) = (histogram(), histogram());
    for t in tasks {
        let (d, a) = t.await?;
        durable.add(d)?;
        applied.add(a)?;
    }
    let elapsed = start.elapsed();
    let stats = log.stats();

    // Log GC: what the log drops must be durable in the KV engine first.
    kv.offload(|kv| Cf::ALL.iter().try_for_each(|&cf| kv.flush(cf))).await?;
    let mut gc = LogBatch::new();
    for region in 0..args.regions {
        let (_, last) = log.span(region).context("every region has entries")?;
        gc.compact_to(region, last + 1);
    }
    log.append(&gc).await?;
    let segments_before_gc = log.stats().segments_live;
    let segments_purged = log.purge().await?.segments_purged;

    let all = KeyRange::all();
    let sample = kv.scan(Cf::Default, &KeyRange::prefix(b"r003/"), Direction::Reverse, 2)?;
    Ok(Run {
        elapsed,
        durable,
        applied,
        syncs: stats.syncs,
        bytes_written: stats.bytes_written,
        approx_bytes: kv.approximate_size(Cf::Default, all.start(), b"\xff")?,
        approx_keys: kv.approximate_keys(Cf::Default, all.start(), b"\xff")?,
        sample,
        segments_purged,
        segments_before_gc,
    })
}

struct Restart {
    open_time: Duration,
    log: RecoveryReport,
    values_ok: u64,
}

async fn verify_after_restart(args: &Args, cache: &SharedBlockCache) -> Result<Restart> {
    let t0 = Instant::now();
    let (log, report, kv) = open_engines(args, cache).await?;
    let open_time = t0.elapsed();
    for region in 0..args.regions {
        let applied = kv
            .get(Cf::Meta, &applied_key(region))?
            .context("applied index recorded")?;
        let applied = u64::from_be_bytes(applied.as_slice().try_into().context("8-byte applied index")?);
        let (first, last) = log.span(region).context("region known to the log")?;
        ensure!(
            first == last + 1 && applied == last,
            "region {region}: log {first}..={last}, applied {applied}"
        );
    }
    let mut values_ok = 0;
    for p in 0..args.proposals {
        let got = kv.get(Cf::Default, &key(p % args.regions, p))?;
        ensure!(
            got.as_deref() == Some(value(p, args.value_bytes).as_slice()),
            "proposal {p} lost or damaged"
        );
        values_ok += 1;
    }
    Ok(Restart {
        open_time,
        log: report,
        values_ok,
    })
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    // Proves `--help` explains every flag, argument and subcommand (none is undocumented).
    #[test]
    fn every_argument_is_documented() {
        Args::command().debug_assert();
        assert_eq!(corekv_tools::undocumented(&Args::command()), Vec::<String>::new());
    }
}
