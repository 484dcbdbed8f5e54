//! `corekv-bench compare`: corekv and etcd side by side in one run, on the same machine, with
//! the disk's fdatasync floor measured in the same run.
//!
//! Owns: the order of the runs (each workload on corekv, then etcd, alternating, `--repeats`
//! times each, so drift over the run hits both alike), the ratio table (per system the BEST
//! of its repeats: the run with the highest throughput, with that run's p50 and p99; then
//! corekv / etcd), `compare.json`, and `compare.png`
//! (per workload, the percentile curves of both systems, each from its repeats' pooled
//! histograms). Starting and stopping the servers is not its job: scripts/bench-compare.sh.
//! Must not: drive both systems at once (one phase at a time, so neither's load slows the
//! other), or start or stop a server.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use hdrhistogram::Histogram;

use crate::floor;
use crate::plot::{self, Curve, Panel};
use crate::ycsb::phase::PhaseResult;
use crate::ycsb::workload::Workload;
use crate::ycsb::{self, Shape, System};

#[derive(clap::Args)]
pub struct CompareArgs {
    /// corekv client addresses (HOST:PORT of some nodes' shard 0), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    corekv: Vec<String>,
    /// etcd client URLs (http://HOST:PORT), comma-separated.
    #[arg(long, value_delimiter = ',', required = true)]
    etcd: Vec<String>,
    /// Workloads in order; `load` inserts the records the others read (keep it first).
    #[arg(long, value_delimiter = ',', default_value = "load,a,b,c,e,put,get")]
    workloads: Vec<String>,
    /// Runs of each workload on each system.
    #[arg(long, default_value_t = 2)]
    repeats: u32,
    #[command(flatten)]
    shape: Shape,
    /// Where the fdatasync floor is measured: a directory on the disk the servers write to.
    #[arg(long)]
    floor_dir: PathBuf,
    /// Synced writes measured for the floor.
    #[arg(long, default_value_t = 2000)]
    floor_iterations: u64,
    /// The results folder: the table, compare.json, compare.png and runs/ go straight in it.
    #[arg(long)]
    results: PathBuf,
}

/// The figures of one operation type in one run of one side (0 or 1) of a comparison.
#[derive(Debug, Clone, PartialEq)]
pub struct Figures {
    pub side: usize,
    pub workload: String,
    pub op: &'static str,
    pub ops_per_sec: f64,
    pub p50_us: u64,
    pub p99_us: u64,
}

/// One row of the ratio table: each side's best repeat, and side 0 / side 1.
#[derive(Debug, Clone, PartialEq)]
pub struct RatioRow {
    pub workload: String,
    pub op: &'static str,
    /// Of each side's best repeat, [side 0, side 1].
    pub ops_per_sec: [f64; 2],
    pub p50_us: [f64; 2],
    pub p99_us: [f64; 2],
}

impl RatioRow {
    pub fn throughput_ratio(&self) -> f64 {
        self.ops_per_sec[0] / self.ops_per_sec[1]
    }
    pub fn p50_ratio(&self) -> f64 {
        self.p50_us[0] / self.p50_us[1]
    }
    pub fn p99_ratio(&self) -> f64 {
        self.p99_us[0] / self.p99_us[1]
    }
}

struct Run {
    system: System,
    result: PhaseResult,
}

pub fn run(args: &CompareArgs) -> Result<()> {
    if args.repeats == 0 {
        bail!("--repeats must be at least 1");
    }
    let workloads: Vec<Workload> = args
        .workloads
        .iter()
        .map(|w| Workload::named(w))
        .collect::<Result<_>>()?;
    std::fs::create_dir_all(&args.results).with_context(|| format!("create {}", args.results.display()))?;
    eprintln!(
        "compare: measuring the fdatasync floor in {} ...",
        args.floor_dir.display()
    );
    let floor_p50_us = floor::measure(&args.floor_dir, args.floor_iterations)?
        .overwrite
        .value_at_quantile(0.5);
    let mut runs = Vec::new();
    for workload in &workloads {
        let spec = match workload.name.as_str() {
            "load" => args.shape.load()?,
            _ => args.shape.run(workload, None)?,
        };
        for repeat in 1..=args.repeats {
            for system in [System::Corekv, System::Etcd] {
                let endpoints = match system {
                    System::Corekv => args.corekv.clone(),
                    System::Etcd => args.etcd.clone(),
                };
                let result = ycsb::run_phases(system, endpoints, None, vec![spec.clone()])?
                    .pop()
                    .context("one phase ran")?;
                eprint!("{}", result.table(&format!("{} #{repeat}", system.name())));
                let dir = args
                    .results
                    .join("runs")
                    .join(format!("{}-{}-{repeat}", system.name(), workload.name));
                ycsb::write_run(&dir, system, &result)?;
                runs.push(Run { system, result });
            }
        }
    }
    let figures: Vec<Figures> = runs
        .iter()
        .flat_map(|r| figures(r.system as usize, &r.result))
        .collect();
    let rows = ratio_rows(&figures);
    let heading = format!(
        "corekv / etcd, best of {} alternating runs each (the run with the highest ops/s, its p50 and p99; ops/s ratio > 1: corekv faster; latency ratio < 1: corekv lower):",
        args.repeats
    );
    let footer = format!("floor (same run): 4 KiB O_DIRECT write + fdatasync p50 {floor_p50_us} µs");
    let table = ratio_table(&rows, [System::Corekv.name(), System::Etcd.name()], &heading, &footer);
    print!("{table}");
    std::fs::write(args.results.join("compare.md"), &table).context("write compare.md")?;
    let json = compare_json(&rows, &figures, floor_p50_us, args);
    std::fs::write(args.results.join("compare.json"), json.to_string()).context("write compare.json")?;
    let png = args.results.join("compare.png");
    write_plot(&png, &workloads, &runs)?;
    println!("results: {}", args.results.display());
    Ok(())
}

