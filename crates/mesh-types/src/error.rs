//! Error kinds shared by every crate.
//!
//! Each crate has its own `thiserror` enum carrying context (which peer, which file, which
//! step). Each of those enums also maps onto one [`ErrorKind`], so callers several layers up
//! (the node driver, the API gateway) can decide what to do — retry, report a 4xx, shut down —
//! without matching on every crate's variants.

use std::fmt;

/// A coarse classification of an error, shared by every agentmesh crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The caller passed an argument that can never succeed (bad name, bad range).
    InvalidInput,
    /// Bytes received or read could not be decoded.
    Malformed,
    /// An input exceeded a hard size limit.
    TooLarge,
    /// Data at rest failed an integrity check (checksum, hash, structure).
    Corrupt,
    /// The thing asked for does not exist.
    NotFound,
    /// A signature, credential or permission check failed.
    Unauthorized,
    /// A bounded queue or rate limit refused the work; retrying later may succeed.
    Busy,
    /// The operation did not finish in its time budget.
    Timeout,
    /// The resource is held by someone else (a lock, an open database).
    Conflict,
    /// An operating-system or device error.
    Io,
    /// The component has been shut down.
    Closed,
    /// A bug or an invariant violation inside agentmesh.
    Internal,
}

impl ErrorKind {
    /// Whether retrying the same operation later can reasonably succeed.
    pub fn is_transient(self) -> bool {
        matches!(self, Self::Busy | Self::Timeout | Self::Io | Self::Conflict)
    }

    /// A short stable name, for logs, metrics labels and JSON error bodies.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidInput => "invalid_input",
            Self::Malformed => "malformed",
            Self::TooLarge => "too_large",
            Self::Corrupt => "corrupt",
            Self::NotFound => "not_found",
            Self::Unauthorized => "unauthorized",
            Self::Busy => "busy",
            Self::Timeout => "timeout",
            Self::Conflict => "conflict",
            Self::Io => "io",
            Self::Closed => "closed",
            Self::Internal => "internal",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Implemented by every crate's error type.
pub trait HasKind {
    /// The coarse kind of this error.
    fn kind(&self) -> ErrorKind;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_transience_is_as_documented() {
        let all = [
            ErrorKind::InvalidInput,
            ErrorKind::Malformed,
            ErrorKind::TooLarge,
            ErrorKind::Corrupt,
            ErrorKind::NotFound,
            ErrorKind::Unauthorized,
            ErrorKind::Busy,
            ErrorKind::Timeout,
            ErrorKind::Conflict,
            ErrorKind::Io,
            ErrorKind::Closed,
            ErrorKind::Internal,
        ];
        let names: std::collections::HashSet<_> = all.iter().map(|k| k.as_str()).collect();
        assert_eq!(names.len(), all.len());
        assert!(ErrorKind::Busy.is_transient());
        assert!(!ErrorKind::Corrupt.is_transient());
        assert!(!ErrorKind::Malformed.is_transient());
        assert_eq!(ErrorKind::TooLarge.to_string(), "too_large");
    }
}
