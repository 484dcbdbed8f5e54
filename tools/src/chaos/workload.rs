//! The chaos run's clients: a mixed workload (put, get, delete, compare-and-swap, scan) over a
//! small key set, every operation recorded as a `history::Record` line as it completes.
//!
//! Owns: the key set, the operation mix, turning a client result into a record (an error of
//! any kind is an unknown outcome: sound for the checker, which lets such an op take effect
//! or not), and the final read of every key. Must not: inject faults or judge the history.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use corekv_netio::{Client, ClientConfig};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::history::{Kind, Record, UNKNOWN};

/// Keys of the run: few enough that clients collide on them, spread over every region.
pub const KEYS: u64 = 16;
/// A client waits up to this long between operations.
const THINK_MS_MAX: u64 = 20;
/// Deadline of one operation: past it the outcome is unknown (and a write's stays so).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
const ATTEMPT_TIMEOUT: Duration = Duration::from_millis(1_000);
/// How long the final read of a key may keep retrying.
const FINAL_READ_DEADLINE: Duration = Duration::from_secs(60);

/// Key `i` of the run: its first byte spreads over printable ASCII, so over every region.
pub fn key(i: u64) -> String {
    assert!(i < KEYS);
    let first = (b'!' + (i * 94 / KEYS) as u8) as char;
    format!("{first}chaos{i:02}")
}

/// The client settings of the run: short deadlines, so a fault shows as unknown outcomes
/// rather than stalled clients.
pub fn client_config(endpoints: Vec<String>) -> ClientConfig {
    let mut cfg = ClientConfig::new(endpoints);
    cfg.request_timeout = REQUEST_TIMEOUT;
    cfg.attempt_timeout = ATTEMPT_TIMEOUT;
    cfg.backoff_max = Duration::from_millis(200);
    cfg
}

/// Appends records to the history file as they complete.
pub struct Recorder {
    out: RefCell<std::io::BufWriter<std::fs::File>>,
    epoch: Instant,
}

impl Recorder {
    /// Records go to `path`; times are nanoseconds since `epoch`.
    pub fn create(path: &std::path::Path, epoch: Instant) -> Result<Recorder> {
        let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        Ok(Recorder {
            out: RefCell::new(std::io::BufWriter::new(file)),
            epoch,
        })
    }

    pub fn now_ns(&self) -> i64 {
        self.epoch.elapsed().as_nanos() as i64
    }

    pub fn record(&self, r: &Record) -> Result<()> {
        debug_assert!(r.return_ns == UNKNOWN || r.return_ns >= r.call_ns);
        let mut out = self.out.borrow_mut();
        serde_json::to_writer(&mut *out, r)?;
        out.write_all(b"\n")?;
        Ok(())
    }

    pub fn flush(&self) -> Result<()> {
        self.out.borrow_mut().flush().context("flush the history")
    }
}

/// Runs `clients` clients until `stop` is set, each recording into `recorder`.
pub async fn run(
    endpoints: Vec<String>,
    clients: u64,
    seed: u64,
    stop: Arc<AtomicBool>,
    recorder: Rc<Recorder>,
) -> Result<()> {
    let tasks: Vec<_> = (1..=clients)
        .map(|id| {
            let (endpoints, stop, recorder) = (endpoints.clone(), Arc::clone(&stop), Rc::clone(&recorder));
            glommio::spawn_local(async move { client_loop(id, endpoints, seed, &stop, &recorder).await })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    recorder.flush()
}

async fn client_loop(id: u64, endpoints: Vec<String>, seed: u64, stop: &AtomicBool, recorder: &Recorder) -> Result<()> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed.wrapping_mul(0x9e37_79b9).wrapping_add(id));
    // Whatever the cluster looks like now, the client learns the rest from its answers.
    let client = Client::with_view(client_config(endpoints), Vec::new());
    // The last value this client saw for each key: what its swaps expect.
    let mut seen: BTreeMap<String, Option<String>> = BTreeMap::new();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let key = key(rng.next_u64() % KEYS);
        let value = format!("{id}-{seq}");
        let record = match rng.next_u64() % 20 {
            // Out of 20: 7 puts, 7 gets, 4 swaps, a delete, a scan.
            0..=6 => put(&client, recorder, id, key.clone(), value).await,
            7..=13 => get(&client, recorder, id, key.clone()).await,
            14..=17 => {
                let expected = seen.get(&key).cloned().flatten();
                let new = (rng.next_u64() % 4 != 0).then_some(value);
                cas(&client, recorder, id, key.clone(), expected, new).await
            }
            18 => delete(&client, recorder, id, key.clone()).await,
            _ => scan(&client, recorder, id).await,
        };
        if record.return_ns != UNKNOWN {
            remember(&mut seen, &record);
        }
        recorder.record(&record)?;
        glommio::timer::sleep(Duration::from_millis(rng.next_u64() % (THINK_MS_MAX + 1))).await;
    }
    Ok(())
}

