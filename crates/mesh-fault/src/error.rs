//! What this crate refuses.

use mesh_types::wire::WireError;
use mesh_types::{ErrorKind, HasKind};

/// Why a setting or an input was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A setting out of its range.
    #[error("invalid setting {name}: {detail}")]
    Setting {
        /// The setting.
        name: &'static str,
        /// Why.
        detail: String,
    },
    /// A membership message that could not be decoded (truncated, oversized, unknown
    /// version or kind, too many claims, trailing bytes).
    #[error("malformed membership message: {source}")]
    Decode {
        /// What the bounded reader found.
        #[source]
        source: WireError,
    },
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::Setting { .. } => ErrorKind::InvalidInput,
            Self::Decode { source } => source.kind(),
        }
    }
}

impl From<WireError> for Error {
    fn from(source: WireError) -> Self {
        Self::Decode { source }
    }
}

/// This crate's result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A [`Error::Setting`] with its detail.
pub(crate) fn setting(name: &'static str, detail: impl Into<String>) -> Error {
    Error::Setting {
        name,
        detail: detail.into(),
    }
}
