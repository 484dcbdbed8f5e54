//! The raft transport of one shard: outgoing connections to the peer ports of the shards that
//! host its regions' other replicas, one per destination (node, shard), each fed by a bounded
//! queue. Every connection opens with this shard's `PeerHello`; the listener answers with its
//! own, or refuses (another cluster), and nothing else is read before that answer.
//!
//! Messages of one loop iteration go out as ONE `RaftBatch` frame per destination. A full
//! queue drops the batch (raft resends); a broken connection drops its queue and reconnects
//! with backoff. Snapshots stream from their files one bounded chunk at a time (read off the
//! shard's thread when the link is ready for it, taking turns with raft frames, so a stream
//! holds one chunk of memory and never delays heartbeats behind it); the sender reports a
//! snapshot delivered only when the receiver acknowledged receiving it whole (a `SnapshotAck`
//! on the same connection), and failed when a file could not be read or the connection broke
//! first: raft-rs sends another.
//!
//! Owns: one link per destination shard (queue bounded by `peer_queue_bytes_max`, connection,
//! reconnect backoff) and each snapshot stream until its fate is reported. Must not: wait for
//! room (what does not fit is dropped, never blocking the loop), hold more than one chunk of a
//! snapshot, or report a snapshot delivered before the receiver's ack.

use std::cell::{Cell, RefCell};
use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use corekv_netio::frame::{self, FrameKind};
use corekv_netio::io::{self, FrameReader};
use corekv_netio::msg::{ArchivedPeerHello, ArchivedSnapshotAck, ArchivedWireError, PeerHello, RaftBatch, WireError};
use corekv_netio::tls::{Stream, Tls};
use corekv_raftstore::snapshot::{self, SnapshotMeta};
use corekv_raftstore::snapshot_chunks::{self, Piece, SnapshotChunk, SNAPSHOT_CHUNK_BYTES_MAX};
use corekv_raftstore::{batch_by_destination, Destination, RaftMessage};

use crate::config::NetSection;
use crate::convert;
use crate::metrics::ShardMetrics;
use crate::routing::Routing;

/// Called with (region, receiving peer, delivered) when a snapshot's fate is known.
pub type SnapshotReport = Rc<dyn Fn(u64, u64, bool)>;

/// Bytes written to a peer connection in one go.
const WRITE_BYTES_MAX: usize = 4 << 20;
const RECONNECT_MS_MIN: u64 = 20;

pub struct Transport {
    /// This node's own address, bound for outgoing connections (`None` when it listens on all).
    source: Option<std::net::IpAddr>,
    tls: Option<Tls>,
    hello: Rc<PeerHello>,
    routing: std::sync::Arc<Routing>,
    cfg: NetSection,
    links: RefCell<HashMap<Destination, Rc<Link>>>,
    metrics: Rc<ShardMetrics>,
    report: SnapshotReport,
    /// The shard's snapshot dir (where generated snapshots' files are).
    snap_dir: PathBuf,
}

enum Item {
    Frame(Vec<u8>),
    /// A snapshot stream, read from its files one chunk per turn.
    Snapshot(Box<Outgoing>),
}

/// A snapshot stream being sent: its message, the dir of its files, its plan, its next piece.
struct Outgoing {
    /// (region, receiving peer).
    key: (u64, u64),
    header: RaftMessage,
    dir: PathBuf,
    plan: Vec<Piece>,
    next: usize,
}

/// What a link needs to (re)connect: where from, what to say first, where to record what
/// the listener says.
struct Peer {
    source: Option<std::net::IpAddr>,
    tls: Option<Tls>,
    hello: Rc<PeerHello>,
    routing: std::sync::Arc<Routing>,
    cfg: NetSection,
    report: SnapshotReport,
}

