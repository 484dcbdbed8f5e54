//! A hostile peer against live nodes: forged but well-formed frames of every kind a peer port
//! accepts (hellos, raft batches, snapshot chunks, heartbeats; field values from proptest strategies),
//! sent to every node while clients run, then the clients' history checked.

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use corekv_netio::frame::{self, FrameKind};
use corekv_netio::msg::{
    Heartbeat, PeerHello, RaftBatch, RaftEnvelope, RegionHeartbeat, SnapshotChunk, StoreHeartbeat, WireEpoch, WireFlow,
    WirePeer, WireRegion,
};
use corekv_raftstore::linearizability::{check, CheckResult, Op, OpKind};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use protobuf::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};

mod common;
use common::*;

/// How long the forger and the clients run side by side.
const RUN: Duration = Duration::from_secs(6);

/// One forged frame, before it is addressed to a connection.
#[derive(Debug, Clone)]
enum Forged {
    /// A hello of another cluster, or of a node that is not a member.
    Hello { cluster_xor: u64, node: u64, shard: u32 },
    /// Raft messages (see `raft_message`) for (region, real peer ids?, from, to), or bytes
    /// that are not a raft message at all.
    Raft(Vec<ForgedRaft>),
    /// A chunk of a snapshot stream, any fields; its message a `MsgSnapshot` announcing files
    /// of `sizes` (or no message at all).
    Chunk {
        region: u64,
        from: u64,
        sizes: Option<Vec<u64>>,
        seq: u32,
        place: (u32, u64),
        bytes: Vec<u8>,
    },
    /// Region heartbeats for (region, start, end, version, term, led by the sender?), and
    /// a store heartbeat for a store id.
    Heartbeat {
        regions: Vec<ForgedRegion>,
        store: Option<u64>,
    },
    /// Any bytes in a frame of any kind.
    Junk { kind: u8, body: Vec<u8> },
}

/// (region, start, end, epoch version, term, led by the sender?).
type ForgedRegion = (u64, Vec<u8>, Vec<u8>, u64, u64, bool);

/// (region, real peer ids?, from, to, a raft message or bytes that are none).
type ForgedRaft = (u64, bool, u64, u64, Result<Message, Vec<u8>>);

/// A raft message an outsider could send: any kind and fields, at term 0 or past any
/// election (the receivers' terms here are small), with entries of any content.
fn raft_message() -> impl Strategy<Value = Message> {
    let term = prop_oneof![Just(0u64), (1u64 << 40)..u64::MAX];
    let entries = proptest::collection::vec(
        (0..50u64, 0..50u64, proptest::collection::vec(any::<u8>(), 0..16)),
        0..3,
    );
    (0..19i32, term, 0..50u64, 0..50u64, 0..50u64, entries).prop_map(
        |(kind, term, index, log_term, commit, entries)| {
            let mut m = Message {
                term,
                index,
                log_term,
                commit,
                ..Default::default()
            };
            m.set_msg_type(<MessageType as protobuf::ProtobufEnum>::from_i32(kind).expect("0..19"));
            m.entries = entries
                .into_iter()
                .map(|(index, term, data)| Entry {
                    index,
                    term,
                    data: data.into(),
                    ..Default::default()
                })
                .collect::<Vec<_>>()
                .into();
            m
        },
    )
}

fn forged() -> impl Strategy<Value = Forged> {
    let raft = proptest::collection::vec(
        (
            1..10u64,
            any::<bool>(),
            0..10_000u64,
            0..10_000u64,
            prop_oneof![
                raft_message().prop_map(Ok),
                proptest::collection::vec(any::<u8>(), 0..64).prop_map(Err)
            ],
        ),
        1..6,
    );
    prop_oneof![
        (1..u64::MAX, any::<u64>(), 0..4u32).prop_map(|(cluster_xor, node, shard)| Forged::Hello {
            cluster_xor,
            node,
            shard
        }),
        raft.prop_map(Forged::Raft),
        (
            (1..10u64, 0..10_000u64),
            proptest::option::of(proptest::collection::vec(0..2_000u64, 0..4)),
            (0..4u32, 0..4u32, 0..2_000u64),
            proptest::collection::vec(any::<u8>(), 0..256)
        )
            .prop_map(|((region, from), sizes, (seq, file, offset), bytes)| Forged::Chunk {
                region,
                from,
                sizes,
                seq,
                place: (file, offset),
                bytes
            }),
        (
            proptest::collection::vec(
                (
                    1..10u64,
                    proptest::collection::vec(any::<u8>(), 0..3),
                    proptest::collection::vec(any::<u8>(), 0..3),
                    0..u64::MAX,
                    0..u64::MAX,
                    any::<bool>()
                ),
                0..6
            ),
            proptest::option::of(0..5u64)
        )
            .prop_map(|(regions, store)| Forged::Heartbeat { regions, store }),
        (0..=9u8, proptest::collection::vec(any::<u8>(), 0..128)).prop_map(|(kind, body)| Forged::Junk { kind, body }),
    ]
}

