//! Stores that join a running cluster (`corekv-server --join`), through real processes.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

const CONFIG: &str = "[placement]\nheartbeat_interval_ms = 300\n";

/// A server started with `--join endpoints` on the ports of `base` (client +0, peer +40,
/// metrics +80), data in `dir`; killed when dropped.
struct Joiner {
    child: Child,
}

impl Drop for Joiner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn join_args(endpoints: &str, base: u16, dir: &std::path::Path) -> Vec<String> {
    let config = dir.with_extension("toml");
    std::fs::write(&config, CONFIG).unwrap();
    [
        "--join".to_string(),
        endpoints.to_string(),
        "--addr".into(),
        format!("127.0.0.1:{base}"),
        "--peer-addr".into(),
        format!("127.0.0.1:{}", base + 40),
        "--status-addr".into(),
        format!("127.0.0.1:{}", base + 80),
        "--data-dir".into(),
        dir.display().to_string(),
        "--config".into(),
        config.display().to_string(),
    ]
    .to_vec()
}

fn server(args: &[String]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_corekv-server"));
    cmd.args(args).stdout(Stdio::null());
    cmd
}

/// Starts a joining server and waits until the directory lists it; returns it and its id.
fn join(t: &TestCluster, args: &[String], client_addr: &str) -> (Joiner, u64) {
    let joiner = Joiner {
        child: server(args).stderr(Stdio::null()).spawn().unwrap(),
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out, _) = t.ctl(&["-w", "json", "store", "list"]);
        if code == 0 {
            let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
            let me = listed["stores"]
                .as_array()
                .unwrap()
                .iter()
                // Reported, not only registered: the node runs.
                .find(|s| s["address"] == client_addr && !s["last_heartbeat_ms_ago"].is_null());
            if let Some(id) = me.filter(|s| s["shards"] == 2).and_then(|s| s["id"].as_u64()) {
                return (joiner, id);
            }
        }
        assert!(
            Instant::now() < deadline,
            "the joined store never showed up in store list: {out}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Runs a server that must fail at start: its stderr.
fn refused(args: &[String]) -> String {
    let out = server(args).stderr(Stdio::piped()).output().unwrap();
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .unwrap_or_default()
        .to_string()
}

fn store_ids(t: &TestCluster) -> Vec<u64> {
    let (code, out, err) = t.ctl(&["-w", "json", "store", "list"]);
    assert_eq!(code, 0, "{err}");
    let listed: serde_json::Value = serde_json::from_str(&out).unwrap();
    listed["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect()
}

// Proves a fourth node joins a running 3-node cluster with --join: it gets a store id from the
// cluster's allocator (above every bootstrap id), shows up in `store list` with its address
// and reports itself; restarted, it keeps its id (no second store appears); a region gains a
// voting replica on it (`region add-peer`); and the mistakes are
// refused with one line: --join to an address that is not a corekv node, a data dir that is a
// bootstrap member's, and another store's address; as are registrations a client makes up (an
// id the allocator never gave, a registered store's id with other addresses, a peer address of
// another host, a name instead of an IP).
#[test]
fn a_fourth_node_joins_and_keeps_its_store_id() {
    let mut t = start_with(CONFIG);
    let endpoints = t.endpoints().join(",");
    let base = free_base_port();
    let dir = t._dir.path().join("node-4");
    let args = join_args(&endpoints, base, &dir);
    let client_addr = format!("127.0.0.1:{base}");
    let (joiner, id) = join(&t, &args, &client_addr);
    assert!(id >= 1 << 32, "a joined store's id comes from the allocator: {id}");
    assert_eq!(store_ids(&t), [1, 2, 3, id]);
    let (code, out, err) = t.ctl(&["endpoint", "health", "--cluster"]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        out.matches("is healthy").count(),
        4,
        "the joined node is checked too: {out}"
    );
    let (code, out, err) = t.ctl(&["cluster", "status"]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with(&id.to_string()) && l.contains(" Up ")),
        "{out}"
    );

    drop(joiner);
    let (_joiner, again) = join(&t, &args, &client_addr);
    assert_eq!(again, id, "a restart keeps the store id");
    assert_eq!(store_ids(&t), [1, 2, 3, id]);
    // A region gains a replica on the joined store: the other nodes dial it at its registered
    // address, and it catches up and votes.
    let r = t.info().regions[0].region.clone();
    let add = [
        "region",
        "add-peer",
        "--id",
        &r.id.to_string(),
        "--store",
        &id.to_string(),
    ];
    let (code, out, err) = t.ctl(&add);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("on node {id} shard 0 (voter)")), "{out}");
    let key = String::from_utf8(key_in(&r, "joined")).unwrap();
    assert_eq!(t.ctl(&["raw", "put", &key, "v"]).1, "OK\n");

    // Not corekv: node 1's metrics port answers HTTP, not frames.
    let other = t._dir.path().join("node-5");
    let not_corekv = join_args(&t.cluster.spec().status_addr(1), base + 300, &other);
    let why = refused(&not_corekv);
    assert!(why.contains("--join") && why.contains("corekv"), "{why}");
    // A bootstrap member's data dir.
    assert!(t.cluster.stop_node(2).unwrap());
    let members_dir = t.cluster.spec().node_dir(2);
    let why = refused(&join_args(&endpoints, base + 300, &members_dir));
    assert!(why.contains("node 2 of cluster"), "{why}");
    t.cluster.restart(2).unwrap();
    // Another store's addresses.
    let why = refused(&join_args(&endpoints, base, &other));
    assert!(why.contains("another store has this client or peer address"), "{why}");
    // Registrations a client makes up: each refused, in words.
    let put = |id: u64, peer: &'static str| {
        let client_addr = format!("127.0.0.1:{}", base + 600 + (id % 50) as u16);
        t.with_client(move |c| async move {
            Ok(c.put_store(id, &client_addr, peer, 2)
                .await
                .err()
                .map(|e| e.to_string()))
        })
    };
    let cases = [
        (1 << 40, "127.0.0.1:1", "comes from the id allocator"),
        (1, "127.0.0.1:2", "registered with other addresses"),
        (id + 1, "10.9.9.9:1", "from its own peer address's IP"),
        (id + 1, "localhost:1", "as IP:port"),
    ];
    for (id, peer, expected) in cases {
        let why = put(id, peer).unwrap_or_else(|| panic!("store {id} at {peer} was registered"));
        assert!(why.contains(expected), "store {id} at {peer}: {why}");
    }
    assert_eq!(store_ids(&t), [1, 2, 3, id]);
}

