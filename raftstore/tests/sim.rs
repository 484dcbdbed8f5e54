//! Multi-Raft in the deterministic simulator: 3 nodes x 2 shards, several regions per shard,
//! real raft-rs, real log and KV engines.

use corekv_raftstore::linearizability::{check, CheckResult, OpKind};
use corekv_raftstore::placement::history::check_timestamps;
use corekv_raftstore::sim::{run, NetConfig, Sim, SimConfig};
use corekv_raftstore::{Error, PeerChange, PeerRole, Region, SYSTEM_REGION_ID, TRANSFER_LAG_ENTRIES_MAX};
use rand_chacha::rand_core::{RngCore, SeedableRng};

/// A key inside region `region_id` (regions split the first byte evenly).
fn key_in(sim: &Sim, region_id: u64, suffix: &str) -> Vec<u8> {
    let region = sim.regions().iter().find(|r| r.id == region_id).unwrap();
    let mut k = if region.start.is_empty() {
        vec![0x01]
    } else {
        region.start.clone()
    };
    k.extend_from_slice(suffix.as_bytes());
    k
}

/// Ticks until a node other than `old` leads `region`, within three election timeouts.
async fn await_new_leader(sim: &mut Sim, region: u64, old: u64) {
    let from = sim.now();
    let limit = 3 * 2 * sim.config().raft.election_tick as u64;
    while sim.leader(region).is_none_or(|l| l == old) {
        sim.tick().await;
        assert!(
            sim.now() - from < limit,
            "seed {}: no new leader within 3 election timeouts",
            sim.seed()
        );
    }
}

/// Crashes a follower of `region`, writes enough entries (keys `{prefix}{i}`, value `[i; 50]`)
/// for the live replicas to compact their logs past it, lets GC run, and restarts it.
/// Returns (leader, follower, entries written, leader's applied index).
async fn leave_follower_behind_gc(sim: &mut Sim, region: u64, prefix: &str) -> (u64, u64, u64, u64) {
    let leader = sim.leader(region).unwrap();
    let follower = (1..=3).find(|&n| n != leader).unwrap();
    sim.crash(follower);
    let entries = sim.config().gc_keep_entries + sim.config().gc_slack_entries + 10;
    for i in 0..entries {
        let key = key_in(sim, region, &format!("{prefix}{i}"));
        sim.submit(
            1,
            key,
            OpKind::Put {
                value: vec![i as u8; 50],
            },
        );
        sim.run_until_done().await;
    }
    sim.ticks(2).await; // GC runs on the live nodes
    let applied = sim.applied(leader, region).unwrap();
    sim.restart(follower).await;
    (leader, follower, entries, applied)
}

/// Ticks until `node`'s replica of `region` has applied `applied`, within 100 ticks.
async fn await_caught_up(sim: &mut Sim, node: u64, region: u64, applied: u64) {
    let from = sim.now();
    while sim.applied(node, region) < Some(applied) {
        sim.tick().await;
        assert!(
            sim.now() - from < 100,
            "seed {}: node {node} did not catch up",
            sim.seed()
        );
    }
}

/// Reads every key through the cluster, asserts the value it must hold, and checks that the
/// whole history so far is linearizable.
async fn assert_reads(sim: &mut Sim, expected: &[(Vec<u8>, Vec<u8>)]) {
    for (key, _) in expected {
        sim.submit(2, key.clone(), OpKind::Get { observed: None });
    }
    sim.run_until_done().await;
    let history = sim.history();
    for (key, v) in expected {
        assert_eq!(
            value(&history, key),
            Some(Some(v.clone())),
            "seed {}: key {key:?}",
            sim.seed()
        );
    }
    assert_eq!(check(&history), CheckResult::Linearizable);
}

fn value(history: &[corekv_raftstore::linearizability::Op], key: &[u8]) -> Option<Option<Vec<u8>>> {
    history
        .iter()
        .rev()
        .find_map(|op| match (&op.kind, op.key == key, op.return_ns) {
            (OpKind::Get { observed }, true, Some(_)) => Some(observed.clone()),
            _ => None,
        })
}

// Proves every region elects a leader, leaders are spread, and writes then reads work on all.
#[test]
fn writes_and_reads_on_every_region() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(1)).await;
        sim.ticks(5).await;
        let leaders: std::collections::BTreeSet<u64> = sim
            .regions()
            .iter()
            .map(|r| sim.leader(r.id).expect("every region has a leader"))
            .collect();
        assert!(leaders.len() >= 2, "leaders spread over nodes: {leaders:?}");
        let ids: Vec<u64> = sim.regions().iter().map(|r| r.id).collect();
        for &id in &ids {
            let k = key_in(&sim, id, "k");
            sim.submit(
                1,
                k.clone(),
                OpKind::Put {
                    value: format!("v{id}").into_bytes(),
                },
            );
        }
        sim.run_until_done().await;
        for &id in &ids {
            sim.submit(2, key_in(&sim, id, "k"), OpKind::Get { observed: None });
        }
        sim.run_until_done().await;
        let history = sim.history();
        assert!(
            history.iter().all(|op| op.return_ns.is_some()),
            "no timeouts on a healthy cluster"
        );
        assert!(
            sim.read_stats().lease > 0,
            "a healthy leader serves reads from its lease: {:?}",
            sim.read_stats()
        );
        for &id in &ids {
            assert_eq!(
                value(&history, &key_in(&sim, id, "k")),
                Some(Some(format!("v{id}").into_bytes()))
            );
        }
        assert_eq!(check(&history), CheckResult::Linearizable);
    });
}

