//! Integration tests of the KV engine (`corekv_storage::kv`), including a property test of
//! writes, deletes, range deletes, flushes and reopens against a `BTreeMap` model.

use std::collections::BTreeMap;
use std::path::Path;

use corekv_storage::kv::{Cf, Direction, KeyRange, KvConfig, KvEngine, KvRead, KvSnapshot, SharedBlockCache};
use corekv_storage::tmpfs::{self, Tmpfs};
use corekv_storage::Error;
use futures_lite::FutureExt;
use proptest::prelude::*;

const MIB: usize = 1 << 20;

type Entries = Vec<(Vec<u8>, Vec<u8>)>;

fn test_config() -> KvConfig {
    KvConfig {
        write_buffer_bytes: 4 * MIB,
        small_cf_write_buffer_bytes: MIB,
        max_background_jobs: 2,
        max_subcompactions: 1,
        ..KvConfig::default()
    }
}

fn open(dir: &Path) -> KvEngine {
    KvEngine::open(dir, &test_config(), &SharedBlockCache::new(8 * MIB)).expect("open")
}

fn put_all(engine: &KvEngine, cf: Cf, entries: &[(&[u8], &[u8])]) {
    let mut batch = engine.write_batch();
    for (key, value) in entries {
        batch.put(cf, key, value).expect("put");
    }
    engine.write(batch, false).expect("write");
}

fn range(start: &[u8], end: &[u8]) -> KeyRange {
    KeyRange::new(start, end).expect("valid range")
}

fn scan_all(engine: &KvEngine, cf: Cf) -> Entries {
    engine
        .scan(cf, &KeyRange::all(), Direction::Forward, usize::MAX)
        .expect("scan")
}

/// Deterministic incompressible bytes, so that on-disk sizes track the bytes written.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

#[test]
fn write_batch_spans_cfs_and_survives_reopen() {
    // Proves: one batch over all four CFs is visible whole after `write`, and is still there
    // after the engine is dropped and reopened, with sync and without.
    for sync in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        {
            let engine = open(dir.path());
            let before = engine.snapshot();
            let mut batch = engine.write_batch();
            for cf in Cf::ALL {
                batch.put(cf, b"key", cf.name().as_bytes()).unwrap();
            }
            batch.delete(Cf::Default, b"absent").unwrap();
            assert_eq!(batch.len(), 5);
            engine.write(batch, sync).unwrap();
            for cf in Cf::ALL {
                assert_eq!(engine.get(cf, b"key").unwrap().as_deref(), Some(cf.name().as_bytes()));
                assert_eq!(before.get(cf, b"key").unwrap(), None, "sync={sync}");
            }
        }
        let engine = open(dir.path());
        for cf in Cf::ALL {
            let entries = scan_all(&engine, cf);
            assert_eq!(
                entries,
                vec![(b"key".to_vec(), cf.name().as_bytes().to_vec())],
                "sync={sync}"
            );
        }
    }
}

#[test]
fn size_limits_reject_with_typed_errors_and_write_nothing() {
    // Proves: keys and values at the limit pass, one byte over fails with `TooLarge` naming
    // what was too large, a reversed range fails with `InvalidArgument`, and a rejected
    // operation leaves the batch, and so the engine, without it.
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let config = KvConfig::default();
    let key_max = vec![b'k'; config.key_bytes_max];
    let key_over = vec![b'o'; config.key_bytes_max + 1];
    let value_max = vec![b'v'; config.value_bytes_max];
    let value_over = vec![b'v'; config.value_bytes_max + 1];

    let mut batch = engine.write_batch();
    batch.put(Cf::Default, &key_max, &value_max).unwrap();
    let too_large = |result: Result<(), Error>, expected: &str| match result {
        Err(Error::TooLarge { what, .. }) => assert_eq!(what, expected),
        other => panic!("expected TooLarge {expected}, got {other:?}"),
    };
    too_large(batch.put(Cf::Default, &key_over, b"v"), "key");
    too_large(batch.put(Cf::Lock, b"k", &value_over), "value");
    too_large(batch.delete(Cf::Write, &key_over), "key");
    too_large(batch.delete_range(Cf::Meta, b"a", &key_over), "key");
    for (start, end) in [(&b"b"[..], &b"a"[..]), (b"a", b"a")] {
        let result = batch.delete_range(Cf::Default, start, end);
        assert!(matches!(result, Err(Error::InvalidArgument(_))), "{result:?}");
    }
    assert_eq!(batch.len(), 1);
    engine.write(batch, false).unwrap();

    assert_eq!(scan_all(&engine, Cf::Default), vec![(key_max, value_max)]);
    for cf in [Cf::Lock, Cf::Write, Cf::Meta] {
        assert_eq!(scan_all(&engine, cf), vec![]);
    }
}

