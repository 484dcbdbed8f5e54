//! The store registry's durable half: one record per store (a node) in the system region,
//! written by the placement leader when a store first reports or its address or shard count
//! changes, and loaded by every new placement leader, so a store that is down stays listed
//! (and ages into Disconnected, then Down) instead of vanishing with the old leader's memory.
//!
//! Owns: the record and its encoding (rkyv, validated on load). Must not: write the system
//! region but through `Placement`'s compare-and-swap.

use std::net::SocketAddr;

use corekv_storage::kv::KvEngine;
use rkyv::rancor;

use crate::apply;
use crate::error::{Error, Result};
use crate::keys::{self, STORES_PREFIX};
use crate::region::{Region, SYSTEM_REGION_ID};

/// What the cluster keeps of a store whatever its state.
#[derive(Debug, Clone, PartialEq, Eq, rkyv::Archive, rkyv::Serialize, rkyv::Deserialize)]
pub struct StoreMeta {
    pub id: u64,
    /// Client and peer addresses of its shard 0 (shard i on those ports + i).
    pub client_addr: String,
    pub peer_addr: String,
    pub shards: u32,
}

/// Registered stores at most (a record is a few dozen bytes: this bounds the load's scan).
pub const STORES_MAX: usize = 10_000;

impl StoreMeta {
    /// Whether both addresses are `IP:port` (a joining store's must be: they become its
    /// peers' idea of where it connects from).
    pub fn has_ip_addresses(&self) -> bool {
        [&self.client_addr, &self.peer_addr]
            .iter()
            .all(|a| a.parse::<SocketAddr>().is_ok())
    }

    /// Whether `other` uses one of this store's addresses (the same text, or the same IP and
    /// port written another way).
    pub fn shares_an_address(&self, other: &StoreMeta) -> bool {
        let same = |a: &str, b: &str| a == b || a.parse::<SocketAddr>().is_ok_and(|a| b.parse() == Ok(a));
        let mine = [&self.client_addr, &self.peer_addr];
        let theirs = [&other.client_addr, &other.peer_addr];
        mine.iter().any(|a| theirs.iter().any(|b| same(a, b)))
    }

    pub fn encode(&self) -> Vec<u8> {
        rkyv::to_bytes::<rancor::Error>(self)
            .expect("serializing into memory cannot fail")
            .into_vec()
    }

    pub fn decode(bytes: &[u8]) -> Result<StoreMeta> {
        let mut aligned = rkyv::util::AlignedVec::<16>::with_capacity(bytes.len());
        aligned.extend_from_slice(bytes);
        rkyv::from_bytes::<StoreMeta, rancor::Error>(&aligned).map_err(|e| Error::Corruption {
            region_id: SYSTEM_REGION_ID,
            reason: format!("an undecodable store record: {e}"),
        })
    }
}

/// Every store record the system region holds (as applied on this replica).
pub fn load(kv: &KvEngine, system: &Region) -> Result<Vec<StoreMeta>> {
    let end = keys::store_key(u64::MAX);
    let (rows, more) = apply::scan(kv, system, (STORES_PREFIX, &end), STORES_MAX + 1, false, usize::MAX)?;
    if more || rows.len() > STORES_MAX {
        return Err(Error::Corruption {
            region_id: SYSTEM_REGION_ID,
            reason: format!("more than {STORES_MAX} store records"),
        });
    }
    let mut stores = Vec::with_capacity(rows.len());
    for (key, value) in rows {
        let meta = StoreMeta::decode(&value)?;
        if keys::store_key(meta.id) != key {
            return Err(Error::Corruption {
                region_id: SYSTEM_REGION_ID,
                reason: format!("store {} recorded under another store's key", meta.id),
            });
        }
        stores.push(meta);
    }
    Ok(stores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_round_trips_and_garbage_is_corruption() {
        let meta = StoreMeta {
            id: 7,
            client_addr: "10.0.0.7:20160".into(),
            peer_addr: "10.0.0.7:20200".into(),
            shards: 4,
        };
        assert_eq!(StoreMeta::decode(&meta.encode()).unwrap(), meta);
        assert!(matches!(StoreMeta::decode(b"garbage"), Err(Error::Corruption { .. })));
    }
}
