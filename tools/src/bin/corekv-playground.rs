//! corekv-playground: a local cluster of `corekv-server` processes for trying corekv out.
//! Node k takes ports base-port + 100*(k-1): clients on +0 (+ shard), peers on +40 (+ shard),
//! /metrics on +80; it logs to DATA_DIR/node-k.log. Stops its children on Ctrl-C / SIGTERM.
//!
//! Owns: the command line and the foreground wait. Must not: run a node in its own process:
//! each is a `corekv-server` child (`cluster::LocalCluster`), stopped when it exits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::Parser;
use corekv_netio::Client;
use corekv_tools::cluster::{sibling_binary, ClusterSpec, LocalCluster};

/// Start a local corekv cluster (child processes) and keep it running until Ctrl-C.
#[derive(Parser)]
#[command(name = "corekv-playground", version = corekv_shard::VERSION)]
struct Args {
    /// Nodes to start (each a corekv-server process).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Shards (cores) per node, at most 40 (a node's client ports: +0..+39, peer ports +40..+79).
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// One sub-directory per node; an existing one is recovered.
    #[arg(long)]
    data_dir: PathBuf,
    /// Node k's ports start at this + 100*(k-1).
    #[arg(long, default_value_t = 20160)]
    base_port: u16,
    /// Host the nodes listen on.
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Once the cluster is up, run a demo workload of this many keys and print its latencies.
    #[arg(long)]
    demo_keys: Option<u64>,
    /// Exit after starting (and the demo) instead of waiting for Ctrl-C.
    #[arg(long)]
    no_wait: bool,
    /// Mutual TLS on every port, with a throwaway CA and certificates made in DATA_DIR/tls
    /// (the ctl flags to use are printed).
    #[arg(long)]
    tls: bool,
}

const LEADERS_WAIT: Duration = Duration::from_secs(60);
const DEMO_CONCURRENCY: u64 = 32;

fn main() -> std::process::ExitCode {
    corekv_tools::run_main("corekv-playground", run)
}

fn run() -> Result<()> {
    corekv_tools::init_logging("warn", None)?;
    let args = Args::parse();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let spec = ClusterSpec {
        nodes: args.nodes,
        shards: args.shards,
        data_dir: args.data_dir.clone(),
        hosts: vec![args.host.clone()],
        base_port: args.base_port,
        server: sibling_binary("corekv-server")?,
        extra_args: Vec::new(),
        tls: args.tls,
    };
    let mut cluster = LocalCluster::start(spec.clone())?;
    cluster
        .wait_for_leaders(LEADERS_WAIT)
        .context("the cluster did not come up (a port in use? pick another --base-port)")?;
    let demo = match args.demo_keys {
        Some(keys) => {
            let cfg = spec.client_config()?;
            Some(corekv_tools::on_executor(move || async move {
                let client = Client::connect(cfg).await?;
                let phases = corekv_tools::demo::run(&client, keys, DEMO_CONCURRENCY).await?;
                Ok((phases, client.stats()))
            })?)
        }
        None => None,
    };
    println!("corekv playground: {} nodes x {} shards", spec.nodes, spec.shards);
    for k in 1..=spec.nodes {
        println!(
            "  node {k}  {} (shards on +0..+{})  peers {}  metrics http://{}/metrics  log {}",
            spec.endpoint(k),
            spec.shards - 1,
            spec.peer_endpoint(k),
            spec.status_addr(k),
            spec.log(k).display()
        );
    }
    println!("endpoints: {}", spec.endpoints().join(","));
    if let Some(certs) = spec.certs()? {
        let client = certs.client();
        println!(
            "TLS: corekv-ctl --ca-path {} --cert-path {} --key-path {} ...",
            client.ca_path.display(),
            client.cert_path.display(),
            client.key_path.display()
        );
    }
    if let Some((phases, stats)) = demo {
        println!(
            "demo: {} keys over every region, {DEMO_CONCURRENCY} requests in flight, then a full scan and a compare-and-swap:",
            args.demo_keys.unwrap_or(0)
        );
        for p in &phases {
            println!("  {p}");
        }
        println!(
            "  client: {} operations, {} attempts, {} redirects",
            stats.operations, stats.attempts, stats.redirects
        );
    }
    let result = wait_for_stop(&mut cluster, args.no_wait, &stop);
    let clean = cluster.stop()?;
    println!(
        "stopped {} nodes{}",
        spec.nodes,
        if clean { "" } else { " (not all cleanly)" }
    );
    result
}

/// Stays in the foreground until Ctrl-C / SIGTERM (or a node dies).
fn wait_for_stop(cluster: &mut LocalCluster, no_wait: bool, stop: &AtomicBool) -> Result<()> {
    if no_wait {
        return Ok(());
    }
    println!("press Ctrl-C to stop the cluster");
    while !stop.load(Ordering::Relaxed) {
        cluster.check_alive()?;
        std::thread::sleep(Duration::from_millis(200));
    }
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
