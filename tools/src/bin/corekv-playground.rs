//! corekv-playground: a local cluster of `corekv-server` processes for trying corekv out.
//! Node k listens on base-port + 10*(k-1) (+ shard), serves /metrics on base-port +
//! 10*(k-1) + 9, logs to DATA_DIR/node-k.log. Stops its children on Ctrl-C / SIGTERM.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use corekv_netio::{Client, ClientConfig};

/// Start a local corekv cluster (child processes) and keep it running until Ctrl-C.
#[derive(Parser)]
#[command(version)]
struct Args {
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Shards (cores) per node, at most 9 (ports of a node: +0..+8, metrics on +9).
    #[arg(long, default_value_t = 2)]
    shards: u32,
    /// One sub-directory per node; an existing one is recovered.
    #[arg(long)]
    data_dir: PathBuf,
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
}

const LEADERS_WAIT: Duration = Duration::from_secs(60);
const STOP_WAIT: Duration = Duration::from_secs(20);

fn main() -> std::process::ExitCode {
    corekv_tools::run_main("corekv-playground", run)
}

struct Node {
    id: u64,
    child: Child,
    log: PathBuf,
}

fn run() -> Result<()> {
    corekv_tools::init_logging("warn");
    let args = Args::parse();
    if args.nodes == 0 || args.shards == 0 || args.shards > 9 {
        bail!("--nodes must be >= 1 and --shards in 1..=9");
    }
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    let port = |k: u64| -> Result<u16> {
        let p = u64::from(args.base_port) + 10 * (k - 1);
        u16::try_from(p + 9).map(|_| p as u16).context("--base-port too high for this many nodes")
    };
    let mut endpoints = Vec::new();
    for k in 1..=args.nodes {
        endpoints.push(format!("{}:{}", args.host, port(k)?));
    }
    let cluster: Vec<String> = endpoints.iter().enumerate().map(|(i, e)| format!("{}={e}", i + 1)).collect();
    let server = sibling("corekv-server")?;
    std::fs::create_dir_all(&args.data_dir).with_context(|| format!("create {}", args.data_dir.display()))?;
    let mut nodes = Vec::new();
    let started = (|| -> Result<()> {
        for k in 1..=args.nodes {
            nodes.push(spawn_node(&server, &args, k, port(k)?, &cluster.join(","))?);
        }
        wait_for_leaders(&endpoints, &mut nodes, &stop)?;
        println!("corekv playground: {} nodes x {} shards", args.nodes, args.shards);
        for (k, e) in endpoints.iter().enumerate() {
            println!(
                "  node {}  {e} (shards on +0..+{})  metrics http://{}:{}/metrics  log {}",
                k + 1,
                args.shards - 1,
                args.host,
                port(k as u64 + 1)? + 9,
                nodes[k].log.display()
            );
        }
        println!("endpoints: {}", endpoints.join(","));
        if let Some(keys) = args.demo_keys {
            demo(&endpoints, keys)?;
        }
        if !args.no_wait {
            println!("press Ctrl-C to stop the cluster");
            while !stop.load(Ordering::Relaxed) {
                check_alive(&mut nodes)?;
                std::thread::sleep(Duration::from_millis(200));
            }
        }
        Ok(())
    })();
    stop_nodes(&mut nodes);
    started
}

/// Another binary of this build, next to this one.
fn sibling(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("locate this executable")?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!("{} not found next to {} (build the workspace first)", name, me.display());
    }
    Ok(path)
}

fn spawn_node(server: &Path, args: &Args, k: u64, port: u16, cluster: &str) -> Result<Node> {
    let dir = args.data_dir.join(format!("node-{k}"));
    let log = args.data_dir.join(format!("node-{k}.log"));
    let file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let mut cmd = Command::new(server);
    cmd.arg("--node-id")
        .arg(k.to_string())
        .arg("--addr")
        .arg(format!("{}:{port}", args.host))
        .arg("--data-dir")
        .arg(&dir)
        .arg("--initial-cluster")
        .arg(cluster)
        .arg("--shards")
        .arg(args.shards.to_string())
        .arg("--status-addr")
        .arg(format!("{}:{}", args.host, port + 9))
        .stdin(Stdio::null())
        .stdout(file.try_clone()?)
        .stderr(file);
    // SAFETY: prctl is async-signal-safe; it makes the kernel stop the child if we die.
    unsafe {
        std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    let child = cmd.spawn().with_context(|| format!("start {}", server.display()))?;
    Ok(Node { id: k, child, log })
}

fn check_alive(nodes: &mut [Node]) -> Result<()> {
    for n in nodes.iter_mut() {
        if let Some(status) = n.child.try_wait()? {
            let log = std::fs::read_to_string(&n.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(5).collect();
            bail!(
                "node {} exited ({status}); last lines of {}:\n{}",
                n.id,
                n.log.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    Ok(())
}

/// Waits until every region has a leader every node agrees is one (a client can route).
fn wait_for_leaders(endpoints: &[String], nodes: &mut [Node], stop: &AtomicBool) -> Result<()> {
    let deadline = Instant::now() + LEADERS_WAIT;
    loop {
        check_alive(nodes)?;
        if stop.load(Ordering::Relaxed) {
            bail!("interrupted");
        }
        let eps = endpoints.to_vec();
        let ready = corekv_tools::on_executor(move || async move {
            let mut cfg = ClientConfig::new(eps);
            cfg.attempt_timeout = Duration::from_millis(500);
            let Ok(client) = Client::connect(cfg).await else { return Ok(false) };
            let regions = client.regions();
            Ok(!regions.is_empty() && regions.iter().all(|r| r.leader.is_some()))
        })?;
        if ready {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("not every region had a leader after {LEADERS_WAIT:?}; see the node logs");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn demo(endpoints: &[String], keys: u64) -> Result<()> {
    let eps = endpoints.to_vec();
    let (phases, stats) = corekv_tools::on_executor(move || async move {
        let client = Client::connect(ClientConfig::new(eps)).await?;
        let phases = corekv_tools::demo::run(&client, keys, 32).await?;
        Ok((phases, client.stats()))
    })?;
    println!("demo: {keys} keys over every region, 32 requests in flight, then a full scan and a compare-and-swap:");
    for p in &phases {
        println!("  {p}");
    }
    println!(
        "  client: {} operations, {} attempts, {} redirects",
        stats.operations, stats.attempts, stats.redirects
    );
    Ok(())
}

/// SIGTERM to every node, then SIGKILL to any still running after STOP_WAIT.
fn stop_nodes(nodes: &mut [Node]) {
    for n in nodes.iter() {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(n.child.id() as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + STOP_WAIT;
    for n in nodes.iter_mut() {
        loop {
            match n.child.try_wait() {
                Ok(Some(_)) | Err(_) => break,
                Ok(None) if Instant::now() > deadline => {
                    eprintln!("node {} did not stop in {STOP_WAIT:?}; killing it", n.id);
                    let _ = n.child.kill();
                    let _ = n.child.wait();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            }
        }
    }
    if !nodes.is_empty() {
        println!("stopped {} nodes", nodes.len());
    }
}