struct Link {
    /// The node this link leads to, and its shard's peer address.
    node: u64,
    addr: std::net::SocketAddr,
    /// The listener accepted this shard's hello on the current connection.
    up: Cell<bool>,
    /// The last connection was refused (its warning logged).
    refused: Cell<bool>,
    queue: RefCell<VecDeque<Item>>,
    queued_bytes: Cell<usize>,
    wake: event_listener::Event,
    /// Snapshots written whole, waiting for the receiver's ack.
    unacked: RefCell<Vec<(u64, u64)>>,
    /// The stream whose chunk is being read now (out of the queue meanwhile), and whether
    /// the receiver refused it meanwhile.
    in_turn: Cell<Option<(u64, u64)>>,
    turn_refused: Cell<bool>,
}

impl Transport {
    /// `hello` is what this shard says first on every connection it opens.
    #[allow(clippy::too_many_arguments)] // each is one of the transport's own parts
    pub fn new(
        source: Option<std::net::IpAddr>,
        tls: Option<Tls>,
        hello: PeerHello,
        routing: std::sync::Arc<Routing>,
        cfg: NetSection,
        metrics: Rc<ShardMetrics>,
        report: SnapshotReport,
        snap_dir: PathBuf,
    ) -> Transport {
        Transport {
            source: source.filter(|ip| !ip.is_unspecified()),
            tls,
            hello: Rc::new(hello),
            routing,
            cfg,
            links: RefCell::new(HashMap::new()),
            metrics,
            report,
            snap_dir,
        }
    }

    /// Queues one loop iteration's messages: one frame per destination, a stream per snapshot.
    pub fn send(&self, msgs: Vec<RaftMessage>) {
        let (snapshots, msgs): (Vec<RaftMessage>, Vec<RaftMessage>) = msgs
            .into_iter()
            .partition(|m| m.msg.get_msg_type() == raft::eraftpb::MessageType::MsgSnapshot);
        for (dest, batch) in batch_by_destination(msgs) {
            for (count, frame) in self.frames(&batch) {
                let sent = self
                    .link(dest)
                    .is_some_and(|link| link.push(vec![Item::Frame(frame)], self.bound()));
                if sent {
                    self.metrics.raft_messages_sent.inc_by(count);
                } else {
                    self.metrics.raft_messages_dropped.inc_by(count);
                }
            }
        }
        for msg in snapshots {
            let (region_id, to, dest) = (msg.region_id, msg.to.id, (msg.to.node, msg.to.shard));
            let queued = self.outgoing(msg).is_some_and(|stream| {
                self.link(dest)
                    .is_some_and(|link| link.push(vec![Item::Snapshot(stream)], self.bound()))
            });
            if queued {
                self.metrics.snapshots_sent.inc();
            } else {
                (self.report)(region_id, to, false);
            }
        }
    }

    /// Queues `frame` for shard 0 of `node`; false when it does not fit (or `node` is not a
    /// member): it is dropped, and the next one of its kind follows.
    pub fn send_to_shard_0(&self, node: u64, frame: Vec<u8>) -> bool {
        self.link((node, 0))
            .is_some_and(|link| link.push(vec![Item::Frame(frame)], self.bound()))
    }

    /// The stream of a `MsgSnapshot` this shard generated (its metadata names the files).
    fn outgoing(&self, header: RaftMessage) -> Option<Box<Outgoing>> {
        let (region_id, index) = (header.region_id, header.msg.get_snapshot().get_metadata().index);
        let meta = SnapshotMeta::decode(region_id, index, &header.msg.get_snapshot().data)
            .inspect_err(|e| tracing::warn!(region_id, error = %e, "snapshot not sent"))
            .ok()?;
        Some(Box::new(Outgoing {
            key: (region_id, header.to.id),
            dir: snapshot::gen_dir(&self.snap_dir, region_id, index),
            plan: snapshot_chunks::plan(&meta.sizes(), SNAPSHOT_CHUNK_BYTES_MAX),
            header,
            next: 0,
        }))
    }

