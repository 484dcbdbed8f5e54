//! The store registry's durable half: one record per store (a node) in the system region,
//! written by the placement leader when a store first reports or its address or shard count
//! changes, and loaded by every new placement leader, so a store that is down stays listed
//! (and ages into Disconnected, then Down) instead of vanishing with the old leader's memory.
//!
//! Owns: the record and its encoding (rkyv, validated on load). Must not: write the system
//! region but through `Placement`'s compare-and-swap.

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
    let (rows, _) = apply::scan(kv, system, (STORES_PREFIX, &end), STORES_MAX, false, usize::MAX)?;
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