// Proves a crashed leader is replaced within a few election timeouts, no acknowledged write
// is lost, and the restarted node catches up.
#[test]
fn leader_crash_loses_no_acknowledged_write() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(2)).await;
        sim.ticks(5).await;
        let region = sim.regions()[0].id;
        for i in 0..20 {
            sim.submit(
                1,
                key_in(&sim, region, &format!("a{i}")),
                OpKind::Put { value: vec![i as u8] },
            );
        }
        sim.run_until_done().await;
        assert!(sim.history().iter().all(|op| op.return_ns.is_some()));
        let old = sim.leader(region).unwrap();
        sim.crash(old);
        await_new_leader(&mut sim, region, old).await;
        for i in 20..30 {
            sim.submit(
                1,
                key_in(&sim, region, &format!("a{i}")),
                OpKind::Put { value: vec![i as u8] },
            );
        }
        sim.run_until_done().await;
        sim.restart(old).await;
        sim.ticks(30).await;
        let leader = sim.leader(region).unwrap();
        assert_eq!(
            sim.applied(old, region),
            sim.applied(leader, region),
            "the restarted node caught up"
        );
        let expected: Vec<_> = (0..30u8)
            .map(|i| (key_in(&sim, region, &format!("a{i}")), vec![i]))
            .collect();
        assert_reads(&mut sim, &expected).await;
    });
}

// Proves a leader transfer hands the region over within an election timeout with no write
// lost; that the old leader serves no read from its lease once the handover started (the
// transferee campaigns without waiting out leases, so only a ReadIndex round is safe then);
// and that a transfer to a store without a replica, or to one cut off and behind, is refused.
#[test]
fn leader_transfer_hands_over_and_voids_the_old_lease() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(5)).await;
        sim.ticks(5).await;
        let region = sim.regions()[1].id;
        let key = key_in(&sim, region, "t");
        sim.submit(
            1,
            key.clone(),
            OpKind::Put {
                value: b"before".to_vec(),
            },
        );
        sim.run_until_done().await;
        let old = sim.leader(region).unwrap();
        let to = (1..=3).find(|&n| n != old).unwrap();
        let refused = |r: Result<(), Error>| matches!(r, Err(Error::AdminRefused { .. }));
        assert!(refused(sim.transfer_leader(region, 9)), "no replica on store 9");
        let lease_reads = sim.read_stats().lease;
        sim.transfer_leader(region, to).unwrap();
        sim.submit_to(old, 2, key.clone(), OpKind::Get { observed: None });
        sim.tick().await;
        assert_eq!(sim.read_stats().lease, lease_reads, "a lease read during the handover");
        sim.ticks(sim.config().raft.election_tick as u64).await;
        assert_eq!(sim.leader(region), Some(to), "seed {}", sim.seed());
        sim.submit(
            3,
            key.clone(),
            OpKind::Put {
                value: b"after".to_vec(),
            },
        );
        assert_reads(&mut sim, &[(key.clone(), b"after".to_vec())]).await;

        let behind = (1..=3).find(|&n| n != old && n != to).unwrap();
        sim.isolate(behind);
        for i in 0..TRANSFER_LAG_ENTRIES_MAX + 10 {
            sim.submit(
                1,
                key_in(&sim, region, &format!("b{i}")),
                OpKind::Put { value: vec![1] },
            );
        }
        sim.run_until_done().await;
        assert!(
            refused(sim.transfer_leader(region, behind)),
            "a cut-off target far behind"
        );
        sim.heal();
        let applied = sim.applied(to, region).unwrap();
        await_caught_up(&mut sim, behind, region, applied).await;
        sim.ticks(2).await;
        sim.transfer_leader(region, behind).unwrap();
        sim.ticks(sim.config().raft.election_tick as u64).await;
        assert_eq!(sim.leader(region), Some(behind), "seed {}", sim.seed());
        assert_reads(&mut sim, &[(key, b"after".to_vec())]).await;
    });
}

/// Ids from the placement service's allocator (as the node asks them before a split).
async fn alloc_ids(sim: &mut Sim, count: u64) -> u64 {
    sim.submit_alloc_ids(50, count);
    sim.run_until_done().await;
    sim.id_history().last().and_then(|o| o.first).expect("ids handed out")
}

