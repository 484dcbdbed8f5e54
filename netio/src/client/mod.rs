//! The shard-aware client: a request goes straight to the core that leads its region.
//!
//! Owns: the region cache (regions by start key with their epochs; a miss is looked up in the
//! placement service's directory, then in the nodes' own views), the leader cache (a hint per
//! region, corrected by every `NotLeader` / `WrongShard` / `EpochNotMatch` answer), one
//! pipelined connection per shard address, retries with exponential backoff, and a deadline
//! per operation. Runs on a glommio executor (`!Send`; one client per executor).
//!
//! Retry rule: a request is sent again only when it certainly was not applied (a typed
//! rejection, or a connection that never opened), until the operation's deadline. A read that
//! gets no answer within `attempt_timeout` asks another replica; a write that was sent waits
//! for its answer up to the deadline (a leader paused or cut off answers once it is back, often
//! with "not applied", and the write is retried then). A write whose answer never comes fails
//! with `Undetermined` (it may have been applied); `Timeout` means nothing was.
//! Must not: resend a write whose answer was lost (it is `Undetermined`), or take answers from
//! a second cluster: the first cluster id that answers is pinned (`WrongCluster`).
//!
//! Multi-region operations (batch_get, batch_put, delete_range, scan) are split by region and
//! are atomic per region only.

mod conn;
mod routes;
mod ts_batch;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use conn::{Answer, Conn};
use routes::{Locate, Routes};
use ts_batch::{Driving, Join, TsBatcher, Turn, Waiting};

use crate::error::{Error, Result};
use crate::frame::BODY_BYTES_MAX_DEFAULT;
use crate::msg::{
    ClusterInfo, DirectoryRegion, DirectoryStore, NodeStatus, Op, RegionInfo, Reply, Request, WireError, WirePeer,
    WirePeerChange, WireRegion,
};

/// Records of the placement service's directory. `complete`: every region's leader has had
/// time to report, so a record missing here does not exist; otherwise it may not have
/// reported yet to a placement leader that took over a moment ago.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directory<T> {
    pub records: Vec<T>,
    pub complete: bool,
}

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
    /// How long a region lookup in the placement service's directory may take before the
    /// client asks the nodes themselves (a placement leader paused or being replaced).
    pub directory_timeout: Duration,
    /// Timestamp requests in flight at once (`get_ts` callers beyond them share the next).
    pub ts_requests_in_flight_max: usize,
    /// Requests in flight on one connection before the client itself answers `ServerBusy`.
    pub inflight_per_connection_max: usize,
    pub body_bytes_max: u32,
    /// Mutual TLS with the cluster's CA and this client's certificate, when the cluster uses it.
    pub tls: Option<crate::tls::Tls>,
}

