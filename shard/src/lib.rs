//! corekv-shard: assembles a node out of shards — one glommio executor pinned to each core,
//! each owning its KV engine, its Raft log engine and its regions.
//!
//! Map (start with `node`):
//! - `node`: [`run_node`] starts a node: checks its config and data dir, computes the
//!   bootstrap `layout`, starts one pinned executor per shard, serves `/metrics`, and stops
//!   on request.
//! - `runtime`: one shard at run time: its loop over `raftstore::driver`, its ticker, request
//!   handling; `reads`: reads once their region caught up (where they run, how big a reply).
//! - `server`: the shard's listener and connections; `transport`: its raft transport to peer
//!   shards; `convert`: wire <-> raftstore types at that edge.
//! - `routing`: the node's region table (who hosts what, which leader it saw), shared by its
//!   shards, written only on leader changes.
//! - `admission`: the node's connection limits (in all, per client address).
//! - `config`, `metrics`, `error`; here: pinned executors and the process limits they need.
//!
//! Must not: contain raft or transaction logic (that is `raftstore` / `txn`, sans-I/O), or
//! share mutable state between shards except through explicit channels.

pub mod admission;
pub mod config;
pub mod convert;
pub mod error;
pub mod join;
pub mod layout;
pub mod metrics;
pub mod node;
pub mod reads;
pub mod routing;
pub mod runtime;
pub mod server;
pub mod transport;

use std::future::Future;

use glommio::{ExecutorJoinHandle, LocalExecutorBuilder, Placement};

pub use config::NodeConfig;
pub use error::{Error, Result};
pub use node::run_node;

/// The git commit this build is from ("unknown" outside a checkout).
pub const GIT_COMMIT: &str = env!("COREKV_GIT_COMMIT");
/// `<version> (<commit>)`: what every binary's `--version` prints after its name.
pub const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (", env!("COREKV_GIT_COMMIT"), ")");

/// glommio registers its io_uring buffers and needs at least this much locked memory.
pub const MEMLOCK_BYTES_MIN: u64 = 512 << 10;
/// What we raise the soft limit to when allowed: room for several executors per process.
const MEMLOCK_BYTES_WANTED: u64 = 64 << 20;

/// Raises RLIMIT_MEMLOCK's soft limit (up to the hard limit) and fails with a message naming
/// `ulimit -l` when even that is below [`MEMLOCK_BYTES_MIN`].
pub fn ensure_memlock() -> Result<(), Error> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid, writable rlimit.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0 {
        return Ok(()); // cannot tell: let glommio report it if it matters
    }
    if lim.rlim_cur >= MEMLOCK_BYTES_WANTED {
        return Ok(());
    }
    let want = MEMLOCK_BYTES_WANTED.min(lim.rlim_max);
    if want > lim.rlim_cur {
        let raised = libc::rlimit {
            rlim_cur: want,
            rlim_max: lim.rlim_max,
        };
        // SAFETY: `raised` is a valid rlimit; lowering or raising the soft limit within the
        // hard limit is always permitted.
        if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) } == 0 {
            lim.rlim_cur = want;
        }
    }
    if lim.rlim_cur < MEMLOCK_BYTES_MIN {
        return Err(Error::MemlockTooLow {
            have_bytes: lim.rlim_cur,
            need_bytes: MEMLOCK_BYTES_MIN,
            need_kib: MEMLOCK_BYTES_MIN / 1024,
        });
    }
    Ok(())
}

/// CPUs this process may run on (its affinity mask), ascending: where shards can be pinned.
pub fn available_cpus() -> Vec<usize> {
    let mut cpus: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    cpus.sort_unstable();
    cpus
}

/// Starts `f` on a new glommio executor pinned to `cpu` (as shard `shard`). Slow RocksDB
/// calls offloaded from it run on a blocking pool that is NOT pinned to the shard's core, so
/// they never stall the shard's own work.
pub fn start_pinned<F, Fut, T>(shard: usize, cpu: usize, f: F) -> Result<ExecutorJoinHandle<T>, Error>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    ensure_memlock()?;
    let available = available_cpus();
    if !available.contains(&cpu) {
        return Err(Error::NoSuchCpu { cpu, available });
    }
    LocalExecutorBuilder::new(Placement::Fixed(cpu))
        .name(&format!("shard-{shard}"))
        .blocking_thread_pool_placement(glommio::PoolPlacement::Unbound(2))
        .spawn(f)
        .map_err(|e| Error::Spawn {
            shard,
            cpu,
            reason: e.to_string(),
        })
}

/// Runs `f` as [`start_pinned`] does and waits for its result.
pub fn spawn_pinned<F, Fut, T>(shard: usize, cpu: usize, f: F) -> Result<T, Error>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
    T: Send + 'static,
{
    start_pinned(shard, cpu, f)?.join().map_err(|e| Error::Panicked {
        shard,
        reason: format!("{e:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a pinned executor runs its future and hands back the result.
    #[test]
    fn spawn_pinned_runs_on_a_pinned_executor() {
        let cpu = spawn_pinned(0, 0, || async { glommio::executor().id() }).unwrap();
        assert!(cpu > 0, "glommio executor ids start at 1");
    }

    // Proves pinning to a CPU the process cannot use is a clear, typed error.
    #[test]
    fn spawn_pinned_rejects_an_unavailable_cpu() {
        let cpus = available_cpus();
        assert!(!cpus.is_empty());
        let missing = cpus.iter().max().unwrap() + 1;
        match spawn_pinned(0, missing, || async {}) {
            Err(Error::NoSuchCpu { cpu, .. }) => assert_eq!(cpu, missing),
            other => panic!("expected NoSuchCpu, got {other:?}"),
        }
    }

    // Proves the memlock check passes where the limit allows glommio to run (as on CI).
    #[test]
    fn memlock_is_sufficient_or_raised() {
        ensure_memlock().expect("RLIMIT_MEMLOCK allows glommio on this machine");
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) }, 0);
        assert!(lim.rlim_cur >= MEMLOCK_BYTES_MIN);
    }
}
