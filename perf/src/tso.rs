//! `corekv-bench tso`: the timestamp oracle through a local 3-node cluster of the release
//! `corekv-server`: `get_ts` from 1 caller and from many concurrent callers of one client
//! (batched into shared requests), next to a raw put's, a raw get's and the loopback floor
//! (`echo`) in the same run.
//!
//! Owns: the cluster's start and stop and the table with its goals (a caller's p50 within 20 µs
//! of the loopback floor's; at least 1M timestamps/s batched). Must not:
//! leave a server running (the cluster stops on drop), or count timestamps without checking
//! that each caller's increase.

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use corekv_netio::Client;
use corekv_tools::cluster::{sibling_binary, ClusterSpec, LocalCluster};
use hdrhistogram::Histogram;

#[derive(clap::Args)]
pub struct TsoArgs {
    /// Where the cluster keeps its data (wiped first).
    #[arg(long, default_value = "/var/tmp/corekv-bench/tso")]
    dir: PathBuf,
    /// The cluster's base port.
    #[arg(long, default_value_t = 26160)]
    base_port: u16,
    /// Seconds each phase runs.
    #[arg(long, default_value_t = 5)]
    duration_secs: u64,
    /// Concurrent callers of the first batched phase.
    #[arg(long, default_value_t = 64)]
    callers: u32,
    /// Concurrent callers of the second batched phase (the throughput goal's).
    #[arg(long, default_value_t = 512)]
    many_callers: u32,
    /// Nodes of the cluster (1: no replication, and fewer threads than cores here).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Shards per node.
    #[arg(long, default_value_t = 2)]
    shards: u32,
}

/// Timestamps/s the batched phase should reach.
const GOAL_TIMESTAMPS_PER_SEC: f64 = 1e6;
/// How far a single caller's p50 may be above the loopback floor's.
const GOAL_OVER_FLOOR_US: u64 = 20;

/// What one phase measured.
struct Phase {
    name: String,
    calls: u64,
    requests: u64,
    elapsed: Duration,
    latency_us: Histogram<u64>,
}

impl Phase {
    fn row(&self) -> String {
        let q = |p: f64| self.latency_us.value_at_quantile(p);
        format!(
            "  {:<22} {:>10.0} calls/s  {:>9} requests  {:>6.1} calls/request  p50 {:>6} us  p99 {:>6} us",
            self.name,
            self.calls as f64 / self.elapsed.as_secs_f64(),
            self.requests,
            self.calls as f64 / self.requests.max(1) as f64,
            q(0.5),
            q(0.99)
        )
    }
}

pub fn run(args: &TsoArgs) -> Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let spec = ClusterSpec {
        nodes: args.nodes,
        shards: args.shards,
        data_dir: args.dir.clone(),
        hosts: vec!["127.0.0.1".into()],
        base_port: args.base_port,
        server: sibling_binary("corekv-server")?,
        extra_args: Vec::new(),
        tls: false,
    };
    let mut cluster = LocalCluster::start(spec)?;
    cluster
        .wait_for_leaders(Duration::from_secs(60))
        .context("the cluster did not come up")?;
    let cfg = cluster.spec().client_config()?;
    let duration = Duration::from_secs(args.duration_secs);
    let batched = [args.callers, args.many_callers];
    let phases = corekv_tools::on_executor(move || async move {
        let client = Rc::new(Client::connect(cfg).await?);
        client.get_ts(1).await?; // finds the placement leader
        let mut phases = vec![
            floor(duration).await?,
            measure(&client, "raw put, 1 caller", 1, duration, Op::Put).await?,
            measure(&client, "raw get, 1 caller", 1, duration, Op::Get).await?,
            measure(&client, "get_ts, 1 caller", 1, duration, Op::Ts).await?,
        ];
        for callers in batched {
            let name = format!("get_ts, {callers} callers");
            phases.push(measure(&client, &name, callers, duration, Op::Ts).await?);
        }
        Ok(phases)
    })?;
    println!(
        "TSO through a {}-node x {}-shard local cluster, one client, {} s a phase:",
        args.nodes, args.shards, args.duration_secs
    );
    for phase in &phases {
        println!("{}", phase.row());
    }
    let p50 = |phase: &Phase| phase.latency_us.value_at_quantile(0.5);
    let (floor_us, one_us) = (p50(&phases[0]), p50(&phases[3]));
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    println!(
        "goal: a caller's p50 <= the loopback floor's + {GOAL_OVER_FLOOR_US} us: {} ({one_us} us, floor {floor_us} us)",
        met(one_us <= floor_us + GOAL_OVER_FLOOR_US)
    );
    let last = &phases[phases.len() - 1];
    let rate = last.calls as f64 / last.elapsed.as_secs_f64();
    println!(
        "goal: >= 1M timestamps/s batched: {} ({rate:.0}/s from {} callers)",
        met(rate >= GOAL_TIMESTAMPS_PER_SEC),
        args.many_callers
    );
    cluster.stop()?;
    Ok(())
}

/// The loopback floor as a phase: one message echoed at a time (`echo`).
async fn floor(duration: Duration) -> Result<Phase> {
    let started = Instant::now();
    let (calls, latency_us) = crate::echo::round_trips(duration).await?;
    Ok(Phase {
        name: "loopback echo (floor)".into(),
        calls,
        requests: calls,
        elapsed: started.elapsed(),
        latency_us,
    })
}

#[derive(Clone, Copy)]
enum Op {
    Put,
    Get,
    Ts,
}

/// `callers` concurrent loops of `op` for `duration`; each caller's timestamps must increase.
async fn measure(client: &Rc<Client>, name: &str, callers: u32, duration: Duration, op: Op) -> Result<Phase> {
    let before = client.stats();
    let started = Instant::now();
    let calls = Rc::new(Cell::new(0u64));
    let tasks: Vec<_> = (0..callers)
        .map(|caller| glommio::spawn_local(caller_loop(Rc::clone(client), Rc::clone(&calls), caller, duration, op)))
        .collect();
    let mut latency_us = Histogram::new(3)?;
    for task in tasks {
        latency_us.add(task.await?)?;
    }
    let after = client.stats();
    Ok(Phase {
        name: name.into(),
        calls: calls.get(),
        requests: after.attempts - before.attempts,
        elapsed: started.elapsed(),
        latency_us,
    })
}

async fn caller_loop(
    client: Rc<Client>,
    calls: Rc<Cell<u64>>,
    caller: u32,
    duration: Duration,
    op: Op,
) -> Result<Histogram<u64>> {
    let mut latency_us = Histogram::<u64>::new(3)?;
    let (end, mut last, mut i) = (Instant::now() + duration, 0, 0u64);
    while Instant::now() < end {
        let t = Instant::now();
        match op {
            Op::Put => {
                client
                    .put(format!("tso-bench-{caller}-{i}").as_bytes(), &[0; 16])
                    .await?
            }
            Op::Get => drop(client.get(format!("tso-bench-{caller}-0").as_bytes()).await?),
            Op::Ts => {
                let ts = client.get_ts(1).await?;
                ensure!(ts > last, "caller {caller}: timestamp {ts} after {last}");
                last = ts;
            }
        }
        latency_us.record(t.elapsed().as_micros() as u64)?;
        calls.set(calls.get() + 1);
        i += 1;
    }
    Ok(latency_us)
}
