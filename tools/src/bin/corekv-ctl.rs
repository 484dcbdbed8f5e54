//! corekv-ctl: one-shot commands against a running cluster, through the client library.
//! Any failure: a non-zero exit and a one-line reason on stderr.

use std::io::Write;
use std::time::Duration;

use anyhow::{bail, Result};
use clap::{Parser, Subcommand};
use corekv_netio::msg::{ClusterInfo, RegionInfo};
use corekv_netio::{Client, ClientConfig};

/// Talk to a corekv cluster.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// Client addresses of some nodes (HOST:PORT of their shard 0), comma-separated; the rest
    /// of the cluster is learned from them.
    #[arg(long, value_delimiter = ',', required = true)]
    endpoints: Vec<String>,
    /// Give up on a command after this long (retries included).
    #[arg(long, default_value_t = 10_000)]
    timeout_ms: u64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Raw key-value commands.
    Raw {
        #[command(subcommand)]
        op: Raw,
    },
    /// The cluster as its nodes see it.
    Cluster {
        #[command(subcommand)]
        op: Cluster,
    },
}

#[derive(Subcommand)]
enum Raw {
    /// Sets KEY to VALUE; prints OK.
    Put { key: String, value: String },
    /// Prints KEY's value; exit code 1 and `not found` on stderr when absent.
    Get { key: String },
    /// Deletes KEY; prints OK.
    Delete { key: String },
    /// Prints the pairs in [START, END) (END "" = to the end), one `key<TAB>value` line each.
    Scan {
        start: String,
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        /// Descending from END.
        #[arg(long)]
        reverse: bool,
    },
}

#[derive(Subcommand)]
enum Cluster {
    /// Nodes, shards, regions and their leaders.
    Status,
}

fn main() -> std::process::ExitCode {
    corekv_tools::run_main("corekv-ctl", run)
}

fn run() -> Result<()> {
    corekv_tools::init_logging("warn");
    let args = Args::parse();
    let found = corekv_tools::on_executor(move || async move {
        let mut cfg = ClientConfig::new(args.endpoints);
        cfg.request_timeout = Duration::from_millis(args.timeout_ms);
        cfg.attempt_timeout = cfg.attempt_timeout.min(cfg.request_timeout);
        let client = Client::connect(cfg).await?;
        let mut out = std::io::stdout().lock();
        match args.command {
            Command::Raw { op } => match op {
                Raw::Put { key, value } => {
                    client.put(key.as_bytes(), value.as_bytes()).await?;
                    writeln!(out, "OK")?;
                }
                Raw::Get { key } => match client.get(key.as_bytes()).await? {
                    Some(v) => {
                        out.write_all(&v)?;
                        writeln!(out)?;
                    }
                    None => return Ok(false),
                },
                Raw::Delete { key } => {
                    client.delete(key.as_bytes()).await?;
                    writeln!(out, "OK")?;
                }
                Raw::Scan {
                    start,
                    end,
                    limit,
                    reverse,
                } => {
                    for (k, v) in client.scan(start.as_bytes(), end.as_bytes(), limit, reverse).await? {
                        out.write_all(&k)?;
                        out.write_all(b"\t")?;
                        out.write_all(&v)?;
                        writeln!(out)?;
                    }
                }
            },
            Command::Cluster { op: Cluster::Status } => {
                let views = client.refresh().await?;
                print_status(&mut out, &views, &client.regions())?;
            }
        }
        Ok(true)
    })?;
    if !found {
        bail!("not found");
    }
    Ok(())
}

fn print_status(out: &mut impl Write, views: &[ClusterInfo], regions: &[RegionInfo]) -> Result<()> {
    let first = &views[0];
    writeln!(out, "nodes: {}  shards per node: {}", first.nodes.len(), first.shards)?;
    for (id, addr) in &first.nodes {
        let up = if views.iter().any(|v| v.node_id == *id) {
            "up"
        } else {
            "not answering"
        };
        writeln!(out, "  node {id}  {addr}  {up}")?;
    }
    writeln!(out, "regions: {}", regions.len())?;
    let show = |k: &[u8]| String::from_utf8_lossy(k).into_owned();
    for r in regions {
        let peers: Vec<String> = r
            .region
            .peers
            .iter()
            .map(|p| format!("n{}/s{}", p.node, p.shard))
            .collect();
        let leader = r.leader.map_or("none".to_string(), |l| {
            format!("n{}/s{} (term {})", l.node, l.shard, r.term)
        });
        writeln!(
            out,
            "  region {:<3} [{:?}, {:?})  epoch {}/{}  peers {}  leader {}",
            r.region.id,
            show(&r.region.start),
            show(&r.region.end),
            r.region.epoch.conf_ver,
            r.region.epoch.version,
            peers.join(" "),
            leader
        )?;
    }
    Ok(())
}