/// What a completed op tells its client about its key's value.
fn remember(seen: &mut BTreeMap<String, Option<String>>, r: &Record) {
    match r.op {
        Kind::Put => {
            seen.insert(r.key.clone(), r.value.clone());
        }
        Kind::Get => {
            seen.insert(r.key.clone(), r.value.clone().filter(|_| r.found == Some(true)));
        }
        Kind::Delete => {
            seen.insert(r.key.clone(), None);
        }
        Kind::Cas => {
            let now = if r.found == Some(true) { r.value.clone() } else { None };
            seen.insert(r.key.clone(), now);
        }
        Kind::Scan => {
            for (k, v) in &r.rows {
                seen.insert(k.clone(), Some(v.clone()));
            }
        }
    }
}

fn record(client: u64, op: Kind, key: String, call_ns: i64) -> Record {
    Record {
        client,
        op,
        key,
        end: None,
        expected: None,
        value: None,
        found: None,
        rows: Vec::new(),
        call_ns,
        return_ns: UNKNOWN,
    }
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8_lossy(&bytes).into_owned()
}

async fn put(c: &Client, rec: &Recorder, id: u64, key: String, value: String) -> Record {
    let mut r = record(id, Kind::Put, key, rec.now_ns());
    let done = c.put(r.key.as_bytes(), value.as_bytes()).await;
    r.value = Some(value);
    if done.is_ok() {
        r.return_ns = rec.now_ns();
    }
    r
}

async fn get(c: &Client, rec: &Recorder, id: u64, key: String) -> Record {
    let mut r = record(id, Kind::Get, key, rec.now_ns());
    if let Ok(value) = c.get(r.key.as_bytes()).await {
        r.return_ns = rec.now_ns();
        r.found = Some(value.is_some());
        r.value = value.map(text);
    }
    r
}

async fn delete(c: &Client, rec: &Recorder, id: u64, key: String) -> Record {
    let mut r = record(id, Kind::Delete, key, rec.now_ns());
    if c.delete(r.key.as_bytes()).await.is_ok() {
        r.return_ns = rec.now_ns();
    }
    r
}

async fn cas(
    c: &Client,
    rec: &Recorder,
    id: u64,
    key: String,
    expected: Option<String>,
    new: Option<String>,
) -> Record {
    let mut r = record(id, Kind::Cas, key, rec.now_ns());
    let done = c
        .compare_and_swap(
            r.key.as_bytes(),
            expected.as_deref().map(str::as_bytes),
            new.as_deref().map(str::as_bytes),
        )
        .await;
    (r.expected, r.value) = (expected, new);
    if let Ok((succeeded, _)) = done {
        r.return_ns = rec.now_ns();
        r.found = Some(succeeded);
    }
    r
}

/// A scan of the whole key set (no row limit: a truncated scan would claim keys absent).
async fn scan(c: &Client, rec: &Recorder, id: u64) -> Record {
    let mut r = record(id, Kind::Scan, String::new(), rec.now_ns());
    if let Ok(rows) = c.scan(b"", b"", (KEYS + 1) as u32, false).await {
        r.return_ns = rec.now_ns();
        r.rows = rows.into_iter().map(|(k, v)| (text(k), text(v))).collect();
    }
    r
}

/// Reads every key once the faults have healed, retrying until each read succeeds, and
/// records the reads (client 0); then writes a probe key in every region. Returns the final
/// value of every key.
pub async fn final_reads(endpoints: Vec<String>, recorder: &Recorder) -> Result<BTreeMap<String, Option<String>>> {
    let client = Client::with_view(client_config(endpoints), Vec::new());
    let deadline = Instant::now() + FINAL_READ_DEADLINE;
    let mut finals = BTreeMap::new();
    for i in 0..KEYS {
        let r = loop {
            let r = get(&client, recorder, 0, key(i)).await;
            if r.return_ns != UNKNOWN {
                break r;
            }
            if Instant::now() > deadline {
                bail!(
                    "the final read of {} did not succeed within {FINAL_READ_DEADLINE:?}",
                    key(i)
                );
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        };
        finals.insert(r.key.clone(), r.value.clone().filter(|_| r.found == Some(true)));
        recorder.record(&r)?;
    }
    recorder.flush()?;
    // A write to every region (to keys outside the history) gives every replica something to
    // apply: the caller then checks that all of them do.
    for i in 0..KEYS {
        let probe = format!("{}-final", key(i));
        while client.put(probe.as_bytes(), b"probe").await.is_err() {
            if Instant::now() > deadline {
                bail!("the final write of {probe} did not succeed within {FINAL_READ_DEADLINE:?}");
            }
            glommio::timer::sleep(Duration::from_millis(100)).await;
        }
    }
    Ok(finals)
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves the key set is distinct and its first bytes walk printable ASCII in order (so it
    // spans every pre-split region).
    #[test]
    fn keys_are_distinct_and_spread_over_printable_ascii() {
        let keys: Vec<String> = (0..KEYS).map(key).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        assert_eq!(keys[0].as_bytes()[0], b'!');
        assert!(keys[KEYS as usize - 1].as_bytes()[0] >= b'~' - 94 / KEYS as u8);
    }
}