// Proves a region splits while clients write to both of its halves, with a follower down
// across the split: afterwards every replica has both regions (the old one narrowed, the new
// one led, both one version up), the restarted follower (whose peers compacted their logs past
// the split) catches up on both by snapshot, every write reads
// back from the region that holds it now, and the history is linearizable. A split key that
// is not strictly inside the region is refused before anything is proposed.
#[test]
fn a_region_splits_while_clients_write() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(6)).await;
        sim.ticks(5).await;
        let parent = sim.regions()[1].clone();
        let split_key = key_in(&sim, parent.id, "m");
        let mut expected = Vec::new();
        // Keys below and above the split key (the parent's start stays: `key_in` holds).
        let mut write = |sim: &mut Sim, i: u64| {
            for side in ["a", "z"] {
                let k = key_in(sim, parent.id, &format!("{side}{i}"));
                sim.submit(i % 3, k.clone(), OpKind::Put { value: vec![i as u8] });
                expected.push((k, vec![i as u8]));
            }
        };
        for i in 0..10 {
            write(&mut sim, i);
        }
        sim.run_until_done().await;
        let leader = sim.leader(parent.id).unwrap();
        let follower = (1..=3).find(|&n| n != leader).unwrap();
        sim.crash(follower);
        assert!(matches!(
            sim.split(parent.id, &parent.start, 900),
            Err(Error::InvalidArgument(_))
        ));
        let first = alloc_ids(&mut sim, 4).await;
        sim.split(parent.id, &split_key, first).unwrap();
        // The new region's leader campaigns at once, and the follower that applies the split
        // after it votes then (its early vote request held): a leader within a few ticks,
        // not an election timeout.
        let from = sim.now();
        while sim.leader(first).is_none() {
            sim.tick().await;
            assert!(
                sim.now() - from < 4,
                "seed {}: no leader of the new region yet",
                sim.seed()
            );
        }
        // Enough writes on both sides for both regions' logs to be compacted past the split.
        for i in 10..40 {
            write(&mut sim, i);
        }
        sim.run_until_done().await;
        let installed = sim.snapshots_installed();
        sim.restart(follower).await;
        sim.ticks(3 * sim.config().raft.election_tick as u64).await;
        // Its log compacted past the split, the follower learns both regions by snapshot (the
        // new one's replica started by its leader's messages).
        assert!(sim.snapshots_installed() >= installed + 2, "seed {}", sim.seed());

        let find = |sim: &Sim, id: u64| sim.regions().iter().find(|r| r.id == id).cloned().unwrap();
        let (left, right) = (find(&sim, parent.id), find(&sim, first));
        assert_eq!(
            (left.start.clone(), left.end.clone()),
            (parent.start.clone(), split_key.clone())
        );
        assert_eq!(
            (right.start.clone(), right.end.clone()),
            (split_key.clone(), parent.end.clone())
        );
        assert_eq!(left.epoch.version, parent.epoch.version + 1);
        assert_eq!(right.epoch, left.epoch);
        assert!(sim.leader(first).is_some(), "the new region has a leader");
        for id in [parent.id, first] {
            let done = sim.applied(sim.leader(id).unwrap(), id);
            assert_eq!(
                sim.applied(follower, id),
                done,
                "seed {}: region {id} on the follower",
                sim.seed()
            );
        }
        assert_reads(&mut sim, &expected).await;
    });
}

/// Ticks (at most 200) until the leader's state of `region` passes `done`; that state.
async fn await_region(sim: &mut Sim, region: u64, done: impl Fn(&Region) -> bool) -> Region {
    let from = sim.now();
    loop {
        if let Some((r, _)) = sim.leader_region(region).filter(|(r, _)| done(r)) {
            return r;
        }
        assert!(
            sim.now() - from < 200,
            "seed {}: region {region} never got there: {:?}",
            sim.seed(),
            sim.leader_region(region)
        );
        sim.tick().await;
    }
}

/// Proposes `change` to `region` again every tick while its leader refuses it for now (a
/// learner catching up, a change pending), at most 100 ticks.
async fn change_until_taken(sim: &mut Sim, region: u64, change: PeerChange) {
    let from = sim.now();
    while let Err(e) = sim.change_peers(region, vec![change]) {
        assert!(matches!(e, Error::AdminRefused { .. } | Error::NotLeader { .. }), "{e}");
        assert!(
            sim.now() - from < 100,
            "seed {}: {change:?} refused for good: {e}",
            sim.seed()
        );
        sim.tick().await;
    }
}

fn role_of(region: &Region, id: u64) -> Option<PeerRole> {
    region.peer(id).map(|p| p.role)
}