/// The frame of `f` on a connection to node `to_node`'s shard `shard` that said hello as node
/// `me` of `cluster_id`. Raft messages name real replicas (peer id = region * 1000 + node)
/// half of the time, with the inner message's peers agreeing with its envelope's.
fn encode(f: &Forged, cluster_id: u64, me: u64, (to_node, shard): (u64, u32)) -> Vec<u8> {
    let peer = |id: u64| WirePeer {
        id,
        node: me,
        shard,
        role: 0,
    };
    match f {
        Forged::Hello {
            cluster_xor,
            node,
            shard,
        } => {
            let hello = PeerHello {
                cluster_id: cluster_id ^ cluster_xor,
                node_id: *node,
                shard: *shard,
                client_addr: "x:1".into(),
            };
            frame::encode(FrameKind::PeerHello, 0, &hello)
        }
        Forged::Raft(msgs) => {
            let messages = msgs
                .iter()
                .map(|(region, real, from, to, m)| {
                    let (from, to) = match real {
                        true => (region * 1000 + me, region * 1000 + to_node),
                        false => (*from, *to),
                    };
                    let message = match m {
                        Ok(m) => {
                            let mut m = m.clone();
                            (m.from, m.to) = (from, to);
                            m.write_to_bytes().expect("in memory")
                        }
                        Err(junk) => junk.clone(),
                    };
                    let to = WirePeer {
                        id: to,
                        node: to_node,
                        shard,
                        role: 0,
                    };
                    RaftEnvelope {
                        region_id: *region,
                        from: peer(from),
                        to,
                        message,
                        epoch: WireEpoch::default(),
                        check: 0,
                    }
                })
                .collect();
            frame::encode(FrameKind::RaftBatch, 0, &RaftBatch { messages })
        }
        Forged::Chunk {
            region,
            from,
            sizes,
            seq,
            place: (file, offset),
            bytes,
        } => {
            let to = region * 1000 + to_node;
            let message = sizes
                .as_ref()
                .map_or_else(Vec::new, |sizes| snapshot_message(*region, (*from, to), 9, sizes));
            let header = RaftEnvelope {
                region_id: *region,
                from: peer(*from),
                to: WirePeer {
                    id: to,
                    node: to_node,
                    shard,
                    role: 0,
                },
                message,
                epoch: WireEpoch::default(),
                check: 0,
            };
            let chunk = SnapshotChunk {
                header,
                seq: *seq,
                file: *file,
                offset: *offset,
                bytes: bytes.clone(),
            };
            frame::encode(FrameKind::SnapshotChunk, 0, &chunk)
        }
        Forged::Heartbeat { regions, store } => {
            let regions = regions
                .iter()
                .map(|(region, start, end, version, term, mine)| {
                    let leader = WirePeer {
                        id: region * 1000 + me,
                        node: if *mine { me } else { to_node },
                        shard,
                        role: 0,
                    };
                    RegionHeartbeat {
                        region: WireRegion {
                            id: *region,
                            start: start.clone(),
                            end: end.clone(),
                            epoch: WireEpoch {
                                conf_ver: 1,
                                version: *version,
                            },
                            peers: vec![leader],
                        },
                        leader,
                        term: *term,
                        approximate_bytes: 0,
                        approximate_keys: 0,
                        flow: WireFlow::default(),
                    }
                })
                .collect();
            let store = store.map(|id| StoreHeartbeat {
                store_id: if id == 0 { me } else { id },
                client_addr: "x:1".into(),
                peer_addr: "x:2".into(),
                shards: 2,
                capacity_bytes: 0,
                available_bytes: 0,
                used_bytes: 0,
                regions: 0,
                leaders: 0,
            });
            frame::encode(FrameKind::Heartbeat, 0, &Heartbeat { regions, store })
        }
        Forged::Junk { kind, body } => {
            let mut bytes = frame::frame_of(FrameKind::Error, 0, body);
            bytes[5] = *kind;
            bytes
        }
    }
}

