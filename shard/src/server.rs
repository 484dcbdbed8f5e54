//! A shard's listener: one TCP port per shard (`addr` port + shard index) for clients and
//! peer shards alike. Each connection has a reader (frames in, handed to the shard) and a
//! writer (answers out, several frames per write).
//!
//! A malformed frame gets a typed error frame, then the connection is closed; the shard and
//! every other connection go on. Nothing a peer sends can panic the shard.

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use corekv_netio::frame::{self, FrameKind};
use corekv_netio::io::{self, FrameReader};
use corekv_netio::msg::WireError;
use corekv_netio::{Error as NetError, FrameError};
use glommio::net::{TcpListener, TcpStream};

use corekv_raftstore::snapshot_chunks::Reassembler;

use crate::runtime::Shard;

/// Answers queued for one connection beyond which the shard stops reading its requests until
/// the peer reads (a client that never reads cannot grow the shard's memory).
const OUTBOX_BYTES_MAX: usize = 16 << 20;

/// One connection's state: what it has to send, its requests in flight, and the snapshot
/// streams arriving on it (dropped with the connection: a broken stream frees its memory).
pub struct Connection {
    pub snapshots: RefCell<Reassembler>,
    buf: RefCell<Vec<u8>>,
    wake: event_listener::Event,
    /// Notified after each write: room in `buf` again.
    drained: event_listener::Event,
    /// Requests of this connection the shard has not answered yet.
    pub inflight: Cell<usize>,
    closing: Cell<bool>,
}

impl Connection {
    fn new() -> Connection {
        Connection {
            buf: RefCell::new(Vec::new()),
            wake: event_listener::Event::new(),
            drained: event_listener::Event::new(),
            snapshots: RefCell::new(Reassembler::default()),
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

    /// Sends what is queued, then closes.
    fn close(&self) {
        self.closing.set(true);
        self.wake.notify(1);
    }
}

/// Accepts connections until the shard stops.
pub async fn listen(shard: Rc<Shard>, listener: TcpListener) {
    while !shard.is_stopping() {
        match listener.accept().await {
            Ok(stream) => {
                glommio::spawn_local(serve(Rc::clone(&shard), stream)).detach();
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
}

async fn serve(shard: Rc<Shard>, stream: TcpStream) {
    let peer = stream
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
    let _ = stream.set_nodelay(true);
    shard.metrics().connections.inc();
    let (read, mut write) = futures_lite::io::split(stream);
    let out = Rc::new(Connection::new());
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
        // Backpressure: no new requests while this peer's answers pile up unread.
        loop {
            let listener = out.drained.listen();
            if out.closing.get() || out.buf.borrow().len() <= OUTBOX_BYTES_MAX {
                break;
            }
            listener.await;
        }
        if out.closing.get() {
            break;
        }
        let rejected = match frames.next().await {
            Ok(None) => break,
            Ok(Some(f)) => match shard.handle_frame(&out, f) {
                Ok(()) => continue,
                Err(e) => e,
            },
            Err(NetError::Frame(e)) => e,
            Err(e) => {
                tracing::debug!(%peer, error = %e, "connection failed");
                break;
            }
        };
        tracing::warn!(%peer, error = %rejected, "malformed frame; closing the connection");
        shard.metrics().frames_rejected.inc();
        reject(&out, &rejected);
        break;
    }
    out.close();
    writer.await;
    shard.metrics().connections.dec();
}

/// Tells the peer what was wrong with its frame (its last words on this connection).
fn reject(out: &Connection, e: &FrameError) {
    let wire = WireError::Malformed {
        code: e.code(),
        reason: e.to_string(),
    };
    out.push(FrameKind::Error, 0, &wire);
}