// Proves a replica moves to the other shard of its node while clients write (PD's steps: add
// a learner there, promote it through a joint membership left on its own, demote the old
// replica the same way, remove it): the leader refuses unsafe steps with why, the removed
// replica is destroyed (its data cleared, and a restart does not bring it back), and every
// write reads back, linearizable.
#[test]
fn a_replica_moves_to_another_shard_while_clients_write() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(8)).await;
        sim.ticks(5).await;
        let region = sim.regions()[0].clone();
        let (_, leader_peer) = sim.leader_region(region.id).unwrap();
        let leader = sim.leader(region.id).unwrap();
        let node = (1..=3).find(|&n| n != leader).unwrap();
        let old = *region.peers.iter().find(|p| p.node == node).unwrap();
        let other = 1 - old.shard;
        let mut expected = Vec::new();
        let mut write = |sim: &mut Sim, i: u64| {
            let k = key_in(sim, region.id, &format!("k{i}"));
            sim.submit(i % 3, k.clone(), OpKind::Put { value: vec![i as u8] });
            expected.push((k, vec![i as u8]));
        };
        for i in 0..10 {
            write(&mut sim, i);
        }
        sim.run_until_done().await;
        let refused = |r: Result<(), Error>| matches!(r, Err(Error::InvalidArgument(_) | Error::AdminRefused { .. }));
        assert!(
            refused(sim.change_peers(region.id, vec![PeerChange::Remove { id: old.id }])),
            "a voter is demoted first"
        );
        assert!(
            refused(sim.change_peers(region.id, vec![PeerChange::Demote { id: leader_peer }])),
            "not the leader"
        );
        assert!(
            refused(sim.change_peers(region.id, vec![PeerChange::Promote { id: old.id }])),
            "not a learner"
        );
        let new = alloc_ids(&mut sim, 1).await;
        let add = PeerChange::AddLearner {
            id: new,
            node,
            shard: other,
        };
        change_until_taken(&mut sim, region.id, add).await;
        for i in 10..20 {
            write(&mut sim, i);
        }
        await_region(&mut sim, region.id, |r| role_of(r, new) == Some(PeerRole::Learner)).await;
        change_until_taken(&mut sim, region.id, PeerChange::Promote { id: new }).await;
        let promoted = await_region(&mut sim, region.id, |r| role_of(r, new) == Some(PeerRole::Voter)).await;
        assert!(!promoted.is_joint() && promoted.epoch.conf_ver == region.epoch.conf_ver + 3);
        change_until_taken(&mut sim, region.id, PeerChange::Demote { id: old.id }).await;
        await_region(&mut sim, region.id, |r| role_of(r, old.id) == Some(PeerRole::Learner)).await;
        change_until_taken(&mut sim, region.id, PeerChange::Remove { id: old.id }).await;
        for i in 20..30 {
            write(&mut sim, i);
        }
        let moved = await_region(&mut sim, region.id, |r| r.peer(old.id).is_none()).await;
        sim.ticks(5).await;
        assert!(
            !sim.hosts((node, old.shard), region.id),
            "seed {}: the old replica is destroyed",
            sim.seed()
        );
        assert_eq!(sim.data_keys((node, old.shard), &moved), 0, "its data is cleared");
        assert!(
            sim.data_keys((node, other), &moved) >= 20,
            "the new replica holds the region's data"
        );
        sim.crash(node);
        sim.restart(node).await;
        sim.ticks(3).await;
        assert!(
            !sim.hosts((node, old.shard), region.id),
            "a restart does not bring it back"
        );
        assert!(sim.hosts((node, other), region.id));
        assert_reads(&mut sim, &expected).await;
    });
}

// Proves a voter removed while cut off from the others learns it once it can ask (it has
// heard from no leader for long) and destroys itself, without disturbing the region: no new
// term, the same leader, writes served throughout.
#[test]
fn a_replica_removed_while_cut_off_goes_without_disturbing_the_region() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(9)).await;
        sim.ticks(5).await;
        let region = sim.regions()[1].clone();
        let leader = sim.leader(region.id).unwrap();
        let cut = (1..=3).find(|&n| n != leader).unwrap();
        let victim = *region.peers.iter().find(|p| p.node == cut).unwrap();
        sim.isolate(cut);
        change_until_taken(&mut sim, region.id, PeerChange::Demote { id: victim.id }).await;
        await_region(&mut sim, region.id, |r| {
            role_of(r, victim.id) == Some(PeerRole::Learner)
        })
        .await;
        change_until_taken(&mut sim, region.id, PeerChange::Remove { id: victim.id }).await;
        let removed = await_region(&mut sim, region.id, |r| r.peer(victim.id).is_none()).await;
        assert_eq!(removed.peers.len(), 2);
        assert!(
            sim.hosts((cut, victim.shard), region.id),
            "cut off, it does not know yet"
        );
        let term = sim.leader_term(region.id);
        sim.heal();
        let timeout = sim.config().raft.election_tick as u64;
        let from = sim.now();
        while sim.hosts((cut, victim.shard), region.id) {
            assert!(
                sim.now() - from < 30 * timeout,
                "seed {}: the removed replica stays",
                sim.seed()
            );
            sim.tick().await;
        }
        assert_eq!(sim.leader(region.id), Some(leader), "the same leader");
        assert_eq!(sim.leader_term(region.id), term, "no new term");
        let k = key_in(&sim, region.id, "after");
        sim.submit(1, k.clone(), OpKind::Put { value: vec![7] });
        sim.run_until_done().await;
        assert_reads(&mut sim, &[(k, vec![7])]).await;
    });
}

