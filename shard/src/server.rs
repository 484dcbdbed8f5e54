//! A shard's listeners: a client port (`addr` port + shard index) that takes requests only,
//! and a peer port (`peer_addr` port + shard index) that takes raft traffic only, after a
//! `PeerHello` naming this node's cluster. Each connection has a reader (frames in, handed to
//! the shard) and a writer (answers out, several frames per write).
//!
//! A frame that does not belong on its port, a malformed frame or a refused handshake gets a
//! typed error frame, then the connection is closed; the shard and every other connection go
//! on. Nothing a peer sends can panic the shard.
//!
//! Listeners are bound WITHOUT `SO_REUSEPORT` (glommio's own `bind` sets it): with it, a second
//! server on the same port would start and the kernel would split connections between two
//! clusters. One listener per shard needs no port sharing.
//!
//! Owns: the listeners, each connection's send buffer, reply budget and requests in flight
//! (`Connection`), and the snapshot streams arriving on it. Must not: read a connection's next
//! frame while its unread answers fill the reply budget (backpressure), or interpret a frame:
//! `Shard::handle_frame` does.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::rc::Rc;

use corekv_netio::frame::{self, FrameKind};
use corekv_netio::io::{self, FrameReader};
use corekv_netio::msg::WireError;
use corekv_netio::tls::Stream;
use corekv_netio::{Error as NetError, FrameError};
use glommio::net::{TcpListener, TcpStream};
use std::time::Duration;

use corekv_raftstore::snapshot_chunks::Receiver;

use crate::admission::Admitted;
use crate::error::{Error, Result};
use crate::runtime::Shard;

/// What a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Port {
    /// Client requests (`Request` frames) only.
    Client,
    /// Raft batches and snapshot chunks from peer shards, after their `PeerHello`.
    Peer,
}

/// One connection's state: what it has to send, its requests in flight, who is on the other
/// end (a peer's node once its hello was accepted), and the snapshot streams arriving on it
/// (dropped with the connection: a broken stream frees its memory).
pub struct Connection {
    pub port: Port,
    /// The node a peer connection speaks for, once its `PeerHello` was accepted.
    pub peer_node: Cell<Option<u64>>,
    /// Where the connection comes from.
    pub remote: Option<std::net::IpAddr>,
    pub snapshots: RefCell<Receiver>,
    buf: RefCell<Vec<u8>>,
    wake: event_listener::Event,
    /// Notified after each write: room in `buf` again.
    drained: event_listener::Event,
    /// Requests of this connection the shard has not answered yet.
    pub inflight: Cell<usize>,
    /// The reply budget: answers queued plus `reserved` stay below it (`net.reply_bytes_per_connection_max`).
    reply_bytes_max: usize,
    /// Reply bytes promised to requests not answered yet (offloaded reads, compare-and-swaps).
    reserved: Cell<usize>,
    closing: Cell<bool>,
}

impl Connection {
    fn new(
        port: Port,
        remote: Option<std::net::IpAddr>,
        (reply_bytes_max, snapshot_streams_max): (usize, usize),
    ) -> Connection {
        Connection {
            port,
            remote,
            reply_bytes_max,
            reserved: Cell::new(0),
            peer_node: Cell::new(None),
            buf: RefCell::new(Vec::new()),
            wake: event_listener::Event::new(),
            drained: event_listener::Event::new(),
            snapshots: RefCell::new(Receiver::new(snapshot_streams_max)),
            inflight: Cell::new(0),
            closing: Cell::new(false),
        }
    }

    /// Queues a frame of `value`, encoded straight into the send buffer (dropped if the
    /// connection is closing).
    pub fn push<T: frame::Message>(&self, kind: FrameKind, request_id: u64, value: &T) {
        if !self.closing.get() {
            frame::encode_into(&mut self.buf.borrow_mut(), kind, request_id, value);
            self.wake.notify(1);
        }
    }

    /// Reply bytes this connection may still be promised: its budget less what is queued and
    /// what is held for answers to come.
    pub fn reply_room(&self) -> usize {
        self.reply_bytes_max
            .saturating_sub(self.buf.borrow().len() + self.reserved.get())
    }

    /// Holds `bytes` of the budget for an answer to come.
    pub fn reserve(&self, bytes: usize) {
        self.reserved.set(self.reserved.get() + bytes);
    }

    /// Gives back what `reserve` held.
    pub fn release(&self, bytes: usize) {
        debug_assert!(bytes <= self.reserved.get(), "release only what was held");
        self.reserved.set(self.reserved.get().saturating_sub(bytes));
    }

    /// Sends what is queued, then closes.
    fn close(&self) {
        self.closing.set(true);
        self.wake.notify(1);
    }
}

/// Binds a listener on `addr` for `flag` (named in the error) without `SO_REUSEPORT`: a port
/// in use is refused, as it must be. Must run on the executor that will accept on it.
pub fn bind(flag: &'static str, addr: SocketAddr) -> Result<TcpListener> {
    let std_listener = std::net::TcpListener::bind(addr).map_err(|error| Error::Bind {
        flag,
        addr: addr.to_string(),
        error,
    })?;
    // SAFETY: the descriptor is a bound, listening TCP socket whose ownership moves to glommio.
    Ok(unsafe { TcpListener::from_raw_fd(std_listener.into_raw_fd()) })
}

