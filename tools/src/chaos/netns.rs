//! The chaos run's private network: a network namespace the harness creates and enters, and
//! the nftables table that cuts and thins traffic inside it. (Each node's disk is a
//! `corekv_storage::tmpfs::Tmpfs`, so it can be filled without touching the host's.)
//!
//! Owns: creating and removing those two things, and nothing else. Must not: touch the
//! host's network namespace (every rule lives in the private one: the table is created only
//! after the harness entered it), or leave anything behind on a clean exit (each is removed
//! on drop).

use std::io::Write;
use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

const NETNS_PREFIX: &str = "corekv-chaos-";
const NFT_TABLE: &str = "corekv_chaos";

/// Runs `program args`, failing with its stderr.
fn run(program: &str, args: &[&str], stdin: Option<&str>) -> Result<()> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("run {program} (is it installed? scripts/deps.sh installs it)"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Fails with a clear reason unless this process runs as root.
pub fn require_root() -> Result<()> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("corekv-chaos needs root: it creates a network namespace, nftables rules and tmpfs mounts");
    }
    Ok(())
}

/// A network namespace of this process, entered by the calling thread: threads and processes
/// started from it afterwards live inside it. Deleted on drop.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates the namespace, brings its loopback up and moves the calling thread into it.
    /// Call before any thread is started: only threads created afterwards inherit it.
    pub fn create_and_enter() -> Result<NetNs> {
        remove_stale();
        let ns = NetNs {
            name: format!("{NETNS_PREFIX}{}", std::process::id()),
        };
        run("ip", &["netns", "add", &ns.name], None)?;
        run("ip", &["-n", &ns.name, "link", "set", "lo", "up"], None)?;
        let path = format!("/run/netns/{}", ns.name);
        let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
        // SAFETY: `file` is an open namespace descriptor; setns only changes this thread.
        if unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error()).context("setns into the chaos network namespace");
        }
        Ok(ns)
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        if let Err(e) = run("ip", &["netns", "delete", &self.name], None) {
            tracing::warn!(error = %e, "could not delete network namespace {}", self.name);
        }
    }
}

/// Deletes namespaces left by chaos runs whose process is gone (a run killed mid-way).
fn remove_stale() {
    let Ok(entries) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        let Some(pid) = name.strip_prefix(NETNS_PREFIX).and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = run("ip", &["netns", "delete", &name], None);
        }
    }
}

/// What a firewall rule does to packets from one address to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    Drop {
        from: Ipv4Addr,
        to: Ipv4Addr,
    },
    /// Drops this percentage of packets, at random.
    Loss {
        from: Ipv4Addr,
        to: Ipv4Addr,
        percent: u32,
    },
}

/// One nftables table in the chaos namespace; its output chain holds the current rules.
/// Made only by `install` (the private field), inside the namespace.
pub struct Firewall(());

impl Firewall {
    /// Creates the table. `_ns` proves the caller is inside the private namespace.
    pub fn install(_ns: &NetNs) -> Result<Firewall> {
        let script = format!(
            "table inet {NFT_TABLE} {{\n  chain out {{\n    type filter hook output priority 0; policy accept;\n  }}\n}}\n"
        );
        run("nft", &["-f", "-"], Some(&script))?;
        Ok(Firewall(()))
    }

    /// Replaces every rule with `rules` (empty: traffic flows freely).
    pub fn set(&self, rules: &[Rule]) -> Result<()> {
        run("nft", &["-f", "-"], Some(&ruleset(rules)))
    }
}

impl Drop for Firewall {
    fn drop(&mut self) {
        if let Err(e) = run("nft", &["delete", "table", "inet", NFT_TABLE], None) {
            tracing::warn!(error = %e, "could not delete the chaos nftables table");
        }
    }
}

/// The nft script that flushes the chain and adds `rules`, applied atomically by `nft -f`.
fn ruleset(rules: &[Rule]) -> String {
    let mut script = format!("flush chain inet {NFT_TABLE} out\n");
    for rule in rules {
        let line = match *rule {
            Rule::Drop { from, to } => format!("ip saddr {from} ip daddr {to} drop"),
            Rule::Loss { from, to, percent } => {
                assert!(percent <= 100);
                format!("ip saddr {from} ip daddr {to} numgen random mod 100 < {percent} drop")
            }
        };
        script += &format!("add rule inet {NFT_TABLE} out {line}\n");
    }
    script
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the nft script replaces the whole chain and spells each rule out.
    #[test]
    fn ruleset_flushes_then_adds_each_rule() {
        let (a, b) = (Ipv4Addr::new(127, 0, 0, 11), Ipv4Addr::new(127, 0, 0, 12));
        let script = ruleset(&[
            Rule::Drop { from: a, to: b },
            Rule::Loss {
                from: b,
                to: a,
                percent: 20,
            },
        ]);
        let lines: Vec<&str> = script.lines().collect();
        assert_eq!(lines[0], "flush chain inet corekv_chaos out");
        assert_eq!(
            lines[1],
            "add rule inet corekv_chaos out ip saddr 127.0.0.11 ip daddr 127.0.0.12 drop"
        );
        assert!(lines[2].ends_with("ip saddr 127.0.0.12 ip daddr 127.0.0.11 numgen random mod 100 < 20 drop"));
        assert_eq!(ruleset(&[]).lines().count(), 1);
    }
}