#[test]
fn batch_bytes_limit_rejects_the_operation_that_would_overflow() {
    // Proves: a batch grows up to `batch_bytes_max` and the put that would pass it fails with
    // `TooLarge { what: "write batch" }`, leaving the batch as it was.
    let dir = tempfile::tempdir().unwrap();
    let config = KvConfig {
        key_bytes_max: 16,
        value_bytes_max: 64,
        batch_bytes_max: 256,
        ..test_config()
    };
    let engine = KvEngine::open(dir.path(), &config, &SharedBlockCache::new(MIB)).unwrap();
    let mut batch = engine.write_batch();
    let mut accepted = 0u8;
    let error = loop {
        match batch.put(Cf::Default, &[accepted], &[0; 64]) {
            Ok(()) => accepted += 1,
            Err(error) => break error,
        }
    };
    assert!(
        matches!(
            error,
            Error::TooLarge {
                what: "write batch",
                ..
            }
        ),
        "{error:?}"
    );
    assert!(accepted >= 2, "only {accepted} puts fit");
    assert!(batch.data_bytes() <= 256);
    assert_eq!(batch.len(), usize::from(accepted));
    engine.write(batch, false).unwrap();
    assert_eq!(scan_all(&engine, Cf::Default).len(), usize::from(accepted));
}

#[test]
fn config_and_range_validation() {
    // Proves: contradictory limits fail `open` with `InvalidArgument` before anything is
    // created, and empty or reversed ranges are rejected rather than scanned as empty.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db");
    let config = KvConfig {
        batch_bytes_max: KvConfig::default().value_bytes_max,
        ..test_config()
    };
    let result = KvEngine::open(&path, &config, &SharedBlockCache::new(MIB));
    assert!(matches!(result, Err(Error::InvalidArgument(_))), "{result:?}");
    assert!(!path.exists());

    assert!(matches!(KeyRange::new(b"b", b"a"), Err(Error::InvalidArgument(_))));
    assert!(matches!(KeyRange::new(b"a", b"a"), Err(Error::InvalidArgument(_))));
    let engine = open(&path);
    for result in [
        engine.delete_range(Cf::Default, b"b", b"a"),
        engine.compact_range(Cf::Default, b"a", b"a"),
        engine.destroy_range(b"z", b"a"),
        engine.approximate_size(Cf::Default, b"b", b"a").map(drop),
    ] {
        assert!(matches!(result, Err(Error::InvalidArgument(_))), "{result:?}");
    }
}

#[test]
fn open_creates_missing_column_families_and_keeps_data() {
    // Proves: a database that has only RocksDB's default column family opens as an engine
    // with all four, keeping what the default one held.
    let dir = tempfile::tempdir().unwrap();
    {
        let db = rocksdb::DB::open_default(dir.path()).unwrap();
        db.put(b"old", b"kept").unwrap();
    }
    let engine = open(dir.path());
    assert_eq!(engine.get(Cf::Default, b"old").unwrap().as_deref(), Some(&b"kept"[..]));
    for cf in [Cf::Lock, Cf::Write, Cf::Meta] {
        put_all(&engine, cf, &[(b"new", b"1")]);
        assert_eq!(scan_all(&engine, cf), vec![(b"new".to_vec(), b"1".to_vec())], "{cf:?}");
    }
}

