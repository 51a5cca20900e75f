//! The storage error type.

use std::path::PathBuf;

use mesh_types::{ErrorKind, HasKind};

/// A storage result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a storage operation failed. Every variant about data at rest names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file failed an integrity check: a bad checksum, a hash mismatch, a damaged or
    /// truncated database.
    #[error("store file {path} is corrupt: {detail}")]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// What was found.
        detail: String,
    },
    /// Another process (or another handle in this one) has the store open.
    #[error("store {path} is already open by another process or handle")]
    Locked {
        /// The database file.
        path: PathBuf,
    },
    /// An operating-system error.
    #[error("I/O error on {path} while {op}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// What the store was doing.
        op: &'static str,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The database engine refused an operation for a reason other than corruption or IO.
    #[error("database {path} failed while {op}: {detail}")]
    Database {
        /// The database file.
        path: PathBuf,
        /// What the store was doing.
        op: &'static str,
        /// The engine's message.
        detail: String,
    },
    /// A key, value, record or blob exceeds its hard limit.
    #[error("{what} of {len} bytes exceeds the limit of {max} bytes")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its length.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// The caller asked for something that can never succeed.
    #[error("invalid {what}: {detail}")]
    InvalidInput {
        /// Which argument.
        what: &'static str,
        /// Why.
        detail: String,
    },
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Corrupt { .. } => ErrorKind::Corrupt,
            Self::Locked { .. } => ErrorKind::Conflict,
            Self::Io { .. } => ErrorKind::Io,
            Self::Database { .. } => ErrorKind::Internal,
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::InvalidInput { .. } => ErrorKind::InvalidInput,
        }
    }
}

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, op: &'static str, source: std::io::Error) -> Self {
        Self::Io {
            path: path.into(),
            op,
            source,
        }
    }

    pub(crate) fn corrupt(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Self::Corrupt {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub(crate) fn too_large(what: &'static str, len: usize, max: usize) -> Self {
        Self::TooLarge {
            what,
            len: len as u64,
            max: max as u64,
        }
    }
}
