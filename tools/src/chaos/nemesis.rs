//! The nemesis: a seeded schedule of faults and the code that injects and heals each one.
//!
//! Owns: what a fault is (`Fault`), the schedule (`Schedule::next`: a pure function of the
//! seed and of which node leads most regions when asked), and injecting / healing a fault
//! against the cluster, the firewall and the nodes' disks (`Nemesis`); region changes (a split, a replica move,
//! a leader transfer) are asked of the cluster as `corekv-ctl` asks them, through a client of
//! their own. Must not: judge the run, or read the workload's history.
//!
//! The same seed gives the same sequence of fault kinds, holds and gaps; the nodes a
//! leader-targeted fault picks depend on which node led at the time.

use std::net::Ipv4Addr;
use std::time::Duration;

use anyhow::Result;
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use corekv_storage::tmpfs::Tmpfs;

use super::netns::{Firewall, Rule};
use super::workload::KEYS;
use crate::cluster::LocalCluster;

/// How long a fault lasts, and the quiet time after it heals.
const HOLD_MS_MIN: u64 = 1_000;
const HOLD_MS_MAX: u64 = 4_000;
const GAP_MS_MIN: u64 = 300;
const GAP_MS_MAX: u64 = 1_500;
/// Packet loss between nodes, in percent of packets.
const LOSS_PERCENT_MIN: u32 = 5;
const LOSS_PERCENT_MAX: u32 = 40;
/// How long each half of a replica move (add, then remove) may take before it is given up.
const MOVE_STEP_WAIT: Duration = Duration::from_secs(10);
/// Out of 4: how often a node fault aims at the node leading most regions.
const LEADER_BIAS_OF_4: u64 = 3;
const _: () = assert!(HOLD_MS_MIN <= HOLD_MS_MAX && GAP_MS_MIN <= GAP_MS_MAX && LOSS_PERCENT_MAX <= 100);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// kill -9, restarted when healed.
    Kill { node: u64 },
    /// SIGSTOP, SIGCONT when healed.
    Pause { node: u64 },
    /// `node` can reach no other node, nor they it (majority / minority: with three nodes, a
    /// minority is one node; the leader's or another's).
    Isolate { node: u64 },
    /// Every pair but one is cut: `bridge` still talks to both others, which cannot talk to
    /// each other.
    Bridge { bridge: u64 },
    /// Random loss between every pair of nodes.
    Loss { percent: u32 },
    /// The node's data disk is filled to ENOSPC, freed when healed.
    DiskFull { node: u64 },
    /// The region holding workload key `key` splits at that key (nothing where a region starts
    /// there already, or when the cluster cannot do it now).
    Split { key: u64 },
    /// The region holding workload key `key` is handed to its replica on node `to` (refused
    /// while that replica lags).
    Transfer { key: u64, to: u64 },
    /// The region holding workload key `key` moves its replica on `node` to the node's next
    /// shard (add a learner there, promote it, demote and remove the old one), as `corekv-ctl
    /// region add-peer` and `remove-peer` do.
    Move { key: u64, node: u64 },
}

impl Fault {
    pub fn name(&self) -> &'static str {
        match self {
            Fault::Kill { .. } => "kill",
            Fault::Pause { .. } => "pause",
            Fault::Isolate { .. } => "isolate",
            Fault::Bridge { .. } => "bridge",
            Fault::Loss { .. } => "loss",
            Fault::DiskFull { .. } => "disk-full",
            Fault::Split { .. } => "split",
            Fault::Transfer { .. } => "transfer-leader",
            Fault::Move { .. } => "move",
        }
    }

    pub const NAMES: [&'static str; 9] = [
        "kill",
        "pause",
        "isolate",
        "bridge",
        "loss",
        "disk-full",
        "split",
        "transfer-leader",
        "move",
    ];
}

/// One planned fault: what, for how long, and the quiet time after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Step {
    pub fault: Fault,
    pub hold: Duration,
    pub gap: Duration,
}

/// The seeded fault schedule.
pub struct Schedule {
    rng: ChaCha8Rng,
    nodes: u64,
}

impl Schedule {
    pub fn new(seed: u64, nodes: u64) -> Schedule {
        assert!(nodes >= 3, "partitions need three nodes");
        Schedule {
            rng: ChaCha8Rng::seed_from_u64(seed),
            nodes,
        }
    }

    fn below(&mut self, n: u64) -> u64 {
        self.rng.next_u64() % n
    }

