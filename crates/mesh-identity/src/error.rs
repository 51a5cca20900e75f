//! The identity error type.

use std::path::PathBuf;

use mesh_types::{ErrorKind, HasKind};

/// An identity result.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an identity operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A DID string is not a valid Ed25519 `did:key`.
    #[error("invalid DID {did:?}: {detail}")]
    InvalidDid {
        /// The offending text (shortened if long).
        did: String,
        /// What is wrong.
        detail: String,
    },
    /// Bytes do not decode as the named structure.
    #[error("malformed {what}: {detail}")]
    Malformed {
        /// What was being decoded.
        what: &'static str,
        /// What is wrong.
        detail: String,
    },
    /// A field exceeds its hard limit.
    #[error("{what} of {len} exceeds the limit of {max}")]
    TooLarge {
        /// What was too large.
        what: &'static str,
        /// Its size.
        len: u64,
        /// The limit.
        max: u64,
    },
    /// A signature did not verify.
    #[error("bad signature on {what}")]
    BadSignature {
        /// What was signed.
        what: &'static str,
    },
    /// A signed statement is outside its validity period.
    #[error("{what} expired at {expired_at} (now {now})")]
    Expired {
        /// What expired.
        what: &'static str,
        /// When it expired (ms since the Unix epoch).
        expired_at: u64,
        /// The time of the check.
        now: u64,
    },
    /// A statement is not yet valid.
    #[error("{what} is not valid before {not_before} (now {now})")]
    NotYetValid {
        /// What is not yet valid.
        what: &'static str,
        /// Start of validity.
        not_before: u64,
        /// The time of the check.
        now: u64,
    },
    /// A permission check failed.
    #[error("not permitted: {detail}")]
    Denied {
        /// Why.
        detail: String,
    },
    /// The passphrase does not open the identity file.
    #[error("wrong passphrase for {path}")]
    WrongPassphrase {
        /// The identity file.
        path: PathBuf,
    },
    /// A passphrase is needed and none was available.
    #[error("no passphrase: set {var} or run interactively ({detail})")]
    NoPassphrase {
        /// The environment variable consulted.
        var: String,
        /// Why no prompt was possible.
        detail: String,
    },
    /// The identity file is malformed, of an unknown version, or inconsistent.
    #[error("identity file {path}: {detail}")]
    File {
        /// The identity file.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// An IO error on a file.
    #[error("I/O error on {path} while {op}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// What was being done.
        op: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A cryptographic operation failed.
    #[error(transparent)]
    Crypto(#[from] mesh_crypto::Error),
}

impl HasKind for Error {
    fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidDid { .. } | Self::Malformed { .. } | Self::File { .. } => {
                ErrorKind::Malformed
            }
            Self::TooLarge { .. } => ErrorKind::TooLarge,
            Self::BadSignature { .. }
            | Self::Expired { .. }
            | Self::NotYetValid { .. }
            | Self::Denied { .. }
            | Self::WrongPassphrase { .. } => ErrorKind::Unauthorized,
            Self::NoPassphrase { .. } => ErrorKind::InvalidInput,
            Self::Io { .. } => ErrorKind::Io,
            Self::Crypto(e) => e.kind(),
        }
    }
}

pub(crate) fn malformed(what: &'static str, detail: impl Into<String>) -> Error {
    Error::Malformed {
        what,
        detail: detail.into(),
    }
}
