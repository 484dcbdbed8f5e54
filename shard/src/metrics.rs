//! Prometheus metrics of a node and the status endpoint that serves them.
//!
//! Owns: every metric a node exports — one metric per meaning, named `corekv_<what>_<unit>`
//! (counters end in `_total`), labelled by `shard` (and `node`, constant) — and the status
//! server: `GET /metrics` (Prometheus text), `GET /health` (200 once every shard serves, 503
//! before or while stopping). Must not: be written on a hot path beyond bumping atomics.
//!
//! Every shard gets its own handles (`ShardMetrics`), resolved once at start: the hot path only
//! bumps atomics, never looks a label up (an error answer, rare, looks its name up). The status
//! server runs on its own unpinned thread and only reads.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use corekv_netio::msg::OP_NAMES;
use corekv_storage::raftlog::Durability;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::error::{Error, Result};

/// Latency buckets: 10 us .. ~2.6 s.
fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(10e-6, 2.0, 19).expect("valid buckets")
}

/// The metric families of a node, each labelled by `shard` (and more where said).
pub struct NodeMetrics {
    registry: Registry,
    /// The `process_*` metrics, without the `corekv_` prefix (Prometheus' own names).
    process: Registry,
    counters: Vec<(&'static str, IntCounterVec)>,
    gauges: Vec<(&'static str, IntGaugeVec)>,
    histograms: Vec<(&'static str, HistogramVec)>,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    errors: IntCounterVec,
    connections: IntGaugeVec,
    durability: IntGaugeVec,
    /// Every shard is serving (set by the node once they all opened; cleared when stopping).
    ready: Arc<AtomicBool>,
    started: std::time::Instant,
}

/// A node's load, summed over its shards' gauges (`NodeStatus`).
#[derive(Debug, Clone, Copy, Default)]
pub struct NodeLoad {
    pub uptime_secs: u64,
    pub regions: u64,
    pub leaders: u64,
    pub stopped_regions: u64,
    pub apply_lag_entries: u64,
    pub kv_disk_bytes: u64,
    pub raft_log_disk_bytes: u64,
}

/// Counters of a shard: (name, help); the handle of each is a field of `ShardMetrics`.
const COUNTERS: [(&str, &str); 20] = [
    ("raft_proposals_total", "Writes proposed to raft"),
    ("raft_log_syncs_total", "Durable raft log writes (group commits)"),
    (
        "disk_full_waits_total",
        "Log appends, applies and snapshot installs that waited for space",
    ),
    ("applied_entries_total", "Raft entries applied to the KV engine"),
    ("raft_messages_sent_total", "Raft messages queued to peer shards"),
    (
        "raft_messages_dropped_total",
        "Raft messages dropped: a peer's queue was full or unreachable",
    ),
    (
        "raft_messages_received_total",
        "Raft messages received from peer shards",
    ),
    (
        "raft_messages_refused_total",
        "Raft messages refused at the edge as forged or corrupt",
    ),
    ("snapshots_sent_total", "Region snapshots sent to peer shards"),
    (
        "snapshots_received_total",
        "Region snapshots received and handed to raft",
    ),
    (
        "frames_refused_total",
        "Frames refused (malformed, wrong port, refused handshake): each closes its connection",
    ),
    (
        "leader_changes_total",
        "Times a region's leader on this shard changed (as this shard saw it)",
    ),
    (
        "splits_by_size_total",
        "Splits this shard's split checker asked for (regions grown past [split]'s limits)",
    ),
    ("connections_refused_total", "Connections refused at a connection limit"),
    (
        "executor_stalls_total",
        "Times the shard's executor was late by more than a tick",
    ),
    (
        "placement_heartbeats_sent_total",
        "Region heartbeats this shard sent to the placement leader",
    ),
    (
        "placement_heartbeats_dropped_total",
        "Region heartbeats not sent: no placement leader known, or its link was full",
    ),
    (
        "placement_heartbeats_accepted_total",
        "Region heartbeats the placement service took into its directory",
    ),
    (
        "placement_heartbeats_refused_total",
        "Region heartbeats the placement service refused: stale (older epoch or term), or it no longer leads",
    ),
    (
        "tls_handshakes_failed_total",
        "Connections closed because their TLS handshake failed or timed out",
    ),
];

/// Gauges of a shard: (name, help).
const GAUGES: [(&str, &str); 11] = [
    (
        "apply_lag_entries",
        "Committed raft entries not yet applied, summed over regions",
    ),
    ("regions", "Regions with a replica on this shard"),
    ("leaders", "Regions whose replica on this shard leads"),
    (
        "stopped_regions",
        "Regions stopped on this shard because their data was found corrupt",
    ),
    (
        "peer_links_down",
        "Peer shards this shard has messages for but cannot reach now",
    ),
    ("kv_disk_bytes", "Bytes the shard's KV engine (RocksDB) takes on disk"),
    ("raft_log_disk_bytes", "Bytes the shard's raft log engine takes on disk"),
    (
        "raft_log_entries",
        "Raft entries kept in the log (not yet collected), summed over regions",
    ),
    (
        "placement_leader",
        "1 on the shard that runs the placement service (leads the system region, state loaded)",
    ),
    (
        "placement_directory_regions",
        "Regions in the placement service's directory (0 where it does not run)",
    ),
    (
        "placement_directory_stores",
        "Stores in the placement service's directory (0 where it does not run)",
    ),
];

/// Histograms of a shard: (name, help, buckets).
fn histogram_specs() -> [(&'static str, &'static str, Vec<f64>); 5] {
    [
        (
            "raft_log_sync_duration_seconds",
            "One durable raft log write (group commit)",
            seconds_buckets(),
        ),
        (
            "raft_log_batch_regions",
            "Regions whose entries share one group commit",
            exponential_buckets(1.0, 2.0, 12).expect("valid"),
        ),
        (
            "apply_duration_seconds",
            "Applying one loop's committed entries",
            seconds_buckets(),
        ),
        (
            "executor_tick_lateness_seconds",
            "How late the shard's ticker woke: time its executor was blocked or busy",
            seconds_buckets(),
        ),
        (
            "tso_request_timestamps",
            "Timestamps handed out per answered TSO request (the clients' batch sizes)",
            exponential_buckets(1.0, 4.0, 10).expect("valid"),
        ),
    ]
}

/// One shard's handles.
pub struct ShardMetrics {
    pub requests: Vec<IntCounter>,
    pub request_seconds: Vec<Histogram>,
    errors: IntCounterVec,
    shard: String,
    pub proposals: IntCounter,
    pub log_syncs: IntCounter,
    pub disk_full_waits: IntCounter,
    pub applied_entries: IntCounter,
    pub raft_messages_sent: IntCounter,
    pub raft_messages_dropped: IntCounter,
    pub raft_messages_received: IntCounter,
    pub raft_messages_refused: IntCounter,
    pub snapshots_sent: IntCounter,
    pub snapshots_received: IntCounter,
    pub frames_refused: IntCounter,
    pub leader_changes: IntCounter,
    pub size_splits: IntCounter,
    pub connections_refused: IntCounter,
    pub executor_stalls: IntCounter,
    pub tls_handshakes_failed: IntCounter,
    pub apply_lag_entries: IntGauge,
    pub regions: IntGauge,
    pub leaders: IntGauge,
    pub stopped_regions: IntGauge,
    pub peer_links_down: IntGauge,
    pub kv_disk_bytes: IntGauge,
    pub raft_log_disk_bytes: IntGauge,
    pub raft_log_entries: IntGauge,
    pub placement_leader: IntGauge,
    pub directory_regions: IntGauge,
    pub directory_stores: IntGauge,
    pub heartbeats_sent: IntCounter,
    pub heartbeats_dropped: IntCounter,
    pub heartbeats_accepted: IntCounter,
    pub heartbeats_refused: IntCounter,
    pub log_sync_seconds: Histogram,
    pub log_batch_regions: Histogram,
    pub apply_seconds: Histogram,
    pub tick_lateness_seconds: Histogram,
    pub tso_request_timestamps: Histogram,
    /// Open connections on the client port and on the peer port.
    pub client_connections: IntGauge,
    pub peer_connections: IntGauge,
    durability: IntGaugeVec,
}

impl NodeMetrics {
    pub fn new(node_id: u64) -> NodeMetrics {
        let registry = Registry::new_custom(
            Some("corekv".into()),
            Some([("node".to_string(), node_id.to_string())].into()),
        )
        .expect("valid registry");
        let register = |c: Box<dyn prometheus::core::Collector>| registry.register(c).expect("unique metric name");
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid counter");
            register(Box::new(c.clone()));
            c
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid gauge");
            register(Box::new(g.clone()));
            g
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid");
            register(Box::new(h.clone()));
            h
        };
        let build = gauge(
            "build_info",
            "The running build: version and git commit",
            &["version", "commit"],
        );
        build
            .with_label_values(&[env!("CARGO_PKG_VERSION"), crate::GIT_COMMIT])
            .set(1);
        let process = Registry::new_custom(None, Some([("node".to_string(), node_id.to_string())].into()))
            .expect("valid registry");
        process
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("unique metric name");
        NodeMetrics {
            counters: COUNTERS.iter().map(|(n, h)| (*n, counter(n, h, &["shard"]))).collect(),
            gauges: GAUGES.iter().map(|(n, h)| (*n, gauge(n, h, &["shard"]))).collect(),
            histograms: histogram_specs()
                .into_iter()
                .map(|(n, h, b)| (n, histogram(n, h, &["shard"], b)))
                .collect(),
            requests: counter("requests_total", "Client requests by command", &["shard", "op"]),
            request_seconds: histogram(
                "request_duration_seconds",
                "Client request latency inside the shard, by command",
                &["shard", "op"],
                seconds_buckets(),
            ),
            errors: counter(
                "request_errors_total",
                "Requests answered with an error, by error (see the wire codes in docs/format.md)",
                &["shard", "error"],
            ),
            connections: gauge(
                "connections",
                "Open connections, by port (client or peer)",
                &["shard", "port"],
            ),
            durability: gauge(
                "raft_log_durability_info",
                "How the raft log makes group commits durable on its filesystem",
                &["shard", "filesystem", "sync", "fallocate"],
            ),
            ready: Arc::new(AtomicBool::new(false)),
            started: std::time::Instant::now(),
            registry,
            process,
        }
    }

    /// The flag `/health` reports: the node sets it once every shard serves.
    pub fn ready(&self) -> &AtomicBool {
        &self.ready
    }

    pub fn shard(&self, shard: u32) -> ShardMetrics {
        let s = shard.to_string();
        let c = |name: &str| self.family(&self.counters, name).with_label_values(&[s.as_str()]);
        let g = |name: &str| self.family(&self.gauges, name).with_label_values(&[s.as_str()]);
        let h = |name: &str| self.family(&self.histograms, name).with_label_values(&[s.as_str()]);
        ShardMetrics {
            requests: OP_NAMES
                .iter()
                .map(|op| self.requests.with_label_values(&[s.as_str(), op]))
                .collect(),
            request_seconds: OP_NAMES
                .iter()
                .map(|op| self.request_seconds.with_label_values(&[s.as_str(), op]))
                .collect(),
            errors: self.errors.clone(),
            proposals: c("raft_proposals_total"),
            log_syncs: c("raft_log_syncs_total"),
            disk_full_waits: c("disk_full_waits_total"),
            applied_entries: c("applied_entries_total"),
            raft_messages_sent: c("raft_messages_sent_total"),
            raft_messages_dropped: c("raft_messages_dropped_total"),
            raft_messages_received: c("raft_messages_received_total"),
            raft_messages_refused: c("raft_messages_refused_total"),
            snapshots_sent: c("snapshots_sent_total"),
            snapshots_received: c("snapshots_received_total"),
            frames_refused: c("frames_refused_total"),
            leader_changes: c("leader_changes_total"),
            size_splits: c("splits_by_size_total"),
            connections_refused: c("connections_refused_total"),
            executor_stalls: c("executor_stalls_total"),
            tls_handshakes_failed: c("tls_handshakes_failed_total"),
            apply_lag_entries: g("apply_lag_entries"),
            regions: g("regions"),
            leaders: g("leaders"),
            stopped_regions: g("stopped_regions"),
            peer_links_down: g("peer_links_down"),
            kv_disk_bytes: g("kv_disk_bytes"),
            raft_log_disk_bytes: g("raft_log_disk_bytes"),
            raft_log_entries: g("raft_log_entries"),
            placement_leader: g("placement_leader"),
            directory_regions: g("placement_directory_regions"),
            directory_stores: g("placement_directory_stores"),
            heartbeats_sent: c("placement_heartbeats_sent_total"),
            heartbeats_dropped: c("placement_heartbeats_dropped_total"),
            heartbeats_accepted: c("placement_heartbeats_accepted_total"),
            heartbeats_refused: c("placement_heartbeats_refused_total"),
            log_sync_seconds: h("raft_log_sync_duration_seconds"),
            log_batch_regions: h("raft_log_batch_regions"),
            apply_seconds: h("apply_duration_seconds"),
            tick_lateness_seconds: h("executor_tick_lateness_seconds"),
            tso_request_timestamps: h("tso_request_timestamps"),
            client_connections: self.connections.with_label_values(&[s.as_str(), "client"]),
            peer_connections: self.connections.with_label_values(&[s.as_str(), "peer"]),
            durability: self.durability.clone(),
            shard: s,
        }
    }

    /// The node's load now, from every shard's gauges.
    pub fn load(&self) -> NodeLoad {
        let sum = |name: &str| -> u64 {
            use prometheus::core::Collector;
            let family = self.family(&self.gauges, name).collect();
            let values = family
                .iter()
                .flat_map(|f| f.get_metric())
                .map(|m| m.get_gauge().get_value());
            values.sum::<f64>().max(0.0) as u64
        };
        NodeLoad {
            uptime_secs: self.started.elapsed().as_secs(),
            regions: sum("regions"),
            leaders: sum("leaders"),
            stopped_regions: sum("stopped_regions"),
            apply_lag_entries: sum("apply_lag_entries"),
            kv_disk_bytes: sum("kv_disk_bytes"),
            raft_log_disk_bytes: sum("raft_log_disk_bytes"),
        }
    }

    fn family<'a, T>(&self, families: &'a [(&'static str, T)], name: &str) -> &'a T {
        &families.iter().find(|(n, _)| *n == name).expect("a declared metric").1
    }

    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        TextEncoder::new()
            .encode_to_string(&families)
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

impl ShardMetrics {
    /// An error answer, by the error's name (rare: the label is looked up here).
    pub fn error(&self, name: &str) {
        self.errors.with_label_values(&[self.shard.as_str(), name]).inc();
    }

    /// How this shard's raft log makes writes durable (an info metric, value 1).
    pub fn log_durability(&self, d: Durability) {
        let fallocate = if d.fallocate { "yes" } else { "no" };
        self.durability
            .with_label_values(&[self.shard.as_str(), d.filesystem, d.sync_name(), fallocate])
            .set(1);
    }
}

/// Serves `GET /metrics` and `GET /health` on `addr` from its own thread until dropped.
pub struct StatusServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl StatusServer {
    pub fn start(addr: &str, metrics: Arc<NodeMetrics>) -> Result<StatusServer> {
        let server = tiny_http::Server::http(addr).map_err(|e| Error::Bind {
            flag: "--status-addr",
            addr: addr.to_string(),
            error: std::io::Error::other(e.to_string()),
        })?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("status".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = respond(request.url(), &metrics);
                    let _ = request.respond(response);
                }
            })
            .map_err(|e| Error::io("status thread", e))?;
        Ok(StatusServer {
            server,
            thread: Some(thread),
        })
    }
}

/// The status server's answer to `GET url`.
fn respond(url: &str, metrics: &NodeMetrics) -> tiny_http::Response<std::io::Cursor<Vec<u8>>> {
    let text = |body: String, kind: &str| {
        let header = tiny_http::Header::from_bytes("Content-Type", kind).expect("valid header");
        tiny_http::Response::from_string(body).with_header(header)
    };
    match url {
        "/metrics" => text(metrics.render(), "text/plain; version=0.0.4"),
        "/health" if metrics.ready.load(Ordering::Relaxed) => text("ok\n".into(), "text/plain"),
        "/health" => text("starting or stopping\n".into(), "text/plain").with_status_code(503),
        _ => text("not found: try /metrics or /health\n".into(), "text/plain").with_status_code(404),
    }
}

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
