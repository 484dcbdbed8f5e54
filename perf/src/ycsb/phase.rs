//! One YCSB phase (load or run) driven against any `Store`, and its results.
//!
//! Owns: the in-flight bound (`concurrency` futures polled by one task, so it runs on any
//! single-threaded executor), the target rate's schedule, latency per operation type in
//! HdrHistograms, and the phase's reports: a markdown table, a JSON summary and `.hgrm` files.
//! The operations themselves come from `stream.rs`; the system from `store.rs`.
//! Must not: name a system or an executor (it sees only `Store`, its `sleep` included), or stop
//! a phase on a failed operation: failures are counted.
//!
//! With a target rate, operation i is due at start + i / rate and its latency counts from when
//! it was due, not from when a busy future got to send it: the correction for coordinated
//! omission.

use std::cell::{Cell, RefCell};
use std::time::{Duration, Instant};

use anyhow::Result;
use hdrhistogram::Histogram;

use super::store::Store;
use super::stream::{OpStream, Operation};
use super::workload::{OpKind, Workload};
use crate::report::new_histogram;

/// What one phase runs.
#[derive(Debug, Clone)]
pub struct PhaseSpec {
    pub workload: Workload,
    /// Records that exist when the phase starts (`key_name(0..records)`).
    pub records: u64,
    pub record_bytes: usize,
    pub ops_max: u64,
    /// The phase also ends this long after it started.
    pub duration_max: Option<Duration>,
    /// Operation i is due at start + i * interval (a target rate), else when a future is free.
    pub interval: Option<Duration>,
    /// Requests in flight.
    pub concurrency: u64,
    pub seed: u64,
}

/// The results of one operation type in one phase.
#[derive(Debug, Clone)]
pub struct OpResult {
    pub kind: OpKind,
    /// Latencies of the operations that succeeded, µs.
    pub latency_us: Histogram<u64>,
    pub errors: u64,
}

/// The results of one phase: one entry per operation type that ran.
#[derive(Debug, Clone)]
pub struct PhaseResult {
    pub workload: String,
    pub elapsed: Duration,
    pub ops: Vec<OpResult>,
}

/// What the in-flight futures of a phase share (one thread: cells, no locks).
struct Phase {
    stream: RefCell<OpStream>,
    issued: Cell<u64>,
    ops_max: u64,
    interval: Option<Duration>,
    started: Instant,
    deadline: Option<Instant>,
    latency_us: RefCell<Vec<Histogram<u64>>>,
    errors: RefCell<Vec<u64>>,
}

/// Runs one phase against `store`: `spec.concurrency` requests in flight until the operation
/// count or the duration is reached. Failed operations are counted, not fatal: benchmarks run
/// under faults too.
pub async fn drive<S: Store>(store: &S, spec: &PhaseSpec) -> PhaseResult {
    assert!(spec.concurrency > 0, "at least one request in flight");
    let phase = Phase::new(spec);
    futures_util::future::join_all((0..spec.concurrency).map(|_| issue(store, &phase))).await;
    phase.finish(&spec.workload.name)
}

/// Runs the phases one after the other against `store`.
pub async fn drive_all<S: Store>(store: &S, specs: &[PhaseSpec]) -> Vec<PhaseResult> {
    let mut results = Vec::with_capacity(specs.len());
    for spec in specs {
        results.push(drive(store, spec).await);
    }
    results
}

/// One in-flight slot: takes the next operation, waits until it is due, runs it, records it.
async fn issue<S: Store>(store: &S, phase: &Phase) {
    while let Some((due, op)) = phase.next() {
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            store.sleep(wait).await;
        }
        let ok = execute(store, &op).await.is_ok();
        phase.record(op.kind, due.elapsed(), ok);
    }
}

