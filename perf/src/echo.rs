//! The loopback floor of one request: a 64-byte message and its echo over TCP between the
//! bench's client executor and an echo executor pinned to core 0 (where every node's shard 0,
//! and so the placement service, runs), in the same run as the cluster's figures.
//!
//! Owns: that echo and its timing. Must not: frame, parse or queue anything (nothing of
//! corekv is in the figure); it runs only while the bench measures it.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use futures_lite::{AsyncReadExt, AsyncWriteExt};
use glommio::net::{TcpListener, TcpStream};
use glommio::{LocalExecutorBuilder, Placement};
use hdrhistogram::Histogram;

/// Bytes of each message (a small request's size).
const MESSAGE_BYTES: usize = 64;

/// Round trips for `duration`: (count, latency in µs). Call on a glommio executor.
pub async fn round_trips(duration: Duration) -> Result<(u64, Histogram<u64>)> {
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let server = LocalExecutorBuilder::new(Placement::Fixed(0))
        .name("echo")
        .spawn(move || async move { echo(bound_tx).await })
        .map_err(|e| anyhow::anyhow!("cannot start the echo executor: {e}"))?;
    // A blocking wait on this executor, once: the echo binds as it starts.
    let addr = bound_rx.recv().context("the echo executor ended before binding")??;
    let mut stream = TcpStream::connect(addr).await.map_err(glommio_error)?;
    stream.set_nodelay(true).map_err(glommio_error)?;
    let (mut latency_us, mut count) = (crate::report::new_histogram(), 0);
    let mut message = [0u8; MESSAGE_BYTES];
    let end = Instant::now() + duration;
    while Instant::now() < end {
        let t = Instant::now();
        stream.write_all(&message).await?;
        stream.read_exact(&mut message).await?;
        latency_us.record(t.elapsed().as_micros() as u64)?;
        count += 1;
    }
    drop(stream); // the echo ends at end of stream
    server.join().map_err(|e| anyhow::anyhow!("echo executor: {e:?}"))??;
    Ok((count, latency_us))
}

/// Binds a loopback port (told through `bound`), then echoes one connection until it closes.
async fn echo(bound: std::sync::mpsc::Sender<Result<std::net::SocketAddr>>) -> Result<()> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| Ok((l.local_addr()?, l)))
        .map_err(glommio_error);
    let listener = match listener {
        Ok((addr, listener)) => {
            let _ = bound.send(Ok(addr));
            listener
        }
        Err(e) => {
            let _ = bound.send(Err(e.context("cannot bind the echo")));
            return Ok(());
        }
    };
    let mut stream = listener.accept().await.map_err(glommio_error)?;
    stream.set_nodelay(true).map_err(glommio_error)?;
    let mut message = [0u8; MESSAGE_BYTES];
    while stream.read_exact(&mut message).await.is_ok() {
        stream.write_all(&message).await?;
    }
    Ok(())
}

/// glommio's errors carry a payload that is not `Sync`: said in words instead.
fn glommio_error(e: glommio::GlommioError<()>) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}