// Proves a joint membership left behind by a crash of the leader (promotion applied, its
// automatic leave not) is finished by the next leader on its own.
#[test]
fn a_joint_membership_left_by_a_crash_is_finished() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(10)).await;
        sim.ticks(5).await;
        let region = sim.regions()[0].clone();
        let node = sim.leader(region.id).unwrap();
        let other = 1 - region.peers[0].shard;
        let new = alloc_ids(&mut sim, 1).await;
        change_until_taken(
            &mut sim,
            region.id,
            PeerChange::AddLearner {
                id: new,
                node: 1 + node % 3,
                shard: other,
            },
        )
        .await;
        await_region(&mut sim, region.id, |r| role_of(r, new) == Some(PeerRole::Learner)).await;
        sim.ticks(3).await;
        change_until_taken(&mut sim, region.id, PeerChange::Promote { id: new }).await;
        // The leader crashes as soon as some replica has entered the joint membership.
        let from = sim.now();
        while !(1..=3).any(|n| (0..2).any(|s| sim.region_on((n, s), region.id).is_some_and(|r| r.is_joint()))) {
            assert!(sim.now() - from < 50, "seed {}: never joint", sim.seed());
            sim.tick().await;
        }
        let leader = sim.leader(region.id).unwrap();
        sim.crash(leader);
        let done = await_region(&mut sim, region.id, |r| !r.is_joint()).await;
        assert_eq!(role_of(&done, new), Some(PeerRole::Voter));
        sim.restart(leader).await;
        sim.ticks(2 * sim.config().raft.election_tick as u64).await;
        for n in 1..=3 {
            for s in 0..2 {
                let r = sim.region_on((n, s), region.id);
                assert!(
                    r.is_none_or(|r| !r.is_joint()),
                    "seed {}: ({n}, {s}) still joint",
                    sim.seed()
                );
            }
        }
    });
}

// Proves an old leader cut off from the majority stops serving reads once its lease has run
// out: a read sent to it then is never answered with data (ReadIndex needs a quorum), while
// the majority elects a new leader and serves the newer value.
#[test]
fn isolated_leader_stops_serving_reads() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(3)).await;
        sim.ticks(5).await;
        let region = sim.regions()[1].id;
        let key = key_in(&sim, region, "r");
        sim.submit(1, key.clone(), OpKind::Put { value: b"old".to_vec() });
        sim.run_until_done().await;
        let old = sim.leader(region).unwrap();
        sim.isolate(old);
        // Inside its lease the old leader may still answer: nobody else can lead yet.
        sim.ticks(sim.config().raft.lease_ticks as u64 + 1).await;
        sim.submit_to(old, 2, key.clone(), OpKind::Get { observed: None });
        await_new_leader(&mut sim, region, old).await;
        sim.submit(3, key.clone(), OpKind::Put { value: b"new".to_vec() });
        sim.run_until_done().await;
        sim.submit(4, key.clone(), OpKind::Get { observed: None });
        sim.run_until_done().await;
        let history = sim.history();
        let stale = history.iter().find(|op| op.client == 2).unwrap();
        assert_eq!(
            stale.return_ns,
            None,
            "seed {}: the isolated leader answered a read: {stale:?}",
            sim.seed()
        );
        assert_eq!(value(&history, &key), Some(Some(b"new".to_vec())));
        assert_eq!(check(&history), CheckResult::Linearizable);
    });
}

// Proves a follower that was down while the others compacted their logs catches up through
// a snapshot (SST files from the leader's KV engine, sent in bounded chunks, checksummed,
// ingested) and then serves every acknowledged write.
#[test]
fn follower_restarted_after_log_gc_catches_up_by_snapshot() {
    run(|| async {
        let mut cfg = SimConfig::new(4);
        cfg.snapshot_chunk_bytes = 512; // several chunks per snapshot
        let mut sim = Sim::new(cfg).await;
        sim.ticks(5).await;
        let region = sim.regions()[2].id;
        let (leader, follower, entries, applied) = leave_follower_behind_gc(&mut sim, region, "s").await;
        await_caught_up(&mut sim, follower, region, applied).await;
        assert!(
            sim.snapshots_installed() >= 1,
            "it caught up through a snapshot, not the log"
        );
        assert!(sim.snapshot_chunks_sent() > 1, "the snapshot went in bounded chunks");
        // The follower serves the data: make it leader by cutting the old leader off.
        sim.isolate(leader);
        await_new_leader(&mut sim, region, leader).await;
        let expected: Vec<_> = (0..entries)
            .map(|i| (key_in(&sim, region, &format!("s{i}")), vec![i as u8; 50]))
            .collect();
        assert_reads(&mut sim, &expected).await;
    });
}

// Proves the entry cache's byte budget: with a few KiB per region, the leader keeps only its
// unapplied and newest entries in memory, and a follower that was down catches up through
// the log (entries read back from the log engine, no snapshot), holding every write.
#[test]
fn follower_catches_up_from_entries_the_leader_evicted() {
    run(|| async {
        let mut cfg = SimConfig::new(5);
        cfg.raft.entry_cache_bytes_max = 4 << 10;
        cfg.gc_keep_entries = 10_000; // the log keeps everything: no snapshot is needed
        let mut sim = Sim::new(cfg).await;
        sim.ticks(5).await;
        let region = sim.regions()[1].id;
        let leader = sim.leader(region).unwrap();
        let follower = (1..=3).find(|&n| n != leader).unwrap();
        sim.crash(follower);
        let writes: Vec<(Vec<u8>, Vec<u8>)> = (0..80u8)
            .map(|i| (key_in(&sim, region, &format!("c{i}")), vec![i; 400]))
            .collect();
        for (key, value) in &writes {
            sim.submit(1, key.clone(), OpKind::Put { value: value.clone() });
            sim.run_until_done().await;
        }
        let applied = sim.applied(leader, region).unwrap();
        assert!(
            sim.entry_cache_bytes(leader) < 32 << 10,
            "{} bytes cached",
            sim.entry_cache_bytes(leader)
        );
        sim.restart(follower).await;
        await_caught_up(&mut sim, follower, region, applied).await;
        assert_eq!(sim.snapshots_installed(), 0, "caught up through the log");
        assert!(
            sim.timing().entries_fetched >= 60,
            "{} entries read back",
            sim.timing().entries_fetched
        );
        sim.isolate(leader);
        await_new_leader(&mut sim, region, leader).await;
        assert_reads(&mut sim, &writes).await;
    });
}