/// YCSB's operations on a key-value store; read-modify-write is a read, then a write.
async fn execute<S: Store>(store: &S, op: &Operation) -> Result<()> {
    match op.kind {
        OpKind::Read => store.read(&op.key).await,
        OpKind::Update | OpKind::Insert => store.put(&op.key, &op.value).await,
        OpKind::Scan => store.scan(&op.key, op.scan_len).await,
        OpKind::ReadModifyWrite => {
            store.read(&op.key).await?;
            store.put(&op.key, &op.value).await
        }
    }
}

fn kind_index(kind: OpKind) -> usize {
    OpKind::ALL
        .iter()
        .position(|k| *k == kind)
        .expect("every kind is listed")
}

impl Phase {
    fn new(spec: &PhaseSpec) -> Phase {
        let started = Instant::now();
        Phase {
            stream: RefCell::new(OpStream::new(
                spec.workload.clone(),
                spec.records,
                spec.record_bytes,
                spec.seed,
            )),
            issued: Cell::new(0),
            ops_max: spec.ops_max,
            interval: spec.interval,
            started,
            deadline: spec.duration_max.map(|d| started + d),
            latency_us: RefCell::new(OpKind::ALL.iter().map(|_| new_histogram()).collect()),
            errors: RefCell::new(vec![0; OpKind::ALL.len()]),
        }
    }

    /// The next operation and when it is due, until the count or the deadline is reached.
    fn next(&self) -> Option<(Instant, Operation)> {
        let ticket = self.issued.get();
        if ticket >= self.ops_max || self.deadline.is_some_and(|d| Instant::now() >= d) {
            return None;
        }
        self.issued.set(ticket + 1);
        let due = match self.interval {
            Some(interval) => self.started + interval.mul_f64(ticket as f64),
            None => Instant::now(),
        };
        Some((due, self.stream.borrow_mut().next_op()))
    }

    fn record(&self, kind: OpKind, took: Duration, ok: bool) {
        let i = kind_index(kind);
        if ok {
            self.latency_us.borrow_mut()[i].saturating_record(took.as_micros() as u64);
        } else {
            self.errors.borrow_mut()[i] += 1;
        }
    }

    fn finish(self, workload: &str) -> PhaseResult {
        let elapsed = self.started.elapsed();
        let errors = self.errors.into_inner();
        let ops = OpKind::ALL
            .iter()
            .zip(self.latency_us.into_inner())
            .zip(errors)
            .filter(|((_, h), errors)| !h.is_empty() || *errors > 0)
            .map(|((kind, latency_us), errors)| OpResult {
                kind: *kind,
                latency_us,
                errors,
            })
            .collect();
        PhaseResult {
            workload: workload.to_string(),
            elapsed,
            ops,
        }
    }
}

impl OpResult {
    pub fn ops_per_sec(&self, elapsed: Duration) -> f64 {
        self.latency_us.len() as f64 / elapsed.as_secs_f64()
    }
}

