//! `corekv-bench raft`: the Multi-Raft core in the deterministic simulator, without artificial
//! delays: proposals per second per shard, and where the time goes (raftstore core vs log
//! engine vs apply), so later work can see what to optimise.
//!
//! Owns: the workload (writes spread over every region, a fixed number in flight). The
//! simulator runs every shard of the cluster on this one thread, so a figure per shard is
//! the cluster's throughput divided by its shards; the log engine runs on its in-memory disk
//! here (its I/O path is `corekv-bench storage`'s job).
//! Must not: add network delay, loss or faults (the default `NetConfig` has none): the figure is
//! the code's cost.

use std::time::{Duration, Instant};

use anyhow::Result;
use corekv_raftstore::linearizability::OpKind;
use corekv_raftstore::sim::{Sim, SimConfig};

#[derive(Debug, Clone, clap::Args)]
pub struct RaftArgs {
    /// Seconds to run.
    #[arg(long, default_value_t = 3.0)]
    pub seconds: f64,
    /// Writes in flight at once, spread over every region.
    #[arg(long, default_value_t = 256)]
    pub in_flight: u64,
    /// Bytes of each value.
    #[arg(long, default_value_t = 100)]
    pub value_bytes: usize,
    /// CPU the simulation is pinned to.
    #[arg(long, default_value_t = 0)]
    pub cpu: usize,
}

pub fn run(args: &RaftArgs) -> Result<()> {
    let a = args.clone();
    let (report, shards) = corekv_shard::spawn_pinned(0, args.cpu, move || async move {
        let cfg = SimConfig::new(1);
        let shards = cfg.nodes * u64::from(cfg.shards);
        let mut sim = Sim::new(cfg).await;
        sim.ticks(5).await;
        let regions: Vec<Vec<u8>> = sim.regions().iter().map(|r| r.start.clone()).collect();
        let before = sim.timing();
        let t0 = Instant::now();
        let mut n = 0u64;
        while t0.elapsed() < Duration::from_secs_f64(a.seconds) {
            for i in 0..a.in_flight {
                let mut key = regions[(i as usize) % regions.len()].clone();
                key.extend_from_slice(&n.to_be_bytes());
                n += 1;
                sim.submit(
                    i,
                    key,
                    OpKind::Put {
                        value: vec![0x5a; a.value_bytes],
                    },
                );
            }
            sim.run_until_done().await;
            sim.clear_history();
        }
        let elapsed = t0.elapsed();
        let after = sim.timing();
        (
            (
                elapsed,
                after.writes - before.writes,
                after.core - before.core,
                after.log - before.log,
                after.apply - before.apply,
            ),
            shards,
        )
    })?;
    let (elapsed, writes, core, log, apply) = report;
    let secs = elapsed.as_secs_f64();
    println!("| bench | value | proposals/s (cluster) | proposals/s per shard | core : log engine | core, log, apply, other (% of time) |");
    println!("|---|---:|---:|---:|---:|---|");
    let other = elapsed.saturating_sub(core + log + apply);
    let pct = |d: Duration| 100.0 * d.as_secs_f64() / secs;
    println!(
        "| raftstore in the simulator, 3 nodes x 2 shards, {} in flight | {} B | {:.0} | {:.0} | {:.2} | {:.0}, {:.0}, {:.0}, {:.0} |",
        args.in_flight,
        args.value_bytes,
        writes as f64 / secs,
        writes as f64 / secs / shards as f64,
        core.as_secs_f64() / log.as_secs_f64().max(1e-9),
        pct(core),
        pct(log),
        pct(apply),
        pct(other),
    );
    Ok(())
}