/// The figures of each operation type of one run `r` of side `side`.
pub fn figures(side: usize, r: &PhaseResult) -> Vec<Figures> {
    r.ops
        .iter()
        .filter(|op| !op.latency_us.is_empty())
        .map(|op| Figures {
            side,
            workload: r.workload.clone(),
            op: op.kind.name(),
            ops_per_sec: op.ops_per_sec(r.elapsed),
            p50_us: op.latency_us.value_at_quantile(0.5),
            p99_us: op.latency_us.value_at_quantile(0.99),
        })
        .collect()
}

/// One row per (workload, op) that both sides ran, in the order they first appear. Per side
/// the best repeat counts: on a machine shared with other work, interference only ever makes
/// a run slower, so the fastest run is the least disturbed one.
pub fn ratio_rows(figures: &[Figures]) -> Vec<RatioRow> {
    let mut keys: Vec<(&str, &'static str)> = Vec::new();
    for f in figures {
        if !keys.contains(&(f.workload.as_str(), f.op)) {
            keys.push((f.workload.as_str(), f.op));
        }
    }
    keys.into_iter()
        .filter_map(|(workload, op)| {
            let best = |side: usize| {
                figures
                    .iter()
                    .filter(|f| f.side == side && f.workload == workload && f.op == op)
                    .max_by(|a, b| a.ops_per_sec.total_cmp(&b.ops_per_sec))
            };
            let (c, e) = (best(0)?, best(1)?);
            Some(RatioRow {
                workload: workload.to_string(),
                op,
                ops_per_sec: [c.ops_per_sec, e.ops_per_sec],
                p50_us: [c.p50_us as f64, e.p50_us as f64],
                p99_us: [c.p99_us as f64, e.p99_us as f64],
            })
        })
        .collect()
}

/// The markdown table of ratios (side 0 / side 1, sides named `names`), between a heading
/// and a footer.
pub fn ratio_table(rows: &[RatioRow], names: [&str; 2], heading: &str, footer: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{heading}\n");
    let [a, b] = names;
    let _ = writeln!(
        out,
        "| workload | op | {a} ops/s | {b} ops/s | ops/s ratio | {a} p50 µs | {b} p50 µs | p50 ratio | {a} p99 µs | {b} p99 µs | p99 ratio |"
    );
    out += "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n";
    for r in rows {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} | {:.0} | {:.0} | {:.2} |",
            r.workload,
            r.op,
            r.ops_per_sec[0],
            r.ops_per_sec[1],
            r.throughput_ratio(),
            r.p50_us[0],
            r.p50_us[1],
            r.p50_ratio(),
            r.p99_us[0],
            r.p99_us[1],
            r.p99_ratio(),
        );
    }
    let _ = writeln!(out, "\n{footer}");
    out
}

fn compare_json(rows: &[RatioRow], figures: &[Figures], floor_p50_us: u64, args: &CompareArgs) -> serde_json::Value {
    let rows: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "workload": r.workload, "op": r.op,
                "corekv": {"ops_per_sec": r.ops_per_sec[0], "p50_us": r.p50_us[0], "p99_us": r.p99_us[0]},
                "etcd": {"ops_per_sec": r.ops_per_sec[1], "p50_us": r.p50_us[1], "p99_us": r.p99_us[1]},
                "ops_per_sec_ratio": r.throughput_ratio(),
                "p50_ratio": r.p50_ratio(),
                "p99_ratio": r.p99_ratio(),
            })
        })
        .collect();
    let runs: Vec<serde_json::Value> = figures
        .iter()
        .map(|f| {
            let system = [System::Corekv, System::Etcd][f.side].name();
            serde_json::json!({
                "system": system, "workload": f.workload, "op": f.op,
                "ops_per_sec": f.ops_per_sec, "p50_us": f.p50_us, "p99_us": f.p99_us,
            })
        })
        .collect();
    serde_json::json!({
        "aggregate": "per system the repeat with the highest ops/s (its p50, p99), then corekv / etcd",
        "repeats": args.repeats,
        "record_count": args.shape.record_count,
        "operation_count": args.shape.operation_count,
        "duration_secs": args.shape.duration_secs,
        "concurrency": args.shape.concurrency,
        "record_bytes": args.shape.field_count * args.shape.field_length,
        "floor_p50_us": floor_p50_us,
        "rows": rows,
        "runs": runs,
    })
}

