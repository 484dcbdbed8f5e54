//! corekv-server: one corekv node. Shard i (one pinned core each) serves clients on the
//! `--addr` port + i and peer shards on the peer port + i. Starting it again with the same
//! arguments and data dir recovers the node. SIGTERM or Ctrl-C stops it cleanly.
//!
//! Owns: flags over the config file, the umask (0077) and SIGTERM/SIGINT as the stop flag.
//! Must not: hold node logic or check the config itself: `shard::run_node` does both.

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
#[command(name = "corekv-server", version = corekv_shard::VERSION)]
struct Args {
    /// This node's id (1..=999), one of the ids in --initial-cluster.
    #[arg(long)]
    node_id: Option<u64>,
    /// Client address of this node's shard 0 (HOST:PORT); shard i serves clients on PORT + i.
    #[arg(long)]
    addr: Option<String>,
    /// Peer address of this node's shard 0 (HOST:PORT): raft traffic between nodes only; shard
    /// i on PORT + i [default: this node's entry in --initial-cluster].
    #[arg(long)]
    peer_addr: Option<String>,
    /// Where the node keeps its data (one raft log and one RocksDB per shard). An existing
    /// data dir is recovered.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Every member as ID=HOST:PORT (the PEER address of its shard 0), comma-separated; the
    /// same on every node. Regions are pre-split so that every shard of every node holds
    /// replicas.
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Join a running cluster instead of bootstrapping one: client addresses (HOST:PORT) of
    /// some of its nodes, comma-separated. The cluster gives this node its id; --peer-addr is
    /// required. Give it on every start (it is how the node finds the cluster again).
    #[arg(long, conflicts_with_all = ["initial_cluster", "node_id"])]
    join: Option<String>,
    /// A name for the cluster, the same on every node: nodes and clients never mix two
    /// clusters with different tokens, even on the same addresses [default: corekv].
    #[arg(long)]
    initial_cluster_token: Option<String>,
    /// Shards (pinned cores) of this node; 0 or absent: one per available CPU. Every node of a
    /// cluster must run the same number.
    #[arg(long)]
    shards: Option<usize>,
    /// Serve Prometheus metrics at http://HOST:PORT/metrics [default: not served].
    #[arg(long)]
    status_addr: Option<String>,
    /// TOML config file (raft timing, network limits, log and KV engine tuning).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Mutual TLS on every port: the CA that signs every node's and client's certificate (with
    /// --cert-path and --key-path; or [security] in the config file).
    #[arg(long, requires_all = ["cert_path", "key_path"])]
    ca_path: Option<PathBuf>,
    /// This node's certificate (PEM), signed by the CA.
    #[arg(long, requires = "ca_path")]
    cert_path: Option<PathBuf>,
    /// This node's private key (PEM).
    #[arg(long, requires = "ca_path")]
    key_path: Option<PathBuf>,
    /// Subject CNs allowed on a client's or peer's certificate, comma-separated [default: any
    /// the CA signed].
    #[arg(long, value_delimiter = ',')]
    cert_allowed_cn: Option<Vec<String>>,
    /// Log level: error, warn, info, debug or trace (RUST_LOG, if set, wins).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Append logs to this file instead of stderr.
    #[arg(long)]
    log_file: Option<PathBuf>,
}

fn main() -> std::process::ExitCode {
    corekv_tools::run_main("corekv-server", run)
}

fn run() -> Result<()> {
    let args = Args::parse();
    corekv_tools::init_logging(&args.log_level, args.log_file.as_deref())?;
    // Everything the node creates is its own: files 0600, directories 0700.
    // SAFETY: umask only sets the process's file mode creation mask.
    unsafe { libc::umask(0o077) };
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
    if let Some(v) = args.peer_addr {
        cfg.peer_addr = v;
    }
    if let Some(v) = args.initial_cluster {
        cfg.initial_cluster = v;
    }
    if let Some(v) = args.join {
        cfg.join = v;
    }
    if let Some(v) = args.initial_cluster_token {
        cfg.initial_cluster_token = v;
    }
    if let Some(v) = args.shards {
        cfg.shards = v;
    }
    if let Some(v) = args.status_addr {
        cfg.status_addr = v;
    }
    if let (Some(ca), Some(cert), Some(key)) = (args.ca_path, args.cert_path, args.key_path) {
        (cfg.security.ca_path, cfg.security.cert_path, cfg.security.key_path) = (ca, cert, key);
    }
    if let Some(v) = args.cert_allowed_cn {
        cfg.security.cert_allowed_cn = v;
    }
    tracing::info!(
        version = corekv_shard::VERSION,
        node_id = cfg.node_id,
        addr = cfg.addr,
        data_dir = %cfg.data_dir.display(),
        config = args.config.as_ref().map_or("none (defaults)".to_string(), |p| p.display().to_string()),
        "corekv-server starting"
    );
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    corekv_shard::run_node(cfg, stop)?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    // Proves `--help` explains every flag, argument and subcommand (none is undocumented).
    #[test]
    fn every_argument_is_documented() {
        Args::command().debug_assert();
        assert_eq!(corekv_tools::undocumented(&Args::command()), Vec::<String>::new());
    }
}