#[test]
fn second_open_of_a_locked_dir_is_an_open_error() {
    // Proves: opening a directory another engine holds fails with `Error::Open`, and the
    // directory opens again once that engine is dropped.
    let dir = tempfile::tempdir().unwrap();
    let first = open(dir.path());
    let second = KvEngine::open(dir.path(), &test_config(), &SharedBlockCache::new(MIB));
    assert!(matches!(second, Err(Error::Open { .. })), "{second:?}");
    drop(first);
    open(dir.path());
}

#[test]
fn snapshot_does_not_see_later_writes() {
    // Proves: a snapshot keeps answering gets and scans as of its creation while the engine
    // moves on, and it can be moved to another thread (it owns its engine handle).
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    put_all(&engine, Cf::Default, &[(b"a", b"1"), (b"c", b"1")]);
    put_all(&engine, Cf::Lock, &[(b"a", b"lock")]);
    let snapshot = engine.snapshot();

    put_all(&engine, Cf::Default, &[(b"a", b"2"), (b"b", b"2")]);
    engine.delete_range(Cf::Lock, b"a", b"b").unwrap();
    engine.flush(Cf::Default).unwrap();

    let expected: Entries = vec![(b"a".to_vec(), b"1".to_vec()), (b"c".to_vec(), b"1".to_vec())];
    let all = KeyRange::all();
    assert_eq!(
        snapshot.scan(Cf::Default, &all, Direction::Forward, 10).unwrap(),
        expected
    );
    assert_eq!(snapshot.get(Cf::Lock, b"a").unwrap().as_deref(), Some(&b"lock"[..]));
    assert_eq!(engine.get(Cf::Lock, b"a").unwrap(), None);
    assert_eq!(scan_all(&engine, Cf::Default).len(), 3);

    let from_thread = std::thread::spawn(move || {
        let snapshot: KvSnapshot = snapshot;
        snapshot.get(Cf::Default, b"b").unwrap()
    });
    assert_eq!(from_thread.join().unwrap(), None);
}

#[test]
fn iterator_streams_with_bounds_direction_and_limit() {
    // Proves: `iter` yields exactly the keys inside its bounds in the asked order, stops at the
    // limit, and keeps returning `None` once done.
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    put_all(
        &engine,
        Cf::Write,
        &[
            (b"a", b"0"),
            (b"b1", b"1"),
            (b"b2", b"2"),
            (b"b\xff", b"3"),
            (b"c", b"4"),
        ],
    );
    let keys = |range: &KeyRange, direction: Direction, limit: Option<usize>| {
        let mut iter = engine.iter(Cf::Write, range, direction, limit);
        let mut keys = Vec::new();
        while let Some((key, _)) = iter.next_entry().unwrap() {
            keys.push(key.to_vec());
        }
        assert_eq!(iter.next_entry().unwrap(), None);
        keys
    };
    let forward = keys(&KeyRange::prefix(b"b"), Direction::Forward, None);
    assert_eq!(forward, vec![b"b1".to_vec(), b"b2".to_vec(), b"b\xff".to_vec()]);
    let reverse = keys(&range(b"a", b"b2"), Direction::Reverse, None);
    assert_eq!(reverse, vec![b"b1".to_vec(), b"a".to_vec()]);
    let limited = keys(&KeyRange::from_start(b"b2"), Direction::Forward, Some(2));
    assert_eq!(limited, vec![b"b2".to_vec(), b"b\xff".to_vec()]);
    assert_eq!(
        keys(&KeyRange::all(), Direction::Reverse, Some(0)),
        Vec::<Vec<u8>>::new()
    );
}

