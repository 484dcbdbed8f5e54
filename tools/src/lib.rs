//! corekv-tools: what the binaries share — process setup (logging, exit codes, a glommio
//! executor for the client) and the playground's demo workload.
//!
//! Binaries: `corekv-server` (a node), `corekv-ctl` (one-shot client commands),
//! `corekv-playground` (a local cluster of server processes), `corekv-storage-demo` (both
//! engines of one shard, no network), `corekv-chaos` (faults against a cluster of server
//! processes, judged by a linearizability check).

pub mod chaos;
pub mod cluster;
pub mod demo;

use std::process::ExitCode;

/// Runs a binary's body: exit code 0, or 1 with a one-line reason on stderr.
pub fn run_main(name: &str, body: impl FnOnce() -> anyhow::Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Logs to stderr; `RUST_LOG` overrides `default`. glommio's IOPOLL probe failure is expected
/// (see storage::raftlog::disk), so that target is quiet unless asked for.
pub fn init_logging(default: &str) {
    let filter = std::env::var("RUST_LOG").unwrap_or_else(|_| format!("{default},glommio::reactor=off"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

/// Runs `f` on a glommio executor of its own (the client's home) and returns its result.
pub fn on_executor<F, Fut, T>(f: F) -> anyhow::Result<T>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = anyhow::Result<T>> + 'static,
    T: Send + 'static,
{
    corekv_shard::ensure_memlock()?;
    glommio::LocalExecutorBuilder::default()
        .name("client")
        .spawn(f)
        .map_err(|e| anyhow::anyhow!("cannot start a glommio executor: {e}"))?
        .join()
        .map_err(|e| anyhow::anyhow!("client executor failed: {e:?}"))?
}
