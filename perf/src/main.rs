//! `corekv-bench`: corekv measured side by side with its floor and its peers.
//!
//! Owns: the command line. Each subcommand lives in its own module: `storage` (both engines
//! against the disk's floor and RocksDB-as-raft-log), `raft` (the Multi-Raft core in the
//! simulator), `ycsb` (YCSB workloads against a running corekv or etcd cluster), `compare`
//! (the same YCSB workloads on corekv and etcd side by side, with the fdatasync floor), `tls`
//! (a plain and a TLS cluster side by side: what mutual TLS costs), `tso` (timestamps from 1
//! and from many callers, batched, beside a put).
//! Must not: hold benchmark logic: it parses the command line and calls the subcommand's `run`.

mod compare;
mod echo;
mod floor;
mod heartbeats;
mod plot;
mod raft;
mod report;
mod storage;
mod tls;
mod tso;
mod ycsb;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "corekv-bench",
    version = corekv_shard::VERSION,
    about = "corekv benchmarks; figures are taken side by side in one run"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Storage engines vs the raw fdatasync floor and vs RocksDB used as the raft log.
    Storage(storage::StorageArgs),
    /// The Multi-Raft core in the simulator: proposals/s per shard, core vs log engine time.
    Raft(raft::RaftArgs),
    /// YCSB workloads against a running corekv cluster (e.g. the playground's) or etcd.
    Ycsb(ycsb::YcsbArgs),
    /// corekv vs etcd: the same workloads on both, alternating, with the fdatasync floor
    /// (`make bench-compare` starts the servers).
    Compare(compare::CompareArgs),
    /// What mutual TLS costs: a plain and a TLS cluster (started here), put and get on both,
    /// alternating.
    Tls(tls::TlsArgs),
    /// The TSO through a local cluster (started here): get_ts from 1 and from many callers
    /// (batched), beside a put.
    Tso(tso::TsoArgs),
    /// What region heartbeats cost: CPU per 1000 regions per interval, framing and taking.
    Heartbeats(heartbeats::HeartbeatArgs),
}

fn main() -> std::process::ExitCode {
    corekv_tools::run_main("corekv-bench", run)
}

fn run() -> anyhow::Result<()> {
    corekv_tools::init_logging("warn", None)?;
    match Cli::parse().command {
        Command::Storage(args) => storage::run(&args),
        Command::Raft(args) => raft::run(&args),
        Command::Ycsb(args) => ycsb::run(&args),
        Command::Compare(args) => compare::run(&args),
        Command::Tls(args) => tls::run(&args),
        Command::Tso(args) => tso::run(&args),
        Command::Heartbeats(args) => heartbeats::run(&args),
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    // Proves `--help` explains every flag, argument and subcommand (none is undocumented).
    #[test]
    fn every_argument_is_documented() {
        Cli::command().debug_assert();
        assert_eq!(corekv_tools::undocumented(&Cli::command()), Vec::<String>::new());
    }
}
