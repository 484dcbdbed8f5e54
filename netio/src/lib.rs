//! corekv-netio: the wire, and the client that speaks it.
//!
//! Map:
//! - `frame`: the 24-byte header (magic, version, kind, request id, length, crc32c) and the
//!   rkyv body, validated once per frame (bytecheck), then read in place.
//! - `msg`: what frames carry: client requests and replies, typed errors with their stable
//!   codes and re-routing hints, the raft transport's batches, snapshot chunks and acks.
//! - `io`: frames over any async byte stream (glommio's io_uring TCP in practice).
//! - `client`: the shard-aware client library: region and leader caches, routing straight to
//!   the owning core, retries with backoff, deadlines.
//! - `tls`: mutual TLS (rustls over the io_uring stream) and the allowed-CN rule.
//! - `error`: [`FrameError`] (what is wrong with bytes received) and [`Error`].
//!
//! Must not: depend on `storage` or `raftstore` (it sits at the bottom with `storage`), or
//! panic on anything a peer sends.

pub mod client;
pub mod error;
pub mod frame;
pub mod io;
pub mod msg;
pub mod tls;

pub use client::{Client, ClientConfig};
pub use error::{Error, FrameError, Result};
