//! The operation stream of one YCSB phase: which operation, on which key, with which value,
//! drawn in issue order from one seeded generator.
//!
//! Owns: the stream being a function of the seed and the phase's parameters alone, never of
//! timing, so two systems driven with the same seed see the same operations in the same order.
//! Must not do I/O or look at a clock.

use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::generator::{key_name, unit, Latest, ScrambledZipfian};
use super::workload::{Distribution, OpKind, Workload};

/// One operation to issue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub kind: OpKind,
    pub key: Vec<u8>,
    /// The record written by an update, insert or read-modify-write; empty otherwise.
    pub value: Vec<u8>,
    /// Records a scan asks for, from `key` on; 0 for other operations.
    pub scan_len: u32,
}

/// Picks existing records by the workload's distribution.
enum KeyChooser {
    Uniform,
    Zipfian(ScrambledZipfian),
    Latest(Box<Latest>),
}

impl KeyChooser {
    fn new(d: Distribution, records: u64) -> KeyChooser {
        match d {
            Distribution::Uniform => KeyChooser::Uniform,
            Distribution::Zipfian => KeyChooser::Zipfian(ScrambledZipfian::default()),
            Distribution::Latest => KeyChooser::Latest(Box::new(Latest::new(records))),
        }
    }

    fn next(&mut self, rng: &mut ChaCha8Rng, records: u64) -> u64 {
        let records = records.max(1);
        match self {
            KeyChooser::Uniform => rng.next_u64() % records,
            KeyChooser::Zipfian(z) => z.next(rng, records),
            KeyChooser::Latest(l) => l.next(rng, records),
        }
    }
}

pub struct OpStream {
    workload: Workload,
    rng: ChaCha8Rng,
    keys: KeyChooser,
    /// Records whose insert was issued: reads, updates and scans draw from these. Counting
    /// issued rather than acknowledged inserts keeps the stream independent of timing; a read
    /// can then overtake its record's insert and find nothing, as in YCSB without its
    /// acknowledgement window.
    records: u64,
    record_bytes: usize,
}

impl OpStream {
    /// The stream of `workload` over `records` existing records (`key_name(0..records)`).
    pub fn new(workload: Workload, records: u64, record_bytes: usize, seed: u64) -> OpStream {
        OpStream {
            keys: KeyChooser::new(workload.distribution, records),
            workload,
            rng: ChaCha8Rng::seed_from_u64(seed),
            records,
            record_bytes,
        }
    }

    pub fn next_op(&mut self) -> Operation {
        let kind = self.workload.pick(unit(&mut self.rng));
        let key = if kind == OpKind::Insert {
            self.records += 1;
            key_name(self.records - 1)
        } else {
            key_name(self.keys.next(&mut self.rng, self.records))
        };
        let scan_len = match kind {
            OpKind::Scan => 1 + self.rng.next_u32() % self.workload.scan_length_max,
            _ => 0,
        };
        let value = match kind {
            OpKind::Update | OpKind::Insert | OpKind::ReadModifyWrite => self.value(),
            OpKind::Read | OpKind::Scan => Vec::new(),
        };
        Operation {
            kind,
            key,
            value,
            scan_len,
        }
    }

    /// A record of printable letters (YCSB's fields are random ASCII too).
    fn value(&mut self) -> Vec<u8> {
        let mut v = vec![0u8; self.record_bytes];
        self.rng.fill_bytes(&mut v);
        for b in &mut v {
            *b = b'a' + *b % 26;
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ops(workload: &str, records: u64, seed: u64, n: usize) -> Vec<Operation> {
        let mut s = OpStream::new(Workload::named(workload).unwrap(), records, 16, seed);
        (0..n).map(|_| s.next_op()).collect()
    }

    // Proves the stream is a function of the seed alone (what lets two systems see the same
    // operations), and that another seed gives another stream.
    #[test]
    fn same_seed_same_stream() {
        for w in ["a", "d", "e", "f", "load"] {
            assert_eq!(ops(w, 100, 7, 500), ops(w, 100, 7, 500), "workload {w}");
            assert_ne!(ops(w, 100, 7, 500), ops(w, 100, 8, 500), "workload {w}");
        }
    }

    // Proves the load phase inserts records 0, 1, 2, ... in order, and that E's inserts
    // continue after the existing records while its scans have lengths in 1..=100.
    #[test]
    fn inserts_take_the_next_record_numbers() {
        let load = ops("load", 0, 1, 3);
        let keys: Vec<_> = load.iter().map(|o| o.key.clone()).collect();
        assert_eq!(keys, vec![key_name(0), key_name(1), key_name(2)]);
        assert!(load.iter().all(|o| o.kind == OpKind::Insert && o.value.len() == 16));
        let e = ops("e", 50, 3, 2000);
        let inserted: Vec<_> = e
            .iter()
            .filter(|o| o.kind == OpKind::Insert)
            .map(|o| o.key.clone())
            .collect();
        assert_eq!(inserted[..2], [key_name(50), key_name(51)]);
        assert!(e
            .iter()
            .filter(|o| o.kind == OpKind::Scan)
            .all(|o| (1..=100).contains(&o.scan_len) && o.value.is_empty()));
    }
}