impl ClientConfig {
    pub fn new(endpoints: Vec<String>) -> ClientConfig {
        ClientConfig {
            endpoints,
            request_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(2),
            directory_timeout: Duration::from_millis(500),
            ts_requests_in_flight_max: 2,
            backoff_min: Duration::from_millis(5),
            backoff_max: Duration::from_millis(500),
            inflight_per_connection_max: 4096,
            body_bytes_max: BODY_BYTES_MAX_DEFAULT,
            tls: None,
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
    /// Asks of every node for its view (`refresh`).
    pub refreshes: u64,
    /// Regions looked up in the placement service's directory (a cache miss).
    pub directory_lookups: u64,
    pub backoffs: u64,
}

#[derive(Clone)]
pub struct Client {
    inner: Rc<Inner>,
}

struct Inner {
    cfg: ClientConfig,
    /// The cluster the first answer came from; answers of any other are refused.
    cluster_id: Cell<Option<u64>>,
    routes: RefCell<Routes>,
    conns: RefCell<HashMap<String, Rc<Conn>>>,
    stats: Cell<ClientStats>,
    /// Client address of the node last known to run the placement service.
    placement: RefCell<Option<String>>,
    /// Concurrent `get_ts` callers sharing requests.
    ts_batch: RefCell<TsBatcher>,
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
        let cluster_id = views.first().map(|v| v.cluster_id);
        for v in views {
            routes.merge(v);
        }
        Client {
            inner: Rc::new(Inner {
                cfg,
                cluster_id: Cell::new(cluster_id),
                routes: RefCell::new(routes),
                conns: RefCell::new(HashMap::new()),
                stats: Cell::new(ClientStats::default()),
                placement: RefCell::new(None),
                ts_batch: RefCell::default(),
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

    /// Asks every endpoint and every node known for its view (all at once) and merges what
    /// answers. Fails when none answers, or when one answers for another cluster.
    pub async fn refresh(&self) -> Result<Vec<ClusterInfo>> {
        self.count(|s| s.refreshes += 1);
        let mut addrs = self.inner.cfg.endpoints.clone();
        for a in self.inner.routes.borrow().node_addrs() {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        let asks: Vec<_> = addrs
            .into_iter()
            .map(|addr| {
                let client = self.clone();
                glommio::spawn_local(async move {
                    let answer = client.ask(&addr, cluster_info_request()).await;
                    (addr, answer)
                })
            })
            .collect();
        let (mut views, mut last_error) = (Vec::new(), None);
        for ask in asks {
            match ask.await {
                (addr, Ok(Reply::Cluster(info))) => {
                    self.pin_cluster(&addr, info.cluster_id)?;
                    self.inner.routes.borrow_mut().merge(info.clone());
                    views.push(info);
                }
                (addr, Ok(other)) => last_error = Some(format!("{addr}: unexpected answer {other:?}")),
                (_, Err(Error::Unavailable(why))) => last_error = Some(why),
                (_, Err(e)) => last_error = Some(e.to_string()),
            }
        }
        if views.is_empty() {
            return Err(Error::Unavailable(
                last_error.unwrap_or_else(|| "no endpoints given".into()),
            ));
        }
        Ok(views)
    }

    /// The cluster this client talks to is the first one that answers; any other is an error.
    fn pin_cluster(&self, addr: &str, cluster_id: u64) -> Result<()> {
        match self.inner.cluster_id.get() {
            None => self.inner.cluster_id.set(Some(cluster_id)),
            Some(expected) if expected != cluster_id => {
                return Err(Error::WrongCluster {
                    addr: addr.to_string(),
                    expected,
                    found: cluster_id,
                })
            }
            Some(_) => {}
        }
        Ok(())
    }

    /// The id of the cluster this client talks to, once a node has answered.
    pub fn cluster_id(&self) -> Option<u64> {
        self.inner.cluster_id.get()
    }

    /// One request to one address, one attempt of at most `attempt_timeout`.
    pub async fn ask(&self, addr: &str, request: Request) -> Result<Reply> {
        let conn = self.conn(addr).await?;
        let rx = conn.send(&request)?;
        let wait = self.inner.cfg.attempt_timeout;
        match conn::wait(rx, wait).await {
            Some(Answer::Reply(Reply::Failed(e))) => Err(Error::Server(e)),
            Some(Answer::Reply(r)) => Ok(r),
            Some(Answer::Lost(why)) => Err(Error::Unavailable(format!("{addr}: {why}"))),
            None => Err(Error::Unavailable(format!(
                "{addr} did not answer within {} ms (is it a corekv client port?)",
                wait.as_millis()
            ))),
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
            cfg.tls.as_ref(),
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
        let mut last = String::from("no server was reachable");
        while Instant::now() < deadline {
            let (info, target, addr) = match self.route(at, tries, &mut backoff).await {
                Ok(found) => found,
                Err(why) => {
                    last = why;
                    continue;
                }
            };
            tries += 1;
            let request = Request {
                region_id: info.region.id,
                epoch: info.region.epoch,
                op: op(&info.region),
            };
            let is_write = request.op.is_write();
            match self.attempt(&addr, &request, deadline).await {
                Attempt::Reply(Reply::Failed(e)) => {
                    last = format!("{addr}: {e}");
                    self.reroute(&info, target, e, &mut backoff).await?;
                }
                Attempt::Reply(reply) => {
                    if info.leader != Some(target) {
                        self.inner.routes.borrow_mut().set_leader(info.region.id, Some(target));
                    }
                    return Ok((info.region, reply));
                }
                Attempt::Lost(reason) if is_write => return Err(Error::Undetermined { reason }),
                Attempt::NotSent(why) | Attempt::Lost(why) => {
                    // Safe to try another replica: nothing was sent, or it was a read.
                    tracing::debug!(%addr, why, "attempt failed");
                    last = why;
                    self.inner.routes.borrow_mut().set_leader(info.region.id, None);
                    self.backoff(&mut backoff).await;
                }
            }
        }
        Err(Error::Timeout {
            ms: cfg.request_timeout.as_millis() as u64,
            last,
        })
    }

    /// The region at `at`, the replica to ask (the leader if known, else the next one) and its
    /// address. Not cached: looked up in the placement service's directory, else in the
    /// nodes' own views. `Err` says why there is none yet, after refreshing and waiting.
    async fn route(
        &self,
        at: Locate<'_>,
        tries: usize,
        backoff: &mut Duration,
    ) -> std::result::Result<(RegionInfo, WirePeer, String), String> {
        if let Some(found) = self.cached(at, tries) {
            return Ok(found);
        }
        self.look_up(at).await;
        if let Some(found) = self.cached(at, tries) {
            return Ok(found);
        }
        let why = match self.refresh().await {
            Err(e) => e.to_string(),
            Ok(_) => "no node knows where the key's region is yet".to_string(),
        };
        self.backoff(backoff).await;
        Err(why)
    }

    fn cached(&self, at: Locate<'_>, tries: usize) -> Option<(RegionInfo, WirePeer, String)> {
        let routes = self.inner.routes.borrow();
        let info = routes.locate(at)?.clone();
        let peers = &info.region.peers;
        let target = info.leader.or_else(|| peers.get(tries % peers.len().max(1)).copied())?;
        let addr = routes.addr_of(&target)?;
        Some((info, target, addr))
    }

    /// Looks the region at `at` up in the placement service's directory (and the addresses
    /// of nodes the client does not know yet), within `directory_timeout`. A miss or a failure
    /// leaves the cache as it was.
    async fn look_up(&self, at: Locate<'_>) {
        self.count(|s| s.directory_lookups += 1);
        let op = match at {
            Locate::Key(key) => Op::GetRegion { key: key.to_vec() },
            Locate::Below(bound) => Op::GetRegionBelow { bound: bound.to_vec() },
            Locate::Id(id) => Op::GetRegionById { id },
        };
        let deadline = Instant::now() + self.inner.cfg.directory_timeout;
        let Ok(Reply::Regions { regions, .. }) = self.ask_placement_until(op, deadline).await else {
            return;
        };
        let unknown = |routes: &Routes| {
            let mut peers = regions.iter().flat_map(|r| &r.heartbeat.region.peers);
            peers.any(|p| !routes.knows_node(p.node))
        };
        if unknown(&self.inner.routes.borrow()) {
            if let Ok(Reply::Stores { stores, .. }) = self.ask_placement_until(Op::GetAllStores, deadline).await {
                let mut routes = self.inner.routes.borrow_mut();
                for s in stores {
                    routes.add_node(s.heartbeat.store_id, &s.heartbeat.client_addr);
                }
            }
        }
        let mut routes = self.inner.routes.borrow_mut();
        for r in regions {
            let h = r.heartbeat;
            let (leader, term) = (Some(h.leader), h.term);
            routes.merge_region(RegionInfo {
                region: h.region,
                leader,
                term,
            });
        }
    }

    /// Sends `request` to `addr` and waits for its answer: a read for at most `attempt_timeout`
    /// (then another replica is asked), a write until the deadline, since a write sent has to
    /// be answered to be retried (a slow or paused leader may still say it did not apply it).
    async fn attempt(&self, addr: &str, request: &Request, deadline: Instant) -> Attempt {
        self.count(|s| s.attempts += 1);
        let sent = match self.conn(addr).await {
            Ok(conn) => conn.send(request),
            Err(e) => Err(e),
        };
        let rx = match sent {
            Ok(rx) => rx,
            Err(e) => return Attempt::NotSent(e.to_string()),
        };
        let left = deadline.saturating_duration_since(Instant::now());
        let wait = match request.op.is_write() {
            true => left,
            false => self.inner.cfg.attempt_timeout.min(left),
        };
        match conn::wait(rx, wait).await {
            Some(Answer::Reply(reply)) => Attempt::Reply(reply),
            Some(Answer::Lost(why)) => Attempt::Lost(format!("{addr}: {why}")),
            None => Attempt::Lost(format!("{addr} did not answer within {} ms", wait.as_millis())),
        }
    }

    /// Acts on a typed rejection: updates the caches and waits if waiting helps. `Err` when
    /// retrying cannot help.
    async fn reroute(&self, info: &RegionInfo, target: WirePeer, e: WireError, backoff: &mut Duration) -> Result<()> {
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
                    None => self.inner.routes.borrow_mut().evict(id),
                }
            }
            // That node has no replica (any more): the region is looked up again.
            WireError::RegionNotFound { .. } => {
                self.inner.routes.borrow_mut().evict(id);
                self.backoff(backoff).await;
            }
            WireError::ServerBusy { .. }
            | WireError::ProposalDropped { .. }
            | WireError::ShuttingDown
            | WireError::RegionUnavailable { .. } => {
                self.inner.routes.borrow_mut().set_leader(id, None);
                self.backoff(backoff).await;
            }
            WireError::OutcomeUnknown { .. } => return Err(Error::Undetermined { reason: e.to_string() }),
            // Among them `KeyNotInRegion`: a replica checks the epoch first (a stale one is
            // `EpochNotMatch`), so the range the client knew is current and the request is bad.
            fatal => return Err(Error::Server(fatal)),
        }
        Ok(())
    }

    async fn backoff(&self, backoff: &mut Duration) {
        self.count(|s| s.backoffs += 1);
        glommio::timer::sleep(*backoff).await;
        *backoff = (*backoff * 2).min(self.inner.cfg.backoff_max);
    }

    /// Where to ask the placement service next: the node last known to run it, else each
    /// known node in turn.
    fn placement_addr(&self, tries: usize) -> Option<String> {
        if let Some(addr) = self.inner.placement.borrow().clone() {
            return Some(addr);
        }
        let mut addrs = self.inner.cfg.endpoints.clone();
        for a in self.inner.routes.borrow().node_addrs() {
            if !addrs.contains(&a) {
                addrs.push(a);
            }
        }
        addrs.get(tries % addrs.len().max(1)).cloned()
    }

    // ---- the API ----

    /// `count` consecutive timestamps from the cluster's TSO (strictly increasing across the
    /// cluster); returns the first. Concurrent callers share requests (`ts_batch`).
    pub async fn get_ts(&self, count: u32) -> Result<u64> {
        if count == 0 || u64::from(count) > ts_batch::TS_BATCH_MAX {
            return Err(Error::InvalidArgument(format!(
                "timestamps asked at once: 1..={}",
                ts_batch::TS_BATCH_MAX
            )));
        }
        self.count(|s| s.operations += 1);
        let joined = (self.inner.ts_batch.borrow_mut()).join(count, self.inner.cfg.ts_requests_in_flight_max);
        let batch = match joined {
            Join::Drive => Vec::new(),
            Join::Wait(rx) => match Waiting::new(&self.inner.ts_batch, rx).turn().await {
                Ok(Turn::Done(result)) => return result,
                Ok(Turn::Drive(batch)) => batch,
                Err(_) => return Err(Error::Unavailable("the timestamp batch was dropped".into())),
            },
        };
        let mut driving = Driving::new(&self.inner.ts_batch, batch);
        let result = self.get_ts_once(driving.total(count)).await;
        driving.settle(count, &result);
        result
    }

    /// One request for `count` timestamps.
    async fn get_ts_once(&self, count: u32) -> Result<u64> {
        match self.ask_placement(Op::GetTs { count }).await? {
            Reply::Timestamps { first, .. } => Ok(first),
            other => Err(unexpected(other)),
        }
    }

    /// Asks the placement service: follows the nodes' hints to its leader and retries until
    /// the deadline (what it serves changes nothing, so asking again is safe). Returns the
    /// first answer that is not a redirect or a retryable refusal.
    async fn ask_placement(&self, op: Op) -> Result<Reply> {
        let deadline = Instant::now() + self.inner.cfg.request_timeout;
        self.ask_placement_until(op, deadline).await
    }

    async fn ask_placement_until(&self, op: Op, deadline: Instant) -> Result<Reply> {
        let cfg = &self.inner.cfg;
        let (mut backoff, mut tries) = (cfg.backoff_min, 0);
        let mut last = String::from("no node was reachable");
        let request = Request {
            region_id: 0,
            epoch: Default::default(),
            op,
        };
        while Instant::now() < deadline {
            let Some(addr) = self.placement_addr(tries) else {
                return Err(Error::Unavailable("no endpoints given".into()));
            };
            tries += 1;
            let hint = match self.attempt(&addr, &request, deadline).await {
                Attempt::Reply(Reply::Failed(WireError::NotPlacementLeader { addr: hint, .. })) => {
                    self.count(|s| s.redirects += 1);
                    last = format!("{addr}: not the placement leader");
                    hint.filter(|h| *h != addr)
                }
                Attempt::Reply(Reply::Failed(e)) if e.is_retryable() => {
                    last = format!("{addr}: {e}");
                    None
                }
                Attempt::Reply(Reply::Failed(e)) => return Err(Error::Server(e)),
                Attempt::Reply(reply) => {
                    *self.inner.placement.borrow_mut() = Some(addr);
                    return Ok(reply);
                }
                Attempt::NotSent(why) | Attempt::Lost(why) => {
                    last = why;
                    None
                }
            };
            if hint.is_none() {
                self.backoff(&mut backoff).await;
            }
            *self.inner.placement.borrow_mut() = hint;
        }
        Err(Error::Timeout {
            ms: cfg.request_timeout.as_millis() as u64,
            last,
        })
    }

    /// `count` new ids from the cluster's id allocator; returns the first.
    pub async fn alloc_ids(&self, count: u32) -> Result<u64> {
        match self.ask_placement(Op::AllocIds { count }).await? {
            Reply::Ids { first, .. } => Ok(first),
            other => Err(unexpected(other)),
        }
    }

    /// Registers store `id` (from `alloc_ids`) with its shard 0's addresses: how a node joins.
    pub async fn put_store(&self, id: u64, client_addr: &str, peer_addr: &str, shards: u32) -> Result<()> {
        let op = Op::PutStore {
            id,
            client_addr: client_addr.to_string(),
            peer_addr: peer_addr.to_string(),
            shards,
        };
        match self.ask_placement(op).await? {
            Reply::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// Regions from the placement service's directory: the one holding `key`.
    pub async fn get_region(&self, key: &[u8]) -> Result<Directory<DirectoryRegion>> {
        self.directory_regions(Op::GetRegion { key: key.to_vec() }).await
    }

    pub async fn get_region_by_id(&self, id: u64) -> Result<Directory<DirectoryRegion>> {
        self.directory_regions(Op::GetRegionById { id }).await
    }

    /// Up to `limit` regions holding keys of `[start, end)` (empty `end`: to the end), in
    /// key order (the service caps `limit` at 256: page from the last region's end).
    pub async fn scan_regions(&self, start: &[u8], end: &[u8], limit: u32) -> Result<Directory<DirectoryRegion>> {
        let op = Op::ScanRegions {
            start: start.to_vec(),
            end: end.to_vec(),
            limit,
        };
        self.directory_regions(op).await
    }

    pub async fn get_store(&self, id: u64) -> Result<Directory<DirectoryStore>> {
        self.directory_stores(Op::GetStore { id }).await
    }

    pub async fn get_all_stores(&self) -> Result<Directory<DirectoryStore>> {
        self.directory_stores(Op::GetAllStores).await
    }

    async fn directory_regions(&self, op: Op) -> Result<Directory<DirectoryRegion>> {
        match self.ask_placement(op).await? {
            Reply::Regions { regions, complete } => Ok(Directory {
                records: regions,
                complete,
            }),
            other => Err(unexpected(other)),
        }
    }

    async fn directory_stores(&self, op: Op) -> Result<Directory<DirectoryStore>> {
        match self.ask_placement(op).await? {
            Reply::Stores { stores, complete } => Ok(Directory {
                records: stores,
                complete,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// The health and load of the node at `addr` (one attempt).
    pub async fn node_status(&self, addr: &str) -> Result<NodeStatus> {
        let request = Request {
            region_id: 0,
            epoch: Default::default(),
            op: Op::NodeStatus,
        };
        match self.ask(addr, request).await? {
            Reply::Status(status) => {
                self.pin_cluster(addr, status.cluster_id)?;
                Ok(status)
            }
            other => Err(unexpected(other)),
        }
    }

    /// Splits the region holding `key` at `key` (the key must not start its region); returns
    /// once the split is applied on the region's leader (`refresh` then shows both regions).
    pub async fn split_region(&self, key: &[u8]) -> Result<()> {
        let op = |_: &WireRegion| Op::Split {
            split_key: key.to_vec(),
        };
        self.done(self.call(Locate::Key(key), op).await?.1)
    }

    /// Changes region `region_id`'s membership by one step; returns once it is applied on the
    /// region's leader (`refresh` then shows the new membership).
    pub async fn change_peer(&self, region_id: u64, change: WirePeerChange) -> Result<()> {
        let op = |_: &WireRegion| Op::ChangePeer { change };
        self.done(self.call(Locate::Id(region_id), op).await?.1)
    }

    /// Hands region `region_id`'s leadership to its replica on store `to_store`. Returns once
    /// the leader started the handover; `refresh` then shows whether it completed (raft
    /// completes it within an election timeout, or abandons it).
    pub async fn transfer_leader(&self, region_id: u64, to_store: u64) -> Result<()> {
        let op = |_: &WireRegion| Op::TransferLeader { to_store };
        self.done(self.call(Locate::Id(region_id), op).await?.1)
    }

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
        if is_empty_range(start, end) {
            return Ok(());
        }
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
        if is_empty_range(start, end) {
            return Ok(rows);
        }
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

/// How one attempt ended.
enum Attempt {
    Reply(Reply),
    /// Never sent (no connection, or the client's own in-flight bound): certainly not applied.
    NotSent(String),
    /// Sent, and no answer came back (the connection broke or the wait ran out).
    Lost(String),
}

fn cluster_info_request() -> Request {
    Request {
        region_id: 0,
        epoch: Default::default(),
        op: Op::ClusterInfo,
    }
}

/// Whether `[start, end)` holds no key (empty `end`: unbounded, never empty).
fn is_empty_range(start: &[u8], end: &[u8]) -> bool {
    !end.is_empty() && start >= end
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
