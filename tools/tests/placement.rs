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
// timeouts, past everything its predecessor handed out), its restart, and a restart of every
// node.
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
    // The whole cluster down and up again: the TSO resumes past its saved window.
    for node in 1..=3 {
        assert!(t.cluster.stop_node(node).unwrap(), "node {node} stops cleanly");
    }
    for node in 1..=3 {
        t.cluster.restart(node).unwrap();
    }
    let ts = tso(&all);
    assert!(ts > last, "{ts} after {last}, after restarting every node");
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

// Proves concurrent callers of one client share requests and still each get timestamps of
// their own: 64 callers x 20 calls, every timestamp distinct, each caller's increasing, fewer
// requests sent than calls made, and the servers' metric counts every timestamp handed out.
#[test]
fn concurrent_callers_share_requests_and_get_distinct_timestamps() {
    let t = start();
    let (mut all, stats) = t.with_client(|client| async move {
        let client = std::rc::Rc::new(client);
        client.get_ts(1).await?; // finds the placement leader
        let before = client.stats();
        let callers: Vec<_> = (0..64)
            .map(|_| {
                let client = std::rc::Rc::clone(&client);
                glommio::spawn_local(async move {
                    let mut mine = Vec::new();
                    for _ in 0..20 {
                        mine.push(client.get_ts(1).await?);
                    }
                    anyhow::ensure!(mine.windows(2).all(|w| w[0] < w[1]), "a caller's went back");
                    Ok::<_, anyhow::Error>(mine)
                })
            })
            .collect();
        let mut all = Vec::new();
        for caller in callers {
            all.extend(caller.await?);
        }
        let after = client.stats();
        Ok((
            all,
            (after.operations - before.operations, after.attempts - before.attempts),
        ))
    });
    let (calls, requests) = stats;
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), 64 * 20, "timestamps handed out twice");
    assert_eq!(calls, 64 * 20);
    assert!(requests < calls / 2, "{requests} requests for {calls} calls");
    let handed_out: f64 = (1..=3)
        .map(|n| metric(&t, n, "corekv_tso_request_timestamps_sum{"))
        .sum();
    assert!(handed_out >= calls as f64, "the metric counted {handed_out} timestamps");
    eprintln!("{calls} calls in {requests} requests");
}
