//! What the YCSB driver needs from a system under test, and corekv's side of it.
//!
//! Owns: the `Store` trait (one operation per YCSB operation type, plus the executor's timer)
//! and `CorekvStore`, corekv's client library on a glommio executor. Must not know about
//! workloads, histograms or phases: `phase.rs` drives any `Store` the same way.

use std::time::Duration;

use anyhow::Result;
use corekv_netio::{Client, ClientConfig};

use super::generator::scan_end;

/// A key-value system the workloads run against. Futures need not be `Send`: each system's
/// driver runs on one thread (glommio executor, tokio current-thread runtime), all requests
/// in flight as futures of one task.
pub trait Store {
    /// Reads one record; a missing record is not an error.
    async fn read(&self, key: &[u8]) -> Result<()>;
    /// Writes one record (YCSB's update and insert both).
    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Reads up to `len` records in key order from `start` on, within the YCSB table
    /// (`generator::scan_end`).
    async fn scan(&self, start: &[u8], len: u32) -> Result<()>;
    /// Waits on this system's executor (the target rate's schedule).
    async fn sleep(&self, wait: Duration);
}

pub struct CorekvStore {
    client: Client,
}

impl CorekvStore {
    /// Connects to a cluster through some nodes' shard-0 addresses (with `tls` if given);
    /// call it on a glommio executor.
    pub async fn connect(endpoints: Vec<String>, tls: Option<corekv_netio::tls::Tls>) -> Result<CorekvStore> {
        let mut cfg = ClientConfig::new(endpoints);
        cfg.tls = tls;
        Ok(CorekvStore {
            client: Client::connect(cfg).await?,
        })
    }
}

impl Store for CorekvStore {
    async fn read(&self, key: &[u8]) -> Result<()> {
        self.client.get(key).await?;
        Ok(())
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        Ok(self.client.put(key, value).await?)
    }

    async fn scan(&self, start: &[u8], len: u32) -> Result<()> {
        // The client walks the regions of [start, end) until it has `len` rows.
        self.client.scan(start, &scan_end(), len, false).await?;
        Ok(())
    }

    async fn sleep(&self, wait: Duration) {
        glommio::timer::sleep(wait).await;
    }
}
