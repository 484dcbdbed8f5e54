//! `corekv-bench ycsb`: YCSB core workloads against a running corekv cluster through the
//! client library: a load phase (inserts), a run phase (the workload's mix), latency per
//! operation type in HdrHistograms, a table and a JSON summary per run.
//!
//! With a target rate (`--target-ops-per-sec`), operation i is due at start + i / rate and its
//! latency counts from when it was due, not from when a busy task got to send it: the
//! correction for coordinated omission. Results: a table, `summary.json` and one `.hgrm`
//! percentile file per operation type.
//!
//! Not yet (the etcd comparison milestone): the etcd driver on the same operation stream and
//! PNG plots.

pub mod generator;
pub mod workload;

use std::cell::{Cell, RefCell};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
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
    /// Issue operations at this rate and count latency from when each was due (corrects
    /// coordinated omission) [default: as fast as the in-flight bound allows].
    #[arg(long)]
    target_ops_per_sec: Option<f64>,
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
    /// Operation i is due at `started + i * interval` (a target rate), else when a task is free.
    interval: Option<Duration>,
    started: Instant,
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
    let interval = match args.target_ops_per_sec {
        Some(rate) if !(rate > 0.0 && rate.is_finite()) => bail!("--target-ops-per-sec must be positive"),
        rate => rate.map(|r| Duration::from_secs_f64(1.0 / r)),
    };
    let (table, summary, hgrms) = corekv_tools::on_executor(move || async move {
        let client = Client::connect(ClientConfig::new(endpoints)).await?;
        let mut report = String::new();
        if !skip_load {
            let load = Rc::new(Phase::new(Workload::named("put")?, record_bytes, 0, record_count, None));
            let elapsed = drive(&client, &load, concurrency, seed, true).await;
            report += &load.table("load", elapsed);
        }
        let mut phase = Phase::new(workload, record_bytes, record_count, ops, deadline);
        phase.interval = interval;
        let phase = Rc::new(phase);
        let elapsed = drive(&client, &phase, concurrency, seed + 1, false).await;
        report += &phase.table("run", elapsed);
        Ok((report, phase.summary(elapsed), phase.hgrm_files()))
    })?;
    print!("{table}");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let dir = args.results.join(format!("ycsb-{}-{stamp}", args.workload));
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    std::fs::write(dir.join("summary.json"), summary).context("write summary.json")?;
    for (name, text) in hgrms {
        std::fs::write(dir.join(&name), text).with_context(|| format!("write {name}"))?;
    }
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
                while let Some(ticket) = phase.take_ticket() {
                    let op = if load {
                        OpKind::Insert
                    } else {
                        phase.workload.pick(unit(&mut rng))
                    };
                    let due = phase.due(ticket);
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        glommio::timer::sleep(wait).await;
                    }
                    let ok = phase.execute(&client, op, &mut rng, &mut keys).await;
                    phase.record(op, due.elapsed(), ok);
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
            interval: None,
            started: Instant::now(),
            deadline: limit.map(|d| Instant::now() + d),
            latency_us: RefCell::new(OpKind::ALL.iter().map(|_| new_histogram()).collect()),
            errors: RefCell::new(vec![0; OpKind::ALL.len()]),
        }
    }

    /// The next operation's number, until the count or the deadline is reached.
    fn take_ticket(&self) -> Option<u64> {
        let ticket = self.issued.get();
        let more = ticket < self.ops_max && self.deadline.is_none_or(|d| Instant::now() < d);
        more.then(|| {
            self.issued.set(ticket + 1);
            ticket
        })
    }

    /// When operation `ticket` is due: on the target rate's schedule, or now.
    fn due(&self, ticket: u64) -> Instant {
        match self.interval {
            Some(interval) => self.started + interval.mul_f64(ticket as f64),
            None => Instant::now(),
        }
    }

    /// One `.hgrm` text per operation type that ran: HdrHistogram's percentile distribution
    /// (value in µs, percentile, count up to it, 1/(1-percentile)).
    fn hgrm_files(&self) -> Vec<(String, String)> {
        let hists = self.latency_us.borrow();
        OpKind::ALL
            .iter()
            .zip(hists.iter())
            .filter(|(_, h)| !h.is_empty())
            .map(|(kind, h)| (format!("{}.hgrm", kind.name()), hgrm(h)))
            .collect()
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

/// HdrHistogram's percentile distribution text (the `.hgrm` format its plotters read),
/// values in µs.
fn hgrm(h: &Histogram<u64>) -> String {
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0;
    for v in h.iter_quantiles(5) {
        total += v.count_since_last_iteration();
        let q = v.quantile_iterated_to();
        let inverse = if q < 1.0 {
            format!("{:14.2}", 1.0 / (1.0 - q))
        } else {
            format!("{:>14}", "inf")
        };
        out += &format!(
            "{:12.3} {:2.12} {:10} {inverse}\n",
            v.value_iterated_to() as f64,
            q,
            total
        );
    }
    out += &format!(
        "#[Mean    = {:12.3}, StdDeviation   = {:12.3}]\n#[Max     = {:12.3}, Total count    = {:12}]\n",
        h.mean(),
        h.stdev(),
        h.max() as f64,
        h.len()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the .hgrm text walks the percentiles up to 100% with cumulative counts that end
    // at the histogram's total, and carries its max and count.
    #[test]
    fn hgrm_is_a_percentile_distribution() {
        let mut h = new_histogram();
        for v in 1..=1000u64 {
            h.record(v).unwrap();
        }
        let text = hgrm(&h);
        let rows: Vec<Vec<f64>> = text
            .lines()
            .skip(2)
            .take_while(|l| !l.starts_with('#'))
            .map(|l| l.split_whitespace().take(3).map(|x| x.parse().unwrap()).collect())
            .collect();
        assert!(rows.windows(2).all(|w| w[0][1] <= w[1][1] && w[0][2] <= w[1][2]));
        assert_eq!(rows.last().unwrap()[1..], [1.0, 1000.0]);
        assert!(text.contains("Total count    =         1000"), "{text}");
    }

    // Proves the schedule of a target rate: operation i is due i intervals after the start,
    // whenever it is sent.
    #[test]
    fn operations_are_due_on_the_target_schedule() {
        let mut p = Phase::new(Workload::named("get").unwrap(), 10, 10, 3, None);
        p.interval = Some(Duration::from_millis(10));
        let tickets: Vec<u64> = std::iter::from_fn(|| p.take_ticket()).collect();
        assert_eq!(tickets, vec![0, 1, 2]);
        assert_eq!(p.due(2) - p.due(0), Duration::from_millis(20));
    }
}
