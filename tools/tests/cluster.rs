//! Multi-process tests: 3 nodes x 2 shards of the real `corekv-server` binary on loopback,
//! driven through `corekv-ctl`, the client library and raw frames.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use corekv_netio::frame::{self, FrameKind, HEADER_BYTES};
use corekv_netio::msg::{
    ArchivedPeerHello, ArchivedReply, ArchivedSnapshotAck, ArchivedWireError, Op, PeerHello, RaftBatch, RaftEnvelope,
    Reply, Request, SnapshotAck, SnapshotChunk, WireEpoch, WireError, WirePeer, WireRegion,
};
use corekv_netio::{Client, ClientConfig};
use corekv_tools::cluster::LocalCluster;

mod common;
use common::*;

// Proves the binaries work end to end: corekv-ctl's commands and exit codes, every client
// API call on every region, /metrics, and a clean stop on SIGTERM.
#[test]
fn ctl_and_client_serve_every_region() {
    let mut t = start();
    assert_eq!(t.ctl(&["raw", "put", "hello", "world"]).1, "OK\n");
    assert_eq!(t.ctl(&["raw", "get", "hello"]).1, "world\n");
    let (code, out, err) = t.ctl(&["raw", "get", "absent"]);
    assert_eq!((code, out.as_str()), (1, ""));
    assert!(err.contains("not found"), "{err}");
    t.ctl(&["raw", "put", "Zebra", "z"]);
    t.ctl(&["raw", "put", "apple", "a"]);
    assert_eq!(t.ctl(&["raw", "scan", "", ""]).1, "Zebra\tz\napple\ta\nhello\tworld\n");
    assert_eq!(
        t.ctl(&["raw", "scan", "", "", "--limit", "2", "--reverse"]).1,
        "hello\tworld\napple\ta\n"
    );
    assert_eq!(t.ctl(&["raw", "delete", "hello"]).1, "OK\n");
    assert_eq!(t.ctl(&["raw", "get", "hello"]).0, 1);
    // An empty or reversed range holds nothing.
    assert_eq!(t.ctl(&["raw", "scan", "z", "a"]), (0, String::new(), String::new()));
    assert_eq!(t.ctl(&["raw", "scan", "a", "a"]), (0, String::new(), String::new()));
    // One key limit, one answer, whatever the command.
    let huge = "k".repeat(100_000);
    let (put, get) = (t.ctl(&["raw", "put", &huge, "v"]), t.ctl(&["raw", "get", &huge]));
    assert_eq!((put.0, get.0), (1, 1));
    assert!(
        put.2.contains("key of 100000 bytes exceeds the maximum of 4096 bytes"),
        "{}",
        put.2
    );
    assert_eq!(put.2, get.2);
    let status = t.ctl(&["cluster", "status"]).1;
    assert!(
        status.contains("regions: 6") && !status.contains("leader none"),
        "{status}"
    );
    assert_eq!(status.matches(" up").count(), 3, "{status}");

    let regions: Vec<WireRegion> = t.info().regions.into_iter().map(|r| r.region).collect();
    assert_eq!(regions.len(), 6);
    t.with_client(move |c| async move {
        let keys: Vec<Vec<u8>> = regions.iter().map(|r| key_in(r, "key")).collect();
        for (i, k) in keys.iter().enumerate() {
            c.put(k, format!("v{i}").as_bytes()).await?;
        }
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(c.get(k).await?, Some(format!("v{i}").into_bytes()));
        }
        let got = c.batch_get(&keys).await?;
        assert!(got
            .iter()
            .enumerate()
            .all(|(i, v)| v.as_deref() == Some(format!("v{i}").as_bytes())));
        let pairs: Vec<(Vec<u8>, Vec<u8>)> = regions.iter().map(|r| (key_in(r, "pair"), b"p".to_vec())).collect();
        c.batch_put(&pairs).await?;
        let all = c.scan(b"", b"", 1000, false).await?;
        assert_eq!(all.len(), 12 + 2, "every region's keys plus Zebra and apple");
        assert!(all.windows(2).all(|w| w[0].0 < w[1].0));
        let back = c.scan(b"", b"", 5, true).await?;
        let mut expect: Vec<_> = all.iter().rev().take(5).cloned().collect();
        assert_eq!(back, std::mem::take(&mut expect));
        assert_eq!(
            c.compare_and_swap(&keys[0], Some(b"v0"), Some(b"w")).await?,
            (true, Some(b"v0".to_vec()))
        );
        assert_eq!(
            c.compare_and_swap(&keys[0], Some(b"v0"), None).await?,
            (false, Some(b"w".to_vec()))
        );
        c.delete(&keys[1]).await?;
        assert_eq!(c.get(&keys[1]).await?, None);
        // More rows in one region than a shard returns per scan request: the client follows
        // the shard's "more" until its own limit.
        let many: Vec<(Vec<u8>, Vec<u8>)> = (0..12_000u32)
            .map(|i| (format!("m{i:05}").into_bytes(), b"x".to_vec()))
            .collect();
        for chunk in many.chunks(4000) {
            c.batch_put(chunk).await?;
        }
        assert_eq!(c.scan(b"m", b"n", 20_000, false).await?.len(), 12_000);
        let tail = c.scan(b"m", b"n", 11_000, true).await?;
        assert_eq!((tail.len(), tail[0].0.as_slice()), (11_000, b"m11999".as_slice()));
        // A page ending exactly at the bound ends the scan (no empty range asked for).
        assert_eq!(c.scan(b"m", b"m09999\0", 20_000, false).await?.len(), 10_000);
        assert_eq!(c.scan(b"m02000", b"n", 20_000, true).await?.len(), 10_000);
        c.delete_range(b"", b"").await?;
        assert!(c.scan(b"", b"", 1000, false).await?.is_empty());
        Ok(())
    });

    let mut http = connect(&t.cluster.spec().status_addr(1));
    http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut metrics = String::new();
    http.read_to_string(&mut metrics).unwrap();
    for needle in [
        "corekv_requests_total{op=\"put\"",
        "corekv_request_duration_seconds_bucket",
        "corekv_raft_log_syncs_total{",
        "corekv_raft_log_batch_regions_bucket",
        "corekv_leaders{",
        "corekv_apply_lag_entries{",
        "corekv_build_info{commit=",
        "corekv_raft_log_durability_info{",
        "\nprocess_resident_memory_bytes{",
    ] {
        assert!(metrics.contains(needle), "/metrics lacks {needle}");
    }
    assert!(
        !metrics.contains("events_total") && !metrics.contains("shard_state"),
        "one metric per meaning"
    );
    let mut health = connect(&t.cluster.spec().status_addr(1));
    health.write_all(b"GET /health HTTP/1.0\r\n\r\n").unwrap();
    let mut answer = String::new();
    health.read_to_string(&mut answer).unwrap();
    assert!(answer.contains(" 200 OK\r\n") && answer.ends_with("ok\n"), "{answer}");
    assert!(t.cluster.stop().unwrap(), "every node exits cleanly on SIGTERM");
}

