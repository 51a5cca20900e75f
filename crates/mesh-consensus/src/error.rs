//! Errors of the consensus core.

use mesh_types::wire::WireError;
use mesh_types::{ErrorKind, HasKind};

/// Why a consensus operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Bytes from the network could not be decoded.
    #[error("malformed {what}: {source}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// The decoder's complaint.
        #[source]
        source: WireError,
    },
    /// A message or value is well-formed but not acceptable.
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was rejected.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A signature or certificate did not verify.
    #[error("{what} failed verification")]
    Verify {
        /// What failed.
        what: &'static str,
    },
    /// A bounded queue is full; the caller should retry later.
    #[error("{what} is full ({capacity} entries)")]
    Busy {
        /// Which queue.
        what: &'static str,
        /// Its bound.
        capacity: usize,
    },
    /// The configuration is inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The storage under the replica failed; the replica must stop (fail-stop).
    #[error("consensus storage failed: {0}")]
    Storage(#[from] mesh_store::Error),
    /// A cryptographic primitive failed.
    #[error(transparent)]
    Crypto(#[from] mesh_crypto::Error),
}

impl Error {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            detail: detail.into(),
        }
    }

    pub(crate) fn malformed(what: &'static str) -> impl FnOnce(WireError) -> Self {
        move |source| Self::Malformed { what, source }
    }
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Malformed { source, .. } => source.kind(),
            Self::Invalid { .. } => ErrorKind::InvalidInput,
            Self::Verify { .. } => ErrorKind::Unauthorized,
            Self::Busy { .. } => ErrorKind::Busy,
            Self::Config(_) => ErrorKind::InvalidInput,
            Self::Storage(e) => e.kind(),
            Self::Crypto(e) => e.kind(),
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
