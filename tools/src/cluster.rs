//! A local cluster of `corekv-server` processes: what the playground runs, and what the
//! multi-process tests (and the chaos harness) drive — start, kill -9, restart, stop.
//!
//! Node k takes the block of ports base-port + 100*(k-1): clients on +0 (+ shard), peers on
//! +40 (+ shard), /metrics on +80; all on one host, or each node on its own host (the chaos
//! harness gives each its own 127.0.0.N). Its cluster has a token of its own, so that it never
//! talks to another local cluster on the same ports (and its readiness check can tell).
//!
//! Owns: the port plan, the token file, the server processes (start, kill -9, signal, restart,
//! stop) and the readiness check. Must not: leave a node running behind it (children are killed
//! on drop, and get SIGTERM if this process dies), or take another cluster on its ports for its
//! own.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corekv_netio::msg::{Op, Reply, Request};
use corekv_netio::{Client, ClientConfig};
use corekv_shard::NodeConfig;

/// Ports one node takes: clients on +0.., peers on +40.., metrics on +80.
pub const PORTS_PER_NODE: u16 = 100;
const PEER_PORT_OFFSET: u16 = 40;
const STATUS_PORT_OFFSET: u16 = 80;
/// Shards per node: one client and one peer port each within the node's block.
pub const SHARDS_MAX: u32 = PEER_PORT_OFFSET as u32;
const STOP_WAIT: Duration = Duration::from_secs(20);
/// Where a local cluster keeps its token, beside the nodes' data dirs.
const TOKEN_FILE: &str = "cluster-token";

#[derive(Debug, Clone)]
pub struct ClusterSpec {
    pub nodes: u64,
    pub shards: u32,
    pub data_dir: PathBuf,
    /// One host for every node, or one per node (node k on `hosts[k - 1]`).
    pub hosts: Vec<String>,
    pub base_port: u16,
    /// The `corekv-server` binary.
    pub server: PathBuf,
    /// Extra arguments for every server (e.g. `--config FILE`).
    pub extra_args: Vec<String>,
    /// Mutual TLS everywhere, with throwaway certificates made in `data_dir/tls` (`certs`).
    pub tls: bool,
}

/// A fresh cluster token: the time and this process, unique on this machine.
fn new_token() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("local-{nanos:x}-{}", std::process::id())
}

pub struct LocalCluster {
    spec: ClusterSpec,
    children: Vec<Option<Child>>,
}

impl ClusterSpec {
    pub fn port(&self, node: u64) -> u16 {
        self.base_port + PORTS_PER_NODE * (node as u16 - 1)
    }

    pub fn host(&self, node: u64) -> &str {
        let at = if self.hosts.len() == 1 { 0 } else { node as usize - 1 };
        &self.hosts[at]
    }

    pub fn endpoint(&self, node: u64) -> String {
        format!("{}:{}", self.host(node), self.port(node))
    }

    pub fn peer_endpoint(&self, node: u64) -> String {
        format!("{}:{}", self.host(node), self.port(node) + PEER_PORT_OFFSET)
    }

    pub fn status_addr(&self, node: u64) -> String {
        format!("{}:{}", self.host(node), self.port(node) + STATUS_PORT_OFFSET)
    }

    /// `--initial-cluster` of every node: the peer addresses.
    pub fn initial_cluster(&self) -> String {
        let members: Vec<String> = (1..=self.nodes)
            .map(|n| format!("{n}={}", self.peer_endpoint(n)))
            .collect();
        members.join(",")
    }

    /// The cluster's token: kept in the data dir, made on first start (a restart reuses it).
    pub fn token(&self) -> Result<String> {
        let path = self.data_dir.join(TOKEN_FILE);
        match std::fs::read_to_string(&path) {
            Ok(token) => Ok(token.trim().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = new_token();
                std::fs::write(&path, &token).with_context(|| format!("write {}", path.display()))?;
                Ok(token)
            }
            Err(e) => Err(e).with_context(|| format!("read {}", path.display())),
        }
    }

    /// The TLS material of a TLS cluster (made on first use), `None` for a plain one.
    pub fn certs(&self) -> Result<Option<crate::certs::LocalCerts>> {
        if !self.tls {
            return Ok(None);
        }
        let hosts: Vec<String> = (1..=self.nodes).map(|k| self.host(k).to_string()).collect();
        crate::certs::generate(&self.data_dir.join("tls"), &hosts).map(Some)
    }

    /// A client configuration for this cluster (its TLS included).
    pub fn client_config(&self) -> Result<ClientConfig> {
        let mut cfg = ClientConfig::new(self.endpoints());
        if let Some(certs) = self.certs()? {
            cfg.tls = Some(corekv_netio::tls::Tls::load(&certs.client())?);
        }
        Ok(cfg)
    }

