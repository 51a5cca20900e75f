//! The transport error type.

use mesh_types::{ErrorKind, HasKind};

/// A transport result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a transport operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The transport could not be built or started.
    #[error("cannot start the transport: {detail}")]
    Setup {
        /// What failed.
        detail: String,
    },
    /// An address could not be listened on.
    #[error("cannot listen on {addr}: {detail}")]
    Listen {
        /// The address.
        addr: String,
        /// Why.
        detail: String,
    },
    /// A peer or address could not be dialled.
    #[error("cannot dial {target}: {detail}")]
    Dial {
        /// The peer or address.
        target: String,
        /// Why.
        detail: String,
    },
    /// The text is not a valid multiaddress.
    #[error("invalid multiaddress {addr:?}: {detail}")]
    BadAddress {
        /// The text.
        addr: String,
        /// Why.
        detail: String,
    },
    /// A request got no response.
    #[error("request {id} on {protocol:?} to {peer} failed: {detail}")]
    Request {
        /// The request id.
        id: u64,
        /// The application protocol.
        protocol: String,
        /// The peer.
        peer: String,
        /// Why.
        detail: String,
    },
    /// The peer does not serve the application protocol.
    #[error("{peer} does not serve protocol {protocol:?}")]
    UnknownProtocol {
        /// The peer.
        peer: String,
        /// The protocol asked for.
        protocol: String,
    },
    /// The peer's handler answered with an error.
    #[error("{peer} refused the request on {protocol:?}: {detail}")]
    Refused {
        /// The peer.
        peer: String,
        /// The protocol.
        protocol: String,
        /// The peer's message.
        detail: String,
    },
    /// A message or name exceeds a hard limit.
    #[error("{what} of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A protocol or topic name is invalid.
    #[error("invalid {what} {name:?}: {detail}")]
    BadName {
        /// Protocol or topic.
        what: &'static str,
        /// The name.
        name: String,
        /// Why.
        detail: &'static str,
    },
    /// Publishing failed.
    #[error("cannot publish on {topic:?}: {detail}")]
    Publish {
        /// The topic.
        topic: String,
        /// Why.
        detail: String,
    },
    /// The transport has shut down.
    #[error("the transport has shut down")]
    Closed,
    /// This transport cannot do that.
    #[error("not supported: {what}")]
    Unsupported {
        /// What was asked for.
        what: &'static str,
    },
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Setup { .. } => ErrorKind::Internal,
            Self::Listen { .. } | Self::Dial { .. } => ErrorKind::Io,
            Self::BadAddress { .. } | Self::BadName { .. } => ErrorKind::InvalidInput,
            Self::Request { .. } => ErrorKind::Timeout,
            Self::UnknownProtocol { .. } => ErrorKind::NotFound,
            Self::Refused { .. } => ErrorKind::Unauthorized,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::Publish { .. } => ErrorKind::Busy,
            Self::Closed => ErrorKind::Closed,
            Self::Unsupported { .. } => ErrorKind::InvalidInput,
        }
    }
}
