//! Raw KV commands: what a proposal carries through raft, and what applying one returns.
//!
//! Owns: the command set, its size limits, and its encoding inside a raft entry (an rkyv
//! archive, validated when decoded). Must not touch storage: `apply` does.

use rkyv::rancor;

use crate::error::{Error, Result};
use crate::region::{Epoch, EpochCheck, PeerChange, Region, SplitAt};

/// Largest key a command may carry.
pub const KEY_BYTES_MAX: usize = 4 << 10;
/// Largest value a command may carry.
pub const VALUE_BYTES_MAX: usize = 1 << 20;
/// Most pairs in one `BatchPut`.
pub const BATCH_PAIRS_MAX: usize = 4096;
/// Most key and value bytes in one command: a raft entry stays far below the log engine's
/// entry limit and the transport's frame limit.
pub const COMMAND_BYTES_MAX: usize = 4 << 20;

#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub enum Command {
    Put {
        key: Vec<u8>,
        value: Vec<u8>,
    },
    Delete {
        key: Vec<u8>,
    },
    DeleteRange {
        start: Vec<u8>,
        end: Vec<u8>,
    },
    BatchPut {
        pairs: Vec<(Vec<u8>, Vec<u8>)>,
    },
    /// Sets `key` to `new` (None: deletes it) if its value is `expected` (None: absent).
    CompareAndSwap {
        key: Vec<u8>,
        expected: Option<Vec<u8>>,
        new: Option<Vec<u8>>,
    },
    /// Admin: splits the region at each split's key (`Region::split`); applied with every
    /// region's state in one synced write.
    Split {
        splits: Vec<SplitAt>,
    },
    /// Admin: changes the region's membership (`Region::change_peers`). Proposed as a raft
    /// membership change (this command rides in the entry's context), applied with the
    /// region's new state in one synced write.
    ChangePeers {
        changes: Vec<PeerChange>,
    },
}

/// What applying a command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Done,
    Cas {
        succeeded: bool,
        previous: Option<Vec<u8>>,
    },
    /// The region now is `left`; `new` are the regions the split made, in key order.
    Split {
        left: Region,
        new: Vec<Region>,
    },
    /// The region's membership is now `region`'s, after `changes` (none: a joint membership
    /// was left).
    Membership {
        region: Region,
        changes: Vec<PeerChange>,
    },
}

/// A command as a raft entry carries it: with the epoch its proposer checked it against, so
/// that apply can refuse it if the region changed in between.
#[derive(rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
struct Proposal {
    conf_ver: u64,
    version: u64,
    cmd: Command,
}

/// The rules for a key a request names, reads and writes alike (so one key gets one answer
/// on every command): not empty (etcd and TiKV refuse it too), at most `KEY_BYTES_MAX` bytes,
/// inside `region`.
pub fn check_key(region: &Region, key: &[u8]) -> Result<()> {
    if key.is_empty() {
        return Err(Error::InvalidArgument("the empty key is not a key"));
    }
    check_bound(key)?;
    region.check_key(key)
}

/// A range bound (scan, delete-range) is at most `KEY_BYTES_MAX` bytes, like a key; empty means
/// the start (or, as an end, the end) of the key space.
pub fn check_bound(bound: &[u8]) -> Result<()> {
    if bound.len() > KEY_BYTES_MAX {
        return Err(Error::TooLarge {
            what: "key",
            size: bound.len(),
            max: KEY_BYTES_MAX,
        });
    }
    Ok(())
}

impl Command {
    /// (bytes, keys) it writes: keys and values, a range delete's bounds as one key.
    pub fn written(&self) -> (u64, u64) {
        let (bytes, keys) = match self {
            Command::Put { key, value } => (key.len() + value.len(), 1),
            Command::Delete { key } => (key.len(), 1),
            Command::DeleteRange { start, end } => (start.len() + end.len(), 1),
            Command::BatchPut { pairs } => (pairs.iter().map(|(k, v)| k.len() + v.len()).sum(), pairs.len()),
            Command::CompareAndSwap { key, new, .. } => (key.len() + new.as_ref().map_or(0, Vec::len), 1),
            Command::Split { .. } | Command::ChangePeers { .. } => (0, 0),
        };
        (bytes as u64, keys as u64)
    }

    /// Size limits and range membership; checked before proposing (never in apply).
    pub fn check(&self, region: &Region) -> Result<()> {
        let key = |k: &[u8]| check_key(region, k);
        let value = |v: &[u8]| -> Result<()> {
            if v.len() > VALUE_BYTES_MAX {
                return Err(Error::TooLarge {
                    what: "value",
                    size: v.len(),
                    max: VALUE_BYTES_MAX,
                });
            }
            Ok(())
        };
        match self {
            Command::Put { key: k, value: v } => key(k).and(value(v)),
            Command::Delete { key: k } => key(k),
            // Range bounds are not keys: the empty start is the start of the key space.
            Command::DeleteRange { start, end } => {
                check_bound(start)?;
                check_bound(end)?;
                region.check_range(start, end)
            }
            Command::BatchPut { pairs } => {
                if pairs.len() > BATCH_PAIRS_MAX {
                    return Err(Error::TooLarge {
                        what: "batch",
                        size: pairs.len(),
                        max: BATCH_PAIRS_MAX,
                    });
                }
                let bytes: usize = pairs.iter().map(|(k, v)| k.len() + v.len()).sum();
                if bytes > COMMAND_BYTES_MAX {
                    return Err(Error::TooLarge {
                        what: "batch bytes",
                        size: bytes,
                        max: COMMAND_BYTES_MAX,
                    });
                }
                pairs.iter().try_for_each(|(k, v)| key(k).and(value(v)))
            }
            Command::CompareAndSwap { key: k, expected, new } => {
                key(k)?;
                expected.iter().chain(new.iter()).try_for_each(|v| value(v))
            }
            Command::Split { splits } => {
                splits.iter().try_for_each(|s| check_bound(&s.key))?;
                region.split(splits).map(|_| ())
            }
            Command::ChangePeers { changes } => region.change_peers(changes).map(|_| ()),
        }
    }

