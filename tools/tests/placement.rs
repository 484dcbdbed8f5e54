//! The placement service through real processes: the TSO across a kill -9 of the placement
//! leader's node, and the system region closed to clients.

use std::time::{Duration, Instant};

use corekv_netio::msg::{Op, Reply, Request, WireError};

mod common;
use common::*;

/// One `corekv-ctl tso` call: the timestamp it printed.
fn tso(endpoints: &str) -> u64 {
    let (code, out, err) = ctl(endpoints, &["tso"]);
    assert_eq!(code, 0, "tso failed: {err}");
    out.split('\t')
        .next()
        .unwrap()
        .trim()
        .parse()
        .expect("a timestamp first")
}

/// The node whose shard 0 runs the placement service, once one does.
fn placement_node(t: &TestCluster, nodes: &[u64]) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let leading: Vec<u64> = (nodes.iter().copied())
            .filter(|&n| metric(t, n, "corekv_placement_leader{shard=\"0\",") == 1.0)
            .collect();
        if let [one] = leading[..] {
            return one;
        }
        assert!(Instant::now() < deadline, "no single placement leader: {leading:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

// Proves timestamps strictly increase in real-time order across calls to different nodes,
// through kill -9 of the placement leader's node (a successor serves within a few election
// timeouts, past everything its predecessor handed out) and its restart.
#[test]
fn the_tso_keeps_increasing_across_a_placement_leader_kill() {
    let mut t = start();
    let all = t.endpoints().join(",");
    let mut last = 0;
    for endpoint in t.endpoints() {
        let ts = tso(&endpoint);
        assert!(ts > last, "{ts} after {last}");
        last = ts;
    }
    let leader = placement_node(&t, &[1, 2, 3]);
    t.cluster.kill(leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    let killed = Instant::now();
    let ts = tso(&all);
    assert!(ts > last, "{ts} after {last}, across the kill");
    eprintln!(
        "a new placement leader served {} ms after the kill",
        killed.elapsed().as_millis()
    );
    last = ts;
    assert_ne!(placement_node(&t, &others), leader);
    t.cluster.restart(leader).unwrap();
    for _ in 0..20 {
        let ts = tso(&all);
        assert!(ts > last, "{ts} after {last}, after the restart");
        last = ts;
    }
}

// Proves a client's request naming the system region is refused with a typed error and
// changes nothing: the TSO's window cannot be written from outside.
#[test]
fn clients_cannot_touch_the_system_region() {
    let t = start();
    let before = tso(&t.endpoints()[0]);
    let put = Request {
        region_id: corekv_raftstore::SYSTEM_REGION_ID,
        epoch: Default::default(),
        op: Op::Put {
            key: corekv_raftstore::keys::TSO_WINDOW_KEY.to_vec(),
            value: 0u64.to_be_bytes().to_vec(),
        },
    };
    for endpoint in t.endpoints() {
        match raw_call(&endpoint, &put) {
            Reply::Failed(WireError::InvalidArgument { .. }) => {}
            other => panic!("{endpoint}: {other:?}"),
        }
    }
    assert!(tso(&t.endpoints()[0]) > before);
}