// Proves `corekv-ctl region transfer-leader` moves a region's leadership to the store it
// names while writes to the region keep succeeding (the client retries what the handover
// drops), and refuses, with why, a store without a replica and a region no node knows.
#[test]
fn ctl_hands_a_region_leadership_over_while_writes_go_on() {
    let t = start();
    let info = t.info();
    let r = info.regions[0].clone();
    let from = r.leader.unwrap().node;
    let to = r.region.peers.iter().map(|p| p.node).find(|&n| n != from).unwrap();
    let key = String::from_utf8(key_in(&r.region, "handover")).unwrap();
    let endpoints = t.endpoints().join(",");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut written = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || written < 5 {
                let (code, _, err) = ctl(&endpoints, &["raw", "put", &key, &written.to_string()]);
                assert_eq!(code, 0, "a write during the handover failed: {err}");
                written += 1;
            }
            written
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (id, store) = (r.region.id.to_string(), to.to_string());
    let (code, out, err) = t.ctl(&["region", "transfer-leader", "--id", &id, "--to-store", &store]);
    assert_eq!(code, 0, "{err}");
    assert!(
        out.starts_with(&format!("region {id}: led by store {to} (term ")),
        "{out}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    let key = String::from_utf8(key_in(&r.region, "handover")).unwrap();
    assert_eq!(t.ctl(&["raw", "get", &key]).1, format!("{}\n", written - 1));
    let (code, _, err) = t.ctl(&["region", "transfer-leader", "--id", &id, "--to-store", "9"]);
    assert_eq!(code, 1);
    assert!(err.contains("store 9 holds no replica of this region"), "{err}");
    let (code, _, err) = t.ctl(&["region", "transfer-leader", "--id", "999", "--to-store", "1"]);
    assert_eq!(code, 1);
    assert!(err.contains("no node knows region 999"), "{err}");
}

// Proves `corekv-ctl region split` splits a live region while a writer keeps writing keys on
// both sides of the split key: every write succeeds (the client follows the region's new
// epoch to the new region), every key reads back, both regions have leaders and are listed,
// a second split at the same key changes nothing, and after kill -9 of every node and a
// restart both regions come back with their data.
#[test]
fn ctl_splits_a_region_while_writes_go_on() {
    let mut t = start();
    let r = t.info().regions[2].region.clone();
    let (low, high) = (key_in(&r, "a"), key_in(&r, "z"));
    let split_key = String::from_utf8(key_in(&r, "m")).unwrap();
    let endpoints = t.endpoints().join(",");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        let keys = [low, high].map(|k| String::from_utf8(k).unwrap());
        std::thread::spawn(move || {
            let mut written = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || written.len() < 10 {
                let key = format!("{}{}", keys[written.len() % 2], written.len());
                let (code, _, err) = ctl(&endpoints, &["raw", "put", &key, "v"]);
                assert_eq!(code, 0, "a write across the split failed: {err}");
                written.push(key);
            }
            written
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (code, out, err) = t.ctl(&["region", "split", "--key", &split_key]);
    assert_eq!(code, 0, "{err}");
    let left = format!(
        "region {} [\"{}\", \"{split_key}\")",
        r.id,
        String::from_utf8_lossy(&r.start)
    );
    assert!(out.starts_with(&left) && out.contains(" and new region "), "{out}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    let again = t.ctl(&["region", "split", "--key", &split_key]);
    assert!(again.1.contains("already: nothing to split"), "{again:?}");
    let check = |t: &TestCluster| {
        let regions = t.info().regions;
        let new = regions
            .iter()
            .find(|i| i.region.start == split_key.as_bytes())
            .expect("the new region");
        assert_eq!(new.region.end, r.end);
        assert!(new.leader.is_some() && new.region.epoch.version == r.epoch.version + 1);
        for key in &written {
            assert_eq!(t.ctl(&["raw", "get", key]).1, "v\n", "{key}");
        }
    };
    check(&t);
    for node in 1..=3 {
        t.cluster.kill(node).unwrap();
    }
    for node in 1..=3 {
        t.cluster.restart(node).unwrap();
    }
    t.cluster.wait_for_leaders(Duration::from_secs(30)).unwrap();
    check(&t);
}

// Proves a client finds a region it has not cached through the placement service's directory,
// not by asking every node again: another client splits the region the first one cached; the
// first one's reverse scan over the old range (the region just below a bound) and its write
// to the split-off keys each find the new region with a directory lookup, and the only ask of
// the nodes' views is the one `connect` makes; and the old region's leader answers a request
// for such a key at the old epoch with EpochNotMatch and its current range.
#[test]
fn a_client_finds_a_split_off_region_through_the_directory() {
    let t = start();
    let r = t.info().regions[2].region.clone();
    let (low, high, split_key) = (key_in(&r, "a"), key_in(&r, "z"), key_in(&r, "m"));
    let cfg = t.cluster.spec().client_config().unwrap();
    let old = r.clone();
    let (stats, rows, new) = t.with_client(move |c| async move {
        c.put(&low, b"l").await?;
        c.put(&high, b"h").await?;
        let other = Client::connect(cfg).await?;
        other.split_region(&split_key).await?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let new = loop {
            let found = other.get_region(&high).await?.records;
            match found.first().map(|d| d.heartbeat.region.clone()) {
                Some(region) if region.id != old.id => break region,
                _ => anyhow::ensure!(Instant::now() < deadline, "the directory never listed the new region"),
            }
            glommio::timer::sleep(Duration::from_millis(50)).await;
        };
        let rows = c.scan(&old.start, &old.end, 10, true).await?;
        c.put(&high, b"h2").await?;
        anyhow::ensure!(c.get(&high).await? == Some(b"h2".to_vec()));
        Ok((c.stats(), rows, new))
    });
    assert_eq!(new.start, key_in(&r, "m"));
    let keys: Vec<&[u8]> = rows.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, [key_in(&r, "z"), key_in(&r, "a")]);
    assert_eq!(stats.refreshes, 1, "only connect asked the nodes: {stats:?}");
    assert!(stats.directory_lookups >= 1, "{stats:?}");
    // A key of the new region asked of the old one at its old epoch: the epoch is what is
    // wrong, and the answer carries the region as it is now.
    let info = t.info();
    let leader = (info.regions.iter().find(|i| i.region.id == r.id))
        .and_then(|i| i.leader)
        .unwrap();
    let ask = Request {
        region_id: r.id,
        epoch: r.epoch,
        op: Op::Get { key: key_in(&r, "z") },
    };
    match raw_call(&shard_addr(&info, leader.node, leader.shard), &ask) {
        Reply::Failed(WireError::EpochNotMatch { current: Some(now), .. }) => assert_eq!(now.end, key_in(&r, "m")),
        other => panic!("expected EpochNotMatch with the current region: {other:?}"),
    }
}

// Proves `corekv-ctl region add-peer` and `remove-peer` move a region's leader replica to the
// other shard of its node while a writer keeps writing (add a learner, promote it, demote the old
// replica, remove it: each printed with the roles), every write succeeds and reads back, the
// replica is served from its new shard after kill -9 and restart of its node, and that a
// replica where one is already, or a store without one, is refused with why; then `region move`
// takes it back in one command (a move to where it is, or a malformed place, refused).
#[test]
fn ctl_moves_a_replica_to_another_shard_while_writes_go_on() {
    let mut t = start();
    let info = t.info().regions[2].clone();
    let r = info.region.clone();
    let leader = info.leader.unwrap().node;
    // The leader's own replica: the learner is fed from the other shard of its own node, and
    // the leadership is handed away before the old replica goes.
    let moved = *r.peers.iter().find(|p| p.node == leader).unwrap();
    let other = 1 - moved.shard;
    let endpoints = t.endpoints().join(",");
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = std::sync::Arc::clone(&stop);
        let prefix = String::from_utf8(key_in(&r, "move")).unwrap();
        std::thread::spawn(move || {
            let mut written = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) || written.len() < 10 {
                let key = format!("{prefix}{}", written.len());
                let (code, _, err) = ctl(&endpoints, &["raw", "put", &key, "v"]);
                assert_eq!(code, 0, "a write during the move failed: {err}");
                written.push(key);
            }
            written
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    let (id, node, to_shard) = (r.id.to_string(), moved.node.to_string(), other.to_string());
    let add = [
        "region", "add-peer", "--id", &id, "--store", &node, "--shard", &to_shard,
    ];
    let (code, out, err) = t.ctl(&add);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("on node {node} shard {other} (voter)")), "{out}");
    let (code, out, err) = t.ctl(&[
        "region",
        "remove-peer",
        "--id",
        &id,
        "--store",
        &node,
        "--shard",
        &moved.shard.to_string(),
    ]);
    assert_eq!(code, 0, "{err}");
    assert!(
        !out.contains(&format!("on node {node} shard {} ", moved.shard)),
        "{out}"
    );
    assert_eq!(
        out.matches(" (voter)").count() + out.matches(" (leader)").count(),
        3,
        "{out}"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = writer.join().unwrap();
    let (code, _, err) = t.ctl(&add);
    assert_eq!(code, 1);
    assert!(err.contains("has a voter on store"), "{err}");
    let (code, _, err) = t.ctl(&["region", "remove-peer", "--id", &id, "--store", "9"]);
    assert_eq!(code, 1);
    assert!(err.contains("has no replica on store 9"), "{err}");
    t.cluster.kill(moved.node).unwrap();
    t.cluster.restart(moved.node).unwrap();
    t.cluster.wait_for_leaders(Duration::from_secs(30)).unwrap();
    let now = t
        .info()
        .regions
        .into_iter()
        .find(|i| i.region.id == r.id)
        .unwrap()
        .region;
    assert!(now.peers.iter().any(|p| p.node == moved.node && p.shard == other));
    assert!(!now.peers.iter().any(|p| p.id == moved.id));
    for key in &written {
        assert_eq!(t.ctl(&["raw", "get", key]).1, "v\n", "{key}");
    }
    // `region move` does both steps: back to the shard it came from.
    let (from, to) = (format!("{node}/{other}"), format!("{node}/{}", moved.shard));
    let (code, out, err) = t.ctl(&["region", "move", "--id", &id, "--from", &from, "--to", &to]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains(&format!("on node {node} shard {} ", moved.shard)), "{out}");
    assert!(!out.contains(&format!("on node {node} shard {other} ")), "{out}");
    let (code, _, err) = t.ctl(&["region", "move", "--id", &id, "--from", &to, "--to", &to]);
    assert_eq!(code, 1);
    assert!(err.contains("nothing to move"), "{err}");
    let (code, _, err) = t.ctl(&["region", "move", "--id", &id, "--from", "x", "--to", &to]);
    assert_eq!(code, 2, "a usage error");
    assert!(err.contains("expected STORE or STORE/SHARD"), "{err}");
}

// Proves regions split by size on their own: with `[split]` limits of 32 KiB, 100 KiB written
// into one region while the client writes on splits it into at least four parts (a region far
// over splits into several at once, and every part is measured again after its split, so the
// splitting goes on after the writes stop), every key reads back in one scan across them, and
// the split checker's counter says it did it.
#[test]
fn a_region_grown_past_its_limit_splits_on_its_own() {
    let t = start_with("[split]\nregion_max_bytes = 32768\ncheck_after_written_bytes = 8192\n");
    let r = t.info().regions[2].region.clone();
    let before = t.info().regions.len();
    let keys: Vec<Vec<u8>> = (0..1000).map(|i| key_in(&r, &format!("k{i:04}"))).collect();
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = keys.iter().map(|k| (k.clone(), vec![7u8; 100])).collect();
    t.with_client(move |c| async move {
        for batch in pairs.chunks(50) {
            c.batch_put(batch).await?;
        }
        Ok(())
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    // The nodes' views (a region split a moment ago may have no leader yet).
    let regions = |t: &TestCluster| t.with_client(|c| async move { Ok(c.regions()) });
    let inside = |t: &TestCluster| {
        let starts = regions(t).into_iter().map(|i| i.region.start);
        starts.filter(|s| r.contains(s) && *s != r.start).count()
    };
    // 100 KiB ends in parts under 32 KiB: four at least.
    while inside(&t) < 3 {
        assert!(Instant::now() < deadline, "no split within 30 s: {:?}", regions(&t));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(regions(&t).len() >= before + 3);
    let (start, end) = (r.start.clone(), r.end.clone());
    let rows = t.with_client(move |c| async move { Ok(c.scan(&start, &end, 2000, false).await?) });
    assert_eq!(rows.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(), keys);
    let splits: f64 = (1..=3).map(|n| metric(&t, n, "corekv_splits_by_size_total")).sum();
    assert!(splits >= 1.0, "{splits} splits counted");
}

// Proves a split cut short by kill -9 of the region leader's node (the split asked for, the
// node killed at once) leaves one consistent layout once the node is back: the region split or
// it did not, every node's own table comes to hold the same regions, the ranges tile the key
// space without overlap, and every write acknowledged before reads back.
#[test]
fn a_split_cut_short_by_kill_9_leaves_one_consistent_layout() {
    let mut t = start();
    let r = t.info().regions[3].clone();
    let keys: Vec<String> = ["a", "m", "z"]
        .iter()
        .map(|s| String::from_utf8(key_in(&r.region, s)).unwrap())
        .collect();
    for k in &keys {
        assert_eq!(t.ctl(&["raw", "put", k, "v"]).0, 0);
    }
    let leader = r.leader.unwrap().node;
    let endpoints = t.endpoints().join(",");
    let split_key = keys[1].clone();
    let asked = std::thread::spawn(move || {
        ctl(
            &endpoints,
            &["--timeout-ms", "3000", "region", "split", "--key", &split_key],
        )
    });
    std::thread::sleep(Duration::from_millis(5));
    t.cluster.kill(leader).unwrap();
    let _ = asked.join();
    t.cluster.restart(leader).unwrap();
    t.cluster.wait_for_leaders(Duration::from_secs(30)).unwrap();
    // Every node's own table (its replicas' live states) comes to hold the same regions.
    let table = |addr: &str| match raw_call(addr, &cluster_info_request()) {
        Reply::Cluster(info) => {
            let mut regions: Vec<WireRegion> = info.regions.into_iter().map(|i| i.region).collect();
            regions.sort_by(|a, b| a.start.cmp(&b.start));
            regions
        }
        other => panic!("{other:?}"),
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    let regions = loop {
        let tables: Vec<Vec<WireRegion>> = t.endpoints().iter().map(|a| table(a)).collect();
        if tables.windows(2).all(|w| w[0] == w[1]) {
            break tables[0].clone();
        }
        assert!(Instant::now() < deadline, "the nodes disagree: {tables:?}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(regions.first().unwrap().start.is_empty() && regions.last().unwrap().end.is_empty());
    for w in regions.windows(2) {
        assert_eq!(w[0].end, w[1].start, "the ranges tile the key space: {regions:?}");
    }
    for k in &keys {
        assert_eq!(t.ctl(&["raw", "get", k]).1, "v\n", "{k}");
    }
}

/// Puts one key in every region, retrying what fails, until all succeed; returns how long.
fn write_every_region(t: &TestCluster, regions: &[WireRegion], tag: &str, budget: Duration) -> Duration {
    let keys: Vec<Vec<u8>> = regions.iter().map(|r| key_in(r, tag)).collect();
    let started = Instant::now();
    t.with_client(move |c| async move {
        for k in keys {
            loop {
                match c.put(&k, b"after").await {
                    Ok(()) => break,
                    Err(e) if started.elapsed() < budget => {
                        let _ = e;
                        glommio::timer::sleep(Duration::from_millis(20)).await;
                    }
                    Err(e) => anyhow::bail!("no write to {k:?} within {budget:?}: {e}"),
                }
            }
        }
        Ok(())
    });
    started.elapsed()
}

/// Log GC keeps little, so a node that was down must catch up by snapshot.
const SMALL_LOG: &str = "[raft]\ngc_keep_entries = 8\ngc_slack_entries = 16\ngc_interval_ticks = 2\n";

// Proves kill -9 of a node leading regions: writes to every region resume within a few
// election timeouts, no acknowledged write is lost, and the restarted node catches up -- by
// snapshots over the network, as the log it missed was collected meanwhile -- so the cluster
// keeps serving every key with it as one of the two live replicas.
#[test]
fn killing_a_leader_node_loses_no_acknowledged_write() {
    let mut t = start_with(SMALL_LOG);
    let info = t.info();
    let regions: Vec<WireRegion> = info.regions.iter().map(|r| r.region.clone()).collect();
    let victim = info.regions[0].leader.expect("led").node;
    let acked = t.with_client(move |c| async move {
        let mut acked = Vec::new();
        for i in 0..300u32 {
            let k = format!("{}{i:04}", (b'!' + (i % 94) as u8) as char).into_bytes();
            c.put(&k, &i.to_le_bytes()).await?;
            acked.push((k, i.to_le_bytes().to_vec()));
        }
        Ok(acked)
    });
    t.cluster.kill(victim).unwrap();
    let took = write_every_region(&t, &regions, "after-kill", Duration::from_secs(20));
    eprintln!("writes to every region resumed {took:?} after kill -9 of node {victim}");
    // Election timeout is 10 ticks of 50 ms (randomized up to 2x): a few of them.
    assert!(took < Duration::from_secs(5), "writes resumed only after {took:?}");

    // Enough writes while it is down that every region's log moves past what it has.
    for round in 0..40 {
        write_every_region(&t, &regions, &format!("down-{round}"), Duration::from_secs(20));
    }
    t.cluster.restart(victim).unwrap();
    t.cluster.wait_for_leaders(LEADERS_WAIT).unwrap();
    // A liveness bound, generous: the whole suite's clusters share two cores.
    let deadline = Instant::now() + Duration::from_secs(60);
    while metric(&t, victim, "corekv_snapshots_received_total{") < regions.len() as f64 {
        assert!(
            Instant::now() < deadline,
            "the restarted node did not receive a snapshot per region; {}\n{}",
            corekv_tools::cluster::log_tail(&t.cluster.spec().log(victim), 20),
            (1..=NODES)
                .map(|n| format!("node {n} sent {}", metric(&t, n, "corekv_snapshots_sent_total{")))
                .collect::<Vec<_>>()
                .join(", ")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let other = (1..=NODES).find(|&n| n != victim).unwrap();
    t.cluster.kill(other).unwrap();
    write_every_region(&t, &regions, "after-restart", Duration::from_secs(20));
    t.with_client(move |c| async move {
        for (k, v) in acked {
            assert_eq!(c.get(&k).await?, Some(v), "acknowledged write of {k:?} lost");
        }
        Ok(())
    });
    t.cluster.restart(other).unwrap();
    t.cluster.wait_for_leaders(LEADERS_WAIT).unwrap();
}

/// Peak resident memory of process `pid` since it started, in bytes.
fn peak_rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmHWM:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

/// `n` bytes no compressor shrinks (a region's SST files are then as big as its data).
fn incompressible(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

// Proves a region is sent by snapshot from its files, never whole in memory: a follower down
// while 128 MiB of incompressible data go into one region catches up by snapshot, the leader's
// memory grows by less than half of that while it sends, the follower (restarted, so its log
// recovery counts too) peaks below half of it, and the follower then holds the region (a
// write commits with it as the only other replica).
#[test]
fn a_large_region_is_sent_by_snapshot_in_bounded_memory() {
    const VALUES: usize = 512;
    const VALUE_BYTES: usize = 256 << 10;
    let data = (VALUES * VALUE_BYTES) as u64;
    let mut t = start_with(SMALL_LOG);
    let r = t.info().regions[0].clone();
    let (leader, shard) = r.leader.map(|l| (l.node, l.shard)).expect("led");
    let victim = (1..=NODES).find(|&n| n != leader).unwrap();
    t.cluster.kill(victim).unwrap();
    let region = r.region.clone();
    t.with_client(move |c| async move {
        for batch in 0..VALUES / 8 {
            let pairs: Vec<(Vec<u8>, Vec<u8>)> = (batch * 8..batch * 8 + 8)
                .map(|i| {
                    (
                        key_in(&region, &format!("big{i:04}")),
                        incompressible(VALUE_BYTES, i as u64),
                    )
                })
                .collect();
            c.batch_put(&pairs).await?;
        }
        Ok(())
    });
    write_every_region(
        &t,
        std::slice::from_ref(&r.region),
        "after-big",
        Duration::from_secs(20),
    );
    // The follower must catch up by snapshot, not from the log: wait for the log's collection.
    let deadline = Instant::now() + Duration::from_secs(60);
    let log_entries = format!("corekv_raft_log_entries{{shard=\"{shard}\"}}");
    while metric(&t, leader, &log_entries) > 40.0 {
        assert!(Instant::now() < deadline, "the leader's log was not collected");
        std::thread::sleep(Duration::from_millis(50));
    }
    let sender = t.cluster.pid(leader).unwrap();
    let before = rss_bytes(sender);
    t.cluster.restart(victim).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sender_peak = before;
    while metric(&t, victim, "corekv_snapshots_received_total{") < 1.0 {
        assert!(Instant::now() < deadline, "no snapshot received");
        sender_peak = sender_peak.max(rss_bytes(sender));
        std::thread::sleep(Duration::from_millis(50));
    }
    let receiver_peak = peak_rss_bytes(t.cluster.pid(victim).unwrap());
    let grown = sender_peak.saturating_sub(before);
    eprintln!(
        "snapshot of {} MiB: sender grew {} MiB (from {} MiB), receiver peaked at {} MiB",
        data >> 20,
        grown >> 20,
        before >> 20,
        receiver_peak >> 20
    );
    assert!(grown < data / 2, "the sender grew {grown} bytes sending {data}");
    assert!(
        receiver_peak < data / 2,
        "the receiver peaked at {receiver_peak} bytes taking {data}"
    );
    let other = (1..=NODES).find(|&n| n != leader && n != victim).unwrap();
    t.cluster.kill(other).unwrap();
    write_every_region(
        &t,
        std::slice::from_ref(&r.region),
        "with-the-victim",
        Duration::from_secs(60),
    );
    t.cluster.restart(other).unwrap();
}

// Proves garbage, an oversized frame, a bad checksum and an invalid archive each get a typed
// error frame and a closed connection, while an open connection and new clients of the same
// shard keep being served.
#[test]
fn malformed_frames_close_only_that_connection() {
    let t = start();
    let addr = t.endpoints()[0].clone();
    let mut good = connect(&addr);
    assert!(matches!(call_on(&mut good, &cluster_info_request()), Reply::Cluster(_)));

    expect_rejected(&addr, &[0xAB; 64], 300);
    let valid = frame::encode(FrameKind::Request, 1, &cluster_info_request());
    let mut oversized = valid[..HEADER_BYTES].to_vec();
    oversized[16..20].copy_from_slice(&(1u32 << 30).to_le_bytes());
    expect_rejected(&addr, &oversized, 304);
    let mut bad_crc = valid.clone();
    *bad_crc.last_mut().unwrap() ^= 0xFF;
    expect_rejected(&addr, &bad_crc, 305);
    expect_rejected(&addr, &frame::frame_of(FrameKind::Request, 1, &[0x5A; 40]), 306);

    assert!(matches!(call_on(&mut good, &cluster_info_request()), Reply::Cluster(_)));
    assert_eq!(t.ctl(&["raw", "put", "still", "serving"]).1, "OK\n");
    assert_eq!(t.ctl(&["raw", "get", "still"]).1, "serving\n");
}

// Proves the per-connection bound on requests in flight: 64 pipelined writes on one
// connection with a bound of 4 get exactly one answer each, the excess a typed ServerBusy
// (nothing queued without bound), and the rest applied.
#[test]
fn pipelined_requests_beyond_the_bound_get_server_busy() {
    let t = start_with("[net]\ninflight_per_connection_max = 4\n");
    let info = t.info();
    let r = &info.regions[0];
    let leader = r.leader.expect("led");
    let mut s = connect(&shard_addr(&info, leader.node, leader.shard));
    let mut burst = Vec::new();
    for i in 0..64u64 {
        let request = Request {
            region_id: r.region.id,
            epoch: r.region.epoch,
            op: Op::Put {
                key: key_in(&r.region, &format!("p{i:02}")),
                value: b"v".to_vec(),
            },
        };
        burst.extend_from_slice(&frame::encode(FrameKind::Request, i, &request));
    }
    s.write_all(&burst).unwrap();
    let (mut done, mut busy, mut seen) = (0, 0, std::collections::BTreeSet::new());
    for _ in 0..64 {
        let (header, body) = read_frame(&mut s).expect("one answer per request");
        assert!(seen.insert(header.request_id), "answered twice: {}", header.request_id);
        match rkyv::deserialize::<Reply, rkyv::rancor::Error>(frame::access::<ArchivedReply>(&body).unwrap()).unwrap() {
            Reply::Done => done += 1,
            Reply::Failed(WireError::ServerBusy { .. }) => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    assert!(done >= 4 && busy > 0, "done {done}, busy {busy}");
}

// Proves each misrouting gets its typed answer with the hint to follow (WrongShard,
// NotLeader with the leader, EpochNotMatch with the current region, KeyNotInRegion,
// RegionNotFound), and that a client whose view has every region on the wrong shard follows
// the redirects and serves every region.
#[test]
fn misrouted_requests_get_typed_redirects_and_the_client_follows() {
    let t = start();
    let info = t.info();
    let r = &info.regions[0];
    let leader = r.leader.expect("led");
    let put = |region: &WireRegion, key: Vec<u8>| Request {
        region_id: region.id,
        epoch: region.epoch,
        op: Op::Put {
            key,
            value: b"v".to_vec(),
        },
    };
    let key = key_in(&r.region, "k");
    let wrong = shard_addr(&info, leader.node, 1 - leader.shard);
    match raw_call(&wrong, &put(&r.region, key.clone())) {
        Reply::Failed(WireError::WrongShard { region_id, shard }) => {
            assert_eq!((region_id, shard), (r.region.id, leader.shard))
        }
        other => panic!("expected WrongShard, got {other:?}"),
    }
    let follower = r.region.peers.iter().find(|p| p.node != leader.node).unwrap();
    match raw_call(
        &shard_addr(&info, follower.node, follower.shard),
        &put(&r.region, key.clone()),
    ) {
        Reply::Failed(WireError::NotLeader { leader: Some(hint), .. }) => assert_eq!(hint, leader),
        other => panic!("expected NotLeader with a hint, got {other:?}"),
    }
    let at_leader = shard_addr(&info, leader.node, leader.shard);
    let mut stale = r.region.clone();
    stale.epoch.version = 0;
    match raw_call(&at_leader, &put(&stale, key.clone())) {
        Reply::Failed(WireError::EpochNotMatch {
            current: Some(current), ..
        }) => assert_eq!(current, r.region),
        other => panic!("expected EpochNotMatch, got {other:?}"),
    }
    let outside = key_in(&info.regions[5].region, "k");
    assert!(matches!(
        raw_call(&at_leader, &put(&r.region, outside)),
        Reply::Failed(WireError::KeyNotInRegion { .. })
    ));
    let mut unknown = r.region.clone();
    unknown.id = 999;
    assert!(matches!(
        raw_call(&at_leader, &put(&unknown, key)),
        Reply::Failed(WireError::RegionNotFound { region_id: 999 })
    ));

    // A view with every replica on the other shard and no leaders known.
    let mut doctored = info.clone();
    for r in &mut doctored.regions {
        r.leader = None;
        for p in &mut r.region.peers {
            p.shard = 1 - p.shard;
        }
    }
    let regions: Vec<WireRegion> = info.regions.iter().map(|r| r.region.clone()).collect();
    let endpoints = t.endpoints();
    let stats = corekv_tools::on_executor(move || async move {
        let c = Client::with_view(ClientConfig::new(endpoints), vec![doctored]);
        for r in &regions {
            let k = key_in(r, "routed");
            c.put(&k, b"ok").await?;
            assert_eq!(c.get(&k).await?, Some(b"ok".to_vec()));
        }
        Ok(c.stats())
    })
    .unwrap();
    assert!(stats.wrong_shard >= 6, "every region was redirected once: {stats:?}");
}

// Proves each port takes only its own frames: raft traffic on a client port and a request on
// a peer port are refused with a typed error and a closed connection, a peer of another
// cluster is refused at its hello, and a peer of this cluster cannot speak for another node.
#[test]
fn ports_take_only_their_own_frames() {
    let t = start();
    let cluster_id = t.cluster.spec().cluster_id().unwrap();
    let raft = frame::encode(FrameKind::RaftBatch, 0, &RaftBatch { messages: Vec::new() });
    expect_rejected(&t.endpoints()[0], &raft, 308);
    let request = frame::encode(FrameKind::Request, 1, &cluster_info_request());
    expect_rejected(&peer_addr(&t, 1, 0), &request, 322);
    expect_rejected(&peer_addr(&t, 1, 0), &hello(cluster_id ^ 1, 2), 322);
    expect_rejected(&peer_addr(&t, 1, 0), &hello(cluster_id, 1), 322);
    expect_rejected(&peer_addr(&t, 1, 0), &hello(cluster_id, 77), 322);
    // Node 2 connects from its own peer address (127.0.0.1): a hello for it from 127.0.0.2 is not.
    let spoof = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    spoof
        .bind(&"127.0.0.2:0".parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    let target: std::net::SocketAddr = peer_addr(&t, 1, 0).parse().unwrap();
    spoof.connect(&target.into()).unwrap();
    let mut spoof: TcpStream = spoof.into();
    spoof.write_all(&hello(cluster_id, 2)).unwrap();
    let (header, _) = read_frame(&mut spoof).expect("a refusal");
    assert_eq!(
        header.kind,
        FrameKind::Error,
        "a hello from another address than the member's"
    );

    // A hello of this cluster is answered with the listener's own...
    let mut s = connect(&peer_addr(&t, 1, 1));
    s.write_all(&hello(cluster_id, 2)).unwrap();
    let (header, body) = read_frame(&mut s).expect("the listener's hello");
    assert_eq!(header.kind, FrameKind::PeerHello);
    let theirs =
        rkyv::deserialize::<PeerHello, rkyv::rancor::Error>(frame::access::<ArchivedPeerHello>(&body).unwrap())
            .unwrap();
    assert_eq!((theirs.cluster_id, theirs.node_id, theirs.shard), (cluster_id, 1, 1));
    // ...but a raft message on it that claims to come from node 3 closes it.
    let forged = RaftBatch {
        messages: vec![RaftEnvelope {
            region_id: 1,
            from: WirePeer {
                id: 3,
                node: 3,
                shard: 1,
                role: 0,
            },
            to: WirePeer {
                id: 1,
                node: 1,
                shard: 1,
                role: 0,
            },
            message: Vec::new(),
            epoch: WireEpoch::default(),
            check: 0,
        }],
    };
    s.write_all(&frame::encode(FrameKind::RaftBatch, 0, &forged)).unwrap();
    let (header, body) = read_frame(&mut s).expect("an error frame before the close");
    assert_eq!(header.kind, FrameKind::Error);
    let e = rkyv::deserialize::<WireError, rkyv::rancor::Error>(frame::access::<ArchivedWireError>(&body).unwrap())
        .unwrap();
    assert_eq!(e.code(), 306, "{e}");
    assert_eq!(t.ctl(&["raw", "put", "still", "serving"]).1, "OK\n");
}

// Proves a port in use is refused, never shared: a second server on a running node's client
// port exits at once naming the port and the flag, and a second local cluster on the same
// ports is never reported up (it sees that the nodes answering there are not its own).
#[test]
fn ports_in_use_are_refused_not_shared() {
    let t = start();
    let spec = t.cluster.spec().clone();
    let dir = tempfile::tempdir().unwrap();
    let spare = free_base_port();
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-server"))
        .args(["--node-id", "1", "--shards", "2", "--addr", &spec.endpoint(1)])
        .args(["--initial-cluster", &format!("1=127.0.0.1:{spare}")])
        .arg("--data-dir")
        .arg(dir.path().join("second"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "a second server started on {}", spec.endpoint(1));
    // Either shard's port may be the one found taken first; each is named with the flag.
    let named = (0..2).any(|i| stderr.contains(&format!("cannot listen on 127.0.0.1:{}", spec.port(1) + i)));
    assert!(
        named && stderr.contains("in use") && stderr.contains("--addr"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("os error").count(), 1, "the reason once: {stderr}");

    // Nodes that stay alive without serving: whatever answers on these ports is the first cluster.
    let sleeper = dir.path().join("sleeper.sh");
    std::fs::write(&sleeper, "#!/bin/sh\nexec sleep 60\n").unwrap();
    std::fs::set_permissions(&sleeper, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut second = spec_in(&dir.path().join("cluster"), spec.base_port, "");
    second.server = sleeper;
    let mut second = LocalCluster::start(second).unwrap();
    let err = second.wait_for_leaders(Duration::from_secs(3)).unwrap_err().to_string();
    assert!(err.contains("not node 1 of this cluster"), "{err}");
    assert_eq!(t.ctl(&["raw", "put", "first", "cluster"]).1, "OK\n");
}

// Proves bad addresses fail the start at once with the flag to change, no panic: a client
// port range past 65535, and a port that is not a number.
#[test]
fn bad_addresses_fail_the_start_with_the_flag_to_change() {
    let dir = tempfile::tempdir().unwrap();
    for (addr, needle) in [("127.0.0.1:65535", "past 65535"), ("127.0.0.1:65536", "invalid port")] {
        let out = Command::new(env!("CARGO_BIN_EXE_corekv-server"))
            .args(["--node-id", "1", "--shards", "2", "--addr", addr])
            .args(["--initial-cluster", "1=127.0.0.1:20999"])
            .arg("--data-dir")
            .arg(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{stderr}");
        assert!(
            stderr.contains("--addr") && stderr.contains(needle) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
}

// Proves the client keeps its deadline with a region's leader paused (SIGSTOP): a read moves
// on to the new leader while the old one is still stopped, and a write sent to the stopped
// leader is settled once it resumes and retried, within the deadline, instead of failing
// after one attempt.
#[test]
fn a_paused_leader_costs_time_not_the_operation() {
    let t = start();
    let info = t.info();
    let region = info.regions[0].clone();
    let victim = region.leader.expect("led").node;
    let key = String::from_utf8(key_in(&region.region, "paused")).unwrap();
    assert_eq!(t.ctl(&["raw", "put", &key, "before"]).1, "OK\n");
    let spawn = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_corekv-ctl"))
            .args(["--endpoints", &t.endpoints().join(","), "--timeout-ms", "30000"])
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    assert!(t.cluster.signal(victim, libc::SIGSTOP).unwrap());
    let mut get = spawn(&["raw", "get", &key]);
    let put = spawn(&["raw", "put", &key, "after"]);
    let paused = Instant::now();
    let read_back = loop {
        if let Some(status) = get.try_wait().unwrap() {
            break status;
        }
        assert!(
            paused.elapsed() < Duration::from_secs(8),
            "the read waited for the paused leader"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(read_back.success());
    std::thread::sleep(Duration::from_secs(8).saturating_sub(paused.elapsed()));
    assert!(t.cluster.signal(victim, libc::SIGCONT).unwrap());
    let put = put.wait_with_output().unwrap();
    assert!(put.status.success(), "{}", String::from_utf8_lossy(&put.stderr));
    assert_eq!(t.ctl(&["raw", "get", &key]).1, "after\n");
}

// Proves an endpoint that is not corekv is named as such, and that a read's failure never
// speaks of a write's outcome: a server that answers something else, one that never answers.
#[test]
fn errors_say_what_happened() {
    let talker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let talker_addr = talker.local_addr().unwrap().to_string();
    std::thread::spawn(move || {
        for mut s in talker.incoming().flatten() {
            let _ = s.write_all(b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n");
        }
    });
    let (code, _, err) = ctl(&talker_addr, &["--timeout-ms", "3000", "raw", "get", "k"]);
    assert_eq!(code, 1);
    assert!(err.contains("not a corekv") && !err.contains("write"), "{err}");
    let (code, _, err) = ctl(
        &silent.local_addr().unwrap().to_string(),
        &["--timeout-ms", "1000", "raw", "get", "k"],
    );
    assert_eq!(code, 1);
    assert!(err.contains("did not answer") && !err.contains("write"), "{err}");
}

// Proves mutual TLS end to end: a cluster with TLS on every port (nodes talk to each other
// through it: every region elects a leader and replicates) serves a client that presents a
// certificate of its CA; a plain client and one whose certificate another CA signed are refused
// in the handshake; a plain connection to a peer port is closed before any frame is read.
#[test]
fn a_tls_cluster_serves_its_clients_and_refuses_strangers() {
    let dir = tempfile::tempdir().unwrap();
    let mut spec = spec_in(dir.path(), free_base_port(), "");
    spec.tls = true;
    let mut cluster = LocalCluster::start(spec).unwrap();
    cluster.wait_for_leaders(LEADERS_WAIT).unwrap();
    let t = TestCluster { cluster, _dir: dir };
    assert_eq!(t.ctl(&["raw", "put", "secret", "s3"]).1, "OK\n");
    assert_eq!(t.ctl(&["raw", "get", "secret"]).1, "s3\n");
    let regions = t.with_client(|c| async move { Ok(c.regions()) });
    assert!(regions.len() == 6 && regions.iter().all(|r| r.leader.is_some()));

    let endpoints = t.endpoints().join(",");
    let (code, _, err) = ctl(&endpoints, &["--timeout-ms", "2000", "raw", "get", "secret"]);
    assert_eq!(code, 1, "a plain client is refused: {err}");
    let other = tempfile::tempdir().unwrap();
    let stranger = corekv_tools::certs::generate(other.path(), &[]).unwrap().client();
    let mut args = corekv_tools::certs::flags(&stranger);
    args.extend(["--timeout-ms", "2000", "raw", "get", "secret"].map(String::from));
    let (code, _, err) = ctl(&endpoints, &args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(
        code == 1 && err.contains("certificate"),
        "another CA's client is refused: {err}"
    );

    let mut s = connect(&peer_addr(&t, 1, 0));
    let cluster_id = t.cluster.spec().cluster_id().unwrap();
    let _ = s.write_all(&hello(cluster_id, 2));
    let mut rest = Vec::new();
    let _ = s.read_to_end(&mut rest);
    assert!(!rest.starts_with(&frame::MAGIC), "a plain peer is answered no frame");
    assert!(metric(&t, 1, "corekv_tls_handshakes_failed_total{") >= 1.0);
}

/// Ticks of node `node`'s shards that came more than 1.31072 s late (its histogram's count
/// less its bucket at that bound).
fn stalls(t: &TestCluster, node: u64) -> f64 {
    // One scrape for both figures: ticks counted between two scrapes would make it negative.
    let mut http = connect(&t.cluster.spec().status_addr(node));
    http.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").unwrap();
    let mut text = String::new();
    http.read_to_string(&mut text).unwrap();
    let sum = |matches: &dyn Fn(&str) -> bool| -> f64 {
        (text.lines())
            .filter(|l| matches(l))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let count = sum(&|l| l.starts_with("corekv_executor_tick_lateness_seconds_count{"));
    let within =
        sum(&|l| l.starts_with("corekv_executor_tick_lateness_seconds_bucket{") && l.contains("le=\"1.31072\""));
    assert!(count > 0.0, "ticks were counted");
    count - within
}

/// Resident memory of process `pid`, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

// Proves the reply budget of a connection: a client that pipelines 64 scans of 4 MiB each and
// reads nothing gets about its budget's worth of rows and `ServerBusy` for the rest, the node's
// memory stays bounded (64 x 4 MiB would be 256 MiB), and other clients are served meanwhile.
#[test]
fn a_connection_that_asks_much_and_reads_nothing_hits_its_reply_budget() {
    let t = start_with("[net]\nreply_bytes_per_connection_max = 4194304\n");
    let info = t.info();
    let r = info.regions[0].clone();
    let value = vec![b'v'; 256 << 10];
    let pairs: Vec<(Vec<u8>, Vec<u8>)> = (0..64)
        .map(|i| (key_in(&r.region, &format!("big{i:02}")), value.clone()))
        .collect();
    t.with_client(move |c| async move {
        for chunk in pairs.chunks(8) {
            c.batch_put(chunk).await?;
        }
        Ok(())
    });
    let leader = r.leader.expect("led");
    let pid = t.cluster.pid(leader.node).unwrap();
    let before = rss_bytes(pid);
    let mut hog = connect(&shard_addr(&info, leader.node, leader.shard));
    let mut burst = Vec::new();
    for i in 0..64u64 {
        let scan = Request {
            region_id: r.region.id,
            epoch: r.region.epoch,
            op: Op::Scan {
                start: key_in(&r.region, "big"),
                end: key_in(&r.region, "bih"),
                limit: 1000,
                reverse: false,
            },
        };
        burst.extend_from_slice(&frame::encode(FrameKind::Request, i, &scan));
    }
    hog.write_all(&burst).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let grown = rss_bytes(pid).saturating_sub(before);
    assert_eq!(t.ctl(&["raw", "put", "others", "served"]).1, "OK\n");
    assert_eq!(t.ctl(&["raw", "get", "others"]).1, "served\n");
    let (mut rows, mut busy) = (0, 0);
    for _ in 0..64 {
        let (_, body) = read_frame(&mut hog).expect("one answer per request");
        match rkyv::deserialize::<Reply, rkyv::rancor::Error>(frame::access::<ArchivedReply>(&body).unwrap()).unwrap() {
            Reply::Rows { rows: got, .. } => rows += got.len(),
            Reply::Failed(WireError::ServerBusy { .. }) => busy += 1,
            other => panic!("unexpected answer {other:?}"),
        }
    }
    eprintln!("rows {rows}, busy {busy}, node grew {} MiB", grown >> 20);
    // Big reads ran off the shards' threads: no tick of the node was late by more than the
    // 1.31072 s bucket (a scan of 4 MiB on the executor, 64 times, would be seconds).
    let late = stalls(&t, leader.node);
    assert_eq!(late, 0.0, "ticks late by more than 1.3 s");
    assert!(busy >= 48 && rows > 0, "rows {rows}, busy {busy}");
    assert!(grown < 64 << 20, "the node grew {} MiB", grown >> 20);
}

/// Sends a ClusterInfo request on `s`: `Ok` with a reply, `Err(code)` with an error frame.
fn cluster_info_on(s: &mut TcpStream) -> Result<(), u16> {
    s.write_all(&frame::encode(FrameKind::Request, 7, &cluster_info_request()))
        .map_err(|_| 0u16)?;
    let (header, body) = read_frame(s).ok_or(0u16)?;
    if header.kind == FrameKind::Error {
        let e = rkyv::deserialize::<WireError, rkyv::rancor::Error>(frame::access::<ArchivedWireError>(&body).unwrap())
            .unwrap();
        return Err(e.code());
    }
    Ok(())
}

// Proves the per-address connection limit: one address holding its maximum gets a typed
// ServerBusy (206) on its next connection, which is closed; another address is served.
#[test]
fn one_address_cannot_take_every_connection() {
    let t = start_with("[net]\nconnections_per_client_ip_max = 4\n");
    let addr = t.endpoints()[0].clone();
    let mut held = Vec::new();
    let refused = loop {
        assert!(held.len() <= 4, "more than 4 connections from one address were served");
        let mut s = connect(&addr);
        match cluster_info_on(&mut s) {
            Ok(()) => held.push(s),
            Err(code) => break code,
        }
    };
    assert_eq!(refused, 206);
    let other = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    other
        .bind(&"127.0.0.2:0".parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    other
        .connect(&addr.parse::<std::net::SocketAddr>().unwrap().into())
        .unwrap();
    let mut other: TcpStream = other.into();
    assert_eq!(cluster_info_on(&mut other), Ok(()), "another address is served");
}

/// Chunk `seq` of a snapshot stream (one file of 4 chunks of 1 KiB) from node 2's replica of
/// `region` to node 1's (shard 0).
fn chunk_frame(region: u64, seq: u32) -> Vec<u8> {
    let peer = |node| WirePeer {
        id: region * 1000 + node,
        node,
        shard: 0,
        role: 0,
    };
    let chunk = SnapshotChunk {
        header: RaftEnvelope {
            region_id: region,
            from: peer(2),
            to: peer(1),
            message: snapshot_message(region, (peer(2).id, peer(1).id), 5, &[4096]),
            epoch: WireEpoch::default(),
            check: 0,
        },
        seq,
        file: 0,
        offset: u64::from(seq) * 1024,
        bytes: vec![0; 1024],
    };
    frame::encode(FrameKind::SnapshotChunk, 0, &chunk)
}

// Proves snapshot streams are bounded: a stream for a replica the shard does not host, and a
// third stream on a connection allowed two, are refused with one SnapshotAck each (nothing
// buffered), later chunks of a refused stream get no answer, and the connection stays open.
#[test]
fn snapshot_streams_only_for_hosted_regions_and_within_bounds() {
    let t = start();
    let cluster_id = t.cluster.spec().cluster_id().unwrap();
    let hosted: Vec<u64> = t
        .info()
        .regions
        .iter()
        .filter(|r| r.region.peers[0].shard == 0)
        .map(|r| r.region.id)
        .collect();
    assert_eq!(hosted.len(), 3);
    let mut s = connect(&peer_addr(&t, 1, 0));
    s.write_all(&hello(cluster_id, 2)).unwrap();
    assert_eq!(read_frame(&mut s).unwrap().0.kind, FrameKind::PeerHello);
    let ack = |s: &mut TcpStream| {
        let (header, body) = read_frame(s).expect("an ack");
        assert_eq!(header.kind, FrameKind::SnapshotAck);
        rkyv::deserialize::<SnapshotAck, rkyv::rancor::Error>(frame::access::<ArchivedSnapshotAck>(&body).unwrap())
            .unwrap()
    };
    s.write_all(&chunk_frame(999, 0)).unwrap();
    s.write_all(&chunk_frame(999, 1)).unwrap();
    let refused = ack(&mut s);
    assert_eq!((refused.region_id, refused.accepted), (999, false));
    for region in &hosted {
        s.write_all(&chunk_frame(*region, 0)).unwrap();
    }
    let refused = ack(&mut s);
    assert_eq!(
        (refused.region_id, refused.accepted),
        (hosted[2], false),
        "the third stream"
    );
    s.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    assert!(
        read_frame(&mut s).is_none(),
        "nothing more: the two open streams wait for chunks"
    );
    assert_eq!(t.ctl(&["raw", "put", "still", "serving"]).1, "OK\n");
}

// Proves the ctl's commands and formats end to end: a value from stdin and from a file,
// binary keys and values both ways (--hex, and escaped output that a tab or newline cannot
// break), cas (swap, then a refusal naming the value found), batch-put / batch-get,
// delete-range, -w json, endpoint health / status (--cluster), completions, and
// COREKV_ENDPOINTS standing for --endpoints.
#[test]
fn ctl_commands_and_formats() {
    let t = start();
    let endpoints = t.endpoints().join(",");
    let ctl_in = |args: &[&str], stdin: &[u8]| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_corekv-ctl"))
            .env("COREKV_ENDPOINTS", &endpoints)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin).unwrap();
        let out = child.wait_with_output().unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(ctl_in(&["raw", "put", "tab\tkey", "-"], b"line1\nline2\x00").1, "OK\n");
    let (_, scanned, _) = ctl_in(&["raw", "scan", "t", "u"], b"");
    assert_eq!(scanned, "tab\\tkey\tline1\\nline2\\x00\n", "one line, nothing raw");
    assert_eq!(
        ctl_in(&["--hex", "raw", "get", &hex_of(b"tab\tkey")], b"").1,
        format!("{}\n", hex_of(b"line1\nline2\x00"))
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(file.path(), [0xffu8, 0, 1]).unwrap();
    assert_eq!(
        ctl_in(
            &["raw", "put", "f", "--value-file", &file.path().display().to_string()],
            b""
        )
        .1,
        "OK\n"
    );
    assert_eq!(ctl_in(&["--hex", "raw", "get", "66"], b"").1, "ff0001\n");

    assert_eq!(
        ctl_in(&["raw", "cas", "c", "--expect-absent", "--new", "1"], b"").1,
        "OK\n"
    );
    let (code, _, err) = ctl_in(&["raw", "cas", "c", "--expect-absent", "--new", "2"], b"");
    assert!(code == 1 && err.contains("not swapped: the value is 1"), "{err}");
    assert_eq!(
        ctl_in(&["raw", "cas", "c", "--expected", "1", "--delete"], b"").1,
        "OK\n"
    );

    assert_eq!(ctl_in(&["raw", "batch-put", "b1", "x", "b2", "y"], b"").1, "OK\n");
    assert_eq!(
        ctl_in(&["raw", "batch-get", "b1", "b2", "b3"], b"").1,
        "b1\tx\nb2\ty\nb3\t\n"
    );
    let (_, json, _) = ctl_in(&["-w", "json", "raw", "scan", "b", "c"], b"");
    let rows: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        rows,
        serde_json::json!([{"key": "b1", "value": "x"}, {"key": "b2", "value": "y"}])
    );
    assert_eq!(ctl_in(&["raw", "delete-range", "b", "c"], b"").1, "OK\n");
    assert_eq!(ctl_in(&["raw", "scan", "b", "c"], b"").1, "");

    let (code, health, _) = ctl_in(&["endpoint", "health", "--cluster"], b"");
    assert_eq!((code, health.matches("is healthy").count()), (0, 3), "{health}");
    let (_, status, _) = ctl_in(&["-w", "json", "endpoint", "status", "--cluster"], b"");
    let nodes: serde_json::Value = serde_json::from_str(&status).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 3);
    // Six user regions and the system region, each with a replica on all three nodes.
    assert!(
        nodes
            .iter()
            .all(|n| n["up"] == true && n["regions"] == 7 && n["version"].as_str().unwrap().contains('(')),
        "{status}"
    );
    let (_, cluster, _) = ctl_in(&["-w", "json", "cluster", "status"], b"");
    let cluster: serde_json::Value = serde_json::from_str(&cluster).unwrap();
    assert_eq!(cluster["regions"].as_array().unwrap().len(), 6);
    assert!(ctl_in(&["completion", "bash"], b"").1.contains("corekv-ctl"));
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