/// Sends forged frames to every node's peer ports until `until`: each connection says hello
/// as another member (the handshake without TLS is all a forger needs), then sends a few
/// frames; refused ones close it, and the forger dials again. Returns frames sent.
fn forge(t: &TestCluster, cluster_id: u64, until: Instant) -> u64 {
    let mut runner = TestRunner::new_with_rng(Config::default(), TestRng::from_seed(RngAlgorithm::ChaCha, &[7; 32]));
    let strategy = proptest::collection::vec(forged(), 1..8);
    let mut sent = 0;
    for round in 0u64.. {
        if Instant::now() >= until {
            break;
        }
        let (node, shard) = (1 + round % 3, (round / 3 % 2) as u32);
        let me = 1 + (node % 3);
        let Ok(mut s) = TcpStream::connect(peer_addr(t, node, shard)) else {
            continue;
        };
        let mut bytes = hello(cluster_id, me);
        for f in strategy.new_tree(&mut runner).expect("a value").current() {
            bytes.extend_from_slice(&encode(&f, cluster_id, me, (node, shard)));
            sent += 1;
        }
        let _ = s.write_all(&bytes);
        std::thread::sleep(Duration::from_millis(5));
    }
    sent
}

/// Four clients of put / get / compare-and-swap on a key per region until `until`; the history.
fn workload(t: &TestCluster, until: Instant) -> Vec<Op> {
    let keys: Vec<Vec<u8>> = t.info().regions.iter().map(|r| key_in(&r.region, "hostile")).collect();
    let epoch = Instant::now();
    t.with_client(move |c| async move {
        let history = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let clients: Vec<_> = (0..4u64)
            .map(|client| {
                let (c, keys, history) = (c.clone(), keys.clone(), history.clone());
                glommio::spawn_local(async move {
                    let mut i = 0u64;
                    while Instant::now() < until {
                        let key = keys[((i + client) % keys.len() as u64) as usize].clone();
                        let value = vec![client as u8, i as u8];
                        let call_ns = epoch.elapsed().as_nanos() as i64;
                        let (kind, ok) = match i % 3 {
                            0 => match c.get(&key).await {
                                Ok(observed) => (OpKind::Get { observed }, true),
                                Err(_) => (OpKind::Get { observed: None }, false),
                            },
                            1 => (OpKind::Put { value: value.clone() }, c.put(&key, &value).await.is_ok()),
                            _ => match c.compare_and_swap(&key, None, Some(&value)).await {
                                Ok((succeeded, _)) => (
                                    OpKind::Cas {
                                        expected: None,
                                        new: Some(value),
                                        succeeded,
                                    },
                                    true,
                                ),
                                Err(_) => (
                                    OpKind::Cas {
                                        expected: None,
                                        new: Some(value),
                                        succeeded: false,
                                    },
                                    false,
                                ),
                            },
                        };
                        let return_ns = ok.then(|| epoch.elapsed().as_nanos() as i64);
                        history.borrow_mut().push(Op {
                            client,
                            key,
                            kind,
                            call_ns,
                            return_ns,
                        });
                        i += 1;
                    }
                })
            })
            .collect();
        for client in clients {
            client.await;
        }
        let history = history.borrow().clone();
        Ok(history)
    })
}

// Proves a hostile peer that passes the handshake (no TLS) cannot hurt a live cluster with
// forged frames of every kind the peer port takes: no node exits, refusals are counted, and
// four clients running meanwhile keep a linearizable history in which operations complete.
#[test]
fn forged_peer_frames_hurt_no_node_and_no_history() {
    let mut t = start();
    let cluster_id = t.cluster.spec().cluster_id().unwrap();
    let until = Instant::now() + RUN;
    let history = std::thread::scope(|scope| {
        let clients = scope.spawn(|| workload(&t, until));
        let sent = forge(&t, cluster_id, until);
        eprintln!("{sent} forged frames sent");
        assert!(sent > 100, "only {sent} forged frames sent");
        clients.join().unwrap()
    });
    t.cluster.check_alive().expect("no node exited");
    let completed = history.iter().filter(|op| op.return_ns.is_some()).count();
    eprintln!("{completed} of {} operations completed", history.len());
    assert!(
        completed > 50,
        "only {completed} of {} operations completed",
        history.len()
    );
    assert_eq!(check(&history), CheckResult::Linearizable);
    let refused: f64 = (1..=NODES)
        .map(|n| metric(&t, n, "corekv_raft_messages_refused_total{") + metric(&t, n, "corekv_frames_refused_total{"))
        .sum();
    assert!(refused > 10.0, "refusals counted: {refused}");
}