    /// One destination's messages as `RaftBatch` frames of at most half the frame limit each
    /// (a single larger message goes alone; commands are bounded far below the limit).
    fn frames(&self, batch: &[RaftMessage]) -> Vec<(u64, Vec<u8>)> {
        let budget = self.cfg.frame_bytes_max as usize / 2;
        let mut parts = Vec::new();
        let mut envelopes = Vec::new();
        let mut bytes = 0;
        for m in batch {
            let e = convert::envelope(m);
            if !envelopes.is_empty() && bytes + e.message.len() > budget {
                parts.push(std::mem::take(&mut envelopes));
                bytes = 0;
            }
            bytes += e.message.len();
            envelopes.push(e);
        }
        parts.push(envelopes);
        parts
            .into_iter()
            .map(|messages| {
                let count = messages.len() as u64;
                (count, frame::encode(FrameKind::RaftBatch, 0, &RaftBatch { messages }))
            })
            .collect()
    }

    /// Peer shards this one has a link to that is not up now (unreachable, or refusing).
    pub fn links_down(&self) -> usize {
        self.links.borrow().values().filter(|l| !l.up.get()).count()
    }

    /// This shard's `PeerHello` (a listener answers with it too).
    pub fn hello(&self) -> &PeerHello {
        &self.hello
    }

    fn bound(&self) -> usize {
        self.cfg.peer_queue_bytes_max
    }

    fn link(&self, dest: Destination) -> Option<Rc<Link>> {
        if let Some(l) = self.links.borrow().get(&dest) {
            return Some(Rc::clone(l));
        }
        // Any member: the initial ones and the stores registered since (`Routing::add_stores`).
        let mut addr = self.routing.peer_addr_of(dest.0)?;
        addr.set_port(addr.port().checked_add(u16::try_from(dest.1).ok()?)?);
        let link = Rc::new(Link {
            node: dest.0,
            addr,
            up: Cell::new(false),
            refused: Cell::new(false),
            queue: RefCell::new(VecDeque::new()),
            queued_bytes: Cell::new(0),
            wake: event_listener::Event::new(),
            unacked: RefCell::new(Vec::new()),
            in_turn: Cell::new(None),
            turn_refused: Cell::new(false),
        });
        self.links.borrow_mut().insert(dest, Rc::clone(&link));
        let peer = Peer {
            source: self.source,
            tls: self.tls.clone(),
            hello: Rc::clone(&self.hello),
            routing: std::sync::Arc::clone(&self.routing),
            cfg: self.cfg.clone(),
            report: Rc::clone(&self.report),
        };
        glommio::spawn_local(Rc::clone(&link).run(peer)).detach();
        Some(link)
    }
}

impl Link {
    /// Queues `items` whole, or nothing if that would exceed `bound` bytes.
    fn push(&self, items: Vec<Item>, bound: usize) -> bool {
        let bytes: usize = items.iter().map(Item::bytes).sum();
        if self.queued_bytes.get() + bytes > bound {
            return false;
        }
        self.queued_bytes.set(self.queued_bytes.get() + bytes);
        self.queue.borrow_mut().extend(items);
        self.wake.notify(1);
        true
    }

    /// Connects when there is something to send, writes, reconnects with backoff after a failure.
    async fn run(self: Rc<Self>, peer: Peer) {
        let cfg = &peer.cfg;
        let mut backoff_ms = RECONNECT_MS_MIN;
        loop {
            self.wait_for_work(&Cell::new(false)).await;
            match self.connect(&peer).await {
                Ok(stream) => {
                    backoff_ms = RECONNECT_MS_MIN;
                    self.serve(stream, &peer).await;
                }
                Err(e) => tracing::debug!(addr = %self.addr, error = %e, "peer shard unreachable"),
            }
            // Whatever was queued or unacknowledged is lost with the connection.
            self.fail_all(&peer.report);
            glommio::timer::sleep(Duration::from_millis(backoff_ms)).await;
            backoff_ms = (backoff_ms * 2).min(cfg.reconnect_ms_max);
        }
    }