    /// The parts of its epoch this command depends on, at proposal and at apply.
    pub fn epoch_check(&self) -> EpochCheck {
        match self {
            Command::Split { .. } => EpochCheck::Both,
            Command::ChangePeers { .. } => EpochCheck::ConfVer,
            _ => EpochCheck::Version,
        }
    }

    /// The entry data of this command proposed at `epoch`.
    pub fn encode(&self, epoch: Epoch) -> Vec<u8> {
        let proposal = Proposal {
            conf_ver: epoch.conf_ver,
            version: epoch.version,
            cmd: self.clone(),
        };
        rkyv::to_bytes::<rancor::Error>(&proposal)
            .expect("serializing into memory cannot fail")
            .into_vec()
    }

    /// Decodes and validates entry data. An error here means the log holds something this
    /// version did not write: the caller must stop applying (never skip it).
    pub fn decode(data: &[u8]) -> Result<(Epoch, Command)> {
        // Entry data arrives unaligned (inside a protobuf buffer); archives need alignment.
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(data.len());
        aligned.extend_from_slice(data);
        let p = rkyv::from_bytes::<Proposal, rancor::Error>(&aligned)
            .map_err(|e| Error::Storage(format!("undecodable raft entry: {e}")))?;
        Ok((
            Epoch {
                conf_ver: p.conf_ver,
                version: p.version,
            },
            p.cmd,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region() -> Region {
        Region {
            id: 7,
            start: b"a".to_vec(),
            end: b"m".to_vec(),
            epoch: Epoch::default(),
            peers: vec![],
        }
    }

    // Proves every command round-trips through entry data with its epoch.
    #[test]
    fn commands_round_trip() {
        let epoch = Epoch {
            conf_ver: 3,
            version: 9,
        };
        for cmd in [
            Command::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Command::Delete { key: b"k".to_vec() },
            Command::DeleteRange {
                start: b"a".to_vec(),
                end: b"c".to_vec(),
            },
            Command::BatchPut {
                pairs: vec![(b"x".to_vec(), vec![1; 300]), (b"y".to_vec(), vec![])],
            },
            Command::CompareAndSwap {
                key: b"k".to_vec(),
                expected: None,
                new: Some(b"n".to_vec()),
            },
            Command::Split {
                splits: vec![SplitAt {
                    key: b"g".to_vec(),
                    new_region_id: 12,
                    new_peer_ids: vec![13, 14, 15],
                }],
            },
            Command::ChangePeers {
                changes: vec![PeerChange::Promote { id: 4 }, PeerChange::Demote { id: 5 }],
            },
        ] {
            assert_eq!(Command::decode(&cmd.encode(epoch)).unwrap(), (epoch, cmd));
        }
    }

    // Proves garbage entry data is a typed error, never a panic.
    #[test]
    fn garbage_is_an_error() {
        let data = Command::Put {
            key: b"k".to_vec(),
            value: b"v".to_vec(),
        }
        .encode(Epoch::default());
        for cut in 0..data.len() {
            let _ = Command::decode(&data[..cut]); // must not panic
        }
        assert!(Command::decode(&[0xff; 64]).is_err());
    }

    // Proves limits and range membership are checked with typed errors.
    #[test]
    fn limits_and_ranges() {
        let r = region();
        let big = vec![0u8; VALUE_BYTES_MAX + 1];
        assert!(matches!(
            Command::Put {
                key: b"b".to_vec(),
                value: big
            }
            .check(&r),
            Err(Error::TooLarge { .. })
        ));
        assert!(matches!(
            Command::Delete { key: b"z".to_vec() }.check(&r),
            Err(Error::KeyNotInRegion { .. })
        ));
        let long_key = vec![b'b'; KEY_BYTES_MAX + 1];
        assert!(matches!(
            Command::Delete { key: long_key }.check(&r),
            Err(Error::TooLarge { .. })
        ));
        assert!(Command::DeleteRange {
            start: b"b".to_vec(),
            end: b"m".to_vec()
        }
        .check(&r)
        .is_ok());
        assert!(Command::DeleteRange {
            start: b"b".to_vec(),
            end: b"n".to_vec()
        }
        .check(&r)
        .is_err());
        // Each value is within its limit; together they are not.
        let pairs = (0..5u8).map(|i| (vec![b'b', i], vec![0u8; VALUE_BYTES_MAX])).collect();
        assert!(matches!(
            Command::BatchPut { pairs }.check(&r),
            Err(Error::TooLarge {
                what: "batch bytes",
                ..
            })
        ));
    }
}