// Proves a snapshot stream that breaks is reported to raft, which sends another once the
// network lets it through: the follower does not stall.
#[test]
fn lost_snapshot_is_sent_again() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(5)).await;
        sim.ticks(5).await;
        let region = sim.regions()[3].id;
        sim.net_mut().snapshot_chunk_drop_ppm = 1_000_000; // every stream breaks
        let (_, follower, _, applied) = leave_follower_behind_gc(&mut sim, region, "l").await;
        sim.ticks(30).await;
        assert_eq!(sim.snapshots_installed(), 0);
        assert!(sim.snapshot_chunks_sent() > 0, "snapshots were attempted");
        sim.net_mut().snapshot_chunk_drop_ppm = 0;
        await_caught_up(&mut sim, follower, region, applied).await;
        assert!(sim.snapshots_installed() >= 1);
    });
}

/// One randomized run: clients on a small key set under message loss, delay, duplication,
/// partitions and crashes; returns the checker's verdict.
/// What a chaos run recorded: the KV history's verdict and size, the timestamp history's.
struct ChaosOutcome {
    verdict: CheckResult,
    ops: usize,
    timestamps: Result<(), String>,
    ts_answered: usize,
    ids: Result<(), String>,
    ids_answered: usize,
    /// Regions the splits made.
    splits: usize,
    /// Membership changes applied (steps of replicas moving between shards).
    memberships: u64,
}

/// One step of a random walk of `region_id`'s membership, as moves between the shards of the
/// nodes make it: a learner is promoted or removed; else, with 4 voters, one that shares its
/// node with another (else any but the leader) is demoted; else a learner is added on a (node,
/// shard) without a replica. Refused (nothing happens) where the leader's checks say no.
fn membership_step(sim: &mut Sim, rng: &mut rand_chacha::ChaCha8Rng, region_id: u64, next_id: &mut u64) {
    let Some((region, leader)) = sim.leader_region(region_id) else {
        return;
    };
    let pick = |rng: &mut rand_chacha::ChaCha8Rng, n: usize| (rng.next_u32() as usize) % n.max(1);
    let voters: Vec<_> = (region.peers.iter())
        .filter(|p| p.role == PeerRole::Voter && p.id != leader)
        .collect();
    let change = if let Some(learner) = region.peers.iter().find(|p| p.role == PeerRole::Learner) {
        match rng.next_u32() % 2 {
            0 => PeerChange::Promote { id: learner.id },
            _ => PeerChange::Remove { id: learner.id },
        }
    } else if voters.len() >= 3 {
        let doubled = voters
            .iter()
            .find(|v| region.peers.iter().filter(|p| p.node == v.node).count() > 1);
        let demoted = doubled.copied().unwrap_or(voters[pick(rng, voters.len())]);
        PeerChange::Demote { id: demoted.id }
    } else {
        let free: Vec<(u64, u32)> = (1..=3u64)
            .flat_map(|n| (0..2u32).map(move |s| (n, s)))
            .filter(|&(n, s)| region.peer_on(n, s).is_none())
            .collect();
        let (node, shard) = free[pick(rng, free.len())];
        *next_id += 1;
        PeerChange::AddLearner {
            id: *next_id,
            node,
            shard,
        }
    };
    let _ = sim.change_peers(region_id, vec![change]);
}

