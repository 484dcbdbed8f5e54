//! `corekv-bench ycsb`: YCSB core workloads against a running corekv or etcd cluster: a load
//! phase (inserts), a run phase (the workload's mix), latency per operation type in
//! HdrHistograms, a table and a results folder per run (`summary.json`, one `.hgrm`
//! percentile file per operation type, `latency.png` with their curves).
//!
//! Owns: the command line and choosing the system and its executor. Where to read next:
//! `stream.rs` (the operation stream, a function of the seed), `phase.rs` (driving one phase
//! against any `Store`, the target rate's schedule, the reports), `store.rs` (the `Store`
//! trait and corekv's client, on glommio), `etcd.rs` (etcd's client, on a tokio
//! current-thread runtime). The same phase code drives both: only the `Store` and the
//! executor it runs on differ, and the same seed gives both the same operations.
//! Must not: treat a system differently past that choice: phases, reports and the results
//! folder are the same code for both.
//!
//! corekv's YCSB keys all start with `user`, so until regions split by size or load they live
//! in ONE region (one Raft group, one leader shard).

pub mod etcd;
pub mod generator;
pub mod phase;
pub mod store;
pub mod stream;
pub mod workload;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::plot::{self, Curve, Panel};
use corekv_netio::tls::Tls;
use etcd::EtcdStore;
use phase::{drive_all, PhaseResult, PhaseSpec};
use store::{CorekvStore, Store};
use workload::Workload;

/// How long a system may take to answer its first write (a cluster still electing leaders).
const READY_WAIT_MS: u64 = 60_000;
const READY_RETRY_MS: u64 = 200;
/// The key of that first write: outside the YCSB table, so no workload reads it.
const READY_KEY: &[u8] = b"corekv-bench-ready";

/// The system under test.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum System {
    Corekv,
    Etcd,
}

impl System {
    pub fn name(self) -> &'static str {
        match self {
            System::Corekv => "corekv",
            System::Etcd => "etcd",
        }
    }
}

#[derive(clap::Args)]
pub struct YcsbArgs {
    /// The system under test (its endpoints: --endpoints).
    #[arg(long, value_enum, default_value = "corekv")]
    system: System,
    /// corekv: client addresses (HOST:PORT of some nodes' shard 0); etcd: client URLs
    /// (http://HOST:PORT). Comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// a, b, c, d, e, f (YCSB core workloads) or put / get (micro-workloads).
    #[arg(long, default_value = "a")]
    workload: String,
    #[command(flatten)]
    shape: Shape,
    /// Skip the load phase (the records are there from an earlier run).
    #[arg(long)]
    skip_load: bool,
    /// Issue operations at this rate and count latency from when each was due (corrects
    /// coordinated omission) [default: as fast as the in-flight bound allows].
    #[arg(long)]
    target_ops_per_sec: Option<f64>,
    /// Where each run's folder of results goes.
    #[arg(long, default_value = "/var/tmp/corekv-bench/results")]
    results: PathBuf,
    /// corekv with TLS (etcd's side runs without).
    #[command(flatten)]
    tls: corekv_tools::TlsArgs,
}

/// The size of a run, shared by `ycsb` and `compare`.
#[derive(clap::Args, Debug, Clone)]
pub struct Shape {
    /// Records loaded (keys `user` + hash), and the key space the run phase picks from.
    #[arg(long, default_value_t = 10_000)]
    pub record_count: u64,
    /// Operations of the run phase (it also ends at --duration-secs, if given).
    #[arg(long, default_value_t = 100_000)]
    pub operation_count: u64,
    /// End the run phase after this long, even before --operation-count operations.
    #[arg(long)]
    pub duration_secs: Option<u64>,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    pub concurrency: u64,
    /// Record size: field_count x field_length bytes (YCSB: 10 x 100).
    #[arg(long, default_value_t = 10)]
    pub field_count: usize,
    /// Bytes per field (see --field-count).
    #[arg(long, default_value_t = 100)]
    pub field_length: usize,
    /// Seed of the operation stream: the same seed gives every system the same operations.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

impl Shape {
    /// The load phase: inserts of records 0..record_count, as fast as the bound allows.
    pub fn load(&self) -> Result<PhaseSpec> {
        let mut spec = self.run(&Workload::named("load")?, None)?;
        spec.records = 0;
        spec.ops_max = self.record_count;
        spec.duration_max = None;
        spec.seed = self.seed;
        Ok(spec)
    }

