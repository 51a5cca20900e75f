//! The error type of agent messaging.

use mesh_types::{ErrorKind, HasKind};

/// A result of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an agent-messaging operation failed. Every refusal of outside input is one of the
/// typed variants below, never a panic.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes do not decode as the named structure.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A field or message exceeds its hard limit.
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A message claims a sender or recipient that does not match who sent it or who we are.
    #[error("refused {what}: {detail}")]
    Refused {
        /// What was refused.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// No session with the peer can carry (or decrypt) this message.
    #[error("no end-to-end session with {peer} {detail}")]
    NoSession {
        /// The peer's DID.
        peer: String,
        /// Which session was wanted.
        detail: String,
    },
    /// A signature, envelope or DID check failed.
    #[error(transparent)]
    Identity(#[from] mesh_identity::Error),
    /// Encryption, decryption or a handshake failed.
    #[error(transparent)]
    Crypto(#[from] mesh_crypto::Error),
    /// The mailbox's storage failed.
    #[error("mailbox storage: {0}")]
    Store(#[from] mesh_store::Error),
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Malformed { .. } => ErrorKind::Malformed,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::Refused { .. } => ErrorKind::Unauthorized,
            Self::NoSession { .. } => ErrorKind::NotFound,
            Self::Identity(e) => e.kind(),
            Self::Crypto(e) => e.kind(),
            Self::Store(e) => e.kind(),
        }
    }
}

pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Error {
    Error::Malformed {
        what,
        detail: detail.into(),
    }
}

pub(crate) fn wire(what: &'static str) -> impl Fn(mesh_types::wire::WireError) -> Error {
    move |e| malformed(what, e.to_string())
}
