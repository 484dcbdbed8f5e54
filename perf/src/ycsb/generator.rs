//! YCSB's request generators, as upstream YCSB defines them (brianfrankcooper/YCSB,
//! `core/src/main/java/site/ycsb/generator/`): zipfian (Gray et al., "Quickly Generating
//! Billion-Record Synthetic Databases"), scrambled zipfian, skewed-latest, and the key names.
//! Pure functions of a caller-seeded random stream.
//!
//! Owns: the zipfian, scrambled zipfian and skewed-latest distributions, key names (`user` + FNV
//! hash) and the scan bound. Must not: seed or hold a random source, or know a system: the
//! caller's seeded stream makes every draw, so one seed gives every system the same keys.

use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha8Rng;

/// YCSB's default zipfian constant.
pub const ZIPFIAN_CONSTANT: f64 = 0.99;
/// Items of the scrambled zipfian's underlying distribution, and its precomputed zeta
/// (YCSB `ScrambledZipfianGenerator.ITEM_COUNT` / `ZETAN`).
const SCRAMBLED_ITEMS: u64 = 10_000_000_000;
const SCRAMBLED_ZETAN: f64 = 26.46902820178302;

/// A uniform f64 in [0, 1).
pub fn unit(rng: &mut ChaCha8Rng) -> f64 {
    (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
}

/// YCSB's 64-bit FNV-1a over the eight bytes of `v`, low byte first, made non-negative.
pub fn fnv_hash64(v: u64) -> u64 {
    const OFFSET_BASIS: u64 = 0xCBF2_9CE4_8422_2325;
    const PRIME: u64 = 1_099_511_628_211;
    let mut hash = OFFSET_BASIS;
    let mut val = v;
    for _ in 0..8 {
        hash ^= val & 0xff;
        hash = hash.wrapping_mul(PRIME);
        val >>= 8;
    }
    (hash as i64).unsigned_abs()
}

/// Every YCSB key starts with this (YCSB's default `usertable` keys: `user` + a number).
pub const KEY_PREFIX: &[u8] = b"user";

/// The key of record `keynum` (YCSB `CoreWorkload.buildKeyName`, hashed insert order).
pub fn key_name(keynum: u64) -> Vec<u8> {
    let mut key = KEY_PREFIX.to_vec();
    key.extend_from_slice(fnv_hash64(keynum).to_string().as_bytes());
    key
}

/// The smallest key above every key that starts with `prefix` (etcd's `GetPrefix`): the last
/// byte below 0xff incremented, what follows it dropped. No such key exists for an all-0xff
/// prefix; then `[0]`, which etcd reads as "no upper bound".
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|b| *b < 0xff) {
        Some(i) => {
            let mut end = prefix[..=i].to_vec();
            end[i] += 1;
            end
        }
        None => vec![0],
    }
}

/// The exclusive end of a YCSB scan: the end of the table, i.e. of the keys under
/// `KEY_PREFIX` (YCSB scans within its table; every system gets the same bound).
pub fn scan_end() -> Vec<u8> {
    prefix_end(KEY_PREFIX)
}

fn zeta(from: u64, to: u64, theta: f64, initial: f64) -> f64 {
    (from..to).fold(initial, |sum, i| sum + 1.0 / ((i + 1) as f64).powf(theta))
}

/// Zipfian over `[0, items)`: item 0 most popular. The item count may grow (skewed-latest);
/// zeta is then extended incrementally, as YCSB does.
#[derive(Debug, Clone)]
pub struct Zipfian {
    items: u64,
    theta: f64,
    zeta2: f64,
    zetan: f64,
    alpha: f64,
    eta: f64,
}

impl Zipfian {
    pub fn new(items: u64, theta: f64) -> Zipfian {
        Zipfian::with_zetan(items, theta, zeta(0, items, theta, 0.0))
    }

    fn with_zetan(items: u64, theta: f64, zetan: f64) -> Zipfian {
        assert!(items > 0 && theta > 0.0 && theta < 1.0);
        let zeta2 = zeta(0, 2, theta, 0.0);
        let mut z = Zipfian {
            items,
            theta,
            zeta2,
            zetan,
            alpha: 1.0 / (1.0 - theta),
            eta: 0.0,
        };
        z.eta = z.eta_for(items);
        z
    }

    fn eta_for(&self, n: u64) -> f64 {
        (1.0 - (2.0 / n as f64).powf(1.0 - self.theta)) / (1.0 - self.zeta2 / self.zetan)
    }

