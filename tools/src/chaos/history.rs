//! The chaos run's client history: one JSON line per operation as the client saw it, and the
//! two end-of-run judgements over it — linearizability per key (the checker in
//! `corekv_raftstore::linearizability`) and lost acknowledged writes.
//!
//! Owns: the record format (`Record`, written by the workload, read back by `load`) and the
//! lost-write rule (`lost_writes`). Must not: run anything; it judges a recorded file, so a
//! failing run can be re-judged from its results folder.
//!
//! A line: `{"client":3,"op":"put","key":"K05","value":"3-17","found":null,"call_ns":..,
//! "return_ns":..}`; `return_ns` is -1 when the outcome is unknown (a timeout, a connection
//! lost with the write in flight). `op` is put, get, delete, cas or scan. get: `value` is what
//! was read, `found` whether the key existed. cas: `expected` (absent: null), `value` the new
//! value (null: delete), `found` whether it swapped. scan: `key`..`end` (`end` null: unbounded)
//! and the `rows` it returned.

use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

use anyhow::{Context, Result};
use corekv_raftstore::linearizability::{self, CheckResult, Op, OpKind, Scan};
use serde::{Deserialize, Serialize};

/// `return_ns` of an operation whose outcome is unknown.
pub const UNKNOWN: i64 = -1;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    pub client: u64,
    pub op: Kind,
    pub key: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end: Option<String>,
    #[serde(default)]
    pub expected: Option<String>,
    pub value: Option<String>,
    pub found: Option<bool>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rows: Vec<(String, String)>,
    pub call_ns: i64,
    pub return_ns: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Put,
    Get,
    Delete,
    Cas,
    Scan,
}

impl Record {
    fn returned(&self) -> Option<i64> {
        (self.return_ns != UNKNOWN).then_some(self.return_ns)
    }

    fn is_write(&self) -> bool {
        matches!(self.op, Kind::Put | Kind::Delete | Kind::Cas)
    }
}

/// Reads a history file written by the workload (one `Record` per line).
pub fn load(path: &Path) -> Result<Vec<Record>> {
    let file = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    let mut records = Vec::new();
    for (n, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let record: Record = serde_json::from_str(&line)
            .with_context(|| format!("{}:{}: not a history record", path.display(), n + 1))?;
        records.push(record);
    }
    Ok(records)
}

/// The history as the checker's per-key ops; scans become per-key reads of every key the
/// history touches (`linearizability::expand_scan`).
pub fn to_ops(records: &[Record]) -> Result<Vec<Op>> {
    let bytes = |s: &Option<String>| s.as_ref().map(|v| v.as_bytes().to_vec());
    let mut ops = Vec::with_capacity(records.len());
    let mut scans = Vec::new();
    for r in records {
        let kind = match r.op {
            Kind::Put => OpKind::Put {
                value: bytes(&r.value).context("a put without a value")?,
            },
            Kind::Get => OpKind::Get {
                observed: if r.found == Some(true) { bytes(&r.value) } else { None },
            },
            Kind::Delete => OpKind::Delete,
            Kind::Cas => OpKind::Cas {
                expected: bytes(&r.expected),
                new: bytes(&r.value),
                succeeded: r.found == Some(true),
            },
            Kind::Scan => {
                scans.push(Scan {
                    client: r.client,
                    start: r.key.as_bytes().to_vec(),
                    end: bytes(&r.end),
                    observed: r
                        .rows
                        .iter()
                        .map(|(k, v)| (k.as_bytes().to_vec(), v.as_bytes().to_vec()))
                        .collect(),
                    call_ns: r.call_ns,
                    return_ns: r.returned(),
                });
                continue;
            }
        };
        ops.push(Op {
            client: r.client,
            key: r.key.as_bytes().to_vec(),
            kind,
            call_ns: r.call_ns,
            return_ns: r.returned(),
        });
    }
    let keys = linearizability::history_keys(&ops);
    for scan in &scans {
        ops.extend(linearizability::expand_scan(scan, &keys).map_err(|e| anyhow::anyhow!("scan {scan:?}: {e:?}"))?);
    }
    Ok(ops)
}

/// Whether the history is linearizable, per key.
pub fn check(records: &[Record]) -> Result<CheckResult> {
    Ok(linearizability::check(&to_ops(records)?))
}

