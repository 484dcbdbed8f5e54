//! netio's one error type. `FrameError` is what a receiver finds wrong with bytes on the
//! wire (each closes the connection after a typed error frame); `Error` is what the client and
//! the transport report to their callers.

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
    #[error("{addr}: {source}")]
    Io { addr: String, source: std::io::Error },
    /// The server answered with an error it will keep giving (retrying does not help).
    #[error("server error {code}: {error}", code = .0.code(), error = .0)]
    Server(WireError),
    /// No answer before the request's deadline; a write may or may not have taken effect.
    #[error("no answer within {ms} ms (a write's outcome is unknown)")]
    Timeout { ms: u64 },
    /// A write was sent and the connection broke before its answer: it may have taken effect.
    #[error("connection lost with a write in flight: its outcome is unknown")]
    Undetermined,
    /// The cluster could not be reached or gave no usable routing.
    #[error("cluster unavailable: {0}")]
    Unavailable(String),
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl Error {
    pub fn io(addr: impl ToString, source: std::io::Error) -> Error {
        Error::Io {
            addr: addr.to_string(),
            source,
        }
    }

    /// Stable code: the frame's, the server's, or netio's own (309..).
    pub fn code(&self) -> u16 {
        match self {
            Error::Frame(f) => f.code(),
            Error::Server(w) => w.code(),
            Error::Io { .. } => 309,
            Error::Timeout { .. } => 310,
            Error::Undetermined => 311,
            Error::Unavailable(_) => 312,
            Error::InvalidArgument(_) => 313,
        }
    }
}
