//! Frames over a byte stream (glommio's io_uring TCP in production; any `AsyncRead` /
//! `AsyncWrite`): read one checked frame, write many at once.
//!
//! Owns: the per-connection read buffer, reading frames (header checked before the body is
//! allocated, checksum after), batched writes, connecting (optionally from a source address) and
//! name resolution. Must not: block the executor: `getaddrinfo` and a bound connect run on its
//! blocking pool.

use std::net::{IpAddr, SocketAddr};
use std::os::fd::{FromRawFd, IntoRawFd};
use std::time::Duration;

use futures_lite::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use glommio::net::TcpStream;

use crate::error::{Error, FrameError, Result};
use crate::frame::{Body, Header, HEADER_BYTES};

/// Read buffer per connection: many pipelined small frames per read syscall.
pub const READ_BUFFER_BYTES: usize = 64 << 10;

/// Connects to `addr` within `timeout`, from `source` (port chosen by the kernel) when given:
/// a node bound to its own address for outgoing connections too is one that firewall rules
/// (the chaos harness's partitions) can tell apart from its neighbours on the same host.
///
/// glommio's connect cannot bind first, so a bound connect runs on the executor's blocking pool
/// (it may wait out `timeout` when SYNs are dropped) and hands the socket to glommio after.
pub async fn connect(addr: SocketAddr, source: Option<IpAddr>, timeout: Duration) -> std::io::Result<TcpStream> {
    let Some(source) = source else {
        return TcpStream::connect_timeout(addr, timeout).await.map_err(Into::into);
    };
    let socket = glommio::executor()
        .spawn_blocking(move || -> std::io::Result<socket2::Socket> {
            let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
            socket.bind(&SocketAddr::new(source, 0).into())?;
            socket.connect_timeout(&addr.into(), timeout)?;
            Ok(socket)
        })
        .await?;
    // SAFETY: the descriptor is a connected TCP socket whose ownership moves to the stream.
    Ok(unsafe { TcpStream::from_raw_fd(socket.into_raw_fd()) })
}

/// `host:port` as a socket address: an IP literal as it is, a host name through the system's
/// resolver (on the executor's blocking pool: `getaddrinfo` blocks), first address found.
pub async fn resolve(addr: &str) -> std::io::Result<SocketAddr> {
    if let Ok(parsed) = addr.parse() {
        return Ok(parsed);
    }
    let owned = addr.to_string();
    let found = glommio::executor()
        .spawn_blocking(move || std::net::ToSocketAddrs::to_socket_addrs(owned.as_str()).map(|mut a| a.next()))
        .await?;
    found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, format!("{addr} resolves to no address")))
}

/// A frame whose header and checksum were checked; its archive is validated by the reader
/// that knows its type (`frame::access`).
pub struct Frame {
    pub header: Header,
    pub body: Body,
}

pub struct FrameReader<R> {
    inner: BufReader<R>,
    peer: String,
    body_bytes_max: u32,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    pub fn new(inner: R, peer: String, body_bytes_max: u32) -> FrameReader<R> {
        FrameReader {
            inner: BufReader::with_capacity(READ_BUFFER_BYTES, inner),
            peer,
            body_bytes_max,
        }
    }

    pub fn peer(&self) -> &str {
        &self.peer
    }

    /// The next frame; `None` when the peer closed the stream between frames.
    pub async fn next(&mut self) -> Result<Option<Frame>> {
        let mut head = [0u8; HEADER_BYTES];
        let mut filled = 0;
        while filled < HEADER_BYTES {
            let n = self
                .inner
                .read(&mut head[filled..])
                .await
                .map_err(|e| Error::io(&self.peer, e))?;
            if n == 0 {
                return match filled {
                    0 => Ok(None),
                    _ => Err(FrameError::Truncated.into()),
                };
            }
            filled += n;
        }
        let header = Header::decode(&head, self.body_bytes_max)?;
        let mut body = Body::with_capacity(header.body_bytes as usize);
        body.resize(header.body_bytes as usize, 0);
        self.inner.read_exact(&mut body).await.map_err(|e| match e.kind() {
            std::io::ErrorKind::UnexpectedEof => Error::Frame(FrameError::Truncated),
            _ => Error::io(&self.peer, e),
        })?;
        header.check_body(&body)?;
        Ok(Some(Frame { header, body }))
    }
}

/// Writes already-encoded frames in one go and flushes.
pub async fn write_frames<W: AsyncWrite + Unpin>(out: &mut W, peer: &str, bytes: &[u8]) -> Result<()> {
    out.write_all(bytes).await.map_err(|e| Error::io(peer, e))?;
    out.flush().await.map_err(|e| Error::io(peer, e))
}
