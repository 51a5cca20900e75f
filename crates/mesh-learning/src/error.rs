//! Errors of the learning crate.

use mesh_types::{ErrorKind, HasKind};

/// Why a learning operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A data file could not be parsed.
    #[error("malformed {what} at line {line}: {detail}")]
    Malformed {
        /// Which data set or format.
        what: &'static str,
        /// 1-based line number of the offending record (0 when the whole input is at fault).
        line: usize,
        /// What was wrong.
        detail: String,
    },
    /// An argument or value is not acceptable (wrong shape, non-finite value, bad setting).
    #[error("invalid {what}: {detail}")]
    Invalid {
        /// What was rejected.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// A compressed update could not be decoded.
    #[error("malformed compressed update: {0}")]
    Decode(#[from] crate::compress::DecodeError),
    /// A secure-aggregation step failed or a message was refused.
    #[error("secure aggregation: {0}")]
    SecAgg(#[from] crate::secagg::Error),
    /// A model version, lineage record or merge was refused.
    #[error("model version: {0}")]
    Version(#[from] crate::version::Error),
    /// The tensor library failed.
    #[error("tensor operation failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl Error {
    pub(crate) fn invalid(what: &'static str, detail: impl Into<String>) -> Self {
        Self::Invalid {
            what,
            detail: detail.into(),
        }
    }
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Malformed { .. } => ErrorKind::Malformed,
            Self::Invalid { .. } => ErrorKind::InvalidInput,
            Self::Decode(_) => ErrorKind::Malformed,
            Self::SecAgg(e) => secagg_kind(e),
            Self::Version(e) => version_kind(e),
            Self::Tensor(_) => ErrorKind::Internal,
        }
    }
}

fn secagg_kind(e: &crate::secagg::Error) -> ErrorKind {
    use crate::secagg::Error as E;
    match e {
        E::Wire(_) => ErrorKind::Malformed,
        E::Decrypt { .. } | E::Reconstruction { .. } | E::BothSharesRequested { .. } => {
            ErrorKind::Unauthorized
        }
        E::Crypto(c) => c.kind(),
        _ => ErrorKind::InvalidInput,
    }
}

fn version_kind(e: &crate::version::Error) -> ErrorKind {
    use crate::version::Error as E;
    match e {
        E::Malformed { .. } | E::Version(_) => ErrorKind::Malformed,
        E::TooLarge { .. } => ErrorKind::TooLarge,
        _ => ErrorKind::InvalidInput,
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