/// Acknowledged writes that the final read of their key cannot have followed.
///
/// `finals` holds the value of every key read after all faults healed and every client
/// stopped (None: absent). The final value was written by one of its *explainers* (the writes
/// that could set it: puts of that value, swaps to it, deletes and swaps to absent for None,
/// and the initial absent state), each of which took effect at the latest when it returned
/// (never, for an unknown outcome: it may have applied at any time). An acknowledged write
/// called after every explainer's latest moment certainly took effect after all of them, so a
/// final read that still shows the explainers' value lost it. A final value no write could
/// have set is reported too (as its key with no write).
pub fn lost_writes(records: &[Record], finals: &BTreeMap<String, Option<String>>) -> Vec<LostWrite> {
    let mut lost = Vec::new();
    for (key, value) in finals {
        let writes: Vec<&Record> = records.iter().filter(|r| r.is_write() && &r.key == key).collect();
        let explains = |r: &&Record| match r.op {
            Kind::Put => value.is_some() && r.value == *value,
            Kind::Delete => value.is_none(),
            Kind::Cas => r.found != Some(false) && r.value == *value,
            Kind::Get | Kind::Scan => false,
        };
        // The initial state (absent) explains None up to time 0.
        let initial = value.is_none().then_some(0);
        let latest = writes
            .iter()
            .filter(|r| explains(r))
            .map(|r| r.returned().unwrap_or(i64::MAX))
            .chain(initial)
            .max();
        let Some(latest) = latest else {
            lost.push(LostWrite {
                key: key.clone(),
                final_value: value.clone(),
                write: None,
            });
            continue;
        };
        for w in writes {
            let acknowledged = w.returned().is_some() && !(w.op == Kind::Cas && w.found != Some(true));
            if acknowledged && w.call_ns > latest {
                lost.push(LostWrite {
                    key: key.clone(),
                    final_value: value.clone(),
                    write: Some(w.clone()),
                });
            }
        }
    }
    lost
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostWrite {
    pub key: String,
    pub final_value: Option<String>,
    /// The acknowledged write the final value does not reflect; `None`: no write could have
    /// produced the final value at all.
    pub write: Option<Record>,
}

impl std::fmt::Display for LostWrite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.write {
            Some(w) => write!(
                f,
                "key {}: final value {:?} ignores client {}'s acknowledged {:?} {:?} (called at {} ns)",
                self.key, self.final_value, w.client, w.op, w.value, w.call_ns
            ),
            None => write!(
                f,
                "key {}: final value {:?} was never written",
                self.key, self.final_value
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes `lines` as a history file, reads it back and returns the records.
    fn recorded(lines: &[&str]) -> Vec<Record> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        std::fs::write(&path, lines.join("\n")).unwrap();
        load(&path).unwrap()
    }

    fn line(client: u64, op: &str, key: &str, value: Option<&str>, found: Option<bool>, call: i64, ret: i64) -> String {
        let value = value.map_or("null".to_string(), |v| format!("\"{v}\""));
        let found = found.map_or("null".to_string(), |f| f.to_string());
        format!(
            r#"{{"client":{client},"op":"{op}","key":"{key}","value":{value},"found":{found},"call_ns":{call},"return_ns":{ret}}}"#
        )
    }

    fn finals(pairs: &[(&str, Option<&str>)]) -> BTreeMap<String, Option<String>> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
            .collect()
    }

    // Proves the format round-trips: what the workload writes is what the checker reads.
    #[test]
    fn records_round_trip_through_json_lines() {
        let r = Record {
            client: 2,
            op: Kind::Scan,
            key: "A".into(),
            end: None,
            expected: None,
            value: None,
            found: None,
            rows: vec![("A1".into(), "2-1".into())],
            call_ns: 5,
            return_ns: UNKNOWN,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.contains(r#""op":"scan""#) && text.contains(r#""return_ns":-1"#),
            "{text}"
        );
        assert_eq!(recorded(&[&text]), vec![r]);
    }

    // Proves a recorded stale read is caught: a get that starts after put(v2) was acknowledged
    // observes the overwritten v1. The same history with the fresh value passes.
    #[test]
    fn a_recorded_stale_read_is_not_linearizable() {
        let put1 = line(1, "put", "K1", Some("1-1"), None, 0, 10);
        let put2 = line(1, "put", "K1", Some("1-2"), None, 20, 30);
        let stale = line(2, "get", "K1", Some("1-1"), Some(true), 40, 50);
        let fresh = line(2, "get", "K1", Some("1-2"), Some(true), 40, 50);
        let result = check(&recorded(&[&put1, &put2, &stale])).unwrap();
        assert!(
            matches!(result, CheckResult::NotLinearizable { ref key, .. } if key == b"K1"),
            "{result:?}"
        );
        assert_eq!(
            check(&recorded(&[&put1, &put2, &fresh])).unwrap(),
            CheckResult::Linearizable
        );
    }

    // Proves a recorded lost write is caught both ways: by the final read (lost_writes) and
    // by the linearizability check once the final read is part of the history. A write of
    // unknown outcome that did not survive is not lost.
    #[test]
    fn a_recorded_lost_write_is_caught() {
        let put1 = line(1, "put", "K2", Some("1-1"), None, 0, 10);
        let put2 = line(2, "put", "K2", Some("2-1"), None, 20, 30);
        let final_read = line(9, "get", "K2", Some("1-1"), Some(true), 100, 110);
        let records = recorded(&[&put1, &put2]);
        let lost = lost_writes(&records, &finals(&[("K2", Some("1-1"))]));
        assert_eq!(lost.len(), 1, "{lost:?}");
        assert_eq!(lost[0].write.as_ref().unwrap().value.as_deref(), Some("2-1"));
        assert!(lost[0].to_string().contains("ignores client 2"), "{}", lost[0]);
        let with_final = recorded(&[&put1, &put2, &final_read]);
        assert!(matches!(
            check(&with_final).unwrap(),
            CheckResult::NotLinearizable { .. }
        ));

        let unknown = line(2, "put", "K2", Some("2-1"), None, 20, UNKNOWN);
        let records = recorded(&[&put1, &unknown]);
        assert!(lost_writes(&records, &finals(&[("K2", Some("1-1"))])).is_empty());
        assert!(lost_writes(&records, &finals(&[("K2", Some("2-1"))])).is_empty());
    }

    // Proves deletes, swaps and never-written values in the final read: an acknowledged delete
    // lost under a surviving put is caught, a failed swap is not a write, and a final value
    // nobody wrote is reported.
    #[test]
    fn lost_writes_cover_deletes_swaps_and_phantoms() {
        let put = line(1, "put", "K3", Some("1-1"), None, 0, 10);
        let delete = line(1, "delete", "K3", None, None, 20, 30);
        let records = recorded(&[&put, &delete]);
        assert_eq!(lost_writes(&records, &finals(&[("K3", Some("1-1"))])).len(), 1);
        assert!(lost_writes(&records, &finals(&[("K3", None)])).is_empty());

        let failed_cas = r#"{"client":2,"op":"cas","key":"K3","expected":"x","value":"2-1","found":false,"call_ns":40,"return_ns":50}"#;
        let records = recorded(&[&put, failed_cas]);
        assert!(lost_writes(&records, &finals(&[("K3", Some("1-1"))])).is_empty());
        let phantom = lost_writes(&records, &finals(&[("K3", Some("2-1"))]));
        assert!(phantom.len() == 1 && phantom[0].write.is_none(), "{phantom:?}");
        assert!(check(&records).unwrap() == CheckResult::Linearizable);
    }

    // Proves scans are judged per key: a scan that misses an acknowledged key fails.
    #[test]
    fn a_scan_missing_an_acknowledged_key_is_caught() {
        let put = line(1, "put", "K4", Some("1-1"), None, 0, 10);
        let scan = r#"{"client":2,"op":"scan","key":"K","end":"L","value":null,"found":null,"rows":[],"call_ns":20,"return_ns":30}"#;
        assert!(matches!(
            check(&recorded(&[&put, scan])).unwrap(),
            CheckResult::NotLinearizable { .. }
        ));
        let seen = r#"{"client":2,"op":"scan","key":"K","end":"L","value":null,"found":null,"rows":[["K4","1-1"]],"call_ns":20,"return_ns":30}"#;
        assert_eq!(check(&recorded(&[&put, seen])).unwrap(), CheckResult::Linearizable);
    }
}