    /// A connection to the peer shard: TCP from this node's address, then TLS if configured.
    async fn connect(&self, peer: &Peer) -> std::io::Result<Stream> {
        let limit = Duration::from_millis(peer.cfg.connect_timeout_ms);
        let tcp = io::connect(self.addr, peer.source, limit).await?;
        let _ = tcp.set_nodelay(true);
        match &peer.tls {
            None => Ok(Stream::Plain(tcp)),
            Some(tls) => {
                let limit = Duration::from_millis(peer.cfg.handshake_timeout_ms);
                crate::server::within(limit, tls.connect(&self.addr.ip().to_string(), tcp)).await
            }
        }
    }

    async fn serve(self: &Rc<Self>, stream: Stream, peer: &Peer) {
        let (read, mut write) = futures_lite::io::split(stream);
        let broken = Rc::new(Cell::new(false));
        let acks = {
            let (link, broken, report) = (Rc::clone(self), Rc::clone(&broken), Rc::clone(&peer.report));
            let routing = std::sync::Arc::clone(&peer.routing);
            let frame_bytes_max = peer.cfg.frame_bytes_max;
            glommio::spawn_local(async move {
                let mut frames = FrameReader::new(read, link.addr.to_string(), frame_bytes_max);
                if let Ok(Some(f)) = frames.next().await {
                    link.greeted(&f, &routing);
                }
                while let Ok(Some(f)) = frames.next().await {
                    if f.header.kind != FrameKind::SnapshotAck || !link.up.get() {
                        break;
                    }
                    let Ok(ack) = frame::access::<ArchivedSnapshotAck>(&f.body) else {
                        break;
                    };
                    let key = (ack.region_id.to_native(), ack.to_peer.to_native());
                    link.acked(key, ack.accepted, &report);
                }
                broken.set(true);
                link.wake.notify(usize::MAX);
            })
        };
        let addr = self.addr.to_string();
        let mut out = frame::encode(FrameKind::PeerHello, 0, &*peer.hello);
        if io::write_frames(&mut write, &addr, &out).await.is_err() {
            return;
        }
        loop {
            self.wait_for_work(&broken).await;
            if broken.get() {
                break;
            }
            out.clear();
            if let Some(stream) = self.take_frames(&mut out) {
                self.stream_turn(stream, &mut out, &peer.report).await;
            }
            if io::write_frames(&mut write, &addr, &out).await.is_err() {
                break;
            }
        }
        self.up.set(false);
        drop(acks);
    }

    /// Moves queued frames into `out` up to `WRITE_BYTES_MAX`, stopping at a snapshot stream,
    /// which it returns (its turn is next).
    fn take_frames(&self, out: &mut Vec<u8>) -> Option<Box<Outgoing>> {
        let mut queue = self.queue.borrow_mut();
        while out.len() < WRITE_BYTES_MAX {
            match queue.pop_front()? {
                Item::Frame(f) => {
                    self.queued_bytes.set(self.queued_bytes.get() - f.len());
                    out.extend_from_slice(&f);
                }
                Item::Snapshot(stream) => return Some(stream),
            }
        }
        None
    }

    /// A snapshot stream's turn: its next chunk, read from its file off the shard's thread,
    /// goes into `out`; the stream goes back to the end of the queue, or, done, awaits its ack
    /// (from now on: the verdict may arrive before this write returns; a broken connection
    /// fails it in `fail_all`). A file that cannot be read fails the stream.
    async fn stream_turn(&self, mut stream: Box<Outgoing>, out: &mut Vec<u8>, report: &SnapshotReport) {
        let piece = stream.plan[stream.next];
        let dir = stream.dir.clone();
        self.in_turn.set(Some(stream.key));
        let read = glommio::executor()
            .spawn_blocking(move || snapshot::read_chunk(&dir, piece.file, piece.offset, piece.len))
            .await;
        self.in_turn.set(None);
        let (region_id, to) = stream.key;
        if self.turn_refused.replace(false) {
            return report(region_id, to, false);
        }
        let bytes = match read {
            Ok(bytes) => bytes,
            Err(e) => {
                tracing::warn!(region_id, to, error = %e, "snapshot file unreadable; stream failed");
                return report(region_id, to, false);
            }
        };
        let chunk = SnapshotChunk {
            header: stream.header.clone(),
            seq: stream.next as u32,
            file: piece.file,
            offset: piece.offset,
            bytes,
        };
        out.extend_from_slice(&frame::encode(FrameKind::SnapshotChunk, 0, &convert::chunk(&chunk)));
        stream.next += 1;
        if stream.next < stream.plan.len() {
            self.queue.borrow_mut().push_back(Item::Snapshot(stream));
        } else {
            self.unacked.borrow_mut().push(stream.key);
        }
    }

