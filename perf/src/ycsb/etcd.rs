//! etcd's side of the YCSB driver: the `Store` trait over etcd's own v3 client
//! (`etcd-client`, gRPC), on a tokio current-thread runtime.
//!
//! Owns: mapping YCSB's operations onto etcd's KV API. read -> Range of one key; update and
//! insert -> Put; scan of n records from k -> one Range [k, end of the YCSB table) with limit
//! n (etcd has no "from this key, n keys" request otherwise). Reads are etcd's default,
//! linearizable (ReadIndex through the leader), not its `serializable` local reads: corekv's
//! lease reads are linearizable too. Must not know about workloads or histograms.

use std::time::Duration;

use anyhow::{Context, Result};
use etcd_client::{ConnectOptions, GetOptions, KvClient};

use super::generator::scan_end;
use super::store::Store;

/// Connecting to the endpoints fails after this long (a member that is not up).
const CONNECT_TIMEOUT_MS: u64 = 5_000;
/// One request fails after this long; like corekv's client deadline, so a stall shows as
/// errors instead of stopping the phase.
const REQUEST_TIMEOUT_MS: u64 = 10_000;

pub struct EtcdStore {
    /// Cloned per request: a handle on one shared, load-balanced HTTP/2 channel (all
    /// requests in flight are multiplexed on it, as etcd's own clients do).
    kv: KvClient,
}

impl EtcdStore {
    /// Connects to the members' client URLs (`http://HOST:PORT`, or `HOST:PORT`); call it
    /// inside a tokio runtime.
    pub async fn connect(endpoints: &[String]) -> Result<EtcdStore> {
        let options = ConnectOptions::new()
            .with_connect_timeout(Duration::from_millis(CONNECT_TIMEOUT_MS))
            .with_timeout(Duration::from_millis(REQUEST_TIMEOUT_MS));
        let client = etcd_client::Client::connect(endpoints, Some(options))
            .await
            .with_context(|| format!("connect to etcd at {}", endpoints.join(",")))?;
        Ok(EtcdStore { kv: client.kv_client() })
    }
}

/// The Range request of a YCSB scan: `[start, end of the table)`, at most `len` keys.
fn scan_options(len: u32) -> GetOptions {
    GetOptions::new().with_range(scan_end()).with_limit(i64::from(len))
}

impl Store for EtcdStore {
    async fn read(&self, key: &[u8]) -> Result<()> {
        self.kv.clone().get(key, None).await?;
        Ok(())
    }

    async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        self.kv.clone().put(key, value, None).await?;
        Ok(())
    }

    async fn scan(&self, start: &[u8], len: u32) -> Result<()> {
        self.kv.clone().get(start, Some(scan_options(len))).await?;
        Ok(())
    }

    async fn sleep(&self, wait: Duration) {
        tokio::time::sleep(wait).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves a scan's Range request is [start, end of the YCSB table) limited to the scan's
    // length (read through the options' Debug form: etcd-client keeps its fields private).
    #[test]
    fn a_scan_is_a_bounded_range_with_a_limit() {
        let debug = format!("{:?}", scan_options(37));
        assert!(debug.contains("limit: 37"), "{debug}");
        assert!(debug.contains(&format!("range_end: {:?}", b"uses".to_vec())), "{debug}");
        assert!(
            !debug.contains("with_from_key: true") && !debug.contains("with_prefix: true"),
            "{debug}"
        );
    }
}
