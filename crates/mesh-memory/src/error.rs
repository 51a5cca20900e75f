//! Errors of the memory crate.

use mesh_types::{ErrorKind, HasKind};

/// Why a memory operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A vector of the wrong dimension.
    #[error("vector of {found} dimensions, the index holds {expected}")]
    Dimension {
        /// The index's dimension.
        expected: usize,
        /// The vector's.
        found: usize,
    },
    /// A vector with a NaN or infinite component.
    #[error("vector with a non-finite component")]
    NonFinite,
    /// The zero vector (it has no direction to compare by cosine).
    #[error("zero vector")]
    ZeroVector,
    /// The index holds as many vectors as its ids can number.
    #[error("index full")]
    Full,
    /// A setting out of range.
    #[error("invalid setting: {0}")]
    Invalid(String),
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Full => ErrorKind::TooLarge,
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
