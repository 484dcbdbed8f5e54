//! `corekv-chaos`: a 3-node cluster of the real binaries inside a private network namespace,
//! a mixed client workload recorded as a history, a seeded nemesis (kill -9, pauses,
//! partitions, packet loss, a full disk, splits, leader transfers), then three checks: the history is linearizable per
//! key, no acknowledged write is lost, and every node serves again once the faults heal.
//!
//! Start reading at [`run`]. Modules: `netns` (namespace, nftables, tmpfs disks), `nemesis`
//! (the schedule, injecting and healing), `workload` (clients and the history recorder),
//! `history` (the record format and the judgements). Every run leaves its folder: history,
//! nemesis log, node logs, `summary.json`; a failure prints the seed that replays the schedule.
//!
//! Owns: the run (its folder, the cluster's shape and node config, the order of phases) and the
//! verdict (`Summary::passed`). Must not: fault anything but its network namespace, nftables
//! table, tmpfs disks and its own server processes, or check before every fault is healed and
//! the clients stopped.

pub mod history;
pub mod nemesis;
pub mod netns;
pub mod workload;

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corekv_netio::Client;
use corekv_raftstore::linearizability::CheckResult;

use crate::cluster::{ClusterSpec, LocalCluster};
use corekv_storage::tmpfs::Tmpfs;
use nemesis::{Fault, Nemesis, Schedule};
use netns::{Firewall, NetNs};

const NODES: u64 = 3;
const SHARDS: u32 = 2;
const BASE_PORT: u16 = 20160;
/// Each node's data disk (tmpfs): room for two shards' log segments (at most about
/// purge_segments_threshold + recycle_segments_max + 2 of 16 MiB each) and RocksDB.
const DISK_BYTES: u64 = 512 << 20;
const LEADERS_WAIT: Duration = Duration::from_secs(60);
/// How long every replica may take to apply what it knows committed once the faults healed
/// (long enough for a stuck KV engine's fail-stop and restart).
const CATCH_UP_WAIT: Duration = Duration::from_secs(60);
/// Settings every node runs with: small log segments (so a full disk bites soon) and frequent
/// log GC (so a node that was down catches up by snapshot, not only by log).
const NODE_CONFIG: &str = "\
[raft]
gc_keep_entries = 64
gc_slack_entries = 256
gc_interval_ticks = 10

[log]
segment_bytes = 16777216
purge_segments_threshold = 4
recycle_segments_max = 2
";

#[derive(clap::Args, Debug, Clone)]
pub struct ChaosArgs {
    /// Seeds the fault schedule and the clients' choices; a failing run prints it.
    #[arg(long)]
    pub seed: Option<u64>,
    /// How long faults are injected (the checks follow).
    #[arg(long, default_value_t = 180)]
    pub duration_secs: u64,
    /// Concurrent clients.
    #[arg(long, default_value_t = 8)]
    pub clients: u64,
    /// Where the run's folder goes (history, logs, summary).
    #[arg(long, default_value = "/var/tmp/corekv-chaos")]
    pub results: PathBuf,
    /// The corekv-server binary [default: next to this one].
    #[arg(long)]
    pub server: Option<PathBuf>,
}

/// What a run found.
#[derive(Debug)]
pub struct Summary {
    pub seed: u64,
    pub dir: PathBuf,
    pub faults: BTreeMap<&'static str, u64>,
    pub ops: u64,
    pub unknown: u64,
    pub linearizable: CheckResult,
    pub lost: Vec<history::LostWrite>,
    /// Nodes that exited on their own (not by the nemesis), each with the tail of its log.
    pub exits: Exits,
    pub serving: u64,
    /// Times a replica became leader (from the node logs), the initial elections included.
    pub elections: u64,
}

impl Summary {
    pub fn passed(&self) -> bool {
        self.linearizable == CheckResult::Linearizable
            && self.lost.is_empty()
            && self.exits.crashes.is_empty()
            && self.serving == NODES
    }

    pub fn faults_injected(&self) -> u64 {
        self.faults.values().sum()
    }

