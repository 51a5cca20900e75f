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
    /// A text to embed that is empty or only whitespace (or only characters the tokenizer
    /// drops).
    #[error("text {index} of the batch is empty")]
    EmptyText {
        /// Its position in the batch.
        index: usize,
    },
    /// A text to embed longer than the limit ([`crate::embed::MAX_TEXT_BYTES`]).
    #[error("text {index} of the batch has {bytes} bytes, over the limit of {limit}")]
    TextTooLong {
        /// Its position in the batch.
        index: usize,
        /// Its length in bytes.
        bytes: usize,
        /// The limit.
        limit: usize,
    },
    /// A model file that is missing, unreadable or malformed.
    #[error("model file {}: {reason}", path.display())]
    Model {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// The model's computation failed (a bug, or memory exhausted).
    #[error("embedding computation failed: {0}")]
    Inference(String),
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Full | Self::TextTooLong { .. } => ErrorKind::TooLarge,
            Self::Model { .. } => ErrorKind::Corrupt,
            Self::Inference(_) => ErrorKind::Internal,
            _ => ErrorKind::InvalidInput,
        }
    }
}

/// Results of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;
