//! `corekv-bench ycsb`: YCSB core workloads against a running corekv cluster through the
//! client library: a load phase (inserts), a run phase (the workload's mix), latency per
//! operation type in HdrHistograms, a table and a JSON summary per run.
//!
//! Not yet (the etcd comparison milestone): the etcd driver on the same operation stream,
//! coordinated-omission correction for a target rate, `.hgrm` files and PNG plots.

pub mod generator;
pub mod workload;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use corekv_netio::{Client, ClientConfig};
use hdrhistogram::Histogram;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::report::new_histogram;
use generator::{key_name, unit, Latest, ScrambledZipfian};
use workload::{Distribution, OpKind, Workload};

#[derive(clap::Args)]
pub struct YcsbArgs {
    /// Client addresses of the cluster (HOST:PORT of some nodes' shard 0), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// a, b, c, d, e, f (YCSB core workloads) or put / get (micro-workloads).
    #[arg(long, default_value = "a")]
    workload: String,
    #[arg(long, default_value_t = 10_000)]
    record_count: u64,
    /// Operations of the run phase (it also ends at --duration-secs, if given).
    #[arg(long, default_value_t = 100_000)]
    operation_count: u64,
    #[arg(long)]
    duration_secs: Option<u64>,
    /// Requests in flight (one task each).
    #[arg(long, default_value_t = 64)]
    concurrency: u64,
    /// Record size: field_count x field_length bytes (YCSB: 10 x 100).
    #[arg(long, default_value_t = 10)]
    field_count: usize,
    #[arg(long, default_value_t = 100)]
    field_length: usize,
    /// Skip the load phase (the records are there from an earlier run).
    #[arg(long)]
    skip_load: bool,
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where each run's folder of results goes.
    #[arg(long, default_value = "/var/tmp/corekv-bench/results")]
    results: PathBuf,
}

/// What the tasks of a phase share.
struct Phase {
    workload: Workload,
    record_bytes: usize,
    /// Records that exist (loaded plus inserted and acknowledged): reads draw from these.
    records: Cell<u64>,
    /// The next record number an insert takes.
    next_insert: Cell<u64>,
    issued: Cell<u64>,
    ops_max: u64,
    deadline: Option<Instant>,
    latency_us: RefCell<Vec<Histogram<u64>>>,
    errors: RefCell<Vec<u64>>,
}

pub fn run(args: &YcsbArgs) -> Result<()> {
    let workload = Workload::named(&args.workload)?;
    let endpoints = args.endpoints.clone();
    let (record_count, concurrency, seed, skip_load) = (args.record_count, args.concurrency, args.seed, args.skip_load);
    let record_bytes = args.field_count * args.field_length;
    let (ops, deadline) = (args.operation_count, args.duration_secs.map(Duration::from_secs));
    let (table, summary) = corekv_tools::on_executor(move || async move {
        let client = Client::connect(ClientConfig::new(endpoints)).await?;
        let mut report = String::new();
        if !skip_load {
            let load = Rc::new(Phase::new(Workload::named("put")?, record_bytes, 0, record_count, None));
            let elapsed = drive(&client, &load, concurrency, seed, true).await;
            report += &load.table("load", elapsed);
        }
        let phase = Rc::new(Phase::new(workload, record_bytes, record_count, ops, deadline));
        let elapsed = drive(&client, &phase, concurrency, seed + 1, false).await;
        report += &phase.table("run", elapsed);
        Ok((report, phase.summary(elapsed)))
    })?;
    print!("{table}");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = args.results.join(format!("ycsb-{}-{stamp}", args.workload));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("summary.json"), summary).context("write summary.json")?;
    println!("results: {}", dir.display());
    Ok(())
}

