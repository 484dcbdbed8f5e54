//! `corekv-bench heartbeats`: what the region directory costs the placement leader. Region
//! heartbeats for N regions are built and framed as a region leader's shard frames them, then
//! taken as the placement leader's shard takes them (frame checked and validated, converted,
//! judged against the directory), round after round; the figure is CPU microseconds per 1000
//! regions per heartbeat interval, and the share of one core that makes at the default
//! interval.
//!
//! Owns: the synthetic regions (N pre-split ranges, 3 replicas) and the table. Must not: time
//! anything but the code a node runs for this (the sender's size measurement, a RocksDB call,
//! is the region leader's cost and not counted here).

use std::time::Duration;

use anyhow::Result;
use corekv_netio::frame::{self, Body};
use corekv_netio::msg::ArchivedHeartbeat;
use corekv_raftstore::placement::directory::{Directory, Flow, RegionHeartbeat};
use corekv_raftstore::placement::PlacementConfig;
use corekv_raftstore::{Epoch, PeerMeta, Region};
use corekv_shard::convert;
use corekv_shard::runtime::directory::heartbeat_frames;

use crate::report::thread_cpu_time;

#[derive(clap::Args)]
pub struct HeartbeatArgs {
    /// Regions reported each round.
    #[arg(long, default_value_t = 10_000)]
    regions: u64,
    /// Rounds (heartbeat intervals) measured.
    #[arg(long, default_value_t = 50)]
    rounds: u64,
}

pub fn run(args: &HeartbeatArgs) -> Result<()> {
    anyhow::ensure!(
        args.regions > 0 && args.rounds > 0,
        "--regions and --rounds must be positive"
    );
    let mut directory = Directory::default();
    let (mut send, mut take) = (Duration::ZERO, Duration::ZERO);
    let mut frames_sent = 0;
    for round in 0..args.rounds {
        let heartbeats: Vec<RegionHeartbeat> = (0..args.regions).map(|i| heartbeat(i, args.regions, round)).collect();
        let t0 = thread_cpu_time();
        let frames = heartbeat_frames(&heartbeats, None);
        let t1 = thread_cpu_time();
        for (_, bytes) in &frames {
            receive(&mut directory, bytes, round)?;
        }
        let t2 = thread_cpu_time();
        (send, take) = (send + (t1 - t0), take + (t2 - t1));
        frames_sent += frames.len();
    }
    anyhow::ensure!(
        directory.region_count() as u64 == args.regions,
        "every region is in the directory"
    );
    let per_1000 = |d: Duration| d.as_secs_f64() * 1e6 / args.rounds as f64 / args.regions as f64 * 1000.0;
    let interval_us = PlacementConfig::default().heartbeat_interval_ms as f64 * 1000.0;
    println!(
        "region heartbeats: {} regions x {} rounds, {} frames",
        args.regions, args.rounds, frames_sent
    );
    println!(
        "  a region leader's shard, framing:  {:>8.0} us CPU per 1000 regions",
        per_1000(send)
    );
    println!(
        "  the placement leader, taking:      {:>8.0} us CPU per 1000 regions per interval ({:.3}% of a core at {} ms)",
        per_1000(take),
        per_1000(take) / interval_us * 100.0,
        interval_us / 1000.0
    );
    Ok(())
}

/// Takes one frame as the placement leader's shard does.
fn receive(directory: &mut Directory, bytes: &[u8], round: u64) -> Result<()> {
    let (header, body) = bytes.split_at(frame::HEADER_BYTES);
    let header = frame::Header::decode(header.try_into()?, u32::MAX)?;
    header.check_body(body)?;
    let mut aligned = Body::with_capacity(body.len());
    aligned.extend_from_slice(body);
    let archived = frame::access::<ArchivedHeartbeat>(&aligned)?;
    for h in archived.regions.iter() {
        directory.region_heartbeat(convert::region_heartbeat_from(h), round * 2000)?;
    }
    Ok(())
}

/// Region `i` of `n` (pre-split over 8-byte keys) as its leader reports it in `round`.
fn heartbeat(i: u64, n: u64, round: u64) -> RegionHeartbeat {
    let bound = |j: u64| {
        if j == 0 || j == n {
            Vec::new()
        } else {
            (j * (u64::MAX / n)).to_be_bytes().to_vec()
        }
    };
    let peers: Vec<PeerMeta> = (1..=3)
        .map(|node| PeerMeta::voter((i + 2) * 1000 + node, node, (i % 2) as u32))
        .collect();
    RegionHeartbeat {
        region: Region {
            id: i + 2,
            start: bound(i),
            end: bound(i + 1),
            epoch: Epoch {
                conf_ver: 1,
                version: 1,
            },
            peers: peers.clone(),
        },
        leader: peers[(i % 3) as usize],
        term: 1 + round,
        approximate_bytes: 96 << 20,
        approximate_keys: 1 << 20,
        flow: Flow {
            written_bytes: 1 << 20,
            written_keys: 1000,
            read_bytes: 4 << 20,
            read_keys: 4000,
            queries: 5000,
        },
    }
}
