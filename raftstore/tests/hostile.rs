//! Hostile peers in the deterministic simulator: forged raft messages with any field values
//! (proptest strategies over raft-rs's `Message`), injected into live shards while clients run.
//!
//! Two threat models, two claims:
//! - An OUTSIDER (a sender that is not a replica of the region, a region that does not exist,
//!   term 0, a term no election reaches, a kind that never crosses the network): every such
//!   message is refused at the edge, and the clients' history stays linearizable.
//! - An INSIDER with the identity of a real replica (what mutual TLS and the handshake admit):
//!   Raft is not Byzantine-tolerant, so a forged leader can corrupt what it leads; the claim is
//!   that no forged message panics a shard (each is refused, or handled by raft-rs; corrupt data
//!   it brings stops only its region on that shard).

use corekv_raftstore::guard::TERM_JUMP_MAX;
use corekv_raftstore::linearizability::{check, CheckResult, OpKind};
use corekv_raftstore::sim::{run, Sim, SimConfig};
use corekv_raftstore::{Epoch, MemberCheck, PeerMeta, RaftMessage};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use raft::eraftpb::{Entry, Message, MessageType, Snapshot};

/// Cases per property: 12 in `make test`; `COREKV_HOSTILE_CASES` for longer runs (`make fuzz`).
fn cases() -> u32 {
    std::env::var("COREKV_HOSTILE_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12)
}

/// A runner whose cases are a function of `COREKV_HOSTILE_SEED` (default 0): a failure
/// replays with the seed it prints.
fn runner() -> TestRunner {
    let seed: u64 = std::env::var("COREKV_HOSTILE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    eprintln!("COREKV_HOSTILE_SEED={seed}");
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let rng = proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &bytes);
    TestRunner::new_with_rng(
        Config {
            cases: cases(),
            ..Config::default()
        },
        rng,
    )
}

/// Message kinds by their protobuf number (0..=18 are raft-rs's).
fn kind(n: u8) -> MessageType {
    <MessageType as protobuf::ProtobufEnum>::from_i32(i32::from(n % 19)).expect("0..=18 are kinds")
}

/// A number that is small (near real indexes and terms) or anything at all.
fn number() -> impl Strategy<Value = u64> {
    prop_oneof![0..40u64, any::<u64>()]
}

/// The fields of a forged message, before it is addressed.
#[derive(Debug, Clone)]
struct Fields {
    kind: u8,
    term: u64,
    index: u64,
    log_term: u64,
    commit: u64,
    commit_term: u64,
    reject: bool,
    reject_hint: u64,
    request_snapshot: u64,
    entries: Vec<(u64, u64, Vec<u8>)>,
    snapshot: Option<(u64, u64, Vec<u64>, Vec<u8>)>,
    /// Whether the inner from/to differ from the envelope's.
    mismatched: bool,
}

fn fields() -> impl Strategy<Value = Fields> {
    let entries = proptest::collection::vec(
        (number(), number(), proptest::collection::vec(any::<u8>(), 0..24)),
        0..4,
    );
    let snapshot = proptest::option::of((
        number(),
        number(),
        proptest::collection::vec(0..4000u64, 0..4),
        proptest::collection::vec(any::<u8>(), 0..32),
    ));
    let head = (any::<u8>(), number(), number(), number(), number(), any::<bool>());
    let tail = (
        number(),
        0..3u64,
        entries,
        snapshot,
        proptest::bool::weighted(0.1),
        number(),
    );
    (head, tail).prop_map(
        |(
            (kind, term, index, log_term, commit, reject),
            (reject_hint, request_snapshot, entries, snapshot, mismatched, commit_term),
        )| Fields {
            kind,
            term,
            index,
            log_term,
            commit,
            commit_term,
            reject,
            reject_hint,
            request_snapshot,
            entries,
            snapshot,
            mismatched,
        },
    )
}

fn message(f: &Fields, from: PeerMeta, to: PeerMeta) -> Message {
    let mut m = Message {
        from: if f.mismatched { from.id + 1 } else { from.id },
        to: to.id,
        term: f.term,
        index: f.index,
        log_term: f.log_term,
        commit: f.commit,
        commit_term: f.commit_term,
        reject: f.reject,
        reject_hint: f.reject_hint,
        request_snapshot: f.request_snapshot,
        ..Default::default()
    };
    m.set_msg_type(kind(f.kind));
    m.entries = f
        .entries
        .iter()
        .map(|(index, term, data)| Entry {
            index: *index,
            term: *term,
            data: data.clone().into(),
            ..Default::default()
        })
        .collect::<Vec<_>>()
        .into();
    if let Some((index, term, voters, data)) = &f.snapshot {
        let mut s = Snapshot::default();
        s.mut_metadata().index = *index;
        s.mut_metadata().term = *term;
        s.mut_metadata().mut_conf_state().voters = voters.clone();
        s.data = data.clone().into();
        m.set_snapshot(s);
    }
    m
}

/// A forgery of `f` from a real replica of region `region_at` to another of its replicas.
fn insider(sim: &Sim, f: &Fields, region_at: usize, from: usize, to: usize) -> RaftMessage {
    let region = &sim.regions()[region_at % sim.regions().len()];
    let (from, to) = (region.peers[from % 3], region.peers[(from + 1 + to % 2) % 3]);
    RaftMessage {
        region_id: region.id,
        from,
        to,
        msg: message(f, from, to),
        epoch: Epoch::default(),
        check: MemberCheck::None,
    }
}

/// A forgery that no honest network delivers: from a non-replica, for an unknown region named
/// with another region's peers, at term 0 or past any election, of a kind never sent between
/// nodes, or a "you were removed" notice (at a far newer epoch) from a non-replica.
fn outsider(sim: &Sim, f: &Fields, region_at: usize, how: u8) -> RaftMessage {
    let mut msg = insider(sim, f, region_at, 0, 0);
    match how % 6 {
        5 => {
            msg.from = PeerMeta::voter(4000 + msg.from.id, msg.from.node, msg.from.shard);
            msg.epoch = Epoch {
                conf_ver: u64::MAX,
                version: f.term,
            };
            msg.check = MemberCheck::Removed;
        }
        0 => {
            msg.from = PeerMeta::voter(4000 + msg.from.id, 9, 0);
            msg.msg.from = msg.from.id;
        }
        1 => msg.region_id += 1000,
        2 => msg.msg.term = 0,
        3 => msg.msg.term = TERM_JUMP_MAX * 2 + f.term % 1000,
        _ => msg.msg.set_msg_type(
            [
                MessageType::MsgPropose,
                MessageType::MsgReadIndex,
                MessageType::MsgTransferLeader,
            ][f.kind as usize % 3],
        ),
    }
    msg
}

/// Keys in the first two regions, and client operations on them for `rounds` rounds, with the
/// forgeries made by `forge` injected between rounds. Returns the history's verdict.
async fn run_with_forgeries(seed: u64, forge: impl Fn(&mut Sim, usize) -> Vec<bool>) -> (CheckResult, Vec<bool>) {
    let mut sim = Sim::new(SimConfig::new(seed)).await;
    let keys: Vec<Vec<u8>> = sim
        .regions()
        .iter()
        .take(2)
        .map(|r| {
            let mut k = if r.start.is_empty() { vec![1] } else { r.start.clone() };
            k.push(b'k');
            k
        })
        .collect();
    let mut refused = Vec::new();
    for round in 0..8usize {
        for client in 0..3u64 {
            let key = keys[(round + client as usize) % keys.len()].clone();
            let kind = match (round + client as usize) % 3 {
                0 => OpKind::Get { observed: None },
                _ => OpKind::Put {
                    value: vec![round as u8, client as u8],
                },
            };
            sim.submit(client, key, kind);
        }
        refused.extend(forge(&mut sim, round));
        sim.ticks(3).await;
    }
    sim.run_until_done().await;
    for key in &keys {
        sim.submit(99, key.clone(), OpKind::Get { observed: None });
    }
    sim.run_until_done().await;
    (check(&sim.history()), refused)
}

// Proves every outsider forgery (any field values; a non-replica sender, an unknown region,
// term 0, a term past any election, or a kind never sent between nodes) is refused before
// raft-rs sees it, and that clients running meanwhile keep a linearizable history.
#[test]
fn outsider_forgeries_are_refused_and_histories_stay_linearizable() {
    let mut runner = runner();
    let strategy = (
        any::<u64>(),
        proptest::collection::vec((fields(), any::<usize>(), any::<u8>()), 1..40),
    );
    runner
        .run(&strategy, |(seed, forgeries)| {
            let (verdict, refused) = run(move || {
                run_with_forgeries(seed % 1000, move |sim, round| {
                    let per_round = forgeries.len().div_ceil(8);
                    let mine = forgeries.iter().skip(round * per_round).take(per_round);
                    mine.map(|(f, at, how)| {
                        let msg = outsider(sim, f, *at, *how);
                        sim.inject(msg).is_err()
                    })
                    .collect()
                })
            });
            prop_assert_eq!(verdict, CheckResult::Linearizable);
            prop_assert!(refused.iter().all(|r| *r), "an outsider forgery reached raft");
            Ok(())
        })
        .unwrap();
}

// Proves no forged message from a real replica's identity, whatever its fields, panics a
// shard: each is refused at the edge or handled by raft-rs, and clients still get answers.
#[test]
fn insider_forgeries_never_panic_a_shard() {
    let mut runner = runner();
    let strategy = (
        any::<u64>(),
        proptest::collection::vec((fields(), any::<usize>(), any::<usize>(), any::<usize>()), 1..40),
    );
    runner
        .run(&strategy, |(seed, forgeries)| {
            run(move || {
                run_with_forgeries(seed % 1000, move |sim, round| {
                    let per_round = forgeries.len().div_ceil(8);
                    let mine = forgeries.iter().skip(round * per_round).take(per_round);
                    mine.map(|(f, at, from, to)| {
                        let msg = insider(sim, f, *at, *from, *to);
                        sim.inject(msg).is_err()
                    })
                    .collect()
                })
            });
            Ok(())
        })
        .unwrap();
}

// Proves a leader's message for a region new to a shard (fresh peer ids: a split it missed)
// starts an uninitialized replica there, which goes after ten election timeouts without its
// snapshot (a forgery leaves nothing behind); while one naming another region's peers under a
// new region id is refused outright, as is a vote for a region not there.
#[test]
fn replicas_of_new_regions_start_from_leaders_and_expire_without_a_snapshot() {
    run(|| async {
        let mut sim = Sim::new(SimConfig::new(3)).await;
        sim.ticks(5).await;
        let peer = |id: u64, node: u64| PeerMeta::voter(id, node, 0);
        let heartbeat = |region_id: u64, from: PeerMeta, to: PeerMeta, kind: MessageType| {
            let mut msg = Message::default();
            msg.set_msg_type(kind);
            (msg.from, msg.to, msg.term) = (from.id, to.id, 7);
            RaftMessage {
                region_id,
                from,
                to,
                msg,
                epoch: Epoch::default(),
                check: MemberCheck::None,
            }
        };
        let fresh = heartbeat(
            1 << 41,
            peer((1 << 41) + 2, 2),
            peer((1 << 41) + 1, 1),
            MessageType::MsgHeartbeat,
        );
        assert!(sim.inject(fresh).is_ok());
        assert!(sim.hosts((1, 0), 1 << 41), "an uninitialized replica started");
        let taken = sim.regions()[0].peers[0];
        let named = heartbeat(
            (1 << 41) + 10,
            peer((1 << 41) + 12, 2),
            taken,
            MessageType::MsgHeartbeat,
        );
        assert!(
            sim.inject(named).is_err(),
            "another region's peer under a new region id"
        );
        let vote = heartbeat(
            (1 << 41) + 20,
            peer((1 << 41) + 22, 2),
            peer((1 << 41) + 21, 1),
            MessageType::MsgRequestVote,
        );
        assert!(sim.inject(vote).is_ok(), "held for a split to come");
        assert!(!sim.hosts((1, 0), (1 << 41) + 20), "a vote starts no replica");
        sim.ticks(11 * sim.config().raft.election_tick as u64).await;
        assert!(!sim.hosts((1, 0), 1 << 41), "expired without its snapshot");
    });
}
