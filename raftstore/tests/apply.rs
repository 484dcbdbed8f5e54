//! The apply step against a real KV engine: commands, compare-and-swap reading its own batch,
//! the applied index written with the data, and the read side (get, batch_get, scans).

use corekv_raftstore::keys;
use corekv_raftstore::snapshot::{self, SnapshotMeta};
use corekv_raftstore::{apply, snapshot_chunks, split_check};
use corekv_raftstore::{Command, Epoch, Outcome, PeerMeta, Region};
use corekv_storage::kv::{KvConfig, KvEngine, SharedBlockCache};
use corekv_storage::raftlog::{LogBatch, LogConfig, LogEngine, MemDisk};
use corekv_storage::tmpfs::{self, Tmpfs};
use protobuf::Message as _;
use raft::eraftpb::{Entry, HardState};

fn region() -> Region {
    Region {
        id: 5,
        start: b"b".to_vec(),
        end: b"m".to_vec(),
        epoch: Epoch {
            conf_ver: 1,
            version: 1,
        },
        peers: vec![PeerMeta::voter(51, 1, 0)],
    }
}

fn entry(index: u64, cmd: Command) -> Entry {
    Entry {
        index,
        term: 1,
        data: cmd.encode(region().epoch).into(),
        ..Default::default()
    }
}

// Proves commands apply in order, a CAS sees the writes before it in the same batch, a stale
// epoch is refused without effect, and the applied index lands with the data.
#[test]
fn apply_commands_and_read_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let kv = KvEngine::open(dir.path(), &KvConfig::default(), &SharedBlockCache::new(8 << 20)).unwrap();
    let r = region();
    let mut stale = entry(
        5,
        Command::Put {
            key: b"c".to_vec(),
            value: b"stale".to_vec(),
        },
    );
    stale.data = Command::Put {
        key: b"c".to_vec(),
        value: b"stale".to_vec(),
    }
    .encode(Epoch {
        conf_ver: 1,
        version: 0,
    })
    .into();
    let entries = vec![
        entry(
            1,
            Command::Put {
                key: b"c".to_vec(),
                value: b"1".to_vec(),
            },
        ),
        entry(
            2,
            Command::CompareAndSwap {
                key: b"c".to_vec(),
                expected: Some(b"1".to_vec()),
                new: Some(b"2".to_vec()),
            },
        ),
        entry(
            3,
            Command::CompareAndSwap {
                key: b"c".to_vec(),
                expected: Some(b"1".to_vec()),
                new: Some(b"9".to_vec()),
            },
        ),
        entry(
            4,
            Command::BatchPut {
                pairs: vec![
                    (b"d".to_vec(), b"x".to_vec()),
                    (b"e".to_vec(), b"y".to_vec()),
                    (b"f".to_vec(), b"z".to_vec()),
                ],
            },
        ),
        stale,
        entry(
            6,
            Command::DeleteRange {
                start: b"e".to_vec(),
                end: b"f".to_vec(),
            },
        ),
    ];
    let (applied, results) = apply::apply(&kv, &r, r.peers[0].id, &entries).unwrap();
    assert_eq!(applied, 6);
    assert_eq!(apply::applied_index(&kv, r.id).unwrap(), 6);
    assert_eq!(
        results[1].2,
        Some(Ok(Outcome::Cas {
            succeeded: true,
            previous: Some(b"1".to_vec())
        }))
    );
    assert_eq!(
        results[2].2,
        Some(Ok(Outcome::Cas {
            succeeded: false,
            previous: Some(b"2".to_vec())
        }))
    );
    assert!(matches!(
        results[4].2,
        Some(Err(corekv_raftstore::Error::EpochNotMatch { .. }))
    ));
    assert_eq!(apply::read(&kv, &region(), b"c").unwrap(), Some(b"2".to_vec()));
    let got: Vec<Option<Vec<u8>>> = [&b"d"[..], b"e", b"zz"]
        .iter()
        .map(|k| apply::read(&kv, &region(), k).unwrap())
        .collect();
    assert_eq!(got, vec![Some(b"x".to_vec()), None, None]);
    let fwd = apply::scan(&kv, &r, (b"b", b""), 10, false, usize::MAX).unwrap().0;
    let keys: Vec<&[u8]> = fwd.iter().map(|(k, _)| k.as_slice()).collect();
    assert_eq!(keys, vec![&b"c"[..], b"d", b"f"]);
    let budget = apply::scan(&kv, &r, (b"b", b""), 10, false, 1).unwrap();
    assert_eq!(
        budget,
        (vec![fwd[0].clone()], true),
        "stops after the row past the byte budget"
    );
    let rev = apply::scan(&kv, &r, (b"c", b"f"), 1, true, usize::MAX).unwrap().0;
    assert_eq!(rev, vec![(b"d".to_vec(), b"x".to_vec())]);
    assert!(
        apply::scan(&kv, &r, (b"a", b"c"), 10, false, usize::MAX).is_err(),
        "outside the region"
    );
}

