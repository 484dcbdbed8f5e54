//! The playground as a new user drives it: a node killed from another terminal (through the
//! playground, or with kill -9 on its pid) is reported, the others run on and serve, and
//! `restart` brings it back.

use std::io::{BufRead, BufReader, Lines};
use std::process::{ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::*;

/// The playground process, stopped (SIGKILL; its nodes follow by PDEATHSIG) if the test fails.
struct Playground(std::process::Child);

impl Drop for Playground {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `corekv-playground CMD --node K --data-dir DIR`: (succeeded, what it printed).
fn control(dir: &std::path::Path, cmd: &str, node: u64) -> (bool, String) {
    control_args(dir, &[cmd, "--node", &node.to_string()])
}

fn control_args(dir: &std::path::Path, args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-playground"))
        .args(args)
        .arg("--data-dir")
        .arg(dir)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(if out.status.success() { &out.stdout } else { &out.stderr });
    (out.status.success(), text.into_owned())
}

/// The playground's stdout lines up to and including the first that starts with `prefix`.
fn lines_until(lines: &mut Lines<BufReader<ChildStdout>>, prefix: &str) -> Vec<String> {
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.starts_with(prefix);
        seen.push(line);
        if done {
            return seen;
        }
    }
    panic!("the playground ended before printing {prefix:?}: {seen:?}");
}

fn all_healthy(endpoints: &str) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, _) = ctl(endpoints, &["endpoint", "health", "--cluster"]);
        if code == 0 && out.matches("is healthy").count() == 3 {
            return true;
        }
        if Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

// Proves the playground keeps the other nodes running when one is killed (through `kill` or
// kill -9 from outside), reports it, refuses what makes no sense (killing a dead node,
// restarting a live one, a node it does not have), restarts nodes on request, adds a fourth node
// that joins (`scale-out`: it shows up in `store list`), drains and stops it again (`scale-in`:
// its replica moves back to a bootstrap node; a bootstrap node is refused), and still stops every
// node cleanly on SIGTERM.
#[test]
fn the_playground_survives_a_killed_node_and_restarts_it() {
    let dir = tempfile::tempdir().unwrap();
    let base = free_base_port();
    let mut child = Command::new(env!("CARGO_BIN_EXE_corekv-playground"))
        .args([
            "--nodes",
            "3",
            "--shards",
            "2",
            "--base-port",
            &base.to_string(),
            "--data-dir",
        ])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut playground = Playground(child);
    let banner = lines_until(&mut lines, "press Ctrl-C");
    let endpoints = banner
        .iter()
        .find_map(|l| l.strip_prefix("endpoints: "))
        .unwrap()
        .to_string();

    assert_eq!(
        control(dir.path(), "kill", 2),
        (true, "node 2 killed (SIGKILL)\n".into())
    );
    assert_eq!(ctl(&endpoints, &["raw", "put", "k", "v"]).1, "OK\n");
    let (ok, why) = control(dir.path(), "kill", 2);
    assert!(!ok && why.contains("node 2 is not running"), "{why}");
    assert!(!control(dir.path(), "restart", 9).0);
    assert!(control(dir.path(), "restart", 2).1.starts_with("node 2 started again"));
    assert!(!control(dir.path(), "restart", 2).0, "node 2 runs already");

    let node3 = banner.iter().find(|l| l.trim_start().starts_with("node 3 ")).unwrap();
    let pid: i32 = node3.rsplit("pid ").next().unwrap().parse().unwrap();
    // SAFETY: kill(2) on a pid the playground reported for its own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGKILL) }, 0);
    let reported = lines_until(&mut lines, "node 3 exited");
    assert!(reported.last().unwrap().contains("the others run on"), "{reported:?}");
    assert_eq!(ctl(&endpoints, &["raw", "get", "k"]).1, "v\n");
    assert!(control(dir.path(), "restart", 3).0);
    assert!(all_healthy(&endpoints), "every node answers after the restarts");

    let (ok, said) = control_args(dir.path(), &["scale-out"]);
    assert!(ok && said.starts_with("node 4 joining"), "{said}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let stores = || {
        let listed: serde_json::Value =
            serde_json::from_str(&ctl(&endpoints, &["-w", "json", "store", "list"]).1).unwrap_or_default();
        // Stores that reported (a joining store is listed as soon as it is registered).
        let stores = listed["stores"].as_array().cloned().unwrap_or_default();
        stores.iter().filter(|s| !s["last_heartbeat_ms_ago"].is_null()).count()
    };
    while stores() != 4 {
        assert!(Instant::now() < deadline, "node 4 never showed up in store list");
        std::thread::sleep(Duration::from_millis(200));
    }

    // scale-in: a replica moved onto node 4 goes back to the one store without it, then the
    // node stops; a bootstrap node (a system region replica) is refused.
    let (ok, why) = control(dir.path(), "scale-in", 1);
    assert!(!ok && why.contains("system region"), "{why}");
    let info = match raw_call(endpoints.split(',').next().unwrap(), &cluster_info_request()) {
        corekv_netio::msg::Reply::Cluster(info) => info,
        other => panic!("{other:?}"),
    };
    let region = info.regions[0].region.id.to_string();
    let listed: serde_json::Value = serde_json::from_str(&ctl(&endpoints, &["-w", "json", "store", "list"]).1).unwrap();
    let fourth = (listed["stores"].as_array().unwrap().iter())
        .filter_map(|s| s["id"].as_u64())
        .find(|id| *id > 3)
        .unwrap()
        .to_string();
    let change = |verb: &str, store: &str| {
        let (code, _, err) = ctl(&endpoints, &["region", verb, "--id", &region, "--store", store]);
        assert_eq!(code, 0, "{verb} on store {store}: {err}");
    };
    change("add-peer", &fourth);
    change("remove-peer", "1");
    let (ok, said) = control(dir.path(), "scale-in", 4);
    assert!(ok && said.contains("scaled in: 1 replica moved"), "{said}");
    let moved = lines_until(&mut lines, "node 4 (store");
    assert!(
        moved
            .iter()
            .any(|l| l.contains(&format!("region {region}: its replica on node 4 moved to store 1"))),
        "{moved:?}"
    );
    let (code, shown, err) = ctl(&endpoints, &["-w", "json", "region", "show", "--id", &region]);
    assert_eq!(code, 0, "{err}");
    let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
    let mut nodes: Vec<u64> = (shown["regions"][0]["peers"].as_array().unwrap().iter())
        .map(|p| p["node"].as_u64().unwrap())
        .collect();
    nodes.sort();
    assert_eq!(nodes, [1, 2, 3], "{shown}");
    assert_eq!(ctl(&endpoints, &["raw", "get", "k"]).1, "v\n");

    // SAFETY: SIGTERM to the playground we started.
    assert_eq!(unsafe { libc::kill(playground.0.id() as i32, libc::SIGTERM) }, 0);
    assert!(playground.0.wait().unwrap().success());
    let tail: Vec<String> = lines.map(Result::unwrap).collect();
    assert!(tail.iter().any(|l| l == "stopped 4 nodes"), "{tail:?}");
}
