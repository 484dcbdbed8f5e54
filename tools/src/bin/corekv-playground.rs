//! corekv-playground: a local cluster of `corekv-server` processes for trying corekv out.
//! Node k takes ports base-port + 100*(k-1): clients on +0 (+ shard), peers on +40 (+ shard),
//! /metrics on +80; it logs to DATA_DIR/node-k.log. Stops its children on Ctrl-C / SIGTERM.
//! A node that dies is reported and the others run on; `stop|kill|restart|scale-in --node K`
//! and `scale-out` from another terminal act on the running playground through its control
//! socket (`control`).
//!
//! Owns: the command line and the foreground loop. Must not: run a node in its own process:
//! each is a `corekv-server` child (`cluster::LocalCluster`), stopped when it exits.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use corekv_netio::Client;
use corekv_tools::cluster::{sibling_binary, ClusterSpec, LocalCluster};
use corekv_tools::control::{self, Action, ControlSocket};
use corekv_tools::membership;

/// Start a local corekv cluster (child processes) and keep it running until Ctrl-C; or, with a
/// command, act on a running one.
#[derive(Parser)]
#[command(name = "corekv-playground", version = corekv_shard::VERSION)]
struct Args {
    /// Act on the playground running on --data-dir instead of starting one.
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Nodes to start (each a corekv-server process).
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Shards (cores) per node, at most 40 (a node's client ports: +0..+39, peer ports +40..+79).
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// One sub-directory per node; an existing one is recovered (required).
    #[arg(long, global = true)]
    data_dir: Option<PathBuf>,
    /// Start from empty node directories: removes what DATA_DIR holds first (once it is sure
    /// no other playground runs on it).
    #[arg(long)]
    fresh: bool,
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

#[derive(Subcommand, Clone, Copy)]
enum Cmd {
    /// Stop node K cleanly (SIGTERM); the others run on.
    Stop {
        /// The node (1..=nodes).
        #[arg(long)]
        node: u64,
    },
    /// kill -9 node K: no shutdown of any kind; the others run on.
    Kill {
        /// The node (1..=nodes).
        #[arg(long)]
        node: u64,
    },
    /// Start node K again on its data dir (after stop, kill, or a crash).
    Restart {
        /// The node (1..=nodes).
        #[arg(long)]
        node: u64,
    },
    /// Start one more node, which joins the running cluster (`corekv-server --join`) on the
    /// next block of ports; `corekv-ctl store list` shows it.
    ScaleOut,
    /// Move every replica off node K (one that joined), one region at a time, then stop it;
    /// the playground's terminal shows each move.
    ScaleIn {
        /// The node (one added by scale-out).
        #[arg(long)]
        node: u64,
    },
}

impl Cmd {
    fn action(self) -> Action {
        match self {
            Cmd::Stop { node } => Action::Stop(node),
            Cmd::Kill { node } => Action::Kill(node),
            Cmd::Restart { node } => Action::Restart(node),
            Cmd::ScaleOut => Action::ScaleOut,
            Cmd::ScaleIn { node } => Action::ScaleIn(node),
        }
    }
}

const LEADERS_WAIT: Duration = Duration::from_secs(60);
/// How long each step of a replica's move may take during a scale-in.
const MOVE_STEP_WAIT: Duration = Duration::from_secs(60);
const DEMO_CONCURRENCY: u64 = 32;

fn main() -> std::process::ExitCode {
    corekv_tools::run_main("corekv-playground", run)
}

fn run() -> Result<()> {
    corekv_tools::init_logging("warn", None)?;
    let args = Args::parse();
    let data_dir = args.data_dir.clone().context("--data-dir is required")?;
    if let Some(cmd) = args.command {
        println!("{}", control::request(&data_dir, cmd.action())?);
        return Ok(());
    }
    std::fs::create_dir_all(&data_dir).with_context(|| format!("create {}", data_dir.display()))?;
    let control = ControlSocket::bind(&data_dir)?;
    if args.fresh {
        empty_except(&data_dir, &control::socket_path(&data_dir))?;
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let spec = ClusterSpec {
        nodes: args.nodes,
        shards: args.shards,
        data_dir,
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
            "  node {k}  {} (shards on +0..+{})  peers {}  metrics http://{}/metrics  log {}  pid {}",
            spec.endpoint(k),
            spec.shards - 1,
            spec.peer_endpoint(k),
            spec.status_addr(k),
            spec.log(k).display(),
            cluster.pid(k).unwrap_or(0)
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
    let result = serve(&mut cluster, &control, args.no_wait, &stop);
    let clean = cluster.stop()?;
    println!(
        "stopped {} nodes{}",
        cluster.node_count(),
        if clean { "" } else { " (not all cleanly)" }
    );
    result
}

/// Stays in the foreground until Ctrl-C / SIGTERM: reports nodes that end, and acts on the
/// control socket's requests.
fn serve(cluster: &mut LocalCluster, control: &ControlSocket, no_wait: bool, stop: &AtomicBool) -> Result<()> {
    if no_wait {
        return Ok(());
    }
    let dir = cluster.spec().data_dir.display().to_string();
    println!("press Ctrl-C to stop the cluster; from another terminal: corekv-playground stop|kill|restart --node K --data-dir {dir}");
    println!("  (or `corekv-playground scale-out --data-dir {dir}`: one more node joins; `scale-in --node K` drains and stops it)");
    let mut draining: Option<Draining> = None;
    while !stop.load(Ordering::Relaxed) {
        for (k, status) in cluster.reap_exited()? {
            let log = cluster.spec().log(k);
            println!(
                "node {k} exited ({status}); the others run on; its log: {}",
                log.display()
            );
            println!("  bring it back: corekv-playground restart --node {k} --data-dir {dir}");
        }
        while let Some((action, stream)) = control.next()? {
            let outcome = match (&draining, action) {
                (Some(d), _) => Err(anyhow::anyhow!(
                    "node {} is being scaled in: ask again once that is done",
                    d.node
                )),
                (None, Action::ScaleIn(k)) if cluster.is_running(k) => {
                    draining = Some(Draining::start(cluster, k, stream)?);
                    continue;
                }
                (None, _) => act(cluster, action),
            };
            tell(action, stream, &outcome);
        }
        if draining.as_ref().is_some_and(|d| d.done.is_finished()) {
            if let Some(d) = draining.take() {
                let node = d.node;
                let (outcome, stream) = d.finish(cluster);
                tell(Action::ScaleIn(node), stream, &outcome);
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// Prints an action's outcome and answers its control client.
fn tell(action: Action, stream: std::os::unix::net::UnixStream, outcome: &Result<String>) {
    match outcome {
        Ok(done) => println!("{done}"),
        Err(e) => println!("{}: {e:#}", action.line()),
    }
    control::answer(stream, outcome);
}

/// Removes everything in `dir` but `keep`.
fn empty_except(dir: &std::path::Path, keep: &std::path::Path) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path == keep {
            continue;
        }
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.with_context(|| format!("remove {}", path.display()))?;
    }
    Ok(())
}

/// One control request against the cluster: what was done, in words.
fn act(cluster: &mut LocalCluster, action: Action) -> Result<String> {
    let k = match action {
        Action::Stop(k) | Action::Kill(k) | Action::Restart(k) | Action::ScaleIn(k) => k,
        Action::ScaleOut => {
            let k = cluster.scale_out()?;
            let s = cluster.spec();
            return Ok(format!(
                "node {k} joining at {} (pid {}; log {}); `corekv-ctl store list` shows it in a few seconds",
                s.endpoint(k),
                cluster.pid(k).unwrap_or(0),
                s.log(k).display()
            ));
        }
    };
    anyhow::ensure!(
        (1..=cluster.node_count()).contains(&k),
        "no node {k} (1..={})",
        cluster.node_count()
    );
    match action {
        Action::Stop(_) if cluster.is_running(k) => {
            let clean = cluster.stop_node(k)?;
            Ok(format!("node {k} stopped{}", if clean { "" } else { " (not cleanly)" }))
        }
        Action::Kill(_) if cluster.is_running(k) => {
            cluster.kill(k)?;
            Ok(format!("node {k} killed (SIGKILL)"))
        }
        Action::Restart(_) if !cluster.is_running(k) => {
            cluster.restart(k)?;
            Ok(format!("node {k} started again (pid {})", cluster.pid(k).unwrap_or(0)))
        }
        Action::Restart(_) => anyhow::bail!("node {k} is running; stop or kill it first"),
        Action::ScaleIn(_) => anyhow::bail!("node {k} is not running: restart it first, so that its replicas can move"),
        Action::Stop(_) | Action::Kill(_) => anyhow::bail!("node {k} is not running"),
        Action::ScaleOut => unreachable!("answered above"),
    }
}

/// A scale-in under way: node `node`'s store is drained (`membership::drain`, printing each
/// move) on a thread of its own, so the playground keeps reporting nodes and seeing Ctrl-C;
/// its control client is answered once the node is stopped.
struct Draining {
    node: u64,
    stream: std::os::unix::net::UnixStream,
    /// (store id, replicas moved).
    done: std::thread::JoinHandle<Result<(u64, usize)>>,
}

impl Draining {
    fn start(cluster: &LocalCluster, k: u64, stream: std::os::unix::net::UnixStream) -> Result<Draining> {
        let cfg = cluster.spec().client_config()?;
        let addr = cluster.spec().endpoint(k);
        println!("node {k}: moving its replicas to the other stores");
        let done = std::thread::spawn(move || {
            corekv_tools::on_executor(move || async move {
                let client = Client::connect(cfg).await?;
                let stores = client.get_all_stores().await?.records;
                let store = (stores.iter().map(|s| &s.heartbeat))
                    .find(|s| s.client_addr == addr)
                    .map(|s| s.store_id)
                    .with_context(|| format!("no store is registered at {addr}"))?;
                let report = |region, to| println!("  region {region}: its replica on node {k} moved to store {to}");
                let moved = membership::drain(&client, store, MOVE_STEP_WAIT, report).await?;
                Ok((store, moved))
            })
        });
        Ok(Draining { node: k, stream, done })
    }

    /// The drain ended: the node is stopped if it succeeded. The outcome, and whom to tell.
    fn finish(self, cluster: &mut LocalCluster) -> (Result<String>, std::os::unix::net::UnixStream) {
        let k = self.node;
        let drained = (self.done.join()).unwrap_or_else(|_| Err(anyhow::anyhow!("the drain panicked")));
        let outcome = drained.and_then(|(store, moved)| {
            let clean = cluster.stop_node(k)?;
            Ok(format!(
                "node {k} (store {store}) scaled in: {moved} replica{} moved to other stores, then stopped{}",
                if moved == 1 { "" } else { "s" },
                if clean { "" } else { " (not cleanly)" }
            ))
        });
        (outcome, self.stream)
    }
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