// Proves a snapshot staged but never installed (a crash between the log recording it and the
// KV engine holding it) is installed on restart, that a missing staged copy is an error, and
// that the install adopts the region state the snapshot carries (a replica that missed a
// change of its region's range learns it there).
#[test]
fn staged_snapshot_is_finished_on_restart() {
    let cache = SharedBlockCache::new(8 << 20);
    let (a_dir, b_dir, snaps) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let a = KvEngine::open(a_dir.path(), &KvConfig::default(), &cache).unwrap();
    let r = region();
    let mut newer = r.clone();
    (newer.end, newer.epoch.version) = (b"h".to_vec(), 2);
    apply::bootstrap_region(&a, &newer).unwrap();
    let entries: Vec<Entry> = (1..=3)
        .map(|i| {
            entry(
                i,
                Command::Put {
                    key: vec![b'c', i as u8],
                    value: vec![i as u8; 10],
                },
            )
        })
        .collect();
    apply::apply(&a, &r, r.peers[0].id, &entries).unwrap();
    let a_snaps = snaps.path().join("a");
    let b_snaps = snaps.path().join("b");
    let (applied, data) = snapshot::generate(&a, r.id, &a_snaps).unwrap();
    assert_eq!(applied, 3);
    let meta = SnapshotMeta::decode(r.id, 3, &data).unwrap();
    assert!(!meta.files.is_empty());

    let b = KvEngine::open(b_dir.path(), &KvConfig::default(), &cache).unwrap();
    assert!(
        snapshot::finish_staged(&b, r.clone(), 3, &b_snaps).is_err(),
        "nothing staged: a clear error"
    );
    assert!(
        snapshot::stage(&b_snaps, r.id, 3, &data).is_err(),
        "never received: a clear error"
    );
    // The transfer, in small chunks from A's files to B's.
    let sent = snapshot::gen_dir(&a_snaps, r.id, 3);
    for p in snapshot_chunks::plan(&meta.sizes(), 100) {
        let bytes = snapshot::read_chunk(&sent, p.file, p.offset, p.len).unwrap();
        snapshot::write_chunk(&b_snaps, (r.id, 3), p.file, p.offset, &bytes).unwrap();
    }
    snapshot::seal(&b_snaps, (r.id, 3), meta.files.len() as u32).unwrap();
    snapshot::stage(&b_snaps, r.id, 3, &data).unwrap();
    assert_eq!(
        snapshot::finish_staged(&b, r.clone(), 3, &b_snaps).unwrap(),
        (3, newer.clone())
    );
    assert_eq!(apply::applied_index(&b, r.id).unwrap(), 3);
    assert_eq!(apply::load_regions(&b).unwrap().regions, vec![Ok(newer.clone())]);
    for i in 1..=3u8 {
        assert_eq!(apply::read(&b, &region(), &[b'c', i]).unwrap(), Some(vec![i; 10]));
    }
    // Once installed, a restart finds nothing to finish.
    assert_eq!(
        snapshot::finish_staged(&b, newer.clone(), 3, &b_snaps).unwrap(),
        (3, newer)
    );
}