    /// The id the nodes derive from the token, members and shards (as the node does).
    pub fn cluster_id(&self) -> Result<u64> {
        let cfg = NodeConfig {
            node_id: 1,
            initial_cluster: self.initial_cluster(),
            initial_cluster_token: self.token()?,
            ..NodeConfig::default()
        };
        Ok(cfg.cluster_id(&cfg.members()?, self.shards))
    }

    /// Node `k`'s data dir.
    pub fn node_dir(&self, node: u64) -> PathBuf {
        self.data_dir.join(format!("node-{node}"))
    }

    pub fn log(&self, node: u64) -> PathBuf {
        self.data_dir.join(format!("node-{node}.log"))
    }

    pub fn endpoints(&self) -> Vec<String> {
        (1..=self.nodes).map(|k| self.endpoint(k)).collect()
    }

    fn check(&self) -> Result<()> {
        if self.nodes == 0 || self.shards == 0 || self.shards > SHARDS_MAX {
            bail!("nodes must be >= 1 and shards in 1..={SHARDS_MAX}");
        }
        if self.hosts.len() != 1 && self.hosts.len() as u64 != self.nodes {
            bail!(
                "give one host for all nodes or one per node ({} for {} nodes)",
                self.hosts.len(),
                self.nodes
            );
        }
        let last = u64::from(self.base_port) + u64::from(PORTS_PER_NODE) * self.nodes;
        if self.base_port == 0 || last > u64::from(u16::MAX) {
            bail!("base port {} is too high for {} nodes", self.base_port, self.nodes);
        }
        Ok(())
    }
}

impl LocalCluster {
    /// Starts every node (each in its own process).
    pub fn start(spec: ClusterSpec) -> Result<LocalCluster> {
        spec.check()?;
        std::fs::create_dir_all(&spec.data_dir).with_context(|| format!("create {}", spec.data_dir.display()))?;
        let mut cluster = LocalCluster {
            children: (0..spec.nodes).map(|_| None).collect(),
            spec,
        };
        for k in 1..=cluster.spec.nodes {
            cluster.restart(k)?;
        }
        Ok(cluster)
    }

    pub fn spec(&self) -> &ClusterSpec {
        &self.spec
    }

    /// Nodes started so far: the spec's, then those added by `scale_out`.
    pub fn node_count(&self) -> u64 {
        self.children.len() as u64
    }

    /// Starts one more node, which joins the cluster (`--join`) on the next port block;
    /// returns its number.
    pub fn scale_out(&mut self) -> Result<u64> {
        let k = self.node_count() + 1;
        let last = u64::from(self.spec.base_port) + u64::from(PORTS_PER_NODE) * k;
        if last > u64::from(u16::MAX) || self.spec.hosts.len() != 1 {
            bail!("no room for node {k}: its ports pass 65535, or the nodes have hosts of their own");
        }
        self.children.push(None);
        self.restart(k)?;
        Ok(k)
    }