    fn between(&mut self, min: u64, max: u64) -> u64 {
        min + self.below(max - min + 1)
    }

    /// The next step; node faults aim at `leader` (the node leading most regions) more often.
    pub fn next(&mut self, leader: Option<u64>) -> Step {
        let kind = self.below(Fault::NAMES.len() as u64);
        let random_node = 1 + self.below(self.nodes);
        let aim = self.below(4) < LEADER_BIAS_OF_4;
        let node = leader.filter(|_| aim).unwrap_or(random_node);
        let fault = match kind {
            0 => Fault::Kill { node },
            1 => Fault::Pause { node },
            2 => Fault::Isolate { node },
            3 => Fault::Bridge { bridge: random_node },
            4 => Fault::Loss {
                percent: self.between(u64::from(LOSS_PERCENT_MIN), u64::from(LOSS_PERCENT_MAX)) as u32,
            },
            5 => Fault::DiskFull { node },
            6 => Fault::Split { key: self.below(KEYS) },
            7 => Fault::Transfer {
                key: self.below(KEYS),
                to: random_node,
            },
            _ => Fault::Move {
                key: self.below(KEYS),
                node: random_node,
            },
        };
        Step {
            fault,
            hold: Duration::from_millis(self.between(HOLD_MS_MIN, HOLD_MS_MAX)),
            gap: Duration::from_millis(self.between(GAP_MS_MIN, GAP_MS_MAX)),
        }
    }
}

/// Node `k`'s address in the chaos namespace.
pub fn node_ip(k: u64) -> Ipv4Addr {
    assert!((1..=200).contains(&k));
    Ipv4Addr::new(127, 0, 0, 10 + k as u8)
}

/// Firewall rules of a partition or loss fault (both directions of every affected pair).
pub fn rules(fault: Fault, nodes: u64) -> Vec<Rule> {
    let pairs = (1..=nodes).flat_map(|a| (1..=nodes).filter(move |&b| b != a).map(move |b| (a, b)));
    let cut = |a: u64, b: u64| match fault {
        Fault::Isolate { node } => a == node || b == node,
        Fault::Bridge { bridge } => a != bridge && b != bridge,
        Fault::Loss { .. } => true,
        _ => false,
    };
    pairs
        .filter(|&(a, b)| cut(a, b))
        .map(|(a, b)| {
            let (from, to) = (node_ip(a), node_ip(b));
            match fault {
                Fault::Loss { percent } => Rule::Loss { from, to, percent },
                _ => Rule::Drop { from, to },
            }
        })
        .collect()
}

/// Injects and heals faults on a running cluster.
pub struct Nemesis<'a> {
    pub cluster: &'a mut LocalCluster,
    pub firewall: &'a Firewall,
    /// Node k's data disk at `disks[k - 1]`.
    pub disks: &'a [Tmpfs],
}