#[test]
fn destroy_range_removes_the_range_in_every_cf_and_nothing_else() {
    // Proves: after `destroy_range`, no CF holds a key of the range and every key outside it
    // survives, including a key equal to the range's end that shares a file with keys inside
    // (the end bound of RocksDB's file deletion is inclusive). It also proves both
    // halves of the design: whole files inside the range are dropped (an older snapshot loses
    // their keys), while the lock CF only gets tombstones (an older snapshot keeps its locks).
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let inside: Vec<Vec<u8>> = (0..20).map(|i| format!("b{i:02}").into_bytes()).collect();
    let outside: [&[u8]; 3] = [b"a", b"c", b"d"];
    for cf in Cf::ALL {
        let mut batch = engine.write_batch();
        for key in &inside {
            batch.put(cf, key, b"in").unwrap();
        }
        // In the write CF, `c` shares a file with the keys inside, a file that so ends exactly
        // at the range's end. In the other CFs it is written later, into another file.
        let mut later = outside.to_vec();
        if cf == Cf::Write {
            batch.put(cf, b"c", b"out").unwrap();
            later.retain(|&key| key != b"c");
        }
        engine.write(batch, false).unwrap();
        engine.flush(cf).unwrap();
        // Out of L0, which file deletion skips.
        engine.compact_range(cf, b"a", b"z").unwrap();
        let later: Vec<(&[u8], &[u8])> = later.iter().map(|&key| (key, &b"out"[..])).collect();
        put_all(&engine, cf, &later);
        engine.flush(cf).unwrap();
    }
    let before = engine.snapshot();

    engine.destroy_range(b"b", b"c").unwrap();

    for cf in Cf::ALL {
        let expected: Entries = outside.iter().map(|key| (key.to_vec(), b"out".to_vec())).collect();
        assert_eq!(scan_all(&engine, cf), expected, "{cf:?}");
    }
    assert_eq!(before.get(Cf::Default, b"b00").unwrap(), None, "whole file dropped");
    assert_eq!(before.get(Cf::Lock, b"b00").unwrap().as_deref(), Some(&b"in"[..]));
    assert_eq!(before.get(Cf::Write, b"b00").unwrap().as_deref(), Some(&b"in"[..]));
    drop(before);

    // Tombstones are durable: nothing of the range comes back after a reopen.
    drop(engine);
    let engine = open(dir.path());
    for cf in Cf::ALL {
        assert_eq!(scan_all(&engine, cf).len(), outside.len(), "{cf:?}");
    }
}

#[test]
fn exported_ssts_ingest_into_another_engine_as_the_same_data() {
    // Proves: exporting a range of every CF and ingesting the files into an empty engine gives
    // exactly the source's entries of that range (and no others), with matching digests; CFs
    // without entries in the range produce no file; ingestion consumes the files.
    let source_dir = tempfile::tempdir().unwrap();
    let source = open(source_dir.path());
    for cf in [Cf::Default, Cf::Lock, Cf::Write] {
        let mut batch = source.write_batch();
        for i in 0..100u64 {
            let value = noise(i, 100);
            batch.put(cf, format!("k{i:03}").as_bytes(), &value).unwrap();
        }
        source.write(batch, false).unwrap();
    }
    source.flush(Cf::Write).unwrap();
    put_all(&source, Cf::Meta, &[(b"z-outside", b"meta")]);

    let exported = range(b"k020", b"k080");
    let export_dir = tempfile::tempdir().unwrap();
    let snapshot = source.snapshot();
    let exports = snapshot.export_ssts(export_dir.path(), &Cf::ALL, &exported).unwrap();
    let cfs: Vec<Cf> = exports.iter().map(|export| export.cf).collect();
    assert_eq!(cfs, vec![Cf::Default, Cf::Lock, Cf::Write]);

    let target_dir = tempfile::tempdir().unwrap();
    let target = open(target_dir.path());
    for export in &exports {
        assert_eq!(export.digest.keys, 60);
        assert_eq!(export.digest, snapshot.digest(export.cf, &exported).unwrap());
        target.ingest(export.cf, std::slice::from_ref(&export.path)).unwrap();
        assert!(!export.path.exists(), "ingest moves the file");
        assert_eq!(target.snapshot().digest(export.cf, &exported).unwrap(), export.digest);
    }
    for cf in Cf::ALL {
        let expected = snapshot.scan(cf, &exported, Direction::Forward, usize::MAX).unwrap();
        assert_eq!(scan_all(&target, cf), expected, "{cf:?}");
    }
}