/// Runs `concurrency` tasks until the phase's operation count or deadline; the elapsed time.
async fn drive(client: &Client, phase: &Rc<Phase>, concurrency: u64, seed: u64, load: bool) -> Duration {
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (client, phase) = (client.clone(), Rc::clone(phase));
            glommio::spawn_local(async move {
                let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(1_000_003).wrapping_add(t));
                let mut keys = KeyChooser::new(phase.workload.distribution, phase.records.get());
                while phase.take_ticket() {
                    let op = if load {
                        OpKind::Insert
                    } else {
                        phase.workload.pick(unit(&mut rng))
                    };
                    let t0 = Instant::now();
                    let ok = phase.execute(&client, op, &mut rng, &mut keys).await;
                    phase.record(op, t0.elapsed(), ok);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await;
    }
    started.elapsed()
}

/// Picks existing records by the workload's distribution.
enum KeyChooser {
    Uniform,
    Zipfian(ScrambledZipfian),
    Latest(Box<Latest>),
}

impl KeyChooser {
    fn new(d: Distribution, records: u64) -> KeyChooser {
        match d {
            Distribution::Uniform => KeyChooser::Uniform,
            Distribution::Zipfian => KeyChooser::Zipfian(ScrambledZipfian::default()),
            Distribution::Latest => KeyChooser::Latest(Box::new(Latest::new(records))),
        }
    }

    fn next(&mut self, rng: &mut ChaCha8Rng, records: u64) -> u64 {
        let records = records.max(1);
        match self {
            KeyChooser::Uniform => rng.next_u64() % records,
            KeyChooser::Zipfian(z) => z.next(rng, records),
            KeyChooser::Latest(l) => l.next(rng, records),
        }
    }
}

impl Phase {
    fn new(workload: Workload, record_bytes: usize, records: u64, ops_max: u64, limit: Option<Duration>) -> Phase {
        Phase {
            workload,
            record_bytes,
            records: Cell::new(records),
            next_insert: Cell::new(records),
            issued: Cell::new(0),
            ops_max,
            deadline: limit.map(|d| Instant::now() + d),
            latency_us: RefCell::new(OpKind::ALL.iter().map(|_| new_histogram()).collect()),
            errors: RefCell::new(vec![0; OpKind::ALL.len()]),
        }
    }

    fn take_ticket(&self) -> bool {
        let more = self.issued.get() < self.ops_max && self.deadline.is_none_or(|d| Instant::now() < d);
        if more {
            self.issued.set(self.issued.get() + 1);
        }
        more
    }

    fn value(&self, rng: &mut ChaCha8Rng) -> Vec<u8> {
        (0..self.record_bytes)
            .map(|_| b'a' + (rng.next_u32() % 26) as u8)
            .collect()
    }

    /// One operation; whether it succeeded (a failure is counted, not fatal: benchmarks run
    /// under faults too).
    async fn execute(&self, c: &Client, op: OpKind, rng: &mut ChaCha8Rng, keys: &mut KeyChooser) -> bool {
        let existing = |rng: &mut ChaCha8Rng, keys: &mut KeyChooser| key_name(keys.next(rng, self.records.get()));
        match op {
            OpKind::Read => c.get(&existing(rng, keys)).await.is_ok(),
            OpKind::Update => c.put(&existing(rng, keys), &self.value(rng)).await.is_ok(),
            OpKind::Insert => {
                let n = self.next_insert.get();
                self.next_insert.set(n + 1);
                let ok = c.put(&key_name(n), &self.value(rng)).await.is_ok();
                // Acknowledged inserts become readable records (in completion order, which
                // can run ahead of a slower insert: such a read finds nothing, as in YCSB
                // without its acknowledgement window).
                if ok {
                    self.records.set(self.records.get().max(n + 1));
                }
                ok
            }
            OpKind::Scan => {
                let len = 1 + rng.next_u32() % self.workload.scan_length_max;
                c.scan(&existing(rng, keys), b"", len, false).await.is_ok()
            }
            OpKind::ReadModifyWrite => {
                let key = existing(rng, keys);
                c.get(&key).await.is_ok() && c.put(&key, &self.value(rng)).await.is_ok()
            }
        }
    }

    fn record(&self, op: OpKind, took: Duration, ok: bool) {
        let i = OpKind::ALL.iter().position(|k| *k == op).expect("listed");
        if ok {
            self.latency_us.borrow_mut()[i].saturating_record(took.as_micros() as u64);
        } else {
            self.errors.borrow_mut()[i] += 1;
        }
    }

    fn table(&self, phase: &str, elapsed: Duration) -> String {
        let mut out = format!(
            "{phase} ({} workload, {:.1} s):\n| op | count | ops/s | p50 us | p90 us | p99 us | p99.9 us | max us | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.workload.name,
            elapsed.as_secs_f64()
        );
        let hists = self.latency_us.borrow();
        for (i, kind) in OpKind::ALL.iter().enumerate() {
            let h = &hists[i];
            let errors = self.errors.borrow()[i];
            if h.is_empty() && errors == 0 {
                continue;
            }
            out += &format!(
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
                kind.name(),
                h.len(),
                h.len() as f64 / elapsed.as_secs_f64(),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                errors
            );
        }
        out
    }

    fn summary(&self, elapsed: Duration) -> String {
        let hists = self.latency_us.borrow();
        let ops: Vec<serde_json::Value> = OpKind::ALL
            .iter()
            .enumerate()
            .filter(|(i, _)| !hists[*i].is_empty())
            .map(|(i, kind)| {
                let h = &hists[i];
                serde_json::json!({
                    "op": kind.name(),
                    "count": h.len(),
                    "errors": self.errors.borrow()[i],
                    "ops_per_sec": h.len() as f64 / elapsed.as_secs_f64(),
                    "p50_us": h.value_at_quantile(0.5),
                    "p90_us": h.value_at_quantile(0.9),
                    "p99_us": h.value_at_quantile(0.99),
                    "p999_us": h.value_at_quantile(0.999),
                    "max_us": h.max(),
                })
            })
            .collect();
        serde_json::json!({
            "system": "corekv",
            "workload": self.workload.name,
            "elapsed_secs": elapsed.as_secs_f64(),
            "operations": ops,
        })
        .to_string()
    }
}