async fn chaos_run(seed: u64) -> ChaosOutcome {
    let mut cfg = SimConfig::new(seed);
    // Odd seeds keep almost no entries in memory: evictions and read-backs meet the faults.
    if seed % 2 == 1 {
        cfg.raft.entry_cache_bytes_max = 1 << 10;
    }
    cfg.net = NetConfig {
        drop_ppm: 20_000,
        duplicate_ppm: 10_000,
        delay_ticks_max: 2,
        snapshot_chunk_drop_ppm: 50_000,
    };
    let mut sim = Sim::new(cfg).await;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0xC0FFEE);
    let keys: Vec<Vec<u8>> = sim
        .regions()
        .iter()
        .take(2)
        .flat_map(|r| [key_in(&sim, r.id, "x"), key_in(&sim, r.id, "y")])
        .collect();
    let mut split_ids = 1 << 40;
    let mut peer_ids = 1 << 41;
    let regions_at_start = sim.regions().len();
    let first_ids: Vec<u64> = sim.regions().iter().map(|r| r.id).collect();
    let conf_vers = |sim: &Sim| -> u64 {
        let first = sim.regions().iter().filter(|r| first_ids.contains(&r.id));
        first.map(|r| r.epoch.conf_ver).sum()
    };
    let conf_at_start = conf_vers(&sim);
    for round in 0..12u64 {
        for client in 0..4u64 {
            let key = keys[(rng.next_u32() as usize) % keys.len()].clone();
            let v = vec![round as u8, client as u8];
            let kind = match rng.next_u32() % 4 {
                0 | 1 => OpKind::Put { value: v },
                2 => OpKind::Get { observed: None },
                _ => OpKind::Cas {
                    expected: None,
                    new: Some(v),
                    succeeded: false,
                },
            };
            sim.submit(client, key, kind);
        }
        // Timestamps: one at the leader, one from a client that asks a random node, while
        // the nodes' clocks drift apart and step back by up to 10 s.
        sim.submit_get_ts(10, 1 + rng.next_u64() % 4);
        sim.submit_get_ts_to(1 + rng.next_u64() % 3, 11, 1);
        sim.submit_alloc_ids(12, 1 + rng.next_u64() % 100);
        let skewed = 1 + rng.next_u64() % 3;
        sim.set_clock_skew(skewed, (rng.next_u64() % 20_000) as i64 - 10_000);
        match rng.next_u32() % 8 {
            0 => {
                let node = 1 + rng.next_u64() % 3;
                sim.crash(node);
            }
            3 => {
                // A handover of a data region's or the placement service's leadership; refused
                // (and nothing happens) while the target lags or is cut off.
                let region = [SYSTEM_REGION_ID, sim.regions()[0].id][(rng.next_u32() % 2) as usize];
                let _ = sim.transfer_leader(region, 1 + rng.next_u64() % 3);
            }
            4 => {
                // A split right after one of the keys (refused where one split it already);
                // ids far above the allocator's, as the test plays the node asking for them.
                let at = [keys[(rng.next_u32() as usize) % keys.len()].as_slice(), b"m"].concat();
                let region = sim.regions().iter().find(|r| r.contains(&at)).unwrap().id;
                split_ids += 10;
                let _ = sim.split(region, &at, split_ids);
            }
            1 => {
                let node = 1 + rng.next_u64() % 3;
                sim.isolate(node);
            }
            2 => sim.heal(),
            _ => {
                // Replicas move between shards: the regions of the workload's keys.
                let region = sim.regions()[(rng.next_u32() % 2) as usize].id;
                membership_step(&mut sim, &mut rng, region, &mut peer_ids);
            }
        }
        sim.ticks(1 + rng.next_u64() % 15).await;
        for node in 1..=3 {
            if !sim.is_up(node) && rng.next_u32() % 2 == 0 {
                sim.restart(node).await;
            }
        }
    }
    sim.heal();
    for node in 1..=3 {
        sim.restart(node).await;
    }
    sim.run_until_done().await;
    // Final reads of every key once the cluster is whole: acknowledged writes must be there.
    sim.net_mut().drop_ppm = 0;
    for key in &keys {
        sim.submit(99, key.clone(), OpKind::Get { observed: None });
    }
    sim.run_until_done().await;
    let history = sim.history();
    let ts_history = sim.ts_history();
    ChaosOutcome {
        verdict: check(&history),
        ops: history.len(),
        timestamps: check_timestamps(&ts_history),
        ts_answered: ts_history.iter().filter(|o| o.first.is_some()).count(),
        ids: check_timestamps(&sim.id_history()),
        ids_answered: sim.id_history().iter().filter(|o| o.first.is_some()).count(),
        splits: sim.regions().len() - regions_at_start,
        memberships: conf_vers(&sim) - conf_at_start,
    }
}