#[test]
fn checkpoint_opens_as_an_engine_with_the_same_data() {
    // Proves: a checkpoint, opened as an engine, holds every CF's data as of the checkpoint,
    // including unflushed writes, and is independent of the source afterwards.
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    for cf in Cf::ALL {
        put_all(&engine, cf, &[(b"x", cf.name().as_bytes()), (b"y", b"1")]);
    }
    let checkpoint_dir = dir.path().join("checkpoint");
    engine.checkpoint(&checkpoint_dir).unwrap();
    put_all(&engine, Cf::Default, &[(b"after", b"1")]);

    let copy = KvEngine::open(&checkpoint_dir, &test_config(), &SharedBlockCache::new(MIB)).unwrap();
    for cf in Cf::ALL {
        let expected: Entries = vec![
            (b"x".to_vec(), cf.name().as_bytes().to_vec()),
            (b"y".to_vec(), b"1".to_vec()),
        ];
        assert_eq!(scan_all(&copy, cf), expected, "{cf:?}");
    }
}

#[test]
fn size_estimates_follow_flushed_data_and_compaction_runs() {
    // Proves: `approximate_size` counts flushed data only (zero before the flush, about the
    // bytes written after), `approximate_keys` lands near the real count for the whole range and
    // for half of it, `compact_range` keeps the data, and properties and statistics report.
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let (start, end) = (&b"k"[..], &b"l"[..]);
    const KEYS: u64 = 2000;
    const VALUE_BYTES: usize = 512;
    let mut batch = engine.write_batch();
    for i in 0..KEYS {
        batch
            .put(Cf::Default, format!("k{i:05}").as_bytes(), &noise(i, VALUE_BYTES))
            .unwrap();
    }
    engine.write(batch, false).unwrap();
    assert_eq!(engine.approximate_size(Cf::Default, start, end).unwrap(), 0);
    assert!(engine.properties(Cf::Default).unwrap().mem_tables_bytes > 0);

    engine.flush(Cf::Default).unwrap();
    let written = KEYS * VALUE_BYTES as u64;
    let size = engine.approximate_size(Cf::Default, start, end).unwrap();
    assert!(
        size >= written * 9 / 10 && size <= written * 2,
        "size {size}, written {written}"
    );
    let keys = engine.approximate_keys(Cf::Default, start, end).unwrap();
    assert!((KEYS * 8 / 10..=KEYS).contains(&keys), "estimated {keys} keys");
    let half = engine.approximate_keys(Cf::Default, b"k", b"k01000").unwrap();
    assert!(
        (KEYS * 3 / 10..=KEYS * 7 / 10).contains(&half),
        "estimated {half} keys in half"
    );
    assert_eq!(engine.approximate_keys(Cf::Lock, start, end).unwrap(), 0);

    engine.compact_range(Cf::Default, start, end).unwrap();
    assert_eq!(scan_all(&engine, Cf::Default).len() as u64, KEYS);
    assert!(engine.approximate_size(Cf::Default, start, end).unwrap() > 0);
    let properties = engine.properties(Cf::Default).unwrap();
    assert!(
        (KEYS / 2..=KEYS * 2).contains(&properties.estimate_num_keys),
        "{properties:?}"
    );
    let statistics = engine.statistics().expect("statistics are enabled");
    assert!(statistics.contains("rocksdb.block.cache"), "{statistics}");
}

#[test]
fn engines_sharing_one_block_cache_both_work() {
    // Proves: two engines opened with clones of one `SharedBlockCache` both read and write,
    // and both report the one cache's usage.
    let cache = SharedBlockCache::new(16 * MIB);
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let a = KvEngine::open(dir_a.path(), &test_config(), &cache.clone()).unwrap();
    let b = KvEngine::open(dir_b.path(), &test_config(), &cache).unwrap();
    for (engine, value) in [(&a, &b"a"[..]), (&b, b"b")] {
        put_all(engine, Cf::Default, &[(b"key", value)]);
        engine.flush(Cf::Default).unwrap();
        assert_eq!(engine.get(Cf::Default, b"key").unwrap().as_deref(), Some(value));
    }
    assert!(cache.usage_bytes() > 0);
    let usage_a = a.properties(Cf::Default).unwrap().block_cache_usage_bytes;
    let usage_b = b.properties(Cf::Write).unwrap().block_cache_usage_bytes;
    assert_eq!(usage_a, usage_b);
    assert_eq!(usage_a, cache.usage_bytes() as u64);
}

