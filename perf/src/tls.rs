//! `corekv-bench tls`: what mutual TLS costs, measured side by side in one run: two local
//! 3-node clusters of the release `corekv-server`, one plain and one with TLS on every port
//! (the playground's throwaway certificates), the same put and get workloads on each,
//! alternating, best of the repeats, TLS / plain.
//!
//! Owns: starting and stopping the two clusters and the table with its goals (TLS costs at
//! most 10% of put and 20% of get throughput). Must not: measure one cluster while the other
//! is loaded (one phase at a time), or leave a server running (the clusters stop on drop).

use std::path::PathBuf;

use anyhow::{Context, Result};
use corekv_tools::cluster::{sibling_binary, ClusterSpec, LocalCluster};

use crate::compare::{figures, ratio_rows, ratio_table, Figures};
use crate::ycsb::workload::Workload;
use crate::ycsb::{self, Shape, System};

#[derive(clap::Args)]
pub struct TlsArgs {
    /// Where both clusters keep their data (wiped first).
    #[arg(long, default_value = "/var/tmp/corekv-bench/tls")]
    dir: PathBuf,
    /// The plain cluster's base port; the TLS cluster's is 1000 above.
    #[arg(long, default_value_t = 24160)]
    base_port: u16,
    /// Runs of each workload on each cluster.
    #[arg(long, default_value_t = 3)]
    repeats: u32,
    #[command(flatten)]
    shape: Shape,
}

/// The least TLS / plain throughput the goals allow, by operation.
const GOALS: [(&str, f64); 2] = [("update", 0.90), ("read", 0.80)];

pub fn run(args: &TlsArgs) -> Result<()> {
    let _ = std::fs::remove_dir_all(&args.dir);
    let clusters = [true, false].map(|tls| start(args, tls));
    let [tls_cluster, plain_cluster] = clusters;
    let (tls_cluster, plain_cluster) = (tls_cluster?, plain_cluster?);
    let sides = [(&tls_cluster, "TLS"), (&plain_cluster, "plain")];
    let mut all: Vec<Figures> = Vec::new();
    for (side, (cluster, name)) in sides.iter().enumerate() {
        eprintln!(
            "tls: loading {} records into the {name} cluster",
            args.shape.record_count
        );
        phase(cluster, side, args.shape.load()?)?;
    }
    for workload in ["put", "get"] {
        let spec = args.shape.run(&Workload::named(workload)?, None)?;
        for repeat in 1..=args.repeats {
            for (side, (cluster, name)) in sides.iter().enumerate() {
                let got = phase(cluster, side, spec.clone())?;
                eprintln!(
                    "tls: {workload} #{repeat} {name}: {:.0} ops/s",
                    got.first().map_or(0.0, |f| f.ops_per_sec)
                );
                all.extend(got);
            }
        }
    }
    let rows = ratio_rows(&all);
    let heading = format!(
        "TLS / plain, 3 nodes x 2 shards each, {} in flight, best of {} alternating runs (ops/s ratio: 1 = free; goals: put >= {}, get >= {}):",
        args.shape.concurrency, args.repeats, GOALS[0].1, GOALS[1].1
    );
    let verdicts: Vec<String> = GOALS
        .iter()
        .filter_map(|(op, goal)| {
            let r = rows.iter().find(|r| r.op == *op)?;
            let met = if r.throughput_ratio() >= *goal {
                "met"
            } else {
                "NOT met"
            };
            Some(format!(
                "{op}: TLS keeps {:.1}% of plain throughput (goal {:.0}%): {met}",
                r.throughput_ratio() * 100.0,
                goal * 100.0
            ))
        })
        .collect();
    print!(
        "{}",
        ratio_table(&rows, ["TLS", "plain"], &heading, &verdicts.join("\n"))
    );
    Ok(())
}

/// A 3 x 2 local cluster in `args.dir`, with TLS or without, up and serving.
fn start(args: &TlsArgs, tls: bool) -> Result<LocalCluster> {
    let name = if tls { "tls" } else { "plain" };
    let spec = ClusterSpec {
        nodes: 3,
        shards: 2,
        data_dir: args.dir.join(name),
        hosts: vec!["127.0.0.1".into()],
        base_port: args.base_port + if tls { 1000 } else { 0 },
        server: sibling_binary("corekv-server")?,
        extra_args: Vec::new(),
        tls,
    };
    let mut cluster = LocalCluster::start(spec)?;
    cluster
        .wait_for_leaders(std::time::Duration::from_secs(60))
        .with_context(|| format!("the {name} cluster did not come up"))?;
    Ok(cluster)
}

/// One phase against `cluster` (side `side` of the table): its figures per operation type.
fn phase(cluster: &LocalCluster, side: usize, spec: ycsb::phase::PhaseSpec) -> Result<Vec<Figures>> {
    let cfg = cluster.spec().client_config()?;
    let result = ycsb::run_phases(System::Corekv, cfg.endpoints.clone(), cfg.tls.clone(), vec![spec])?
        .pop()
        .context("one phase ran")?;
    Ok(figures(side, &result))
}