    /// The one summary line.
    pub fn line(&self) -> String {
        let faults: Vec<String> = self.faults.iter().map(|(k, v)| format!("{k} {v}")).collect();
        let verdict = match &self.linearizable {
            CheckResult::Linearizable => "yes".to_string(),
            CheckResult::NotLinearizable { key, .. } => format!("NO (key {})", String::from_utf8_lossy(key)),
            other => format!("NO ({other:?})"),
        };
        format!(
            "chaos: seed {}, {} faults injected ({}), {} operations ({} unknown), linearizable: {verdict}, lost writes: {}, node crashes: {}, fail-stops after a full disk: {}, leader elections: {}, nodes serving: {}/{NODES}: {}",
            self.seed,
            self.faults_injected(),
            faults.join(", "),
            self.ops,
            self.unknown,
            self.lost.len(),
            self.exits.crashes.len(),
            self.exits.fail_stops.len(),
            self.elections,
            self.serving,
            if self.passed() { "PASS" } else { "FAIL" }
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "seed": self.seed,
            "faults": self.faults,
            "faults_injected": self.faults_injected(),
            "operations": self.ops,
            "unknown_outcomes": self.unknown,
            "linearizable": format!("{:?}", self.linearizable),
            "lost_writes": self.lost.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "node_crashes": self.exits.crashes,
            "fail_stops": self.exits.fail_stops,
            "nodes_serving": self.serving,
            "leader_elections": self.elections,
            "passed": self.passed(),
        })
    }
}

