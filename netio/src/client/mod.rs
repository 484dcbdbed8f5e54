//! The shard-aware client: a request goes straight to the core that leads its region.
//!
//! Owns: the region cache (regions by start key with their epochs), the leader cache (a hint
//! per region, corrected by every `NotLeader` / `WrongShard` / `EpochNotMatch` answer), one
//! pipelined connection per shard address, retries with exponential backoff, and a deadline
//! per operation. Runs on a glommio executor (`!Send`; one client per executor).
//!
//! Retry rule: a request is sent again only when it certainly was not applied (a typed
//! rejection, or a connection that never opened). A write whose answer is lost (timeout,
//! connection broken after sending) fails with `Timeout` / `Undetermined`: the caller knows the
//! outcome is unknown. Reads retry on anything until the deadline.
//!
//! Multi-region operations (batch_get, batch_put, delete_range, scan) are split by region and
//! are atomic per region only.

mod conn;
mod routes;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use conn::{Answer, Conn};
use routes::{Locate, Routes};

use crate::error::{Error, Result};
use crate::frame::BODY_BYTES_MAX_DEFAULT;
use crate::msg::{ClusterInfo, Op, RegionInfo, Reply, Request, WireError, WirePeer, WireRegion};

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// Client addresses (`host:port`) of some nodes' shard 0; the rest is learned from them.
    pub endpoints: Vec<String>,
    /// Deadline of a whole operation, retries included.
    pub request_timeout: Duration,
    /// How long one attempt waits for its answer.
    pub attempt_timeout: Duration,
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Requests in flight on one connection before the client itself answers `ServerBusy`.
    pub inflight_per_connection_max: usize,
    pub body_bytes_max: u32,
}

impl ClientConfig {
    pub fn new(endpoints: Vec<String>) -> ClientConfig {
        ClientConfig {
            endpoints,
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(500),
            inflight_per_connection_max: 4096,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
        }
    }
}

/// What the client did, for tests, tools and the perf harness.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    pub operations: u64,
    pub attempts: u64,
    /// Re-routes on NotLeader / WrongShard / EpochNotMatch.
    pub redirects: u64,
    pub wrong_shard: u64,
    pub refreshes: u64,
    pub backoffs: u64,
}

#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

struct Inner {
    cfg: ClientConfig,
    routes: RefCell<Routes>,
    conns: RefCell<HashMap<String, Rc<Conn>>>,
    stats: Cell<ClientStats>,
}

impl Client {
    /// A client that learns the cluster from `cfg.endpoints` (fails if none answers).
    pub async fn connect(cfg: ClientConfig) -> Result<Client> {
        let client = Client::with_view(cfg, Vec::new());
        client.refresh().await?;
        Ok(client)
    }

    /// A client starting from views it was given (saved earlier, or shared between clients);
    /// stale views are corrected by the answers they cause.
    pub fn with_view(cfg: ClientConfig, views: Vec<ClusterInfo>) -> Client {
        let mut routes = Routes::default();
        for v in views {
            routes.merge(v);
        }
        Client {
            inner: Rc::new(Inner {
                cfg,
                routes: RefCell::new(routes),
                conns: RefCell::new(HashMap::new()),
                stats: Cell::new(ClientStats::default()),
            }),
        }
    }

    pub fn stats(&self) -> ClientStats {
        self.inner.stats.get()
    }

    fn count(&self, f: impl FnOnce(&mut ClientStats)) {
        let mut s = self.inner.stats.get();
        f(&mut s);
        self.inner.stats.set(s);
    }