/// Runs the future `make` returns on a fresh glommio executor thread, and returns its output.
fn run_on_glommio<T, F>(make: impl FnOnce() -> F + Send + 'static) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + 'static,
{
    glommio::LocalExecutorBuilder::default()
        .spawn(make)
        .expect("spawn executor")
        .join()
        .expect("executor")
}

#[test]
fn offload_runs_off_the_executor_thread_and_returns_the_result() {
    // Proves: `offload` runs the closure on another thread than the executor's, with the
    // engine, and the awaiting task gets the closure's return value.
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let (value, same_thread) = run_on_glommio(move || async move {
        let executor_thread = std::thread::current().id();
        let (value, thread) = engine
            .offload(|engine| {
                let mut batch = engine.write_batch();
                batch.put(Cf::Meta, b"apply", b"7").unwrap();
                engine.write(batch, true).unwrap();
                (engine.get(Cf::Meta, b"apply").unwrap(), std::thread::current().id())
            })
            .await;
        (value, thread == executor_thread)
    });
    assert_eq!(value.as_deref(), Some(&b"7"[..]));
    assert!(!same_thread);
}

#[test]
fn offload_resumes_a_panic_in_the_awaiting_task() {
    // Proves: a panicking closure neither hangs the awaiting task nor kills the pool: the
    // panic surfaces at the `.await`, and the next offload still runs.
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let (message, next) = run_on_glommio(move || async move {
        let panicked = std::panic::AssertUnwindSafe(engine.offload(|_| -> u32 { panic!("closure failed") }))
            .catch_unwind()
            .await;
        let payload = panicked.expect_err("the panic reaches the awaiting task");
        let message = payload.downcast_ref::<&str>().copied().unwrap_or_default();
        (message.to_owned(), engine.offload(|_| 42).await)
    });
    assert_eq!(message, "closure failed");
    assert_eq!(next, 42);
}

#[test]
#[should_panic(expected = "KvEngine::offload must be called from a glommio executor task")]
fn offload_outside_an_executor_panics_with_a_clear_message() {
    // Proves: misuse outside glommio is a panic naming the mistake, not a hang or UB.
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let _never_polled = engine.offload(|_| ());
}

// --- Property test against a BTreeMap model -------------------------------------------------

type Model = [BTreeMap<Vec<u8>, Vec<u8>>; 4];

fn model_index(cf: Cf) -> usize {
    Cf::ALL.iter().position(|&each| each == cf).unwrap()
}

#[derive(Clone, Debug)]
enum Mutation {
    Put(Cf, Vec<u8>, Vec<u8>),
    Delete(Cf, Vec<u8>),
    DeleteRange(Cf, Vec<u8>, Vec<u8>),
}

#[derive(Clone, Debug)]
enum Step {
    Batch(Vec<Mutation>),
    Flush(Cf),
    Reopen,
}

#[derive(Clone, Debug)]
enum RangeSpec {
    Bounded(Vec<u8>, Vec<u8>),
    From(Vec<u8>),
    Prefix(Vec<u8>),
    All,
}

impl RangeSpec {
    /// `None` for the empty or reversed ranges `KeyRange::new` must reject.
    fn key_range(&self) -> Option<KeyRange> {
        match self {
            RangeSpec::Bounded(start, end) => KeyRange::new(start.clone(), end.clone()).ok(),
            RangeSpec::From(start) => Some(KeyRange::from_start(start.clone())),
            RangeSpec::Prefix(prefix) => Some(KeyRange::prefix(prefix)),
            RangeSpec::All => Some(KeyRange::all()),
        }
    }

    /// The model's own membership test, independent of `KeyRange`.
    fn contains(&self, key: &[u8]) -> bool {
        match self {
            RangeSpec::Bounded(start, end) => start.as_slice() <= key && key < end.as_slice(),
            RangeSpec::From(start) => start.as_slice() <= key,
            RangeSpec::Prefix(prefix) => key.starts_with(prefix),
            RangeSpec::All => true,
        }
    }
}

#[derive(Clone, Debug)]
struct Query {
    cf: Cf,
    range: RangeSpec,
    direction: Direction,
    limit: Option<usize>,
}

fn model_scan(model: &Model, query: &Query) -> Entries {
    let matching = model[model_index(query.cf)]
        .iter()
        .filter(|(key, _)| query.range.contains(key));
    let limit = query.limit.unwrap_or(usize::MAX);
    let entries = match query.direction {
        Direction::Forward => matching.take(limit).collect::<Vec<_>>(),
        Direction::Reverse => matching.rev().take(limit).collect::<Vec<_>>(),
    };
    entries
        .into_iter()
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect()
}

fn apply_batch(engine: &KvEngine, model: &mut Model, mutations: &[Mutation]) {
    let mut batch = engine.write_batch();
    let mut next = model.clone();
    for mutation in mutations {
        match mutation {
            Mutation::Put(cf, key, value) => {
                batch.put(*cf, key, value).unwrap();
                next[model_index(*cf)].insert(key.clone(), value.clone());
            }
            Mutation::Delete(cf, key) => {
                batch.delete(*cf, key).unwrap();
                next[model_index(*cf)].remove(key);
            }
            Mutation::DeleteRange(cf, start, end) if start < end => {
                batch.delete_range(*cf, start, end).unwrap();
                next[model_index(*cf)].retain(|key, _| key < start || key >= end);
            }
            Mutation::DeleteRange(cf, start, end) => {
                let len = batch.len();
                let result = batch.delete_range(*cf, start, end);
                assert!(matches!(result, Err(Error::InvalidArgument(_))), "{result:?}");
                assert_eq!(batch.len(), len);
            }
        }
    }
    engine.write(batch, false).unwrap();
    *model = next;
}

/// Checks every query through `iter` on the engine and `scan` on the snapshot, and point gets
/// of every key either model knows.
fn check(engine: &KvEngine, snapshot: &KvSnapshot, now: &Model, then: &Model, queries: &[Query]) {
    for query in queries {
        let Some(range) = query.range.key_range() else {
            assert!(matches!(query.range, RangeSpec::Bounded(ref start, ref end) if start >= end));
            continue;
        };
        let mut iter = engine.iter(query.cf, &range, query.direction, query.limit);
        let mut streamed = Vec::new();
        while let Some((key, value)) = iter.next_entry().unwrap() {
            streamed.push((key.to_vec(), value.to_vec()));
        }
        assert_eq!(streamed, model_scan(now, query), "engine {query:?}");
        let limit = query.limit.unwrap_or(usize::MAX);
        let scanned = snapshot.scan(query.cf, &range, query.direction, limit).unwrap();
        assert_eq!(scanned, model_scan(then, query), "snapshot {query:?}");
    }
    for cf in Cf::ALL {
        let index = model_index(cf);
        for key in now[index].keys().chain(then[index].keys()) {
            assert_eq!(
                engine.get(cf, key).unwrap().as_ref(),
                now[index].get(key),
                "{cf:?} {key:?}"
            );
            assert_eq!(
                snapshot.get(cf, key).unwrap().as_ref(),
                then[index].get(key),
                "{cf:?} {key:?}"
            );
        }
    }
}

fn key_strategy() -> impl Strategy<Value = Vec<u8>> {
    // A tiny alphabet with 0x00 and 0xff, so keys collide, nest as prefixes and hit edge bytes.
    prop::collection::vec(prop::sample::select(vec![0x00u8, 0x01, 0x02, 0xff]), 0..4)
}

fn cf_strategy() -> impl Strategy<Value = Cf> {
    prop::sample::select(Cf::ALL.to_vec())
}

fn mutation_strategy() -> impl Strategy<Value = Mutation> {
    let value = prop::collection::vec(any::<u8>(), 0..8);
    prop_oneof![
        6 => (cf_strategy(), key_strategy(), value).prop_map(|(cf, k, v)| Mutation::Put(cf, k, v)),
        2 => (cf_strategy(), key_strategy()).prop_map(|(cf, k)| Mutation::Delete(cf, k)),
        1 => (cf_strategy(), key_strategy(), key_strategy())
            .prop_map(|(cf, start, end)| Mutation::DeleteRange(cf, start, end)),
    ]
}

fn step_strategy(reopen: bool) -> impl Strategy<Value = Step> {
    let reopen_weight = if reopen { 1 } else { 0 };
    prop_oneof![
        6 => prop::collection::vec(mutation_strategy(), 1..6).prop_map(Step::Batch),
        1 => cf_strategy().prop_map(Step::Flush),
        reopen_weight => Just(Step::Reopen),
    ]
}

fn query_strategy() -> impl Strategy<Value = Query> {
    let range = prop_oneof![
        4 => (key_strategy(), key_strategy()).prop_map(|(start, end)| RangeSpec::Bounded(start, end)),
        1 => key_strategy().prop_map(RangeSpec::From),
        2 => key_strategy().prop_map(RangeSpec::Prefix),
        1 => Just(RangeSpec::All),
    ];
    let direction = prop_oneof![Just(Direction::Forward), Just(Direction::Reverse)];
    let limit = prop::option::of(0usize..6);
    (cf_strategy(), range, direction, limit).prop_map(|(cf, range, direction, limit)| Query {
        cf,
        range,
        direction,
        limit,
    })
}

fn run_steps(dir: &Path, mut engine: KvEngine, model: &mut Model, steps: &[Step]) -> KvEngine {
    for step in steps {
        match step {
            Step::Batch(mutations) => apply_batch(&engine, model, mutations),
            Step::Flush(cf) => engine.flush(*cf).unwrap(),
            Step::Reopen => {
                // Closed first: the directory's lock is released only when the engine drops.
                drop(engine);
                engine = open(dir);
            }
        }
    }
    engine
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn reads_match_a_btreemap_model(
        steps in prop::collection::vec(step_strategy(true), 0..24),
        later in prop::collection::vec(step_strategy(false), 0..8),
        queries in prop::collection::vec(query_strategy(), 1..24),
    ) {
        // Proves: after random puts, deletes, range deletes, flushes and reopens, gets, bounded
        // forward/reverse/prefix/limited iteration on the engine, and the same reads on a
        // snapshot taken before further writes, return exactly what the model holds.
        let dir = tempfile::tempdir().unwrap();
        let mut model: Model = Default::default();
        let engine = run_steps(dir.path(), open(dir.path()), &mut model, &steps);
        let then = model.clone();
        let snapshot = engine.snapshot();
        // No reopen among `later`: the snapshot holds the engine open.
        let engine = run_steps(dir.path(), engine, &mut model, &later);
        check(&engine, &snapshot, &model, &then, &queries);
    }
}

// Proves a full disk is a typed, retryable `NoSpace` in the KV engine, and that RocksDB takes
// writes again by itself once space is freed, with every acknowledged write still there.
#[test]
fn real_enospc_on_tmpfs_is_no_space_and_writes_resume_once_space_is_freed() {
    if !tmpfs::can_mount() {
        eprintln!("real_enospc_on_tmpfs: needs root to mount a tmpfs");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = Tmpfs::mount(dir.path(), 24 << 20).unwrap();
    let mnt = disk.path().to_path_buf();
    let engine = open(&mnt.join("kv"));
    // Ballast takes most of the disk; freeing it later gives the engine room again.
    std::fs::write(mnt.join("ballast"), vec![1u8; 16 * MIB]).unwrap();
    let value = noise(1, 64 << 10);
    let put = |i: u32| {
        let mut batch = engine.write_batch();
        batch.put(Cf::Default, &i.to_be_bytes(), &value).unwrap();
        engine.write(batch, false)
    };
    let mut acked = 0u32;
    let error = loop {
        match put(acked) {
            Ok(()) => acked += 1,
            Err(e) => break e,
        }
        assert!(acked < 1000, "the tmpfs must fill up");
    };
    assert!(error.is_no_space() && error.is_retryable(), "{error:?}");
    assert!(put(acked).unwrap_err().is_no_space(), "still full: still NoSpace");
    std::fs::remove_file(mnt.join("ballast")).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while let Err(e) = put(acked) {
        assert!(e.is_no_space(), "{e:?}");
        assert!(
            std::time::Instant::now() < deadline,
            "RocksDB did not resume writes after space was freed"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    for i in 0..=acked {
        assert_eq!(
            engine.get(Cf::Default, &i.to_be_bytes()).unwrap().as_deref(),
            Some(&value[..]),
            "key {i}"
        );
    }
}