impl Nemesis<'_> {
    pub fn inject(&mut self, fault: Fault) -> Result<()> {
        let nodes = self.cluster.spec().nodes;
        match fault {
            Fault::Kill { node } => self.cluster.kill(node)?,
            Fault::Pause { node } => {
                self.cluster.signal(node, libc::SIGSTOP)?;
            }
            Fault::Isolate { .. } | Fault::Bridge { .. } | Fault::Loss { .. } => {
                self.firewall.set(&rules(fault, nodes))?
            }
            Fault::DiskFull { node } => {
                self.disks[(node - 1) as usize].fill(0)?;
            }
            Fault::Split { .. } | Fault::Transfer { .. } | Fault::Move { .. } => self.change_region(fault),
        }
        Ok(())
    }

    /// Asks the cluster for a region change, as `corekv-ctl region split | transfer-leader |
    /// add-peer + remove-peer` would; refused or not done in time is part of the game (said,
    /// not an error).
    fn change_region(&self, fault: Fault) {
        let endpoints = self.cluster.spec().endpoints();
        let shards = self.cluster.spec().shards;
        let done = crate::on_executor(move || async move {
            let client = corekv_netio::Client::connect(super::workload::client_config(endpoints)).await?;
            let key = super::workload::key(match fault {
                Fault::Split { key } | Fault::Transfer { key, .. } | Fault::Move { key, .. } => key,
                _ => unreachable!("a region change"),
            });
            let holder = client.regions().into_iter().find(|r| r.region.contains(key.as_bytes()));
            let region = holder
                .map(|r| r.region)
                .ok_or_else(|| anyhow::anyhow!("no region known"))?;
            match fault {
                Fault::Transfer { to, .. } => client.transfer_leader(region.id, to).await?,
                Fault::Move { node, .. } => {
                    let from = (region.peers.iter().find(|p| p.node == node))
                        .ok_or_else(|| anyhow::anyhow!("no replica on node {node}"))?;
                    let (to, wait) = ((from.shard + 1) % shards, MOVE_STEP_WAIT);
                    crate::membership::add_peer(&client, region.id, (node, to), false, wait).await?;
                    crate::membership::remove_peer(&client, region.id, (node, Some(from.shard)), wait).await?;
                }
                _ => client.split_region(key.as_bytes()).await?,
            }
            Ok(())
        });
        if let Err(e) = done {
            println!("           ({fault:?} not done: {e})");
        }
    }

    pub fn heal(&mut self, fault: Fault) -> Result<()> {
        match fault {
            Fault::Kill { node } => self.cluster.restart(node)?,
            Fault::Pause { node } => {
                self.cluster.signal(node, libc::SIGCONT)?;
            }
            Fault::Isolate { .. } | Fault::Bridge { .. } | Fault::Loss { .. } => self.firewall.set(&[])?,
            Fault::DiskFull { node } => self.disks[(node - 1) as usize].free()?,
            Fault::Split { .. } | Fault::Transfer { .. } | Fault::Move { .. } => {}
        }
        Ok(())
    }

    /// Heals everything that may still be wrong (the end of a run, or after an error): traffic
    /// flows, no node is paused, every disk has space, every node runs.
    pub fn heal_all(&mut self) -> Result<()> {
        self.firewall.set(&[])?;
        for disk in self.disks {
            disk.free()?;
        }
        for k in 1..=self.cluster.spec().nodes {
            if self.cluster.is_running(k) {
                self.cluster.signal(k, libc::SIGCONT)?;
            } else {
                self.cluster.restart(k)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the schedule is a function of the seed (and of the leader it is told), reaches
    // every kind of fault, and keeps holds and gaps inside their bounds.
    #[test]
    fn schedule_is_seeded_covers_every_fault_and_stays_in_bounds() {
        let steps = |seed| {
            let mut s = Schedule::new(seed, 3);
            (0..200).map(|i| s.next(Some(1 + i % 3))).collect::<Vec<_>>()
        };
        let (a, b) = (steps(7), steps(7));
        assert_eq!(a, b);
        assert_ne!(a, steps(8));
        for name in Fault::NAMES {
            assert!(a.iter().any(|s| s.fault.name() == name), "{name} never scheduled");
        }
        for s in &a {
            assert!((HOLD_MS_MIN..=HOLD_MS_MAX).contains(&(s.hold.as_millis() as u64)));
            assert!((GAP_MS_MIN..=GAP_MS_MAX).contains(&(s.gap.as_millis() as u64)));
        }
        let on_leader = a
            .iter()
            .enumerate()
            .filter(|(i, s)| matches!(s.fault, Fault::Kill { node } if node == 1 + *i as u64 % 3))
            .count();
        let kills = a.iter().filter(|s| s.fault.name() == "kill").count();
        assert!(on_leader * 2 > kills, "{on_leader} of {kills} kills on the leader");
    }

    // Proves each partition cuts exactly the pairs it names, in both directions.
    #[test]
    fn partitions_cut_the_right_pairs() {
        let drops = |fault| {
            let mut pairs: Vec<(u8, u8)> = rules(fault, 3)
                .into_iter()
                .map(|r| match r {
                    Rule::Drop { from, to } => (from.octets()[3] - 10, to.octets()[3] - 10),
                    Rule::Loss { .. } => panic!("a partition drops"),
                })
                .collect();
            pairs.sort();
            pairs
        };
        assert_eq!(drops(Fault::Isolate { node: 2 }), vec![(1, 2), (2, 1), (2, 3), (3, 2)]);
        assert_eq!(drops(Fault::Bridge { bridge: 2 }), vec![(1, 3), (3, 1)]);
        let loss = rules(Fault::Loss { percent: 10 }, 3);
        assert!(loss.len() == 6 && loss.iter().all(|r| matches!(r, Rule::Loss { percent: 10, .. })));
        assert!(rules(Fault::Kill { node: 1 }, 3).is_empty());
    }
}
