//! What the multi-process tests share: a 3-node x 2-shard cluster of the real `corekv-server`
//! binary on loopback, and raw frames to and from its ports.
#![allow(dead_code)] // each test binary uses its own part

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use corekv_netio::frame::{self, Body, FrameKind, Header, HEADER_BYTES};
use corekv_netio::msg::{
    ArchivedReply, ArchivedWireError, ClusterInfo, Op, PeerHello, Reply, Request, WireError, WireRegion,
};
use corekv_netio::Client;
use corekv_raftstore::snapshot::{SnapshotFile, SnapshotMeta};
use corekv_tools::cluster::{ClusterSpec, LocalCluster, PORTS_PER_NODE};

pub const NODES: u64 = 3;
pub const SHARDS: u32 = 2;
pub const LEADERS_WAIT: Duration = Duration::from_secs(30);

pub struct TestCluster {
    pub cluster: LocalCluster,
    pub _dir: tempfile::TempDir,
}

/// A base port whose node port blocks are all free now (tests run in parallel: each start
/// takes the next block of a per-process sequence).
pub fn free_base_port() -> u16 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let span = u32::from(PORTS_PER_NODE) * NODES as u32;
    loop {
        let slot = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = 20000 + ((std::process::id() % 200) * 7 + slot * span) % 40000;
        let free = (0..span).all(|i| std::net::TcpListener::bind(("127.0.0.1", (base + i) as u16)).is_ok());
        if free {
            return base as u16;
        }
    }
}

pub fn start() -> TestCluster {
    start_with("")
}

/// Starts the cluster with `config` as every server's `--config` file (empty: none).
pub fn start_with(config: &str) -> TestCluster {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path(), free_base_port(), config);
    let mut cluster = LocalCluster::start(spec).unwrap();
    cluster.wait_for_leaders(LEADERS_WAIT).unwrap();
    TestCluster { cluster, _dir: dir }
}

/// Raft log segments of test clusters: a quarter of a server's, so that six shards opening
/// at once (each pre-writes its next segment) do not spend seconds writing zeros.
const TEST_LOG: &str = "[log]\nsegment_bytes = 16777216\n";

/// A 3 x 2 cluster spec in `dir` at `base_port`, with `config` (and `TEST_LOG`) as every
/// server's `--config`.
pub fn spec_in(dir: &std::path::Path, base_port: u16, config: &str) -> ClusterSpec {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join("corekv.toml");
    std::fs::write(&path, format!("{TEST_LOG}{config}")).unwrap();
    let extra_args = vec!["--config".to_string(), path.display().to_string()];
    ClusterSpec {
        nodes: NODES,
        shards: SHARDS,
        data_dir: dir.to_path_buf(),
        hosts: vec!["127.0.0.1".into()],
        base_port,
        server: PathBuf::from(env!("CARGO_BIN_EXE_corekv-server")),
        extra_args,
        tls: false,
    }
}

impl TestCluster {
    pub fn endpoints(&self) -> Vec<String> {
        self.cluster.spec().endpoints()
    }

    /// Runs `f` with a fresh client on its own executor.
    pub fn with_client<T, F, Fut>(&self, f: F) -> T
    where
        F: FnOnce(Client) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = anyhow::Result<T>> + 'static,
        T: Send + 'static,
    {
        let cfg = self.cluster.spec().client_config().unwrap();
        corekv_tools::on_executor(move || async move {
            let client = Client::connect(cfg).await?;
            f(client).await
        })
        .unwrap()
    }

    pub fn ctl(&self, args: &[&str]) -> (i32, String, String) {
        let certs = self.cluster.spec().certs().unwrap();
        let mut all: Vec<String> = certs
            .map(|c| corekv_tools::certs::flags(&c.client()))
            .unwrap_or_default();
        all.extend(args.iter().map(|a| a.to_string()));
        ctl(
            &self.endpoints().join(","),
            &all.iter().map(String::as_str).collect::<Vec<_>>(),
        )
    }

    /// The cluster as the nodes together see it: members from node 1, every region with
    /// the leader of the highest term any node reports.
    pub fn info(&self) -> ClusterInfo {
        let mut info = match raw_call(&self.endpoints()[0], &cluster_info_request()) {
            Reply::Cluster(info) => info,
            other => panic!("cluster info: {other:?}"),
        };
        info.regions = self.with_client(|c| async move { Ok(c.regions()) });
        assert!(info.regions.iter().all(|r| r.leader.is_some()), "{info:?}");
        info
    }
}