// Proves that under random loss, delay, duplication, partitions, crashes, leader transfers,
// splits (about one per seed applies) and replicas moving between shards (membership changes:
// learners added, promoted, demoted, removed), the recorded client histories are linearizable (including the final reads: no acknowledged write lost),
// with entry caches of the default size and, on odd seeds, of 1 KiB; and that timestamps from
// the placement service are unique and increase in real-time order through the same faults,
// with the nodes' clocks skewed and stepped back; and that ids are never handed out twice across
// placement-leader changes (and increase too).
// Runs 100 seeds (COREKV_SIM_SEEDS); a failure names its seed, and that seed replays the same
// run (COREKV_SIM_FIRST=seed COREKV_SIM_SEEDS=1).
#[test]
fn random_faults_keep_histories_linearizable() {
    let first: u64 = std::env::var("COREKV_SIM_FIRST")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let seeds: u64 = std::env::var("COREKV_SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100);
    let (mut answered, mut ids_answered, mut splits, mut memberships) = (0, 0, 0, 0);
    for seed in first..first + seeds {
        let outcome = run(move || chaos_run(seed));
        let ops = outcome.ops;
        assert_eq!(
            outcome.verdict,
            CheckResult::Linearizable,
            "seed {seed} ({ops} ops) is not linearizable"
        );
        assert_eq!(outcome.timestamps, Ok(()), "seed {seed}");
        assert_eq!(outcome.ids, Ok(()), "seed {seed}: ids");
        answered += outcome.ts_answered;
        splits += outcome.splits;
        memberships += outcome.memberships;
        ids_answered += outcome.ids_answered;
    }
    // 24 requests a seed, half of them stuck to one node whether it leads or not.
    eprintln!(
        "{answered} timestamp and {ids_answered} id requests answered, {splits} splits, {memberships} membership changes, over {seeds} seeds"
    );
    assert!(answered as u64 >= seeds * 8, "{answered} answered over {seeds} seeds");
    assert!(splits as u64 >= seeds / 2, "{splits} splits over {seeds} seeds");
    assert!(
        memberships >= seeds,
        "{memberships} membership changes over {seeds} seeds"
    );
    assert!(
        ids_answered as u64 >= seeds * 6,
        "{ids_answered} id requests answered over {seeds} seeds"
    );
}

// Proves the placement service moves with the system region's leadership: once its node is cut
// off, the old leader answers nothing after a successor is elected (its lease runs out, its
// ReadIndex rounds fail), and the successor, whose clock is 20 s behind, serves timestamps
// larger than every earlier one within a few election timeouts.
#[test]
fn a_deposed_placement_leader_hands_out_nothing_after_its_successor() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(1)).await;
        sim.submit_get_ts(1, 1);
        sim.run_until_done().await;
        let old = sim.leader(SYSTEM_REGION_ID).unwrap();
        for node in (1..=3).filter(|&n| n != old) {
            sim.set_clock_skew(node, -20_000);
        }
        sim.isolate(old);
        let timeout = sim.config().raft.election_tick as u64;
        let mut elected = None;
        for _ in 0..4 * timeout {
            sim.submit_get_ts_to(old, 2, 1);
            sim.submit_get_ts(3, 1);
            sim.tick().await;
            if elected.is_none() && sim.leader(SYSTEM_REGION_ID) != Some(old) {
                elected = Some(sim.now());
            }
        }
        sim.run_until_done().await;
        let history = sim.ts_history();
        assert_eq!(check_timestamps(&history), Ok(()));
        // History times are ticks x 10^6 (see `Sim`).
        let elected_ns = elected.expect("a successor within 4 election timeouts") as i64 * 1_000_000;
        let answered = |client: u64| history.iter().filter(move |o| o.client == client && o.first.is_some());
        assert!(answered(2).count() > 0 && answered(2).all(|o| o.return_ns.unwrap() < elected_ns));
        let first = answered(1).next().unwrap().first.unwrap();
        let after: Vec<_> = answered(3).filter(|o| o.call_ns > elected_ns).collect();
        assert!(!after.is_empty() && after.iter().all(|o| o.first.unwrap() > first));
    });
}

// Proves a run replays exactly from its seed.
#[test]
fn same_seed_same_history() {
    let a = run(|| async { chaos_run(7).await });
    let b = run(|| async { chaos_run(7).await });
    assert_eq!((a.ops, a.ts_answered), (b.ops, b.ts_answered));
}

// Proves the region directory is rebuilt after every placement-leader change: the leader's node
// crashes (its directory dies with it), and within a few heartbeat intervals the successor's
// directory holds every region with its true range, epoch, peers and leader; the crashed
// node's store stays listed from the durable registry while it is down, and reports again
// once restarted. Over 5 seeds, 3 leader changes each.
#[test]
fn the_directory_converges_after_placement_leader_changes() {
    for seed in 0..5 {
        run(move || async move {
            let mut sim = Sim::new(SimConfig::new(seed)).await;
            let settle = 3 * 40; // three heartbeat intervals (40 ticks of 50 ms)
            sim.ticks(settle).await;
            assert_directory_true(&sim, seed);
            for _ in 0..3 {
                let old = sim.leader(SYSTEM_REGION_ID).expect("a placement leader");
                sim.crash(old);
                sim.ticks(settle).await;
                let view = assert_directory_true(&sim, seed);
                assert_ne!(view.node, old, "seed {seed}");
                let stores: Vec<u64> = view.stores.iter().map(|s| s.heartbeat.store_id).collect();
                assert_eq!(stores, [1, 2, 3], "seed {seed}: the crashed store is still registered");
                sim.restart(old).await;
                sim.ticks(settle).await;
                assert_directory_true(&sim, seed);
            }
        });
    }
}

/// The placement leader's directory holds every region exactly as the cluster has it.
fn assert_directory_true(sim: &Sim, seed: u64) -> corekv_raftstore::sim::DirectoryView {
    let view = sim
        .directory()
        .unwrap_or_else(|| panic!("seed {seed}: no placement leader"));
    assert_eq!(view.regions.len(), sim.regions().len(), "seed {seed}");
    for (record, region) in view.regions.iter().zip(sim.regions()) {
        let h = &record.heartbeat;
        assert_eq!(&h.region, region, "seed {seed}");
        assert_eq!(
            Some(h.leader.node),
            sim.leader(region.id),
            "seed {seed}: region {}",
            region.id
        );
    }
    view
}
