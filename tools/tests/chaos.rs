//! The chaos harness end to end: a short run of `corekv-chaos` against real server processes
//! (needs root, as `make test` and CI have: network namespace, nftables, tmpfs).

use std::process::Command;

const SECONDS: &str = "40";

// Proves a short chaos run injects faults of several kinds into a running cluster and passes
// its three checks (linearizable history, no lost acknowledged write, every node serving),
// and that the run leaves its history, nemesis log, node logs and summary behind.
#[test]
fn a_short_chaos_run_injects_faults_and_passes_its_checks() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_corekv-chaos"))
        .args(["--duration-secs", SECONDS, "--seed", "20261202", "--results"])
        .arg(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let run = dir.path().join("chaos-20261202");
    if !out.status.success() {
        // Keep the history and the node logs for whoever reads the failure.
        let kept = dir.keep();
        panic!(
            "corekv-chaos failed (its folder is kept: {}):\n{stdout}\n{stderr}",
            kept.display()
        );
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(run.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["passed"], true, "{summary}");
    assert!(summary["faults_injected"].as_u64().unwrap() >= 5, "{summary}");
    let kinds = summary["faults"]
        .as_object()
        .unwrap()
        .values()
        .filter(|n| n.as_u64() > Some(0))
        .count();
    assert!(kinds >= 3, "{summary}");
    assert!(summary["operations"].as_u64().unwrap() > 500, "{summary}");
    for file in ["history.jsonl", "nemesis.jsonl", "node-1.log", "corekv.toml"] {
        assert!(run.join(file).exists(), "{file} missing");
    }
    assert!(stdout.contains("linearizable: yes, lost writes: 0"), "{stdout}");
}