/// Runs corekv-ctl against `endpoints`: (exit code, stdout, stderr).
pub fn ctl(endpoints: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-ctl"))
        .arg("--endpoints")
        .arg(endpoints)
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A key inside `region`.
pub fn key_in(region: &WireRegion, suffix: &str) -> Vec<u8> {
    let mut k = if region.start.is_empty() {
        b"!".to_vec()
    } else {
        region.start.clone()
    };
    k.extend_from_slice(suffix.as_bytes());
    assert!(region.contains(&k));
    k
}

pub fn cluster_info_request() -> Request {
    Request {
        region_id: 0,
        epoch: Default::default(),
        op: Op::ClusterInfo,
    }
}

pub fn read_frame(s: &mut TcpStream) -> Option<(Header, Body)> {
    let mut head = [0u8; HEADER_BYTES];
    s.read_exact(&mut head).ok()?;
    let header = Header::decode(&head, u32::MAX).unwrap();
    let mut body = Body::with_capacity(header.body_bytes as usize);
    body.resize(header.body_bytes as usize, 0);
    s.read_exact(&mut body).unwrap();
    header.check_body(&body).unwrap();
    Some((header, body))
}

pub fn connect(addr: &str) -> TcpStream {
    let s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// One request over a connection; its reply.
pub fn call_on(s: &mut TcpStream, request: &Request) -> Reply {
    s.write_all(&frame::encode(FrameKind::Request, 42, request)).unwrap();
    let (header, body) = read_frame(s).expect("a reply");
    assert_eq!((header.kind, header.request_id), (FrameKind::Reply, 42));
    let archived = frame::access::<ArchivedReply>(&body).unwrap();
    rkyv::deserialize::<Reply, rkyv::rancor::Error>(archived).unwrap()
}

pub fn raw_call(addr: &str, request: &Request) -> Reply {
    call_on(&mut connect(addr), request)
}

/// Sends `bytes`, expects a typed error frame with `code`, then the connection closed.
pub fn expect_rejected(addr: &str, bytes: &[u8], code: u16) {
    let mut s = connect(addr);
    s.write_all(bytes).unwrap();
    let (header, body) = read_frame(&mut s).expect("an error frame before the close");
    assert_eq!(header.kind, FrameKind::Error);
    let e = rkyv::deserialize::<WireError, rkyv::rancor::Error>(frame::access::<ArchivedWireError>(&body).unwrap())
        .unwrap();
    assert_eq!(e.code(), code, "{e}");
    let mut rest = Vec::new();
    assert_eq!(
        s.read_to_end(&mut rest).unwrap(),
        0,
        "the connection is closed after the error"
    );
}

/// Where node `node`'s shard `shard` listens.
pub fn shard_addr(info: &ClusterInfo, node: u64, shard: u32) -> String {
    let (_, addr) = info.nodes.iter().find(|(id, _)| *id == node).unwrap();
    let (host, port) = addr.rsplit_once(':').unwrap();
    format!("{host}:{}", port.parse::<u16>().unwrap() + shard as u16)
}

/// A peer port of node `node`'s shard `shard`.
pub fn peer_addr(t: &TestCluster, node: u64, shard: u32) -> String {
    let (host, port) = t
        .cluster
        .spec()
        .peer_endpoint(node)
        .rsplit_once(':')
        .map(|(h, p)| (h.to_string(), p.parse::<u16>().unwrap()))
        .unwrap();
    format!("{host}:{}", port + shard as u16)
}

pub fn hello(cluster_id: u64, node_id: u64) -> Vec<u8> {
    let hello = PeerHello {
        cluster_id,
        node_id,
        shard: 0,
        client_addr: "127.0.0.1:1".into(),
    };
    frame::encode(FrameKind::PeerHello, 0, &hello)
}

/// A raft `MsgSnapshot` of `region` (ids `region * 1000 + node`) from peer `from` to peer `to`
/// at `index` whose metadata announces one file of each size of `sizes` (a CF each, in order),
/// in its protobuf encoding.
pub fn snapshot_message(region: u64, (from, to): (u64, u64), index: u64, sizes: &[u64]) -> Vec<u8> {
    use protobuf::Message as _;
    let peer = |id: u64| corekv_raftstore::PeerMeta::voter(id, id % 1000, 0);
    let state = corekv_raftstore::Region {
        id: region,
        start: Vec::new(),
        end: Vec::new(),
        epoch: corekv_raftstore::Epoch::default(),
        peers: vec![peer(from), peer(to)],
    };
    let files = sizes
        .iter()
        .enumerate()
        .map(|(cf, &bytes)| SnapshotFile {
            cf: cf as u8,
            bytes,
            crc32c: 0,
            keys: 1,
            digest: 0,
        })
        .collect();
    let mut msg = raft::eraftpb::Message::default();
    msg.set_msg_type(raft::eraftpb::MessageType::MsgSnapshot);
    (msg.from, msg.to, msg.term) = (from, to, 1);
    msg.mut_snapshot().mut_metadata().index = index;
    msg.mut_snapshot().mut_metadata().term = 1;
    let region = corekv_raftstore::apply::encode_region(&state);
    msg.mut_snapshot().data = SnapshotMeta {
        applied: index,
        region,
        files,
    }
    .encode()
    .into();
    msg.write_to_bytes().expect("in memory")
}

/// The value of a counter summed over a node's shards, from its /metrics.
pub fn metric(t: &TestCluster, node: u64, needle: &str) -> f64 {
    // Not serving yet (just restarted): nothing counted yet.
    let Ok(mut http) = TcpStream::connect(t.cluster.spec().status_addr(node)) else {
        return 0.0;
    };
    http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).unwrap();
    text.lines()
        .filter(|l| l.contains(needle))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