/// One whole chaos run. Call from the main thread before any other thread exists: it moves
/// the calling thread into the run's network namespace.
pub fn run(args: &ChaosArgs) -> Result<Summary> {
    netns::require_root()?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let dir = args.results.join(format!("chaos-{seed}"));
    if dir.exists() {
        // A run killed mid-way may have left its disks mounted.
        for k in 1..=NODES {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(dir.join(format!("node-{k}")))
                .output();
        }
        std::fs::remove_dir_all(&dir).with_context(|| format!("clear {}", dir.display()))?;
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    println!("chaos: seed {seed}, results in {}", dir.display());
    let ns = NetNs::create_and_enter()?;
    let firewall = Firewall::install(&ns)?;
    let server = match &args.server {
        Some(path) => path.clone(),
        None => crate::cluster::sibling_binary("corekv-server")?,
    };
    let config = dir.join("corekv.toml");
    std::fs::write(&config, NODE_CONFIG)?;
    let spec = ClusterSpec {
        nodes: NODES,
        shards: SHARDS,
        data_dir: dir.clone(),
        hosts: (1..=NODES).map(|k| nemesis::node_ip(k).to_string()).collect(),
        base_port: BASE_PORT,
        server,
        extra_args: vec!["--config".into(), config.display().to_string()],
        tls: false,
    };
    let disks = (1..=NODES)
        .map(|k| Tmpfs::mount(&spec.node_dir(k), DISK_BYTES))
        .collect::<corekv_storage::Result<Vec<_>>>()?;
    let mut cluster = LocalCluster::start(spec.clone())?;
    cluster.wait_for_leaders(LEADERS_WAIT)?;
    let mut nemesis = Nemesis {
        cluster: &mut cluster,
        firewall: &firewall,
        disks: &disks,
    };
    // `drive` heals every fault before it returns; the drops below remove the rest.
    let summary = drive(args, seed, &dir, &mut nemesis);
    let stopped = cluster.stop();
    let summary = summary?;
    stopped?;
    std::fs::write(dir.join("summary.json"), summary.json().to_string())?;
    Ok(summary)
}

/// The run proper: clients and nemesis, then healing and the checks.
fn drive(args: &ChaosArgs, seed: u64, dir: &Path, nemesis: &mut Nemesis<'_>) -> Result<Summary> {
    let endpoints = nemesis.cluster.spec().endpoints();
    let epoch = Instant::now();
    let history_path = dir.join("history.jsonl");
    let stop = Arc::new(AtomicBool::new(false));
    let workload = {
        let (endpoints, stop, clients, path) =
            (endpoints.clone(), Arc::clone(&stop), args.clients, history_path.clone());
        std::thread::spawn(move || {
            crate::on_executor(move || async move {
                let recorder = Rc::new(workload::Recorder::create(&path, epoch)?);
                workload::run(endpoints.clone(), clients, seed, stop, Rc::clone(&recorder)).await?;
                workload::final_reads(endpoints, &recorder).await
            })
        })
    };
    let injected = inject_faults(args, seed, dir, epoch, &endpoints, nemesis, &workload);
    // The clients stop whatever the nemesis did: an error there must not leave them running.
    let healed = nemesis.heal_all();
    stop.store(true, Ordering::Relaxed);
    // While the clients finish and read every key, a node that fail-stops (a full disk's
    // late verdict) is restarted, as a supervisor would: the final reads need a quorum.
    let mut reaped = injected;
    while !workload.is_finished() {
        if let Ok((_, exits)) = &mut reaped {
            if let Err(e) = exits.reap(nemesis.cluster) {
                reaped = Err(e);
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let joined = workload
        .join()
        .map_err(|_| anyhow::anyhow!("the workload thread panicked"))?;
    let (faults, mut exits) = reaped?;
    healed?;
    let finals = joined?;
    let serving = serving_nodes(nemesis.cluster, &mut exits)?;
    let records = history::load(&history_path)?;
    println!("checking {} operations for linearizability...", records.len());
    Ok(Summary {
        seed,
        dir: dir.to_path_buf(),
        faults,
        ops: records.len() as u64,
        unknown: records.iter().filter(|r| r.return_ns == history::UNKNOWN).count() as u64,
        linearizable: history::check(&records)?,
        lost: history::lost_writes(&records, &finals),
        exits,
        serving,
        elections: elections(nemesis.cluster.spec()),
    })
}

type Joined = std::thread::JoinHandle<Result<BTreeMap<String, Option<String>>>>;

/// The nemesis's part: faults on the seeded schedule until the duration is up (or the clients
/// stopped early); the count of each kind injected and the nodes that crashed on their own.
fn inject_faults(
    args: &ChaosArgs,
    seed: u64,
    dir: &Path,
    epoch: Instant,
    endpoints: &[String],
    nemesis: &mut Nemesis<'_>,
    workload: &Joined,
) -> Result<(BTreeMap<&'static str, u64>, Exits)> {
    let mut log = std::fs::File::create(dir.join("nemesis.jsonl"))?;
    let mut schedule = Schedule::new(seed, NODES);
    let mut faults: BTreeMap<&'static str, u64> = Fault::NAMES.iter().map(|n| (*n, 0)).collect();
    let mut exits = Exits::default();
    let deadline = epoch + Duration::from_secs(args.duration_secs);
    while Instant::now() < deadline && !workload.is_finished() {
        let step = schedule.next(leading_node(endpoints));
        let at_ns = epoch.elapsed().as_nanos() as i64;
        nemesis.inject(step.fault)?;
        *faults.entry(step.fault.name()).or_default() += 1;
        std::thread::sleep(step.hold);
        nemesis.heal(step.fault)?;
        writeln!(
            log,
            "{}",
            serde_json::json!({"fault": format!("{:?}", step.fault), "at_ns": at_ns,
                "healed_ns": epoch.elapsed().as_nanos() as i64})
        )?;
        println!(
            "  {:>6.1} s  {:?} for {} ms",
            at_ns as f64 / 1e9,
            step.fault,
            step.hold.as_millis()
        );
        exits.reap(nemesis.cluster)?;
        std::thread::sleep(step.gap);
    }
    Ok((faults, exits))
}

/// The node leading most regions, as a short-lived client sees it (None: cannot tell now).
fn leading_node(endpoints: &[String]) -> Option<u64> {
    let endpoints = endpoints.to_vec();
    crate::on_executor(move || async move {
        let mut cfg = workload::client_config(endpoints);
        cfg.attempt_timeout = Duration::from_millis(300);
        let client = Client::connect(cfg).await?;
        let mut led: BTreeMap<u64, usize> = BTreeMap::new();
        for r in client.regions() {
            if let Some(l) = r.leader {
                *led.entry(l.node).or_default() += 1;
            }
        }
        Ok(led.into_iter().max_by_key(|&(_, n)| n).map(|(node, _)| node))
    })
    .ok()
    .flatten()
}

/// What a node's log ends with when it stopped on purpose: its KV engine did not resume after
/// a full disk (`raftstore::driver::NO_SPACE_STUCK_MS`), and a restart recovers it.
const FAIL_STOP_MARK: &str = "restart the node to recover";

/// Nodes that exited on their own (each restarted, as a supervisor would), with their logs'
/// last lines: a fail-stop after a full disk is the designed way out; anything else a crash.
#[derive(Debug, Default)]
pub struct Exits {
    pub crashes: Vec<String>,
    pub fail_stops: Vec<String>,
}

impl Exits {
    fn count(&self) -> usize {
        self.crashes.len() + self.fail_stops.len()
    }

    /// Restarts and records every node that exited since the last look.
    fn reap(&mut self, cluster: &mut LocalCluster) -> Result<()> {
        for (k, status) in cluster.reap_exited()? {
            let tail = crate::cluster::log_tail(&cluster.spec().log(k), 6);
            let what = format!("node {k} exited ({status}); {tail}");
            println!("  node {k} exited on its own ({status}); restarting it");
            if tail.contains(FAIL_STOP_MARK) {
                keep_kv_logs(cluster.spec(), k);
                self.fail_stops.push(what);
            } else {
                println!("{tail}");
                self.crashes.push(what);
            }
            cluster.restart(k)?;
        }
        Ok(())
    }
}

/// Copies node `k`'s RocksDB LOG files beside its log (its data disk is unmounted at the end
/// of the run): why the KV engine did not resume after a full disk is written there.
fn keep_kv_logs(spec: &ClusterSpec, k: u64) {
    let Ok(shards) = std::fs::read_dir(spec.node_dir(k)) else {
        return;
    };
    for shard in shards.flatten() {
        let from = shard.path().join("kv").join("LOG");
        let name = format!("node-{k}-{}-rocksdb.LOG", shard.file_name().to_string_lossy());
        let _ = std::fs::copy(from, spec.data_dir.join(name));
    }
}

/// Leader elections won, as the nodes logged them: evidence that the faults bit.
fn elections(spec: &ClusterSpec) -> u64 {
    (1..=spec.nodes)
        .map(|k| std::fs::read_to_string(spec.log(k)).unwrap_or_default())
        .map(|log| log.lines().filter(|l| l.contains("became leader")).count() as u64)
        .sum()
}

/// How many nodes serve: each answers a client that knows only it, and every shard of it has
/// applied everything it knows committed (after the final writes, a stuck replica would lag).
/// A node that stops (and is restarted) meanwhile gets the rest of the wait.
fn serving_nodes(cluster: &mut LocalCluster, exits: &mut Exits) -> Result<u64> {
    wait_for_leaders(cluster, exits)?;
    let spec = cluster.spec().clone();
    let mut serving = 0;
    for k in 1..=spec.nodes {
        let deadline = Instant::now() + CATCH_UP_WAIT;
        // Twice in a row, so that a node restarted a moment ago has had time to learn what
        // its peers committed.
        let mut good_polls = 0;
        let serves = loop {
            exits.reap(cluster)?;
            let endpoint = spec.endpoint(k);
            let answered = crate::on_executor(move || async move {
                Ok(Client::connect(workload::client_config(vec![endpoint])).await.is_ok())
            })?;
            let lag = apply_lag(&spec.status_addr(k));
            good_polls = if answered && matches!(lag, Ok(0)) {
                good_polls + 1
            } else {
                0
            };
            if good_polls == 2 {
                break true;
            }
            if Instant::now() > deadline {
                println!("  node {k} is not serving: answers a client: {answered}, apply lag: {lag:?}");
                break false;
            }
            std::thread::sleep(Duration::from_millis(500));
        };
        serving += u64::from(serves);
    }
    Ok(serving)
}

/// Waits until every region has a leader; a node that exits meanwhile (a full disk's late
/// fail-stop) is recorded and restarted, as a supervisor would, and the wait goes on.
fn wait_for_leaders(cluster: &mut LocalCluster, exits: &mut Exits) -> Result<()> {
    let deadline = Instant::now() + LEADERS_WAIT;
    loop {
        exits.reap(cluster)?;
        let seen = exits.count();
        let waited = cluster.wait_for_leaders(deadline.saturating_duration_since(Instant::now()));
        exits.reap(cluster)?;
        if waited.is_ok() || exits.count() == seen {
            return waited;
        }
    }
}

/// Committed entries not yet applied, summed over a node's shards (its /metrics).
fn apply_lag(status_addr: &str) -> Result<u64> {
    use std::io::Read;
    let mut conn = std::net::TcpStream::connect(status_addr).with_context(|| format!("connect {status_addr}"))?;
    conn.set_read_timeout(Some(Duration::from_secs(2)))?;
    write!(conn, "GET /metrics HTTP/1.0\r\nHost: {status_addr}\r\n\r\n")?;
    let mut text = String::new();
    conn.read_to_string(&mut text)?;
    let lags: Vec<u64> = text
        .lines()
        .filter(|l| l.starts_with("corekv_apply_lag_entries{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse().ok())
        .collect();
    if lags.is_empty() {
        bail!("{status_addr}/metrics has no apply_lag_entries");
    }
    Ok(lags.iter().sum())
}

/// Runs `corekv-chaos` with `args` and fails unless the run passed (the binary's body).
pub fn run_and_report(args: &ChaosArgs) -> Result<()> {
    let summary = run(args)?;
    println!("{}", summary.line());
    if let CheckResult::NotLinearizable { explanation, .. } = &summary.linearizable {
        println!("{explanation}");
    }
    for lost in &summary.lost {
        println!("lost: {lost}");
    }
    if !summary.passed() {
        bail!(
            "chaos run failed; its history and logs are in {} (replay the schedule with --seed {})",
            summary.dir.display(),
            summary.seed
        );
    }
    Ok(())
}
