//! netio's one error type. `FrameError` is what a receiver finds wrong with bytes on the
//! wire (each closes the connection after a typed error frame); `Error` is what the client and
//! the transport report to their callers.
//!
//! Owns: both enums and their stable codes (frames 300..=308, netio's own 309..=314). Must not:
//! reuse or renumber a code (clients and metrics key on them), or depend on `storage` or
//! `raftstore` errors.

use crate::msg::WireError;

/// Result alias of `corekv-netio`.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A malformed frame. Stable wire codes 300..=308.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("bad magic: not a corekv frame")]
    BadMagic,
    #[error("unsupported protocol version {version}")]
    BadVersion { version: u8 },
    #[error("unknown frame kind {kind}")]
    UnknownKind { kind: u8 },
    #[error("reserved header bytes are not zero")]
    Reserved,
    #[error("frame body of {bytes} bytes exceeds the maximum of {max}")]
    TooLarge { bytes: u32, max: u32 },
    #[error("frame body fails its checksum")]
    Checksum,
    #[error("frame body is not a valid archive: {reason}")]
    Invalid { reason: String },
    #[error("connection closed inside a frame")]
    Truncated,
    #[error("frame kind {kind} is not expected on this connection")]
    UnexpectedKind { kind: u8 },
}

impl FrameError {
    pub fn code(&self) -> u16 {
        match self {
            FrameError::BadMagic => 300,
            FrameError::BadVersion { .. } => 301,
            FrameError::UnknownKind { .. } => 302,
            FrameError::Reserved => 303,
            FrameError::TooLarge { .. } => 304,
            FrameError::Checksum => 305,
            FrameError::Invalid { .. } => 306,
            FrameError::Truncated => 307,
            FrameError::UnexpectedKind { .. } => 308,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("malformed frame: {0}")]
    Frame(#[from] FrameError),
    #[error("{addr}: {error}")]
    Io { addr: String, error: std::io::Error },
    /// The server answered with an error it will keep giving (retrying does not help).
    #[error("server error {code}: {error}", code = .0.code(), error = .0)]
    Server(WireError),
    /// The operation's deadline passed without an answer that settles it. Nothing was applied:
    /// a read, or a write no server accepted (a write that may have been is `Undetermined`).
    /// `last` says what the last attempt ran into.
    #[error("no answer within {ms} ms (last attempt: {last}); nothing was applied")]
    Timeout { ms: u64, last: String },
    /// A write reached a server and its answer never came (the deadline passed, the connection
    /// broke, or the server could not tell): it may or may not have been applied.
    #[error("the write may or may not have been applied: {reason}")]
    Undetermined { reason: String },
    /// An endpoint answers for another cluster than the one this client talks to.
    #[error("{addr} belongs to cluster {found:#x}, not to cluster {expected:#x} (check --endpoints)")]
    WrongCluster { addr: String, expected: u64, found: u64 },
    /// The cluster could not be reached or gave no usable routing.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    /// The same error for another caller (an I/O error keeps its kind and message).
    pub fn duplicate(&self) -> Error {
        match self {
            Error::Frame(e) => Error::Frame(e.clone()),
            Error::Io { addr, error } => Error::Io {
                addr: addr.clone(),
                error: std::io::Error::new(error.kind(), error.to_string()),
            },
            Error::Server(e) => Error::Server(e.clone()),
            Error::Timeout { ms, last } => Error::Timeout {
                ms: *ms,
                last: last.clone(),
            },
            Error::Undetermined { reason } => Error::Undetermined { reason: reason.clone() },
            Error::WrongCluster { addr, expected, found } => Error::WrongCluster {
                addr: addr.clone(),
                expected: *expected,
                found: *found,
            },
            Error::Unavailable(why) => Error::Unavailable(why.clone()),
            Error::InvalidArgument(why) => Error::InvalidArgument(why.clone()),
        }
    }

    pub fn io(addr: impl ToString, error: std::io::Error) -> Error {
        Error::Io {
            addr: addr.to_string(),
            error,
        }
    }

    /// Stable code: the frame's, the server's, or netio's own (309..).
    pub fn code(&self) -> u16 {
        match self {
            Error::Frame(f) => f.code(),
            Error::Server(w) => w.code(),
            Error::Io { .. } => 309,
            Error::Timeout { .. } => 310,
            Error::Undetermined { .. } => 311,
            Error::Unavailable(_) => 312,
            Error::InvalidArgument(_) => 313,
            Error::WrongCluster { .. } => 314,
        }
    }
}