/// `corekv-ctl` with `args`, which must succeed: its stdout.
fn ctl_ok(t: &TestCluster, args: &[&str]) -> String {
    let (code, out, err) = t.ctl(args);
    assert_eq!(code, 0, "corekv-ctl {args:?}: {err}");
    out
}

// Proves two joined stores talk to each other: neither holds a replica of the system region,
// and the fifth joined after the fourth did, so the fourth learns it from the placement
// service's directory. A region led from the fourth gains a voter on the fifth (its learner
// catches up from the fourth's messages before it is promoted), and a write through that
// leader succeeds.
#[test]
fn joined_stores_learn_each_other() {
    let t = start_with(CONFIG);
    let endpoints = t.endpoints().join(",");
    let base = free_base_port();
    let mut joined = Vec::new();
    for (n, port) in [(4, base), (5, base + 2)] {
        let dir = t._dir.path().join(format!("node-{n}"));
        let client_addr = format!("127.0.0.1:{port}");
        joined.push(join(&t, &join_args(&endpoints, port, &dir), &client_addr));
    }
    let (fourth, fifth) = (joined[0].1.to_string(), joined[1].1.to_string());
    let r = t.info().regions[0].region.clone();
    let id = r.id.to_string();
    ctl_ok(&t, &["region", "add-peer", "--id", &id, "--store", &fourth]);
    let led = ctl_ok(&t, &["region", "transfer-leader", "--id", &id, "--to-store", &fourth]);
    assert!(
        led.starts_with(&format!("region {id}: led by store {fourth} ")),
        "{led}"
    );
    let out = ctl_ok(&t, &["region", "add-peer", "--id", &id, "--store", &fifth]);
    assert!(out.contains(&format!("on node {fifth} shard 0 (voter)")), "{out}");
    let key = String::from_utf8(key_in(&r, "fifth")).unwrap();
    assert_eq!(ctl_ok(&t, &["raw", "put", &key, "v"]), "OK\n");
}
