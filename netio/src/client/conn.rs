//! One pipelined connection to one shard: requests go out as they come (written together when
//! several are queued), answers come back in any order and are matched by request id.
//!
//! Owns: the connection's request ids, its pending answers (at most `inflight_max`; one more is
//! `ServerBusy` at once) and its reader and writer tasks. Must not: resend a request: a broken
//! connection answers every pending one `Lost` (it may have arrived), and the client decides.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::Duration;

use futures_channel::oneshot;
use futures_lite::FutureExt;
use glommio::net::TcpStream;

use crate::error::{Error, FrameError, Result};
use crate::frame::{self, FrameKind};
use crate::io::{self, FrameReader};
use crate::msg::{ArchivedReply, ArchivedWireError, Reply, Request, WireError};
use crate::tls::{Stream, Tls};

/// What a connection delivers for one request.
pub(crate) enum Answer {
    Reply(Reply),
    /// The connection broke or the server closed it: the request may or may not have arrived.
    Lost(String),
}

pub(crate) struct Conn {
    addr: String,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, oneshot::Sender<Answer>>>,
    /// Encoded frames waiting for the writer task.
    out: RefCell<Vec<u8>>,
    wake_writer: event_listener::Event,
    broken: Cell<bool>,
    inflight_max: usize,
}

impl Conn {
    /// Connects (bounded by `timeout`, the TLS handshake included) and starts the
    /// connection's reader and writer tasks.
    pub(crate) async fn open(
        addr: &str,
        timeout: Duration,
        inflight_max: usize,
        body_bytes_max: u32,
        tls: Option<&Tls>,
    ) -> Result<Rc<Conn>> {
        let sock = io::resolve(addr)
            .await
            .map_err(|e| Error::InvalidArgument(format!("address {addr}: {e}")))?;
        let connect = async {
            let tcp = TcpStream::connect_timeout(sock, timeout).await?;
            tcp.set_nodelay(true)?;
            match tls {
                None => Ok(Stream::Plain(tcp)),
                Some(tls) => {
                    tls.connect(
                        addr.rsplit_once(':').map_or(addr, |(h, _)| h.trim_matches(['[', ']'])),
                        tcp,
                    )
                    .await
                }
            }
        };
        let stream = connect
            .or(async {
                glommio::timer::sleep(timeout).await;
                Err(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "connecting took too long",
                ))
            })
            .await
            .map_err(|e| Error::io(addr, e))?;
        let (read, mut write) = futures_lite::io::split(stream);
        let conn = Rc::new(Conn {
            addr: addr.to_string(),
            next_id: Cell::new(1),
            pending: RefCell::new(HashMap::new()),
            out: RefCell::new(Vec::new()),
            wake_writer: event_listener::Event::new(),
            broken: Cell::new(false),
            inflight_max,
        });
        let reader = Rc::clone(&conn);
        glommio::spawn_local(async move {
            let mut frames = FrameReader::new(read, reader.addr.clone(), body_bytes_max);
            let why = loop {
                match frames.next().await {
                    Ok(Some(f)) => {
                        if let Err(e) = reader.deliver(f) {
                            break e.to_string();
                        }
                    }
                    Ok(None) => break "closed by the server".to_string(),
                    Err(e) => break e.to_string(),
                }
            };
            reader.fail(why);
        })
        .detach();
        let writer = Rc::clone(&conn);
        glommio::spawn_local(async move {
            loop {
                let listener = writer.wake_writer.listen();
                let bytes = std::mem::take(&mut *writer.out.borrow_mut());
                if writer.broken.get() {
                    return;
                }
                if bytes.is_empty() {
                    listener.await;
                    continue;
                }
                if let Err(e) = io::write_frames(&mut write, &writer.addr, &bytes).await {
                    writer.fail(e.to_string());
                    return;
                }
            }
        })
        .detach();
        Ok(conn)
    }

    pub(crate) fn is_broken(&self) -> bool {
        self.broken.get()
    }

    /// Sends `request`; the answer arrives on the returned channel.
    pub(crate) fn send(&self, request: &Request) -> Result<oneshot::Receiver<Answer>> {
        if self.broken.get() {
            return Err(Error::io(&self.addr, std::io::ErrorKind::NotConnected.into()));
        }
        if self.pending.borrow().len() >= self.inflight_max {
            return Err(Error::Server(WireError::ServerBusy {
                reason: format!("{} requests in flight on this connection", self.inflight_max),
            }));
        }
        let id = self.next_id.get();
        self.next_id.set(id + 1);
        let (tx, rx) = oneshot::channel();
        self.pending.borrow_mut().insert(id, tx);
        frame::encode_into(&mut self.out.borrow_mut(), FrameKind::Request, id, request);
        self.wake_writer.notify(1);
        Ok(rx)
    }

    fn deliver(&self, f: io::Frame) -> Result<()> {
        match f.header.kind {
            FrameKind::Reply => {
                let archived = frame::access::<ArchivedReply>(&f.body)?;
                let reply: Reply = rkyv::deserialize::<Reply, rkyv::rancor::Error>(archived)
                    .map_err(|e| FrameError::Invalid { reason: e.to_string() })?;
                if let Some(tx) = self.pending.borrow_mut().remove(&f.header.request_id) {
                    let _ = tx.send(Answer::Reply(reply));
                }
                Ok(())
            }
            FrameKind::Error => {
                let archived = frame::access::<ArchivedWireError>(&f.body)?;
                let e: WireError = rkyv::deserialize::<WireError, rkyv::rancor::Error>(archived)
                    .map_err(|e| FrameError::Invalid { reason: e.to_string() })?;
                Err(Error::Server(e))
            }
            other => Err(FrameError::UnexpectedKind { kind: other as u8 }.into()),
        }
    }

    fn fail(&self, why: String) {
        self.broken.set(true);
        self.wake_writer.notify(usize::MAX);
        for (_, tx) in self.pending.borrow_mut().drain() {
            let _ = tx.send(Answer::Lost(why.clone()));
        }
    }
}

/// Waits for `rx` until `timeout`; `None` when time ran out.
pub(crate) async fn wait(rx: oneshot::Receiver<Answer>, timeout: Duration) -> Option<Answer> {
    let answer = async { Some(rx.await.unwrap_or_else(|_| Answer::Lost("connection dropped".into()))) };
    answer
        .or(async {
            glommio::timer::Timer::new(timeout).await;
            None
        })
        .await
}
