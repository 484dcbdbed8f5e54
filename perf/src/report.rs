//! Histogram summaries and the markdown table every storage bench prints.
//!
//! Owns: turning latency histograms (µs) and counters into rows, ratios to the floor
//! included. Must not measure anything itself.

use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;

/// Latencies in µs, 1 µs to 60 s, 3 significant figures.
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("valid histogram bounds")
}

/// One line of the results table.
pub struct Row {
    pub name: String,
    pub ops: u64,
    pub elapsed: Duration,
    /// Payload bytes per op (entries' data), for MiB/s.
    pub bytes_per_op: u64,
    pub latency: Histogram<u64>,
    /// CPU time of the shard thread per op, where measured.
    pub cpu_us_per_op: Option<f64>,
}

impl Row {
    /// A row of `latency.len()` operations over `elapsed`; `cpu` is the measuring thread's CPU
    /// time over the same span, where measured.
    pub fn new(
        name: impl Into<String>,
        elapsed: Duration,
        bytes_per_op: u64,
        latency: Histogram<u64>,
        cpu: Option<Duration>,
    ) -> Row {
        let ops = latency.len();
        let cpu_us_per_op = cpu.map(|c| c.as_secs_f64() * 1e6 / ops.max(1) as f64);
        Row {
            name: name.into(),
            ops,
            elapsed,
            bytes_per_op,
            latency,
            cpu_us_per_op,
        }
    }

    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mib_per_sec(&self) -> f64 {
        self.ops_per_sec() * self.bytes_per_op as f64 / (1 << 20) as f64
    }
}

/// Renders rows as a markdown table, each p50 also as a ratio to `floor_p50_us`.
pub fn table(rows: &[Row], floor_p50_us: u64) -> String {
    let mut out = String::new();
    out.push_str("| bench | ops/s | MiB/s | p50 µs | p99 µs | p99.9 µs | p50 / floor | CPU µs/op |\n");
    out.push_str("|---|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in rows {
        let p50 = r.latency.value_at_quantile(0.5);
        let cpu = r.cpu_us_per_op.map_or("-".to_string(), |c| format!("{c:.1}"));
        let _ = writeln!(
            out,
            "| {} | {:.0} | {:.1} | {} | {} | {} | {:.2} | {} |",
            r.name,
            r.ops_per_sec(),
            r.mib_per_sec(),
            p50,
            r.latency.value_at_quantile(0.99),
            r.latency.value_at_quantile(0.999),
            p50 as f64 / floor_p50_us.max(1) as f64,
            cpu,
        );
    }
    out
}

/// CPU time consumed so far by the calling thread.
pub fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_THREAD_CPUTIME_ID always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