    /// The listener's first frame: its `PeerHello` (the link is up; its node's client address
    /// is learned), or the reason it refused this shard (logged once until the link is up).
    fn greeted(&self, f: &io::Frame, routing: &Routing) {
        let hello = (f.header.kind == FrameKind::PeerHello)
            .then(|| frame::access::<ArchivedPeerHello>(&f.body).ok())
            .flatten()
            .filter(|h| h.cluster_id == routing.cluster_id() && h.node_id == self.node);
        if let Some(h) = hello {
            if h.client_addr.len() <= crate::routing::CLIENT_ADDR_BYTES_MAX {
                routing.learn_client_addr(h.node_id.to_native(), h.client_addr.as_str());
            }
            self.up.set(true);
            self.refused.set(false);
            return;
        }
        let why = match f.header.kind {
            FrameKind::Error => frame::access::<ArchivedWireError>(&f.body)
                .ok()
                .and_then(|e| rkyv::deserialize::<WireError, rkyv::rancor::Error>(e).ok())
                .map_or_else(|| "an unreadable error frame".to_string(), |e| e.to_string()),
            kind => format!("answered with a {kind:?} frame, not a hello of this cluster"),
        };
        if !self.refused.replace(true) {
            tracing::warn!(addr = %self.addr, why, "peer shard refused this node's connection");
        }
    }

    /// The receiver's verdict on the stream `key`: after it was sent whole, or (a refusal)
    /// while it is still being sent, which then stops. Either way raft learns it.
    fn acked(&self, key: (u64, u64), accepted: bool, report: &SnapshotReport) {
        let mut unacked = self.unacked.borrow_mut();
        if let Some(at) = unacked.iter().position(|k| *k == key) {
            unacked.remove(at);
            drop(unacked);
            return report(key.0, key.1, accepted);
        }
        drop(unacked);
        if !accepted && self.in_turn.get() == Some(key) {
            return self.turn_refused.set(true); // `stream_turn` reports it
        }
        let mut queue = self.queue.borrow_mut();
        let sending = queue
            .iter()
            .position(|i| matches!(i, Item::Snapshot(s) if s.key == key));
        let Some(at) = sending.filter(|_| !accepted) else {
            return; // a verdict on a stream this link no longer sends
        };
        queue.remove(at);
        drop(queue);
        report(key.0, key.1, false);
    }

    /// Waits until something is queued or `broken` is set.
    async fn wait_for_work(&self, broken: &Cell<bool>) {
        loop {
            let listener = self.wake.listen();
            if broken.get() || !self.queue.borrow().is_empty() {
                return;
            }
            listener.await;
        }
    }

    fn fail_all(&self, report: &SnapshotReport) {
        let queued: Vec<Item> = self.queue.borrow_mut().drain(..).collect();
        self.queued_bytes.set(0);
        let ended = queued.into_iter().filter_map(|i| match i {
            Item::Snapshot(stream) => Some(stream.key),
            Item::Frame(_) => None,
        });
        let unacked: Vec<(u64, u64)> = self.unacked.borrow_mut().drain(..).chain(ended).collect();
        for (region, to) in unacked {
            report(region, to, false);
        }
    }
}

impl Item {
    /// What the item holds in memory (a stream: one chunk at a time, read on its turn).
    fn bytes(&self) -> usize {
        match self {
            Item::Frame(f) => f.len(),
            Item::Snapshot(_) => 0,
        }
    }
}
