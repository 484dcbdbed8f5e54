//! The placement service through real processes: the TSO across a kill -9 of the placement
//! leader's node, the region directory and store registry through `corekv-ctl`, stale
//! heartbeats forged on the peer port, and the system region closed to clients.

use std::time::{Duration, Instant};

use std::io::Write;

use corekv_netio::frame::{self, FrameKind};
use corekv_netio::msg::{Heartbeat, Op, RegionHeartbeat, RegionInfo, Reply, Request, WireError, WireFlow};

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

/// `corekv-ctl -w json` output, parsed.
fn ctl_json(t: &TestCluster, args: &[&str]) -> serde_json::Value {
    let mut all = vec!["-w", "json"];
    all.extend_from_slice(args);
    let (code, out, err) = t.ctl(&all);
    assert_eq!(code, 0, "corekv-ctl {args:?}: {err}");
    serde_json::from_str(&out).unwrap()
}

/// Waits until the directory lists every user region with the leader and term the nodes
/// report (all on nodes other than `dead`), and is complete.
fn wait_for_directory(t: &TestCluster, dead: Option<u64>) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let truth: Vec<RegionInfo> = t.with_client(|c| async move { Ok(c.regions()) });
        let listed = ctl_json(t, &["region", "list"]);
        let matches = |r: &RegionInfo| {
            let Some(leader) = r.leader.filter(|l| Some(l.node) != dead) else {
                return false;
            };
            listed["regions"].as_array().unwrap().iter().any(|l| {
                let leader_peer = l["peers"].as_array().unwrap().iter().find(|p| p["leader"] == true);
                l["id"] == r.region.id
                    && l["term"] == r.term
                    && leader_peer.is_some_and(|p| p["node"] == leader.node && p["shard"] == leader.shard)
            })
        };
        let user = truth.iter().filter(|r| r.region.id != 1);
        if listed["complete"] == true && user.clone().count() > 0 && user.clone().all(matches) {
            return;
        }
        assert!(Instant::now() < deadline, "the directory did not converge: {listed:#}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A heartbeat for `region` as its leader's node would send it, but from term `term`.
fn forged_heartbeat(region: &RegionInfo, term: u64) -> Vec<u8> {
    let heartbeat = Heartbeat {
        regions: vec![RegionHeartbeat {
            region: region.region.clone(),
            leader: region.leader.unwrap(),
            term,
            approximate_bytes: 1 << 40,
            approximate_keys: 1 << 30,
            flow: WireFlow::default(),
        }],
        store: None,
    };
    frame::encode(FrameKind::Heartbeat, 0, &heartbeat)
}

// Proves the placement service's directory through corekv-ctl: `store list` shows the three
// nodes and `region list` every region with the leader and term the nodes report; a stale
// heartbeat (an older term, sent on the peer port as the region leader's node) is refused and
// changes nothing; after kill -9 of the placement leader's node the successor rebuilds the
// directory from heartbeats, keeps listing the killed store from the durable registry, and
// lists it as reporting again once it restarts.
#[test]
fn the_directory_lists_stores_and_regions_across_a_placement_leader_kill() {
    let mut t = start_with("[placement]\nheartbeat_interval_ms = 300\n");
    let info = t.info();
    let user: Vec<RegionInfo> = info.regions.iter().filter(|r| r.region.id != 1).cloned().collect();
    wait_for_directory(&t, None);
    let stores = ctl_json(&t, &["store", "list"]);
    let ids: Vec<u64> = stores["stores"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_u64().unwrap())
        .collect();
    assert_eq!(ids, [1, 2, 3], "{stores:#}");

    let leader = placement_node(&t, &[1, 2, 3]);
    // A region led on another node: its heartbeats come to the placement leader by the peer port.
    let victim = user.iter().find(|r| r.leader.unwrap().node != leader).unwrap();
    let refused = metric(&t, leader, "corekv_placement_heartbeats_refused_total");
    let mut peer = std::net::TcpStream::connect(peer_addr(&t, leader, 0)).unwrap();
    let mut bytes = hello(info.cluster_id, victim.leader.unwrap().node);
    bytes.extend_from_slice(&forged_heartbeat(victim, victim.term - 1));
    peer.write_all(&bytes).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(&t, leader, "corekv_placement_heartbeats_refused_total") <= refused {
        assert!(Instant::now() < deadline, "the stale heartbeat was not refused");
        std::thread::sleep(Duration::from_millis(50));
    }
    let shown = ctl_json(&t, &["region", "show", "--id", &victim.region.id.to_string()]);
    assert_eq!(shown["regions"][0]["term"], victim.term, "{shown:#}");
    assert!(
        shown["regions"][0]["approximate_bytes"].as_u64().unwrap() < 1 << 40,
        "{shown:#}"
    );

    t.cluster.kill(leader).unwrap();
    let others: Vec<u64> = (1..=3).filter(|&n| n != leader).collect();
    placement_node(&t, &others);
    wait_for_directory(&t, Some(leader));
    let stores = ctl_json(&t, &["store", "list"]);
    let killed = stores["stores"].as_array().unwrap().iter().find(|s| s["id"] == leader);
    assert!(
        killed.is_some_and(|s| s["regions"] == 0),
        "the killed store is listed: {stores:#}"
    );
    t.cluster.restart(leader).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stores = ctl_json(&t, &["store", "list"]);
        let back = stores["stores"].as_array().unwrap().iter().find(|s| s["id"] == leader);
        if back.is_some_and(|s| s["regions"].as_u64() > Some(0)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the restarted store never reported: {stores:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