    /// Starts node `k` (again) with its data dir: a restart recovers it. Nodes past the spec's
    /// join the cluster through the spec's nodes.
    pub fn restart(&mut self, k: u64) -> Result<()> {
        let s = &self.spec;
        let file = std::fs::OpenOptions::new().create(true).append(true).open(s.log(k))?;
        let mut cmd = Command::new(&s.server);
        if k <= s.nodes {
            cmd.arg("--node-id")
                .arg(k.to_string())
                .arg("--initial-cluster")
                .arg(s.initial_cluster())
                .arg("--initial-cluster-token")
                .arg(s.token()?);
        } else {
            cmd.arg("--join")
                .arg(s.endpoints().join(","))
                .arg("--peer-addr")
                .arg(s.peer_endpoint(k));
        }
        cmd.arg("--addr")
            .arg(s.endpoint(k))
            .arg("--data-dir")
            .arg(s.node_dir(k))
            .args(s.certs()?.map(|c| crate::certs::node_flags(&c)).unwrap_or_default())
            .arg("--shards")
            .arg(s.shards.to_string())
            .arg("--status-addr")
            .arg(s.status_addr(k))
            .args(&s.extra_args)
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file);
        // SAFETY: prctl is async-signal-safe; the kernel stops the child if its parent dies.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let child = cmd.spawn().with_context(|| format!("start {}", s.server.display()))?;
        self.children[(k - 1) as usize] = Some(child);
        Ok(())
    }

    /// kill -9 of node `k`: no shutdown of any kind.
    pub fn kill(&mut self, k: u64) -> Result<()> {
        if let Some(mut child) = self.children[(k - 1) as usize].take() {
            child.kill()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Sends `signal` (SIGSTOP, SIGCONT, ...) to node `k`; `false` if it is not running.
    pub fn signal(&self, k: u64, signal: i32) -> Result<bool> {
        let Some(child) = &self.children[(k - 1) as usize] else {
            return Ok(false);
        };
        // SAFETY: kill(2) on our own child's pid, which is not reaped while we hold it.
        if unsafe { libc::kill(child.id() as i32, signal) } != 0 {
            return Err(std::io::Error::last_os_error()).with_context(|| format!("signal {signal} to node {k}"));
        }
        Ok(true)
    }

    /// Node `k`'s process id, if it runs.
    pub fn pid(&self, k: u64) -> Option<u32> {
        self.children[(k - 1) as usize].as_ref().map(Child::id)
    }

    pub fn is_running(&self, k: u64) -> bool {
        self.children[(k - 1) as usize].is_some()
    }

    /// Fails with the tail of its log if a node that should run has exited.
    pub fn check_alive(&mut self) -> Result<()> {
        for (i, slot) in self.children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait()? {
                let k = i as u64 + 1;
                bail!("node {k} exited ({status}); {}", log_tail(&self.spec.log(k), 8));
            }
        }
        Ok(())
    }

    /// Nodes that should run but have exited since the last look, with their exit status;
    /// they count as stopped from now on (`restart` starts them again).
    pub fn reap_exited(&mut self) -> Result<Vec<(u64, std::process::ExitStatus)>> {
        let mut exited = Vec::new();
        for (i, slot) in self.children.iter_mut().enumerate() {
            let Some(child) = slot else { continue };
            if let Some(status) = child.try_wait()? {
                exited.push((i as u64 + 1, status));
                *slot = None;
            }
        }
        Ok(exited)
    }

    /// Waits until every node answers at its endpoint as itself (its node id, this cluster's
    /// id: not another cluster on the same ports) and every region has a leader.
    pub fn wait_for_leaders(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let cluster_id = self.spec.cluster_id()?;
        loop {
            self.check_alive()?;
            let (spec, cfg) = (self.spec.clone(), self.spec.client_config()?);
            let state = crate::on_executor(move || async move { Ok(readiness(&spec, cfg, cluster_id).await) })?;
            match state {
                Ok(()) => return Ok(()),
                Err(why) if Instant::now() > deadline => {
                    bail!("the cluster was not up after {timeout:?}: {why}; see the node logs")
                }
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
    }

    /// SIGTERM to node `k`; waits for it to exit and returns whether it exited cleanly.
    pub fn stop_node(&mut self, k: u64) -> Result<bool> {
        if !self.signal(k, libc::SIGTERM)? {
            return Ok(true);
        }
        let Some(mut child) = self.children[(k - 1) as usize].take() else {
            return Ok(true);
        };
        let deadline = Instant::now() + STOP_WAIT;
        loop {
            if let Some(status) = child.try_wait()? {
                return Ok(status.success());
            }
            if Instant::now() > deadline {
                child.kill()?;
                child.wait()?;
                bail!("node {k} did not stop within {STOP_WAIT:?} of SIGTERM; killed it");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops every node; `Ok(true)` if all exited cleanly.
    pub fn stop(&mut self) -> Result<bool> {
        let mut clean = true;
        for k in 1..=self.node_count() {
            clean &= self.stop_node(k)?;
        }
        Ok(clean)
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut().flatten() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// `Ok` once every node of `spec` answers at its endpoint as itself, in cluster `cluster_id`,
/// and every region has a leader; else what is missing.
async fn readiness(spec: &ClusterSpec, mut cfg: ClientConfig, cluster_id: u64) -> std::result::Result<(), String> {
    cfg.attempt_timeout = Duration::from_millis(500);
    let client = Client::with_view(cfg, Vec::new());
    let ask = Request {
        region_id: 0,
        epoch: Default::default(),
        op: Op::ClusterInfo,
    };
    for k in 1..=spec.nodes {
        let addr = spec.endpoint(k);
        let info = match client.ask(&addr, ask.clone()).await {
            Ok(Reply::Cluster(info)) => info,
            Ok(other) => return Err(format!("{addr} answered {other:?}")),
            Err(e) => return Err(format!("node {k}: {e}")),
        };
        if (info.node_id, info.cluster_id) != (k, cluster_id) {
            return Err(format!(
                "{addr} is node {} of cluster {:#x}, not node {k} of this cluster {cluster_id:#x} (another cluster on these ports?)",
                info.node_id, info.cluster_id
            ));
        }
    }
    client.refresh().await.map_err(|e| e.to_string())?;
    let regions = client.regions();
    match regions.iter().find(|r| r.leader.is_none()) {
        _ if regions.is_empty() => Err("no region known yet".into()),
        Some(r) => Err(format!("region {} has no leader yet", r.region.id)),
        None => Ok(()),
    }
}

/// The last `lines` lines of a log, for error messages.
pub fn log_tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let tail: Vec<&str> = text.lines().rev().take(lines).collect();
    format!(
        "last lines of {}:\n{}",
        path.display(),
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    )
}

/// Another binary of this build, next to the running one.
pub fn sibling_binary(name: &str) -> Result<PathBuf> {
    let me = std::env::current_exe().context("locate this executable")?;
    let path = me.with_file_name(name);
    if !path.exists() {
        bail!(
            "{} not found next to {} (build the workspace first)",
            name,
            me.display()
        );
    }
    Ok(path)
}