// Proves an apply stopped by a full disk says exactly how far the KV engine got: its outcomes
// are those of the entries up to the applied index it reports, and applying the rest once
// space is back gives the same outcomes and data as one uninterrupted apply (a swap is never
// decided twice).
#[test]
fn apply_stopped_by_a_full_disk_resumes_where_the_engine_stopped() {
    if !tmpfs::can_mount() {
        eprintln!("apply on a full disk: needs root to mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(dir.path(), 24 << 20).unwrap();
    let mnt = disk.path().to_path_buf();
    // Small memtables: flushes (which need new space) come often.
    let config = KvConfig {
        write_buffer_bytes: 2 << 20,
        small_cf_write_buffer_bytes: 1 << 20,
        ..KvConfig::default()
    };
    let cache = SharedBlockCache::new(8 << 20);
    let r = region();
    // Big puts fill the disk; each swap advances a counter only if applied exactly once.
    let entries: Vec<Entry> = (0..40u64)
        .flat_map(|i| {
            let put = Command::Put {
                key: format!("d{i:02}").into_bytes(),
                value: vec![i as u8; 256 << 10],
            };
            let cas = Command::CompareAndSwap {
                key: b"c".to_vec(),
                expected: (i > 0).then(|| (i - 1).to_string().into_bytes()),
                new: Some(i.to_string().into_bytes()),
            };
            [entry(2 * i + 1, put), entry(2 * i + 2, cas)]
        })
        .collect();
    let whole_dir = tempfile::tempdir().unwrap();
    let whole = KvEngine::open(whole_dir.path(), &config, &cache).unwrap();
    let (_, expected) = apply::apply(&whole, &r, r.peers[0].id, &entries).unwrap();

    let kv = KvEngine::open(&mnt.join("kv"), &config, &cache).unwrap();
    // The disk is full but for 2 MiB.
    disk.fill(2 << 20).unwrap();
    let failure = apply::apply(&kv, &r, r.peers[0].id, &entries).expect_err("the disk fills up");
    assert!(
        matches!(failure.error, corekv_raftstore::Error::NoSpace(_)),
        "{:?}",
        failure.error
    );
    let done = failure.results.len();
    // The disk filled part-way: some swaps had written the entries before them.
    assert!(done > 0 && done < entries.len(), "{done} of {} entries", entries.len());
    assert_eq!(failure.applied, entries[done - 1].index);
    assert_eq!(apply::applied_index(&kv, r.id).unwrap(), failure.applied);
    let mut outcomes = failure.results;
    disk.free().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let mut rest = &entries[done..];
    loop {
        match apply::apply(&kv, &r, r.peers[0].id, rest) {
            Ok((applied, results)) => {
                assert_eq!(applied, entries.len() as u64);
                outcomes.extend(results);
                break;
            }
            Err(f) => {
                assert!(matches!(f.error, corekv_raftstore::Error::NoSpace(_)), "{:?}", f.error);
                assert!(std::time::Instant::now() < deadline, "no resume after space was freed");
                rest = &rest[f.results.len()..];
                outcomes.extend(f.results);
                std::thread::sleep(std::time::Duration::from_millis(50));
            }
        }
    }
    assert_eq!(outcomes, expected);
    for key in [b"c".to_vec(), b"d00".to_vec(), b"d39".to_vec()] {
        assert_eq!(
            apply::read(&kv, &region(), &key).unwrap(),
            apply::read(&whole, &region(), &key).unwrap()
        );
    }
    assert_eq!(apply::read(&kv, &region(), b"c").unwrap(), Some(b"39".to_vec()));
}

// Proves the split check measures a region's data (bytes and keys, nothing outside it) and,
// only once it is over a limit, picks keys strictly inside it that cut it into as many parts
// of about equal bytes as the limits need: its middle when two do, each within 1/64 of the
// limit (plus a key) of its target.
#[test]
fn a_split_check_cuts_a_region_over_its_limits_into_equal_parts() {
    let cache = SharedBlockCache::new(8 << 20);
    let dir = tempfile::tempdir().unwrap();
    let kv = KvEngine::open(dir.path(), &KvConfig::default(), &cache).unwrap();
    let r = region();
    // 200 keys "c000".."c199" of 100-byte values inside [b, m).
    let mut entries: Vec<Entry> = (0..200u64)
        .map(|i| {
            let cmd = Command::Put {
                key: format!("c{i:03}").into_bytes(),
                value: vec![1; 100],
            };
            entry(i + 1, cmd)
        })
        .collect();
    // One at the region's start (never a split key: the left side would be empty), one
    // outside it (not the region's).
    entries.push(entry(
        201,
        Command::Put {
            key: b"b".to_vec(),
            value: vec![2; 100],
        },
    ));
    entries.push(entry(
        202,
        Command::Put {
            key: b"x".to_vec(),
            value: vec![3; 100],
        },
    ));
    apply::apply(&kv, &r, r.peers[0].id, &entries).unwrap();
    let (bytes, keys) = (200 * 104 + 101, 201);
    let small = split_check::check(&kv, &r, 1 << 20, 1_000).unwrap();
    assert_eq!((small.bytes, small.keys, small.split_keys.len()), (bytes, keys, 0));
    let by_keys = split_check::check(&kv, &r, 1 << 20, 100).unwrap();
    assert_eq!(by_keys.split_keys.len(), 2, "201 keys, at most 100 a part: 3 parts");
    // Bytes below key "cNNN".
    let below = |key: &[u8]| 101 + 104 * String::from_utf8(key[1..].to_vec()).unwrap().parse::<u64>().unwrap();
    let halves = split_check::check(&kv, &r, 15_000, 1_000).unwrap().split_keys;
    assert_eq!(halves.len(), 1, "over the byte limit: 2 parts");
    assert!(r.contains(&halves[0]) && halves[0] != r.start);
    assert!(below(&halves[0]).abs_diff(bytes / 2) <= 15_000 / 64 + 104, "{halves:?}");
    // Far over: six parts of about a sixth each, in key order.
    let sixths = split_check::check(&kv, &r, 4_000, 1_000).unwrap().split_keys;
    assert_eq!(sixths.len(), 5, "{sixths:?}");
    for (n, key) in sixths.iter().enumerate() {
        let target = bytes * (n as u64 + 1) / 6;
        assert!(below(key).abs_diff(target) <= 4_000 / 64 + 104, "part {n}: {key:?}");
    }
    assert!(sixths.windows(2).all(|w| w[0] < w[1]));
}

// Proves a restart finds the commit index at least at the applied index: the loop applies
// entries committed in an earlier iteration before it appends the hard state carrying their
// commit index, so a crash in between leaves the logged commit index behind the KV engine's
// applied index (raft-rs would refuse to start: applied past committed).
#[test]
fn a_restart_commits_at_least_what_was_applied() {
    corekv_raftstore::sim::run(|| async {
        let config = LogConfig {
            segment_bytes: 1 << 20,
            entry_bytes_max: 256 << 10,
            ..LogConfig::default()
        };
        let (log, _) = LogEngine::open(MemDisk::new(), config).await.unwrap();
        let r = region();
        let data: Vec<Vec<u8>> = (1..=3u64)
            .map(|i| {
                entry(i, Command::Delete { key: b"c".to_vec() })
                    .write_to_bytes()
                    .unwrap()
            })
            .collect();
        let mut batch = LogBatch::new();
        batch.add_entries(r.id, 1, [1u64; 3].into_iter().zip(data.iter().map(Vec::as_slice)));
        let hs = HardState {
            term: 1,
            commit: 2,
            ..Default::default()
        };
        batch.put_state(r.id, keys::HARD_STATE_KEY, &hs.write_to_bytes().unwrap());
        log.append(&batch).await.unwrap();
        let storage = apply::restore_storage(&log, &r, 3).await.unwrap();
        assert_eq!(storage.hard_state().commit, 3);
    });
}