/// Line colours of each system, by op order: corekv blues and green, etcd oranges and
/// purple (from plot::COLORS), so a system keeps its hue across panels.
const SYSTEM_COLORS: [[usize; 3]; 2] = [[0, 5, 2], [1, 4, 3]];

/// One panel per workload: a line per (system, op), each the pooled histogram of its repeats.
fn write_plot(path: &Path, workloads: &[Workload], runs: &[Run]) -> Result<()> {
    let mut pooled: Vec<(&str, System, &'static str, Histogram<u64>)> = Vec::new();
    for run in runs {
        let workload = run.result.workload.as_str();
        for op in &run.result.ops {
            let (system, name) = (run.system, op.kind.name());
            match pooled
                .iter_mut()
                .find(|(w, s, o, _)| *w == workload && *s == system && *o == name)
            {
                Some((_, _, _, h)) => h.add(&op.latency_us).context("pool histograms")?,
                None => pooled.push((workload, system, name, op.latency_us.clone())),
            }
        }
    }
    let panels: Vec<Panel> = workloads
        .iter()
        .map(|w| {
            let mut shade = [0usize; 2];
            let curves = pooled
                .iter()
                .filter(|(name, _, _, _)| *name == w.name)
                .map(|(_, system, op, h)| {
                    let s = *system as usize;
                    let color = plot::COLORS[SYSTEM_COLORS[s][shade[s] % 3]];
                    shade[s] += 1;
                    Curve {
                        label: format!("{} {op}", system.name()),
                        color,
                        latency_us: h,
                    }
                })
                .collect();
            Panel {
                title: format!("workload {}", w.name),
                curves,
            }
        })
        .collect();
    plot::write_png(path, &panels, 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(side: usize, workload: &str, op: &'static str, ops: f64, p50: u64, p99: u64) -> Figures {
        Figures {
            side,
            workload: workload.into(),
            op,
            ops_per_sec: ops,
            p50_us: p50,
            p99_us: p99,
        }
    }

    // Proves the table's aggregation: per system the repeat with the highest throughput,
    // with THAT run's latencies (not the best latency of any run), then corekv / etcd; an op
    // only one system ran gets no row.
    #[test]
    fn ratios_are_of_each_systems_fastest_run() {
        let (corekv, etcd) = (0, 1);
        let figures = [
            f(corekv, "a", "read", 100.0, 10, 50),
            f(etcd, "a", "read", 40.0, 30, 90),
            f(corekv, "a", "read", 200.0, 20, 60),
            f(etcd, "a", "read", 50.0, 40, 100),
            f(corekv, "a", "read", 150.0, 15, 55),
            f(etcd, "e", "scan", 20.0, 10, 20),
            f(corekv, "e", "scan", 10.0, 5, 5),
            f(etcd, "e", "scan", 40.0, 20, 40),
            f(corekv, "e", "insert", 1.0, 1, 1),
        ];
        let rows = ratio_rows(&figures);
        assert_eq!(rows.len(), 2, "{rows:?}");
        assert_eq!((rows[0].workload.as_str(), rows[0].op), ("a", "read"));
        assert_eq!(rows[0].ops_per_sec, [200.0, 50.0]);
        assert_eq!(
            (rows[0].throughput_ratio(), rows[0].p50_ratio(), rows[0].p99_ratio()),
            (4.0, 0.5, 0.6)
        );
        assert_eq!((rows[1].workload.as_str(), rows[1].op), ("e", "scan"));
        assert_eq!(rows[1].ops_per_sec, [10.0, 40.0]);
        assert_eq!((rows[1].p50_ratio(), rows[1].p99_ratio()), (0.25, 0.125));
        let table = ratio_table(&rows, ["corekv", "etcd"], "heading", "floor p50 104 µs");
        assert!(
            table.contains("| a | read | 200 | 50 | 4.00 | 20 | 40 | 0.50 | 60 | 100 | 0.60 |"),
            "{table}"
        );
        assert!(
            table.contains("| corekv ops/s | etcd ops/s |") && table.contains("floor p50 104 µs"),
            "{table}"
        );
    }
}