/// Accepts connections until the shard stops; past a connection limit (`Admission`), a
/// connection is told why (a `ServerBusy` error frame, on a plain port) and closed.
pub async fn listen(shard: Rc<Shard>, listener: TcpListener, port: Port) {
    while !shard.is_stopping() {
        match listener.accept().await {
            Ok(stream) => {
                let Ok(from) = stream.peer_addr() else { continue };
                let task = match shard.admission().admit(from.ip(), port == Port::Client) {
                    Ok(place) => glommio::spawn_local(serve(Rc::clone(&shard), stream, port, place)),
                    Err(why) => glommio::spawn_local(turn_away(Rc::clone(&shard), stream, why)),
                };
                task.detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, ?port, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

/// A connection over a limit: told why where it can read it (no TLS), then closed.
async fn turn_away(shard: Rc<Shard>, mut tcp: TcpStream, why: String) {
    shard.metrics().connections_refused.inc();
    tracing::debug!(peer = ?tcp.peer_addr().ok(), why, "connection refused");
    if shard.tls().is_none() {
        let refusal = frame::encode(FrameKind::Error, 0, &WireError::ServerBusy { reason: why });
        let write = async {
            io::write_frames(&mut tcp, "", &refusal)
                .await
                .map_err(|e| std::io::Error::other(e.to_string()))
        };
        let _ = within(Duration::from_secs(1), write).await;
    }
}

/// Serves one admitted connection until it closes (`_place` gives its place back then).
async fn serve(shard: Rc<Shard>, tcp: TcpStream, port: Port, _place: Admitted) {
    let peer = tcp
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    let _ = tcp.set_nodelay(true);
    let stream = match shard.tls() {
        None => Stream::Plain(tcp),
        Some(tls) => {
            let limit = Duration::from_millis(shard.config().net.handshake_timeout_ms);
            match within(limit, tls.accept(tcp)).await {
                Ok(stream) => stream,
                Err(e) => {
                    shard.metrics().tls_handshakes_failed.inc();
                    tracing::warn!(%peer, ?port, error = %e, "TLS handshake failed; connection closed");
                    return;
                }
            }
        }
    };
    let open = match port {
        Port::Client => &shard.metrics().client_connections,
        Port::Peer => &shard.metrics().peer_connections,
    };
    open.inc();
    let (read, mut write) = futures_lite::io::split(stream);
    let net = &shard.config().net;
    let budget = net.reply_bytes_per_connection_max;
    let remote = peer.parse::<std::net::SocketAddr>().ok().map(|a| a.ip());
    let out = Rc::new(Connection::new(
        port,
        remote,
        (budget, net.snapshot_streams_per_connection_max),
    ));
    let writer = {
        let (out, peer) = (Rc::clone(&out), peer.clone());
        glommio::spawn_local(async move {
            loop {
                let listener = out.wake.listen();
                let bytes = std::mem::take(&mut *out.buf.borrow_mut());
                if !bytes.is_empty() {
                    let failed = io::write_frames(&mut write, &peer, &bytes).await.is_err();
                    out.drained.notify(usize::MAX);
                    if failed {
                        out.closing.set(true);
                        return;
                    }
                } else if out.closing.get() {
                    return;
                } else {
                    listener.await;
                }
            }
        })
    };
    let mut frames = FrameReader::new(read, peer.clone(), shard.config().net.frame_bytes_max);
    loop {
        // Backpressure: no new requests while this peer's answers fill its reply budget unread.
        loop {
            let listener = out.drained.listen();
            if out.closing.get() || out.buf.borrow().len() <= budget {
                break;
            }
            listener.await;
        }
        if out.closing.get() {
            break;
        }
        let refused = match frames.next().await {
            Ok(None) => break,
            Ok(Some(f)) => match shard.handle_frame(&out, f).await {
                Ok(()) => continue,
                Err(e) => e,
            },
            Err(NetError::Frame(e)) => malformed(&e),
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection failed");
                break;
            }
        };
        tracing::warn!(%peer, ?port, error = %refused, "frame refused; closing the connection");
        shard.metrics().frames_refused.inc();
        out.push(FrameKind::Error, 0, &refused);
        break;
    }
    out.close();
    writer.await;
    shard.snapshot_streams_closed(out.snapshots.borrow().streams());
    open.dec();
}

/// `fut`, or a `TimedOut` error once `limit` has passed.
pub async fn within<T>(
    limit: Duration,
    fut: impl std::future::Future<Output = std::io::Result<T>>,
) -> std::io::Result<T> {
    use futures_lite::FutureExt;
    fut.or(async {
        glommio::timer::sleep(limit).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no TLS handshake within {limit:?}"),
        ))
    })
    .await
}

/// What a peer is told about a frame that was wrong (its last words on this connection).
pub fn malformed(e: &FrameError) -> WireError {
    WireError::Malformed {
        code: e.code(),
        reason: e.to_string(),
    }
}