    /// The run phase of `workload` over the loaded records.
    pub fn run(&self, workload: &Workload, target_ops_per_sec: Option<f64>) -> Result<PhaseSpec> {
        let interval = match target_ops_per_sec {
            Some(rate) if !(rate > 0.0 && rate.is_finite()) => bail!("--target-ops-per-sec must be positive"),
            rate => rate.map(|r| Duration::from_secs_f64(1.0 / r)),
        };
        if self.concurrency == 0 {
            bail!("--concurrency must be at least 1");
        }
        Ok(PhaseSpec {
            workload: workload.clone(),
            records: self.record_count,
            record_bytes: self.field_count * self.field_length,
            ops_max: self.operation_count,
            duration_max: self.duration_secs.map(Duration::from_secs),
            interval,
            concurrency: self.concurrency,
            // The load phase and the run phase draw from different streams.
            seed: self.seed.wrapping_add(1),
        })
    }
}

pub fn run(args: &YcsbArgs) -> Result<()> {
    let workload = Workload::named(&args.workload)?;
    let mut specs = Vec::new();
    if !args.skip_load {
        specs.push(args.shape.load()?);
    }
    specs.push(args.shape.run(&workload, args.target_ops_per_sec)?);
    let results = run_phases(args.system, args.endpoints.clone(), args.tls.load()?, specs)?;
    let (run, load) = results.split_last().context("the run phase ran")?;
    if let Some(load) = load.first() {
        print!("{}", load.table("load"));
    }
    print!("{}", run.table("run"));
    let dir = args
        .results
        .join(format!("ycsb-{}-{}-{}", args.system.name(), args.workload, unix_secs()));
    write_run(&dir, args.system, run)?;
    println!("results: {}", dir.display());
    Ok(())
}

/// Connects to `system` on an executor of its own (corekv: glommio, through `tls` if given;
/// etcd: tokio, current thread), waits until it takes a write, then runs the phases one after
/// the other.
pub fn run_phases(
    system: System,
    endpoints: Vec<String>,
    tls: Option<Tls>,
    specs: Vec<PhaseSpec>,
) -> Result<Vec<PhaseResult>> {
    match system {
        System::Corekv => corekv_tools::on_executor(move || async move {
            let store = CorekvStore::connect(endpoints, tls).await?;
            ready(&store, system).await?;
            Ok(drive_all(&store, &specs).await)
        }),
        System::Etcd if tls.is_some() => bail!("the etcd side runs without TLS"),
        System::Etcd => {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_io()
                .enable_time()
                .build()
                .context("start a tokio runtime")?;
            runtime.block_on(async {
                let store = EtcdStore::connect(&endpoints).await?;
                ready(&store, system).await?;
                Ok(drive_all(&store, &specs).await)
            })
        }
    }
}

/// Retries one write until it succeeds or READY_WAIT_MS have passed.
async fn ready<S: Store>(store: &S, system: System) -> Result<()> {
    let deadline = std::time::Instant::now() + Duration::from_millis(READY_WAIT_MS);
    loop {
        match store.put(READY_KEY, b"1").await {
            Ok(()) => return Ok(()),
            Err(e) if std::time::Instant::now() >= deadline => {
                return Err(e.context(format!("{} took no write within {READY_WAIT_MS} ms", system.name())))
            }
            Err(_) => store.sleep(Duration::from_millis(READY_RETRY_MS)).await,
        }
    }
}

/// Writes a run phase's results folder: `summary.json`, one `.hgrm` file per operation type
/// and `latency.png` (their percentile curves).
pub fn write_run(dir: &Path, system: System, run: &PhaseResult) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("summary.json"), run.summary(system.name()).to_string()).context("write summary.json")?;
    for (name, text) in run.hgrm_files() {
        std::fs::write(dir.join(&name), text).with_context(|| format!("write {name}"))?;
    }
    let panel = Panel {
        title: format!("{} - workload {}", system.name(), run.workload),
        curves: run
            .ops
            .iter()
            .zip(plot::COLORS.iter().cycle())
            .map(|(op, color)| Curve {
                label: op.kind.name().to_string(),
                color: *color,
                latency_us: &op.latency_us,
            })
            .collect(),
    };
    plot::write_png(&dir.join("latency.png"), &[panel], 1)
}

/// Seconds since the Unix epoch, to name results folders (0 if the clock is before it).
pub fn unix_secs() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
