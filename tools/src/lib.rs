//! corekv-tools: what the binaries share — process setup (logging, exit codes, a glommio
//! executor for the client) and the playground's demo workload.
//!
//! Binaries: `corekv-server` (a node), `corekv-ctl` (one-shot client commands),
//! `corekv-playground` (a local cluster of server processes), `corekv-storage-demo` (both
//! engines of one shard, no network), `corekv-chaos` (faults against a cluster of server
//! processes, judged by a linearizability check).
//!
//! Owns: that setup (`run_main`, `init_logging`, `on_executor`), the client's `TlsArgs`, and
//! `undocumented`, every binary's check that `--help` explains each flag. Must not: hold logic
//! the node needs: `shard` does not depend on this crate.

pub mod bytes;
pub mod certs;
pub mod chaos;
pub mod cluster;
pub mod control;
pub mod demo;
pub mod directory;
pub mod membership;

use std::process::ExitCode;

/// A client's TLS options, the same on every binary that talks to a cluster: the CA the
/// nodes' certificates are signed by, and this client's certificate and key (all PEM).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TlsArgs {
    /// CA certificate the cluster's certificates are signed by (turns TLS on, with the next two).
    #[arg(long, env = "COREKV_CA_PATH", requires_all = ["cert_path", "key_path"])]
    pub ca_path: Option<std::path::PathBuf>,
    /// This client's certificate (signed by that CA).
    #[arg(long, env = "COREKV_CERT_PATH", requires = "ca_path")]
    pub cert_path: Option<std::path::PathBuf>,
    /// This client's private key.
    #[arg(long, env = "COREKV_KEY_PATH", requires = "ca_path")]
    pub key_path: Option<std::path::PathBuf>,
}

impl TlsArgs {
    /// The client TLS these options name (None: plain TCP).
    pub fn load(&self) -> anyhow::Result<Option<corekv_netio::tls::Tls>> {
        let (Some(ca), Some(cert), Some(key)) = (&self.ca_path, &self.cert_path, &self.key_path) else {
            return Ok(None);
        };
        let files = corekv_netio::tls::TlsFiles {
            ca_path: ca.clone(),
            cert_path: cert.clone(),
            key_path: key.clone(),
            allowed_cn: Vec::new(),
        };
        Ok(Some(corekv_netio::tls::Tls::load(&files)?))
    }
}

/// The arguments and subcommands of `cmd` (and of its subcommands) that `--help` would list
/// without a word of explanation, as `command path: argument`. Every binary's test asserts
/// none: a flag nobody can learn about from `--help` is a defect.
pub fn undocumented(cmd: &clap::Command) -> Vec<String> {
    let mut missing = Vec::new();
    let path = cmd.get_name().to_string();
    for arg in cmd.get_arguments() {
        if arg.get_help().is_none() && arg.get_long_help().is_none() {
            missing.push(format!("{path}: {}", arg.get_id()));
        }
    }
    for sub in cmd.get_subcommands() {
        if sub.get_about().is_none() && sub.get_long_about().is_none() {
            missing.push(format!("{path}: subcommand {}", sub.get_name()));
        }
        missing.extend(undocumented(sub).into_iter().map(|m| format!("{path} {m}")));
    }
    missing
}

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

/// Logs at `level` (`RUST_LOG`, if set, wins: `info`, `corekv_shard=debug,warn`, ...) to stderr,
/// or appended to `file`. glommio's ERROR about its IOPOLL probe is expected and harmless (see
/// storage::raftlog::disk), so that target is off unless `RUST_LOG` names glommio.
pub fn init_logging(level: &str, file: Option<&std::path::Path>) -> anyhow::Result<()> {
    let mut filter = std::env::var("RUST_LOG").unwrap_or_else(|_| level.to_string());
    if !filter.contains("glommio") {
        filter.push_str(",glommio::reactor=off");
    }
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| anyhow::anyhow!("log level `{filter}`: {e} (try error, warn, info, debug or trace)"))?;
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    match file {
        Some(path) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| anyhow::anyhow!("--log-file {}: {e}", path.display()))?;
            builder.with_writer(std::sync::Mutex::new(file)).with_ansi(false).init();
        }
        None => builder
            .with_writer(std::io::stderr)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    Ok(())
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