    /// The regions as the client knows them, by start key.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.inner.routes.borrow().snapshot()
    }

    /// Asks every endpoint and every node known for its view and merges what answers.
    pub async fn refresh(&self) -> Result<Vec<ClusterInfo>> {
        self.count(|s| s.refreshes += 1);
        let mut addrs = self.inner.cfg.endpoints.clone();
        for a in self.inner.routes.borrow().node_addrs() {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        let mut views = Vec::new();
        let mut last_error = None;
        for addr in addrs {
            match self
                .ask(
                    &addr,
                    Request {
                        region_id: 0,
                        epoch: Default::default(),
                        op: Op::ClusterInfo,
                    },
                )
                .await
            {
                Ok(Reply::Cluster(info)) => {
                    self.inner.routes.borrow_mut().merge(info.clone());
                    views.push(info);
                }
                Ok(other) => last_error = Some(format!("{addr}: unexpected answer {other:?}")),
                Err(e) => last_error = Some(e.to_string()),
            }
        }
        if views.is_empty() {
            return Err(Error::Unavailable(
                last_error.unwrap_or_else(|| "no endpoints given".into()),
            ));
        }
        Ok(views)
    }

    /// One request to one address, one attempt.
    async fn ask(&self, addr: &str, request: Request) -> Result<Reply> {
        let conn = self.conn(addr).await?;
        let rx = conn.send(&request)?;
        match conn::wait(rx, self.inner.cfg.attempt_timeout).await {
            Some(Answer::Reply(Reply::Failed(e))) => Err(Error::Server(e)),
            Some(Answer::Reply(r)) => Ok(r),
            Some(Answer::Lost(why)) => Err(Error::Unavailable(format!("{addr}: {why}"))),
            None => Err(Error::Timeout {
                ms: self.inner.cfg.attempt_timeout.as_millis() as u64,
            }),
        }
    }

    async fn conn(&self, addr: &str) -> Result<Rc<Conn>> {
        if let Some(c) = self.inner.conns.borrow().get(addr).filter(|c| !c.is_broken()) {
            return Ok(Rc::clone(c));
        }
        let cfg = &self.inner.cfg;
        let c = Conn::open(
            addr,
            cfg.attempt_timeout,
            cfg.inflight_per_connection_max,
            cfg.body_bytes_max,
        )
        .await?;
        self.inner.conns.borrow_mut().insert(addr.to_string(), Rc::clone(&c));
        Ok(c)
    }

    /// Sends the request built by `op` for the region found at `at` to that region's leader,
    /// following redirects and retrying what certainly was not applied, until the deadline.
    async fn call(&self, at: Locate<'_>, op: impl Fn(&WireRegion) -> Op) -> Result<(WireRegion, Reply)> {
        self.count(|s| s.operations += 1);
        let cfg = &self.inner.cfg;
        let deadline = Instant::now() + cfg.request_timeout;
        let mut backoff = cfg.backoff_min;
        let mut tries: usize = 0;
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    ms: cfg.request_timeout.as_millis() as u64,
                });
            }
            let located = self.inner.routes.borrow().locate(at).cloned();
            let Some(info) = located else {
                if self.refresh().await.is_err() || self.inner.routes.borrow().locate(at).is_none() {
                    self.backoff(&mut backoff).await;
                }
                continue;
            };
            tries += 1;
            if info.region.peers.is_empty() {
                self.refresh().await.ok();
                self.backoff(&mut backoff).await;
                continue;
            }
            let target = info
                .leader
                .unwrap_or_else(|| info.region.peers[tries % info.region.peers.len().max(1)]);
            let Some(addr) = self.inner.routes.borrow().addr_of(&target) else {
                self.refresh().await.ok();
                self.backoff(&mut backoff).await;
                continue;
            };
            let request = Request {
                region_id: info.region.id,
                epoch: info.region.epoch,
                op: op(&info.region),
            };
            let is_write = request.op.is_write();
            self.count(|s| s.attempts += 1);
            let sent = match self.conn(&addr).await {
                Ok(conn) => conn.send(&request),
                Err(e) => Err(e),
            };
            let rx = match sent {
                Ok(rx) => rx,
                Err(e) => {
                    // Never sent: safe to try another replica.
                    tracing::debug!(%addr, error = %e, "request not sent");
                    self.inner.routes.borrow_mut().set_leader(info.region.id, None);
                    self.backoff(&mut backoff).await;
                    continue;
                }
            };
            let wait = cfg.attempt_timeout.min(deadline - now);
            match conn::wait(rx, wait).await {
                None if is_write => {
                    return Err(Error::Timeout {
                        ms: wait.as_millis() as u64,
                    })
                }
                Some(Answer::Lost(_)) if is_write => return Err(Error::Undetermined),
                None | Some(Answer::Lost(_)) => {
                    self.inner.routes.borrow_mut().set_leader(info.region.id, None);
                }
                Some(Answer::Reply(Reply::Failed(e))) => {
                    if !self.reroute(&info, target, e, &mut backoff).await? {
                        continue;
                    }
                }
                Some(Answer::Reply(reply)) => {
                    if info.leader != Some(target) {
                        self.inner.routes.borrow_mut().set_leader(info.region.id, Some(target));
                    }
                    return Ok((info.region, reply));
                }
            }
        }
    }

    /// Acts on a typed rejection: updates the caches and waits if waiting helps. `Err` when
    /// retrying cannot help; `Ok(false)` means "try again".
    async fn reroute(&self, info: &RegionInfo, target: WirePeer, e: WireError, backoff: &mut Duration) -> Result<bool> {
        let id = info.region.id;
        match e.clone() {
            WireError::NotLeader { leader, .. } => {
                self.count(|s| s.redirects += 1);
                let known = leader.is_some() && leader != Some(target);
                self.inner
                    .routes
                    .borrow_mut()
                    .set_leader(id, leader.filter(|l| *l != target));
                if !known {
                    self.backoff(backoff).await;
                }
            }
            WireError::WrongShard { shard, .. } => {
                self.count(|s| {
                    s.redirects += 1;
                    s.wrong_shard += 1
                });
                self.inner.routes.borrow_mut().set_shard(id, target.node, shard);
            }
            WireError::EpochNotMatch { current, .. } => {
                self.count(|s| s.redirects += 1);
                match current {
                    Some(region) => self.inner.routes.borrow_mut().replace(region),
                    None => {
                        self.refresh().await.ok();
                    }
                }
            }
            WireError::RegionNotFound { .. } => {
                self.refresh().await.ok();
                self.backoff(backoff).await;
            }
            // The request did not fit the region the client knew: fine after a refresh shows
            // the region changed, a bad request if it did not.
            WireError::KeyNotInRegion { .. } => {
                self.refresh().await.ok();
                let same = self
                    .inner
                    .routes
                    .borrow()
                    .regions_by_id(id)
                    .is_some_and(|r| r.epoch == info.region.epoch);
                if same {
                    return Err(Error::Server(e));
                }
            }
            WireError::ServerBusy { .. } | WireError::ProposalDropped { .. } | WireError::ShuttingDown => {
                self.inner.routes.borrow_mut().set_leader(id, None);
                self.backoff(backoff).await;
            }
            WireError::OutcomeUnknown { .. } => return Err(Error::Undetermined),
            fatal => return Err(Error::Server(fatal)),
        }
        Ok(false)
    }

    async fn backoff(&self, backoff: &mut Duration) {
        self.count(|s| s.backoffs += 1);
        glommio::timer::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(self.inner.cfg.backoff_max);
    }

    // ---- the API ----

    pub async fn get(&self, key: &[u8]) -> Result<Option<Vec<u8>>> {
        match self.call(Locate::Key(key), |_| Op::Get { key: key.to_vec() }).await? {
            (_, Reply::Value(v)) => Ok(v),
            (_, other) => Err(unexpected(other)),
        }
    }

    pub async fn put(&self, key: &[u8], value: &[u8]) -> Result<()> {
        let op = |_: &WireRegion| Op::Put {
            key: key.to_vec(),
            value: value.to_vec(),
        };
        self.done(self.call(Locate::Key(key), op).await?.1)
    }

    pub async fn delete(&self, key: &[u8]) -> Result<()> {
        self.done(
            self.call(Locate::Key(key), |_| Op::Delete { key: key.to_vec() })
                .await?
                .1,
        )
    }

    /// Sets `key` to `new` (None: deletes it) if its current value is `expected` (None:
    /// absent). Returns whether it did, and the value found.
    pub async fn compare_and_swap(
        &self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: Option<&[u8]>,
    ) -> Result<(bool, Option<Vec<u8>>)> {
        let op = |_: &WireRegion| Op::CompareAndSwap {
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.map(<[u8]>::to_vec),
        };
        match self.call(Locate::Key(key), op).await? {
            (_, Reply::Cas { succeeded, previous }) => Ok((succeeded, previous)),
            (_, other) => Err(unexpected(other)),
        }
    }

    /// Values of `keys`, in order (one request per region).
    pub async fn batch_get(&self, keys: &[Vec<u8>]) -> Result<Vec<Option<Vec<u8>>>> {
        let mut out = vec![None; keys.len()];
        let mut left: Vec<usize> = (0..keys.len()).collect();
        while let Some(&first) = left.first() {
            let pick =
                |r: &WireRegion| -> Vec<usize> { left.iter().copied().filter(|&i| r.contains(&keys[i])).collect() };
            let (region, reply) = self
                .call(Locate::Key(&keys[first]), |r| Op::BatchGet {
                    keys: pick(r).into_iter().map(|i| keys[i].clone()).collect(),
                })
                .await?;
            let Reply::Values(values) = reply else {
                return Err(unexpected(reply));
            };
            let done = pick(&region);
            if values.len() != done.len() {
                return Err(Error::Unavailable("batch_get answer does not match its request".into()));
            }
            for (i, v) in done.iter().zip(values) {
                out[*i] = v;
            }
            left.retain(|i| !done.contains(i));
        }
        Ok(out)
    }

    /// Writes every pair; atomic per region, not across regions.
    pub async fn batch_put(&self, pairs: &[(Vec<u8>, Vec<u8>)]) -> Result<()> {
        let mut left: Vec<usize> = (0..pairs.len()).collect();
        while let Some(&first) = left.first() {
            let pick =
                |r: &WireRegion| -> Vec<usize> { left.iter().copied().filter(|&i| r.contains(&pairs[i].0)).collect() };
            let (region, reply) = self
                .call(Locate::Key(&pairs[first].0), |r| Op::BatchPut {
                    pairs: pick(r).into_iter().map(|i| pairs[i].clone()).collect(),
                })
                .await?;
            self.done(reply)?;
            let done = pick(&region);
            left.retain(|i| !done.contains(i));
        }
        Ok(())
    }

    /// Deletes every key in `[start, end)` (empty `end`: to the end of the key space).
    pub async fn delete_range(&self, start: &[u8], end: &[u8]) -> Result<()> {
        let mut cursor = start.to_vec();
        loop {
            let (region, reply) = self
                .call(Locate::Key(&cursor), |r| Op::DeleteRange {
                    start: cursor.clone(),
                    end: clamp_end(end, &r.end),
                })
                .await?;
            self.done(reply)?;
            if region.end.is_empty() || (!end.is_empty() && region.end.as_slice() >= end) {
                return Ok(());
            }
            cursor = region.end;
        }
    }

    /// At most `limit` pairs of `[start, end)` (empty `end`: unbounded), ascending, or
    /// descending from `end` when `reverse`.
    pub async fn scan(&self, start: &[u8], end: &[u8], limit: u32, reverse: bool) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let mut rows = Vec::new();
        // Forward: the next key to read. Reverse: the exclusive upper bound still to read.
        let mut cursor = if reverse { end.to_vec() } else { start.to_vec() };
        while (rows.len() as u32) < limit {
            let want = limit - rows.len() as u32;
            let at = if reverse {
                Locate::Below(&cursor)
            } else {
                Locate::Key(&cursor)
            };
            let (region, reply) = self
                .call(at, |r| {
                    let (s, e) = if reverse {
                        (start.max(r.start.as_slice()).to_vec(), cursor.clone())
                    } else {
                        (cursor.clone(), clamp_end(end, &r.end))
                    };
                    Op::Scan {
                        start: s,
                        end: e,
                        limit: want,
                        reverse,
                    }
                })
                .await?;
            let Reply::Rows { rows: got, more } = reply else {
                return Err(unexpected(reply));
            };
            let full = more || got.len() as u32 >= want;
            let last = got.last().map(|(k, _)| k.clone());
            rows.extend(got);
            match (full, last) {
                // The region may hold more: continue right after (or before) the last key.
                (true, Some(mut k)) => {
                    if reverse {
                        // Nothing lies below `start` (or below the empty key).
                        if k.as_slice() <= start || k.is_empty() {
                            break;
                        }
                        cursor = k;
                    } else {
                        k.push(0);
                        if !end.is_empty() && k.as_slice() >= end {
                            break;
                        }
                        cursor = k;
                    }
                }
                _ if reverse => {
                    if region.start.as_slice() <= start || region.start.is_empty() {
                        break;
                    }
                    cursor = region.start;
                }
                _ => {
                    if region.end.is_empty() || (!end.is_empty() && region.end.as_slice() >= end) {
                        break;
                    }
                    cursor = region.end;
                }
            }
        }
        Ok(rows)
    }

    fn done(&self, reply: Reply) -> Result<()> {
        match reply {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

/// The smaller of two exclusive upper bounds, where empty means unbounded.
fn clamp_end(a: &[u8], b: &[u8]) -> Vec<u8> {
    match (a.is_empty(), b.is_empty()) {
        (true, _) => b.to_vec(),
        (_, true) => a.to_vec(),
        _ => a.min(b).to_vec(),
    }
}

fn unexpected(reply: Reply) -> Error {
    Error::Unavailable(format!("unexpected answer: {reply:?}"))
}
