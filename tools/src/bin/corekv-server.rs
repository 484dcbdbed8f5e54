//! corekv-server: one corekv node. Shard i (one pinned core each) serves clients and peer
//! shards on the `--addr` port + i. Starting it again with the same arguments and data dir
//! recovers the node. SIGTERM or Ctrl-C stops it cleanly.

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use anyhow::Result;
use clap::Parser;
use corekv_shard::NodeConfig;

/// A corekv node: a thread-per-core, Raft-replicated key-value storage node.
///
/// Flags override the config file; the file's fields not named keep their defaults (see
/// README: "Configuration").
#[derive(Parser)]
#[command(version)]
struct Args {
    /// This node's id (1..=999), one of the ids in --initial-cluster.
    #[arg(long)]
    node_id: Option<u64>,
    /// Address of this node's shard 0 (HOST:PORT); shard i listens on PORT + i, for clients
    /// and peer shards alike. Must match this node's entry in --initial-cluster.
    #[arg(long)]
    addr: Option<String>,
    /// Where the node keeps its data (one raft log and one RocksDB per shard). An existing
    /// data dir is recovered.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Every member as ID=HOST:PORT (its shard 0), comma-separated; the same on every node.
    /// Regions are pre-split so that every shard of every node holds replicas.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Shards (pinned cores) of this node [default: one per available CPU]. Every node of a
    /// cluster must run the same number.
    #[arg(long)]
    shards: Option<usize>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics [default: not served].
    #[arg(long)]
    status_addr: Option<String>,
    /// TOML config file (raft timing, network limits, log and KV engine tuning).
    #[arg(long)]
    config: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    corekv_tools::run_main("corekv-server", run)
}

fn run() -> Result<()> {
    corekv_tools::init_logging("info");
    let args = Args::parse();
    let mut cfg = match &args.config {
        Some(path) => NodeConfig::from_file(path)?,
        None => NodeConfig::default(),
    };
    if let Some(v) = args.node_id {
        cfg.node_id = v;
    }
    if let Some(v) = args.addr {
        cfg.addr = v;
    }
    if let Some(v) = args.data_dir {
        cfg.data_dir = v;
    }
    if let Some(v) = args.initial_cluster {
        cfg.initial_cluster = v;
    }
    if let Some(v) = args.shards {
        cfg.shards = v;
    }
    if let Some(v) = args.status_addr {
        cfg.status_addr = v;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    corekv_shard::run_node(cfg, stop)?;
    tracing::info!("stopped");
    Ok(())
}
