//! Prometheus metrics of a node and the `/metrics` endpoint that serves them.
//!
//! Every shard gets its own handles (`ShardMetrics`, label `shard`), resolved once at start:
//! the hot path only bumps atomics, never looks a label up. The status server runs on its own
//! unpinned thread and only reads.

use std::sync::Arc;
use std::thread::JoinHandle;

use corekv_netio::msg::OP_NAMES;
use prometheus::{
    exponential_buckets, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec,
    Opts, Registry, TextEncoder,
};

use crate::error::{Error, Result};

/// Latency buckets: 10 us .. ~2.6 s.
fn seconds_buckets() -> Vec<f64> {
    exponential_buckets(10e-6, 2.0, 19).expect("valid buckets")
}

pub struct NodeMetrics {
    registry: Registry,
    requests: IntCounterVec,
    request_seconds: HistogramVec,
    errors: IntCounterVec,
    counters: IntCounterVec,
    gauges: IntGaugeVec,
    log_append_seconds: HistogramVec,
    log_batch_regions: HistogramVec,
    apply_seconds: HistogramVec,
}

/// One shard's handles.
pub struct ShardMetrics {
    pub requests: Vec<IntCounter>,
    pub request_seconds: Vec<Histogram>,
    errors: IntCounterVec,
    shard: String,
    pub proposals: IntCounter,
    pub log_appends: IntCounter,
    pub no_space_waits: IntCounter,
    pub log_append_seconds: Histogram,
    pub log_batch_regions: Histogram,
    pub applied_entries: IntCounter,
    pub apply_seconds: Histogram,
    pub raft_messages_sent: IntCounter,
    pub raft_messages_dropped: IntCounter,
    pub raft_messages_received: IntCounter,
    pub snapshots_sent: IntCounter,
    pub snapshots_received: IntCounter,
    pub frames_rejected: IntCounter,
    pub apply_lag_entries: IntGauge,
    pub regions: IntGauge,
    pub leaders: IntGauge,
    pub connections: IntGauge,
}

impl NodeMetrics {
    pub fn new(node_id: u64) -> NodeMetrics {
        let registry = Registry::new_custom(
            Some("corekv".into()),
            Some([("node".to_string(), node_id.to_string())].into()),
        )
        .expect("valid registry");
        let hist = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels).expect("valid");
            registry.register(Box::new(h.clone())).expect("unique name");
            h
        };
        let requests = IntCounterVec::new(
            Opts::new("requests_total", "Client requests by command"),
            &["shard", "op"],
        )
        .expect("valid");
        let errors = IntCounterVec::new(
            Opts::new("request_errors_total", "Requests answered with an error, by wire code"),
            &["shard", "code"],
        )
        .expect("valid");
        let counters =
            IntCounterVec::new(Opts::new("events_total", "Shard events by kind"), &["shard", "event"]).expect("valid");
        let gauges =
            IntGaugeVec::new(Opts::new("shard_state", "Shard state by kind"), &["shard", "what"]).expect("valid");
        for c in [&requests, &errors, &counters] {
            registry.register(Box::new(c.clone())).expect("unique name");
        }
        registry.register(Box::new(gauges.clone())).expect("unique name");
        NodeMetrics {
            request_seconds: hist(
                "request_duration_seconds",
                "Client request latency inside the shard, by command",
                &["shard", "op"],
                seconds_buckets(),
            ),
            log_append_seconds: hist(
                "log_append_duration_seconds",
                "Raft log group commit (one durable write) latency",
                &["shard"],
                seconds_buckets(),
            ),
            log_batch_regions: hist(
                "log_batch_regions",
                "Regions whose entries share one group commit",
                &["shard"],
                exponential_buckets(1.0, 2.0, 12).expect("valid"),
            ),
            apply_seconds: hist(
                "apply_duration_seconds",
                "Applying one region's committed entries",
                &["shard"],
                seconds_buckets(),
            ),
            registry,
            requests,
            errors,
            counters,
            gauges,
        }
    }

    pub fn shard(&self, shard: u32) -> ShardMetrics {
        let s = shard.to_string();
        let counter = |event: &str| self.counters.with_label_values(&[s.as_str(), event]);
        let gauge = |what: &str| self.gauges.with_label_values(&[s.as_str(), what]);
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
            proposals: counter("raft_proposals"),
            log_appends: counter("log_syncs"),
            no_space_waits: counter("no_space_waits"),
            log_append_seconds: self.log_append_seconds.with_label_values(&[s.as_str()]),
            log_batch_regions: self.log_batch_regions.with_label_values(&[s.as_str()]),
            applied_entries: counter("applied_entries"),
            apply_seconds: self.apply_seconds.with_label_values(&[s.as_str()]),
            raft_messages_sent: counter("raft_messages_sent"),
            raft_messages_dropped: counter("raft_messages_dropped"),
            raft_messages_received: counter("raft_messages_received"),
            snapshots_sent: counter("snapshots_sent"),
            snapshots_received: counter("snapshots_received"),
            frames_rejected: counter("frames_rejected"),
            apply_lag_entries: gauge("apply_lag_entries"),
            regions: gauge("regions"),
            leaders: gauge("leaders"),
            connections: gauge("connections"),
            shard: s,
        }
    }

    pub fn render(&self) -> String {
        TextEncoder::new()
            .encode_to_string(&self.registry.gather())
            .unwrap_or_else(|e| format!("# encoding failed: {e}\n"))
    }
}

impl ShardMetrics {
    /// An error answer (rare: the label is looked up here).
    pub fn error(&self, code: u16) {
        self.errors
            .with_label_values(&[self.shard.as_str(), &code.to_string()])
            .inc();
    }
}

/// Serves `GET /metrics` on `addr` from its own thread until `stop` is called.
pub struct StatusServer {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
}

impl StatusServer {
    pub fn start(addr: &str, metrics: Arc<NodeMetrics>) -> Result<StatusServer> {
        let server = tiny_http::Server::http(addr).map_err(|e| Error::Bind {
            addr: addr.to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
        let server = Arc::new(server);
        let serving = Arc::clone(&server);
        let thread = std::thread::Builder::new()
            .name("status".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    let response = if request.url() == "/metrics" {
                        let header = tiny_http::Header::from_bytes("Content-Type", "text/plain; version=0.0.4")
                            .expect("valid header");
                        tiny_http::Response::from_string(metrics.render()).with_header(header)
                    } else {
                        tiny_http::Response::from_string("not found: try /metrics\n").with_status_code(404)
                    };
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

impl Drop for StatusServer {
    fn drop(&mut self) {
        self.server.unblock();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