    /// Next item in `[0, items)`; `items` may have grown since the last call.
    pub fn next(&mut self, rng: &mut ChaCha8Rng, items: u64) -> u64 {
        if items > self.items {
            self.zetan = zeta(self.items, items, self.theta, self.zetan);
            self.items = items;
            self.eta = self.eta_for(items);
        }
        let u = unit(rng);
        let uz = u * self.zetan;
        if uz < 1.0 {
            return 0;
        }
        if uz < 1.0 + 0.5f64.powf(self.theta) {
            return 1;
        }
        let v = (self.items as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        v.min(self.items - 1)
    }
}

/// Scrambled zipfian over `[0, items)`: zipfian popularity, popular items spread over the
/// key space by hashing (YCSB `ScrambledZipfianGenerator`).
#[derive(Debug, Clone)]
pub struct ScrambledZipfian {
    zipf: Zipfian,
}

impl Default for ScrambledZipfian {
    fn default() -> Self {
        ScrambledZipfian {
            zipf: Zipfian::with_zetan(SCRAMBLED_ITEMS, ZIPFIAN_CONSTANT, SCRAMBLED_ZETAN),
        }
    }
}

impl ScrambledZipfian {
    pub fn next(&mut self, rng: &mut ChaCha8Rng, items: u64) -> u64 {
        fnv_hash64(self.zipf.next(rng, SCRAMBLED_ITEMS)) % items
    }
}

/// Skewed towards the most recently inserted records (YCSB `SkewedLatestGenerator`).
#[derive(Debug, Clone)]
pub struct Latest {
    zipf: Zipfian,
}

impl Latest {
    pub fn new(items: u64) -> Latest {
        Latest {
            zipf: Zipfian::new(items.max(1), ZIPFIAN_CONSTANT),
        }
    }

    /// A record among the `items` inserted so far, the newest most likely.
    pub fn next(&mut self, rng: &mut ChaCha8Rng, items: u64) -> u64 {
        let items = items.max(1);
        items - 1 - self.zipf.next(rng, items)
    }
}

#[cfg(test)]
mod tests {
    use rand_chacha::rand_core::SeedableRng;

    use super::*;

    // Proves the key hash is YCSB's Utils.fnvhash64: for 0 it is |offset_basis * prime^8| as a
    // signed 64-bit value (computed independently).
    #[test]
    fn key_names_match_ycsb() {
        assert_eq!(fnv_hash64(0), 6_284_781_860_667_377_211);
        assert_eq!(key_name(0), b"user6284781860667377211".to_vec());
        assert_ne!(key_name(1), key_name(2));
    }

    // Proves the scan bound: every key name (whatever its hash) sorts in [prefix, end), the
    // end is the first key past the prefix, 0xff bytes carry, and an all-0xff prefix gets
    // etcd's "no upper bound".
    #[test]
    fn scans_end_after_the_last_key_of_the_table() {
        assert_eq!(scan_end(), b"uses".to_vec());
        let end = scan_end();
        assert!((0..10_000).chain([u64::MAX]).all(|n| {
            let k = key_name(n);
            KEY_PREFIX <= k.as_slice() && k < end
        }));
        assert!(b"user\xff\xff".as_slice() < end.as_slice() && b"uses".as_slice() >= end.as_slice());
        assert_eq!(prefix_end(b"a\xff\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff\xff"), vec![0]);
        assert_eq!(prefix_end(b""), vec![0]);
    }

    // Proves the zipfian skew: item 0 is the most frequent, frequencies fall with rank as
    // 1/rank^0.99, and every draw is in range.
    #[test]
    fn zipfian_is_skewed_as_specified() {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let mut z = Zipfian::new(1000, ZIPFIAN_CONSTANT);
        let mut counts = vec![0u64; 1000];
        let draws = 200_000;
        for _ in 0..draws {
            counts[z.next(&mut rng, 1000) as usize] += 1;
        }
        let expect0 = draws as f64 / zeta(0, 1000, ZIPFIAN_CONSTANT, 0.0);
        assert!(
            (counts[0] as f64 - expect0).abs() < expect0 * 0.05,
            "{} vs {expect0}",
            counts[0]
        );
        let ratio = counts[0] as f64 / counts[9] as f64;
        assert!(
            (ratio - 10f64.powf(ZIPFIAN_CONSTANT)).abs() < 2.0,
            "rank 1 / rank 10 = {ratio}"
        );
    }

    // Proves the scrambled variant keeps the skew but moves the hot items away from 0, and the
    // latest variant favours the newest record even as the count grows.
    #[test]
    fn scrambled_and_latest() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut s = ScrambledZipfian::default();
        let mut counts = std::collections::HashMap::new();
        for _ in 0..50_000 {
            *counts.entry(s.next(&mut rng, 10_000)).or_insert(0u64) += 1;
        }
        let (&hot, &n) = counts.iter().max_by_key(|(_, &c)| c).unwrap();
        assert!(hot != 0 && n > 50_000 / 100, "hottest item {hot} drawn {n} times");
        let mut l = Latest::new(100);
        let newest = (0..1000).filter(|_| l.next(&mut rng, 200) == 199).count();
        assert!(newest > 50, "the newest of 200 records drawn {newest} times in 1000");
    }
}
