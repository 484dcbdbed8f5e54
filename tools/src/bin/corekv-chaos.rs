//! corekv-chaos: faults against a 3-node cluster of `corekv-server` processes in a private
//! network namespace, judged by a linearizability check of the clients' history (see
//! `corekv_tools::chaos`). Needs root. Exit code 0 only if the run passed.
//!
//! Owns: the command line only. Must not: start a thread before the run enters its network
//! namespace (`chaos::run` moves this, the main thread, into it).

use clap::Parser;
use corekv_tools::chaos::{self, ChaosArgs};

/// Inject faults into a local 3-node cluster and check what the clients saw.
#[derive(Parser)]
#[command(name = "corekv-chaos", version = corekv_shard::VERSION)]
struct Cli {
    #[command(flatten)]
    args: ChaosArgs,
}

fn main() -> std::process::ExitCode {
    // The network namespace is entered by this (main) thread before any other starts.
    corekv_tools::run_main("corekv-chaos", || {
        corekv_tools::init_logging("warn", None)?;
        chaos::run_and_report(&Cli::parse().args)
    })
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