impl PhaseResult {
    /// A markdown table, one row per operation type.
    pub fn table(&self, title: &str) -> String {
        let mut out = format!(
            "{title} ({} workload, {:.1} s):\n| op | count | ops/s | p50 us | p90 us | p99 us | p99.9 us | max us | errors |\n|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
            self.workload,
            self.elapsed.as_secs_f64()
        );
        for op in &self.ops {
            let h = &op.latency_us;
            out += &format!(
                "| {} | {} | {:.0} | {} | {} | {} | {} | {} | {} |\n",
                op.kind.name(),
                h.len(),
                op.ops_per_sec(self.elapsed),
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.9),
                h.value_at_quantile(0.99),
                h.value_at_quantile(0.999),
                h.max(),
                op.errors
            );
        }
        out
    }

    pub fn summary(&self, system: &str) -> serde_json::Value {
        let ops: Vec<serde_json::Value> = self
            .ops
            .iter()
            .map(|op| {
                let h = &op.latency_us;
                serde_json::json!({
                    "op": op.kind.name(),
                    "count": h.len(),
                    "errors": op.errors,
                    "ops_per_sec": op.ops_per_sec(self.elapsed),
                    "p50_us": h.value_at_quantile(0.5),
                    "p90_us": h.value_at_quantile(0.9),
                    "p99_us": h.value_at_quantile(0.99),
                    "p999_us": h.value_at_quantile(0.999),
                    "max_us": h.max(),
                })
            })
            .collect();
        serde_json::json!({
            "system": system,
            "workload": self.workload,
            "elapsed_secs": self.elapsed.as_secs_f64(),
            "operations": ops,
        })
    }

    /// One `.hgrm` text per operation type that succeeded at least once: HdrHistogram's
    /// percentile distribution (value in µs, percentile, count up to it, 1/(1-percentile)).
    pub fn hgrm_files(&self) -> Vec<(String, String)> {
        self.ops
            .iter()
            .filter(|op| !op.latency_us.is_empty())
            .map(|op| (format!("{}.hgrm", op.kind.name()), hgrm(&op.latency_us)))
            .collect()
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

    fn spec(workload: &str, ops_max: u64, interval: Option<Duration>) -> PhaseSpec {
        PhaseSpec {
            workload: Workload::named(workload).unwrap(),
            records: 10,
            record_bytes: 10,
            ops_max,
            duration_max: None,
            interval,
            concurrency: 4,
            seed: 1,
        }
    }

    // Proves the schedule of a target rate: operation i is due i intervals after the start,
    // whenever it is sent, and the count bounds the phase.
    #[test]
    fn operations_are_due_on_the_target_schedule() {
        let p = Phase::new(&spec("get", 3, Some(Duration::from_millis(10))));
        let due: Vec<Instant> = std::iter::from_fn(|| p.next().map(|(due, _)| due)).collect();
        assert_eq!(due.len(), 3);
        assert_eq!(due[2] - due[0], Duration::from_millis(20));
    }

    /// A store on no executor: every operation completes at once; scans fail, to see errors
    /// counted apart from latencies.
    struct Instant0 {
        calls: RefCell<Vec<(&'static str, Vec<u8>)>>,
    }

    impl Store for Instant0 {
        async fn read(&self, key: &[u8]) -> Result<()> {
            self.calls.borrow_mut().push(("read", key.to_vec()));
            Ok(())
        }
        async fn put(&self, key: &[u8], _: &[u8]) -> Result<()> {
            self.calls.borrow_mut().push(("put", key.to_vec()));
            Ok(())
        }
        async fn scan(&self, _: &[u8], _: u32) -> Result<()> {
            anyhow::bail!("no scans here")
        }
        async fn sleep(&self, _: Duration) {}
    }

    // Proves a phase issues exactly its operation count through the store, read-modify-write
    // as a read then a put of the same key, and counts failures as errors, not latencies.
    #[test]
    fn a_phase_issues_its_operations_and_counts_failures() {
        let store = Instant0 {
            calls: RefCell::new(Vec::new()),
        };
        let run = |w: &str| futures_lite::future::block_on(drive(&store, &spec(w, 200, None)));
        let f = run("f");
        let count = |r: &PhaseResult, k: OpKind| r.ops.iter().find(|o| o.kind == k).map(|o| o.latency_us.len());
        let (reads, rmws) = (
            count(&f, OpKind::Read).unwrap(),
            count(&f, OpKind::ReadModifyWrite).unwrap(),
        );
        assert_eq!(reads + rmws, 200);
        let calls = store.calls.borrow().clone();
        assert_eq!(calls.len() as u64, reads + 2 * rmws);
        let rmw_pairs = calls
            .windows(2)
            .filter(|w| w[0].0 == "read" && w[1].0 == "put" && w[0].1 == w[1].1);
        assert_eq!(rmw_pairs.count() as u64, rmws);
        let e = run("e");
        let scans = e.ops.iter().find(|o| o.kind == OpKind::Scan).unwrap();
        assert!(scans.latency_us.is_empty() && scans.errors > 150, "{}", scans.errors);
        assert!(e.hgrm_files().iter().all(|(name, _)| name == "insert.hgrm"));
    }
}
