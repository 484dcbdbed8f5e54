//! The YCSB core workloads A-F as upstream defines them (`workloads/workloada`..`f`), and the
//! plain put/get micro-workloads, and the load phase (inserts only).
//!
//! Owns: each workload's operation mix and key distribution (`Workload::named`) and picking an
//! operation from a uniform draw. Must not: draw random numbers or build keys and values:
//! `stream.rs` does, from the seed.

use anyhow::{bail, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Uniform,
    /// Scrambled zipfian, constant 0.99.
    Zipfian,
    /// Skewed towards the newest records.
    Latest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpKind {
    Read,
    Update,
    Insert,
    Scan,
    ReadModifyWrite,
}

impl OpKind {
    pub const ALL: [OpKind; 5] = [
        OpKind::Read,
        OpKind::Update,
        OpKind::Insert,
        OpKind::Scan,
        OpKind::ReadModifyWrite,
    ];

    pub fn name(self) -> &'static str {
        match self {
            OpKind::Read => "read",
            OpKind::Update => "update",
            OpKind::Insert => "insert",
            OpKind::Scan => "scan",
            OpKind::ReadModifyWrite => "read-modify-write",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    /// Proportions of each `OpKind::ALL`, summing to 1.
    pub mix: [f64; 5],
    pub distribution: Distribution,
    /// Scan lengths are uniform in 1..=max.
    pub scan_length_max: u32,
}

impl Workload {
    /// `a`..`f` (YCSB core workloads), `put` or `get` (micro-workloads, uniform keys), `load`
    /// (the load phase: inserts of the next records).
    pub fn named(name: &str) -> Result<Workload> {
        let (mix, distribution) = match name {
            "a" => ([0.5, 0.5, 0.0, 0.0, 0.0], Distribution::Zipfian),
            "b" => ([0.95, 0.05, 0.0, 0.0, 0.0], Distribution::Zipfian),
            "c" => ([1.0, 0.0, 0.0, 0.0, 0.0], Distribution::Zipfian),
            "d" => ([0.95, 0.0, 0.05, 0.0, 0.0], Distribution::Latest),
            "e" => ([0.0, 0.0, 0.05, 0.95, 0.0], Distribution::Zipfian),
            "f" => ([0.5, 0.0, 0.0, 0.0, 0.5], Distribution::Zipfian),
            "put" => ([0.0, 1.0, 0.0, 0.0, 0.0], Distribution::Uniform),
            "get" => ([1.0, 0.0, 0.0, 0.0, 0.0], Distribution::Uniform),
            "load" => ([0.0, 0.0, 1.0, 0.0, 0.0], Distribution::Uniform),
            other => bail!("unknown workload `{other}` (a, b, c, d, e, f, put, get, load)"),
        };
        debug_assert!((mix.iter().sum::<f64>() - 1.0).abs() < 1e-9);
        Ok(Workload {
            name: name.to_string(),
            mix,
            distribution,
            scan_length_max: 100,
        })
    }

    /// The operation a uniform draw `u` in [0, 1) picks.
    pub fn pick(&self, u: f64) -> OpKind {
        let mut acc = 0.0;
        for (kind, p) in OpKind::ALL.iter().zip(self.mix) {
            acc += p;
            if u < acc {
                return *kind;
            }
        }
        *OpKind::ALL
            .iter()
            .zip(self.mix)
            .rev()
            .find(|(_, p)| *p > 0.0)
            .map(|(k, _)| k)
            .expect("some proportion is positive")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the mixes are upstream's: e.g. A is half reads, half updates; E scans and
    // inserts; unknown names are refused.
    #[test]
    fn mixes_follow_upstream() {
        let a = Workload::named("a").unwrap();
        assert_eq!((a.pick(0.49), a.pick(0.51)), (OpKind::Read, OpKind::Update));
        let e = Workload::named("e").unwrap();
        assert_eq!((e.pick(0.01), e.pick(0.5)), (OpKind::Insert, OpKind::Scan));
        assert_eq!(Workload::named("d").unwrap().distribution, Distribution::Latest);
        assert_eq!(Workload::named("f").unwrap().pick(0.99), OpKind::ReadModifyWrite);
        assert_eq!(Workload::named("c").unwrap().pick(0.999_999), OpKind::Read);
        assert_eq!(Workload::named("load").unwrap().pick(0.0), OpKind::Insert);
        assert!(Workload::named("z").is_err());
    }
}
