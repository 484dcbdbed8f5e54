//! The playground's demo workload: concurrent puts, then reads of every key, a scan and a
//! compare-and-swap through the client, with latency percentiles.
//!
//! Owns: the demo keys (spread over every region), its phases and latency histograms, and the
//! read-back checks. Must not: set up or stop a cluster (it is given a connected `Client`), or
//! write keys other than its own.

use std::cell::RefCell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corekv_netio::Client;
use hdrhistogram::Histogram;

/// A demo key: its first byte walks printable ASCII, so keys spread over every region.
pub fn key(i: u64) -> Vec<u8> {
    let first = b'!' + ((i * 37) % 94) as u8;
    let mut k = vec![first];
    k.extend_from_slice(format!("demo-{i:06}").as_bytes());
    k
}

fn value(i: u64) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(64)).into_bytes()
}

pub struct Phase {
    pub name: &'static str,
    pub ops: u64,
    pub elapsed: Duration,
    pub latency_us: Histogram<u64>,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let h = &self.latency_us;
        write!(
            f,
            "{:<6} {:>7} ops {:>8.0} ops/s   p50 {:>6} us  p90 {:>6} us  p99 {:>6} us  max {:>6} us",
            self.name,
            self.ops,
            self.ops as f64 / self.elapsed.as_secs_f64(),
            h.value_at_quantile(0.5),
            h.value_at_quantile(0.9),
            h.value_at_quantile(0.99),
            h.max()
        )
    }
}

/// Runs `ops` operations of one kind from `concurrency` tasks; `op(i)` does operation `i`.
async fn phase<F, Fut>(name: &'static str, ops: u64, concurrency: u64, op: F) -> Result<Phase>
where
    F: Fn(u64) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<()>> + 'static,
{
    // 1 us .. 1 min at 3 significant figures (`new(3)` alone would saturate at 2 us).
    let hist = Rc::new(RefCell::new(
        Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("valid histogram"),
    ));
    let op = Rc::new(op);
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|t| {
            let (hist, op) = (Rc::clone(&hist), Rc::clone(&op));
            glommio::spawn_local(async move {
                let mut i = t;
                while i < ops {
                    let t0 = Instant::now();
                    op(i).await?;
                    hist.borrow_mut().saturating_record(t0.elapsed().as_micros() as u64);
                    i += concurrency;
                }
                Ok::<(), anyhow::Error>(())
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let latency_us = hist.borrow().clone();
    Ok(Phase {
        name,
        ops,
        elapsed: started.elapsed(),
        latency_us,
    })
}

/// Writes `keys` keys, reads each back and checks it, scans, and swaps one value.
pub async fn run(client: &Client, keys: u64, concurrency: u64) -> Result<Vec<Phase>> {
    let c = client.clone();
    let put = phase("put", keys, concurrency, move |i| {
        let c = c.clone();
        async move { c.put(&key(i), &value(i)).await.with_context(|| format!("put key {i}")) }
    })
    .await?;
    let c = client.clone();
    let get = phase("get", keys, concurrency, move |i| {
        let c = c.clone();
        async move {
            match c.get(&key(i)).await.with_context(|| format!("get key {i}"))? {
                Some(v) if v == value(i) => Ok(()),
                other => bail!("key {i} read back {other:?}"),
            }
        }
    })
    .await?;
    let rows = client.scan(b"", b"", u32::MAX, false).await?;
    let demo_rows = rows.iter().filter(|(k, _)| k.get(1..6) == Some(b"demo-")).count() as u64;
    if demo_rows < keys {
        bail!("a full scan found {demo_rows} demo keys, expected at least {keys}");
    }
    let (swapped, _) = client
        .compare_and_swap(&key(0), Some(&value(0)), Some(b"swapped"))
        .await?;
    if !swapped || client.get(&key(0)).await?.as_deref() != Some(b"swapped".as_slice()) {
        bail!("compare-and-swap of key 0 did not take effect");
    }
    client.put(&key(0), &value(0)).await?;
    Ok(vec![put, get])
}
